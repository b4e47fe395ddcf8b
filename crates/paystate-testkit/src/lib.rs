//! # paystate-testkit
//!
//! Realistic Stripe traffic for tests, benchmarks and `paystate simulate`, kept out of the production
//! Stripe crate:
//! - [`synth`]: events modeled on Stripe's fixtures, rendered at each event's API version ([`synth::Versions`]);
//! - [`scenario`]: whole payment lifecycles (cards, 3-D Secure, bank debits, refunds, disputes, …) with
//!   the hand-written expected final state of each ([`scenario::Truth`]).

// The fixtures' `json!` objects are wide.
#![recursion_limit = "512"]

pub mod scenario;
pub mod synth;
