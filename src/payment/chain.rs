//! One EVM chain over JSON-RPC, independent of any payment scheme: ERC-20 balances, view calls,
//! simulations, the log and receipt reads that prove a payment landed, and the relayer that
//! submits settlements with Tariff's own gas key. What to call is each scheme's business.

use std::time::Duration;

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, PendingTransactionBuilder, Provider, ProviderBuilder};
use alloy::rpc::types::{BlockNumberOrTag, Filter, Log, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::{SolCall, SolEvent};
use alloy::transports::{RpcError, TransportErrorKind};
use tokio::sync::Mutex;

use super::PaymentError;

/// Told the hash of a settlement the node accepted, before its receipt is awaited: the caller
/// records it durably, so a crash while waiting leaves a hash to look up.
#[async_trait::async_trait]
pub trait Broadcast: Sync {
    async fn broadcast(&self, tx: B256);
}

sol! {
    #[sol(rpc)]
    interface IERC20 {
        function balanceOf(address account) external view returns (uint256);
        function allowance(address owner, address spender) external view returns (uint256);
        event Transfer(address indexed from, address indexed to, uint256 value);
    }
}

pub use IERC20::Transfer as Erc20Transfer;

/// How far back a landed authorization is searched for when its block is not known.
const LOG_LOOKBACK_BLOCKS: u64 = 50_000;

/// A mined transaction, as its receipt tells.
#[derive(Clone, Debug)]
pub struct Receipt {
    pub succeeded: bool,
    pub block: u64,
    pub logs: Vec<Log>,
}

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
        IERC20::new(token, &self.provider)
            .balanceOf(who)
            .call()
            .await
            .map_err(rpc_down)
    }

    pub async fn allowance(
        &self,
        token: Address,
        owner: Address,
        spender: Address,
    ) -> Result<U256, PaymentError> {
        IERC20::new(token, &self.provider)
            .allowance(owner, spender)
            .call()
            .await
            .map_err(rpc_down)
    }

    /// One `eth_call` of a view function on `to`.
    pub async fn read<C: SolCall>(&self, to: Address, call: C) -> Result<C::Return, PaymentError> {
        let tx = TransactionRequest::default()
            .with_to(to)
            .with_input(call.abi_encode());
        let out = self.provider.call(tx).await.map_err(rpc_down)?;
        C::abi_decode_returns(&out).map_err(rpc_down)
    }

    /// One `eth_call` whose revert is an answer (`Ok(Err(reason))`), not an outage.
    pub async fn try_read<C: SolCall>(
        &self,
        to: Address,
        call: C,
    ) -> Result<Result<C::Return, String>, PaymentError> {
        let tx = TransactionRequest::default()
            .with_to(to)
            .with_input(call.abi_encode());
        match self.provider.call(tx).await {
            Ok(out) => Ok(Ok(C::abi_decode_returns(&out).map_err(rpc_down)?)),
            Err(e) => match revert_reason(&e) {
                Some(reason) => Ok(Err(reason)),
                None => Err(rpc_down(e)),
            },
        }
    }

    /// Whether `who` is a contract (a smart wallet answers EIP-1271, an EOA has no code).
    pub async fn has_code(&self, who: Address) -> Result<bool, PaymentError> {
        let code = self.provider.get_code_at(who).await.map_err(rpc_down)?;
        Ok(!code.is_empty())
    }

    /// EIP-1271: whether the contract wallet `who` accepts `signature` over `hash`. A revert or
    /// any other answer than the magic value is a no.
    pub async fn accepts_signature(
        &self,
        who: Address,
        hash: B256,
        signature: &[u8],
    ) -> Result<bool, PaymentError> {
        alloy::sol! {
            function isValidSignature(bytes32 hash, bytes signature) external view returns (bytes4);
        }
        let tx = TransactionRequest::default().with_to(who).with_input(
            isValidSignatureCall {
                hash,
                signature: signature.to_vec().into(),
            }
            .abi_encode(),
        );
        match self.provider.call(tx).await {
            Ok(out) => Ok(out.len() >= 4 && out[..4] == [0x16, 0x26, 0xba, 0x7e]),
            Err(e) if revert_reason(&e).is_some() => Ok(false),
            Err(e) => Err(rpc_down(e)),
        }
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

    /// Runs a settlement with `eth_call`: the contract itself judges the signature (including
    /// ERC-1271 wallets), the balance, the nonce and the time window. `Ok(Err(reason))` is the
    /// contract's refusal; `Err` is an RPC outage.
    pub async fn simulate(
        &self,
        tx: TransactionRequest,
    ) -> Result<Result<(), String>, PaymentError> {
        match self.provider.call(tx).await {
            Ok(_) => Ok(Ok(())),
            Err(e) => match revert_reason(&e) {
                Some(reason) => Ok(Err(reason)),
                None => Err(rpc_down(e)),
            },
        }
    }

    /// The transaction of the first log matching `filter`, searching from `from_block` (or the
    /// recent past when the block is not known).
    pub async fn first_log_tx(
        &self,
        filter: Filter,
        from_block: Option<u64>,
    ) -> Result<Option<B256>, PaymentError> {
        Ok(self.log_txs(filter, from_block).await?.first().copied())
    }

    /// The transactions of every log matching `filter` (oldest first), from `from_block` or
    /// the recent past.
    pub async fn log_txs(
        &self,
        filter: Filter,
        from_block: Option<u64>,
    ) -> Result<Vec<B256>, PaymentError> {
        let start = match from_block {
            Some(b) => b,
            None => self
                .latest_block()
                .await?
                .0
                .saturating_sub(LOG_LOOKBACK_BLOCKS),
        };
        let logs = self
            .provider
            .get_logs(&filter.from_block(start))
            .await
            .map_err(rpc_down)?;
        Ok(logs.iter().filter_map(|l| l.transaction_hash).collect())
    }

    /// The logs of transaction `tx` if it was mined and succeeded (none otherwise): one
    /// receipt read for every proof a scheme needs about it.
    pub async fn succeeded_logs(&self, tx: B256) -> Result<Vec<Log>, PaymentError> {
        let receipt = self
            .provider
            .get_transaction_receipt(tx)
            .await
            .map_err(rpc_down)?;
        Ok(match receipt {
            Some(r) if r.status() => r.inner.logs().to_vec(),
            _ => Vec::new(),
        })
    }

    /// A transaction's receipt: whether it succeeded, its block and its logs (`None`: not
    /// mined, or unknown to the node).
    pub async fn receipt(&self, tx: B256) -> Result<Option<Receipt>, PaymentError> {
        let receipt = self
            .provider
            .get_transaction_receipt(tx)
            .await
            .map_err(rpc_down)?;
        Ok(receipt.map(|r| Receipt {
            succeeded: r.status(),
            block: r.block_number.unwrap_or(0),
            logs: r.inner.logs().to_vec(),
        }))
    }

    /// Whether transaction `tx` succeeded and moved exactly `value` of `token` from `from` to
    /// `to`: the proof that a payment someone else submitted reached us.
    pub async fn transfer_in_tx(
        &self,
        token: Address,
        from: Address,
        to: Address,
        value: U256,
        tx: B256,
    ) -> Result<bool, PaymentError> {
        let logs = self.succeeded_logs(tx).await?;
        Ok(has_transfer(&logs, token, from, to, value))
    }
}

/// Whether `logs` hold `token`'s `Transfer` of exactly `value` from `from` to `to`.
pub fn has_transfer(logs: &[Log], token: Address, from: Address, to: Address, value: U256) -> bool {
    logs.iter().any(|log| {
        log.address() == token
            && IERC20::Transfer::decode_log(&log.inner)
                .is_ok_and(|t| t.from == from && t.to == to && t.value == value)
    })
}

/// Whether `logs` hold an event `event` (its topic0) emitted by `emitter`.
pub fn has_event(logs: &[Log], emitter: Address, event: B256) -> bool {
    logs.iter()
        .any(|log| log.address() == emitter && log.topics().first() == Some(&event))
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
    pub async fn submit(
        &self,
        tx: TransactionRequest,
        on_broadcast: &dyn Broadcast,
    ) -> Result<Submitted, PaymentError> {
        let tx = match self.send(tx).await? {
            Ok(tx) => tx,
            Err(refused) => return Ok(Submitted::Refused(refused)),
        };
        on_broadcast.broadcast(tx).await;
        let receipt = self.confirm(tx).await?;
        Ok(Submitted::Mined {
            landed: Landed {
                tx,
                block: receipt.block,
            },
            success: receipt.succeeded,
        })
    }

    /// Estimates, signs and broadcasts `tx`: `Ok(Ok(hash))` once the node accepted it,
    /// `Ok(Err(reason))` when the node refused it before broadcast (gas estimation reverted:
    /// nothing was sent), `Err(Pending)` when the node may have taken it without answering.
    pub async fn send(&self, tx: TransactionRequest) -> Result<Result<B256, String>, PaymentError> {
        self.send_as(tx, None).await
    }

    /// [`Relayer::send`] with the gas limit estimated on `estimate` instead of `tx` (a batch
    /// whose calls may fail is estimated as the batch whose calls must all succeed).
    pub async fn send_as(
        &self,
        tx: TransactionRequest,
        estimate: Option<TransactionRequest>,
    ) -> Result<Result<B256, String>, PaymentError> {
        // Gas and fees are estimated before taking the nonce lock, so the lock covers only the
        // broadcast itself (one round trip) and concurrent settlements do not queue on estimates.
        let tx = tx.with_from(self.address);
        let estimate = estimate.map_or_else(|| tx.clone(), |e| e.with_from(self.address));
        let gas = match self.signing.estimate_gas(estimate).await {
            Ok(g) => g,
            Err(e) => {
                return match revert_reason(&e) {
                    Some(reason) => Ok(Err(reason)),
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
                Ok(Ok(*p.tx_hash()))
            }
            Err(e) => {
                // Unknown how far the node got: re-read the nonce next time.
                *next = None;
                match revert_reason(&e) {
                    Some(reason) => Ok(Err(reason)),
                    // The node may have taken the transaction before failing to answer.
                    None => Err(PaymentError::Pending(format!("broadcast failed: {e}"))),
                }
            }
        }
    }

    /// Waits for broadcast transaction `tx` to be mined with the configured confirmations.
    /// `Err(Pending)` when it is not within the receipt timeout (the reconciler finds out).
    pub async fn confirm(&self, tx: B256) -> Result<Receipt, PaymentError> {
        let receipt = PendingTransactionBuilder::new(self.signing.root().clone(), tx)
            .with_required_confirmations(self.confirmations)
            .with_timeout(Some(self.receipt_timeout))
            .get_receipt()
            .await
            .map_err(|e| PaymentError::Pending(format!("transaction {tx} not confirmed: {e}")))?;
        Ok(Receipt {
            succeeded: receipt.status(),
            block: receipt.block_number.unwrap_or_default(),
            logs: receipt.inner.logs().to_vec(),
        })
    }
}
