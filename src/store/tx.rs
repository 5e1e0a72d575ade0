//! The unit of work the single writer commits: one transaction, plus what it has read and
//! what it will write at the end. A batch of webhooks costs a handful of round trips
//! instead of several per webhook: lookups are fetched for the whole batch up front, and
//! event and pulse rows are written together at commit. Every change made through `Tx` is
//! also applied to its copies, so they stay consistent within the transaction.
//!
//! The table files add their statements to `Tx` in their own `impl Tx` blocks.

use std::collections::{HashMap, HashSet};

use sqlx::{Any, AnyConnection, Transaction};

use super::{NewEvent, NewPulse, PaymentState, StoreError};
use crate::domain::{Cabinet, CheckoutTerms};

pub struct Tx {
    pub(super) txn: Transaction<'static, Any>,
    pub(super) cabinets: HashMap<String, Option<Cabinet>>,
    /// Event ids known to be stored (before this batch or earlier in it)…
    pub(super) seen_events: HashSet<String>,
    /// …and every event id looked up so far, stored or not.
    pub(super) checked_events: HashSet<String>,
    /// Payments by checkout session id.
    pub(super) payments: HashMap<String, Option<PaymentState>>,
    /// What coinpulse stored when it created a session, by session id.
    pub(super) terms: HashMap<String, Option<CheckoutTerms>>,
    pub(super) events: Vec<NewEvent>,
    pub(super) pulses: Vec<NewPulse>,
    /// Existing pulses to mark as handed to the broker.
    pub(super) handed: Vec<String>,
    /// This replica: new pulses are claimed by it (see `pulses::claim`).
    pub(super) replica: std::sync::Arc<str>,
}

impl Tx {
    pub(super) fn new(txn: Transaction<'static, Any>, replica: std::sync::Arc<str>) -> Self {
        Self {
            replica,
            txn,
            cabinets: HashMap::new(),
            seen_events: HashSet::new(),
            checked_events: HashSet::new(),
            payments: HashMap::new(),
            terms: HashMap::new(),
            events: Vec::new(),
            pulses: Vec::new(),
            handed: Vec::new(),
        }
    }

    pub(super) fn conn(&mut self) -> &mut AnyConnection {
        &mut self.txn
    }

    /// Reads, in three statements, what a batch of events will need: which event ids are
    /// stored, and the payments and stored terms of the checkout sessions they name.
    pub async fn prefetch(
        &mut self,
        event_ids: &[&str],
        session_ids: &[&str],
    ) -> Result<(), StoreError> {
        if !event_ids.is_empty() {
            self.load_seen_events(event_ids).await?;
        }
        if !session_ids.is_empty() {
            self.load_payments(session_ids).await?;
            self.load_terms(session_ids).await?;
        }
        Ok(())
    }

    /// Writes the deferred rows and commits: the one fsync of the batch.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        let events = std::mem::take(&mut self.events);
        super::events::insert(self.conn(), &events).await?;
        let pulses = std::mem::take(&mut self.pulses);
        let replica = self.replica.clone();
        let claim = super::pulses::Claim::new(&replica);
        super::pulses::insert(self.conn(), &pulses, &claim).await?;
        let handed = std::mem::take(&mut self.handed);
        if !handed.is_empty() {
            super::pulses::mark_handed(self.conn(), &handed, &crate::domain::now_db()).await?;
        }
        self.txn.commit().await?;
        Ok(())
    }
}
