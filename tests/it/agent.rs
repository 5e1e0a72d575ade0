//! The cabinet agent binary (`coinpulse-cabinet`) against the real server and broker:
//! each paid pulse applied exactly once through `kill -9` and restarts, forged and
//! replayed pulses refused, acks only after the output succeeded, game over from the
//! control socket logged as a play with its length.

use std::time::Duration;

use coinpulse::domain::{sign_pulse, wire_time, Keys, PulseMessage, PulseSource};
use paho_mqtt as paho;

use crate::support::*;

/// A server (on its own embedded broker if `embedded`, even when the tests run against an
/// external one), one registered cabinet and its secret, and a directory for its recording
/// output.
async fn case(embedded: bool) -> (TestDb, TestApp, String, String, tempfile::TempDir) {
    let db = TestDb::new().await;
    let app = if embedded {
        spawn_embedded(&db).await
    } else {
        spawn_app(&db).await
    };
    let id = unique("cab");
    let secret = app.register(&id, 100, "usd").await;
    (db, app, id, secret, tempfile::tempdir().unwrap())
}

async fn acked(app: &TestApp, machine_id: &str) -> Vec<(String, bool)> {
    app.pulses(machine_id)
        .await
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_owned(),
                p["acked_at"].is_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn each_paid_pulse_is_applied_once_through_a_kill_between_receipt_and_ack() {
    let (_db, app, id, secret, dir) = case(false).await;
    let mut agent = AgentProcess::start(&app, &id, &secret, &recording_output(dir.path())).await;

    assert_eq!(app.post_webhook(&paid(&id, 200, "usd")).await.0, 200);
    app.eventually("the first pulse is applied and acked", || async {
        applied_lines(dir.path()).len() == 1 && acked(&app, &id).await.iter().all(|p| p.1)
    })
    .await;
    let first = acked(&app, &id).await[0].0.clone();
    assert_eq!(applied_lines(dir.path())[0], format!("{first} 2 stripe"));

    // The second pulse's output starts (and records the coins) but the power goes before
    // the agent can record it as applied and ack it.
    std::fs::write(dir.path().join("hang"), "").unwrap();
    assert_eq!(app.post_webhook(&paid(&id, 100, "usd")).await.0, 200);
    app.eventually("the second pulse's output ran", || async {
        applied_lines(dir.path()).len() == 2
    })
    .await;
    agent.kill9();
    std::fs::remove_file(dir.path().join("hang")).unwrap();
    let second = acked(&app, &id)
        .await
        .into_iter()
        .find(|p| p.0 != first)
        .unwrap();
    assert!(!second.1, "never acked");

    // Back up: the server offers the unacked pulse again; the agent reports it and does
    // not apply it a second time.
    agent.restart(&app).await;
    agent.wait_for_log("was interrupted", 1).await;
    agent.wait_for_log("not applied, not acknowledged", 1).await;
    let (code, status) = agent.cli(&["status"]).await;
    assert_eq!(code, 1, "a pulse waits for the owner:\n{status}");
    assert!(
        status.contains("INTERRUPTED") && status.contains(&second.0),
        "{status}"
    );
    assert!(
        status.contains(&first),
        "the last applied pulse is listed:\n{status}"
    );
    assert!(status.contains("connected to"), "{status}");
    assert_eq!(applied_lines(dir.path()).len(), 2, "not applied again");

    // The owner checks the cabinet: the coins were there.
    let (code, out) = agent.cli(&["resolve", &second.0, "--applied"]).await;
    assert_eq!(code, 0, "{out}");
    app.eventually("the resolved pulse is acked", || async {
        acked(&app, &id).await.iter().all(|p| p.1)
    })
    .await;
    let (code, status) = agent.cli(&["status"]).await;
    assert_eq!(code, 0, "{status}");
    assert!(status.contains("nothing left unapplied"), "{status}");

    // And life goes on: the next payment is applied once.
    assert_eq!(app.post_webhook(&paid(&id, 300, "usd")).await.0, 200);
    app.eventually("the third pulse is applied and acked", || async {
        applied_lines(dir.path()).len() == 3 && acked(&app, &id).await.iter().all(|p| p.1)
    })
    .await;
    // One more restart: everything is redelivered-or-not as the server likes; nothing is
    // applied again.
    agent.kill9();
    agent.restart(&app).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lines = applied_lines(dir.path());
    assert_eq!(lines.len(), 3, "{lines:?}");
    let ids: std::collections::HashSet<_> =
        lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(ids.len(), 3, "each pulse applied once: {lines:?}");
}

#[tokio::test]
async fn a_failed_output_is_not_acked_and_is_applied_when_offered_again() {
    let (_db, app, id, secret, dir) = case(false).await;
    std::fs::write(dir.path().join("fail"), "").unwrap();
    let mut agent = AgentProcess::start(&app, &id, &secret, &recording_output(dir.path())).await;

    assert_eq!(app.post_webhook(&paid(&id, 100, "usd")).await.0, 200);
    agent.wait_for_log("no credits given", 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        acked(&app, &id).await.iter().all(|p| !p.1),
        "a pulse whose output failed is never acked"
    );
    assert!(applied_lines(dir.path()).is_empty());

    // Fixed; the cabinet reconnects and the server offers the pulse again.
    std::fs::remove_file(dir.path().join("fail")).unwrap();
    agent.kill9();
    agent.restart(&app).await;
    app.eventually("applied and acked on redelivery", || async {
        applied_lines(dir.path()).len() == 1 && acked(&app, &id).await.iter().all(|p| p.1)
    })
    .await;
}

#[tokio::test]
async fn a_stop_while_credits_are_given_waits_and_records_them() {
    let (_db, app, id, secret, dir) = case(false).await;
    std::fs::write(dir.path().join("slow"), "").unwrap();
    let mut agent = AgentProcess::start(&app, &id, &secret, &recording_output(dir.path())).await;

    assert_eq!(app.post_webhook(&paid(&id, 100, "usd")).await.0, 200);
    app.eventually("the output is running", || async {
        applied_lines(dir.path()).len() == 1
    })
    .await;
    let pulse = acked(&app, &id).await[0].0.clone();
    // Being given is not interrupted: status is calm, and it cannot be resolved meanwhile.
    let (code, status) = agent.cli(&["status"]).await;
    assert_eq!(code, 0, "{status}");
    let (code, out) = agent.cli(&["resolve", &pulse, "--not-applied"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("being applied right now"), "{out}");

    // systemctl stop: the agent finishes the pulse, records and acks it, then exits.
    assert!(agent.stop().await, "a clean exit");
    assert!(
        agent.log().contains("credits given and acknowledged"),
        "{}",
        agent.log()
    );
    app.eventually("acked before the agent left", || async {
        acked(&app, &id).await.iter().all(|p| p.1)
    })
    .await;
    std::fs::remove_file(dir.path().join("slow")).unwrap();
    agent.restart(&app).await;
    let (code, status) = agent.cli(&["status"]).await;
    assert_eq!(code, 0, "nothing interrupted:\n{status}");
    assert_eq!(applied_lines(dir.path()).len(), 1);
}

#[tokio::test]
async fn game_over_through_the_control_socket_is_one_play_with_its_length() {
    let (_db, app, id, secret, dir) = case(false).await;
    let agent = AgentProcess::start(&app, &id, &secret, &recording_output(dir.path())).await;

    assert_eq!(app.post_webhook(&paid(&id, 100, "usd")).await.0, 200);
    app.eventually("credited", || async {
        applied_lines(dir.path()).len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (code, out) = agent.cli(&["gameover", "--score", "4321"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("game over sent"), "{out}");
    app.eventually("one play logged", || async {
        app.plays(&id).await.len() == 1
    })
    .await;
    let play = &app.plays(&id).await[0];
    assert_eq!(play["score"], 4321);
    let secs = play["play_seconds"].as_i64().unwrap();
    assert!((2..30).contains(&secs), "measured from the credit: {secs}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.plays(&id).await.len(), 1, "exactly one");
}

/// The broker's own login, which may publish on any cabinet's topic: what an attacker who
/// took over the broker (or a misconfigured external one) could do.
async fn server_login(app: &TestApp) -> paho::AsyncClient {
    let client = paho::AsyncClient::new(
        paho::CreateOptionsBuilder::new()
            .server_uri(&app.broker)
            .client_id(unique("forger"))
            .persistence(None)
            .finalize(),
    )
    .unwrap();
    let keys = Keys::new(SECRET_KEY.as_bytes().to_vec());
    client
        .connect(
            paho::ConnectOptionsBuilder::new()
                .user_name(coinpulse::mqtt::INTERNAL_USER)
                .password(keys.internal_mqtt_password())
                .finalize(),
        )
        .await
        .expect("the server's login");
    std::mem::forget(client.clone());
    client
}

fn pulse(machine_id: &str, age: chrono::Duration) -> PulseMessage {
    PulseMessage {
        id: uuid::Uuid::now_v7().to_string(),
        machine_id: machine_id.to_owned(),
        credits: 5,
        timestamp: wire_time(chrono::Utc::now() - age),
        source: PulseSource::Operator,
    }
}

#[tokio::test]
async fn forged_stale_foreign_and_replayed_pulses_are_refused() {
    let (_db, app, id, secret, dir) = case(true).await;
    let mut agent = AgentProcess::start(&app, &id, &secret, &recording_output(dir.path())).await;
    let forger = server_login(&app).await;
    let topic = format!("{}/{id}/coinpulse", app.topic_prefix);
    let send = |payload: String| {
        let forger = forger.clone();
        let topic = topic.clone();
        async move {
            forger
                .publish(paho::Message::new(topic, payload, paho::QOS_1))
                .await
                .unwrap();
        }
    };
    let keys = Keys::new(SECRET_KEY.as_bytes().to_vec());
    let server_key = keys.pulse_signing_key();
    let fresh = chrono::Duration::zero();

    // Signed with the cabinet's secret (what a sniffed password gives) but not the
    // server's key.
    let other_key = ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]);
    send(sign_pulse(&pulse(&id, fresh), &secret, &other_key)).await;
    agent.wait_for_log("signature does not match", 1).await;
    // The server's signature, but another cabinet's pulse.
    send(sign_pulse(
        &pulse("some-other-cab", fresh),
        &secret,
        server_key,
    ))
    .await;
    agent.wait_for_log("not this cabinet", 1).await;
    // The server's signature, two hours old: a recorded pulse played back.
    send(sign_pulse(
        &pulse(&id, chrono::Duration::hours(2)),
        &secret,
        server_key,
    ))
    .await;
    agent.wait_for_log("s old (limit 3900 s)", 1).await;
    // Not a pulse at all.
    send("{\"credits\": 99}".into()).await;
    agent.wait_for_log("pulse refused", 4).await;
    assert!(
        applied_lines(dir.path()).is_empty(),
        "nothing forged was applied"
    );

    // A genuine one is applied; the same bytes replayed after a restart are not.
    let genuine = sign_pulse(&pulse(&id, fresh), &secret, server_key);
    send(genuine.clone()).await;
    agent
        .wait_for_log("credits given and acknowledged", 1)
        .await;
    assert_eq!(applied_lines(dir.path()).len(), 1);
    agent.kill9();
    agent.restart(&app).await;
    send(genuine).await;
    agent.wait_for_log("already applied", 1).await;
    assert_eq!(
        applied_lines(dir.path()).len(),
        1,
        "a replay is not applied"
    );
}

#[tokio::test]
async fn the_config_on_the_dashboards_cabinet_page_runs_the_agent() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let mut owner = app.owner().await;
    let id = unique("cab");
    let secret = app.register(&id, 100, "usd").await;
    let page = owner.get(&format!("/admin/cabinets/{id}")).await;
    let start = page
        .body
        .find("<pre id=\"agent-config\"><code>")
        .expect("config shown")
        + "<pre id=\"agent-config\"><code>".len();
    let end = start + page.body[start..].find("</code>").unwrap();
    let config = page.body[start..end]
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    assert!(
        config.contains(&format!("machine_id = \"{id}\"")),
        "{config}"
    );

    // As an installer would: the secret in its file, the wiring's output instead of the
    // GPIO example, and (here) the paths moved by environment variables.
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("cab.secret");
    std::fs::write(&secret_file, &secret).unwrap();
    let cut = config.find("[[output]]").expect("an output example");
    let config = format!("{}{}", &config[..cut], recording_output(dir.path()));
    let env = [
        ("CABINET_SECRET_FILE", secret_file.display().to_string()),
        (
            "CABINET_STATE_DIR",
            dir.path().join("state").display().to_string(),
        ),
    ];
    let agent_dir = tempfile::tempdir().unwrap();
    let _agent = AgentProcess::with_config(&app, &id, agent_dir, &config, &env).await;
    assert_eq!(app.post_webhook(&paid(&id, 100, "usd")).await.0, 200);
    app.eventually("credited through the copied config", || async {
        applied_lines(dir.path()).len() == 1 && acked(&app, &id).await.iter().all(|p| p.1)
    })
    .await;
}

/// A simulated GPIO chip from the kernel's gpio-sim (configfs), removed on drop. None, with
/// the reason, where the kernel has no gpio-sim or this user may not configure it.
struct GpioSim {
    config: std::path::PathBuf,
    chip: std::path::PathBuf,
    sysfs: std::path::PathBuf,
}

impl GpioSim {
    fn new() -> Result<Self, String> {
        let root = std::path::Path::new("/sys/kernel/config/gpio-sim");
        if !root.exists() {
            let _ = std::process::Command::new("modprobe")
                .arg("gpio-sim")
                .status();
        }
        if !root.exists() {
            return Err(
                "no /sys/kernel/config/gpio-sim (kernel without gpio-sim, or configfs not mounted)"
                    .into(),
            );
        }
        let config = root.join(unique("coinpulse"));
        let made = (|| -> std::io::Result<(String, String)> {
            std::fs::create_dir(&config)?;
            std::fs::create_dir(config.join("gpio-bank0"))?;
            std::fs::write(config.join("gpio-bank0/num_lines"), "4")?;
            std::fs::write(config.join("live"), "1")?;
            Ok((
                std::fs::read_to_string(config.join("dev_name"))?
                    .trim()
                    .to_owned(),
                std::fs::read_to_string(config.join("gpio-bank0/chip_name"))?
                    .trim()
                    .to_owned(),
            ))
        })();
        let sim = |dev: &str, chip: &str| GpioSim {
            chip: std::path::Path::new("/dev").join(chip),
            sysfs: std::path::Path::new("/sys/devices/platform")
                .join(dev)
                .join(chip),
            config: config.clone(),
        };
        match made {
            Ok((dev, chip)) => Ok(sim(&dev, &chip)),
            Err(e) => {
                drop(sim("", ""));
                Err(format!("cannot configure gpio-sim: {e}"))
            }
        }
    }

    fn pull(&self, line: u32, up: bool) {
        let what = if up { "pull-up" } else { "pull-down" };
        std::fs::write(self.sysfs.join(format!("sim_gpio{line}/pull")), what).unwrap();
    }
}

/// The level the simulated chip's line is driven to (sysfs `sim_gpioN/value`).
fn sim_line_value(sysfs: &std::path::Path, line: u32) -> Option<bool> {
    let v = std::fs::read_to_string(sysfs.join(format!("sim_gpio{line}/value"))).ok()?;
    Some(v.trim() == "1")
}

impl Drop for GpioSim {
    fn drop(&mut self) {
        let _ = std::fs::write(self.config.join("live"), "0");
        let _ = std::fs::remove_dir(self.config.join("gpio-bank0"));
        let _ = std::fs::remove_dir(&self.config);
    }
}

#[tokio::test]
async fn gpio_coin_signal_has_the_configured_pulses_on_a_simulated_chip() {
    let sim = match GpioSim::new() {
        Ok(sim) => sim,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cabinet.toml");
    std::fs::write(
        &config,
        format!(
            "machine_id = \"cab-1\"\nbroker = \"tcp://127.0.0.1:9\"\nstate_dir = \"{}\"\n\
             [[output]]\nkind = \"gpio\"\nchip = \"{}\"\nline = 0\npulses_per_credit = 2\npulse_ms = 60\ngap_ms = 60\n",
            dir.path().display(),
            sim.chip.display()
        ),
    )
    .unwrap();
    // The line's level, sampled every millisecond while the agent drives it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        let sysfs = sim.sysfs.clone();
        std::thread::spawn(move || {
            let mut edges = Vec::new();
            let mut last = false;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let now = sim_line_value(&sysfs, 0).unwrap_or(false);
                if now != last {
                    edges.push((std::time::Instant::now(), now));
                    last = now;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            edges
        })
    };
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(agent_binary())
            .env("COINPULSE_CABINET_CONFIG", &config)
            .args(["test-output", "--credits", "2"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let edges = sampler.join().unwrap();
    assert_eq!(
        edges.len(),
        8,
        "2 credits × 2 pulses, each on and off: {edges:?}"
    );
    for pulse in edges.chunks(2) {
        assert_eq!((pulse[0].1, pulse[1].1), (true, false));
        let width = pulse[1].0 - pulse[0].0;
        assert!(
            width >= Duration::from_millis(55) && width < Duration::from_millis(150),
            "pulse width {width:?}"
        );
    }
}

#[tokio::test]
async fn a_gpio_edge_on_a_simulated_chip_is_one_game_over() {
    let sim = match GpioSim::new() {
        Ok(sim) => sim,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    sim.pull(1, false);
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let id = unique("cab");
    let secret = app.register(&id, 100, "usd").await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}[[gameover]]\nkind = \"gpio\"\nchip = \"{}\"\nline = 1\nedge = \"rising\"\ndebounce_ms = 50\n",
        recording_output(dir.path()),
        sim.chip.display()
    );
    let _agent = AgentProcess::start(&app, &id, &secret, &extra).await;
    // A bouncing switch: three edges within the debounce period are one game over.
    for up in [true, false, true] {
        sim.pull(1, up);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    app.eventually("one play from the input", || async {
        app.plays(&id).await.len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.plays(&id).await.len(), 1);
}

#[tokio::test]
async fn keypress_output_types_the_coin_key_through_uinput() {
    if !std::path::Path::new("/dev/uinput").exists() {
        println!("skipped: no /dev/uinput (load the uinput module)");
        return;
    }
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let id = unique("cab");
    let secret = app.register(&id, 100, "usd").await;
    let extra = "[[output]]\nkind = \"keypress\"\nkey = \"KEY_5\"\npresses_per_credit = 1\npress_ms = 40\ngap_ms = 40\n";
    let _agent = AgentProcess::start(&app, &id, &secret, extra).await;
    // The agent made its virtual keyboard at start; find it and listen.
    let mut device = None;
    for _ in 0..100 {
        device = evdev::enumerate().find(|(_, d)| d.name() == Some("coinpulse coin"));
        if device.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, device) = device.expect("the agent's virtual keyboard");
    let events = std::thread::spawn(move || {
        let mut device = device;
        let mut keys = Vec::new();
        while keys.len() < 6 {
            for ev in device.fetch_events().unwrap() {
                if ev.event_type() == evdev::EventType::KEY {
                    keys.push((std::time::Instant::now(), ev.code(), ev.value()));
                }
            }
        }
        keys
    });
    assert_eq!(app.post_webhook(&paid(&id, 300, "usd")).await.0, 200);
    let keys = tokio::task::spawn_blocking(move || events.join().unwrap())
        .await
        .unwrap();
    let five = evdev::KeyCode::KEY_5.code();
    assert!(keys.iter().all(|k| k.1 == five), "{keys:?}");
    let values: Vec<i32> = keys.iter().map(|k| k.2).collect();
    assert_eq!(
        values,
        [1, 0, 1, 0, 1, 0],
        "three presses for three credits"
    );
}
