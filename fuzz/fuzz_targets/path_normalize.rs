//! Request path normalization, which routes and rules are judged against. Beyond
//! not panicking: the canonical form is a fixed point (normalizing it again changes
//! nothing, so nothing is ever decoded twice), it is absolute, and it has no `.` or
//! `..` segment left to climb with.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_policy::{normalize, split_query};

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let (raw, _query) = split_query(target);
    for allow_encoded_slashes in [false, true] {
        let Ok(path) = normalize(raw, allow_encoded_slashes) else {
            continue;
        };
        let text = path.as_str();
        assert!(text.starts_with('/'), "not absolute: {text:?}");
        assert!(
            !text.split('/').any(|s| s == "." || s == ".."),
            "dot segment left: {text:?}"
        );
        let again = normalize(text, allow_encoded_slashes)
            .unwrap_or_else(|e| panic!("canonical {text:?} refused: {e:?}"));
        assert_eq!(again.as_str(), text, "not a fixed point");
        assert_eq!(again.matching(), path.matching(), "matching form not stable");
        let _ = path.first_segment();
        let _ = path.segments().count();
    }
});
