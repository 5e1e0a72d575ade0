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

const OFFLINE: &str = "This machine is offline, so it could not start your game. Please don't pay for it now; try another machine or ask a member of staff.";
const NOT_SET_UP: &str =
    "This machine is not available for phone payments yet. Please ask a member of staff.";

/// Why a cabinet cannot take a payment now, in words for a player. `connected` is the
/// embedded broker's live view (None with an external broker, which reports nothing).
pub fn unavailable(
    c: &Cabinet,
    connected: Option<bool>,
    offline_after_secs: u64,
) -> Option<&'static str> {
    if !c.enabled {
        return Some(
            "This machine is not taking payments right now. Please ask a member of staff.",
        );
    }
    if c.always_available {
        return None;
    }
    match connected {
        // Seed cabinets too: a live connection is the best evidence there is.
        Some(true) => None,
        Some(false) => Some(OFFLINE),
        None => {
            if c.online {
                return None;
            }
            // Never heard from since registration: nothing says it can start a game.
            let Some(last) = c.last_seen_at.as_deref() else {
                return Some(NOT_SET_UP);
            };
            let last = chrono::DateTime::parse_from_rfc3339(last).ok()?;
            let away = chrono::Utc::now().signed_duration_since(last);
            (away.num_seconds() > offline_after_secs as i64).then_some(OFFLINE)
        }
    }
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
    let connected = match &state.presence {
        Some(p) => Some(p.link(&cabinet.machine_id).await.connected),
        None => None,
    };
    if let Some(why) = unavailable(&cabinet, connected, state.settings.offline_after) {
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

/// How long a pay page's form stays valid.
const FORM_LIFETIME_SECS: i64 = 3600;

/// The form's token binds the page cookie, the cabinet and the server-issued nonce, so
/// neither the nonce (which becomes Stripe's idempotency key) nor the cabinet can be chosen
/// by the client.
fn csrf_for(state: &AppState, cookie: &str, machine_id: &str, nonce: &str) -> String {
    state
        .keys
        .mac("pay-csrf", &format!("{cookie}|{machine_id}|{nonce}"))
}

/// A fresh nonce: random, with the time it was issued.
fn new_nonce() -> String {
    format!("{}.{}", random_token(12), chrono::Utc::now().timestamp())
}

fn nonce_is_fresh(nonce: &str) -> bool {
    nonce
        .rsplit_once('.')
        .and_then(|(_, t)| t.parse::<i64>().ok())
        .is_some_and(|t| {
            let age = chrono::Utc::now().timestamp() - t;
            (-60..=FORM_LIFETIME_SECS).contains(&age)
        })
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
    let nonce = new_nonce();
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
        csrf: csrf_for(&state, &cookie_value, &cabinet.machine_id, &nonce),
        nonce,
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
    let cookie = req.cookie(CSRF_COOKIE).map(|c| c.value().to_owned());
    let cookie_ok = cookie.as_deref().is_some_and(|c| {
        bool::from(
            csrf_for(&state, c, path.as_str(), &form.nonce)
                .as_bytes()
                .ct_eq(form.csrf.as_bytes()),
        ) && nonce_is_fresh(&form.nonce)
    });
    let Some(cookie) = cookie.filter(|_| cookie_ok) else {
        tracing::warn!(machine_id = %path.as_str(), "checkout refused: missing or bad CSRF token");
        return message(
            actix_web::http::StatusCode::FORBIDDEN,
            "Please start again",
            "This page expired. Go back to the machine's page and choose again.",
            Some(back),
        );
    };
    if let Err(wait) = state
        .limits
        .checkout(req.peer_addr().map(|a| a.ip()), &cookie)
    {
        tracing::warn!(machine_id = %path.as_str(), peer = ?req.peer_addr(), "checkout rate-limited");
        let secs = wait.as_secs().max(1);
        let mut res = message(
            actix_web::http::StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts",
            &format!("Too many payment attempts from this phone. Please wait {secs} seconds and try again."),
            Some(back),
        );
        if let Ok(v) = header::HeaderValue::from_str(&secs.to_string()) {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return res;
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
    // Coming back to the same bundle (the back button, a second tap from a new page) leads
    // to the session already open rather than to a second one.
    let buyer = state.keys.mac("pay-buyer", &cookie);
    let recent = crate::domain::db_time(chrono::Utc::now() - chrono::Duration::hours(23));
    match state
        .store
        .open_checkout_session(
            &buyer,
            &cabinet.machine_id,
            bundle.credits,
            bundle.price_minor,
            &recent,
        )
        .await
    {
        Ok(Some(open)) => {
            tracing::info!(machine_id = %cabinet.machine_id, session = %open.id, "checkout reuses the open session");
            return HttpResponse::SeeOther()
                .insert_header((header::LOCATION, open.url))
                .finish();
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "could not look for an open checkout session"),
    }
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
        buyer: Some(buyer),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cabinet() -> Cabinet {
        Cabinet {
            machine_id: "cab-1".into(),
            name: "Cab".into(),
            game: String::new(),
            location: String::new(),
            price_minor: 100,
            currency: "usd".into(),
            enabled: true,
            online: false,
            last_seen_at: None,
            acks_pulses: false,
            always_available: false,
            created_at: String::new(),
            updated_at: String::new(),
            secret_salt: String::new(),
            secret_hash: String::new(),
        }
    }

    #[test]
    fn availability_follows_the_brokers_view() {
        let c = cabinet();
        // Embedded broker: connected now, seed cabinet or not.
        assert_eq!(unavailable(&c, Some(true), 120), None);
        assert_eq!(unavailable(&c, Some(false), 120), Some(OFFLINE));
        // External broker, never heard from since registration.
        assert_eq!(unavailable(&c, None, 120), Some(NOT_SET_UP));
        let mut always = cabinet();
        always.always_available = true;
        assert_eq!(unavailable(&always, None, 120), None);
        assert_eq!(unavailable(&always, Some(false), 120), None);
        let mut recent = cabinet();
        recent.last_seen_at = Some(crate::domain::now_db());
        assert_eq!(unavailable(&recent, None, 120), None);
        let mut disabled = cabinet();
        disabled.enabled = false;
        disabled.always_available = true;
        assert!(unavailable(&disabled, Some(true), 120)
            .unwrap()
            .contains("not taking"));
    }
}
