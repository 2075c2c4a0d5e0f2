//! Value parsers for clap: each says what was wrong with the value in a few words.

/// A number in [0, 1] (DDIM's eta).
pub fn eta(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{v} is outside [0, 1]"));
    }
    Ok(v)
}

/// A classifier-free guidance scale: a number in 0..=[`edgediff_core::guidance::MAX_GUIDANCE`].
pub fn guidance(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if !(0.0..=edgediff_core::guidance::MAX_GUIDANCE).contains(&v) {
        return Err(format!("{s} must be a number in 0..={}", edgediff_core::guidance::MAX_GUIDANCE));
    }
    Ok(v)
}

/// `KEY=VALUE` with a non-empty key, both trimmed.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("'{s}' is not KEY=VALUE"))?;
    if k.trim().is_empty() {
        return Err(format!("'{s}' has an empty key"));
    }
    Ok((k.trim().to_string(), v.trim().to_string()))
}

/// Any `FromStr` type, with its own error message.
pub fn from_str<T: std::str::FromStr>(s: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_outside_their_range_are_refused() {
        assert_eq!(eta("0.5"), Ok(0.5));
        assert!(eta("1.5").unwrap_err().contains("outside [0, 1]"));
        assert!(eta("x").unwrap_err().contains("not a number"));
        assert_eq!(guidance("3"), Ok(3.0));
        for bad in ["-1", "nan", "inf", "101"] {
            assert!(guidance(bad).is_err(), "{bad}");
        }
        assert_eq!(key_value(" a = b "), Ok(("a".into(), "b".into())));
        assert!(key_value("=b").unwrap_err().contains("empty key"));
        assert!(key_value("ab").unwrap_err().contains("KEY=VALUE"));
        assert_eq!(from_str::<u8>("7"), Ok(7));
    }
}
