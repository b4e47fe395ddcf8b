//! Stripe-Signature verification: known answers, every error class, and properties of the header parser.

use paystate_stripe::{SignatureHeader, Verifier, WebhookError, WebhookSecret};
use proptest::prelude::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const T: i64 = 1_718_900_125;

fn verifier(secrets: &[&str], tolerance: u64) -> Verifier {
    let secrets = secrets.iter().map(|s| WebhookSecret::new(s).expect("secret")).collect();
    Verifier::new(secrets, tolerance).expect("verifier")
}

fn sig(secret: &str, t: i64, body: &[u8]) -> String {
    String::from_utf8(WebhookSecret::new(secret).expect("secret").sign(t, body).to_vec()).expect("hex")
}

/// Known answers computed independently with `openssl dgst -sha256 -hmac <secret>` over "{t}.{body}".
#[test]
fn known_answers() {
    let cases: [(&str, i64, &[u8], &str); 3] = [
        ("whsec_test", 1_700_000_000, b"{}", "35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"),
        (
            SECRET,
            T,
            br#"{"id":"evt_1","object":"event"}"#,
            "978d5fc2f1a7d0dec95ae526e528298bd60bd9833817ba3143cc7e0881ec4feb",
        ),
        (SECRET, T, b"", "4c655a50f1a0026f59077fe95ee8976a46804aa9f88ef3ee5c5093c61e065d9f"),
    ];
    for (secret, t, body, expected) in cases {
        assert_eq!(sig(secret, t, body), expected, "secret {secret} t {t}");
        let header = format!("t={t},v1={expected}");
        verifier(&[secret], 300).verify(Some(header.as_bytes()), body, t).expect("known answer verifies");
    }
}

fn check(header: Option<&str>, body: &[u8], secrets: &[&str], now: i64, expect: Result<(), WebhookError>) {
    let got = verifier(secrets, 300).verify(header.map(str::as_bytes), body, now).map(|_| ());
    assert_eq!(got, expect, "header {header:?}");
}

#[test]
fn each_error_class_is_distinct() {
    let body = br#"{"id":"evt_1","object":"event"}"#;
    let good = sig(SECRET, T, body);
    check(Some(&format!("t={T},v1={good}")), body, &[SECRET], T, Ok(()));
    check(None, body, &[SECRET], T, Err(WebhookError::MissingHeader));
    check(Some(""), body, &[SECRET], T, Err(WebhookError::MalformedHeader("no timestamp (t=)")));
    check(Some(&format!("v1={good}")), body, &[SECRET], T, Err(WebhookError::MalformedHeader("no timestamp (t=)")));
    check(
        Some(&format!("t=12x,v1={good}")),
        body,
        &[SECRET],
        T,
        Err(WebhookError::MalformedHeader("timestamp (t=) is not a unix time in seconds")),
    );
    check(Some(&format!("t={T},v0={good}")), body, &[SECRET], T, Err(WebhookError::NoV1Signature));
    check(
        Some(&format!("t={T},v1={good}")),
        b"{\"id\":\"evt_2\"}",
        &[SECRET],
        T,
        Err(WebhookError::NoMatchingSignature),
    );
    check(Some(&format!("t={T},v1={good}")), body, &["whsec_other"], T, Err(WebhookError::NoMatchingSignature));
    let stale = Err(WebhookError::TimestampOutsideTolerance { timestamp: T, now: T + 301, tolerance_secs: 300 });
    check(Some(&format!("t={T},v1={good}")), body, &[SECRET], T + 301, stale);
    let future = Err(WebhookError::TimestampOutsideTolerance { timestamp: T, now: T - 301, tolerance_secs: 300 });
    check(Some(&format!("t={T},v1={good}")), body, &[SECRET], T - 301, future);
    // The boundary is inclusive, as in Stripe's libraries.
    check(Some(&format!("t={T},v1={good}")), body, &[SECRET], T + 300, Ok(()));
    check(Some(&format!("t={T},v1={good}")), body, &[SECRET], T - 300, Ok(()));
}

#[test]
fn tolerance_zero_disables_the_timestamp_check() {
    let body = b"{}";
    let header = format!("t={T},v1={}", sig(SECRET, T, body));
    let v = verifier(&[SECRET], 0);
    assert!(v.verify(Some(header.as_bytes()), body, T + 10 * 365 * 86_400).is_ok());
}

#[test]
fn rotation_every_v1_against_every_secret() {
    let body = b"{\"rotating\":true}";
    let old = "whsec_old_secret_value";
    let new = "whsec_new_secret_value";
    let header = format!("t={T},v1={},v1={}", sig(old, T, body), sig(new, T, body));
    // The endpoint may know either secret, or both.
    check(Some(&header), body, &[old], T, Ok(()));
    check(Some(&header), body, &[new], T, Ok(()));
    check(Some(&header), body, &[new, old], T, Ok(()));
    check(Some(&header), body, &["whsec_third"], T, Err(WebhookError::NoMatchingSignature));
    // Items in any order, junk and other schemes ignored.
    let shuffled = format!("v0=abc,v1=deadbeef,junk,v1={},t={T},x=1", sig(new, T, body));
    check(Some(&shuffled), body, &[old, new], T, Ok(()));
}

#[test]
fn comparison_is_on_lowercase_hex_like_stripe() {
    let body = b"{}";
    let upper = sig(SECRET, T, body).to_uppercase();
    check(Some(&format!("t={T},v1={upper}")), body, &[SECRET], T, Err(WebhookError::NoMatchingSignature));
}

#[test]
fn leading_zeros_in_t_sign_the_normalized_integer() {
    // Stripe's libraries parse t as an integer and sign "%d.{body}"; so do we.
    let body = b"{}";
    let header = format!("t=000{T},v1={}", sig(SECRET, T, body));
    check(Some(&header), body, &[SECRET], T, Ok(()));
}

#[test]
fn secrets_never_print() {
    let s = WebhookSecret::new(SECRET).expect("secret");
    assert_eq!(format!("{s:?}"), "[redacted]");
    let v = verifier(&[SECRET], 300);
    let dbg = format!("{v:?}");
    assert!(!dbg.contains("MfKQ9r8"), "{dbg}");
    assert!(dbg.contains("[redacted]"), "{dbg}");
}

#[test]
fn empty_configuration_is_refused() {
    assert_eq!(WebhookSecret::new("").err(), Some(WebhookError::EmptySecret));
    assert_eq!(Verifier::new(Vec::new(), 300).err(), Some(WebhookError::NoSecrets));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// The parser never panics and, when it accepts, found a t and at least one v1.
    #[test]
    fn header_parser_total(raw in proptest::collection::vec(any::<u8>(), 0..200)) {
        match SignatureHeader::parse(&raw) {
            Ok(h) => {
                prop_assert!(!h.v1.is_empty());
                prop_assert!(h.timestamp >= 0);
            }
            Err(e) => prop_assert!(matches!(e, WebhookError::MalformedHeader(_) | WebhookError::NoV1Signature)),
        }
    }

    /// Structured headers: t and v1 found whatever the order and noise around them.
    #[test]
    fn header_parser_finds_items(
        t in 0i64..10_000_000_000,
        sigs in proptest::collection::vec("[0-9a-f]{64}", 1..4),
        noise in proptest::collection::vec("(v0|x|foo)=[a-z0-9]{0,8}|[a-z]{1,5}", 0..4),
        rotate in 0usize..8,
    ) {
        let mut items: Vec<String> = noise.clone();
        items.push(format!("t={t}"));
        items.extend(sigs.iter().map(|s| format!("v1={s}")));
        let n = items.len();
        items.rotate_left(rotate % n);
        let header = items.join(",");
        let h = SignatureHeader::parse(header.as_bytes()).expect("parses");
        prop_assert_eq!(h.timestamp, t);
        let got: Vec<&[u8]> = h.v1.clone();
        let want: Vec<&[u8]> = sigs.iter().map(|s| s.as_bytes()).collect();
        // Same multiset in the rotated order: compare sorted.
        let (mut g, mut w) = (got, want);
        g.sort();
        w.sort();
        prop_assert_eq!(g, w);
    }

    /// A signature verifies for exactly the body and timestamp it was made for.
    #[test]
    fn any_change_to_body_or_t_is_refused(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        flip in any::<prop::sample::Index>(),
        t in 1_000_000_000i64..2_000_000_000,
    ) {
        let v = verifier(&[SECRET], 0);
        let header = WebhookSecret::new(SECRET).expect("secret").header(t, &body);
        prop_assert!(v.verify(Some(header.as_bytes()), &body, t).is_ok());
        if !body.is_empty() {
            let mut tampered = body.clone();
            let i = flip.index(tampered.len());
            tampered[i] ^= 0x01;
            prop_assert_eq!(v.verify(Some(header.as_bytes()), &tampered, t).err(), Some(WebhookError::NoMatchingSignature));
        }
        let moved = header.replacen(&format!("t={t}"), &format!("t={}", t + 1), 1);
        prop_assert_eq!(v.verify(Some(moved.as_bytes()), &body, t).err(), Some(WebhookError::NoMatchingSignature));
    }
}
