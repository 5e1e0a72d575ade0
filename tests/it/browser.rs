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

/// chromedriver and chromium, or None (with the reason printed) where they are missing.
fn browser_binaries() -> Option<(String, String)> {
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
        return None;
    };
    Some((driver_bin, chromium))
}

/// Headless Chromium under chromedriver; `phone` emulates a phone of that size, else a
/// desktop window.
async fn browser(
    driver_bin: &str,
    chromium: &str,
    phone: Option<(u32, u32)>,
) -> (Driver, fantoccini::Client) {
    let port = free_port();
    let driver = Driver(
        Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let mut options = json!({
        "binary": chromium,
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,800", "--hide-scrollbars",
                 format!("--user-data-dir={}", tempfile::tempdir().unwrap().keep().display())],
    });
    if let Some((w, h)) = phone {
        options["mobileEmulation"] = json!({"deviceMetrics": {"width": w, "height": h, "pixelRatio": 2.0},
            "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"});
    }
    let caps = json!({ "goog:chromeOptions": options });
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
    (driver, client.expect("webdriver session"))
}

#[tokio::test]
async fn player_pays_on_a_phone_and_sees_credits_sent() {
    let Some((driver_bin, chromium)) = browser_binaries() else {
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

    let (driver, c) = browser(&driver_bin, &chromium, Some((390, 844))).await;
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

/// Types `text` into the input named `name`.
async fn fill(c: &fantoccini::Client, name: &str, text: &str) {
    let el = c
        .find(Locator::Css(&format!("[name=\"{name}\"]")))
        .await
        .unwrap_or_else(|_| panic!("field {name}"));
    el.clear().await.unwrap();
    el.send_keys(text).await.unwrap();
}

async fn submit(c: &fantoccini::Client, form: &str) {
    c.find(Locator::Css(&format!("{form} button[type=submit]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// The text of the first `css` match. Live regions are swapped while the page is open, so
/// an element found may be gone a moment later: then look again.
async fn text_of(c: &fantoccini::Client, css: &str) -> String {
    let mut last = None;
    for _ in 0..5 {
        let el = c.find(Locator::Css(css)).await.unwrap();
        match el.text().await {
            Ok(t) => return t,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{css}: {last:?}");
}

/// An owner's first hour in a real browser: setup, sign-in, a cabinet with bundles, its
/// sticker sheet printed to PDF, and a payment appearing on the overview by itself.
#[tokio::test]
async fn owner_sets_up_registers_prints_and_watches_a_payment_arrive() {
    let Some((driver_bin, chromium)) = browser_binaries() else {
        return;
    };
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let (driver, c) = browser(&driver_bin, &chromium, None).await;
    let shots = Screenshots::new();

    // First run: the setup link from the log.
    c.goto(app.setup_url.as_deref().unwrap()).await.unwrap();
    shots.save("setup-desktop.png", &c.screenshot().await.unwrap());
    fill(&c, "email", OWNER_EMAIL).await;
    fill(&c, "password", OWNER_PASSWORD).await;
    fill(&c, "confirm", OWNER_PASSWORD).await;
    submit(&c, "form").await;
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(".checklist"))
        .await
        .unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/admin");

    // Sign out and in again.
    submit(&c, "form[action='/admin/logout']").await;
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("input[name=password]"))
        .await
        .unwrap();
    shots.save("login-desktop.png", &c.screenshot().await.unwrap());
    fill(&c, "email", OWNER_EMAIL).await;
    fill(&c, "password", OWNER_PASSWORD).await;
    submit(&c, "form").await;
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(".checklist"))
        .await
        .unwrap();

    // Register a cabinet with bundles.
    let id = unique("cab");
    c.goto(&format!("{}/admin/cabinets/new", app.base))
        .await
        .unwrap();
    fill(&c, "machine_id", &id).await;
    fill(&c, "name", "Cabinet 4 — Street Fighter II").await;
    fill(&c, "game", "Street Fighter II").await;
    fill(&c, "location", "By the window").await;
    fill(&c, "price", "1.00").await;
    fill(&c, "bundles", "3:2.50:Best value\n6:4.50").await;
    shots.save("cabinet-new-desktop.png", &c.screenshot().await.unwrap());
    submit(&c, "main form").await;
    let secret = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(".secret pre code"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut cab = app.connect_cabinet(&id, &secret, true).await;

    // The sticker sheet, printed to PDF on A4.
    c.goto(&format!(
        "{}/admin/stickers?cabinet={id}&size=70&paper=a4",
        app.base
    ))
    .await
    .unwrap();
    let sticker = text_of(&c, ".sticker").await;
    assert!(sticker.to_lowercase().contains("scan to play"), "{sticker}");
    assert!(sticker.contains("3 plays $2.50"), "{sticker}");
    assert!(sticker.contains(&format!("/p/{id}")), "{sticker}");
    shots.save("stickers-desktop.png", &c.screenshot().await.unwrap());
    let pdf = c
        .print(
            fantoccini::wd::PrintConfiguration::builder()
                .size(fantoccini::wd::PrintSize::A4)
                .background(true)
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(pdf.starts_with(b"%PDF"), "a PDF");
    shots.save("stickers-a4.pdf", &pdf);
    if let Some(png) = pdf_to_png(&pdf) {
        shots.save("stickers-a4-print.png", &png);
    }
    // Printing (only printing) ticked the checklist's sticker item.
    c.goto(&format!("{}/admin/settings", app.base))
        .await
        .unwrap();
    let done = c.find_all(Locator::Css(".checks li.ok")).await.unwrap();
    let mut ticked = Vec::new();
    for li in done {
        ticked.push(li.text().await.unwrap());
    }
    assert!(
        ticked.iter().any(|t| t.contains("First sticker printed")),
        "printing marks the sticker printed: {ticked:?}"
    );

    // A payment arrives while the overview is open: it shows up without a reload.
    c.goto(&format!("{}/admin", app.base)).await.unwrap();
    c.execute("window.__notReloaded = true;", vec![])
        .await
        .unwrap();
    assert!(text_of(&c, "#recent-table")
        .await
        .contains("No payments yet"));
    app.post_webhook(&paid(&id, 300, "usd")).await;
    assert_eq!(cab.expect_credit().await.credits, 3);
    let mut recent = String::new();
    for _ in 0..100 {
        recent = text_of(&c, "#recent-table").await;
        if recent.contains("$3.00") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recent.contains("$3.00"), "the payment appeared: {recent}");
    let same_page = c
        .execute("return window.__notReloaded === true;", vec![])
        .await
        .unwrap();
    assert_eq!(same_page, json!(true), "without reloading");

    // A payment for nobody, for the review page's picture.
    app.post_webhook(&paid("no-such-cabinet", 500, "usd")).await;
    let payment = app.payments(&id).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Every main page at desktop and phone width.
    let pages = [
        ("overview", "/admin".to_owned()),
        ("cabinets", "/admin/cabinets".to_owned()),
        ("cabinet", format!("/admin/cabinets/{id}")),
        ("payments", "/admin/payments".to_owned()),
        ("payment", format!("/admin/payments/{payment}")),
        ("review", "/admin/review".to_owned()),
        ("plays", "/admin/plays".to_owned()),
        ("stickers", format!("/admin/stickers?cabinet={id}&size=70")),
        ("audit", "/admin/audit".to_owned()),
        ("settings", "/admin/settings".to_owned()),
    ];
    for (width, height, suffix) in [(1280, 800, "desktop"), (390, 844, "phone")] {
        c.set_window_size(width, height).await.unwrap();
        for (name, path) in &pages {
            c.goto(&format!("{}{path}", app.base)).await.unwrap();
            let h1 = text_of(&c, "h1").await;
            assert!(!h1.is_empty(), "{path} has a heading");
            // Nothing wider than the screen on a phone.
            let overflow = c
                .execute(
                    "return document.documentElement.scrollWidth > window.innerWidth + 1;",
                    vec![],
                )
                .await
                .unwrap();
            if suffix == "phone" {
                assert_eq!(overflow, json!(false), "{path} fits a phone");
            }
            shots.save(
                &format!("admin-{name}-{suffix}.png"),
                &c.screenshot().await.unwrap(),
            );
        }
    }
    c.close().await.unwrap();
    drop(driver);
    shots.publish();
}

/// The first page of a PDF as PNG (poppler's pdftoppm), when it is installed.
fn pdf_to_png(pdf: &[u8]) -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().ok()?;
    let input = dir.path().join("sheet.pdf");
    std::fs::write(&input, pdf).ok()?;
    let out = dir.path().join("sheet");
    let ok = Command::new("pdftoppm")
        .args(["-png", "-r", "60", "-singlefile"])
        .arg(&input)
        .arg(&out)
        .status()
        .ok()?
        .success();
    if !ok {
        return None;
    }
    std::fs::read(dir.path().join("sheet.png")).ok()
}

/// A player at a phone's size: tops up through (fake) Stripe Checkout, comes back, plays
/// from the balance with one tap, and sees the wallet page.
#[tokio::test]
async fn player_tops_up_once_and_plays_with_one_tap() {
    let Some((driver_bin, chromium)) = browser_binaries() else {
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
    let (driver, c) = browser(&driver_bin, &chromium, Some((390, 844))).await;
    let shots = Screenshots::new();

    c.goto(&format!("{}/p/{}", app.base, cab.machine_id))
        .await
        .unwrap();
    c.find(Locator::Css(".topup-hint a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("form[action='/w/topup']"))
        .await
        .unwrap();
    shots.save("wallet-topup-phone.png", &c.screenshot().await.unwrap());
    c.find(Locator::XPath("//label[contains(., 'bonus')]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    submit(&c, "form[action='/w/topup']").await;
    let pay = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Id("pay"))
        .await
        .unwrap();
    assert!(c
        .current_url()
        .await
        .unwrap()
        .as_str()
        .starts_with(&fake.base));
    pay.click().await.unwrap();
    // Back on the wallet page, which waits for Stripe's confirmation by itself.
    let mut big = String::new();
    for _ in 0..100 {
        if let Ok(el) = c.find(Locator::Css(".big")).await {
            big = el.text().await.unwrap_or_default();
            if big == "$22.00" {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(big, "$22.00", "topped up $20.00 with its bonus");
    shots.save("wallet-topped-up-phone.png", &c.screenshot().await.unwrap());

    // Back to the machine: one tap.
    c.find(Locator::Css("a.button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let play = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("button.play-now"))
        .await
        .unwrap();
    assert!(play.text().await.unwrap().contains("from your balance"));
    shots.save(
        "pay-page-with-balance-phone.png",
        &c.screenshot().await.unwrap(),
    );
    play.click().await.unwrap();
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Id("now"))
        .await
        .unwrap();
    let pulse = cab.expect_credit().await;
    assert_eq!((pulse.credits, pulse.source.as_str()), (1, "wallet"));
    let mut text = String::new();
    for _ in 0..100 {
        text = text_of(&c, "#now").await;
        if text.contains("enjoy") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(text.contains("enjoy"), "thanks page says {text:?}");
    shots.save("wallet-played-phone.png", &c.screenshot().await.unwrap());

    c.goto(&format!("{}/w", app.base)).await.unwrap();
    assert_eq!(text_of(&c, ".big").await, "$21.00");
    assert!(text_of(&c, ".ledger").await.contains("Played"));
    shots.save("wallet-page-phone.png", &c.screenshot().await.unwrap());
    c.close().await.unwrap();
    drop(driver);
    shots.publish();
}
