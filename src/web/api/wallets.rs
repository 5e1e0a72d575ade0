//! `/api/v1/topup-packages/{currency}`: the wallet top-ups players are offered, per
//! currency, with the owner's limits (smallest and largest top-up, balance ceiling).

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::ApiAuth;
use crate::domain::wallet::{default_packages, validate_packages, TopupPackage, WalletLimits};
use crate::domain::Currency;
use crate::error::AppError;
use crate::web::AppState;

fn currency(raw: &str) -> Result<Currency, AppError> {
    Currency::parse(raw).map_err(|e| AppError::NotFound(e.to_string()))
}

async fn limits(state: &AppState, c: &Currency) -> Result<WalletLimits, AppError> {
    Ok(state
        .store
        .wallet_limits(c.as_str())
        .await?
        .unwrap_or_else(|| WalletLimits::default_for(c)))
}

fn body(
    c: &Currency,
    packages: &[TopupPackage],
    limits: &WalletLimits,
    default: bool,
) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "currency": c.as_str(),
        "packages": packages,
        "default": default,
        "min_topup_minor": limits.min_topup_minor,
        "max_topup_minor": limits.max_topup_minor,
        "max_balance_minor": limits.max_balance_minor,
    }))
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
    Ok(body(&c, &packages, &limits(&state, &c).await?, default))
}

/// Packages, and optionally new limits (a field left out keeps its value; send
/// `"max_balance_minor": null` to remove the balance ceiling).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackagesBody {
    packages: Vec<TopupPackage>,
    min_topup_minor: Option<i64>,
    max_topup_minor: Option<i64>,
    #[serde(default, deserialize_with = "present")]
    max_balance_minor: Option<Option<i64>>,
}

/// A field that is present (even as `null`) is `Some`; an absent one stays `None`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(d).map(Some)
}

pub async fn put_packages(
    _auth: ApiAuth,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body_in: web::Json<PackagesBody>,
) -> Result<HttpResponse, AppError> {
    let c = currency(&path)?;
    let current = limits(&state, &c).await?;
    let limits = WalletLimits {
        min_topup_minor: body_in.min_topup_minor.unwrap_or(current.min_topup_minor),
        max_topup_minor: body_in.max_topup_minor.unwrap_or(current.max_topup_minor),
        max_balance_minor: body_in
            .max_balance_minor
            .unwrap_or(current.max_balance_minor),
    };
    let unprocessable =
        |e: crate::domain::wallet::PackageError| AppError::Unprocessable(e.to_string());
    limits.validate(&c).map_err(unprocessable)?;
    validate_packages(&body_in.packages, &c, &limits).map_err(unprocessable)?;
    state
        .store
        .set_topup_packages(c.as_str(), &body_in.packages)
        .await?;
    state.store.set_wallet_limits(c.as_str(), &limits).await?;
    tracing::info!(
        currency = c.as_str(),
        count = body_in.packages.len(),
        min = limits.min_topup_minor,
        max = limits.max_topup_minor,
        "top-up packages set"
    );
    Ok(body(&c, &body_in.packages, &limits, false))
}
