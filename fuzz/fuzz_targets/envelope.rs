//! The envelope scanner against serde_json: on any UTF-8 text it says "not JSON" exactly when serde_json
//! does (documents nested deeper than 127 levels excepted: refused by design, see json.rs), and never
//! panics on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paystate_stripe::{parse_event, WebhookError};

/// The deepest nesting of arrays and objects, outside strings.
fn depth(text: &str) -> usize {
    let (mut d, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        match (in_str, esc, b) {
            (true, true, _) => esc = false,
            (true, false, b'\\') => esc = true,
            (true, false, b'"') => in_str = false,
            (true, false, _) => {}
            (false, _, b'"') => in_str = true,
            (false, _, b'[' | b'{') => {
                d += 1;
                max = max.max(d);
            }
            (false, _, b']' | b'}') => d = d.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fuzz_target!(|data: &[u8]| {
    let ours = parse_event(data);
    let Ok(text) = std::str::from_utf8(data) else { return };
    let ours_json = !matches!(ours, Err(WebhookError::BodyNotJson(_)));
    let serde_json = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
    if ours_json != serde_json {
        assert!(!ours_json && depth(text) >= 128, "ours {ours:?}, serde_json {serde_json} on {text:?}");
    }
});
