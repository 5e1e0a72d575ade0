//! Payments: the searchable, filterable table with its CSV export, a payment's timeline
//! and refund, and the review queue (assign to a cabinet, refund, or dismiss).

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpResponse};
use askama::Template;
use futures::StreamExt;
use serde::Deserialize;

use super::view::{self, PaymentLine};
use super::{see_other, Admin, Csrf, Nav};
use crate::domain::{credits_for_amount, parse_amount, Currency, Money, PaymentStatus};
use crate::error::AppError;
use crate::payments::Assigned;
use crate::store::{Payment, PaymentQuery, StatusView};
use crate::web::{html, AppState};

const PAGE: i64 = 50;
/// Deeper than anyone pages by hand; the search and the CSV export go further.
pub const MAX_PAGE: i64 = 10_000;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Filter {
    cabinet: String,
    from: String,
    to: String,
    status: String,
    q: String,
    page: i64,
}

impl Filter {
    fn query(&self) -> Result<PaymentQuery, AppError> {
        let date = |s: &str, name: &str| -> Result<Option<String>, AppError> {
            let s = s.trim();
            if s.is_empty() {
                return Ok(None);
            }
            chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(|d| Some(d.format("%Y-%m-%d").to_string()))
                .map_err(|_| AppError::BadRequest(format!("{name}: use a date like 2026-12-31")))
        };
        let status = match self.status.trim() {
            "" | "all" => None,
            s => Some(
                StatusView::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| AppError::BadRequest(format!("unknown status {s:?}")))?,
            ),
        };
        // "to" is inclusive for people: up to the end of that day.
        let until = date(&self.to, "to")?.map(|d| {
            chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d")
                .map(|d| {
                    (d + chrono::Duration::days(1))
                        .format("%Y-%m-%d")
                        .to_string()
                })
                .unwrap_or(d)
        });
        Ok(PaymentQuery {
            machine_id: Some(self.cabinet.trim().to_owned()).filter(|s| !s.is_empty()),
            from: date(&self.from, "from")?,
            until,
            status,
            search: Some(self.q.trim().to_owned()).filter(|s| !s.is_empty()),
        })
    }

    /// This filter as a query string, with `page` replaced.
    fn href(&self, page: i64) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("cabinet", &self.cabinet),
            ("from", &self.from),
            ("to", &self.to),
            ("status", &self.status),
            ("q", &self.q),
        ] {
            if !v.trim().is_empty() {
                s.append_pair(k, v.trim());
            }
        }
        if page > 0 {
            s.append_pair("page", &page.to_string());
        }
        s.finish()
    }
}

#[derive(Template)]
#[template(path = "admin/payments.html")]
struct ListPage {
    nav: Nav,
    rows: Vec<PaymentLine>,
    cabinets: Vec<(String, String)>,
    statuses: Vec<&'static str>,
    f: Filter,
    prev: Option<String>,
    next: Option<String>,
    csv: String,
}

pub async fn list(
    state: web::Data<AppState>,
    admin: Admin,
    f: web::Query<Filter>,
) -> Result<HttpResponse, AppError> {
    let f = f.into_inner();
    let q = f.query()?;
    let page = f.page.clamp(0, MAX_PAGE);
    let mut rows = state.store.find_payments(&q, PAGE + 1, page * PAGE).await?;
    let more = rows.len() as i64 > PAGE;
    rows.truncate(PAGE as usize);
    let cabinets = state
        .store
        .cabinets()
        .await?
        .into_iter()
        .map(|c| (c.machine_id, c.name))
        .collect();
    let page = ListPage {
        nav: admin.nav("payments"),
        rows: view::lines(&rows),
        cabinets,
        statuses: StatusView::ALL.iter().map(|s| s.as_str()).collect(),
        prev: (page > 0).then(|| f.href(page - 1)),
        next: more.then(|| f.href(page + 1)),
        csv: f.href(0),
        f,
    };
    Ok(html::page(StatusCode::OK, &page))
}

/// One CSV field, quoted when needed; a leading =, +, - or @ is defused so a spreadsheet
/// never runs it as a formula.
fn csv_field(s: &str) -> String {
    let s = match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}"),
        _ => s.to_owned(),
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

const CSV_HEADER: &str = "id,created_at,machine_id,status,amount,currency,amount_minor,discount_minor,refunded_minor,credits,email,checkout_session_id,payment_intent_id,pulse_id,pulse_handed_at,pulse_acked_at,review_reason\r\n";

fn csv_row(p: &Payment) -> String {
    let amount = major(p.amount_minor, &p.currency);
    let cols = [
        p.id.clone(),
        p.created_at.clone(),
        p.machine_id.clone().unwrap_or_default(),
        view::status_label(p).replace(' ', "_"),
        amount,
        p.currency.to_ascii_uppercase(),
        p.amount_minor.to_string(),
        p.discount_minor.to_string(),
        p.refunded_minor.to_string(),
        p.credits.to_string(),
        p.email.clone().unwrap_or_default(),
        p.checkout_session_id.clone().unwrap_or_default(),
        p.payment_intent_id.clone().unwrap_or_default(),
        p.pulse_id.clone().unwrap_or_default(),
        p.pulse_published_at.clone().unwrap_or_default(),
        p.pulse_acked_at.clone().unwrap_or_default(),
        p.review_reason.clone().unwrap_or_default(),
    ];
    let mut line = cols
        .iter()
        .map(|c| csv_field(c))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

/// `GET /admin/payments.csv?…`: the same filter as the table, streamed page by page.
pub async fn csv(
    state: web::Data<AppState>,
    admin: Admin,
    f: web::Query<Filter>,
) -> Result<HttpResponse, AppError> {
    let q = f.query()?;
    admin.audit("payments.export", None, &f.href(0)).await;
    let header_line = futures::stream::once(async {
        Ok::<_, actix_web::Error>(web::Bytes::from_static(CSV_HEADER.as_bytes()))
    });
    let rows = state.store.stream_payments(q).map(|page| match page {
        Ok(rows) => Ok(web::Bytes::from(
            rows.iter().map(csv_row).collect::<String>(),
        )),
        Err(e) => {
            tracing::error!(error = %e, "CSV export failed midway");
            Err(actix_web::error::ErrorInternalServerError("export failed"))
        }
    });
    let name = format!(
        "coinpulse-payments-{}.csv",
        chrono::Utc::now().format("%Y%m%d-%H%M")
    );
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(header_line.chain(rows)))
}

pub struct Step {
    pub done: bool,
    pub title: String,
    pub at: String,
}

#[derive(Template)]
#[template(path = "admin/payment.html")]
struct ShowPage {
    nav: Nav,
    p: Payment,
    line: PaymentLine,
    steps: Vec<Step>,
    events: Vec<crate::store::EventRow>,
    discount: String,
    refunded: String,
    refundable: String,
    can_refund: bool,
    cabinets: Vec<(String, String)>,
    suggested_credits: i64,
    /// The cabinet the payment names exists (else it is shown without a link).
    cabinet_known: bool,
    /// For the refund form.
    nonce: String,
}

async fn payment(state: &AppState, id: &str) -> Result<Payment, AppError> {
    state
        .store
        .payment(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no payment {id:?}")))
}

/// An amount in main units, as the refund form takes it.
fn major(minor: i64, currency: &str) -> String {
    Currency::parse(currency).map_or_else(|_| minor.to_string(), |c| c.plain(minor))
}

pub async fn show(
    state: web::Data<AppState>,
    admin: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let p = payment(&state, &path).await?;
    let mut events = state.store.payment_events(&p.id).await?;
    let game_over = match (&p.machine_id, &p.pulse_published_at) {
        (Some(m), Some(at)) => state.store.play_after(m, at).await?,
        _ => None,
    };
    let first_event = events.first().map(|e| e.received_at.clone());
    for e in &mut events {
        e.received_at = view::when(&e.received_at);
    }
    let at = |t: &Option<String>| t.as_deref().map(view::when).unwrap_or_default();
    let steps = vec![
        Step {
            done: true,
            title: "Webhook received from Stripe".into(),
            at: view::when(first_event.as_deref().unwrap_or(&p.created_at)),
        },
        Step {
            done: p.pulse_published_at.is_some(),
            title: "Pulse handed to the broker".into(),
            at: at(&p.pulse_published_at),
        },
        Step {
            done: p.pulse_acked_at.is_some(),
            title: "Cabinet acked".into(),
            at: at(&p.pulse_acked_at),
        },
        Step {
            done: game_over.is_some(),
            title: "Game over".into(),
            at: at(&game_over),
        },
    ];
    let live: Vec<_> = state
        .store
        .cabinets()
        .await?
        .into_iter()
        .filter(|c| c.archived_at.is_none())
        .collect();
    let named = p
        .machine_id
        .as_deref()
        .and_then(|m| live.iter().find(|c| c.machine_id == m));
    // What the payment buys at the cabinet it names, else at the first one offered.
    let suggested_credits = match named.or(live.first()) {
        Some(c) if c.currency == p.currency => credits_for_amount(p.amount_minor, c.price_minor),
        _ => p.credits,
    }
    .max(1);
    let cabinet_known = named.is_some();
    let cabinets: Vec<(String, String)> = live
        .into_iter()
        .map(|c| {
            let label = format!(
                "{} ({}) — {} a play",
                c.name,
                c.machine_id,
                Money::format(c.price_minor, &c.currency)
            );
            (c.machine_id, label)
        })
        .collect();
    let left = p.amount_minor - p.refunded_minor;
    let page = ShowPage {
        nav: admin.nav(if p.status == PaymentStatus::Review {
            "review"
        } else {
            "payments"
        }),
        line: PaymentLine::from(&p),
        discount: Money::format(p.discount_minor, &p.currency),
        refunded: Money::format(p.refunded_minor, &p.currency),
        refundable: major(left, &p.currency),
        can_refund: left > 0
            && p.payment_intent_id.is_some()
            && !matches!(
                p.status,
                PaymentStatus::Pending | PaymentStatus::Failed | PaymentStatus::Expired
            ),
        steps,
        events,
        cabinets,
        suggested_credits,
        cabinet_known,
        nonce: crate::domain::random_token(16),
        p,
    };
    Ok(html::page(StatusCode::OK, &page))
}

#[derive(Deserialize)]
pub struct RefundForm {
    #[serde(default)]
    amount: String,
    #[serde(default)]
    confirm: String,
    /// The form's one-time nonce: Stripe's idempotency key, so a double click refunds once.
    #[serde(default)]
    nonce: String,
}

/// Refunds through Stripe; the `charge.refunded` webhook then records it.
pub async fn refund(
    state: web::Data<AppState>,
    admin: Admin,
    path: web::Path<String>,
    Csrf(f): Csrf<RefundForm>,
) -> Result<HttpResponse, AppError> {
    admin.require_owner("refund payments")?;
    let p = payment(&state, &path).await?;
    let back = format!("/admin/payments/{}", p.id);
    if f.confirm != "yes" {
        admin.flash("Not refunded: tick the box to confirm the refund.");
        return Ok(see_other(&back));
    }
    let Some(intent) = p.payment_intent_id.as_deref() else {
        admin.flash("Not refunded: Stripe did not report a PaymentIntent for this payment.");
        return Ok(see_other(&back));
    };
    let left = p.amount_minor - p.refunded_minor;
    let currency =
        Currency::parse(&p.currency).map_err(|e| AppError::Unprocessable(e.to_string()))?;
    let amount = match f.amount.trim() {
        "" => left,
        t => match parse_amount(t, &currency) {
            Ok(a) if a > 0 && a <= left => a,
            Ok(_) => {
                admin.flash(format!(
                    "Not refunded: the amount must be more than zero and at most {}.",
                    Money::format(left, &p.currency)
                ));
                return Ok(see_other(&back));
            }
            Err(e) => {
                admin.flash(format!("Not refunded: {e}."));
                return Ok(see_other(&back));
            }
        },
    };
    // One form, one refund: a double click reuses the key and Stripe answers the first
    // refund again. (Without a nonce, the amounts stand in for it.)
    let key = match f.nonce.trim() {
        "" => format!("refund-{}-{}-{}", p.id, p.refunded_minor, amount),
        nonce => format!("refund-{}-{nonce}", p.id),
    };
    let full = amount == left;
    match state
        .stripe
        .refund(intent, (!full).then_some(amount), &key)
        .await
    {
        Ok(refund_id) => {
            admin
                .audit(
                    "payment.refund",
                    Some(&p.id),
                    &format!(
                        "{} · Stripe refund {refund_id}",
                        Money::format(amount, &p.currency)
                    ),
                )
                .await;
            admin.flash(format!(
                "Refund of {} sent to Stripe. The payment shows as refunded when Stripe confirms it.",
                Money::format(amount, &p.currency)
            ));
        }
        Err(e) => {
            tracing::warn!(payment_id = %p.id, error = %e, "refund failed");
            admin.flash(format!("Stripe did not refund: {e}"));
        }
    }
    Ok(see_other(&back))
}

#[derive(Deserialize)]
pub struct AssignForm {
    #[serde(default)]
    machine_id: String,
    #[serde(default)]
    credits: String,
    #[serde(default)]
    note: String,
}

/// Credits a payment in review to a cabinet (staff may), exactly once.
pub async fn assign(
    state: web::Data<AppState>,
    admin: Admin,
    path: web::Path<String>,
    Csrf(f): Csrf<AssignForm>,
) -> Result<HttpResponse, AppError> {
    let p = payment(&state, &path).await?;
    let back = format!("/admin/payments/{}", p.id);
    let credits = match f.credits.trim().parse::<i64>() {
        Ok(n) if (1..=100).contains(&n) => n,
        _ => {
            admin.flash("Not assigned: credits must be a whole number from 1 to 100.");
            return Ok(see_other(&back));
        }
    };
    let note = f.note.trim().chars().take(500).collect::<String>();
    match state
        .writer
        .assign(&p.id, f.machine_id.trim(), credits, &note)
        .await?
    {
        Assigned::Sent(pulse) => {
            admin
                .audit(
                    "review.assign",
                    Some(&p.id),
                    &format!(
                        "to {} · {credits} credit(s) · pulse {}{}",
                        pulse.machine_id,
                        pulse.id,
                        if note.is_empty() {
                            String::new()
                        } else {
                            format!(" · {note}")
                        }
                    ),
                )
                .await;
            admin.flash(format!(
                "Assigned to {}: {credits} credit{} sent.",
                pulse.machine_id,
                if credits == 1 { "" } else { "s" }
            ));
            Ok(see_other("/admin/review"))
        }
        Assigned::NotInReview => {
            admin.flash(
                "This payment is no longer in review (it was resolved already); nothing was sent.",
            );
            Ok(see_other(&back))
        }
        Assigned::NoSuchCabinet => {
            admin.flash("Not assigned: pick a cabinet from the list.");
            Ok(see_other(&back))
        }
    }
}

#[derive(Deserialize)]
pub struct DismissForm {
    #[serde(default)]
    note: String,
}

pub async fn dismiss(
    state: web::Data<AppState>,
    admin: Admin,
    path: web::Path<String>,
    Csrf(f): Csrf<DismissForm>,
) -> Result<HttpResponse, AppError> {
    admin.require_owner("dismiss payments in review")?;
    let p = payment(&state, &path).await?;
    let note = f.note.trim();
    if note.is_empty() {
        admin.flash("Not dismissed: say why in the note.");
        return Ok(see_other(&format!("/admin/payments/{}", p.id)));
    }
    if state.store.dismiss_review(&p.id, note).await? {
        admin.audit("review.dismiss", Some(&p.id), note).await;
        admin.flash("Dismissed. No credits were sent.");
    } else {
        admin.flash("This payment is no longer in review; nothing changed.");
    }
    Ok(see_other("/admin/review"))
}

#[derive(Template)]
#[template(path = "admin/review.html")]
struct ReviewPage {
    nav: Nav,
    rows: Vec<PaymentLine>,
}

pub async fn review(state: web::Data<AppState>, admin: Admin) -> Result<HttpResponse, AppError> {
    let q = PaymentQuery {
        status: Some(StatusView::Review),
        ..Default::default()
    };
    let rows = state.store.find_payments(&q, 200, 0).await?;
    let page = ReviewPage {
        nav: admin.nav("review"),
        rows: view::lines(&rows),
    };
    Ok(html::page(StatusCode::OK, &page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(csv_field("-1"), "'-1");
    }

    #[test]
    fn filter_dates_are_checked_and_to_is_inclusive() {
        let f = Filter {
            from: "2026-12-01".into(),
            to: "2026-12-01".into(),
            status: "delivered".into(),
            ..Default::default()
        };
        let q = f.query().unwrap();
        assert_eq!(q.from.as_deref(), Some("2026-12-01"));
        assert_eq!(q.until.as_deref(), Some("2026-12-02"));
        assert_eq!(q.status, Some(StatusView::Delivered));
        let bad = Filter {
            from: "yesterday".into(),
            ..Default::default()
        };
        assert!(bad.query().is_err());
        assert!(f.href(2).contains("page=2"));
    }
}
