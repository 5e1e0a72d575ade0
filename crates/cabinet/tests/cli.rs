//! `coinpulse-cabinet` as an owner runs it, without a server: wiring checks, status and
//! resolve on the journal, config mistakes named.

use std::path::Path;
use std::process::Command;

fn agent(config: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_coinpulse-cabinet"))
        .env("COINPULSE_CABINET_CONFIG", config)
        .env_remove("MQTT_URL")
        .args(args)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("cabinet.toml");
    std::fs::write(
        &path,
        format!(
            "machine_id = \"cab-1\"\nbroker = \"tcp://127.0.0.1:9\"\nstate_dir = \"{}\"\n{extra}",
            dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn test_output_drives_the_command_once_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = config(
        dir.path(),
        &format!(
            "[[output]]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"echo $CREDITS $SOURCE >> {}\"]\n",
            out.display()
        ),
    );
    let (code, text) = agent(&cfg, &["test-output", "--credits", "3"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("3 credits through command sh"), "{text}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "3 test\n");
}

#[test]
fn a_failing_output_fails_the_wiring_check() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[[output]]\nkind = \"command\"\ncommand = [\"false\"]\n",
    );
    let (code, text) = agent(&cfg, &["test-output"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("exited with"), "{text}");
}

#[test]
fn status_and_resolve_work_on_the_journal_while_the_agent_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(
        dir.path().join("state/pulses.journal"),
        "applying p1 2 stripe 2026-12-01T10:00:00Z 2026-12-01T10:00:01.000Z\n\
         applied p1 2026-12-01T10:00:01.200Z\n\
         applying p2 1 wallet 2026-12-01T10:05:00Z 2026-12-01T10:05:01.000Z\n",
    )
    .unwrap();
    let (code, text) = agent(&cfg, &["status"]);
    assert_eq!(code, 3, "not running:\n{text}");
    assert!(text.contains("agent not running"), "{text}");
    assert!(
        text.contains("INTERRUPTED") && text.contains("p2"),
        "{text}"
    );
    assert!(text.contains("2 credits  stripe  p1"), "{text}");

    let (code, text) = agent(&cfg, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!((code, v["running"].as_bool()), (3, Some(false)));
    assert_eq!(v["interrupted"][0]["id"], "p2");

    let (code, text) = agent(&cfg, &["resolve", "p1", "--applied"]);
    assert_eq!(code, 1, "p1 was not interrupted:\n{text}");
    let (code, text) = agent(&cfg, &["resolve", "p2"]);
    assert_ne!(code, 0, "a verdict is required:\n{text}");
    let (code, text) = agent(&cfg, &["resolve", "p2", "--not-applied"]);
    assert_eq!(code, 0, "{text}");
    let (_, text) = agent(&cfg, &["status"]);
    assert!(text.contains("nothing left unapplied"), "{text}");
}

#[test]
fn mistakes_in_the_config_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cabinet.toml");
    std::fs::write(&cfg, "machine_id = \"cab-1\"\nbrokr = \"tcp://x:1\"\n").unwrap();
    let (code, text) = agent(&cfg, &["run"]);
    assert_eq!(code, 1);
    assert!(text.contains("unknown field `brokr`"), "{text}");

    std::fs::write(&cfg, "machine_id = \"cab-1\"\nbroker = \"tcp://x:1\"\n").unwrap();
    let (code, text) = agent(&cfg, &["run"]);
    assert_eq!(code, 1);
    assert!(text.contains("secret"), "{text}");

    let (code, text) = agent(&dir.path().join("missing.toml"), &["run"]);
    assert_eq!(code, 1);
    assert!(text.contains("missing.toml"), "{text}");
}

#[test]
fn every_command_explains_itself() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    for cmd in ["run", "status", "gameover", "test-output", "resolve"] {
        let (code, text) = agent(&cfg, &[cmd, "--help"]);
        assert_eq!(code, 0, "{cmd}: {text}");
        assert!(text.contains("Usage: coinpulse-cabinet"), "{cmd}: {text}");
    }
    let (code, text) = agent(&cfg, &["gameover"]);
    assert_eq!(code, 1);
    assert!(text.contains("agent is not running"), "{text}");
}

#[test]
fn without_a_broker_the_agent_still_answers_and_takes_game_overs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[[output]]\nkind = \"command\"\ncommand = [\"true\"]\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_coinpulse-cabinet"))
        .env("COINPULSE_CABINET_CONFIG", &cfg)
        .env("CABINET_SECRET", "s3cret")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let socket = dir.path().join("state/agent.sock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        let (code, text) = agent(&cfg, &["status"]);
        if code != 3 {
            break (code, text);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never answered"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(socket.exists());
    assert_eq!(status.0, 0, "{}", status.1);
    assert!(
        status.1.contains("not connected; trying tcp://127.0.0.1:9"),
        "{}",
        status.1
    );

    let started = std::time::Instant::now();
    let (code, text) = agent(&cfg, &["gameover", "--score", "7"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "queued, not waited for"
    );

    // A second agent on the same state directory would apply pulses twice: refused.
    let second = Command::new(env!("CARGO_BIN_EXE_coinpulse-cabinet"))
        .env("COINPULSE_CABINET_CONFIG", &cfg)
        .env("CABINET_SECRET", "s3cret")
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains("already running"));

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let exit = child.wait().unwrap();
    assert!(exit.success(), "SIGTERM is a clean stop: {exit:?}");
    assert!(!socket.exists(), "the socket is removed on the way out");
}
