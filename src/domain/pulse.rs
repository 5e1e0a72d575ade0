//! The coin pulse message and its signature.
//!
//! Signing input: the compact JSON object with exactly these keys in this order, no
//! whitespace: `{"id":…,"machineId":…,"credits":…,"timestamp":…,"source":…}`.
//! The published payload is that object with `,"sig":"<64 hex chars>"` inserted before
//! the closing brace. A cabinet can therefore verify either by cutting `,"sig":"…"` out of
//! the raw payload, or by re-serialising the five fields in this order.
//! `sig` = lower-case hex HMAC-SHA256(key = the cabinet's MQTT secret, message = input).

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PulseSource {
    Stripe,
    Operator,
}

impl PulseSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stripe => "stripe",
            Self::Operator => "operator",
        }
    }
}

/// Field order matters: it is the signing input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PulseMessage {
    pub id: String,
    #[serde(rename = "machineId")]
    pub machine_id: String,
    pub credits: i64,
    pub timestamp: String,
    pub source: PulseSource,
}

const SIG_KEY: &str = ",\"sig\":\"";

/// Returns the payload to publish, signature included.
pub fn sign_pulse(msg: &PulseMessage, cabinet_secret: &str) -> String {
    let input = serde_json::to_string(msg).expect("pulse serialises");
    let sig = hex::encode(hmac(cabinet_secret, input.as_bytes()));
    let mut out = String::with_capacity(input.len() + SIG_KEY.len() + 66);
    out.push_str(&input[..input.len() - 1]);
    out.push_str(SIG_KEY);
    out.push_str(&sig);
    out.push_str("\"}");
    out
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PulseVerifyError {
    #[error("pulse has no sig field")]
    Unsigned,
    #[error("pulse signature does not match")]
    BadSignature,
    #[error("pulse is not valid JSON: {0}")]
    Malformed(String),
}

/// Checks a received payload against the cabinet's secret and parses it.
pub fn verify_pulse(
    payload: &[u8],
    cabinet_secret: &str,
) -> Result<PulseMessage, PulseVerifyError> {
    let text =
        std::str::from_utf8(payload).map_err(|e| PulseVerifyError::Malformed(e.to_string()))?;
    let at = text.rfind(SIG_KEY).ok_or(PulseVerifyError::Unsigned)?;
    let tail = &text[at + SIG_KEY.len()..];
    let sig_hex = tail.strip_suffix("\"}").ok_or(PulseVerifyError::Unsigned)?;
    let sig = hex::decode(sig_hex).map_err(|_| PulseVerifyError::BadSignature)?;
    let mut input = String::with_capacity(at + 1);
    input.push_str(&text[..at]);
    input.push('}');
    let mut mac = Hmac::<Sha256>::new_from_slice(cabinet_secret.as_bytes()).expect("any key size");
    mac.update(input.as_bytes());
    mac.verify_slice(&sig)
        .map_err(|_| PulseVerifyError::BadSignature)?;
    serde_json::from_str(&input).map_err(|e| PulseVerifyError::Malformed(e.to_string()))
}

fn hmac(key: &str, data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key size");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PulseMessage {
        PulseMessage {
            id: "0190a0b0-0000-7000-8000-000000000001".into(),
            machine_id: "cab-1".into(),
            credits: 3,
            timestamp: "2024-07-01T12:00:00Z".into(),
            source: PulseSource::Stripe,
        }
    }

    #[test]
    fn signed_payload_keeps_seed_fields_and_verifies() {
        let payload = sign_pulse(&sample(), "s3cret");
        let v: serde_json::Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(v["machineId"], "cab-1");
        assert_eq!(v["credits"], 3);
        assert_eq!(v["timestamp"], "2024-07-01T12:00:00Z");
        assert_eq!(v["sig"].as_str().unwrap().len(), 64);
        assert_eq!(
            verify_pulse(payload.as_bytes(), "s3cret").unwrap(),
            sample()
        );
    }

    #[test]
    fn signing_input_is_documented_form() {
        let payload = sign_pulse(&sample(), "k");
        let input = r#"{"id":"0190a0b0-0000-7000-8000-000000000001","machineId":"cab-1","credits":3,"timestamp":"2024-07-01T12:00:00Z","source":"stripe"}"#;
        let expected = hex::encode(hmac("k", input.as_bytes()));
        assert!(payload.ends_with(&format!(",\"sig\":\"{expected}\"}}")));
    }

    #[test]
    fn forged_or_tampered_pulse_is_rejected() {
        let payload = sign_pulse(&sample(), "s3cret");
        assert_eq!(
            verify_pulse(payload.as_bytes(), "other"),
            Err(PulseVerifyError::BadSignature)
        );
        let tampered = payload.replace("\"credits\":3", "\"credits\":9");
        assert_eq!(
            verify_pulse(tampered.as_bytes(), "s3cret"),
            Err(PulseVerifyError::BadSignature)
        );
        let unsigned = serde_json::to_string(&sample()).unwrap();
        assert_eq!(
            verify_pulse(unsigned.as_bytes(), "s3cret"),
            Err(PulseVerifyError::Unsigned)
        );
    }
}
