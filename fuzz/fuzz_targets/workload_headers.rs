//! The sidecar identity headers believed from trusted proxies:
//! `x-forwarded-client-cert` (Envoy XFCC) and `l5d-client-id` (Linkerd). Never a
//! panic, and an ID that comes out is a valid SPIFFE ID.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_identity::workload;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let _ = workload::parse_xfcc(header);
    if let Ok(Some(id)) = workload::spiffe_id_from_xfcc(header) {
        assert!(workload::validate_spiffe_id(&id).is_ok(), "invalid id {id:?} from XFCC");
    }
    if let Ok(id) = workload::spiffe_id_from_linkerd(header, "example.org") {
        assert!(workload::validate_spiffe_id(&id).is_ok(), "invalid id {id:?} from l5d");
        assert!(id.starts_with("spiffe://example.org/"), "{id:?} outside the trust domain");
    }
});
