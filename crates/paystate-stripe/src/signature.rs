//! `Stripe-Signature` verification, exactly as Stripe specifies it.
//!
//! - Header: `t=<unix seconds>,v1=<hex>[,v1=<hex>…][,v0=<hex>]`, items in any order. Only `v1` counts
//!   (a header with only `v0` is refused: downgrade protection). Items without `=` and unknown schemes
//!   are ignored, like Stripe's own libraries do; the first `t` wins.
//! - Signature: HMAC-SHA256 keyed with the *whole* `whsec_…` string as bytes, over `"{t}.{raw body}"`,
//!   hex encoded. Every `v1` is tried against every configured secret (during a rotation Stripe sends one
//!   `v1` per active secret, for up to 24 hours). Comparison is in constant time.
//! - Tolerance: the timestamp must be within `tolerance_secs` of `now`, in both directions (Stripe's
//!   libraries only refuse old timestamps; a timestamp from the future is refused here too). 0 disables it.
//!   `now` is an argument: this module never reads a clock.

use crate::error::WebhookError;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use subtle::ConstantTimeEq;

/// Stripe's default tolerance, and ours: 5 minutes.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// At most this many signature items are read from one header; Stripe sends at most a handful.
const MAX_HEADER_ITEMS: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// A webhook endpoint's signing secret (`whsec_…`). Its `Debug` prints `[redacted]`.
#[derive(Clone)]
pub struct WebhookSecret {
    /// HMAC state keyed with the secret, cloned for each verification so the key schedule runs once.
    keyed: HmacSha256,
}

impl WebhookSecret {
    /// Wraps a secret. Stripe's key is the whole string, `whsec_` prefix included, as bytes (unlike Svix,
    /// nothing is base64-decoded).
    pub fn new(secret: &str) -> Result<Self, WebhookError> {
        if secret.is_empty() {
            return Err(WebhookError::EmptySecret);
        }
        // HMAC accepts keys of any length; this cannot fail, but stay typed rather than unwrap.
        let keyed = HmacSha256::new_from_slice(secret.as_bytes()).map_err(|_| WebhookError::EmptySecret)?;
        Ok(WebhookSecret { keyed })
    }

    /// Lower-case hex HMAC-SHA256 over `"{timestamp}.{body}"`.
    pub fn sign(&self, timestamp: i64, body: &[u8]) -> [u8; 64] {
        let mut mac = self.keyed.clone();
        let mut ts = itoa::Buffer::new();
        mac.update(ts.format(timestamp).as_bytes());
        mac.update(b".");
        mac.update(body);
        hex_lower(&mac.finalize().into_bytes())
    }

    /// A complete `Stripe-Signature` header value for `body` signed at `timestamp`, as Stripe sends it.
    pub fn header(&self, timestamp: i64, body: &[u8]) -> String {
        let sig = self.sign(timestamp, body);
        // `sig` is ASCII hex by construction.
        format!("t={timestamp},v1={}", String::from_utf8_lossy(&sig))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

fn hex_lower(bytes: &[u8]) -> [u8; 64] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, b) in bytes.iter().take(32).enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    out
}

/// A parsed `Stripe-Signature` header, borrowing its signatures from the header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader<'h> {
    /// `t`, unix seconds.
    pub timestamp: i64,
    /// Every `v1` value, in header order.
    pub v1: Vec<&'h [u8]>,
}

impl<'h> SignatureHeader<'h> {
    /// Parses a header value. Errors: `MalformedHeader` (no or bad `t`, too many items), `NoV1Signature`.
    pub fn parse(value: &'h [u8]) -> Result<Self, WebhookError> {
        let mut timestamp = None;
        let mut v1 = Vec::new();
        for (n, item) in value.split(|&b| b == b',').enumerate() {
            if n >= MAX_HEADER_ITEMS {
                return Err(WebhookError::MalformedHeader("too many items"));
            }
            let Some(eq) = item.iter().position(|&b| b == b'=') else { continue };
            let (key, val) = (&item[..eq], &item[eq + 1..]);
            match key {
                b"t" if timestamp.is_none() => timestamp = Some(parse_timestamp(val)?),
                b"v1" => v1.push(val),
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(WebhookError::MalformedHeader("no timestamp (t=)"))?;
        if v1.is_empty() {
            return Err(WebhookError::NoV1Signature);
        }
        Ok(SignatureHeader { timestamp, v1 })
    }
}

fn parse_timestamp(digits: &[u8]) -> Result<i64, WebhookError> {
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(WebhookError::MalformedHeader("timestamp (t=) is not a unix time in seconds"));
    }
    Ok(digits.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')))
}

/// Checks `Stripe-Signature` against a set of secrets.
#[derive(Debug, Clone)]
pub struct Verifier {
    secrets: Vec<WebhookSecret>,
    tolerance_secs: u64,
}

/// Proof that a body was signed by a holder of one of the configured secrets within the tolerance.
/// Only [`Verifier::verify`] constructs it.
#[derive(Debug, Clone, Copy)]
pub struct VerifiedBody<'b> {
    body: &'b [u8],
    timestamp: i64,
}

impl<'b> VerifiedBody<'b> {
    /// The raw body, unchanged.
    pub fn body(&self) -> &'b [u8] {
        self.body
    }

    /// The signature's timestamp (`t`).
    pub fn signed_at(&self) -> i64 {
        self.timestamp
    }
}

impl Verifier {
    /// A verifier accepting any of `secrets`, with `tolerance_secs` (0 disables the timestamp check).
    pub fn new(secrets: Vec<WebhookSecret>, tolerance_secs: u64) -> Result<Self, WebhookError> {
        if secrets.is_empty() {
            return Err(WebhookError::NoSecrets);
        }
        Ok(Verifier { secrets, tolerance_secs })
    }

    /// The configured tolerance.
    pub fn tolerance_secs(&self) -> u64 {
        self.tolerance_secs
    }

    /// Verifies `header` (the `Stripe-Signature` value, `None` when absent) for `body` at time `now`.
    pub fn verify<'b>(
        &self,
        header: Option<&[u8]>,
        body: &'b [u8],
        now: i64,
    ) -> Result<VerifiedBody<'b>, WebhookError> {
        let header = header.ok_or(WebhookError::MissingHeader)?;
        let parsed = SignatureHeader::parse(header)?;
        let mut matched = subtle::Choice::from(0u8);
        for secret in &self.secrets {
            let expected = secret.sign(parsed.timestamp, body);
            for candidate in &parsed.v1 {
                // `ct_eq` on slices of different lengths is false; lengths are not secret.
                matched |= expected.as_slice().ct_eq(candidate);
            }
        }
        if !bool::from(matched) {
            return Err(WebhookError::NoMatchingSignature);
        }
        if self.tolerance_secs > 0 {
            let skew = (i128::from(now) - i128::from(parsed.timestamp)).unsigned_abs();
            if skew > u128::from(self.tolerance_secs) {
                return Err(WebhookError::TimestampOutsideTolerance {
                    timestamp: parsed.timestamp,
                    now,
                    tolerance_secs: self.tolerance_secs,
                });
            }
        }
        Ok(VerifiedBody { body, timestamp: parsed.timestamp })
    }
}
