//! Operating coinpulse: readiness for load balancers, Prometheus metrics, online backups
//! that hold every committed payment, restore, and a migration check for pipelines.

use std::collections::HashSet;
use std::sync::Arc;

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
