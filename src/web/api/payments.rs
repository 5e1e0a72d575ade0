//! `/api/v1/payments`, `/plays`, `/pulses`: what happened, newest first.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::ApiAuth;
use crate::domain::PaymentStatus;
use crate::error::AppError;
use crate::store::PaymentFilter;
use crate::web::AppState;

fn list_of(states: &[PaymentStatus]) -> String {
    states
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
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
) -> Result<HttpResponse, AppError> {
    let filter = PaymentFilter {
        machine_id: q.machine_id.clone().filter(|s| !s.is_empty()),
        status: match q.status.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => Some(s.parse::<PaymentStatus>().map_err(|e| {
                AppError::BadRequest(format!(
                    "status: {e}; one of {}",
                    list_of(PaymentStatus::ALL)
                ))
            })?),
            None => None,
        },
        limit: q.limit.unwrap_or(50),
    };
    let payments = state.store.payments(&filter).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "payments": payments })))
}

pub async fn get_payment(
    _auth: ApiAuth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let payment = state
        .store
        .payment(&path)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no payment {:?}", path.as_str())))?;
    Ok(HttpResponse::Ok().json(payment))
}

pub async fn list_plays(
    _auth: ApiAuth,
    state: web::Data<AppState>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    let machine = q.machine_id.as_deref().filter(|s| !s.is_empty());
    let plays = state.store.plays(machine, q.limit.unwrap_or(50)).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "plays": plays })))
}

pub async fn list_pulses(
    _auth: ApiAuth,
    state: web::Data<AppState>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    let machine = q.machine_id.as_deref().filter(|s| !s.is_empty());
    let pulses = state.store.pulses(machine, q.limit.unwrap_or(50)).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "pulses": pulses })))
}
