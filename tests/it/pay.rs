//! The player's pay flow against the fake Stripe: pay page, checkout, completion, thanks
//! page; the seed's /create-payment-link; QR codes.

use reqwest::Method;
use serde_json::json;

use crate::support::*;

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The pay page as a phone gets it: (status, html, Cookie header value).
async fn open_page(app: &TestApp, machine_id: &str) -> (u16, String, String) {
    open_page_with_cookie(app, machine_id, "").await
}

/// Opens the pay page as a phone that already has `cookie` (empty: a new phone).
async fn open_page_with_cookie(
    app: &TestApp,
    machine_id: &str,
    cookie: &str,
) -> (u16, String, String) {
    let mut req = no_redirects().get(format!("{}/p/{machine_id}", app.base));
    if !cookie.is_empty() {
        req = req.header("Cookie", cookie);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .collect::<Vec<_>>()
        .join("; ");
    (status, res.text().await.unwrap(), cookie)
}

/// Chooses bundle `index` like the form would; returns the response (303 on success).
async fn choose(app: &TestApp, machine_id: &str, index: usize) -> reqwest::Response {
    let (_, html, cookie) = open_page(app, machine_id).await;
    submit(&app.base, machine_id, &cookie, &html, index).await
}

/// Submits the checkout form of the pay page `html` for bundle `index`, as the phone
/// holding `cookie`, to the server at `base`.
async fn submit(
    base: &str,
    machine_id: &str,
    cookie: &str,
    html: &str,
    index: usize,
) -> reqwest::Response {
    submit_as(base, machine_id, cookie, html, index, None).await
}

/// [`submit`], through a proxy that reports `forwarded_for` as X-Forwarded-For.
async fn submit_as(
    base: &str,
    machine_id: &str,
    cookie: &str,
    html: &str,
    index: usize,
    forwarded_for: Option<&str>,
) -> reqwest::Response {
    let mut req = no_redirects().post(format!("{base}/p/{machine_id}/checkout"));
    if let Some(xff) = forwarded_for {
        req = req.header("X-Forwarded-For", xff);
    }
    req.header("Cookie", cookie)
        .form(&[
            ("bundle", index.to_string()),
            ("csrf", field(html, "csrf")),
            ("nonce", field(html, "nonce")),
        ])
        .send()
        .await
        .unwrap()
}

async fn set_bundles(
    app: &TestApp,
    machine_id: &str,
    bundles: serde_json::Value,
) -> (u16, serde_json::Value) {
    app.api(
        Method::PUT,
        &format!("/cabinets/{machine_id}/bundles"),
        Some(json!({ "bundles": bundles })),
    )
    .await
}

fn session_id_from(location: &str) -> String {
    location.rsplit('/').next().unwrap().to_owned()
}

/// Chooses bundle `index` and returns the new Checkout Session's id.
async fn checkout(app: &TestApp, machine_id: &str, index: usize) -> String {
    let res = choose(app, machine_id, index).await;
    assert_eq!(res.status().as_u16(), 303);
    session_id_from(res.headers()["location"].to_str().unwrap())
}

#[tokio::test]
async fn pay_page_shows_the_cabinet_and_refuses_unpayable_machines() {
    let t = pay_app(|_| {}).await;
    let cab = t.app.cabinet(100, "usd").await;
    t.app
        .api(
            Method::PATCH,
            &format!("/cabinets/{}", cab.machine_id),
            Some(json!({"game": "Street Fighter II", "location": "Back wall"})),
        )
        .await;
    set_bundles(&t.app, &cab.machine_id, json!([{"credits": 1, "price_minor": 100}, {"credits": 3, "price_minor": 250, "label": "Best value"}])).await;
    let (status, html, cookie) = open_page(&t.app, &cab.machine_id).await;
    assert_eq!(status, 200);
    for text in [
        "Street Fighter II",
        "Back wall",
        "1 play",
        "$1.00",
        "Best value",
        "$2.50",
        "processed securely by Stripe",
        "<form method=\"post\"",
    ] {
        assert!(html.contains(text), "pay page lacks {text:?}");
    }
    assert!(!html.contains("<script"), "no JavaScript needed to pay");
    assert!(cookie.starts_with("cp_pay="));

    let (status, html, _) = open_page(&t.app, "no-such-machine").await;
    assert_eq!(status, 404);
    assert!(html.contains("Machine not found") && !html.contains("<form"));

    t.app
        .api(
            Method::PATCH,
            &format!("/cabinets/{}", cab.machine_id),
            Some(json!({"enabled": false})),
        )
        .await;
    let (_, html, _) = open_page(&t.app, &cab.machine_id).await;
    assert!(
        html.contains("not taking payments") && !html.contains("<form"),
        "disabled: {html}"
    );
}

#[tokio::test]
async fn offline_cabinet_offers_no_payment() {
    let t = pay_app(|o| o.offline_after = Some(0)).await;
    let mut cab = t.app.cabinet(100, "usd").await;
    let (_, html, _) = open_page(&t.app, &cab.machine_id).await;
    assert!(html.contains("<form"), "online cabinet can be paid");
    cab.sim.take().unwrap().disconnect().await;
    let path = format!("/cabinets/{}", cab.machine_id);
    t.app
        .eventually("offline", || async {
            t.app.get(&path).await["online"] == false
        })
        .await;
    // The pay page judges by the last time the cabinet was seen, to the second: wait for
    // offline_after (0 s) to pass rather than for a fixed time.
    t.app
        .eventually("the pay page stops offering payment", || async {
            !open_page(&t.app, &cab.machine_id).await.1.contains("<form")
        })
        .await;
    let (_, html, _) = open_page(&t.app, &cab.machine_id).await;
    assert!(
        html.contains("offline") && !html.contains("<form"),
        "offline: {html}"
    );
}

#[tokio::test]
async fn each_bundle_creates_the_right_session_and_redirects() {
    let t = pay_app(|_| {}).await;
    let cab = t.app.cabinet(100, "usd").await;
    let bundles = [(1, 100), (3, 250), (6, 450)];
    let (status, _) = set_bundles(
        &t.app,
        &cab.machine_id,
        json!(bundles
            .iter()
            .map(|(c, p)| json!({"credits": c, "price_minor": p}))
            .collect::<Vec<_>>()),
    )
    .await;
    assert_eq!(status, 200);
    for (i, (credits, price)) in bundles.iter().enumerate() {
        let res = choose(&t.app, &cab.machine_id, i).await;
        assert_eq!(res.status().as_u16(), 303);
        let location = res.headers()["location"].to_str().unwrap().to_owned();
        assert!(
            location.starts_with(&format!("{}/checkout/cs_test_", t.fake.base)),
            "{location}"
        );
        let id = session_id_from(&location);
        let req = t
            .fake
            .requests("/v1/checkout/sessions")
            .last()
            .unwrap()
            .clone();
        let p = &req.params;
        assert_eq!(p["mode"], "payment");
        assert_eq!(
            p["line_items[0][price_data][unit_amount]"],
            price.to_string()
        );
        assert_eq!(p["line_items[0][price_data][currency]"], "usd");
        assert_eq!(p["metadata[machine_id]"], cab.machine_id);
        assert_eq!(p["metadata[credits]"], credits.to_string());
        assert_eq!(p["client_reference_id"], cab.machine_id);
        assert!(p["success_url"].ends_with(&format!(
            "/p/{}/thanks?session_id={{CHECKOUT_SESSION_ID}}",
            cab.machine_id
        )));
        assert!(p["line_items[0][price_data][product_data][name]"]
            .contains(&format!("Cabinet {}", cab.machine_id)));
        assert!(
            req.idempotency_key.is_some(),
            "sent with an idempotency key"
        );
        assert_eq!(t.fake.session(&id)["amount_total"], *price);
    }
}

#[tokio::test]
async fn stripe_error_gives_a_friendly_page_and_nothing_is_stored() {
    let t = pay_app(|_| {}).await;
    let cab = t.app.cabinet(100, "usd").await;
    t.fake
        .fail_next(500, "api_error", "Something went wrong on Stripe's end.");
    let res = choose(&t.app, &cab.machine_id, 0).await;
    assert_eq!(res.status().as_u16(), 502);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("Payment couldn")
            && html.contains("not been charged")
            && html.contains("Try again"),
        "{html}"
    );
    t.fake
        .fail_next(402, "card_error", "Your card was declined.");
    assert_eq!(
        choose(&t.app, &cab.machine_id, 0).await.status().as_u16(),
        502,
        "4xx too"
    );
    assert!(t.app.payments(&cab.machine_id).await.is_empty());
    // coinpulse keeps a checkout session only under the id Stripe gave it: with none
    // created at Stripe, none can be half-created here.
    assert_eq!(
        t.fake.requests("/v1/checkout/sessions").len(),
        2,
        "both attempts reached Stripe"
    );
    assert_eq!(
        t.fake.sessions_created(),
        0,
        "no half-created checkout state"
    );
    // And the next attempt works: one session at Stripe, and coinpulse knows it.
    let id = checkout(&t.app, &cab.machine_id, 0).await;
    assert!(id.starts_with("cs_test_"));
    assert_eq!(t.fake.sessions_created(), 1);
    let status = t
        .app
        .fetch(&format!("/p/{}/status?session_id={id}", cab.machine_id))
        .await;
    assert_eq!(status.status().as_u16(), 200, "the new session is stored");

    // Stripe unreachable (network error).
    let db = TestDb::new().await;
    let app = spawn_app_with(
        &db,
        AppOptions {
            stripe_api_base: Some(format!("http://127.0.0.1:{}", free_port())),
            ..AppOptions::default()
        },
    )
    .await;
    let cab = app.cabinet(100, "usd").await;
    let res = choose(&app, &cab.machine_id, 0).await;
    assert_eq!(res.status().as_u16(), 502);
    assert!(res.text().await.unwrap().contains("not been charged"));
}

#[tokio::test]
async fn checkout_without_the_csrf_token_is_refused() {
    let t = pay_app(|_| {}).await;
    let cab = t.app.cabinet(100, "usd").await;
    let res = no_redirects()
        .post(format!("{}/p/{}/checkout", t.app.base, cab.machine_id))
        .form(&[("bundle", "0"), ("csrf", "forged"), ("nonce", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);
    assert!(
        t.fake.requests("/v1/checkout/sessions").is_empty(),
        "no session created"
    );
}

#[tokio::test]
async fn completion_sends_the_bundles_credits_and_the_thanks_page_follows() {
    let t = pay_app(|_| {}).await;
    let mut cab = t.app.cabinet(100, "usd").await;
    set_bundles(
        &t.app,
        &cab.machine_id,
        json!([{"credits": 3, "price_minor": 250}]),
    )
    .await;
    let id = checkout(&t.app, &cab.machine_id, 0).await;
    let status_url = format!("{}/p/{}/status?session_id={id}", t.app.base, cab.machine_id);
    let stage = || async {
        t.app
            .http
            .get(&status_url)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    assert_eq!(stage().await["stage"], "waiting");
    let thanks = t
        .app
        .text(&format!("/p/{}/thanks?session_id={id}", cab.machine_id))
        .await;
    assert!(thanks.contains("Waiting for confirmation from Stripe"));

    let (status, body) = t.fake.complete(&id, |_| {}).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("credited")));
    assert_eq!(
        cab.expect_credit().await.credits,
        3,
        "the bundle's credits, not amount / price"
    );
    t.app
        .eventually("confirmed", || async {
            stage().await["stage"] == "confirmed"
        })
        .await;
    let thanks = t
        .app
        .text(&format!("/p/{}/thanks?session_id={id}", cab.machine_id))
        .await;
    assert!(thanks.contains("Cabinet confirmed, enjoy!"));
}

#[tokio::test]
async fn tampered_metadata_cannot_change_credits() {
    let t = pay_app(|_| {}).await;
    let mut cab = t.app.cabinet(100, "usd").await;
    set_bundles(
        &t.app,
        &cab.machine_id,
        json!([{"credits": 2, "price_minor": 150}]),
    )
    .await;
    let id = checkout(&t.app, &cab.machine_id, 0).await;
    let (_, body) = t
        .fake
        .complete(&id, |s| s["metadata"]["credits"] = json!("50"))
        .await;
    assert_eq!(body["outcome"], "credited");
    assert_eq!(cab.expect_credit().await.credits, 2);
}

#[tokio::test]
async fn promotion_discount_is_accepted_and_other_underpayment_goes_to_review() {
    let t = pay_app(|o| o.allow_promotion_codes = true).await;
    let mut cab = t.app.cabinet(100, "usd").await;
    set_bundles(
        &t.app,
        &cab.machine_id,
        json!([{"credits": 3, "price_minor": 300}]),
    )
    .await;

    let id = checkout(&t.app, &cab.machine_id, 0).await;
    assert_eq!(
        t.fake
            .requests("/v1/checkout/sessions")
            .last()
            .unwrap()
            .params["allow_promotion_codes"],
        "true"
    );
    let (_, body) = t
        .fake
        .complete(&id, |s| {
            s["amount_total"] = json!(200);
            s["total_details"]["amount_discount"] = json!(100);
        })
        .await;
    assert_eq!(body["outcome"], "credited");
    assert_eq!(cab.expect_credit().await.credits, 3);
    let paid = t.app.payments(&cab.machine_id).await;
    assert_eq!(
        (
            paid[0]["amount_minor"].as_i64(),
            paid[0]["discount_minor"].as_i64()
        ),
        (Some(200), Some(100))
    );

    let id = checkout(&t.app, &cab.machine_id, 0).await;
    let (_, body) = t
        .fake
        .complete(&id, |s| s["amount_total"] = json!(100))
        .await;
    assert_eq!(body["outcome"], "review");
    let review = t.app.get("/payments?status=review").await["payments"][0].clone();
    assert!(review["review_reason"]
        .as_str()
        .unwrap()
        .contains("expected 300"));
    let stage: serde_json::Value = t
        .app
        .http
        .get(format!(
            "{}/p/{}/status?session_id={id}",
            t.app.base, cab.machine_id
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stage["stage"], "attention");
}

#[tokio::test]
async fn bundles_are_validated() {
    let t = pay_app(|_| {}).await;
    let cab = t.app.cabinet(100, "usd").await;
    for bad in [
        json!([{"credits": 0, "price_minor": 100}]),
        json!([{"credits": 1, "price_minor": 30}]),
        json!([{"credits": 2, "price_minor": 100}, {"credits": 2, "price_minor": 150}]),
        json!((1..=7)
            .map(|i| json!({"credits": i, "price_minor": 100 * i}))
            .collect::<Vec<_>>()),
    ] {
        let (status, body) = set_bundles(&t.app, &cab.machine_id, bad.clone()).await;
        assert_eq!(status, 422, "{bad} → {body}");
        assert!(body["error"].as_str().unwrap().starts_with("bundles:"));
    }
    let (_, body) = t
        .app
        .api(
            Method::GET,
            &format!("/cabinets/{}/bundles", cab.machine_id),
            None,
        )
        .await;
    assert_eq!(body["bundles"], json!([]));
    assert_eq!(
        body["offered"][0]["credits"], 1,
        "base price offered when no bundles"
    );
}

#[tokio::test]
async fn create_payment_link_with_and_without_price_id() {
    let t = pay_app(|_| {}).await;
    let cab = t.app.cabinet(150, "usd").await;
    let url = format!("{}/create-payment-link", t.app.base);
    let unauth = t
        .app
        .http
        .post(&url)
        .json(&json!({"machine_id": cab.machine_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status().as_u16(), 401);

    let call = |body: serde_json::Value| {
        t.app
            .http
            .post(&url)
            .bearer_auth(API_TOKEN)
            .json(&body)
            .send()
    };
    let first: serde_json::Value = call(json!({"machine_id": cab.machine_id, "quantity": 1}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        first["url"]
            .as_str()
            .unwrap()
            .starts_with("https://buy.stripe.com/"),
        "{first}"
    );
    assert_eq!(
        first["qr_svg"],
        format!("{}/api/v1/cabinets/{}/qr.svg", t.app.base, cab.machine_id)
    );
    let second: serde_json::Value = call(json!({"machine_id": cab.machine_id}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(second["url"].is_string());
    assert_eq!(
        t.fake.requests("/v1/products").len(),
        1,
        "product made once and reused"
    );
    assert_eq!(t.fake.requests("/v1/prices").len(), 1);
    let price = &t.fake.requests("/v1/prices")[0].params;
    assert_eq!(
        (price["unit_amount"].as_str(), price["currency"].as_str()),
        ("150", "usd")
    );
    let links = t.fake.requests("/v1/payment_links");
    assert_eq!(links.len(), 2);
    assert_eq!(links[0].params["metadata[machine_id]"], cab.machine_id);
    assert_eq!(
        links[0].params["payment_intent_data[metadata][machine_id]"],
        cab.machine_id
    );

    let with_price: serde_json::Value =
        call(json!({"machine_id": cab.machine_id, "quantity": 2, "price_id": "price_given"}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert!(with_price["url"].is_string());
    let last = t
        .fake
        .requests("/v1/payment_links")
        .last()
        .unwrap()
        .params
        .clone();
    assert_eq!(
        (
            last["line_items[0][price]"].as_str(),
            last["line_items[0][quantity]"].as_str()
        ),
        ("price_given", "2")
    );
    assert_eq!(
        t.fake.requests("/v1/prices").len(),
        1,
        "no new price when one is given"
    );
}

fn decode_png(bytes: &[u8]) -> String {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let (w, h) = (info.width as usize, info.height as usize);
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * w + x]);
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().unwrap().1
}

#[tokio::test]
async fn qr_codes_decode_to_the_exact_url() {
    let t = pay_app(|_| {}).await;
    let cab = t.app.cabinet(100, "usd").await;
    let png = t
        .app
        .fetch(&format!("/api/v1/cabinets/{}/qr.png", cab.machine_id))
        .await;
    assert_eq!(png.headers()["content-type"], "image/png");
    assert_eq!(
        decode_png(&png.bytes().await.unwrap()),
        format!("{}/p/{}", t.app.base, cab.machine_id)
    );
    let link = "https://buy.stripe.com/test_abc123";
    let link_qr = format!("/api/v1/cabinets/{}/qr.png?url={link}", cab.machine_id);
    // A QR of an arbitrary URL needs the API token.
    assert_eq!(t.app.fetch(&link_qr).await.status().as_u16(), 401);
    let png = t
        .app
        .http
        .get(format!("{}{link_qr}", t.app.base))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(decode_png(&png.bytes().await.unwrap()), link);
    let svg = t
        .app
        .fetch(&format!("/api/v1/cabinets/{}/qr.svg", cab.machine_id))
        .await;
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    assert!(svg.text().await.unwrap().starts_with("<?xml"));
    let missing = t
        .app
        .http
        .get(format!("{}/api/v1/cabinets/nobody/qr.png", t.app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
}

#[tokio::test]
async fn thanks_page_shows_payment_received_then_credits_sent() {
    // A broker nobody can reach: the payment is stored, but no pulse can go out yet.
    let offline = pay_app(|o| {
        o.mqtt_url = Some(format!("tcp://127.0.0.1:{}", free_port()));
        o.wait_connected = false;
    })
    .await;
    let (app, fake) = (&offline.app, &offline.fake);
    let machine_id = unique("cab");
    app.register(&machine_id, 100, "usd").await;
    // This broker reports nothing, so the owner vouches for the cabinet.
    app.always_available(&machine_id).await;
    let id = checkout(app, &machine_id, 0).await;
    fake.complete(&id, |_| {}).await;
    let thanks = app
        .text(&format!("/p/{machine_id}/thanks?session_id={id}"))
        .await;
    assert!(
        thanks.contains("id=\"now\" role=\"status\" aria-live=\"polite\">Payment received"),
        "{thanks}"
    );
    assert!(
        thanks.contains("http-equiv=\"refresh\""),
        "keeps refreshing without JS"
    );

    // With a cabinet that never acknowledges (a seed cabinet), the last stage is "sent".
    let t = pay_app(|_| {}).await;
    let machine_id = unique("cab");
    let secret = t.app.register(&machine_id, 100, "usd").await;
    let mut seed = t.app.connect_cabinet(&machine_id, &secret, false).await;
    // A seed cabinet reports no status: on an external broker only the owner can vouch.
    t.app.always_available(&machine_id).await;
    let id = checkout(&t.app, &machine_id, 0).await;
    t.fake.complete(&id, |_| {}).await;
    seed.expect_credit().await;
    let status_url = format!("{}/p/{machine_id}/status?session_id={id}", t.app.base);
    t.app
        .eventually("sent", || async {
            t.app
                .http
                .get(&status_url)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()["stage"]
                == "sent"
        })
        .await;
    let other = t
        .app
        .http
        .get(format!(
            "{}/p/someone-else/status?session_id={id}",
            t.app.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status().as_u16(),
        404,
        "a session is only visible under its own machine"
    );
}

#[tokio::test]
async fn a_double_tapped_pay_button_makes_one_session() {
    let t = pay_app(|_| {}).await;
    let cab = t.app.cabinet(100, "usd").await;
    let (_, html, cookie) = open_page(&t.app, &cab.machine_id).await;
    let form = [
        ("bundle", "0".to_string()),
        ("csrf", field(&html, "csrf")),
        ("nonce", field(&html, "nonce")),
    ];
    let mut locations = Vec::new();
    for _ in 0..2 {
        let res = no_redirects()
            .post(format!("{}/p/{}/checkout", t.app.base, cab.machine_id))
            .header("Cookie", cookie.clone())
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 303);
        locations.push(res.headers()["location"].to_str().unwrap().to_owned());
    }
    assert_eq!(locations[0], locations[1], "one session for both taps");
    // The second tap finds the session this phone already opened for this bundle.
    let sent = t.fake.requests("/v1/checkout/sessions");
    assert_eq!(sent.len(), 1);

    // A new page (new nonce) from the same phone, same bundle: still that one session.
    let (_, html, _) = open_page_with_cookie(&t.app, &cab.machine_id, &cookie).await;
    let res = submit(&t.app.base, &cab.machine_id, &cookie, &html, 0).await;
    assert_eq!(res.headers()["location"].to_str().unwrap(), locations[0]);
    assert_eq!(t.fake.requests("/v1/checkout/sessions").len(), 1);

    // A nonce the client made up is refused, even with the right cookie.
    let res = no_redirects()
        .post(format!("{}/p/{}/checkout", t.app.base, cab.machine_id))
        .header("Cookie", cookie.clone())
        .form(&[
            ("bundle", "1".to_string()),
            ("csrf", field(&html, "csrf")),
            (
                "nonce",
                format!("chosen-by-me.{}", chrono::Utc::now().timestamp()),
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);
}

#[tokio::test]
async fn checkout_is_rate_limited_per_phone() {
    let t = pay_app(|_| {}).await;
    let cab = t.app.cabinet(100, "usd").await;
    set_bundles(&t.app, &cab.machine_id, json!([{"credits": 1, "price_minor": 100}, {"credits": 2, "price_minor": 200}, {"credits": 3, "price_minor": 300}])).await;
    let (_, html, cookie) = open_page(&t.app, &cab.machine_id).await;
    let mut codes = Vec::new();
    for i in 0..8 {
        let res = submit(&t.app.base, &cab.machine_id, &cookie, &html, i % 3).await;
        codes.push(res.status().as_u16());
        if res.status().as_u16() == 429 {
            assert!(res.headers().contains_key("retry-after"));
            assert!(res.text().await.unwrap().contains("Too many"));
        }
    }
    assert!(codes[..5].iter().all(|&c| c == 303), "{codes:?}");
    assert!(codes[5..].iter().all(|&c| c == 429), "{codes:?}");
    // Another phone is not held back.
    assert_eq!(
        choose(&t.app, &cab.machine_id, 0).await.status().as_u16(),
        303
    );
}

#[tokio::test]
async fn behind_a_proxy_the_address_limit_goes_by_the_proxys_entry_not_the_clients() {
    let t = pay_app(|o| o.behind_proxy = true).await;
    let cab = t.app.cabinet(100, "usd").await;
    // Phones (a new cookie each) at one venue address: a burst of 30, then one a second.
    // Each sends its own made-up first entry, which must change nothing: keyed by those,
    // no phone would ever be held back.
    let mut passed = 0;
    let mut refused = false;
    for i in 0..90 {
        let (_, html, cookie) = open_page(&t.app, &cab.machine_id).await;
        let xff = format!("10.0.{}.{}, 198.51.100.7", i / 250, i % 250);
        let res = submit_as(&t.app.base, &cab.machine_id, &cookie, &html, 0, Some(&xff)).await;
        match res.status().as_u16() {
            303 => passed += 1,
            429 => {
                refused = true;
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        refused,
        "the venue's address is spent, whatever the clients wrote first"
    );
    assert!(passed >= 30, "a whole burst first: {passed}");
    // Another venue, through the same proxy, is not held back.
    let (_, html, cookie) = open_page(&t.app, &cab.machine_id).await;
    let res = submit_as(
        &t.app.base,
        &cab.machine_id,
        &cookie,
        &html,
        0,
        Some("198.51.100.8"),
    )
    .await;
    assert_eq!(res.status().as_u16(), 303);
}

#[tokio::test]
async fn a_phone_has_one_allowance_whichever_replica_it_reaches() {
    // Two servers on one database and one broker, as behind a load balancer.
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = start_mosquitto(dir.path(), "allow_anonymous true\n").await else {
        eprintln!("no mosquitto binary here; skipped");
        return;
    };
    let t = pay_app(|o| o.mqtt_url = Some(broker.uri.clone())).await;
    let other = spawn_app_with(
        &t._db,
        AppOptions {
            mqtt_url: Some(broker.uri.clone()),
            stripe_api_base: Some(t.fake.base.clone()),
            ..AppOptions::default()
        },
    )
    .await;
    let cab = t.app.cabinet(100, "usd").await;
    let (_, html, cookie) = open_page(&t.app, &cab.machine_id).await;
    let mut codes = Vec::new();
    for i in 0..8 {
        let base = if i % 2 == 0 { &t.app.base } else { &other.base };
        let res = submit(base, &cab.machine_id, &cookie, &html, 0).await;
        codes.push(res.status().as_u16());
    }
    assert!(codes[..5].iter().all(|&c| c == 303), "{codes:?}");
    assert!(
        codes[5..].iter().all(|&c| c == 429),
        "the second replica knows what the first allowed: {codes:?}"
    );
}
