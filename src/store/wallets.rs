//! Wallets, their ledger, top-ups and top-up packages. Every balance change appends a
//! ledger row and moves the cached balance in the same transaction, on the writer's
//! [`Tx`]; the pool only reads (and creates empty wallets and open top-ups).

use serde::Serialize;

use super::{Store, StoreError, Tx};
use crate::domain::wallet::{TopupPackage, WalletLimits};
use crate::domain::{now_db, LedgerKind};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Wallet {
    pub id: String,
    pub currency: String,
    pub email: Option<String>,
    pub balance_minor: i64,
    pub created_at: String,
    pub updated_at: String,
    pub stripe_customer_id: Option<String>,
}

/// A wallet holding money, with when it was last used (its newest ledger row).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WalletActivity {
    pub id: String,
    pub email: Option<String>,
    pub currency: String,
    pub balance_minor: i64,
    pub last_activity: String,
    pub expiry_reminded_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct LedgerRow {
    pub id: String,
    pub wallet_id: String,
    #[sqlx(try_from = "String")]
    pub kind: LedgerKind,
    pub amount_minor: i64,
    pub reason: String,
    pub reference: String,
    pub machine_id: Option<String>,
    pub created_at: String,
}

/// A top-up as coinpulse created it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Topup {
    pub checkout_session_id: String,
    pub wallet_id: String,
    pub pay_minor: i64,
    pub credit_minor: i64,
    pub currency: String,
    pub url: String,
    pub status: String,
    pub payment_intent_id: Option<String>,
    pub created_at: String,
    pub refunded_minor: i64,
    pub note: Option<String>,
}

/// A wallet whose cached balance is not the sum of its ledger.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BalanceMismatch {
    pub id: String,
    pub balance_minor: i64,
    pub ledger_minor: i64,
}

const WALLET: &str = "SELECT id, currency, email, balance_minor, created_at, updated_at, \
     stripe_customer_id FROM wallets";
const TOPUP: &str =
    "SELECT checkout_session_id, wallet_id, pay_minor, credit_minor, currency, url, \
     status, payment_intent_id, created_at, refunded_minor, note FROM wallet_topups";

impl Store {
    pub async fn wallet(&self, id: &str) -> Result<Option<Wallet>, StoreError> {
        Ok(sqlx::query_as(&format!("{WALLET} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// A new, empty wallet `id` (its first top-up is on its way); the existing one when
    /// it was created before (the same form sent twice).
    pub async fn create_wallet(&self, id: &str, currency: &str) -> Result<Wallet, StoreError> {
        let now = now_db();
        sqlx::query(
            "INSERT INTO wallets (id, currency, balance_minor, created_at, updated_at) \
             VALUES ($1, $2, 0, $3, $3) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(currency)
        .bind(&now)
        .execute(&self.pool)
        .await?;
        Ok(self.wallet(id).await?.expect("wallet just created"))
    }

    pub async fn ledger(&self, wallet_id: &str, limit: i64) -> Result<Vec<LedgerRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, wallet_id, kind, amount_minor, reason, reference, machine_id, created_at \
             FROM wallet_ledger WHERE wallet_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .bind(wallet_id)
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn insert_topup(&self, t: &Topup) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO wallet_topups (checkout_session_id, wallet_id, pay_minor, credit_minor, \
             currency, url, status, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'open', $7)",
        )
        .bind(&t.checkout_session_id)
        .bind(&t.wallet_id)
        .bind(t.pay_minor)
        .bind(t.credit_minor)
        .bind(&t.currency)
        .bind(&t.url)
        .bind(&t.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn topups(&self, wallet_id: &str) -> Result<Vec<Topup>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "{TOPUP} WHERE wallet_id = $1 ORDER BY created_at DESC"
        ))
        .bind(wallet_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn topup_packages(&self, currency: &str) -> Result<Vec<TopupPackage>, StoreError> {
        Ok(sqlx::query_as::<_, (i64, i64, String)>(
            "SELECT pay_minor, credit_minor, label FROM topup_packages WHERE currency = $1 \
             ORDER BY position",
        )
        .bind(currency)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|(pay_minor, credit_minor, label)| TopupPackage {
            pay_minor,
            credit_minor,
            label,
        })
        .collect())
    }

    pub async fn set_topup_packages(
        &self,
        currency: &str,
        packages: &[TopupPackage],
    ) -> Result<(), StoreError> {
        let mut tx = self.write_transaction().await?;
        sqlx::query("DELETE FROM topup_packages WHERE currency = $1")
            .bind(currency)
            .execute(&mut *tx)
            .await?;
        for (i, p) in packages.iter().enumerate() {
            sqlx::query(
                "INSERT INTO topup_packages (currency, position, pay_minor, credit_minor, label) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(currency)
            .bind(i as i64)
            .bind(p.pay_minor)
            .bind(p.credit_minor)
            .bind(&p.label)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The owner's limits for `currency`, if set.
    pub async fn wallet_limits(&self, currency: &str) -> Result<Option<WalletLimits>, StoreError> {
        Ok(sqlx::query_as::<_, (i64, i64, Option<i64>)>(
            "SELECT min_topup_minor, max_topup_minor, max_balance_minor FROM wallet_settings \
             WHERE currency = $1",
        )
        .bind(currency)
        .fetch_optional(&self.pool)
        .await?
        .map(|(min, max, balance)| WalletLimits {
            min_topup_minor: min,
            max_topup_minor: max,
            max_balance_minor: balance,
        }))
    }

    pub async fn set_wallet_limits(
        &self,
        currency: &str,
        limits: &WalletLimits,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO wallet_settings (currency, min_topup_minor, max_topup_minor, \
             max_balance_minor) VALUES ($1, $2, $3, $4) ON CONFLICT (currency) DO UPDATE SET \
             min_topup_minor = excluded.min_topup_minor, max_topup_minor = \
             excluded.max_topup_minor, max_balance_minor = excluded.max_balance_minor",
        )
        .bind(currency)
        .bind(limits.min_topup_minor)
        .bind(limits.max_topup_minor)
        .bind(limits.max_balance_minor)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_wallet_customer(&self, id: &str, customer: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE wallets SET stripe_customer_id = $2 WHERE id = $1")
            .bind(id)
            .bind(customer)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every wallet holding money, with when it was last used: what expiry looks at.
    pub async fn wallet_activity(&self) -> Result<Vec<WalletActivity>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT w.id, w.email, w.currency, w.balance_minor, \
             COALESCE(MAX(l.created_at), w.created_at) AS last_activity, w.expiry_reminded_at \
             FROM wallets w LEFT JOIN wallet_ledger l ON l.wallet_id = w.id \
             WHERE w.balance_minor > 0 \
             GROUP BY w.id, w.email, w.currency, w.balance_minor, w.created_at, \
             w.expiry_reminded_at ORDER BY w.id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn set_expiry_reminded(&self, id: &str, at: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE wallets SET expiry_reminded_at = $2 WHERE id = $1")
            .bind(id)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The pulse a "Play now" token paid for, if it was used.
    pub async fn wallet_spend(&self, token: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT pulse_id FROM wallet_spends WHERE token = $1")
                .bind(token)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Wallets whose cached balance differs from their ledger's sum (none, always).
    pub async fn balance_mismatches(&self) -> Result<Vec<BalanceMismatch>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT w.id, w.balance_minor, CAST(COALESCE((SELECT SUM(l.amount_minor) \
             FROM wallet_ledger l WHERE l.wallet_id = w.id), 0) AS BIGINT) AS ledger_minor \
             FROM wallets w WHERE w.balance_minor <> CAST(COALESCE((SELECT SUM(l.amount_minor) \
             FROM wallet_ledger l WHERE l.wallet_id = w.id), 0) AS BIGINT)",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}

/// One ledger row to append.
pub struct NewLedgerRow<'a> {
    pub wallet_id: &'a str,
    pub kind: LedgerKind,
    pub amount_minor: i64,
    pub reason: &'a str,
    pub reference: &'a str,
    pub machine_id: Option<&'a str>,
    pub at: &'a str,
}

impl Tx {
    pub async fn topup(&mut self, session_id: &str) -> Result<Option<Topup>, StoreError> {
        Ok(
            sqlx::query_as(&format!("{TOPUP} WHERE checkout_session_id = $1"))
                .bind(session_id)
                .fetch_optional(self.conn())
                .await?,
        )
    }

    pub async fn set_topup_status(
        &mut self,
        session_id: &str,
        status: &str,
        payment_intent_id: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE wallet_topups SET status = $2, \
             payment_intent_id = COALESCE($3, payment_intent_id) WHERE checkout_session_id = $1",
        )
        .bind(session_id)
        .bind(status)
        .bind(payment_intent_id)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Keeps a refund that names a PaymentIntent nothing is paid through yet.
    pub async fn remember_early_refund(
        &mut self,
        payment_intent_id: &str,
        charge_id: &str,
        amount_refunded: i64,
        at: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO early_refunds (payment_intent_id, charge_id, amount_refunded, \
             received_at) VALUES ($1, $2, $3, $4) ON CONFLICT (payment_intent_id) DO UPDATE \
             SET amount_refunded = excluded.amount_refunded, charge_id = excluded.charge_id \
             WHERE early_refunds.amount_refunded < excluded.amount_refunded",
        )
        .bind(payment_intent_id)
        .bind(charge_id)
        .bind(amount_refunded)
        .bind(at)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// The refund (charge, amount refunded so far) that arrived before its PaymentIntent's
    /// top-up was completed, if one did.
    pub async fn early_refund(
        &mut self,
        payment_intent_id: &str,
    ) -> Result<Option<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT charge_id, amount_refunded FROM early_refunds WHERE payment_intent_id = $1",
        )
        .bind(payment_intent_id)
        .fetch_optional(self.conn())
        .await?)
    }

    /// Appends a ledger row and moves the cached balance with it. False when a row of the
    /// same kind and reference exists (already applied), or when it would take the
    /// balance below zero: then nothing changes.
    pub async fn append_ledger(&mut self, row: &NewLedgerRow<'_>) -> Result<bool, StoreError> {
        let moved = sqlx::query(
            "UPDATE wallets SET balance_minor = balance_minor + $2, updated_at = $3 \
             WHERE id = $1 AND balance_minor + $2 >= 0 AND NOT EXISTS \
             (SELECT 1 FROM wallet_ledger WHERE kind = $4 AND reference = $5)",
        )
        .bind(row.wallet_id)
        .bind(row.amount_minor)
        .bind(row.at)
        .bind(row.kind.as_str())
        .bind(row.reference)
        .execute(self.conn())
        .await?;
        if moved.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO wallet_ledger (id, wallet_id, kind, amount_minor, reason, reference, \
             machine_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(row.wallet_id)
        .bind(row.kind.as_str())
        .bind(row.amount_minor)
        .bind(row.reason)
        .bind(row.reference)
        .bind(row.machine_id)
        .bind(row.at)
        .execute(self.conn())
        .await?;
        Ok(true)
    }

    /// The top-up paid through a PaymentIntent (what a refund names).
    pub async fn topup_by_intent(&mut self, intent: &str) -> Result<Option<Topup>, StoreError> {
        Ok(
            sqlx::query_as(&format!("{TOPUP} WHERE payment_intent_id = $1"))
                .bind(intent)
                .fetch_optional(self.conn())
                .await?,
        )
    }

    /// A wallet's balance and when it was last used, read inside the transaction.
    pub async fn wallet_activity_of(
        &mut self,
        wallet_id: &str,
    ) -> Result<Option<(i64, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT w.balance_minor, COALESCE(MAX(l.created_at), w.created_at) \
             FROM wallets w LEFT JOIN wallet_ledger l ON l.wallet_id = w.id \
             WHERE w.id = $1 GROUP BY w.id, w.balance_minor, w.created_at",
        )
        .bind(wallet_id)
        .fetch_optional(self.conn())
        .await?)
    }

    pub async fn wallet_balance(&mut self, wallet_id: &str) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT balance_minor FROM wallets WHERE id = $1")
                .bind(wallet_id)
                .fetch_optional(self.conn())
                .await?
                .unwrap_or(0),
        )
    }

    /// Records how much of a top-up Stripe has refunded (it only grows).
    pub async fn set_topup_refunded(
        &mut self,
        session_id: &str,
        refunded_minor: i64,
        note: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE wallet_topups SET refunded_minor = $2, note = COALESCE($3, note), \
             status = CASE WHEN $3 IS NULL THEN status ELSE 'review' END \
             WHERE checkout_session_id = $1 AND refunded_minor < $2",
        )
        .bind(session_id)
        .bind(refunded_minor)
        .bind(note)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Takes a top-up's refunded total back from `from` to `to` (a refund that was not made).
    pub async fn unrefund_topup(
        &mut self,
        session_id: &str,
        from: i64,
        to: i64,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "UPDATE wallet_topups SET refunded_minor = $3 \
             WHERE checkout_session_id = $1 AND refunded_minor = $2",
        )
        .bind(session_id)
        .bind(from)
        .bind(to)
        .execute(self.conn())
        .await?
        .rows_affected()
            == 1)
    }

    /// The pulse a "Play now" token already paid for.
    pub async fn wallet_spend(&mut self, token: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT pulse_id FROM wallet_spends WHERE token = $1")
                .bind(token)
                .fetch_optional(self.conn())
                .await?,
        )
    }

    pub async fn record_wallet_spend(
        &mut self,
        token: &str,
        wallet_id: &str,
        pulse_id: &str,
        at: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO wallet_spends (token, wallet_id, pulse_id, used_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(token)
        .bind(wallet_id)
        .bind(pulse_id)
        .bind(at)
        .execute(self.conn())
        .await?;
        Ok(())
    }
}

/// Totals per currency for the owner's wallets page.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct WalletTotals {
    pub currency: String,
    /// What players hold: the owner's liability.
    pub outstanding_minor: i64,
    pub plays: i64,
    pub played_minor: i64,
    pub topups: i64,
    pub topped_up_minor: i64,
}

impl Store {
    /// Wallets, newest first; `search` matches an email or a wallet id exactly.
    pub async fn find_wallets(
        &self,
        search: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Wallet>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "{WALLET} WHERE ($1 IS NULL OR lower(email) = $1 OR id = $1) \
             ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
        ))
        .bind(search.map(str::to_lowercase))
        .bind(limit.clamp(1, 1000))
        .bind(offset.max(0))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn wallet_totals(&self) -> Result<Vec<WalletTotals>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT w.currency, CAST(COALESCE(SUM(w.balance_minor), 0) AS BIGINT) AS outstanding_minor, \
             (SELECT COUNT(*) FROM wallet_ledger l JOIN wallets x ON x.id = l.wallet_id \
              WHERE x.currency = w.currency AND l.kind = 'play') AS plays, \
             (SELECT CAST(COALESCE(SUM(-l.amount_minor), 0) AS BIGINT) FROM wallet_ledger l \
              JOIN wallets x ON x.id = l.wallet_id WHERE x.currency = w.currency AND l.kind = 'play') AS played_minor, \
             (SELECT COUNT(*) FROM wallet_topups t WHERE t.currency = w.currency AND t.status <> 'open' \
              AND t.status <> 'expired' AND t.status <> 'failed') AS topups, \
             (SELECT CAST(COALESCE(SUM(t.pay_minor), 0) AS BIGINT) FROM wallet_topups t \
              WHERE t.currency = w.currency AND t.status <> 'open' AND t.status <> 'expired' \
              AND t.status <> 'failed') AS topped_up_minor \
             FROM wallets w GROUP BY w.currency ORDER BY w.currency",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Each play paid from wallets, as (currency, amount): for the fees a card would have cost.
    pub async fn wallet_play_amounts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT w.currency, -l.amount_minor FROM wallet_ledger l JOIN wallets w \
             ON w.id = l.wallet_id WHERE l.kind = 'play'",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}

impl Store {
    /// The wallet `email` belongs to (the newest, if several currencies).
    pub async fn wallet_by_email(&self, email: &str) -> Result<Option<Wallet>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "{WALLET} WHERE email = $1 ORDER BY created_at DESC LIMIT 1"
        ))
        .bind(email)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Gives `email` to wallet `id` (taking it from any other wallet that had it).
    pub async fn set_wallet_email(&self, id: &str, email: &str) -> Result<(), StoreError> {
        let mut tx = self.write_transaction().await?;
        let now = now_db();
        sqlx::query(
            "UPDATE wallets SET email = NULL, stripe_customer_id = NULL, updated_at = $3 \
             WHERE email = $1 AND id <> $2",
        )
        .bind(email)
        .bind(id)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        // A new address needs a new Stripe customer for its receipts.
        sqlx::query(
            "UPDATE wallets SET email = $2, updated_at = $3, stripe_customer_id = CASE WHEN \
             email = $2 THEN stripe_customer_id ELSE NULL END WHERE id = $1",
        )
        .bind(id)
        .bind(email)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn insert_wallet_link(
        &self,
        link: &WalletLink,
        token_hash: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO wallet_signins (token_hash, wallet_id, email, purpose, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(&link.wallet_id)
        .bind(&link.email)
        .bind(&link.purpose)
        .bind(&link.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A link that can still be used (unused, not expired), without using it.
    pub async fn wallet_link(&self, token_hash: &str) -> Result<Option<WalletLink>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT wallet_id, email, purpose, expires_at FROM wallet_signins \
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now_db())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Uses a link: what it was for, once, before it expires; None otherwise.
    pub async fn use_wallet_link(
        &self,
        token_hash: &str,
    ) -> Result<Option<WalletLink>, StoreError> {
        let now = now_db();
        let mut tx = self.write_transaction().await?;
        let used = sqlx::query(
            "UPDATE wallet_signins SET used_at = $2 \
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() != 1 {
            return Ok(None);
        }
        let link: WalletLink = sqlx::query_as(
            "SELECT wallet_id, email, purpose, expires_at FROM wallet_signins WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(link))
    }
}

/// A one-time link sent by email.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WalletLink {
    pub wallet_id: String,
    pub email: String,
    /// `signin` (bring the wallet to this phone) or `verify` (confirm the wallet's email).
    pub purpose: String,
    pub expires_at: String,
}
