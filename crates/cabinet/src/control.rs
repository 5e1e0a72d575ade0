//! The running agent's local control socket: `coinpulse-cabinet gameover`, `status` and
//! `resolve` talk to it. One JSON request line in, one JSON answer line out. The socket
//! is the agent's and its group's (mode 0660), so an emulator's launcher in that group can
//! report game over; nobody else on the machine can.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::agent::Agent;
use crate::journal::{Entry, Journal};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    GameOver { score: Option<i64> },
    Resolve { id: String, applied: bool },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub machine_id: String,
    pub broker: String,
    pub connected: bool,
    pub connected_since: Option<chrono::DateTime<chrono::Utc>>,
    pub last_applied: Vec<Entry>,
    pub interrupted: Vec<Entry>,
    pub journal: Option<String>,
}

impl Status {
    /// What the journal says, for a cabinet connected (or not) as stated. `busy`: the
    /// pulse being given right now, which is not interrupted.
    pub fn of(
        journal: &Journal,
        busy: Option<&str>,
        machine_id: String,
        broker: String,
        connected_since: Option<Option<chrono::DateTime<chrono::Utc>>>,
    ) -> Self {
        Self {
            machine_id,
            broker,
            connected: connected_since.is_some(),
            connected_since: connected_since.flatten(),
            last_applied: journal.last_applied(5).into_iter().cloned().collect(),
            interrupted: journal
                .interrupted()
                .into_iter()
                .filter(|e| Some(e.id.as_str()) != busy)
                .cloned()
                .collect(),
            journal: journal.path().map(|p| p.display().to_string()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub play_seconds: Option<i64>,
}

impl Reply {
    fn ok() -> Self {
        Self {
            ok: true,
            error: None,
            status: None,
            play_seconds: None,
        }
    }
    fn err(e: impl std::fmt::Display) -> Self {
        Self {
            ok: false,
            error: Some(e.to_string()),
            ..Self::ok()
        }
    }
}

/// Binds the socket. A socket that still answers means another agent runs on this state
/// directory, which must not be: two agents would apply the same pulse.
pub async fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            anyhow::bail!(
                "another coinpulse-cabinet is already running here ({} answers); stop it first",
                path.display()
            );
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("control socket {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Answers requests until the listener fails.
pub async fn serve(listener: UnixListener, agent: Agent) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let agent = agent.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read).take(64 * 1024);
            let reply =
                match tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
                    .await
                {
                    Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
                        Ok(req) => handle(&agent, req).await,
                        Err(e) => Reply::err(format!("not a request: {e}")),
                    },
                    _ => return,
                };
            let mut text = serde_json::to_string(&reply).expect("serialises");
            text.push('\n');
            let _ = write.write_all(text.as_bytes()).await;
        });
    }
}

async fn handle(agent: &Agent, req: Request) -> Reply {
    match req {
        Request::Status => Reply {
            status: Some(agent.status()),
            ..Reply::ok()
        },
        Request::GameOver { score } => match agent.game_over(score).await {
            Ok(play_seconds) => Reply {
                play_seconds,
                ..Reply::ok()
            },
            Err(e) => Reply::err(format!("could not publish the game over: {e}")),
        },
        Request::Resolve { id, applied } => match agent.resolve(&id, applied) {
            Ok(()) => {
                tracing::info!(pulse = %id, applied, "interrupted pulse resolved by the owner");
                Reply::ok()
            }
            Err(e) => Reply::err(e),
        },
    }
}

/// Sends one request to the running agent. Err(None): no agent answers on this socket.
pub async fn request(path: &Path, req: &Request) -> Result<Reply, Option<anyhow::Error>> {
    let Ok(stream) = UnixStream::connect(path).await else {
        return Err(None);
    };
    let exchange = async {
        let (read, mut write) = stream.into_split();
        let mut text = serde_json::to_string(req).expect("serialises");
        text.push('\n');
        write.write_all(text.as_bytes()).await?;
        let mut line = String::new();
        BufReader::new(read).read_line(&mut line).await?;
        Ok::<_, anyhow::Error>(serde_json::from_str::<Reply>(&line)?)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| Some(anyhow::anyhow!("the agent did not answer within 10 s")))?
        .map_err(Some)
}
