//! `coinpulse mosquitto-config`: a Mosquitto password file and ACL for every cabinet, so
//! an external Mosquitto enforces the same rights as the embedded broker: each cabinet
//! reads only its own `coinpulse` topic and writes only its own `gameover`, `ack` and
//! `status`; the server's account may do everything.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use clap::Args;

use crate::config::{DatabaseSettings, Secret};
use crate::domain::Keys;
use crate::mqtt::Topics;
use crate::store::Store;

/// mosquitto_passwd's own choices (Mosquitto 2): PBKDF2-SHA512, 101 rounds, 12-byte salt.
const ROUNDS: u32 = 101;
const SALT_BYTES: usize = 12;

#[derive(Debug, Args)]
pub struct MosquittoArgs {
    /// Directory for `passwd`, `acl` and `coinpulse.conf` (created if missing). Files are
    /// replaced atomically, so a SIGHUP to Mosquitto never reads half a file.
    #[arg(long)]
    out: PathBuf,

    /// The server's own MQTT login (its MQTT_USERNAME).
    #[arg(long, env = "MQTT_USERNAME", default_value = "coinpulse")]
    mqtt_username: String,

    /// The server's MQTT password (its MQTT_PASSWORD): read from the environment only.
    #[arg(env = "MQTT_PASSWORD", value_parser = crate::config::parse_secret, hide = true)]
    mqtt_password: Option<Secret>,

    /// Keep running and rewrite the files whenever a cabinet is added, changed, disabled or
    /// gets a new secret (checked every 5 s).
    #[arg(long)]
    watch: bool,

    /// With --watch: send SIGHUP to the process in this PID file (Mosquitto's `pid_file`)
    /// after each rewrite, so it reloads them.
    #[arg(long, requires = "watch")]
    reload_pid_file: Option<PathBuf>,

    #[command(flatten)]
    settings: DatabaseSettings,
}

pub async fn run(args: MosquittoArgs) -> anyhow::Result<()> {
    let settings = args.settings.clone().existing()?;
    let Some(server_password) = args.mqtt_password.as_ref() else {
        anyhow::bail!(
            "set MQTT_PASSWORD (in the environment or .env, as for `coinpulse serve`): the \
             server's account is written to the password file too"
        );
    };
    let keys = Keys::new(settings.master_key()?);
    let topics = Topics::new(&settings.mqtt_topic_prefix);
    let store = Store::connect(&settings.database_url).await?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut last = None;
    loop {
        let cabinets: Vec<(String, String)> = store
            .cabinets()
            .await?
            .into_iter()
            .filter(|c| c.enabled && c.archived_at.is_none())
            .map(|c| {
                let secret = keys.cabinet_secret(&c.machine_id, &c.secret_salt);
                (c.machine_id, secret)
            })
            .collect();
        if last.as_ref() != Some(&cabinets) {
            let mut accounts = vec![(
                args.mqtt_username.clone(),
                server_password.expose().to_owned(),
            )];
            accounts.extend(cabinets.iter().cloned());
            write_atomically(&args.out.join("passwd"), &password_file(&accounts), 0o600)?;
            write_atomically(
                &args.out.join("acl"),
                &acl_file(
                    &args.mqtt_username,
                    cabinets.iter().map(|c| c.0.as_str()),
                    &topics,
                ),
                0o644,
            )?;
            write_atomically(&args.out.join("coinpulse.conf"), &conf(&args.out), 0o644)?;
            println!(
                "wrote {} for {} cabinet(s) and the server's account {}",
                args.out.display(),
                cabinets.len(),
                args.mqtt_username
            );
            if let Some(pid_file) = &args.reload_pid_file {
                reload(pid_file);
            }
            last = Some(cabinets);
        }
        if !args.watch {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// One `user:$7$rounds$salt$hash` line per account, as `mosquitto_passwd` writes them.
fn password_file(accounts: &[(String, String)]) -> String {
    accounts
        .iter()
        .map(|(user, password)| {
            let salt: [u8; SALT_BYTES] = rand::random();
            format!("{user}:{}\n", hash(password, &salt))
        })
        .collect()
}

fn hash(password: &str, salt: &[u8]) -> String {
    let mut out = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password.as_bytes(), salt, ROUNDS, &mut out);
    let b64 = base64::engine::general_purpose::STANDARD;
    format!("$7${ROUNDS}${}${}", b64.encode(salt), b64.encode(out))
}

fn acl_file<'a>(server: &str, cabinets: impl Iterator<Item = &'a str>, topics: &Topics) -> String {
    let mut acl = format!(
        "# Written by `coinpulse mosquitto-config`; rerun it after adding a cabinet.\n\
         # Anonymous clients get nothing.\n\n# The coinpulse server\nuser {server}\ntopic readwrite #\n"
    );
    for id in cabinets {
        acl.push_str(&format!(
            "\nuser {id}\ntopic read {}\ntopic write {}\ntopic write {}\ntopic write {}\n",
            topics.coinpulse(id),
            topics.gameover(id),
            topics.ack(id),
            topics.status(id),
        ));
    }
    acl
}

fn conf(dir: &Path) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    format!(
        "# Include from mosquitto.conf (`include_dir`) or start Mosquitto with it:\n\
         #   mosquitto -c {conf}\n\
         per_listener_settings false\n\
         allow_anonymous false\n\
         # Pulses are tiny: send them at once rather than wait to batch them (Nagle).\n\
         set_tcp_nodelay true\n\
         password_file {passwd}\n\
         acl_file {acl}\n\
         listener 1883\n",
        conf = dir.join("coinpulse.conf").display(),
        passwd = dir.join("passwd").display(),
        acl = dir.join("acl").display(),
    )
}

fn write_atomically(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}

fn reload(pid_file: &Path) {
    let pid = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok());
    let Some(pid) = pid else {
        eprintln!(
            "no PID in {}; Mosquitto not told to reload",
            pid_file.display()
        );
        return;
    };
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status();
    if !sent.is_ok_and(|s| s.success()) {
        eprintln!("could not send SIGHUP to {pid}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_as_mosquitto_checks_them() {
        let h = hash("hunter2", b"0123456789ab");
        let parts: Vec<&str> = h.split('$').collect();
        assert_eq!(parts[..3], ["", "7", "101"]);
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(b64.decode(parts[3]).unwrap(), b"0123456789ab");
        let mut expected = [0u8; 64];
        pbkdf2::pbkdf2_hmac::<sha2::Sha512>(b"hunter2", b"0123456789ab", 101, &mut expected);
        assert_eq!(b64.decode(parts[4]).unwrap(), expected);
    }

    #[test]
    fn each_cabinet_gets_only_its_own_topics() {
        let acl = acl_file(
            "coinpulse",
            ["cab-1", "cab-2"].into_iter(),
            &Topics::new("arcade/machine"),
        );
        assert!(acl.contains("user cab-1\ntopic read arcade/machine/cab-1/coinpulse\ntopic write arcade/machine/cab-1/gameover"));
        assert!(acl.contains("user coinpulse\ntopic readwrite #"));
        let cab1 = acl
            .split("user cab-1")
            .nth(1)
            .unwrap()
            .split("user cab-2")
            .next()
            .unwrap();
        assert!(!cab1.contains("cab-2"));
    }
}
