//! Value parsers the command lines of both binaries share (`trident` and `trident-edge`), so a
//! flag means and checks the same in each; a value out of range is a usage error before
//! anything runs (clap exits with status 2).

/// A number ≥ 0 (points, seconds, …).
pub fn non_negative(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v >= 0.0 => Ok(v),
        _ => Err(format!("`{text}`: expected a number ≥ 0")),
    }
}

/// A score or probability in [0, 1].
pub fn unit_interval(text: &str) -> Result<f32, String> {
    match text.parse::<f32>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{text}`: expected a value in [0, 1]")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_garbage() {
        assert_eq!(non_negative("0"), Ok(0.0));
        assert!(non_negative("-0.1").is_err() && non_negative("NaN").is_err());
        assert_eq!(unit_interval("1"), Ok(1.0));
        assert!(unit_interval("1.5").is_err() && unit_interval("x").is_err());
    }
}
