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

/// A card payment's checkout session, or the pulse a wallet paid for.
#[derive(Deserialize)]
pub struct SessionQuery {
    session_id: Option<String>,
    pulse: Option<String>,
}

impl SessionQuery {
    /// This query again, for the status URL the page polls.
    fn encoded(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(s) = &self.session_id {
            q.append_pair("session_id", s);
        }
        if let Some(p) = &self.pulse {
            q.append_pair("pulse", p);
        }
        q.finish()
    }
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
    q: &SessionQuery,
) -> Result<Option<Stage>, AppError> {
    let trouble = |e: crate::store::StoreError| {
        tracing::error!(error = %e, "thanks page: database error");
        AppError::Unavailable("Please try again in a moment.".into())
    };
    match (&q.session_id, &q.pulse) {
        (Some(session_id), _) => checkout::stage(&state.store, machine_id, session_id)
            .await
            .map_err(trouble),
        // Paid from a wallet: the money is taken with the pulse, so it starts at "paid".
        (None, Some(pulse)) => Ok(state
            .store
            .pulse(pulse)
            .await
            .map_err(trouble)?
            .filter(|p| p.machine_id == machine_id)
            .map(|p| Stage::of_pulse(p.state()))),
        (None, None) => Ok(None),
    }
}

pub async fn thanks(
    state: web::Data<AppState>,
    path: web::Path<String>,
    q: web::Query<SessionQuery>,
) -> Result<HttpResponse, PageError> {
    let stage = stage(&state, &path, &q)
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
    let page = ThanksPage {
        name,
        status_url: format!("/p/{}/status?{}", path.as_str(), q.encoded()),
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
    let stage = stage(&state, &path, &q)
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
