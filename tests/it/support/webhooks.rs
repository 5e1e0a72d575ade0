//! Stripe's side of a webhook: events and sessions shaped as Stripe sends them, signed with
//! the test's webhook secret and posted to the app.

use coinpulse::stripe::webhook::sign;
use serde_json::{json, Value};

use super::{unique, Cabinet, TestApp};

pub const WEBHOOK_SECRET: &str = "whsec_test_secret";

/// The `Stripe-Signature` header Stripe would send with `body` now.
pub fn stripe_signature(body: &str) -> String {
    sign(
        WEBHOOK_SECRET,
        chrono::Utc::now().timestamp(),
        body.as_bytes(),
    )
}

impl TestApp {
    /// Posts `body` signed as Stripe would, at time `t` (now when None).
    pub async fn post_webhook_at(&self, path: &str, body: &str, t: Option<i64>) -> (u16, Value) {
        let t = t.unwrap_or_else(|| chrono::Utc::now().timestamp());
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json")
            .header("Stripe-Signature", sign(WEBHOOK_SECRET, t, body.as_bytes()))
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_webhook(&self, body: &Value) -> (u16, Value) {
        self.post_webhook_at("/webhooks/stripe", &body.to_string(), None)
            .await
    }

    /// Pays `amount` to `cab` through a completed session and waits for the credit;
    /// returns the session id (its PaymentIntent is `pi_{id}`, as [`charge_refunded`] uses).
    pub async fn pay_and_credit(&self, cab: &mut Cabinet, amount: i64) -> String {
        let sid = unique("cs_test");
        self.post_webhook(&session_event(
            "checkout.session.completed",
            &unique("evt"),
            session(&sid, &cab.machine_id, amount, "usd", "paid"),
        ))
        .await;
        cab.expect_credit().await;
        sid
    }
}

/// A `charge.refunded` event for the charge of session `session_id` (`amount` charged,
/// `refunded` of it refunded so far; `full` when Stripe marks the charge refunded).
pub fn charge_refunded(session_id: &str, amount: i64, refunded: i64, full: bool) -> Value {
    let charge = json!({"id": "ch_1", "object": "charge", "amount": amount, "amount_refunded": refunded,
        "refunded": full, "currency": "usd", "payment_intent": format!("pi_{session_id}"),
        "billing_details": {"email": null}});
    json!({"id": unique("evt"), "type": "charge.refunded", "livemode": false, "data": {"object": charge}})
}

/// A Stripe checkout-session event.
pub fn session_event(kind: &str, event_id: &str, session: Value) -> Value {
    json!({
        "id": event_id, "object": "event", "api_version": "2024-06-20", "livemode": false,
        "created": chrono::Utc::now().timestamp(), "type": kind,
        "pending_webhooks": 1, "request": {"id": null, "idempotency_key": null},
        "data": {"object": session}
    })
}

pub fn session(
    id: &str,
    machine_id: &str,
    amount: i64,
    currency: &str,
    payment_status: &str,
) -> Value {
    json!({
        "id": id, "object": "checkout.session", "amount_subtotal": amount, "amount_total": amount,
        "currency": currency, "customer_details": {"email": "player@example.com", "name": null},
        "client_reference_id": null, "metadata": {"machine_id": machine_id}, "mode": "payment",
        "payment_intent": format!("pi_{id}"), "payment_status": payment_status, "status": "complete",
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0}
    })
}

/// A paid checkout.session.completed with fresh ids.
pub fn paid(machine_id: &str, amount: i64, currency: &str) -> Value {
    let s = unique("cs_test");
    session_event(
        "checkout.session.completed",
        &unique("evt"),
        session(&s, machine_id, amount, currency, "paid"),
    )
}
