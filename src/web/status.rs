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
    // What the embedded broker sees right now, not what cabinets last announced.
    let cabinets = match &state.presence {
        Some(p) => {
            let links: serde_json::Map<String, serde_json::Value> = p
                .links()
                .await
                .into_iter()
                .map(|(id, link)| (id, serde_json::json!(link)))
                .collect();
            serde_json::Value::Object(links)
        }
        None => serde_json::Value::Null,
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
        "mqtt_refused": state.presence.as_ref().map(|p| p.refused()),
        "acks_ignored": state.stats.acks_ignored.load(Ordering::Relaxed),
        "mqtt_tls_port": state.mqtt_tls_port,
        "pulse_public_key": state.keys.pulse_public_key_hex(),
        "cabinets": cabinets,
    });
    if db_ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
