//! The path parser on arbitrary strings: never panics, and splits exactly the paths of the
//! shape `/service/method` (both parts non-empty, no further `/`, within the length cap).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tonic_metrics::__fuzz::{MAX_PATH_LEN, split_path};

fuzz_target!(|path: &str| {
    let parts: Vec<&str> = path.split('/').collect();
    let expected = match parts.as_slice() {
        ["", service, method] if !service.is_empty() && !method.is_empty() && path.len() <= MAX_PATH_LEN => {
            Some((*service, *method))
        }
        _ => None,
    };
    let split = split_path(path);
    assert_eq!(split, expected, "{path:?}");
    if let Some((service, method)) = split {
        assert_eq!(format!("/{service}/{method}"), path);
    }
});
