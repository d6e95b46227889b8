//! Redis quote store: shared by every Tariff instance, so a quote issued by one is found by all.
//!
//! One key per request hash, `<prefix>quote:<hex hash>`, holding the quote as JSON and expiring
//! at the quote's own expiry (`PXAT`, an absolute time, so every instance agrees).
//! Creation is a single `SET key value NX PXAT t GET` (Redis ≥ 7.0): it either stores our
//! quote and answers nil, or stores nothing and answers the quote already there. That is the
//! atomic "same request, same quote" with one round trip and one key, so it also works on Redis
//! Cluster.

use redis::aio::ConnectionManager;

use super::model::{Quote, RequestHash};
use super::store::{QuoteStore, StoreError};

#[derive(Clone)]
pub struct RedisQuoteStore {
    conn: ConnectionManager,
    prefix: String,
}

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
        Ok(RedisQuoteStore {
            conn,
            prefix: prefix.to_owned(),
        })
    }

    fn key(&self, hash: &RequestHash) -> String {
        format!("{}quote:{}", self.prefix, hash.to_hex())
    }
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn decode(bytes: &[u8]) -> Result<Quote, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl QuoteStore for RedisQuoteStore {
    async fn get_or_insert(&self, quote: Quote) -> Result<Quote, StoreError> {
        let json = serde_json::to_vec(&quote).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut conn = self.conn.clone();
        let previous: Option<Vec<u8>> = redis::cmd("SET")
            .arg(self.key(&quote.request_hash))
            .arg(json)
            .arg("NX")
            .arg("PXAT")
            .arg(quote.expires_at.0)
            .arg("GET")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        match previous {
            None => Ok(quote),
            Some(bytes) => decode(&bytes),
        }
    }

    async fn get(&self, hash: &RequestHash) -> Result<Option<Quote>, StoreError> {
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
