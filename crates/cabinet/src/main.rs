//! `coinpulse-cabinet`: the agent inside a cabinet, and its local commands.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use coinpulse_cabinet::config::{Config, DEFAULT_CONFIG};
use coinpulse_cabinet::control::{self, Reply, Request, Status};
use coinpulse_cabinet::journal::{Entry, Journal};
use coinpulse_cabinet::output::{self, Credit};
use coinpulse_cabinet::{run, RunOptions};

#[derive(Debug, Parser)]
#[command(
    name = "coinpulse-cabinet",
    version,
    about = "The coinpulse cabinet agent: paid coin pulses in, credits out (GPIO coin signal, key presses or a command), game over back.",
    long_about = "The coinpulse cabinet agent: paid coin pulses in, credits out (GPIO coin signal, \
key presses or a command), game over back.\n\n\
It verifies every pulse's signature, refuses pulses for other cabinets or too old, and applies \
each pulse exactly once across restarts (a journal in the state directory). Settings come from \
the config file (see docs/cabinet.md) with environment variables on top: CABINET_MACHINE_ID, \
CABINET_SECRET_FILE or CABINET_SECRET, MQTT_URL, MQTT_CA_FILE, PULSE_PUBLIC_KEY, \
MQTT_TOPIC_PREFIX, CABINET_STATE_DIR, CABINET_MAX_AGE_SECS.",
    after_help = "Without a command it runs the agent (the systemd unit does this)."
)]
struct Cli {
    /// The config file.
    #[arg(long, short, global = true, env = "COINPULSE_CABINET_CONFIG", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent: connect, apply pulses, report game overs (the default).
    Run,
    /// Connection, the last pulses applied, and any pulse left unapplied by a crash.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Report game over through the running agent (for an emulator's exit hook).
    Gameover {
        /// The player's score, if the game knows it.
        #[arg(long)]
        score: Option<i64>,
    },
    /// Drive the outputs once without the server, to check the wiring. Stop the agent
    /// first: it holds the GPIO line and the virtual keyboard.
    TestOutput {
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i64).range(1..=100))]
        credits: i64,
    },
    /// Settle a pulse interrupted while its credits were being given: after checking the
    /// cabinet, say whether the credits arrived.
    Resolve {
        /// The pulse id, as `status` shows it.
        pulse_id: String,
        /// The credits did arrive: acknowledge it, never apply it.
        #[arg(
            long,
            conflicts_with = "not_applied",
            required_unless_present = "not_applied"
        )]
        applied: bool,
        /// They did not: apply it when the server offers it again.
        #[arg(long)]
        not_applied: bool,
    },
}

fn main() -> ExitCode {
    use clap::{parser::ValueSource, CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    // The default path may be missing (all settings from the environment); a named one
    // must exist.
    let named = matches.value_source("config") != Some(ValueSource::DefaultValue);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(dispatch(cli, named)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli, named: bool) -> anyhow::Result<ExitCode> {
    let config = Config::load(named.then_some(cli.config.as_path()))?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let settings = config.settings(secret_env())?;
            run(RunOptions::from_settings(settings)).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json } => match status(&config, json).await {
            Ok(code) => Ok(code),
            // 1 means "a pulse waits for you"; not knowing is something else.
            Err(e) => {
                eprintln!("error: {e:#}");
                Ok(ExitCode::from(2))
            }
        },
        Command::Gameover { score } => {
            let reply = ask(&config, &Request::GameOver { score }).await?;
            match reply.play_seconds {
                Some(s) => println!("game over sent ({s} s since the last credit)"),
                None => println!("game over sent"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::TestOutput { credits } => {
            let mut outputs = output::build(&config.output)?;
            anyhow::ensure!(!outputs.is_empty(), "no [[output]] in the config file");
            let credit = Credit {
                pulse_id: format!("test-{}", uuid::Uuid::now_v7()),
                credits,
                source: "test".into(),
            };
            let names: Vec<String> = outputs.iter().map(|o| o.describe()).collect();
            let started = std::time::Instant::now();
            output::apply_all(&mut outputs, &credit)?;
            println!(
                "{credits} credit{} through {} in {} ms",
                if credits == 1 { "" } else { "s" },
                names.join(", "),
                started.elapsed().as_millis()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Resolve {
            pulse_id,
            applied,
            not_applied: _,
        } => {
            let req = Request::Resolve {
                id: pulse_id.clone(),
                applied,
            };
            match control::request(&config.socket_path(), &req).await {
                Ok(reply) => {
                    check(reply)?;
                }
                // Not running: the journal is ours to write.
                Err(None) => {
                    Journal::open(&config.journal_path(), false)?.resolve(&pulse_id, applied)?
                }
                Err(Some(e)) => return Err(e),
            };
            if applied {
                println!(
                    "pulse {pulse_id} marked applied: it will be acknowledged, never applied again"
                );
            } else {
                println!("pulse {pulse_id} marked not applied: it is applied when the server offers it again");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn secret_env() -> Option<String> {
    std::env::var("CABINET_SECRET")
        .ok()
        .filter(|s| !s.trim().is_empty())
}

async fn ask(config: &Config, req: &Request) -> anyhow::Result<Reply> {
    match control::request(&config.socket_path(), req).await {
        Ok(reply) => check(reply),
        Err(None) => anyhow::bail!(
            "the agent is not running (nothing answers on {})",
            config.socket_path().display()
        ),
        Err(Some(e)) => Err(e),
    }
}

fn check(reply: Reply) -> anyhow::Result<Reply> {
    if reply.ok {
        Ok(reply)
    } else {
        anyhow::bail!("{}", reply.error.unwrap_or_else(|| "refused".into()))
    }
}

/// Exit 0 when all is well, 1 when a pulse waits for the owner, 2 when it cannot tell, 3
/// when the agent is not running: usable from a monitoring script.
async fn status(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let (running, status) = match control::request(&config.socket_path(), &Request::Status).await {
        Ok(reply) => (true, check(reply)?.status.expect("status reply")),
        Err(Some(e)) => return Err(e),
        Err(None) => {
            let status = Status::of(
                &Journal::load(&config.journal_path())?,
                None,
                config.machine_id.clone().unwrap_or_default(),
                config.broker.clone().unwrap_or_default(),
                None,
            );
            (false, status)
        }
    };
    if json {
        let mut v = serde_json::to_value(&status)?;
        v["running"] = running.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_status(running, &status);
    }
    Ok(if !running {
        ExitCode::from(3)
    } else if !status.interrupted.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_status(running: bool, s: &Status) {
    println!("cabinet     {}", s.machine_id);
    let conn = match (running, s.connected, s.connected_since) {
        (false, _, _) => "agent not running".to_owned(),
        (true, true, Some(since)) => format!(
            "connected to {} since {}",
            s.broker,
            since.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        (true, true, None) => format!("connected to {}", s.broker),
        (true, false, _) => format!("not connected; trying {}", s.broker),
    };
    println!("connection  {conn}");
    if let Some(j) = &s.journal {
        println!("journal     {j}");
    }
    let line = |e: &Entry| {
        format!(
            "  {}  {} credit{}  {}  {}",
            e.at.format("%Y-%m-%d %H:%M:%S"),
            e.credits,
            if e.credits == 1 { "" } else { "s" },
            e.source,
            e.id
        )
    };
    if s.last_applied.is_empty() {
        println!("last pulses applied: none yet");
    } else {
        println!("last pulses applied:");
        for e in &s.last_applied {
            println!("{}", line(e));
        }
    }
    if s.interrupted.is_empty() {
        println!("nothing left unapplied");
    } else {
        println!("INTERRUPTED — check the cabinet, then `coinpulse-cabinet resolve <id> --applied` or `--not-applied`:");
        for e in &s.interrupted {
            println!("{}", line(e));
        }
    }
}
