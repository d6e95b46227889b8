//! Agent accounts and their API keys: opening an account, and turning a bearer key back into
//! the account it spends from.

use std::fmt;

use crate::db::{Db, DbError, on_pool};
use crate::ledger::{
    AccountId, AccountKind, Balance, Ledger, LedgerError, NewAccount, NewTransfer, References,
    Transfer, TransferId, TransferKind,
};
use crate::money::UsdMicros;
use crate::time::Clock;

/// The system account every request debit is credited to.
pub const REVENUE: &str = "sys:revenue";
/// The source of operator grants and adjustments; it may go negative.
pub const ADJUSTMENTS: &str = "sys:adjustments";

/// An API key: `tk_` + 64 hex characters (256 random bits). Shown once when created; only its
/// hash is stored. Debug never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    const PREFIX: &'static str = "tk_";

    pub fn generate() -> ApiKey {
        let bytes: [u8; 32] = rand::random();
        ApiKey(format!("{}{}", Self::PREFIX, hex::encode(bytes)))
    }

    /// Accepts only the exact format, so garbage never reaches the database.
    pub fn parse(s: &str) -> Option<ApiKey> {
        let hex_part = s.strip_prefix(Self::PREFIX)?;
        let ok = hex_part.len() == 64
            && hex_part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| ApiKey(s.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the database stores.
    pub fn hash(&self) -> String {
        blake3::hash(self.0.as_bytes()).to_hex().to_string()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

/// The agent account an on-chain payer's credits live in when its wallet is linked to no other.
pub fn wallet_account(wallet: &str) -> String {
    format!("agent:wallet:{}", wallet.to_ascii_lowercase())
}

/// Which account a wallet spends from and is credited to: the agent account it was linked to,
/// else its own (`agent:wallet:<address>`).
#[derive(Clone, Debug)]
pub struct WalletLinks {
    db: Db,
}

impl WalletLinks {
    pub fn new(db: Db) -> Self {
        WalletLinks { db }
    }

    pub async fn account_of(&self, wallet: &str) -> Result<String, DbError> {
        let wallet = wallet.to_ascii_lowercase();
        const SELECT: &str = "SELECT account_id FROM wallet_links WHERE wallet = $1";
        let row: Option<(String,)> =
            on_pool!(&self.db, p => sqlx::query_as(SELECT).bind(&wallet).fetch_optional(p).await?);
        Ok(row.map_or_else(|| wallet_account(&wallet), |(a,)| a))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("the API key is malformed, unknown or revoked")]
    InvalidKey,
    #[error("wallet {wallet} is already linked to another account")]
    WalletLinked { wallet: String },
    #[error("this sign-in message was already used (nonce {0})")]
    NonceUsed(String),
    #[error("every adjustment needs a reason")]
    ReasonRequired,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for AccountsError {
    fn from(e: sqlx::Error) -> Self {
        AccountsError::Db(e.into())
    }
}

#[derive(Clone)]
pub struct Accounts {
    db: Db,
    ledger: Ledger,
    clock: Clock,
}

impl Accounts {
    pub fn new(db: Db, ledger: Ledger, clock: Clock) -> Self {
        Accounts { db, ledger, clock }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Creates the system accounts the gateway posts to (idempotent; run at start-up).
    pub async fn ensure_system_accounts(&self) -> Result<(), AccountsError> {
        for (id, allow_negative) in [(REVENUE, false), (ADJUSTMENTS, true)] {
            self.ledger
                .create_account(NewAccount {
                    id: AccountId::new(id)?,
                    kind: AccountKind::System,
                    owner: None,
                    allow_negative,
                })
                .await?;
        }
        Ok(())
    }

    /// Opens an agent account with a zero balance and returns it with its first API key.
    /// Two steps, not one transaction: if the key cannot be stored the caller gets an error and
    /// an empty account nobody can use is left behind, which costs nothing.
    pub async fn open(&self) -> Result<(AccountId, ApiKey), AccountsError> {
        let id = AccountId::new(format!("agent:{:032x}", rand::random::<u128>()))?;
        self.ledger
            .create_account(NewAccount {
                id: id.clone(),
                kind: AccountKind::Agent,
                owner: None,
                allow_negative: false,
            })
            .await?;
        let key = self.issue_key(&id).await?;
        Ok((id, key))
    }

    /// An operator's grant (positive `amount`, micro-dollars) or take-back (negative), as an
    /// `adjustment` transfer against `sys:adjustments` carrying its reason. Idempotent by `id`.
    pub async fn adjust(
        &self,
        id: &str,
        account: AccountId,
        amount: i64,
        reason: String,
    ) -> Result<(Transfer, Balance), AccountsError> {
        if reason.trim().is_empty() {
            return Err(AccountsError::ReasonRequired);
        }
        let adjustments = AccountId::new(ADJUSTMENTS)?;
        let (debit, credit) = if amount >= 0 {
            (adjustments, account.clone())
        } else {
            (account.clone(), adjustments)
        };
        let transfer = self
            .ledger
            .transfer(NewTransfer {
                id: TransferId::new(format!("admin:{id}"))?,
                kind: TransferKind::Adjustment,
                debit,
                credit,
                amount: UsdMicros(amount.unsigned_abs()),
                refs: References {
                    reason: Some(reason),
                    ..References::default()
                },
            })
            .await?;
        let balance = self.ledger.balance(&account).await?;
        Ok((transfer, balance))
    }

    /// A new API key for `account` (an existing agent account).
    pub async fn issue_key(&self, account: &AccountId) -> Result<ApiKey, AccountsError> {
        let key = ApiKey::generate();
        let now = i64::try_from(self.clock.now().0).unwrap_or(i64::MAX);
        const INSERT: &str =
            "INSERT INTO api_keys (key_hash, account_id, created_at_ms) VALUES ($1, $2, $3)";
        on_pool!(&self.db, p => sqlx::query(INSERT)
            .bind(key.hash())
            .bind(account.as_str())
            .bind(now)
            .execute(p)
            .await
            .map(|_| ())?);
        Ok(key)
    }

    pub fn links(&self) -> WalletLinks {
        WalletLinks::new(self.db.clone())
    }

    /// The account a signed-in wallet spends from, created if it is the wallet's own and new.
    pub async fn wallet_spends_from(&self, wallet: &str) -> Result<AccountId, AccountsError> {
        let id = AccountId::new(self.links().account_of(wallet).await?)?;
        if id.as_str() == wallet_account(wallet) {
            self.ledger
                .create_account(NewAccount {
                    id: id.clone(),
                    kind: AccountKind::Agent,
                    owner: Some(format!("wallet:{}", wallet.to_ascii_lowercase())),
                    allow_negative: false,
                })
                .await?;
        }
        Ok(id)
    }

    /// Links `wallet` to `account`, so its sign-ins spend from it and its on-chain payments are
    /// credited to it. Linking again to the same account is a no-op; a wallet linked elsewhere
    /// stays there.
    pub async fn link_wallet(
        &self,
        wallet: &str,
        account: &AccountId,
    ) -> Result<(), AccountsError> {
        let wallet = wallet.to_ascii_lowercase();
        let now = i64::try_from(self.clock.now().0).unwrap_or(i64::MAX);
        const INSERT: &str = "INSERT INTO wallet_links (wallet, account_id, linked_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING";
        on_pool!(&self.db, p => sqlx::query(INSERT)
            .bind(&wallet)
            .bind(account.as_str())
            .bind(now)
            .execute(p)
            .await
            .map(|_| ())?);
        if self.links().account_of(&wallet).await? == account.as_str() {
            Ok(())
        } else {
            Err(AccountsError::WalletLinked { wallet })
        }
    }

    /// Takes a sign-in nonce: true once per nonce, on every instance. Nonces older than
    /// `forget_before_ms` are purged (no message that old is accepted any more).
    pub async fn use_nonce(
        &self,
        nonce: &str,
        wallet: &str,
        forget_before_ms: u64,
    ) -> Result<(), AccountsError> {
        let now = i64::try_from(self.clock.now().0).unwrap_or(i64::MAX);
        let forget = i64::try_from(forget_before_ms).unwrap_or(i64::MAX);
        on_pool!(&self.db, p => sqlx::query("DELETE FROM siwx_nonces WHERE used_at_ms < $1")
            .bind(forget)
            .execute(p)
            .await
            .map(|_| ())?);
        const INSERT: &str = "INSERT INTO siwx_nonces (nonce, wallet, used_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING";
        let n = on_pool!(&self.db, p => sqlx::query(INSERT)
            .bind(nonce)
            .bind(wallet.to_ascii_lowercase())
            .bind(now)
            .execute(p)
            .await?
            .rows_affected());
        if n == 1 {
            Ok(())
        } else {
            Err(AccountsError::NonceUsed(nonce.to_string()))
        }
    }

    /// The account a bearer key spends from.
    pub async fn authenticate(&self, presented: &str) -> Result<AccountId, AccountsError> {
        let key = ApiKey::parse(presented).ok_or(AccountsError::InvalidKey)?;
        const SELECT: &str =
            "SELECT account_id FROM api_keys WHERE key_hash = $1 AND revoked_at_ms IS NULL";
        let row: Option<(String,)> = on_pool!(&self.db, p => sqlx::query_as(SELECT).bind(key.hash()).fetch_optional(p).await?);
        let (account,) = row.ok_or(AccountsError::InvalidKey)?;
        Ok(AccountId::new(account)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_one_format_and_never_print() {
        let k = ApiKey::generate();
        assert_eq!(ApiKey::parse(k.expose()), Some(k.clone()));
        assert_eq!(k.expose().len(), 67);
        assert_eq!(format!("{k:?}"), "ApiKey([redacted])");
        assert_ne!(k.hash(), k.expose());
        for bad in [
            "",
            "tk_",
            "tk_abc",
            &k.expose().to_uppercase(),
            &format!("{}0", k.expose()),
            "Bearer x",
        ] {
            assert!(ApiKey::parse(bad).is_none(), "{bad}");
        }
    }
}
