//! The store on real sled in temporary directories.

use paystate_core::{Payment, PaymentKey};
use paystate_store::{decode_frames, put_frame, Batch, DeadLetter, LogRecord, Store, StoreError, Stream};
use proptest::prelude::*;
use std::collections::BTreeSet;

/// The core inputs of one generated `scenario`, as the projector maps them (every scenario event is about a
/// payment).
fn scenario_events(
    scenario: paystate_testkit::scenario::Scenario,
    rng: &mut paystate_testkit::synth::Rng,
) -> Vec<paystate_core::PaymentEvent> {
    use paystate_stripe::{map_event, parse_event, Mapped};
    let (events, _) = paystate_testkit::scenario::generate(scenario, rng, 1_718_900_000);
    events
        .iter()
        .map(|e| match map_event(&parse_event(&e.body()).expect("parse")) {
            Ok(Mapped::Payment(ev)) => ev,
            other => panic!("{}: not a payment event: {other:?}", e.id),
        })
        .collect()
}

/// The payment `events` fold into.
fn folded(events: Vec<paystate_core::PaymentEvent>) -> Payment {
    let mut payment: Option<Payment> = None;
    for ev in events {
        payment.get_or_insert_with(|| Payment::new(ev.key.clone())).apply(ev).expect("apply");
    }
    payment.expect("payment")
}

/// Runs `open` until it does not fail on sled's file lock, up to a deadline: a sled database just dropped
/// releases its lock only once its background flusher has stopped.
fn until_unlocked<T, E: std::fmt::Display>(open: impl Fn() -> Result<T, E>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open() {
            Ok(v) => return v,
            Err(e) if std::time::Instant::now() < deadline && e.to_string().contains("lock") => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn record(i: usize, body: &[u8]) -> LogRecord {
    LogRecord {
        received_at_ms: 1_700_000_000_000 + i as i64,
        event_id: format!("evt_{i}"),
        event_type: "payment_intent.succeeded".into(),
        payment_key: format!("pi_{}", i % 7),
        signature: format!("t=1700000000,v1={i:064x}"),
        body: body.to_vec(),
    }
}

proptest! {
    #[test]
    fn records_round_trip(ts in any::<i64>(), id in ".{0,40}", ty in ".{0,40}", key in ".{0,40}", sig in ".{0,200}", body in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let r = LogRecord { received_at_ms: ts, event_id: id, event_type: ty, payment_key: key, signature: sig, body };
        prop_assert_eq!(LogRecord::decode(&r.encode().expect("encode")).expect("decode"), r);
    }

    #[test]
    fn damaged_records_are_errors_not_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Err(e) = LogRecord::decode(&bytes) {
            prop_assert!(matches!(e, StoreError::Corrupt { .. }), "{}", e);
        }
    }

    /// The admin API's log frames: what is framed decodes back, offsets and records alike; a truncated body
    /// gives an error or the whole frames before the cut; damage gives an error or what the bytes say,
    /// never a panic.
    #[test]
    fn log_frames_round_trip_and_damage_is_an_error(
        records in proptest::collection::vec((any::<u64>(), ".{0,30}", proptest::collection::vec(any::<u8>(), 0..300)), 0..6),
        cut in any::<usize>(),
        flip in any::<(usize, u8)>(),
    ) {
        let mut body = Vec::new();
        let mut want = Vec::new();
        for (offset, id, payload) in records {
            let r = LogRecord { received_at_ms: 7, event_id: id, event_type: "t".into(), payment_key: String::new(), signature: String::new(), body: payload };
            put_frame(&mut body, offset, &r.encode().expect("encode")).expect("frame");
            want.push((offset, r));
        }
        prop_assert_eq!(&decode_frames(&body).expect("decode"), &want);
        if !body.is_empty() {
            let cut = cut % body.len();
            // Cut inside a frame: an error; cut between frames: the frames before the cut (a reader asks
            // again from the offset after the last one it got).
            match decode_frames(&body[..cut]) {
                Ok(got) => prop_assert!(got.len() < want.len() && got[..] == want[..got.len()]),
                Err(e) => prop_assert!(matches!(e, StoreError::Corrupt { .. }), "{}", e),
            }
            let mut damaged = body.clone();
            let at = flip.0 % damaged.len();
            damaged[at] ^= flip.1 | 1;
            if let Err(e) = decode_frames(&damaged) {
                prop_assert!(matches!(e, StoreError::Corrupt { .. }), "{}", e);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_durable_and_ordered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 4).expect("open");
    let appender = store.log.start_appender();
    let mut tasks = Vec::new();
    for i in 0..400usize {
        let h = appender.handle();
        tasks.push(tokio::spawn(async move { h.append((i % 4) as u32, &record(i, b"{}")).await }));
    }
    let mut positions = BTreeSet::new();
    for t in tasks {
        let pos = t.await.expect("join").expect("append");
        assert!(positions.insert((pos.partition, pos.offset)), "position given twice");
    }
    appender.close();
    for p in 0..4 {
        assert_eq!(store.log.end(p), 100);
    }
    drop(store);
    // Everything acknowledged is there after reopening.
    let store = Store::open(dir.path(), 4).expect("reopen");
    let mut ids = BTreeSet::new();
    for p in 0..4 {
        let all = store.log.read_all(p).expect("read");
        assert_eq!(all.len(), 100);
        assert!(all.iter().enumerate().all(|(i, (o, _))| *o == i as u64), "dense offsets");
        ids.extend(all.into_iter().map(|(_, r)| r.event_id));
    }
    assert_eq!(ids.len(), 400);
    drop(store);
    assert!(matches!(Store::open(dir.path(), 8), Err(StoreError::PartitionMismatch { found: 4, wanted: 8 })));
}

#[test]
fn batches_commit_atomically_with_their_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path(), 2).expect("open");
        let proj = &store.projection;
        assert_eq!(proj.position(1).expect("pos"), 0);
        let mut batch = Batch { applied: 3, duplicates: 1, ..Batch::default() };
        batch.positions.insert(1, 42);
        let p = Payment::new(PaymentKey::connected("acct_1", "pi_1"));
        batch.payments.insert("acct_1/pi_1".into(), p.clone());
        batch.actions = vec![b"{\"a\":1}".to_vec(), b"{\"a\":2}".to_vec()];
        batch.updates = vec![b"{\"u\":1}".to_vec()];
        batch.dead.push(DeadLetter {
            partition: 1,
            offset: 40,
            event_id: "evt_x".into(),
            event_type: "x".into(),
            reason: "body_not_json".into(),
        });
        proj.commit(&batch).expect("commit");
        let mut batch2 = Batch { actions: vec![b"{\"a\":3}".to_vec()], ..Batch::default() };
        batch2.positions.insert(1, 50);
        proj.commit(&batch2).expect("commit");
    }
    let store = Store::open(dir.path(), 2).expect("reopen");
    let proj = &store.projection;
    assert_eq!(proj.position(1).expect("pos"), 50);
    assert_eq!(proj.position(0).expect("pos"), 0);
    assert!(proj.payment("acct_1/pi_1").expect("get").is_some());
    assert!(proj.payment("pi_1").expect("get").is_none());
    let actions = proj.read_stream(Stream::Actions, 0, 10).expect("stream");
    assert_eq!(actions.iter().map(|(c, _)| *c).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(actions[2].1, b"{\"a\":3}");
    assert_eq!(proj.read_stream(Stream::Actions, 2, 10).expect("stream").len(), 1);
    assert_eq!(proj.stream_end(Stream::Payments).expect("end"), 1);
    let totals = proj.totals().expect("totals");
    assert_eq!((totals.applied, totals.duplicates, totals.actions, totals.dead_letters), (3, 1, 3, 1));
    assert_eq!(proj.dead_letters().expect("dead")[0].reason, "body_not_json");
}

/// Every lifecycle's payment (history, refunds, disputes, ledger) survives the store's encoding exactly.
#[test]
fn realistic_payments_round_trip_through_the_store() {
    use paystate_testkit::scenario::Scenario;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 1).expect("open");
    let mut rng = paystate_testkit::synth::Rng::new(5);
    let mut batch = Batch::default();
    for scenario in Scenario::ALL {
        let p = folded(scenario_events(scenario, &mut rng));
        batch.payments.insert(p.state.key.to_string(), p);
    }
    store.projection.commit(&batch).expect("commit");
    for (key, p) in &batch.payments {
        assert_eq!(store.projection.payment(key).expect("get").as_ref(), Some(p), "{key}");
    }
}

/// The lifecycle index follows every payment through its lifecycles: after each batch, listing one
/// lifecycle through the index gives exactly the payments a full scan finds in it, page by page.
#[test]
fn the_lifecycle_index_agrees_with_a_full_scan_after_every_batch() {
    use paystate_core::Lifecycle;
    use paystate_testkit::scenario::Scenario;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 1).expect("open");
    let mut rng = paystate_testkit::synth::Rng::new(11);
    // Every scenario twice; their events applied in rounds, so that payments move between lifecycles.
    let mut lifecycles_seen = BTreeSet::new();
    let payments: Vec<Vec<paystate_core::PaymentEvent>> =
        Scenario::ALL.iter().chain(Scenario::ALL.iter()).map(|s| scenario_events(*s, &mut rng)).collect();
    let mut live: Vec<Option<Payment>> = vec![None; payments.len()];
    let rounds = payments.iter().map(Vec::len).max().unwrap_or(0);
    for round in 0..rounds {
        let mut batch = Batch::default();
        for (i, events) in payments.iter().enumerate() {
            let Some(ev) = events.get(round) else { continue };
            let p = live[i].get_or_insert_with(|| Payment::new(ev.key.clone()));
            p.apply(ev.clone()).expect("apply");
            batch.payments.insert(p.state.key.to_string(), p.clone());
        }
        store.projection.commit(&batch).expect("commit");
        for lifecycle in Lifecycle::ALL {
            let want: Vec<String> = store
                .projection
                .all_payments()
                .map(|p| p.expect("payment"))
                .filter(|p| p.state.lifecycle == lifecycle)
                .map(|p| p.state.key.to_string())
                .collect();
            let mut got = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = store.projection.payments_in(lifecycle, after.as_deref(), 3, |_| true).expect("page");
                got.extend(page.iter().map(|p| p.state.key.to_string()));
                if page.len() < 3 {
                    break;
                }
                after = got.last().cloned();
            }
            assert_eq!(got, want, "round {round}, {lifecycle:?}");
            if !want.is_empty() {
                lifecycles_seen.insert(lifecycle);
            }
        }
    }
    assert!(lifecycles_seen.len() >= 7, "{lifecycles_seen:?}");
}

/// The stored payment's bytes are a format: `tests/fixtures/payment-format-2.hex` holds a payment of the
/// release that introduced format 2, as it stored it. It must keep decoding to the same payment, and the
/// current code must keep writing exactly these bytes. If this fails because a core struct changed, the
/// stored format changed: bump `PAYMENT_FORMAT` (payments of format 2 are then rebuilt from the log at open,
/// as format 1 is) and add the new format's golden file beside this one.
#[test]
fn the_stored_payment_format_is_pinned_by_golden_bytes() {
    let golden_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/payment-format-2.hex");
    let hex = std::fs::read_to_string(&golden_path).expect("golden file");
    let golden: Vec<u8> =
        (0..hex.trim().len()).step_by(2).map(|i| u8::from_str_radix(&hex.trim()[i..i + 2], 16).expect("hex")).collect();
    assert_eq!(golden.first(), Some(&2), "format byte");

    let mut rng = paystate_testkit::synth::Rng::new(2024);
    let payment = folded(scenario_events(paystate_testkit::scenario::Scenario::PartialRefunds, &mut rng));
    let key = payment.state.key.to_string();

    // Decoding: the golden bytes, put where the store keeps payments, read back as this payment.
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = until_unlocked(|| sled::open(dir.path().join("projection")));
        db.open_tree("payments").expect("tree").insert(key.as_bytes(), golden.as_slice()).expect("insert");
        db.flush().expect("flush");
    }
    let projection = until_unlocked(|| Store::open_projection(dir.path()));
    assert_eq!(projection.payment(&key).expect("decode").as_ref(), Some(&payment));
    drop(projection);

    // Encoding: what the store writes for it today.
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let projection = Store::open_projection(dir.path()).expect("open");
        let mut batch = Batch::default();
        batch.payments.insert(key.clone(), payment.clone());
        projection.commit(&batch).expect("commit");
    }
    let db = until_unlocked(|| sled::open(dir.path().join("projection")));
    let stored = db.open_tree("payments").expect("tree").get(key.as_bytes()).expect("get").expect("stored");
    assert!(
        stored.as_ref() == golden.as_slice(),
        "the stored payment format changed: bump PAYMENT_FORMAT (see the doc comment)"
    );
}
