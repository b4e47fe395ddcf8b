//! Any JSON event through parsing, mapping and one payment's fold: never a panic; whatever maps to a
//! payment event applies, and applying it again is a duplicate that changes nothing and emits nothing.
//! Input: up to eight bodies separated by 0xff bytes (never in UTF-8), folded in turn into the payment of
//! the first one that maps.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paystate_core::{Effect, PaymentWithHistory};
use paystate_stripe::{map_event, parse_event, payment_key, Mapped};

fuzz_target!(|data: &[u8]| {
    let mut payment: Option<PaymentWithHistory> = None;
    for body in data.split(|&b| b == 0xff).take(8) {
        let Ok(event) = parse_event(body) else { continue };
        let key = payment_key(&event);
        let Ok(Mapped::Payment(ev)) = map_event(&event) else { continue };
        assert_eq!(key.as_ref(), Some(&ev.key), "the log's key is the fold's");
        let p = payment.get_or_insert_with(|| PaymentWithHistory::new(ev.key.clone()));
        if p.payment.state.key != ev.key {
            assert!(p.apply(ev).is_err(), "another payment's event is refused");
            continue;
        }
        p.apply(ev.clone()).expect("the payment's own event applies");
        let before = p.clone();
        let again = p.apply(ev).expect("applies again");
        assert!(matches!(again.effect, Effect::Duplicate { .. }), "{:?}", again.effect);
        assert!(again.actions.is_empty());
        assert_eq!(*p, before);
    }
});
