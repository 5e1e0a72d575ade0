//! Two `coinpulse serve` processes on one PostgreSQL and one Mosquitto behave like one: every
//! webhook credited once whichever replica gets it (also both at once), every pulse received
//! once by its cabinet, and a replica killed mid-stream loses nothing and doubles nothing.
//! Needs the machine's PostgreSQL (127.0.0.1:5432) and Mosquitto (127.0.0.1:1883); without
//! them it says so and passes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Semaphore;

use crate::support::*;

const CABINETS: usize = 50;
const BROKER: &str = "tcp://127.0.0.1:1883";

fn reachable(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(300),
    )
    .is_ok()
}

fn replica(db: &str, prefix: &str, broker: &str) -> Server {
    let mut s = Server::new();
    s.database_url = Some(db.to_owned());
    s.external = Some(broker.to_owned());
    s.prefix = prefix.to_owned();
    s
}

/// A TCP relay to the machine's Mosquitto that the test can cut: the replica behind it
/// loses its broker while it keeps taking webhooks.
struct Cuttable {
    port: u16,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Cuttable {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                let mut stop = cut_rx.clone();
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stop.wait_for(|c| *c) => return,
                };
                let Ok((mut inbound, _)) = accepted else {
                    return;
                };
                let mut stop = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", 1883)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = stop.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Self { port, cut }
    }

    fn uri(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// Drops every connection through it and accepts no more.
    fn cut(&self) {
        let _ = self.cut.send(true);
    }
}

type Answered = Arc<std::sync::Mutex<HashSet<usize>>>;

/// Sends `events` (index, replicas to send it to) with 16 in flight; the indexes answered
/// 200 by at least one replica go into `answered` as they come.
async fn send_into(
    targets: &[Arc<TestApp>],
    events: &[(usize, Vec<usize>)],
    all: &Arc<Vec<Value>>,
    answered: &Answered,
) {
    let sem = Arc::new(Semaphore::new(16));
    let mut tasks = Vec::new();
    for (i, to) in events.iter().cloned() {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let (answered, all) = (answered.clone(), all.clone());
        let apps: Vec<Arc<TestApp>> = to.iter().map(|&r| targets[r].clone()).collect();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let sends = apps.iter().map(|app| {
                let body = all[i].to_string();
                async move {
                    let res = tokio::time::timeout(
                        Duration::from_secs(10),
                        app.http
                            .post(format!("{}/webhooks/stripe", app.base))
                            .header("Stripe-Signature", stripe_signature(&body))
                            .body(body)
                            .send(),
                    )
                    .await;
                    matches!(res, Ok(Ok(r)) if r.status() == 200)
                }
            });
            if futures::future::join_all(sends)
                .await
                .into_iter()
                .any(|ok| ok)
            {
                answered.lock().unwrap().insert(i);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn send_all(
    targets: &[Arc<TestApp>],
    events: &[(usize, Vec<usize>)],
    all: &Arc<Vec<Value>>,
) -> HashSet<usize> {
    let answered = Answered::default();
    send_into(targets, events, all, &answered).await;
    let answered = answered.lock().unwrap().clone();
    answered
}

#[tokio::test]
async fn two_replicas_credit_every_payment_once_and_survive_losing_one() {
    if !reachable(5432) || !reachable(1883) {
        eprintln!("PostgreSQL or Mosquitto is not running here; skipped");
        return;
    }
    let server = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db = fresh_postgres_db(&server).await;
    let prefix = format!(
        "r{}/arcade/machine",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let relay = Cuttable::start().await;
    let (mut a, mut b) = (
        replica(&db, &prefix, BROKER),
        replica(&db, &prefix, &relay.uri()),
    );
    let app_a = Arc::new(a.start().await);
    let app_b = Arc::new(b.start().await);

    let mut ids = Vec::new();
    let mut secrets = Vec::new();
    for _ in 0..CABINETS {
        let id = unique("cab");
        secrets.push(app_a.register(&id, 100, "usd").await);
        ids.push(id);
    }
    let mut cabs = futures::future::join_all(
        ids.iter()
            .zip(&secrets)
            .map(|(id, secret)| app_a.connect_cabinet(id, secret, true)),
    )
    .await;

    // 1,000 payments: 900 to one replica or the other, 100 to both at the same moment.
    let events: Arc<Vec<Value>> = Arc::new(
        (0..1200)
            .map(|i| paid(&ids[i % CABINETS], 100, "usd"))
            .collect(),
    );
    let plan: Vec<(usize, Vec<usize>)> = (0..1000)
        .map(|i| match i % 10 {
            0 => (i, vec![0, 1]),
            n => (i, vec![n % 2]),
        })
        .collect();
    let targets = [app_a.clone(), app_b.clone()];
    let answered = send_all(&targets, &plan, &events).await;
    assert_eq!(
        answered.len(),
        1000,
        "log A:\n{}\nlog B:\n{}",
        a.log(),
        b.log()
    );

    let mut seen: HashMap<String, HashSet<String>> = HashMap::new();
    let drained = futures::future::join_all(
        cabs.iter_mut()
            .map(|cab| drain(cab, 20, Duration::from_secs(30))),
    )
    .await;
    for (n, (credited, repeats)) in drained.into_iter().enumerate() {
        let unique_ids: HashSet<String> = credited.iter().cloned().collect();
        assert_eq!(
            unique_ids.len(),
            credited.len(),
            "cabinet {n} credited a pulse twice"
        );
        assert_eq!(credited.len(), 20, "cabinet {n}: {} of 20", credited.len());
        let about = |log: String| -> String {
            log.lines()
                .filter(|l| l.contains(&ids[n]))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            repeats,
            0,
            "cabinet {n} was sent a pulse twice; A:\n{}\nB:\n{}",
            about(a.log()),
            about(b.log())
        );
        seen.insert(ids[n].clone(), unique_ids);
    }
    for id in &ids {
        assert_eq!(app_a.payments(id).await.len(), 20, "payments of {id}");
    }

    // 200 more, half to each. B has lost its broker: it still takes webhooks, but cannot
    // publish their pulses, which A takes over once B's claims lapse. B is then killed with
    // SIGKILL while webhooks are in flight, and what it left unanswered is sent again (to
    // A), as Stripe would.
    relay.cut();
    let second: Vec<(usize, Vec<usize>)> = (1000..1200).map(|i| (i, vec![i % 2])).collect();
    let progress = Answered::default();
    let sending = {
        let (targets, events, progress) = (targets.clone(), events.clone(), progress.clone());
        tokio::spawn(async move { send_into(&targets, &second, &events, &progress).await })
    };
    app_a
        .eventually("a third of them answered", || async {
            progress.lock().unwrap().len() >= 70
        })
        .await;
    b.kill9();
    sending.await.unwrap();
    let mut answered = progress.lock().unwrap().clone();
    assert!(answered.len() < 200, "B was killed mid-stream");
    let retry: Vec<(usize, Vec<usize>)> = (1000..1200)
        .filter(|i| !answered.contains(i))
        .map(|i| (i, vec![0]))
        .collect();
    answered.extend(send_all(&targets, &retry, &events).await);
    assert_eq!(answered.len(), 200, "every webhook answered in the end");

    // A takes over what B claimed once B's claims lapse.
    let drained = futures::future::join_all(
        cabs.iter_mut()
            .map(|cab| drain(cab, 4, Duration::from_secs(45))),
    )
    .await;
    for (n, (credited, _repeats)) in drained.into_iter().enumerate() {
        let fresh: HashSet<String> = credited.iter().cloned().collect();
        assert_eq!(
            fresh.len(),
            credited.len(),
            "cabinet {n} credited a pulse twice"
        );
        assert_eq!(
            credited.len(),
            4,
            "cabinet {n}: {} of 4 after the kill; log A:\n{}",
            credited.len(),
            a.log()
        );
        assert!(
            seen[&ids[n]].is_disjoint(&fresh),
            "cabinet {n}: an old pulse credited again"
        );
    }
    for id in &ids {
        assert_eq!(app_a.payments(id).await.len(), 24, "payments of {id}");
    }
}

#[tokio::test]
async fn a_second_embedded_broker_on_one_database_refuses_to_start() {
    let mut first = Server::new();
    first.external = None;
    let app = first.start().await;
    // Another server on the same database, with ports and a client id of its own.
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_coinpulse"))
            .arg("serve")
            .current_dir(dir.path())
            .env("DATABASE_URL", first.database())
            .env("BIND", format!("127.0.0.1:{}", free_port()))
            .env("MQTT_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("MQTT_CLIENT_ID", unique("second"))
            .env("SECRET_KEY", SECRET_KEY)
            .env_remove("MQTT_URL")
            .output(),
    )
    .await
    .expect("the second server gives up")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("set MQTT_URL"), "{stderr}");
    // The first one is unharmed.
    assert_eq!(app.status().await["mqtt"], "connected");
}
