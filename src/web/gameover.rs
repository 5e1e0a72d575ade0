//! `POST /gameover`, the seed's HTTP path for a cabinet's game over. Authenticated with the
//! cabinet's own credentials (HTTP Basic `machine_id:secret`).

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use paho_mqtt as paho;
use serde::Deserialize;

use super::AppState;
use crate::domain::{verify_cabinet_secret, wire_time};
use crate::error::AppError;
use crate::mqtt::GameOverMessage;
use crate::writer::PlayInput;

#[derive(Debug, Deserialize)]
pub struct GameOverBody {
    #[serde(alias = "machineId")]
    machine_id: Option<String>,
    score: Option<i64>,
    #[serde(alias = "playSeconds")]
    play_seconds: Option<i64>,
}

fn basic_credentials(req: &HttpRequest) -> Option<(String, String)> {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

pub async fn gameover(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<GameOverBody>,
) -> Result<HttpResponse, AppError> {
    let unauthorized = || {
        AppError::Unauthorized(
            "use HTTP Basic auth with the cabinet's machine_id and secret".into(),
        )
    };
    let (user, pass) = basic_credentials(&req).ok_or_else(unauthorized)?;
    let cabinet = state.store.cabinet(&user).await?;
    let Some(cabinet) = cabinet.filter(|c| verify_cabinet_secret(&pass, &c.secret_hash)) else {
        tracing::warn!("game over refused: bad cabinet credentials");
        return Err(unauthorized());
    };
    if let Some(claimed) = &body.machine_id {
        if claimed != &cabinet.machine_id {
            return Err(AppError::Forbidden(format!(
                "machine_id {claimed:?} does not match the authenticated cabinet"
            )));
        }
    }
    if body.score.is_some_and(|s| s < 0) || body.play_seconds.is_some_and(|s| s < 0) {
        return Err(AppError::Unprocessable(
            "score and play_seconds must not be negative".into(),
        ));
    }
    let message = GameOverMessage {
        machine_id: cabinet.machine_id.clone(),
        status: "game_over".into(),
        timestamp: Some(wire_time(chrono::Utc::now())),
        score: body.score,
        play_seconds: body.play_seconds,
        id: Some(uuid::Uuid::now_v7().to_string()),
    };
    let play = PlayInput::from_gameover(&message, "http");
    let play_id = play.id.clone();
    let logged = state.writer.play(play).await?;
    // Tell any other listener, as the seed did. The message carries its id, so the server's
    // own subscription recognises it and does not log the play twice.
    let payload = serde_json::to_string(&message).expect("serialisable");
    let topic = state.topics.gameover(&cabinet.machine_id);
    if state.stats.is_connected() {
        let token = state
            .mqtt
            .publish(paho::Message::new(topic, payload, paho::QOS_1));
        match tokio::time::timeout(std::time::Duration::from_secs(2), token).await {
            Ok(Ok(())) => {}
            // The play is logged either way; only the courtesy broadcast is missing.
            _ => {
                tracing::warn!(machine_id = %cabinet.machine_id, "could not republish game over on MQTT")
            }
        }
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "status": "game_over",
        "machine_id": cabinet.machine_id,
        "play_id": if logged { Some(play_id) } else { None },
    })))
}
