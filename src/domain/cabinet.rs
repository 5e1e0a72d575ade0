//! A cabinet as the rest of the program sees it, and the rule for whether it can take a
//! payment right now.

use serde::Serialize;

use super::Bundle;

#[derive(Debug, Clone, Serialize)]
pub struct Cabinet {
    pub machine_id: String,
    pub name: String,
    pub game: String,
    pub location: String,
    pub price_minor: i64,
    pub currency: String,
    pub enabled: bool,
    pub online: bool,
    pub last_seen_at: Option<String>,
    /// It has acked a pulse or announced its status: it speaks coinpulse's protocol and
    /// dedupes pulse ids, so a repeat is harmless to it.
    pub acks_pulses: bool,
    /// Take payments even when the broker cannot say whether the cabinet is connected.
    pub always_available: bool,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip)]
    pub secret_salt: String,
    #[serde(skip)]
    pub secret_hash: String,
    /// Set when the owner archived it: no payments, out of the lists, history kept.
    pub archived_at: Option<String>,
}

impl Cabinet {
    /// What Stripe's checkout page and receipt call a bundle bought for this cabinet.
    pub fn product_name(&self, bundle: &Bundle) -> String {
        let title = bundle.title();
        if self.game.is_empty() {
            format!("{title} — {}", self.name)
        } else {
            format!("{title} — {} ({})", self.game, self.name)
        }
    }
}

pub const OFFLINE: &str = "This machine is offline, so it could not start your game. Please don't pay for it now; try another machine or ask a member of staff.";
pub const NOT_SET_UP: &str =
    "This machine is not available for phone payments yet. Please ask a member of staff.";
pub const DISABLED: &str =
    "This machine is not taking payments right now. Please ask a member of staff.";

/// Why a cabinet cannot take a payment now, in words for a player. `connected` is the
/// embedded broker's live view (None with an external broker, which reports nothing);
/// `now` is the current time, for how long ago an external-broker cabinet was last seen.
pub fn unavailable(
    c: &Cabinet,
    connected: Option<bool>,
    offline_after_secs: u64,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<&'static str> {
    if !c.enabled || c.archived_at.is_some() {
        return Some(DISABLED);
    }
    if c.always_available {
        return None;
    }
    match connected {
        // Seed cabinets too: a live connection is the best evidence there is.
        Some(true) => None,
        Some(false) => Some(OFFLINE),
        None => {
            if c.online {
                return None;
            }
            // Never heard from since registration: nothing says it can start a game.
            let Some(last) = c.last_seen_at.as_deref() else {
                return Some(NOT_SET_UP);
            };
            let last = chrono::DateTime::parse_from_rfc3339(last).ok()?;
            let away = now.signed_duration_since(last);
            (away.num_seconds() > offline_after_secs as i64).then_some(OFFLINE)
        }
    }
}

#[cfg(test)]
pub(crate) fn test_cabinet(machine_id: &str) -> Cabinet {
    Cabinet {
        machine_id: machine_id.into(),
        name: "Cab".into(),
        game: String::new(),
        location: String::new(),
        price_minor: 100,
        currency: "usd".into(),
        enabled: true,
        online: false,
        last_seen_at: None,
        acks_pulses: false,
        always_available: false,
        created_at: String::new(),
        updated_at: String::new(),
        secret_salt: "s".into(),
        secret_hash: String::new(),
        archived_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::db_time;

    #[test]
    fn availability_follows_the_brokers_view() {
        let now = chrono::Utc::now();
        let c = test_cabinet("cab-1");
        // Embedded broker: connected now, seed cabinet or not.
        assert_eq!(unavailable(&c, Some(true), 120, now), None);
        assert_eq!(unavailable(&c, Some(false), 120, now), Some(OFFLINE));
        // External broker, never heard from since registration.
        assert_eq!(unavailable(&c, None, 120, now), Some(NOT_SET_UP));
        let mut always = test_cabinet("cab-1");
        always.always_available = true;
        assert_eq!(unavailable(&always, None, 120, now), None);
        assert_eq!(unavailable(&always, Some(false), 120, now), None);
        let mut recent = test_cabinet("cab-1");
        recent.last_seen_at = Some(db_time(now - chrono::Duration::seconds(60)));
        assert_eq!(unavailable(&recent, None, 120, now), None);
        recent.last_seen_at = Some(db_time(now - chrono::Duration::seconds(180)));
        assert_eq!(unavailable(&recent, None, 120, now), Some(OFFLINE));
        let mut disabled = test_cabinet("cab-1");
        disabled.enabled = false;
        disabled.always_available = true;
        assert_eq!(unavailable(&disabled, Some(true), 120, now), Some(DISABLED));
    }

    #[test]
    fn product_names_say_game_and_cabinet() {
        let mut c = test_cabinet("cab-1");
        c.name = "Left".into();
        let b = Bundle {
            credits: 1,
            price_minor: 100,
            label: String::new(),
        };
        assert_eq!(c.product_name(&b), format!("{} — Left", b.title()));
        c.game = "Galaga".into();
        assert_eq!(c.product_name(&b), format!("{} — Galaga (Left)", b.title()));
    }
}
