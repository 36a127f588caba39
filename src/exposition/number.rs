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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelled_as_go_spells_them() {
        // strconv.FormatFloat(v, 'g', -1, 64) for each.
        let cases = [
            (1.0, "1"),
            (0.0, "0"),
            (-1.0, "-1"),
            (0.005, "0.005"),
            (2.5, "2.5"),
            (0.0001, "0.0001"),
            (1e-5, "1e-05"),
            (5e-5, "5e-05"),
            (100_000.0, "100000"),
            (1_000_000.0, "1e+06"),
            (1_048_576.0, "1.048576e+06"),
            (4_294_967_296.0, "4.294967296e+09"),
            (1.1e23, "1.1e+23"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ];
        for (v, go) in cases {
            assert_eq!(GoFloat(v).to_string(), go, "{v}");
        }
        assert_eq!(GoFloat(f64::NAN).to_string(), "NaN");
        let canonical = |v| {
            let mut s = String::new();
            push_canonical(&mut s, v);
            s
        };
        assert_eq!(
            (canonical(1.0), canonical(1e-5), canonical(0.5), canonical(f64::INFINITY)),
            ("1.0".into(), "1e-05".into(), "0.5".into(), "+Inf".into())
        );
    }
}
