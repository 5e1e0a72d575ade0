//! Bundles ("3 plays $2.50") and Stripe's minimum charge per currency.

use serde::{Deserialize, Serialize};

use super::{Currency, Money, MoneyError};

pub const MAX_BUNDLES: usize = 6;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    pub credits: i64,
    pub price_minor: i64,
    #[serde(default)]
    pub label: String,
}

impl Bundle {
    /// An owner-typed bundle, `credits:price[:label]` (`3:2.50`, `6:4.50:Party pack`), the
    /// price read as [`parse_amount`](super::parse_amount) reads it.
    pub fn parse(text: &str, currency: &super::Currency) -> Result<Bundle, String> {
        let mut parts = text.trim().splitn(3, ':');
        let credits = parts.next().and_then(|c| c.trim().parse::<i64>().ok());
        let price = parts.next().map(|p| super::parse_amount(p, currency));
        match (credits, price) {
            (Some(credits), Some(Ok(price_minor))) => Ok(Bundle {
                credits,
                price_minor,
                label: parts.next().unwrap_or("").trim().to_owned(),
            }),
            (_, Some(Err(e))) => Err(format!("bundle {text:?}: {e}")),
            _ => Err(format!("bundle {text:?}: write credits:price, e.g. 3:2.50")),
        }
    }

    /// What the player sees on the button: the label, else "3 plays".
    pub fn title(&self) -> String {
        if !self.label.is_empty() {
            return self.label.clone();
        }
        if self.credits == 1 {
            "1 play".into()
        } else {
            format!("{} plays", self.credits)
        }
    }
}

/// Stripe's minimum charge, in minor units (stripe.com/docs/currencies#minimum-and-maximum-charge-amounts).
pub fn minimum_charge(currency: &Currency) -> i64 {
    match currency.as_str() {
        "gbp" => 30,
        "aed" | "myr" | "pln" | "ron" => 200,
        "bgn" => 100,
        "czk" => 1500,
        "dkk" => 250,
        "hkd" => 400,
        "huf" => 17500,
        "mxn" | "thb" => 1000,
        "nok" | "sek" => 300,
        _ => 50,
    }
}

/// Why an owner's bundles were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("at most {MAX_BUNDLES} bundles per cabinet")]
    TooMany,
    #[error("a bundle must have between 1 and 100 credits (got {0})")]
    Credits(i64),
    #[error(transparent)]
    Amount(#[from] MoneyError),
    #[error("{title} costs {price}, below Stripe's minimum charge of {minimum} for {code}")]
    BelowMinimum {
        title: String,
        price: Money,
        minimum: Money,
        code: String,
    },
    #[error("{0} is implausibly expensive")]
    TooExpensive(String),
    #[error("a bundle label must be at most 40 plain characters")]
    Label,
    #[error("two bundles give {0} credits; keep one")]
    SameCredits(i64),
}

/// Checks an owner's bundles and returns them sorted by credits.
pub fn validate_bundles(
    bundles: &[Bundle],
    currency: &Currency,
) -> Result<Vec<Bundle>, BundleError> {
    if bundles.len() > MAX_BUNDLES {
        return Err(BundleError::TooMany);
    }
    let min = minimum_charge(currency);
    let mut out: Vec<Bundle> = Vec::with_capacity(bundles.len());
    for b in bundles {
        let label = b.label.trim().to_owned();
        if !(1..=100).contains(&b.credits) {
            return Err(BundleError::Credits(b.credits));
        }
        currency.check_amount(b.price_minor)?;
        if b.price_minor < min {
            return Err(BundleError::BelowMinimum {
                title: b.title(),
                price: Money {
                    minor: b.price_minor,
                    currency: currency.clone(),
                },
                minimum: Money {
                    minor: min,
                    currency: currency.clone(),
                },
                code: currency.as_str().to_ascii_uppercase(),
            });
        }
        if b.price_minor > 1_000_000 {
            return Err(BundleError::TooExpensive(b.title()));
        }
        if label.chars().count() > 40 || label.chars().any(char::is_control) {
            return Err(BundleError::Label);
        }
        if out.iter().any(|o| o.credits == b.credits) {
            return Err(BundleError::SameCredits(b.credits));
        }
        out.push(Bundle {
            credits: b.credits,
            price_minor: b.price_minor,
            label,
        });
    }
    out.sort_by_key(|b| b.credits);
    Ok(out)
}

/// What the pay page offers: the owner's bundles, or a single bundle at the base price,
/// raised to enough credits to clear Stripe's minimum charge.
pub fn offered_bundles(
    bundles: &[Bundle],
    price_per_credit: i64,
    currency: &Currency,
) -> Vec<Bundle> {
    if !bundles.is_empty() {
        return bundles.to_vec();
    }
    let min = minimum_charge(currency);
    let credits = ((min + price_per_credit - 1) / price_per_credit.max(1)).max(1);
    vec![Bundle {
        credits,
        price_minor: credits * price_per_credit,
        label: String::new(),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Currency {
        Currency::parse("usd").unwrap()
    }

    fn b(credits: i64, price: i64) -> Bundle {
        Bundle {
            credits,
            price_minor: price,
            label: String::new(),
        }
    }

    #[test]
    fn valid_bundles_are_sorted() {
        let out = validate_bundles(&[b(3, 250), b(1, 100), b(6, 450)], &usd()).unwrap();
        assert_eq!(
            out.iter().map(|b| b.credits).collect::<Vec<_>>(),
            vec![1, 3, 6]
        );
    }

    #[test]
    fn nonsense_is_rejected_with_a_reason() {
        assert!(validate_bundles(&[b(0, 100)], &usd())
            .unwrap_err()
            .to_string()
            .contains("between 1 and 100"));
        assert!(validate_bundles(&[b(1, 49)], &usd())
            .unwrap_err()
            .to_string()
            .contains("minimum charge"));
        assert!(validate_bundles(&[b(1, 100), b(1, 90)], &usd())
            .unwrap_err()
            .to_string()
            .contains("two bundles"));
        let seven: Vec<Bundle> = (1..=7).map(|i| b(i, 100 * i)).collect();
        assert!(validate_bundles(&seven, &usd()).is_err());
        assert!(validate_bundles(&[b(1, 29)], &Currency::parse("gbp").unwrap()).is_err());
        assert!(validate_bundles(&[b(1, 30)], &Currency::parse("gbp").unwrap()).is_ok());
    }

    #[test]
    fn default_offer_clears_the_minimum() {
        assert_eq!(offered_bundles(&[], 100, &usd()), vec![b(1, 100)]);
        assert_eq!(offered_bundles(&[], 25, &usd()), vec![b(2, 50)]);
        assert_eq!(offered_bundles(&[], 30, &usd()), vec![b(2, 60)]);
        assert_eq!(b(3, 250).title(), "3 plays");
    }
}
