//! Where a game over comes from besides `coinpulse-cabinet gameover`: an input line's edge
//! (a lamp or switch through an optocoupler) or a watcher program's exit. Each source runs
//! on its own thread and sends the score, if it knows one.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::{Bias, Edge, GameOverConfig};

/// A game over from a source: the score if it knows one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub source: String,
    pub score: Option<i64>,
}

/// Starts every configured source. A GPIO line that cannot be opened fails the start.
pub fn start(configs: &[GameOverConfig], tx: mpsc::Sender<Trigger>) -> anyhow::Result<()> {
    for c in configs {
        match c.clone() {
            GameOverConfig::Gpio {
                chip,
                line,
                edge,
                debounce_ms,
                active_low,
                bias,
            } => {
                let request = open_input(&chip, line, edge, debounce_ms, active_low, bias)?;
                let tx = tx.clone();
                let source = format!("gpio {} line {line}", chip.display());
                std::thread::Builder::new()
                    .name("gameover-gpio".into())
                    .spawn(move || {
                        watch_line(request, source, Duration::from_millis(debounce_ms), tx)
                    })?;
            }
            GameOverConfig::Command { command } => {
                anyhow::ensure!(
                    !command.is_empty(),
                    "a command game-over source needs command = [\"/path/to/program\", …]"
                );
                let tx = tx.clone();
                std::thread::Builder::new()
                    .name("gameover-command".into())
                    .spawn(move || watch_command(command, tx))?;
            }
        }
    }
    Ok(())
}

fn open_input(
    chip: &PathBuf,
    line: u32,
    edge: Edge,
    debounce_ms: u64,
    active_low: bool,
    bias: Option<Bias>,
) -> anyhow::Result<gpiocdev::Request> {
    use gpiocdev::line::{Bias as B, EdgeDetection};
    let mut b = gpiocdev::Request::builder();
    b.on_chip(chip)
        .with_consumer("coinpulse-cabinet")
        .with_line(line)
        .as_input()
        .with_edge_detection(match edge {
            Edge::Rising => EdgeDetection::RisingEdge,
            Edge::Falling => EdgeDetection::FallingEdge,
            Edge::Both => EdgeDetection::BothEdges,
        })
        // The kernel debounces too (in software where the chip cannot); ours below
        // covers kernels without it.
        .with_debounce_period(Duration::from_millis(debounce_ms));
    if active_low {
        b.as_active_low();
    }
    if let Some(bias) = bias {
        b.with_bias(match bias {
            Bias::PullUp => B::PullUp,
            Bias::PullDown => B::PullDown,
        });
    }
    b.request()
        .map_err(|e| anyhow::anyhow!("game-over input {} line {line}: {e}", chip.display()))
}

/// Accepts an edge only when the line has been quiet for the debounce period since the
/// last accepted one: a bouncing switch gives one game over, not five.
#[derive(Debug)]
pub struct Debouncer {
    period_ns: u64,
    last: Option<u64>,
}

impl Debouncer {
    pub fn new(period: Duration) -> Self {
        Self {
            period_ns: period.as_nanos() as u64,
            last: None,
        }
    }

    pub fn accept(&mut self, at_ns: u64) -> bool {
        let ok = self
            .last
            .is_none_or(|last| at_ns.saturating_sub(last) >= self.period_ns);
        if ok {
            self.last = Some(at_ns);
        }
        ok
    }
}

fn watch_line(
    request: gpiocdev::Request,
    source: String,
    debounce: Duration,
    tx: mpsc::Sender<Trigger>,
) {
    let mut debouncer = Debouncer::new(debounce.max(Duration::from_millis(1)));
    loop {
        match request.read_edge_event() {
            Ok(ev) if debouncer.accept(ev.timestamp_ns) => {
                let t = Trigger {
                    source: source.clone(),
                    score: None,
                };
                if tx.blocking_send(t).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(input = %source, error = %e, "game-over input failed; retrying in 5 s");
                std::thread::sleep(Duration::from_secs(5));
            }
        }
    }
}

/// Runs the watcher again and again: each exit 0 is a game over.
fn watch_command(argv: Vec<String>, tx: mpsc::Sender<Trigger>) {
    let source = format!("command {}", argv[0]);
    loop {
        let started = std::time::Instant::now();
        match std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => {
                let score = last_number(&String::from_utf8_lossy(&out.stdout));
                let t = Trigger {
                    source: source.clone(),
                    score,
                };
                if tx.blocking_send(t).is_err() {
                    return;
                }
            }
            Ok(out) => {
                tracing::warn!(input = %source, status = %out.status, "game-over watcher failed")
            }
            Err(e) => {
                tracing::error!(input = %source, error = %e, "could not start the game-over watcher")
            }
        }
        // A watcher that exits at once must not spin.
        if started.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// The score a watcher printed: a whole number alone on its last non-empty line.
pub fn last_number(stdout: &str) -> Option<i64> {
    stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| l.trim().parse().ok())
        .filter(|n: &i64| *n >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounces_within_the_period_are_one_edge() {
        let ms = 1_000_000;
        let mut d = Debouncer::new(Duration::from_millis(50));
        assert!(d.accept(1000 * ms));
        assert!(!d.accept(1010 * ms));
        assert!(!d.accept(1049 * ms));
        assert!(d.accept(1050 * ms));
        assert!(d.accept(3000 * ms));
    }

    #[test]
    fn score_is_the_last_line_when_it_is_a_number() {
        assert_eq!(last_number("game 3\n12500\n\n"), Some(12500));
        assert_eq!(last_number("done"), None);
        assert_eq!(last_number(""), None);
        assert_eq!(last_number("-5"), None);
    }

    #[tokio::test]
    async fn a_watcher_exit_is_a_game_over_with_its_score() {
        let (tx, mut rx) = mpsc::channel(4);
        start(
            &[GameOverConfig::Command {
                command: vec!["sh".into(), "-c".into(), "echo 42".into()],
            }],
            tx,
        )
        .unwrap();
        let t = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(t.score, Some(42));
    }
}
