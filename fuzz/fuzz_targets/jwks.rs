//! JWKS documents as an identity provider (or whoever sits between it and us) serves
//! them: never a panic, and never more keys than the document could hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(keys) = portcullis_identity::parse_jwks(data) {
        assert!(keys <= data.len() / 8, "{keys} keys from {} bytes", data.len());
    }
});
