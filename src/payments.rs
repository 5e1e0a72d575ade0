//! The money path: a verified Stripe event becomes a payment row and, when it buys
//! credits, a signed pulse in the outbox, all inside the writer's transaction ([`Tx`]).
//! The rules (which cabinet, how many credits, when to ask a person) are pure and live in
//! `domain::booking`; this file applies them and records the result.

use crate::domain::{
    book, book_stored, claimed_machine, now_db, sign_pulse, wire_time, Booking, Cabinet,
    CheckoutStatus, Keys, MachineId, Outcome, PaymentStatus, PulseMessage, PulseSource,
};
use crate::store::{NewEvent, NewPayment, NewPulse, OutboxPulse, PaymentState, StoreError, Tx};
use crate::stripe::webhook::{Charge, CheckoutSession, Event, EventBody};

#[derive(Debug, Clone)]
pub struct WebhookOutcome {
    pub outcome: Outcome,
    pub payment_id: Option<String>,
    pub pulse: Option<OutboxPulse>,
}

impl WebhookOutcome {
    pub(crate) fn outcome(outcome: Outcome) -> Self {
        Self::of(outcome)
    }

    fn of(outcome: Outcome) -> Self {
        Self {
            outcome,
            payment_id: None,
            pulse: None,
        }
    }

    fn for_payment(outcome: Outcome, payment_id: &str) -> Self {
        Self {
            outcome,
            payment_id: Some(payment_id.to_owned()),
            pulse: None,
        }
    }
}

/// The checkout session an event is about, if it is about one.
pub fn session_of(ev: &Event) -> Option<&CheckoutSession> {
    match &ev.body {
        EventBody::CheckoutCompleted(s)
        | EventBody::CheckoutAsyncSucceeded(s)
        | EventBody::CheckoutAsyncFailed(s)
        | EventBody::CheckoutExpired(s) => Some(s),
        EventBody::ChargeRefunded(_) | EventBody::Other => None,
    }
}

/// Reads up front what a batch of events will need (see [`Tx::prefetch`]).
pub async fn prefetch(tx: &mut Tx, events: &[&Event]) -> Result<(), StoreError> {
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let sessions: Vec<&str> = events
        .iter()
        .filter_map(|e| session_of(e))
        .map(|s| s.id.as_str())
        .collect();
    tx.prefetch(&ids, &sessions).await
}

/// Applies one verified event. The event id's uniqueness makes a replay a no-op; the
/// checkout session's uniqueness makes two event types for one session credit once.
pub async fn apply_event(
    tx: &mut Tx,
    keys: &Keys,
    ev: &Event,
) -> Result<WebhookOutcome, StoreError> {
    if !tx.claim_event(&ev.id).await? {
        return Ok(WebhookOutcome::of(Outcome::Duplicate));
    }
    let now = now_db();
    // Top-ups are looked up only for sessions marked as one (coinpulse marks its own); a
    // mark added or removed by editing metadata changes nothing: a marked session that
    // is no stored top-up is booked as a payment, an unmarked top-up goes to review.
    let topup = match session_of(ev).filter(|s| crate::wallets::marked_as_topup(s)) {
        Some(s) => tx.topup(&s.id).await?.map(|t| (s, t)),
        None => None,
    };
    let result = if let Some((s, t)) = topup {
        crate::wallets::topup_event(tx, ev, s, &t, &now).await?
    } else {
        match &ev.body {
            EventBody::CheckoutCompleted(s) => match s.payment_status.as_str() {
                "paid" | "no_payment_required" => credit(tx, keys, ev, s, &now).await?,
                _ => record_pending(tx, ev, s, &now).await?,
            },
            EventBody::CheckoutAsyncSucceeded(s) => credit(tx, keys, ev, s, &now).await?,
            EventBody::CheckoutAsyncFailed(s) => {
                close_pending(tx, s, PaymentStatus::Failed, &now).await?
            }
            EventBody::CheckoutExpired(s) => {
                close_pending(tx, s, PaymentStatus::Expired, &now).await?
            }
            EventBody::ChargeRefunded(c) => refund(tx, c, &now).await?,
            EventBody::Other => WebhookOutcome::of(Outcome::Ignored),
        }
    };
    let object_id = match &ev.body {
        EventBody::ChargeRefunded(c) => Some(c.id.clone()),
        _ => session_of(ev).map(|s| s.id.clone()),
    };
    // Stored with its outcome at commit, in the same transaction.
    tx.record_event(NewEvent {
        event_id: ev.id.clone(),
        event_type: ev.kind.clone(),
        livemode: ev.livemode,
        object_id,
        outcome: result.outcome.clone(),
        payment_id: result.payment_id.clone(),
        received_at: now,
    });
    Ok(result)
}

/// Books a paid session: from what coinpulse stored when it created the session, so
/// edited metadata cannot change the cabinet or the credits; else from the session.
async fn booking_for(
    tx: &mut Tx,
    s: &CheckoutSession,
) -> Result<(Booking, Option<Cabinet>, bool), StoreError> {
    let (booking, cabinet, stored) = match tx.checkout_terms(&s.id).await? {
        Some(terms) => {
            let cabinet = tx.cabinet(&terms.machine_id).await?;
            (book_stored(s, &terms, cabinet.as_ref()), cabinet, true)
        }
        None => {
            let cabinet = match claimed_machine(s) {
                Some(id) if MachineId::parse(id).is_ok() => tx.cabinet(id).await?,
                _ => None,
            };
            (book(s, cabinet.as_ref()), cabinet, false)
        }
    };
    // Only a booking without doubt sends credits, and only to the cabinet it names.
    let cabinet = cabinet.filter(|_| booking.review_reason.is_none());
    Ok((booking, cabinet, stored))
}

async fn credit(
    tx: &mut Tx,
    keys: &Keys,
    ev: &Event,
    s: &CheckoutSession,
    now: &str,
) -> Result<WebhookOutcome, StoreError> {
    let existing = tx.payment_by_session(&s.id).await?;
    if let Some(p) = existing
        .as_ref()
        .filter(|p| p.status != PaymentStatus::Pending)
    {
        return Ok(WebhookOutcome::for_payment(Outcome::Duplicate, &p.id));
    }
    let (booking, cabinet, stored_session) = booking_for(tx, s).await?;
    let payment_id = existing
        .as_ref()
        .map(|p| p.id.clone())
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let status = match booking.review_reason {
        Some(_) => PaymentStatus::Review,
        None => PaymentStatus::Credited,
    };
    let row = new_payment(
        &payment_id,
        ev,
        s,
        booking.machine_id.as_deref(),
        booking.credits,
        status,
        now,
    )
    .with_review(booking.review_reason.as_deref());
    let stored = match existing {
        Some(_) => tx.settle_payment(&row).await?,
        None => tx.insert_payment(&row).await?,
    };
    if !stored {
        // Another writer (a second replica) settled this session first.
        return Ok(WebhookOutcome::of(Outcome::Duplicate));
    }
    if stored_session {
        let checkout = match status {
            PaymentStatus::Credited => CheckoutStatus::Paid,
            _ => CheckoutStatus::Review,
        };
        tx.set_checkout_status(&s.id, checkout).await?;
    }
    let Some(cabinet) = cabinet else {
        let reason = booking.review_reason.clone().unwrap_or_default();
        tracing::warn!(payment_id = %payment_id, machine_id = ?booking.machine_id, reason = %reason,
            amount = row.amount_minor, "payment needs review; no credits sent");
        return Ok(WebhookOutcome::for_payment(
            Outcome::Review(reason),
            &payment_id,
        ));
    };
    let pulse = queue_pulse(
        tx,
        keys,
        &cabinet,
        booking.credits,
        Credit::Payment(&payment_id),
        new_pulse_id(),
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

/// The payment row for a session, before any review reason.
fn new_payment<'a>(
    id: &'a str,
    ev: &Event,
    s: &'a CheckoutSession,
    machine_id: Option<&'a str>,
    credits: i64,
    status: PaymentStatus,
    at: &'a str,
) -> NewPayment<'a> {
    NewPayment {
        id,
        checkout_session_id: &s.id,
        payment_intent_id: s.payment_intent.as_deref(),
        machine_id,
        amount_minor: s.amount_total.unwrap_or(0),
        discount_minor: s.amount_discount,
        currency: s.currency.as_deref().unwrap_or(""),
        credits,
        status,
        review_reason: None,
        livemode: ev.livemode,
        email: s.email.as_deref(),
        at,
    }
}

/// A completed session whose money has not arrived yet (bank debits and the like).
async fn record_pending(
    tx: &mut Tx,
    ev: &Event,
    s: &CheckoutSession,
    now: &str,
) -> Result<WebhookOutcome, StoreError> {
    if let Some(p) = tx.payment_by_session(&s.id).await? {
        return Ok(WebhookOutcome::for_payment(Outcome::Duplicate, &p.id));
    }
    let machine_id = claimed_machine(s)
        .filter(|id| MachineId::parse(id).is_ok())
        .map(String::as_str);
    let payment_id = uuid::Uuid::now_v7().to_string();
    let row = new_payment(
        &payment_id,
        ev,
        s,
        machine_id,
        0,
        PaymentStatus::Pending,
        now,
    );
    if !tx.insert_payment(&row).await? {
        return Ok(WebhookOutcome::of(Outcome::Duplicate));
    }
    tracing::info!(payment_id = %payment_id, machine_id = ?machine_id, "checkout completed, payment pending");
    Ok(WebhookOutcome::for_payment(Outcome::Waiting, &payment_id))
}

async fn close_pending(
    tx: &mut Tx,
    s: &CheckoutSession,
    to: PaymentStatus,
    now: &str,
) -> Result<WebhookOutcome, StoreError> {
    let (checkout, outcome) = match to {
        PaymentStatus::Expired => (CheckoutStatus::Expired, Outcome::Expired),
        _ => (CheckoutStatus::Failed, Outcome::Failed),
    };
    tx.set_checkout_status(&s.id, checkout).await?;
    let payment: Option<PaymentState> = tx.payment_by_session(&s.id).await?;
    if let Some(p) = &payment {
        if tx.close_pending_payment(&s.id, p, to, now).await? {
            tracing::info!(payment_id = %p.id, machine_id = ?p.machine_id, status = %to, "pending payment closed");
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
async fn refund(tx: &mut Tx, c: &Charge, now: &str) -> Result<WebhookOutcome, StoreError> {
    let payment = match &c.payment_intent {
        Some(pi) => tx.payment_by_intent(pi).await?,
        None => None,
    };
    let Some(p) = payment else {
        if let Some(t) = match &c.payment_intent {
            Some(pi) => tx.topup_by_intent(pi).await?,
            None => None,
        } {
            return crate::wallets::topup_refunded(tx, &t, &c.id, c.amount_refunded, now).await;
        }
        tracing::warn!(charge = %c.id, "refund for a payment coinpulse does not know (yet)");
        if let Some(pi) = &c.payment_intent {
            // Its top-up's completion may still be on its way: applied then.
            tx.remember_early_refund(pi, &c.id, c.amount_refunded, now)
                .await?;
        }
        return Ok(WebhookOutcome::of(Outcome::Unmatched));
    };
    let status = if c.refunded || c.amount_refunded >= p.amount_minor {
        PaymentStatus::Refunded
    } else {
        PaymentStatus::PartiallyRefunded
    };
    tx.record_refund(&p.id, c.amount_refunded, status, now)
        .await?;
    tracing::info!(payment_id = %p.id, machine_id = ?p.machine_id, refunded = c.amount_refunded, status = %status, "payment refunded");
    Ok(WebhookOutcome::for_payment(Outcome::Refunded, &p.id))
}

/// Credits an owner grants by hand; they travel through the same outbox. `None` when the
/// cabinet does not exist.
pub async fn grant(
    tx: &mut Tx,
    keys: &Keys,
    machine_id: &str,
    credits: i64,
    reason: &str,
) -> Result<Option<OutboxPulse>, StoreError> {
    let Some(cabinet) = tx.cabinet(machine_id).await? else {
        return Ok(None);
    };
    let pulse = queue_pulse(
        tx,
        keys,
        &cabinet,
        credits,
        Credit::Operator(reason),
        new_pulse_id(),
        &now_db(),
    );
    tracing::info!(machine_id, credits, pulse_id = %pulse.id, reason, "operator credits granted");
    Ok(Some(pulse))
}

/// What assigning a payment in review came to.
#[derive(Debug, Clone)]
pub enum Assigned {
    /// Credited to the cabinet; its pulse is queued.
    Sent(OutboxPulse),
    /// It was not in review (any more): resolved before, e.g. by a second click, or
    /// refunded in full meanwhile.
    NotInReview,
    NoSuchCabinet,
}

/// Resolves a payment in review by crediting it to a cabinet: one pulse, exactly once
/// (the status moves from `review` in the same transaction, and a payment's pulse is
/// unique).
pub async fn assign(
    tx: &mut Tx,
    keys: &Keys,
    payment_id: &str,
    machine_id: &str,
    credits: i64,
    note: &str,
) -> Result<Assigned, StoreError> {
    let Some(cabinet) = tx
        .cabinet(machine_id)
        .await?
        .filter(|c| c.archived_at.is_none())
    else {
        return Ok(Assigned::NoSuchCabinet);
    };
    let now = now_db();
    if !tx
        .take_from_review(payment_id, machine_id, credits, note, &now)
        .await?
    {
        return Ok(Assigned::NotInReview);
    }
    let pulse = queue_pulse(
        tx,
        keys,
        &cabinet,
        credits,
        Credit::Payment(payment_id),
        new_pulse_id(),
        &now,
    );
    tracing::info!(payment_id, machine_id, credits, pulse_id = %pulse.id, "payment in review assigned to a cabinet");
    Ok(Assigned::Sent(pulse))
}

/// Why a pulse is sent: a payment bought it, an owner granted it, or a player paid it
/// from their wallet.
pub(crate) enum Credit<'a> {
    Payment(&'a str),
    Operator(&'a str),
    Wallet(&'a str),
}

/// A new pulse's id (time-ordered).
pub(crate) fn new_pulse_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Signs pulse `id` and queues its outbox row for the commit.
pub(crate) fn queue_pulse(
    tx: &mut Tx,
    keys: &Keys,
    cabinet: &Cabinet,
    credits: i64,
    why: Credit<'_>,
    id: String,
    now: &str,
) -> OutboxPulse {
    let (source, payment_id, reason) = match why {
        Credit::Payment(id) => (PulseSource::Stripe, Some(id.to_owned()), None),
        Credit::Operator(r) => (PulseSource::Operator, None, Some(r.to_owned())),
        Credit::Wallet(w) => (PulseSource::Wallet, None, Some(format!("wallet {w}"))),
    };
    let msg = PulseMessage {
        id,
        machine_id: cabinet.machine_id.clone(),
        credits,
        timestamp: wire_time(chrono::Utc::now()),
        source,
    };
    let secret = keys.cabinet_secret(&cabinet.machine_id, &cabinet.secret_salt);
    let payload = sign_pulse(&msg, &secret, keys.pulse_signing_key());
    tx.queue_pulse(NewPulse {
        id: msg.id.clone(),
        machine_id: cabinet.machine_id.clone(),
        credits,
        source,
        payment_id,
        reason,
        payload: payload.clone(),
        created_at: now.to_owned(),
        published_at: None,
    });
    OutboxPulse {
        id: msg.id,
        machine_id: msg.machine_id,
        payload,
        created_at: now.to_owned(),
        published_at: None,
        acks: cabinet.acks_pulses,
        routed: false,
    }
}
