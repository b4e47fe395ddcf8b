//! Stripe event envelope parsing: only the fields the projection needs, borrowed from the body where the
//! JSON has no escapes. The raw bytes are kept elsewhere, unchanged; this is a read-only view of them.
//!
//! Two shapes are accepted:
//! - snapshot events (`"object": "event"`), whose `data.object` is the full object after the change;
//! - thin events (`"object": "v2.core.event"`), which only name a `related_object`.

use crate::error::WebhookError;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// A parsed event: snapshot (v1) or thin (v2).
// Snapshots are the hot path: boxing them to shrink the rare thin variant would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ParsedEvent<'a> {
    /// `"object": "event"`.
    Snapshot(Envelope<'a>),
    /// `"object": "v2.core.event"`.
    Thin(ThinEvent<'a>),
}

impl<'a> ParsedEvent<'a> {
    /// `id`.
    pub fn id(&self) -> &str {
        match self {
            ParsedEvent::Snapshot(e) => &e.id,
            ParsedEvent::Thin(e) => &e.id,
        }
    }

    /// `type`.
    pub fn event_type(&self) -> &str {
        match self {
            ParsedEvent::Snapshot(e) => &e.event_type,
            ParsedEvent::Thin(e) => &e.event_type,
        }
    }

    /// `created` as unix seconds (thin events: parsed from ISO 8601, `None` if unreadable).
    pub fn created(&self) -> Option<i64> {
        match self {
            ParsedEvent::Snapshot(e) => Some(e.created),
            ParsedEvent::Thin(e) => e.created_unix,
        }
    }

    /// `livemode`.
    pub fn livemode(&self) -> bool {
        match self {
            ParsedEvent::Snapshot(e) => e.livemode,
            ParsedEvent::Thin(e) => e.livemode,
        }
    }
}

/// A snapshot event.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<'a> {
    /// `id` (`evt_…`).
    pub id: Cow<'a, str>,
    /// `type`.
    pub event_type: Cow<'a, str>,
    /// `created`, unix seconds.
    pub created: i64,
    /// `livemode`.
    pub livemode: bool,
    /// `api_version`.
    pub api_version: Option<Cow<'a, str>>,
    /// `account`: the connected account, for Connect events.
    pub account: Option<Cow<'a, str>>,
    /// `request.id` (or `request` itself in old API versions).
    pub request_id: Option<Cow<'a, str>>,
    /// `request.idempotency_key`.
    pub idempotency_key: Option<Cow<'a, str>>,
    /// `data.object`, reduced.
    pub object: ObjectFields<'a>,
    /// Whether `data.previous_attributes` is present (the event reports an update).
    pub has_previous_attributes: bool,
}

/// The fields of `data.object` the projection reads. All optional: which are present depends on the kind.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ObjectFields<'a> {
    /// `id`.
    #[serde(borrow)]
    pub id: Option<Cow<'a, str>>,
    /// `object`: `payment_intent`, `charge`, `refund`, `dispute`, …
    #[serde(borrow)]
    pub object: Option<Cow<'a, str>>,
    /// `status`.
    #[serde(borrow)]
    pub status: Option<Cow<'a, str>>,
    /// `amount`.
    pub amount: Option<i64>,
    /// `amount_received` (PaymentIntent).
    pub amount_received: Option<i64>,
    /// `amount_capturable` (PaymentIntent).
    pub amount_capturable: Option<i64>,
    /// `amount_captured` (Charge).
    pub amount_captured: Option<i64>,
    /// `amount_refunded` (Charge).
    pub amount_refunded: Option<i64>,
    /// `currency`.
    #[serde(borrow)]
    pub currency: Option<Cow<'a, str>>,
    /// `captured` (Charge).
    pub captured: Option<bool>,
    /// `refunded` (Charge).
    pub refunded: Option<bool>,
    /// `payment_intent`: id, or the id of an expanded object.
    #[serde(borrow)]
    pub payment_intent: Option<Expandable<'a>>,
    /// `charge` (Refund, Dispute).
    #[serde(borrow)]
    pub charge: Option<Expandable<'a>>,
    /// `latest_charge` (PaymentIntent).
    #[serde(borrow)]
    pub latest_charge: Option<Expandable<'a>>,
    /// `customer`.
    #[serde(borrow)]
    pub customer: Option<Expandable<'a>>,
    /// `payment_method`.
    #[serde(borrow)]
    pub payment_method: Option<Expandable<'a>>,
    /// `metadata`.
    #[serde(borrow)]
    pub metadata: Option<BTreeMap<Cow<'a, str>, Cow<'a, str>>>,
    /// `failure_code` (Charge).
    #[serde(borrow)]
    pub failure_code: Option<Cow<'a, str>>,
    /// `last_payment_error` (PaymentIntent).
    #[serde(borrow)]
    pub last_payment_error: Option<PaymentError<'a>>,
    /// `reason` (Dispute, Refund).
    #[serde(borrow)]
    pub reason: Option<Cow<'a, str>>,
    /// `refunds` (Charge, when included).
    #[serde(borrow)]
    pub refunds: Option<RefundList<'a>>,
}

/// `last_payment_error`, reduced.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PaymentError<'a> {
    /// `code`.
    #[serde(borrow)]
    pub code: Option<Cow<'a, str>>,
    /// `decline_code`.
    #[serde(borrow)]
    pub decline_code: Option<Cow<'a, str>>,
    /// `charge`.
    #[serde(borrow)]
    pub charge: Option<Expandable<'a>>,
}

/// `refunds` of a Charge: a list object.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RefundList<'a> {
    /// `data`.
    #[serde(borrow)]
    pub data: Vec<EmbeddedRefund<'a>>,
}

/// One refund inside `charge.refunds.data`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct EmbeddedRefund<'a> {
    /// `id`.
    #[serde(borrow)]
    pub id: Option<Cow<'a, str>>,
    /// `status`.
    #[serde(borrow)]
    pub status: Option<Cow<'a, str>>,
    /// `amount`.
    pub amount: Option<i64>,
    /// `currency`.
    #[serde(borrow)]
    pub currency: Option<Cow<'a, str>>,
}

/// An expandable reference: Stripe sends an id string, or the whole object when expanded. Either way we
/// keep the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expandable<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Expandable<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Expandable<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an id string or an object with an id")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Expandable(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Expandable(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Expandable(Cow::Owned(v)))
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut id = None;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key == "id" && id.is_none() {
                        id = Some(map.next_value::<Cow<'de, str>>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                id.map(Expandable).ok_or_else(|| de::Error::missing_field("id"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A thin (v2) event.
#[derive(Debug, Clone, PartialEq)]
pub struct ThinEvent<'a> {
    /// `id`.
    pub id: Cow<'a, str>,
    /// `type`.
    pub event_type: Cow<'a, str>,
    /// `created` as sent (ISO 8601).
    pub created: Cow<'a, str>,
    /// `created` as unix seconds, when it parses as RFC 3339.
    pub created_unix: Option<i64>,
    /// `livemode`.
    pub livemode: bool,
    /// `context`: the account the event is about, if any.
    pub context: Option<Cow<'a, str>>,
    /// `related_object`.
    pub related_object: Option<RelatedObject<'a>>,
}

/// `related_object` of a thin event.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RelatedObject<'a> {
    /// `id`.
    #[serde(borrow)]
    pub id: Option<Cow<'a, str>>,
    /// `type`.
    #[serde(rename = "type", borrow)]
    pub kind: Option<Cow<'a, str>>,
    /// `url`.
    #[serde(borrow)]
    pub url: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    object: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow, default)]
    event_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    created: Option<Created<'a>>,
    #[serde(default)]
    livemode: Option<bool>,
    #[serde(borrow, default)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    account: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    context: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    request: Option<RawRequest<'a>>,
    #[serde(borrow, default)]
    data: Option<RawData<'a>>,
    #[serde(borrow, default)]
    related_object: Option<RelatedObject<'a>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Created<'a> {
    Unix(i64),
    Text(#[serde(borrow)] Cow<'a, str>),
}

#[derive(Default)]
struct RawRequest<'a> {
    id: Option<Cow<'a, str>>,
    idempotency_key: Option<Cow<'a, str>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for RawRequest<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Obj<'a> {
            #[serde(borrow, default)]
            id: Option<Cow<'a, str>>,
            #[serde(borrow, default)]
            idempotency_key: Option<Cow<'a, str>>,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawRequest<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a request object, a request id, or null")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(RawRequest { id: Some(Cow::Borrowed(v)), idempotency_key: None })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawRequest { id: Some(Cow::Owned(v.to_owned())), idempotency_key: None })
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(RawRequest::default())
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
                let o = Obj::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawRequest { id: o.id, idempotency_key: o.idempotency_key })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct RawData<'a> {
    #[serde(borrow, default)]
    object: Option<ObjectFields<'a>>,
    #[serde(default)]
    previous_attributes: Option<IgnoredAny>,
}

/// Parses a (verified) body. Errors: `BodyNotUtf8`, `BodyNotJson`, `NotAnEvent`.
pub fn parse_event(body: &[u8]) -> Result<ParsedEvent<'_>, WebhookError> {
    let text = std::str::from_utf8(body).map_err(|_| WebhookError::BodyNotUtf8)?;
    let raw: RawEvent<'_> = serde_json::from_str(text).map_err(|e| {
        // Report the position only: serde's messages can quote body content.
        let at = format!("line {} column {}", e.line(), e.column());
        match e.classify() {
            serde_json::error::Category::Data => WebhookError::NotAnEvent(format!("unexpected field type at {at}")),
            _ => WebhookError::BodyNotJson(at),
        }
    })?;
    let id = raw.id.ok_or_else(|| not_event("no id"))?;
    let event_type = raw.event_type.ok_or_else(|| not_event("no type"))?;
    match raw.object.as_deref() {
        Some("event") => {
            let created = match raw.created {
                Some(Created::Unix(t)) => t,
                _ => return Err(not_event("created is not a unix time")),
            };
            let data = raw.data.ok_or_else(|| not_event("no data"))?;
            let object = data.object.ok_or_else(|| not_event("no data.object"))?;
            let request = raw.request.unwrap_or_default();
            Ok(ParsedEvent::Snapshot(Envelope {
                id,
                event_type,
                created,
                livemode: raw.livemode.unwrap_or(false),
                api_version: raw.api_version,
                account: raw.account,
                request_id: request.id,
                idempotency_key: request.idempotency_key,
                object,
                has_previous_attributes: data.previous_attributes.is_some(),
            }))
        }
        Some("v2.core.event") => {
            let created = match raw.created {
                Some(Created::Text(t)) => t,
                _ => return Err(not_event("thin event created is not a timestamp string")),
            };
            let created_unix = parse_rfc3339(&created);
            Ok(ParsedEvent::Thin(ThinEvent {
                id,
                event_type,
                created,
                created_unix,
                livemode: raw.livemode.unwrap_or(false),
                context: raw.context,
                related_object: raw.related_object,
            }))
        }
        _ => Err(not_event("object is not \"event\" or \"v2.core.event\"")),
    }
}

fn not_event(why: &str) -> WebhookError {
    WebhookError::NotAnEvent(why.to_owned())
}

/// Parses an RFC 3339 timestamp (`2024-09-17T06:20:52.246Z`, offsets allowed) to unix seconds, dropping
/// fractions. `None` when it does not parse.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(part.iter().fold(0i64, |a, d| a * 10 + i64::from(d - b'0')))
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[16] != b':'
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let m = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *sign == b'+' {
                m
            } else {
                -m
            }
        }
        _ => return None,
    };
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
