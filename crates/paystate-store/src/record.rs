//! One log record: the raw webhook body, unchanged, with what the ingress learned about it.
//!
//! Binary layout (version 1), all integers big-endian:
//! `1u8 | received_at_ms i64 | event_id u16+bytes | event_type u16+bytes | payment_key u16+bytes |
//!  signature u16+bytes | body u32+bytes`. An empty payment key means the event belongs to no payment.
//!
//! Version 2 is version 1 with the record's [`Origin`] after the version byte: `2u8 | origin u8 | …`.
//! A webhook delivery is still written as version 1 (byte for byte what the previous release wrote, so a
//! log it can read stays one); only an event fetched from Stripe's Events API is written as version 2.

use crate::error::StoreError;

/// A webhook delivery as stored in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// When the ingress received it, unix milliseconds.
    pub received_at_ms: i64,
    /// Stripe event id.
    pub event_id: String,
    /// Stripe event type.
    pub event_type: String,
    /// The payment key it was partitioned by (`acct/pi` or `pi`); empty when it belongs to no payment.
    pub payment_key: String,
    /// The `Stripe-Signature` header it arrived with.
    pub signature: String,
    /// The body, byte for byte.
    pub body: Vec<u8>,
    /// How the event reached the log.
    pub origin: Origin,
}

/// How an event reached the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Delivered by Stripe to the webhook endpoint, its `Stripe-Signature` verified.
    #[default]
    Webhook,
    /// Fetched from Stripe's Events API by `paystate catch-up` (no signature: trusted through TLS and the
    /// API key). The body is the API's rendering of the event.
    EventsApi,
}

impl Origin {
    const fn code(self) -> u8 {
        match self {
            Origin::Webhook => 0,
            Origin::EventsApi => 1,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Origin::Webhook),
            1 => Some(Origin::EventsApi),
            _ => None,
        }
    }

    /// A name for people and JSON (`webhook`, `events_api`).
    pub const fn name(self) -> &'static str {
        match self {
            Origin::Webhook => "webhook",
            Origin::EventsApi => "events_api",
        }
    }
}

const VERSION: u8 = 1;
const VERSION_WITH_ORIGIN: u8 = 2;

fn put_short(out: &mut Vec<u8>, s: &[u8]) -> Result<(), StoreError> {
    let len = u16::try_from(s.len()).map_err(|_| StoreError::Encode(format!("field of {} bytes", s.len())))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s);
    Ok(())
}

impl LogRecord {
    /// Encodes the record.
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::with_capacity(self.body.len() + 64 + self.signature.len());
        match self.origin {
            Origin::Webhook => out.push(VERSION),
            origin => out.extend_from_slice(&[VERSION_WITH_ORIGIN, origin.code()]),
        }
        out.extend_from_slice(&self.received_at_ms.to_be_bytes());
        put_short(&mut out, self.event_id.as_bytes())?;
        put_short(&mut out, self.event_type.as_bytes())?;
        put_short(&mut out, self.payment_key.as_bytes())?;
        put_short(&mut out, self.signature.as_bytes())?;
        let len = u32::try_from(self.body.len()).map_err(|_| StoreError::Encode("body over 4 GiB".into()))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.body);
        Ok(out)
    }

    /// Decodes a record written by [`LogRecord::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        RecordRef::decode(bytes).map(LogRecord::from)
    }

    /// A borrowed view of this record.
    pub fn as_ref(&self) -> RecordRef<'_> {
        RecordRef {
            received_at_ms: self.received_at_ms,
            event_id: &self.event_id,
            event_type: &self.event_type,
            payment_key: &self.payment_key,
            signature: &self.signature,
            body: &self.body,
            origin: self.origin,
        }
    }
}

impl From<RecordRef<'_>> for LogRecord {
    fn from(r: RecordRef<'_>) -> Self {
        LogRecord {
            received_at_ms: r.received_at_ms,
            event_id: r.event_id.to_owned(),
            event_type: r.event_type.to_owned(),
            payment_key: r.payment_key.to_owned(),
            signature: r.signature.to_owned(),
            body: r.body.to_vec(),
            origin: r.origin,
        }
    }
}

/// Appends one frame of the log-records wire format (the admin API's `GET /v1/log/{partition}`):
/// `offset u64 | length u32 | record` (big-endian; `record` in its stored encoding, [`LogRecord::encode`]).
pub fn put_frame(out: &mut Vec<u8>, offset: u64, record: &[u8]) -> Result<(), StoreError> {
    let len = u32::try_from(record.len()).map_err(|_| StoreError::Encode("record over 4 GiB".into()))?;
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(record);
    Ok(())
}

/// Decodes a body of frames written by [`put_frame`]. Total: a truncated or damaged body is an error, never
/// a panic.
pub fn decode_frames(mut b: &[u8]) -> Result<Vec<(u64, LogRecord)>, StoreError> {
    let corrupt = |why: &str| StoreError::Corrupt { tree: "log frames", why: why.to_owned() };
    let mut out = Vec::new();
    while !b.is_empty() {
        let (head, rest) = b.split_at_checked(12).ok_or_else(|| corrupt("truncated frame header"))?;
        let (offset, len) = head.split_at(8);
        let offset = u64::from_be_bytes(offset.try_into().map_err(|_| corrupt("offset"))?);
        let len = usize::try_from(u32::from_be_bytes(len.try_into().map_err(|_| corrupt("length"))?))
            .map_err(|_| corrupt("length"))?;
        let (record, rest) = rest.split_at_checked(len).ok_or_else(|| corrupt("truncated record"))?;
        out.push((offset, LogRecord::decode(record)?));
        b = rest;
    }
    Ok(out)
}

/// A [`LogRecord`] borrowed from its encoding: reading a log without copying bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// When the ingress received it, unix milliseconds.
    pub received_at_ms: i64,
    /// Stripe event id.
    pub event_id: &'a str,
    /// Stripe event type.
    pub event_type: &'a str,
    /// Payment key (empty: no payment).
    pub payment_key: &'a str,
    /// The `Stripe-Signature` header.
    pub signature: &'a str,
    /// The body, byte for byte.
    pub body: &'a [u8],
    /// How the event reached the log.
    pub origin: Origin,
}

impl<'a> RecordRef<'a> {
    /// Decodes a record written by [`LogRecord::encode`] without copying.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, StoreError> {
        let corrupt = |why: &str| StoreError::Corrupt { tree: "log", why: why.to_owned() };
        let mut r = Reader { b: bytes, at: 0 };
        let origin = match r.take(1).ok_or_else(|| corrupt("empty"))? {
            [VERSION] => Origin::Webhook,
            [VERSION_WITH_ORIGIN] => {
                let code = r.take(1).ok_or_else(|| corrupt("truncated origin"))?;
                code.first().copied().and_then(Origin::from_code).ok_or_else(|| corrupt("unknown record origin"))?
            }
            _ => return Err(corrupt("unknown record version")),
        };
        let mut ts = [0u8; 8];
        ts.copy_from_slice(r.take(8).ok_or_else(|| corrupt("truncated time"))?);
        let text = |r: &mut Reader<'a>| -> Result<&'a str, StoreError> {
            let raw = r.short().ok_or_else(|| corrupt("truncated field"))?;
            std::str::from_utf8(raw).map_err(|_| corrupt("field is not UTF-8"))
        };
        let event_id = text(&mut r)?;
        let event_type = text(&mut r)?;
        let payment_key = text(&mut r)?;
        let signature = text(&mut r)?;
        let mut len = [0u8; 4];
        len.copy_from_slice(r.take(4).ok_or_else(|| corrupt("truncated body length"))?);
        let n = usize::try_from(u32::from_be_bytes(len)).map_err(|_| corrupt("body length"))?;
        let body = r.take(n).ok_or_else(|| corrupt("truncated body"))?;
        if r.at != bytes.len() {
            return Err(corrupt("trailing bytes"));
        }
        Ok(RecordRef {
            received_at_ms: i64::from_be_bytes(ts),
            event_id,
            event_type,
            payment_key,
            signature,
            body,
            origin,
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn short(&mut self) -> Option<&'a [u8]> {
        let mut len = [0u8; 2];
        len.copy_from_slice(self.take(2)?);
        self.take(usize::from(u16::from_be_bytes(len)))
    }
}
