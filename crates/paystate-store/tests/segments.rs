//! The segment log on real files: reopening, torn tails, damage, segment rolls, readers, migration.

use paystate_store::log::LOG_DIR;
use paystate_store::{EmbeddedLog, LogOptions, LogRecord, Store, StoreError};
use proptest::prelude::*;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

fn record(p: u32, i: u64, size: usize) -> LogRecord {
    LogRecord {
        received_at_ms: 1_700_000_000_000 + i as i64,
        event_id: format!("evt_{p}_{i}"),
        event_type: "charge.succeeded".into(),
        payment_key: format!("pi_{p}_{}", i % 5),
        signature: format!("t=1700000000,v1={i:064x}"),
        // Pseudo-random bytes: the log compresses what it can, and these must not shrink.
        body: (0..size as u64).map(|j| ((i * 7919 + j).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8).collect(),
        origin: paystate_store::Origin::Webhook,
    }
}

fn ids(log: &EmbeddedLog, p: u32) -> Vec<String> {
    log.read_all(p).expect("read").into_iter().map(|(_, r)| r.event_id).collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn flip_byte(path: &Path, at_from_end: u64) {
    let mut bytes = std::fs::read(path).expect("read");
    let at = bytes.len() - at_from_end as usize;
    bytes[at] ^= 0x5a;
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn records_survive_reopening_in_order_per_partition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_dir = dir.path().join("log");
    {
        let log = EmbeddedLog::open(&log_dir, 3, LogOptions::default()).expect("open");
        let records: Vec<(u32, LogRecord)> =
            (0..30u64).map(|i| ((i % 3) as u32, record((i % 3) as u32, i / 3, 100))).collect();
        log.append_bulk(&records).expect("append");
        log.close().expect("close");
    }
    let log = EmbeddedLog::open(&log_dir, 3, LogOptions::default()).expect("reopen");
    for p in 0..3 {
        assert_eq!(log.end(p), 10);
        assert_eq!(ids(&log, p), (0..10).map(|i| format!("evt_{p}_{i}")).collect::<Vec<_>>());
    }
    assert_eq!(log.read(1, 4, 3).expect("read").iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![4, 5, 6]);
    drop(log);
    assert!(matches!(
        EmbeddedLog::open(&log_dir, 4, LogOptions::default()),
        Err(StoreError::PartitionMismatch { found: 3, wanted: 4 })
    ));
}

#[test]
fn a_torn_tail_is_cut_off_and_appends_continue_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_dir = dir.path().join("log");
    {
        let log = EmbeddedLog::open(&log_dir, 2, LogOptions::default()).expect("open");
        log.append_bulk(&(0..8).map(|i| (i as u32 % 2, record(i as u32 % 2, i / 2, 300))).collect::<Vec<_>>())
            .expect("append");
        // No close: as after a crash.
    }
    // A group that was being written when the power went: its first frame's header and half its record.
    let seg = segments(&log_dir).pop().expect("segment");
    let whole = std::fs::read(&seg).expect("read").len();
    let mut f = OpenOptions::new().append(true).open(&seg).expect("open");
    let mut torn = Vec::new();
    torn.extend_from_slice(&400u32.to_be_bytes());
    torn.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 4]);
    torn.extend_from_slice(&[7u8; 150]);
    f.write_all(&torn).expect("write");
    drop(f);

    let log = EmbeddedLog::open(&log_dir, 2, LogOptions::default()).expect("reopens");
    assert_eq!(std::fs::read(&seg).expect("read").len(), whole, "the torn bytes are cut off");
    assert_eq!(ids(&log, 1), (0..4).map(|i| format!("evt_1_{i}")).collect::<Vec<_>>());
    log.append_bulk(&[(1, record(1, 4, 10))]).expect("append after recovery");
    assert_eq!(ids(&log, 1).last().map(String::as_str), Some("evt_1_4"));
    assert_eq!(log.end(1), 5);
}

#[test]
fn damage_behind_the_checkpoint_is_an_error_on_read_naming_partition_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_dir = dir.path().join("log");
    {
        let log = EmbeddedLog::open(&log_dir, 1, LogOptions::default()).expect("open");
        log.append_bulk(&(0..5).map(|i| (0, record(0, i, 200))).collect::<Vec<_>>()).expect("append");
        log.close().expect("close");
    }
    // The last frame is offset 4; flip a byte of its body.
    flip_byte(&segments(&log_dir)[0], 10);
    let log = EmbeddedLog::open(&log_dir, 1, LogOptions::default()).expect("opens: the checkpoint covers it");
    assert_eq!(log.read(0, 0, 4).expect("the first four are intact").len(), 4);
    match log.read_all(0) {
        Err(StoreError::CorruptRecord { partition: 0, offset: 4, why }) => assert!(why.contains("CRC"), "{why}"),
        other => panic!("expected a damaged record at partition 0 offset 4, got {other:?}"),
    }
    let msg = log.read_all(0).expect_err("damaged").to_string();
    assert!(msg.contains("partition 0 offset 4"), "{msg}");
}

#[test]
fn damage_before_valid_frames_after_a_crash_is_refused_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_dir = dir.path().join("log");
    {
        let log = EmbeddedLog::open(&log_dir, 1, LogOptions::default()).expect("open");
        log.append_bulk(&(0..5).map(|i| (0, record(0, i, 200))).collect::<Vec<_>>()).expect("append");
        // No close: the next open scans all five frames.
    }
    let seg = &segments(&log_dir)[0];
    let frame = std::fs::read(seg).expect("read").len() / 5;
    // A byte in the body of the second frame (offset 1), followed by three intact frames.
    flip_byte(seg, (3 * frame + 40) as u64);
    match EmbeddedLog::open(&log_dir, 1, LogOptions::default()) {
        Err(StoreError::CorruptRecord { partition: 0, offset: 1, .. }) => {}
        other => panic!("expected partition 0 offset 1 refused, got {other:?}"),
    }
    assert_eq!(std::fs::read(seg).expect("read").len() / 5, frame, "nothing was cut off");
}

#[test]
fn segments_roll_and_a_crash_is_recovered_from_the_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_dir = dir.path().join("log");
    let options = LogOptions { segment_bytes: 4096, ..LogOptions::default() };
    let n = 200u64;
    {
        let log = EmbeddedLog::open(&log_dir, 4, options).expect("open");
        for chunk in (0..n).collect::<Vec<_>>().chunks(7) {
            let recs: Vec<(u32, LogRecord)> =
                chunk.iter().map(|i| ((i % 4) as u32, record((i % 4) as u32, i / 4, 500))).collect();
            log.append_bulk(&recs).expect("append");
        }
        // No close.
    }
    assert!(segments(&log_dir).len() > 10, "{} segments", segments(&log_dir).len());
    // The worst case: none of the index entries written after the last checkpoint reached the disk.
    let cp = std::fs::read(log_dir.join("CHECKPOINT")).expect("checkpoint");
    let mut lost = 0;
    for p in 0..4usize {
        let count = u64::from_be_bytes(cp[13 + 8 * p..21 + 8 * p].try_into().expect("count"));
        let idx = log_dir.join(format!("p{p}.idx"));
        lost += std::fs::metadata(&idx).expect("idx").len() / 12 - count;
        OpenOptions::new().write(true).open(&idx).expect("idx").set_len(count * 12).expect("cut");
    }
    assert!(lost > 0, "the last segment holds records after the checkpoint");
    let read_only = EmbeddedLog::open_read_only(&log_dir).expect("read-only");
    for p in 0..4u32 {
        assert_eq!(ids(&read_only, p).len() as u64, n / 4, "read-only reader, partition {p}");
    }
    drop(read_only);
    let log = EmbeddedLog::open(&log_dir, 4, options).expect("reopen");
    for p in 0..4u32 {
        assert_eq!(ids(&log, p), (0..n / 4).map(|i| format!("evt_{p}_{i}")).collect::<Vec<_>>());
    }
}

#[test]
fn one_writer_at_a_time_and_readers_wait_for_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_dir = dir.path().join("log");
    let log = EmbeddedLog::open(&log_dir, 1, LogOptions::default()).expect("open");
    assert!(matches!(EmbeddedLog::open(&log_dir, 1, LogOptions::default()), Err(StoreError::Locked(_))));
    assert!(matches!(EmbeddedLog::open_read_only(&log_dir), Err(StoreError::Locked(_))));
    drop(log);
    let a = EmbeddedLog::open_read_only(&log_dir).expect("reader");
    let b = EmbeddedLog::open_read_only(&log_dir).expect("second reader");
    assert!(matches!(EmbeddedLog::open(&log_dir, 1, LogOptions::default()), Err(StoreError::Locked(_))));
    assert!(a.append_bulk(&[(0, record(0, 0, 1))]).is_err(), "a reader cannot append");
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = EmbeddedLog::open(&dir.path().join("log"), 1, LogOptions { queue_records: 1, ..LogOptions::default() })
        .expect("open");
    let appender = log.start_appender();
    let handle = appender.handle();
    // Many appends at once into a queue of one: every one is either durable or refused as busy.
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let h = handle.clone();
            tokio::spawn(async move { h.append(0, &record(0, i, 2000)).await })
        })
        .collect();
    let (mut ok, mut busy) = (0u64, 0);
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => ok += 1,
            Err(StoreError::Busy) => busy += 1,
            Err(e) => panic!("{e}"),
        }
    }
    drop(handle);
    appender.close();
    assert_eq!(log.end(0), ok, "every acknowledged append is in the log, nothing else");
    assert!(ok > 0);
    eprintln!("{ok} appended, {busy} refused as busy");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    /// A crash that leaves the last segment cut at any byte after the checkpoint: on reopen each partition
    /// holds exactly the records whose frames were whole, in order, and appends continue after them.
    #[test]
    fn any_cut_of_the_tail_leaves_whole_frames_in_order(
        sizes in proptest::collection::vec((0u32..3, 0usize..700), 1..40),
        cut in any::<u64>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let log_dir = dir.path().join("log");
        let mut frame_ends = Vec::new();
        let mut counts = [0u64; 3];
        {
            let log = EmbeddedLog::open(&log_dir, 3, LogOptions::default()).expect("open");
            let seg = segments(&log_dir).pop().expect("segment");
            for (p, size) in &sizes {
                log.append_bulk(&[(*p, record(*p, counts[*p as usize], *size))]).expect("append");
                counts[*p as usize] += 1;
                frame_ends.push((*p, std::fs::metadata(&seg).expect("meta").len()));
            }
        }
        let seg = segments(&log_dir).pop().expect("segment");
        let len = std::fs::metadata(&seg).expect("meta").len();
        let cut_at = 8 + cut % (len - 7);
        OpenOptions::new().write(true).open(&seg).expect("seg").set_len(cut_at).expect("cut");
        let log = EmbeddedLog::open(&log_dir, 3, LogOptions::default()).expect("reopen");
        let mut want = [0u64; 3];
        for (p, end) in &frame_ends {
            if *end <= cut_at {
                want[*p as usize] += 1;
            }
        }
        for p in 0..3u32 {
            prop_assert_eq!(ids(&log, p), (0..want[p as usize]).map(|i| format!("evt_{p}_{i}")).collect::<Vec<_>>());
        }
        log.append_bulk(&[(0, record(0, want[0], 5))]).expect("append");
        prop_assert_eq!(log.end(0), want[0] + 1);
    }
}

/// A data directory whose log is the previous release's sled log is migrated once: same records, same
/// offsets, the sled log removed; a reader is told to open it with `serve` first.
#[test]
fn the_sled_log_of_the_previous_release_is_migrated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/datadir-v1/data.tgz");
    let untar = std::process::Command::new("tar").arg("xzf").arg(&fixture).arg("-C").arg(dir.path()).status();
    assert!(untar.expect("tar").success());
    let data = dir.path().join("data");
    let before: Vec<Vec<(u64, Vec<u8>)>> = {
        let db = sled::open(data.join("log")).expect("the sled log");
        (0..2)
            .map(|p| {
                db.open_tree(format!("log/{p}"))
                    .expect("tree")
                    .iter()
                    .map(|kv| {
                        let (k, v) = kv.expect("entry");
                        (u64::from_be_bytes(k.as_ref().try_into().expect("offset")), v.to_vec())
                    })
                    .collect()
            })
            .collect()
    };
    let msg = Store::open_log(&data).expect_err("not migrated yet").to_string();
    assert!(msg.contains("previous release"), "{msg}");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = std::sync::Arc::clone(&seen);
    let options = paystate_store::StoreOptions {
        progress: Some(std::sync::Arc::new(move |done, total| seen2.lock().expect("lock").push((done, total)))),
        ..Default::default()
    };
    let store = Store::open_with(&data, None, &options).expect("migrates");
    assert!(!data.join("log").exists(), "the sled log is removed");
    assert!(data.join(LOG_DIR).join("LOG").is_file());
    assert_eq!(store.log.partitions(), 2);
    let total = (before[0].len() + before[1].len()) as u64;
    assert!(total > 100, "{total} records in the fixture");
    assert_eq!(seen.lock().expect("lock").last(), Some(&(total, total)));
    for (p, records) in (0u32..).zip(&before) {
        let after = paystate_store::LogView::read_encoded(&store.log, p, 0, usize::MAX).expect("read");
        assert_eq!(&after, records, "partition {p}: the same records, byte for byte, at the same offsets");
    }
    drop(store);
    let reopened = Store::open_existing(&data).expect("reopens without migrating again");
    assert_eq!(reopened.log.end(0), before[0].len() as u64);
}

/// Stripe's JSON is stored compressed, and every body reads back byte for byte; random bytes are stored
/// as they are.
#[test]
fn bodies_are_compressed_on_disk_and_read_back_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_dir = dir.path().join("log");
    let mut rng = paystate_testkit::synth::Rng::new(5);
    let mut records = Vec::new();
    for i in 0..40u64 {
        let (events, _) = paystate_testkit::scenario::generate(
            paystate_testkit::scenario::Scenario::CardSuccess,
            &mut rng,
            1_700_000_000,
        );
        for e in events {
            let mut r = record(0, i, 0);
            r.body = e.body();
            records.push((0u32, r));
        }
    }
    records.push((0, record(0, 999, 3000)));
    let body_bytes: usize = records.iter().map(|(_, r)| r.body.len()).sum();
    let log = EmbeddedLog::open(&log_dir, 1, LogOptions::default()).expect("open");
    log.append_bulk(&records).expect("append");
    let on_disk = log.disk_bytes() as usize;
    assert!(on_disk * 3 < body_bytes * 2, "{on_disk} bytes on disk for {body_bytes} bytes of bodies");
    let back: Vec<LogRecord> = log.read_all(0).expect("read").into_iter().map(|(_, r)| r).collect();
    assert_eq!(back, records.into_iter().map(|(_, r)| r).collect::<Vec<_>>());
}

/// A crash while a segment was being started (the new file created, its magic not yet written) leaves an
/// empty last file: the log opens without it, read-only too, and appends continue.
#[test]
fn an_empty_segment_left_by_a_crash_during_a_roll_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_dir = dir.path().join("log");
    let base = {
        let log = EmbeddedLog::open(&log_dir, 1, LogOptions::default()).expect("open");
        log.append_bulk(&(0..3).map(|i| (0, record(0, i, 100))).collect::<Vec<_>>()).expect("append");
        log.close().expect("close");
        log.disk_bytes() - 3 * 12
    };
    let stray = log_dir.join(format!("{base:020}.seg"));
    std::fs::File::create(&stray).expect("empty segment");
    let reader = EmbeddedLog::open_read_only(&log_dir).expect("a reader ignores it");
    assert_eq!(ids(&reader, 0).len(), 3);
    drop(reader);
    assert!(stray.exists(), "a reader writes nothing");
    let log = EmbeddedLog::open(&log_dir, 1, LogOptions::default()).expect("the writer drops it");
    assert!(!stray.exists());
    log.append_bulk(&[(0, record(0, 3, 10))]).expect("append");
    assert_eq!(ids(&log, 0).len(), 4);
}
