//! Player wallets: top-ups through the fake Stripe credited exactly once whatever events
//! arrive, plays paid from the balance with one tap (one debit, one signed pulse), and a
//! balance that never goes below zero. After each test the ledger sums to every balance.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

/// Starts a top-up of package `package` from the wallet page; returns the Checkout
/// Session's id (the player is now on the fake Stripe's page).
async fn start_topup(phone: &mut Phone, from: &str, package: usize) -> String {
    let page = phone.get(&format!("/w?from={from}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let answer = phone
        .post(
            "/w/topup",
            &[
                ("csrf", field(&page.body, "csrf")),
                ("nonce", field(&page.body, "nonce")),
                ("currency", field(&page.body, "currency")),
                ("from", from.to_owned()),
                ("package", package.to_string()),
            ],
        )
        .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let to = answer.location.unwrap();
    assert!(
        phone.cookies.contains_key("cp_wallet"),
        "the wallet is bound to the phone"
    );
    to.rsplit('/').next().unwrap().to_owned()
}

/// The balance on the wallet page, e.g. "$22.00".
async fn balance(phone: &mut Phone) -> String {
    let page = phone.get("/w").await;
    let at = page.body.find("class=\"big\">").expect("a balance") + "class=\"big\">".len();
    page.body[at..at + page.body[at..].find('<').unwrap()].to_owned()
}

/// Runs `coinpulse wallet check` on the test's database: every balance equals its ledger.
fn ledger_agrees(db: &TestDb) {
    let (code, printed) = coinpulse_tool(&db.url, &["wallet", "check"], &[]);
    assert_eq!(code, 0, "{printed}");
}

/// A top-up and its events as Stripe would send them for session `id`.
fn topup_event(t: &PayTest, kind: &str, id: &str) -> serde_json::Value {
    let mut s = t.fake.session(id);
    s["status"] = json!("complete");
    s["payment_status"] = json!("paid");
    s["payment_intent"] = json!(format!("pi_{}", &id[3..]));
    session_event(kind, &unique("evt"), s)
}

#[tokio::test]
async fn a_top_up_is_credited_once_whatever_events_arrive() {
    let t = pay_app(|_| {}).await;
    let cab = t.app.cabinet(100, "usd").await;
    let mut phone = Phone::new(&t.app);
    let id = start_topup(&mut phone, &cab.machine_id, 1).await;

    // Completed twice at the same moment, the async success too, then an expiry.
    let completed = topup_event(&t, "checkout.session.completed", &id);
    let (a, b) = tokio::join!(
        t.app.post_webhook(&completed),
        t.app.post_webhook(&completed)
    );
    assert_eq!((a.0, b.0), (200, 200));
    let again = topup_event(&t, "checkout.session.completed", &id);
    let succeeded = topup_event(&t, "checkout.session.async_payment_succeeded", &id);
    let (c, d) = tokio::join!(t.app.post_webhook(&again), t.app.post_webhook(&succeeded));
    assert_eq!((c.0, d.0), (200, 200));
    let outcomes = [&a.1, &b.1, &c.1, &d.1]
        .iter()
        .filter(|v| v["outcome"] == "topped_up")
        .count();
    assert_eq!(outcomes, 1, "{a:?} {b:?} {c:?} {d:?}");
    t.app
        .post_webhook(&topup_event(&t, "checkout.session.expired", &id))
        .await;
    // The package was pay $20.00, get $22.00.
    assert_eq!(balance(&mut phone).await, "$22.00");
    let page = phone.get(&format!("/w?topup={id}")).await;
    assert!(page.body.contains("Top-up received"), "{}", page.body);
    assert!(page.body.contains("+$20.00") && page.body.contains("+$2.00"));
    ledger_agrees(&t._db);
}

#[tokio::test]
async fn a_top_up_credits_what_was_stored_not_what_the_metadata_says() {
    let t = pay_app(|_| {}).await;
    let cab = t.app.cabinet(100, "usd").await;
    let mut phone = Phone::new(&t.app);
    let id = start_topup(&mut phone, &cab.machine_id, 0).await;
    let (status, body) = t
        .fake
        .complete(&id, |s| {
            s["metadata"]["wallet_id"] = json!("someone-else");
            s["client_reference_id"] = json!("someone-else");
        })
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "topped_up");
    assert_eq!(balance(&mut phone).await, "$10.00");

    // Paid less than the package (an edited session): nothing credited.
    let mut other = Phone::new(&t.app);
    let id = start_topup(&mut other, &cab.machine_id, 0).await;
    let (_, body) = t
        .fake
        .complete(&id, |s| s["amount_total"] = json!(100))
        .await;
    assert_eq!(body["outcome"], "review", "{body}");
    assert_eq!(balance(&mut other).await, "$0.00");
    ledger_agrees(&t._db);
}

/// A phone with a topped-up wallet ($10.00) and a connected $1.00 cabinet.
async fn funded(t: &PayTest) -> (Phone, Cabinet) {
    let cab = t.app.cabinet(100, "usd").await;
    let mut phone = Phone::new(&t.app);
    let id = start_topup(&mut phone, &cab.machine_id, 0).await;
    let (_, body) = t.fake.complete(&id, |_| {}).await;
    assert_eq!(body["outcome"], "topped_up");
    (phone, cab)
}

/// The pay page's "Play now" form fields for bundle `bundle`.
async fn play_form(
    phone: &mut Phone,
    machine_id: &str,
    bundle: usize,
) -> Vec<(&'static str, String)> {
    let page = phone.get(&format!("/p/{machine_id}")).await;
    assert!(page.body.contains("Play now"), "{}", page.body);
    vec![
        ("csrf", field(&page.body, "csrf")),
        ("nonce", field(&page.body, "nonce")),
        ("bundle", bundle.to_string()),
    ]
}

#[tokio::test]
async fn one_tap_plays_from_the_balance_once_even_when_tapped_twice() {
    let t = pay_app(|_| {}).await;
    let (mut phone, mut cab) = funded(&t).await;
    let page = phone.get(&format!("/p/{}", cab.machine_id)).await;
    assert!(
        page.body
            .contains("Play now — 1 play $1.00 from your balance"),
        "{}",
        page.body
    );
    assert!(page.body.contains("($9.00 left)"));

    let form = play_form(&mut phone, &cab.machine_id, 0).await;
    let path = format!("/p/{}/wallet", cab.machine_id);
    let mut twin = phone.twin();
    let (a, b) = tokio::join!(phone.post(&path, &form), twin.post(&path, &form));
    assert_eq!((a.status, b.status), (303, 303));
    assert_eq!(a.location, b.location, "both taps land on the same play");
    let thanks = a.location.unwrap();
    assert!(thanks.contains("/thanks?pulse="));

    let pulse = cab.expect_credit().await;
    assert_eq!(pulse.credits, 1);
    assert_eq!(pulse.source.as_str(), "wallet");
    cab.expect_no_credit(2).await;
    assert_eq!(balance(&mut phone).await, "$9.00");

    // The thanks page follows the play like a card payment's.
    let mut stage = serde_json::Value::Null;
    for _ in 0..100 {
        let status = thanks.replace("/thanks?", "/status?");
        stage = t
            .app
            .http
            .get(format!("{}{status}", t.app.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if stage["step"] == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stage["step"], 3, "{stage}");
    let page = phone.get(&thanks).await;
    assert_eq!(page.status, 200);
    let wallet = phone.get("/w").await;
    assert!(
        wallet.body.contains("Played: 1 credit(s) on"),
        "{}",
        wallet.body
    );
    ledger_agrees(&t._db);
}

#[tokio::test]
async fn two_phones_on_one_wallet_cannot_spend_more_than_it_holds() {
    let t = pay_app(|_| {}).await;
    let (mut phone, mut cab) = funded(&t).await;
    // Two bundles of $6.00 each against a $10.00 balance, tapped at once on two phones.
    let (status, _) = t
        .app
        .api(
            reqwest::Method::PUT,
            &format!("/cabinets/{}/bundles", cab.machine_id),
            Some(json!({"bundles": [{"credits": 6, "price_minor": 600}]})),
        )
        .await;
    assert_eq!(status, 200);
    let mut other = phone.twin();
    let a_form = play_form(&mut phone, &cab.machine_id, 0).await;
    let b_form = play_form(&mut other, &cab.machine_id, 0).await;
    assert_ne!(a_form[1].1, b_form[1].1, "two page loads, two tokens");
    let path = format!("/p/{}/wallet", cab.machine_id);
    let (a, b) = tokio::join!(phone.post(&path, &a_form), other.post(&path, &b_form));
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [303, 402], "exactly one succeeds");
    assert_eq!(cab.expect_credit().await.credits, 6);
    cab.expect_no_credit(2).await;
    assert_eq!(balance(&mut phone).await, "$4.00");
    ledger_agrees(&t._db);
}

#[tokio::test]
async fn a_disabled_or_offline_cabinet_takes_nothing_from_a_wallet() {
    let t = pay_app(|o| o.offline_after = Some(0)).await;
    let (mut phone, cab) = funded(&t).await;
    let form = play_form(&mut phone, &cab.machine_id, 0).await;
    let path = format!("/p/{}/wallet", cab.machine_id);

    let (status, _) = t
        .app
        .api(
            reqwest::Method::PATCH,
            &format!("/cabinets/{}", cab.machine_id),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 200);
    let answer = phone.post(&path, &form).await;
    assert_eq!(answer.status, 200);
    assert!(answer.body.contains("unavailable"), "{}", answer.body);
    t.app
        .api(
            reqwest::Method::PATCH,
            &format!("/cabinets/{}", cab.machine_id),
            Some(json!({"enabled": true})),
        )
        .await;

    // Offline: the cabinet disconnects (announcing it, as coinpulse cabinets do).
    let mut cab = cab;
    cab.sim.take().unwrap().disconnect().await;
    let machine_id = cab.machine_id.clone();
    t.app
        .eventually("the pay page says offline", || async {
            phone
                .twin()
                .get(&format!("/p/{machine_id}"))
                .await
                .body
                .contains("offline")
        })
        .await;
    let answer = phone.post(&path, &form).await;
    assert!(answer.body.contains("offline"), "{}", answer.body);
    assert_eq!(balance(&mut phone).await, "$10.00");
    ledger_agrees(&t._db);
}

#[tokio::test]
async fn a_refunded_top_up_takes_back_only_what_is_unspent() {
    let t = pay_app(|_| {}).await;
    let (mut phone, mut cab) = funded(&t).await;
    // Spend $3.00 of the $10.00, then Stripe refunds the whole top-up.
    for _ in 0..3 {
        let form = play_form(&mut phone, &cab.machine_id, 0).await;
        let answer = phone
            .post(&format!("/p/{}/wallet", cab.machine_id), &form)
            .await;
        assert_eq!(answer.status, 303);
        cab.expect_credit().await;
    }
    assert_eq!(balance(&mut phone).await, "$7.00");
    // The fake completed the top-up's session with PaymentIntent pi_<session id>.
    let session_id = t.fake.last_session_id();
    let event = charge_refunded(&session_id[3..], 1000, 1000, true);
    let (status, body) = t.app.post_webhook(&event).await;
    assert_eq!(status, 200);
    assert_eq!(body["outcome"], "refunded", "{body}");
    // The same refund again changes nothing.
    let again = charge_refunded(&session_id[3..], 1000, 1000, true);
    assert_eq!(t.app.post_webhook(&again).await.1["outcome"], "duplicate");
    assert_eq!(
        balance(&mut phone).await,
        "$0.00",
        "the unspent $7.00 is taken back"
    );
    let page = phone.get("/w").await;
    assert!(
        page.body.contains("Refund") && page.body.contains("−$7.00"),
        "{}",
        page.body
    );
    ledger_agrees(&t._db);
}

#[tokio::test]
async fn the_owner_sets_packages_adjusts_a_balance_and_refunds_the_unspent_part() {
    let t = pay_app(|_| {}).await;
    let (mut phone, mut cab) = funded(&t).await;
    let form = play_form(&mut phone, &cab.machine_id, 0).await;
    phone
        .post(&format!("/p/{}/wallet", cab.machine_id), &form)
        .await;
    cab.expect_credit().await;
    let session_id = t.fake.last_session_id();
    t.fake
        .add_charge(&format!("pi_{}", &session_id[3..]), 1000, "usd");

    let mut owner = t.app.owner().await;
    let page = owner.get("/admin/wallets").await;
    assert!(page.body.contains("$9.00"), "outstanding: {}", page.body);
    assert!(page.body.contains("Fees saved"));
    let wallet_id = phone.cookies["cp_wallet"]
        .split('.')
        .next()
        .unwrap()
        .to_owned();
    assert!(page.body.contains(&wallet_id));

    // Packages: what the wallet page then offers.
    let page = owner
        .post(
            "/admin/wallets/packages",
            &[
                ("currency", "usd"),
                ("packages", "5.00:5.00\n50.00:60.00:Big spender"),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let w = phone.get("/w").await;
    assert!(
        w.body.contains("Big spender") && w.body.contains("$60.00"),
        "{}",
        w.body
    );
    let bad = owner
        .post(
            "/admin/wallets/packages",
            &[("currency", "usd"), ("packages", "10.00:5.00")],
        )
        .await;
    assert_eq!(bad.status, 422);

    // An adjustment, with its reason, in the ledger and the audit log.
    owner.get(&format!("/admin/wallets/{wallet_id}")).await;
    owner
        .post(
            &format!("/admin/wallets/{wallet_id}/adjust"),
            &[
                ("direction", "add"),
                ("amount", "1.50"),
                ("reason", "coin jam"),
            ],
        )
        .await;
    assert_eq!(balance(&mut phone).await, "$10.50");
    let taken = owner
        .post(
            &format!("/admin/wallets/{wallet_id}/adjust"),
            &[
                ("direction", "take"),
                ("amount", "99.00"),
                ("reason", "too much"),
            ],
        )
        .await;
    assert!(
        taken.body.contains("cannot go below zero"),
        "{}",
        taken.body
    );
    let typo = owner
        .post(
            &format!("/admin/wallets/{wallet_id}/adjust"),
            &[
                ("direction", "add"),
                ("amount", "100000.00"),
                ("reason", "meant 10.00"),
            ],
        )
        .await;
    assert!(typo.body.contains("at most $500.00"), "{}", typo.body);
    assert_eq!(balance(&mut phone).await, "$10.50");
    assert!(owner
        .get("/admin/audit")
        .await
        .body
        .contains("wallet.adjust"));

    // Staff may not.
    let mut staff = t
        .app
        .add_user(&mut owner, "staff@arcade.test", "staff")
        .await;
    staff.get(&format!("/admin/wallets/{wallet_id}")).await;
    let refused = staff
        .post(
            &format!("/admin/wallets/{wallet_id}/adjust"),
            &[("direction", "add"), ("amount", "5.00"), ("reason", "x")],
        )
        .await;
    assert_eq!(refused.status, 403);

    // Refund: at most the unspent part ($10.00 paid, $10.50 held → $10.00).
    owner.get(&format!("/admin/wallets/{wallet_id}")).await;
    let path = format!("/admin/wallets/{wallet_id}/topups/{session_id}/refund");
    let over = owner
        .post(&path, &[("amount", "10.50"), ("confirm", "yes")])
        .await;
    assert!(over.body.contains("at most"), "{}", over.body);
    // Stripe refuses once: nothing is refunded and the balance stays.
    t.fake
        .fail_next(402, "invalid_request_error", "Charge already disputed");
    let failed = owner
        .post(&path, &[("amount", "4.00"), ("confirm", "yes")])
        .await;
    assert!(
        failed.body.contains("Stripe did not refund"),
        "{}",
        failed.body
    );
    assert_eq!(balance(&mut phone).await, "$10.50");
    owner
        .post(&path, &[("amount", "4.00"), ("confirm", "yes")])
        .await;
    // Off the balance before Stripe's charge.refunded, so it cannot be spent meanwhile.
    assert_eq!(balance(&mut phone).await, "$6.50");
    let sent = t.fake.requests("/v1/refunds");
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].params["amount"], "400");
    // Stripe's event for that refund finds nothing new to take.
    let event = charge_refunded(&session_id[3..], 1000, 400, false);
    assert_eq!(t.app.post_webhook(&event).await.1["outcome"], "duplicate");
    assert_eq!(balance(&mut phone).await, "$6.50");
    ledger_agrees(&t._db);
}

#[tokio::test]
async fn an_emailed_link_brings_the_wallet_to_another_phone_once() {
    let Some(smtp) = SmtpSink::start().await else {
        return;
    };
    let url = smtp.url.clone();
    let t = pay_app(move |o| o.smtp_url = Some(url)).await;
    let (mut phone, _cab) = funded(&t).await;

    // The first phone puts its email on the wallet.
    let page = phone.get("/w").await;
    let form = |body: &str, email: &str| {
        vec![
            ("csrf", field(body, "csrf")),
            ("nonce", field(body, "nonce")),
            ("email", email.to_owned()),
        ]
    };
    let answer = phone
        .post("/w/email", &form(&page.body, "Player@Example.com"))
        .await;
    assert!(answer.body.contains("Check your email"), "{}", answer.body);
    assert!(
        !phone.get("/w").await.body.contains("player@example.com"),
        "not before it is confirmed"
    );
    let verify = smtp.link("/w/signin/", 1).await;
    // Opening the link only asks; confirming uses it.
    let page = phone.get(&verify).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Confirm your email"), "{}", page.body);
    let confirmed = phone
        .post(
            &verify[verify.find("/w/").unwrap()..],
            &[
                ("csrf", field(&page.body, "csrf")),
                ("nonce", field(&page.body, "nonce")),
            ],
        )
        .await;
    assert_eq!(confirmed.status, 303);
    assert!(phone.get("/w").await.body.contains("player@example.com"));

    // A new phone asks for a link; an unknown address gets the same answer and no email.
    let mut new_phone = Phone::new(&t.app);
    let page = new_phone.get("/w").await;
    let unknown = new_phone
        .post("/w/signin", &form(&page.body, "nobody@example.com"))
        .await;
    assert!(
        unknown.body.contains("If a wallet uses"),
        "{}",
        unknown.body
    );
    let page = new_phone.get("/w").await;
    let asked = new_phone
        .post("/w/signin", &form(&page.body, "player@example.com"))
        .await;
    assert!(asked.body.contains("If a wallet uses"), "{}", asked.body);
    let link = smtp.link("/w/signin/", 2).await;
    assert!(!smtp.received().contains("nobody@example.com"));
    assert!(link.starts_with(&t.app.base), "{link}");
    let path = link[link.find("/w/").unwrap()..].to_owned();

    let page = new_phone.get(&path).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Use this wallet here"), "{}", page.body);
    assert!(
        !new_phone.cookies.contains_key("cp_wallet"),
        "opening the link changed nothing"
    );
    let fields = [
        ("csrf", field(&page.body, "csrf")),
        ("nonce", field(&page.body, "nonce")),
    ];
    let used = new_phone.post(&path, &fields).await;
    assert_eq!(used.status, 303);
    assert_eq!(balance(&mut new_phone).await, "$10.00", "the same wallet");
    // Once only.
    let mut third = Phone::new(&t.app);
    assert_eq!(third.get(&path).await.status, 410);
    assert_eq!(new_phone.post(&path, &fields).await.status, 410);

    // Rate-limited per address.
    let mut limited = false;
    for _ in 0..6 {
        let page = third.get("/w").await;
        let answer = third
            .post("/w/signin", &form(&page.body, "player@example.com"))
            .await;
        if answer.status == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "sign-in links are rate-limited");
    ledger_agrees(&t._db);
}

#[tokio::test]
async fn top_up_packages_are_set_through_the_api() {
    let t = pay_app(|_| {}).await;
    let cab = t.app.cabinet(100, "usd").await;
    let body = t.app.get("/topup-packages/usd").await;
    assert_eq!(body["default"], true);
    assert_eq!(body["packages"][1]["credit_minor"], 2200);
    let (status, body) = t
        .app
        .api(
            reqwest::Method::PUT,
            "/topup-packages/usd",
            Some(json!({"packages": [{"pay_minor": 1500, "credit_minor": 1800, "label": "Weekend"}]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = t
        .app
        .api(
            reqwest::Method::PUT,
            "/topup-packages/usd",
            Some(json!({"packages": [{"pay_minor": 1500, "credit_minor": 1000}]})),
        )
        .await;
    assert_eq!(status, 422, "a package never credits less than it costs");
    let mut phone = Phone::new(&t.app);
    let page = phone.get(&format!("/w?from={}", cab.machine_id)).await;
    assert!(
        page.body.contains("Weekend") && page.body.contains("$18.00"),
        "{}",
        page.body
    );
    let id = start_topup(&mut phone, &cab.machine_id, 0).await;
    let (_, body) = t.fake.complete(&id, |_| {}).await;
    assert_eq!(body["outcome"], "topped_up");
    assert_eq!(balance(&mut phone).await, "$18.00");
    let sessions = t.fake.requests("/v1/checkout/sessions");
    assert_eq!(
        sessions.last().unwrap().params["line_items[0][price_data][unit_amount]"],
        "1500"
    );
    ledger_agrees(&t._db);
}

/// Starts a top-up of an amount the player types ("Other amount"); the answer as it is.
async fn start_typed_topup(phone: &mut Phone, from: &str, amount: &str) -> Answer {
    let page = phone.get(&format!("/w?from={from}")).await;
    phone
        .post(
            "/w/topup",
            &[
                ("csrf", field(&page.body, "csrf")),
                ("nonce", field(&page.body, "nonce")),
                ("currency", field(&page.body, "currency")),
                ("from", from.to_owned()),
                ("package", "other".to_owned()),
                ("amount", amount.to_owned()),
            ],
        )
        .await
}

#[tokio::test]
async fn top_ups_stay_within_the_owners_limits() {
    let t = pay_app(|_| {}).await;
    let cab = t.app.cabinet(100, "usd").await;
    let (status, body) = t
        .app
        .api(
            reqwest::Method::PUT,
            "/topup-packages/usd",
            Some(json!({
                "packages": [{"pay_minor": 2000, "credit_minor": 2200, "label": "Bonus"}],
                "min_topup_minor": 500, "max_topup_minor": 5000, "max_balance_minor": 6000,
            })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let got = t.app.get("/topup-packages/usd").await;
    assert_eq!(
        (
            &got["min_topup_minor"],
            &got["max_topup_minor"],
            &got["max_balance_minor"]
        ),
        (&json!(500), &json!(5000), &json!(6000))
    );
    // A package outside the range, and a range upside down, are refused.
    for bad in [
        json!({"packages": [{"pay_minor": 6000, "credit_minor": 6000}]}),
        json!({"packages": [], "min_topup_minor": 5000, "max_topup_minor": 500}),
    ] {
        let (status, body) = t
            .app
            .api(reqwest::Method::PUT, "/topup-packages/usd", Some(bad))
            .await;
        assert_eq!(status, 422, "{body}");
    }

    let mut phone = Phone::new(&t.app);
    let page = phone.get(&format!("/w?from={}", cab.machine_id)).await;
    assert!(page.body.contains("$5.00 to $50.00"), "{}", page.body);
    assert!(page.body.contains("up to $60.00"), "{}", page.body);
    // A typed amount in range pays and credits exactly that.
    let answer = start_typed_topup(&mut phone, &cab.machine_id, "15").await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let sessions = t.fake.requests("/v1/checkout/sessions");
    assert_eq!(
        sessions.last().unwrap().params["line_items[0][price_data][unit_amount]"],
        "1500"
    );
    let (_, body) = t.fake.complete(&t.fake.last_session_id(), |_| {}).await;
    assert_eq!(body["outcome"], "topped_up");
    assert_eq!(balance(&mut phone).await, "$15.00");
    // The package's price typed gets the package's bonus.
    let answer = start_typed_topup(&mut phone, &cab.machine_id, "20.00").await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let (_, body) = t.fake.complete(&t.fake.last_session_id(), |_| {}).await;
    assert_eq!(body["outcome"], "topped_up");
    assert_eq!(balance(&mut phone).await, "$37.00");

    let before = t.fake.requests("/v1/checkout/sessions").len();
    for (typed, why) in [
        ("4.99", "below the smallest top-up"),
        ("50.01", "above the largest"),
        ("lots", "not an amount"),
        ("25", "the balance would pass $60.00"),
    ] {
        // The same wallet on a fresh page cookie each time: one phone's form limit is
        // not what this is about.
        let mut same_wallet = phone.twin();
        same_wallet.cookies.retain(|k, _| k == "cp_wallet");
        let answer = start_typed_topup(&mut same_wallet, &cab.machine_id, typed).await;
        assert_eq!(answer.status, 422, "{typed}: {why}: {}", answer.body);
    }
    let mut same_wallet = phone.twin();
    same_wallet.cookies.retain(|k, _| k == "cp_wallet");
    let refused = start_typed_topup(&mut same_wallet, &cab.machine_id, "25").await;
    assert!(refused.body.contains("up to $60.00"), "{}", refused.body);
    assert_eq!(
        t.fake.requests("/v1/checkout/sessions").len(),
        before,
        "nothing refused reached Stripe"
    );
    ledger_agrees(&t._db);
}

/// Puts `email` on the phone's wallet through the emailed confirmation link (the `n`th
/// link the sink has received).
async fn confirm_email(phone: &mut Phone, smtp: &SmtpSink, email: &str, n: usize) {
    let page = phone.get("/w").await;
    let answer = phone
        .post(
            "/w/email",
            &[
                ("csrf", field(&page.body, "csrf")),
                ("nonce", field(&page.body, "nonce")),
                ("email", email.to_owned()),
            ],
        )
        .await;
    assert!(answer.body.contains("Check your email"), "{}", answer.body);
    let link = smtp.link("/w/signin/", n).await;
    let path = link[link.find("/w/").unwrap()..].to_owned();
    let page = phone.get(&path).await;
    let confirmed = phone
        .post(
            &path,
            &[
                ("csrf", field(&page.body, "csrf")),
                ("nonce", field(&page.body, "nonce")),
            ],
        )
        .await;
    assert_eq!(confirmed.status, 303, "{}", confirmed.body);
}

#[tokio::test]
async fn a_wallet_with_an_email_tops_up_as_a_stripe_customer() {
    let Some(smtp) = SmtpSink::start().await else {
        return;
    };
    let url = smtp.url.clone();
    let t = pay_app(move |o| o.smtp_url = Some(url)).await;
    let (mut phone, cab) = funded(&t).await;
    assert!(
        t.fake.requests("/v1/customers").is_empty(),
        "no email, no customer"
    );
    assert!(!t.fake.requests("/v1/checkout/sessions")[0]
        .params
        .contains_key("customer"));
    confirm_email(&mut phone, &smtp, "player@example.com", 1).await;

    for _ in 0..2 {
        start_topup(&mut phone, &cab.machine_id, 0).await;
    }
    let customers = t.fake.requests("/v1/customers");
    assert_eq!(customers.len(), 1, "one customer, remembered");
    assert_eq!(customers[0].params["email"], "player@example.com");
    let sessions = t.fake.requests("/v1/checkout/sessions");
    let customer_of = |i: usize| sessions[i].params.get("customer").cloned();
    assert!(customer_of(1).is_some_and(|c| c.starts_with("cus_")));
    assert_eq!(customer_of(1), customer_of(2));
    ledger_agrees(&t._db);
}

/// Runs `coinpulse wallet expire …` on the test's database; (success, stdout + stderr).
fn expire(db: &TestDb, smtp: &str, args: &[&str]) -> (bool, String) {
    let args: Vec<&str> = ["wallet", "expire"].iter().chain(args).copied().collect();
    let (code, printed) = coinpulse_tool(&db.url, &args, &[("SMTP_URL", smtp)]);
    (code == 0, printed)
}

#[tokio::test]
async fn unused_balances_expire_only_when_the_owner_says_so_after_a_reminder() {
    let Some(smtp) = SmtpSink::start().await else {
        return;
    };
    let url = smtp.url.clone();
    let t = pay_app(move |o| o.smtp_url = Some(url)).await;
    let (mut phone, _cab) = funded(&t).await;
    confirm_email(&mut phone, &smtp, "player@example.com", 1).await;
    let day = |days: i64| {
        (chrono::Utc::now() + chrono::Duration::days(days))
            .format("%Y-%m-%d")
            .to_string()
    };

    // Off by default: nothing expires, however late.
    let (ok, out) = expire(&t._db, &smtp.url, &["--as-of", &day(3650)]);
    assert!(!ok && out.contains("never expire"), "{out}");

    let mut owner = t.app.owner().await;
    let page = owner
        .post(
            "/admin/wallets/packages",
            &[
                ("currency", "usd"),
                ("packages", "10.00:10.00\n20.00:22.00"),
                ("expiry_months", "6"),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(phone
        .get("/w")
        .await
        .body
        .contains("expires 6 months after its last use"));

    // Not yet due: nothing happens.
    let (ok, out) = expire(&t._db, &smtp.url, &["--as-of", &day(30)]);
    assert!(
        ok && out.contains("0 balance(s) expired, 0 reminder(s)"),
        "{out}"
    );
    // Within two weeks of expiry: one reminder, then no second one.
    let soon = day(6 * 30 - 3);
    let (ok, out) = expire(&t._db, &smtp.url, &["--as-of", &soon, "--dry-run"]);
    assert!(ok && out.contains("would remind"), "{out}");
    assert!(
        !smtp.received().contains("expires on"),
        "a dry run sends nothing"
    );
    let (ok, out) = expire(&t._db, &smtp.url, &["--as-of", &soon]);
    assert!(ok && out.contains("1 reminder(s)"), "{out}");
    for _ in 0..100 {
        if smtp.received().contains("expires on") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mail = smtp.received();
    assert!(
        mail.contains("Your arcade balance of $10.00") && mail.contains("/w"),
        "{mail}"
    );
    let (_, out) = expire(&t._db, &smtp.url, &["--as-of", &soon]);
    assert!(out.contains("0 reminder(s)"), "reminded once: {out}");

    // Past it: the whole balance goes, once, as a ledger row the player can see.
    let late = day(7 * 31);
    let (ok, out) = expire(&t._db, &smtp.url, &["--as-of", &late]);
    assert!(ok && out.contains("expired $10.00"), "{out}");
    let (_, out) = expire(&t._db, &smtp.url, &["--as-of", &late]);
    assert!(out.contains("0 balance(s) expired"), "{out}");
    assert_eq!(balance(&mut phone).await, "$0.00");
    assert!(phone.get("/w").await.body.contains("Expired balance"));
    ledger_agrees(&t._db);
}

#[tokio::test]
async fn a_refund_reported_before_its_top_up_completed_is_taken_when_it_does() {
    let t = pay_app(|_| {}).await;
    let cab = t.app.cabinet(100, "usd").await;
    let mut phone = Phone::new(&t.app);
    let id = start_topup(&mut phone, &cab.machine_id, 1).await;
    // Stripe does not promise order: the refund of $5.00 of the $20.00 comes first.
    let event = charge_refunded(&id[3..], 2000, 500, false);
    let (status, body) = t.app.post_webhook(&event).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "unmatched", "kept for the owner meanwhile");
    let (_, body) = t.fake.complete(&id, |_| {}).await;
    assert_eq!(body["outcome"], "topped_up");
    // $20.00 → $22.00 with the bonus; $5.00 refunded takes $5.50 of it.
    assert_eq!(balance(&mut phone).await, "$16.50");
    ledger_agrees(&t._db);
}
