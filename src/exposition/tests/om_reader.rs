//! A strict OpenMetrics 1.0 reader, for tests: it follows the specification's ABNF and
//! its MUSTs (and the Python reference parser's extra checks), and is stricter than both
//! where our writer promises more (a `# TYPE` for every family, metadata in the order
//! TYPE, UNIT, HELP, escapes only of `\\`, `\n`, `\"`). Any deviation is an error with the
//! offending line, so a property test that writes and reads back proves the output valid.

use std::collections::HashSet;

use crate::exemplar::is_label_name;
use crate::exposition::openmetrics::is_metric_name;

/// One family as read.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Family {
    pub name: String,
    pub kind: String,
    pub unit: Option<String>,
    pub help: Option<String>,
    pub samples: Vec<Sample>,
}

/// One sample line as read.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// The value as written (integers stay recognisable).
    pub value_text: String,
    pub timestamp: Option<String>,
    pub exemplar: Option<Exemplar>,
}

/// An exemplar as read.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Exemplar {
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp: Option<String>,
}

impl Sample {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The labels without `name` (the series' own labels, without `le` or `quantile`).
    pub fn labels_without(&self, name: &str) -> Vec<(String, String)> {
        self.labels.iter().filter(|(n, _)| n != name).cloned().collect()
    }
}

/// Reads a whole exposition; `Err` names the first violation.
pub(super) fn read(text: &str) -> Result<Vec<Family>, String> {
    let body = text.strip_suffix("# EOF\n").ok_or("the exposition does not end with `# EOF\\n`")?;
    let mut families: Vec<Family> = Vec::new();
    let mut seen_names = HashSet::new();
    for line in body.split_terminator('\n') {
        let fail = |why: &str| format!("{why}: {line:?}");
        if line.is_empty() {
            return Err(fail("blank line"));
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let (keyword, rest) = meta.split_once(' ').ok_or_else(|| fail("bad metadata"))?;
            let (name, value) = rest.split_once(' ').ok_or_else(|| fail("bad metadata"))?;
            if !is_metric_name(name) {
                return Err(fail("bad metric name"));
            }
            match keyword {
                "TYPE" => {
                    let suffixes: &[&str] = match value {
                        "counter" => &["", "_total", "_created"],
                        "gauge" | "unknown" | "stateset" | "info" => &[""],
                        "summary" => &["", "_count", "_sum", "_created"],
                        "histogram" => &["", "_count", "_sum", "_bucket", "_created"],
                        "gaugehistogram" => &["", "_gcount", "_gsum", "_bucket"],
                        _ => return Err(fail("unknown type")),
                    };
                    for suffix in suffixes {
                        if !seen_names.insert(format!("{name}{suffix}")) {
                            return Err(fail("clashing name"));
                        }
                    }
                    families.push(Family {
                        name: name.into(),
                        kind: value.into(),
                        unit: None,
                        help: None,
                        samples: Vec::new(),
                    });
                }
                "UNIT" | "HELP" => {
                    let family =
                        families.last_mut().filter(|f| f.name == name).ok_or_else(|| fail("metadata before TYPE"))?;
                    if !family.samples.is_empty() || family.help.is_some() {
                        return Err(fail("metadata out of order"));
                    }
                    if keyword == "HELP" {
                        family.help = Some(unescape(value).ok_or_else(|| fail("bad escape in HELP"))?);
                    } else if family.unit.is_some() || !name.ends_with(&format!("_{value}")) || value.is_empty() {
                        return Err(fail("bad UNIT"));
                    } else {
                        family.unit = Some(value.into());
                    }
                }
                _ => return Err(fail("unknown metadata")),
            }
            continue;
        }
        let family = families.last_mut().ok_or_else(|| fail("sample before any TYPE"))?;
        let sample = parse_sample(line).ok_or_else(|| fail("malformed sample"))?;
        check_sample(family, &sample).map_err(|why| fail(&why))?;
        family.samples.push(sample);
    }
    for family in &families {
        check_family(family).map_err(|why| format!("{why}: family {}", family.name))?;
    }
    Ok(families)
}

fn check_sample(family: &Family, sample: &Sample) -> Result<(), String> {
    let suffix = sample.name.strip_prefix(family.name.as_str()).ok_or("sample outside its family")?;
    let allowed: &[&str] = match family.kind.as_str() {
        "counter" => &["_total"],
        "gauge" | "unknown" => &[""],
        "summary" => &["", "_count", "_sum"],
        "histogram" => &["_bucket", "_count", "_sum"],
        "gaugehistogram" => &["_bucket", "_gcount", "_gsum"],
        _ => &[],
    };
    if !allowed.contains(&suffix) {
        return Err(format!("suffix {suffix:?} in a {}", family.kind));
    }
    let counter_like = ["_total", "_sum", "_count", "_bucket", "_gcount"].contains(&suffix);
    if counter_like && (sample.value.is_nan() || sample.value < 0.0) {
        return Err("counter-like sample NaN or negative".into());
    }
    if ["_bucket", "_count", "_gcount"].contains(&suffix) && !sample.value_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("count not an integer".into());
    }
    if sample.exemplar.is_some() && !["_total", "_bucket"].contains(&suffix) {
        return Err("exemplar on a sample that cannot have one".into());
    }
    let reserved = match family.kind.as_str() {
        "histogram" | "gaugehistogram" => "le",
        "summary" => "quantile",
        _ => "",
    };
    let needs_reserved = suffix == "_bucket" || (family.kind == "summary" && suffix.is_empty());
    if needs_reserved {
        let text = sample.label(reserved).ok_or("missing le/quantile")?;
        let v = parse_number(text).ok_or("le/quantile not a number")?;
        // The writer spells `le` and `quantile` as the text format does (see
        // `push_label_float`), so that a bucket is one series in either format.
        let expected = crate::exposition::number::GoFloat(v).to_string();
        if v.is_nan() || text != expected {
            return Err(format!("le/quantile {text:?} not spelled as client_golang spells it"));
        }
        if reserved == "quantile" && (!(0.0..=1.0).contains(&v) || sample.value < 0.0) {
            return Err("quantile out of range or negative".into());
        }
    }
    if sample.labels.iter().filter(|(n, _)| n == reserved).count() > usize::from(needs_reserved) {
        return Err(format!("label {reserved:?} on the series itself"));
    }
    Ok(())
}

/// A label set, in the order written.
type Labels = Vec<(String, String)>;

/// Series-level rules: unique, contiguous label sets; histogram buckets in order, ending at
/// `+Inf`, `_count` equal to it and present exactly with `_sum`, no `_sum` below zero.
fn check_family(family: &Family) -> Result<(), String> {
    let mut groups: Vec<(Labels, Vec<&Sample>)> = Vec::new();
    for sample in &family.samples {
        let mut key = match family.kind.as_str() {
            "histogram" | "gaugehistogram" => sample.labels_without("le"),
            "summary" => sample.labels_without("quantile"),
            _ => sample.labels.clone(),
        };
        key.sort();
        match groups.last_mut() {
            Some((last, samples))
                if *last == key && !["counter", "gauge", "unknown"].contains(&family.kind.as_str()) =>
            {
                samples.push(sample)
            }
            _ => {
                if groups.iter().any(|(k, _)| *k == key) {
                    return Err(format!("label set {key:?} repeated or not contiguous"));
                }
                groups.push((key, vec![sample]));
            }
        }
    }
    if !family.kind.contains("histogram") {
        return Ok(());
    }
    let (count_suffix, sum_suffix) = if family.kind == "histogram" { ("_count", "_sum") } else { ("_gcount", "_gsum") };
    for (key, samples) in &groups {
        let part =
            |suffix: &str| samples.iter().filter(|s| s.name == format!("{}{suffix}", family.name)).collect::<Vec<_>>();
        let buckets = part("_bucket");
        let (mut bound, mut value) = (f64::NEG_INFINITY, 0.0);
        for (i, b) in buckets.iter().enumerate() {
            let le = parse_number(b.label("le").unwrap_or_default()).unwrap_or(f64::NAN);
            if (i > 0 && le <= bound) || b.value < value {
                return Err(format!("buckets out of order in {key:?}"));
            }
            (bound, value) = (le, b.value);
        }
        if bound != f64::INFINITY {
            return Err(format!("no +Inf bucket in {key:?}"));
        }
        let (count, sum) = (part(count_suffix), part(sum_suffix));
        if count.len() > 1 || sum.len() > 1 || count.len() != sum.len() {
            return Err(format!("count and sum not both present once in {key:?}"));
        }
        if let (Some(count), Some(sum)) = (count.first(), sum.first()) {
            let negative = buckets.iter().any(|b| b.label("le").and_then(parse_number).is_some_and(|le| le < 0.0));
            if count.value != value {
                return Err(format!("count is not the +Inf bucket in {key:?}"));
            }
            if family.kind == "histogram" && negative {
                return Err(format!("sum with negative buckets in {key:?}"));
            }
            if sum.value.is_nan() || (sum.value < 0.0 && !(family.kind == "gaugehistogram" && negative)) {
                return Err(format!("bad sum in {key:?}"));
            }
        }
    }
    Ok(())
}

/// `name{labels} value [timestamp] [# {labels} value [timestamp]]`, single spaces.
fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if rest.starts_with('{') {
        let (parsed, after) = parse_labels(rest)?;
        labels = parsed;
        rest = after;
    }
    let (main, exemplar) = match rest.split_once(" # ") {
        Some((main, exemplar)) => (main, Some(exemplar)),
        None => (rest, None),
    };
    let mut words = main.strip_prefix(' ')?.split(' ');
    let value_text = words.next()?.to_owned();
    let value = parse_number(&value_text)?;
    let timestamp = timestamp(words.next())?;
    if words.next().is_some() {
        return None;
    }
    let exemplar = match exemplar {
        Some(text) => Some(parse_exemplar(text)?),
        None => None,
    };
    Some(Sample { name: name.into(), labels, value, value_text, timestamp, exemplar })
}

/// An optional timestamp word: `Some(None)` if absent, `None` if it is not a finite number.
fn timestamp(word: Option<&str>) -> Option<Option<String>> {
    match word {
        None => Some(None),
        Some(t) => parse_number(t).filter(|v| v.is_finite()).map(|_| Some(t.to_owned())),
    }
}

fn parse_exemplar(text: &str) -> Option<Exemplar> {
    let (labels, rest) = parse_labels(text)?;
    let chars: usize = labels.iter().map(|(n, v)| n.chars().count() + v.chars().count()).sum();
    if chars > 128 {
        return None;
    }
    let mut words = rest.strip_prefix(' ')?.split(' ');
    let value = parse_number(words.next()?)?;
    let timestamp = timestamp(words.next())?;
    if words.next().is_some() {
        return None;
    }
    Some(Exemplar { labels, value, timestamp })
}

/// `{name="value",...}` with unique, valid names; returns the labels and what follows.
fn parse_labels(text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut rest = text.strip_prefix('{')?;
    let mut labels: Vec<(String, String)> = Vec::new();
    if let Some(after) = rest.strip_prefix('}') {
        return Some((labels, after));
    }
    loop {
        let eq = rest.find('=')?;
        let name = &rest[..eq];
        if !is_label_name(name) || labels.iter().any(|(n, _)| n == name) {
            return None;
        }
        let body = rest[eq + 1..].strip_prefix('"')?;
        let close = closing_quote(body)?;
        labels.push((name.into(), unescape(&body[..close])?));
        rest = &body[close + 1..];
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        rest = rest.strip_prefix(',')?;
    }
}

/// The byte index of the first double quote not escaped by a backslash.
fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            '\n' => return None,
            _ => {}
        }
    }
    None
}

/// Undoes `\\`, `\n`, `\"`; anything else after a backslash, or a raw line feed or double
/// quote, is an error.
pub(super) fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                '"' => out.push('"'),
                _ => return None,
            },
            '\n' | '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// A number per the ABNF: `[sign] digits [. digits] [e [sign] digits]`, or
/// `[sign] inf|infinity`, or `nan`, case-insensitively.
pub(super) fn parse_number(s: &str) -> Option<f64> {
    let lower = s.to_ascii_lowercase();
    let unsigned = lower.strip_prefix(['+', '-']).unwrap_or(&lower);
    if lower == "nan" || unsigned == "inf" || unsigned == "infinity" {
        return lower.parse().ok();
    }
    let (mantissa, exponent) = unsigned.split_once('e').unwrap_or((unsigned, "0"));
    let exponent = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let ok = digits(whole)
        && digits(fraction)
        && !(whole.is_empty() && fraction.is_empty())
        && !exponent.is_empty()
        && digits(exponent);
    if ok { s.parse().ok() } else { None }
}
