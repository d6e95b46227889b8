//! Redis quote store: shared by every Tariff instance, so a quote issued by one is found by all.
//!
//! One key per request hash, `<prefix>quote:<hex hash>`, holding the quote as JSON and expiring
//! at the quote's own expiry (`PXAT`, an absolute time, so every instance agrees).
//! Creation is a single `SET key value NX PXAT t GET` (Redis ≥ 7.0): it either stores our
//! quote and answers nil, or stores nothing and answers the quote already there. That is the
//! atomic "same request, same quote" with one round trip and one key, so it also works on Redis
//! Cluster.
//!
//! Writes are auto-pipelined: concurrent `get_or_insert` calls queue to one writer task, which
//! sends everything queued so far as a single pipeline (one `write` syscall, one read). Under
//! load, batches grow by themselves; with one request in flight, a batch is that request and
//! nothing waits. Without it each command cost its own syscall pair, 14% of the 402 path's CPU.
//! Several pipelines may be in flight at once (`IN_FLIGHT`), so batching never idles the process.

use std::sync::Arc;

use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};

use super::model::{Quote, RequestHash};
use super::store::{QuoteStore, StoreError};

#[derive(Clone)]
pub struct RedisQuoteStore {
    conn: ConnectionManager,
    prefix: String,
    writes: mpsc::Sender<Write>,
}

/// One queued `SET NX PXAT GET`: key, value, expiry, and where the previous value goes.
struct Write {
    key: String,
    value: Vec<u8>,
    expires_at_ms: u64,
    reply: oneshot::Sender<Result<Option<Vec<u8>>, StoreError>>,
}

/// The most commands one pipeline carries; the queue bounds memory under overload.
const MAX_BATCH: usize = 256;
const QUEUE: usize = 4096;
/// Pipelines sent and not yet answered, at most.
const IN_FLIGHT: usize = 4;

impl RedisQuoteStore {
    /// Connects (with automatic reconnects). `prefix` namespaces the keys, e.g. `tariff:`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client =
            redis::Client::open(url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
            .set_response_timeout(Some(std::time::Duration::from_secs(2)))
            .set_number_of_retries(2);
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let (writes, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(conn.clone(), rx));
        Ok(RedisQuoteStore {
            conn,
            prefix: prefix.to_owned(),
            writes,
        })
    }

    fn key(&self, hash: &RequestHash) -> String {
        format!("{}quote:{}", self.prefix, hash.to_hex())
    }
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn decode(bytes: &[u8]) -> Result<Arc<Quote>, StoreError> {
    serde_json::from_slice(bytes)
        .map(Arc::new)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Sends queued writes as pipelines until every store handle is dropped, up to
/// [`IN_FLIGHT`] pipelines at a time: waiting for one pipeline's answer before sending the
/// next left this process idle for a round trip per batch while requests queued behind it.
async fn writer(conn: ConnectionManager, mut rx: mpsc::Receiver<Write>) {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut batch: Vec<Write> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // The first enqueue wakes this task straight away (tokio runs a just-woken task next),
        // which would make every batch one command long. Yielding once lets the other requests
        // that are ready to run enqueue theirs first; when nothing else is ready it costs one
        // trip through the scheduler.
        tokio::task::yield_now().await;
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let sent = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
        // Its own task: the next batch goes out while this one awaits its answer (on the same
        // multiplexed connection, so in order). If it panicked, its callers' replies would be
        // dropped and they would fail closed ("quote writer stopped"); the writer goes on.
        tokio::spawn(send(conn.clone(), sent, permit));
    }
}

/// One pipeline of `SET NX PXAT GET`s, every caller answered with its own reply or the error.
async fn send(
    mut conn: ConnectionManager,
    mut batch: Vec<Write>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let mut pipe = redis::pipe();
    for w in &batch {
        pipe.cmd("SET")
            .arg(&w.key)
            .arg(&w.value)
            .arg("NX")
            .arg("PXAT")
            .arg(w.expires_at_ms)
            .arg("GET");
    }
    let result: Result<Vec<Option<Vec<u8>>>, _> = pipe.query_async(&mut conn).await;
    match result {
        Ok(previous) if previous.len() == batch.len() => {
            for (w, prev) in batch.drain(..).zip(previous) {
                let _ = w.reply.send(Ok(prev));
            }
        }
        Ok(previous) => {
            let msg = format!(
                "pipeline answered {} of {} commands",
                previous.len(),
                batch.len()
            );
            for w in batch.drain(..) {
                let _ = w.reply.send(Err(StoreError::Unavailable(msg.clone())));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for w in batch.drain(..) {
                let _ = w.reply.send(Err(StoreError::Unavailable(msg.clone())));
            }
        }
    }
}

impl QuoteStore for RedisQuoteStore {
    async fn get_or_insert(&self, quote: Arc<Quote>) -> Result<Arc<Quote>, StoreError> {
        let value = serde_json::to_vec(&*quote).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (reply, answer) = oneshot::channel();
        let write = Write {
            key: self.key(&quote.request_hash),
            value,
            expires_at_ms: quote.expires_at.0,
            reply,
        };
        let gone = || StoreError::Unavailable("quote writer stopped".into());
        self.writes.send(write).await.map_err(|_| gone())?;
        let previous = answer.await.map_err(|_| gone())??;
        match previous {
            None => Ok(quote),
            Some(bytes) => decode(&bytes),
        }
    }

    async fn get(&self, hash: &RequestHash) -> Result<Option<Arc<Quote>>, StoreError> {
        let mut conn = self.conn.clone();
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.key(hash))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        bytes.as_deref().map(decode).transpose()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}
