//! How bucket bounds and quantiles are spelled: the label value is the series' identity, so
//! it must be spelled the way the rest of the ecosystem spells it.

use std::fmt::{self, Display, Write as _};

/// A float as Go's `strconv.FormatFloat(v, 'g', -1, 64)` writes it, which is how
/// client_golang writes `le` and `quantile` in the text format (and so what Prometheus
/// stores for Go services): the shortest round-trip digits, an exponent below 1e-4 and from
/// 1e+06 on (at least two exponent digits), `+Inf`, `-Inf`, `NaN`. So `1`, `0.005`, `2.5`,
/// `1e-05`, `1.048576e+06`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GoFloat(pub f64);

impl Display for GoFloat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v.is_nan() {
            return f.write_str("NaN");
        }
        if v.is_infinite() {
            return f.write_str(if v > 0.0 { "+Inf" } else { "-Inf" });
        }
        // `{:e}` gives the shortest round-trip digits, as Go's: `1.1e23`, `5e-3`, `0e0`.
        let scientific = format!("{v:e}");
        let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
        let exponent: i32 = exponent.parse().unwrap_or(0);
        if (-4..6).contains(&exponent) {
            write!(f, "{v}")
        } else {
            let sign = if exponent < 0 { '-' } else { '+' };
            write!(f, "{mantissa}e{sign}{:02}", exponent.unsigned_abs())
        }
    }
}

/// Appends OpenMetrics' canonical form of `v`: Go's form with `.0` added when it has
/// neither a dot nor an exponent (`1.0`, `1e-05`, `+Inf`).
pub(crate) fn push_canonical(out: &mut String, v: f64) {
    let start = out.len();
    let _ = write!(out, "{}", GoFloat(v));
    let written = &out[start..];
    if v.is_finite() && !written.contains(['.', 'e']) {
        out.push_str(".0");
    }
}

/// The integer `v` holds exactly, if it is one a `u64` can hold (2^64 is the first float
/// past `u64::MAX`); `-0.0` is 0.
pub(crate) fn whole_u64(v: f64) -> Option<u64> {
    (v >= 0.0 && v.fract() == 0.0 && v < 18_446_744_073_709_551_616.0).then_some(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelled_as_go_and_openmetrics_spell_them() {
        // Go: strconv.FormatFloat(v, 'g', -1, 64). OpenMetrics: canonical numbers, with the
        // specification's own list ("Considerations: Canonical Numbers") among them.
        let cases = [
            (0.0, "0", "0.0"),
            (-0.0, "-0", "-0.0"),
            (1.0, "1", "1.0"),
            (-1.0, "-1", "-1.0"),
            (1.7, "1.7", "1.7"),
            (-2.5, "-2.5", "-2.5"),
            (2.5, "2.5", "2.5"),
            (10.0, "10", "10.0"),
            (0.001, "0.001", "0.001"),
            (0.002, "0.002", "0.002"),
            (0.005, "0.005", "0.005"),
            (0.01, "0.01", "0.01"),
            (0.1, "0.1", "0.1"),
            (0.9, "0.9", "0.9"),
            (0.95, "0.95", "0.95"),
            (0.99, "0.99", "0.99"),
            (0.999, "0.999", "0.999"),
            (0.0001, "0.0001", "0.0001"),
            (1e-5, "1e-05", "1e-05"),
            (5e-5, "5e-05", "5e-05"),
            (1e-9, "1e-09", "1e-09"),
            (1e-10, "1e-10", "1e-10"),
            (5e-324, "5e-324", "5e-324"),
            (100_000.0, "100000", "100000.0"),
            (123_456.0, "123456", "123456.0"),
            (1_000_000.0, "1e+06", "1e+06"),
            (1_048_576.0, "1.048576e+06", "1.048576e+06"),
            (1_234_567.0, "1.234567e+06", "1.234567e+06"),
            (4_294_967_296.0, "4.294967296e+09", "4.294967296e+09"),
            (1e10, "1e+10", "1e+10"),
            (1.1e23, "1.1e+23", "1.1e+23"),
            (1e300, "1e+300", "1e+300"),
            (f64::INFINITY, "+Inf", "+Inf"),
            (f64::NEG_INFINITY, "-Inf", "-Inf"),
            (f64::NAN, "NaN", "NaN"),
        ];
        for (v, go, canonical) in cases {
            assert_eq!(GoFloat(v).to_string(), go, "{v:?}");
            let mut out = String::new();
            push_canonical(&mut out, v);
            assert_eq!(out, canonical, "{v:?}");
        }
    }

    #[test]
    fn whole_u64_takes_exactly_the_integers_a_u64_holds() {
        assert_eq!(whole_u64(0.0), Some(0));
        assert_eq!(whole_u64(-0.0), Some(0));
        assert_eq!(whole_u64(2f64.powi(60)), Some(1 << 60));
        assert_eq!(whole_u64(18_446_744_073_709_549_568.0), Some(18_446_744_073_709_549_568));
        for v in [18_446_744_073_709_551_616.0, -1.0, 1.5, f64::NAN, f64::INFINITY] {
            assert_eq!(whole_u64(v), None, "{v:?}");
        }
    }
}
