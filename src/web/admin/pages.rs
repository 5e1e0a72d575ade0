//! The smaller pages: plays, the audit log, settings, and users (owner only).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::cabinets::play_length;
use super::{see_other, view, Admin, Csrf, Nav};
use crate::accounts::{self, AccountError};
use crate::domain::Role;
use crate::error::AppError;
use crate::store::{AuditEntry, User};
use crate::web::{html, AppState};

const PAGE: i64 = 100;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PlayFilter {
    cabinet: String,
    page: i64,
}

pub struct PlayLine {
    pub when: String,
    pub machine_id: String,
    pub length: String,
    pub score: String,
}

#[derive(Template)]
#[template(path = "admin/plays.html")]
struct PlaysPage {
    nav: Nav,
    rows: Vec<PlayLine>,
    cabinets: Vec<(String, String)>,
    cabinet: String,
    prev: Option<i64>,
    next: Option<i64>,
}

pub async fn plays(
    state: web::Data<AppState>,
    admin: Admin,
    f: web::Query<PlayFilter>,
) -> Result<HttpResponse, AppError> {
    let cabinet = f.cabinet.trim();
    let page = f.page.clamp(0, super::payments::MAX_PAGE);
    let mut rows = state
        .store
        .play_log(
            Some(cabinet).filter(|c| !c.is_empty()),
            PAGE + 1,
            page * PAGE,
        )
        .await?;
    let more = rows.len() as i64 > PAGE;
    rows.truncate(PAGE as usize);
    let page = PlaysPage {
        nav: admin.nav("plays"),
        rows: rows
            .iter()
            .map(|p| PlayLine {
                when: view::when(&p.received_at),
                machine_id: p.machine_id.clone(),
                length: play_length(p),
                score: p.score.map(|s| s.to_string()).unwrap_or_default(),
            })
            .collect(),
        cabinets: state
            .store
            .cabinets()
            .await?
            .into_iter()
            .map(|c| (c.machine_id, c.name))
            .collect(),
        cabinet: cabinet.to_owned(),
        prev: (page > 0).then(|| page - 1),
        next: more.then_some(page + 1),
    };
    Ok(html::page(StatusCode::OK, &page))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PageQuery {
    page: i64,
}

#[derive(Template)]
#[template(path = "admin/audit.html")]
struct AuditPage {
    nav: Nav,
    rows: Vec<AuditEntry>,
    prev: Option<i64>,
    next: Option<i64>,
}

pub async fn audit(
    state: web::Data<AppState>,
    admin: Admin,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, AppError> {
    let page = q.page.clamp(0, super::payments::MAX_PAGE);
    let mut rows = state.store.audit_log(PAGE + 1, page * PAGE).await?;
    let more = rows.len() as i64 > PAGE;
    rows.truncate(PAGE as usize);
    for r in &mut rows {
        r.at = view::when(&r.at);
    }
    let page = AuditPage {
        nav: admin.nav("audit"),
        rows,
        prev: (page > 0).then(|| page - 1),
        next: more.then_some(page + 1),
    };
    Ok(html::page(StatusCode::OK, &page))
}

#[derive(Template)]
#[template(path = "admin/settings.html")]
struct SettingsPage {
    nav: Nav,
    public_url: String,
    webhook_url: String,
    events: &'static [&'static str],
    webhook_secret_set: bool,
    stripe_key: String,
    mqtt: String,
    mqtt_connected: bool,
    promotion_codes: bool,
    offline_after: u64,
    database: &'static str,
    checklist: Vec<super::overview::Check>,
}

pub const WEBHOOK_EVENTS: &[&str] = &[
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "charge.refunded",
];

pub async fn settings(state: web::Data<AppState>, admin: Admin) -> Result<HttpResponse, AppError> {
    let s = &state.settings;
    let stripe_key = match s.stripe_secret_key.as_ref().map(|k| k.expose()) {
        None => "not set".to_owned(),
        Some(k) if k.contains("_live_") => "set (live mode)".to_owned(),
        Some(k) if k.contains("_test_") => "set (test mode)".to_owned(),
        Some(_) => "set (unrecognised prefix: expected sk_test_… or sk_live_…)".to_owned(),
    };
    let mqtt = match (&s.mqtt_url, state.mqtt_port) {
        (Some(url), _) => format!("external broker {url}"),
        (None, Some(port)) => format!(
            "embedded broker on port {port}{}",
            state
                .mqtt_tls_port
                .map(|p| format!(", TLS on {p}"))
                .unwrap_or_default()
        ),
        (None, None) => "embedded broker".to_owned(),
    };
    let page = SettingsPage {
        nav: admin.nav("settings"),
        public_url: s.public_url.clone(),
        webhook_url: format!("{}/webhooks/stripe", s.public_url),
        events: WEBHOOK_EVENTS,
        webhook_secret_set: s.stripe_webhook_secret.is_some(),
        stripe_key,
        mqtt,
        mqtt_connected: state.stats.is_connected(),
        promotion_codes: s.allow_promotion_codes,
        offline_after: s.offline_after,
        database: if s.is_postgres() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        checklist: super::overview::checklist(&state).await?,
    };
    Ok(html::page(StatusCode::OK, &page))
}

#[derive(Template)]
#[template(path = "admin/users.html")]
struct UsersPage {
    nav: Nav,
    users: Vec<User>,
    error: Option<String>,
    email: String,
}

async fn users_page(
    state: &AppState,
    admin: &Admin,
    error: Option<String>,
    email: String,
) -> Result<HttpResponse, AppError> {
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let mut users = state.store.users().await?;
    for u in &mut users {
        u.created_at = view::when(&u.created_at);
    }
    let page = UsersPage {
        nav: admin.nav("users"),
        users,
        error,
        email,
    };
    Ok(html::page(status, &page))
}

pub async fn users(state: web::Data<AppState>, admin: Admin) -> Result<HttpResponse, AppError> {
    admin.require_owner("manage users")?;
    users_page(&state, &admin, None, String::new()).await
}

#[derive(Deserialize)]
pub struct NewUserForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

pub async fn add_user(
    state: web::Data<AppState>,
    admin: Admin,
    Csrf(f): Csrf<NewUserForm>,
) -> Result<HttpResponse, AppError> {
    admin.require_owner("manage users")?;
    let role: Role = match f.role.parse() {
        Ok(r) => r,
        Err(_) => return users_page(&state, &admin, Some("Pick a role.".into()), f.email).await,
    };
    match accounts::create_user(&state.store, &f.email, role, &f.password, &f.confirm).await {
        Ok(user) => {
            admin
                .audit("user.add", Some(&user.email), role.as_str())
                .await;
            admin.flash(format!("Added {} ({role}).", user.email));
            Ok(see_other("/admin/users"))
        }
        Err(AccountError::Store(e)) => Err(e.into()),
        Err(e) => users_page(&state, &admin, Some(e.to_string()), f.email).await,
    }
}

#[derive(Deserialize)]
pub struct NoFields {}

pub async fn remove_user(
    state: web::Data<AppState>,
    admin: Admin,
    path: web::Path<String>,
    _f: Csrf<NoFields>,
) -> Result<HttpResponse, AppError> {
    admin.require_owner("manage users")?;
    let user = state
        .store
        .user(&path)
        .await?
        .ok_or_else(|| AppError::NotFound("no such user".into()))?;
    match accounts::remove_user(&state.store, &user.email).await {
        Ok(u) => {
            admin.audit("user.remove", Some(&u.email), "").await;
            admin.flash(format!("Removed {}.", u.email));
        }
        Err(AccountError::Store(e)) => return Err(e.into()),
        Err(e) => admin.flash(format!("Not removed: {e}.")),
    }
    Ok(see_other("/admin/users"))
}
