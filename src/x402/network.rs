//! Network identifiers: CAIP-2 (`namespace:reference`) for v2, legacy names for v1.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Solana mainnet-beta as a CAIP-2 id (the genesis-hash prefix).
pub const SOLANA_MAINNET: &str = "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp";
/// Solana devnet as a CAIP-2 id.
pub const SOLANA_DEVNET: &str = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1";

/// Legacy v1 network names and their EVM chain ids.
///
/// The union of the legacy `x402` package's `EvmNetworkToChainId` (the names v1 servers and
/// clients were built with) and `@x402/evm`'s `EVM_NETWORK_CHAIN_ID_MAP` (the names the v2 SDK
/// still accepts when it speaks v1), as pinned in this repository's `package.json`. Order is
/// irrelevant; every name and every chain id appears once.
const V1_EVM_NAMES: &[(&str, u64)] = &[
    ("ethereum", 1),
    ("sepolia", 11_155_111),
    ("abstract", 2741),
    ("abstract-testnet", 11_124),
    ("base", 8453),
    ("base-sepolia", 84_532),
    ("avalanche", 43_114),
    ("avalanche-fuji", 43_113),
    ("iotex", 4689),
    ("sei", 1329),
    ("sei-testnet", 1328),
    ("polygon", 137),
    ("polygon-amoy", 80_002),
    ("peaq", 3338),
    ("story", 1514),
    ("educhain", 41_923),
    ("skale-base-sepolia", 324_705_682),
    ("megaeth", 4326),
    ("monad", 143),
    ("stable", 988),
    ("stable-testnet", 2201),
    ("celo", 42_220),
    ("flare", 14),
];

/// Legacy v1 names of non-EVM networks, mapped to their CAIP-2 ids.
const V1_OTHER_NAMES: &[(&str, &str)] =
    &[("solana", SOLANA_MAINNET), ("solana-devnet", SOLANA_DEVNET)];

/// Why a network string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NetworkError {
    #[error("network {0:?} is not a CAIP-2 id (namespace:reference)")]
    NotCaip2(String),
    #[error("network {0:?} has an invalid CAIP-2 namespace (expected [-a-z0-9]{{3,8}})")]
    InvalidNamespace(String),
    #[error("network {0:?} has an invalid CAIP-2 reference (expected [-_a-zA-Z0-9]{{1,32}})")]
    InvalidReference(String),
    #[error("network {0:?} is an eip155 id whose reference is not a canonical chain id")]
    InvalidChainId(String),
    #[error("network {0:?} is neither a CAIP-2 id nor a known v1 network name")]
    Unknown(String),
}

/// A validated CAIP-2 chain id, e.g. `eip155:8453`. Serializes as that string.
///
/// Holding only validated ids means the rest of the code can compare networks by string
/// equality and never re-check syntax. For `eip155` the reference must also be a canonical
/// decimal chain id, so [`Network::chain_id`] is `Some` for every eip155 network.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Network(String);

impl Network {
    /// Parses a CAIP-2 id. Legacy v1 names are rejected; use [`Network::parse_any`] for those.
    pub fn parse(s: &str) -> Result<Self, NetworkError> {
        let (namespace, reference) = s
            .split_once(':')
            .ok_or_else(|| NetworkError::NotCaip2(s.to_owned()))?;
        let namespace_ok = (3..=8).contains(&namespace.len())
            && namespace
                .bytes()
                .all(|b| b == b'-' || b.is_ascii_lowercase() || b.is_ascii_digit());
        if !namespace_ok {
            return Err(NetworkError::InvalidNamespace(s.to_owned()));
        }
        let reference_ok = (1..=32).contains(&reference.len())
            && reference
                .bytes()
                .all(|b| b == b'-' || b == b'_' || b.is_ascii_alphanumeric());
        if !reference_ok {
            return Err(NetworkError::InvalidReference(s.to_owned()));
        }
        if namespace == "eip155" && canonical_chain_id(reference).is_none() {
            return Err(NetworkError::InvalidChainId(s.to_owned()));
        }
        Ok(Network(s.to_owned()))
    }

    /// Parses either a CAIP-2 id or a legacy v1 name (`base-sepolia` → `eip155:84532`).
    /// A string containing `:` is always treated as CAIP-2, so errors stay specific.
    pub fn parse_any(s: &str) -> Result<Self, NetworkError> {
        if s.contains(':') {
            return Self::parse(s);
        }
        Self::from_v1_name(s).ok_or_else(|| NetworkError::Unknown(s.to_owned()))
    }

    /// The EVM network with this chain id.
    pub fn eip155(chain_id: u64) -> Self {
        Network(format!("eip155:{chain_id}"))
    }

    /// Looks up a legacy v1 network name (exact, lowercase, as the TS packages spell it).
    pub fn from_v1_name(name: &str) -> Option<Self> {
        if let Some(&(_, chain_id)) = V1_EVM_NAMES.iter().find(|(n, _)| *n == name) {
            return Some(Self::eip155(chain_id));
        }
        V1_OTHER_NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, caip2)| Network(caip2.to_owned()))
    }

    /// The legacy v1 name of this network, if v1 clients know it.
    pub fn v1_name(&self) -> Option<&'static str> {
        if let Some(chain_id) = self.chain_id() {
            return V1_EVM_NAMES
                .iter()
                .find(|&&(_, id)| id == chain_id)
                .map(|&(name, _)| name);
        }
        V1_OTHER_NAMES
            .iter()
            .find(|&&(_, caip2)| caip2 == self.0)
            .map(|&(name, _)| name)
    }

    /// The EVM chain id, for `eip155:*` networks.
    pub fn chain_id(&self) -> Option<u64> {
        match self.0.split_once(':') {
            Some(("eip155", reference)) => canonical_chain_id(reference),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The CAIP-2 namespace, e.g. `eip155`.
    pub fn namespace(&self) -> &str {
        self.0.split_once(':').map_or("", |(ns, _)| ns)
    }

    /// The CAIP-2 reference, e.g. `8453`.
    pub fn reference(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, r)| r)
    }

    /// Whether this network matches a `/supported` signer pattern such as `eip155:*`.
    pub fn matches_pattern(&self, pattern: &str) -> bool {
        match pattern.strip_suffix(":*") {
            Some(namespace) => self.namespace() == namespace,
            None => self.0 == pattern,
        }
    }
}

/// A chain id written the one canonical way: decimal, no leading zeros, non-zero, fits u64.
fn canonical_chain_id(reference: &str) -> Option<u64> {
    match super::parse_decimal_u64(reference) {
        Ok(0) | Err(_) => None,
        Ok(id) => Some(id),
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Network {
    type Err = NetworkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Network {
    type Error = NetworkError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Network> for String {
    fn from(n: Network) -> String {
        n.0
    }
}

impl AsRef<str> for Network {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Serde adapter for v1 wire fields: reads a v1 name *or* a CAIP-2 id (some v1 servers fell back
/// to `eip155:N` for chains without a name), writes the v1 name when one exists.
pub mod v1_serde {
    use super::Network;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(network: &Network, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(network.v1_name().unwrap_or(network.as_str()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Network, D::Error> {
        let s = String::deserialize(deserializer)?;
        Network::parse_any(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_caip2_ids() {
        let base = Network::parse("eip155:8453").unwrap();
        assert_eq!(base.as_str(), "eip155:8453");
        assert_eq!(base.namespace(), "eip155");
        assert_eq!(base.reference(), "8453");
        assert_eq!(base.chain_id(), Some(8453));

        let sol = Network::parse(SOLANA_MAINNET).unwrap();
        assert_eq!(sol.namespace(), "solana");
        assert_eq!(sol.reference(), "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp");
        assert_eq!(sol.chain_id(), None);

        // Non-chain networks are fine when their namespace fits CAIP-2.
        assert_eq!(Network::parse("ach:us").unwrap().reference(), "us");
        assert_eq!(Network::parse("ach:us").unwrap().chain_id(), None);
        // Boundaries: 8-char namespace, 32-char reference.
        assert!(Network::parse(&format!("abcdefgh:{}", "a".repeat(32))).is_ok());
    }

    #[test]
    fn rejects_invalid_caip2_ids() {
        use NetworkError::*;
        type Expected = fn(String) -> NetworkError;
        let cases: &[(&str, Expected)] = &[
            ("eip1558453", NotCaip2),
            ("", NotCaip2),
            ("ab:1", InvalidNamespace),
            ("abcdefghi:1", InvalidNamespace),
            // The x402 batch-settlement spec's `cloudflare:402` has a 10-char namespace, which
            // CAIP-2 does not allow; this gateway only offers eip155 networks anyway.
            ("cloudflare:402", InvalidNamespace),
            ("EIP155:1", InvalidNamespace),
            ("eip_155:1", InvalidNamespace),
            (":1", InvalidNamespace),
            ("solana:", InvalidReference),
            ("solana:has space", InvalidReference),
            ("solana:a:b", InvalidReference),
            ("cosmos:é", InvalidReference),
            ("ach:us.east", InvalidReference),
            // 33-char reference
            ("solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpX", InvalidReference),
            ("eip155:abc", InvalidChainId),
            ("eip155:08453", InvalidChainId),
            ("eip155:0", InvalidChainId),
            ("eip155:18446744073709551616", InvalidChainId),
        ];
        for (input, make) in cases {
            assert_eq!(
                Network::parse(input),
                Err(make(input.to_string())),
                "{input:?}"
            );
        }
    }

    #[test]
    fn v1_names_map_both_ways() {
        let expected: &[(&str, &str)] = &[
            ("base", "eip155:8453"),
            ("base-sepolia", "eip155:84532"),
            ("avalanche", "eip155:43114"),
            ("avalanche-fuji", "eip155:43113"),
            ("polygon", "eip155:137"),
            ("polygon-amoy", "eip155:80002"),
            ("sei", "eip155:1329"),
            ("sei-testnet", "eip155:1328"),
            ("iotex", "eip155:4689"),
            ("skale-base-sepolia", "eip155:324705682"),
            ("solana", SOLANA_MAINNET),
            ("solana-devnet", SOLANA_DEVNET),
        ];
        for (name, caip2) in expected {
            let network = Network::from_v1_name(name).unwrap();
            assert_eq!(network.as_str(), *caip2);
            assert_eq!(network.v1_name(), Some(*name));
            assert_eq!(Network::parse_any(name).unwrap(), network);
            assert_eq!(Network::parse_any(caip2).unwrap(), network);
        }
    }

    #[test]
    fn v1_table_is_a_bijection() {
        for (i, (name, id)) in V1_EVM_NAMES.iter().enumerate() {
            for (other_name, other_id) in &V1_EVM_NAMES[i + 1..] {
                assert_ne!(name, other_name);
                assert_ne!(id, other_id);
            }
            assert_eq!(Network::eip155(*id).v1_name(), Some(*name));
        }
    }

    #[test]
    fn unknown_names_and_chains() {
        assert_eq!(Network::from_v1_name("Base"), None);
        assert_eq!(Network::from_v1_name("arbitrum"), None);
        assert_eq!(
            Network::parse_any("arbitrum"),
            Err(NetworkError::Unknown("arbitrum".into()))
        );
        // A colon means CAIP-2, so the error describes the CAIP-2 problem.
        assert_eq!(
            Network::parse_any("eip155:x"),
            Err(NetworkError::InvalidChainId("eip155:x".into()))
        );
        assert_eq!(Network::eip155(42161).v1_name(), None);
        assert_eq!(Network::parse("ach:us").unwrap().v1_name(), None);
    }

    #[test]
    fn serde_uses_caip2_strictly() {
        let n: Network = serde_json::from_str(r#""eip155:84532""#).unwrap();
        assert_eq!(n, Network::eip155(84532));
        assert_eq!(serde_json::to_string(&n).unwrap(), r#""eip155:84532""#);
        // v2 wire fields do not accept legacy names.
        assert!(serde_json::from_str::<Network>(r#""base-sepolia""#).is_err());
    }

    #[test]
    fn v1_serde_reads_both_and_writes_names() {
        #[derive(Serialize, Deserialize)]
        struct W {
            #[serde(with = "v1_serde")]
            n: Network,
        }
        let w: W = serde_json::from_str(r#"{"n":"base-sepolia"}"#).unwrap();
        assert_eq!(w.n, Network::eip155(84532));
        assert_eq!(
            serde_json::to_string(&w).unwrap(),
            r#"{"n":"base-sepolia"}"#
        );

        let w: W = serde_json::from_str(r#"{"n":"eip155:8453"}"#).unwrap();
        assert_eq!(serde_json::to_string(&w).unwrap(), r#"{"n":"base"}"#);

        // No v1 name: the CAIP-2 id is written as-is.
        let w = W {
            n: Network::eip155(42161),
        };
        assert_eq!(
            serde_json::to_string(&w).unwrap(),
            r#"{"n":"eip155:42161"}"#
        );

        assert!(serde_json::from_str::<W>(r#"{"n":"nowhere"}"#).is_err());
    }

    #[test]
    fn signer_patterns() {
        let base = Network::eip155(8453);
        assert!(base.matches_pattern("eip155:*"));
        assert!(base.matches_pattern("eip155:8453"));
        assert!(!base.matches_pattern("eip155:84532"));
        assert!(!base.matches_pattern("solana:*"));
    }
}
