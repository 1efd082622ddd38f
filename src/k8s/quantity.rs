//! Kubernetes resource quantities (`100m`, `1.5`, `128Mi`, `1e3`, `2G`) as integers, rounded up
//! like `resource.Quantity.MilliValue()` / `Value()`.

/// Why a quantity string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {0:?}")]
pub struct QuantityError(pub String);

/// The quantity times 1000, rounded up (`MilliValue`).
pub fn parse_milli(s: &str) -> Result<i128, QuantityError> {
    parse_scaled(s, 3)
}

/// The quantity, rounded up (`Value`).
pub fn parse_value(s: &str) -> Result<i128, QuantityError> {
    parse_scaled(s, 0)
}

/// The quantity times 10^`scale`, rounded up (towards +inf).
fn parse_scaled(s: &str, scale: i32) -> Result<i128, QuantityError> {
    let err = || QuantityError(s.to_owned());
    let t = s.trim();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let num_len = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, suffix) = t.split_at(num_len);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return Err(err());
    }
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    let digits = format!("{int_part}{frac_part}");
    let mut mantissa: i128 = 0;
    for d in digits.bytes() {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(i128::from(d - b'0')))
            .ok_or_else(err)?;
    }
    // value = mantissa * 10^(exp10 - frac_len) * 2^exp2
    let (exp10, exp2): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ if suffix.starts_with(['e', 'E']) => (suffix[1..].parse::<i32>().map_err(|_| err())?, 0),
        _ => return Err(err()),
    };
    let frac_len = i32::try_from(frac_part.len()).map_err(|_| err())?;
    let mut value = mantissa
        .checked_mul(1i128.checked_shl(exp2).ok_or_else(err)?)
        .ok_or_else(err)?;
    // Checked: the exponent comes from user input ("1e2147483647").
    let e = exp10
        .checked_sub(frac_len)
        .and_then(|e| e.checked_add(scale))
        .ok_or_else(err)?;
    if e >= 0 {
        let p = 10i128
            .checked_pow(u32::try_from(e).map_err(|_| err())?)
            .ok_or_else(err)?;
        value = value.checked_mul(p).ok_or_else(err)?;
        Ok(if neg { -value } else { value })
    } else {
        let p = 10i128
            .checked_pow(e.unsigned_abs())
            .unwrap_or(i128::MAX);
        let q = value / p;
        let r = value % p;
        // Round towards +inf: up for positive remainders, truncate for negatives.
        Ok(if neg {
            -q
        } else if r != 0 {
            q + 1
        } else {
            q
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu() {
        assert_eq!(parse_milli("100m"), Ok(100));
        assert_eq!(parse_milli("1"), Ok(1000));
        assert_eq!(parse_milli("0.5"), Ok(500));
        assert_eq!(parse_milli("2.25"), Ok(2250));
        assert_eq!(parse_milli("1500u"), Ok(2), "rounded up");
        assert_eq!(parse_milli("1e3"), Ok(1_000_000));
        assert_eq!(parse_milli("-100m"), Ok(-100));
    }

    #[test]
    fn memory() {
        assert_eq!(parse_value("128Mi"), Ok(128 * 1024 * 1024));
        assert_eq!(parse_value("1Gi"), Ok(1 << 30));
        assert_eq!(parse_value("1G"), Ok(1_000_000_000));
        assert_eq!(parse_value("1.5Ki"), Ok(1536));
        assert_eq!(parse_value("64k"), Ok(64_000));
        assert_eq!(parse_value("1000"), Ok(1000));
        assert_eq!(parse_value("100m"), Ok(1), "rounded up");
        assert_eq!(parse_value("12E"), Ok(12_000_000_000_000_000_000));
    }

    #[test]
    fn hostile_exponents_do_not_panic() {
        for s in ["1e2147483647", "1.5e2147483647", "1e-2147483648", "0.001e-2147483648", "9e99999999999", "1e-99", "99999999999999999999999999999999999999999Ei"] {
            let _ = parse_milli(s);
            let _ = parse_value(s);
        }
        assert!(parse_milli("1e2147483647").is_err());
        assert_eq!(parse_milli("1e-2147483648"), Ok(1), "tiny positive values round up");
    }

    #[test]
    fn invalid() {
        for s in ["", "m", "1.2.3", "12x", "Mi", "1e", "--1", "."] {
            assert!(parse_value(s).is_err(), "{s}");
        }
    }
}
