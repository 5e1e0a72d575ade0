//! A private Mosquitto started by a test, on a free port with the test's config lines.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;

/// Killed and reaped on drop.
pub struct Mosquitto {
    pub child: Child,
    pub uri: String,
    bin: &'static str,
    conf: PathBuf,
    port: u16,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// None where Mosquitto is not installed (the test then says it skipped).
pub async fn start_mosquitto(dir: &Path, lines: &str) -> Option<Mosquitto> {
    let bin = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let port = free_port();
    let conf = dir.join("test.conf");
    // Started as root, Mosquitto would drop to its own user, who cannot read the test's
    // owner-only files.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    let user = if root { "user root\n" } else { "" };
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\npersistence false\n{user}{lines}"),
    )
    .unwrap();
    let mut broker = Mosquitto {
        child: spawn(bin, &conf),
        uri: format!("tcp://127.0.0.1:{port}"),
        bin,
        conf,
        port,
    };
    broker.wait_listening().await;
    Some(broker)
}

fn spawn(bin: &str, conf: &Path) -> Child {
    Command::new(bin)
        .args(["-c", conf.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

impl Mosquitto {
    /// Kills it (as a crash would): nothing listens on its port until `start`.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and config.
    pub async fn start(&mut self) {
        self.child = spawn(self.bin, &self.conf);
        self.wait_listening().await;
    }

    async fn wait_listening(&mut self) {
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("mosquitto did not start");
    }
}
