//! Every state a payment, a checkout session, a pulse and a player's thanks page can be
//! in. Stored as the lower-case names below; `match`es over them are exhaustive, so a new
//! state shows every place that must learn about it.

use std::fmt;
use std::str::FromStr;

/// A stored state name that is not one of the known states.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct UnknownState {
    pub kind: &'static str,
    pub value: String,
}

/// Declares a state enum with its stored names, `as_str`, `Display`, `FromStr`,
/// `TryFrom<String>` (what the store decodes through) and serde as the same names.
macro_rules! states {
    ($(#[$doc:meta])* $name:ident, $kind:literal { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;
            fn from_str(s: &str) -> Result<Self, UnknownState> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(UnknownState { kind: $kind, value: s.to_owned() }),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnknownState;
            fn try_from(s: String) -> Result<Self, UnknownState> {
                s.parse()
            }
        }
    };
}

states! {
    /// What a dashboard user may do: an owner everything; staff look, send free credits and
    /// assign payments in review, but change no prices, refunds, users or secrets.
    Role, "role" {
        Owner = "owner",
        Staff = "staff",
    }
}

states! {
    /// Where a payment stands.
    PaymentStatus, "payment status" {
        /// Checkout completed, money not arrived yet (bank debits and the like).
        Pending = "pending",
        /// Its credits are in the outbox.
        Credited = "credited",
        /// A person must look at it; no credits were sent.
        Review = "review",
        Failed = "failed",
        Expired = "expired",
        Refunded = "refunded",
        PartiallyRefunded = "partially_refunded",
        /// Taken out of the review queue by the owner without sending credits.
        Dismissed = "dismissed",
    }
}

impl PaymentStatus {
    /// Its credits went to the cabinet (whatever happened to the money afterwards).
    pub fn was_credited(self) -> bool {
        match self {
            Self::Credited | Self::Refunded | Self::PartiallyRefunded => true,
            Self::Pending | Self::Review | Self::Failed | Self::Expired | Self::Dismissed => false,
        }
    }
}

states! {
    /// What a wallet ledger row records.
    LedgerKind, "ledger kind" {
        /// Money paid in through Stripe.
        Topup = "topup",
        /// The package's extra on a top-up.
        Bonus = "bonus",
        /// A play paid from the balance.
        Play = "play",
        /// Money paid back (a refunded top-up).
        Refund = "refund",
        /// An owner's correction, with a reason.
        Adjustment = "adjustment",
        /// Unused balance that expired.
        Expiry = "expiry",
    }
}

states! {
    /// A checkout session coinpulse created for a player.
    CheckoutStatus, "checkout status" {
        Open = "open",
        Paid = "paid",
        Review = "review",
        Failed = "failed",
        Expired = "expired",
    }
}

states! {
    /// Where a pulse is on its way to the cabinet.
    PulseState, "pulse state" {
        /// In the outbox, not handed to the broker yet.
        Queued = "queued",
        /// Handed to the broker (for the embedded one: to the cabinet's connection).
        Handed = "handed",
        /// The cabinet confirmed it.
        Acked = "acked",
    }
}

impl PulseState {
    pub fn of(handed: bool, acked: bool) -> Self {
        match (handed, acked) {
            (_, true) => Self::Acked,
            (true, false) => Self::Handed,
            (false, false) => Self::Queued,
        }
    }
}

states! {
    /// Where a paid checkout stands, in a player's words (the thanks page).
    Stage, "stage" {
        Waiting = "waiting",
        Processing = "processing",
        Paid = "paid",
        Sent = "sent",
        Confirmed = "confirmed",
        Attention = "attention",
    }
}

impl Stage {
    /// A play paid from a wallet: paid the moment its pulse exists.
    pub fn of_pulse(pulse: PulseState) -> Self {
        match pulse {
            PulseState::Queued => Self::Paid,
            PulseState::Handed => Self::Sent,
            PulseState::Acked => Self::Confirmed,
        }
    }

    /// The thanks page's stage from the payment behind the session (None: no webhook yet)
    /// and its pulse.
    pub fn of(payment: Option<PaymentStatus>, pulse: PulseState) -> Self {
        let Some(status) = payment else {
            return Self::Waiting;
        };
        match status {
            PaymentStatus::Pending => Self::Processing,
            s if s.was_credited() => match pulse {
                PulseState::Acked => Self::Confirmed,
                PulseState::Handed => Self::Sent,
                // A refunded payment whose pulse never left needs a person as well.
                PulseState::Queued if s == PaymentStatus::Credited => Self::Paid,
                PulseState::Queued => Self::Attention,
            },
            _ => Self::Attention,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::Waiting => "Waiting for confirmation from Stripe…",
            Self::Processing => "Your bank is still processing the payment…",
            Self::Paid => "Payment received",
            Self::Sent => "Credits sent to the cabinet",
            Self::Confirmed => "Cabinet confirmed, enjoy!",
            Self::Attention => "Payment received. A member of staff needs to check it before your credits are sent; please ask at the counter.",
        }
    }

    pub fn is_final(self) -> bool {
        match self {
            Self::Confirmed | Self::Attention => true,
            Self::Waiting | Self::Processing | Self::Paid | Self::Sent => false,
        }
    }

    /// The step lit on the page's progress bar (0–3).
    pub fn step(self) -> u8 {
        match self {
            Self::Waiting | Self::Processing => 0,
            Self::Paid | Self::Attention => 1,
            Self::Sent => 2,
            Self::Confirmed => 3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_stored_names() {
        for s in PaymentStatus::ALL {
            assert_eq!(s.as_str().parse::<PaymentStatus>(), Ok(*s));
        }
        for s in CheckoutStatus::ALL {
            assert_eq!(s.as_str().parse::<CheckoutStatus>(), Ok(*s));
        }
        assert_eq!(
            serde_json::to_string(&PaymentStatus::PartiallyRefunded).unwrap(),
            "\"partially_refunded\""
        );
        assert!("paid-ish".parse::<PaymentStatus>().is_err());
    }

    #[test]
    fn thanks_page_stage_follows_payment_and_pulse() {
        use PaymentStatus as P;
        use PulseState as Q;
        assert_eq!(Stage::of(None, Q::Queued), Stage::Waiting);
        assert_eq!(Stage::of(Some(P::Pending), Q::Queued), Stage::Processing);
        assert_eq!(Stage::of(Some(P::Credited), Q::Queued), Stage::Paid);
        assert_eq!(Stage::of(Some(P::Credited), Q::Handed), Stage::Sent);
        assert_eq!(Stage::of(Some(P::Refunded), Q::Acked), Stage::Confirmed);
        assert_eq!(Stage::of(Some(P::Refunded), Q::Queued), Stage::Attention);
        assert_eq!(Stage::of(Some(P::Review), Q::Queued), Stage::Attention);
        assert_eq!(Stage::of(Some(P::Failed), Q::Queued), Stage::Attention);
        assert!(Stage::Confirmed.is_final() && !Stage::Sent.is_final());
    }
}
