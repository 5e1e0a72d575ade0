//! The cabinet agent binary (`coinpulse-cabinet`) as a child process: its config in a
//! temporary directory, its log captured, killed with `kill -9` like a power cut.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use super::TestApp;

/// The agent binary, built first if it is missing or older than its sources.
/// `cargo test --workspace` builds it with everything else (the agent crate has tests of
/// its own); this covers `cargo test --test it` on its own.
pub fn agent_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let server = Path::new(env!("CARGO_BIN_EXE_coinpulse"));
        let profile_dir = server.parent().expect("target/<profile>");
        let bin = profile_dir.join("coinpulse-cabinet");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let newest_source = ["crates/cabinet/src", "crates/wire/src"]
            .iter()
            .flat_map(|d| std::fs::read_dir(root.join(d)).into_iter().flatten())
            .filter_map(|e| e.ok()?.metadata().ok()?.modified().ok())
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
        if built.is_none_or(|b| b < newest_source) {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.current_dir(root)
                .args([
                    "build",
                    "-p",
                    "coinpulse-cabinet",
                    "--bin",
                    "coinpulse-cabinet",
                ])
                .env(
                    "CARGO_TARGET_DIR",
                    profile_dir.parent().expect("target dir"),
                );
            if profile_dir.ends_with("release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("cargo runs");
            assert!(status.success(), "building coinpulse-cabinet failed");
        }
        bin
    })
}

/// A cabinet agent for one registered cabinet, configured by a TOML file.
pub struct AgentProcess {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub machine_id: String,
    env: Vec<(String, String)>,
    child: Option<Child>,
    runs: usize,
}

impl AgentProcess {
    /// Writes the config (connection settings from the app, then `extra` TOML: outputs,
    /// game-over inputs) and starts the agent; returns once the server sees it online.
    pub async fn start(app: &TestApp, machine_id: &str, secret: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("cabinet.secret");
        std::fs::write(&secret_file, secret).unwrap();
        let public_key = app.status().await["pulse_public_key"]
            .as_str()
            .unwrap()
            .to_owned();
        let config = format!(
            "machine_id = \"{machine_id}\"\nsecret_file = \"{}\"\nbroker = \"{}\"\n\
             public_key = \"{public_key}\"\ntopic_prefix = \"{}\"\nstate_dir = \"{}\"\n\n{extra}",
            secret_file.display(),
            app.broker,
            app.topic_prefix,
            dir.path().join("state").display(),
        );
        Self::with_config(app, machine_id, dir, &config, &[]).await
    }

    /// Starts the agent on this config text, with these environment variables on top.
    pub async fn with_config(
        app: &TestApp,
        machine_id: &str,
        dir: tempfile::TempDir,
        config: &str,
        env: &[(&str, String)],
    ) -> Self {
        let path = dir.path().join("cabinet.toml");
        std::fs::write(&path, config).unwrap();
        let mut agent = Self {
            dir,
            config: path,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            machine_id: machine_id.to_owned(),
            child: None,
            runs: 0,
        };
        agent.restart(app).await;
        agent
    }

    /// (Re)starts the agent and waits until the server has it online.
    pub async fn restart(&mut self, app: &TestApp) {
        assert!(self.child.is_none(), "stop the agent first");
        self.runs += 1;
        let log = std::fs::File::create(self.log_path(self.runs)).unwrap();
        let child = Command::new(agent_binary())
            .env("COINPULSE_CABINET_CONFIG", &self.config)
            .envs(self.env.iter().cloned())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            // Its own process group: a kill takes the output command with it, as a power
            // cut would.
            .process_group(0)
            .spawn()
            .expect("agent starts");
        self.child = Some(child);
        // Its own word first: the server may still show the previous run online.
        self.wait_for_log("online, waiting for coin pulses", 1)
            .await;
        let path = format!("/cabinets/{}", self.machine_id);
        app.eventually("the agent is online", || async {
            app.get(&path).await["online"] == true
        })
        .await;
    }

    fn log_path(&self, run: usize) -> PathBuf {
        self.dir.path().join(format!("agent-{run}.log"))
    }

    /// Everything the agent has logged in its current run.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.log_path(self.runs)) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits until the current run's log has `n` lines containing `needle`.
    pub async fn wait_for_log(&self, needle: &str, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let log = self.log();
            if log.matches(needle).count() >= n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "agent log never had {n}× {needle:?}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, as systemd stops it; waits for it to exit and returns whether it did so
    /// cleanly.
    pub async fn stop(&mut self) -> bool {
        let mut child = self.child.take().expect("running");
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        tokio::task::spawn_blocking(move || child.wait().unwrap().success())
            .await
            .unwrap()
    }

    /// `kill -9` of the agent and everything it started.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        unsafe {
            libc::kill(-(child.id() as i32), libc::SIGKILL);
        }
        let _ = child.wait();
    }

    /// A `coinpulse-cabinet` command beside the running agent: (exit code, stdout+stderr).
    /// Run off the test's runtime thread, which the server under test shares.
    pub async fn cli(&self, args: &[&str]) -> (i32, String) {
        let config = self.config.clone();
        let env = self.env.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(agent_binary())
                .env("COINPULSE_CABINET_CONFIG", config)
                .envs(env)
                .args(args)
                .output()
                .expect("coinpulse-cabinet runs")
        })
        .await
        .unwrap();
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill9();
        }
    }
}

/// A command output that appends "PULSE_ID CREDITS SOURCE" to `applied.log` in the agent's
/// directory; it fails while `fail` exists, hangs (after recording) while `hang` exists, and
/// takes two seconds while `slow` exists.
pub fn recording_output(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "[[output]]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"\"\"\
         if [ -e {d}/fail ]; then exit 1; fi; \
         echo \"$PULSE_ID $CREDITS $SOURCE\" >> {d}/applied.log; \
         if [ -e {d}/hang ]; then sleep 60; fi; \
         if [ -e {d}/slow ]; then sleep 2; fi\"\"\"]\n"
    )
}

/// The lines `recording_output` has written.
pub fn applied_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("applied.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}
