//! Realistic Stripe events, generated deterministically from a seed.
//!
//! The objects have the field set and value shapes of Stripe's own fixtures (PaymentIntent, Charge, Refund,
//! Dispute, early fraud warning) and are pretty-printed as Stripe sends them, rendered as Stripe renders
//! them at each event's API version (see [`Versions`] and docs/API-VERSIONS.md): a Charge embeds its
//! refunds only before 2022-11-15, and which events exist for a refund depends on the era. Used by tests,
//! benchmarks and `paystate simulate`. Nothing here reads a clock or a file.

use paystate_core::ApiEra;
use paystate_stripe::mapping::era_of;
use serde_json::{json, Map, Value};

/// The API version generated events claim by default: a current one.
pub const API_VERSION: &str = "2025-10-29.clover";

/// The API version of each generated event: one version, or an upgrade from one version to another at a
/// given Stripe time (an endpoint upgraded while traffic flows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    /// The version before the upgrade (or the only one).
    pub before: String,
    /// The upgrade: from this Stripe time on, events are rendered at this version.
    pub upgrade: Option<(i64, String)>,
}

impl Versions {
    /// Every event at `version`.
    pub fn single(version: &str) -> Self {
        Versions { before: version.to_owned(), upgrade: None }
    }

    /// The version an event created at `t` is rendered in.
    pub fn at(&self, t: i64) -> &str {
        match &self.upgrade {
            Some((switch, after)) if t >= *switch => after,
            _ => &self.before,
        }
    }

    /// The era of an event created at `t`.
    pub fn era_at(&self, t: i64) -> ApiEra {
        era_of(self.at(t))
    }
}

impl Default for Versions {
    fn default() -> Self {
        Versions::single(API_VERSION)
    }
}

/// A refund as the generator tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimRefund {
    /// `re_…`
    pub id: String,
    /// `amount`.
    pub amount: i64,
    /// `status` now.
    pub status: String,
    /// `created`.
    pub created: i64,
    /// Stripe's own refund of an uncaptured rest or a released authorization (no money moves).
    pub own: bool,
}

/// A Charge as the generator tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeView {
    /// `ch_…` / `py_…`
    pub id: String,
    /// `status`.
    pub status: String,
    /// `captured`.
    pub captured: bool,
    /// `amount_captured`.
    pub amount_captured: i64,
    /// Its refunds, in creation order.
    pub refunds: Vec<SimRefund>,
    /// `failure_code`.
    pub failure: Option<String>,
}

/// A small deterministic PRNG (SplitMix64): reproducible test data without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// A Stripe-style id: `prefix_` and 24 base-62 characters.
    pub fn id(&mut self, prefix: &str) -> String {
        self.id_len(prefix, 24)
    }

    /// `prefix_` and `len` base-62 characters.
    pub fn id_len(&mut self, prefix: &str, len: usize) -> String {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut s = String::with_capacity(prefix.len() + 1 + len);
        s.push_str(prefix);
        s.push('_');
        for _ in 0..len {
            let i = usize::try_from(self.below(62)).unwrap_or(0);
            s.push(char::from(ALPHABET[i]));
        }
        s
    }

    /// Picks one of `items` (non-empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let i = usize::try_from(self.below(items.len() as u64)).unwrap_or(0);
        &items[i]
    }
}

/// How the customer pays: card (synchronous) or a bank debit (asynchronous, goes through `processing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `card`
    Card,
    /// `us_bank_account` (ACH debit)
    BankDebit,
}

/// One payment being generated: its ids and the attributes every snapshot repeats.
#[derive(Debug, Clone)]
pub struct PaymentSim {
    /// `pi_…`
    pub pi: String,
    /// Connect account, if any.
    pub account: Option<String>,
    /// `amount`.
    pub amount: i64,
    /// `currency`.
    pub currency: &'static str,
    /// `customer`.
    pub customer: Option<String>,
    /// `metadata.order_id`.
    pub order_id: String,
    /// `livemode`.
    pub livemode: bool,
    /// Manual capture (`capture_method: manual`).
    pub manual_capture: bool,
    /// Payment method kind.
    pub method: Method,
    /// A legacy charge made without a PaymentIntent (`payment_intent: null`).
    pub without_intent: bool,
    /// `created` of the PaymentIntent.
    pub created: i64,
    /// The API version of each event.
    pub versions: Versions,
    /// The amount captured, when a manual capture takes less than was authorised.
    pub capture_amount: Option<i64>,
    payment_method: String,
    name: &'static str,
    email: String,
    city: (&'static str, &'static str, &'static str),
}

/// A generated event: its id, time and JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthEvent {
    /// `id`.
    pub id: String,
    /// `type`.
    pub event_type: String,
    /// `created`.
    pub created: i64,
    /// The whole event.
    pub json: Value,
}

impl SynthEvent {
    /// The body as Stripe sends it (pretty-printed JSON).
    pub fn body(&self) -> Vec<u8> {
        // Serializing a `Value` cannot fail.
        serde_json::to_vec_pretty(&self.json).unwrap_or_default()
    }
}

const NAMES: [&str; 8] = [
    "Fatima Kim",
    "Ethan Patel",
    "Hannah Silva",
    "Lucas Moreau",
    "Aiko Tanaka",
    "Noah Schmidt",
    "Maria Rossi",
    "Omar Haddad",
];
const CITIES: [(&str, &str, &str); 4] =
    [("Berlin", "DE", "10115"), ("London", "GB", "EC1A 1BB"), ("Paris", "FR", "75001"), ("Toronto", "CA", "M5H 2N2")];
// Zero-decimal (JPY) and three-decimal (KWD) currencies too: amounts are in each currency's minor unit.
const CURRENCIES: [&str; 6] = ["usd", "eur", "gbp", "cad", "jpy", "kwd"];

impl PaymentSim {
    /// A new payment with random but realistic attributes, created at `created`.
    pub fn new(rng: &mut Rng, created: i64) -> Self {
        let name = *rng.pick(&NAMES);
        let first = name.split(' ').next().unwrap_or("customer").to_lowercase();
        PaymentSim {
            pi: rng.id("pi"),
            account: None,
            amount: 500 + i64::try_from(rng.below(30_000)).unwrap_or(0),
            currency: CURRENCIES[usize::try_from(rng.below(CURRENCIES.len() as u64)).unwrap_or(0)],
            customer: rng.chance(0.8).then(|| rng.id_len("cus", 14)),
            order_id: format!("ord_{:06}", rng.below(1_000_000)),
            livemode: false,
            manual_capture: false,
            method: Method::Card,
            without_intent: false,
            created,
            versions: Versions::default(),
            capture_amount: None,
            payment_method: rng.id("pm"),
            name,
            email: format!("{first}.{}@example.com", rng.below(1000)),
            city: *rng.pick(&CITIES),
        }
    }

    fn envelope(
        &self,
        rng: &mut Rng,
        event_type: &str,
        created: i64,
        object: Value,
        previous: Option<Value>,
    ) -> SynthEvent {
        let id = rng.id("evt");
        let mut data = Map::new();
        data.insert("object".into(), object);
        if let Some(p) = previous {
            data.insert("previous_attributes".into(), p);
        }
        let mut ev = Map::new();
        ev.insert("id".into(), json!(id));
        ev.insert("object".into(), json!("event"));
        if let Some(acct) = &self.account {
            ev.insert("account".into(), json!(acct));
        }
        ev.insert("api_version".into(), json!(self.versions.at(created)));
        ev.insert("created".into(), json!(created));
        ev.insert("data".into(), Value::Object(data));
        ev.insert("livemode".into(), json!(self.livemode));
        ev.insert("pending_webhooks".into(), json!(1));
        let request = if rng.chance(0.5) {
            json!({"id": rng.id_len("req", 14), "idempotency_key": format!("{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}", rng.next_u64() as u32, rng.below(0x10000), rng.below(0x1000), 0x8000 + rng.below(0x4000), rng.next_u64() & 0xffff_ffff_ffff)})
        } else {
            json!({"id": null, "idempotency_key": null})
        };
        ev.insert("request".into(), request);
        ev.insert("type".into(), json!(event_type));
        SynthEvent { id, event_type: event_type.to_owned(), created, json: Value::Object(ev) }
    }

    fn pi_ref(&self) -> Value {
        if self.without_intent {
            Value::Null
        } else {
            json!(self.pi)
        }
    }

    fn method_types(&self) -> (Value, Value) {
        match self.method {
            Method::Card => (
                json!(["card"]),
                json!({"card": {"installments": null, "mandate_options": null, "network": null, "request_three_d_secure": "automatic"}}),
            ),
            Method::BankDebit => {
                (json!(["us_bank_account"]), json!({"us_bank_account": {"verification_method": "automatic"}}))
            }
        }
    }

    fn billing(&self) -> Value {
        json!({
            "address": {"city": self.city.0, "country": self.city.1, "line1": "636 Market St", "line2": null, "postal_code": self.city.2, "state": null},
            "email": self.email, "name": self.name, "phone": null, "tax_id": null
        })
    }

    /// A PaymentIntent snapshot.
    pub fn intent(
        &self,
        rng: &mut Rng,
        status: &str,
        latest_charge: Option<&str>,
        error: Option<(&str, &str, &str)>,
    ) -> Value {
        let (types, options) = self.method_types();
        let received = if status == "succeeded" { self.capture_amount.unwrap_or(self.amount) } else { 0 };
        let capturable = if status == "requires_capture" { self.amount } else { 0 };
        let last_payment_error = error.map(|(charge, code, decline)| {
            json!({
                "charge": charge, "code": code, "decline_code": decline,
                "doc_url": format!("https://stripe.com/docs/error-codes/{}", code.replace('_', "-")),
                "message": "Your card was declined.",
                "payment_method": {"id": self.payment_method, "object": "payment_method", "billing_details": self.billing(), "created": self.created, "customer": self.customer, "livemode": self.livemode, "metadata": {}, "type": "card"},
                "type": "card_error"
            })
        });
        let next_action = (status == "requires_action").then(|| {
            json!({"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure_redirect", "stripe_js": "https://hooks.stripe.com/redirect/authenticate/src_1", "source": rng.id("src")}})
        });
        json!({
            "id": self.pi, "object": "payment_intent", "amount": self.amount, "amount_capturable": capturable,
            "amount_details": {"tip": {}}, "amount_received": received, "application": null,
            "application_fee_amount": null, "automatic_payment_methods": null,
            "canceled_at": if status == "canceled" { json!(self.created + 3600) } else { Value::Null },
            "cancellation_reason": if status == "canceled" { json!("requested_by_customer") } else { Value::Null },
            "capture_method": if self.manual_capture { "manual" } else { "automatic_async" },
            "client_secret": format!("{}_secret_{}", self.pi, rng.id_len("x", 25).trim_start_matches("x_")),
            "confirmation_method": "automatic", "created": self.created, "currency": self.currency,
            "customer": self.customer, "customer_account": null, "description": "Order payment",
            "excluded_payment_method_types": null, "last_payment_error": last_payment_error,
            "latest_charge": latest_charge, "livemode": self.livemode, "managed_payments": {"enabled": false},
            "metadata": {"order_id": self.order_id}, "next_action": next_action, "on_behalf_of": null,
            "payment_method": if status == "requires_payment_method" && error.is_none() { Value::Null } else { json!(self.payment_method) },
            "payment_method_configuration_details": null, "payment_method_options": options,
            "payment_method_types": types, "processing": null, "receipt_email": null, "review": null,
            "setup_future_usage": null, "shipping": null, "source": null, "statement_descriptor": null,
            "statement_descriptor_suffix": null, "status": status, "transfer_data": null, "transfer_group": null
        })
    }

    /// A `payment_intent.*` event.
    pub fn intent_event(
        &self,
        rng: &mut Rng,
        event_type: &str,
        t: i64,
        status: &str,
        latest_charge: Option<&str>,
        error: Option<(&str, &str, &str)>,
    ) -> SynthEvent {
        let obj = self.intent(rng, status, latest_charge, error);
        self.envelope(rng, event_type, t, obj, None)
    }

    /// A Charge snapshot. `refunds` are `(id, amount, status)`, all customer refunds created at `t`.
    #[allow(clippy::too_many_arguments)]
    pub fn charge(
        &self,
        rng: &mut Rng,
        id: &str,
        status: &str,
        captured: bool,
        refunds: &[(String, i64, String)],
        failure: Option<&str>,
        t: i64,
    ) -> Value {
        let view = ChargeView {
            id: id.to_owned(),
            status: status.to_owned(),
            captured,
            amount_captured: if captured { self.amount } else { 0 },
            refunds: refunds
                .iter()
                .map(|(rid, amount, st)| SimRefund {
                    id: rid.clone(),
                    amount: *amount,
                    status: st.clone(),
                    created: t,
                    own: false,
                })
                .collect(),
            failure: failure.map(str::to_owned),
        };
        self.charge_of(rng, &view, t)
    }

    /// A Charge snapshot at `t`, rendered at the API version of `t`: `amount_refunded` counts every refund
    /// not failed (pending ones and Stripe's own included), `paid` only once the money arrived, and the
    /// `refunds` list only before 2022-11-15.
    pub fn charge_of(&self, rng: &mut Rng, c: &ChargeView, t: i64) -> Value {
        let id = c.id.as_str();
        let status = c.status.as_str();
        let failure = c.failure.as_deref();
        let refunded_amount: i64 = c
            .refunds
            .iter()
            .filter(|r| matches!(r.status.as_str(), "succeeded" | "pending" | "requires_action"))
            .map(|r| r.amount)
            .sum();
        let details = match self.method {
            Method::Card => json!({"card": {
                "amount_authorized": self.amount, "brand": "visa",
                "checks": {"address_line1_check": null, "address_postal_code_check": "pass", "cvc_check": "pass"},
                "country": self.city.1, "exp_month": 1 + rng.below(12), "exp_year": 2027 + rng.below(4),
                "extended_authorization": {"status": "disabled"}, "fingerprint": rng.id_len("fp", 16).trim_start_matches("fp_"),
                "funding": "credit", "incremental_authorization": {"status": "unavailable"}, "installments": null,
                "last4": "4242", "mandate": null, "multicapture": {"status": "unavailable"}, "network": "visa",
                "network_token": {"used": false},
                "overcapture": {"maximum_amount_capturable": self.amount, "status": "unavailable"},
                "three_d_secure": null, "wallet": null, "authorization_code": format!("{:06}", rng.below(1_000_000)),
                "regulated_status": "unregulated", "network_transaction_id": format!("{:015}", rng.below(1_000_000_000_000_000)),
                "transaction_link_id": null}, "type": "card"}),
            Method::BankDebit => json!({"us_bank_account": {
                "account_holder_type": "individual", "account_type": "checking", "bank_name": "STRIPE TEST BANK",
                "fingerprint": rng.id_len("fp", 16).trim_start_matches("fp_"), "last4": "6789",
                "mandate": rng.id("mandate"), "payment_reference": null, "routing_number": "110000000"}, "type": "us_bank_account"}),
        };
        let outcome = if status == "failed" {
            json!({"advice_code": null, "network_advice_code": null, "network_decline_code": null, "network_status": "declined_by_network", "reason": failure.unwrap_or("generic_decline"), "risk_level": "normal", "risk_score": rng.below(100), "seller_message": "The bank did not return any further details with this decline.", "type": "issuer_declined"})
        } else {
            json!({"advice_code": null, "network_advice_code": null, "network_decline_code": null, "network_status": "approved_by_network", "reason": null, "risk_level": "normal", "risk_score": rng.below(100), "seller_message": "Payment complete.", "type": "authorized"})
        };
        let mut charge = json!({
            "id": id, "object": "charge", "amount": self.amount,
            "amount_captured": c.amount_captured, "amount_refunded": refunded_amount,
            "application": null, "application_fee": null, "application_fee_amount": null,
            "balance_transaction": if c.captured { json!(rng.id("txn")) } else { Value::Null },
            "billing_details": self.billing(), "calculated_statement_descriptor": "ACME* SHOP",
            "captured": c.captured, "created": self.created, "currency": self.currency, "customer": self.customer,
            "description": "Order payment", "disputed": false, "failure_balance_transaction": null,
            "failure_code": failure, "failure_message": failure.map(|_| "Your card was declined."),
            "fraud_details": {}, "livemode": self.livemode, "metadata": {"order_id": self.order_id},
            "on_behalf_of": null, "outcome": outcome, "paid": status == "succeeded",
            "payment_intent": self.pi_ref(), "payment_method": self.payment_method,
            "payment_method_details": details, "receipt_email": null, "receipt_number": null,
            "receipt_url": format!("https://pay.stripe.com/receipts/payment/{}", rng.id_len("r", 96).trim_start_matches("r_")),
            "refunded": refunded_amount >= self.amount,
            "review": null, "shipping": null, "source": null, "source_transfer": null,
            "statement_descriptor": null, "statement_descriptor_suffix": null, "status": status,
            "transfer_data": null, "transfer_group": null
        });
        if self.versions.era_at(t) == ApiEra::Legacy {
            let refund_objs: Vec<Value> = c.refunds.iter().map(|r| self.refund_of(rng, r, id)).collect();
            charge["refunds"] = json!({"data": refund_objs, "has_more": false, "object": "list", "total_count": c.refunds.len(), "url": format!("/v1/charges/{id}/refunds")});
        }
        charge
    }

    /// A `charge.*` event.
    #[allow(clippy::too_many_arguments)]
    pub fn charge_event(
        &self,
        rng: &mut Rng,
        event_type: &str,
        t: i64,
        id: &str,
        status: &str,
        captured: bool,
        refunds: &[(String, i64, String)],
        failure: Option<&str>,
    ) -> SynthEvent {
        let obj = self.charge(rng, id, status, captured, refunds, failure, t);
        let previous = (event_type == "charge.refunded").then(|| json!({"amount_refunded": 0, "refunded": false}));
        self.envelope(rng, event_type, t, obj, previous)
    }

    /// A `charge.*` event about `c` as it is at `t`; `previous` becomes `data.previous_attributes`.
    pub fn charge_view_event(
        &self,
        rng: &mut Rng,
        event_type: &str,
        t: i64,
        c: &ChargeView,
        previous: Option<Value>,
    ) -> SynthEvent {
        let obj = self.charge_of(rng, c, t);
        self.envelope(rng, event_type, t, obj, previous)
    }

    /// A Refund of charge `charge` as it is now.
    pub fn refund_of(&self, rng: &mut Rng, r: &SimRefund, charge: &str) -> Value {
        let method = match self.method {
            Method::Card => {
                json!({"card": {"reference": null, "reference_status": "pending", "reference_type": "acquirer_reference_number", "type": "refund"}, "type": "card"})
            }
            Method::BankDebit => {
                json!({"type": "us_bank_transfer", "us_bank_transfer": {"reference": null, "reference_status": "pending"}})
            }
        };
        json!({
            "id": r.id, "object": "refund", "amount": r.amount, "balance_transaction": rng.id("txn"),
            "charge": charge, "created": r.created, "currency": self.currency, "customer": null, "customer_account": null,
            "destination_details": method,
            "failure_reason": if r.status == "failed" { json!("expired_or_canceled_card") } else { Value::Null },
            "metadata": {}, "payment_intent": self.pi_ref(), "payment_method": null,
            "reason": if r.own { Value::Null } else { json!("requested_by_customer") },
            "receipt_number": null, "source_transfer_reversal": null, "status": r.status, "transfer_reversal": null
        })
    }

    /// A `refund.*` / `charge.refund.updated` event about `r` as it is now.
    pub fn refund_view_event(
        &self,
        rng: &mut Rng,
        event_type: &str,
        t: i64,
        r: &SimRefund,
        charge: &str,
        previous_status: Option<&str>,
    ) -> SynthEvent {
        let obj = self.refund_of(rng, r, charge);
        let previous = previous_status.map(|s| json!({"status": s}));
        self.envelope(rng, event_type, t, obj, previous)
    }

    /// A `radar.early_fraud_warning.*` event about charge `charge`.
    pub fn fraud_warning_event(
        &self,
        rng: &mut Rng,
        event_type: &str,
        t: i64,
        id: &str,
        charge: &str,
        actionable: bool,
    ) -> SynthEvent {
        let obj = json!({
            "id": id, "object": "radar.early_fraud_warning", "actionable": actionable, "charge": charge,
            "created": t, "fraud_type": "made_with_stolen_card", "livemode": self.livemode,
            "payment_intent": self.pi_ref()
        });
        let previous = event_type.ends_with(".updated").then(|| json!({"actionable": true}));
        self.envelope(rng, event_type, t, obj, previous)
    }

    /// A `charge.dispute.*` event.
    #[allow(clippy::too_many_arguments)]
    pub fn dispute_event(
        &self,
        rng: &mut Rng,
        event_type: &str,
        t: i64,
        id: &str,
        charge: &str,
        amount: i64,
        status: &str,
    ) -> SynthEvent {
        let obj = json!({
            "id": id, "object": "dispute", "amount": amount, "balance_transactions": [], "charge": charge,
            "created": t, "currency": self.currency, "enhanced_eligibility_types": [],
            "evidence": {"access_activity_log": null, "billing_address": null, "cancellation_policy": null, "customer_email_address": null, "customer_name": null, "product_description": null, "receipt": null, "refund_policy": null, "shipping_tracking_number": null, "uncategorized_text": null},
            "evidence_details": {"due_by": t + 7 * 86_400, "has_evidence": false, "past_due": false, "submission_count": 0},
            "is_charge_refundable": false, "livemode": self.livemode, "metadata": {}, "payment_intent": self.pi_ref(),
            "payment_method_details": {"card": {"brand": "visa", "case_type": if status.starts_with("warning") { "inquiry" } else { "chargeback" }, "network_reason_code": "10.4"}, "type": "card"},
            "reason": "fraudulent", "status": status
        });
        let previous = event_type.ends_with(".updated").then(|| json!({"status": "needs_response"}));
        self.envelope(rng, event_type, t, obj, previous)
    }
}
