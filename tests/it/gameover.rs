//! Game over from cabinets, over MQTT and the seed's HTTP path; malformed and forged messages.

use base64::Engine;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn game_over_over_mqtt_logs_one_play() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let cab = app.cabinet(100, "usd").await;
    cab.sim
        .as_ref()
        .unwrap()
        .game_over(Some(4200))
        .await
        .unwrap();
    app.eventually("play logged", || async {
        app.plays(&cab.machine_id).await.len() == 1
    })
    .await;
    let play = &app.plays(&cab.machine_id).await[0];
    assert_eq!(play["via"], "mqtt");
    assert_eq!(play["score"], 4200);
}

#[tokio::test]
async fn game_over_over_http_logs_one_play_and_is_published() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let cab = app.cabinet(100, "usd").await;
    // Let the cabinet's own "online" arrive first, so the count below is the echo's.
    let path = format!("/cabinets/{}", cab.machine_id);
    app.eventually("online", || async {
        app.get(&path).await["online"] == true
    })
    .await;
    let before = app.status().await["mqtt_received"].as_u64().unwrap();
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", cab.machine_id, cab.secret));
    let res = app
        .http
        .post(format!("{}/gameover", app.base))
        .header("Authorization", format!("Basic {auth}"))
        .json(&json!({"machine_id": cab.machine_id, "score": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["play_id"].is_string());

    // The server hears its own republished message; wait until it has, then count.
    app.eventually("echo received", || async {
        app.status().await["mqtt_received"].as_u64().unwrap() > before
    })
    .await;
    cab.sim.as_ref().unwrap().game_over(None).await.unwrap();
    app.eventually("second play", || async {
        app.plays(&cab.machine_id).await.len() >= 2
    })
    .await;
    let plays = app.plays(&cab.machine_id).await;
    assert_eq!(
        plays.len(),
        2,
        "HTTP play logged once, MQTT play once: {plays:?}"
    );
    assert_eq!(plays.iter().filter(|p| p["via"] == "http").count(), 1);
}

#[tokio::test]
async fn http_game_over_needs_the_cabinets_own_credentials() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let cab = app.cabinet(100, "usd").await;
    let other = app.cabinet(100, "usd").await;
    let post = |user: &str, pass: &str, body: serde_json::Value| {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        app.http
            .post(format!("{}/gameover", app.base))
            .header("Authorization", format!("Basic {auth}"))
            .json(&body)
            .send()
    };
    let wrong = post(
        &cab.machine_id,
        "nope",
        json!({"machine_id": cab.machine_id}),
    )
    .await
    .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let unsigned = app
        .http
        .post(format!("{}/gameover", app.base))
        .json(&json!({"machine_id": cab.machine_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);
    let impostor = post(
        &other.machine_id,
        &other.secret,
        json!({"machineId": cab.machine_id}),
    )
    .await
    .unwrap();
    assert_eq!(impostor.status().as_u16(), 403);
    assert!(app.plays(&cab.machine_id).await.is_empty());
}

#[tokio::test]
async fn malformed_and_mismatched_mqtt_messages_are_counted_and_ignored() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let cab = app.cabinet(100, "usd").await;
    let sim = cab.sim.as_ref().unwrap();
    let topics = sim.topics().clone();
    let before = app.status().await["mqtt_rejected"].as_u64().unwrap();
    let bad: Vec<(String, Vec<u8>)> = vec![
        (topics.gameover(&cab.machine_id), b"not json".to_vec()),
        (topics.gameover(&cab.machine_id), json!({"machineId": "someone-else", "status": "game_over", "timestamp": "2024-07-01T12:30:00Z"}).to_string().into_bytes()),
        (topics.gameover(&cab.machine_id), json!({"machineId": cab.machine_id, "status": "dancing"}).to_string().into_bytes()),
        (topics.ack(&cab.machine_id), b"[1,2,3]".to_vec()),
        (topics.status(&cab.machine_id), b"sleepy".to_vec()),
    ];
    let n = bad.len() as u64;
    for (topic, payload) in bad {
        sim.publish_raw(&topic, &payload).await.unwrap();
    }
    app.eventually("all rejected", || async {
        app.status().await["mqtt_rejected"].as_u64().unwrap() >= before + n
    })
    .await;
    assert_eq!(
        app.status().await["mqtt_rejected"].as_u64().unwrap(),
        before + n
    );
    assert!(
        app.plays(&cab.machine_id).await.is_empty(),
        "no play from a bad message"
    );
    // The server is still fine: a good message is logged.
    sim.game_over(None).await.unwrap();
    app.eventually("good play", || async {
        app.plays(&cab.machine_id).await.len() == 1
    })
    .await;
}

#[tokio::test]
async fn cabinet_status_is_tracked() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let mut cab = app.cabinet(100, "usd").await;
    let path = format!("/cabinets/{}", cab.machine_id);
    app.eventually("online", || async {
        app.get(&path).await["online"] == true
    })
    .await;
    assert!(app.get(&path).await["last_seen_at"].is_string());
    cab.sim.take().unwrap().disconnect().await;
    app.eventually("offline", || async {
        app.get(&path).await["online"] == false
    })
    .await;
}
