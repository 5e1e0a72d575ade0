//! Settings from flags, environment and `.env` (flags win, then the environment, then
//! `.env`), validated once at start so the rest of the program holds only valid values.

use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;

/// A secret string: never printed by `Debug`, so it cannot leak into logs by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

pub(crate) fn parse_secret(s: &str) -> Result<Secret, String> {
    if s.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(Secret(s.to_owned()))
    }
}

fn parse_http_url(s: &str) -> Result<String, String> {
    let trimmed = s.trim().trim_end_matches('/');
    if (trimmed.starts_with("http://") || trimmed.starts_with("https://")) && trimmed.len() > 8 {
        Ok(trimmed.to_owned())
    } else {
        Err(format!("expected an http:// or https:// URL, got {s:?}"))
    }
}

fn parse_mqtt_url(s: &str) -> Result<String, String> {
    let ok = ["tcp://", "ssl://", "mqtt://", "mqtts://", "ws://", "wss://"]
        .iter()
        .any(|p| s.starts_with(p) && s.len() > p.len());
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "expected tcp://, ssl://, ws:// or wss://host:port, got {s:?}"
        ))
    }
}

pub(crate) fn parse_topic_prefix(s: &str) -> Result<String, String> {
    let p = s.trim_matches('/');
    if p.is_empty() || p.contains(['+', '#']) {
        Err("must be a plain topic path like arcade/machine (no wildcards)".into())
    } else {
        Ok(p.to_owned())
    }
}

pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
pub const DEFAULT_PUBLIC_URL: &str = "http://localhost:8080";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://coinpulse.db";
pub use coinpulse_wire::DEFAULT_TOPIC_PREFIX;

/// Every setting of `coinpulse serve`. Each also reads the environment variable of the same
/// name in upper case; an empty variable counts as unset (see [`load_environment`]).
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address the web server listens on.
    #[arg(long, env = "BIND", default_value = DEFAULT_BIND)]
    pub bind: SocketAddr,

    /// The URL players and Stripe reach this server at (used in QR codes and redirects).
    #[arg(long, env = "PUBLIC_URL", default_value = DEFAULT_PUBLIC_URL, value_parser = parse_http_url)]
    pub public_url: String,

    /// Database: a SQLite file path or sqlite:// URL (created on first run), or postgres://…
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// Most database connections the server holds open (default: 16 for PostgreSQL, 8 for
    /// SQLite). Lower it for a hosted PostgreSQL with a small connection limit.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub database_max_connections: Option<u32>,

    /// Stripe webhook signing secret (whsec_…), from the Stripe dashboard or `stripe listen`.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", value_parser = parse_secret, hide_env_values = true)]
    pub stripe_webhook_secret: Option<Secret>,

    /// Stripe secret API key (sk_…); STRIPE_API_KEY is accepted too.
    #[arg(long, env = "STRIPE_SECRET_KEY", value_parser = parse_secret, hide_env_values = true)]
    pub stripe_secret_key: Option<Secret>,

    /// Base URL of Stripe's API; tests and demos point it at a local fake.
    #[arg(long, env = "STRIPE_API_BASE", default_value = "https://api.stripe.com", value_parser = parse_http_url)]
    pub stripe_api_base: String,

    /// External MQTT broker (tcp://host:1883 or ssl://host:8883). Unset: run the embedded broker.
    #[arg(long, env = "MQTT_URL", value_parser = parse_mqtt_url)]
    pub mqtt_url: Option<String>,

    /// The broker address cabinets are given (dashboard and `cabinet add`), when it is not
    /// MQTT_URL: the server may reach the broker by an inside name (a Docker service, a
    /// private address) that cabinets cannot.
    #[arg(long, env = "CABINET_MQTT_URL", value_parser = parse_mqtt_url)]
    pub cabinet_mqtt_url: Option<String>,

    /// Username for the external broker.
    #[arg(long, env = "MQTT_USERNAME")]
    pub mqtt_username: Option<String>,

    /// Password for the external broker.
    #[arg(long, env = "MQTT_PASSWORD", value_parser = parse_secret, hide_env_values = true)]
    pub mqtt_password: Option<Secret>,

    /// CA certificate (PEM) for ssl:// brokers, like the seed's ca.crt.
    #[arg(long, env = "MQTT_CA_FILE")]
    pub mqtt_ca_file: Option<PathBuf>,

    /// A client certificate (PEM) for an external broker that asks for one (ssl:// or wss://).
    #[arg(long, env = "MQTT_CLIENT_CERT", requires = "mqtt_client_key")]
    pub mqtt_client_cert: Option<PathBuf>,

    /// The private key (PEM) of MQTT_CLIENT_CERT.
    #[arg(long, env = "MQTT_CLIENT_KEY", requires = "mqtt_client_cert")]
    pub mqtt_client_key: Option<PathBuf>,

    /// Topic prefix; cabinets use {prefix}/{machine_id}/coinpulse and …/gameover.
    #[arg(long, env = "MQTT_TOPIC_PREFIX", default_value = DEFAULT_TOPIC_PREFIX, value_parser = parse_topic_prefix)]
    pub mqtt_topic_prefix: String,

    /// The server's MQTT client id; replicas sharing a broker each need their own.
    #[arg(long, env = "MQTT_CLIENT_ID", default_value = "coinpulse-server")]
    pub mqtt_client_id: String,

    /// Where the embedded broker listens (only without MQTT_URL). Default 0.0.0.0:1883, or
    /// the next free port up to 1889 when another broker already has 1883 (logged loudly).
    #[arg(long, env = "MQTT_LISTEN")]
    pub mqtt_listen: Option<SocketAddr>,

    /// TLS listener of the embedded broker (e.g. 0.0.0.0:8883), beside the plain one. Needs
    /// MQTT_TLS_CERT and MQTT_TLS_KEY; `coinpulse tls self-signed` writes a pair for a LAN.
    #[arg(long, env = "MQTT_TLS_LISTEN", requires_all = ["mqtt_tls_cert", "mqtt_tls_key"])]
    pub mqtt_tls_listen: Option<SocketAddr>,

    /// Certificate chain (PEM) for MQTT_TLS_LISTEN.
    #[arg(long, env = "MQTT_TLS_CERT")]
    pub mqtt_tls_cert: Option<PathBuf>,

    /// Private key (PEM) for MQTT_TLS_LISTEN.
    #[arg(long, env = "MQTT_TLS_KEY")]
    pub mqtt_tls_key: Option<PathBuf>,

    /// Bearer token for the /api/v1 JSON API and /create-payment-link. Unset: API disabled.
    #[arg(long, env = "API_TOKEN", value_parser = parse_secret, hide_env_values = true)]
    pub api_token: Option<Secret>,

    /// With MQTT_URL: the shared-subscription group replicas split cabinets' game overs and
    /// acks by (`$share/<group>/…`; the broker gives each message to one replica). `off`
    /// (for a broker without shared subscriptions): every replica gets every message (the
    /// database still records each once).
    #[arg(long, env = "MQTT_SHARED_GROUP", default_value = "coinpulse")]
    pub mqtt_shared_group: String,

    /// Bearer token Prometheus scrapes /metrics with. Unset: API_TOKEN does; neither set:
    /// /metrics is off.
    #[arg(long, env = "METRICS_TOKEN", value_parser = parse_secret, hide_env_values = true)]
    pub metrics_token: Option<Secret>,

    /// Master secret for sessions and cabinet secrets. Unset: generated once and kept in
    /// coinpulse.secret beside the database (owner-only permissions).
    #[arg(long, env = "SECRET_KEY", value_parser = parse_secret, hide_env_values = true)]
    pub secret_key: Option<Secret>,

    /// Let players enter Stripe promotion codes at checkout.
    #[arg(long, env = "ALLOW_PROMOTION_CODES", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_promotion_codes: bool,

    /// Seconds a cabinet may be offline before its pay page stops taking payments.
    #[arg(long, env = "OFFLINE_AFTER", default_value_t = 120)]
    pub offline_after: u64,

    /// Mail server for wallet sign-in links: smtp://host:25, smtps://user:pass@host:465, or
    /// smtp://user:pass@host:587?tls=required. Unset: no email.
    #[arg(long, env = "SMTP_URL", value_parser = parse_secret, hide_env_values = true)]
    pub smtp_url: Option<Secret>,

    /// Sender of coinpulse's email, e.g. "Arcade <arcade@example.com>".
    #[arg(
        long,
        env = "SMTP_FROM",
        default_value = "coinpulse <coinpulse@localhost>"
    )]
    pub smtp_from: String,

    /// Card fee per payment, for the dashboard's "fees saved by wallets": percent …
    #[arg(long, env = "CARD_FEE_PERCENT", default_value_t = 2.9)]
    pub card_fee_percent: f64,

    /// … plus a fixed part in minor units (30 = 30¢).
    #[arg(long, env = "CARD_FEE_FIXED", default_value_t = 30)]
    pub card_fee_fixed: i64,

    /// Take the client's address from the last X-Forwarded-For entry, the one the reverse
    /// proxy adds (set it only behind Caddy, nginx or another proxy that sets it), when the
    /// request comes from this machine or the private network; used for the per-address
    /// rate limits, sign-in throttling and the audit log.
    #[arg(long, env = "TRUST_PROXY_HEADERS", default_value_t = false, action = clap::ArgAction::Set)]
    pub trust_proxy_headers: bool,

    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub message: String,
}

impl Settings {
    /// Applies the fallbacks clap cannot express.
    pub fn finish(mut self) -> Self {
        if self.stripe_secret_key.is_none() {
            if let Ok(key) = std::env::var("STRIPE_API_KEY") {
                if !key.trim().is_empty() {
                    self.stripe_secret_key = Some(Secret(key));
                }
            }
        }
        self.database_url = normalise_database_url(&self.database_url);
        self
    }

    pub fn is_postgres(&self) -> bool {
        self.database_url.starts_with("postgres:") || self.database_url.starts_with("postgresql:")
    }

    /// The shared-subscription group, when there is one: only on an external broker, and
    /// not when turned `off` (an empty value never arrives: empty means unset).
    pub fn shared_group(&self) -> Option<&str> {
        let group = self.mqtt_shared_group.as_str();
        (self.mqtt_url.is_some() && !group.is_empty() && !group.eq_ignore_ascii_case("off"))
            .then_some(group)
    }

    /// The SQLite file, when the database is one.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        sqlite_path(&self.database_url)
    }

    /// The master key: SECRET_KEY, or the key file beside the database (created if absent).
    pub fn master_key(&self) -> Result<Vec<u8>, ConfigError> {
        master_key(self.secret_key.as_ref(), &self.database_url, true)
    }
}

/// What the owner's tools (`coinpulse cabinet …`) need: the database, the master key that
/// derives cabinet secrets, and how cabinets and players reach the server. The same
/// variables as `serve`'s, so one `.env` serves both.
#[derive(Debug, Clone, Args)]
pub struct DatabaseSettings {
    /// Database: a SQLite file path or sqlite:// URL, or postgres://… (the server's).
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true)]
    pub database_url: String,

    /// The server's master secret. Unset: the coinpulse.secret file beside the database.
    #[arg(long, env = "SECRET_KEY", value_parser = parse_secret, hide_env_values = true, global = true)]
    pub secret_key: Option<Secret>,

    /// The URL players reach the server at (printed pay-page links).
    #[arg(long, env = "PUBLIC_URL", default_value = DEFAULT_PUBLIC_URL, value_parser = parse_http_url, global = true)]
    pub public_url: String,

    /// The external broker cabinets connect to, if the server uses one (printed credentials).
    #[arg(long, env = "MQTT_URL", value_parser = parse_mqtt_url, global = true)]
    pub mqtt_url: Option<String>,

    /// The broker address cabinets are given, when it is not MQTT_URL (printed credentials).
    #[arg(long, env = "CABINET_MQTT_URL", value_parser = parse_mqtt_url, global = true)]
    pub cabinet_mqtt_url: Option<String>,

    /// The server's topic prefix (printed credentials).
    #[arg(long, env = "MQTT_TOPIC_PREFIX", default_value = DEFAULT_TOPIC_PREFIX, value_parser = parse_topic_prefix, global = true)]
    pub mqtt_topic_prefix: String,

    #[command(flatten)]
    pub server: LocalServer,
}

impl DatabaseSettings {
    pub fn finish(mut self) -> Self {
        self.database_url = normalise_database_url(&self.database_url);
        self
    }

    /// [`finish`](Self::finish), for a tool that works on the server's database: a SQLite
    /// file that is not there is a mistake (a wrong directory, an env file not read), and
    /// opening it would create an empty database. Only `serve`, `migrate` and `restore`
    /// bring one into being.
    pub fn existing(self) -> Result<Self, ConfigError> {
        let settings = self.finish();
        match sqlite_path(&settings.database_url) {
            // An unreadable directory is not "missing": opening it gives the real error.
            Some(path) if !path.try_exists().unwrap_or(true) => Err(ConfigError {
                setting: "DATABASE_URL",
                message: format!(
                    "no database at {}: point DATABASE_URL (or --database-url, or the file \
                     --env-file names) at the server's database. `coinpulse serve` creates it \
                     on its first start",
                    path.display()
                ),
            }),
            _ => Ok(settings),
        }
    }

    /// The server's master key: SECRET_KEY, or its key file. Never a new one: a tool with
    /// a key of its own would hand out secrets and sign pulses no cabinet accepts.
    pub fn master_key(&self) -> Result<Vec<u8>, ConfigError> {
        master_key(self.secret_key.as_ref(), &self.database_url, false)
    }
}

/// Where the tools find the server running on this machine, to ask it which port its
/// embedded broker took.
#[derive(Debug, Clone, Args)]
pub struct LocalServer {
    /// The address the server running here listens on (its BIND).
    #[arg(long, env = "BIND", default_value = DEFAULT_BIND, global = true)]
    pub bind: SocketAddr,

    /// Where the server's embedded broker listens (its MQTT_LISTEN), if set there.
    #[arg(long, env = "MQTT_LISTEN", global = true)]
    pub mqtt_listen: Option<SocketAddr>,
}

pub(crate) fn sqlite_path(database_url: &str) -> Option<PathBuf> {
    let rest = database_url.strip_prefix("sqlite:")?;
    let rest = rest.trim_start_matches("//");
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// The master key file used when SECRET_KEY is unset: `coinpulse.secret` beside a SQLite
/// database, or in the working directory.
pub fn key_file_path(database_url: &str) -> PathBuf {
    sqlite_path(database_url)
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default()
        .join("coinpulse.secret")
}

/// SECRET_KEY, or the key file beside the database; `create` makes that file when it is
/// missing (the server's first start), else a missing one is an error.
fn master_key(
    secret_key: Option<&Secret>,
    database_url: &str,
    create: bool,
) -> Result<Vec<u8>, ConfigError> {
    if let Some(key) = secret_key {
        if key.expose().len() < 16 {
            return Err(ConfigError {
                setting: "SECRET_KEY",
                message: "must be at least 16 characters (32 random bytes recommended)".into(),
            });
        }
        return Ok(key.expose().as_bytes().to_vec());
    }
    let path = key_file_path(database_url);
    if !create && !path.try_exists().unwrap_or(true) {
        return Err(ConfigError {
            setting: "SECRET_KEY",
            message: format!(
                "unset, and there is no key file at {}: set SECRET_KEY as the server has it, \
                 or point DATABASE_URL at the server's SQLite database (its coinpulse.secret \
                 is beside it)",
                path.display()
            ),
        });
    }
    load_or_create_key_file(&path).map_err(|e| ConfigError {
        setting: "SECRET_KEY",
        message: format!(
            "unset, and the key file {} could not be used: {e}",
            path.display()
        ),
    })
}

/// An empty value means "unset", wherever it is written: `STRIPE_WEBHOOK_SECRET=` in `.env`
/// (as `.env.example` has it) leaves the webhook secret unset rather than empty.
fn is_unset(value: &str) -> bool {
    value.trim().is_empty()
}

/// Loads `file`, or else `.env` (the working directory's, or the nearest parent's), into the
/// environment, filling only what the environment does not already set, then removes the
/// empty ones of `names` (the variables the settings read), so clap sees an empty variable
/// as absent. A named file must exist; `.env` need not.
pub fn load_environment<N: AsRef<std::ffi::OsStr>>(
    names: &[N],
    file: Option<&Path>,
) -> Result<(), ConfigError> {
    match file {
        Some(path) => {
            let env_error = |e: dotenvy::Error| ConfigError {
                setting: "--env-file",
                message: format!("{}: {e}", path.display()),
            };
            let entries = dotenvy::from_path_iter(path).map_err(env_error)?;
            apply_env_file(entries).map_err(env_error)?;
        }
        None => {
            let env_error = |e: dotenvy::Error| ConfigError {
                setting: ".env",
                message: e.to_string(),
            };
            match dotenvy::dotenv_iter() {
                Ok(entries) => apply_env_file(entries).map_err(env_error)?,
                Err(e) if e.not_found() => {}
                Err(e) => return Err(env_error(e)),
            }
        }
    }
    remove_empty(names);
    Ok(())
}

fn apply_env_file(
    entries: impl Iterator<Item = Result<(String, String), dotenvy::Error>>,
) -> Result<(), dotenvy::Error> {
    for entry in entries {
        let (name, value) = entry?;
        let unset_here = std::env::var(&name).map_or(true, |v| is_unset(&v));
        if unset_here && !is_unset(&value) {
            std::env::set_var(name, value);
        }
    }
    Ok(())
}

fn remove_empty<N: AsRef<std::ffi::OsStr>>(names: &[N]) {
    for name in names {
        if std::env::var(name).is_ok_and(|v| is_unset(&v)) {
            std::env::remove_var(name);
        }
    }
}

/// Lets owners write a plain path (`data/coinpulse.db`) and makes SQLite create the file.
fn normalise_database_url(url: &str) -> String {
    let url = url.trim();
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        return url.to_owned();
    }
    let with_scheme = if url.starts_with("sqlite:") {
        url.to_owned()
    } else {
        format!("sqlite://{url}")
    };
    if with_scheme.contains("mode=") {
        with_scheme
    } else if with_scheme.contains('?') {
        format!("{with_scheme}&mode=rwc")
    } else {
        format!("{with_scheme}?mode=rwc")
    }
}

/// Hex characters in a generated key file: 32 random bytes.
const KEY_FILE_LEN: usize = 64;

fn load_or_create_key_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let invalid = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned());
    let check = |s: String| -> std::io::Result<Vec<u8>> {
        let key = s.trim();
        if key.len() != KEY_FILE_LEN || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(&format!(
                "is not a key ({} characters; expected {KEY_FILE_LEN} hex characters). Restore it from your backup; a new key would invalidate every cabinet's secret",
                key.len()
            )));
        }
        Ok(key.as_bytes().to_vec())
    };
    match std::fs::read_to_string(path) {
        Ok(s) => return check(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let key = crate::domain::random_token(32);
    // Written whole to a temporary file, then linked into place: a crash never leaves a
    // half-written key, and of two processes starting at once exactly one key wins.
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    {
        let mut f = opts.open(&tmp)?;
        f.write_all(key.as_bytes())?;
        f.sync_all()?;
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir)?.sync_all()?;
            }
            tracing::warn!(path = %path.display(), "generated a new SECRET_KEY and saved it (owner-only); back it up with the database");
            Ok(key.into_bytes())
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            check(std::fs::read_to_string(path)?)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_normalised() {
        assert_eq!(
            normalise_database_url("coinpulse.db"),
            "sqlite://coinpulse.db?mode=rwc"
        );
        assert_eq!(
            normalise_database_url("sqlite:///var/lib/c.db"),
            "sqlite:///var/lib/c.db?mode=rwc"
        );
        assert_eq!(
            normalise_database_url("sqlite://x.db?mode=ro"),
            "sqlite://x.db?mode=ro"
        );
        assert_eq!(
            normalise_database_url("postgres://u@h/db"),
            "postgres://u@h/db"
        );
    }

    #[derive(clap::Parser)]
    struct SettingsOnly {
        #[command(flatten)]
        settings: Settings,
    }

    #[test]
    fn shared_subscriptions_only_on_an_external_broker_and_not_when_off() {
        let group = |args: &[&str]| {
            let parsed = <SettingsOnly as clap::Parser>::try_parse_from(
                std::iter::once("coinpulse").chain(args.iter().copied()),
            )
            .unwrap();
            parsed.settings.shared_group().map(str::to_owned)
        };
        assert_eq!(group(&[]), None, "the embedded broker needs none");
        assert_eq!(
            group(&["--mqtt-url=tcp://b:1883"]).as_deref(),
            Some("coinpulse")
        );
        assert_eq!(
            group(&["--mqtt-url=tcp://b:1883", "--mqtt-shared-group=OFF"]),
            None
        );
        assert_eq!(
            group(&["--mqtt-url=tcp://b:1883", "--mqtt-shared-group=venue"]).as_deref(),
            Some("venue")
        );
    }

    /// Env names in this test are its own, so parallel tests never see them.
    #[test]
    fn empty_values_mean_unset() {
        #[derive(clap::Parser)]
        struct Probe {
            #[arg(long, env = "CP_TEST_EMPTY_IN_FILE", value_parser = parse_secret)]
            in_file: Option<Secret>,
            #[arg(long, env = "CP_TEST_EMPTY_IN_ENV", value_parser = parse_secret)]
            in_env: Option<Secret>,
            #[arg(long, env = "CP_TEST_FILLED_BY_FILE")]
            filled: Option<String>,
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(
            &path,
            "CP_TEST_EMPTY_IN_FILE=\nCP_TEST_FILLED_BY_FILE=from-file\n",
        )
        .unwrap();
        // An empty variable in the environment is unset too, so .env may fill it.
        std::env::set_var("CP_TEST_EMPTY_IN_ENV", " ");
        std::env::set_var("CP_TEST_FILLED_BY_FILE", "");
        apply_env_file(dotenvy::from_path_iter(&path).unwrap()).unwrap();
        remove_empty(&["CP_TEST_EMPTY_IN_FILE", "CP_TEST_EMPTY_IN_ENV"]);
        assert!(std::env::var_os("CP_TEST_EMPTY_IN_FILE").is_none());
        assert!(std::env::var_os("CP_TEST_EMPTY_IN_ENV").is_none());
        let probe = <Probe as clap::Parser>::try_parse_from(["probe"]).expect("empty means unset");
        assert!(probe.in_file.is_none() && probe.in_env.is_none());
        assert_eq!(probe.filled.as_deref(), Some("from-file"));
    }

    /// Every value `.env.example` sets parses; the ones it leaves empty are skipped, which
    /// `STRIPE_WEBHOOK_SECRET=` would not survive otherwise.
    #[test]
    fn env_example_is_valid_as_it_is() {
        use clap::CommandFactory;
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example");
        let cmd = SettingsOnly::command();
        let mut args = vec!["coinpulse".to_owned()];
        let mut skipped = Vec::new();
        for entry in dotenvy::from_path_iter(path).unwrap() {
            let (name, value) = entry.unwrap();
            if is_unset(&value) {
                skipped.push(name);
                continue;
            }
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_env().is_some_and(|e| e == name.as_str()))
                .unwrap_or_else(|| panic!("{name} in .env.example is no setting"));
            args.push(format!("--{}={value}", arg.get_long().unwrap()));
        }
        assert!(skipped.iter().any(|n| n == "STRIPE_WEBHOOK_SECRET"));
        assert!(
            parse_secret("").is_err(),
            "so skipping empty values matters"
        );
        <SettingsOnly as clap::Parser>::try_parse_from(&args).expect(".env.example parses");
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(
            format!("{:?}", Secret::new("hunter2")),
            "Secret([redacted])"
        );
    }

    #[test]
    fn key_file_is_created_once_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k/coinpulse.secret");
        let a = load_or_create_key_file(&path).unwrap();
        let b = load_or_create_key_file(&path).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
