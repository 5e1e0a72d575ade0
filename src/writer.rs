//! The single database writer. Every write on the hot paths (webhooks, pulse delivery
//! state, plays, cabinet status) is queued here and committed in batches: one fsync for
//! many requests (group commit), and no lock contention between writers.

use tokio::sync::{mpsc, oneshot};

use crate::domain::now_db;
use crate::mqtt::broker::Presence;
use crate::mqtt::Topics;
use crate::payments::{self, Batch, Keys, WebhookOutcome};
use crate::store::tx::{self, NewPlay};
use crate::store::{OutboxPulse, Store};
use crate::stripe::webhook::Event;

/// Acks ignored because they named no pulse of the acking cabinet (shown in `/status`).
pub static ACKS_IGNORED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Requests one transaction may hold. Large enough to amortise the fsync, small enough
/// that the first request in a batch is not kept waiting.
const MAX_BATCH: usize = 512;

#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("database unavailable: {0}")]
    Database(String),
    #[error("the writer has stopped")]
    Closed,
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

/// Where the writer hands new pulses the moment they are committed, with no queue or task
/// between the fsync and the broker. A seed cabinet's pulse is marked handed in that same
/// commit, so no crash can make it go out twice, and the gap in which a crash could lose
/// it is as short as it can be (see `mqtt::dispatcher`).
#[derive(Clone)]
pub enum Relay {
    /// Every pulse whose cabinet has a live subscription, into the embedded broker's router.
    Embedded { presence: Presence, topics: Topics },
    /// Seed cabinets' pulses, through the server's connection to an external broker (pulses
    /// for cabinets that ack go through the dispatcher, which marks them on PUBACK).
    External {
        client: paho_mqtt::AsyncClient,
        topics: Topics,
        stats: std::sync::Arc<crate::mqtt::MqttStats>,
    },
}

impl Relay {
    /// Whether this pulse can be handed over right now.
    async fn takes(&self, p: &OutboxPulse) -> bool {
        match self {
            Self::Embedded { presence, .. } => presence.deliverable(&p.machine_id).await,
            Self::External { stats, .. } => !p.acks && stats.is_connected(),
        }
    }

    async fn hand(&self, store: &Store, p: &OutboxPulse) -> bool {
        match self {
            Self::Embedded { presence, topics } => {
                presence
                    .route(&topics.coinpulse(&p.machine_id), &p.payload)
                    .await
            }
            Self::External { client, topics, .. } => {
                let msg = paho_mqtt::Message::new(
                    topics.coinpulse(&p.machine_id),
                    p.payload.as_bytes(),
                    paho_mqtt::QOS_1,
                );
                // paho's own thread writes it to the socket at once; the PUBACK is
                // awaited off the writer's path, and a failure takes the mark back.
                let token = client.publish(msg);
                let (store, id) = (store.clone(), p.id.clone());
                tokio::spawn(async move {
                    if let Err(e) = token.await {
                        tracing::warn!(pulse_id = %id, error = %e, "pulse publish failed; will retry");
                        unmark(&store, &id).await;
                    }
                });
                true
            }
        }
    }
}

async fn unmark(store: &Store, id: &str) {
    let unmark = async {
        let mut conn = store.pool().acquire().await?;
        tx::unmark_published(&mut conn, &[id.to_owned()]).await
    };
    if let Err(e) = unmark.await {
        tracing::error!(pulse_id = %id, error = %e, "pulse not sent but marked handed; resend it by hand");
    }
}

#[derive(Debug)]
enum Op {
    Webhook(Box<Event>),
    Grant {
        machine_id: String,
        credits: i64,
        reason: String,
    },
    Published(Vec<String>),
    Unpublished(Vec<String>),
    Acked {
        machine_id: String,
        pulse_id: String,
    },
    Play(PlayInput),
    Status {
        machine_id: String,
        online: bool,
    },
}

#[derive(Debug)]
enum Done {
    Webhook(WebhookOutcome),
    Grant(Option<OutboxPulse>),
    Flag(bool),
    Nothing,
}

struct Command {
    op: Op,
    reply: Option<oneshot::Sender<Result<Done, WriteError>>>,
}

/// Handle for queueing writes. Cheap to clone.
///
/// Two bounded lanes: money (webhooks, operator grants) and bookkeeping (handed marks,
/// acks, plays, statuses). Each batch takes the money lane first, so a flood of MQTT
/// messages can delay a webhook's commit by one batch at most.
#[derive(Clone)]
pub struct Writer {
    money: mpsc::Sender<Command>,
    bookkeeping: mpsc::Sender<Command>,
}

#[derive(Clone, Copy)]
enum Lane {
    Money,
    Bookkeeping,
}

impl Op {
    fn lane(&self) -> Lane {
        match self {
            Op::Webhook(_) | Op::Grant { .. } => Lane::Money,
            _ => Lane::Bookkeeping,
        }
    }
}

impl Writer {
    /// Starts the writer task. New pulses are handed to `outbox` right after each commit.
    pub fn spawn(
        store: Store,
        keys: Keys,
        relay: Option<Relay>,
        outbox: mpsc::Sender<OutboxPulse>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (money, money_rx) = mpsc::channel(16_384);
        let (bookkeeping, bookkeeping_rx) = mpsc::channel(16_384);
        let task = tokio::spawn(run(store, keys, relay, money_rx, bookkeeping_rx, outbox));
        (Self { money, bookkeeping }, task)
    }

    fn lane(&self, op: &Op) -> &mpsc::Sender<Command> {
        match op.lane() {
            Lane::Money => &self.money,
            Lane::Bookkeeping => &self.bookkeeping,
        }
    }

    async fn call(&self, op: Op) -> Result<Done, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.lane(&op)
            .send(Command {
                op,
                reply: Some(reply),
            })
            .await
            .map_err(|_| WriteError::Closed)?;
        rx.await.map_err(|_| WriteError::Closed)?
    }

    async fn cast(&self, op: Op) {
        // Fire-and-forget writes (acks, plays, statuses from MQTT) are safe to lose on
        // shutdown: the cabinet's QoS 1 redelivery or its next message repeats them.
        let _ = self.lane(&op).send(Command { op, reply: None }).await;
    }

    /// Stores a verified event; returns once it is committed.
    pub async fn webhook(&self, event: Event) -> Result<WebhookOutcome, WriteError> {
        match self.call(Op::Webhook(Box::new(event))).await? {
            Done::Webhook(o) => Ok(o),
            other => unreachable!("webhook answered {other:?}"),
        }
    }

    /// Queues operator credits; `None` when the cabinet does not exist.
    pub async fn grant(
        &self,
        machine_id: &str,
        credits: i64,
        reason: &str,
    ) -> Result<Option<OutboxPulse>, WriteError> {
        let op = Op::Grant {
            machine_id: machine_id.to_owned(),
            credits,
            reason: reason.to_owned(),
        };
        match self.call(op).await? {
            Done::Grant(p) => Ok(p),
            other => unreachable!("grant answered {other:?}"),
        }
    }

    /// Records pulses as handed to the broker; returns once that is committed.
    pub async fn published(&self, ids: Vec<String>) -> Result<(), WriteError> {
        self.call(Op::Published(ids)).await.map(|_| ())
    }

    /// Takes back handed marks of pulses that could not be sent after all.
    pub async fn unpublished(&self, ids: Vec<String>) -> Result<(), WriteError> {
        self.call(Op::Unpublished(ids)).await.map(|_| ())
    }

    pub async fn queue_ack(&self, machine_id: &str, pulse_id: &str) {
        self.cast(Op::Acked {
            machine_id: machine_id.to_owned(),
            pulse_id: pulse_id.to_owned(),
        })
        .await;
    }

    pub async fn queue_play(&self, play: PlayInput) {
        self.cast(Op::Play(play)).await;
    }

    pub async fn queue_status(&self, machine_id: &str, online: bool) {
        self.cast(Op::Status {
            machine_id: machine_id.to_owned(),
            online,
        })
        .await;
    }

    /// Returns true when this ack was the first for a pulse of this cabinet.
    pub async fn acked(&self, machine_id: &str, pulse_id: &str) -> Result<bool, WriteError> {
        let op = Op::Acked {
            machine_id: machine_id.to_owned(),
            pulse_id: pulse_id.to_owned(),
        };
        self.flag(op).await
    }

    /// Returns true when the play was new (not a repeat of one already logged).
    pub async fn play(&self, play: PlayInput) -> Result<bool, WriteError> {
        self.flag(Op::Play(play)).await
    }

    /// Returns true when the cabinet exists.
    pub async fn status(&self, machine_id: &str, online: bool) -> Result<bool, WriteError> {
        self.flag(Op::Status {
            machine_id: machine_id.to_owned(),
            online,
        })
        .await
    }

    async fn flag(&self, op: Op) -> Result<bool, WriteError> {
        match self.call(op).await? {
            Done::Flag(b) => Ok(b),
            other => unreachable!("flag op answered {other:?}"),
        }
    }
}

/// Waits for work and fills a batch, money lane first.
async fn next_batch(
    money: &mut mpsc::Receiver<Command>,
    bookkeeping: &mut mpsc::Receiver<Command>,
    batch: &mut Vec<Command>,
) -> bool {
    let first = tokio::select! {
        biased;
        c = money.recv() => c,
        c = bookkeeping.recv() => c,
    };
    // Both lanes close together (one handle holds both senders).
    let Some(first) = first else {
        return false;
    };
    batch.push(first);
    while batch.len() < MAX_BATCH {
        match money.try_recv() {
            Ok(c) => batch.push(c),
            Err(_) => break,
        }
    }
    while batch.len() < MAX_BATCH {
        match bookkeeping.try_recv() {
            Ok(c) => batch.push(c),
            Err(_) => break,
        }
    }
    true
}

async fn run(
    store: Store,
    keys: Keys,
    relay: Option<Relay>,
    mut money: mpsc::Receiver<Command>,
    mut bookkeeping: mpsc::Receiver<Command>,
    outbox: mpsc::Sender<OutboxPulse>,
) {
    let mut batch: Vec<Command> = Vec::with_capacity(MAX_BATCH);
    while next_batch(&mut money, &mut bookkeeping, &mut batch).await {
        let ops: Vec<&Op> = batch.iter().map(|c| &c.op).collect();
        let started = std::time::Instant::now();
        let committed = commit(&store, &keys, relay.as_ref(), &ops).await;
        tracing::debug!(
            size = ops.len(),
            micros = started.elapsed().as_micros() as u64,
            "batch committed"
        );
        let results = match committed {
            Ok(done) => done.into_iter().map(Ok).collect(),
            Err(e) if batch.len() == 1 => vec![Err(e)],
            Err(e) => {
                // One bad request must not fail its neighbours: retry each on its own.
                tracing::warn!(error = %e, size = batch.len(), "batch commit failed; retrying one by one");
                let mut each = Vec::with_capacity(batch.len());
                for op in &ops {
                    each.push(
                        commit(&store, &keys, relay.as_ref(), &[op])
                            .await
                            .map(|mut d| d.remove(0)),
                    );
                }
                each
            }
        };
        let mut routed_any = false;
        let mut replies = Vec::with_capacity(batch.len());
        for (cmd, result) in batch.drain(..).zip(results) {
            let result = match result {
                Ok((done, pulse)) => {
                    if let Some(mut p) = pulse {
                        if p.routed {
                            relay_now(&store, relay.as_ref(), &mut p).await;
                            routed_any = true;
                        }
                        // Never blocks the writer: a full queue leaves the pulse to the
                        // dispatcher's sweep, which reads the outbox table.
                        let _ = outbox.try_send(p);
                    }
                    Ok(done)
                }
                Err(e) => Err(e),
            };
            replies.push((cmd.reply, result));
        }
        if routed_any {
            // Let the broker's connection tasks, just woken on this worker, write the
            // pulses to their sockets before anyone hears "done": the window in which a
            // crash loses a seed cabinet's handed pulse shrinks to almost nothing.
            tokio::task::yield_now().await;
        }
        for (reply, result) in replies {
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        }
    }
    tracing::info!("database writer stopped");
}

type Applied = (Done, Option<OutboxPulse>);

/// Hands a just-committed pulse to the embedded broker.
async fn relay_now(store: &Store, relay: Option<&Relay>, p: &mut OutboxPulse) {
    let Some(relay) = relay else {
        p.routed = false;
        return;
    };
    if relay.hand(store, p).await {
        return;
    }
    p.routed = false;
    if !p.acks {
        // Marked handed in the commit but never sent: take the mark back.
        unmark(store, &p.id).await;
    }
}

async fn commit(
    store: &Store,
    keys: &Keys,
    relay: Option<&Relay>,
    ops: &[&Op],
) -> Result<Vec<Applied>, WriteError> {
    let db = |e: sqlx::Error| WriteError::Database(e.to_string());
    let mut txn = store.pool().begin().await.map_err(db)?;
    let mut out = Vec::with_capacity(ops.len());
    // Published marks in one statement per batch rather than one per pulse.
    let mut published: Vec<String> = Vec::new();
    let events: Vec<&Event> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Webhook(ev) => Some(ev.as_ref()),
            _ => None,
        })
        .collect();
    let mut batch = Batch::prefetch(&mut txn, &events).await.map_err(db)?;
    for op in ops {
        let applied = match op {
            Op::Published(ids) => {
                published.extend(ids.iter().cloned());
                (Done::Nothing, None)
            }
            other => apply(&mut txn, keys, &mut batch, other).await.map_err(db)?,
        };
        out.push(applied);
    }
    if let Some(relay) = relay {
        let now = now_db();
        for pulse in out.iter_mut().filter_map(|(_, p)| p.as_mut()) {
            if relay.takes(pulse).await {
                pulse.routed = true;
                if !pulse.acks {
                    batch.mark_handed(&pulse.id, &now);
                }
            }
        }
    }
    batch.flush(&mut txn).await.map_err(db)?;
    if !published.is_empty() {
        tx::mark_published(&mut txn, &published, &now_db())
            .await
            .map_err(db)?;
    }
    txn.commit().await.map_err(db)?;
    Ok(out)
}

async fn apply(
    conn: &mut tx::Conn,
    keys: &Keys,
    batch: &mut Batch,
    op: &Op,
) -> Result<Applied, sqlx::Error> {
    Ok(match op {
        Op::Webhook(ev) => {
            let outcome = payments::apply_event(conn, keys, batch, ev).await?;
            let pulse = outcome.pulse.clone();
            (Done::Webhook(outcome), pulse)
        }
        Op::Grant {
            machine_id,
            credits,
            reason,
        } => {
            let pulse = payments::grant(conn, keys, batch, machine_id, *credits, reason).await?;
            (Done::Grant(pulse.clone()), pulse)
        }
        Op::Acked {
            machine_id,
            pulse_id,
        } => {
            let outcome = tx::mark_acked(conn, machine_id, pulse_id, &now_db()).await?;
            if outcome == tx::AckOutcome::Unknown {
                // Only the cabinet's own login can publish on its ack topic, so this is a
                // confused cabinet (or, on an external broker, someone else's ack).
                ACKS_IGNORED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    machine_id,
                    pulse_id,
                    "ack for a pulse this cabinet was never sent; ignored"
                );
            }
            (Done::Flag(outcome == tx::AckOutcome::Recorded), None)
        }
        Op::Play(p) => {
            if batch.cabinet(conn, &p.machine_id).await?.is_none() {
                tracing::warn!(machine_id = %p.machine_id, "game over from an unknown cabinet ignored");
                return Ok((Done::Flag(false), None));
            }
            let received = now_db();
            let new = tx::insert_play(
                conn,
                &NewPlay {
                    id: &p.id,
                    machine_id: &p.machine_id,
                    dedupe_key: &p.dedupe_key,
                    ended_at: &p.ended_at,
                    received_at: &received,
                    score: p.score,
                    play_seconds: p.play_seconds,
                    via: p.via,
                },
            )
            .await?;
            if new {
                tracing::info!(machine_id = %p.machine_id, play_id = %p.id, via = p.via,
                    score = ?p.score, play_seconds = ?p.play_seconds, "game over");
            }
            (Done::Flag(new), None)
        }
        Op::Status { machine_id, online } => (
            Done::Flag(tx::set_cabinet_status(conn, machine_id, *online, &now_db()).await?),
            None,
        ),
        Op::Unpublished(ids) => {
            tx::unmark_published(conn, ids).await?;
            (Done::Nothing, None)
        }
        Op::Published(_) => unreachable!("handled in commit"),
    })
}
