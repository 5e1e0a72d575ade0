//! Stripe webhook verification (`Stripe-Signature`) and tolerant event parsing.
//!
//! We deserialize only the fields coinpulse uses, from `serde_json::Value`, so that any
//! API version, new field or unexpected null never makes a payment fail.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

/// Stripe's own default tolerance.
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing Stripe-Signature header")]
    Missing,
    #[error("malformed Stripe-Signature header")]
    Malformed,
    #[error("webhook timestamp outside the {TOLERANCE_SECS} s tolerance")]
    Stale,
    #[error("no v1 signature matches the endpoint secret")]
    Mismatch,
}

/// Verifies `header` (`t=…,v1=…[,v1=…]`) for `body` at unix time `now`.
pub fn verify_signature(
    header: Option<&str>,
    body: &[u8],
    secret: &str,
    now: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp: Option<i64> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" => timestamp = Some(value.parse().map_err(|_| SignatureError::Malformed)?),
            // A malformed v1 among good ones is skipped, as Stripe's libraries do.
            "v1" => signatures.extend(hex::decode(value).ok()),
            _ => {}
        }
    }
    let t = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key size");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    // Check the signature before the clock, so a forged request learns nothing about time.
    let matched = signatures
        .iter()
        .any(|sig| subtle::ConstantTimeEq::ct_eq(sig.as_slice(), expected.as_slice()).into());
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    if (now - t).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

/// The header Stripe would send for `body` at time `t` (used by `webhook-test` and tests).
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key size");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A verified event, reduced to what coinpulse acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: String,
    pub kind: String,
    pub livemode: bool,
    pub body: EventBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventBody {
    CheckoutCompleted(CheckoutSession),
    CheckoutAsyncSucceeded(CheckoutSession),
    CheckoutAsyncFailed(CheckoutSession),
    CheckoutExpired(CheckoutSession),
    ChargeRefunded(Charge),
    /// Any other type: recorded and acknowledged, nothing else.
    Other,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct CheckoutSession {
    pub id: String,
    /// `paid`, `unpaid` or `no_payment_required`.
    pub payment_status: String,
    pub amount_total: Option<i64>,
    pub amount_discount: i64,
    pub currency: Option<String>,
    pub metadata: HashMap<String, String>,
    pub client_reference_id: Option<String>,
    pub payment_intent: Option<String>,
    pub payment_link: Option<String>,
    /// The payer's email as Checkout collected it (`customer_details.email`).
    pub email: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Charge {
    pub id: String,
    pub payment_intent: Option<String>,
    pub amount: i64,
    pub amount_refunded: i64,
    pub refunded: bool,
    pub currency: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("event is missing {0}")]
    Missing(&'static str),
}

#[derive(Deserialize)]
struct Envelope {
    id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    livemode: Option<bool>,
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    object: Option<Value>,
}

pub fn parse_event(body: &[u8]) -> Result<Event, ParseError> {
    let env: Envelope =
        serde_json::from_slice(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
    let id = env
        .id
        .filter(|s| !s.is_empty())
        .ok_or(ParseError::Missing("id"))?;
    let kind = env
        .kind
        .filter(|s| !s.is_empty())
        .ok_or(ParseError::Missing("type"))?;
    let object = env.data.and_then(|d| d.object).unwrap_or(Value::Null);
    let body = match kind.as_str() {
        "checkout.session.completed" => EventBody::CheckoutCompleted(session(&object)?),
        "checkout.session.async_payment_succeeded" => {
            EventBody::CheckoutAsyncSucceeded(session(&object)?)
        }
        "checkout.session.async_payment_failed" => {
            EventBody::CheckoutAsyncFailed(session(&object)?)
        }
        "checkout.session.expired" => EventBody::CheckoutExpired(session(&object)?),
        "charge.refunded" => EventBody::ChargeRefunded(charge(&object)?),
        _ => EventBody::Other,
    };
    Ok(Event {
        id,
        kind,
        livemode: env.livemode.unwrap_or(false),
        body,
    })
}

fn session(o: &Value) -> Result<CheckoutSession, ParseError> {
    Ok(CheckoutSession {
        id: str_field(o, "id").ok_or(ParseError::Missing("data.object.id"))?,
        payment_status: str_field(o, "payment_status").unwrap_or_default(),
        amount_total: o.get("amount_total").and_then(Value::as_i64),
        amount_discount: o
            .pointer("/total_details/amount_discount")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        currency: str_field(o, "currency").map(|c| c.to_ascii_lowercase()),
        metadata: metadata(o),
        client_reference_id: str_field(o, "client_reference_id"),
        payment_intent: id_field(o, "payment_intent"),
        payment_link: id_field(o, "payment_link"),
        email: o
            .pointer("/customer_details/email")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

fn charge(o: &Value) -> Result<Charge, ParseError> {
    Ok(Charge {
        id: str_field(o, "id").ok_or(ParseError::Missing("data.object.id"))?,
        payment_intent: id_field(o, "payment_intent"),
        amount: o.get("amount").and_then(Value::as_i64).unwrap_or(0),
        amount_refunded: o
            .get("amount_refunded")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        refunded: o.get("refunded").and_then(Value::as_bool).unwrap_or(false),
        currency: str_field(o, "currency").map(|c| c.to_ascii_lowercase()),
    })
}

fn str_field(o: &Value, key: &str) -> Option<String> {
    o.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Stripe fields that are an id, or the whole object when expanded.
fn id_field(o: &Value, key: &str) -> Option<String> {
    match o.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(inner) => inner.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// Metadata values are strings in Stripe; numbers are accepted too, nulls dropped.
fn metadata(o: &Value) -> HashMap<String, String> {
    let Some(Value::Object(map)) = o.get("metadata") else {
        return HashMap::new();
    };
    map.iter()
        .filter_map(|(k, v)| match v {
            Value::String(s) => Some((k.clone(), s.clone())),
            Value::Number(n) => Some((k.clone(), n.to_string())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test";

    #[test]
    fn accepts_a_good_signature_and_any_of_several_v1() {
        let body = br#"{"id":"evt_1"}"#;
        let good = sign(SECRET, 1000, body);
        assert_eq!(verify_signature(Some(&good), body, SECRET, 1000), Ok(()));
        let v1 = good.split("v1=").nth(1).unwrap();
        let multi = format!("t=1000,v1={},v1={v1},v0=abc", "00".repeat(32));
        assert_eq!(verify_signature(Some(&multi), body, SECRET, 1100), Ok(()));
    }

    #[test]
    fn rejects_bad_stale_and_missing_signatures() {
        let body = br#"{"id":"evt_1"}"#;
        let good = sign(SECRET, 1000, body);
        assert_eq!(
            verify_signature(None, body, SECRET, 1000),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_signature(Some("garbage"), body, SECRET, 1000),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature(Some(&good), body, "whsec_other", 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(Some(&good), br#"{"id":"evt_2"}"#, SECRET, 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(Some(&good), body, SECRET, 1000 + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_signature(Some(&good), body, SECRET, 1000 - 301),
            Err(SignatureError::Stale)
        );
    }

    #[test]
    fn parses_a_real_shaped_session_with_unknown_fields_and_nulls() {
        let body = serde_json::json!({
            "id": "evt_1", "object": "event", "api_version": "2099-01-01.future",
            "type": "checkout.session.completed", "livemode": false,
            "brand_new_field": {"nested": [1, 2, null]},
            "data": {"object": {
                "id": "cs_test_1", "object": "checkout.session", "amount_total": 300,
                "currency": "USD", "payment_status": "paid", "customer_details": null,
                "client_reference_id": null, "payment_intent": {"id": "pi_1", "object": "payment_intent"},
                "metadata": {"machine_id": "cab-1", "credits": 3, "note": null},
                "total_details": {"amount_discount": 50, "amount_tax": null}
            }}
        });
        let ev = parse_event(body.to_string().as_bytes()).unwrap();
        assert_eq!(ev.id, "evt_1");
        let EventBody::CheckoutCompleted(s) = ev.body else {
            panic!("wrong body")
        };
        assert_eq!(s.id, "cs_test_1");
        assert_eq!(s.amount_total, Some(300));
        assert_eq!(s.currency.as_deref(), Some("usd"));
        assert_eq!(s.payment_intent.as_deref(), Some("pi_1"));
        assert_eq!(s.metadata.get("machine_id").unwrap(), "cab-1");
        assert_eq!(s.metadata.get("credits").unwrap(), "3");
        assert!(!s.metadata.contains_key("note"));
        assert_eq!(s.amount_discount, 50);
        assert_eq!(s.client_reference_id, None);
    }

    #[test]
    fn unknown_types_are_other_and_bad_bodies_are_errors() {
        let ev = parse_event(br#"{"id":"evt_9","type":"customer.created","data":{"object":{}}}"#)
            .unwrap();
        assert_eq!(ev.body, EventBody::Other);
        assert!(matches!(
            parse_event(b"not json"),
            Err(ParseError::NotJson(_))
        ));
        assert_eq!(
            parse_event(br#"{"type":"charge.refunded"}"#),
            Err(ParseError::Missing("id"))
        );
        assert_eq!(
            parse_event(br#"{"id":"e","type":"checkout.session.completed","data":{"object":{}}}"#),
            Err(ParseError::Missing("data.object.id"))
        );
    }
}
