//! The parser on fixed exporter text (folding, unescaping, look-alike series, strays) and
//! on garbage.

use proptest::prelude::*;

use super::render_text;
use crate::exposition::parse::parse;

#[test]
fn folds_histograms_and_summaries_and_unescapes() {
    let text = concat!(
        "# HELP h A \"help\" with \\\\ and \\n\n",
        "# TYPE h histogram\n",
        "h_bucket{a=\"x\\\"y\\\\z\\nw\",le=\"0.005\"} 1\n",
        "h_bucket{a=\"x\\\"y\\\\z\\nw\",le=\"+Inf\"} 2\n",
        "h_sum{a=\"x\\\"y\\\\z\\nw\"} NaN\n",
        "h_count{a=\"x\\\"y\\\\z\\nw\"} 2\n",
        "\n",
        "# TYPE s summary\n",
        "s{quantile=\"0.5\"} -inf\n",
        "s_sum 1\n",
        "s_count 1\n",
    );
    let families = parse(text);
    assert_eq!(families.len(), 2);
    assert_eq!(families[0].help.as_deref(), Some("A \"help\" with \\ and \n"));
    let h = families[0].metric[0].histogram.as_ref().unwrap();
    assert_eq!(families[0].metric[0].label[0].value.as_deref(), Some("x\"y\\z\nw"));
    assert_eq!(h.bucket.len(), 2);
    assert_eq!(h.bucket[1].upper_bound, Some(f64::INFINITY));
    assert!(h.sample_sum.unwrap().is_nan());
    assert_eq!(h.sample_count, Some(2));
    let s = families[1].metric[0].summary.as_ref().unwrap();
    assert_eq!(s.quantile[0].value, Some(f64::NEG_INFINITY));
    assert_eq!(render_text(&families), text.to_owned() + "\n");
}

#[test]
fn series_that_render_alike_stay_apart() {
    let text = concat!(
        "# TYPE h histogram\n",
        "h_bucket{a_b=\"1\",le=\"1\"} 0\n",
        "h_bucket{a_b=\"1\",le=\"+Inf\"} 0\n",
        "h_sum{a_b=\"1\"} 0\n",
        "h_count{a_b=\"1\"} 0\n",
        "h_bucket{a_b=\"1\",le=\"1\"} 1\n",
        "h_bucket{a_b=\"1\",le=\"+Inf\"} 1\n",
        "h_sum{a_b=\"1\"} 1\n",
        "h_count{a_b=\"1\"} 1\n",
        "\n",
    );
    let families = parse(text);
    assert_eq!(families[0].metric.len(), 2);
    assert_eq!(render_text(&families), text);
}

#[test]
fn a_sum_that_looks_like_a_quantile() {
    // A summary named `checksum` writes its sum as `checksum`; with a series label
    // called `quantile`, that line has a `quantile` label too.
    let text = concat!(
        "# TYPE checksum summary\n",
        "checksum{quantile=\"\",quantile=\"0.5\"} -2\n",
        "checksum{quantile=\"\"} -3\n",
        "checksum_count{quantile=\"\"} 1\n",
        "\n",
    );
    let families = parse(text);
    let s = families[0].metric[0].summary.as_ref().unwrap();
    assert_eq!((s.quantile.len(), s.sample_sum, s.sample_count), (1, Some(-3.0), Some(1)));
    assert_eq!(render_text(&families), text);
}

#[test]
fn strays_and_garbage() {
    let families = parse("x 1\nx{a=\"b\"} 2 123\n# TYPE c counter\nc{a=\"unterminated} 1\nc 1 2 3\nc zz\ny 3\n");
    let names: Vec<_> = families.iter().map(|f| (f.name.clone().unwrap(), f.metric.len())).collect();
    assert_eq!(names, [("x".into(), 2), ("c".into(), 0), ("y".into(), 1)]);
    assert_eq!(families[0].metric[1].timestamp_ms, Some(123));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_garbage(text in "(#|[ -~]|\\{|\\}|\"|\\\\|\n|é|_bucket|_sum|_count| le=| quantile=|TYPE |HELP |histogram|summary)*") {
        let families = parse(&text);
        // Whatever came out can be written again.
        let _ = render_text(&families);
    }

    #[test]
    fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse(&String::from_utf8_lossy(&bytes));
    }
}
