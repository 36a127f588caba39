//! Every `Accept` header Prometheus has sent, verbatim from its source (`scrape/scrape.go`
//! `acceptHeader`, `config/config.go` `ScrapeProtocolsHeaders`), and the format each must
//! get; then every `scrape_protocols` list, built by ports of the two `acceptHeader`
//! generations; then q-value edge cases and hostile strings.

use proptest::prelude::*;

use crate::exposition::Format::{self, OpenMetrics, Protobuf, Text};
use crate::exposition::negotiate::accepts_gzip;

/// (Prometheus versions, setting, header, the format to answer with).
const PROMETHEUS: &[(&str, &str, &str, Format)] = &[
    ("2.0-2.4", "default", "text/plain;version=0.0.4;q=1,*/*;q=0.1", Text),
    (
        "2.5-2.33",
        "default",
        "application/openmetrics-text; version=0.0.1,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        OpenMetrics,
    ),
    (
        "2.34-2.48",
        "default",
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        OpenMetrics,
    ),
    (
        "2.40",
        "default",
        "application/openmetrics-text;version=1.0.0;q=0.75,application/openmetrics-text;q=0.6,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        OpenMetrics,
    ),
    (
        "2.40",
        "--enable-feature=native-histograms",
        "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.75,application/openmetrics-text;q=0.6,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        Protobuf,
    ),
    (
        "2.41-2.48",
        "--enable-feature=native-histograms",
        "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        Protobuf,
    ),
    // 2.49.0 formatted the wildcard's weight as `q=%d`: `*/*;q=2`, and `q=1` with protobuf.
    (
        "2.49.0",
        "default",
        "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=2",
        OpenMetrics,
    ),
    (
        "2.49.0",
        "--enable-feature=native-histograms",
        "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5,application/openmetrics-text;version=1.0.0;q=0.4,application/openmetrics-text;version=0.0.1;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=1",
        Protobuf,
    ),
    (
        "2.49.1-2.55",
        "default",
        "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
        OpenMetrics,
    ),
    (
        "2.49.1-2.55",
        "--enable-feature=native-histograms",
        "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5,application/openmetrics-text;version=1.0.0;q=0.4,application/openmetrics-text;version=0.0.1;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
        Protobuf,
    ),
    (
        "2.55",
        "--enable-feature=utf8-names",
        "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;escaping=allow-utf-8;q=0.3,*/*;q=0.2",
        OpenMetrics,
    ),
    // 3.0-3.3: `escaping=allow-utf-8` appended to every entry, twice on text 1.0.0.
    (
        "3.0-3.3",
        "default",
        "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;escaping=allow-utf-8;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;escaping=allow-utf-8;q=0.3,*/*;q=0.2",
        OpenMetrics,
    ),
    (
        "3.0-3.3",
        "native histograms",
        "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;escaping=allow-utf-8;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;escaping=allow-utf-8;q=0.2,*/*;q=0.1",
        Protobuf,
    ),
    (
        "3.0-3.3",
        "metric_name_validation_scheme: legacy",
        "application/openmetrics-text;version=1.0.0;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
        OpenMetrics,
    ),
    // 3.4 on (the expected headers of scrape_test.go): escaping only on the 1.0.0 text formats.
    (
        "3.4+",
        "metric_name_escaping_scheme: underscores",
        "application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=underscores;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
        OpenMetrics,
    ),
    (
        "3.4+",
        "proto first, dots",
        "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;escaping=dots;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=dots;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
        Protobuf,
    ),
    (
        "3.4+",
        "default",
        "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
        OpenMetrics,
    ),
    (
        "3.4+",
        "scrape_native_histograms: true",
        "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
        Protobuf,
    ),
];

#[test]
fn every_prometheus_header_gets_its_first_choice() {
    for (versions, setting, header, want) in PROMETHEUS {
        assert_eq!(Format::negotiate(Some(header)), *want, "Prometheus {versions} ({setting}): {header}");
    }
}

/// The scrape protocols of `config.ScrapeProtocolsHeaders`: (name, header, format, takes
/// an `escaping=` parameter from 3.4 on).
const PROTOCOLS: [(&str, &str, Format, bool); 5] = [
    (
        "PrometheusProto",
        "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited",
        Protobuf,
        false,
    ),
    ("PrometheusText0.0.4", "text/plain;version=0.0.4", Text, false),
    ("PrometheusText1.0.0", "text/plain;version=1.0.0", Text, true),
    ("OpenMetricsText0.0.1", "application/openmetrics-text;version=0.0.1", OpenMetrics, false),
    ("OpenMetricsText1.0.0", "application/openmetrics-text;version=1.0.0", OpenMetrics, true),
];

/// Port of 3.4+'s `acceptHeader(sps, scheme)`.
fn accept_header_v3_4(protocols: &[usize], escaping: &str) -> String {
    let mut weight = PROTOCOLS.len() + 1;
    let mut vals = Vec::new();
    for &p in protocols {
        let (_, header, _, escapes) = PROTOCOLS[p];
        let mut val = header.to_owned();
        if escapes {
            val += &format!(";escaping={escaping}");
        }
        val += &format!(";q=0.{weight}");
        vals.push(val);
        weight -= 1;
    }
    vals.push(format!("*/*;q=0.{weight}"));
    vals.join(",")
}

/// Port of 2.49.1-3.3's `acceptHeader(sps, validationScheme)`: `utf8` appends
/// `escaping=allow-utf-8` everywhere; `protocols` is the count in `ScrapeProtocolsHeaders`
/// (4 before 3.0, where text 1.0.0 arrived with the escaping already in its header).
fn accept_header_v2_49(protocols: &[usize], utf8: bool, v3: bool) -> String {
    let known = if v3 { 5 } else { 4 };
    let mut weight = known + 1;
    let mut vals = Vec::new();
    for &p in protocols {
        let (_, header, _, _) = PROTOCOLS[p];
        let mut val = header.to_owned();
        if v3 && p == 2 {
            val += ";escaping=allow-utf-8";
        }
        if utf8 {
            val += ";escaping=allow-utf-8";
        }
        val += &format!(";q=0.{weight}");
        vals.push(val);
        weight -= 1;
    }
    vals.push(format!("*/*;q=0.{weight}"));
    vals.join(",")
}

/// Every ordered selection of `0..n` of length 1..=n: all valid `scrape_protocols` lists.
fn orderings(n: usize) -> Vec<Vec<usize>> {
    fn extend(prefix: &mut Vec<usize>, n: usize, out: &mut Vec<Vec<usize>>) {
        for next in 0..n {
            if !prefix.contains(&next) {
                prefix.push(next);
                out.push(prefix.clone());
                extend(prefix, n, out);
                prefix.pop();
            }
        }
    }
    let mut out = Vec::new();
    extend(&mut Vec::new(), n, &mut out);
    out
}

#[test]
fn every_scrape_protocols_list_gets_its_first_choice() {
    let all = orderings(5);
    assert_eq!(all.len(), 325);
    // The ports reproduce the verbatim headers above.
    assert_eq!(accept_header_v3_4(&[4, 3, 2, 1], "allow-utf-8"), PROMETHEUS[16].2);
    assert_eq!(accept_header_v3_4(&[0, 4, 3, 2, 1], "dots"), PROMETHEUS[15].2);
    assert_eq!(accept_header_v2_49(&[4, 3, 2, 1], true, true), PROMETHEUS[11].2);
    assert_eq!(accept_header_v2_49(&[0, 4, 3, 1], false, false), PROMETHEUS[9].2);
    let mut checked = 0;
    for list in &all {
        let want = PROTOCOLS[list[0]].2;
        for escaping in ["allow-utf-8", "underscores", "dots", "values"] {
            let header = accept_header_v3_4(list, escaping);
            assert_eq!(Format::negotiate(Some(&header)), want, "{header}");
            checked += 1;
        }
        for utf8 in [false, true] {
            let header = accept_header_v2_49(list, utf8, true);
            assert_eq!(Format::negotiate(Some(&header)), want, "{header}");
            checked += 1;
            // Before 3.0 there was no text 1.0.0 protocol.
            if !list.contains(&2) {
                let header = accept_header_v2_49(list, utf8, false);
                assert_eq!(Format::negotiate(Some(&header)), want, "{header}");
                checked += 1;
            }
        }
    }
    assert!(checked > 2000);
}

#[test]
fn q_values_decide() {
    let cases: &[(&str, Format)] = &[
        ("text/plain;version=0.0.4;q=0.9,application/openmetrics-text;version=1.0.0;q=0.5", Text),
        ("application/openmetrics-text;q=0.5,text/plain;q=0.5", OpenMetrics),
        ("text/plain;q=0.5,application/openmetrics-text;q=0.5", Text),
        ("application/openmetrics-text;version=1.0.0;q=0,text/plain;q=0.1", Text),
        ("application/openmetrics-text;version=1.0.0;q=0", Text),
        ("application/openmetrics-text;version=1.0.0;q=0.000,*/*", Text),
        ("application/openmetrics-text;version=1.0.0;q=0.001", OpenMetrics),
        ("application/openmetrics-text;version=1.0.0;q=1.000", OpenMetrics),
        ("application/openmetrics-text;version=1.0.0;Q=\"0.7\",text/plain;q=0.6", OpenMetrics),
        // A malformed q disqualifies its entry only.
        ("application/openmetrics-text;q=high,text/plain;q=0.1", Text),
        (
            "application/openmetrics-text;q=-1,application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.1",
            Protobuf,
        ),
        // Protobuf needs both parameters, and the delimited encoding.
        ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily", Text),
        ("application/vnd.google.protobuf;encoding=delimited", Text),
        ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text", Text),
        ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=compact-text", Text),
        (
            "APPLICATION/VND.GOOGLE.PROTOBUF ; PROTO=io.prometheus.client.MetricFamily ; Encoding=\"delimited\"",
            Protobuf,
        ),
        // Versions: known ones only.
        ("application/openmetrics-text;version=2.0.0", Text),
        ("application/openmetrics-text;version=0.0.1", OpenMetrics),
        ("application/openmetrics-text", OpenMetrics),
        ("text/plain;version=9.9.9;q=1,application/openmetrics-text;q=0.1", OpenMetrics),
        // Wildcards and the unknown fall back to text.
        ("*/*", Text),
        ("text/*", Text),
        ("application/json", Text),
        ("*/*;q=1,application/openmetrics-text;version=1.0.0;q=0.1", OpenMetrics),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", Text),
    ];
    for (header, want) in cases {
        assert_eq!(Format::negotiate(Some(header)), *want, "{header}");
    }
    for missing in [None, Some(""), Some("   "), Some(","), Some(";;;"), Some("/"), Some("\"")] {
        assert_eq!(Format::negotiate(missing), Text, "{missing:?}");
    }
}

#[test]
fn gzip() {
    let yes = [
        "gzip",
        "GZIP",
        "gzip, deflate, br",
        "br;q=1.0, gzip;q=0.8, *;q=0.1",
        "*",
        "identity, *;q=0.5",
        "x-gzip",
        "deflate, gzip;q=0.001",
    ];
    let no =
        ["", "identity", "gzip;q=0", "gzip;q=0.000, *", "*;q=0", "deflate, br", "gzip;q=bad", "gzipx", "br, *;q=0"];
    for header in yes {
        assert!(accepts_gzip(Some(header)), "{header}");
    }
    for header in no {
        assert!(!accepts_gzip(Some(header)), "{header}");
    }
    assert!(!accepts_gzip(None));
}

#[test]
fn huge_headers_are_fine() {
    let mut header = "x/y;a=\"b,c\";q=0.5,".repeat(100_000);
    header.push_str("application/openmetrics-text;version=1.0.0;q=0.9");
    assert_eq!(Format::negotiate(Some(&header)), OpenMetrics);
    let quotes = "\"".repeat(1 << 20);
    assert_eq!(Format::negotiate(Some(&quotes)), Text);
    assert!(!accepts_gzip(Some(&quotes)));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn hostile_headers_never_panic(header in "(application/|text/|vnd.google.protobuf|openmetrics-text|plain|\\*/\\*|;|,|=|q=|0\\.|1|version=|\"|\\\\| |\u{0}|é|\u{fffd}|[ -~])*") {
        let _ = Format::negotiate(Some(&header));
        let _ = accepts_gzip(Some(&header));
    }

    #[test]
    fn appending_an_unacceptable_entry_changes_nothing(i in 0..PROMETHEUS.len(), junk in "[a-z]{1,8}/[a-z]{1,8}(;q=0)?") {
        let (_, _, header, want) = PROMETHEUS[i];
        prop_assert_eq!(Format::negotiate(Some(&format!("{header},{junk}"))), want);
    }
}
