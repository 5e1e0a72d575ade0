//! The master key and everything derived from it: cabinet MQTT secrets, token MACs, the
//! server's own broker password and the Ed25519 key that signs pulses.

use std::sync::Arc;

use super::secrets::derive_cabinet_secret;

/// HKDF-SHA256 labels, one per purpose. Changing one changes every key derived with it.
const LABEL_CABINET: &str = "cabinet passwords v1";
const LABEL_TOKENS: &str = "tokens v1";
const LABEL_INTERNAL_MQTT: &str = "internal mqtt password v1";
const LABEL_PULSE_SIGNING: &str = "pulse signing ed25519 v1";
const LABEL_SESSIONS: &str = "dashboard session cookies v1";

/// Derives cabinet secrets from the master key; shared by the writer, the broker's
/// authentication and the API that shows a new secret once.
#[derive(Clone)]
pub struct Keys {
    /// One subkey per purpose, derived from the master key with HKDF-SHA256, so a key
    /// leaked or misused in one role says nothing about the others.
    cabinet: Arc<[u8; 32]>,
    tokens: Arc<[u8; 32]>,
    internal_mqtt: Arc<[u8; 32]>,
    pulse_signing: Arc<ed25519_dalek::SigningKey>,
    /// Signs and encrypts dashboard session cookies (actix-session wants 64 bytes).
    sessions: Arc<[u8; 64]>,
}

impl Keys {
    pub fn new(master: Vec<u8>) -> Self {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"coinpulse"), &master);
        let derive = |label: &str| {
            let mut out = [0u8; 32];
            hk.expand(label.as_bytes(), &mut out)
                .expect("32 bytes is a valid HKDF-SHA256 length");
            out
        };
        let mut sessions = [0u8; 64];
        hk.expand(LABEL_SESSIONS.as_bytes(), &mut sessions)
            .expect("64 bytes is a valid HKDF-SHA256 length");
        Self {
            sessions: Arc::new(sessions),
            cabinet: Arc::new(derive(LABEL_CABINET)),
            tokens: Arc::new(derive(LABEL_TOKENS)),
            internal_mqtt: Arc::new(derive(LABEL_INTERNAL_MQTT)),
            pulse_signing: Arc::new(ed25519_dalek::SigningKey::from_bytes(&derive(
                LABEL_PULSE_SIGNING,
            ))),
        }
    }

    pub fn cabinet_secret(&self, machine_id: &str, salt: &str) -> String {
        derive_cabinet_secret(&*self.cabinet, machine_id, salt)
    }

    /// A keyed MAC for tokens the server hands out and checks later (CSRF, idempotency);
    /// `purpose` separates them.
    pub fn mac(&self, purpose: &str, data: &str) -> String {
        derive_cabinet_secret(&*self.tokens, purpose, data)
    }

    /// The password the server's own MQTT client uses on the embedded broker.
    pub fn internal_mqtt_password(&self) -> String {
        derive_cabinet_secret(&*self.internal_mqtt, "$coinpulse-server", "internal")
    }

    /// The key that signs every pulse (Ed25519); cabinets verify with the public half.
    pub fn pulse_signing_key(&self) -> &ed25519_dalek::SigningKey {
        &self.pulse_signing
    }

    /// The key dashboard session cookies are signed and encrypted with.
    pub fn session_key(&self) -> &[u8; 64] {
        &self.sessions
    }

    pub fn pulse_public_key_hex(&self) -> String {
        hex::encode(self.pulse_signing.verifying_key().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_purpose_gets_its_own_key() {
        let keys = Keys::new(b"0123456789abcdef0123456789abcdef".to_vec());
        let other = Keys::new(b"fedcba9876543210fedcba9876543210".to_vec());
        assert_eq!(
            keys.cabinet_secret("cab-1", "salt"),
            keys.cabinet_secret("cab-1", "salt")
        );
        assert_ne!(
            keys.cabinet_secret("cab-1", "salt"),
            keys.cabinet_secret("cab-1", "pepper")
        );
        assert_ne!(
            keys.cabinet_secret("cab-1", "salt"),
            other.cabinet_secret("cab-1", "salt")
        );
        assert_ne!(
            keys.mac("cab-1", "salt"),
            keys.cabinet_secret("cab-1", "salt")
        );
        assert_ne!(keys.pulse_public_key_hex(), other.pulse_public_key_hex());
        assert_eq!(keys.pulse_public_key_hex().len(), 64);
    }
}
