//! # paystate-stripe
//!
//! Everything paystate knows about Stripe's wire format, and no IO:
//! - [`signature`]: `Stripe-Signature` verification (HMAC-SHA256, secret rotation, tolerance, constant-time);
//! - [`envelope`]: borrowed parsing of event envelopes (snapshot and thin events);
//! - [`mapping`]: from an event to a `paystate_core::PaymentEvent`, or "not payment-relevant";
//!
//! The only way to obtain a [`VerifiedEvent`] is [`Webhook::verify`]: code that holds one knows the body
//! came from Stripe.

pub mod currency;
pub mod envelope;
pub mod error;
mod json;
pub mod mapping;
pub mod signature;

pub use envelope::{parse_event, Envelope, ParsedEvent, ThinEvent};
pub use error::WebhookError;
pub use mapping::{map_event, payment_key, MapError, Mapped};
pub use signature::{SignatureHeader, VerifiedBody, Verifier, WebhookSecret, DEFAULT_TOLERANCE_SECS};

/// A body whose signature was verified and which parsed as a Stripe event.
#[derive(Debug, Clone)]
pub struct VerifiedEvent<'b> {
    body: VerifiedBody<'b>,
    event: ParsedEvent<'b>,
}

impl<'b> VerifiedEvent<'b> {
    /// The raw body, unchanged: this is what gets logged.
    pub fn body(&self) -> &'b [u8] {
        self.body.body()
    }

    /// The signature timestamp.
    pub fn signed_at(&self) -> i64 {
        self.body.signed_at()
    }

    /// The parsed envelope.
    pub fn event(&self) -> &ParsedEvent<'b> {
        &self.event
    }
}

/// Verification and parsing of webhook deliveries, as one step.
#[derive(Debug, Clone)]
pub struct Webhook {
    verifier: Verifier,
}

impl Webhook {
    /// A webhook endpoint accepting signatures from any of `secrets`.
    pub fn new(secrets: Vec<WebhookSecret>, tolerance_secs: u64) -> Result<Self, WebhookError> {
        Ok(Webhook { verifier: Verifier::new(secrets, tolerance_secs)? })
    }

    /// The signature verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Verifies the signature, then parses the body. `now` is unix seconds.
    pub fn verify<'b>(
        &self,
        signature: Option<&[u8]>,
        body: &'b [u8],
        now: i64,
    ) -> Result<VerifiedEvent<'b>, WebhookError> {
        let body = self.verifier.verify(signature, body, now)?;
        let event = parse_event(body.body())?;
        Ok(VerifiedEvent { body, event })
    }
}
