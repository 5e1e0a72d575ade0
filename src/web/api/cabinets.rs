//! `/api/v1/cabinets…`: register, list, change and credit cabinets, their bundles and
//! their QR stickers.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::{cabinet_or_404, check_bearer, machine_id, ApiAuth};
use crate::cabinets::{self, CabinetInput, CabinetUpdate};
use crate::error::AppError;
use crate::web::AppState;

pub async fn create_cabinet(
    _auth: ApiAuth,
    state: web::Data<AppState>,
    body: web::Json<CabinetInput>,
) -> Result<HttpResponse, AppError> {
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
) -> Result<HttpResponse, AppError> {
    let cabinets = state.store.cabinets().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "cabinets": cabinets })))
}

pub async fn get_cabinet(
    _auth: ApiAuth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
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
) -> Result<HttpResponse, AppError> {
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
) -> Result<HttpResponse, AppError> {
    let id = machine_id(&path)?;
    let reason = cabinets::check_grant(body.credits, &body.reason)?;
    let pulse = state
        .writer
        .grant(id.as_str(), body.credits, reason)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no cabinet {:?}", id.as_str())))?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({
        "pulse_id": pulse.id,
        "machine_id": pulse.machine_id,
        "credits": body.credits,
        "status": "queued",
    })))
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
) -> Result<HttpResponse, AppError> {
    let id = machine_id(&path)?;
    let cabinet = cabinet_or_404(&state, &id).await?;
    let bundles = state.store.bundles(id.as_str()).await?;
    let currency = crate::domain::Currency::parse(&cabinet.currency)
        .map_err(|e| AppError::internal(anyhow::anyhow!("cabinet {id}: {e}")))?;
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
) -> Result<HttpResponse, AppError> {
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
) -> Result<HttpResponse, AppError> {
    let (raw, format) = path.into_inner();
    let id = machine_id(&raw)?;
    let format = match format.as_str() {
        "svg" => crate::qr::Format::Svg,
        "png" => crate::qr::Format::Png,
        _ => return Err(AppError::NotFound("use qr.svg or qr.png".into())),
    };
    let data = match &q.url {
        Some(u) => {
            check_bearer(&req)?;
            if !(u.starts_with("https://") || u.starts_with("http://")) || u.len() > 1000 {
                return Err(AppError::BadRequest(
                    "url must be an http(s) URL of at most 1000 characters".into(),
                ));
            }
            u.clone()
        }
        None => format!("{}/p/{}", state.settings.public_url, id),
    };
    if state.store.cabinet(id.as_str()).await?.is_none() {
        return Err(AppError::NotFound(format!("no cabinet {:?}", id.as_str())));
    }
    let image = state
        .qr
        .render(data, format)
        .await
        .map_err(|e| AppError::internal(anyhow::anyhow!(e)))?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "public, max-age=300"))
        .content_type(format.content_type())
        .body(image))
}
