//! The `Stripe-Signature` header parser and verifier on any header and body: never a panic, and never an
//! acceptance unless the header carries the body's true signature at a time within the tolerance.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paystate_stripe::{SignatureHeader, Verifier, WebhookSecret};

const SECRET: &str = "whsec_fuzz_secret";
const NOW: i64 = 1_764_000_000;

fuzz_target!(|data: &[u8]| {
    // The first byte splits the input into a header and a body.
    let Some((&split, rest)) = data.split_first() else { return };
    let at = usize::from(split).min(rest.len());
    let (header, body) = rest.split_at(at);
    let secret = WebhookSecret::new(SECRET).expect("secret");
    let verifier = Verifier::new(vec![WebhookSecret::new(SECRET).expect("secret")], 300).expect("verifier");
    let parsed = SignatureHeader::parse(header);
    if let Ok(v) = verifier.verify(Some(header), body, NOW) {
        let parsed = parsed.expect("a verified header parses");
        assert_eq!(v.signed_at(), parsed.timestamp);
        assert!((NOW - parsed.timestamp).abs() <= 300, "accepted outside the tolerance");
        let expected = secret.sign(parsed.timestamp, body);
        assert!(parsed.v1.iter().any(|c| *c == expected), "accepted without the body's signature");
        assert_eq!(v.body(), body);
    }
    // What the signer writes always verifies, for any body.
    let good = secret.header(NOW, body);
    assert!(verifier.verify(Some(good.as_bytes()), body, NOW).is_ok());
    // ... and a header with one more scheme or element around it still does (Stripe may add schemes).
    let padded = format!("v0=abc,{good},x=1");
    assert!(verifier.verify(Some(padded.as_bytes()), body, NOW).is_ok());
});
