//! The coin pulse message and its two signatures.
//!
//! Body: the compact JSON object with exactly these keys in this order, no whitespace:
//! `{"id":…,"machineId":…,"credits":…,"timestamp":…,"source":…}`.
//!
//! Published payload: `{…body fields…,"sig_ed25519":"<128 hex>","sig":"<64 hex>"}`.
//! - `sig_ed25519` = lower-case hex Ed25519 signature, by the server's pulse key, of the
//!   body. A cabinet needs only the server's public key, which cannot sign: a password
//!   sniffed on the arcade's Wi-Fi forges nothing. To verify, cut everything from
//!   `,"sig_ed25519":"` to the end and append `}` (or re-serialise the five fields).
//! - `sig` = lower-case hex HMAC-SHA256(key = the cabinet's MQTT secret) of the payload
//!   with `,"sig":"…"` cut out, i.e. `{…body fields…,"sig_ed25519":"…"}`: cabinets that
//!   verify by cutting `sig` out of the raw payload keep working unchanged.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Why a pulse was sent; part of the signed pulse message, so the names never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PulseSource {
    /// A Stripe payment bought it.
    Stripe,
    /// An owner granted it by hand.
    Operator,
    /// A player paid it from their wallet.
    Wallet,
}

impl PulseSource {
    pub const ALL: &'static [Self] = &[Self::Stripe, Self::Operator, Self::Wallet];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stripe => "stripe",
            Self::Operator => "operator",
            Self::Wallet => "wallet",
        }
    }
}

impl fmt::Display for PulseSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pulse source name that is not one of the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown pulse source {0:?}")]
pub struct UnknownSource(pub String);

impl FromStr for PulseSource {
    type Err = UnknownSource;
    fn from_str(s: &str) -> Result<Self, UnknownSource> {
        Self::ALL
            .iter()
            .copied()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownSource(s.to_owned()))
    }
}

/// What the server's store decodes stored names through.
impl TryFrom<String> for PulseSource {
    type Error = UnknownSource;
    fn try_from(s: String) -> Result<Self, UnknownSource> {
        s.parse()
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
const ED25519_KEY: &str = ",\"sig_ed25519\":\"";

/// Returns the payload to publish, both signatures included.
pub fn sign_pulse(
    msg: &PulseMessage,
    cabinet_secret: &str,
    pulse_key: &ed25519_dalek::SigningKey,
) -> String {
    use ed25519_dalek::Signer;
    let body = serde_json::to_string(msg).expect("pulse serialises");
    let ed = hex::encode(pulse_key.sign(body.as_bytes()).to_bytes());
    let mut out = String::with_capacity(body.len() + ED25519_KEY.len() + SIG_KEY.len() + 200);
    out.push_str(&body[..body.len() - 1]);
    out.push_str(ED25519_KEY);
    out.push_str(&ed);
    out.push_str("\"}");
    let sig = hex::encode(hmac(cabinet_secret, out.as_bytes()));
    out.truncate(out.len() - 1);
    out.push_str(SIG_KEY);
    out.push_str(&sig);
    out.push_str("\"}");
    out
}

/// Checks a received payload's Ed25519 signature against the server's public key and
/// parses it. This is what a cabinet should use: it needs no secret.
pub fn verify_pulse_ed25519(
    payload: &[u8],
    public_key: &ed25519_dalek::VerifyingKey,
) -> Result<PulseMessage, PulseVerifyError> {
    let text =
        std::str::from_utf8(payload).map_err(|e| PulseVerifyError::Malformed(e.to_string()))?;
    let at = text.find(ED25519_KEY).ok_or(PulseVerifyError::Unsigned)?;
    let rest = &text[at + ED25519_KEY.len()..];
    let sig_hex = rest.get(..128).ok_or(PulseVerifyError::BadSignature)?;
    let sig: [u8; 64] = hex::decode(sig_hex)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(PulseVerifyError::BadSignature)?;
    let mut body = String::with_capacity(at + 1);
    body.push_str(&text[..at]);
    body.push('}');
    public_key
        .verify_strict(body.as_bytes(), &ed25519_dalek::Signature::from_bytes(&sig))
        .map_err(|_| PulseVerifyError::BadSignature)?;
    serde_json::from_str(&body).map_err(|e| PulseVerifyError::Malformed(e.to_string()))
}

/// Why a configured pulse public key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublicKeyError {
    #[error("a pulse public key is 64 hex characters")]
    NotHex,
    #[error("not an Ed25519 public key")]
    NotAKey,
}

/// Parses a hex Ed25519 public key, as `cabinet add`, the API and `/status` show it.
pub fn parse_public_key(hex_key: &str) -> Result<ed25519_dalek::VerifyingKey, PublicKeyError> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(PublicKeyError::NotHex)?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| PublicKeyError::NotAKey)
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

    fn key() -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
    }

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
        let payload = sign_pulse(&sample(), "s3cret", &key());
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
    fn signing_inputs_are_the_documented_forms() {
        use ed25519_dalek::Verifier;
        let payload = sign_pulse(&sample(), "k", &key());
        let body = r#"{"id":"0190a0b0-0000-7000-8000-000000000001","machineId":"cab-1","credits":3,"timestamp":"2024-07-01T12:00:00Z","source":"stripe"}"#;
        let v: serde_json::Value = serde_json::from_str(&payload).unwrap();
        let ed = hex::decode(v["sig_ed25519"].as_str().unwrap()).unwrap();
        let sig = ed25519_dalek::Signature::from_slice(&ed).unwrap();
        key()
            .verifying_key()
            .verify(body.as_bytes(), &sig)
            .expect("Ed25519 over the body");
        let hmac_input = format!(
            "{},\"sig_ed25519\":\"{}\"}}",
            &body[..body.len() - 1],
            v["sig_ed25519"].as_str().unwrap()
        );
        let expected = hex::encode(hmac("k", hmac_input.as_bytes()));
        assert_eq!(
            payload,
            format!(
                "{},\"sig\":\"{expected}\"}}",
                &hmac_input[..hmac_input.len() - 1]
            )
        );
    }

    #[test]
    fn ed25519_verifies_with_the_public_key_only() {
        let payload = sign_pulse(&sample(), "s3cret", &key());
        let public = key().verifying_key();
        assert_eq!(
            verify_pulse_ed25519(payload.as_bytes(), &public).unwrap(),
            sample()
        );
        let tampered = payload.replace("\"credits\":3", "\"credits\":9");
        assert_eq!(
            verify_pulse_ed25519(tampered.as_bytes(), &public),
            Err(PulseVerifyError::BadSignature)
        );
        // Signed with the cabinet's secret alone (what a sniffed password allows): refused.
        let other = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        let forged = sign_pulse(&sample(), "s3cret", &other);
        assert!(verify_pulse(forged.as_bytes(), "s3cret").is_ok());
        assert_eq!(
            verify_pulse_ed25519(forged.as_bytes(), &public),
            Err(PulseVerifyError::BadSignature)
        );
        let parsed = parse_public_key(&hex::encode(public.as_bytes())).unwrap();
        assert_eq!(parsed, public);
        assert!(parse_public_key("abcd").is_err());
    }

    #[test]
    fn source_names_round_trip() {
        for s in PulseSource::ALL {
            assert_eq!(s.as_str().parse::<PulseSource>(), Ok(*s));
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{s}\""));
        }
        // On the wire in every signed pulse: the names must never change.
        assert_eq!(
            serde_json::to_string(&PulseSource::Operator).unwrap(),
            "\"operator\""
        );
        assert!("cash".parse::<PulseSource>().is_err());
    }

    #[test]
    fn forged_or_tampered_pulse_is_rejected() {
        let payload = sign_pulse(&sample(), "s3cret", &key());
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
