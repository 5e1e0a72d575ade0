use clap::Parser;
use tracing_subscriber::EnvFilter;

use coinpulse::cli::{self, Cli};

fn main() -> std::process::ExitCode {
    // .env fills in only what the environment does not already set.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    init_tracing(&cli.settings.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // The application runs as a task on the worker threads, not on this thread.
    let result = runtime.block_on(async { tokio::spawn(cli::run(cli)).await });
    match result.unwrap_or_else(|e| Err(anyhow::anyhow!("crashed: {e}"))) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One clear line, naming the setting when a setting is at fault.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: &str) {
    // mqtt5 logs every refused message itself; coinpulse's access rules log them instead,
    // with the login's name and at most one line a second per connection.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,mqtt5=error,actix_server=warn,paho_mqtt=warn")
    });
    // Colours only for a person at a terminal, not in log files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
