//! How amounts are typed on the command line, the same for every subcommand: in the
//! currency's main unit with its decimal point, as on a price tag (`1.00`, `0.50`, `2.5`
//! for USD; `100` for JPY, which has no decimals). A bare `100` is refused for a currency
//! with decimals, so it can never be read as $100 when cents were meant, or the reverse.

use crate::domain::Currency;

/// The rule as help texts state it, below each command that takes an amount.
pub const HELP: &str = "Amounts are typed in the currency's main unit with its decimals, as on a \
price tag: 1.00 or 0.50 (USD, EUR), 100 (JPY). A bare 100 is refused for USD: write 100.00 or 1.00.";

/// The rule in one line, for error messages.
pub const RULE: &str =
    "in the currency's main unit with its decimals, as on a price tag: 1.00 or 0.50 (USD, EUR), 100 (JPY)";

/// Parses a positive amount typed by an owner into minor units.
pub fn parse_amount(text: &str, currency: &Currency) -> Result<i64, String> {
    let t = text.trim();
    let code = currency.as_str().to_ascii_uppercase();
    let places = currency.decimals() as usize;
    let bad = || format!("{text:?} is not an amount in {code}; write it {RULE}");
    let (whole, frac) = match t.split_once('.') {
        Some((whole, frac)) if places > 0 => (whole, frac),
        Some(_) => {
            return Err(format!(
                "{code} has no decimals: write {text:?} without a point"
            ))
        }
        None if places > 0 => {
            let example = format!("{t}.{}", "0".repeat(places));
            return Err(format!(
                "{text:?} is ambiguous: write {example} for {t} {code} (amounts are {RULE})"
            ));
        }
        None => (t, ""),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (places > 0 && !digits(frac)) {
        return Err(bad());
    }
    if frac.len() > places {
        return Err(format!(
            "{text:?} has more than {places} decimals, the most {code} has"
        ));
    }
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    let frac: i64 = if places == 0 {
        0
    } else {
        format!("{frac:0<places$}").parse().map_err(|_| bad())?
    };
    let minor = whole
        .checked_mul(10i64.pow(places as u32))
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(bad)?;
    if minor <= 0 {
        return Err("the amount must be greater than zero".into());
    }
    Ok(minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

    #[test]
    fn amounts_are_read_in_the_main_unit_with_decimals() {
        assert_eq!(parse_amount("1.00", &cur("usd")), Ok(100));
        assert_eq!(parse_amount("0.50", &cur("eur")), Ok(50));
        assert_eq!(parse_amount("2.5", &cur("usd")), Ok(250));
        assert_eq!(parse_amount(" 12.34 ", &cur("gbp")), Ok(1234));
        assert_eq!(parse_amount("100", &cur("jpy")), Ok(100));
        assert_eq!(parse_amount("1.250", &cur("kwd")), Ok(1250));
    }

    #[test]
    fn a_bare_whole_number_is_refused_where_it_could_mean_cents() {
        let err = parse_amount("100", &cur("usd")).unwrap_err();
        assert!(err.contains("ambiguous") && err.contains("100.00"), "{err}");
    }

    #[test]
    fn malformed_or_non_positive_amounts_are_refused() {
        for text in [
            "", "1.", ".50", "1.005", "-1.00", "1,00", "abc", "0.00", "1.2.3",
        ] {
            assert!(
                parse_amount(text, &cur("usd")).is_err(),
                "{text:?} should be refused"
            );
        }
        assert!(parse_amount("1.5", &cur("jpy")).is_err());
        assert!(parse_amount("0", &cur("jpy")).is_err());
    }
}
