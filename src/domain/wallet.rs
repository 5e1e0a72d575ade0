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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageError {
    #[error("a top-up must pay and credit more than zero")]
    NotPositive,
    #[error("a top-up cannot credit less than it costs")]
    CreditBelowPay,
    #[error("at most 6 top-up packages")]
    TooMany,
    #[error("{0}")]
    Amount(String),
}

pub fn validate_packages(
    packages: &[TopupPackage],
    currency: &Currency,
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
        validate_packages(&d, &usd).unwrap();
        let bad = [TopupPackage {
            pay_minor: 1000,
            credit_minor: 900,
            label: String::new(),
        }];
        assert_eq!(
            validate_packages(&bad, &usd),
            Err(PackageError::CreditBelowPay)
        );
    }
}
