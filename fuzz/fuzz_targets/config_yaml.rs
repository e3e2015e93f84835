//! Loading a YAML config (what `portcullis check` and every reload run): errors are
//! reported, never a panic, whatever the file holds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Every `${NAME}` resolves, so interpolation runs instead of stopping early.
    let env = |_: &str| Some("x".to_string());
    if let Err(errors) = portcullis_config::load_str(text, "fuzz.yaml", &env) {
        let _ = errors.to_string();
    }
});
