//! The agent's settings: a TOML file (see docs/cabinet.md), then environment variables on
//! top, so a container or a systemd drop-in can change one thing without editing the file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const DEFAULT_CONFIG: &str = "/etc/coinpulse-cabinet/cabinet.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/coinpulse-cabinet";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The cabinet's machine id, its MQTT user name. Env: CABINET_MACHINE_ID.
    pub machine_id: Option<String>,
    /// File holding the cabinet's MQTT secret. Env: CABINET_SECRET_FILE (or the secret
    /// itself in CABINET_SECRET).
    pub secret_file: Option<PathBuf>,
    /// tcp://host:1883 or ssl://host:8883. Env: MQTT_URL.
    pub broker: Option<String>,
    /// CA certificate (PEM) for an ssl:// broker. Env: MQTT_CA_FILE.
    pub ca_file: Option<PathBuf>,
    /// The server's pulse public key (64 hex). Without it pulses are checked with the
    /// secret-keyed HMAC only. Env: PULSE_PUBLIC_KEY.
    pub public_key: Option<String>,
    /// Env: MQTT_TOPIC_PREFIX.
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// Where the pulse journal and the control socket live. Env: CABINET_STATE_DIR.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Pulses older than this are refused as replays (0: no limit). Env: CABINET_MAX_AGE_SECS.
    #[serde(default = "default_max_age")]
    pub max_age_secs: u64,
    #[serde(default)]
    pub output: Vec<OutputConfig>,
    #[serde(default)]
    pub gameover: Vec<GameOverConfig>,
}

fn default_prefix() -> String {
    coinpulse_wire::DEFAULT_TOPIC_PREFIX.into()
}
fn default_state_dir() -> PathBuf {
    DEFAULT_STATE_DIR.into()
}
/// A little over the server's redelivery window (an hour): a pulse the server still offers
/// after an outage is taken, one older than anything it would send is a replay.
pub const DEFAULT_MAX_AGE_SECS: u64 = 3900;

fn default_max_age() -> u64 {
    DEFAULT_MAX_AGE_SECS
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum OutputConfig {
    /// Print each credit on standard output (the simulator).
    Print,
    /// Run a program per pulse with CREDITS, PULSE_ID and SOURCE set; exit 0 = given.
    Command {
        command: Vec<String>,
        #[serde(default = "default_command_timeout")]
        timeout_secs: u64,
    },
    /// Coin-signal pulses on a GPIO line.
    Gpio {
        #[serde(default = "default_chip")]
        chip: PathBuf,
        line: u32,
        #[serde(default = "one")]
        pulses_per_credit: u32,
        #[serde(default = "default_pulse_ms")]
        pulse_ms: u64,
        #[serde(default = "default_pulse_ms")]
        gap_ms: u64,
        #[serde(default)]
        active_low: bool,
    },
    /// Key presses on a virtual keyboard (uinput).
    Keypress {
        #[serde(default = "default_key")]
        key: String,
        #[serde(default = "one")]
        presses_per_credit: u32,
        #[serde(default = "default_press_ms")]
        press_ms: u64,
        #[serde(default = "default_press_ms")]
        gap_ms: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum GameOverConfig {
    /// An input line's edge (a lamp, a switch, a board output through an optocoupler).
    Gpio {
        #[serde(default = "default_chip")]
        chip: PathBuf,
        line: u32,
        #[serde(default)]
        edge: Edge,
        #[serde(default = "default_debounce_ms")]
        debounce_ms: u64,
        #[serde(default)]
        active_low: bool,
        /// Pull-up or pull-down inside the Pi, for a bare switch to ground or 3.3 V.
        #[serde(default)]
        bias: Option<Bias>,
    },
    /// A program that runs until a game ends: each exit 0 is a game over (a number on its
    /// last output line is the score), and it is started again.
    Command { command: Vec<String> },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Edge {
    Rising,
    #[default]
    Falling,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bias {
    PullUp,
    PullDown,
}

fn default_command_timeout() -> u64 {
    30
}
fn default_chip() -> PathBuf {
    "/dev/gpiochip0".into()
}
fn one() -> u32 {
    1
}
fn default_pulse_ms() -> u64 {
    100
}
fn default_key() -> String {
    "KEY_5".into()
}
fn default_press_ms() -> u64 {
    80
}
fn default_debounce_ms() -> u64 {
    50
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str("").expect("every setting has a default")
    }
}

/// The pulse journal in a state directory.
pub fn journal_in(state_dir: &Path) -> PathBuf {
    state_dir.join("pulses.journal")
}

/// The control socket in a state directory.
pub fn socket_in(state_dir: &Path) -> PathBuf {
    state_dir.join("agent.sock")
}

/// Settings ready to run with: required values present and parsed.
#[derive(Debug, Clone)]
pub struct Settings {
    pub machine_id: String,
    pub secret: String,
    pub broker: String,
    pub ca_file: Option<PathBuf>,
    pub public_key: Option<ed25519_dalek::VerifyingKey>,
    pub topic_prefix: String,
    pub state_dir: PathBuf,
    pub max_age_secs: u64,
    pub output: Vec<OutputConfig>,
    pub gameover: Vec<GameOverConfig>,
}

impl Config {
    /// Reads the file. The default path may be missing (everything can come from the
    /// environment); a path the user named must exist.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let (path, named) = match path {
            Some(p) => (p.to_owned(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let mut config = match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => Config::default(),
            Err(e) => anyhow::bail!("{}: {e}", path.display()),
        };
        config.apply_env(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))?;
        Ok(config)
    }

    /// The environment wins over the file.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        if let Some(v) = var("CABINET_MACHINE_ID") {
            self.machine_id = Some(v);
        }
        if let Some(v) = var("CABINET_SECRET_FILE") {
            self.secret_file = Some(v.into());
        }
        if let Some(v) = var("MQTT_URL") {
            self.broker = Some(v);
        }
        if let Some(v) = var("MQTT_CA_FILE") {
            self.ca_file = Some(v.into());
        }
        if let Some(v) = var("PULSE_PUBLIC_KEY") {
            self.public_key = Some(v);
        }
        if let Some(v) = var("MQTT_TOPIC_PREFIX") {
            self.topic_prefix = v;
        }
        if let Some(v) = var("CABINET_STATE_DIR") {
            self.state_dir = v.into();
        }
        if let Some(v) = var("CABINET_MAX_AGE_SECS") {
            self.max_age_secs = v
                .parse()
                .map_err(|_| anyhow::anyhow!("CABINET_MAX_AGE_SECS must be a number of seconds"))?;
        }
        Ok(())
    }

    pub fn journal_path(&self) -> PathBuf {
        journal_in(&self.state_dir)
    }

    pub fn socket_path(&self) -> PathBuf {
        socket_in(&self.state_dir)
    }

    /// Checks what running the agent needs; `secret_env` is CABINET_SECRET.
    pub fn settings(&self, secret_env: Option<String>) -> anyhow::Result<Settings> {
        let machine_id = self
            .machine_id
            .clone()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!("machine_id is not set (in the config file or CABINET_MACHINE_ID)")
            })?;
        anyhow::ensure!(
            machine_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                && machine_id.len() <= 64,
            "machine_id {machine_id:?}: letters, digits, '_' and '-' only"
        );
        let secret = match (&self.secret_file, secret_env) {
            (Some(path), _) => std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("secret_file {}: {e}", path.display()))?
                .trim()
                .to_owned(),
            (None, Some(s)) => s.trim().to_owned(),
            (None, None) => anyhow::bail!(
                "the cabinet's secret is needed: secret_file in the config (or CABINET_SECRET_FILE), or CABINET_SECRET"
            ),
        };
        anyhow::ensure!(!secret.is_empty(), "the cabinet's secret is empty");
        let broker = self
            .broker
            .clone()
            .ok_or_else(|| anyhow::anyhow!("broker is not set (in the config file or MQTT_URL), e.g. tcp://arcade.example.com:1883"))?;
        anyhow::ensure!(
            ["tcp://", "ssl://", "mqtt://", "mqtts://", "ws://", "wss://"]
                .iter()
                .any(|s| broker.starts_with(s)),
            "broker {broker:?} must start with tcp://, ssl://, ws:// or wss://"
        );
        let public_key = self
            .public_key
            .as_deref()
            .map(coinpulse_wire::parse_public_key)
            .transpose()
            .map_err(|e| anyhow::anyhow!("public_key: {e}"))?;
        let topic_prefix = self.topic_prefix.trim_matches('/').to_owned();
        anyhow::ensure!(
            !topic_prefix.is_empty() && !topic_prefix.contains(['+', '#']),
            "topic_prefix must be a plain topic path like arcade/machine"
        );
        Ok(Settings {
            machine_id,
            secret,
            broker,
            ca_file: self.ca_file.clone(),
            public_key,
            topic_prefix,
            state_dir: self.state_dir.clone(),
            max_age_secs: self.max_age_secs,
            output: self.output.clone(),
            gameover: self.gameover.clone(),
        })
    }
}

/// What the server knows about a cabinet, for its starter config.
pub struct Starter<'a> {
    pub name: &'a str,
    pub machine_id: &'a str,
    pub broker: &'a str,
    pub public_key: &'a str,
    pub topic_prefix: &'a str,
}

/// The config file the dashboard's cabinet page offers: everything the server knows, plus
/// the common Raspberry Pi output (a coin signal on GPIO17), ready to adjust.
pub fn starter(s: &Starter<'_>) -> String {
    let ca = if s.broker.starts_with("ssl://") || s.broker.starts_with("mqtts://") {
        "# Only for a self-signed broker certificate (coinpulse tls --self-signed):\n\
         # ca_file = \"/etc/coinpulse-cabinet/ca.pem\"\n"
    } else {
        ""
    };
    format!(
        "# {DEFAULT_CONFIG} for {name} (docs/cabinet.md explains every line)\n\
         machine_id = \"{id}\"\n\
         # The cabinet's MQTT secret, alone in this file (chmod 600, owned by the agent):\n\
         secret_file = \"/etc/coinpulse-cabinet/{id}.secret\"\n\
         broker = \"{broker}\"\n\
         {ca}\
         public_key = \"{key}\"\n\
         topic_prefix = \"{prefix}\"\n\
         state_dir = \"{DEFAULT_STATE_DIR}\"\n\
         max_age_secs = {DEFAULT_MAX_AGE_SECS}\n\
         \n\
         # A coin signal on GPIO17 (header pin 11) through an optocoupler to the coin input.\n\
         [[output]]\n\
         kind = \"gpio\"\n\
         chip = \"/dev/gpiochip0\"\n\
         line = 17\n\
         pulses_per_credit = 1\n\
         pulse_ms = 100\n\
         gap_ms = 100\n",
        // A name is free text: one line, no quotes that could end the comment early.
        name = s.name.replace(['\n', '\r'], " "),
        id = s.machine_id,
        broker = s.broker,
        key = s.public_key,
        prefix = s.topic_prefix,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_starter_config_is_one_the_agent_accepts() {
        let signing = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let key: String = signing
            .verifying_key()
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let text = starter(&Starter {
            name: "Pac-Man\nby the door",
            machine_id: "cab-1",
            broker: "ssl://arcade.example.com:8883",
            public_key: &key,
            topic_prefix: "arcade/machine",
        });
        assert!(text.starts_with("# /etc/coinpulse-cabinet/cabinet.toml for Pac-Man by the door"));
        let mut c: Config = toml::from_str(&text).unwrap();
        assert_eq!(
            c.secret_file.as_deref(),
            Some(Path::new("/etc/coinpulse-cabinet/cab-1.secret"))
        );
        c.secret_file = None;
        let s = c.settings(Some("secret".into())).unwrap();
        assert_eq!(s.machine_id, "cab-1");
        assert!(s.public_key.is_some());
        assert!(matches!(
            s.output[..],
            [OutputConfig::Gpio { line: 17, .. }]
        ));
    }

    const EXAMPLE: &str = include_str!("../../../docs/cabinet.example.toml");

    #[test]
    fn the_documented_example_parses() {
        let c: Config = toml::from_str(EXAMPLE).unwrap();
        assert_eq!(c.machine_id.as_deref(), Some("cab-1"));
        assert!(matches!(
            c.output[0],
            OutputConfig::Gpio {
                line: 17,
                pulses_per_credit: 1,
                ..
            }
        ));
        assert!(!c.gameover.is_empty());
    }

    #[test]
    fn defaults_and_environment_overrides() {
        let mut c: Config = toml::from_str(
            "machine_id = \"cab-1\"\nbroker = \"tcp://a:1883\"\n[[output]]\nkind = \"gpio\"\nline = 4\n",
        )
        .unwrap();
        assert_eq!(c.topic_prefix, "arcade/machine");
        assert_eq!(c.max_age_secs, 3900);
        assert_eq!(
            c.output[0],
            OutputConfig::Gpio {
                chip: "/dev/gpiochip0".into(),
                line: 4,
                pulses_per_credit: 1,
                pulse_ms: 100,
                gap_ms: 100,
                active_low: false
            }
        );
        c.apply_env(|k| match k {
            "MQTT_URL" => Some("ssl://b:8883".into()),
            "CABINET_STATE_DIR" => Some("/tmp/x".into()),
            _ => None,
        })
        .unwrap();
        let s = c.settings(Some("  s3cret\n".into())).unwrap();
        assert_eq!(s.broker, "ssl://b:8883");
        assert_eq!(s.secret, "s3cret");
        assert_eq!(c.journal_path(), PathBuf::from("/tmp/x/pulses.journal"));
    }

    #[test]
    fn mistakes_are_named() {
        let err = |toml_text: &str| {
            toml::from_str::<Config>(toml_text)
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    c.settings(Some("s".into()))
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
                .unwrap_err()
        };
        assert!(err("broker = \"tcp://a:1\"").contains("machine_id"));
        assert!(err("machine_id = \"cab-1\"").contains("broker"));
        assert!(err("machine_id = \"cab 1\"\nbroker = \"tcp://a:1\"").contains("letters"));
        assert!(err("machine_id = \"c\"\nbroker = \"http://a\"").contains("tcp://"));
        assert!(
            err("machine_id = \"c\"\nbroker = \"tcp://a:1\"\npublic_key = \"abc\"")
                .contains("public_key")
        );
        assert!(err("machine_id = \"c\"\nbrokr = \"tcp://a:1\"").contains("brokr"));
        assert!(err("[[output]]\nkind = \"relay\"").contains("relay"));
    }
}
