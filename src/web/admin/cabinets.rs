//! Cabinet pages: the list, registering and editing (with errors beside their fields),
//! enabling, archiving, rotating the MQTT secret, free credits, and the installer's
//! connection details.

use actix_session::SessionExt;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use chrono::Utc;
use serde::Deserialize;

use super::view::{self, Link, PaymentLine};
use super::{see_other, Admin, Csrf, Nav};
use crate::cabinets::{self, CabinetError, CabinetInput, CabinetUpdate};
use crate::domain::{parse_amount, validate_bundles, Bundle, Cabinet, Currency, MachineId, Money};
use crate::error::AppError;
use crate::store::PaymentQuery;
use crate::web::{html, AppState};

/// Errors of a submitted form, by field.
#[derive(Default)]
pub struct FieldErrors(Vec<(&'static str, String)>);

impl FieldErrors {
    pub fn add(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.push((field, message.into()));
    }
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.iter().find(|e| e.0 == field).map(|e| e.1.as_str())
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The register/edit form as typed, kept on errors.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CabinetForm {
    machine_id: String,
    name: String,
    game: String,
    location: String,
    currency: String,
    price: String,
    /// One bundle per line: credits:price[:label].
    bundles: String,
}

impl CabinetForm {
    fn of(c: &Cabinet, bundles: &[Bundle]) -> Self {
        let currency = Currency::parse(&c.currency).ok();
        let amount = |minor: i64| match &currency {
            Some(cur) => cur.plain(minor),
            None => minor.to_string(),
        };
        Self {
            machine_id: c.machine_id.clone(),
            name: c.name.clone(),
            game: c.game.clone(),
            location: c.location.clone(),
            currency: c.currency.to_ascii_uppercase(),
            price: amount(c.price_minor),
            bundles: bundles
                .iter()
                .map(|b| {
                    let mut line = format!("{}:{}", b.credits, amount(b.price_minor));
                    if !b.label.is_empty() {
                        line.push(':');
                        line.push_str(&b.label);
                    }
                    line
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    /// Currency, price and bundles parsed; problems recorded beside their fields.
    fn parse_money(&self, errors: &mut FieldErrors) -> Option<(Currency, i64, Vec<Bundle>)> {
        let currency = match Currency::parse(&self.currency) {
            Ok(c) => c,
            Err(e) => {
                errors.add("currency", e.to_string());
                return None;
            }
        };
        let price = match parse_amount(&self.price, &currency) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.add("price", e.to_string());
                None
            }
        };
        let mut bundles = Vec::new();
        for line in self
            .bundles
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            match Bundle::parse(line, &currency) {
                Ok(b) => bundles.push(b),
                Err(e) => {
                    errors.add("bundles", e);
                    return None;
                }
            }
        }
        if let Err(e) = validate_bundles(&bundles, &currency) {
            errors.add("bundles", e.to_string());
            return None;
        }
        Some((currency, price?, bundles))
    }
}

/// A service error on a field, or a failure to show as a page.
fn field_error(e: CabinetError, errors: &mut FieldErrors) -> Result<(), AppError> {
    match e {
        CabinetError::Invalid(field, msg) => {
            let field = match field {
                "price_minor" => "price",
                f => f,
            };
            errors.add(field, msg);
            Ok(())
        }
        CabinetError::Conflict(m) => {
            errors.add("machine_id", m);
            Ok(())
        }
        other => Err(other.into()),
    }
}

pub struct CabinetItem {
    pub machine_id: String,
    pub name: String,
    pub game: String,
    pub location: String,
    pub price: String,
    pub enabled: bool,
    pub link: Link,
    pub last_seen: String,
}

#[derive(Template)]
#[template(path = "admin/cabinets.html")]
struct ListPage {
    nav: Nav,
    cabinets: Vec<CabinetItem>,
    archived: Vec<CabinetItem>,
}

pub async fn list(state: web::Data<AppState>, admin: Admin) -> Result<HttpResponse, AppError> {
    let now = Utc::now();
    let mut cabinets = Vec::new();
    let mut archived = Vec::new();
    for c in state.store.cabinets().await? {
        let item = CabinetItem {
            link: view::link(&state, &c).await,
            last_seen: view::ago(c.last_seen_at.as_deref(), now),
            price: Money::format(c.price_minor, &c.currency),
            enabled: c.enabled,
            machine_id: c.machine_id,
            name: c.name,
            game: c.game,
            location: c.location,
        };
        match c.archived_at {
            None => cabinets.push(item),
            Some(_) => archived.push(item),
        }
    }
    let page = ListPage {
        nav: admin.nav("cabinets"),
        cabinets,
        archived,
    };
    Ok(html::page(StatusCode::OK, &page))
}

#[derive(Template)]
#[template(path = "admin/cabinet_form.html")]
struct FormPage {
    nav: Nav,
    /// None: registering a new cabinet.
    editing: Option<String>,
    form: CabinetForm,
    errors: FieldErrors,
}

fn form_page(
    admin: &Admin,
    editing: Option<String>,
    form: CabinetForm,
    errors: FieldErrors,
) -> HttpResponse {
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let page = FormPage {
        nav: admin.nav("cabinets"),
        editing,
        form,
        errors,
    };
    html::page(status, &page)
}

pub async fn new_form(admin: Admin) -> Result<HttpResponse, AppError> {
    admin.require_owner("register cabinets")?;
    let form = CabinetForm {
        currency: "USD".into(),
        price: "1.00".into(),
        ..Default::default()
    };
    Ok(form_page(&admin, None, form, FieldErrors::default()))
}

/// Where the new secret waits for its one showing on the cabinet page.
fn secret_key(machine_id: &str) -> String {
    format!("secret:{machine_id}")
}

pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    admin: Admin,
    Csrf(f): Csrf<CabinetForm>,
) -> Result<HttpResponse, AppError> {
    admin.require_owner("register cabinets")?;
    let mut errors = FieldErrors::default();
    if let Err(e) = MachineId::parse(f.machine_id.trim()) {
        errors.add("machine_id", e.to_string());
    }
    let money = f.parse_money(&mut errors);
    let (Some((currency, price_minor, bundles)), true) = (money, errors.is_empty()) else {
        return Ok(form_page(&admin, None, f, errors));
    };
    let input = CabinetInput {
        machine_id: f.machine_id.trim().to_owned(),
        name: Some(f.name.clone()).filter(|n| !n.trim().is_empty()),
        game: f.game.clone(),
        location: f.location.clone(),
        price_minor,
        currency: currency.as_str().to_owned(),
        enabled: Some(true),
    };
    let reg = match cabinets::register(&state.store, &state.keys, &input).await {
        Ok(r) => r,
        Err(e) => {
            field_error(e, &mut errors)?;
            return Ok(form_page(&admin, None, f, errors));
        }
    };
    if !bundles.is_empty() {
        cabinets::set_bundles(&state.store, &reg.cabinet, &bundles).await?;
    }
    let id = reg.cabinet.machine_id.clone();
    admin
        .audit(
            "cabinet.register",
            Some(&id),
            &format!(
                "price {} · {} bundle(s)",
                Money::format(price_minor, currency.as_str()),
                bundles.len()
            ),
        )
        .await;
    let _ = req.get_session().insert(secret_key(&id), &reg.secret);
    admin.flash(format!(
        "{} registered. Copy its MQTT secret now: it is shown only once.",
        reg.cabinet.name
    ));
    Ok(see_other(&format!("/admin/cabinets/{id}")))
}

async fn cabinet(state: &AppState, raw: &str) -> Result<Cabinet, AppError> {
    let id =
        MachineId::parse(raw).map_err(|_| AppError::NotFound(format!("no cabinet {raw:?}")))?;
    state
        .store
        .cabinet(id.as_str())
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no cabinet {raw:?}")))
}

pub async fn edit_form(
    state: web::Data<AppState>,
    admin: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    admin.require_owner("change cabinets and prices")?;
    let c = cabinet(&state, &path).await?;
    let bundles = state.store.bundles(&c.machine_id).await?;
    let form = CabinetForm::of(&c, &bundles);
    Ok(form_page(
        &admin,
        Some(c.machine_id),
        form,
        FieldErrors::default(),
    ))
}

pub async fn edit(
    state: web::Data<AppState>,
    admin: Admin,
    path: web::Path<String>,
    Csrf(mut f): Csrf<CabinetForm>,
) -> Result<HttpResponse, AppError> {
    admin.require_owner("change cabinets and prices")?;
    let c = cabinet(&state, &path).await?;
    f.machine_id = c.machine_id.clone();
    let mut errors = FieldErrors::default();
    if f.name.trim().is_empty() {
        errors.add("name", "must not be empty");
    }
    let money = f.parse_money(&mut errors);
    let (Some((currency, price_minor, bundles)), true) = (money, errors.is_empty()) else {
        return Ok(form_page(&admin, Some(c.machine_id), f, errors));
    };
    let update = CabinetUpdate {
        name: Some(f.name.clone()),
        game: Some(f.game.clone()),
        location: Some(f.location.clone()),
        price_minor: Some(price_minor),
        currency: Some(currency.as_str().to_owned()),
        ..Default::default()
    };
    let updated = match cabinets::update(&state.store, &c.machine_id, &update).await {
        Ok(u) => u,
        Err(e) => {
            field_error(e, &mut errors)?;
            return Ok(form_page(&admin, Some(c.machine_id), f, errors));
        }
    };
    let before = state.store.bundles(&c.machine_id).await?;
    if before != bundles {
        cabinets::set_bundles(&state.store, &updated, &bundles).await?;
    }
    let mut changes = Vec::new();
    if c.price_minor != updated.price_minor || c.currency != updated.currency {
        changes.push(format!(
            "price {} → {}",
            Money::format(c.price_minor, &c.currency),
            Money::format(updated.price_minor, &updated.currency)
        ));
    }
    if before != bundles {
        changes.push(format!(
            "bundles: {}",
            f.bundles.lines().collect::<Vec<_>>().join(", ")
        ));
    }
    if c.name != updated.name || c.game != updated.game || c.location != updated.location {
        changes.push("name/game/location".into());
    }
    let detail = if changes.is_empty() {
        "no changes".to_owned()
    } else {
        changes.join("; ")
    };
    admin
        .audit("cabinet.update", Some(&c.machine_id), &detail)
        .await;
    admin.flash(format!("Saved {}.", updated.name));
    Ok(see_other(&format!("/admin/cabinets/{}", c.machine_id)))
}

#[derive(Deserialize)]
pub struct EnabledForm {
    enabled: String,
}

pub async fn set_enabled(
    state: web::Data<AppState>,
    admin: Admin,
    path: web::Path<String>,
    Csrf(f): Csrf<EnabledForm>,
) -> Result<HttpResponse, AppError> {
    admin.require_owner("enable or disable cabinets")?;
    let c = cabinet(&state, &path).await?;
    let enabled = f.enabled == "true";
    let update = CabinetUpdate {
        enabled: Some(enabled),
        ..Default::default()
    };
    cabinets::update(&state.store, &c.machine_id, &update).await?;
    let action = if enabled {
        "cabinet.enable"
    } else {
        "cabinet.disable"
    };
    admin.audit(action, Some(&c.machine_id), "").await;
    admin.flash(if enabled {
        format!("{} takes payments again.", c.name)
    } else {
        format!("{} no longer takes payments.", c.name)
    });
    Ok(see_other(&format!("/admin/cabinets/{}", c.machine_id)))
}

#[derive(Deserialize)]
pub struct NoFields {}

pub async fn rotate(
    req: HttpRequest,
    state: web::Data<AppState>,
    admin: Admin,
    path: web::Path<String>,
    _f: Csrf<NoFields>,
) -> Result<HttpResponse, AppError> {
    admin.require_owner("rotate cabinet secrets")?;
    let c = cabinet(&state, &path).await?;
    let secret = cabinets::rotate_secret(&state.store, &state.keys, &c.machine_id).await?;
    if let Some(p) = &state.presence {
        p.kick(&c.machine_id, "secret rotated").await;
    }
    admin
        .audit("cabinet.rotate_secret", Some(&c.machine_id), "")
        .await;
    let _ = req.get_session().insert(secret_key(&c.machine_id), &secret);
    admin.flash("New MQTT secret issued; the old one no longer works. Copy the new one now: it is shown only once.");
    Ok(see_other(&format!("/admin/cabinets/{}", c.machine_id)))
}

#[derive(Deserialize)]
pub struct ArchiveForm {
    #[serde(default)]
    restore: Option<String>,
}

pub async fn archive(
    state: web::Data<AppState>,
    admin: Admin,
    path: web::Path<String>,
    Csrf(f): Csrf<ArchiveForm>,
) -> Result<HttpResponse, AppError> {
    admin.require_owner("archive cabinets")?;
    let c = cabinet(&state, &path).await?;
    let restore = f.restore.is_some();
    state
        .store
        .set_cabinet_archived(&c.machine_id, !restore)
        .await?;
    if !restore {
        if let Some(p) = &state.presence {
            p.kick(&c.machine_id, "cabinet archived").await;
        }
    }
    let action = if restore {
        "cabinet.restore"
    } else {
        "cabinet.archive"
    };
    admin.audit(action, Some(&c.machine_id), "").await;
    admin.flash(if restore {
        format!(
            "{} restored (disabled: enable it when it is ready).",
            c.name
        )
    } else {
        format!(
            "{} archived. Its payments and plays stay in the records.",
            c.name
        )
    });
    Ok(see_other(&format!("/admin/cabinets/{}", c.machine_id)))
}

#[derive(Deserialize)]
pub struct CreditForm {
    #[serde(default)]
    credits: String,
    #[serde(default)]
    reason: String,
    /// The form's one-time nonce: a double click sends once.
    #[serde(default)]
    nonce: String,
}

/// Free credits (staff may): a pulse through the same outbox as paid ones.
pub async fn credit(
    state: web::Data<AppState>,
    admin: Admin,
    path: web::Path<String>,
    Csrf(f): Csrf<CreditForm>,
) -> Result<HttpResponse, AppError> {
    let c = cabinet(&state, &path).await?;
    let back = format!("/admin/cabinets/{}", c.machine_id);
    let credits: i64 = match f.credits.trim().parse() {
        Ok(n) => n,
        Err(_) => {
            admin.flash("Credits: enter a whole number from 1 to 100.");
            return Ok(see_other(&back));
        }
    };
    let reason = match cabinets::check_grant(credits, &f.reason) {
        Ok(r) => r.to_owned(),
        Err(e) => {
            admin.flash(format!("Not sent: {e}."));
            return Ok(see_other(&back));
        }
    };
    if !f.nonce.is_empty() && !state.store.claim_form_nonce(&f.nonce).await? {
        admin.flash("That form was already sent; the credits went once.");
        return Ok(see_other(&back));
    }
    let reason_with_user = format!("{reason} (by {})", admin.user.email);
    let pulse = state
        .writer
        .grant(&c.machine_id, credits, &reason_with_user)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no cabinet {:?}", c.machine_id)))?;
    admin
        .audit(
            "cabinet.free_credits",
            Some(&c.machine_id),
            &format!("{credits} credit(s): {reason} · pulse {}", pulse.id),
        )
        .await;
    admin.flash(format!(
        "{credits} free credit{} sent to {}.",
        if credits == 1 { "" } else { "s" },
        c.name
    ));
    Ok(see_other(&back))
}

/// What an installer needs to connect the cabinet.
pub struct Connection {
    pub host: String,
    pub port: Option<u16>,
    pub tls_port: Option<u16>,
    pub external: Option<String>,
    pub username: String,
    pub topic_pulses: String,
    pub topic_gameover: String,
    pub topic_ack: String,
    pub topic_status: String,
    pub public_key: String,
    pub config: String,
}

fn connection(state: &AppState, c: &Cabinet) -> Connection {
    let host = state
        .settings
        .public_url
        .split("://")
        .nth(1)
        .and_then(|h| h.split(['/', ':']).next())
        .unwrap_or("localhost")
        .to_owned();
    let external =
        (state.settings.cabinet_mqtt_url.clone()).or_else(|| state.settings.mqtt_url.clone());
    let broker = match (&external, state.mqtt_tls_port, state.mqtt_port) {
        (Some(url), _, _) => url.clone(),
        (None, Some(tls), _) => format!("ssl://{host}:{tls}"),
        (None, None, Some(port)) => format!("tcp://{host}:{port}"),
        (None, None, None) => format!("tcp://{host}:1883"),
    };
    let topics = &state.topics;
    let public_key = state.keys.pulse_public_key_hex();
    let config = coinpulse_cabinet::config::starter(&coinpulse_cabinet::config::Starter {
        name: &c.name,
        machine_id: &c.machine_id,
        broker: &broker,
        public_key: &public_key,
        topic_prefix: &state.settings.mqtt_topic_prefix,
    });
    Connection {
        host,
        port: state.mqtt_port,
        tls_port: state.mqtt_tls_port,
        external,
        username: c.machine_id.clone(),
        topic_pulses: topics.coinpulse(&c.machine_id),
        topic_gameover: topics.gameover(&c.machine_id),
        topic_ack: topics.ack(&c.machine_id),
        topic_status: topics.status(&c.machine_id),
        public_key,
        config,
    }
}

pub struct PlayLine {
    pub when: String,
    pub length: String,
    pub score: String,
}

#[derive(Template)]
#[template(path = "admin/cabinet.html")]
struct ShowPage {
    nav: Nav,
    c: Cabinet,
    price: String,
    bundles: Vec<(String, String)>,
    link: Link,
    last_seen: String,
    secret: Option<String>,
    conn: Connection,
    pay_url: String,
    payments: Vec<PaymentLine>,
    plays: Vec<PlayLine>,
    /// For the free-credit form.
    nonce: String,
}

/// `3 min 05 s` from seconds.
pub fn duration(secs: i64) -> String {
    match secs {
        s if s < 0 => "—".into(),
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {:02} s", s / 60, s % 60),
        s => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

/// A play's length: what the cabinet reported, else credit → game over.
pub fn play_length(p: &crate::store::PlayRow) -> String {
    if let Some(s) = p.play_seconds {
        return duration(s);
    }
    match (
        p.credited_at.as_deref().and_then(view::parse_time),
        view::parse_time(&p.ended_at),
    ) {
        (Some(start), Some(end)) => duration((end - start).num_seconds()),
        _ => "—".into(),
    }
}

pub async fn show(
    req: HttpRequest,
    state: web::Data<AppState>,
    admin: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let c = cabinet(&state, &path).await?;
    let now = Utc::now();
    let bundles = state
        .store
        .bundles(&c.machine_id)
        .await?
        .iter()
        .map(|b| (b.title(), Money::format(b.price_minor, &c.currency)))
        .collect();
    let secret = req
        .get_session()
        .remove_as::<String>(&secret_key(&c.machine_id))
        .and_then(Result::ok);
    let payments = state
        .store
        .find_payments(
            &PaymentQuery {
                machine_id: Some(c.machine_id.clone()),
                ..Default::default()
            },
            10,
            0,
        )
        .await?;
    let plays = state
        .store
        .play_log(Some(&c.machine_id), 10, 0)
        .await?
        .iter()
        .map(|p| PlayLine {
            when: view::when(&p.received_at),
            length: play_length(p),
            score: p.score.map(|s| s.to_string()).unwrap_or_default(),
        })
        .collect();
    let page = ShowPage {
        nav: admin.nav("cabinets"),
        price: Money::format(c.price_minor, &c.currency),
        bundles,
        link: view::link(&state, &c).await,
        last_seen: view::ago(c.last_seen_at.as_deref(), now),
        secret,
        conn: connection(&state, &c),
        pay_url: format!("{}/p/{}", state.settings.public_url, c.machine_id),
        payments: view::lines(&payments),
        plays,
        nonce: crate::domain::random_token(16),
        c,
    };
    Ok(html::page(StatusCode::OK, &page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(42), "42 s");
        assert_eq!(duration(185), "3 min 05 s");
        assert_eq!(duration(7260), "2 h 01 min");
    }

    #[test]
    fn the_form_reports_each_bad_field() {
        let f = CabinetForm {
            currency: "usd".into(),
            price: "abc".into(),
            bundles: "3:2.50\nnonsense".into(),
            ..Default::default()
        };
        let mut errors = FieldErrors::default();
        assert!(f.parse_money(&mut errors).is_none());
        assert!(errors.get("price").is_some());
        assert!(errors.get("bundles").unwrap().contains("nonsense"));
        let ok = CabinetForm {
            currency: "EUR".into(),
            price: "1.00".into(),
            bundles: "3:2.50:Three".into(),
            ..Default::default()
        };
        let mut errors = FieldErrors::default();
        let (cur, price, bundles) = ok.parse_money(&mut errors).unwrap();
        assert_eq!((cur.as_str(), price, bundles.len()), ("eur", 100, 1));
    }
}
