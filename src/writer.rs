//! The single database writer. Every write on the hot paths (webhooks, pulse delivery
//! state, plays, cabinet status) is queued here and committed in batches: one fsync for
//! many requests (group commit), and no lock contention between writers.
//!
//! Each request carries its own typed reply. [`Core::commit_batch`] is one step of the
//! loop (one transaction), callable on its own by tests.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::delivery::relay::{relay_now, Relay};
use crate::domain::{now_db, Keys};
use crate::mqtt::MqttStats;
use crate::payments::{self, WebhookOutcome};
use crate::store::{AckOutcome, NewPlay, OutboxPulse, Store, StoreError, Tx};
use crate::stripe::webhook::Event;
use crate::wallets::RefundHold;

/// Requests one transaction may hold. Large enough to amortise the fsync, small enough
/// that the first request in a batch is not kept waiting.
const MAX_BATCH: usize = 512;
/// Requests each lane may queue before senders wait.
const LANE_CAPACITY: usize = 16_384;

#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("database unavailable: {0}")]
    Database(Arc<StoreError>),
    #[error("the writer has stopped")]
    Closed,
    #[error("the write was not applied")]
    NotApplied,
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> Self {
        Self::Database(Arc::new(e))
    }
}

/// The two steps of an owner's top-up refund around the Stripe call.
#[derive(Debug, Clone)]
pub enum RefundStep {
    /// Take `amount` (and its bonus share) off the balance; answers the hold, or None when
    /// the balance no longer holds it.
    Hold { amount: i64 },
    /// Stripe refused: give this hold back (answers it again when it was).
    Release(RefundHold),
}

/// A game over, from MQTT or HTTP.
#[derive(Debug, Clone)]
pub struct PlayInput {
    pub id: String,
    pub machine_id: String,
    pub dedupe_key: String,
    pub ended_at: String,
    pub score: Option<i64>,
    pub play_seconds: Option<i64>,
    pub via: &'static str,
}

impl PlayInput {
    /// Repeats of one game over (a QoS 1 redelivery, or the server hearing its own
    /// republished HTTP game over) share a dedupe key: the message id when there is one,
    /// else the cabinet's timestamp.
    pub fn from_gameover(g: &crate::mqtt::GameOverMessage, via: &'static str) -> Self {
        let parsed = g
            .timestamp
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.to_utc());
        let dedupe_key = match (&g.id, parsed) {
            (Some(id), _) => format!("id:{}:{id}", g.machine_id),
            (None, Some(t)) => format!("ts:{}:{}", g.machine_id, crate::domain::db_time(t)),
            (None, None) => format!("rx:{}", uuid::Uuid::now_v7()),
        };
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            machine_id: g.machine_id.clone(),
            dedupe_key,
            ended_at: crate::domain::db_time(parsed.unwrap_or_else(chrono::Utc::now)),
            score: g.score,
            play_seconds: g.play_seconds,
            via,
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, WriteError>>;

/// One queued write with its typed reply, and, once applied, its typed result. Fire-and-
/// forget writes (from MQTT) have no reply.
enum Request {
    Webhook {
        event: Box<Event>,
        reply: Reply<WebhookOutcome>,
        done: Option<WebhookOutcome>,
    },
    Grant {
        machine_id: String,
        credits: i64,
        reason: String,
        reply: Reply<Option<OutboxPulse>>,
        done: Option<Option<OutboxPulse>>,
    },
    /// A payment in review credited to a cabinet by the owner.
    Assign {
        payment_id: String,
        machine_id: String,
        credits: i64,
        note: String,
        reply: Reply<payments::Assigned>,
        done: Option<payments::Assigned>,
    },
    /// A player pays a play from their wallet.
    Spend {
        spend: Box<crate::wallets::Spend>,
        reply: Reply<crate::wallets::Spent>,
        done: Option<crate::wallets::Spent>,
    },
    /// An owner's correction of a wallet's balance (positive or negative).
    Adjust {
        wallet_id: String,
        amount_minor: i64,
        reason: String,
        reply: Reply<bool>,
        done: Option<bool>,
    },
    /// The owner's refund of part of a top-up: the balance held before Stripe is asked, or
    /// given back when Stripe refused (see `wallets::hold_refund`).
    TopupRefund {
        session: String,
        step: RefundStep,
        reply: Reply<Option<RefundHold>>,
        done: Option<Option<RefundHold>>,
    },
    /// Expires a wallet's balance unused for `months` as of `now` (see `wallets::expire`).
    Expire {
        wallet_id: String,
        months: u32,
        now: chrono::DateTime<chrono::Utc>,
        reply: Reply<i64>,
        done: Option<i64>,
    },
    /// Pulses handed to the broker.
    Handed { ids: Vec<String>, reply: Reply<()> },
    /// Handed marks taken back: those pulses were not sent after all.
    Unhanded { ids: Vec<String>, reply: Reply<()> },
    Ack {
        machine_id: String,
        pulse_id: String,
        reply: Option<Reply<bool>>,
        done: bool,
    },
    Play {
        play: PlayInput,
        reply: Option<Reply<bool>>,
        done: bool,
    },
    Status {
        machine_id: String,
        online: bool,
        reply: Option<Reply<bool>>,
        done: bool,
    },
}

impl Request {
    /// Money (webhooks, operator grants) or bookkeeping (everything else).
    fn is_money(&self) -> bool {
        match self {
            Self::Webhook { .. }
            | Self::Grant { .. }
            | Self::Assign { .. }
            | Self::Spend { .. }
            | Self::Adjust { .. }
            | Self::TopupRefund { .. }
            | Self::Expire { .. } => true,
            Self::Handed { .. }
            | Self::Unhanded { .. }
            | Self::Ack { .. }
            | Self::Play { .. }
            | Self::Status { .. } => false,
        }
    }

    /// The pulse this request queued, once applied.
    fn new_pulse(&mut self) -> Option<&mut OutboxPulse> {
        match self {
            Self::Webhook { done, .. } => done.as_mut().and_then(|o| o.pulse.as_mut()),
            Self::Grant { done, .. } => done.as_mut().and_then(Option::as_mut),
            Self::Assign {
                done: Some(payments::Assigned::Sent(p)),
                ..
            } => Some(p),
            Self::Spend {
                done: Some(crate::wallets::Spent::Sent(p)),
                ..
            } => Some(p),
            _ => None,
        }
    }

    /// Sends the reply: the applied result once `committed` is Ok, else the error.
    fn answer(self, committed: Result<(), WriteError>) {
        fn send<T>(reply: Reply<T>, r: Result<T, WriteError>) {
            // The caller may have gone away (a client hung up); nothing to tell then.
            let _ = reply.send(r);
        }
        let missing = || WriteError::NotApplied;
        match self {
            Self::Webhook { reply, done, .. } => {
                send(reply, committed.and_then(|()| done.ok_or_else(missing)))
            }
            Self::Grant { reply, done, .. } => {
                send(reply, committed.and_then(|()| done.ok_or_else(missing)))
            }
            Self::Assign { reply, done, .. } => {
                send(reply, committed.and_then(|()| done.ok_or_else(missing)))
            }
            Self::Spend { reply, done, .. } => {
                send(reply, committed.and_then(|()| done.ok_or_else(missing)))
            }
            Self::Adjust { reply, done, .. } => {
                send(reply, committed.and_then(|()| done.ok_or_else(missing)))
            }
            Self::Expire { reply, done, .. } => {
                send(reply, committed.and_then(|()| done.ok_or_else(missing)))
            }
            Self::TopupRefund { reply, done, .. } => {
                send(reply, committed.and_then(|()| done.ok_or_else(missing)))
            }
            Self::Handed { reply, .. } | Self::Unhanded { reply, .. } => send(reply, committed),
            Self::Ack { reply, done, .. }
            | Self::Play { reply, done, .. }
            | Self::Status { reply, done, .. } => {
                if let Some(reply) = reply {
                    send(reply, committed.map(|()| done));
                }
            }
        }
    }
}

/// Handle for queueing writes. Cheap to clone.
///
/// Two bounded lanes: money (webhooks, operator grants) and bookkeeping (handed marks,
/// acks, plays, statuses). Each batch takes the money lane first, so a flood of MQTT
/// messages can delay a webhook's commit by one batch at most.
#[derive(Clone)]
pub struct Writer {
    money: mpsc::Sender<Request>,
    bookkeeping: mpsc::Sender<Request>,
}

impl Writer {
    /// Starts the writer task. New pulses are handed to `relay` right after each commit,
    /// then to `outbox` (the dispatcher).
    pub fn spawn(
        core: Core,
        outbox: mpsc::Sender<OutboxPulse>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (money, money_rx) = mpsc::channel(LANE_CAPACITY);
        let (bookkeeping, bookkeeping_rx) = mpsc::channel(LANE_CAPACITY);
        let task = tokio::spawn(core.run(money_rx, bookkeeping_rx, outbox));
        (Self { money, bookkeeping }, task)
    }

    async fn queue(&self, r: Request) -> Result<(), WriteError> {
        let lane = if r.is_money() {
            &self.money
        } else {
            &self.bookkeeping
        };
        lane.send(r).await.map_err(|_| WriteError::Closed)
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.queue(make(reply)).await?;
        rx.await.map_err(|_| WriteError::Closed)?
    }

    /// Stores a verified event; returns once it is committed.
    pub async fn webhook(&self, event: Event) -> Result<WebhookOutcome, WriteError> {
        self.call(|reply| Request::Webhook {
            event: Box::new(event),
            reply,
            done: None,
        })
        .await
    }

    /// Queues operator credits; `None` when the cabinet does not exist.
    pub async fn grant(
        &self,
        machine_id: &str,
        credits: i64,
        reason: &str,
    ) -> Result<Option<OutboxPulse>, WriteError> {
        self.call(|reply| Request::Grant {
            machine_id: machine_id.to_owned(),
            credits,
            reason: reason.to_owned(),
            reply,
            done: None,
        })
        .await
    }

    /// Credits a payment in review to a cabinet, once however often it is asked.
    pub async fn assign(
        &self,
        payment_id: &str,
        machine_id: &str,
        credits: i64,
        note: &str,
    ) -> Result<payments::Assigned, WriteError> {
        self.call(|reply| Request::Assign {
            payment_id: payment_id.to_owned(),
            machine_id: machine_id.to_owned(),
            credits,
            note: note.to_owned(),
            reply,
            done: None,
        })
        .await
    }

    /// Adds `amount_minor` (negative: takes) to a wallet with a ledger row; false when it
    /// would go below zero or the wallet does not exist.
    pub async fn adjust_wallet(
        &self,
        wallet_id: &str,
        amount_minor: i64,
        reason: &str,
    ) -> Result<bool, WriteError> {
        self.call(|reply| Request::Adjust {
            wallet_id: wallet_id.to_owned(),
            amount_minor,
            reason: reason.to_owned(),
            reply,
            done: None,
        })
        .await
    }

    /// A step of the owner's refund of top-up `session`; see [`RefundStep`].
    pub async fn topup_refund(
        &self,
        session: &str,
        step: RefundStep,
    ) -> Result<Option<RefundHold>, WriteError> {
        self.call(|reply| Request::TopupRefund {
            session: session.to_owned(),
            step,
            reply,
            done: None,
        })
        .await
    }

    /// Expires what `wallet_id` holds if unused for `months` as of `now`; the amount taken.
    pub async fn expire(
        &self,
        wallet_id: &str,
        months: u32,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<i64, WriteError> {
        self.call(|reply| Request::Expire {
            wallet_id: wallet_id.to_owned(),
            months,
            now,
            reply,
            done: None,
        })
        .await
    }

    /// Pays a play from a wallet: the debit and the pulse in one commit.
    pub async fn spend(
        &self,
        spend: crate::wallets::Spend,
    ) -> Result<crate::wallets::Spent, WriteError> {
        self.call(|reply| Request::Spend {
            spend: Box::new(spend),
            reply,
            done: None,
        })
        .await
    }

    /// Records pulses as handed to the broker; returns once that is committed.
    pub async fn handed(&self, ids: Vec<String>) -> Result<(), WriteError> {
        self.call(|reply| Request::Handed { ids, reply }).await
    }

    /// Takes back handed marks of pulses that could not be sent after all.
    pub async fn unhanded(&self, ids: Vec<String>) -> Result<(), WriteError> {
        self.call(|reply| Request::Unhanded { ids, reply }).await
    }

    // Fire-and-forget writes (acks, plays, statuses from MQTT) are safe to lose on
    // shutdown: the cabinet's QoS 1 redelivery or its next message repeats them.

    pub async fn queue_ack(&self, machine_id: &str, pulse_id: &str) {
        let _ = self.queue(ack(machine_id, pulse_id, None)).await;
    }

    pub async fn queue_play(&self, play: PlayInput) {
        let _ = self
            .queue(Request::Play {
                play,
                reply: None,
                done: false,
            })
            .await;
    }

    pub async fn queue_status(&self, machine_id: &str, online: bool) {
        let _ = self.queue(status(machine_id, online, None)).await;
    }

    /// Returns true when this ack was the first for a pulse of this cabinet.
    pub async fn acked(&self, machine_id: &str, pulse_id: &str) -> Result<bool, WriteError> {
        self.call(|reply| ack(machine_id, pulse_id, Some(reply)))
            .await
    }

    /// Returns true when the play was new (not a repeat of one already logged).
    pub async fn play(&self, play: PlayInput) -> Result<bool, WriteError> {
        self.call(|reply| Request::Play {
            play,
            reply: Some(reply),
            done: false,
        })
        .await
    }

    /// Returns true when the cabinet exists.
    pub async fn status(&self, machine_id: &str, online: bool) -> Result<bool, WriteError> {
        self.call(|reply| status(machine_id, online, Some(reply)))
            .await
    }
}

fn ack(machine_id: &str, pulse_id: &str, reply: Option<Reply<bool>>) -> Request {
    Request::Ack {
        machine_id: machine_id.to_owned(),
        pulse_id: pulse_id.to_owned(),
        reply,
        done: false,
    }
}

fn status(machine_id: &str, online: bool, reply: Option<Reply<bool>>) -> Request {
    Request::Status {
        machine_id: machine_id.to_owned(),
        online,
        reply,
        done: false,
    }
}

/// Waits for work and fills a batch, money lane first. False once both lanes are closed.
async fn next_batch(
    money: &mut mpsc::Receiver<Request>,
    bookkeeping: &mut mpsc::Receiver<Request>,
    batch: &mut Vec<Request>,
) -> bool {
    let first = tokio::select! {
        biased;
        r = money.recv() => r,
        r = bookkeeping.recv() => r,
    };
    // Both lanes close together (one handle holds both senders).
    let Some(first) = first else {
        return false;
    };
    batch.push(first);
    for lane in [money, bookkeeping] {
        while batch.len() < MAX_BATCH {
            match lane.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
    }
    true
}

/// What the writer works with.
pub struct Core {
    pub store: Store,
    pub keys: Keys,
    /// Where new pulses go the moment they are committed (None: the dispatcher only).
    pub relay: Option<Relay>,
    pub stats: Arc<MqttStats>,
}

impl Core {
    async fn run(
        self,
        mut money: mpsc::Receiver<Request>,
        mut bookkeeping: mpsc::Receiver<Request>,
        outbox: mpsc::Sender<OutboxPulse>,
    ) {
        let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
        while next_batch(&mut money, &mut bookkeeping, &mut batch).await {
            let started = std::time::Instant::now();
            let committed = self.commit_batch(&mut batch).await;
            tracing::debug!(
                size = batch.len(),
                micros = started.elapsed().as_micros() as u64,
                "batch committed"
            );
            let results: Vec<Result<(), WriteError>> = match committed {
                Ok(()) => batch.iter().map(|_| Ok(())).collect(),
                Err(e) if batch.len() == 1 => vec![Err(e)],
                Err(e) => {
                    // One bad request must not fail its neighbours: retry each on its own.
                    tracing::warn!(error = %e, size = batch.len(), "batch commit failed; retrying one by one");
                    let mut each = Vec::with_capacity(batch.len());
                    for r in batch.iter_mut() {
                        each.push(self.commit_batch(std::slice::from_mut(r)).await);
                    }
                    each
                }
            };
            let results = self.deliver(&mut batch, results, &outbox).await;
            crate::metrics::writer_batch(batch.len(), started.elapsed());
            for (r, result) in batch.drain(..).zip(results) {
                r.answer(result);
            }
        }
        tracing::info!("database writer stopped");
    }

    /// Hands the batch's new pulses to the broker around the batch's fsync, and returns the
    /// answers (an fsync failure fails them all: Stripe retries, the retry finds the rows).
    ///
    /// A commit survives a killed server the moment it returns, though it is on disk only
    /// after `Store::sync`. A seed cabinet's pulse (marked handed in the commit)
    /// goes out in between, so the gap in which a `kill -9` could cost it is the time to
    /// reach the cabinet's socket, not an fsync. Pulses for cabinets that ack go after the
    /// fsync: a power cut never makes them repeat a payment the database forgot.
    async fn deliver(
        &self,
        batch: &mut [Request],
        results: Vec<Result<(), WriteError>>,
        outbox: &mpsc::Sender<OutboxPulse>,
    ) -> Vec<Result<(), WriteError>> {
        let mut fresh: Vec<&mut OutboxPulse> = batch
            .iter_mut()
            .zip(&results)
            .filter(|(_, result)| result.is_ok())
            .filter_map(|(r, _)| r.new_pulse())
            .collect();
        crate::metrics::pulses_queued(fresh.len());
        let mut seed_sent = false;
        for p in fresh.iter_mut().filter(|p| p.routed && !p.acks) {
            relay_now(&self.store, self.relay.as_ref(), p).await;
            seed_sent = true;
        }
        if seed_sent {
            // Let the broker's connection tasks, just woken on this worker, write them to
            // their sockets while the fsync runs.
            tokio::task::yield_now().await;
        }
        if let Err(e) = self.store.sync().await {
            tracing::error!(error = %e, "batch committed but not flushed to disk; answering with errors");
            // The rows are in the outbox: the dispatcher's sweep delivers what is left.
            let e = WriteError::from(e);
            return results.iter().map(|_| Err(e.clone())).collect();
        }
        let mut acked_sent = false;
        for p in fresh {
            if p.routed && p.acks {
                relay_now(&self.store, self.relay.as_ref(), p).await;
                acked_sent = true;
            }
            // Never blocks the writer: a full queue leaves the pulse to the dispatcher's
            // sweep, which reads the outbox table.
            let _ = outbox.try_send(p.clone());
        }
        if acked_sent {
            // The cabinets' sockets before the answers: the pulse is what the player waits for.
            tokio::task::yield_now().await;
        }
        results
    }

    /// One step: applies `batch` in one transaction and commits it. On success every
    /// request holds its result; on failure nothing of the batch is stored.
    async fn commit_batch(&self, batch: &mut [Request]) -> Result<(), WriteError> {
        let mut tx = self.store.begin().await?;
        let events: Vec<&Event> = batch
            .iter()
            .filter_map(|r| match r {
                Request::Webhook { event, .. } => Some(event.as_ref()),
                _ => None,
            })
            .collect();
        payments::prefetch(&mut tx, &events).await?;
        for r in batch.iter_mut() {
            self.apply(&mut tx, r).await?;
        }
        if let Some(relay) = &self.relay {
            let now = now_db();
            for pulse in batch.iter_mut().filter_map(Request::new_pulse) {
                pulse.routed = relay.takes(pulse).await;
                // A seed cabinet's pulse is marked handed in this same commit, so no
                // crash can make it go out twice.
                if pulse.routed && !pulse.acks {
                    tx.mark_handed(std::slice::from_ref(&pulse.id), &now);
                    crate::metrics::pulses_handed(1);
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn apply(&self, tx: &mut Tx, r: &mut Request) -> Result<(), StoreError> {
        match r {
            Request::Webhook { event, done, .. } => {
                *done = Some(payments::apply_event(tx, &self.keys, event).await?);
            }
            Request::Grant {
                machine_id,
                credits,
                reason,
                done,
                ..
            } => {
                *done = Some(payments::grant(tx, &self.keys, machine_id, *credits, reason).await?);
            }
            Request::Assign {
                payment_id,
                machine_id,
                credits,
                note,
                done,
                ..
            } => {
                *done = Some(
                    payments::assign(tx, &self.keys, payment_id, machine_id, *credits, note)
                        .await?,
                );
            }
            Request::Adjust {
                wallet_id,
                amount_minor,
                reason,
                done,
                ..
            } => {
                let reference = uuid::Uuid::now_v7().to_string();
                *done = Some(
                    tx.append_ledger(&crate::store::NewLedgerRow {
                        wallet_id,
                        kind: crate::domain::LedgerKind::Adjustment,
                        amount_minor: *amount_minor,
                        reason,
                        reference: &reference,
                        machine_id: None,
                        at: &now_db(),
                    })
                    .await?,
                );
            }
            Request::Spend { spend, done, .. } => {
                *done = Some(crate::wallets::spend(tx, &self.keys, spend).await?);
            }
            Request::TopupRefund {
                session,
                step,
                done,
                ..
            } => {
                let now = now_db();
                *done = Some(match step {
                    RefundStep::Hold { amount } => {
                        crate::wallets::hold_refund(tx, session, *amount, &now).await?
                    }
                    RefundStep::Release(hold) => {
                        crate::wallets::release_refund(tx, session, hold, &now)
                            .await?
                            .then(|| hold.clone())
                    }
                });
            }
            Request::Expire {
                wallet_id,
                months,
                now,
                done,
                ..
            } => {
                *done = Some(crate::wallets::expire(tx, wallet_id, *months, *now).await?);
            }
            Request::Handed { ids, .. } => {
                tx.mark_handed(ids, &now_db());
                crate::metrics::pulses_handed(ids.len());
            }
            Request::Unhanded { ids, .. } => tx.unmark_handed(ids).await?,
            Request::Ack {
                machine_id,
                pulse_id,
                done,
                ..
            } => {
                let outcome = tx.mark_acked(machine_id, pulse_id, &now_db()).await?;
                if outcome == AckOutcome::Recorded {
                    crate::metrics::pulse_acked(pulse_id);
                }
                if outcome == AckOutcome::Unknown {
                    // Only the cabinet's own login can publish on its ack topic, so this is
                    // a confused cabinet (or, on an external broker, someone else's ack).
                    self.stats.acks_ignored.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%machine_id, %pulse_id, "ack for a pulse this cabinet was never sent; ignored");
                }
                *done = outcome == AckOutcome::Recorded;
            }
            Request::Play { play, done, .. } => *done = record_play(tx, play).await?,
            Request::Status {
                machine_id,
                online,
                done,
                ..
            } => {
                *done = tx
                    .set_cabinet_status(machine_id, *online, &now_db())
                    .await?;
            }
        }
        Ok(())
    }
}

async fn record_play(tx: &mut Tx, p: &PlayInput) -> Result<bool, StoreError> {
    if tx.cabinet(&p.machine_id).await?.is_none() {
        tracing::warn!(machine_id = %p.machine_id, "game over from an unknown cabinet ignored");
        return Ok(false);
    }
    let received = now_db();
    let new = tx
        .insert_play(&NewPlay {
            id: &p.id,
            machine_id: &p.machine_id,
            dedupe_key: &p.dedupe_key,
            ended_at: &p.ended_at,
            received_at: &received,
            score: p.score,
            play_seconds: p.play_seconds,
            via: p.via,
        })
        .await?;
    if new {
        tracing::info!(machine_id = %p.machine_id, play_id = %p.id, via = p.via,
            score = ?p.score, play_seconds = ?p.play_seconds, "game over");
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Outcome;
    use crate::stripe::webhook::parse_event;

    async fn core() -> (Core, tempfile::TempDir) {
        let (store, dir) = crate::test_support::store_with_cabinet("cab-1", "salt", "secret").await;
        let core = Core {
            store,
            keys: Keys::new(b"0123456789abcdef0123456789abcdef".to_vec()),
            relay: None,
            stats: Arc::default(),
        };
        (core, dir)
    }

    fn paid(event_id: &str, session_id: &str, amount: i64) -> Box<Event> {
        let body = serde_json::json!({
            "id": event_id, "type": "checkout.session.completed", "livemode": false,
            "data": {"object": {
                "id": session_id, "amount_total": amount, "currency": "usd",
                "payment_status": "paid", "metadata": {"machine_id": "cab-1"}
            }}
        });
        Box::new(parse_event(body.to_string().as_bytes()).unwrap())
    }

    fn webhook(
        event: Box<Event>,
    ) -> (
        Request,
        oneshot::Receiver<Result<WebhookOutcome, WriteError>>,
    ) {
        let (reply, rx) = oneshot::channel();
        (
            Request::Webhook {
                event,
                reply,
                done: None,
            },
            rx,
        )
    }

    async fn outcome(rx: oneshot::Receiver<Result<WebhookOutcome, WriteError>>) -> WebhookOutcome {
        rx.await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn one_batch_credits_a_session_once_whatever_repeats_it() {
        let (core, _dir) = core().await;
        let (a, a_rx) = webhook(paid("evt_1", "cs_1", 300));
        let (b, b_rx) = webhook(paid("evt_1", "cs_1", 300));
        let (c, c_rx) = webhook(paid("evt_2", "cs_1", 300));
        let mut batch = vec![a, b, c];
        core.commit_batch(&mut batch).await.unwrap();
        for r in batch {
            r.answer(Ok(()));
        }
        let first = outcome(a_rx).await;
        assert_eq!(first.outcome, Outcome::Credited);
        assert_eq!(
            outcome(b_rx).await.outcome,
            Outcome::Duplicate,
            "same event id"
        );
        assert_eq!(
            outcome(c_rx).await.outcome,
            Outcome::Duplicate,
            "same session"
        );
        let pulses = core.store.pulses(Some("cab-1"), 10).await.unwrap();
        assert_eq!(pulses.len(), 1);
        assert_eq!(pulses[0].credits, 3);
        assert_eq!(Some(&pulses[0].id), first.pulse.as_ref().map(|p| &p.id));
        let payments = core.store.payments(&Default::default()).await.unwrap();
        assert_eq!(payments.len(), 1);
    }

    #[tokio::test]
    async fn a_later_batch_sees_what_an_earlier_one_committed() {
        let (core, _dir) = core().await;
        let (a, _a_rx) = webhook(paid("evt_1", "cs_1", 100));
        core.commit_batch(&mut [a]).await.unwrap();
        let (b, b_rx) = webhook(paid("evt_1", "cs_1", 100));
        let mut batch = [b];
        core.commit_batch(&mut batch).await.unwrap();
        let [b] = batch;
        b.answer(Ok(()));
        assert_eq!(outcome(b_rx).await.outcome, Outcome::Duplicate);
    }

    #[tokio::test]
    async fn handed_marks_and_acks_are_recorded_in_the_batch() {
        let (core, _dir) = core().await;
        let (a, a_rx) = webhook(paid("evt_1", "cs_1", 100));
        let mut batch = [a];
        core.commit_batch(&mut batch).await.unwrap();
        let [a] = batch;
        a.answer(Ok(()));
        let pulse = outcome(a_rx).await.pulse.unwrap();
        assert_eq!(core.store.count_unpublished().await.unwrap(), 1);

        let (handed, _) = oneshot::channel();
        let (first, first_rx) = oneshot::channel();
        let (again, again_rx) = oneshot::channel();
        let mut batch = [
            Request::Handed {
                ids: vec![pulse.id.clone()],
                reply: handed,
            },
            ack("cab-1", &pulse.id, Some(first)),
            ack("cab-1", &pulse.id, Some(again)),
            ack("cab-1", "no-such-pulse", None),
        ];
        core.commit_batch(&mut batch).await.unwrap();
        for r in batch {
            r.answer(Ok(()));
        }
        assert!(first_rx.await.unwrap().unwrap(), "first ack recorded");
        assert!(
            !again_rx.await.unwrap().unwrap(),
            "a repeated ack is not new"
        );
        assert_eq!(core.stats.acks_ignored.load(Ordering::Relaxed), 1);
        assert_eq!(core.store.count_unpublished().await.unwrap(), 0);
        let stored = &core.store.pulses(Some("cab-1"), 1).await.unwrap()[0];
        assert_eq!(stored.state(), crate::domain::PulseState::Acked);
        let cabinet = core.store.cabinet("cab-1").await.unwrap().unwrap();
        assert!(
            cabinet.acks_pulses,
            "a cabinet that acked speaks the protocol"
        );
    }

    #[tokio::test]
    async fn a_batch_that_cannot_commit_answers_each_caller_with_the_error() {
        let (core, _dir) = core().await;
        core.store.close().await;
        let (a, a_rx) = webhook(paid("evt_1", "cs_1", 100));
        let mut batch = [a];
        let err = core.commit_batch(&mut batch).await.unwrap_err();
        assert!(matches!(err, WriteError::Database(_)), "{err}");
        let [a] = batch;
        a.answer(Err(err));
        assert!(matches!(a_rx.await.unwrap(), Err(WriteError::Database(_))));
    }
}
