//! Amounts for people: Stripe's amounts are integers in the currency's minor unit, and currencies differ in
//! how many decimals that unit has (<https://docs.stripe.com/currencies>): none for zero-decimal currencies
//! (¥5,000 is `5000`), three for BHD, JOD, KWD, OMR and TND (12.340 KWD is `12340`), two for the rest. JSON
//! and exports keep the integers; only text for a person goes through [`format_amount`].

/// Stripe's zero-decimal currencies.
const ZERO_DECIMAL: [&str; 16] =
    ["bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"];
/// Stripe's three-decimal currencies.
const THREE_DECIMAL: [&str; 5] = ["bhd", "jod", "kwd", "omr", "tnd"];

/// How many decimals the minor unit of `currency` (ISO code, any case) has.
pub fn exponent(currency: &str) -> u32 {
    let c = currency.to_ascii_lowercase();
    if ZERO_DECIMAL.contains(&c.as_str()) {
        0
    } else if THREE_DECIMAL.contains(&c.as_str()) {
        3
    } else {
        2
    }
}

/// `amount` (minor units) as a person reads it: `5000 JPY`, `12.340 KWD`, `-12.05 EUR`.
pub fn format_amount(amount: i64, currency: &str) -> String {
    let code = currency.to_ascii_uppercase();
    let e = exponent(currency);
    let sign = if amount < 0 { "-" } else { "" };
    let abs = amount.unsigned_abs();
    if e == 0 {
        return format!("{sign}{abs} {code}").trim_end().to_owned();
    }
    let unit = 10u64.pow(e);
    format!("{sign}{}.{:0width$} {code}", abs / unit, abs % unit, width = e as usize).trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_use_the_currency_exponent() {
        assert_eq!(format_amount(5000, "jpy"), "5000 JPY");
        assert_eq!(format_amount(12_340, "kwd"), "12.340 KWD");
        assert_eq!(format_amount(1205, "eur"), "12.05 EUR");
        assert_eq!(format_amount(-1205, "usd"), "-12.05 USD");
        assert_eq!(format_amount(7, "bhd"), "0.007 BHD");
        assert_eq!(format_amount(i64::MIN, "krw"), "-9223372036854775808 KRW");
        assert_eq!(format_amount(99, ""), "0.99");
    }
}
