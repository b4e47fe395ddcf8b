//! The store on real sled in temporary directories.

use paystate_core::{Payment, PaymentKey, PaymentWithHistory};
use paystate_store::{
    decode_frames, put_frame, Batch, DeadLetter, LogRecord, Origin, Store, StoreError, StoredHistory, Stream,
};
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

/// The payment `events` fold into, with its history, in memory.
fn folded(events: Vec<paystate_core::PaymentEvent>) -> PaymentWithHistory {
    let mut payment: Option<PaymentWithHistory> = None;
    for ev in events {
        payment.get_or_insert_with(|| PaymentWithHistory::new(ev.key.clone())).apply(ev).expect("apply");
    }
    payment.expect("payment")
}

/// Opens a projection's sled database directly, with the compression setting it was created with (sled
/// refuses any other); a new one uncompressed, as the releases before compression made them.
fn raw_sled(path: &std::path::Path) -> sled::Result<sled::Db> {
    // sled's `conf` ends in a binary checksum: read it as bytes.
    let compressed = std::fs::read(path.join("conf"))
        .map(|c| String::from_utf8_lossy(&c).contains("use_compression: true"))
        .unwrap_or(false);
    sled::Config::new().path(path).use_compression(compressed).open()
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
        origin: paystate_store::Origin::Webhook,
    }
}

/// A webhook's record is written as version 1, byte for byte what the previous release wrote (it can read
/// such a log); only a fetched event's record is version 2, whose second byte is the origin.
#[test]
fn record_versions_are_pinned() {
    let mut r = LogRecord {
        received_at_ms: 1,
        event_id: "e".into(),
        event_type: "t".into(),
        payment_key: String::new(),
        signature: "s".into(),
        body: b"{}".to_vec(),
        origin: Origin::Webhook,
    };
    let v1: &[u8] = &[1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, b'e', 0, 1, b't', 0, 0, 0, 1, b's', 0, 0, 0, 2, b'{', b'}'];
    assert_eq!(r.encode().expect("encode"), v1);
    r.origin = Origin::EventsApi;
    let v2 = r.encode().expect("encode");
    assert_eq!(&v2[..2], &[2, 1]);
    assert_eq!(&v2[2..], &v1[1..]);
    assert_eq!(LogRecord::decode(&v2).expect("decode").origin, Origin::EventsApi);
    let mut unknown = v2.clone();
    unknown[1] = 9;
    assert!(matches!(LogRecord::decode(&unknown), Err(StoreError::Corrupt { .. })));
    unknown[0] = 3;
    assert!(matches!(LogRecord::decode(&unknown), Err(StoreError::Corrupt { .. })));
}

proptest! {
    #[test]
    fn records_round_trip(ts in any::<i64>(), id in ".{0,40}", ty in ".{0,40}", key in ".{0,40}", sig in ".{0,200}", body in proptest::collection::vec(any::<u8>(), 0..2000), fetched in any::<bool>()) {
        let origin = if fetched { Origin::EventsApi } else { Origin::Webhook };
        let r = LogRecord { received_at_ms: ts, event_id: id, event_type: ty, payment_key: key, signature: sig, body, origin };
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
            let r = LogRecord { received_at_ms: 7, event_id: id, event_type: "t".into(), payment_key: String::new(), signature: String::new(), body: payload, origin: Origin::Webhook };
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

/// Every lifecycle's payment, its events applied through the store's own history (one batch per delivery,
/// in a shuffled order with every event delivered twice, so that late events refold from stored entries and
/// duplicates are recognized from them), ends as the in-memory fold of the same events: the same state and
/// ledger, the same history in causal order.
#[test]
fn payments_folded_through_the_stored_history_equal_the_in_memory_fold() {
    use paystate_core::History;
    use paystate_testkit::scenario::Scenario;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 1).expect("open");
    let proj = &store.projection;
    let mut rng = paystate_testkit::synth::Rng::new(5);
    let mut late_events = 0;
    for scenario in Scenario::ALL {
        let events = scenario_events(scenario, &mut rng);
        let want = folded(events.clone());
        let mut delivery: Vec<_> = events.iter().chain(events.iter()).cloned().collect();
        for i in (1..delivery.len()).rev() {
            delivery.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let key = want.state().key.clone();
        for ev in delivery {
            let mut p = proj.payment(&key.to_string()).expect("get").unwrap_or_else(|| Payment::new(key.clone()));
            let mut batch = Batch::default();
            let changes = batch.history.entry(key.to_string()).or_default();
            let mut history = StoredHistory::new(proj, &key, changes);
            if p.state.last_event.as_ref().is_some_and(|l| *l > paystate_core::EventPosition::of(&ev)) {
                late_events += 1;
            }
            p.apply(ev, &mut history).expect("apply");
            assert_eq!(history.all().expect("all").len() as u64, p.state.events_applied);
            batch.payments.insert(key.to_string(), p);
            proj.commit(&batch).expect("commit");
        }
        let got = proj.payment_with_history(&key.to_string()).expect("get").expect("stored");
        assert_eq!(got, want, "{scenario:?}");
        assert_eq!(proj.history(&key.to_string()).expect("history"), want.events.events(), "{scenario:?}");
    }
    assert!(late_events > 10, "only {late_events} late events: the refold from stored entries went untested");
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
    let mut live: Vec<Option<PaymentWithHistory>> = vec![None; payments.len()];
    let rounds = payments.iter().map(Vec::len).max().unwrap_or(0);
    for round in 0..rounds {
        let mut batch = Batch::default();
        for (i, events) in payments.iter().enumerate() {
            let Some(ev) = events.get(round) else { continue };
            let p = live[i].get_or_insert_with(|| PaymentWithHistory::new(ev.key.clone()));
            p.apply(ev.clone()).expect("apply");
            batch.payments.insert(p.state().key.to_string(), p.payment.clone());
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

fn golden_hex(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name)
}

fn read_hex(name: &str) -> Vec<u8> {
    let hex = std::fs::read_to_string(golden_hex(name)).expect("golden file");
    let hex = hex.trim();
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect()
}

/// The payment the golden files hold: the partial-refunds scenario of seed 2024.
fn golden_payment() -> PaymentWithHistory {
    let mut rng = paystate_testkit::synth::Rng::new(2024);
    folded(scenario_events(paystate_testkit::scenario::Scenario::PartialRefunds, &mut rng))
}

/// `tests/fixtures/payment-format-2.hex` holds a payment as the previous release stored it (format 2, its
/// history inside the state). A projection holding it is migrated when opened: the payment reads back as
/// the same payment with the same history, the stored value is of format 3, and opening again does nothing.
#[test]
fn a_payment_of_the_previous_format_is_migrated_with_its_history() {
    let golden = read_hex("payment-format-2.hex");
    assert_eq!(golden.first(), Some(&2), "format byte");
    let want = golden_payment();
    let key = want.state().key.to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = until_unlocked(|| raw_sled(&dir.path().join("projection")));
        db.open_tree("payments").expect("tree").insert(key.as_bytes(), golden.as_slice()).expect("insert");
        db.flush().expect("flush");
    }
    for _ in 0..2 {
        let projection = until_unlocked(|| Store::open_projection(dir.path()));
        assert_eq!(projection.payment_with_history(&key).expect("decode").as_ref(), Some(&want));
        assert_eq!(projection.history(&key).expect("history").len() as u64, want.state().events_applied);
    }
    let db = until_unlocked(|| raw_sled(&dir.path().join("projection")));
    let stored = db.open_tree("payments").expect("tree").get(key.as_bytes()).expect("get").expect("stored");
    assert_eq!(stored.first(), Some(&3), "migrated to format 3");
}

/// The stored payment's bytes are a format: `tests/fixtures/payment-format-3.hex` holds the golden payment
/// as this format stores it and `history-format-1.hex` its first history entry. The store must keep writing
/// exactly these bytes and reading them back. If this fails because a core struct changed, the stored
/// format changed: bump the format in `crates/paystate-store/src/format.rs`, decode the old one there (as
/// format 2 is) and add the new golden files beside these (`PAYSTATE_WRITE_GOLDEN=1` writes them).
#[test]
fn the_stored_formats_are_pinned_by_golden_bytes() {
    let want = golden_payment();
    let key = want.state().key.to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let projection = Store::open_projection(dir.path()).expect("open");
        projection.restore(0, std::slice::from_ref(&want), 1).expect("store");
    }
    let db = until_unlocked(|| raw_sled(&dir.path().join("projection")));
    let stored = db.open_tree("payments").expect("tree").get(key.as_bytes()).expect("get").expect("stored");
    let (_, first) = db.open_tree("history").expect("tree").first().expect("read").expect("an entry");
    drop(db);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>() + "\n";
    if std::env::var_os("PAYSTATE_WRITE_GOLDEN").is_some() {
        std::fs::write(golden_hex("payment-format-3.hex"), hex(&stored)).expect("write");
        std::fs::write(golden_hex("history-format-1.hex"), hex(&first)).expect("write");
    }
    assert!(
        stored.as_ref() == read_hex("payment-format-3.hex"),
        "the stored payment format changed: see the doc comment"
    );
    assert!(
        first.as_ref() == read_hex("history-format-1.hex"),
        "the history entry format changed: see the doc comment"
    );
    let projection = until_unlocked(|| Store::open_projection(dir.path()));
    assert_eq!(projection.payment_with_history(&key).expect("decode").as_ref(), Some(&want));
}

/// Every scenario's payment (one generator, seed 2024, scenarios in `Scenario::ALL` order).
fn golden_payments() -> Vec<PaymentWithHistory> {
    let mut rng = paystate_testkit::synth::Rng::new(2024);
    paystate_testkit::scenario::Scenario::ALL.into_iter().map(|s| folded(scenario_events(s, &mut rng))).collect()
}

/// `tests/fixtures/stored-all-scenarios.hex` holds, for a payment of every scenario (so every kind of
/// observation, refund, dispute and fraud warning), its stored value (format 3) and every history entry
/// (format 1), as the release that introduced these formats wrote them: one `payment <hex>` or
/// `history <hex>` line each, in the store's key order. The store's own encoding types must keep writing
/// exactly these bytes and reading them back into the same payments.
#[test]
fn every_kind_of_stored_payment_and_event_keeps_its_bytes() {
    let want = golden_payments();
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let projection = Store::open_projection(dir.path()).expect("open");
        projection.restore(0, &want, 1).expect("store");
    }
    let db = until_unlocked(|| raw_sled(&dir.path().join("projection")));
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut got = Vec::new();
    for (_, v) in db.open_tree("payments").expect("tree").iter().map(|r| r.expect("read")) {
        got.push(format!("payment {}", hex(&v)));
    }
    for (_, v) in db.open_tree("history").expect("tree").iter().map(|r| r.expect("read")) {
        got.push(format!("history {}", hex(&v)));
    }
    drop(db);
    let golden = std::fs::read_to_string(golden_hex("stored-all-scenarios.hex")).expect("golden file");
    let golden: Vec<&str> = golden.lines().collect();
    assert_eq!(got.len(), golden.len(), "number of stored values");
    for (i, (g, w)) in got.iter().zip(&golden).enumerate() {
        assert!(g == w, "stored value {i} differs from the golden bytes:\n got {g}\nwant {w}");
    }
    let projection = until_unlocked(|| Store::open_projection(dir.path()));
    for p in &want {
        let key = p.state().key.to_string();
        assert_eq!(projection.payment_with_history(&key).expect("decode").as_ref(), Some(p), "{key}");
    }
}

/// `forget_partitions` drops exactly the chosen partitions' payments (with their histories and lifecycle
/// index entries), positions and set-aside outbox entries, and leaves every other partition as it was.
#[test]
fn forgetting_partitions_drops_them_and_nothing_else() {
    use paystate_core::Lifecycle;
    use paystate_store::Stream;
    const PARTITIONS: u32 = 4;
    let payments = golden_payments();
    let partition = |p: &PaymentWithHistory| paystate_core::partition_of(p.state().key.to_string().as_bytes(), 4);
    let dir = tempfile::tempdir().expect("tempdir");
    let projection = Store::open_projection(dir.path()).expect("open");
    for p in 0..PARTITIONS {
        let of_p: Vec<PaymentWithHistory> = payments.iter().filter(|x| partition(x) == p).cloned().collect();
        projection.restore(p, &of_p, 10 + u64::from(p)).expect("store");
    }
    projection
        .mark_published(Stream::Payments, 0, &Default::default(), &[(1, 7, b"one".to_vec()), (3, 8, b"three".to_vec())])
        .expect("aside");
    // Outbox entries derived before the partitions moved (3 actions, 2 updates).
    let batch = Batch {
        actions: vec![b"a1".to_vec(), b"a2".to_vec(), b"a3".to_vec()],
        updates: vec![b"u1".to_vec(), b"u2".to_vec()],
        ..Default::default()
    };
    projection.commit(&batch).expect("commit");
    assert!(projection.outbox_drops().expect("drops").is_empty(), "nothing dropped yet");
    let forgotten: Vec<u32> = vec![1, 2];
    let gone = payments.iter().filter(|x| forgotten.contains(&partition(x))).count() as u64;
    assert!(gone > 0 && gone < payments.len() as u64, "the scenarios span the partitions");
    assert_eq!(projection.forget_partitions(&forgotten, PARTITIONS).expect("forget"), gone);
    for p in &payments {
        let key = p.state().key.to_string();
        let kept = !forgotten.contains(&partition(p));
        let stored = projection.payment_with_history(&key).expect("read");
        assert_eq!(stored.as_ref(), kept.then_some(p), "{key}");
        assert_eq!(projection.history(&key).expect("history").is_empty(), !kept, "{key}");
    }
    let indexed: usize =
        Lifecycle::ALL.iter().map(|l| projection.payments_in(*l, None, 1000, |_| true).expect("index").len()).sum();
    assert_eq!(indexed as u64, payments.len() as u64 - gone, "the lifecycle index lost exactly those");
    for p in 0..PARTITIONS {
        let held = projection.stored_position(p).expect("position");
        assert_eq!(held, (!forgotten.contains(&p)).then_some(10 + u64::from(p)), "partition {p}");
        let aside = projection.take_aside(p).expect("aside");
        assert_eq!(aside.len(), usize::from(p == 3), "set-aside entries of partition {p}");
    }
    // The forgotten partitions' outbox entries so far are marked stale, the others' are not.
    let marks = |p: u32| {
        let drops = projection.outbox_drops().expect("drops");
        (drops.get(&(Stream::Actions, p)).copied(), drops.get(&(Stream::Payments, p)).copied())
    };
    let (a_end, u_end) =
        (projection.stream_end(Stream::Actions).expect("end"), projection.stream_end(Stream::Payments).expect("end"));
    assert_eq!((a_end, u_end), (3, 2));
    for p in 0..PARTITIONS {
        let expected = if forgotten.contains(&p) { (Some(a_end), Some(u_end)) } else { (None, None) };
        assert_eq!(marks(p), expected, "drop marks of partition {p}");
    }
    // Entries derived after the forget are not stale; forgetting again moves only that partition's mark.
    projection.commit(&Batch { updates: vec![b"u3".to_vec()], ..Default::default() }).expect("commit");
    projection.forget_partitions(&[2], PARTITIONS).expect("forget");
    assert_eq!(marks(1), (Some(3), Some(2)));
    assert_eq!(marks(2), (Some(3), Some(3)));
    drop(projection);
    let reopened = Store::open_projection(dir.path()).expect("reopen");
    assert_eq!(reopened.outbox_drops().expect("drops").len(), 4, "the marks are stored");
}
