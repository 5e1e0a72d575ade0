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

async fn cabinet_or_404(
    state: &AppState,
    id: &MachineId,
) -> Result<crate::store::Cabinet, ApiError> {
    state
        .store
        .cabinet(id.as_str())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no cabinet {:?}", id.as_str())))
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
            "pulse_public_key": state.keys.pulse_public_key_hex(),
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
    let cabinet = cabinet_or_404(&state, &id).await?;
    let mut body = serde_json::json!(cabinet);
    // Live from the embedded broker; null when an external broker reports nothing.
    let link = match &state.presence {
        Some(p) => Some(p.link(id.as_str()).await),
        None => None,
    };
    body["connected"] = serde_json::json!(link.as_ref().map(|l| l.connected));
    body["subscribed"] = serde_json::json!(link.as_ref().map(|l| l.subscribed));
    body["pulse_public_key"] = serde_json::json!(state.keys.pulse_public_key_hex());
    Ok(HttpResponse::Ok().json(body))
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
        .ok_or_else(|| ApiError::NotFound(format!("no cabinet {:?}", id.as_str())))?;
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundlesBody {
    bundles: Vec<crate::domain::Bundle>,
}

pub async fn get_bundles(
    _auth: ApiAuth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = machine_id(&path)?;
    let cabinet = cabinet_or_404(&state, &id).await?;
    let bundles = state.store.bundles(id.as_str()).await?;
    let currency = crate::domain::Currency::parse(&cabinet.currency).map_err(ApiError::Internal)?;
    let offered = crate::domain::offered_bundles(&bundles, cabinet.price_minor, &currency);
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "bundles": bundles,
        "offered": offered,
        "pay_url": format!("{}/p/{}", state.settings.public_url, id),
    })))
}

pub async fn put_bundles(
    _auth: ApiAuth,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<BundlesBody>,
) -> Result<HttpResponse, ApiError> {
    let id = machine_id(&path)?;
    let cabinet = cabinet_or_404(&state, &id).await?;
    let bundles = crate::cabinets::set_bundles(&state.store, &cabinet, &body.bundles).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "bundles": bundles })))
}

#[derive(Deserialize)]
pub struct QrQuery {
    url: Option<String>,
}

/// The QR of the cabinet's pay page: public, a sticker's content is no secret. The QR of
/// any other URL (`?url=`, e.g. a payment link) needs the API token, or anyone could have
/// this server print convincing stickers pointing anywhere.
pub async fn qr(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    q: web::Query<QrQuery>,
) -> Result<HttpResponse, ApiError> {
    let (raw, format) = path.into_inner();
    let id = machine_id(&raw)?;
    let format = match format.as_str() {
        "svg" => crate::qr::Format::Svg,
        "png" => crate::qr::Format::Png,
        _ => return Err(ApiError::NotFound("use qr.svg or qr.png".into())),
    };
    let data = match &q.url {
        Some(u) => {
            check_bearer(&req)?;
            if !(u.starts_with("https://") || u.starts_with("http://")) || u.len() > 1000 {
                return Err(ApiError::BadRequest(
                    "url must be an http(s) URL of at most 1000 characters".into(),
                ));
            }
            u.clone()
        }
        None => format!("{}/p/{}", state.settings.public_url, id),
    };
    if state.store.cabinet(id.as_str()).await?.is_none() {
        return Err(ApiError::NotFound(format!("no cabinet {:?}", id.as_str())));
    }
    let image = state
        .qr
        .render(data, format)
        .await
        .map_err(ApiError::Internal)?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "public, max-age=300"))
        .content_type(format.content_type())
        .body(image))
}

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

/// The seed's `POST /create-payment-link`: a Stripe Payment Link for a cabinet, with the
/// cabinet's id in the payment's metadata, plus where to get its QR code.
pub async fn create_payment_link(
    _auth: ApiAuth,
    state: web::Data<AppState>,
    body: web::Json<PaymentLinkRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = MachineId::parse(&body.machine_id)
        .map_err(|e| ApiError::Unprocessable(format!("machine_id: {e}")))?;
    let cabinet = cabinet_or_404(&state, &id).await?;
    if !(1..=100).contains(&body.quantity) {
        return Err(ApiError::Unprocessable(
            "quantity must be between 1 and 100".into(),
        ));
    }
    let stripe_err = |e: crate::stripe::api::StripeApiError| {
        tracing::error!(machine_id = %cabinet.machine_id, error = %e, "Stripe call failed");
        match e {
            crate::stripe::api::StripeApiError::NotConfigured => {
                ApiError::Unavailable(e.to_string())
            }
            other => ApiError::BadGateway(other.to_string()),
        }
    };
    let price_id = match &body.price_id {
        Some(p) if p.starts_with("price_") => p.clone(),
        Some(_) => {
            return Err(ApiError::Unprocessable(
                "price_id must look like price_…".into(),
            ))
        }
        None => match state
            .store
            .stripe_price(&cabinet.machine_id, cabinet.price_minor, &cabinet.currency)
            .await?
        {
            Some((_, price)) => price,
            None => {
                let name = if cabinet.game.is_empty() {
                    format!("1 play — {}", cabinet.name)
                } else {
                    format!("1 play — {} ({})", cabinet.game, cabinet.name)
                };
                let (product, price) = state
                    .stripe
                    .create_price(
                        &name,
                        &cabinet.machine_id,
                        cabinet.price_minor,
                        &cabinet.currency,
                    )
                    .await
                    .map_err(stripe_err)?;
                state
                    .store
                    .save_stripe_price(
                        &cabinet.machine_id,
                        cabinet.price_minor,
                        &cabinet.currency,
                        &product,
                        &price,
                    )
                    .await?;
                price
            }
        },
    };
    let url = state
        .stripe
        .create_payment_link(&price_id, body.quantity, &cabinet.machine_id)
        .await
        .map_err(stripe_err)?;
    tracing::info!(machine_id = %cabinet.machine_id, price_id = %price_id, "payment link created");
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "url": url,
        "qr_svg": format!("{}/api/v1/cabinets/{}/qr.svg", state.settings.public_url, cabinet.machine_id),
    })))
}
