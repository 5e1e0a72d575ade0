//! Player wallets: top-up packages, the signed cookie that binds a wallet to a phone, and
//! the rule for what a balance can pay.

use super::{Currency, Keys};

/// Pay `pay_minor`, get `credit_minor` on the balance (more when there is a bonus).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopupPackage {
    pub pay_minor: i64,
    pub credit_minor: i64,
    #[serde(default)]
    pub label: String,
}

impl TopupPackage {
    pub fn bonus_minor(&self) -> i64 {
        (self.credit_minor - self.pay_minor).max(0)
    }
}

/// What a fresh installation offers until the owner sets its own: 10 → 10 and 20 → 22
/// (a 10% bonus) in the currency's main unit.
pub fn default_packages(currency: &Currency) -> Vec<TopupPackage> {
    let unit = 10i64.pow(currency.decimals());
    vec![
        TopupPackage {
            pay_minor: 10 * unit,
            credit_minor: 10 * unit,
            label: String::new(),
        },
        TopupPackage {
            pay_minor: 20 * unit,
            credit_minor: 22 * unit,
            label: "10% bonus".into(),
        },
    ]
}

/// What the owner allows in one currency: the smallest and largest top-up, and an optional
/// ceiling on a wallet's balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WalletLimits {
    pub min_topup_minor: i64,
    pub max_topup_minor: i64,
    pub max_balance_minor: Option<i64>,
}

impl WalletLimits {
    /// Until the owner sets its own: 5 to 500 in the main unit, no balance ceiling.
    pub fn default_for(currency: &Currency) -> Self {
        let unit = 10i64.pow(currency.decimals());
        Self {
            min_topup_minor: 5 * unit,
            max_topup_minor: 500 * unit,
            max_balance_minor: None,
        }
    }

    pub fn validate(&self, currency: &Currency) -> Result<(), PackageError> {
        currency
            .check_amount(self.min_topup_minor)
            .map_err(|e| PackageError::Amount(e.to_string()))?;
        if self.min_topup_minor < super::minimum_charge(currency) {
            return Err(PackageError::Limits(
                "the smallest top-up is below Stripe's minimum charge",
            ));
        }
        if self.max_topup_minor < self.min_topup_minor {
            return Err(PackageError::Limits(
                "the largest top-up cannot be below the smallest",
            ));
        }
        if self.max_topup_minor > MAX_TOPUP_CEILING {
            return Err(PackageError::Limits("the largest top-up is too large"));
        }
        if matches!(self.max_balance_minor, Some(m) if m < self.min_topup_minor) {
            return Err(PackageError::Limits(
                "the balance limit cannot be below the smallest top-up",
            ));
        }
        Ok(())
    }

    /// The balance limit a wallet holding `balance_minor` would pass by taking
    /// `credit_minor` more, if it would.
    pub fn exceeded_by(&self, balance_minor: i64, credit_minor: i64) -> Option<i64> {
        self.max_balance_minor
            .filter(|max| balance_minor.saturating_add(credit_minor) > *max)
    }
}

/// No top-up goes above this (in minor units), whatever the owner types: a typo of a few
/// zeros must not become a checkout.
const MAX_TOPUP_CEILING: i64 = 100_000_000;

/// What a top-up of `pay_minor` the player typed gets: the package of that price if there
/// is one (with its bonus), else exactly what is paid, when within the limits.
pub fn custom_topup(
    pay_minor: i64,
    packages: &[TopupPackage],
    limits: &WalletLimits,
) -> Result<TopupPackage, PackageError> {
    if let Some(p) = packages.iter().find(|p| p.pay_minor == pay_minor) {
        return Ok(p.clone());
    }
    if pay_minor < limits.min_topup_minor || pay_minor > limits.max_topup_minor {
        return Err(PackageError::OutOfRange);
    }
    Ok(TopupPackage {
        pay_minor,
        credit_minor: pay_minor,
        label: String::new(),
    })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageError {
    #[error("the amount is outside the allowed top-up range")]
    OutOfRange,
    #[error("{0}")]
    Limits(&'static str),
    #[error("a top-up must pay and credit more than zero")]
    NotPositive,
    #[error("a top-up cannot credit less than it costs")]
    CreditBelowPay,
    #[error("at most 6 top-up packages")]
    TooMany,
    #[error("every package must cost between the smallest and the largest top-up")]
    PackageOutOfRange,
    #[error("a bonus can at most double what is paid")]
    BonusTooLarge,
    #[error("a package cannot credit more than the balance limit")]
    AboveBalanceLimit,
    #[error("{0}")]
    Amount(String),
}

pub fn validate_packages(
    packages: &[TopupPackage],
    currency: &Currency,
    limits: &WalletLimits,
) -> Result<(), PackageError> {
    if packages.len() > 6 {
        return Err(PackageError::TooMany);
    }
    for p in packages {
        if p.pay_minor <= 0 || p.credit_minor <= 0 {
            return Err(PackageError::NotPositive);
        }
        if p.credit_minor < p.pay_minor {
            return Err(PackageError::CreditBelowPay);
        }
        if p.pay_minor < limits.min_topup_minor || p.pay_minor > limits.max_topup_minor {
            return Err(PackageError::PackageOutOfRange);
        }
        // A bonus of more than double is a typo, not a promotion.
        if p.credit_minor > p.pay_minor.saturating_mul(2) {
            return Err(PackageError::BonusTooLarge);
        }
        if matches!(limits.max_balance_minor, Some(max) if p.credit_minor > max) {
            return Err(PackageError::AboveBalanceLimit);
        }
        currency
            .check_amount(p.pay_minor)
            .map_err(|e| PackageError::Amount(e.to_string()))?;
    }
    Ok(())
}

/// The wallet cookie's value: the wallet id and a MAC of it, so a phone can only present
/// a wallet the server gave it.
pub fn cookie_value(keys: &Keys, wallet_id: &str) -> String {
    format!("{wallet_id}.{}", keys.mac("wallet cookie", wallet_id))
}

/// The wallet id in a cookie value, if its MAC is right.
pub fn wallet_of_cookie(keys: &Keys, value: &str) -> Option<String> {
    use subtle::ConstantTimeEq;
    let (id, mac) = value.rsplit_once('.')?;
    let expected = keys.mac("wallet cookie", id);
    bool::from(expected.as_bytes().ct_eq(mac.as_bytes())).then(|| id.to_owned())
}

/// What a card payment of `amount_minor` costs in fees: `basis_points` (290 = 2.9%) of it,
/// rounded to the nearest minor unit, plus `fixed_minor`.
pub fn card_fee(amount_minor: i64, basis_points: i64, fixed_minor: i64) -> i64 {
    (amount_minor * basis_points + 5_000) / 10_000 + fixed_minor
}

/// How long before an unused balance expires its owner is told (when the wallet has an email).
pub const EXPIRY_REMINDER_DAYS: i64 = 14;

/// When a balance last used at `last_activity` expires, `months` later (calendar months;
/// the 31st becomes the month's last day).
pub fn expires_at(
    last_activity: chrono::DateTime<chrono::Utc>,
    months: u32,
) -> chrono::DateTime<chrono::Utc> {
    last_activity
        .checked_add_months(chrono::Months::new(months))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

/// An owner-typed top-up package, `pay:credit[:label]` (`20.00:22.00:10% bonus`), amounts as
/// [`parse_amount`](super::parse_amount) reads them.
pub fn parse_package(text: &str, currency: &Currency) -> Result<TopupPackage, String> {
    let mut parts = text.trim().splitn(3, ':');
    let pay = parts.next().map(|p| super::parse_amount(p, currency));
    let credit = parts.next().map(|p| super::parse_amount(p, currency));
    match (pay, credit) {
        (Some(Ok(pay_minor)), Some(Ok(credit_minor))) => Ok(TopupPackage {
            pay_minor,
            credit_minor,
            label: parts.next().unwrap_or("").trim().to_owned(),
        }),
        (Some(Err(e)), _) | (_, Some(Err(e))) => Err(format!("{text:?}: {e}")),
        _ => Err(format!("{text:?}: write pay:credit, e.g. 20.00:22.00")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_verify_only_with_their_own_mac() {
        let keys = Keys::new(b"0123456789abcdef0123456789abcdef".to_vec());
        let v = cookie_value(&keys, "w1");
        assert_eq!(wallet_of_cookie(&keys, &v).as_deref(), Some("w1"));
        assert_eq!(wallet_of_cookie(&keys, &v.replace("w1.", "w2.")), None);
        assert_eq!(wallet_of_cookie(&keys, "w1"), None);
        let other = Keys::new(b"fedcba9876543210fedcba9876543210".to_vec());
        assert_eq!(wallet_of_cookie(&other, &v), None);
    }

    #[test]
    fn card_fees_and_typed_packages() {
        assert_eq!(card_fee(100, 290, 30), 33);
        assert_eq!(card_fee(2000, 290, 30), 88);
        let usd = Currency::parse("usd").unwrap();
        let p = parse_package("20.00:22.00:10% bonus", &usd).unwrap();
        assert_eq!(
            (p.pay_minor, p.credit_minor, p.label.as_str()),
            (2000, 2200, "10% bonus")
        );
        assert!(parse_package("20", &usd).is_err());
    }

    #[test]
    fn packages_never_credit_less_than_they_cost() {
        let usd = Currency::parse("usd").unwrap();
        let d = default_packages(&usd);
        assert_eq!(d[1].bonus_minor(), 200);
        validate_packages(&d, &usd, &WalletLimits::default_for(&usd)).unwrap();
        let bad = [TopupPackage {
            pay_minor: 1000,
            credit_minor: 900,
            label: String::new(),
        }];
        assert_eq!(
            validate_packages(&bad, &usd, &WalletLimits::default_for(&usd)),
            Err(PackageError::CreditBelowPay)
        );
    }

    #[test]
    fn limits_bound_packages_typed_amounts_and_balances() {
        let usd = Currency::parse("usd").unwrap();
        let limits = WalletLimits {
            min_topup_minor: 500,
            max_topup_minor: 5000,
            max_balance_minor: Some(6000),
        };
        limits.validate(&usd).unwrap();
        let package = |pay, credit| TopupPackage {
            pay_minor: pay,
            credit_minor: credit,
            label: String::new(),
        };
        assert_eq!(
            validate_packages(&[package(400, 400)], &usd, &limits),
            Err(PackageError::PackageOutOfRange)
        );
        assert_eq!(
            validate_packages(&[package(1000, 2500)], &usd, &limits),
            Err(PackageError::BonusTooLarge)
        );
        let big = WalletLimits {
            max_balance_minor: Some(2000),
            ..limits
        };
        assert_eq!(
            validate_packages(&[package(2000, 2200)], &usd, &big),
            Err(PackageError::AboveBalanceLimit)
        );
        // A typed amount gets the package of that price, else exactly what is paid.
        let packages = [package(2000, 2200)];
        assert_eq!(
            custom_topup(2000, &packages, &limits).unwrap().credit_minor,
            2200
        );
        assert_eq!(
            custom_topup(1500, &packages, &limits).unwrap().credit_minor,
            1500
        );
        assert_eq!(
            custom_topup(499, &packages, &limits),
            Err(PackageError::OutOfRange)
        );
        assert_eq!(
            custom_topup(5001, &packages, &limits),
            Err(PackageError::OutOfRange)
        );
        assert_eq!(limits.exceeded_by(4000, 2000), None);
        assert_eq!(limits.exceeded_by(4001, 2000), Some(6000));
        let inverted = WalletLimits {
            min_topup_minor: 1000,
            max_topup_minor: 500,
            max_balance_minor: None,
        };
        assert!(inverted.validate(&usd).is_err());
        assert!(WalletLimits {
            min_topup_minor: 1,
            ..limits
        }
        .validate(&usd)
        .is_err());
    }

    #[test]
    fn balances_expire_calendar_months_after_their_last_use() {
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .with_timezone(&chrono::Utc)
        };
        assert_eq!(
            expires_at(at("2026-01-31T10:00:00Z"), 1),
            at("2026-02-28T10:00:00Z")
        );
        assert_eq!(
            expires_at(at("2026-03-15T00:00:00Z"), 12),
            at("2027-03-15T00:00:00Z")
        );
    }
}
