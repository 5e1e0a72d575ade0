//! `coinpulse tls self-signed`: a certificate for the embedded broker's TLS listener on a
//! LAN, where no public CA will issue one.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Write a self-signed certificate and key for MQTT_TLS_CERT / MQTT_TLS_KEY. Cabinets
    /// trust it by using the certificate file as their CA (MQTT_CA_FILE, or the seed's ca.crt).
    SelfSigned(SelfSignedArgs),
}

#[derive(Debug, Args)]
pub struct SelfSignedArgs {
    /// Names and addresses cabinets use to reach this server (repeat or comma-separate),
    /// e.g. --host arcade.local --host 192.168.1.20.
    #[arg(long = "host", value_delimiter = ',', default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
    hosts: Vec<String>,
    /// Certificate output (PEM).
    #[arg(long, default_value = "mqtt-cert.pem")]
    cert: PathBuf,
    /// Private key output (PEM, owner-only).
    #[arg(long, default_value = "mqtt-key.pem")]
    key: PathBuf,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
}

pub fn run(cmd: TlsCommand) -> anyhow::Result<()> {
    match cmd {
        TlsCommand::SelfSigned(args) => self_signed(args),
    }
}

fn self_signed(args: SelfSignedArgs) -> anyhow::Result<()> {
    for path in [&args.cert, &args.key] {
        if path.exists() && !args.force {
            anyhow::bail!("{} exists; pass --force to replace it", path.display());
        }
    }
    let mut params = rcgen::CertificateParams::new(args.hosts.clone())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "coinpulse MQTT broker");
    // Ten years: a cabinet in a back room should not stop working because a file expired.
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    write_file(&args.key, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&args.cert, cert.pem().as_bytes(), 0o644)?;
    println!("wrote {} and {}", args.cert.display(), args.key.display());
    println!("valid for: {}", args.hosts.join(", "));
    println!();
    println!("Serve MQTT over TLS with:");
    println!(
        "  MQTT_TLS_LISTEN=0.0.0.0:8883 MQTT_TLS_CERT={} MQTT_TLS_KEY={} coinpulse serve",
        args.cert.display(),
        args.key.display()
    );
    println!(
        "Copy {} to each cabinet as its CA file and connect to ssl://<host>:8883.",
        args.cert.display()
    );
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
