//! What a player sees after scanning a sticker: the pay page, the hand-off to Stripe
//! Checkout, and the live "credits sent" page. Server-rendered, works without JavaScript.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::AppState;
use crate::domain::{now_db, offered_bundles, random_token, Bundle, Currency, MachineId, Money};
use crate::store::{Cabinet, StoredSession};
use crate::stripe::api::NewCheckout;

const CSRF_COOKIE: &str = "cp_pay";

fn html(status: actix_web::http::StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("Referrer-Policy", "same-origin"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(body)
}

fn render(t: &impl Template) -> String {
    t.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "template failed");
        "Something went wrong. Please try again.".into()
    })
}

pub struct BundleView {
    pub index: usize,
    pub title: String,
    pub price: String,
    pub per_play: String,
}

#[derive(Template)]
#[template(path = "pay/page.html")]
struct PayPage {
    machine_id: String,
    name: String,
    game: String,
    location: String,
    bundles: Vec<BundleView>,
    csrf: String,
    nonce: String,
}

#[derive(Template)]
#[template(path = "pay/message.html")]
struct MessagePage {
    title: String,
    heading: String,
    body: String,
    retry_url: Option<String>,
}

fn message(
    status: actix_web::http::StatusCode,
    heading: &str,
    body: &str,
    retry_url: Option<String>,
) -> HttpResponse {
    let page = MessagePage {
        title: heading.to_owned(),
        heading: heading.to_owned(),
        body: body.to_owned(),
        retry_url,
    };
    html(status, render(&page))
}

fn money(minor: i64, currency: &str) -> String {
    match Currency::parse(currency) {
        Ok(c) => Money { minor, currency: c }.to_string(),
        Err(_) => format!("{minor} {currency}"),
    }
}

/// Why a cabinet cannot take a payment now, in words for a player.
fn unavailable(c: &Cabinet, offline_after_secs: u64) -> Option<&'static str> {
    if !c.enabled {
        return Some(
            "This machine is not taking payments right now. Please ask a member of staff.",
        );
    }
    if c.online {
        return None;
    }
    // A cabinet that has never reported its status (a seed cabinet) cannot be judged.
    let last = c.last_seen_at.as_deref()?;
    let last = chrono::DateTime::parse_from_rfc3339(last).ok()?;
    let away = chrono::Utc::now().signed_duration_since(last);
    (away.num_seconds() > offline_after_secs as i64)
        .then_some("This machine is offline, so it could not start your game. Please don't pay for it now; try another machine or ask a member of staff.")
}

struct Loaded {
    cabinet: Cabinet,
    bundles: Vec<Bundle>,
}

async fn load(state: &AppState, raw: &str) -> Result<Loaded, HttpResponse> {
    let not_found = || {
        message(
            actix_web::http::StatusCode::NOT_FOUND,
            "Machine not found",
            "This code doesn't belong to a machine here. Please check the sticker or ask a member of staff.",
            None,
        )
    };
    let Ok(id) = MachineId::parse(raw) else {
        return Err(not_found());
    };
    let cabinet = match state.store.cabinet(id.as_str()).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(not_found()),
        Err(e) => {
            tracing::error!(error = %e, "pay page: database error");
            return Err(message(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "Please try again",
                "We couldn't load this machine just now. Please try again in a moment.",
                Some(format!("/p/{raw}")),
            ));
        }
    };
    if let Some(why) = unavailable(&cabinet, state.settings.offline_after) {
        return Err(message(
            actix_web::http::StatusCode::OK,
            &format!("{} is unavailable", cabinet.name),
            why,
            None,
        ));
    }
    let stored = state
        .store
        .bundles(&cabinet.machine_id)
        .await
        .unwrap_or_default();
    let currency = Currency::parse(&cabinet.currency).map_err(|_| not_found())?;
    let bundles = offered_bundles(&stored, cabinet.price_minor, &currency);
    Ok(Loaded { cabinet, bundles })
}

/// The small line under a bundle: how many plays a label hides, and the price per play.
fn detail(b: &Bundle, currency: &str) -> String {
    let per_play =
        (b.credits > 1).then(|| format!("{} per play", money(b.price_minor / b.credits, currency)));
    let plays = (!b.label.is_empty()).then(|| {
        Bundle {
            label: String::new(),
            ..b.clone()
        }
        .title()
    });
    [plays, per_play]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" · ")
}

fn csrf_for(state: &AppState, cookie: &str) -> String {
    state.keys.mac("pay-csrf", cookie)
}

pub async fn page(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> HttpResponse {
    let Loaded { cabinet, bundles } = match load(&state, &path).await {
        Ok(l) => l,
        Err(res) => return res,
    };
    let cookie_value = req
        .cookie(CSRF_COOKIE)
        .map(|c| c.value().to_owned())
        .filter(|v| v.len() == 32)
        .unwrap_or_else(|| random_token(16));
    let views = bundles
        .iter()
        .enumerate()
        .map(|(index, b)| BundleView {
            index,
            title: b.title(),
            price: money(b.price_minor, &cabinet.currency),
            per_play: detail(b, &cabinet.currency),
        })
        .collect();
    let page = PayPage {
        machine_id: cabinet.machine_id.clone(),
        name: cabinet.name.clone(),
        game: cabinet.game.clone(),
        location: cabinet.location.clone(),
        bundles: views,
        csrf: csrf_for(&state, &cookie_value),
        nonce: random_token(12),
    };
    let mut res = html(actix_web::http::StatusCode::OK, render(&page));
    let cookie = Cookie::build(CSRF_COOKIE, cookie_value)
        .path("/p")
        .http_only(true)
        .secure(state.settings.public_url.starts_with("https://"))
        .same_site(SameSite::Strict)
        .max_age(actix_web::cookie::time::Duration::days(30))
        .finish();
    let _ = res.add_cookie(&cookie);
    res
}

#[derive(Deserialize)]
pub struct CheckoutForm {
    bundle: usize,
    csrf: String,
    nonce: String,
}

pub async fn checkout(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<CheckoutForm>,
) -> HttpResponse {
    let back = format!("/p/{}", path.as_str());
    let cookie_ok = req
        .cookie(CSRF_COOKIE)
        .map(|c| {
            bool::from(
                csrf_for(&state, c.value())
                    .as_bytes()
                    .ct_eq(form.csrf.as_bytes()),
            )
        })
        .unwrap_or(false);
    if !cookie_ok {
        tracing::warn!(machine_id = %path.as_str(), "checkout refused: missing or bad CSRF token");
        return message(
            actix_web::http::StatusCode::FORBIDDEN,
            "Please start again",
            "This page expired. Go back to the machine's page and choose again.",
            Some(back),
        );
    }
    let Loaded { cabinet, bundles } = match load(&state, &path).await {
        Ok(l) => l,
        Err(res) => return res,
    };
    let Some(bundle) = bundles.get(form.bundle) else {
        return message(
            actix_web::http::StatusCode::BAD_REQUEST,
            "Please choose again",
            "That option is no longer offered. Please choose again.",
            Some(back),
        );
    };
    let title = bundle.title();
    let product_name = if cabinet.game.is_empty() {
        format!("{title} — {}", cabinet.name)
    } else {
        format!("{title} — {} ({})", cabinet.game, cabinet.name)
    };
    let base = &state.settings.public_url;
    let request = NewCheckout {
        machine_id: cabinet.machine_id.clone(),
        credits: bundle.credits,
        amount_minor: bundle.price_minor,
        currency: cabinet.currency.clone(),
        product_name,
        bundle: title,
        success_url: format!(
            "{base}/p/{}/thanks?session_id={{CHECKOUT_SESSION_ID}}",
            cabinet.machine_id
        ),
        cancel_url: format!("{base}/p/{}", cabinet.machine_id),
        idempotency_key: state.keys.mac(
            "checkout",
            &format!(
                "{}|{}|{}|{}",
                form.nonce, cabinet.machine_id, bundle.credits, bundle.price_minor
            ),
        ),
    };
    let (session_id, url) = match state.stripe.create_checkout(&request).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(machine_id = %cabinet.machine_id, error = %e, "could not create a Stripe Checkout Session");
            return message(
                actix_web::http::StatusCode::BAD_GATEWAY,
                "Payment couldn't start",
                "We couldn't reach the payment service. You have not been charged. Please try again.",
                Some(back),
            );
        }
    };
    let stored = StoredSession {
        id: session_id.clone(),
        machine_id: cabinet.machine_id.clone(),
        credits: bundle.credits,
        amount_minor: bundle.price_minor,
        currency: cabinet.currency.clone(),
        bundle_label: request.bundle.clone(),
        url: url.clone(),
        status: "open".into(),
        created_at: now_db(),
    };
    if let Err(e) = state.store.insert_checkout_session(&stored).await {
        // Without the stored session the webhook could not be checked: don't send the
        // player to pay.
        tracing::error!(machine_id = %cabinet.machine_id, session = %session_id, error = %e, "could not store the checkout session");
        return message(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "Payment couldn't start",
            "Something went wrong on our side. You have not been charged. Please try again.",
            Some(back),
        );
    }
    tracing::info!(machine_id = %cabinet.machine_id, session = %session_id, credits = bundle.credits, amount = bundle.price_minor, "checkout started");
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, url))
        .finish()
}

#[derive(Deserialize)]
pub struct SessionQuery {
    session_id: String,
}

/// Where a paid checkout stands, in a player's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Waiting,
    Processing,
    Paid,
    Sent,
    Confirmed,
    Attention,
}

impl Stage {
    pub fn message(self) -> &'static str {
        match self {
            Self::Waiting => "Waiting for confirmation from Stripe…",
            Self::Processing => "Your bank is still processing the payment…",
            Self::Paid => "Payment received",
            Self::Sent => "Credits sent to the cabinet",
            Self::Confirmed => "Cabinet confirmed, enjoy!",
            Self::Attention => "Payment received. A member of staff needs to check it before your credits are sent; please ask at the counter.",
        }
    }
    pub fn is_final(self) -> bool {
        matches!(self, Self::Confirmed | Self::Attention)
    }
    fn step(self) -> u8 {
        match self {
            Self::Waiting | Self::Processing => 0,
            Self::Paid | Self::Attention => 1,
            Self::Sent => 2,
            Self::Confirmed => 3,
        }
    }
}

async fn stage(
    state: &AppState,
    machine_id: &str,
    session_id: &str,
) -> Result<Option<Stage>, HttpResponse> {
    let session = state
        .store
        .checkout_session(session_id)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "thanks page: database error");
            HttpResponse::ServiceUnavailable().finish()
        })?;
    match session {
        Some(s) if s.machine_id == machine_id => {}
        _ => return Ok(None),
    }
    let p = state
        .store
        .checkout_progress(session_id)
        .await
        .map_err(|_| HttpResponse::ServiceUnavailable().finish())?;
    Ok(Some(match p.payment_status.as_deref() {
        None => Stage::Waiting,
        Some("pending") => Stage::Processing,
        Some("credited") | Some("refunded") | Some("partially_refunded") if p.acked => {
            Stage::Confirmed
        }
        Some("credited") | Some("refunded") | Some("partially_refunded") if p.published => {
            Stage::Sent
        }
        Some("credited") => Stage::Paid,
        _ => Stage::Attention,
    }))
}

#[derive(Template)]
#[template(path = "pay/thanks.html")]
struct ThanksPage {
    name: String,
    status_url: String,
    step: u8,
    message: &'static str,
    refresh: bool,
}

pub async fn thanks(
    state: web::Data<AppState>,
    path: web::Path<String>,
    q: web::Query<SessionQuery>,
) -> HttpResponse {
    let stage =
        match stage(&state, &path, &q.session_id).await {
            Ok(Some(s)) => s,
            Ok(None) => return message(
                actix_web::http::StatusCode::NOT_FOUND,
                "Payment not found",
                "We couldn't find this payment. If you were charged, please ask a member of staff.",
                None,
            ),
            Err(res) => return res,
        };
    let name = state
        .store
        .cabinet(&path)
        .await
        .ok()
        .flatten()
        .map(|c| c.name)
        .unwrap_or_default();
    let page = ThanksPage {
        name,
        status_url: format!(
            "/p/{}/status?session_id={}",
            path.as_str(),
            urlencode(&q.session_id)
        ),
        step: stage.step(),
        message: stage.message(),
        refresh: !stage.is_final(),
    };
    html(actix_web::http::StatusCode::OK, render(&page))
}

pub async fn status(
    state: web::Data<AppState>,
    path: web::Path<String>,
    q: web::Query<SessionQuery>,
) -> HttpResponse {
    match stage(&state, &path, &q.session_id).await {
        Ok(Some(s)) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(serde_json::json!({ "stage": s, "step": s.step(), "message": s.message(), "final": s.is_final() })),
        Ok(None) => HttpResponse::NotFound().json(serde_json::json!({ "error": "no such checkout for this machine" })),
        Err(res) => res,
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
