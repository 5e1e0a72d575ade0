//! The owner's dashboard through HTTP as a browser without JavaScript uses it: setup,
//! sign-in and throttling, CSRF, roles, cabinets and prices, free credits, refunds, the
//! payment search and CSV export, and the review queue.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// The id in the first `/admin/payments/<id>` link of a page.
fn first_payment_link(body: &str) -> Option<String> {
    let at = body.find("href=\"/admin/payments/")? + "href=\"/admin/payments/".len();
    let rest = &body[at..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// The MQTT secret shown once on a cabinet's page.
fn shown_secret(body: &str) -> Option<String> {
    let at = body.find("MQTT secret — copy it now")?;
    let rest = &body[at..];
    let start = rest.find("<pre><code>")? + "<pre><code>".len();
    Some(rest[start..start + rest[start..].find('<')?].to_owned())
}

#[tokio::test]
async fn the_setup_link_creates_the_owner_once_and_a_wrong_token_nothing() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let home = app.text("/").await;
    assert!(
        home.contains("/setup?token="),
        "the home page says where the link is"
    );

    let mut d = Dash::new(&app);
    let page = d.get("/setup?token=not-the-token").await;
    assert_eq!(page.status, 403);
    assert!(page.body.contains("not valid"));
    // A forged form with a wrong token creates nothing either.
    d.get("/admin/login").await;
    let page = d
        .post(
            "/setup",
            &[
                ("token", "not-the-token"),
                ("email", "mallory@evil.test"),
                ("password", OWNER_PASSWORD),
                ("confirm", OWNER_PASSWORD),
            ],
        )
        .await;
    assert_eq!(page.status, 403);
    let page = Dash::new(&app)
        .login("mallory@evil.test", OWNER_PASSWORD)
        .await;
    assert_eq!(page.status, 401);

    let mut owner = app.owner().await;
    let overview = owner.get("/admin").await;
    assert_eq!(overview.status, 200);
    assert!(overview.body.contains(OWNER_EMAIL));
    assert!(overview.body.contains("Finish setting up"));

    // The link is used up.
    let url = app.setup_url.clone().unwrap();
    let mut again = Dash::new(&app);
    let page = again.get(&url[url.find("/setup").unwrap()..]).await;
    assert!(matches!(page.status, 403 | 410), "{}", page.status);
    assert!(!app.text("/").await.contains("/setup?token="));
}

#[tokio::test]
async fn sign_in_refuses_wrong_passwords_then_throttles() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let mut owner = app.owner().await;

    let mut d = Dash::new(&app);
    let page = d.login(OWNER_EMAIL, "wrong-password-123").await;
    assert_eq!(page.status, 401);
    assert!(page.body.contains("Wrong email or password"));
    let page = d.login("nobody@arcade.test", "wrong-password-123").await;
    assert_eq!(page.status, 401);
    for _ in 0..4 {
        d.login(OWNER_EMAIL, "wrong-password-123").await;
    }
    // Five failures on the account: even the right password waits now.
    let page = d.login(OWNER_EMAIL, OWNER_PASSWORD).await;
    assert_eq!(page.status, 429, "{}", page.body);
    assert!(
        page.body.contains("Too many attempts. Try again in"),
        "{}",
        page.body
    );
    assert!(page.body.contains("minute"));
    assert_ne!(page.path, "/admin");

    let audit = owner.get("/admin/audit").await;
    assert!(audit.body.contains("login.failed"));
    assert!(audit.body.contains("login.throttled"));
    assert!(audit.body.contains("127.0.0.1"));
}

#[tokio::test]
async fn forms_without_the_right_csrf_token_are_refused_and_change_nothing() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let mut cab = app.cabinet(100, "usd").await;
    let mut owner = app.owner().await;
    owner
        .get(&format!("/admin/cabinets/{}", cab.machine_id))
        .await;
    let path = format!("/admin/cabinets/{}/credit", cab.machine_id);
    let fields = vec![("credits", "2".to_owned()), ("reason", "test".to_owned())];
    let page = owner.post_raw(&path, &fields).await;
    assert_eq!(page.status, 403);
    let mut wrong = fields.clone();
    wrong.push(("csrf_token", "0".repeat(64)));
    assert_eq!(owner.post_raw(&path, &wrong).await.status, 403);
    cab.expect_no_credit(2).await;

    // The same form with the page's token works: a signed operator pulse.
    let form = owner
        .get(&format!("/admin/cabinets/{}", cab.machine_id))
        .await;
    let nonce = field(&form.body, "nonce");
    let fields = [
        ("credits", "2"),
        ("reason", "coin jam"),
        ("nonce", nonce.as_str()),
    ];
    let page = owner.post(&path, &fields).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("2 free credits sent"), "{}", page.body);
    let pulse = cab.expect_credit().await;
    assert_eq!(pulse.credits, 2);
    assert_eq!(pulse.source.as_str(), "operator");
    // The same form sent again (a double click) sends nothing more.
    let page = owner.post(&path, &fields).await;
    assert!(page.body.contains("already sent"), "{}", page.body);
    cab.expect_no_credit(2).await;
    let audit = owner.get("/admin/audit").await;
    assert!(audit.body.contains("cabinet.free_credits"));
    assert!(audit.body.contains("coin jam"));
}

#[tokio::test]
async fn staff_can_send_credits_but_not_change_prices_refund_or_manage_users() {
    let t = pay_app(|_| {}).await;
    let app = &t.app;
    let mut cab = app.cabinet(100, "usd").await;
    let sid = app.pay_and_credit(&mut cab, 100).await;
    let mut owner = app.owner().await;
    let mut staff = app.add_user(&mut owner, "staff@arcade.test", "staff").await;
    let id = cab.machine_id.clone();

    assert_eq!(
        staff
            .get(&format!("/admin/cabinets/{id}/edit"))
            .await
            .status,
        403
    );
    staff.get(&format!("/admin/cabinets/{id}")).await;
    let page = staff
        .post(
            &format!("/admin/cabinets/{id}/edit"),
            &[
                ("name", "x"),
                ("currency", "usd"),
                ("price", "0.10"),
                ("bundles", ""),
            ],
        )
        .await;
    assert_eq!(page.status, 403);
    assert_eq!(
        app.get(&format!("/cabinets/{id}")).await["price_minor"],
        100
    );

    let list = staff.get(&format!("/admin/payments?q={sid}")).await;
    let payment = first_payment_link(&list.body).expect("staff sees payments");
    let page = staff
        .post(
            &format!("/admin/payments/{payment}/refund"),
            &[("amount", "1.00"), ("confirm", "yes")],
        )
        .await;
    assert_eq!(page.status, 403);
    assert!(t.fake.requests("/v1/refunds").is_empty());
    assert_eq!(staff.get("/admin/users").await.status, 403);
    assert_eq!(
        staff
            .post("/admin/users", &[("email", "x@y.z"), ("role", "owner")])
            .await
            .status,
        403
    );
    let page = staff
        .post(&format!("/admin/cabinets/{id}/rotate"), &[])
        .await;
    assert_eq!(page.status, 403);

    staff.get(&format!("/admin/cabinets/{id}")).await;
    let page = staff
        .post(
            &format!("/admin/cabinets/{id}/credit"),
            &[("credits", "1"), ("reason", "staff test")],
        )
        .await;
    assert_eq!(page.status, 200);
    assert_eq!(cab.expect_credit().await.credits, 1);
}

#[tokio::test]
async fn a_cabinet_registered_and_repriced_in_the_dashboard_shows_its_prices_to_players() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let mut owner = app.owner().await;
    let id = unique("cab");

    owner.get("/admin/cabinets/new").await;
    let page = owner
        .post(
            "/admin/cabinets/new",
            &[
                ("machine_id", &id),
                ("name", "Pac-Man by the door"),
                ("game", "Pac-Man"),
                ("location", "Front"),
                ("currency", "usd"),
                ("price", "one dollar"),
                ("bundles", "3:2.50\nnonsense"),
            ],
        )
        .await;
    assert_eq!(page.status, 422);
    assert!(
        page.body.contains("field-error"),
        "errors beside the fields"
    );
    assert!(
        page.body.contains("value=\"Pac-Man by the door\""),
        "the form keeps what was typed"
    );
    assert!(page.body.contains("nonsense"));

    let page = owner
        .post(
            "/admin/cabinets/new",
            &[
                ("machine_id", &id),
                ("name", "Pac-Man by the door"),
                ("game", "Pac-Man"),
                ("location", "Front"),
                ("currency", "usd"),
                ("price", "1.00"),
                ("bundles", "3:2.50"),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.path, format!("/admin/cabinets/{id}"));
    let secret = shown_secret(&page.body).expect("the secret is shown once");
    assert!(
        page.body.contains(&app.topic_prefix),
        "topic names for the installer"
    );
    assert!(
        page.body.contains("agent-config"),
        "the cabinet agent's config"
    );
    // Shown once only.
    let again = owner.get(&format!("/admin/cabinets/{id}")).await;
    assert!(shown_secret(&again.body).is_none());
    assert!(!again.body.contains(&secret));

    let _cab = app.connect_cabinet(&id, &secret, true).await;
    let pay = app.text(&format!("/p/{id}")).await;
    assert!(pay.contains("$2.50") && pay.contains("3 plays"), "{pay}");

    owner.get(&format!("/admin/cabinets/{id}/edit")).await;
    let page = owner
        .post(
            &format!("/admin/cabinets/{id}/edit"),
            &[
                ("name", "Pac-Man by the door"),
                ("game", "Pac-Man"),
                ("location", "Front"),
                ("currency", "usd"),
                ("price", "2.00"),
                ("bundles", "1:2.00\n3:5.00:Three plays"),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let pay = app.text(&format!("/p/{id}")).await;
    assert!(pay.contains("$2.00") && pay.contains("$5.00"), "{pay}");
    assert!(!pay.contains("$2.50"), "{pay}");
    let audit = owner.get("/admin/audit").await;
    assert!(audit.body.contains("cabinet.update"));
    assert!(audit.body.contains("price"));
}

#[tokio::test]
async fn a_refund_from_the_dashboard_goes_through_stripe_and_its_webhook_marks_the_payment() {
    let t = pay_app(|_| {}).await;
    let app = &t.app;
    let mut cab = app.cabinet(100, "usd").await;
    let sid = app.pay_and_credit(&mut cab, 300).await;
    t.fake.add_charge(&format!("pi_{sid}"), 300, "usd");
    let mut owner = app.owner().await;
    let list = owner.get(&format!("/admin/payments?q={sid}")).await;
    let id = first_payment_link(&list.body).unwrap();
    let page = owner.get(&format!("/admin/payments/{id}")).await;
    assert!(page.body.contains("Refund"));

    // Without the confirmation nothing is sent.
    owner
        .post(
            &format!("/admin/payments/{id}/refund"),
            &[("amount", "1.00")],
        )
        .await;
    assert!(t.fake.requests("/v1/refunds").is_empty());

    let page = owner
        .post(
            &format!("/admin/payments/{id}/refund"),
            &[("amount", "1.00"), ("confirm", "yes")],
        )
        .await;
    assert!(page.body.contains("sent to Stripe"), "{}", page.body);
    let sent = t.fake.requests("/v1/refunds");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].params["payment_intent"], format!("pi_{sid}"));
    assert_eq!(sent[0].params["amount"], "100");
    assert!(sent[0].idempotency_key.is_some());

    let mut refunded = Value::Null;
    for _ in 0..100 {
        refunded = app.get(&format!("/payments/{id}")).await;
        if refunded["refunded_minor"] == 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(refunded["refunded_minor"], 100, "{refunded}");
    assert_eq!(refunded["status"], "partially_refunded");
    let page = owner.get(&format!("/admin/payments/{id}")).await;
    assert!(page.body.contains("partly refunded"));
    let audit = owner.get("/admin/audit").await;
    assert!(audit.body.contains("payment.refund"));
}

#[tokio::test]
async fn payments_are_found_by_every_id_they_carry_and_exported_as_csv() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let mut cab = app.cabinet(100, "usd").await;
    let event_id = unique("evt");
    let sid = unique("cs_test");
    app.post_webhook(&session_event(
        "checkout.session.completed",
        &event_id,
        session(&sid, &cab.machine_id, 200, "usd", "paid"),
    ))
    .await;
    cab.expect_credit().await;
    let other = app.pay_and_credit(&mut cab, 100).await;
    app.post_webhook(&charge_refunded(&sid, 200, 200, true))
        .await;

    let mut owner = app.owner().await;
    let page = owner.get(&format!("/admin/payments?q={sid}")).await;
    let id = first_payment_link(&page.body).unwrap();
    for q in [
        id.clone(),
        sid.clone(),
        format!("pi_{sid}"),
        event_id.clone(),
        "ch_1".to_owned(),
    ] {
        let page = owner.get(&format!("/admin/payments?q={q}")).await;
        assert_eq!(page.status, 200);
        assert!(
            page.body.contains(&format!("/admin/payments/{id}")),
            "search {q}"
        );
        assert!(
            !page.body.contains(&format!("pi_{other}")),
            "search {q} finds only it"
        );
    }
    let page = owner.get("/admin/payments?q=PLAYER%40example.com").await;
    assert_eq!(
        page.body.matches("href=\"/admin/payments/").count(),
        2,
        "by email"
    );
    let page = owner.get("/admin/payments?q=nothing-like-this").await;
    assert!(page.body.contains("No payments match"));

    let page = owner.get("/admin/payments?status=refunded").await;
    assert!(page.body.contains(&format!("/admin/payments/{id}")));
    assert_eq!(page.body.matches("href=\"/admin/payments/").count(), 1);

    let mut d = owner;
    let res = d.get("/admin/payments.csv").await;
    assert_eq!(res.status, 200);
    assert!(res.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert!(res.headers["content-disposition"]
        .to_str()
        .unwrap()
        .contains("attachment"));
    let lines: Vec<&str> = res.body.lines().collect();
    assert!(lines[0].starts_with("id,created_at,machine_id,status,amount,currency"));
    assert_eq!(lines.len(), 3, "{}", res.body);
    assert!(res.body.contains(&sid) && res.body.contains(&other));
    assert!(res.body.contains(",refunded,2.00,USD,200,"), "{}", res.body);
    // "delivered" is the cabinet's ack, which travels back on its own.
    app.eventually("the cabinet acked both pulses", || async {
        app.pulses(&cab.machine_id)
            .await
            .iter()
            .all(|p| !p["acked_at"].is_null())
    })
    .await;
    let res = d.get("/admin/payments.csv?status=delivered").await;
    let lines: Vec<&str> = res.body.lines().collect();
    assert_eq!(lines.len(), 2, "{}", res.body);
    assert!(lines[1].contains(&other));
}

#[tokio::test]
async fn assigning_a_payment_in_review_sends_its_credits_exactly_once() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let mut cab = app.cabinet(100, "usd").await;
    // A payment for a cabinet that does not exist goes to review, with nothing sent.
    let sid = unique("cs_test");
    app.post_webhook(&session_event(
        "checkout.session.completed",
        &unique("evt"),
        session(&sid, "no-such-cabinet", 300, "usd", "paid"),
    ))
    .await;
    let mut owner = app.owner().await;
    let review = owner.get("/admin/review").await;
    let id = first_payment_link(&review.body).expect("the payment is in the queue");
    let overview = owner.get("/admin").await;
    assert!(overview.body.contains(&format!("/admin/payments/{id}")));

    // Two tabs press "assign" at once, then one presses it again.
    let mut other = Dash::new(&app);
    other.login(OWNER_EMAIL, OWNER_PASSWORD).await;
    owner.get(&format!("/admin/payments/{id}")).await;
    other.get(&format!("/admin/payments/{id}")).await;
    let path = format!("/admin/payments/{id}/assign");
    let fields = [
        ("machine_id", cab.machine_id.as_str()),
        ("credits", "3"),
        ("note", "player showed receipt"),
    ];
    let (a, b) = tokio::join!(owner.post(&path, &fields), other.post(&path, &fields));
    assert_eq!((a.status, b.status), (200, 200));
    let again = owner.post(&path, &fields).await;
    assert!(again.body.contains("no longer in review"), "{}", again.body);

    let pulse = cab.expect_credit().await;
    assert_eq!(pulse.credits, 3);
    cab.expect_no_credit(2).await;
    let pulses = app.pulses(&cab.machine_id).await;
    assert_eq!(pulses.len(), 1, "{pulses:?}");
    assert_eq!(pulses[0]["payment_id"], id.as_str());
    let payment = app.get(&format!("/payments/{id}")).await;
    assert_eq!(payment["status"], "credited");
    assert_eq!(payment["machine_id"], cab.machine_id.as_str());
    assert!(owner
        .get("/admin/review")
        .await
        .body
        .contains("Nothing to review"));
    let audit = owner.get("/admin/audit").await;
    assert_eq!(audit.body.matches("review.assign").count(), 1);
}

#[tokio::test]
async fn pages_carry_security_headers_and_the_session_cookie_is_locked_down() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let res = app.fetch("/admin/login").await;
    let h = res.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"));
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(h.contains_key("referrer-policy"));
    assert!(h.contains_key("permissions-policy"));
    let cookie = h["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with("cp_session="));
    assert!(cookie.contains("HttpOnly"));
    assert!(cookie.contains("SameSite=Lax"));
    assert!(!cookie.contains("Secure"), "plain http here: {cookie}");
    let body = res.text().await.unwrap();
    assert!(!body.contains("<script>"), "no inline script");
    // The player's pages too.
    let res = app.fetch("/p/nothing").await;
    assert!(res.headers().contains_key("content-security-policy"));
    // Signed out, the dashboard sends you to sign in.
    let mut d = Dash::new(&app);
    assert_eq!(d.get("/admin/payments").await.path, "/admin/login");
}

#[tokio::test]
async fn changing_the_password_signs_out_every_other_session() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let mut first = app.owner().await;
    let mut second = Dash::new(&app);
    assert_eq!(
        second.login(OWNER_EMAIL, OWNER_PASSWORD).await.path,
        "/admin"
    );

    first.get("/admin/password").await;
    let page = first
        .post(
            "/admin/password",
            &[
                ("current", OWNER_PASSWORD),
                ("password", "password"),
                ("confirm", "password"),
            ],
        )
        .await;
    assert_eq!(page.status, 422, "a common password is refused");
    let new = "quiet-meadow-trumpet-77";
    let page = first
        .post(
            "/admin/password",
            &[
                ("current", OWNER_PASSWORD),
                ("password", new),
                ("confirm", new),
            ],
        )
        .await;
    assert_eq!(page.path, "/admin", "{}", page.body);
    assert_eq!(
        first.get("/admin").await.status,
        200,
        "this session goes on"
    );
    assert_eq!(second.get("/admin").await.path, "/admin/login");
    let mut third = Dash::new(&app);
    assert_eq!(third.login(OWNER_EMAIL, new).await.path, "/admin");

    // "Sign out everywhere" ends them all, this one too.
    first.get("/admin/password").await;
    let page = first.post("/admin/sessions/end", &[]).await;
    assert_eq!(page.path, "/admin/login");
    assert_eq!(first.get("/admin").await.path, "/admin/login");
    assert_eq!(third.get("/admin").await.path, "/admin/login");
}

#[tokio::test]
async fn the_overview_stickers_and_plays_show_what_happened() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let mut cab = app.cabinet(100, "usd").await;
    app.pay_and_credit(&mut cab, 100).await;
    let mut owner = app.owner().await;
    let page = owner.get("/admin").await;
    assert!(page.body.contains(&cab.machine_id));
    assert!(page.body.contains("<svg class=\"chart\""), "revenue chart");
    assert!(
        page.body.contains("<svg class=\"chart heat\""),
        "plays chart"
    );
    assert!(page.body.contains("$1.00"), "money as people read it");
    assert!(
        page.body
            .contains("Players' phones cannot reach this server"),
        "localhost warning"
    );
    assert!(page.body.contains("First sticker printed"));

    let sheet = owner
        .get(&format!(
            "/admin/stickers?cabinet={}&size=50",
            cab.machine_id
        ))
        .await;
    assert_eq!(sheet.status, 200);
    assert!(sheet.body.contains("class=\"sticker s50\""));
    assert!(sheet.body.contains("Scan to play"));
    assert!(sheet.body.contains(&format!("/p/{}", cab.machine_id)));
    assert!(sheet.body.contains("1 play"));
    // Opening the sheet is not printing it; the print stylesheet's image is.
    let todo = "<li class=\"todo\"><strong>First sticker printed";
    assert!(owner.get("/admin/settings").await.body.contains(todo));
    let ping = owner.get("/admin/stickers/printed.svg").await;
    assert_eq!(ping.status, 200);
    let settings = owner.get("/admin/settings").await;
    assert!(!settings.body.contains(todo));
    assert!(settings
        .body
        .contains("<li class=\"ok\"><strong>First sticker printed"));
    let qr = owner
        .get(&format!("/admin/cabinets/{}/qr.png", cab.machine_id))
        .await;
    assert_eq!(qr.status, 200);
    assert_eq!(qr.headers["content-type"], "image/png");
    let settings = owner.get("/admin/settings").await;
    assert!(settings.body.contains("/webhooks/stripe"));
    assert!(settings.body.contains("charge.refunded"));
    let plays = owner.get("/admin/plays").await;
    assert_eq!(plays.status, 200);
}

#[tokio::test]
async fn the_user_command_adds_lists_resets_and_removes_users() {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    app.owner().await;
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_coinpulse"))
            .arg("user")
            .args(args)
            .env("DATABASE_URL", &db.url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(s) = stdin {
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = run(
        &[
            "add",
            "--email",
            "Staff@Arcade.test",
            "--role",
            "staff",
            "--password-stdin",
        ],
        Some("amber-falcon-keyboard-9\n"),
    );
    assert!(ok, "{out}");
    let (ok, out) = run(
        &[
            "add",
            "--email",
            "weak@arcade.test",
            "--role",
            "staff",
            "--password-stdin",
        ],
        Some("123456\n"),
    );
    assert!(!ok && out.contains("at least"), "{out}");
    let (ok, out) = run(&["list"], None);
    assert!(
        ok && out.contains("staff@arcade.test") && out.contains(OWNER_EMAIL),
        "{out}"
    );
    assert_eq!(
        Dash::new(&app)
            .login("staff@arcade.test", "amber-falcon-keyboard-9")
            .await
            .path,
        "/admin"
    );
    let (ok, out) = run(
        &["reset-password", "staff@arcade.test", "--password-stdin"],
        Some("copper-violin-garden-3\n"),
    );
    assert!(ok, "{out}");
    assert_eq!(
        Dash::new(&app)
            .login("staff@arcade.test", "copper-violin-garden-3")
            .await
            .path,
        "/admin"
    );
    let (ok, out) = run(&["remove", OWNER_EMAIL], None);
    assert!(!ok && out.contains("only owner"), "{out}");
    let (ok, out) = run(&["remove", "--email", "staff@arcade.test"], None);
    assert!(ok, "{out}");
    assert_eq!(
        Dash::new(&app)
            .login("staff@arcade.test", "copper-violin-garden-3")
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn a_payment_refunded_while_in_review_stays_there_and_cannot_be_credited() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let mut cab = app.cabinet(100, "usd").await;
    let sid = unique("cs_test");
    app.post_webhook(&session_event(
        "checkout.session.completed",
        &unique("evt"),
        session(&sid, "no-such-cabinet", 300, "usd", "paid"),
    ))
    .await;
    let mut owner = app.owner().await;
    let id = first_payment_link(&owner.get("/admin/review").await.body).unwrap();
    let (status, _) = app
        .post_webhook(&charge_refunded(&sid, 300, 300, true))
        .await;
    assert_eq!(status, 200);
    let payment = app.get(&format!("/payments/{id}")).await;
    assert_eq!(payment["status"], "review", "{payment}");
    assert_eq!(payment["refunded_minor"], 300);

    owner.get(&format!("/admin/payments/{id}")).await;
    let page = owner
        .post(
            &format!("/admin/payments/{id}/assign"),
            &[("machine_id", cab.machine_id.as_str()), ("credits", "3")],
        )
        .await;
    assert!(page.body.contains("no longer in review"), "{}", page.body);
    cab.expect_no_credit(2).await;
    let page = owner
        .post(
            &format!("/admin/payments/{id}/dismiss"),
            &[("note", "refunded in Stripe")],
        )
        .await;
    assert!(page.body.contains("Dismissed"), "{}", page.body);
    assert_eq!(
        app.get(&format!("/payments/{id}")).await["status"],
        "dismissed"
    );
}
