//! A player's whole journey in headless Chromium at a phone's size: pay page → bundle →
//! (fake) Stripe Checkout → thanks page that updates itself. Screenshots are taken into a
//! temporary directory; to refresh the ones in docs/screenshots/, run
//! `COINPULSE_SCREENSHOTS=docs/screenshots cargo test --test it player_pays_on_a_phone`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use reqwest::Method;
use serde_json::json;

use crate::support::*;

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find(cmd: &str) -> Option<String> {
    ["/usr/bin/", "/usr/local/bin/", "/usr/lib/chromium/"]
        .iter()
        .map(|d| format!("{d}{cmd}"))
        .find(|p| std::path::Path::new(p).exists())
}

/// Screenshots of one run, in a temporary directory; copied to $COINPULSE_SCREENSHOTS
/// (relative to the package root) only when that is set and the test got to the end.
struct Screenshots(tempfile::TempDir);

impl Screenshots {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    fn save(&self, name: &str, png: &[u8]) {
        std::fs::write(self.0.path().join(name), png).unwrap();
    }

    fn publish(self) {
        let Some(to) = std::env::var_os("COINPULSE_SCREENSHOTS").filter(|d| !d.is_empty()) else {
            return;
        };
        let to = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(to);
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(self.0.path()).unwrap() {
            let from = entry.unwrap().path();
            std::fs::copy(&from, to.join(from.file_name().unwrap())).unwrap();
        }
        eprintln!("screenshots copied to {}", to.display());
    }
}

#[tokio::test]
async fn player_pays_on_a_phone_and_sees_credits_sent() {
    let (Some(driver_bin), Some(chromium)) = (find("chromedriver"), find("chromium")) else {
        // .ci/setup installs both; say so loudly rather than pass silently elsewhere.
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium and chromedriver are required in CI"
        );
        assert!(
            std::env::var_os("COINPULSE_SCREENSHOTS").is_none(),
            "screenshots need chromium and chromedriver"
        );
        eprintln!("SKIPPED: chromium/chromedriver not installed (run .ci/setup)");
        return;
    };
    let t = pay_app(|_| {}).await;
    let (app, fake) = (&t.app, &t.fake);
    let mut cab = app.cabinet(100, "usd").await;
    app.api(
        Method::PATCH,
        &format!("/cabinets/{}", cab.machine_id),
        Some(
            json!({"name": "Cabinet 4", "game": "Street Fighter II", "location": "By the window"}),
        ),
    )
    .await;
    let (status, _) = app
        .api(
            Method::PUT,
            &format!("/cabinets/{}/bundles", cab.machine_id),
            Some(json!({"bundles": [
                {"credits": 1, "price_minor": 100},
                {"credits": 3, "price_minor": 250, "label": "3 plays — best value"},
                {"credits": 6, "price_minor": 450}
            ]})),
        )
        .await;
    assert_eq!(status, 200);

    let port = free_port();
    let driver = Driver(
        Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let caps = json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     format!("--user-data-dir={}", tempfile::tempdir().unwrap().keep().display())],
            "mobileEmulation": {"deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 2.0},
                                "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"}
        }
    });
    let mut client = None;
    for _ in 0..100 {
        match ClientBuilder::native()
            .capabilities(caps.as_object().unwrap().clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => {
                client = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let c = client.expect("webdriver session");
    let shots = Screenshots::new();

    c.goto(&format!("{}/p/{}", app.base, cab.machine_id))
        .await
        .unwrap();
    let heading = c
        .find(Locator::Css("h1"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(heading, "Cabinet 4");
    shots.save("pay-page-phone.png", &c.screenshot().await.unwrap());

    c.find(Locator::XPath("//label[contains(., 'best value')]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let pay = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Id("pay"))
        .await
        .unwrap();
    assert!(
        c.current_url()
            .await
            .unwrap()
            .as_str()
            .starts_with(&fake.base),
        "on the (fake) Stripe page"
    );
    let session = fake
        .requests("/v1/checkout/sessions")
        .last()
        .unwrap()
        .params
        .clone();
    assert_eq!(session["line_items[0][price_data][unit_amount]"], "250");
    shots.save("stripe-checkout-fake.png", &c.screenshot().await.unwrap());

    pay.click().await.unwrap();
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Id("now"))
        .await
        .unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/thanks"));
    assert_eq!(cab.expect_credit().await.credits, 3);
    // The page updates itself (JS polling) until the cabinet confirms.
    let mut text = String::new();
    for _ in 0..100 {
        text = c
            .find(Locator::Id("now"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("enjoy") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        text.contains("Credits sent") || text.contains("enjoy"),
        "thanks page says {text:?}"
    );
    let done = c
        .find_all(Locator::Css("#steps li.done"))
        .await
        .unwrap()
        .len();
    assert!(
        done >= 2,
        "payment received and credits sent are ticked ({done})"
    );
    shots.save("thanks-phone.png", &c.screenshot().await.unwrap());
    c.close().await.unwrap();
    drop(driver);
    shots.publish();
}
