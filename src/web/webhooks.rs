//! `POST /webhooks/stripe` (and the seed's `/addCredit`): raw bytes in, verified, parsed,
//! committed, and only then 200.

use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;

use super::AppState;
use crate::error::AppError;
use crate::stripe::webhook::{parse_event, verify_signature};

/// Real Stripe events are a few KiB; anything near this is not from Stripe.
pub const MAX_BODY: usize = 256 * 1024;

pub async fn stripe(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let Some(secret) = &state.settings.stripe_webhook_secret else {
        // 503 makes Stripe retry, so nothing is lost while the owner sets the secret.
        tracing::error!("webhook received but STRIPE_WEBHOOK_SECRET is not set");
        return Err(AppError::Unavailable(
            "STRIPE_WEBHOOK_SECRET is not configured".into(),
        ));
    };
    let reject = |why: String| {
        tracing::warn!(path = %req.path(), reason = %why, "webhook rejected");
        AppError::BadRequest(why)
    };
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(reject(format!("body larger than {} KiB", MAX_BODY / 1024)));
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(4096).min(MAX_BODY));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| reject(format!("could not read body: {e}")))?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(reject(format!("body larger than {} KiB", MAX_BODY / 1024)));
        }
        body.extend_from_slice(&chunk);
    }
    let header = req
        .headers()
        .get("Stripe-Signature")
        .and_then(|v| v.to_str().ok());
    let now = chrono::Utc::now().timestamp();
    verify_signature(header, &body, secret.expose(), now).map_err(|e| reject(e.to_string()))?;
    let event = parse_event(&body).map_err(|e| reject(e.to_string()))?;
    let (event_id, kind) = (event.id.clone(), event.kind.clone());
    // A 500 (logged once, with its cause, by AppError) makes Stripe retry later: the
    // event is not lost.
    let started = std::time::Instant::now();
    let outcome = state.writer.webhook(event).await.map_err(|e| {
        AppError::internal(
            anyhow::Error::new(e).context(format!("webhook {event_id} could not be stored")),
        )
    })?;
    tracing::info!(event_id = %event_id, event_type = %kind, outcome = outcome.outcome.as_str(),
        payment_id = ?outcome.payment_id, "webhook processed");
    crate::metrics::webhook(
        outcome.outcome.as_str(),
        started.elapsed(),
        outcome.pulse.is_some(),
    );
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "received": true,
        "outcome": outcome.outcome.as_str(),
        "payment_id": outcome.payment_id,
    })))
}
