//! Typed errors of webhook verification and parsing. None of them carries body content or a secret, so
//! they are safe to log and to return to the caller.

/// Why a webhook delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// No `Stripe-Signature` header.
    #[error("missing Stripe-Signature header")]
    MissingHeader,
    /// The header has no usable timestamp or is otherwise unreadable.
    #[error("malformed Stripe-Signature header: {0}")]
    MalformedHeader(&'static str),
    /// The header carries no `v1` signature (only other schemes, which are ignored).
    #[error("no v1 signature in Stripe-Signature header")]
    NoV1Signature,
    /// No `v1` signature matches any configured secret.
    #[error("no signature matches any configured webhook secret")]
    NoMatchingSignature,
    /// The signature is valid but its timestamp is too far from now (replay protection).
    #[error("signature timestamp {timestamp} is outside the tolerance of {tolerance_secs} s around {now}")]
    TimestampOutsideTolerance {
        /// `t` from the header.
        timestamp: i64,
        /// The verifier's clock.
        now: i64,
        /// The configured tolerance.
        tolerance_secs: u64,
    },
    /// The body is not UTF-8.
    #[error("body is not UTF-8")]
    BodyNotUtf8,
    /// The body is not JSON.
    #[error("body is not JSON: {0}")]
    BodyNotJson(String),
    /// The body is JSON but not a Stripe event object.
    #[error("body is not a Stripe event: {0}")]
    NotAnEvent(String),
    /// A configured secret is empty.
    #[error("webhook secret is empty")]
    EmptySecret,
    /// No secret is configured.
    #[error("no webhook secret configured")]
    NoSecrets,
}

impl WebhookError {
    /// A stable, machine-readable reason, used in HTTP error bodies and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            WebhookError::MissingHeader => "missing_signature_header",
            WebhookError::MalformedHeader(_) => "malformed_signature_header",
            WebhookError::NoV1Signature => "no_v1_signature",
            WebhookError::NoMatchingSignature => "no_matching_signature",
            WebhookError::TimestampOutsideTolerance { .. } => "timestamp_outside_tolerance",
            WebhookError::BodyNotUtf8 => "body_not_utf8",
            WebhookError::BodyNotJson(_) => "body_not_json",
            WebhookError::NotAnEvent(_) => "not_an_event",
            WebhookError::EmptySecret => "empty_secret",
            WebhookError::NoSecrets => "no_secrets",
        }
    }
}
