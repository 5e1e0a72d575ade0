//! `GET /`: a small server-rendered page telling the owner the server is up and what to
//! configure next. (The full dashboard lives under /admin once it exists.)

use actix_web::{web, HttpResponse};
use askama::Template;

use super::AppState;
use crate::error::AppError;

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    version: &'static str,
    webhook_url: String,
    webhook_secret_set: bool,
    stripe_key_set: bool,
    api_token_set: bool,
    mqtt_connected: bool,
    broker: String,
    cabinets: usize,
    /// No dashboard account exists yet.
    needs_setup: bool,
}

pub async fn index(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let page = HomePage {
        version: env!("CARGO_PKG_VERSION"),
        webhook_url: format!("{}/webhooks/stripe", state.settings.public_url),
        webhook_secret_set: state.settings.stripe_webhook_secret.is_some(),
        stripe_key_set: state.settings.stripe_secret_key.is_some(),
        api_token_set: state.settings.api_token.is_some(),
        mqtt_connected: state.stats.is_connected(),
        broker: state.broker.clone(),
        cabinets: state.store.cabinets().await?.len(),
        needs_setup: state.store.count_users().await? == 0,
    };
    let html = page.render().map_err(AppError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(html))
}
