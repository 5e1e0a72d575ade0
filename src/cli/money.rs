//! How amounts are typed on the command line, the same for every subcommand (and the
//! same rule as `domain::parse_amount`, which reads them): a number with a decimal point is
//! in the currency's main unit (`1.00` is one dollar), a whole number is in minor units
//! (`100` is 100 cents; for a currency without decimals such as JPY, 100 yen).

pub use crate::domain::parse_amount;

/// The rule as help texts state it, below each command that takes an amount.
pub const HELP: &str = "Amounts: with a decimal point they are in the currency's main unit \
(1.00 or 0.50 for USD, EUR); a whole number is in minor units (100 = 100 cents = 1.00 USD; \
for JPY, 100 yen).";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Currency;

    fn cur(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

    #[test]
    fn both_ways_of_typing_an_amount_mean_the_same() {
        assert_eq!(parse_amount("1.00", &cur("usd")), Ok(100));
        assert_eq!(parse_amount("100", &cur("usd")), Ok(100));
        assert_eq!(parse_amount("2.5", &cur("usd")), Ok(250));
        assert_eq!(parse_amount("100", &cur("jpy")), Ok(100));
        assert_eq!(parse_amount("1.250", &cur("kwd")), Ok(1250));
        for bad in ["", "1.005", "-1.00", "1,00", "abc", "0", "0.00"] {
            assert!(
                parse_amount(bad, &cur("usd")).is_err(),
                "{bad:?} should be refused"
            );
        }
    }
}
