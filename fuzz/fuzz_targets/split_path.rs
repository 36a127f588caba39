//! The path parser on arbitrary strings: never panics, and splits exactly the paths of the
//! shape `/service/method` (both parts non-empty, no further `/`, within the length cap).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tonic_metrics::__fuzz::split_path;

#[path = "../../tests/reference/mod.rs"]
mod reference;

fuzz_target!(|path: &str| {
    let expected = reference::split_path(path);
    let split = split_path(path);
    assert_eq!(split, expected, "{path:?}");
    if let Some((service, method)) = split {
        assert_eq!(format!("/{service}/{method}"), path);
    }
});
