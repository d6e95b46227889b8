//! Known USDC deployments and the EIP-712 domain values their signatures need.
//!
//! The EIP-712 `name`/`version` go into `PaymentRequirements.extra`; the client signs with
//! them and the token contract recomputes the domain separator from its own values. A mismatch
//! (the classic one: Base mainnet is `"USD Coin"`, Base Sepolia is `"USDC"`) makes every
//! signature invalid, so these values are data to be copied, never guessed.

use serde_json::{Map, Value};

use super::network::Network;

/// One token deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownAsset {
    /// EVM chain id of the network the token lives on.
    pub chain_id: u64,
    /// Human label for logs and config errors.
    pub label: &'static str,
    /// Contract address, EIP-55 checksummed as published.
    pub address: &'static str,
    /// EIP-712 domain `name`.
    pub eip712_name: &'static str,
    /// EIP-712 domain `version`.
    pub eip712_version: &'static str,
    pub decimals: u8,
}

impl KnownAsset {
    pub fn network(&self) -> Network {
        Network::eip155(self.chain_id)
    }

    /// The `extra` object for an EIP-3009 `exact` requirement on this token:
    /// `{"name": …, "version": …}`. `assetTransferMethod` is left out because EIP-3009 is the
    /// default and the TS reference server omits it; adding it would change the deep-equality
    /// match against clients that echo what the TS server sent.
    pub fn eip712_extra(&self) -> Map<String, Value> {
        let mut extra = Map::new();
        extra.insert("name".into(), Value::from(self.eip712_name));
        extra.insert("version".into(), Value::from(self.eip712_version));
        extra
    }

    /// Whether `address` is this token's contract. EVM addresses compare case-insensitively:
    /// the mixed case of EIP-55 is a checksum, not part of the value.
    pub fn is_address(&self, address: &str) -> bool {
        self.address.eq_ignore_ascii_case(address)
    }
}

/// USDC (all 6 decimals, all EIP-3009, all version "2").
///
/// Source: reference §2.4 (`@x402/evm` `DEFAULT_STABLECOINS`), cross-checked against the
/// `@x402/evm` version pinned in `package.json` (its `DEFAULT_ASSETS`), which also lists
/// Ethereum and Avalanche. Monad is `"USDC"`: §2.4 (from an older commit) says `"USD Coin"`,
/// but both the pinned package and the current foundation source say `"USDC"`.
pub const KNOWN_USDC: &[KnownAsset] = &[
    KnownAsset {
        chain_id: 8453,
        label: "USDC on Base",
        address: "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
        eip712_name: "USD Coin",
        eip712_version: "2",
        decimals: 6,
    },
    KnownAsset {
        chain_id: 84532,
        label: "USDC on Base Sepolia",
        address: "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        eip712_name: "USDC",
        eip712_version: "2",
        decimals: 6,
    },
    KnownAsset {
        chain_id: 137,
        label: "USDC on Polygon",
        address: "0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359",
        eip712_name: "USD Coin",
        eip712_version: "2",
        decimals: 6,
    },
    KnownAsset {
        chain_id: 42161,
        label: "USDC on Arbitrum One",
        address: "0xaf88d065e77c8cC2239327C5EDb3A432268e5831",
        eip712_name: "USD Coin",
        eip712_version: "2",
        decimals: 6,
    },
    KnownAsset {
        chain_id: 421614,
        label: "USDC on Arbitrum Sepolia",
        address: "0x75faf114eafb1BDbe2F0316DF893fd58CE46AA4d",
        eip712_name: "USD Coin",
        eip712_version: "2",
        decimals: 6,
    },
    KnownAsset {
        chain_id: 143,
        label: "USDC on Monad",
        address: "0x754704Bc059F8C67012fEd69BC8A327a5aafb603",
        eip712_name: "USDC",
        eip712_version: "2",
        decimals: 6,
    },
    KnownAsset {
        chain_id: 1,
        label: "USDC on Ethereum",
        address: "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
        eip712_name: "USD Coin",
        eip712_version: "2",
        decimals: 6,
    },
    KnownAsset {
        chain_id: 43114,
        label: "USDC on Avalanche C-Chain",
        address: "0xB97EF9Ef8734C71904D8002F8b6Bc66Dd9c48a6E",
        eip712_name: "USD Coin",
        eip712_version: "2",
        decimals: 6,
    },
];

/// The known USDC deployment on `network`, if any.
pub fn usdc_for(network: &Network) -> Option<&'static KnownAsset> {
    network.chain_id().and_then(usdc_for_chain_id)
}

/// The known USDC deployment on the EVM chain `chain_id`, if any.
pub fn usdc_for_chain_id(chain_id: u64) -> Option<&'static KnownAsset> {
    KNOWN_USDC.iter().find(|a| a.chain_id == chain_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x402::exact_evm::parse_address;

    #[test]
    fn base_and_base_sepolia_differ_in_name() {
        let base = usdc_for(&Network::eip155(8453)).unwrap();
        assert_eq!(base.address, "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913");
        assert_eq!(base.eip712_name, "USD Coin");
        assert_eq!(base.eip712_version, "2");
        assert_eq!(base.decimals, 6);

        let sepolia = usdc_for(&Network::parse("eip155:84532").unwrap()).unwrap();
        assert_eq!(
            sepolia.address,
            "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
        );
        assert_eq!(sepolia.eip712_name, "USDC");
        assert_eq!(sepolia.network(), Network::eip155(84532));
    }

    #[test]
    fn lookups_miss_cleanly() {
        assert_eq!(
            usdc_for(&Network::parse("solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp").unwrap()),
            None
        );
        assert_eq!(usdc_for_chain_id(31337), None);
    }

    #[test]
    fn extra_matches_reference_example() {
        let sepolia = usdc_for_chain_id(84532).unwrap();
        assert_eq!(
            Value::Object(sepolia.eip712_extra()),
            serde_json::json!({"name": "USDC", "version": "2"})
        );
    }

    #[test]
    fn address_comparison_ignores_case() {
        let base = usdc_for_chain_id(8453).unwrap();
        assert!(base.is_address("0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"));
        assert!(!base.is_address("0x036CbD53842c5426634e7929541eC2318f3dCF7e"));
    }

    #[test]
    fn table_is_well_formed() {
        for (i, asset) in KNOWN_USDC.iter().enumerate() {
            assert!(parse_address(asset.address).is_some(), "{}", asset.label);
            assert_eq!(asset.decimals, 6, "{}", asset.label);
            assert!(
                KNOWN_USDC[i + 1..]
                    .iter()
                    .all(|o| o.chain_id != asset.chain_id)
            );
        }
    }
}
