//! The money path: a verified Stripe event becomes a payment row and, when it buys
//! credits, a signed pulse in the outbox, all inside the writer's transaction.

use std::sync::Arc;

use crate::domain::{
    credits_for_amount, derive_cabinet_secret, now_db, sign_pulse, wire_time, Currency, MachineId,
    PulseMessage, PulseSource,
};
use std::collections::{HashMap, HashSet};

use crate::store::tx::{self, Conn, NewPayment};
use crate::store::{Cabinet, OutboxPulse};
use crate::stripe::webhook::{Charge, CheckoutSession, Event, EventBody};

/// Derives cabinet secrets from the master key; shared by the writer, the broker's
/// authentication and the API that shows a new secret once.
#[derive(Clone)]
pub struct Keys {
    /// One subkey per purpose, derived from the master key with HKDF-SHA256, so a key
    /// leaked or misused in one role says nothing about the others.
    cabinet: Arc<[u8; 32]>,
    tokens: Arc<[u8; 32]>,
    internal_mqtt: Arc<[u8; 32]>,
    pulse_signing: Arc<ed25519_dalek::SigningKey>,
}

impl Keys {
    pub fn new(master: Vec<u8>) -> Self {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"coinpulse"), &master);
        let derive = |label: &str| {
            let mut out = [0u8; 32];
            hk.expand(label.as_bytes(), &mut out)
                .expect("32 bytes is a valid HKDF-SHA256 length");
            out
        };
        Self {
            cabinet: Arc::new(derive("cabinet passwords v1")),
            tokens: Arc::new(derive("tokens v1")),
            internal_mqtt: Arc::new(derive("internal mqtt password v1")),
            pulse_signing: Arc::new(ed25519_dalek::SigningKey::from_bytes(&derive(
                "pulse signing ed25519 v1",
            ))),
        }
    }

    pub fn cabinet_secret(&self, machine_id: &str, salt: &str) -> String {
        derive_cabinet_secret(&*self.cabinet, machine_id, salt)
    }

    /// A keyed MAC for tokens the server hands out and checks later (CSRF, idempotency);
    /// `purpose` separates them.
    pub fn mac(&self, purpose: &str, data: &str) -> String {
        derive_cabinet_secret(&*self.tokens, purpose, data)
    }

    /// The password the server's own MQTT client uses on the embedded broker.
    pub fn internal_mqtt_password(&self) -> String {
        derive_cabinet_secret(&*self.internal_mqtt, "$coinpulse-server", "internal")
    }

    /// The key that signs every pulse (Ed25519); cabinets verify with the public half.
    pub fn pulse_signing_key(&self) -> &ed25519_dalek::SigningKey {
        &self.pulse_signing
    }

    pub fn pulse_public_key_hex(&self) -> String {
        hex::encode(self.pulse_signing.verifying_key().as_bytes())
    }
}

/// What one writer transaction reads and writes, so a batch of webhooks costs a handful of
/// round trips to the database instead of several per webhook: lookups are fetched for the
/// whole batch up front, and event and pulse rows are written together at the end. Within
/// the transaction the copies stay consistent, because every change made here is also
/// applied to them.
#[derive(Default)]
pub struct Batch {
    cabinets: HashMap<String, Option<Cabinet>>,
    /// Event ids stored before this batch or processed earlier in it.
    seen_events: HashSet<String>,
    /// Payments by checkout session id, for the sessions this batch mentions.
    payments: HashMap<String, Option<tx::PaymentState>>,
    /// Sessions coinpulse created, by id.
    truths: HashMap<String, Option<tx::SessionTruth>>,
    events: Vec<tx::EventRow>,
    pulses: Vec<tx::PulseRow>,
}

fn session_of(ev: &Event) -> Option<&CheckoutSession> {
    match &ev.body {
        EventBody::CheckoutCompleted(s)
        | EventBody::CheckoutAsyncSucceeded(s)
        | EventBody::CheckoutAsyncFailed(s)
        | EventBody::CheckoutExpired(s) => Some(s),
        _ => None,
    }
}

impl Batch {
    /// Reads, in three statements, what `events` will need.
    pub async fn prefetch(conn: &mut Conn, events: &[&Event]) -> Result<Self, sqlx::Error> {
        let mut batch = Self::default();
        if events.is_empty() {
            return Ok(batch);
        }
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        batch.seen_events = tx::existing_events(conn, &ids).await?;
        let sessions: Vec<&str> = events
            .iter()
            .filter_map(|e| session_of(e))
            .map(|s| s.id.as_str())
            .collect();
        if !sessions.is_empty() {
            let found = tx::payments_by_sessions(conn, &sessions).await?;
            let truths = tx::checkout_sessions(conn, &sessions).await?;
            for s in sessions {
                batch.payments.insert(s.to_owned(), found.get(s).cloned());
                batch.truths.insert(s.to_owned(), truths.get(s).cloned());
            }
        }
        Ok(batch)
    }

    pub async fn cabinet(
        &mut self,
        conn: &mut Conn,
        machine_id: &str,
    ) -> Result<Option<Cabinet>, sqlx::Error> {
        if let Some(c) = self.cabinets.get(machine_id) {
            return Ok(c.clone());
        }
        let c = tx::cabinet(conn, machine_id).await?;
        self.cabinets.insert(machine_id.to_owned(), c.clone());
        Ok(c)
    }

    async fn payment(
        &mut self,
        conn: &mut Conn,
        session_id: &str,
    ) -> Result<Option<tx::PaymentState>, sqlx::Error> {
        if let Some(p) = self.payments.get(session_id) {
            return Ok(p.clone());
        }
        let p = tx::payment_by_session(conn, session_id).await?;
        self.payments.insert(session_id.to_owned(), p.clone());
        Ok(p)
    }

    async fn truth(
        &mut self,
        conn: &mut Conn,
        session_id: &str,
    ) -> Result<Option<tx::SessionTruth>, sqlx::Error> {
        if let Some(t) = self.truths.get(session_id) {
            return Ok(t.clone());
        }
        let t = tx::checkout_session(conn, session_id).await?;
        self.truths.insert(session_id.to_owned(), t.clone());
        Ok(t)
    }

    /// Writes the rows deferred during the batch; call before committing.
    /// Records a pulse of this batch as handed to the broker when it is inserted.
    pub fn mark_handed(&mut self, pulse_id: &str, at: &str) {
        if let Some(row) = self.pulses.iter_mut().find(|r| r.id == pulse_id) {
            row.published_at = Some(at.to_owned());
        }
    }

    pub async fn flush(&mut self, conn: &mut Conn) -> Result<(), sqlx::Error> {
        tx::insert_events(conn, &self.events).await?;
        tx::insert_pulses(conn, &self.pulses).await?;
        self.events.clear();
        self.pulses.clear();
        Ok(())
    }
}

/// What became of a webhook, stored as `stripe_events.outcome`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Credited,
    /// Seen before (same event id, or a session already settled).
    Duplicate,
    Review(String),
    /// Paid later by an asynchronous method; no credits yet.
    Waiting,
    Failed,
    Expired,
    Refunded,
    /// A refund for a payment coinpulse never saw.
    Unmatched,
    Ignored,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Credited => "credited",
            Self::Duplicate => "duplicate",
            Self::Review(_) => "review",
            Self::Waiting => "waiting",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Refunded => "refunded",
            Self::Unmatched => "unmatched",
            Self::Ignored => "ignored",
        }
    }
}

#[derive(Debug, Clone)]
pub struct WebhookOutcome {
    pub outcome: Outcome,
    pub payment_id: Option<String>,
    pub pulse: Option<OutboxPulse>,
}

impl WebhookOutcome {
    fn of(outcome: Outcome) -> Self {
        Self {
            outcome,
            payment_id: None,
            pulse: None,
        }
    }
}

/// Runs inside the writer's transaction. The event id's uniqueness makes a replay a no-op;
/// the checkout session's uniqueness makes two event types for one session credit once.
pub async fn apply_event(
    conn: &mut Conn,
    keys: &Keys,
    batch: &mut Batch,
    ev: &Event,
) -> Result<WebhookOutcome, sqlx::Error> {
    if !batch.seen_events.insert(ev.id.clone()) {
        return Ok(WebhookOutcome::of(Outcome::Duplicate));
    }
    let now = now_db();
    let object_id = match &ev.body {
        EventBody::ChargeRefunded(c) => Some(c.id.clone()),
        _ => session_of(ev).map(|s| s.id.clone()),
    };
    let result = match &ev.body {
        EventBody::CheckoutCompleted(s) => match s.payment_status.as_str() {
            "paid" | "no_payment_required" => credit(conn, keys, batch, ev, s, &now).await?,
            _ => record_pending(conn, batch, ev, s, &now).await?,
        },
        EventBody::CheckoutAsyncSucceeded(s) => credit(conn, keys, batch, ev, s, &now).await?,
        EventBody::CheckoutAsyncFailed(s) => {
            close_pending(conn, batch, s, "failed", Outcome::Failed, &now).await?
        }
        EventBody::CheckoutExpired(s) => {
            close_pending(conn, batch, s, "expired", Outcome::Expired, &now).await?
        }
        EventBody::ChargeRefunded(c) => refund(conn, c, &now).await?,
        EventBody::Other => WebhookOutcome::of(Outcome::Ignored),
    };
    // Stored with its outcome when the batch is flushed, in the same transaction.
    batch.events.push(tx::EventRow {
        event_id: ev.id.clone(),
        event_type: ev.kind.clone(),
        livemode: ev.livemode,
        object_id,
        outcome: result.outcome.as_str(),
        payment_id: result.payment_id.clone(),
        received_at: now,
    });
    Ok(result)
}

/// How a paid session should be booked, decided from the session and its cabinet.
#[derive(Debug, PartialEq, Eq)]
pub struct Booking {
    pub machine_id: Option<String>,
    pub credits: i64,
    pub review_reason: Option<String>,
}

/// The cabinet a session names. A Payment Link payment counts only the link's own
/// metadata: anyone can append `?client_reference_id=` to a link's URL, so on a link it
/// would let a player send a payment's credits to a cabinet of their choosing.
pub fn claimed_machine(s: &CheckoutSession) -> Option<&String> {
    let from_metadata = s.metadata.get("machine_id");
    if s.payment_link.is_some() {
        from_metadata
    } else {
        from_metadata.or(s.client_reference_id.as_ref())
    }
}

/// Pure: which cabinet, how many credits, and whether a person must look at it.
pub fn book(s: &CheckoutSession, cabinet: Option<&Cabinet>) -> Booking {
    let raw_id = claimed_machine(s).cloned();
    let review = |machine_id: Option<String>, reason: String| Booking {
        machine_id,
        credits: 0,
        review_reason: Some(reason),
    };
    let Some(raw_id) = raw_id else {
        let why = if s.payment_link.is_some() {
            "payment link without machine_id metadata (client_reference_id is not trusted on links)"
        } else {
            "no machine_id in metadata or client_reference_id"
        };
        return review(None, why.into());
    };
    if MachineId::parse(&raw_id).is_err() {
        return review(None, format!("invalid machine_id {raw_id:?}"));
    }
    let Some(cabinet) = cabinet else {
        return review(Some(raw_id.clone()), format!("unknown cabinet {raw_id}"));
    };
    let machine_id = Some(cabinet.machine_id.clone());
    if !cabinet.enabled {
        return review(machine_id, format!("cabinet {raw_id} is disabled"));
    }
    let currency = s.currency.as_deref().and_then(|c| Currency::parse(c).ok());
    if currency.as_ref().map(Currency::as_str) != Some(cabinet.currency.as_str()) {
        return review(
            machine_id,
            format!(
                "currency {} does not match the cabinet's {}",
                s.currency.as_deref().unwrap_or("(none)"),
                cabinet.currency
            ),
        );
    }
    let Some(amount) = s.amount_total else {
        return review(machine_id, "session has no amount_total".into());
    };
    let credits = credits_for_amount(amount, cabinet.price_minor);
    if credits == 0 {
        return review(
            machine_id,
            format!(
                "amount {amount} buys no credit at {} per credit",
                cabinet.price_minor
            ),
        );
    }
    Booking {
        machine_id,
        credits,
        review_reason: None,
    }
}

/// Pure: books a session coinpulse created. The amount must be what was asked, or less by
/// exactly the discount Stripe reports (a promotion code).
pub fn book_stored(
    s: &CheckoutSession,
    t: &tx::SessionTruth,
    cabinet: Option<&Cabinet>,
) -> Booking {
    let machine_id = Some(t.machine_id.clone());
    let review = |reason: String| Booking {
        machine_id: machine_id.clone(),
        credits: 0,
        review_reason: Some(reason),
    };
    let Some(cabinet) = cabinet else {
        return review(format!("cabinet {} no longer exists", t.machine_id));
    };
    if !cabinet.enabled {
        return review(format!("cabinet {} is disabled", t.machine_id));
    }
    if s.currency.as_deref() != Some(t.currency.as_str()) {
        return review(format!(
            "currency {} does not match the session's {}",
            s.currency.as_deref().unwrap_or("(none)"),
            t.currency
        ));
    }
    let paid = s.amount_total.unwrap_or(-1);
    let discounted = paid < t.amount_minor
        && s.amount_discount > 0
        && paid + s.amount_discount == t.amount_minor;
    if paid != t.amount_minor && !discounted {
        return review(format!(
            "paid {paid}, expected {} for {} credits",
            t.amount_minor, t.credits
        ));
    }
    Booking {
        machine_id,
        credits: t.credits,
        review_reason: None,
    }
}

async fn credit(
    conn: &mut Conn,
    keys: &Keys,
    batch: &mut Batch,
    ev: &Event,
    s: &CheckoutSession,
    now: &str,
) -> Result<WebhookOutcome, sqlx::Error> {
    let existing = batch.payment(conn, &s.id).await?;
    if let Some(p) = &existing {
        if p.status != "pending" {
            return Ok(WebhookOutcome {
                outcome: Outcome::Duplicate,
                payment_id: Some(p.id.clone()),
                pulse: None,
            });
        }
    }
    // A session coinpulse created is booked from what was stored when it was created, so
    // edited metadata cannot change the cabinet or the credits.
    let truth = batch.truth(conn, &s.id).await?;
    let booking = match &truth {
        Some(t) => {
            let cabinet = batch.cabinet(conn, &t.machine_id).await?;
            book_stored(s, t, cabinet.as_ref())
        }
        None => {
            let cabinet = match claimed_machine(s) {
                Some(id) if MachineId::parse(id).is_ok() => batch.cabinet(conn, id).await?,
                _ => None,
            };
            book(s, cabinet.as_ref())
        }
    };
    let cabinet = match &booking.machine_id {
        Some(id) if booking.review_reason.is_none() => batch.cabinet(conn, id).await?,
        _ => None,
    };
    let payment_id = existing
        .as_ref()
        .map(|p| p.id.clone())
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let status = if booking.review_reason.is_some() {
        "review"
    } else {
        "credited"
    };
    let row = NewPayment {
        id: &payment_id,
        checkout_session_id: &s.id,
        payment_intent_id: s.payment_intent.as_deref(),
        machine_id: booking.machine_id.as_deref(),
        amount_minor: s.amount_total.unwrap_or(0),
        discount_minor: s.amount_discount,
        currency: s.currency.as_deref().unwrap_or(""),
        credits: booking.credits,
        status,
        review_reason: booking.review_reason.as_deref(),
        livemode: ev.livemode,
        at: now,
    };
    let stored = match existing {
        Some(_) => tx::settle_payment(conn, "pending", &row).await?,
        None => tx::insert_payment(conn, &row).await?,
    };
    if !stored {
        // Another writer (a second replica) settled this session first.
        return Ok(WebhookOutcome::of(Outcome::Duplicate));
    }
    batch.payments.insert(
        s.id.clone(),
        Some(tx::PaymentState {
            id: payment_id.clone(),
            status: status.to_owned(),
            machine_id: booking.machine_id.clone(),
            amount_minor: row.amount_minor,
        }),
    );
    if truth.is_some() {
        let state = if booking.review_reason.is_some() {
            "review"
        } else {
            "paid"
        };
        tx::set_checkout_status(conn, &s.id, state).await?;
    }
    if let Some(reason) = booking.review_reason.clone() {
        tracing::warn!(payment_id = %payment_id, machine_id = ?booking.machine_id, reason = %reason,
            amount = row.amount_minor, "payment needs review; no credits sent");
        return Ok(WebhookOutcome {
            outcome: Outcome::Review(reason),
            payment_id: Some(payment_id),
            pulse: None,
        });
    }
    let cabinet = cabinet.expect("credited payments have a cabinet");
    let pulse = new_pulse(
        batch,
        keys,
        &cabinet,
        booking.credits,
        PulseSource::Stripe,
        Some(&payment_id),
        None,
        now,
    );
    tracing::info!(payment_id = %payment_id, machine_id = %cabinet.machine_id, credits = booking.credits,
        amount = row.amount_minor, currency = %row.currency, pulse_id = %pulse.id, "payment credited");
    Ok(WebhookOutcome {
        outcome: Outcome::Credited,
        payment_id: Some(payment_id),
        pulse: Some(pulse),
    })
}

/// A completed session whose money has not arrived yet (bank debits and the like).
async fn record_pending(
    conn: &mut Conn,
    batch: &mut Batch,
    ev: &Event,
    s: &CheckoutSession,
    now: &str,
) -> Result<WebhookOutcome, sqlx::Error> {
    if let Some(p) = batch.payment(conn, &s.id).await? {
        return Ok(WebhookOutcome {
            outcome: Outcome::Duplicate,
            payment_id: Some(p.id),
            pulse: None,
        });
    }
    let raw_id = claimed_machine(s);
    let payment_id = uuid::Uuid::now_v7().to_string();
    let row = NewPayment {
        id: &payment_id,
        checkout_session_id: &s.id,
        payment_intent_id: s.payment_intent.as_deref(),
        machine_id: raw_id
            .filter(|id| MachineId::parse(id).is_ok())
            .map(String::as_str),
        amount_minor: s.amount_total.unwrap_or(0),
        discount_minor: s.amount_discount,
        currency: s.currency.as_deref().unwrap_or(""),
        credits: 0,
        status: "pending",
        review_reason: None,
        livemode: ev.livemode,
        at: now,
    };
    if !tx::insert_payment(conn, &row).await? {
        return Ok(WebhookOutcome::of(Outcome::Duplicate));
    }
    batch.payments.insert(
        s.id.clone(),
        Some(tx::PaymentState {
            id: payment_id.clone(),
            status: "pending".into(),
            machine_id: row.machine_id.map(str::to_owned),
            amount_minor: row.amount_minor,
        }),
    );
    tracing::info!(payment_id = %payment_id, machine_id = ?row.machine_id, "checkout completed, payment pending");
    Ok(WebhookOutcome {
        outcome: Outcome::Waiting,
        payment_id: Some(payment_id),
        pulse: None,
    })
}

async fn close_pending(
    conn: &mut Conn,
    batch: &mut Batch,
    s: &CheckoutSession,
    to_status: &str,
    outcome: Outcome,
    now: &str,
) -> Result<WebhookOutcome, sqlx::Error> {
    tx::set_checkout_status(conn, &s.id, to_status).await?;
    let payment = batch.payment(conn, &s.id).await?;
    if let Some(p) = &payment {
        if tx::set_payment_status(conn, &p.id, "pending", to_status, now).await? {
            batch.payments.insert(
                s.id.clone(),
                Some(tx::PaymentState {
                    status: to_status.to_owned(),
                    ..p.clone()
                }),
            );
            tracing::info!(payment_id = %p.id, machine_id = ?p.machine_id, status = to_status, "pending payment closed");
        }
    }
    Ok(WebhookOutcome {
        outcome,
        payment_id: payment.map(|p| p.id),
        pulse: None,
    })
}

/// Marks the payment refunded. Credits already sent are not clawed back: the game may
/// have been played.
async fn refund(conn: &mut Conn, c: &Charge, now: &str) -> Result<WebhookOutcome, sqlx::Error> {
    let payment = match &c.payment_intent {
        Some(pi) => tx::payment_by_intent(conn, pi).await?,
        None => None,
    };
    let Some(p) = payment else {
        tracing::warn!(charge = %c.id, "refund for a payment coinpulse does not know");
        return Ok(WebhookOutcome::of(Outcome::Unmatched));
    };
    let status = if c.refunded || c.amount_refunded >= p.amount_minor {
        "refunded"
    } else {
        "partially_refunded"
    };
    tx::record_refund(conn, &p.id, c.amount_refunded, status, now).await?;
    tracing::info!(payment_id = %p.id, machine_id = ?p.machine_id, refunded = c.amount_refunded, status, "payment refunded");
    Ok(WebhookOutcome {
        outcome: Outcome::Refunded,
        payment_id: Some(p.id),
        pulse: None,
    })
}

/// Credits an owner grants by hand; they travel through the same outbox.
pub async fn grant(
    conn: &mut Conn,
    keys: &Keys,
    batch: &mut Batch,
    machine_id: &str,
    credits: i64,
    reason: &str,
) -> Result<Option<OutboxPulse>, sqlx::Error> {
    let Some(cabinet) = batch.cabinet(conn, machine_id).await? else {
        return Ok(None);
    };
    let now = now_db();
    let pulse = new_pulse(
        batch,
        keys,
        &cabinet,
        credits,
        PulseSource::Operator,
        None,
        Some(reason),
        &now,
    );
    tracing::info!(machine_id, credits, pulse_id = %pulse.id, reason, "operator credits granted");
    Ok(Some(pulse))
}

/// Signs a pulse and queues its outbox row for the end of the batch.
#[allow(clippy::too_many_arguments)]
fn new_pulse(
    batch: &mut Batch,
    keys: &Keys,
    cabinet: &Cabinet,
    credits: i64,
    source: PulseSource,
    payment_id: Option<&str>,
    reason: Option<&str>,
    now: &str,
) -> OutboxPulse {
    let msg = PulseMessage {
        id: uuid::Uuid::now_v7().to_string(),
        machine_id: cabinet.machine_id.clone(),
        credits,
        timestamp: wire_time(chrono::Utc::now()),
        source,
    };
    let secret = keys.cabinet_secret(&cabinet.machine_id, &cabinet.secret_salt);
    let payload = sign_pulse(&msg, &secret, keys.pulse_signing_key());
    batch.pulses.push(tx::PulseRow {
        id: msg.id.clone(),
        machine_id: cabinet.machine_id.clone(),
        credits,
        source: source.as_str(),
        payment_id: payment_id.map(str::to_owned),
        reason: reason.map(str::to_owned),
        payload: payload.clone(),
        created_at: now.to_owned(),
        published_at: None,
    });
    OutboxPulse {
        id: msg.id,
        machine_id: msg.machine_id,
        payload,
        created_at: now.to_owned(),
        acks: cabinet.acks_pulses,
        routed: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cabinet(enabled: bool) -> Cabinet {
        Cabinet {
            machine_id: "cab-1".into(),
            name: "Cab".into(),
            game: String::new(),
            location: String::new(),
            price_minor: 100,
            currency: "usd".into(),
            enabled,
            online: true,
            last_seen_at: None,
            acks_pulses: false,
            always_available: false,
            created_at: String::new(),
            updated_at: String::new(),
            secret_salt: "s".into(),
            secret_hash: String::new(),
        }
    }

    fn session(amount: i64, currency: &str) -> CheckoutSession {
        CheckoutSession {
            id: "cs_1".into(),
            payment_status: "paid".into(),
            amount_total: Some(amount),
            currency: Some(currency.into()),
            metadata: HashMap::from([("machine_id".to_string(), "cab-1".to_string())]),
            ..Default::default()
        }
    }

    #[test]
    fn books_credits_by_amount() {
        let b = book(&session(350, "usd"), Some(&cabinet(true)));
        assert_eq!(
            b,
            Booking {
                machine_id: Some("cab-1".into()),
                credits: 3,
                review_reason: None
            }
        );
    }

    #[test]
    fn sends_doubtful_payments_to_review() {
        let on = cabinet(true);
        let reason = |s: &CheckoutSession, c: Option<&Cabinet>| book(s, c).review_reason.unwrap();
        assert!(reason(&session(100, "usd"), None).contains("unknown cabinet"));
        assert!(reason(&session(100, "usd"), Some(&cabinet(false))).contains("disabled"));
        assert!(reason(&session(100, "eur"), Some(&on)).contains("currency"));
        assert!(reason(&session(99, "usd"), Some(&on)).contains("buys no credit"));
        let mut no_id = session(100, "usd");
        no_id.metadata.clear();
        assert!(reason(&no_id, None).contains("no machine_id"));
    }

    #[test]
    fn payment_links_ignore_client_reference_id() {
        let mut s = session(100, "usd");
        s.metadata.clear();
        s.client_reference_id = Some("cab-1".into());
        s.payment_link = Some("plink_1".into());
        let b = book(&s, Some(&cabinet(true)));
        assert_eq!(b.credits, 0);
        assert!(b.review_reason.unwrap().contains("payment link"));
        s.metadata.insert("machine_id".into(), "cab-1".into());
        assert_eq!(book(&s, Some(&cabinet(true))).credits, 1);
    }

    #[test]
    fn falls_back_to_client_reference_id() {
        let mut s = session(200, "usd");
        s.metadata.clear();
        s.client_reference_id = Some("cab-1".into());
        assert_eq!(book(&s, Some(&cabinet(true))).credits, 2);
    }
}
