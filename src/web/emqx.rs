//! EMQX's HTTP authentication and authorization hooks, pointed at coinpulse: the same rules
//! the embedded broker enforces. A cabinet logs in with its machine id and secret and may
//! read only its own pulse topic and write only its own game over, ack and status; the
//! server's own account (MQTT_USERNAME/MQTT_PASSWORD) may do everything. EMQX calls with
//! `Authorization: Bearer <API_TOKEN>` (docs/deploy.md).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::api::ApiAuth;
use super::AppState;
use crate::domain::verify_cabinet_secret;
use crate::error::AppError;
use crate::mqtt::broker::{may_publish, may_subscribe, Login};

#[derive(Deserialize)]
pub struct AuthRequest {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

fn answer(allow: bool, superuser: bool) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "result": if allow { "allow" } else { "deny" },
        "is_superuser": superuser,
    }))
}

/// `POST /mqtt/emqx/auth`: may this username and password connect?
pub async fn authenticate(
    _auth: ApiAuth,
    state: web::Data<AppState>,
    body: web::Json<AuthRequest>,
) -> Result<HttpResponse, AppError> {
    let settings = &state.settings;
    if settings.mqtt_username.as_deref() == Some(body.username.as_str()) {
        let ok = settings
            .mqtt_password
            .as_ref()
            .is_some_and(|p| bool::from(p.expose().as_bytes().ct_eq(body.password.as_bytes())));
        return Ok(answer(ok, ok));
    }
    let ok = match state.store.cabinet(&body.username).await? {
        Some(c) => {
            c.enabled
                && c.archived_at.is_none()
                && verify_cabinet_secret(&body.password, &c.secret_hash)
        }
        None => false,
    };
    if !ok {
        tracing::warn!(username = %body.username, "EMQX login refused");
    }
    Ok(answer(ok, false))
}

#[derive(Deserialize)]
pub struct AclRequest {
    #[serde(default)]
    username: String,
    #[serde(default)]
    topic: String,
    #[serde(default)]
    action: String,
}

/// `POST /mqtt/emqx/acl`: may this user publish to, or subscribe to, this topic?
pub async fn authorize(
    _auth: ApiAuth,
    state: web::Data<AppState>,
    body: web::Json<AclRequest>,
) -> Result<HttpResponse, AppError> {
    let login = if state.settings.mqtt_username.as_deref() == Some(body.username.as_str()) {
        Login::Server
    } else {
        Login::Cabinet(body.username.clone())
    };
    let allow = match body.action.as_str() {
        "publish" => may_publish(&state.topics, &login, &body.topic),
        "subscribe" => may_subscribe(&state.topics, &login, &body.topic),
        _ => false,
    };
    if !allow {
        tracing::warn!(username = %body.username, topic = %body.topic, action = %body.action, "EMQX access refused");
    }
    Ok(answer(allow, false))
}
