//! `/api/v1/topup-packages/{currency}`: the wallet top-ups players are offered, per currency.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::ApiAuth;
use crate::domain::wallet::{default_packages, validate_packages, TopupPackage};
use crate::domain::Currency;
use crate::error::AppError;
use crate::web::AppState;

fn currency(raw: &str) -> Result<Currency, AppError> {
    Currency::parse(raw).map_err(|e| AppError::NotFound(e.to_string()))
}

pub async fn get_packages(
    _auth: ApiAuth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let c = currency(&path)?;
    let stored = state.store.topup_packages(c.as_str()).await?;
    let (packages, default) = match stored.is_empty() {
        true => (default_packages(&c), true),
        false => (stored, false),
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "currency": c.as_str(), "packages": packages, "default": default,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackagesBody {
    packages: Vec<TopupPackage>,
}

pub async fn put_packages(
    _auth: ApiAuth,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<PackagesBody>,
) -> Result<HttpResponse, AppError> {
    let c = currency(&path)?;
    validate_packages(&body.packages, &c).map_err(|e| AppError::Unprocessable(e.to_string()))?;
    state
        .store
        .set_topup_packages(c.as_str(), &body.packages)
        .await?;
    tracing::info!(
        currency = c.as_str(),
        count = body.packages.len(),
        "top-up packages set"
    );
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "currency": c.as_str(), "packages": body.packages, "default": false,
    })))
}
