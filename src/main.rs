use coinpulse::cli;

fn main() -> std::process::ExitCode {
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(e) => return fail(&e),
    };
    cli::logs::init(cli.command.log_format(), cli.command.default_log_filter());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // The application runs as a task on the worker threads, not on this thread.
    let result = runtime.block_on(async { tokio::spawn(cli::run(cli)).await });
    match result.unwrap_or_else(|e| Err(anyhow::anyhow!("crashed: {e}"))) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// One clear line, naming the setting when a setting is at fault.
fn fail(e: &anyhow::Error) -> std::process::ExitCode {
    eprintln!("error: {e:#}");
    std::process::ExitCode::FAILURE
}
