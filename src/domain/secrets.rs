//! Cabinet secrets: derived from the server's master key, so the server can sign pulses
//! without storing them; only a hash is kept for authentication.

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The cabinet's MQTT password. `salt` is random per cabinet and changes on rotation.
pub fn derive_cabinet_secret(master_key: &[u8], machine_id: &str, salt: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(master_key).expect("any key size");
    mac.update(b"coinpulse cabinet secret v1\0");
    mac.update(machine_id.as_bytes());
    mac.update(b"\0");
    mac.update(salt.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// SHA-256 rather than argon2 on purpose: the secret carries 256 bits of entropy, so a slow
/// hash adds nothing, while thousands of cabinets reconnecting after a broker restart must
/// each be checked in microseconds.
pub fn hash_cabinet_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

pub fn verify_cabinet_secret(secret: &str, stored_hash: &str) -> bool {
    let candidate = hash_cabinet_secret(secret);
    candidate.as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// `bytes` random bytes as lower-case hex.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// What is stored of a one-time token sent to someone (a setup or email link): its
/// SHA-256, so the database alone cannot be used to follow the link.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_is_stable_and_salted() {
        let a = derive_cabinet_secret(b"master", "cab-1", "salt1");
        assert_eq!(a, derive_cabinet_secret(b"master", "cab-1", "salt1"));
        assert_ne!(a, derive_cabinet_secret(b"master", "cab-1", "salt2"));
        assert_ne!(a, derive_cabinet_secret(b"master", "cab-2", "salt1"));
        assert_ne!(a, derive_cabinet_secret(b"other", "cab-1", "salt1"));
        assert_eq!(a.len(), 43);
    }

    #[test]
    fn hash_verifies_only_the_right_secret() {
        let h = hash_cabinet_secret("abc");
        assert!(verify_cabinet_secret("abc", &h));
        assert!(!verify_cabinet_secret("abd", &h));
        assert!(!verify_cabinet_secret("", &h));
    }
}
