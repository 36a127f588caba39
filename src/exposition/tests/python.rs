//! The Python reference parser (`prometheus_client.openmetrics.parser`) reads our
//! OpenMetrics output: the showcase snapshot and a few hundred hostile ones, each checked
//! by `tests/python/om_parse.py` against what the strict reader saw.
//!
//! Without Python or `prometheus_client` the test says "skipped: ..." and passes, unless
//! `REQUIRE_PYTHON_OM=1` is set (CI sets it), when it fails. `PYTHON` picks the interpreter.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;

use super::om_reader::{self, Family};
use super::{om_golden::showcase, strategies};
use crate::exposition::model::MetricFamily;

/// How many random snapshots go to the parser (one Python process reads them all).
const RANDOM_SNAPSHOTS: usize = 300;

fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_opt(s: Option<&str>, out: &mut String) {
    match s {
        Some(s) => json_string(s, out),
        None => out.push_str("null"),
    }
}

fn json_labels(labels: &[(String, String)], out: &mut String) {
    out.push('{');
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(name, out);
        out.push(':');
        json_string(value, out);
    }
    out.push('}');
}

/// What the strict reader saw, as the JSON the script compares against. Values go as the
/// reader's float printed by Rust (`NaN`, `inf`, shortest round-trip digits), which
/// Python's `float()` reads exactly.
fn expected_json(families: &[Family]) -> String {
    let mut out = String::from("[");
    for (i, family) in families.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        json_string(&family.name, &mut out);
        out.push_str(",\"type\":");
        json_string(&family.kind, &mut out);
        out.push_str(",\"unit\":");
        json_opt(family.unit.as_deref(), &mut out);
        out.push_str(",\"help\":");
        json_opt(family.help.as_deref(), &mut out);
        out.push_str(",\"samples\":[");
        for (j, sample) in family.samples.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str("{\"name\":");
            json_string(&sample.name, &mut out);
            out.push_str(",\"labels\":");
            json_labels(&sample.labels, &mut out);
            let _ = write!(out, ",\"value\":\"{}\",\"timestamp\":", sample.value);
            json_opt(sample.timestamp.as_deref(), &mut out);
            out.push_str(",\"exemplar\":");
            match &sample.exemplar {
                None => out.push_str("null"),
                Some(e) => {
                    out.push_str("{\"labels\":");
                    json_labels(&e.labels, &mut out);
                    let _ = write!(out, ",\"value\":\"{}\",\"timestamp\":", e.value);
                    json_opt(e.timestamp.as_deref(), &mut out);
                    out.push('}');
                }
            }
            out.push('}');
        }
        out.push_str("]}");
    }
    out.push(']');
    out
}

/// The interpreter, if it can import the parser; otherwise why not.
fn python() -> Result<String, String> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    match Command::new(&python).args(["-c", "import prometheus_client.openmetrics.parser"]).output() {
        Ok(out) if out.status.success() => Ok(python),
        Ok(out) => Err(format!(
            "{python} cannot import prometheus_client ({}); pip install prometheus-client",
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default()
        )),
        Err(e) => Err(format!("no {python}: {e}")),
    }
}

#[test]
fn python_reference_parser_reads_every_output() {
    let python = match python() {
        Ok(python) => python,
        Err(why) if std::env::var("REQUIRE_PYTHON_OM").is_ok_and(|v| v == "1") => {
            panic!("REQUIRE_PYTHON_OM=1 but {why}")
        }
        Err(why) => {
            println!("skipped: the Python OpenMetrics check: {why}");
            return;
        }
    };
    let dir = std::env::temp_dir().join(format!("tonic-metrics-om-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut snapshots: Vec<Vec<MetricFamily>> = vec![showcase()];
    let mut runner = TestRunner::deterministic();
    let strategy = strategies::families();
    for _ in 0..RANDOM_SNAPSHOTS {
        snapshots.push(strategy.new_tree(&mut runner).unwrap().current());
    }
    for (i, families) in snapshots.iter().enumerate() {
        let text = super::render_om(families);
        let read = om_reader::read(&text).unwrap_or_else(|why| panic!("snapshot {i}: {why}\n{text}"));
        std::fs::write(dir.join(format!("{i:04}.om")), &text).unwrap();
        std::fs::write(dir.join(format!("{i:04}.json")), expected_json(&read)).unwrap();
    }
    let script: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "python", "om_parse.py"].iter().collect();
    let out = Command::new(&python).arg(&script).arg(&dir).output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(out.status.success(), "the Python parser disagrees (files kept in {}):\n{report}", dir.display());
    println!("{}", report.trim_end());
}
