//! Batched local settlement: EIP-3009 payments that are ready at the same time go out as one
//! `aggregate3` transaction of a Multicall3-compatible contract, instead of one transaction
//! each. Each payment is still claimed, recorded, proven and reconciled on its own:
//!
//! * Every call in the batch may fail alone (`allowFailure`), so one payer who spent their
//!   balance in the meantime cannot sink the others. Whether a payment landed is read from the
//!   receipt's logs (its own `AuthorizationUsed` and `Transfer`), never from the transaction's
//!   status, which says only that the batch ran.
//! * Before sending, one `eth_call` of the batch finds the calls that would fail now. They are
//!   taken out and answered with their own revert, as a lone transaction's gas estimate would.
//! * Gas is estimated with every call required to succeed. With failures allowed, a node's
//!   estimate is the least gas at which the *batch* does not revert, which can be too little for
//!   the calls inside it (they would run out of gas and fail quietly).
//! * One batch is broadcast at a time, as one transaction from the relayer's nonce counter.
//!   Payments that arrive while a batch is being broadcast form the next one (group commit, no
//!   timer), or wait up to `window` for company.
//! * A batch of one is sent as the plain call, exactly as without batching.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, Bytes};
use alloy::rpc::types::{Log, TransactionRequest};
use alloy::sol;
use alloy::sol_types::SolCall;
use tokio::sync::{mpsc, oneshot, watch};

use crate::payment::PaymentError;
use crate::payment::chain::{Broadcast, Chain, Receipt, Relayer};

sol! {
    /// Multicall3's `aggregate3` (0xcA11bde05977b3631167028862bE2a173976CA11 on most chains).
    struct Call3 {
        address target;
        bool allowFailure;
        bytes callData;
    }
    struct Call3Result {
        bool success;
        bytes returnData;
    }
    function aggregate3(Call3[] calls) external payable returns (Call3Result[] returnData);
}

/// How one payment of a batch fared, as its settler needs to know it.
#[derive(Debug)]
pub enum BatchOutcome {
    /// Mined: `paid` when this payment's own transfer is in the receipt.
    Mined { tx: B256, block: u64, paid: bool },
    /// Refused before broadcast (its call reverts now): nothing was sent for it.
    Refused(String),
}

/// What the broadcasting task tells each payment of a batch (cloned to every member, so not a
/// [`PaymentError`]).
#[derive(Clone, Debug)]
enum Sent {
    Broadcast(B256),
    Refused(String),
    Unavailable(&'static str, String),
    Pending(String),
}

impl Sent {
    fn of_error(e: PaymentError) -> Sent {
        match e {
            PaymentError::Unavailable { reason, detail } => Sent::Unavailable(reason, detail),
            // Anything else may have followed a broadcast: the reconciler decides.
            other => Sent::Pending(other.to_string()),
        }
    }

    fn of_send(r: Result<Result<B256, String>, PaymentError>) -> Sent {
        match r {
            Ok(Ok(tx)) => Sent::Broadcast(tx),
            Ok(Err(reason)) => Sent::Refused(reason),
            Err(e) => Sent::of_error(e),
        }
    }
}

/// A broadcast transaction's receipt, awaited once per transaction for every payment in it
/// (alloy's receipt watcher keeps one waiter per transaction hash).
#[derive(Clone, Debug)]
enum Confirmed {
    Mined(Receipt),
    Unknown(String),
}

type Confirmation = watch::Receiver<Option<Confirmed>>;

struct Job {
    target: Address,
    data: Bytes,
    reply: oneshot::Sender<(Sent, Option<Confirmation>)>,
}

/// What the batcher has sent so far: their ratio is the mean batch size an operator watches.
#[derive(Debug, Default)]
pub struct BatchStats {
    /// Settlement transactions broadcast (a batch, or a lone payment's plain call).
    pub transactions: AtomicU64,
    /// Payments those transactions carried.
    pub payments: AtomicU64,
}

/// The batching front of one relayer.
pub struct Batcher {
    jobs: mpsc::UnboundedSender<Job>,
    stats: Arc<BatchStats>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

/// Where batches go and how big they get.
#[derive(Clone, Copy, Debug)]
pub struct BatchPolicy {
    pub contract: Address,
    pub max: usize,
    pub window: Duration,
}

impl Batcher {
    /// Starts the broadcasting task (it ends when the batcher is dropped).
    pub fn start(relayer: Arc<Relayer>, chain: Chain, policy: BatchPolicy) -> Batcher {
        let (jobs, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(BatchStats::default());
        tokio::spawn(run(relayer, chain, policy, rx, stats.clone()));
        Batcher { jobs, stats }
    }

    pub fn stats(&self) -> &BatchStats {
        &self.stats
    }

    /// Settles `call` (a `transferWithAuthorization` to the token) in the next batch and waits
    /// for its receipt. `paid` tells from the receipt's logs whether this payment landed.
    pub async fn settle(
        &self,
        call: TransactionRequest,
        on_broadcast: &dyn Broadcast,
        paid: &(dyn Fn(&[Log]) -> bool + Sync),
    ) -> Result<BatchOutcome, PaymentError> {
        let target = call
            .to
            .and_then(|t| t.to().copied())
            .ok_or_else(|| PaymentError::Internal("a settlement call without a target".into()))?;
        let data = call.input.input().cloned().unwrap_or_default();
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                target,
                data,
                reply,
            })
            .map_err(|_| PaymentError::Internal("the settlement batcher has stopped".into()))?;
        // A dropped reply means the task died mid-batch: it may have broadcast.
        let (sent, confirmation) = answer.await.unwrap_or_else(|_| {
            let lost = Sent::Pending("the settlement batcher stopped mid-batch".into());
            (lost, None)
        });
        match (sent, confirmation) {
            (Sent::Broadcast(tx), confirmation) => {
                on_broadcast.broadcast(tx).await;
                let confirmed = match confirmation {
                    Some(mut c) => c
                        .wait_for(Option::is_some)
                        .await
                        .ok()
                        .and_then(|c| c.clone()),
                    None => None,
                };
                match confirmed {
                    Some(Confirmed::Mined(receipt)) => Ok(BatchOutcome::Mined {
                        tx,
                        block: receipt.block,
                        paid: receipt.succeeded && paid(&receipt.logs),
                    }),
                    Some(Confirmed::Unknown(detail)) => Err(PaymentError::Pending(detail)),
                    None => Err(PaymentError::Pending(format!(
                        "transaction {tx} was broadcast; its receipt was not awaited"
                    ))),
                }
            }
            (Sent::Refused(reason), _) => Ok(BatchOutcome::Refused(reason)),
            (Sent::Unavailable(reason, detail), _) => {
                Err(PaymentError::Unavailable { reason, detail })
            }
            (Sent::Pending(detail), _) => Err(PaymentError::Pending(detail)),
        }
    }
}

async fn run(
    relayer: Arc<Relayer>,
    chain: Chain,
    policy: BatchPolicy,
    mut rx: mpsc::UnboundedReceiver<Job>,
    stats: Arc<BatchStats>,
) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        let deadline = tokio::time::Instant::now() + policy.window;
        while jobs.len() < policy.max {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(mpsc::error::TryRecvError::Empty) if !policy.window.is_zero() => {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(job)) => jobs.push(job),
                        _ => break,
                    }
                }
                Err(_) => break,
            }
        }
        let calls: Vec<(Address, Bytes)> =
            jobs.iter().map(|j| (j.target, j.data.clone())).collect();
        tracing::debug!(payments = calls.len(), "settling a batch");
        // In a task of its own: should it ever panic, this loop goes on serving later batches,
        // and this batch's payments are left to the reconciler (it may have broadcast).
        let n = calls.len();
        let (r, c) = (relayer.clone(), chain.clone());
        let sent = tokio::spawn(async move { broadcast(&r, &c, policy.contract, calls).await })
            .await
            .unwrap_or_else(|e| vec![Sent::Pending(format!("the batch task failed: {e}")); n]);
        // One receipt wait per transaction, shared by its payments; the next batch does not
        // wait for it.
        let mut watching: Vec<(B256, Confirmation)> = Vec::new();
        for s in &sent {
            if let Sent::Broadcast(tx) = s
                && !watching.iter().any(|(t, _)| t == tx)
            {
                let (done, confirmation) = watch::channel(None);
                let (relayer, tx) = (relayer.clone(), *tx);
                tokio::spawn(async move {
                    let confirmed = match relayer.confirm(tx).await {
                        Ok(receipt) => Confirmed::Mined(receipt),
                        Err(PaymentError::Pending(detail)) => Confirmed::Unknown(detail),
                        Err(e) => Confirmed::Unknown(e.to_string()),
                    };
                    let _ = done.send(Some(confirmed));
                });
                watching.push((tx, confirmation));
            }
        }
        let carried = sent
            .iter()
            .filter(|s| matches!(s, Sent::Broadcast(_)))
            .count();
        stats
            .transactions
            .fetch_add(watching.len() as u64, Ordering::Relaxed);
        stats.payments.fetch_add(carried as u64, Ordering::Relaxed);
        for (job, sent) in jobs.into_iter().zip(sent) {
            let confirmation = match &sent {
                Sent::Broadcast(tx) => watching
                    .iter()
                    .find(|(t, _)| t == tx)
                    .map(|(_, c)| c.clone()),
                _ => None,
            };
            // A member that went away has nothing left to be told.
            let _ = job.reply.send((sent, confirmation));
        }
    }
}

fn plain(target: Address, data: Bytes) -> TransactionRequest {
    TransactionRequest::default()
        .with_to(target)
        .with_input(data)
}

fn aggregate(calls: &[(Address, Bytes)], allow_failure: bool) -> aggregate3Call {
    aggregate3Call {
        calls: calls
            .iter()
            .map(|(target, data)| Call3 {
                target: *target,
                allowFailure: allow_failure,
                callData: data.clone(),
            })
            .collect(),
    }
}

fn to_contract(contract: Address, call: &aggregate3Call) -> TransactionRequest {
    TransactionRequest::default()
        .with_to(contract)
        .with_input(call.abi_encode())
}

/// The reason a call inside a batch reverted with.
fn revert_text(data: &[u8]) -> String {
    alloy::sol_types::decode_revert_reason(data)
        .unwrap_or_else(|| format!("reverted (0x{})", alloy::hex::encode(data)))
}

/// Each call as its own transaction, as without batching (in turn: this is the rare path, and
/// the relayer's nonce counter serialises broadcasts anyway).
async fn one_by_one(relayer: &Relayer, calls: &[(Address, Bytes)]) -> Vec<Sent> {
    let mut out = Vec::with_capacity(calls.len());
    for (target, data) in calls {
        out.push(Sent::of_send(
            relayer.send(plain(*target, data.clone())).await,
        ));
    }
    out
}

/// Broadcasts `calls`: one outcome each, in order.
async fn broadcast(
    relayer: &Relayer,
    chain: &Chain,
    contract: Address,
    calls: Vec<(Address, Bytes)>,
) -> Vec<Sent> {
    if calls.len() == 1 {
        return one_by_one(relayer, &calls).await;
    }
    // Which calls would fail now: they leave the batch with their own revert.
    let probe = chain.try_read(contract, aggregate(&calls, true)).await;
    let results = match probe {
        Ok(Ok(results)) if results.len() == calls.len() => results,
        // Not an aggregate3 that answers (a misconfigured address): nothing is lost by
        // settling one by one, and the log says why batches do not form.
        Ok(_) => {
            tracing::warn!(%contract, "the batch contract does not answer aggregate3; settling one by one");
            return one_by_one(relayer, &calls).await;
        }
        Err(e) => return vec![Sent::of_error(e); calls.len()],
    };
    let mut out = vec![Sent::Pending(String::new()); calls.len()];
    let mut ready = Vec::new();
    for (i, r) in results.iter().enumerate() {
        if r.success {
            ready.push(i);
        } else {
            out[i] = Sent::Refused(revert_text(&r.returnData));
        }
    }
    let batch: Vec<(Address, Bytes)> = ready.iter().map(|&i| calls[i].clone()).collect();
    let sent = if batch.len() < 2 {
        one_by_one(relayer, &batch).await
    } else {
        let tx = to_contract(contract, &aggregate(&batch, true));
        let strict = to_contract(contract, &aggregate(&batch, false));
        match relayer.send_as(tx, Some(strict)).await {
            // The chain moved between the probe and the estimate: each call alone, each with
            // its own answer.
            Ok(Err(_)) => one_by_one(relayer, &batch).await,
            other => vec![Sent::of_send(other); batch.len()],
        }
    };
    for (i, s) in ready.into_iter().zip(sent) {
        out[i] = s;
    }
    out
}
