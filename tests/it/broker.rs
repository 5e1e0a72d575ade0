//! Per-cabinet rights on the embedded broker, tried with real MQTT clients over TCP: what
//! cabinet A's login may and may not do to cabinet B.

use std::time::Duration;

use coinpulse::mqtt::connection::{create_client, Target};
use coinpulse_cabinet::Event as SimEvent;
use paho_mqtt as paho;
use reqwest::Method;
use serde_json::json;
use tokio::sync::mpsc;

use crate::support::*;

/// A bare MQTT client, logged in as whoever the test says.
struct Raw {
    client: paho::AsyncClient,
    rx: mpsc::UnboundedReceiver<paho::Message>,
}

async fn login(app: &TestApp, user: &str, pass: &str, client_id: &str) -> Result<Raw, paho::Error> {
    login_at(&app.broker, user, pass, client_id).await
}

async fn login_at(uri: &str, user: &str, pass: &str, client_id: &str) -> Result<Raw, paho::Error> {
    let target = Target {
        uri: uri.to_owned(),
        username: Some(user.into()),
        password: Some(pass.into()),
        ca_file: None,
        client_cert: None,
        client_id: client_id.into(),
    };
    let client = create_client(&target)?;
    let (tx, rx) = mpsc::unbounded_channel();
    client.set_message_callback(move |_, m| {
        if let Some(m) = m {
            let _ = tx.send(m);
        }
    });
    let mut b = paho::ConnectOptionsBuilder::new();
    b.user_name(user)
        .password(pass)
        .clean_session(true)
        .connect_timeout(Duration::from_secs(5));
    client.connect(b.finalize()).await?;
    Ok(Raw { client, rx })
}

/// What the embedded broker has refused so far (logins, subscriptions, publishes).
async fn refused(app: &TestApp) -> u64 {
    app.status().await["mqtt_refused"].as_u64().unwrap()
}

/// Whether the broker granted a subscription (SUBACK not 0x80).
async fn granted(c: &paho::AsyncClient, filter: &str) -> bool {
    match c.subscribe(filter, paho::QOS_1).await {
        Ok(r) => !matches!(r.subscribe_response(), Some(q) if q >= 0x80),
        Err(_) => false,
    }
}

async fn publish(c: &paho::AsyncClient, topic: &str, payload: &str, retained: bool) {
    let msg = if retained {
        paho::Message::new_retained(topic, payload, paho::QOS_1)
    } else {
        paho::Message::new(topic, payload, paho::QOS_1)
    };
    // A refused publish may still be PUBACKed (MQTT 3.1.1 has no way to say no) or may
    // drop the connection; either way nothing may come of it.
    let _ = tokio::time::timeout(Duration::from_secs(2), c.publish(msg)).await;
}

#[tokio::test]
async fn a_cabinet_login_cannot_touch_another_cabinet() {
    let db = TestDb::new().await;
    let app = spawn_embedded(&db).await;
    let t = |id: &str, kind: &str| format!("{}/{id}/{kind}", app.topic_prefix);

    let mut b = app.cabinet(100, "usd").await;
    let a_id = unique("cab");
    let a_secret = app.register(&a_id, 100, "usd").await;
    let mut a = login(&app, &a_id, &a_secret, &format!("a-{a_id}"))
        .await
        .expect("A logs in");

    // Subscriptions: only A's own pulse topic.
    assert!(
        !granted(&a.client, &t("+", "coinpulse")).await,
        "wildcard over all cabinets"
    );
    assert!(
        !granted(
            &a.client,
            &format!("{}/{}/#", app.topic_prefix, b.machine_id)
        )
        .await
    );
    assert!(!granted(&a.client, &t(&b.machine_id, "coinpulse")).await);
    assert!(!granted(&a.client, &t(&b.machine_id, "ack")).await);
    assert!(!granted(&a.client, "#").await);
    assert!(!granted(&a.client, "$SYS/#").await);
    assert!(
        granted(&a.client, &t(&a_id, "coinpulse")).await,
        "its own pulses"
    );

    // B is paid: B gets its pulse, A sees nothing of it or of B's ack.
    let (code, _) = app.post_webhook(&paid(&b.machine_id, 100, "usd")).await;
    assert_eq!(code, 200);
    let pulse = b.expect_credit().await;
    if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), a.rx.recv()).await {
        panic!("A received {} on {}", m.payload_str(), m.topic());
    }

    // Publishes on B's topics, each of which used to have an effect.
    let plays_before = app.plays(&b.machine_id).await.len();
    let refused_before = refused(&app).await;
    let gameover = json!({"machineId": b.machine_id, "status": "game_over",
        "timestamp": "2024-07-01T12:30:00Z"})
    .to_string();
    publish(&a.client, &t(&b.machine_id, "gameover"), &gameover, false).await;
    let forged = json!({"id": "forged-1", "machineId": b.machine_id, "credits": 9,
        "timestamp": "2024-07-01T12:30:00Z", "source": "stripe", "sig": "00"})
    .to_string();
    publish(&a.client, &t(&b.machine_id, "coinpulse"), &forged, false).await;
    publish(&a.client, &t(&b.machine_id, "status"), "offline", true).await;
    app.eventually("the broker refused all three publishes", || async {
        refused(&app).await >= refused_before + 3
    })
    .await;
    let cab = app.get(&format!("/cabinets/{}", b.machine_id)).await;
    assert_eq!(
        cab["online"], true,
        "A's retained offline must not take B offline: {cab}"
    );
    let page = app.text(&format!("/p/{}", b.machine_id)).await;
    assert!(
        !page.contains("offline"),
        "B's pay page still takes payments"
    );

    // A second pulse for B, left unacked by a seed-like B, then A "acks" it.
    b.sim.take().unwrap().disconnect().await;
    let mut seed_b = app.connect_cabinet(&b.machine_id, &b.secret, false).await;
    let (code, _) = app.post_webhook(&paid(&b.machine_id, 100, "usd")).await;
    assert_eq!(code, 200);
    // B acked before, so the server may send it unacked pulses again: skip the first one.
    let second = loop {
        let p = seed_b.expect_credit().await;
        if p.id != pulse.id {
            break p;
        }
    };
    let ack = json!({"id": second.id}).to_string();
    let refused_before = refused(&app).await;
    publish(&a.client, &t(&b.machine_id, "ack"), &ack, false).await;
    app.eventually("the broker refused A's ack", || async {
        refused(&app).await > refused_before
    })
    .await;
    assert_eq!(
        app.plays(&b.machine_id).await.len(),
        plays_before,
        "no play logged for B"
    );
    // Repeats of B's own pulses are the server's redeliveries; anything else came from A.
    while let Some(ev) = seed_b.next_event(1).await {
        assert!(
            matches!(ev, SimEvent::Duplicate(_)),
            "B got something from A's publishes: {ev:?}"
        );
    }
    let pulses = app.pulses(&b.machine_id).await;
    let row = pulses.iter().find(|p| p["id"] == second.id).unwrap();
    assert!(
        row["acked_at"].is_null(),
        "A's ack must not count for B: {row}"
    );
    assert!(
        pulses
            .iter()
            .any(|p| p["id"] == pulse.id && !p["acked_at"].is_null()),
        "B's own ack counted"
    );
    assert!(app.status().await["mqtt_refused"].as_u64().unwrap() >= 10);

    // What A may do still works: its own game over is logged.
    let own =
        json!({"machineId": a_id, "status": "game_over", "timestamp": "2024-07-01T12:31:00Z"})
            .to_string();
    publish(&a.client, &t(&a_id, "gameover"), &own, false).await;
    app.eventually("A's own game over is logged", || async {
        app.plays(&a_id).await.len() == 1
    })
    .await;
}

#[tokio::test]
async fn client_ids_cannot_be_taken_over() {
    let db = TestDb::new().await;
    let app = spawn_embedded(&db).await;
    let mut b = app.cabinet(100, "usd").await;
    let a_id = unique("cab");
    let a_secret = app.register(&a_id, 100, "usd").await;

    // B's simulator connects as "cabinet-<id>": A may not take that id.
    let stolen = login(&app, &a_id, &a_secret, &format!("cabinet-{}", b.machine_id)).await;
    assert!(stolen.is_err(), "A took over B's client id");
    // Nor the server's.
    let server_id = app.status().await;
    assert_eq!(server_id["mqtt"], "connected");
    let as_server = login(&app, &a_id, &a_secret, &app.server_client_id).await;
    assert!(as_server.is_err(), "a cabinet took the server's client id");

    // B and the server are still connected: a payment still reaches B. (A window, not a
    // wait: a taken-over connection would show as dropped within it.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.status().await["mqtt"], "connected");
    let (code, _) = app.post_webhook(&paid(&b.machine_id, 200, "usd")).await;
    assert_eq!(code, 200);
    assert_eq!(b.expect_credit().await.credits, 2);

    // Wrong secrets and unknown users are refused too.
    assert!(login(&app, &a_id, "wrong", "x1").await.is_err());
    assert!(login(&app, "nobody", &a_secret, "x2").await.is_err());
}

#[tokio::test]
async fn disabled_cabinets_are_refused_and_disconnected() {
    let db = TestDb::new().await;
    let app = spawn_embedded(&db).await;
    let id = unique("cab");
    let secret = app.register(&id, 100, "usd").await;
    let raw = login(&app, &id, &secret, &format!("raw-{id}"))
        .await
        .expect("logs in");
    let cab = app.get(&format!("/cabinets/{id}")).await;
    assert_eq!(cab["connected"], true, "{cab}");

    let (code, body) = app
        .api(
            Method::PATCH,
            &format!("/cabinets/{id}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    app.eventually("the disabled cabinet is disconnected", || async {
        !raw.client.is_connected()
    })
    .await;
    assert!(
        login(&app, &id, &secret, &format!("raw2-{id}"))
            .await
            .is_err(),
        "disabled cabinet logged in"
    );
    let cab = app.get(&format!("/cabinets/{id}")).await;
    assert_eq!(cab["connected"], false, "{cab}");
}

/// Verifies a payload the way docs/broker.md tells a cabinet to, in Python with the
/// `cryptography` package: an implementation that shares no code with the server.
const PY_VERIFY: &str = r#"
import hashlib, hmac, json, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
payload, public_hex, secret = sys.stdin.read(), sys.argv[1], sys.argv[2]
at = payload.index(',"sig_ed25519":"')
body = payload[:at] + "}"
sig = bytes.fromhex(payload[at + len(',"sig_ed25519":"'):][:128])
Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex)).verify(sig, body.encode())
cut = payload.rindex(',"sig":"')
mac = hmac.new(secret.encode(), (payload[:cut] + "}").encode(), hashlib.sha256).hexdigest()
assert mac == json.loads(payload)["sig"], "hmac"
assert list(json.loads(body)) == ["id", "machineId", "credits", "timestamp", "source"]
print("ok")
"#;

fn py_verify(payload: &str, public_hex: &str, secret: &str) -> bool {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args(["-c", PY_VERIFY, public_hex, secret])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(payload.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        eprintln!("python verifier: {}", String::from_utf8_lossy(&out.stderr));
    }
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok"
}

#[tokio::test]
async fn status_shows_live_connections_and_pulses_verify_with_the_public_key() {
    let db = TestDb::new().await;
    let app = spawn_embedded(&db).await;
    let mut c = app.cabinet(100, "usd").await;
    let status = app.status().await;
    let public_hex = status["pulse_public_key"].as_str().unwrap().to_owned();
    assert_eq!(public_hex.len(), 64);
    assert_eq!(
        status["cabinets"][&c.machine_id]["connected"], true,
        "{status}"
    );
    assert_eq!(
        status["cabinets"][&c.machine_id]["subscribed"], true,
        "{status}"
    );

    // A second login of the same cabinet sees the raw payload.
    let mut raw = login(
        &app,
        &c.machine_id,
        &c.secret,
        &format!("raw-{}", c.machine_id),
    )
    .await
    .unwrap();
    assert!(
        granted(
            &raw.client,
            &format!("{}/{}/coinpulse", app.topic_prefix, c.machine_id)
        )
        .await
    );
    let (code, _) = app.post_webhook(&paid(&c.machine_id, 300, "usd")).await;
    assert_eq!(code, 200);
    let p = c.expect_credit().await;
    let msg = tokio::time::timeout(Duration::from_secs(10), raw.rx.recv())
        .await
        .unwrap()
        .unwrap();
    let payload = msg.payload_str().to_string();
    assert!(payload.contains(&p.id));

    let key = coinpulse::domain::parse_public_key(&public_hex).unwrap();
    assert_eq!(
        coinpulse::domain::verify_pulse_ed25519(payload.as_bytes(), &key)
            .unwrap()
            .credits,
        3
    );
    assert!(
        py_verify(&payload, &public_hex, &c.secret),
        "independent verifier accepts it"
    );
    let tampered = payload.replace("\"credits\":3", "\"credits\":30");
    assert!(
        !py_verify(&tampered, &public_hex, &c.secret),
        "independent verifier refuses a tampered pulse"
    );

    c.sim.take().unwrap().disconnect().await;
    let _ = raw.client.disconnect(None).await;
    app.eventually("the broker reports the cabinet gone", || async {
        app.status().await["cabinets"][&c.machine_id]["connected"] == false
    })
    .await;
    // That one pulse was all it got: nothing else is credited afterwards. (A repeat of the
    // same pulse is allowed: the raw login's subscription, if the server hears of it before
    // the ack, redelivers it, and the cabinet knows it by id.)
    while let Some(ev) = c.next_event(1).await {
        assert!(
            matches!(ev, SimEvent::GameOverSent { .. }) || ev == SimEvent::Duplicate(p.id.clone()),
            "after its one credit: {ev:?}"
        );
    }
}

#[tokio::test]
async fn cabinets_connect_over_tls_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coinpulse"))
        .args([
            "tls",
            "self-signed",
            "--host",
            "127.0.0.1",
            "--host",
            "localhost",
        ])
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the private key is owner-only");
    }

    let db = TestDb::new().await;
    let tls_port = free_port();
    let app = spawn_app_with(
        &db,
        AppOptions {
            mqtt_url: None,
            mqtt_tls: Some((tls_port, cert.clone(), key)),
            ..AppOptions::default()
        },
    )
    .await;
    assert_eq!(app.status().await["mqtt_tls_port"], tls_port);
    let id = unique("cab");
    let secret = app.register(&id, 100, "usd").await;
    let (_sim, mut events) = crate::support::start_agent(coinpulse_cabinet::AgentOptions {
        machine_id: id.clone(),
        secret,
        broker: format!("ssl://127.0.0.1:{tls_port}"),
        ca_file: Some(cert),
        topic_prefix: app.topic_prefix.clone(),
        public_key: Some(
            coinpulse::domain::parse_public_key(
                app.status().await["pulse_public_key"].as_str().unwrap(),
            )
            .unwrap(),
        ),
        max_age: Some(Duration::from_secs(600)),
        ack: true,
        play_seconds: None,
        connect: coinpulse_cabinet::Connect::Wait {
            give_up_after: Some(Duration::from_secs(10)),
            stop_when_refused: true,
        },
    })
    .await;
    assert_eq!(app.post_webhook(&paid(&id, 200, "usd")).await.0, 200);
    match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
        Ok(Some(SimEvent::Credit(p))) => assert_eq!(p.credits, 2),
        other => panic!("expected a credit over TLS, got {other:?}"),
    }
}

/// Runs the coinpulse binary on `db`, with the test servers' master key; its stdout, after
/// asserting it succeeded.
fn coinpulse_ok(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> String {
    let env: Vec<(&str, &str)> = std::iter::once(("SECRET_KEY", SECRET_KEY))
        .chain(env.iter().copied())
        .collect();
    let (code, printed) = coinpulse_tool(&db.url, args, &env);
    assert_eq!(code, 0, "{args:?}: {printed}");
    printed
}

/// `coinpulse cabinet add` for `id`; the secret it prints.
fn add_cabinet(db: &TestDb, id: &str) -> String {
    let out = coinpulse_ok(
        db,
        &["cabinet", "add", "--machine-id", id, "--price", "1.00"],
        &[],
    );
    out.lines()
        .find_map(|l| l.trim().strip_prefix("secret:"))
        .expect("a secret")
        .trim()
        .to_owned()
}

#[tokio::test]
async fn mosquitto_config_gives_an_external_broker_the_embedded_ones_rights() {
    let db = TestDb::new().await;
    // No server runs on this database: the deploy step that makes it.
    coinpulse_ok(&db, &["migrate"], &[]);
    let (a, b) = (unique("cab"), unique("cab"));
    let secret_a = add_cabinet(&db, &a);
    let secret_b = add_cabinet(&db, &b);
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("mosquitto");
    let server_pw = "server-password-for-the-test";
    let env = [("MQTT_PASSWORD", server_pw), ("MQTT_USERNAME", "coinpulse")];
    let out = coinpulse_ok(
        &db,
        &["mosquitto-config", "--out", out_dir.to_str().unwrap()],
        &env,
    );
    assert!(out.contains("2 cabinet(s)"), "{out}");
    let passwd = std::fs::read_to_string(out_dir.join("passwd")).unwrap();
    assert!(passwd.contains(&format!("{a}:$7$101$")), "{passwd}");
    assert!(
        !passwd.contains(&secret_a),
        "hashed, never the secret itself"
    );
    let lines = format!(
        "allow_anonymous false\npassword_file {}\nacl_file {}\n",
        out_dir.join("passwd").display(),
        out_dir.join("acl").display()
    );
    let Some(broker) = start_mosquitto(dir.path(), &lines).await else {
        eprintln!("no mosquitto binary here; skipped");
        return;
    };
    let t = |id: &str, kind: &str| format!("arcade/machine/{id}/{kind}");

    assert!(login_at(&broker.uri, &a, "wrong", &unique("c"))
        .await
        .is_err());
    assert!(login_at(&broker.uri, "", "", &unique("c")).await.is_err());
    let mut server = login_at(&broker.uri, "coinpulse", server_pw, &unique("srv"))
        .await
        .unwrap();
    assert!(granted(&server.client, "arcade/machine/#").await);
    let mut cab_a = login_at(&broker.uri, &a, &secret_a, &unique("a"))
        .await
        .unwrap();
    let mut cab_b = login_at(&broker.uri, &b, &secret_b, &unique("b"))
        .await
        .unwrap();
    assert!(granted(&cab_a.client, &t(&a, "coinpulse")).await);
    assert!(granted(&cab_b.client, &t(&b, "coinpulse")).await);
    // Mosquitto may grant a subscription it will never feed: what counts is delivery.
    let _ = granted(&cab_a.client, &t(&b, "coinpulse")).await;
    let _ = granted(&cab_a.client, "arcade/machine/#").await;

    // B's pulse reaches B only; A's own reaches A.
    publish(
        &server.client,
        &t(&b, "coinpulse"),
        "{\"for\":\"b\"}",
        false,
    )
    .await;
    publish(
        &server.client,
        &t(&a, "coinpulse"),
        "{\"for\":\"a\"}",
        false,
    )
    .await;
    let to_b = tokio::time::timeout(Duration::from_secs(5), cab_b.rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(to_b.topic(), t(&b, "coinpulse"));
    let to_a = tokio::time::timeout(Duration::from_secs(5), cab_a.rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(to_a.topic(), t(&a, "coinpulse"), "A never sees B's pulse");
    // The server hears its own publishes through its '#' subscription.
    while tokio::time::timeout(Duration::from_millis(300), server.rx.recv())
        .await
        .is_ok()
    {}

    // A forges B's game over and its own pulse: neither reaches anyone. Its own game over does.
    publish(&cab_a.client, &t(&b, "gameover"), "{}", false).await;
    publish(&cab_a.client, &t(&a, "coinpulse"), "{\"credits\":9}", false).await;
    publish(&cab_a.client, &t(&a, "gameover"), "{\"own\":true}", false).await;
    let first = tokio::time::timeout(Duration::from_secs(5), server.rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.topic(), t(&a, "gameover"), "{}", first.payload_str());
    assert!(
        tokio::time::timeout(Duration::from_millis(500), server.rx.recv())
            .await
            .is_err(),
        "nothing forged got through"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), cab_a.rx.recv())
            .await
            .is_err(),
        "A's forged pulse did not come back to it"
    );

    // A new cabinet: rerun, SIGHUP, and it can log in.
    let c = unique("cab");
    let secret_c = add_cabinet(&db, &c);
    assert!(login_at(&broker.uri, &c, &secret_c, &unique("c"))
        .await
        .is_err());
    coinpulse_ok(
        &db,
        &["mosquitto-config", "--out", out_dir.to_str().unwrap()],
        &env,
    );
    std::process::Command::new("kill")
        .args(["-HUP", &broker.child.id().to_string()])
        .status()
        .unwrap();
    let mut logged_in = false;
    for _ in 0..50 {
        if login_at(&broker.uri, &c, &secret_c, &unique("c"))
            .await
            .is_ok()
        {
            logged_in = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(logged_in, "the reloaded broker knows the new cabinet");
}

#[tokio::test]
async fn an_external_broker_that_asks_for_a_client_certificate_gets_the_servers() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = |name: &str| d.join(name).display().to_string();
    // The broker's certificate, and the server's own (self-signed: the broker trusts
    // exactly it).
    for (host, cert, key) in [
        ("127.0.0.1", "broker.pem", "broker-key.pem"),
        ("coinpulse-server", "client.pem", "client-key.pem"),
    ] {
        coinpulse_ok(
            &db,
            &[
                "tls",
                "self-signed",
                "--host",
                host,
                "--cert",
                &path(cert),
                "--key",
                &path(key),
            ],
            &[],
        );
    }
    let lines = format!(
        "allow_anonymous true\ncertfile {}\nkeyfile {}\ncafile {}\nrequire_certificate true\n",
        path("broker.pem"),
        path("broker-key.pem"),
        path("client.pem")
    );
    let Some(broker) = start_mosquitto(d, &lines).await else {
        eprintln!("no mosquitto binary here; skipped");
        return;
    };
    let uri = broker.uri.replace("tcp://", "ssl://");
    let connect = |client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>| {
        let target = Target {
            uri: uri.clone(),
            username: None,
            password: None,
            ca_file: Some(d.join("broker.pem")),
            client_cert,
            client_id: unique("tls"),
        };
        async move {
            let client = create_client(&target).unwrap();
            let options =
                coinpulse::mqtt::connection::connect_options(&target, true, None).unwrap();
            tokio::time::timeout(Duration::from_secs(5), client.connect(options))
                .await
                .is_ok_and(|r| r.is_ok())
        }
    };
    assert!(!connect(None).await, "no certificate, no connection");
    assert!(
        connect(Some((d.join("client.pem"), d.join("client-key.pem")))).await,
        "the server's certificate is accepted"
    );
}

#[tokio::test]
async fn the_server_and_cabinets_reach_mosquitto_over_websockets_plain_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = TestDb::new().await;
    let (cert, key) = (d.join("ws.pem"), d.join("ws-key.pem"));
    coinpulse_ok(
        &db,
        &[
            "tls",
            "self-signed",
            "--host",
            "127.0.0.1",
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    // Mosquitto's own websockets listeners, plain and TLS. (Given an address as well as a
    // port, Mosquitto 2.0 cannot open one.)
    let (ws, wss) = (free_port(), free_port());
    let lines = format!(
        "allow_anonymous true\nlistener {ws}\nprotocol websockets\n\
         listener {wss}\nprotocol websockets\ncertfile {}\nkeyfile {}\n",
        cert.display(),
        key.display()
    );
    let Some(_broker) = start_mosquitto(d, &lines).await else {
        eprintln!("no mosquitto binary here; skipped");
        return;
    };
    for (url, ca) in [
        (format!("ws://127.0.0.1:{ws}"), None),
        (format!("wss://127.0.0.1:{wss}"), Some(cert.clone())),
    ] {
        let db = TestDb::new().await;
        let app = spawn_app_with(
            &db,
            AppOptions {
                mqtt_url: Some(url.clone()),
                mqtt_ca_file: ca,
                ..AppOptions::default()
            },
        )
        .await;
        // The cabinet (the agent's library) is given the same URL and CA.
        let mut cab = app.cabinet(100, "usd").await;
        let (code, _) = app.post_webhook(&paid(&cab.machine_id, 100, "usd")).await;
        assert_eq!(code, 200, "{url}");
        let pulse = cab.expect_credit().await;
        assert_eq!(pulse.credits, 1, "{url}");
        app.eventually("the ack comes back over the same transport", || async {
            app.pulses(&cab.machine_id).await[0]["acked_at"].is_string()
        })
        .await;
    }
}

#[tokio::test]
async fn emqx_hooks_apply_the_embedded_brokers_rules() {
    let db = TestDb::new().await;
    let app = spawn_app_with(
        &db,
        AppOptions {
            mqtt_username: Some("coinpulse".into()),
            mqtt_password: Some("server-secret-for-emqx".into()),
            wait_connected: false,
            mqtt_url: Some("tcp://127.0.0.1:1".into()),
            ..AppOptions::default()
        },
    )
    .await;
    let (a, b) = (unique("cab"), unique("cab"));
    let secret_a = app.register(&a, 100, "usd").await;
    app.register(&b, 100, "usd").await;
    let hook = |path: &'static str, body: serde_json::Value, token: &'static str| {
        let (http, base) = (app.http.clone(), app.base.clone());
        async move {
            let res = http
                .post(format!("{base}/mqtt/emqx/{path}"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            (status, res.json::<serde_json::Value>().await.unwrap())
        }
    };
    let login =
        |user: &str, pass: &str| json!({"username": user, "password": pass, "clientid": "x"});
    assert_eq!(hook("auth", login(&a, &secret_a), "wrong").await.0, 401);
    assert_eq!(
        hook("auth", login(&a, &secret_a), API_TOKEN).await.1["result"],
        "allow"
    );
    assert_eq!(
        hook("auth", login(&a, "guess"), API_TOKEN).await.1["result"],
        "deny"
    );
    assert_eq!(
        hook("auth", login(&b, &secret_a), API_TOKEN).await.1["result"],
        "deny"
    );
    let server = hook(
        "auth",
        login("coinpulse", "server-secret-for-emqx"),
        API_TOKEN,
    )
    .await
    .1;
    assert_eq!(
        (server["result"].as_str(), server["is_superuser"].as_bool()),
        (Some("allow"), Some(true))
    );

    let t = |id: &str, kind: &str| format!("{}/{id}/{kind}", app.topic_prefix);
    let acl =
        |topic: String, action: &str| json!({"username": a, "topic": topic, "action": action});
    for (topic, action, allowed) in [
        (t(&a, "coinpulse"), "subscribe", true),
        (t(&b, "coinpulse"), "subscribe", false),
        (format!("{}/#", app.topic_prefix), "subscribe", false),
        (t(&a, "gameover"), "publish", true),
        (t(&a, "ack"), "publish", true),
        (t(&b, "gameover"), "publish", false),
        (t(&a, "coinpulse"), "publish", false),
    ] {
        let got = hook("acl", acl(topic.clone(), action), API_TOKEN).await.1;
        let want = if allowed { "allow" } else { "deny" };
        assert_eq!(got["result"], want, "{action} {topic}");
    }
}
