//! A real `coinpulse serve` as a child process, to kill with SIGKILL and start again on the
//! same database (restart tests), or to run beside another (replica tests).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use coinpulse_cabinet::Event as SimEvent;
use serde_json::Value;

use super::*;

/// A server process and everything needed to start it again the same way.
pub struct Server {
    child: Option<Child>,
    dir: tempfile::TempDir,
    http_port: u16,
    mqtt_port: u16,
    pub prefix: String,
    client_id: String,
    /// TEST_MQTT_URL: the same tests against an external broker (the machine's Mosquitto).
    pub external: Option<String>,
    /// The database; None: a SQLite file of its own.
    pub database_url: Option<String>,
}

impl Server {
    pub fn new() -> Self {
        Self {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            http_port: free_port(),
            mqtt_port: free_port(),
            prefix: format!(
                "k{}/arcade/machine",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            client_id: unique("coinpulse-kill"),
            external: std::env::var("TEST_MQTT_URL")
                .ok()
                .filter(|u| !u.is_empty()),
            database_url: None,
        }
    }

    /// Starts the binary (secrets through the environment, never the command line) and
    /// waits until it is connected to its broker.
    pub async fn start(&mut self) -> TestApp {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_coinpulse"));
        cmd.env_clear();
        if let Some(url) = &self.external {
            cmd.env("MQTT_URL", url);
        }
        let child = cmd
            .arg("serve")
            .current_dir(self.dir.path())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "DATABASE_URL",
                self.database_url
                    .clone()
                    .unwrap_or_else(|| self.dir.path().join("coinpulse.db").display().to_string()),
            )
            .env("BIND", format!("127.0.0.1:{}", self.http_port))
            .env("PUBLIC_URL", format!("http://127.0.0.1:{}", self.http_port))
            .env("MQTT_LISTEN", format!("127.0.0.1:{}", self.mqtt_port))
            .env("MQTT_TOPIC_PREFIX", &self.prefix)
            .env("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("API_TOKEN", API_TOKEN)
            .env("SECRET_KEY", SECRET_KEY)
            .env("RUST_LOG", "coinpulse=debug")
            .env("MQTT_CLIENT_ID", &self.client_id)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("coinpulse binary starts");
        self.child = Some(child);
        let app = TestApp {
            base: format!("http://127.0.0.1:{}", self.http_port),
            broker: self
                .external
                .clone()
                .unwrap_or_else(|| format!("tcp://127.0.0.1:{}", self.mqtt_port)),
            broker_ca_file: None,
            topic_prefix: self.prefix.clone(),
            server_client_id: self.client_id.clone(),
            http: reqwest::Client::new(),
            stop: None,
            setup_url: None,
        };
        for _ in 0..400 {
            if let Ok(r) = app.http.get(format!("{}/status", app.base)).send().await {
                if let Ok(v) = r.json::<Value>().await {
                    if v["mqtt"] == "connected" {
                        return app;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("server did not come up; log:\n{}", self.log());
    }

    /// The database it runs on.
    pub fn database(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| self.dir.path().join("coinpulse.db").display().to_string())
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL");
            c.wait().unwrap();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Everything a cabinet reports within `quiet` of the last event: credited pulse ids and
/// the count of repeats it saw (a repeat is a double credit on a seed cabinet).
pub async fn drain(cab: &mut Cabinet, want: usize, within: Duration) -> (Vec<String>, usize) {
    let mut credited = Vec::new();
    let mut repeats = 0;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let wait = if credited.len() >= want {
            // Everything is in: keep listening a little for anything extra.
            Duration::from_millis(1500)
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        match tokio::time::timeout(wait, cab.events.recv()).await {
            Ok(Some(SimEvent::Credit(p))) => credited.push(p.id),
            Ok(Some(SimEvent::Duplicate(_))) => repeats += 1,
            Ok(Some(other)) => panic!("{}: unexpected {other:?}", cab.machine_id),
            Ok(None) | Err(_) => return (credited, repeats),
        }
    }
}
