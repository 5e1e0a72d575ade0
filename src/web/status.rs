//! Health: `GET /status` (liveness, the seed's answer: 200 while the process answers, with
//! database and broker state in the body),
//! `GET /ready` (for load balancers: 503 while the database or broker is unreachable) and
//! `GET /metrics` (Prometheus).

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::{web, HttpResponse};

use super::AppState;

/// How long the health answers wait for the database: probes give up after a second or so,
/// and a database that cannot answer a ping sooner is not one to send traffic to.
const DB_PATIENCE: Duration = Duration::from_millis(500);

async fn database_answers(state: &AppState) -> bool {
    tokio::time::timeout(DB_PATIENCE, state.store.ping())
        .await
        .is_ok_and(|r| r.is_ok())
}

pub async fn status(state: web::Data<AppState>) -> HttpResponse {
    let db_ok = database_answers(&state).await;
    let pending = if db_ok {
        tokio::time::timeout(DB_PATIENCE, state.store.count_unpublished())
            .await
            .ok()
            .and_then(Result::ok)
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
    // Liveness: answering at all is the point. A database or broker outage shows in the
    // body and fails /ready; restarting this process would not end it.
    HttpResponse::Ok().json(body)
}

/// Ready to take traffic: the database answers and the server's MQTT connection is up.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let database = database_answers(&state).await;
    let mqtt = state.stats.is_connected();
    let body = serde_json::json!({
        "ready": database && mqtt,
        "database": if database { "ok" } else { "unreachable" },
        "mqtt": if mqtt { "connected" } else { "disconnected" },
    });
    if database && mqtt {
        HttpResponse::Ok().json(body)
    } else {
        tracing::warn!(database, mqtt, "not ready");
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus text format, for a scraper holding METRICS_TOKEN (or API_TOKEN).
pub async fn metrics(
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, crate::error::AppError> {
    let settings = &state.settings;
    let (token, name) = match (&settings.metrics_token, &settings.api_token) {
        (Some(t), _) => (t, "METRICS_TOKEN"),
        (None, Some(t)) => (t, "API_TOKEN"),
        (None, None) => {
            return Err(crate::error::AppError::NotFound(
                "metrics are off: set METRICS_TOKEN".into(),
            ))
        }
    };
    super::api::bearer_is(&req, token.expose(), name)?;
    let (pulses_waiting, oldest) = state.store.outbox_backlog().await?;
    let oldest_waiting_seconds = oldest
        .as_deref()
        .and_then(crate::domain::parse_db_time)
        .map(|t| (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0)
        .unwrap_or(0.0);
    let cabinets_connected = match &state.presence {
        Some(p) => p.connected_count().await,
        None => state.store.count_online_cabinets().await?.max(0) as usize,
    };
    let text = crate::metrics::render(&crate::metrics::Snapshot {
        mqtt_connected: state.stats.is_connected(),
        cabinets_connected,
        pulses_waiting,
        oldest_waiting_seconds,
        review_queue: state.store.count_review().await?,
    });
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}
