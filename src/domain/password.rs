//! Dashboard passwords: the policy a new one must meet, and argon2id hashing with OWASP's
//! parameters. A hash made with older parameters still verifies and is replaced at the
//! next successful login ([`Verified::needs_rehash`]).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;

/// NIST SP 800-63B's floor for a memorised secret; length matters more than symbols.
pub const MIN_LENGTH: usize = 10;
/// Long enough for any passphrase, short enough that hashing it costs nothing extra.
pub const MAX_LENGTH: usize = 256;

/// OWASP's argon2id recommendation: 19 MiB of memory, 2 passes, 1 lane.
const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;
const LANES: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("use at least {MIN_LENGTH} characters")]
    TooShort,
    #[error("use at most {MAX_LENGTH} characters")]
    TooLong,
    #[error("this password is too common or too easy to guess{0}")]
    TooCommon(String),
    #[error("the two passwords do not match")]
    Mismatch,
}

/// Checks a new password: its length, then how guessable it is (zxcvbn's dictionaries of
/// the most common passwords, names and words, with the email as a hint to avoid).
pub fn check_new(password: &str, confirm: &str, email: &str) -> Result<(), PasswordError> {
    let chars = password.chars().count();
    if chars < MIN_LENGTH {
        return Err(PasswordError::TooShort);
    }
    if chars > MAX_LENGTH {
        return Err(PasswordError::TooLong);
    }
    let local = email.split('@').next().unwrap_or_default();
    let entropy = zxcvbn::zxcvbn(password, &[email, local, "coinpulse", "arcade"]);
    // Score 0–1: found in a common-password list or guessable within ~10^6 tries.
    if u8::from(entropy.score()) < 2 {
        let hint = entropy
            .feedback()
            .and_then(|f| f.warning())
            .map(|w| format!(" ({w})"))
            .unwrap_or_default();
        return Err(PasswordError::TooCommon(hint));
    }
    if password != confirm {
        return Err(PasswordError::Mismatch);
    }
    Ok(())
}

fn hasher() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None).expect("OWASP parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`).
pub fn hash(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt");
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2id with valid parameters cannot fail")
        .to_string()
}

/// A successful check, and whether the stored hash should be replaced.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    pub needs_rehash: bool,
}

/// Checks `password` against a stored hash (with the parameters the hash names).
pub fn verify(password: &str, stored: &str) -> Option<Verified> {
    let parsed = PasswordHash::new(stored).ok()?;
    // Verify with the stored hash's own algorithm and parameters.
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .ok()?;
    let current = Params::try_from(&parsed).ok();
    let needs_rehash = parsed.algorithm.as_str() != "argon2id"
        || current.is_none_or(|p| {
            p.m_cost() != MEMORY_KIB || p.t_cost() != PASSES || p.p_cost() != LANES
        });
    Some(Verified { needs_rehash })
}

/// A hash to check against when the account does not exist, so a wrong email takes as
/// long as a wrong password and timing does not reveal which accounts exist.
pub fn dummy_verify(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let stored = DUMMY.get_or_init(|| hash("dummy password for timing"));
    let _ = verify(password, stored);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_refuses_short_common_and_mismatched() {
        assert_eq!(
            check_new("short", "short", "a@b.c"),
            Err(PasswordError::TooShort)
        );
        assert!(matches!(
            check_new("password123", "password123", "a@b.c"),
            Err(PasswordError::TooCommon(_))
        ));
        assert!(matches!(
            check_new("qwertyuiop", "qwertyuiop", "a@b.c"),
            Err(PasswordError::TooCommon(_))
        ));
        assert_eq!(
            check_new("tangerine-galaxy-4071", "tangerine-galaxy-4072", "a@b.c"),
            Err(PasswordError::Mismatch)
        );
        check_new("tangerine-galaxy-4071", "tangerine-galaxy-4071", "a@b.c").unwrap();
    }

    #[test]
    fn hashes_verify_and_old_parameters_ask_for_a_rehash() {
        let h = hash("tangerine-galaxy-4071");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert_eq!(
            verify("tangerine-galaxy-4071", &h),
            Some(Verified {
                needs_rehash: false
            })
        );
        assert_eq!(verify("tangerine-galaxy-4072", &h), None);
        assert_eq!(verify("anything", "not a hash"), None);

        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8 * 1024, 1, 1, None).unwrap(),
        );
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let old = weak
            .hash_password(b"tangerine-galaxy-4071", &salt)
            .unwrap()
            .to_string();
        assert_eq!(
            verify("tangerine-galaxy-4071", &old),
            Some(Verified { needs_rehash: true })
        );
    }
}
