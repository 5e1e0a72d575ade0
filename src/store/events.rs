//! The `stripe_events` table: every verified Stripe event, with what became of it. Its
//! primary key (the event id) is what makes a replayed webhook a no-op.

use super::{StoreError, Tx};
use crate::domain::Outcome;

/// A processed event, written with its final outcome at the end of the batch.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: String,
    pub event_type: String,
    pub livemode: bool,
    pub object_id: Option<String>,
    pub outcome: Outcome,
    pub payment_id: Option<String>,
    pub received_at: String,
}

impl Tx {
    /// True the first time an event id is claimed: neither stored before nor claimed
    /// earlier in this transaction.
    pub async fn claim_event(&mut self, event_id: &str) -> Result<bool, StoreError> {
        if !self.checked_events.contains(event_id) {
            self.load_seen_events(&[event_id]).await?;
        }
        Ok(self.seen_events.insert(event_id.to_owned()))
    }

    pub(super) async fn load_seen_events(&mut self, ids: &[&str]) -> Result<(), StoreError> {
        let stored: Vec<(String,)> = super::sql::fetch_in(
            self.conn(),
            "SELECT event_id FROM stripe_events WHERE event_id",
            "",
            &[],
            ids,
        )
        .await?;
        self.checked_events
            .extend(ids.iter().map(|id| (*id).to_owned()));
        self.seen_events.extend(stored.into_iter().map(|(id,)| id));
        Ok(())
    }

    /// Queues the event's row for the commit.
    pub fn record_event(&mut self, event: NewEvent) {
        self.events.push(event);
    }
}

pub(super) async fn insert(
    conn: &mut sqlx::AnyConnection,
    rows: &[NewEvent],
) -> Result<(), sqlx::Error> {
    super::sql::insert_many(
        conn,
        "INSERT INTO stripe_events (event_id, event_type, livemode, object_id, outcome, payment_id, received_at)",
        "ON CONFLICT (event_id) DO NOTHING",
        7,
        rows,
        |q, e| {
            q.bind(e.event_id.as_str())
                .bind(e.event_type.as_str())
                .bind(i64::from(e.livemode))
                .bind(e.object_id.as_deref())
                .bind(e.outcome.as_str())
                .bind(e.payment_id.as_deref())
                .bind(e.received_at.as_str())
        },
    )
    .await
}
