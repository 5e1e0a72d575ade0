//! The seed's `POST /create-payment-link`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::{cabinet_or_404, ApiAuth};
use crate::domain::MachineId;
use crate::error::AppError;
use crate::payment_links::{self, PaymentLinkError};
use crate::stripe::api::StripeApiError;
use crate::web::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentLinkRequest {
    machine_id: String,
    #[serde(default = "one")]
    quantity: u64,
    price_id: Option<String>,
}

fn one() -> u64 {
    1
}

/// A Stripe Payment Link for a cabinet, with the cabinet's id in the payment's metadata,
/// plus where to get its QR code.
pub async fn create_payment_link(
    _auth: ApiAuth,
    state: web::Data<AppState>,
    body: web::Json<PaymentLinkRequest>,
) -> Result<HttpResponse, AppError> {
    let id = MachineId::parse(&body.machine_id)
        .map_err(|e| AppError::Unprocessable(format!("machine_id: {e}")))?;
    let cabinet = cabinet_or_404(&state, &id).await?;
    if !(1..=100).contains(&body.quantity) {
        return Err(AppError::Unprocessable(
            "quantity must be between 1 and 100".into(),
        ));
    }
    if body
        .price_id
        .as_ref()
        .is_some_and(|p| !p.starts_with("price_"))
    {
        return Err(AppError::Unprocessable(
            "price_id must look like price_…".into(),
        ));
    }
    let url = payment_links::create(
        &state.store,
        &state.stripe,
        &cabinet,
        body.quantity,
        body.price_id.as_deref(),
    )
    .await
    .map_err(|e| match e {
        PaymentLinkError::Stripe(e) => {
            tracing::error!(machine_id = %cabinet.machine_id, error = %e, "Stripe call failed");
            match e {
                StripeApiError::NotConfigured => AppError::Unavailable(e.to_string()),
                other => AppError::BadGateway(other.to_string()),
            }
        }
        PaymentLinkError::Store(e) => e.into(),
    })?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "url": url,
        "qr_svg": format!("{}/api/v1/cabinets/{}/qr.svg", state.settings.public_url, cabinet.machine_id),
    })))
}
