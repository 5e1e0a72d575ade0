//! Wallet money: a top-up's webhook adds to the balance exactly once, and a "Play now" tap
//! takes from it and queues the signed pulse in the same transaction. Both run on the
//! single writer's [`Tx`], like every other change of money.

use crate::domain::Keys;
use crate::domain::{now_db, LedgerKind, Outcome};
use crate::mail::Mailer;
use crate::payments::{new_pulse_id, queue_pulse, Credit, WebhookOutcome};
use crate::store::{NewLedgerRow, OutboxPulse, Store, StoreError, Topup, Tx};
use crate::stripe::webhook::{CheckoutSession, Event, EventBody};
use crate::writer::Writer;

/// The metadata key and value coinpulse puts on a top-up's Checkout Session.
pub const TOPUP_MARK: (&str, &str) = ("kind", "wallet_topup");

pub fn marked_as_topup(s: &CheckoutSession) -> bool {
    s.metadata.get(TOPUP_MARK.0).map(String::as_str) == Some(TOPUP_MARK.1)
}

/// Applies a checkout event for a session coinpulse created as a top-up. What the wallet
/// gets comes from the stored top-up, never from the session's metadata; the ledger's
/// unique (kind, reference) makes a repeated or parallel event add nothing.
pub async fn topup_event(
    tx: &mut Tx,
    ev: &Event,
    s: &CheckoutSession,
    t: &Topup,
    now: &str,
) -> Result<WebhookOutcome, StoreError> {
    let paid = match &ev.body {
        EventBody::CheckoutCompleted(_) => {
            matches!(s.payment_status.as_str(), "paid" | "no_payment_required")
        }
        EventBody::CheckoutAsyncSucceeded(_) => true,
        EventBody::CheckoutAsyncFailed(_) | EventBody::CheckoutExpired(_) => {
            let (status, outcome) = match ev.body {
                EventBody::CheckoutExpired(_) => ("expired", Outcome::Expired),
                _ => ("failed", Outcome::Failed),
            };
            if t.status == "open" {
                tx.set_topup_status(&t.checkout_session_id, status, None)
                    .await?;
            }
            return Ok(WebhookOutcome::outcome(outcome));
        }
        _ => return Ok(WebhookOutcome::outcome(Outcome::Ignored)),
    };
    if !paid {
        return Ok(WebhookOutcome::outcome(Outcome::Waiting));
    }
    let received = s.amount_total.unwrap_or(0);
    if received < t.pay_minor || s.currency.as_deref() != Some(t.currency.as_str()) {
        // Never credit more than was paid for; the owner sees it in the log and Stripe.
        tracing::warn!(session = %t.checkout_session_id, wallet = %t.wallet_id, expected = t.pay_minor,
            received, "top-up paid less than its package; not credited");
        tx.set_topup_status(
            &t.checkout_session_id,
            "review",
            s.payment_intent.as_deref(),
        )
        .await?;
        return Ok(WebhookOutcome::outcome(Outcome::Review(format!(
            "top-up paid {received}, expected {}",
            t.pay_minor
        ))));
    }
    let row = |kind, amount_minor, reason| NewLedgerRow {
        wallet_id: &t.wallet_id,
        kind,
        amount_minor,
        reason,
        reference: &t.checkout_session_id,
        machine_id: None,
        at: now,
    };
    if !tx
        .append_ledger(&row(LedgerKind::Topup, t.pay_minor, "top-up"))
        .await?
    {
        return Ok(WebhookOutcome::outcome(Outcome::Duplicate));
    }
    let bonus = t.credit_minor - t.pay_minor;
    if bonus > 0 {
        tx.append_ledger(&row(LedgerKind::Bonus, bonus, "top-up bonus"))
            .await?;
    }
    tx.set_topup_status(&t.checkout_session_id, "paid", s.payment_intent.as_deref())
        .await?;
    tracing::info!(wallet = %t.wallet_id, session = %t.checkout_session_id, paid = t.pay_minor,
        credited = t.credit_minor, "wallet topped up");
    // A refund Stripe reported before this completion is taken off now.
    if let Some(intent) = s.payment_intent.as_deref() {
        if let Some((charge, refunded)) = tx.early_refund(intent).await? {
            let paid = Topup {
                status: "paid".into(),
                payment_intent_id: Some(intent.to_owned()),
                ..t.clone()
            };
            topup_refunded(tx, &paid, &charge, refunded, now).await?;
        }
    }
    Ok(WebhookOutcome::outcome(Outcome::ToppedUp))
}

/// A `charge.refunded` for a top-up (made in Stripe's dashboard, or from coinpulse's):
/// takes the newly refunded amount off the balance. What the wallet already spent cannot
/// be taken back: that part is noted and the top-up goes to the owner's review.
pub async fn topup_refunded(
    tx: &mut Tx,
    t: &Topup,
    charge_id: &str,
    amount_refunded: i64,
    now: &str,
) -> Result<WebhookOutcome, StoreError> {
    let delta = amount_refunded - t.refunded_minor;
    if delta <= 0 {
        return Ok(WebhookOutcome::outcome(Outcome::Duplicate));
    }
    if t.status != "paid" {
        // Never added to the balance (short-paid, still open): nothing to take back.
        tx.set_topup_refunded(&t.checkout_session_id, amount_refunded, None)
            .await?;
        return Ok(WebhookOutcome::outcome(Outcome::Refunded));
    }
    let take = refund_take(t, delta);
    // The balance may move between reading it and the conditional debit (another
    // replica's spend): read again and retry rather than record a debit that did not happen.
    let mut balance = 0;
    let mut debit = 0;
    for _ in 0..5 {
        balance = tx.wallet_balance(&t.wallet_id).await?;
        debit = take.min(balance);
        if debit == 0
            || tx
                .append_ledger(&NewLedgerRow {
                    wallet_id: &t.wallet_id,
                    kind: LedgerKind::Refund,
                    amount_minor: -debit,
                    reason: "top-up refunded",
                    reference: &format!("{charge_id}:{amount_refunded}"),
                    machine_id: None,
                    at: now,
                })
                .await?
        {
            break;
        }
        debit = 0;
    }
    let delta = take;
    let note = (debit < delta).then(|| {
        format!(
            "refunded {delta} but the wallet held only {balance}: {} already spent",
            delta - debit
        )
    });
    if let Some(n) = &note {
        tracing::warn!(wallet = %t.wallet_id, session = %t.checkout_session_id, "{n}");
    }
    tx.set_topup_refunded(&t.checkout_session_id, amount_refunded, note.as_deref())
        .await?;
    tracing::info!(wallet = %t.wallet_id, session = %t.checkout_session_id, debited = debit,
        "wallet top-up refunded");
    Ok(WebhookOutcome::outcome(Outcome::Refunded))
}

/// What refunding `refunded` of top-up `t` takes off the balance: that, and the same share
/// of the top-up's bonus.
pub fn refund_take(t: &Topup, refunded: i64) -> i64 {
    refunded + refunded * (t.credit_minor - t.pay_minor) / t.pay_minor.max(1)
}

/// The owner refunds `amount` of top-up `session` from the dashboard: the balance is taken
/// first (so it cannot be spent while Stripe works), and the top-up counts it as refunded,
/// so the `charge.refunded` that follows finds nothing new. Returns the hold: the top-up's
/// new refunded total and the hold's own reference (which names the Stripe refund), or
/// None when the balance no longer holds it.
pub async fn hold_refund(
    tx: &mut Tx,
    session: &str,
    amount: i64,
    now: &str,
) -> Result<Option<RefundHold>, StoreError> {
    let Some(t) = tx.topup(session).await? else {
        return Ok(None);
    };
    if t.status != "paid" || amount <= 0 || amount > t.pay_minor - t.refunded_minor {
        return Ok(None);
    }
    let hold = RefundHold {
        target: t.refunded_minor + amount,
        amount,
        reference: format!("{session}:{}", uuid::Uuid::now_v7()),
    };
    let taken = tx
        .append_ledger(&NewLedgerRow {
            wallet_id: &t.wallet_id,
            kind: LedgerKind::Refund,
            amount_minor: -refund_take(&t, amount),
            reason: "top-up refunded by the owner",
            reference: &hold.reference,
            machine_id: None,
            at: now,
        })
        .await?;
    if !taken {
        return Ok(None);
    }
    tx.set_topup_refunded(session, hold.target, None).await?;
    Ok(Some(hold))
}

/// Balance taken off for a refund Stripe has not confirmed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundHold {
    /// The top-up's refunded total with this refund.
    pub target: i64,
    pub amount: i64,
    /// Unique per hold: the ledger row's reference and the Stripe refund's idempotency key.
    pub reference: String,
}

/// Gives back a hold whose Stripe refund failed: the balance returns and the top-up's
/// refunded total goes back, unless a webhook has moved it since.
pub async fn release_refund(
    tx: &mut Tx,
    session: &str,
    hold: &RefundHold,
    now: &str,
) -> Result<bool, StoreError> {
    let Some(t) = tx.topup(session).await? else {
        return Ok(false);
    };
    // A webhook that moved the total since has settled it: nothing to give back.
    let (target, amount) = (hold.target, hold.amount);
    if !tx.unrefund_topup(session, target, target - amount).await? {
        return Ok(false);
    }
    let back = tx
        .append_ledger(&NewLedgerRow {
            wallet_id: &t.wallet_id,
            kind: LedgerKind::Adjustment,
            amount_minor: refund_take(&t, amount),
            reason: "refund not made: Stripe refused it",
            reference: &format!("{}:released", hold.reference),
            machine_id: None,
            at: now,
        })
        .await?;
    Ok(back)
}

/// A "Play now" request: this wallet pays `price_minor` for `credits` on a cabinet.
#[derive(Debug, Clone)]
pub struct Spend {
    pub wallet_id: String,
    pub machine_id: String,
    pub credits: i64,
    pub price_minor: i64,
    /// The form's single-use token.
    pub token: String,
}

/// What a tap came to.
#[derive(Debug, Clone)]
pub enum Spent {
    Sent(OutboxPulse),
    /// The token was used before (a double tap): its pulse.
    Again(String),
    /// The balance does not cover it; nothing was taken.
    Insufficient,
    /// The cabinet is gone, disabled or archived.
    Unavailable,
}

/// Takes the price from the wallet and queues the pulse, in one transaction. The balance
/// cannot go below zero: the debit is conditional on it, so of two taps that together
/// exceed it, one fails.
pub async fn spend(tx: &mut Tx, keys: &Keys, s: &Spend) -> Result<Spent, StoreError> {
    if let Some(pulse) = tx.wallet_spend(&s.token).await? {
        return Ok(Spent::Again(pulse));
    }
    let Some(cabinet) = tx
        .cabinet(&s.machine_id)
        .await?
        .filter(|c| c.enabled && c.archived_at.is_none())
    else {
        return Ok(Spent::Unavailable);
    };
    let now = now_db();
    let pulse_id = new_pulse_id();
    let debited = tx
        .append_ledger(&NewLedgerRow {
            wallet_id: &s.wallet_id,
            kind: LedgerKind::Play,
            amount_minor: -s.price_minor,
            reason: &format!("{} credit(s) on {}", s.credits, cabinet.name),
            reference: &pulse_id,
            machine_id: Some(&cabinet.machine_id),
            at: &now,
        })
        .await?;
    if !debited {
        return Ok(Spent::Insufficient);
    }
    tx.record_wallet_spend(&s.token, &s.wallet_id, &pulse_id, &now)
        .await?;
    let pulse = queue_pulse(
        tx,
        keys,
        &cabinet,
        s.credits,
        Credit::Wallet(&s.wallet_id),
        pulse_id,
        &now,
    );
    tracing::info!(wallet = %s.wallet_id, machine_id = %cabinet.machine_id, credits = s.credits,
        price = s.price_minor, pulse_id = %pulse.id, "played from wallet");
    Ok(Spent::Sent(pulse))
}

/// Expires what is left on `wallet_id` if it has not been used for `months` as of `now`:
/// one ledger row taking the whole balance, with the last use as its reference, so a second
/// run (or a second process) expires nothing more. Returns the amount taken.
pub async fn expire(
    tx: &mut Tx,
    wallet_id: &str,
    months: u32,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<i64, StoreError> {
    let Some((balance, last_activity)) = tx.wallet_activity_of(wallet_id).await? else {
        return Ok(0);
    };
    let Some(last) = crate::domain::parse_db_time(&last_activity) else {
        return Ok(0);
    };
    if balance <= 0 || crate::domain::wallet::expires_at(last, months) > now {
        return Ok(0);
    }
    let applied = tx
        .append_ledger(&NewLedgerRow {
            wallet_id,
            kind: LedgerKind::Expiry,
            amount_minor: -balance,
            reason: &format!("unused for {months} months"),
            reference: &format!("{wallet_id}@{last_activity}"),
            machine_id: None,
            at: &crate::domain::db_time(now),
        })
        .await?;
    if applied {
        tracing::info!(wallet = %wallet_id, expired = balance, %last_activity, "unused balance expired");
    }
    Ok(if applied { balance } else { 0 })
}

/// Where the expiry setting lives (months; absent or 0: balances never expire).
pub const EXPIRY_SETTING: &str = "wallet_expiry_months";

/// The owner's expiry setting: None while balances never expire.
pub async fn expiry_months(store: &Store) -> Result<Option<u32>, StoreError> {
    Ok(store
        .meta(EXPIRY_SETTING)
        .await?
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|m| *m > 0))
}

/// How an expiry run takes balances: through the server's writer, in a transaction of its
/// own (the command line, with no server in this process), or not at all (a dry run).
pub enum ExpiryMode<'a> {
    Writer(&'a Writer),
    Direct(&'a Store),
    DryRun,
}

/// What one expiry run did (or, dry, would do).
#[derive(Debug, Default)]
pub struct ExpiryReport {
    /// (wallet, currency, amount) taken.
    pub expired: Vec<(String, String, i64)>,
    /// Wallets told by email that their balance expires soon.
    pub reminded: Vec<String>,
}

/// One pass: expires every balance unused for `months` as of `now` and emails a reminder,
/// once per period of inactivity, to wallets with an email whose balance expires within
/// [`EXPIRY_REMINDER_DAYS`](crate::domain::wallet::EXPIRY_REMINDER_DAYS).
pub async fn run_expiry(
    store: &Store,
    mode: ExpiryMode<'_>,
    mailer: &Mailer,
    public_url: &str,
    months: u32,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<ExpiryReport> {
    use crate::domain::wallet::{expires_at, EXPIRY_REMINDER_DAYS};
    let mut report = ExpiryReport::default();
    for w in store.wallet_activity().await? {
        let Some(last) = crate::domain::parse_db_time(&w.last_activity) else {
            continue;
        };
        let ends = expires_at(last, months);
        if ends <= now {
            let taken = match mode {
                ExpiryMode::Writer(writer) => writer.expire(&w.id, months, now).await?,
                ExpiryMode::Direct(store) => {
                    let mut tx = store.begin().await?;
                    let taken = expire(&mut tx, &w.id, months, now).await?;
                    tx.commit().await?;
                    store.sync().await?;
                    taken
                }
                ExpiryMode::DryRun => w.balance_minor,
            };
            if taken > 0 {
                report.expired.push((w.id, w.currency, taken));
            }
            continue;
        }
        let reminded = w.expiry_reminded_at.as_deref().unwrap_or("") > w.last_activity.as_str();
        let (Some(email), false) = (&w.email, reminded) else {
            continue;
        };
        if ends - now > chrono::Duration::days(EXPIRY_REMINDER_DAYS) || !mailer.is_configured() {
            continue;
        }
        if matches!(mode, ExpiryMode::DryRun) {
            report.reminded.push(w.id);
            continue;
        }
        let body = format!(
            "Your arcade balance of {} has not been used for a while and expires on {}.\n\n\
             Play or top up before then to keep it:\n{public_url}/w\n",
            crate::domain::Money::format(w.balance_minor, &w.currency),
            ends.format("%-d %B %Y"),
        );
        match mailer
            .send(email, "Your arcade balance expires soon", body)
            .await
        {
            Ok(()) => {
                store
                    .set_expiry_reminded(&w.id, &crate::domain::db_time(now))
                    .await?;
                report.reminded.push(w.id);
            }
            // Tried again on the next pass.
            Err(e) => tracing::warn!(wallet = %w.id, error = %e, "expiry reminder not sent"),
        }
    }
    Ok(report)
}

/// The server's hourly expiry pass, while the owner has expiry on. Never returns.
pub async fn expiry_loop(store: Store, writer: Writer, mailer: Mailer, public_url: String) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        // With several replicas, one pass an hour among them.
        match store
            .lease("wallet expiry", chrono::Duration::minutes(55), None)
            .await
        {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "could not take the expiry lease");
                continue;
            }
        }
        let months = match expiry_months(&store).await {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the expiry setting");
                continue;
            }
        };
        let run = run_expiry(
            &store,
            ExpiryMode::Writer(&writer),
            &mailer,
            &public_url,
            months,
            chrono::Utc::now(),
        )
        .await;
        match run {
            Ok(r) if !r.expired.is_empty() || !r.reminded.is_empty() => tracing::info!(
                expired = r.expired.len(),
                reminded = r.reminded.len(),
                "wallet expiry pass"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "wallet expiry pass failed; retrying in an hour"),
        }
    }
}
