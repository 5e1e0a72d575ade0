//! Money as integer minor units plus an ISO 4217 currency; never floats.

use std::fmt;

/// A lower-case ISO 4217 code, as Stripe writes them (`usd`, `eur`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Currency(String);

/// Why an amount or a currency was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("currency must be a 3-letter ISO code like usd or eur, got {0:?}")]
    Currency(String),
    #[error("{0:?} is not a price (write 150 for cents, or 1.50)")]
    NotAnAmount(String),
    #[error("price must be greater than zero")]
    NotPositive,
    #[error("{code} amounts must be a multiple of 10 minor units (Stripe charges {code} to two of its three decimals); got {minor}")]
    ThreeDecimalStep { code: String, minor: i64 },
    #[error("ISK amounts must be whole krónur (a multiple of 100 in minor units); got {0}")]
    WholeKronur(i64),
}

impl Currency {
    pub fn parse(s: &str) -> Result<Self, MoneyError> {
        let lower = s.trim().to_ascii_lowercase();
        if lower.len() == 3 && lower.bytes().all(|b| b.is_ascii_lowercase()) {
            Ok(Self(lower))
        } else {
            Err(MoneyError::Currency(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Digits after the decimal point in Stripe's minor units: none for its zero-decimal
    /// currencies, three for its three-decimal ones, two for the rest (ISK included, which
    /// Stripe keeps as two-decimal for compatibility).
    pub fn decimals(&self) -> u32 {
        if ZERO_DECIMAL.contains(&self.0.as_str()) {
            0
        } else if THREE_DECIMAL.contains(&self.0.as_str()) {
            3
        } else {
            2
        }
    }

    /// `minor` written plainly in main units, as a form or a spreadsheet takes it: `1.50`,
    /// `-0.05`, `500` (no symbol; Stripe's decimals).
    pub fn plain(&self, minor: i64) -> String {
        match self.decimals() {
            0 => minor.to_string(),
            places => {
                let sign = if minor < 0 { "-" } else { "" };
                let abs = minor.unsigned_abs();
                let unit = 10u64.pow(places);
                let width = places as usize;
                format!("{sign}{}.{:0width$}", abs / unit, abs % unit)
            }
        }
    }

    /// Stripe's rules on amounts beyond the number of decimals: three-decimal currencies
    /// must end in 0 (Stripe charges them in steps of 10 minor units), and ISK must be a
    /// whole number of krónur (a multiple of 100).
    pub fn check_amount(&self, minor: i64) -> Result<(), MoneyError> {
        match self.0.as_str() {
            c if THREE_DECIMAL.contains(&c) && minor % 10 != 0 => {
                Err(MoneyError::ThreeDecimalStep {
                    code: self.0.to_ascii_uppercase(),
                    minor,
                })
            }
            "isk" if minor % 100 != 0 => Err(MoneyError::WholeKronur(minor)),
            _ => Ok(()),
        }
    }
}

/// Stripe's zero-decimal currencies (amounts are whole units).
const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];
/// Stripe's three-decimal currencies.
const THREE_DECIMAL: &[&str] = &["bhd", "jod", "kwd", "omr", "tnd"];

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

impl fmt::Display for Money {
    /// `$1.50`, `€2,50`, `¥500`: the symbol and the number style people read the currency
    /// in, from ISO 4217 data (the `rusty-money` crate). A code the crate does not know is
    /// written `1.50 XYZ`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.currency.as_str().to_ascii_uppercase();
        let stripe = self.currency.decimals();
        if let Some(iso) = rusty_money::iso::find(&code) {
            // Stripe keeps a few currencies (ISK) with more decimals than ISO; such
            // amounts are whole in ISO's unit (check_amount enforces it).
            if iso.exponent <= stripe {
                let minor = self.minor / 10i64.pow(stripe - iso.exponent);
                return write!(f, "{}", rusty_money::Money::from_minor(minor, iso));
            }
        }
        write!(f, "{} {code}", self.currency.plain(self.minor))
    }
}

impl Money {
    /// `minor` in `currency` for people; a currency code that does not parse (an old row,
    /// a foreign event) is shown as it is rather than hidden.
    pub fn format(minor: i64, currency: &str) -> String {
        match Currency::parse(currency) {
            Ok(currency) => Money { minor, currency }.to_string(),
            Err(_) => format!("{minor} {currency}"),
        }
    }
}

/// Parses an owner-typed price: `150` is minor units (cents); `1.50` is major units.
pub fn parse_amount(text: &str, currency: &Currency) -> Result<i64, MoneyError> {
    let t = text.trim();
    let bad = || MoneyError::NotAnAmount(text.to_owned());
    let minor = match t.split_once('.') {
        None => t.parse::<i64>().map_err(|_| bad())?,
        Some((whole, frac)) => {
            let places = currency.decimals() as usize;
            if places == 0
                || frac.is_empty()
                || frac.len() > places
                || !frac.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(bad());
            }
            let whole: i64 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| bad())?
            };
            let frac_val: i64 = format!("{frac:0<places$}").parse().map_err(|_| bad())?;
            whole
                .checked_mul(10i64.pow(places as u32))
                .and_then(|w| w.checked_add(frac_val))
                .ok_or_else(bad)?
        }
    };
    if minor <= 0 {
        return Err(MoneyError::NotPositive);
    }
    Ok(minor)
}

/// Credits bought by `amount` at `price_per_credit`, rounded down: a player is never
/// given a credit they did not fully pay for. Zero or negative inputs buy nothing.
pub fn credits_for_amount(amount_minor: i64, price_per_credit_minor: i64) -> i64 {
    if amount_minor <= 0 || price_per_credit_minor <= 0 {
        return 0;
    }
    amount_minor / price_per_credit_minor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_and_zero_decimal_currencies_follow_stripe() {
        let kwd = Currency::parse("KWD").unwrap();
        assert_eq!(kwd.decimals(), 3);
        assert_eq!(
            Money {
                minor: 1250,
                currency: kwd.clone()
            }
            .to_string(),
            KWD_1250
        );
        assert_eq!(parse_amount("1.25", &kwd), Ok(1250));
        assert!(kwd.check_amount(1250).is_ok());
        assert!(kwd
            .check_amount(1255)
            .unwrap_err()
            .to_string()
            .contains("multiple of 10"));
        let jpy = Currency::parse("jpy").unwrap();
        assert_eq!(
            Money {
                minor: 100,
                currency: jpy.clone()
            }
            .to_string(),
            "¥100"
        );
        assert!(parse_amount("1.5", &jpy).is_err());
        let isk = Currency::parse("isk").unwrap();
        assert!(isk.check_amount(150).is_err());
        assert!(isk.check_amount(10_000).is_ok());
        assert_eq!(
            Money {
                minor: 150,
                currency: Currency::parse("usd").unwrap()
            }
            .to_string(),
            "$1.50"
        );
    }

    #[test]
    fn credits_round_down() {
        assert_eq!(credits_for_amount(100, 100), 1);
        assert_eq!(credits_for_amount(250, 100), 2);
        assert_eq!(credits_for_amount(99, 100), 0);
        assert_eq!(credits_for_amount(0, 100), 0);
        assert_eq!(credits_for_amount(100, 0), 0);
        assert_eq!(credits_for_amount(-100, 100), 0);
    }

    #[test]
    fn amounts_parse_as_minor_or_major_units() {
        let usd = Currency::parse("usd").unwrap();
        let jpy = Currency::parse("jpy").unwrap();
        assert_eq!(parse_amount("150", &usd), Ok(150));
        assert_eq!(parse_amount("1.50", &usd), Ok(150));
        assert_eq!(parse_amount("1.5", &usd), Ok(150));
        assert_eq!(parse_amount("0.05", &usd), Ok(5));
        assert!(parse_amount("1.505", &usd).is_err());
        assert!(parse_amount("0", &usd).is_err());
        assert!(parse_amount("-1", &usd).is_err());
        assert!(parse_amount("abc", &usd).is_err());
        assert!(parse_amount("1.5", &jpy).is_err());
        assert_eq!(parse_amount("500", &jpy), Ok(500));
    }

    #[test]
    fn currency_parse_normalises() {
        assert_eq!(Currency::parse("USD").unwrap().as_str(), "usd");
        assert!(Currency::parse("us").is_err());
        assert!(Currency::parse("u$d").is_err());
    }

    /// 1.250 KWD: Stripe's three decimals kept, with the dinar's symbol.
    const KWD_1250: &str = "د.ك1.250";

    #[test]
    fn money_formats_as_people_read_it() {
        let usd = Currency::parse("usd").unwrap();
        let jpy = Currency::parse("jpy").unwrap();
        assert_eq!(
            Money {
                minor: 250,
                currency: usd.clone()
            }
            .to_string(),
            "$2.50"
        );
        assert_eq!(
            Money {
                minor: 5,
                currency: usd
            }
            .to_string(),
            "$0.05"
        );
        assert_eq!(
            Money {
                minor: 500,
                currency: jpy
            }
            .to_string(),
            "¥500"
        );
        let eur = Currency::parse("eur").unwrap();
        assert_eq!(Money::format(250, "eur"), "€2,50");
        assert_eq!(Money::format(123_456, eur.as_str()), "€1.234,56");
        assert_eq!(Money::format(10_000, "isk"), "kr.100");
        assert_eq!(Money::format(150, "qqq"), "1.50 QQQ");
        assert_eq!(eur.plain(-5), "-0.05");
        assert_eq!(Currency::parse("jpy").unwrap().plain(500), "500");
    }
}
