//! What a pulse's credits become at the cabinet: coin-signal pulses on a GPIO line, key
//! presses through uinput, a command, or a line printed (the simulator). Outputs block (a
//! coin signal is a timed sequence), so the agent runs them off the async runtime, one
//! pulse at a time.

use std::io;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::config::OutputConfig;

/// One credit's worth of work, for an output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credit {
    pub pulse_id: String,
    pub credits: i64,
    /// stripe, operator, wallet; `test` for `test-output`.
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// Nothing reached the game: a redelivery may try again.
    #[error("{0}")]
    NothingDone(String),
    /// Stopped part-way: some coins may have reached the game.
    #[error("{0}")]
    Partial(String),
}

pub trait Output: Send {
    /// For log lines: "gpio /dev/gpiochip0 line 17".
    fn describe(&self) -> String;
    fn apply(&mut self, credit: &Credit) -> Result<(), OutputError>;
}

/// Builds the configured outputs, opening their devices now so that a wrong chip, line or
/// missing /dev/uinput is reported at start, not at the first paid credit.
pub fn build(configs: &[OutputConfig]) -> anyhow::Result<Vec<Box<dyn Output>>> {
    configs
        .iter()
        .map(|c| -> anyhow::Result<Box<dyn Output>> {
            Ok(match c {
                OutputConfig::Print => Box::new(Print),
                OutputConfig::Command {
                    command,
                    timeout_secs,
                } => Box::new(Command::new(
                    command.clone(),
                    Duration::from_secs(*timeout_secs),
                )?),
                OutputConfig::Gpio {
                    chip,
                    line,
                    pulses_per_credit,
                    pulse_ms,
                    gap_ms,
                    active_low,
                } => Box::new(Pulser::new(
                    GpioLine::open(chip, *line, *active_low)?,
                    Timing::new(*pulses_per_credit, *pulse_ms, *gap_ms)?,
                )),
                OutputConfig::Keypress {
                    key,
                    presses_per_credit,
                    press_ms,
                    gap_ms,
                } => Box::new(Pulser::new(
                    UinputKey::open(key)?,
                    Timing::new(*presses_per_credit, *press_ms, *gap_ms)?,
                )),
            })
        })
        .collect()
}

/// Runs each output in turn. A failure after an earlier output succeeded is partial: coins
/// went somewhere.
pub fn apply_all(outputs: &mut [Box<dyn Output>], credit: &Credit) -> Result<(), OutputError> {
    for (i, o) in outputs.iter_mut().enumerate() {
        match o.apply(credit) {
            Ok(()) => {}
            Err(OutputError::NothingDone(why)) if i > 0 => {
                return Err(OutputError::Partial(format!(
                    "{}: {why} (after the outputs before it had run)",
                    o.describe()
                )))
            }
            Err(OutputError::NothingDone(why)) => {
                return Err(OutputError::NothingDone(format!("{}: {why}", o.describe())))
            }
            Err(OutputError::Partial(why)) => {
                return Err(OutputError::Partial(format!("{}: {why}", o.describe())))
            }
        }
    }
    Ok(())
}

/// `coinpulse cabinet-sim`: the credits on the terminal.
pub struct Print;

impl Output for Print {
    fn describe(&self) -> String {
        "print".into()
    }
    fn apply(&mut self, c: &Credit) -> Result<(), OutputError> {
        println!(
            "+{} credit{}  (pulse {}, {})",
            c.credits,
            if c.credits == 1 { "" } else { "s" },
            c.pulse_id,
            c.source
        );
        Ok(())
    }
}

/// Runs a program once per pulse with CREDITS, PULSE_ID and SOURCE in its environment.
/// Exit 0 means the credits were given; anything else means they were not.
pub struct Command {
    argv: Vec<String>,
    timeout: Duration,
}

impl Command {
    pub fn new(argv: Vec<String>, timeout: Duration) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !argv.is_empty() && !argv[0].is_empty(),
            "a command output needs command = [\"/path/to/program\", …]"
        );
        Ok(Self { argv, timeout })
    }
}

impl Output for Command {
    fn describe(&self) -> String {
        format!("command {}", self.argv[0])
    }

    fn apply(&mut self, c: &Credit) -> Result<(), OutputError> {
        let mut child = std::process::Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .env("CREDITS", c.credits.to_string())
            .env("PULSE_ID", &c.pulse_id)
            .env("SOURCE", &c.source)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| OutputError::NothingDone(format!("could not start: {e}")))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                // Killed by a signal: stopped from outside, wherever it was.
                Ok(Some(status)) if status.code().is_none() => {
                    return Err(OutputError::Partial(format!("stopped by {status}")))
                }
                Ok(Some(status)) => {
                    return Err(OutputError::NothingDone(format!("exited with {status}")))
                }
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    // It was running: what it did before the kill is unknown.
                    return Err(OutputError::Partial(format!(
                        "still running after {} s; killed",
                        self.timeout.as_secs()
                    )));
                }
                // Polled finely: this wait is most of a quick command's time.
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => return Err(OutputError::Partial(format!("lost track of it: {e}"))),
            }
        }
    }
}

/// Something that is on or off: a GPIO line driving an optocoupler, a key.
pub trait Switch: Send {
    fn describe(&self) -> String;
    fn set(&mut self, on: bool) -> io::Result<()>;
}

/// How many on/off pulses make one credit, and how long each lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub per_credit: u32,
    pub on: Duration,
    pub gap: Duration,
}

impl Timing {
    pub fn new(per_credit: u32, on_ms: u64, gap_ms: u64) -> anyhow::Result<Self> {
        anyhow::ensure!(per_credit >= 1, "pulses per credit must be at least 1");
        anyhow::ensure!(
            (1..=5_000).contains(&on_ms) && (1..=5_000).contains(&gap_ms),
            "pulse and gap lengths are 1–5000 ms"
        );
        Ok(Self {
            per_credit,
            on: Duration::from_millis(on_ms),
            gap: Duration::from_millis(gap_ms),
        })
    }
}

/// Turns credits into timed on/off pulses on a [`Switch`], the way a coin mechanism
/// signals a board: `per_credit` pulses per credit, each `on` long, `gap` apart.
pub struct Pulser<S> {
    switch: S,
    timing: Timing,
}

impl<S: Switch> Pulser<S> {
    pub fn new(switch: S, timing: Timing) -> Self {
        Self { switch, timing }
    }

    pub fn into_switch(self) -> S {
        self.switch
    }
}

impl<S: Switch> Output for Pulser<S> {
    fn describe(&self) -> String {
        self.switch.describe()
    }

    fn apply(&mut self, c: &Credit) -> Result<(), OutputError> {
        let total = u64::try_from(c.credits).unwrap_or(0) * u64::from(self.timing.per_credit);
        for n in 0..total {
            let fail = |e: io::Error| {
                if n == 0 {
                    OutputError::NothingDone(e.to_string())
                } else {
                    OutputError::Partial(format!("after {n} of {total} pulses: {e}"))
                }
            };
            self.switch.set(true).map_err(fail)?;
            std::thread::sleep(self.timing.on);
            if let Err(e) = self.switch.set(false) {
                // Stuck on: the board may count this one or not.
                return Err(OutputError::Partial(format!(
                    "could not release after pulse {}: {e}",
                    n + 1
                )));
            }
            if n + 1 < total {
                std::thread::sleep(self.timing.gap);
            }
        }
        // The board needs the gap after the last pulse too before the next credit's first.
        std::thread::sleep(self.timing.gap);
        Ok(())
    }
}

/// A GPIO output line through the Linux GPIO character device.
pub struct GpioLine {
    request: gpiocdev::Request,
    chip: PathBuf,
    offset: u32,
}

impl GpioLine {
    pub fn open(chip: &std::path::Path, offset: u32, active_low: bool) -> anyhow::Result<Self> {
        let mut b = gpiocdev::Request::builder();
        b.on_chip(chip)
            .with_consumer("coinpulse-cabinet")
            .with_line(offset)
            .as_output(gpiocdev::line::Value::Inactive);
        if active_low {
            b.as_active_low();
        }
        let request = b
            .request()
            .map_err(|e| anyhow::anyhow!("GPIO {} line {offset}: {e}", chip.display()))?;
        Ok(Self {
            request,
            chip: chip.to_owned(),
            offset,
        })
    }
}

impl Switch for GpioLine {
    fn describe(&self) -> String {
        format!("gpio {} line {}", self.chip.display(), self.offset)
    }
    fn set(&mut self, on: bool) -> io::Result<()> {
        let v = if on {
            gpiocdev::line::Value::Active
        } else {
            gpiocdev::line::Value::Inactive
        };
        self.request
            .set_value(self.offset, v)
            .map_err(io::Error::other)
    }
}

/// A key on a virtual keyboard (uinput), for emulators: MAME's coin key is `5`.
pub struct UinputKey {
    device: evdev::uinput::VirtualDevice,
    key: evdev::KeyCode,
}

/// `5`, `KEY_5`, `key_5` → KEY_5.
pub fn parse_key(name: &str) -> anyhow::Result<evdev::KeyCode> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("KEY_") || upper.starts_with("BTN_") {
        upper
    } else {
        format!("KEY_{upper}")
    };
    full.parse::<evdev::KeyCode>()
        .map_err(|_| anyhow::anyhow!("unknown key {name:?} (try KEY_5, KEY_C, BTN_SELECT)"))
}

impl UinputKey {
    pub fn open(name: &str) -> anyhow::Result<Self> {
        let key = parse_key(name)?;
        let mut keys = evdev::AttributeSet::<evdev::KeyCode>::new();
        keys.insert(key);
        let device = evdev::uinput::VirtualDevice::builder()
            .and_then(|b| b.name("coinpulse coin").with_keys(&keys))
            .and_then(|b| b.build())
            .map_err(|e| {
                anyhow::anyhow!("/dev/uinput: {e} (is the uinput module loaded and the agent in the input group?)")
            })?;
        Ok(Self { device, key })
    }
}

impl Switch for UinputKey {
    fn describe(&self) -> String {
        format!("keypress {:?}", self.key)
    }
    fn set(&mut self, on: bool) -> io::Result<()> {
        let ev = *evdev::KeyEvent::new(self.key, i32::from(on));
        self.device.emit(&[ev])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A switch that records when it was turned on and off.
    #[derive(Clone, Default)]
    pub struct Recording {
        pub edges: Arc<Mutex<Vec<(Instant, bool)>>>,
        pub fail_at: Option<usize>,
    }

    impl Switch for Recording {
        fn describe(&self) -> String {
            "recording".into()
        }
        fn set(&mut self, on: bool) -> io::Result<()> {
            let mut e = self.edges.lock().unwrap();
            if self.fail_at == Some(e.len()) {
                return Err(io::Error::other("line gone"));
            }
            e.push((Instant::now(), on));
            Ok(())
        }
    }

    fn credit(n: i64) -> Credit {
        Credit {
            pulse_id: "p1".into(),
            credits: n,
            source: "stripe".into(),
        }
    }

    #[test]
    fn coin_signal_has_the_configured_pulses_and_timing() {
        let rec = Recording::default();
        let timing = Timing::new(2, 30, 20).unwrap();
        let mut p = Pulser::new(rec.clone(), timing);
        p.apply(&credit(3)).unwrap();
        let edges = rec.edges.lock().unwrap().clone();
        assert_eq!(edges.len(), 12, "3 credits × 2 pulses, on and off each");
        for (i, pair) in edges.chunks(2).enumerate() {
            assert_eq!((pair[0].1, pair[1].1), (true, false), "pulse {i}");
            let on = pair[1].0 - pair[0].0;
            assert!(
                on >= Duration::from_millis(30) && on < Duration::from_millis(60),
                "{on:?}"
            );
        }
        for w in edges.windows(2).skip(1).step_by(2) {
            let gap = w[1].0 - w[0].0;
            assert!(
                gap >= Duration::from_millis(20) && gap < Duration::from_millis(50),
                "{gap:?}"
            );
        }
    }

    #[test]
    fn a_switch_failing_first_did_nothing_later_is_partial() {
        let t = Timing::new(1, 1, 1).unwrap();
        let mut first = Pulser::new(
            Recording {
                fail_at: Some(0),
                ..Default::default()
            },
            t,
        );
        assert!(matches!(
            first.apply(&credit(2)),
            Err(OutputError::NothingDone(_))
        ));
        let mut later = Pulser::new(
            Recording {
                fail_at: Some(2),
                ..Default::default()
            },
            t,
        );
        assert!(matches!(
            later.apply(&credit(2)),
            Err(OutputError::Partial(_))
        ));
    }

    #[test]
    fn command_gets_the_credit_in_its_environment_and_exit_decides() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!("echo \"$CREDITS $PULSE_ID $SOURCE\" >> {}", out.display());
        let mut ok = Command::new(
            vec!["sh".into(), "-c".into(), script],
            Duration::from_secs(5),
        )
        .unwrap();
        ok.apply(&credit(2)).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "2 p1 stripe\n");
        let mut bad = Command::new(
            vec!["sh".into(), "-c".into(), "exit 3".into()],
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(
            matches!(bad.apply(&credit(1)), Err(OutputError::NothingDone(e)) if e.contains('3'))
        );
        // Killed from outside (systemd stopping everything): what it did is unknown.
        let mut killed = Command::new(
            vec!["sh".into(), "-c".into(), "kill -TERM $$".into()],
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(matches!(
            killed.apply(&credit(1)),
            Err(OutputError::Partial(_))
        ));
        let mut slow =
            Command::new(vec!["sleep".into(), "5".into()], Duration::from_secs(1)).unwrap();
        assert!(matches!(
            slow.apply(&credit(1)),
            Err(OutputError::Partial(_))
        ));
        let mut missing =
            Command::new(vec!["/nonexistent/x".into()], Duration::from_secs(1)).unwrap();
        assert!(matches!(
            missing.apply(&credit(1)),
            Err(OutputError::NothingDone(_))
        ));
    }

    #[test]
    fn a_later_output_failing_makes_the_pulse_partial() {
        let t = Timing::new(1, 1, 1).unwrap();
        let mut outputs: Vec<Box<dyn Output>> = vec![
            Box::new(Pulser::new(Recording::default(), t)),
            Box::new(Command::new(vec!["false".into()], Duration::from_secs(5)).unwrap()),
        ];
        assert!(matches!(
            apply_all(&mut outputs, &credit(1)),
            Err(OutputError::Partial(_))
        ));
        outputs.reverse();
        assert!(matches!(
            apply_all(&mut outputs, &credit(1)),
            Err(OutputError::NothingDone(_))
        ));
    }

    #[test]
    fn key_names() {
        assert_eq!(parse_key("5").unwrap(), evdev::KeyCode::KEY_5);
        assert_eq!(parse_key("key_c").unwrap(), evdev::KeyCode::KEY_C);
        assert!(parse_key("KEY_NOPE").is_err());
    }
}
