//! The `checkout_sessions` table: Stripe Checkout Sessions coinpulse created for players,
//! with what was bought (the truth a webhook is booked against).

use serde::Serialize;

use super::{Store, StoreError, Tx};
use crate::domain::{CheckoutStatus, CheckoutTerms, PaymentStatus, PulseState};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StoredSession {
    pub id: String,
    pub machine_id: String,
    pub credits: i64,
    pub amount_minor: i64,
    pub currency: String,
    pub bundle_label: String,
    pub url: String,
    #[sqlx(try_from = "String")]
    pub status: CheckoutStatus,
    pub created_at: String,
    /// Keyed hash of the pay page cookie that opened it.
    #[serde(skip)]
    pub buyer: Option<String>,
}

/// Where a checkout stands: its payment (None before the webhook) and that payment's pulse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub payment: Option<PaymentStatus>,
    pub pulse: PulseState,
}

#[derive(sqlx::FromRow)]
struct ProgressRow {
    #[sqlx(try_from = "String")]
    status: PaymentStatus,
    published_at: Option<String>,
    acked_at: Option<String>,
}

#[derive(sqlx::FromRow)]
struct TermsRow {
    id: String,
    machine_id: String,
    credits: i64,
    amount_minor: i64,
    currency: String,
}

impl From<TermsRow> for CheckoutTerms {
    fn from(r: TermsRow) -> Self {
        Self {
            machine_id: r.machine_id,
            credits: r.credits,
            amount_minor: r.amount_minor,
            currency: r.currency,
        }
    }
}

const SELECT: &str = "SELECT id, machine_id, credits, amount_minor, currency, bundle_label, url, \
     status, created_at, buyer FROM checkout_sessions";
const SELECT_TERMS: &str =
    "SELECT id, machine_id, credits, amount_minor, currency FROM checkout_sessions";

impl Store {
    /// Stores a new session; a replay of the same session (a double-tapped Pay button that
    /// Stripe answered from its idempotency cache) is already stored and left as it is.
    pub async fn insert_checkout_session(&self, s: &StoredSession) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO checkout_sessions (id, machine_id, credits, amount_minor, currency, bundle_label, url, status, created_at, buyer) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&s.id)
        .bind(&s.machine_id)
        .bind(s.credits)
        .bind(s.amount_minor)
        .bind(&s.currency)
        .bind(&s.bundle_label)
        .bind(&s.url)
        .bind(s.status.as_str())
        .bind(&s.created_at)
        .bind(s.buyer.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A session this buyer opened for the same cabinet and bundle after `since` and has
    /// not finished: coming back to the pay page leads there instead of to a new session.
    pub async fn open_checkout_session(
        &self,
        buyer: &str,
        machine_id: &str,
        credits: i64,
        amount_minor: i64,
        since: &str,
    ) -> Result<Option<StoredSession>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "{SELECT} WHERE buyer = $1 AND machine_id = $2 AND credits = $3 \
             AND amount_minor = $4 AND status = $5 AND created_at > $6 \
             ORDER BY created_at DESC LIMIT 1"
        ))
        .bind(buyer)
        .bind(machine_id)
        .bind(credits)
        .bind(amount_minor)
        .bind(CheckoutStatus::Open.as_str())
        .bind(since)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn checkout_session(&self, id: &str) -> Result<Option<StoredSession>, StoreError> {
        Ok(sqlx::query_as(&format!("{SELECT} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// The payment and pulse state behind a checkout session.
    pub async fn checkout_progress(&self, session_id: &str) -> Result<Progress, StoreError> {
        let row: Option<ProgressRow> = sqlx::query_as(
            "SELECT p.status, u.published_at, u.acked_at FROM payments p \
             LEFT JOIN pulses u ON u.payment_id = p.id WHERE p.checkout_session_id = $1",
        )
        .bind(session_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            None => Progress {
                payment: None,
                pulse: PulseState::Queued,
            },
            Some(r) => Progress {
                payment: Some(r.status),
                pulse: PulseState::of(r.published_at.is_some(), r.acked_at.is_some()),
            },
        })
    }
}

impl Tx {
    /// What coinpulse stored when it created the session, if it did.
    pub async fn checkout_terms(
        &mut self,
        session_id: &str,
    ) -> Result<Option<CheckoutTerms>, StoreError> {
        if let Some(t) = self.terms.get(session_id) {
            return Ok(t.clone());
        }
        let row: Option<TermsRow> = sqlx::query_as(&format!("{SELECT_TERMS} WHERE id = $1"))
            .bind(session_id)
            .fetch_optional(self.conn())
            .await?;
        let terms = row.map(CheckoutTerms::from);
        self.terms.insert(session_id.to_owned(), terms.clone());
        Ok(terms)
    }

    pub(super) async fn load_terms(&mut self, session_ids: &[&str]) -> Result<(), StoreError> {
        let rows: Vec<TermsRow> = super::sql::fetch_in(
            self.conn(),
            &format!("{SELECT_TERMS} WHERE id"),
            "",
            &[],
            session_ids,
        )
        .await?;
        for id in session_ids {
            self.terms.insert((*id).to_owned(), None);
        }
        for r in rows {
            self.terms.insert(r.id.clone(), Some(r.into()));
        }
        Ok(())
    }

    pub async fn set_checkout_status(
        &mut self,
        session_id: &str,
        status: CheckoutStatus,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE checkout_sessions SET status = $2 WHERE id = $1")
            .bind(session_id)
            .bind(status.as_str())
            .execute(self.conn())
            .await?;
        Ok(())
    }
}
