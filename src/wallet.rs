//! Wallets as accounts: a `SIGN-IN-WITH-X` header proves control of a wallet (EIP-4361 signed
//! with EIP-191, or a smart wallet's EIP-1271 answer), and the wallet then spends from its
//! account like an API key. Every check of the specification has its own refusal; a nonce is
//! accepted once across instances (`Accounts::use_nonce`).

use alloy::primitives::{Address, B256, eip191_hash_message};

use crate::payment::PaymentError;
use crate::payment::chain::Chain;
use crate::x402::siwx::{self, HeaderError, SignIn};

/// How far a signer's clock may run ahead of ours.
pub const CLOCK_SKEW_MS: u64 = 60_000;

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// Not a sign-in payload at all: 400.
    #[error(transparent)]
    Malformed(#[from] HeaderError),
    /// A well-formed sign-in that does not prove this wallet for this request.
    #[error("{detail}")]
    Refused {
        reason: &'static str,
        detail: String,
    },
    /// The chain could not be asked about a smart wallet: 503.
    #[error(transparent)]
    Chain(#[from] PaymentError),
}

fn refuse(reason: &'static str, detail: impl Into<String>) -> SignInError {
    SignInError::Refused {
        reason,
        detail: detail.into(),
    }
}

/// What this request lets a sign-in prove.
pub struct Expected<'a> {
    /// The Host the request was sent to (the message's `domain` must be it).
    pub host: &'a str,
    /// The request's absolute URL (the message's `uri` must be a prefix of it).
    pub url: &'a str,
    /// EVM chain ids a wallet may sign for.
    pub chains: &'a [u64],
    /// The oldest an `issuedAt` may be.
    pub max_age_ms: u64,
    pub now_ms: u64,
}

/// The `scheme://host[:port]` of a URL, lower-cased.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty() && matches!(scheme, "http" | "https"))
        .then(|| format!("{scheme}://{host}").to_ascii_lowercase())
}

/// Checks a sign-in against this request, then its signature (the nonce is the caller's to
/// take, once everything else holds). Returns the wallet.
pub async fn verify(
    s: &SignIn,
    e: &Expected<'_>,
    chain_of: impl Fn(u64) -> Option<Chain>,
) -> Result<Address, SignInError> {
    if !s.domain.eq_ignore_ascii_case(e.host) {
        return Err(refuse(
            "invalid_siwx_domain_mismatch",
            format!("signed for {}, this is {}", s.domain, e.host),
        ));
    }
    let same_origin = origin(&s.uri).is_some() && origin(&s.uri) == origin(e.url);
    if !same_origin || !e.url.starts_with(&s.uri) {
        return Err(refuse(
            "invalid_siwx_uri_mismatch",
            format!("signed for {}, which does not cover {}", s.uri, e.url),
        ));
    }
    if s.version != siwx::VERSION {
        return Err(refuse(
            "invalid_siwx_version",
            format!("version {:?}; only \"1\" exists", s.version),
        ));
    }
    let chain_id = s
        .evm_chain_id()
        .filter(|c| e.chains.contains(c))
        .ok_or_else(|| {
            refuse(
                "invalid_siwx_unsupported_chain",
                format!(
                    "{} is not a chain this server accepts sign-ins for",
                    s.chain_id
                ),
            )
        })?;
    if !matches!(s.kind.as_str(), "eip191" | "eip1271") {
        return Err(refuse(
            "invalid_siwx_unsupported_chain",
            format!("signature type {:?} is not an EVM one", s.kind),
        ));
    }
    let address: Address = crate::x402::exact_evm::parse_address(&s.address)
        .map(Address::from)
        .ok_or_else(|| refuse("invalid_siwx_address", "`address` is not an EVM address"))?;
    // SIWE's grammar: at least 8 alphanumerics (the official client will not sign less).
    if s.nonce.len() < 8
        || s.nonce.len() > 128
        || !s.nonce.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(refuse(
            "invalid_siwx_nonce",
            "the nonce must be 8 to 128 letters and digits",
        ));
    }
    let issued = siwx::parse_rfc3339(&s.issued_at).ok_or_else(|| {
        refuse(
            "invalid_siwx_issued_at",
            "`issuedAt` is not an RFC 3339 time",
        )
    })?;
    if issued > e.now_ms + CLOCK_SKEW_MS {
        return Err(refuse(
            "invalid_siwx_issued_at_in_future",
            "`issuedAt` is in the future",
        ));
    }
    if e.now_ms.saturating_sub(issued) > e.max_age_ms {
        return Err(refuse(
            "invalid_siwx_issued_at_too_old",
            format!(
                "signed {} s ago; at most {} s are accepted",
                (e.now_ms - issued) / 1000,
                e.max_age_ms / 1000
            ),
        ));
    }
    if let Some(t) = &s.expiration_time {
        let t = siwx::parse_rfc3339(t).ok_or_else(|| {
            refuse(
                "invalid_siwx_expiration_time",
                "`expirationTime` is not an RFC 3339 time",
            )
        })?;
        if t <= e.now_ms {
            return Err(refuse(
                "invalid_siwx_expired",
                "the sign-in message has expired",
            ));
        }
    }
    if let Some(t) = &s.not_before {
        let t = siwx::parse_rfc3339(t).ok_or_else(|| {
            refuse(
                "invalid_siwx_not_before",
                "`notBefore` is not an RFC 3339 time",
            )
        })?;
        if t > e.now_ms {
            return Err(refuse(
                "invalid_siwx_not_yet_valid",
                "the sign-in message is not valid yet",
            ));
        }
    }
    let signature = s
        .signature
        .strip_prefix("0x")
        .and_then(|h| hex::decode(h).ok())
        .filter(|b| !b.is_empty())
        .ok_or_else(|| refuse("invalid_siwx_signature", "`signature` is not hex"))?;
    let hash = eip191_hash_message(s.message(&address.to_checksum(None), chain_id));
    if recovers_to(&signature, &hash, address) {
        return Ok(address);
    }
    // Not the key's: maybe a smart wallet, which only the chain can judge.
    if let Some(chain) = chain_of(chain_id)
        && chain.has_code(address).await?
        && chain.accepts_signature(address, hash, &signature).await?
    {
        return Ok(address);
    }
    Err(refuse(
        "invalid_siwx_signature",
        format!("the signature does not prove {address} signed this message"),
    ))
}

fn recovers_to(signature: &[u8], hash: &B256, address: Address) -> bool {
    crate::payment::scheme::check_eoa_signature(signature, hash, address)
        .is_ok_and(|c| c == crate::payment::scheme::SignatureCheck::Recovered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;
    use serde_json::json;

    fn official() -> SignIn {
        serde_json::from_value(json!({"domain":"127.0.0.1:8402","address":"0x70997970C51812dc3A010C7d01b50e0d17dc79C8","statement":"Sign in to Tariff","uri":"http://127.0.0.1:8402/search","version":"1","chainId":"eip155:84532","type":"eip191","nonce":"bb9cf094ea3e8ac86b9e78f1d6acb307","issuedAt":"2026-12-02T15:22:11.984Z","expirationTime":"2026-12-02T15:27:12.002Z","resources":["http://127.0.0.1:8402/search"],"signature":"0x6776c46aae6d4fbc394ad79b063da6c8d449e2915e86a057808a35e1113ea8ff73ff9245d704000909c03cb03b5f12b96eaa2c99e9fcbb3e0487b6c270444ab11c"})).unwrap()
    }

    fn at(now_ms: u64) -> Expected<'static> {
        Expected {
            host: "127.0.0.1:8402",
            url: "http://127.0.0.1:8402/search?q=x",
            chains: &[84532],
            max_age_ms: 300_000,
            now_ms,
        }
    }

    fn code(r: Result<Address, SignInError>) -> String {
        match r {
            Ok(a) => format!("{a:#x}"),
            Err(SignInError::Refused { reason, .. }) => reason.to_string(),
            Err(e) => e.to_string(),
        }
    }

    /// Signs `s` (after `tweak`) with `key`, as the official client would.
    fn signed(key: &PrivateKeySigner, tweak: impl Fn(&mut SignIn)) -> SignIn {
        let mut s = official();
        s.address = key.address().to_checksum(None);
        tweak(&mut s);
        let msg = s.message(&key.address().to_checksum(None), 84532);
        s.signature = format!(
            "0x{}",
            hex::encode(key.sign_message_sync(msg.as_bytes()).unwrap().as_bytes())
        );
        s
    }

    #[tokio::test]
    async fn the_official_clients_sign_in_is_proven_and_each_check_has_its_reason() {
        let issued = siwx::parse_rfc3339("2026-12-02T15:22:11.984Z").unwrap();
        let now = issued + 10_000;
        assert_eq!(
            code(verify(&official(), &at(now), |_| None).await),
            "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"
        );
        let key = PrivateKeySigner::random();
        type Tweak = fn(&mut SignIn);
        let cases: [(&str, Tweak); 9] = [
            ("invalid_siwx_domain_mismatch", |s| {
                s.domain = "evil.example".into()
            }),
            ("invalid_siwx_uri_mismatch", |s| {
                s.uri = "http://127.0.0.1:8402/other".into()
            }),
            ("invalid_siwx_uri_mismatch", |s| {
                s.uri = "https://127.0.0.1:8402/search".into()
            }),
            ("invalid_siwx_version", |s| s.version = "2".into()),
            ("invalid_siwx_unsupported_chain", |s| {
                s.chain_id = "eip155:1".into()
            }),
            ("invalid_siwx_nonce", |s| s.nonce = "abc".into()),
            ("invalid_siwx_issued_at", |s| {
                s.issued_at = "yesterday".into()
            }),
            ("invalid_siwx_expired", |s| {
                s.expiration_time = Some("2026-12-02T15:22:12.000Z".into())
            }),
            ("invalid_siwx_not_yet_valid", |s| {
                s.not_before = Some("2026-12-02T16:00:00Z".into())
            }),
        ];
        for (want, tweak) in cases {
            assert_eq!(
                code(verify(&signed(&key, tweak), &at(now), |_| None).await),
                want
            );
        }
        // Time: too old, from the future.
        assert_eq!(
            code(verify(&signed(&key, |_| {}), &at(issued + 300_001), |_| None).await),
            "invalid_siwx_issued_at_too_old"
        );
        assert_eq!(
            code(
                verify(
                    &signed(&key, |_| {}),
                    &at(issued - CLOCK_SKEW_MS - 1),
                    |_| None
                )
                .await
            ),
            "invalid_siwx_issued_at_in_future"
        );
        // Another wallet's signature, or any field changed after signing.
        let mut stolen = signed(&key, |_| {});
        stolen.address = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into();
        assert_eq!(
            code(verify(&stolen, &at(now), |_| None).await),
            "invalid_siwx_signature"
        );
        let mut changed = official();
        changed.statement = Some("Sign in to something else".into());
        assert_eq!(
            code(verify(&changed, &at(now), |_| None).await),
            "invalid_siwx_signature"
        );
        // The uri covers what starts with it on the same origin.
        assert_eq!(
            code(
                verify(
                    &signed(&key, |s| s.uri = "http://127.0.0.1:8402/".into()),
                    &at(now),
                    |_| None
                )
                .await
            ),
            format!("{:#x}", key.address())
        );
    }
}
