//! Booking rules: from a paid Checkout Session (and, when coinpulse created it, what was
//! stored then) to which cabinet gets how many credits, or why a person must look.

use super::{credits_for_amount, Cabinet, Currency, MachineId};
use crate::stripe::webhook::CheckoutSession;

/// What coinpulse stored when it created a checkout session: the truth about what was
/// bought, whatever the session's metadata says later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutTerms {
    pub machine_id: String,
    pub credits: i64,
    pub amount_minor: i64,
    pub currency: String,
}

/// What became of a webhook, stored as `stripe_events.outcome`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Credited,
    /// A wallet top-up was added to its balance.
    ToppedUp,
    /// Seen before (same event id, or a session already settled).
    Duplicate,
    Review(String),
    /// Paid later by an asynchronous method; no credits yet.
    Waiting,
    Failed,
    Expired,
    Refunded,
    /// A refund for a payment coinpulse never saw.
    Unmatched,
    Ignored,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Credited => "credited",
            Self::ToppedUp => "topped_up",
            Self::Duplicate => "duplicate",
            Self::Review(_) => "review",
            Self::Waiting => "waiting",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Refunded => "refunded",
            Self::Unmatched => "unmatched",
            Self::Ignored => "ignored",
        }
    }
}

/// How a paid session should be booked, decided from the session and its cabinet.
#[derive(Debug, PartialEq, Eq)]
pub struct Booking {
    pub machine_id: Option<String>,
    pub credits: i64,
    pub review_reason: Option<String>,
}

/// The cabinet a session names. A Payment Link payment counts only the link's own
/// metadata: anyone can append `?client_reference_id=` to a link's URL, so on a link it
/// would let a player send a payment's credits to a cabinet of their choosing.
pub fn claimed_machine(s: &CheckoutSession) -> Option<&String> {
    let from_metadata = s.metadata.get("machine_id");
    if s.payment_link.is_some() {
        from_metadata
    } else {
        from_metadata.or(s.client_reference_id.as_ref())
    }
}

/// Pure: which cabinet, how many credits, and whether a person must look at it.
pub fn book(s: &CheckoutSession, cabinet: Option<&Cabinet>) -> Booking {
    let raw_id = claimed_machine(s).cloned();
    let review = |machine_id: Option<String>, reason: String| Booking {
        machine_id,
        credits: 0,
        review_reason: Some(reason),
    };
    let Some(raw_id) = raw_id else {
        let why = if s.payment_link.is_some() {
            "payment link without machine_id metadata (client_reference_id is not trusted on links)"
        } else {
            "no machine_id in metadata or client_reference_id"
        };
        return review(None, why.into());
    };
    if MachineId::parse(&raw_id).is_err() {
        return review(None, format!("invalid machine_id {raw_id:?}"));
    }
    let Some(cabinet) = cabinet else {
        return review(Some(raw_id.clone()), format!("unknown cabinet {raw_id}"));
    };
    let machine_id = Some(cabinet.machine_id.clone());
    if !cabinet.enabled {
        return review(machine_id, format!("cabinet {raw_id} is disabled"));
    }
    let currency = s.currency.as_deref().and_then(|c| Currency::parse(c).ok());
    if currency.as_ref().map(Currency::as_str) != Some(cabinet.currency.as_str()) {
        return review(
            machine_id,
            format!(
                "currency {} does not match the cabinet's {}",
                s.currency.as_deref().unwrap_or("(none)"),
                cabinet.currency
            ),
        );
    }
    let Some(amount) = s.amount_total else {
        return review(machine_id, "session has no amount_total".into());
    };
    let credits = credits_for_amount(amount, cabinet.price_minor);
    if credits == 0 {
        return review(
            machine_id,
            format!(
                "amount {amount} buys no credit at {} per credit",
                cabinet.price_minor
            ),
        );
    }
    Booking {
        machine_id,
        credits,
        review_reason: None,
    }
}

/// Pure: books a session coinpulse created. The amount must be what was asked, or less by
/// exactly the discount Stripe reports (a promotion code).
pub fn book_stored(s: &CheckoutSession, t: &CheckoutTerms, cabinet: Option<&Cabinet>) -> Booking {
    let machine_id = Some(t.machine_id.clone());
    let review = |reason: String| Booking {
        machine_id: machine_id.clone(),
        credits: 0,
        review_reason: Some(reason),
    };
    let Some(cabinet) = cabinet else {
        return review(format!("cabinet {} no longer exists", t.machine_id));
    };
    if !cabinet.enabled {
        return review(format!("cabinet {} is disabled", t.machine_id));
    }
    if s.currency.as_deref() != Some(t.currency.as_str()) {
        return review(format!(
            "currency {} does not match the session's {}",
            s.currency.as_deref().unwrap_or("(none)"),
            t.currency
        ));
    }
    let paid = s.amount_total.unwrap_or(-1);
    let discounted = paid < t.amount_minor
        && s.amount_discount > 0
        && paid + s.amount_discount == t.amount_minor;
    if paid != t.amount_minor && !discounted {
        return review(format!(
            "paid {paid}, expected {} for {} credits",
            t.amount_minor, t.credits
        ));
    }
    Booking {
        machine_id,
        credits: t.credits,
        review_reason: None,
    }
}

#[cfg(test)]
mod extra_tests {
    use super::*;
    use crate::domain::cabinet::test_cabinet;

    fn terms() -> CheckoutTerms {
        CheckoutTerms {
            machine_id: "cab-1".into(),
            credits: 3,
            amount_minor: 250,
            currency: "usd".into(),
        }
    }

    fn paid(amount: i64, discount: i64) -> CheckoutSession {
        CheckoutSession {
            id: "cs_1".into(),
            payment_status: "paid".into(),
            amount_total: Some(amount),
            amount_discount: discount,
            currency: Some("usd".into()),
            ..Default::default()
        }
    }

    #[test]
    fn stored_sessions_book_what_was_asked() {
        let c = test_cabinet("cab-1");
        assert_eq!(book_stored(&paid(250, 0), &terms(), Some(&c)).credits, 3);
        // A promotion code: less by exactly the discount Stripe reports.
        assert_eq!(book_stored(&paid(200, 50), &terms(), Some(&c)).credits, 3);
        let short = book_stored(&paid(200, 0), &terms(), Some(&c));
        assert_eq!(short.credits, 0);
        assert!(short.review_reason.unwrap().contains("expected 250"));
        assert!(book_stored(&paid(250, 0), &terms(), None)
            .review_reason
            .unwrap()
            .contains("no longer exists"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::cabinet::test_cabinet;
    use std::collections::HashMap;

    fn cabinet(enabled: bool) -> Cabinet {
        Cabinet {
            enabled,
            ..test_cabinet("cab-1")
        }
    }

    fn session(amount: i64, currency: &str) -> CheckoutSession {
        CheckoutSession {
            id: "cs_1".into(),
            payment_status: "paid".into(),
            amount_total: Some(amount),
            currency: Some(currency.into()),
            metadata: HashMap::from([("machine_id".to_string(), "cab-1".to_string())]),
            ..Default::default()
        }
    }

    #[test]
    fn books_credits_by_amount() {
        let b = book(&session(350, "usd"), Some(&cabinet(true)));
        assert_eq!(
            b,
            Booking {
                machine_id: Some("cab-1".into()),
                credits: 3,
                review_reason: None
            }
        );
    }

    #[test]
    fn sends_doubtful_payments_to_review() {
        let on = cabinet(true);
        let reason = |s: &CheckoutSession, c: Option<&Cabinet>| book(s, c).review_reason.unwrap();
        assert!(reason(&session(100, "usd"), None).contains("unknown cabinet"));
        assert!(reason(&session(100, "usd"), Some(&cabinet(false))).contains("disabled"));
        assert!(reason(&session(100, "eur"), Some(&on)).contains("currency"));
        assert!(reason(&session(99, "usd"), Some(&on)).contains("buys no credit"));
        let mut no_id = session(100, "usd");
        no_id.metadata.clear();
        assert!(reason(&no_id, None).contains("no machine_id"));
    }

    #[test]
    fn payment_links_ignore_client_reference_id() {
        let mut s = session(100, "usd");
        s.metadata.clear();
        s.client_reference_id = Some("cab-1".into());
        s.payment_link = Some("plink_1".into());
        let b = book(&s, Some(&cabinet(true)));
        assert_eq!(b.credits, 0);
        assert!(b.review_reason.unwrap().contains("payment link"));
        s.metadata.insert("machine_id".into(), "cab-1".into());
        assert_eq!(book(&s, Some(&cabinet(true))).credits, 1);
    }

    #[test]
    fn falls_back_to_client_reference_id() {
        let mut s = session(200, "usd");
        s.metadata.clear();
        s.client_reference_id = Some("cab-1".into());
        assert_eq!(book(&s, Some(&cabinet(true))).credits, 2);
    }
}
