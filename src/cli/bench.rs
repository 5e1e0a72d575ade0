//! `coinpulse bench`: measures the performance targets against a real `coinpulse serve`
//! child process on loopback (SQLite, embedded broker, fsync'd commits) and prints figures.
//! Nothing here asserts timings; it reports them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use paho_mqtt as paho;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::mqtt::connection::{connect_options, create_client, Target};
use crate::mqtt::Topics;
use crate::stripe::webhook::sign;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Webhooks sent one at a time for the single-webhook latency.
    #[arg(long, default_value_t = 300)]
    sequential: usize,
    /// Rate for the paced latency run (webhooks per second) …
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// … and how long it lasts (seconds).
    #[arg(long, default_value_t = 10)]
    rate_seconds: u64,
    /// Webhooks for the throughput run (sent as fast as the server takes them).
    #[arg(long, default_value_t = 30_000)]
    throughput: usize,
    /// Concurrent senders in the throughput run.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Cabinets connected at once (to the embedded broker, or to --mqtt-url's; 0 skips).
    #[arg(long, default_value_t = 10_000)]
    cabinets: usize,
    /// Acking cabinets sharing the fleet run's webhooks …
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    fleet: u32,
    /// … at this many webhooks per second, for `rate_seconds`.
    #[arg(long, default_value_t = 1_250)]
    fleet_rate: u64,
    /// Cabinets in the dashboard run's database …
    #[arg(long, default_value_t = 100)]
    dashboard_cabinets: usize,
    /// … and payments (each with its pulse and play) over the past year.
    #[arg(long, default_value_t = 100_000)]
    dashboard_payments: usize,
    /// Measure only the dashboard (skip the money path and the broker).
    #[arg(long)]
    dashboard_only: bool,
    /// Write the server's log to this file, at this RUST_LOG level (e.g. coinpulse=debug).
    #[arg(long, value_names = ["FILE", "FILTER"], num_args = 2)]
    server_log: Option<Vec<String>>,
    /// Run on PostgreSQL: a server URL (postgres://user@host/db); the bench makes a fresh
    /// database there and drops it after. Measures the money path and --cabinets.
    #[arg(long)]
    postgres: Option<String>,
    /// Use this external broker (tcp://host:1883) instead of the embedded one.
    #[arg(long)]
    mqtt_url: Option<String>,
    /// Replicas to start (webhooks go to them in turn); more than one needs --postgres and
    /// --mqtt-url.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    replicas: u32,
}

/// Where the bench's servers keep their data and reach their broker.
#[derive(Debug, Clone, Default)]
struct Backend {
    /// A fresh PostgreSQL database (None: SQLite in the server's scratch directory).
    database_url: Option<String>,
    mqtt_url: Option<String>,
}

const SECRET: &str = "whsec_bench";
/// The bench server's master key, so the bench can make a wallet cookie it accepts.
const MASTER_KEY: &str = "bench-master-key-0123456789abcdef";
const TOKEN: &str = "bench-token";

struct Server {
    child: Child,
    base: String,
    mqtt: String,
    _dir: tempfile_dir::Dir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod tempfile_dir {
    /// A scratch directory removed on drop (the bench's database lives here).
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn summary(mut ms: Vec<f64>) -> String {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={})",
        percentile(&ms, 0.5),
        percentile(&ms, 0.9),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN),
        ms.len()
    )
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>28} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap()
            .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb
}

fn scratch_dir() -> anyhow::Result<PathBuf> {
    let dir =
        std::env::temp_dir().join(format!("coinpulse-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Starts `coinpulse serve` on `dir`'s bench.db (a fresh directory when None), or on
/// `backend`'s database and broker; `replica` names it among several.
async fn start_server(
    log: Option<&[String]>,
    dir: Option<PathBuf>,
    backend: &Backend,
    replica: u32,
) -> anyhow::Result<(Server, Duration, u64)> {
    let dir = match dir {
        Some(d) => d,
        None => scratch_dir()?,
    };
    let (http, mqtt) = (free_port(), free_port());
    let exe: PathBuf = std::env::current_exe()?;
    let started = Instant::now();
    let mut cmd = Command::new(exe);
    match &backend.mqtt_url {
        Some(url) => cmd.env("MQTT_URL", url),
        None => cmd.env_remove("MQTT_URL"),
    };
    let child = cmd
        .arg("serve")
        .env("BIND", format!("127.0.0.1:{http}"))
        .env("MQTT_LISTEN", format!("127.0.0.1:{mqtt}"))
        .env("MQTT_CLIENT_ID", format!("coinpulse-bench-{replica}"))
        .env(
            "DATABASE_URL",
            backend
                .database_url
                .clone()
                .unwrap_or_else(|| format!("sqlite://{}/bench.db", dir.display())),
        )
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .env("SECRET_KEY", MASTER_KEY)
        .env("API_TOKEN", TOKEN)
        .env("RUST_LOG", log.map_or("warn", |l| l[1].as_str()))
        .stdout(Stdio::null())
        .stderr(match log {
            Some(l) => Stdio::from(std::fs::File::create(&l[0])?),
            None => Stdio::inherit(),
        })
        .spawn()?;
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{http}"),
        mqtt: backend
            .mqtt_url
            .clone()
            .unwrap_or_else(|| format!("tcp://127.0.0.1:{mqtt}")),
        _dir: tempfile_dir::Dir(dir),
    };
    let client = reqwest::Client::new();
    // Ready = answering /status with the broker connected.
    let ready = loop {
        if let Ok(r) = client.get(format!("{}/status", server.base)).send().await {
            if let Ok(v) = r.json::<serde_json::Value>().await {
                if v["mqtt"] == "connected" {
                    break started.elapsed();
                }
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            anyhow::bail!("server did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = rss_kib(server.child.id()).unwrap_or(0);
    Ok((server, ready, rss))
}

async fn register(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    price: i64,
) -> anyhow::Result<String> {
    let res: serde_json::Value = client
        .post(format!("{base}/api/v1/cabinets"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"machine_id": id, "price_minor": price, "currency": "usd"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(res["mqtt"]["secret"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// A webhook whose pulse carries `seq` credits (price 1 cent), so pulses identify themselves.
fn webhook(machine_id: &str, seq: i64) -> (String, String) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let body = crate::cli::webhook_test::checkout_completed_event(
        &format!("evt_{id}"),
        &format!("cs_{id}"),
        machine_id,
        seq,
        "usd",
    )
    .to_string();
    let sig = sign(SECRET, chrono::Utc::now().timestamp(), body.as_bytes());
    (body, sig)
}

/// A cabinet that acks, as real ones do: announces `online`, records when each `credits`
/// value arrived, and acks every pulse on its ack topic.
struct Receiver {
    arrivals: Arc<Mutex<HashMap<i64, (Instant, u32)>>>,
    /// Every arrival in order, repeats included.
    log: Arc<Mutex<Vec<Instant>>>,
    _client: Holder,
}

/// Keeps a receiver's client alive.
#[allow(dead_code)]
enum Holder {
    Paho(paho::AsyncClient),
    Mqtt5(mqtt5::MqttClient),
}

async fn receiver(mqtt: &str, machine_id: &str, secret: &str) -> anyhow::Result<Receiver> {
    let target = Target {
        uri: mqtt.to_owned(),
        username: Some(machine_id.into()),
        password: Some(secret.into()),
        ca_file: None,
        client_cert: None,
        client_id: format!("bench-{machine_id}"),
    };
    let client = create_client(&target)?;
    let arrivals: Arc<Mutex<HashMap<i64, (Instant, u32)>>> = Arc::default();
    let log: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let (sink, log_sink) = (arrivals.clone(), log.clone());
    let topics = Topics::new("arcade/machine");
    let ack_topic = topics.ack(machine_id);
    client.set_message_callback(move |cli, msg| {
        if let Some(ack) = msg.and_then(|m| arrived(&sink, &log_sink, m.payload())) {
            cli.publish(paho::Message::new(ack_topic.as_str(), ack, paho::QOS_1));
        }
    });
    client
        .connect(connect_options(&target, true, None)?)
        .await?;
    client
        .subscribe(topics.coinpulse(machine_id), paho::QOS_1)
        .await?;
    client
        .publish(paho::Message::new_retained(
            topics.status(machine_id),
            "online",
            paho::QOS_1,
        ))
        .await?;
    // The server learns from that status that this cabinet acks.
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(Receiver {
        arrivals,
        log,
        _client: Holder::Paho(client),
    })
}

/// Records when a pulse (keyed by its `credits`) arrived, counting repeats; returns the ack
/// to send for it.
fn arrived(
    sink: &Mutex<HashMap<i64, (Instant, u32)>>,
    log: &Mutex<Vec<Instant>>,
    payload: &[u8],
) -> Option<String> {
    let now = Instant::now();
    log.lock().unwrap().push(now);
    let v = serde_json::from_slice::<serde_json::Value>(payload).ok()?;
    if let Some(c) = v["credits"].as_i64() {
        sink.lock()
            .unwrap()
            .entry(c)
            .and_modify(|e| e.1 += 1)
            .or_insert((now, 1));
    }
    let id = v["id"].as_str()?;
    Some(serde_json::json!({ "id": id }).to_string())
}

/// A fleet cabinet as an MQTT 5 client (the `mqtt5` crate's, async on this runtime) that
/// acks every pulse, as a real cabinet does.
async fn fleet_receiver(mqtt: &str, machine_id: &str, secret: &str) -> anyhow::Result<Receiver> {
    let topics = Topics::new("arcade/machine");
    let client = mqtt5::MqttClient::new(format!("bench-{machine_id}"));
    let options = mqtt5::ConnectOptions::new(format!("bench-{machine_id}"))
        .with_credentials(machine_id, secret.as_bytes())
        .with_clean_start(true);
    let address = mqtt.replacen("tcp://", "mqtt://", 1);
    client
        .connect_with_options(&address, options)
        .await
        .map_err(|e| anyhow::anyhow!("fleet cabinet {machine_id}: {e}"))?;
    let arrivals: Arc<Mutex<HashMap<i64, (Instant, u32)>>> = Arc::default();
    let log: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let (sink, log_sink) = (arrivals.clone(), log.clone());
    let acker = client.clone();
    let ack_topic = topics.ack(machine_id);
    client
        .subscribe(topics.coinpulse(machine_id), move |m| {
            if let Some(ack) = arrived(&sink, &log_sink, &m.payload) {
                let (acker, topic) = (acker.clone(), ack_topic.clone());
                tokio::spawn(async move {
                    let _ = acker.publish_qos1(topic, ack.into_bytes()).await;
                });
            }
        })
        .await
        .map_err(|e| anyhow::anyhow!("fleet cabinet {machine_id}: {e}"))?;
    client
        .publish_qos1(topics.status(machine_id), b"online".to_vec())
        .await
        .map_err(|e| anyhow::anyhow!("fleet cabinet {machine_id}: {e}"))?;
    Ok(Receiver {
        arrivals,
        log,
        _client: Holder::Mqtt5(client),
    })
}

async fn wait_for(rx: &Receiver, count: usize, limit: Duration) -> bool {
    let start = Instant::now();
    while rx.arrivals.lock().unwrap().len() < count {
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    true
}

async fn post(client: &reqwest::Client, url: &str, body: String, sig: String) -> bool {
    match client
        .post(url)
        .header("Stripe-Signature", sig)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
    {
        Ok(r) => r.status().is_success(),
        Err(_) => false,
    }
}

/// One line of the final table: what was measured, and the figures.
type Report = Vec<(String, String)>;

/// The server under test and one HTTP client shared by every phase.
struct Bench {
    server: Server,
    /// Further replicas, when there are several.
    _others: Vec<Server>,
    client: reqwest::Client,
    /// Every replica's webhook endpoint; webhooks go to them in turn.
    urls: Vec<String>,
}

impl Bench {
    /// The endpoint for the `n`th webhook.
    fn url(&self, n: usize) -> &str {
        &self.urls[n % self.urls.len()]
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.postgres.is_some() || args.mqtt_url.is_some() || args.replicas > 1 {
        return scaled(&args).await;
    }
    println!("coinpulse bench: a `coinpulse serve` child process on loopback, SQLite (WAL, every batch fsync'd before its 200s), embedded broker\n");
    let mut report = Report::new();
    if args.dashboard_only {
        dashboard(&args, &mut report).await?;
        print_report(&report);
        return Ok(());
    }
    let bench = start(&args, &Backend::default(), &mut report).await?;
    pay_page(&bench, &mut report).await?;
    sequential_latency(&bench, args.sequential, &mut report).await?;
    wallet_latency(&bench, args.sequential, &mut report).await?;
    paced_rate(&bench, args.rate, args.rate_seconds, &mut report).await?;
    fleet(&bench, &args, &mut report).await?;
    throughput(&bench, args.throughput, args.concurrency, &mut report).await?;
    connections(&bench, args.cabinets, &mut report).await?;
    drop(bench);
    dashboard(&args, &mut report).await?;
    print_report(&report);
    Ok(())
}

fn print_report(report: &Report) {
    println!("\n{:<42} result", "measure");
    for (k, v) in report {
        println!("{k:<42} {v}");
    }
}

/// The money path on PostgreSQL and/or an external broker, with one or more replicas.
async fn scaled(args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.replicas == 1 || (args.postgres.is_some() && args.mqtt_url.is_some()),
        "several replicas need --postgres and --mqtt-url"
    );
    let database = match &args.postgres {
        Some(server) => Some(fresh_postgres(server).await?),
        None => None,
    };
    let backend = Backend {
        database_url: database.as_ref().map(|(url, _)| url.clone()),
        mqtt_url: args.mqtt_url.clone(),
    };
    println!(
        "coinpulse bench: {} replica(s) on {}, broker {}\n",
        args.replicas,
        if database.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        args.mqtt_url.as_deref().unwrap_or("embedded")
    );
    let mut report = Report::new();
    let result = async {
        let bench = start(args, &backend, &mut report).await?;
        sequential_latency(&bench, args.sequential, &mut report).await?;
        paced_rate(&bench, args.rate, args.rate_seconds, &mut report).await?;
        throughput(&bench, args.throughput, args.concurrency, &mut report).await?;
        if args.mqtt_url.is_some() {
            external_connections(&bench, args.cabinets, &mut report).await?;
        } else {
            connections(&bench, args.cabinets, &mut report).await?;
        }
        anyhow::Ok(())
    }
    .await;
    if let (Some(server), Some((_, name))) = (&args.postgres, &database) {
        drop_postgres(server, name).await;
    }
    result?;
    print_report(&report);
    Ok(())
}

/// A new, empty database on the PostgreSQL server at `server`: its URL and name.
async fn fresh_postgres(server: &str) -> anyhow::Result<(String, String)> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let name = format!(
        "coinpulse_bench_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let mut conn = sqlx::AnyConnection::connect(server).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    let (base, _) = server.rsplit_once('/').unwrap_or((server, ""));
    Ok((format!("{base}/{name}"), name))
}

async fn drop_postgres(server: &str, name: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::AnyConnection::connect(server).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
}

/// Starts the server (and further replicas); reports start-up time and idle memory.
async fn start(args: &BenchArgs, backend: &Backend, report: &mut Report) -> anyhow::Result<Bench> {
    let (server, ready, idle_rss) =
        start_server(args.server_log.as_deref(), None, backend, 0).await?;
    let mut others = Vec::new();
    for replica in 1..args.replicas {
        others.push(start_server(None, None, backend, replica).await?.0);
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let urls = std::iter::once(&server)
        .chain(&others)
        .map(|s| format!("{}/webhooks/stripe", s.base))
        .collect();
    report.push((
        "start to ready".into(),
        format!(
            "{:.0} ms (spawn → /status answers with MQTT connected)",
            ready.as_secs_f64() * 1000.0
        ),
    ));
    report.push((
        "idle memory".into(),
        format!("{:.1} MB RSS", idle_rss as f64 / 1024.0),
    ));
    Ok(Bench {
        server,
        _others: others,
        client,
        urls,
    })
}

/// The pay page a player's phone loads (its cabinet connected, or the page would only say
/// it is unavailable): weight and request time.
async fn pay_page(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let (client, base) = (&bench.client, &bench.server.base);
    let page_secret = register(client, base, "bench-page", 100).await?;
    let _page_cabinet = receiver(&bench.server.mqtt, "bench-page", &page_secret).await?;
    client
        .put(format!("{base}/api/v1/cabinets/bench-page/bundles"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"bundles": [{"credits": 1, "price_minor": 100}, {"credits": 3, "price_minor": 250}, {"credits": 6, "price_minor": 450}]}))
        .send()
        .await?
        .error_for_status()?;
    let page_url = format!("{base}/p/bench-page");
    let mut page_ms = Vec::with_capacity(1000);
    let mut page_bytes = 0;
    for _ in 0..1000 {
        let t0 = Instant::now();
        let body = client
            .get(&page_url)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        page_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        page_bytes = body.len();
    }
    let gzipped = client
        .get(&page_url)
        .header("Accept-Encoding", "gzip")
        .send()
        .await?
        .bytes()
        .await?
        .len();
    report.push(("pay page weight".into(), format!("{page_bytes} bytes, {gzipped} bytes gzipped; plus one stylesheet, cached for a year (no JS, no images)")));
    report.push((
        "pay page request (render + loopback)".into(),
        summary(page_ms),
    ));
    Ok(())
}

/// Webhook → pulse latency, one webhook at a time.
async fn sequential_latency(bench: &Bench, n: usize, report: &mut Report) -> anyhow::Result<()> {
    let secret = register(&bench.client, &bench.server.base, "bench-seq", 1).await?;
    let rx = receiver(&bench.server.mqtt, "bench-seq", &secret).await?;
    let pb = bar(n as u64, "sequential webhooks");
    let mut lat = Vec::with_capacity(n);
    for seq in 1..=n as i64 {
        let (body, sig) = webhook("bench-seq", seq);
        let t0 = Instant::now();
        anyhow::ensure!(
            post(&bench.client, bench.url(seq as usize), body, sig).await,
            "webhook refused"
        );
        anyhow::ensure!(
            wait_for(&rx, seq as usize, Duration::from_secs(10)).await,
            "pulse {seq} never arrived"
        );
        let at = rx.arrivals.lock().unwrap()[&seq].0;
        lat.push(at.duration_since(t0).as_secs_f64() * 1000.0);
        pb.inc(1);
    }
    pb.finish_and_clear();
    report.push(("webhook → pulse, one at a time".into(), summary(lat)));
    Ok(())
}

/// "Play now" → pulse latency, one tap at a time: a phone with a funded wallet loads the
/// pay page and taps, as a player does. Each tap comes from a fresh page (its own pay
/// cookie) and one of ten loopback addresses, as taps from many phones would, so the
/// pay pages' rate limits see no single phone hammering.
async fn wallet_latency(bench: &Bench, n: usize, report: &mut Report) -> anyhow::Result<()> {
    const MACHINE: &str = "bench-wallet";
    let base = &bench.server.base;
    let secret = register(&bench.client, base, MACHINE, 100).await?;
    let rx = receiver(&bench.server.mqtt, MACHINE, &secret).await?;
    // A wallet with enough for every tap, written the way a top-up's webhook writes it.
    let store = crate::store::Store::connect(&format!(
        "sqlite://{}/bench.db",
        bench.server._dir.0.display()
    ))
    .await?;
    let wallet = store
        .create_wallet(&uuid::Uuid::new_v4().simple().to_string(), "usd")
        .await?;
    let mut tx = store.begin().await?;
    tx.append_ledger(&crate::store::NewLedgerRow {
        wallet_id: &wallet.id,
        kind: crate::domain::LedgerKind::Topup,
        amount_minor: 100 * n as i64 + 100,
        reason: "bench",
        reference: "bench-topup",
        machine_id: None,
        at: &crate::domain::now_db(),
    })
    .await?;
    tx.commit().await?;
    store.close().await;
    let keys = crate::domain::Keys::new(MASTER_KEY.as_bytes().to_vec());
    let wallet_cookie = format!(
        "cp_wallet={}",
        crate::domain::wallet::cookie_value(&keys, &wallet.id)
    );
    let phones: Vec<reqwest::Client> = (0..10u8)
        .map(|k| {
            reqwest::Client::builder()
                .local_address(std::net::IpAddr::V4(std::net::Ipv4Addr::new(
                    127,
                    0,
                    0,
                    2 + k,
                )))
                .redirect(reqwest::redirect::Policy::none())
                .build()
        })
        .collect::<Result<_, _>>()?;
    let field = |html: &str, name: &str| -> Option<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let at = html.find(&marker)? + marker.len();
        Some(html[at..at + html[at..].find('"')?].to_owned())
    };
    let page_url = format!("{base}/p/{MACHINE}");
    let tap_url = format!("{base}/p/{MACHINE}/wallet");
    let pb = bar(n as u64, "wallet taps");
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let phone = &phones[i % phones.len()];
        let page = phone
            .get(&page_url)
            .header(reqwest::header::COOKIE, &wallet_cookie)
            .send()
            .await?;
        let pay_cookie = session_cookie_named(&page, "cp_pay")
            .ok_or_else(|| anyhow::anyhow!("the pay page set no cookie"))?;
        let html = page.text().await?;
        let (Some(csrf), Some(nonce)) = (field(&html, "csrf"), field(&html, "nonce")) else {
            anyhow::bail!("the pay page offered no Play now form");
        };
        let before = rx.log.lock().unwrap().len();
        let t0 = Instant::now();
        let res = phone
            .post(&tap_url)
            .header(
                reqwest::header::COOKIE,
                format!("{wallet_cookie}; {pay_cookie}"),
            )
            .form(&[
                ("csrf", csrf.as_str()),
                ("nonce", nonce.as_str()),
                ("bundle", "0"),
            ])
            .send()
            .await?;
        anyhow::ensure!(
            res.status().as_u16() == 303,
            "tap refused: {}",
            res.status()
        );
        let start = Instant::now();
        let at = loop {
            if let Some(at) = rx.log.lock().unwrap().get(before).copied() {
                break at;
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(10),
                "tap {i}: no pulse"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        lat.push(at.duration_since(t0).as_secs_f64() * 1000.0);
        pb.inc(1);
    }
    pb.finish_and_clear();
    report.push(("wallet tap → pulse, one at a time".into(), summary(lat)));
    Ok(())
}

/// Webhook → pulse latency at a steady rate to one cabinet.
async fn paced_rate(
    bench: &Bench,
    rate: u64,
    seconds: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let total = (rate * seconds) as usize;
    let secret = register(&bench.client, &bench.server.base, "bench-rate", 1).await?;
    let rx = receiver(&bench.server.mqtt, "bench-rate", &secret).await?;
    // Signed before the clock starts.
    let prepared: Vec<(i64, (String, String))> = (1..=total as i64)
        .map(|s| (s, webhook("bench-rate", s)))
        .collect();
    let pb = bar(total as u64, &format!("{rate} webhooks/s"));
    let (ok, sent) = send_paced(bench, rate, prepared, &pb).await;
    wait_for(&rx, total, Duration::from_secs(30)).await;
    let lat: Vec<f64> = {
        let arrivals = rx.arrivals.lock().unwrap().clone();
        arrivals
            .iter()
            .filter_map(|(k, (at, _))| {
                sent.get(k)
                    .map(|s| at.duration_since(*s).as_secs_f64() * 1000.0)
            })
            .collect()
    };
    report.push((
        format!("webhook → pulse at {rate}/s"),
        format!("{} ; {ok}/{total} answered 200", summary(lat)),
    ));
    Ok(())
}

/// Many acking cabinets sharing a steady stream of webhooks.
async fn fleet(bench: &Bench, args: &BenchArgs, report: &mut Report) -> anyhow::Result<()> {
    let fleet_total = (args.fleet_rate * args.rate_seconds) as usize;
    let fleet_size = args.fleet as usize;
    let pb = bar(fleet_size as u64, "fleet cabinets");
    // MQTT 5 clients on this process's runtime: paho's one network thread per process
    // takes about a second to add each new connection, too slow for a fleet.
    let joins: Vec<_> = (0..fleet_size)
        .map(|i| {
            let (client, base, mqtt, pb) = (
                bench.client.clone(),
                bench.server.base.clone(),
                bench.server.mqtt.clone(),
                pb.clone(),
            );
            tokio::spawn(async move {
                let id = format!("bench-fleet-{i}");
                let secret = register(&client, &base, &id, 1).await?;
                let rx = fleet_receiver(&mqtt, &id, &secret).await?;
                pb.inc(1);
                anyhow::Ok((id, rx))
            })
        })
        .collect();
    let mut fleet = Vec::with_capacity(fleet_size);
    for j in futures::future::join_all(joins).await {
        fleet.push(j??);
    }
    pb.finish_and_clear();
    let pb = bar(
        fleet_total as u64,
        &format!("{} cabinets at {}/s", fleet_size, args.fleet_rate),
    );
    // Webhook i goes to cabinet i % fleet, signed just before its turn.
    let webhooks = (0..fleet_total).map(|i| {
        let cab = i % fleet_size;
        let seq = (i / fleet_size) as i64 + 1;
        ((cab, seq), webhook(&fleet[cab].0, seq))
    });
    let (ok, sent) = send_paced(bench, args.fleet_rate, webhooks, &pb).await;
    // One deadline for the whole fleet: a missing pulse shows in the count, not as a hang.
    let deadline = Instant::now() + Duration::from_secs(10);
    for (cab, (_, rx)) in fleet.iter().enumerate() {
        let expected = fleet_total / fleet_size + usize::from(cab < fleet_total % fleet_size);
        let left = deadline.saturating_duration_since(Instant::now());
        wait_for(rx, expected, left).await;
    }
    let (mut lat, mut late, mut doubled) = (Vec::new(), 0usize, 0usize);
    for (cab, (_, rx)) in fleet.iter().enumerate() {
        for (seq, (at, times)) in rx.arrivals.lock().unwrap().iter() {
            doubled += usize::from(*times > 1);
            if let Some(s) = sent.get(&(cab, *seq)) {
                let ms = at.duration_since(*s).as_secs_f64() * 1000.0;
                late += usize::from(ms > 2000.0);
                lat.push(ms);
            }
        }
    }
    let received = lat.len();
    report.push((
        format!("webhook → pulse, {} acking cabinets at {}/s", fleet_size, args.fleet_rate),
        format!(
            "{} ; {ok}/{fleet_total} answered 200, {received} received, {late} later than 2 s, {doubled} twice",
            summary(lat)
        ),
    ));
    Ok(())
}

/// Sends webhooks at `rate` per second, each on its own task so a slow answer never delays
/// the next; returns how many were answered 200 and when each key's webhook went out.
async fn send_paced<K: std::hash::Hash + Eq>(
    bench: &Bench,
    rate: u64,
    webhooks: impl IntoIterator<Item = (K, (String, String))>,
    pb: &ProgressBar,
) -> (usize, HashMap<K, Instant>) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent_at = HashMap::new();
    let mut handles = Vec::new();
    for (n, (key, (body, sig))) in webhooks.into_iter().enumerate() {
        tick.tick().await;
        let (client, url) = (bench.client.clone(), bench.url(n).to_owned());
        sent_at.insert(key, Instant::now());
        handles.push(tokio::spawn(
            async move { post(&client, &url, body, sig).await },
        ));
        pb.inc(1);
    }
    pb.finish_and_clear();
    let ok = futures::future::join_all(handles)
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(true)))
        .count();
    (ok, sent_at)
}

/// Webhooks as fast as the server takes them from `concurrency` senders, then how many
/// arrived as pulses.
async fn throughput(
    bench: &Bench,
    n: usize,
    concurrency: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let secret = register(&bench.client, &bench.server.base, "bench-max", 1).await?;
    let rx = receiver(&bench.server.mqtt, "bench-max", &secret).await?;
    let prepared: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(
        (1..=n as i64)
            .rev()
            .map(|s| webhook("bench-max", s))
            .collect(),
    ));
    let pb = bar(n as u64, "max throughput");
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let (client, url, prepared, pb) = (
                bench.client.clone(),
                bench.url(w).to_owned(),
                prepared.clone(),
                pb.clone(),
            );
            tokio::spawn(async move {
                let mut ok = 0usize;
                loop {
                    let next = prepared.lock().unwrap().pop();
                    let Some((body, sig)) = next else { break };
                    if post(&client, &url, body, sig).await {
                        ok += 1;
                    }
                    pb.inc(1);
                }
                ok
            })
        })
        .collect();
    let ok: usize = futures::future::join_all(workers)
        .await
        .into_iter()
        .map(|r| r.unwrap_or(0))
        .sum();
    let acked = start.elapsed();
    let all = wait_for(&rx, n, Duration::from_secs(60)).await;
    let delivered = start.elapsed();
    pb.finish_and_clear();
    let (received, doubled) = {
        let arrivals = rx.arrivals.lock().unwrap();
        (
            arrivals.len(),
            arrivals.values().filter(|(_, c)| *c > 1).count(),
        )
    };
    report.push((
        "throughput (verified, stored, fsync'd)".into(),
        format!(
            "{:.0} webhooks/s answered 200 ({ok}/{n} in {:.2} s, {} senders)",
            ok as f64 / acked.as_secs_f64(),
            acked.as_secs_f64(),
            concurrency
        ),
    ));
    report.push((
        "  … delivered as pulses".into(),
        format!(
            "{} of {n} received in {:.2} s; lost {}, received twice {doubled}{}",
            received,
            delivered.as_secs_f64(),
            n - received,
            if all { "" } else { " (timed out)" }
        ),
    ));
    Ok(())
}

/// Many idle cabinets connected at once: time to connect them and memory per connection.
async fn connections(bench: &Bench, n: usize, report: &mut Report) -> anyhow::Result<()> {
    if n == 0 {
        return Ok(());
    }
    let before = rss_kib(bench.server.child.id()).unwrap_or(0);
    let fleet = many_cabinets(&bench.client, &bench.server, n, None).await?;
    let (connected, took) = (fleet.streams.len(), fleet.took);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = rss_kib(bench.server.child.id()).unwrap_or(0);
    drop(fleet);
    let per_conn = (rss.saturating_sub(before) as f64 * 1024.0) / connected.max(1) as f64;
    report.push((
        format!("{n} cabinets on the embedded broker"),
        format!(
            "{connected} connected in {:.1} s; server RSS {:.1} MB → {:.1} MB, {:.0} KB per connection",
            took.as_secs_f64(),
            before as f64 / 1024.0,
            rss as f64 / 1024.0,
            per_conn / 1024.0
        ),
    ));
    Ok(())
}

/// Many idle cabinets on an external broker. The server holds no connection of theirs, so
/// what it sees is each cabinet's `online` status: the time until `/metrics` counts them
/// all, and the server's memory with them recorded.
async fn external_connections(bench: &Bench, n: usize, report: &mut Report) -> anyhow::Result<()> {
    if n == 0 {
        return Ok(());
    }
    let before = rss_kib(bench.server.child.id()).unwrap_or(0);
    // The earlier runs' cabinets are online too.
    let already = cabinets_connected(&bench.client, &bench.server.base).await?;
    let topics = Topics::new(coinpulse_wire::DEFAULT_TOPIC_PREFIX);
    let fleet = many_cabinets(&bench.client, &bench.server, n, Some(&topics)).await?;
    let (connected, took) = (fleet.streams.len(), fleet.took);
    let pb = bar(connected as u64, "server sees them online");
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen < connected && Instant::now() < deadline {
        seen = cabinets_connected(&bench.client, &bench.server.base)
            .await?
            .saturating_sub(already);
        pb.set_position(seen.min(connected) as u64);
        // Often enough to time it, seldom enough not to load the server it is timing.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pb.finish_and_clear();
    let all_seen = fleet.started.elapsed();
    let rss = rss_kib(bench.server.child.id()).unwrap_or(0);
    drop(fleet);
    report.push((
        format!("{n} cabinets on the external broker"),
        format!(
            "{connected} connected in {:.1} s; the server counted {seen} online {:.1} s after the first connect; server RSS {:.1} MB → {:.1} MB",
            took.as_secs_f64(),
            all_seen.as_secs_f64(),
            before as f64 / 1024.0,
            rss as f64 / 1024.0,
        ),
    ));
    Ok(())
}

/// The server's `coinpulse_cabinets_connected` gauge.
async fn cabinets_connected(client: &reqwest::Client, base: &str) -> anyhow::Result<usize> {
    let text = client
        .get(format!("{base}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix("coinpulse_cabinets_connected "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as usize)
        .context("no coinpulse_cabinets_connected in /metrics")
}

/// Open cabinet connections, held until dropped.
struct Fleet {
    streams: Vec<tokio::net::TcpStream>,
    /// When the first connection was attempted, and how long until the last was accepted.
    started: Instant,
    took: Duration,
}

/// Registers `n` cabinets and holds one raw MQTT 3.1.1 connection open for each; with
/// `announce`, each publishes `online` on its status topic once accepted, as a real
/// cabinet does.
async fn many_cabinets(
    client: &reqwest::Client,
    server: &Server,
    n: usize,
    announce: Option<&Topics>,
) -> anyhow::Result<Fleet> {
    crate::app::raise_fd_limit();
    let pb = bar(n as u64, "registering cabinets");
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    let mut regs = Vec::with_capacity(n);
    for i in 0..n {
        let (client, base, sem, pb) =
            (client.clone(), server.base.clone(), sem.clone(), pb.clone());
        regs.push(tokio::spawn(async move {
            let _p = sem.acquire().await;
            let id = format!("fleet-{i}");
            let secret = register(&client, &base, &id, 100).await;
            pb.inc(1);
            secret.map(|s| (id, s))
        }));
    }
    let creds: Vec<(String, String)> = futures::future::join_all(regs)
        .await
        .into_iter()
        .filter_map(|r| r.ok()?.ok())
        .collect();
    pb.finish_and_clear();
    let addr = server
        .mqtt
        .trim_start_matches("tcp://")
        .trim_start_matches("mqtt://")
        .to_owned();
    let pb = bar(creds.len() as u64, "connecting cabinets");
    let sem = Arc::new(tokio::sync::Semaphore::new(256));
    let start = Instant::now();
    let mut conns = Vec::with_capacity(creds.len());
    for (id, secret) in creds {
        let (addr, sem, pb) = (addr.clone(), sem.clone(), pb.clone());
        let status = announce.map(|t| t.status(&id));
        conns.push(tokio::spawn(async move {
            let _p = sem.acquire().await;
            // Like a real cabinet, retry a refused or reset attempt (a reconnect storm
            // overflows the listen queue for a moment).
            let mut attempt = 0;
            let r = loop {
                attempt += 1;
                match mqtt_connect(&addr, &id, &secret, status.as_deref()).await {
                    Err(_) if attempt < 5 => {
                        tokio::time::sleep(Duration::from_millis(200 * attempt)).await
                    }
                    other => break other,
                }
            };
            pb.inc(1);
            r.map(|s| (s, attempt)).map_err(|e| e.to_string())
        }));
    }
    let mut streams = Vec::new();
    let mut retried = 0usize;
    let mut failures: HashMap<String, usize> = HashMap::new();
    for r in futures::future::join_all(conns).await {
        match r {
            Ok(Ok((s, attempts))) => {
                retried += usize::from(attempts > 1);
                streams.push(s)
            }
            Ok(Err(e)) => *failures.entry(e).or_default() += 1,
            Err(e) => *failures.entry(e.to_string()).or_default() += 1,
        }
    }
    for (why, n) in &failures {
        eprintln!("  {n} cabinet connection(s) failed: {why}");
    }
    if retried > 0 {
        eprintln!("  {retried} cabinet(s) needed more than one attempt");
    }
    let took = start.elapsed();
    pb.finish_and_clear();
    Ok(Fleet {
        streams,
        started: start,
        took,
    })
}

/// CONNECT with username/password and clean session; returns the stream once CONNACK
/// accepts, after publishing `online` (QoS 0, not retained) to `status` when given.
async fn mqtt_connect(
    addr: &str,
    user: &str,
    pass: &str,
    status: Option<&str>,
) -> anyhow::Result<tokio::net::TcpStream> {
    fn field(buf: &mut Vec<u8>, s: &str) {
        buf.extend_from_slice(&(s.len() as u16).to_be_bytes());
        buf.extend_from_slice(s.as_bytes());
    }
    let mut body = Vec::new();
    field(&mut body, "MQTT");
    body.push(4); // protocol level 3.1.1
    body.push(0b1100_0010); // username, password, clean session
    body.extend_from_slice(&600u16.to_be_bytes()); // keep-alive 10 min: idle for the whole run
    field(&mut body, &format!("c-{user}"));
    field(&mut body, user);
    field(&mut body, pass);
    fn packet(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut packet = vec![kind];
        let mut len = body.len();
        loop {
            let mut byte = (len % 128) as u8;
            len /= 128;
            if len > 0 {
                byte |= 0x80;
            }
            packet.push(byte);
            if len == 0 {
                break;
            }
        }
        packet.extend_from_slice(body);
        packet
    }
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(&packet(0x10, &body)).await?;
    let mut connack = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(20), stream.read_exact(&mut connack)).await??;
    anyhow::ensure!(
        connack[0] == 0x20 && connack[3] == 0,
        "refused: {connack:?}"
    );
    if let Some(topic) = status {
        let mut publish = Vec::new();
        field(&mut publish, topic);
        publish.extend_from_slice(coinpulse_wire::ONLINE.as_bytes());
        stream.write_all(&packet(0x30, &publish)).await?;
    }
    Ok(stream)
}

/// The `cp_session=…` pair a response sets, if any.
fn session_cookie(res: &reqwest::Response) -> Option<String> {
    session_cookie_named(res, "cp_session")
}

/// The `name=…` pair a response sets, if any.
fn session_cookie_named(res: &reqwest::Response, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    res.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|p| p.starts_with(&prefix))
        .map(str::to_owned)
}

/// Signs in to the dashboard as a browser would; returns the session cookie.
async fn sign_in(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
) -> anyhow::Result<String> {
    let page = client.get(format!("{base}/admin/login")).send().await?;
    let cookie = session_cookie(&page).ok_or_else(|| anyhow::anyhow!("no session cookie"))?;
    let body = page.text().await?;
    let csrf = body
        .split("name=\"csrf_token\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .ok_or_else(|| anyhow::anyhow!("no CSRF token on the sign-in page"))?;
    let res = client
        .post(format!("{base}/admin/login"))
        .header(reqwest::header::COOKIE, &cookie)
        .form(&[
            ("csrf_token", csrf),
            ("email", email),
            ("password", password),
            ("next", "/admin"),
        ])
        .send()
        .await?;
    session_cookie(&res).ok_or_else(|| anyhow::anyhow!("sign-in failed: {}", res.status()))
}

/// The dashboard at size: overview render time and the CSV export of every payment, on a
/// database seeded with `dashboard_cabinets` cabinets and `dashboard_payments` payments.
async fn dashboard(args: &BenchArgs, report: &mut Report) -> anyhow::Result<()> {
    const EMAIL: &str = "bench@example.com";
    const PASSWORD: &str = "bench-dashboard-password-7";
    let dir = scratch_dir()?;
    let store =
        crate::store::Store::connect(&format!("sqlite://{}/bench.db?mode=rwc", dir.display()))
            .await?;
    let pb = bar(args.dashboard_payments as u64, "seeding payments");
    store
        .seed_history(args.dashboard_cabinets, args.dashboard_payments, |n| {
            pb.inc(n)
        })
        .await?;
    pb.finish_and_clear();
    crate::accounts::create_user(
        &store,
        EMAIL,
        crate::domain::Role::Owner,
        PASSWORD,
        PASSWORD,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    store.close().await;

    let (server, _, _) = start_server(
        args.server_log.as_deref(),
        Some(dir),
        &Backend::default(),
        0,
    )
    .await?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let cookie = sign_in(&client, &server.base, EMAIL, PASSWORD).await?;
    let overview = format!("{}/admin", server.base);
    let runs = 200;
    let pb = bar(runs, "overview renders");
    let mut ms = Vec::with_capacity(runs as usize);
    for i in 0..runs + 5 {
        let t0 = Instant::now();
        let res = client
            .get(&overview)
            .header(reqwest::header::COOKIE, &cookie)
            .send()
            .await?
            .error_for_status()?;
        res.bytes().await?;
        if i >= 5 {
            ms.push(t0.elapsed().as_secs_f64() * 1000.0);
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    report.push((
        format!(
            "overview ({} cabinets, {} payments)",
            args.dashboard_cabinets, args.dashboard_payments
        ),
        summary(ms),
    ));

    // The CSV export, with the server's memory sampled while it streams.
    let pid = server.child.id();
    let before = rss_kib(pid).unwrap_or(0);
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(r) = rss_kib(pid) {
                    peak.fetch_max(r, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let t0 = Instant::now();
    let mut res = client
        .get(format!("{}/admin/payments.csv", server.base))
        .header(reqwest::header::COOKIE, &cookie)
        .send()
        .await?
        .error_for_status()?;
    let (mut bytes, mut lines) = (0usize, 0usize);
    while let Some(chunk) = res.chunk().await? {
        bytes += chunk.len();
        lines += chunk.iter().filter(|b| **b == b'\n').count();
    }
    let took = t0.elapsed();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = sampler.await;
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    report.push((
        "CSV export of every payment".into(),
        format!(
            "{} rows, {:.1} MB in {:.2} s; server RSS {:.1} MB before, {:.1} MB peak",
            lines.saturating_sub(1),
            bytes as f64 / 1e6,
            took.as_secs_f64(),
            before as f64 / 1024.0,
            peak as f64 / 1024.0
        ),
    ));
    Ok(())
}
