//! The JSON API for automation (`/api/v1`), behind `Authorization: Bearer $API_TOKEN`.

mod cabinets;
mod payment_links;
mod payments;
mod wallets;

pub use cabinets::{
    create_cabinet, get_bundles, get_cabinet, grant_credits, list_cabinets, put_bundles, qr,
    update_cabinet,
};
pub use payment_links::create_payment_link;
pub use payments::{get_payment, list_payments, list_plays, list_pulses};
pub use wallets::{get_packages, put_packages};

use std::future::{ready, Ready};

use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::domain::MachineId;
use crate::error::AppError;

/// Proof that the request carried the API token. Handlers that take it are protected.
pub struct ApiAuth;

impl FromRequest for ApiAuth {
    type Error = AppError;
    type Future = Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(check_bearer(req))
    }
}

pub fn check_bearer(req: &HttpRequest) -> Result<ApiAuth, AppError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("state configured");
    let Some(token) = &state.settings.api_token else {
        return Err(AppError::Forbidden(
            "the API is disabled: set API_TOKEN to enable it".into(),
        ));
    };
    bearer_is(req, token.expose(), "API_TOKEN").map(|()| ApiAuth)
}

/// Whether the request carries `Authorization: Bearer <token>` (compared in constant time);
/// `name` is the setting the error names.
pub fn bearer_is(req: &HttpRequest, token: &str, name: &str) -> Result<(), AppError> {
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
        Some(g) if bool::from(g.as_bytes().ct_eq(token.as_bytes())) => Ok(()),
        Some(_) => {
            tracing::warn!(path = %req.path(), "request with a wrong {name}");
            Err(AppError::Unauthorized(format!("invalid {name}")))
        }
        None => Err(AppError::Unauthorized(format!(
            "missing Authorization: Bearer <{name}>"
        ))),
    }
}

pub async fn not_found(_auth: ApiAuth) -> Result<HttpResponse, AppError> {
    Err(AppError::NotFound("no such API endpoint".into()))
}

pub(super) async fn cabinet_or_404(
    state: &AppState,
    id: &MachineId,
) -> Result<crate::domain::Cabinet, AppError> {
    state
        .store
        .cabinet(id.as_str())
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no cabinet {:?}", id.as_str())))
}

pub(super) fn machine_id(raw: &str) -> Result<MachineId, AppError> {
    MachineId::parse(raw).map_err(|e| AppError::NotFound(format!("no cabinet {raw:?}: {e}")))
}
