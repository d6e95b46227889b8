//! One EVM chain over JSON-RPC: the reads verification needs (balance, nonce state, a simulated
//! transfer), the log search that proves a payment landed, and the relayer that submits
//! `transferWithAuthorization` with Tariff's own gas key.

use std::time::Duration;

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{BlockNumberOrTag, Filter, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::{SolCall, SolEvent};
use alloy::transports::{RpcError, TransportErrorKind};
use tokio::sync::Mutex;

use super::PaymentError;
use super::eip3009::Authorization;

// The generated call builders mirror the contract's 9-argument functions.
sol! {
    #[sol(rpc)]
    #[allow(clippy::too_many_arguments)]
    interface IEIP3009 {
        function balanceOf(address account) external view returns (uint256);
        function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
        function transferWithAuthorization(address from, address to, uint256 value,
            uint256 validAfter, uint256 validBefore, bytes32 nonce, uint8 v, bytes32 r, bytes32 s) external;
        function transferWithAuthorization(address from, address to, uint256 value,
            uint256 validAfter, uint256 validBefore, bytes32 nonce, bytes signature) external;
        event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce);
        event Transfer(address indexed from, address indexed to, uint256 value);
    }
}

/// How far back a landed authorization is searched for when its block is not known.
const LOG_LOOKBACK_BLOCKS: u64 = 50_000;

/// A transfer that landed on chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Landed {
    pub tx: B256,
    pub block: u64,
}

#[derive(Clone)]
pub struct Chain {
    provider: DynProvider,
    pub chain_id: u64,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("chain_id", &self.chain_id)
            .finish()
    }
}

/// A node that did not answer (or answered nonsense) is an outage, not a verdict on the payment.
fn rpc_down(e: impl std::fmt::Display) -> PaymentError {
    PaymentError::unavailable("chain_unavailable", format!("the chain RPC failed: {e}"))
}

/// The reason a node gave for refusing a call (a revert), or `None` when the node itself failed.
fn revert_reason(e: &RpcError<TransportErrorKind>) -> Option<String> {
    let RpcError::ErrorResp(resp) = e else {
        return None;
    };
    let decoded = resp
        .as_revert_data()
        .and_then(|d| alloy::sol_types::decode_revert_reason(&d));
    Some(decoded.unwrap_or_else(|| resp.message.to_string()))
}

/// The `transferWithAuthorization` call for `auth`: the `(v, r, s)` overload for an EOA
/// signature, the `bytes` one (ERC-1271 wallets) otherwise.
fn transfer_call(token: Address, auth: &Authorization) -> TransactionRequest {
    let m = &auth.message;
    let data = match auth.vrs() {
        Some((v, r, s)) => IEIP3009::transferWithAuthorization_0Call {
            from: m.from,
            to: m.to,
            value: m.value,
            validAfter: m.validAfter,
            validBefore: m.validBefore,
            nonce: m.nonce,
            v,
            r,
            s,
        }
        .abi_encode(),
        None => IEIP3009::transferWithAuthorization_1Call {
            from: m.from,
            to: m.to,
            value: m.value,
            validAfter: m.validAfter,
            validBefore: m.validBefore,
            nonce: m.nonce,
            signature: Bytes::from(auth.signature.clone()),
        }
        .abi_encode(),
    };
    TransactionRequest::default()
        .with_to(token)
        .with_input(data)
}

impl Chain {
    /// A read-only client. `timeout` bounds every RPC call.
    pub fn connect(url: &str, chain_id: u64, timeout: Duration) -> Result<Chain, String> {
        let url: reqwest::Url = url.parse().map_err(|e| format!("rpc_url: {e}"))?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        let provider = ProviderBuilder::new().connect_reqwest(client, url).erased();
        Ok(Chain { provider, chain_id })
    }

    /// The node's chain id, to refuse a misconfigured RPC before it verifies anything.
    pub async fn remote_chain_id(&self) -> Result<u64, PaymentError> {
        self.provider.get_chain_id().await.map_err(rpc_down)
    }

    pub async fn balance_of(&self, token: Address, who: Address) -> Result<U256, PaymentError> {
        IEIP3009::new(token, &self.provider)
            .balanceOf(who)
            .call()
            .await
            .map_err(rpc_down)
    }

    /// Whether `(from, nonce)` was used (or cancelled) on `token`.
    pub async fn authorization_used(
        &self,
        token: Address,
        auth: &Authorization,
    ) -> Result<bool, PaymentError> {
        IEIP3009::new(token, &self.provider)
            .authorizationState(auth.payer(), auth.message.nonce)
            .call()
            .await
            .map_err(rpc_down)
    }

    pub async fn latest_block(&self) -> Result<(u64, u64), PaymentError> {
        let block = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Latest)
            .await
            .map_err(rpc_down)?
            .ok_or_else(|| rpc_down("no latest block"))?;
        Ok((block.header.number, block.header.timestamp))
    }

    /// Runs the transfer with `eth_call`: the token itself judges the signature (including
    /// ERC-1271 wallets), the balance, the nonce and the time window. `Ok(Err(reason))` is the
    /// token's refusal; `Err` is an RPC outage.
    pub async fn simulate(
        &self,
        token: Address,
        auth: &Authorization,
        caller: Option<Address>,
    ) -> Result<Result<(), String>, PaymentError> {
        let mut tx = transfer_call(token, auth);
        if let Some(c) = caller {
            tx = tx.with_from(c);
        }
        match self.provider.call(tx).await {
            Ok(_) => Ok(Ok(())),
            Err(e) => match revert_reason(&e) {
                Some(reason) => Ok(Err(reason)),
                None => Err(rpc_down(e)),
            },
        }
    }

    /// Where `(from, nonce)` was used on `token`, from its `AuthorizationUsed` log, searching
    /// from `from_block` (or the recent past). A used authorization with no such log was
    /// cancelled, not spent.
    pub async fn find_landed(
        &self,
        token: Address,
        auth: &Authorization,
        from_block: Option<u64>,
    ) -> Result<Option<Landed>, PaymentError> {
        let start = match from_block {
            Some(b) => b,
            None => self
                .latest_block()
                .await?
                .0
                .saturating_sub(LOG_LOOKBACK_BLOCKS),
        };
        let filter = Filter::new()
            .address(token)
            .event_signature(IEIP3009::AuthorizationUsed::SIGNATURE_HASH)
            .topic1(auth.payer().into_word())
            .topic2(auth.message.nonce)
            .from_block(start);
        let logs = self.provider.get_logs(&filter).await.map_err(rpc_down)?;
        Ok(logs.first().and_then(|log| {
            Some(Landed {
                tx: log.transaction_hash?,
                block: log.block_number?,
            })
        }))
    }

    /// Whether transaction `tx` moved exactly `auth.value` of `token` from the payer to `to`:
    /// the proof that a payment someone else submitted reached us.
    pub async fn transfer_in_tx(
        &self,
        token: Address,
        auth: &Authorization,
        tx: B256,
    ) -> Result<bool, PaymentError> {
        let Some(receipt) = self
            .provider
            .get_transaction_receipt(tx)
            .await
            .map_err(rpc_down)?
        else {
            return Ok(false);
        };
        if !receipt.status() {
            return Ok(false);
        }
        Ok(receipt.inner.logs().iter().any(|log| {
            log.address() == token
                && IEIP3009::Transfer::decode_log(&log.inner).is_ok_and(|t| {
                    t.from == auth.payer()
                        && t.to == auth.message.to
                        && t.value == auth.message.value
                })
        }))
    }
}

/// Submits settlements with Tariff's gas key. Broadcasts are serialised per key with a local
/// nonce counter, so concurrent settlements never reuse or skip a nonce; the counter is
/// re-read from the chain after any failed broadcast.
pub struct Relayer {
    signing: DynProvider,
    address: Address,
    next_nonce: Mutex<Option<u64>>,
    confirmations: u64,
    receipt_timeout: Duration,
}

impl std::fmt::Debug for Relayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relayer")
            .field("address", &self.address)
            .field("confirmations", &self.confirmations)
            .finish_non_exhaustive()
    }
}

/// What a broadcast attempt did.
#[derive(Debug)]
pub enum Submitted {
    /// Mined (with the configured confirmations): `Ok` if it succeeded, `Err` if it reverted.
    Mined { landed: Landed, success: bool },
    /// The node refused it before broadcast (gas estimation reverted): nothing was sent.
    Refused(String),
}

impl Relayer {
    pub fn new(
        url: &str,
        key: &str,
        confirmations: u64,
        timeout: Duration,
        receipt_timeout: Duration,
        poll_interval: Duration,
    ) -> Result<Relayer, String> {
        let signer: PrivateKeySigner = key
            .trim()
            .parse()
            .map_err(|_| "gas key is not a 32-byte hex private key".to_string())?;
        let address = signer.address();
        let url: reqwest::Url = url.parse().map_err(|e| format!("rpc_url: {e}"))?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        let signing = ProviderBuilder::new()
            .wallet(EthereumWallet::from(signer))
            .connect_reqwest(client, url)
            .erased();
        // alloy polls receipts every 7 s for a remote node by default; a payer waits on this.
        signing.client().set_poll_interval(poll_interval);
        Ok(Relayer {
            signing,
            address,
            next_nonce: Mutex::new(None),
            confirmations: confirmations.max(1),
            receipt_timeout,
        })
    }

    pub fn address(&self) -> Address {
        self.address
    }

    /// Broadcasts the transfer and waits for its receipt. `on_broadcast` runs with the
    /// transaction hash once the node accepted it, before waiting: the caller records it
    /// durably, so a crash while waiting leaves a hash to look up.
    pub async fn submit<F, Fut>(
        &self,
        token: Address,
        auth: &Authorization,
        on_broadcast: F,
    ) -> Result<Submitted, PaymentError>
    where
        F: FnOnce(B256) -> Fut,
        Fut: std::future::Future<Output = Result<(), PaymentError>>,
    {
        // Gas and fees are estimated before taking the nonce lock, so the lock covers only the
        // broadcast itself (one round trip) and concurrent settlements do not queue on estimates.
        let tx = transfer_call(token, auth).with_from(self.address);
        let gas = match self.signing.estimate_gas(tx.clone()).await {
            Ok(g) => g,
            Err(e) => {
                return match revert_reason(&e) {
                    Some(reason) => Ok(Submitted::Refused(reason)),
                    None => Err(rpc_down(e)),
                };
            }
        };
        let fees = self
            .signing
            .estimate_eip1559_fees()
            .await
            .map_err(rpc_down)?;
        // Headroom: the estimate ran against the latest block, the transaction lands in a later one.
        let tx = tx
            .with_gas_limit(gas.saturating_mul(6) / 5)
            .with_max_fee_per_gas(fees.max_fee_per_gas)
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
        let pending = {
            let mut next = self.next_nonce.lock().await;
            let nonce = match *next {
                Some(n) => n,
                None => self
                    .signing
                    .get_transaction_count(self.address)
                    .pending()
                    .await
                    .map_err(rpc_down)?,
            };
            match self.signing.send_transaction(tx.with_nonce(nonce)).await {
                Ok(p) => {
                    *next = Some(nonce + 1);
                    p
                }
                Err(e) => {
                    // Unknown how far the node got: re-read the nonce next time.
                    *next = None;
                    return match revert_reason(&e) {
                        Some(reason) => Ok(Submitted::Refused(reason)),
                        // The node may have taken the transaction before failing to answer.
                        None => Err(PaymentError::Pending(format!("broadcast failed: {e}"))),
                    };
                }
            }
        };
        let tx = *pending.tx_hash();
        on_broadcast(tx).await?;
        let receipt = pending
            .with_required_confirmations(self.confirmations)
            .with_timeout(Some(self.receipt_timeout))
            .get_receipt()
            .await
            .map_err(|e| PaymentError::Pending(format!("transaction {tx} not confirmed: {e}")))?;
        Ok(Submitted::Mined {
            landed: Landed {
                tx,
                block: receipt.block_number.unwrap_or_default(),
            },
            success: receipt.status(),
        })
    }
}
