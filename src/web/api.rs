//! The JSON API for automation (`/api/v1`), behind `Authorization: Bearer $API_TOKEN`.

use std::future::{ready, Ready};

use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::AppState;
use crate::cabinets::{self, CabinetInput, CabinetUpdate};
use crate::domain::MachineId;
use crate::error::ApiError;
use crate::store::PaymentFilter;

/// Proof that the request carried the API token. Handlers that take it are protected.
pub struct ApiAuth;

impl FromRequest for ApiAuth {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(check_bearer(req))
    }
}

pub fn check_bearer(req: &HttpRequest) -> Result<ApiAuth, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("state configured");
    let Some(token) = &state.settings.api_token else {
        return Err(ApiError::Forbidden(
            "the API is disabled: set API_TOKEN to enable it".into(),
        ));
    };
    let given = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match given {
        Some(g) if bool::from(g.as_bytes().ct_eq(token.expose().as_bytes())) => Ok(ApiAuth),
        Some(_) => {
            tracing::warn!(path = %req.path(), "API request with a wrong token");
            Err(ApiError::Unauthorized("invalid API token".into()))
        }
        None => Err(ApiError::Unauthorized(
            "missing Authorization: Bearer <API_TOKEN>".into(),
        )),
    }
}

pub async fn not_found(_auth: ApiAuth) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such API endpoint".into()))
}

fn machine_id(raw: &str) -> Result<MachineId, ApiError> {
    MachineId::parse(raw).map_err(|e| ApiError::NotFound(format!("no cabinet {raw:?}: {e}")))
}

pub async fn create_cabinet(
    _auth: ApiAuth,
    state: web::Data<AppState>,
    body: web::Json<CabinetInput>,
) -> Result<HttpResponse, ApiError> {
    let reg = cabinets::register(&state.store, &state.keys, &body).await?;
    let id = reg.cabinet.machine_id.clone();
    Ok(HttpResponse::Created().json(serde_json::json!({
        "cabinet": reg.cabinet,
        "mqtt": {
            "broker": state.broker,
            "username": id,
            "secret": reg.secret,
            "note": "The secret is shown only now. It is the cabinet's MQTT password and the key that signs its pulses.",
            "topics": {
                "coinpulse": state.topics.coinpulse(&id),
                "gameover": state.topics.gameover(&id),
                "ack": state.topics.ack(&id),
                "status": state.topics.status(&id),
            }
        }
    })))
}

pub async fn list_cabinets(
    _auth: ApiAuth,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let cabinets = state.store.cabinets().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "cabinets": cabinets })))
}

pub async fn get_cabinet(
    _auth: ApiAuth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = machine_id(&path)?;
    let cabinet = state
        .store
        .cabinet(id.as_str())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no cabinet {id:?}")))?;
    Ok(HttpResponse::Ok().json(cabinet))
}

pub async fn update_cabinet(
    _auth: ApiAuth,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<CabinetUpdate>,
) -> Result<HttpResponse, ApiError> {
    let id = machine_id(&path)?;
    let cabinet = cabinets::update(&state.store, id.as_str(), &body).await?;
    Ok(HttpResponse::Ok().json(cabinet))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    credits: i64,
    reason: String,
}

pub async fn grant_credits(
    _auth: ApiAuth,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<GrantRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = machine_id(&path)?;
    if !(1..=100).contains(&body.credits) {
        return Err(ApiError::Unprocessable(
            "credits must be between 1 and 100".into(),
        ));
    }
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().count() > 200 {
        return Err(ApiError::Unprocessable(
            "reason is required (at most 200 characters)".into(),
        ));
    }
    let pulse = state
        .writer
        .grant(id.as_str(), body.credits, reason)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no cabinet {id:?}")))?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({
        "pulse_id": pulse.id,
        "machine_id": pulse.machine_id,
        "credits": body.credits,
        "status": "queued",
    })))
}

#[derive(Deserialize)]
pub struct ListQuery {
    machine_id: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
}

pub async fn list_payments(
    _auth: ApiAuth,
    state: web::Data<AppState>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = PaymentFilter {
        machine_id: q.machine_id.clone().filter(|s| !s.is_empty()),
        status: q.status.clone().filter(|s| !s.is_empty()),
        limit: q.limit.unwrap_or(50),
    };
    let payments = state.store.payments(&filter).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "payments": payments })))
}

pub async fn get_payment(
    _auth: ApiAuth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let payment = state
        .store
        .payment(&path)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no payment {:?}", path.as_str())))?;
    Ok(HttpResponse::Ok().json(payment))
}

pub async fn list_plays(
    _auth: ApiAuth,
    state: web::Data<AppState>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let machine = q.machine_id.as_deref().filter(|s| !s.is_empty());
    let plays = state.store.plays(machine, q.limit.unwrap_or(50)).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "plays": plays })))
}

pub async fn list_pulses(
    _auth: ApiAuth,
    state: web::Data<AppState>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let machine = q.machine_id.as_deref().filter(|s| !s.is_empty());
    let pulses = state.store.pulses(machine, q.limit.unwrap_or(50)).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "pulses": pulses })))
}
