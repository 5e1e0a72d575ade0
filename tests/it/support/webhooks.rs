//! Stripe's side of a webhook: events and sessions shaped as Stripe sends them, signed with
//! the test's webhook secret and posted to the app.

use coinpulse::stripe::webhook::sign;
use serde_json::{json, Value};

use super::{unique, TestApp};

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
