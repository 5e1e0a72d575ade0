//! `GET /status`: the seed's health answer, plus database and broker state.

use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};

use super::AppState;

pub async fn status(state: web::Data<AppState>) -> HttpResponse {
    let db_ok = state.store.ping().await.is_ok();
    let pending = if db_ok {
        state.store.count_unpublished().await.ok()
    } else {
        None
    };
    let body = serde_json::json!({
        "status": "up",
        "message": "API is running",
        "database": if db_ok { "ok" } else { "error" },
        "mqtt": if state.stats.is_connected() { "connected" } else { "disconnected" },
        "broker": state.broker,
        "mqtt_port": state.mqtt_port,
        "version": env!("CARGO_PKG_VERSION"),
        "pulses_pending": pending,
        "mqtt_received": state.stats.received.load(Ordering::Relaxed),
        "mqtt_rejected": state.stats.rejected.load(Ordering::Relaxed),
        "pulses_published": state.stats.published.load(Ordering::Relaxed),
    });
    if db_ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
