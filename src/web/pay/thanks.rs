//! `GET /p/{machine_id}/thanks` (the page Stripe sends the player back to) and its JSON
//! twin `GET /p/{machine_id}/status`, which the page polls.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::checkout;
use crate::domain::Stage;
use crate::error::{AppError, PageError};
use crate::web::{html, AppState};

#[derive(Deserialize)]
pub struct SessionQuery {
    session_id: String,
}

#[derive(Template)]
#[template(path = "pay/thanks.html")]
struct ThanksPage {
    name: String,
    status_url: String,
    step: u8,
    message: &'static str,
    refresh: bool,
}

async fn stage(
    state: &AppState,
    machine_id: &str,
    session_id: &str,
) -> Result<Option<Stage>, AppError> {
    checkout::stage(&state.store, machine_id, session_id)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "thanks page: database error");
            AppError::Unavailable("Please try again in a moment.".into())
        })
}

pub async fn thanks(
    state: web::Data<AppState>,
    path: web::Path<String>,
    q: web::Query<SessionQuery>,
) -> Result<HttpResponse, PageError> {
    let stage = stage(&state, &path, &q.session_id)
        .await
        .map_err(|e| e.page("Please try again", None))?
        .ok_or_else(|| {
            AppError::NotFound(
                "We couldn't find this payment. If you were charged, please ask a member of staff."
                    .into(),
            )
            .page("Payment not found", None)
        })?;
    let name = state
        .store
        .cabinet(&path)
        .await
        .ok()
        .flatten()
        .map(|c| c.name)
        .unwrap_or_default();
    let query: String = form_urlencoded::byte_serialize(q.session_id.as_bytes()).collect();
    let page = ThanksPage {
        name,
        status_url: format!("/p/{}/status?session_id={query}", path.as_str()),
        step: stage.step(),
        message: stage.message(),
        refresh: !stage.is_final(),
    };
    Ok(html::page(StatusCode::OK, &page))
}

pub async fn status(
    state: web::Data<AppState>,
    path: web::Path<String>,
    q: web::Query<SessionQuery>,
) -> Result<HttpResponse, AppError> {
    let stage = stage(&state, &path, &q.session_id)
        .await?
        .ok_or_else(|| AppError::NotFound("no such checkout for this machine".into()))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({
            "stage": stage,
            "step": stage.step(),
            "message": stage.message(),
            "final": stage.is_final(),
        })))
}
