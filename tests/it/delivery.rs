//! Pulse delivery through broker outages and restarts, and the embedded broker's logins.

use coinpulse::domain::Keys;
use coinpulse::mqtt::connection::{connect_options, create_client, Target};
use coinpulse::mqtt::INTERNAL_USER;
use coinpulse::store::Store;
use coinpulse_cabinet::Event as SimEvent;

use crate::support::*;

/// The credentials the server uses on an embedded broker, for a broker the test starts.
fn internal_password() -> String {
    Keys::new(SECRET_KEY.as_bytes().to_vec()).internal_mqtt_password()
}

#[tokio::test]
async fn pulse_waits_for_an_unreachable_broker_and_arrives_once() {
    let db = TestDb::new().await;
    let port = free_port();
    let app = spawn_app_with(
        &db,
        AppOptions {
            mqtt_url: Some(format!("tcp://127.0.0.1:{port}")),
            mqtt_username: Some(INTERNAL_USER.into()),
            mqtt_password: Some(internal_password()),
            wait_connected: false,
            ..AppOptions::default()
        },
    )
    .await;
    assert_eq!(app.status().await["mqtt"], "disconnected");
    let machine_id = unique("cab");
    let secret = app.register(&machine_id, 100, "usd").await;

    let (status, body) = app.post_webhook(&paid(&machine_id, 200, "usd")).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("credited")),
        "stored while the broker is down"
    );
    assert_eq!(app.status().await["pulses_pending"], 1);

    // The broker comes up (the same embedded broker coinpulse runs, started by the test).
    let store = Store::connect(&db.url).await.unwrap();
    let (events, _events_rx) = tokio::sync::mpsc::channel(64);
    let _broker = coinpulse::mqtt::broker::start(
        coinpulse::mqtt::broker::BrokerOptions {
            listen: Some(format!("127.0.0.1:{port}").parse().unwrap()),
            tls: None,
            topics: coinpulse::mqtt::Topics::new(&app.topic_prefix),
            internal_password: internal_password(),
            server_client_id: "coinpulse-server".into(),
        },
        store,
        events,
    )
    .await
    .unwrap();
    let mut cab = app.connect_cabinet(&machine_id, &secret, true).await;
    assert_eq!(cab.expect_credit().await.credits, 2);
    app.eventually("outbox drained", || async {
        app.status().await["pulses_pending"] == 0
    })
    .await;

    // A later payment is the next thing the cabinet sees: the first was not sent twice.
    let (status, body) = app.post_webhook(&paid(&machine_id, 500, "usd")).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("credited")));
    assert_eq!(cab.expect_credit().await.credits, 5);
}

#[tokio::test]
async fn unpublished_pulse_is_delivered_after_a_restart() {
    let db = TestDb::new().await;
    let dead = free_port();
    let first = spawn_app_with(
        &db,
        AppOptions {
            mqtt_url: Some(format!("tcp://127.0.0.1:{dead}")),
            wait_connected: false,
            ..AppOptions::default()
        },
    )
    .await;
    let machine_id = unique("cab");
    let secret = first.register(&machine_id, 100, "usd").await;
    assert_eq!(
        first.post_webhook(&paid(&machine_id, 300, "usd")).await.1["outcome"],
        "credited"
    );
    first.stop.as_ref().expect("in-process app").stop().await;

    // Same database, now with the embedded broker.
    let second = spawn_embedded(&db).await;
    let mut cab = second.connect_cabinet(&machine_id, &secret, true).await;
    assert_eq!(cab.expect_credit().await.credits, 3);
    second
        .eventually("pulse marked published", || async {
            second.status().await["pulses_pending"] == 0
        })
        .await;
}

#[tokio::test]
async fn embedded_broker_refuses_wrong_and_unknown_credentials() {
    let db = TestDb::new().await;
    let app = spawn_embedded(&db).await;
    let machine_id = unique("cab");
    let secret = app.register(&machine_id, 100, "usd").await;
    let attempt = |user: &str, pass: &str| {
        let target = Target {
            uri: app.broker.clone(),
            username: Some(user.to_owned()),
            password: Some(pass.to_owned()),
            ca_file: None,
            client_cert: None,
            client_id: unique("probe"),
        };
        async move {
            let client = create_client(&target).unwrap();
            let result = client
                .connect(connect_options(&target, true, None).unwrap())
                .await;
            let _ = client.disconnect(None).await;
            result.is_ok()
        }
    };
    assert!(
        !attempt(&machine_id, "wrong-secret").await,
        "wrong password refused"
    );
    assert!(
        !attempt("nobody", &secret).await,
        "unknown username refused"
    );
    assert!(
        !attempt(INTERNAL_USER, "guess").await,
        "internal account needs its password"
    );
    assert!(!attempt("", "").await, "anonymous refused");
    assert!(
        attempt(&machine_id, &secret).await,
        "the right secret is accepted"
    );
}

#[tokio::test]
async fn unacked_pulses_are_redelivered_when_an_acking_cabinet_reconnects() {
    let db = TestDb::new().await;
    let app = spawn_embedded(&db).await;
    let mut cab = app.cabinet(100, "usd").await;
    // Teach the server that this cabinet acks.
    let (status, _) = app.post_webhook(&paid(&cab.machine_id, 100, "usd")).await;
    assert_eq!(status, 200);
    cab.expect_credit().await;
    app.eventually("first ack", || async {
        app.pulses(&cab.machine_id).await[0]["acked_at"].is_string()
    })
    .await;
    cab.sim.take().unwrap().disconnect().await;

    // Now a cabinet that receives but never acks (it "crashes" before crediting).
    let mut mute = app
        .connect_cabinet(&cab.machine_id, &cab.secret, false)
        .await;
    let (status, _) = app.post_webhook(&paid(&cab.machine_id, 300, "usd")).await;
    assert_eq!(status, 200);
    let lost = mute.expect_credit().await;
    mute.sim.take().unwrap().disconnect().await;

    // On its next connection it gets the unacknowledged pulse again, with the same id.
    let mut back = app
        .connect_cabinet(&cab.machine_id, &cab.secret, true)
        .await;
    let again = back.expect_credit().await;
    assert_eq!(again.id, lost.id);
    assert_eq!(again.credits, 3);
    app.eventually("redelivered pulse acked", || async {
        app.pulses(&cab.machine_id)
            .await
            .iter()
            .all(|p| p["acked_at"].is_string())
    })
    .await;
}

#[tokio::test]
async fn cabinet_rejects_a_forged_pulse() {
    let db = TestDb::new().await;
    let app = spawn_embedded(&db).await;
    let mut cab = app.cabinet(100, "usd").await;
    // Another cabinet on the same broker tries to forge credits for it.
    let mut other = app.cabinet(100, "usd").await;
    let topic = other
        .sim
        .as_ref()
        .unwrap()
        .topics()
        .coinpulse(&cab.machine_id);
    let forged = format!(
        r#"{{"id":"x","machineId":"{}","credits":99,"timestamp":"2024-07-01T12:00:00Z","source":"stripe","sig":"{}"}}"#,
        cab.machine_id,
        "ab".repeat(32)
    );
    other
        .sim
        .as_ref()
        .unwrap()
        .publish_raw(&topic, forged.as_bytes())
        .await
        .unwrap();
    let embedded = app.status().await["broker"]
        .as_str()
        .is_some_and(|b| b.starts_with("embedded"));
    if !embedded {
        // A broker without per-cabinet rules delivers it; the signature gives it away.
        match cab.next_event(10).await {
            Some(SimEvent::Rejected(why)) => assert!(why.contains("signature"), "{why}"),
            other => panic!("expected the forged pulse to be rejected, got {other:?}"),
        }
    } else {
        // The embedded broker does not even let another cabinet publish on this topic.
        assert_eq!(
            cab.next_event(2).await,
            None,
            "the forged pulse reached the cabinet"
        );
        assert!(app.status().await["mqtt_refused"].as_u64().unwrap() >= 1);
    }
    // Nothing was booked for the forgery, and the forger heard nothing back.
    assert!(app.pulses(&cab.machine_id).await.is_empty());
    assert_eq!(
        other.next_event(1).await,
        None,
        "the forger received something"
    );
}

/// Many pulses for a seed cabinet at once, with the one-second sweep running under them:
/// a pulse whose handed mark was not yet committed must never be sent a second time.
#[tokio::test]
async fn sweeps_never_repeat_a_pulse_to_a_seed_cabinet() {
    let db = TestDb::new().await;
    let app = std::sync::Arc::new(spawn_app(&db).await);
    let machine_id = unique("cab");
    let secret = app.register(&machine_id, 100, "usd").await;
    let mut seed = app.connect_cabinet(&machine_id, &secret, false).await;
    if std::env::var("TEST_MQTT_URL").is_ok_and(|u| !u.is_empty()) {
        app.always_available(&machine_id).await;
    }
    let mut tasks = Vec::new();
    for _ in 0..300 {
        let app = app.clone();
        let id = machine_id.clone();
        tasks.push(tokio::spawn(async move {
            app.post_webhook(&paid(&id, 100, "usd")).await.0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let mut credited = std::collections::HashSet::new();
    let mut repeats = 0;
    // Three sweeps' worth of listening after the last credit.
    while let Some(ev) = seed
        .next_event(if credited.len() < 300 { 15 } else { 3 })
        .await
    {
        match ev {
            SimEvent::Credit(p) => assert!(credited.insert(p.id)),
            SimEvent::Duplicate(_) => repeats += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((credited.len(), repeats), (300, 0));
    assert_eq!(app.status().await["pulses_pending"], 0);
}
