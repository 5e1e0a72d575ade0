//! The cabinet agent binary (`coinpulse-cabinet`) against the real server and broker:
//! each paid pulse applied exactly once through `kill -9` and restarts, forged and
//! replayed pulses refused, acks only after the output succeeded, game over from the
//! control socket logged as a play with its length.

use std::time::Duration;

use coinpulse::domain::{sign_pulse, wire_time, Keys, PulseMessage, PulseSource};
use paho_mqtt as paho;

use crate::support::*;

async fn acked(app: &TestApp, machine_id: &str) -> Vec<(String, bool)> {
    app.pulses(machine_id)
        .await
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_owned(),
                p["acked_at"].is_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn each_paid_pulse_is_applied_once_through_a_kill_between_receipt_and_ack() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let id = unique("cab");
    let secret = app.register(&id, 100, "usd").await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = AgentProcess::start(&app, &id, &secret, &recording_output(dir.path())).await;

    assert_eq!(app.post_webhook(&paid(&id, 200, "usd")).await.0, 200);
    app.eventually("the first pulse is applied and acked", || async {
        applied_lines(dir.path()).len() == 1 && acked(&app, &id).await.iter().all(|p| p.1)
    })
    .await;
    let first = acked(&app, &id).await[0].0.clone();
    assert_eq!(applied_lines(dir.path())[0], format!("{first} 2 stripe"));

    // The second pulse's output starts (and records the coins) but the power goes before
    // the agent can record it as applied and ack it.
    std::fs::write(dir.path().join("hang"), "").unwrap();
    assert_eq!(app.post_webhook(&paid(&id, 100, "usd")).await.0, 200);
    app.eventually("the second pulse's output ran", || async {
        applied_lines(dir.path()).len() == 2
    })
    .await;
    agent.kill9();
    std::fs::remove_file(dir.path().join("hang")).unwrap();
    let second = acked(&app, &id)
        .await
        .into_iter()
        .find(|p| p.0 != first)
        .unwrap();
    assert!(!second.1, "never acked");

    // Back up: the server offers the unacked pulse again; the agent reports it and does
    // not apply it a second time.
    agent.restart(&app).await;
    agent.wait_for_log("was interrupted", 1).await;
    agent.wait_for_log("not applied, not acknowledged", 1).await;
    let (code, status) = agent.cli(&["status"]).await;
    assert_eq!(code, 1, "a pulse waits for the owner:\n{status}");
    assert!(
        status.contains("INTERRUPTED") && status.contains(&second.0),
        "{status}"
    );
    assert!(
        status.contains(&first),
        "the last applied pulse is listed:\n{status}"
    );
    assert!(status.contains("connected to"), "{status}");
    assert_eq!(applied_lines(dir.path()).len(), 2, "not applied again");

    // The owner checks the cabinet: the coins were there.
    let (code, out) = agent.cli(&["resolve", &second.0, "--applied"]).await;
    assert_eq!(code, 0, "{out}");
    app.eventually("the resolved pulse is acked", || async {
        acked(&app, &id).await.iter().all(|p| p.1)
    })
    .await;
    let (code, status) = agent.cli(&["status"]).await;
    assert_eq!(code, 0, "{status}");
    assert!(status.contains("nothing left unapplied"), "{status}");

    // And life goes on: the next payment is applied once.
    assert_eq!(app.post_webhook(&paid(&id, 300, "usd")).await.0, 200);
    app.eventually("the third pulse is applied and acked", || async {
        applied_lines(dir.path()).len() == 3 && acked(&app, &id).await.iter().all(|p| p.1)
    })
    .await;
    // One more restart: everything is redelivered-or-not as the server likes; nothing is
    // applied again.
    agent.kill9();
    agent.restart(&app).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lines = applied_lines(dir.path());
    assert_eq!(lines.len(), 3, "{lines:?}");
    let ids: std::collections::HashSet<_> =
        lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(ids.len(), 3, "each pulse applied once: {lines:?}");
}

#[tokio::test]
async fn a_failed_output_is_not_acked_and_is_applied_when_offered_again() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let id = unique("cab");
    let secret = app.register(&id, 100, "usd").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fail"), "").unwrap();
    let mut agent = AgentProcess::start(&app, &id, &secret, &recording_output(dir.path())).await;

    assert_eq!(app.post_webhook(&paid(&id, 100, "usd")).await.0, 200);
    agent.wait_for_log("no credits given", 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        acked(&app, &id).await.iter().all(|p| !p.1),
        "a pulse whose output failed is never acked"
    );
    assert!(applied_lines(dir.path()).is_empty());

    // Fixed; the cabinet reconnects and the server offers the pulse again.
    std::fs::remove_file(dir.path().join("fail")).unwrap();
    agent.kill9();
    agent.restart(&app).await;
    app.eventually("applied and acked on redelivery", || async {
        applied_lines(dir.path()).len() == 1 && acked(&app, &id).await.iter().all(|p| p.1)
    })
    .await;
}

#[tokio::test]
async fn game_over_through_the_control_socket_is_one_play_with_its_length() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let id = unique("cab");
    let secret = app.register(&id, 100, "usd").await;
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start(&app, &id, &secret, &recording_output(dir.path())).await;

    assert_eq!(app.post_webhook(&paid(&id, 100, "usd")).await.0, 200);
    app.eventually("credited", || async {
        applied_lines(dir.path()).len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (code, out) = agent.cli(&["gameover", "--score", "4321"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("game over sent"), "{out}");
    app.eventually("one play logged", || async {
        app.plays(&id).await.len() == 1
    })
    .await;
    let play = &app.plays(&id).await[0];
    assert_eq!(play["score"], 4321);
    let secs = play["play_seconds"].as_i64().unwrap();
    assert!((2..30).contains(&secs), "measured from the credit: {secs}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.plays(&id).await.len(), 1, "exactly one");
}

/// The broker's own login, which may publish on any cabinet's topic: what an attacker who
/// took over the broker (or a misconfigured external one) could do.
async fn server_login(app: &TestApp) -> paho::AsyncClient {
    let client = paho::AsyncClient::new(
        paho::CreateOptionsBuilder::new()
            .server_uri(&app.broker)
            .client_id(unique("forger"))
            .persistence(None)
            .finalize(),
    )
    .unwrap();
    let keys = Keys::new(SECRET_KEY.as_bytes().to_vec());
    client
        .connect(
            paho::ConnectOptionsBuilder::new()
                .user_name(coinpulse::mqtt::INTERNAL_USER)
                .password(keys.internal_mqtt_password())
                .finalize(),
        )
        .await
        .expect("the server's login");
    std::mem::forget(client.clone());
    client
}

fn pulse(machine_id: &str, age: chrono::Duration) -> PulseMessage {
    PulseMessage {
        id: uuid::Uuid::now_v7().to_string(),
        machine_id: machine_id.to_owned(),
        credits: 5,
        timestamp: wire_time(chrono::Utc::now() - age),
        source: PulseSource::Operator,
    }
}

#[tokio::test]
async fn forged_stale_foreign_and_replayed_pulses_are_refused() {
    let db = TestDb::new().await;
    let app = spawn_embedded(&db).await;
    let id = unique("cab");
    let secret = app.register(&id, 100, "usd").await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = AgentProcess::start(&app, &id, &secret, &recording_output(dir.path())).await;
    let forger = server_login(&app).await;
    let topic = format!("{}/{id}/coinpulse", app.topic_prefix);
    let send = |payload: String| {
        let forger = forger.clone();
        let topic = topic.clone();
        async move {
            forger
                .publish(paho::Message::new(topic, payload, paho::QOS_1))
                .await
                .unwrap();
        }
    };
    let keys = Keys::new(SECRET_KEY.as_bytes().to_vec());
    let server_key = keys.pulse_signing_key();
    let fresh = chrono::Duration::zero();

    // Signed with the cabinet's secret (what a sniffed password gives) but not the
    // server's key.
    let other_key = ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]);
    send(sign_pulse(&pulse(&id, fresh), &secret, &other_key)).await;
    agent.wait_for_log("signature does not match", 1).await;
    // The server's signature, but another cabinet's pulse.
    send(sign_pulse(
        &pulse("some-other-cab", fresh),
        &secret,
        server_key,
    ))
    .await;
    agent.wait_for_log("not this cabinet", 1).await;
    // The server's signature, an hour old: a recorded pulse played back.
    send(sign_pulse(
        &pulse(&id, chrono::Duration::hours(1)),
        &secret,
        server_key,
    ))
    .await;
    agent.wait_for_log("s old (limit 600 s)", 1).await;
    // Not a pulse at all.
    send("{\"credits\": 99}".into()).await;
    agent.wait_for_log("pulse refused", 4).await;
    assert!(
        applied_lines(dir.path()).is_empty(),
        "nothing forged was applied"
    );

    // A genuine one is applied; the same bytes replayed after a restart are not.
    let genuine = sign_pulse(&pulse(&id, fresh), &secret, server_key);
    send(genuine.clone()).await;
    agent
        .wait_for_log("credits given and acknowledged", 1)
        .await;
    assert_eq!(applied_lines(dir.path()).len(), 1);
    agent.kill9();
    agent.restart(&app).await;
    send(genuine).await;
    agent.wait_for_log("already applied", 1).await;
    assert_eq!(
        applied_lines(dir.path()).len(),
        1,
        "a replay is not applied"
    );
}
