//! Stripe event envelope parsing: only the fields the projection needs, borrowed from the body where the
//! JSON has no escapes. The raw bytes are kept elsewhere, unchanged; this is a read-only view of them.
//!
//! Two shapes are accepted:
//! - snapshot events (`"object": "event"`), whose `data.object` is the full object after the change;
//! - thin events (`"object": "v2.core.event"`), which only name a `related_object`.

use crate::error::WebhookError;
use crate::json::{Scan, ScanError, Scanner};
use std::borrow::Cow;
use std::collections::BTreeMap;

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
    /// `data.previous_attributes.amount_refunded`: a Charge's refunded amount before this event.
    pub previous_amount_refunded: Option<i64>,
}

impl Envelope<'_> {
    /// `api_version` as text (empty when absent).
    pub fn api_version(&self) -> &str {
        self.api_version.as_deref().unwrap_or("")
    }
}

/// The fields of `data.object` the projection reads. All optional: which are present depends on the kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectFields<'a> {
    /// `id`.
    pub id: Option<Cow<'a, str>>,
    /// `object`: `payment_intent`, `charge`, `refund`, `dispute`, …
    pub object: Option<Cow<'a, str>>,
    /// `status`.
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
    pub currency: Option<Cow<'a, str>>,
    /// `captured` (Charge).
    pub captured: Option<bool>,
    /// `refunded` (Charge).
    pub refunded: Option<bool>,
    /// `payment_intent`: id, or the id of an expanded object.
    pub payment_intent: Option<Expandable<'a>>,
    /// `charge` (Refund, Dispute).
    pub charge: Option<Expandable<'a>>,
    /// `latest_charge` (PaymentIntent).
    pub latest_charge: Option<Expandable<'a>>,
    /// `customer`.
    pub customer: Option<Expandable<'a>>,
    /// `payment_method`.
    pub payment_method: Option<Expandable<'a>>,
    /// `metadata`.
    pub metadata: Option<BTreeMap<Cow<'a, str>, Cow<'a, str>>>,
    /// `failure_code` (Charge).
    pub failure_code: Option<Cow<'a, str>>,
    /// `last_payment_error` (PaymentIntent).
    pub last_payment_error: Option<PaymentError<'a>>,
    /// `reason` (Dispute, Refund).
    pub reason: Option<Cow<'a, str>>,
    /// `refunds` (Charge, when included).
    pub refunds: Option<RefundList<'a>>,
    /// `paid` (Charge).
    pub paid: Option<bool>,
    /// `created` of the object.
    pub created: Option<i64>,
    /// `payment_method_details.type` (Charge).
    pub payment_method_type: Option<Cow<'a, str>>,
    /// `fraud_type` (early fraud warning).
    pub fraud_type: Option<Cow<'a, str>>,
    /// `actionable` (early fraud warning).
    pub actionable: Option<bool>,
}

/// `last_payment_error`, reduced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PaymentError<'a> {
    /// `code`.
    pub code: Option<Cow<'a, str>>,
    /// `decline_code`.
    pub decline_code: Option<Cow<'a, str>>,
    /// `charge`.
    pub charge: Option<Expandable<'a>>,
}

/// `refunds` of a Charge: a list object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RefundList<'a> {
    /// `data`.
    pub data: Vec<EmbeddedRefund<'a>>,
}

/// One refund inside `charge.refunds.data`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EmbeddedRefund<'a> {
    /// `id`.
    pub id: Option<Cow<'a, str>>,
    /// `status`.
    pub status: Option<Cow<'a, str>>,
    /// `amount`.
    pub amount: Option<i64>,
    /// `currency`.
    pub currency: Option<Cow<'a, str>>,
    /// `charge`.
    pub charge: Option<Expandable<'a>>,
    /// `created`.
    pub created: Option<i64>,
}

/// An expandable reference: Stripe sends an id string, or the whole object when expanded. Either way we
/// keep the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expandable<'a>(pub Cow<'a, str>);

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
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RelatedObject<'a> {
    /// `id`.
    pub id: Option<Cow<'a, str>>,
    /// `type`.
    pub kind: Option<Cow<'a, str>>,
    /// `url`.
    pub url: Option<Cow<'a, str>>,
}

#[derive(Default)]
struct RawEvent<'a> {
    id: Option<Cow<'a, str>>,
    object: Option<Cow<'a, str>>,
    event_type: Option<Cow<'a, str>>,
    created_unix: Option<i64>,
    created_text: Option<Cow<'a, str>>,
    livemode: Option<bool>,
    api_version: Option<Cow<'a, str>>,
    account: Option<Cow<'a, str>>,
    context: Option<Cow<'a, str>>,
    request_id: Option<Cow<'a, str>>,
    idempotency_key: Option<Cow<'a, str>>,
    data_object: Option<ObjectFields<'a>>,
    has_data: bool,
    previous_attributes: bool,
    previous_amount_refunded: Option<i64>,
    related_object: Option<RelatedObject<'a>>,
}

/// Records a known key as seen; a second occurrence is noted as a shape error and its value skipped.
fn first_time(sc: &mut Scanner<'_>, seen: &mut u32, bit: u32) -> Scan<bool> {
    if *seen & (1 << bit) != 0 {
        sc.wrong("duplicate field")?;
        return Ok(false);
    }
    *seen |= 1 << bit;
    Ok(true)
}

fn read_event<'a>(sc: &mut Scanner<'a>, raw: &mut RawEvent<'a>) -> Scan<()> {
    let mut seen = 0u32;
    sc.object(|sc, key| {
        let bit = match key {
            "id" => 0,
            "object" => 1,
            "type" => 2,
            "created" => 3,
            "livemode" => 4,
            "api_version" => 5,
            "account" => 6,
            "context" => 7,
            "request" => 8,
            "data" => 9,
            "related_object" => 10,
            _ => return sc.skip(),
        };
        if !first_time(sc, &mut seen, bit)? {
            return Ok(());
        }
        match bit {
            0 => raw.id = sc.opt_string()?,
            1 => raw.object = sc.opt_string()?,
            2 => raw.event_type = sc.opt_string()?,
            3 => match sc.peek_byte() {
                Some(b'"') => raw.created_text = sc.opt_string()?,
                _ => raw.created_unix = sc.opt_i64()?,
            },
            4 => raw.livemode = sc.opt_bool()?,
            5 => raw.api_version = sc.opt_string()?,
            6 => raw.account = sc.opt_string()?,
            7 => raw.context = sc.opt_string()?,
            8 => match sc.peek_byte() {
                Some(b'{') => {
                    let mut seen = 0u32;
                    sc.object(|sc, key| {
                        let bit = match key {
                            "id" => 0,
                            "idempotency_key" => 1,
                            _ => return sc.skip(),
                        };
                        if first_time(sc, &mut seen, bit)? {
                            let v = sc.opt_string()?;
                            if bit == 0 {
                                raw.request_id = v;
                            } else {
                                raw.idempotency_key = v;
                            }
                        }
                        Ok(())
                    })?;
                }
                _ => raw.request_id = sc.opt_string()?,
            },
            9 => {
                if sc.null()? {
                    return Ok(());
                }
                raw.has_data = true;
                let mut seen = 0u32;
                sc.object(|sc, key| match key {
                    "object" => {
                        if first_time(sc, &mut seen, 0)? && !sc.null()? {
                            raw.data_object = Some(read_fields(sc)?);
                        }
                        Ok(())
                    }
                    "previous_attributes" => {
                        if first_time(sc, &mut seen, 1)? && !sc.null()? {
                            raw.previous_attributes = true;
                            let mut once = 0u32;
                            sc.object(|sc, key| {
                                if key == "amount_refunded" && first_time(sc, &mut once, 0)? {
                                    raw.previous_amount_refunded = sc.opt_i64()?;
                                    Ok(())
                                } else {
                                    sc.skip()
                                }
                            })?;
                        }
                        Ok(())
                    }
                    _ => sc.skip(),
                })?;
            }
            _ => {
                if !sc.null()? {
                    let mut r = RelatedObject::default();
                    let mut seen = 0u32;
                    sc.object(|sc, key| {
                        let bit = match key {
                            "id" => 0,
                            "type" => 1,
                            "url" => 2,
                            _ => return sc.skip(),
                        };
                        if first_time(sc, &mut seen, bit)? {
                            let v = sc.opt_string()?;
                            match bit {
                                0 => r.id = v,
                                1 => r.kind = v,
                                _ => r.url = v,
                            }
                        }
                        Ok(())
                    })?;
                    raw.related_object = Some(r);
                }
            }
        }
        Ok(())
    })
}

/// An expandable reference: an id string, or an object whose `id` we keep.
fn expandable<'a>(sc: &mut Scanner<'a>) -> Scan<Option<Expandable<'a>>> {
    match sc.peek_byte() {
        Some(b'{') => {
            let mut id = None;
            sc.object(|sc, key| {
                if key == "id" && id.is_none() {
                    id = sc.opt_string()?;
                    Ok(())
                } else {
                    sc.skip()
                }
            })?;
            if id.is_none() {
                sc.note("expanded object without id");
            }
            Ok(id.map(Expandable))
        }
        _ => Ok(sc.opt_string()?.map(Expandable)),
    }
}

fn read_fields<'a>(sc: &mut Scanner<'a>) -> Scan<ObjectFields<'a>> {
    let mut f = ObjectFields::default();
    let mut seen = 0u32;
    sc.object(|sc, key| {
        let bit = match key {
            "id" => 0,
            "object" => 1,
            "status" => 2,
            "amount" => 3,
            "amount_received" => 4,
            "amount_capturable" => 5,
            "amount_captured" => 6,
            "amount_refunded" => 7,
            "currency" => 8,
            "captured" => 9,
            "refunded" => 10,
            "payment_intent" => 11,
            "charge" => 12,
            "latest_charge" => 13,
            "customer" => 14,
            "payment_method" => 15,
            "metadata" => 16,
            "failure_code" => 17,
            "last_payment_error" => 18,
            "reason" => 19,
            "refunds" => 20,
            "paid" => 21,
            "created" => 22,
            "payment_method_details" => 23,
            "fraud_type" => 24,
            "actionable" => 25,
            _ => return sc.skip(),
        };
        if !first_time(sc, &mut seen, bit)? {
            return Ok(());
        }
        match bit {
            0 => f.id = sc.opt_string()?,
            1 => f.object = sc.opt_string()?,
            2 => f.status = sc.opt_string()?,
            3 => f.amount = sc.opt_i64()?,
            4 => f.amount_received = sc.opt_i64()?,
            5 => f.amount_capturable = sc.opt_i64()?,
            6 => f.amount_captured = sc.opt_i64()?,
            7 => f.amount_refunded = sc.opt_i64()?,
            8 => f.currency = sc.opt_string()?,
            9 => f.captured = sc.opt_bool()?,
            10 => f.refunded = sc.opt_bool()?,
            11 => f.payment_intent = expandable(sc)?,
            12 => f.charge = expandable(sc)?,
            13 => f.latest_charge = expandable(sc)?,
            14 => f.customer = expandable(sc)?,
            15 => f.payment_method = expandable(sc)?,
            16 => {
                if !sc.null()? {
                    let mut map = BTreeMap::new();
                    sc.object(|sc, key| {
                        let key = Cow::Owned(key.to_owned());
                        match sc.peek_byte() {
                            Some(b'"') => {
                                if let Some(v) = sc.opt_string()? {
                                    if map.insert(key, v).is_some() {
                                        sc.note("duplicate metadata key");
                                    }
                                }
                                Ok(())
                            }
                            _ => sc.wrong("metadata value is not a string"),
                        }
                    })?;
                    f.metadata = Some(map);
                }
            }
            17 => f.failure_code = sc.opt_string()?,
            18 => {
                if !sc.null()? {
                    let mut e = PaymentError::default();
                    let mut seen = 0u32;
                    sc.object(|sc, key| {
                        let bit = match key {
                            "code" => 0,
                            "decline_code" => 1,
                            "charge" => 2,
                            _ => return sc.skip(),
                        };
                        if first_time(sc, &mut seen, bit)? {
                            match bit {
                                0 => e.code = sc.opt_string()?,
                                1 => e.decline_code = sc.opt_string()?,
                                _ => e.charge = expandable(sc)?,
                            }
                        }
                        Ok(())
                    })?;
                    f.last_payment_error = Some(e);
                }
            }
            19 => f.reason = sc.opt_string()?,
            21 => f.paid = sc.opt_bool()?,
            22 => f.created = sc.opt_i64()?,
            23 => {
                if !sc.null()? {
                    let mut seen = 0u32;
                    sc.object(|sc, key| {
                        if key != "type" {
                            return sc.skip();
                        }
                        if first_time(sc, &mut seen, 0)? {
                            f.payment_method_type = sc.opt_string()?;
                        }
                        Ok(())
                    })?;
                }
            }
            24 => f.fraud_type = sc.opt_string()?,
            25 => f.actionable = sc.opt_bool()?,
            _ => {
                if !sc.null()? {
                    let mut list = RefundList::default();
                    let mut seen = 0u32;
                    sc.object(|sc, key| {
                        if key != "data" {
                            return sc.skip();
                        }
                        if first_time(sc, &mut seen, 0)? {
                            sc.array(|sc| {
                                let mut r = EmbeddedRefund::default();
                                let mut seen = 0u32;
                                sc.object(|sc, key| {
                                    let bit = match key {
                                        "id" => 0,
                                        "status" => 1,
                                        "amount" => 2,
                                        "currency" => 3,
                                        "charge" => 4,
                                        "created" => 5,
                                        _ => return sc.skip(),
                                    };
                                    if first_time(sc, &mut seen, bit)? {
                                        match bit {
                                            0 => r.id = sc.opt_string()?,
                                            1 => r.status = sc.opt_string()?,
                                            2 => r.amount = sc.opt_i64()?,
                                            3 => r.currency = sc.opt_string()?,
                                            4 => r.charge = expandable(sc)?,
                                            _ => r.created = sc.opt_i64()?,
                                        }
                                    }
                                    Ok(())
                                })?;
                                list.data.push(r);
                                Ok(())
                            })?;
                        }
                        Ok(())
                    })?;
                    f.refunds = Some(list);
                }
            }
        }
        Ok(())
    })?;
    Ok(f)
}

/// Parses a (verified) body. Errors: `BodyNotUtf8`, `BodyNotJson`, `NotAnEvent`.
pub fn parse_event(body: &[u8]) -> Result<ParsedEvent<'_>, WebhookError> {
    let text = std::str::from_utf8(body).map_err(|_| WebhookError::BodyNotUtf8)?;
    let mut sc = Scanner::new(text);
    let mut raw = RawEvent::default();
    sc.ws();
    if let Err(ScanError(at)) = read_event(&mut sc, &mut raw).and_then(|()| sc.end()) {
        // The offset only: never body content.
        return Err(WebhookError::BodyNotJson(format!("invalid JSON at byte {at}")));
    }
    if let Some(what) = sc.shape_error() {
        return Err(not_event(what));
    }
    let id = raw.id.ok_or_else(|| not_event("no id"))?;
    let event_type = raw.event_type.ok_or_else(|| not_event("no type"))?;
    match raw.object.as_deref() {
        Some("event") => {
            let created = raw.created_unix.ok_or_else(|| not_event("created is not a unix time"))?;
            if !raw.has_data {
                return Err(not_event("no data"));
            }
            let object = raw.data_object.ok_or_else(|| not_event("no data.object"))?;
            Ok(ParsedEvent::Snapshot(Envelope {
                id,
                event_type,
                created,
                livemode: raw.livemode.unwrap_or(false),
                api_version: raw.api_version,
                account: raw.account,
                request_id: raw.request_id,
                idempotency_key: raw.idempotency_key,
                object,
                has_previous_attributes: raw.previous_attributes,
                previous_amount_refunded: raw.previous_amount_refunded,
            }))
        }
        Some("v2.core.event") => {
            let created = raw.created_text.ok_or_else(|| not_event("thin event created is not a timestamp string"))?;
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
