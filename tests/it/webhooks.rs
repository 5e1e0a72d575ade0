//! Stripe webhooks: verification, idempotency, review, async payments, refunds.

use coinpulse::domain::PulseSource;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn paid_event_sends_one_signed_pulse_to_the_cabinet() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let mut cab = app.cabinet(100, "usd").await;

    let (status, body) = app.post_webhook(&paid(&cab.machine_id, 300, "usd")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "credited");

    // The simulator only reports a credit after checking the signature with its secret.
    let pulse = cab.expect_credit().await;
    assert_eq!(pulse.machine_id, cab.machine_id);
    assert_eq!(pulse.credits, 3);
    assert_eq!(pulse.source, PulseSource::Stripe);
    let payments = app.payments(&cab.machine_id).await;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0]["status"], "credited");
    assert_eq!(payments[0]["amount_minor"], 300);
    assert_eq!(payments[0]["pulse_id"], pulse.id.as_str());
    // The cabinet's ack comes back and is recorded.
    app.eventually("pulse acked", || async {
        app.pulses(&cab.machine_id).await[0]["acked_at"].is_string()
    })
    .await;
}

#[tokio::test]
async fn seed_path_add_credit_is_an_alias() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let mut cab = app.cabinet(50, "usd").await;
    let body = paid(&cab.machine_id, 100, "usd").to_string();
    let (status, _) = app.post_webhook_at("/addCredit", &body, None).await;
    assert_eq!(status, 200);
    assert_eq!(cab.expect_credit().await.credits, 2);
}

#[tokio::test]
async fn same_event_sequentially_and_twenty_times_in_parallel_credits_once() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let mut cab = app.cabinet(100, "usd").await;

    let event = paid(&cab.machine_id, 100, "usd").to_string();
    let first = app.post_webhook_at("/webhooks/stripe", &event, None).await;
    let again = app.post_webhook_at("/webhooks/stripe", &event, None).await;
    assert_eq!(first.1["outcome"], "credited");
    assert_eq!(again.0, 200);
    assert_eq!(again.1["outcome"], "duplicate");

    let burst = paid(&cab.machine_id, 200, "usd").to_string();
    let results = futures::future::join_all(
        (0..20).map(|_| app.post_webhook_at("/webhooks/stripe", &burst, None)),
    )
    .await;
    assert!(results.iter().all(|(s, _)| *s == 200));
    let credited = results
        .iter()
        .filter(|(_, b)| b["outcome"] == "credited")
        .count();
    assert_eq!(credited, 1, "exactly one of 20 parallel deliveries credits");

    // A barrier payment: pulses arrive in commit order, so anything extra would come first.
    app.post_webhook(&paid(&cab.machine_id, 700, "usd")).await;
    assert_eq!(cab.expect_credit().await.credits, 1);
    assert_eq!(cab.expect_credit().await.credits, 2);
    assert_eq!(cab.expect_credit().await.credits, 7);
    assert_eq!(app.payments(&cab.machine_id).await.len(), 3);
    assert_eq!(app.pulses(&cab.machine_id).await.len(), 3);
}

#[tokio::test]
async fn completed_and_async_succeeded_for_one_session_credit_once() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let mut cab = app.cabinet(100, "usd").await;
    let sid = unique("cs_test");
    let s = session(&sid, &cab.machine_id, 200, "usd", "paid");
    let a = app
        .post_webhook(&session_event(
            "checkout.session.completed",
            &unique("evt"),
            s.clone(),
        ))
        .await;
    let b = app
        .post_webhook(&session_event(
            "checkout.session.async_payment_succeeded",
            &unique("evt"),
            s,
        ))
        .await;
    assert_eq!(a.1["outcome"], "credited");
    assert_eq!(b.1["outcome"], "duplicate");
    assert_eq!(a.1["payment_id"], b.1["payment_id"]);

    app.post_webhook(&paid(&cab.machine_id, 500, "usd")).await;
    assert_eq!(cab.expect_credit().await.credits, 2);
    assert_eq!(cab.expect_credit().await.credits, 5);
}

#[tokio::test]
async fn unpaid_session_waits_then_async_success_credits() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let mut cab = app.cabinet(100, "usd").await;
    let sid = unique("cs_test");
    let unpaid = session(&sid, &cab.machine_id, 300, "usd", "unpaid");
    let (_, body) = app
        .post_webhook(&session_event(
            "checkout.session.completed",
            &unique("evt"),
            unpaid,
        ))
        .await;
    assert_eq!(body["outcome"], "waiting");
    let payments = app.payments(&cab.machine_id).await;
    assert_eq!(payments[0]["status"], "pending");
    assert_eq!(payments[0]["pulse_id"], serde_json::Value::Null);

    let paid_later = session(&sid, &cab.machine_id, 300, "usd", "paid");
    let (_, body) = app
        .post_webhook(&session_event(
            "checkout.session.async_payment_succeeded",
            &unique("evt"),
            paid_later,
        ))
        .await;
    assert_eq!(body["outcome"], "credited");
    assert_eq!(cab.expect_credit().await.credits, 3);
    let payments = app.payments(&cab.machine_id).await;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0]["status"], "credited");
}

#[tokio::test]
async fn async_failure_and_expiry_are_recorded_without_credits() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let mut cab = app.cabinet(100, "usd").await;
    let sid = unique("cs_test");
    let unpaid = session(&sid, &cab.machine_id, 300, "usd", "unpaid");
    app.post_webhook(&session_event(
        "checkout.session.completed",
        &unique("evt"),
        unpaid.clone(),
    ))
    .await;
    let (_, body) = app
        .post_webhook(&session_event(
            "checkout.session.async_payment_failed",
            &unique("evt"),
            unpaid,
        ))
        .await;
    assert_eq!(body["outcome"], "failed");
    assert_eq!(app.payments(&cab.machine_id).await[0]["status"], "failed");

    let expired = session(&unique("cs_test"), &cab.machine_id, 300, "usd", "unpaid");
    let (status, body) = app
        .post_webhook(&session_event(
            "checkout.session.expired",
            &unique("evt"),
            expired,
        ))
        .await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("expired")));

    app.post_webhook(&paid(&cab.machine_id, 100, "usd")).await;
    assert_eq!(
        cab.expect_credit().await.credits,
        1,
        "no credits before the barrier payment"
    );
}

#[tokio::test]
async fn refund_marks_the_payment_refunded() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let mut cab = app.cabinet(100, "usd").await;
    let sid = app.pay_and_credit(&mut cab, 200).await;
    let (status, body) = app
        .post_webhook(&charge_refunded(&sid, 200, 200, true))
        .await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("refunded")));
    let p = &app.payments(&cab.machine_id).await[0];
    assert_eq!(p["status"], "refunded");
    assert_eq!(p["refunded_minor"], 200);

    let unknown = json!({"id": unique("evt"), "type": "charge.refunded", "data": {"object": {"id": "ch_2", "payment_intent": "pi_nobody", "amount_refunded": 5, "refunded": false}}});
    assert_eq!(app.post_webhook(&unknown).await.1["outcome"], "unmatched");
}

#[tokio::test]
async fn other_event_types_are_acknowledged_and_ignored() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let event = json!({"id": unique("evt"), "type": "customer.created", "data": {"object": {"id": "cus_1", "email": "x@example.com"}}});
    let (status, body) = app.post_webhook(&event).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("ignored")));
}

#[tokio::test]
async fn bad_requests_get_400_and_change_nothing() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let mut cab = app.cabinet(100, "usd").await;
    let good = paid(&cab.machine_id, 900, "usd").to_string();
    let url = format!("{}/webhooks/stripe", app.base);
    let now = chrono::Utc::now().timestamp();

    let post = |sig: Option<String>, body: Vec<u8>| {
        let mut req = app
            .http
            .post(&url)
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(s) = sig {
            req = req.header("Stripe-Signature", s);
        }
        req.send()
    };
    let cases: Vec<(&str, Option<String>, Vec<u8>)> = vec![
        ("unsigned", None, good.clone().into_bytes()),
        (
            "wrong secret",
            Some(coinpulse::stripe::webhook::sign(
                "whsec_wrong",
                now,
                good.as_bytes(),
            )),
            good.clone().into_bytes(),
        ),
        (
            "tampered body",
            Some(coinpulse::stripe::webhook::sign(
                WEBHOOK_SECRET,
                now,
                good.as_bytes(),
            )),
            good.replace("900", "9000").into_bytes(),
        ),
        (
            "stale",
            Some(coinpulse::stripe::webhook::sign(
                WEBHOOK_SECRET,
                now - 301,
                good.as_bytes(),
            )),
            good.clone().into_bytes(),
        ),
        (
            "garbage header",
            Some("t=abc,v1=zz".into()),
            good.clone().into_bytes(),
        ),
        (
            "not JSON",
            Some(coinpulse::stripe::webhook::sign(
                WEBHOOK_SECRET,
                now,
                b"{not json",
            )),
            b"{not json".to_vec(),
        ),
    ];
    for (name, sig, body) in cases {
        let res = post(sig, body).await.unwrap();
        assert_eq!(res.status().as_u16(), 400, "{name}");
        let err: serde_json::Value = res.json().await.unwrap();
        assert!(
            err["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{name}: {err}"
        );
    }
    // Oversized: signed correctly, but larger than 256 KiB.
    let mut big = paid(&cab.machine_id, 100, "usd");
    big["padding"] = json!("x".repeat(300 * 1024));
    let big = big.to_string();
    let res = post(
        Some(coinpulse::stripe::webhook::sign(
            WEBHOOK_SECRET,
            now,
            big.as_bytes(),
        )),
        big.into_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(res.status().as_u16(), 400, "oversized");

    assert!(
        app.payments(&cab.machine_id).await.is_empty(),
        "nothing stored"
    );
    // The good one still works afterwards, and is the first credit the cabinet sees.
    assert_eq!(
        app.post_webhook_at("/webhooks/stripe", &good, None).await.0,
        200
    );
    assert_eq!(cab.expect_credit().await.credits, 9);
}

#[tokio::test]
async fn unmatched_payments_are_kept_for_review_without_credits() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let mut cab = app.cabinet(100, "usd").await;

    let (_, unknown) = app.post_webhook(&paid("no-such-cabinet", 100, "usd")).await;
    assert_eq!(unknown["outcome"], "review");
    let (_, currency) = app.post_webhook(&paid(&cab.machine_id, 100, "eur")).await;
    assert_eq!(currency["outcome"], "review");
    let (_, too_little) = app.post_webhook(&paid(&cab.machine_id, 50, "usd")).await;
    assert_eq!(too_little["outcome"], "review");
    let (status, _) = app
        .api(
            reqwest::Method::PATCH,
            &format!("/cabinets/{}", cab.machine_id),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, disabled) = app.post_webhook(&paid(&cab.machine_id, 100, "usd")).await;
    assert_eq!(disabled["outcome"], "review");

    let review = app.get("/payments?status=review").await["payments"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(review.len(), 4);
    assert!(review
        .iter()
        .all(|p| p["pulse_id"].is_null() && p["review_reason"].is_string()));
    assert!(review.iter().any(|p| p["review_reason"]
        .as_str()
        .unwrap()
        .contains("unknown cabinet")));
    assert!(review
        .iter()
        .any(|p| p["review_reason"].as_str().unwrap().contains("currency")));
    assert!(review
        .iter()
        .any(|p| p["review_reason"].as_str().unwrap().contains("disabled")));

    app.api(
        reqwest::Method::PATCH,
        &format!("/cabinets/{}", cab.machine_id),
        Some(json!({"enabled": true})),
    )
    .await;
    app.post_webhook(&paid(&cab.machine_id, 400, "usd")).await;
    assert_eq!(
        cab.expect_credit().await.credits,
        4,
        "no credit for any payment in review"
    );
    cab.expect_no_credit(1).await;
}

#[tokio::test]
async fn refunds_arriving_out_of_order_never_go_backwards() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let mut cab = app.cabinet(100, "usd").await;
    let sid = app.pay_and_credit(&mut cab, 300).await;
    // The full refund's event arrives before the earlier partial one's.
    let refund = |refunded: i64, full: bool| charge_refunded(&sid, 300, refunded, full);
    assert_eq!(app.post_webhook(&refund(300, true)).await.0, 200);
    assert_eq!(app.post_webhook(&refund(100, false)).await.0, 200);
    let p = &app.payments(&cab.machine_id).await[0];
    assert_eq!(
        (p["status"].as_str(), p["refunded_minor"].as_i64()),
        (Some("refunded"), Some(300))
    );
}

#[tokio::test]
async fn a_payment_link_payment_ignores_client_reference_id() {
    let db = TestDb::new().await;
    let app = spawn_app(&db).await;
    let mut cab = app.cabinet(100, "usd").await;
    // A player appended ?client_reference_id=<this cabinet> to some link: no metadata.
    let mut s = session(&unique("cs_test"), &cab.machine_id, 300, "usd", "paid");
    s["metadata"] = json!({});
    s["client_reference_id"] = json!(cab.machine_id);
    s["payment_link"] = json!("plink_123");
    let (status, body) = app
        .post_webhook(&session_event(
            "checkout.session.completed",
            &unique("evt"),
            s,
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["outcome"], "review", "{body}");
    assert_eq!(cab.next_event(1).await, None, "no credit sent");

    // The link's own metadata names the cabinet: credited.
    let mut s = session(&unique("cs_test"), &cab.machine_id, 300, "usd", "paid");
    s["payment_link"] = json!("plink_123");
    let (_, body) = app
        .post_webhook(&session_event(
            "checkout.session.completed",
            &unique("evt"),
            s,
        ))
        .await;
    assert_eq!(body["outcome"], "credited", "{body}");
    assert_eq!(cab.expect_credit().await.credits, 3);
}
