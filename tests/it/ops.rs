//! Operating coinpulse: readiness for load balancers, Prometheus metrics, online backups
//! that hold every committed payment, restore, and a migration check for pipelines.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;

fn coinpulse(args: &[&str], db_url: &str) -> (i32, String) {
    // No server of this test listens there: restore's "is one running?" check is about
    // this machine's own server, not the tests'.
    let bind = format!("127.0.0.1:{}", free_port());
    coinpulse_tool(db_url, args, &[("BIND", &bind)])
}

#[tokio::test]
async fn ready_and_metrics_tell_a_load_balancer_and_prometheus_what_is_going_on() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let ready = app.fetch("/ready").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap()["ready"],
        true
    );

    let mut cab = app.cabinet(100, "usd").await;
    let (code, _) = app.post_webhook(&paid(&cab.machine_id, 100, "usd")).await;
    assert_eq!(code, 200);
    cab.expect_credit().await;

    // Without the token: refused, and nothing leaks.
    let anonymous = app.fetch("/metrics").await;
    assert_eq!(anonymous.status(), 401);
    let scrape = || async {
        app.http
            .get(format!("{}/metrics", app.base))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap()
    };
    app.eventually("the ack is counted", || async {
        scrape()
            .await
            .text()
            .await
            .unwrap()
            .contains("coinpulse_pulses_acked_total")
    })
    .await;
    // On the embedded broker the server sees the connection; on an external one, the
    // cabinet's retained "online".
    app.eventually("the cabinet counts as connected", || async {
        let text = scrape().await.text().await.unwrap();
        text.contains("coinpulse_cabinets_connected 1\n")
    })
    .await;
    let res = scrape().await;
    assert_eq!(res.status(), 200);
    assert!(res
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = res.text().await.unwrap();
    for needle in [
        "coinpulse_webhooks_total{outcome=\"credited\"}",
        "coinpulse_webhook_to_broker_seconds_bucket",
        "coinpulse_pulse_to_ack_seconds_bucket",
        "coinpulse_writer_batch_size_bucket",
        "coinpulse_writer_commit_seconds_bucket",
        "coinpulse_pulses_queued_total",
        "coinpulse_mqtt_connected 1",
        "coinpulse_pulses_waiting 0",
        "coinpulse_review_queue 0",
        "route=\"/webhooks/stripe\"",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    assert!(
        !text.contains(&cab.machine_id),
        "routes are patterns, never raw paths"
    );
}

#[tokio::test]
async fn a_backup_taken_while_webhooks_arrive_holds_every_payment_committed_before_it() {
    if std::env::var("TEST_DATABASE_URL").is_ok_and(|v| !v.is_empty()) {
        // PostgreSQL is backed up with pg_dump; the command says so.
        let db = TestDb::new().await;
        let (code, out) = coinpulse(&["backup", "/tmp/nowhere"], &db.url);
        assert_ne!(code, 0);
        assert!(out.contains("pg_dump"), "{out}");
        return;
    }
    let db = TestDb::new().await;
    let app = Arc::new(spawn_app(&db).await);
    let cab = app.cabinet(100, "usd").await;
    // The test's servers take SECRET_KEY; an owner's keeps its key in a file beside the
    // database, which the backup copies.
    let db_path = db
        .url
        .trim_start_matches("sqlite://")
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let key_file = std::path::Path::new(&db_path).with_file_name("coinpulse.secret");
    std::fs::write(&key_file, "k".repeat(64)).unwrap();
    // Payments keep arriving while the backup runs.
    let answered = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (app, answered, stop, id) = (
            app.clone(),
            answered.clone(),
            stop.clone(),
            cab.machine_id.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (code, body) = app.post_webhook(&paid(&id, 100, "usd")).await;
                assert_eq!(code, 200);
                answered
                    .lock()
                    .unwrap()
                    .push(body["payment_id"].as_str().unwrap().to_owned());
            }
        })
    };
    app.eventually("some payments are in", || async {
        answered.lock().unwrap().len() >= 20
    })
    .await;
    let before: Vec<String> = answered.lock().unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("backup");
    let (code, out) = coinpulse(&["backup", target.to_str().unwrap()], &db.url);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("key file"), "{out}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.await.unwrap();
    let (code, out) = coinpulse(&["backup", target.to_str().unwrap()], &db.url);
    assert_ne!(code, 0, "never over an earlier backup: {out}");

    // The copy opens and holds every payment answered before the backup began.
    let copy = format!("sqlite://{}", target.join("coinpulse.db").display());
    let store = coinpulse::store::Store::connect(&copy).await.unwrap();
    let mut held = HashSet::new();
    for id in &before {
        if store.payment(id).await.unwrap().is_some() {
            held.insert(id.clone());
        }
    }
    assert_eq!(held.len(), before.len(), "payments missing from the backup");
    store.close().await;
    let key = std::fs::read(target.join("coinpulse.secret")).unwrap();
    assert!(!key.is_empty());

    // Restore into a fresh place: a server started there sees the same payments and keys
    // (the cabinet's secret still works).
    let fresh = tempfile::tempdir().unwrap();
    let restored_url = format!(
        "sqlite://{}?mode=rwc",
        fresh.path().join("coinpulse.db").display()
    );
    let (code, out) = coinpulse(&["restore", target.to_str().unwrap()], &restored_url);
    assert_eq!(code, 0, "{out}");
    let (code, out) = coinpulse(&["restore", target.to_str().unwrap()], &restored_url);
    assert_ne!(code, 0, "never over a database without --force: {out}");
    assert_eq!(
        std::fs::read(fresh.path().join("coinpulse.secret")).unwrap(),
        key
    );
    let (code, out) = coinpulse(&["migrate", "--check"], &restored_url);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn migrate_check_reports_pending_migrations_without_applying_them() {
    // A database no coinpulse has touched: everything pending, and still after the check.
    let db = TestDb::new().await;
    let url = &db.url;
    if let Some(path) = url.strip_prefix("sqlite://") {
        // An empty file is an empty SQLite database; a missing one is an error (below).
        std::fs::File::create(path.split('?').next().unwrap()).unwrap();
    }
    let (code, out) = coinpulse(&["migrate", "--check"], url);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("pending: 0001"), "{out}");
    let (code, _) = coinpulse(&["migrate", "--check"], url);
    assert_eq!(code, 1, "the check changed nothing");
    let (code, out) = coinpulse(&["migrate"], url);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("applied 0001"), "{out}");
    let (code, out) = coinpulse(&["migrate", "--check"], url);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("up to date"), "{out}");
}

#[tokio::test]
async fn tools_read_the_services_env_file_and_never_create_a_stray_database() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("coinpulse.env");
    std::fs::write(
        &env_file,
        format!(
            "DATABASE_URL={}\nSECRET_KEY={SECRET_KEY}\nCABINET_MQTT_URL=tcp://arcade.example.com:1883\n",
            db.url
        ),
    )
    .unwrap();
    // Run from an empty directory with nothing in the environment, as `sudo coinpulse …`
    // on a server would be.
    let tool = |args: &[&str]| {
        run_tool(
            std::process::Command::new(env!("CARGO_BIN_EXE_coinpulse"))
                .args(args)
                .current_dir(dir.path())
                .env_remove("DATABASE_URL")
                .env_remove("SECRET_KEY")
                .env("BIND", format!("127.0.0.1:{}", free_port())),
        )
    };
    let id = unique("cab");
    let env_arg = format!("--env-file={}", env_file.display());
    let (code, out) = tool(&[
        &env_arg,
        "cabinet",
        "add",
        "--machine-id",
        &id,
        "--price",
        "1.00",
        "--currency",
        "usd",
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        app.get(&format!("/cabinets/{id}")).await["machine_id"],
        id.as_str()
    );
    assert!(
        out.contains("broker:    tcp://arcade.example.com:1883"),
        "cabinets are told the broker's outside address: {out}"
    );

    // Without it, the tools find no database here and say so, leaving nothing behind.
    let (code, out) = tool(&["cabinet", "list"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("no database at") && out.contains("DATABASE_URL"),
        "{out}"
    );
    let (code, out) = tool(&["migrate", "--check"]);
    assert_eq!(code, 3, "cannot look is not 'pending': {out}");
    let (code, out) = tool(&[
        "--env-file",
        "/nonexistent/coinpulse.env",
        "cabinet",
        "list",
    ]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("/nonexistent/coinpulse.env"), "{out}");
    // Pointed at the server's database but without its key, a tool does not make one up.
    let (code, out) = run_tool(
        std::process::Command::new(env!("CARGO_BIN_EXE_coinpulse"))
            .args(["cabinet", "list"])
            .current_dir(dir.path())
            .env("DATABASE_URL", &db.url)
            .env_remove("SECRET_KEY")
            .env("BIND", format!("127.0.0.1:{}", free_port())),
    );
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("SECRET_KEY") && out.contains("no key file"),
        "{out}"
    );
    if db.url.starts_with("sqlite:") {
        let beside_db = coinpulse::config::key_file_path(&db.url);
        assert!(
            !beside_db.exists(),
            "no key made at {}",
            beside_db.display()
        );
    }
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("coinpulse.env")],
        "no stray database or key"
    );
}

#[tokio::test]
async fn ready_fails_while_the_broker_or_database_is_away_and_status_stays_live() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut broker) = start_mosquitto(dir.path(), "allow_anonymous true\n").await else {
        eprintln!("no mosquitto binary here; skipped");
        return;
    };
    let db = TestDb::new().await;
    let app = spawn_app_with(
        &db,
        AppOptions {
            mqtt_url: Some(broker.uri.clone()),
            ..AppOptions::default()
        },
    )
    .await;
    let ready = || async {
        let res = app.fetch("/ready").await;
        let code = res.status().as_u16();
        (code, res.json::<serde_json::Value>().await.unwrap())
    };
    assert_eq!(ready().await.0, 200);

    broker.kill();
    app.eventually("not ready while the broker is away", || async {
        ready().await.0 == 503
    })
    .await;
    assert_eq!(ready().await.1["mqtt"], "disconnected");
    // Liveness stays up: restarting the process would not bring the broker back.
    assert_eq!(app.fetch("/status").await.status(), 200);
    broker.start().await;
    app.eventually("ready again once the broker is back", || async {
        ready().await.0 == 200
    })
    .await;

    // The database going away: PostgreSQL only (an open SQLite file cannot).
    let Some(server) = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
    else {
        return;
    };
    use sqlx::Connection;
    let name = db.url.rsplit('/').next().unwrap().to_owned();
    let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
    for q in [
        format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"),
        format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"),
    ] {
        sqlx::query(&q).execute(&mut admin).await.unwrap();
    }
    app.eventually("not ready while the database is away", || async {
        ready().await.0 == 503
    })
    .await;
    assert_eq!(ready().await.1["database"], "unreachable");
    let status = app.fetch("/status").await;
    assert_eq!(
        status.status(),
        200,
        "liveness does not depend on the database"
    );
    assert_eq!(
        status.json::<serde_json::Value>().await.unwrap()["database"],
        "error"
    );
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await
        .unwrap();
    app.eventually("ready again once the database is back", || async {
        ready().await.0 == 200
    })
    .await;
    // And it takes payments again.
    let mut cab = app.cabinet(100, "usd").await;
    let mut code = 0;
    for _ in 0..40 {
        code = app.post_webhook(&paid(&cab.machine_id, 100, "usd")).await.0;
        if code == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(code, 200);
    cab.expect_credit().await;
}
