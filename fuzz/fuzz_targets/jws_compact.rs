//! Compact JWS/JWT parsing: what every bearer token goes through before any key is
//! looked at. Besides not panicking, the strict claims parser must agree with
//! serde_json on everything it accepts (a parser differential between us and the
//! upstream is how claims get smuggled).
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use portcullis_identity::jose::compact;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let _ = compact::looks_like_jwt(token);
    let _ = compact::decode_unverified(token);
    if let Ok(parsed) = compact::parse(token) {
        let _ = parsed.header.algorithm();
        let payload = token.split('.').nth(1).unwrap_or_default();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("accepted payload is base64url");
        let theirs: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&bytes).expect("accepted claims are JSON to serde_json");
        assert_eq!(parsed.claims, theirs, "claims differ from serde_json's reading");
        assert_eq!(
            parsed.signing_input.len(),
            token.rfind('.').unwrap_or_default(),
            "signing input is not header.payload"
        );
    }
});
