//! A real SMTP server for email tests: Python's aiosmtpd with its debugging handler, which
//! prints every message it receives; the test reads them from its output.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::free_port;

pub struct SmtpSink {
    pub url: String,
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SmtpSink {
    /// Starts the sink, or None (with the reason printed) where aiosmtpd is missing
    /// (`.ci/setup` installs it; CI must have it).
    pub async fn start() -> Option<Self> {
        let have = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .status()
            .is_ok_and(|s| s.success());
        if !have {
            assert!(
                std::env::var_os("CI").is_none(),
                "aiosmtpd is required in CI"
            );
            eprintln!("SKIPPED: Python's aiosmtpd is not installed (run .ci/setup)");
            return None;
        }
        let port = free_port();
        let mut child = Command::new("python3")
            .args(["-u", "-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Debugging"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("aiosmtpd starts");
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().unwrap();
        // Owned from here: dropping the sink kills and reaps the process.
        let sink = Self {
            url: format!("smtp://127.0.0.1:{port}"),
            child,
            output: output.clone(),
        };
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut out = output.lock().unwrap();
                out.push_str(&line);
                out.push('\n');
            }
        });
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(sink);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("aiosmtpd did not start");
    }

    /// Everything received so far, quoted-printable soft line breaks undone.
    pub fn received(&self) -> String {
        self.output
            .lock()
            .unwrap()
            .replace("=\n", "")
            .replace("=3D", "=")
    }

    /// The `n`th (from 1) link containing `marker` received, waiting up to 10 s.
    pub async fn link(&self, marker: &str, n: usize) -> String {
        for _ in 0..200 {
            let text = self.received();
            let links: Vec<&str> = text
                .split_whitespace()
                .filter(|w| w.contains(marker))
                .collect();
            if links.len() >= n {
                return links[n - 1].to_owned();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no email with {marker} arrived: {}", self.received());
    }
}
