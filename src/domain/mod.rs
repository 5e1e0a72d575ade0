//! Plain domain types and rules: identifiers, money, bundles, booking, states, keys and
//! pulse signing.
//! Nothing here knows about HTTP, SQL or MQTT, so all of it is unit-tested directly.

pub mod booking;
mod bundles;
pub mod cabinet;
mod keys;
mod money;
pub mod password;
mod secrets;
mod status;
pub mod wallet;

pub use booking::{book, book_stored, claimed_machine, Booking, CheckoutTerms, Outcome};
pub use bundles::{
    minimum_charge, offered_bundles, validate_bundles, Bundle, BundleError, MAX_BUNDLES,
};
pub use cabinet::{unavailable, Cabinet};
pub use coinpulse_wire::{
    parse_public_key, sign_pulse, verify_pulse, verify_pulse_ed25519, wire_time, PulseMessage,
    PulseSource,
};
pub use keys::Keys;
pub use money::{credits_for_amount, parse_amount, Currency, Money, MoneyError};
pub use secrets::{
    derive_cabinet_secret, hash_cabinet_secret, random_token, token_hash, verify_cabinet_secret,
};
pub use status::{
    CheckoutStatus, LedgerKind, PaymentStatus, PulseState, Role, Stage, UnknownState,
};

use std::fmt;

/// A cabinet's id as the seed system used it: 1–64 characters of `[A-Za-z0-9_-]`.
/// It appears in MQTT topics and URLs, so the narrow alphabet keeps both safe.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct MachineId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MachineIdError {
    #[error("machine_id must not be empty")]
    Empty,
    #[error("machine_id must be at most 64 characters")]
    TooLong,
    #[error("machine_id may only contain letters, digits, '_' and '-'")]
    BadChar,
}

impl MachineId {
    pub fn parse(s: &str) -> Result<Self, MachineIdError> {
        if s.is_empty() {
            return Err(MachineIdError::Empty);
        }
        if s.len() > 64 {
            return Err(MachineIdError::TooLong);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(MachineIdError::BadChar);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// UTC timestamps as stored in the database: fixed width, so text order is time order
/// on both SQLite and PostgreSQL.
pub fn db_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// A stored timestamp back as a time (None for a malformed one).
pub fn parse_db_time(db: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(db)
        .ok()
        .map(|t| t.to_utc())
}

pub fn now_db() -> String {
    db_time(chrono::Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_id_accepts_seed_ids() {
        assert!(MachineId::parse("arcadeCabinet-123").is_ok());
        assert!(MachineId::parse("a").is_ok());
        assert!(MachineId::parse(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn machine_id_rejects_bad_ids() {
        assert_eq!(MachineId::parse(""), Err(MachineIdError::Empty));
        assert_eq!(
            MachineId::parse(&"x".repeat(65)),
            Err(MachineIdError::TooLong)
        );
        for bad in ["a/b", "a+b", "a#", "a b", "é", "$sys", "a.b"] {
            assert_eq!(MachineId::parse(bad), Err(MachineIdError::BadChar), "{bad}");
        }
    }

    #[test]
    fn db_time_is_fixed_width_and_sortable() {
        let a = chrono::DateTime::parse_from_rfc3339("2024-07-01T12:00:00Z")
            .unwrap()
            .to_utc();
        let b = a + chrono::Duration::milliseconds(5);
        assert_eq!(db_time(a), "2024-07-01T12:00:00.000Z");
        assert!(db_time(a) < db_time(b));
    }
}
