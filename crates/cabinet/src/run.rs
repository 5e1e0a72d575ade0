//! The agent as a service: open the journal, report what a crash left behind, drive the
//! outputs, listen for game overs, answer the control socket, and log what happens in
//! words an owner can act on.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::agent::{Agent, AgentOptions, Connect, Event};
use crate::config::{GameOverConfig, OutputConfig, Settings};
use crate::journal::Journal;
use crate::{control, gameover, output};

pub struct RunOptions {
    pub agent: AgentOptions,
    /// The pulse journal (None: kept in memory, for a throwaway simulator).
    pub journal: Option<PathBuf>,
    pub outputs: Vec<OutputConfig>,
    pub gameover: Vec<GameOverConfig>,
    pub control_socket: Option<PathBuf>,
}

impl RunOptions {
    pub fn from_settings(s: Settings) -> Self {
        let journal = crate::config::journal_in(&s.state_dir);
        let socket = crate::config::socket_in(&s.state_dir);
        Self {
            agent: AgentOptions {
                machine_id: s.machine_id,
                secret: s.secret,
                broker: s.broker,
                ca_file: s.ca_file,
                topic_prefix: s.topic_prefix,
                public_key: s.public_key,
                max_age: (s.max_age_secs > 0).then(|| Duration::from_secs(s.max_age_secs)),
                ack: true,
                play_seconds: None,
                connect: Connect::Background,
            },
            journal: Some(journal),
            outputs: s.output,
            gameover: s.gameover,
            control_socket: Some(socket),
        }
    }
}

/// Runs until Ctrl-C or SIGTERM.
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    for path in opts.journal.iter().chain(&opts.control_socket) {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("state directory {}: {e}", dir.display()))?;
        }
    }
    // First, so that a second agent on the same state directory stops here, before it
    // touches the journal.
    let listener = match &opts.control_socket {
        Some(path) => Some(control::bind(path).await?),
        None => None,
    };
    let journal = match &opts.journal {
        Some(path) => Journal::open(path, opts.agent.max_age.is_some())?,
        None => Journal::in_memory(),
    };
    for e in journal.interrupted() {
        tracing::error!(pulse = %e.id, credits = e.credits, since = %e.at,
            "pulse was interrupted while its credits were being given: the cabinet may or may not have them. \
             It will not be applied again by itself. Check the cabinet's credit count, then run \
             `coinpulse-cabinet resolve {} --applied` (or `--not-applied` to give them now)", e.id);
    }
    // Acking credits that reach no game would take players' money for nothing.
    anyhow::ensure!(
        !opts.outputs.is_empty(),
        "no [[output]] in the config: add a gpio, keypress or command output (docs/cabinet.md)"
    );
    let outputs = output::build(&opts.outputs)?;
    let (trigger_tx, mut triggers) = mpsc::channel(16);
    gameover::start(&opts.gameover, trigger_tx)?;
    let described: Vec<String> = outputs.iter().map(|o| o.describe()).collect();
    tracing::info!(machine_id = %opts.agent.machine_id, broker = %opts.agent.broker,
        outputs = %described.join(", "), "coinpulse-cabinet starting");

    let (agent, mut events) = Agent::start(opts.agent, journal, outputs).await?;
    if let Some(listener) = listener {
        tokio::spawn(control::serve(listener, agent.clone()));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => log_event(&agent, &ev),
                None => break,
            },
            Some(t) = triggers.recv() => {
                if let Err(e) = agent.game_over(t.score).await {
                    tracing::error!(from = %t.source, error = %e, "could not publish a game over");
                }
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    // A stop (systemctl restart, a reboot) waits for the pulse being given, so that it
    // is recorded as applied rather than left for the owner to resolve.
    agent.idle(Duration::from_secs(8)).await;
    while let Ok(ev) = events.try_recv() {
        log_event(&agent, &ev);
    }
    agent.disconnect().await;
    if let Some(path) = &opts.control_socket {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("stopped");
    Ok(())
}

fn log_event(agent: &Agent, ev: &Event) {
    match ev {
        Event::Connected => tracing::info!(topic = %agent.topics().coinpulse(agent.machine_id()),
            "online, waiting for coin pulses"),
        // The reconnect loop says what it does about it.
        Event::Disconnected => {}
        Event::Credit(p) => tracing::info!(pulse = %p.id, credits = p.credits, source = %p.source,
            "credits given and acknowledged"),
        Event::Duplicate(id) => tracing::info!(pulse = %id,
            "pulse already applied (a redelivery): acknowledged again, not applied again"),
        Event::Interrupted(id) => tracing::warn!(pulse = %id,
            "pulse arrived again but was interrupted earlier: not applied, not acknowledged until \
             `coinpulse-cabinet resolve`"),
        Event::Rejected(why) => tracing::warn!(reason = %why, "pulse refused"),
        Event::OutputFailed {
            id,
            error,
            partial: false,
        } => tracing::error!(pulse = %id, error = %error,
            "no credits given; not acknowledged, so the server will offer it again"),
        Event::OutputFailed {
            id,
            error,
            partial: true,
        } => tracing::error!(pulse = %id, error = %error,
            "output stopped part-way: some credits may have been given. Not acknowledged; check the \
             cabinet, then `coinpulse-cabinet resolve {id} --applied` or `--not-applied`"),
        Event::GameOverSent { play_seconds } => {
            tracing::info!(play_seconds = ?play_seconds, "game over sent")
        }
    }
}
