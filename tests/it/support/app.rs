//! The app under test: the real server on random ports, on a temporary SQLite database (or
//! a fresh PostgreSQL one when TEST_DATABASE_URL is set) and the embedded broker (or
//! TEST_MQTT_URL), and the JSON API as a test calls it.

use std::time::Duration;

use clap::Parser;
use coinpulse::app::{Application, StopHandle};
use coinpulse::config::Settings;
use serde_json::{json, Value};

use super::stripe::{self, FakeStripe};
use super::WEBHOOK_SECRET;

pub const API_TOKEN: &str = "test-api-token";
pub const SECRET_KEY: &str = "test-master-key-0123456789abcdef";

#[derive(Parser)]
struct SettingsOnly {
    #[command(flatten)]
    settings: Settings,
}

/// Where the test's data lives; kept alive for as long as any app uses it.
pub struct TestDb {
    pub url: String,
    _dir: tempfile::TempDir,
}

impl TestDb {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = match std::env::var("TEST_DATABASE_URL") {
            Ok(server) if !server.is_empty() => fresh_postgres_db(&server).await,
            _ => format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("coinpulse.db").display()
            ),
        };
        Self { url, _dir: dir }
    }
}

pub async fn fresh_postgres_db(server: &str) -> String {
    use sqlx::Connection;
    let name = format!("coinpulse_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(server)
        .await
        .expect("TEST_DATABASE_URL reachable");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let base = server.rsplit_once('/').map(|(b, _)| b).unwrap_or(server);
    format!("{base}/{name}")
}

/// A free port below the kernel's ephemeral range (32768+), handed out once per process:
/// a port from the ephemeral range can be taken by some outgoing connection between this
/// check and the server binding it, and two tests must never get the same one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 500) as u16 * 20,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(port < 32_000, "ran out of test ports");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Runs an owner's tool (`coinpulse ARGS`) on the database at `db_url`, with `env` set;
/// its exit code and everything it printed (stdout, then stderr).
pub fn coinpulse_tool(db_url: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    run_tool(
        std::process::Command::new(env!("CARGO_BIN_EXE_coinpulse"))
            .args(args)
            .env("DATABASE_URL", db_url)
            .envs(env.iter().copied()),
    )
}

/// Runs `cmd` to the end: its exit code and everything it printed (stdout, then stderr).
pub fn run_tool(cmd: &mut std::process::Command) -> (i32, String) {
    let out = cmd.output().unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), printed)
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

pub struct TestApp {
    pub base: String,
    /// tcp://… of the broker cabinets should use.
    pub broker: String,
    /// The CA that broker's certificate chains to (ssl:// and wss:// only).
    pub broker_ca_file: Option<std::path::PathBuf>,
    pub topic_prefix: String,
    /// The server's own MQTT client id.
    pub server_client_id: String,
    pub http: reqwest::Client,
    /// Stops an in-process app; None for a server running as a child process.
    pub stop: Option<StopHandle>,
    /// The one-time owner setup link the server printed, while no user exists.
    pub setup_url: Option<String>,
}

pub struct AppOptions {
    /// Use this broker instead of the embedded one.
    pub mqtt_url: Option<String>,
    pub mqtt_username: Option<String>,
    pub mqtt_password: Option<String>,
    /// MQTT_CA_FILE, for an ssl:// or wss:// mqtt_url.
    pub mqtt_ca_file: Option<std::path::PathBuf>,
    /// Wait for the server's MQTT connection before returning (off for dead brokers).
    pub wait_connected: bool,
    /// The fake Stripe to call, when the test needs Stripe's API.
    pub stripe_api_base: Option<String>,
    pub offline_after: Option<u64>,
    pub allow_promotion_codes: bool,
    /// The embedded broker's TLS listener: (port, certificate, key).
    pub mqtt_tls: Option<(u16, std::path::PathBuf, std::path::PathBuf)>,
    /// SMTP_URL, for email (a sink the test started).
    pub smtp_url: Option<String>,
    /// TRUST_PROXY_HEADERS: as behind Caddy or nginx.
    pub behind_proxy: bool,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            mqtt_url: std::env::var("TEST_MQTT_URL")
                .ok()
                .filter(|s| !s.is_empty()),
            mqtt_username: None,
            mqtt_password: None,
            mqtt_ca_file: None,
            wait_connected: true,
            stripe_api_base: None,
            offline_after: None,
            allow_promotion_codes: false,
            mqtt_tls: None,
            smtp_url: None,
            behind_proxy: false,
        }
    }
}

pub async fn spawn_app(db: &TestDb) -> TestApp {
    spawn_app_with(db, AppOptions::default()).await
}

/// An app on its own embedded broker, even when TEST_MQTT_URL names an external one.
pub async fn spawn_embedded(db: &TestDb) -> TestApp {
    spawn_app_with(
        db,
        AppOptions {
            mqtt_url: None,
            ..AppOptions::default()
        },
    )
    .await
}

/// Logs go to the test output when RUST_LOG is set (e.g. RUST_LOG=coinpulse=debug).
fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

pub async fn spawn_app_with(db: &TestDb, opts: AppOptions) -> TestApp {
    init_logs();
    let prefix = format!(
        "t{}/arcade/machine",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let http_port = free_port();
    let server_client_id = unique("coinpulse-test");
    let mut args: Vec<String> = vec![
        "coinpulse".into(),
        format!("--bind=127.0.0.1:{http_port}"),
        format!("--public-url=http://127.0.0.1:{http_port}"),
        format!("--database-url={}", db.url),
        // Each test's server lives until the test process ends (actix's workers outlive the
        // test's runtime), so keep each one's share of PostgreSQL's 100 connections small.
        "--database-max-connections=4".into(),
        format!("--stripe-webhook-secret={WEBHOOK_SECRET}"),
        format!("--api-token={API_TOKEN}"),
        format!("--secret-key={SECRET_KEY}"),
        format!("--mqtt-topic-prefix={prefix}"),
        format!("--mqtt-listen=127.0.0.1:{}", free_port()),
        format!("--mqtt-client-id={server_client_id}"),
        format!(
            "--stripe-api-base={}",
            opts.stripe_api_base
                .as_deref()
                .unwrap_or("http://127.0.0.1:9")
        ),
        format!("--stripe-secret-key={}", stripe::SECRET_KEY),
        format!("--allow-promotion-codes={}", opts.allow_promotion_codes),
        format!("--offline-after={}", opts.offline_after.unwrap_or(120)),
        format!("--trust-proxy-headers={}", opts.behind_proxy),
    ];
    if let Some(url) = &opts.mqtt_url {
        args.push(format!("--mqtt-url={url}"));
    }
    if let Some((port, cert, key)) = &opts.mqtt_tls {
        args.push(format!("--mqtt-tls-listen=127.0.0.1:{port}"));
        args.push(format!("--mqtt-tls-cert={}", cert.display()));
        args.push(format!("--mqtt-tls-key={}", key.display()));
    }
    if let Some(u) = &opts.smtp_url {
        args.push(format!("--smtp-url={u}"));
        args.push("--smtp-from=Arcade <arcade@example.com>".into());
    }
    if let Some(ca) = &opts.mqtt_ca_file {
        args.push(format!("--mqtt-ca-file={}", ca.display()));
    }
    if let Some(u) = &opts.mqtt_username {
        args.push(format!("--mqtt-username={u}"));
    }
    if let Some(p) = &opts.mqtt_password {
        args.push(format!("--mqtt-password={p}"));
    }
    let settings = SettingsOnly::try_parse_from(args)
        .expect("test settings")
        .settings
        .finish();
    let app = Application::build(settings).await.expect("app builds");
    let base = format!("http://{}", app.http_addr());
    let broker = match (&opts.mqtt_url, app.broker_addr()) {
        (Some(url), _) => url.clone(),
        (None, Some(addr)) => format!("tcp://{addr}"),
        (None, None) => unreachable!("either embedded or external"),
    };
    let stop = app.stop_handle();
    let setup_url = app.setup_url().map(str::to_owned);
    tokio::spawn(async move {
        if let Err(e) = app.run().await {
            eprintln!("test app stopped with error: {e:#}");
        }
    });
    let test_app = TestApp {
        base,
        broker,
        broker_ca_file: opts.mqtt_ca_file.clone(),
        topic_prefix: prefix,
        server_client_id,
        http: reqwest::Client::new(),
        stop: Some(stop),
        setup_url,
    };
    test_app.wait_for_mqtt_if(opts.wait_connected).await;
    test_app
}

/// An app wired to its own fake Stripe, which delivers completed sessions' webhooks to it.
pub struct PayTest {
    pub app: TestApp,
    pub fake: FakeStripe,
    pub _db: TestDb,
}

pub async fn pay_app(tweak: impl FnOnce(&mut AppOptions)) -> PayTest {
    let fake = FakeStripe::start().await;
    let db = TestDb::new().await;
    let mut opts = AppOptions {
        stripe_api_base: Some(fake.base.clone()),
        ..AppOptions::default()
    };
    tweak(&mut opts);
    let app = spawn_app_with(&db, opts).await;
    fake.deliver_webhooks_to(&app.base);
    PayTest { app, fake, _db: db }
}

impl TestApp {
    pub async fn wait_for_mqtt_if(&self, wait: bool) {
        if !wait {
            return;
        }
        for _ in 0..800 {
            if self.status().await["mqtt"] == "connected" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("server never connected to MQTT");
    }

    /// `GET {base}{path}`, without credentials.
    pub async fn fetch(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    /// The body of `GET {base}{path}` as text (the player's pages).
    pub async fn text(&self, path: &str) -> String {
        self.fetch(path).await.text().await.unwrap()
    }

    pub async fn status(&self) -> Value {
        self.http
            .get(format!("{}/status", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(API_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.api(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Registers a cabinet through the API (price per credit in cents).
    pub async fn register(&self, machine_id: &str, price: i64, currency: &str) -> String {
        let (status, body) = self
            .api(
                reqwest::Method::POST,
                "/cabinets",
                Some(json!({"machine_id": machine_id, "name": format!("Cabinet {machine_id}"), "price_minor": price, "currency": currency})),
            )
            .await;
        assert_eq!(status, 201, "register: {body}");
        body["mqtt"]["secret"].as_str().unwrap().to_owned()
    }

    /// Marks a cabinet "always available" (what an owner does for a seed cabinet on a
    /// broker that reports nothing about connections).
    pub async fn always_available(&self, machine_id: &str) {
        let (code, body) = self
            .api(
                reqwest::Method::PATCH,
                &format!("/cabinets/{machine_id}"),
                Some(json!({"always_available": true})),
            )
            .await;
        assert_eq!(code, 200, "always_available: {body}");
    }

    pub async fn payments(&self, machine_id: &str) -> Vec<Value> {
        self.get(&format!("/payments?machine_id={machine_id}&limit=100"))
            .await["payments"]
            .as_array()
            .unwrap()
            .clone()
    }

    pub async fn pulses(&self, machine_id: &str) -> Vec<Value> {
        self.get(&format!("/pulses?machine_id={machine_id}&limit=100"))
            .await["pulses"]
            .as_array()
            .unwrap()
            .clone()
    }

    pub async fn plays(&self, machine_id: &str) -> Vec<Value> {
        self.get(&format!("/plays?machine_id={machine_id}&limit=100"))
            .await["plays"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Waits until `check` holds, polling; panics with `what` after 15 s.
    pub async fn eventually<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..600 {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("timed out waiting for: {what}");
    }
}
