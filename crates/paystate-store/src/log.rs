//! The embedded durable log: segment files shared by every partition, and one offset index per partition.
//!
//! # On disk (`<data dir>/segments/`, log format 1)
//! - `LOG`: `paystate log`, the format and the partition count, as text. Written once, atomically.
//! - `<base>.seg`: segment files. `base` (20 digits) is the *log position* of the file's first byte: a
//!   position is a byte address in the concatenation of all segments, so `base(n+1) = base(n) + len(n)`.
//!   Each segment starts with the 8-byte magic `PSLOGSG\x01`, then frames:
//!   `len u32 | crc32c u32 | partition u32 | offset u64 | payload (len bytes)`, big-endian, the CRC-32C over
//!   `partition | offset | payload`. The payload is `codec u8 | data`: codec 0, `data` is a [`LogRecord`] in
//!   its own versioned encoding; codec 1, `data` is `length u32 | LZ4 block` of that encoding (Stripe's
//!   JSON compresses 1.8× so; a record that would not shrink by an eighth is stored as codec 0). The body
//!   read back is byte for byte the body received.
//! - `p<N>.idx`: partition N's offset index, dense: entry `o` (12 bytes at `12·o`) is
//!   `position u64 | frame length u32` of the frame of offset `o`.
//! - `CHECKPOINT`: a position below which every frame's index entry is durable, and each partition's
//!   entry count there (with a CRC). Rewritten (write, fsync, rename) when a segment is sealed and on close.
//! - `LOCK`: held (`flock`) exclusively by the writer, shared by readers (replay), so two writers never meet.
//!
//! # Why one journal for all partitions
//! Measured on this machine (ext4), an fsync after a 4 KiB append costs 0.46 ms for one file and 2.65 ms for
//! eight: a log file per partition would pay one fsync per partition touched by each group commit. One
//! journal pays one per group, whatever the partition count. The index files are written without fsync: on
//! open, everything after the checkpoint is scanned and re-indexed.
//!
//! # Guarantees
//! Appends go through one [`Appender`] thread that does **group commit**: it takes every request waiting (up
//! to a group's limit), writes their frames with one `write`, calls `fdatasync` once, then writes their index
//! entries and only then answers each caller. `Ok` ⇒ durable. `Err` ⇒ not acknowledged: the segment and the
//! indexes are cut back to the last acknowledged state (so a full disk recovers by itself once space is
//! free). Readers only see offsets below each partition's *durable end*, advanced after the fsync.
//!
//! On open the tail after the checkpoint is scanned: every frame's CRC, partition and offset are checked.
//! A frame that is damaged or cut short at the very end of the last segment, with no valid frame after it, is
//! a torn write of a group that was never acknowledged: it is cut off (with a warning naming where). Damage
//! anywhere else is an error naming the partition and offset; reads check every frame's CRC too.

use crate::error::{io, StoreError};
use crate::record::{LogRecord, RecordRef};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use tokio::sync::{oneshot, watch};

/// The directory of the log inside a data directory.
pub const LOG_DIR: &str = "segments";
/// Segments are sealed once they reach this size (a frame is never split, so one may exceed it a little).
pub const DEFAULT_SEGMENT_BYTES: u64 = 128 << 20;
/// Appends that may wait for the appender at once; beyond, appends are refused ([`StoreError::Busy`]).
pub const DEFAULT_QUEUE_RECORDS: usize = 4096;

const LOG_FORMAT: u32 = 1;
const SEGMENT_MAGIC: &[u8; 8] = b"PSLOGSG\x01";
const CHECKPOINT_FORMAT: u8 = 1;
const FRAME_HEADER: usize = 20;
const INDEX_ENTRY: usize = 12;
/// A frame longer than this is damage, not a record (the ingress refuses bodies far smaller).
const MAX_RECORD: u32 = 64 << 20;
/// Most records and bytes one group commit takes.
const MAX_GROUP: usize = 4096;
const MAX_GROUP_BYTES: usize = 8 << 20;
/// Payload codecs.
const CODEC_RAW: u8 = 0;
const CODEC_LZ4: u8 = 1;

/// The frame payload of an encoded record: LZ4-compressed when that saves an eighth.
/// The length of `b` as a frame's length field, refused beyond [`MAX_RECORD`].
fn record_len(b: &[u8]) -> Result<u32, StoreError> {
    u32::try_from(b.len())
        .ok()
        .filter(|l| *l <= MAX_RECORD)
        .ok_or_else(|| StoreError::Encode(format!("log record of {} bytes", b.len())))
}

pub(crate) fn encode_payload(record: &[u8]) -> Result<Vec<u8>, StoreError> {
    let len = record_len(record)?;
    let mut out = vec![0u8; 5 + lz4_flex::block::get_maximum_output_size(record.len())];
    out[0] = CODEC_LZ4;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    let packed = lz4_flex::block::compress_into(record, &mut out[5..])
        .ok()
        .filter(|n| *n + 5 <= record.len() - record.len() / 8);
    match packed {
        Some(n) => out.truncate(5 + n),
        None => {
            out.clear();
            out.push(CODEC_RAW);
            out.extend_from_slice(record);
        }
    }
    Ok(out)
}

/// The encoded record of a frame payload (decompressed into `plain` when it is compressed).
fn decode_payload<'a>(
    payload: &'a [u8],
    plain: &'a mut Vec<u8>,
    partition: u32,
    offset: u64,
) -> Result<&'a [u8], StoreError> {
    let bad = |why: String| StoreError::CorruptRecord { partition, offset, why };
    match payload.split_first() {
        Some((&CODEC_RAW, record)) => Ok(record),
        Some((&CODEC_LZ4, rest)) => {
            let (len, packed) = rest.split_at_checked(4).ok_or_else(|| bad("compressed length cut short".into()))?;
            let len = u32::from_be_bytes(len.try_into().map_err(|_| bad("compressed length".into()))?);
            if len > MAX_RECORD {
                return Err(bad(format!("a record of {len} bytes")));
            }
            plain.resize(len as usize, 0);
            let n = lz4_flex::block::decompress_into(packed, plain).map_err(|e| bad(format!("LZ4: {e}")))?;
            if n != len as usize {
                return Err(bad(format!("LZ4 gave {n} bytes, not {len}")));
            }
            Ok(plain.as_slice())
        }
        Some((codec, _)) => Err(bad(format!("unknown payload codec {codec}"))),
        None => Err(bad("empty payload".into())),
    }
}

/// How far out of receive order records may be appended, in time ([`EmbeddedLog::event_ids_received_since`]).
pub const RECEIVE_ORDER_SLACK_MS: i64 = 10 * 60 * 1000;
/// … and in records per partition ([`EmbeddedLog::newest_received_ms`]).
const RECEIVE_ORDER_SLACK_RECORDS: u64 = 256;

/// Largest run of adjacent frames read with one `pread` by a scan.
const MAX_RUN_BYTES: usize = 1 << 20;

/// Why an append was not acknowledged (the record may or may not be in the log; the sender retries).
/// A [`RecordTooLarge`] inside says the record itself can never be appended.
pub type AppendError = Box<dyn std::error::Error + Send + Sync>;

/// An append refused for the record's size by the log (a Kafka broker's or producer's message size limit,
/// below the ingress's body limit): retrying the same bytes cannot succeed, so the ingress answers 413.
#[derive(Debug, thiserror::Error)]
#[error("the log refuses a record of this size: {0}")]
pub struct RecordTooLarge(pub String);

/// The write side of a log: the contract the ingress relies on. `Ok` means the record is durable
/// (fsynced for the embedded log, confirmed by the broker's delivery report for Kafka); anything else
/// is an `Err`, never an `Ok`.
pub trait LogSink: Send + Sync + 'static {
    /// Appends `record` to `partition`; resolves once it is durable.
    fn append<'a>(
        &'a self,
        partition: u32,
        record: &'a LogRecord,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Position, AppendError>> + Send + 'a>>;

    /// Whether the sink can take writes at all, as far as it knows without trying (a stopped appender, a
    /// producer failed for good): the reason when it cannot. For `/readyz`.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The read-only facts about a log that status and lag need.
pub trait LogView: Send + Sync {
    /// Number of partitions.
    fn partitions(&self) -> u32;
    /// The offset after the last durable record of `partition` (as far as is known).
    fn end(&self, partition: u32) -> u64;
    /// Up to `max` durable records of `partition` from offset `from`, each in its stored encoding
    /// ([`LogRecord::encode`]). Logs that cannot be read from here (Kafka: read the topic) refuse.
    fn read_encoded(&self, partition: u32, from: u64, max: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let _ = (partition, from, max);
        Err(StoreError::Unsupported("this log is not readable through the admin API"))
    }
    /// The consumer group's view of the log, where readers of it form one (Kafka); `None` otherwise.
    fn group(&self) -> Option<crate::GroupView> {
        None
    }
    /// Partitions the projector stopped because records it needed were deleted before it applied them.
    fn retention_gaps(&self) -> Vec<crate::RetentionGap> {
        Vec::new()
    }
}

impl LogView for EmbeddedLog {
    fn partitions(&self) -> u32 {
        EmbeddedLog::partitions(self)
    }
    fn end(&self, partition: u32) -> u64 {
        EmbeddedLog::end(self, partition)
    }
    fn read_encoded(&self, partition: u32, from: u64, max: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        self.scan_raw(partition, from, from.saturating_add(max as u64), &mut |o, raw| out.push((o, raw.to_vec())))?;
        Ok(out)
    }
}

impl LogSink for AppendHandle {
    fn append<'a>(
        &'a self,
        partition: u32,
        record: &'a LogRecord,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Position, AppendError>> + Send + 'a>> {
        Box::pin(async move { AppendHandle::append(self, partition, record).await.map_err(AppendError::from) })
    }

    fn health(&self) -> Result<(), String> {
        match self.tx {
            None => Err(APPENDER_STOPPED.into()),
            Some(_) => AppendHealth { halted: Arc::clone(&self.halted) }.check(),
        }
    }
}

/// Where a record was appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Partition.
    pub partition: u32,
    /// Offset within the partition.
    pub offset: u64,
}

/// Settings of the embedded log.
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    /// Size at which a segment is sealed and the next one started.
    pub segment_bytes: u64,
    /// Appends that may wait for the appender; a full queue refuses appends (the ingress answers 503).
    pub queue_records: usize,
    /// Free bytes the data directory's filesystem keeps: below it appends are refused (503) without
    /// writing, below half of it projector commits wait ([`crate::DEFAULT_MIN_FREE_BYTES`]; 0: no reserve).
    pub min_free_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            queue_records: DEFAULT_QUEUE_RECORDS,
            min_free_bytes: crate::DEFAULT_MIN_FREE_BYTES,
        }
    }
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))
}

/// Writes `bytes` to `dir/name` atomically: a temporary file, fsync, rename, fsync of the directory.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| io(&tmp, e))?;
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    fsync_dir(dir)
}

/// A frame's place: its log position and length (header included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    pos: u64,
    len: u32,
}

impl Entry {
    fn end(self) -> u64 {
        self.pos + u64::from(self.len)
    }
}

fn put_entry(out: &mut Vec<u8>, e: Entry) {
    out.extend_from_slice(&e.pos.to_be_bytes());
    out.extend_from_slice(&e.len.to_be_bytes());
}

fn entry_at(b: &[u8]) -> Option<Entry> {
    let pos = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
    let len = u32::from_be_bytes(b.get(8..12)?.try_into().ok()?);
    Some(Entry { pos, len })
}

fn frame_crc(partition: u32, offset: u64, record: &[u8]) -> u32 {
    let mut crc = crc32c::crc32c(&partition.to_be_bytes());
    crc = crc32c::crc32c_append(crc, &offset.to_be_bytes());
    crc32c::crc32c_append(crc, record)
}

fn put_frame(out: &mut Vec<u8>, partition: u32, offset: u64, record: &[u8]) -> Result<u32, StoreError> {
    let len = record_len(record)?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&frame_crc(partition, offset, record).to_be_bytes());
    out.extend_from_slice(&partition.to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(record);
    Ok(len + FRAME_HEADER as u32)
}

/// A frame's header fields.
#[derive(Debug, Clone, Copy)]
struct FrameHead {
    len: u32,
    crc: u32,
    partition: u32,
    offset: u64,
}

fn frame_head(b: &[u8]) -> Option<FrameHead> {
    let u32_at = |i: usize| b.get(i..i + 4).and_then(|s| s.try_into().ok()).map(u32::from_be_bytes);
    Some(FrameHead {
        len: u32_at(0)?,
        crc: u32_at(4)?,
        partition: u32_at(8)?,
        offset: u64::from_be_bytes(b.get(12..20)?.try_into().ok()?),
    })
}

/// The record of a whole frame `b` that must be (`partition`, `offset`); an error names what is wrong.
fn frame_record(b: &[u8], partition: u32, offset: u64) -> Result<&[u8], StoreError> {
    let bad = |why: &str| StoreError::CorruptRecord { partition, offset, why: why.to_owned() };
    let head = frame_head(b).ok_or_else(|| bad("frame header cut short"))?;
    let record = b.get(FRAME_HEADER..).filter(|r| r.len() == head.len as usize).ok_or_else(|| bad("frame length"))?;
    if head.partition != partition || head.offset != offset {
        return Err(bad(&format!("frame is partition {} offset {}", head.partition, head.offset)));
    }
    if frame_crc(partition, offset, record) != head.crc {
        return Err(bad("CRC-32C mismatch"));
    }
    Ok(record)
}

struct Segment {
    base: u64,
    path: PathBuf,
    file: File,
}

struct Index {
    path: PathBuf,
    file: File,
    /// Entries readable from the file (the writer keeps all of them there).
    in_file: AtomicU64,
    /// Entries after `in_file`, recovered in memory by a reader that may not write the directory.
    overlay: Vec<Entry>,
}

/// The appender's state: where the next frame goes. Only touched under [`Shared::writer`].
struct Writer {
    active: Arc<Segment>,
    /// Acknowledged length of the active segment file.
    len: u64,
    /// Next offset of each partition (its acknowledged end).
    next: Vec<u64>,
    /// A failed group left bytes to cut off before the next one.
    dirty: bool,
}

struct Shared {
    dir: PathBuf,
    segments: RwLock<Vec<Arc<Segment>>>,
    indexes: Vec<Index>,
    durable_end: Vec<AtomicU64>,
    writer: Option<Mutex<Writer>>,
    options: LogOptions,
    /// The free space appends keep (`options.min_free_bytes` on `dir`'s filesystem).
    space: crate::SpaceGuard,
    _lock: File,
}

/// The log's partitions. Cheap to clone; [`EmbeddedLog::open`] gives the only writer of a directory.
#[derive(Clone)]
pub struct EmbeddedLog {
    shared: Arc<Shared>,
    appended: watch::Sender<u64>,
}

impl std::fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLog").field("dir", &self.shared.dir).field("partitions", &self.partitions()).finish()
    }
}

/// The `LOG` file's contents.
fn header_text(partitions: u32) -> String {
    format!("paystate log\nformat {LOG_FORMAT}\npartitions {partitions}\n")
}

fn parse_header(dir: &Path, text: &str) -> Result<u32, StoreError> {
    let bad = |why: String| StoreError::Corrupt { tree: "log header", why: format!("{}: {why}", dir.display()) };
    let mut lines = text.lines();
    if lines.next() != Some("paystate log") {
        return Err(bad("not a paystate log".into()));
    }
    let field = |line: Option<&str>, name: &str| -> Result<u64, StoreError> {
        line.and_then(|l| l.strip_prefix(name))
            .and_then(|v| v.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(format!("no {name} line")))
    };
    let format = field(lines.next(), "format")?;
    if format != u64::from(LOG_FORMAT) {
        return Err(bad(format!("log format {format}; this release reads format {LOG_FORMAT}")));
    }
    u32::try_from(field(lines.next(), "partitions")?).map_err(|_| bad("partition count".into()))
}

struct Checkpoint {
    pos: u64,
    counts: Vec<u64>,
}

fn encode_checkpoint(c: &Checkpoint) -> Vec<u8> {
    let mut out = vec![CHECKPOINT_FORMAT];
    out.extend_from_slice(&c.pos.to_be_bytes());
    out.extend_from_slice(&u32::try_from(c.counts.len()).unwrap_or(u32::MAX).to_be_bytes());
    for n in &c.counts {
        out.extend_from_slice(&n.to_be_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

fn decode_checkpoint(b: &[u8], partitions: u32) -> Option<Checkpoint> {
    let (body, crc) = b.split_at_checked(b.len().checked_sub(4)?)?;
    if crc32c::crc32c(body).to_be_bytes() != crc || body.first() != Some(&CHECKPOINT_FORMAT) {
        return None;
    }
    let pos = u64::from_be_bytes(body.get(1..9)?.try_into().ok()?);
    let n = u32::from_be_bytes(body.get(9..13)?.try_into().ok()?);
    if n != partitions || body.len() != 13 + 8 * n as usize {
        return None;
    }
    let counts = body[13..].chunks_exact(8).filter_map(|c| c.try_into().ok().map(u64::from_be_bytes)).collect();
    Some(Checkpoint { pos, counts })
}

fn segment_name(base: u64) -> String {
    format!("{base:020}.seg")
}

/// How the log is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// The one writer: recovery may cut a torn tail and re-index.
    Write,
    /// A reader (replay): writes nothing; a tail not yet indexed is indexed in memory.
    Read,
}

impl EmbeddedLog {
    /// Creates the log in `dir` (a new directory) with `partitions` partitions, or opens it for writing.
    /// Reopening with another count is refused: it would move payments between partitions.
    pub fn open(dir: &Path, partitions: u32, options: LogOptions) -> Result<Self, StoreError> {
        if !dir.join("LOG").is_file() {
            Self::create(dir, partitions)?;
        }
        let log = Self::open_with(dir, Access::Write, options)?;
        if log.partitions() != partitions {
            return Err(StoreError::PartitionMismatch { found: log.partitions(), wanted: partitions });
        }
        Ok(log)
    }

    /// Opens an existing log for writing, with whatever partition count it was created with.
    pub fn open_existing(dir: &Path, options: LogOptions) -> Result<Self, StoreError> {
        Self::open_with(dir, Access::Write, options)
    }

    /// Opens an existing log to read it only (replay): nothing in `dir` is written, and opening fails while
    /// a writer (`paystate serve`) has it open.
    pub fn open_read_only(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, Access::Read, LogOptions::default())
    }

    fn create(dir: &Path, partitions: u32) -> Result<(), StoreError> {
        if partitions == 0 {
            return Err(StoreError::Encode("a log needs at least one partition".into()));
        }
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let seg = dir.join(segment_name(0));
        let mut f = File::create(&seg).map_err(|e| io(&seg, e))?;
        f.write_all(SEGMENT_MAGIC).and_then(|()| f.sync_all()).map_err(|e| io(&seg, e))?;
        write_atomic(
            dir,
            "CHECKPOINT",
            &encode_checkpoint(&Checkpoint { pos: 0, counts: vec![0; partitions as usize] }),
        )?;
        // Last: a directory with `LOG` is a complete log.
        write_atomic(dir, "LOG", header_text(partitions).as_bytes())
    }

    fn open_with(dir: &Path, access: Access, options: LogOptions) -> Result<Self, StoreError> {
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).or_else(|e| {
            // A reader of a directory it may not write still works when the lock file exists.
            if access == Access::Read {
                File::open(&lock_path)
            } else {
                Err(e)
            }
        });
        let lock = lock.map_err(|e| io(&lock_path, e))?;
        // A lock just released can stay held for a moment by a child process of ours that was forked
        // (by another thread) and has not yet exec'd: try again for a short while before giving up.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let locked = match access {
                Access::Write => lock.try_lock(),
                Access::Read => lock.try_lock_shared(),
            };
            match locked {
                Ok(()) => break,
                Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path, e)),
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(dir.display().to_string())),
            }
        }
        let header_path = dir.join("LOG");
        let header = std::fs::read_to_string(&header_path).map_err(|e| io(&header_path, e))?;
        let partitions = parse_header(dir, &header)?;
        let segments = list_segments(dir, access)?;
        let cp_path = dir.join("CHECKPOINT");
        let cp_bytes = std::fs::read(&cp_path).map_err(|e| io(&cp_path, e))?;
        let checkpoint = decode_checkpoint(&cp_bytes, partitions)
            .ok_or_else(|| StoreError::Corrupt { tree: "log checkpoint", why: cp_path.display().to_string() })?;
        let mut indexes = Vec::new();
        for (p, count) in checkpoint.counts.iter().enumerate() {
            let path = dir.join(format!("p{p}.idx"));
            let file = match access {
                Access::Write => OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path),
                Access::Read => File::open(&path),
            }
            .map_err(|e| io(&path, e))?;
            let have = file.metadata().map_err(|e| io(&path, e))?.len() / INDEX_ENTRY as u64;
            if have < *count {
                return Err(StoreError::Corrupt {
                    tree: "log index",
                    why: format!("{} has {have} entries, its checkpoint says {count}", path.display()),
                });
            }
            if access == Access::Write {
                file.set_len(count * INDEX_ENTRY as u64).map_err(|e| io(&path, e))?;
            }
            indexes.push(Index { path, file, in_file: AtomicU64::new(*count), overlay: Vec::new() });
        }
        let tail = recover_tail(&segments, &checkpoint, partitions)?;
        let last = segments
            .last()
            .cloned()
            .ok_or_else(|| StoreError::Corrupt { tree: "log", why: format!("{} has no segment", dir.display()) })?;
        if tail.dropped > 0 {
            tracing::warn!(
                dir = %dir.display(),
                segment = %last.path.display(),
                at = tail.end - last.base,
                bytes = tail.dropped,
                "log: a torn write at the end of the last segment (a group that was never acknowledged) is cut off"
            );
        }
        let mut next = checkpoint.counts.clone();
        for (p, entries) in tail.entries.into_iter().enumerate() {
            next[p] += entries.len() as u64;
            if let Some(index) = indexes.get_mut(p) {
                index.overlay = entries;
            }
        }
        let writer = if access == Access::Write {
            let len = tail.end - last.base;
            if tail.dropped > 0 {
                last.file.set_len(len).and_then(|()| last.file.sync_all()).map_err(|e| io(&last.path, e))?;
            }
            for index in &mut indexes {
                if index.overlay.is_empty() {
                    continue;
                }
                let mut buf = Vec::with_capacity(index.overlay.len() * INDEX_ENTRY);
                index.overlay.iter().for_each(|e| put_entry(&mut buf, *e));
                let at = index.in_file.load(Ordering::Relaxed) * INDEX_ENTRY as u64;
                index
                    .file
                    .write_all_at(&buf, at)
                    .and_then(|()| index.file.sync_data())
                    .map_err(|e| io(&index.path, e))?;
                index.in_file.fetch_add(index.overlay.len() as u64, Ordering::Relaxed);
                index.overlay.clear();
            }
            write_atomic(dir, "CHECKPOINT", &encode_checkpoint(&Checkpoint { pos: tail.end, counts: next.clone() }))?;
            Some(Mutex::new(Writer { active: Arc::clone(&last), len, next: next.clone(), dirty: false }))
        } else {
            None
        };
        let shared = Shared {
            dir: dir.to_owned(),
            segments: RwLock::new(segments),
            indexes,
            durable_end: next.into_iter().map(AtomicU64::new).collect(),
            writer,
            space: crate::SpaceGuard { dir: dir.to_owned(), reserve: options.min_free_bytes },
            options,
            _lock: lock,
        };
        let (appended, _) = watch::channel(0);
        Ok(EmbeddedLog { shared: Arc::new(shared), appended })
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u32 {
        u32::try_from(self.shared.indexes.len()).unwrap_or(u32::MAX)
    }

    /// The offset after the last durable record of `partition`.
    pub fn end(&self, partition: u32) -> u64 {
        self.shared.durable_end.get(partition as usize).map_or(0, |e| e.load(Ordering::Acquire))
    }

    /// The latest receive time (unix ms) among the last records of every partition; `None` for an empty log.
    pub fn newest_received_ms(&self) -> Result<Option<i64>, StoreError> {
        let mut newest = None;
        for p in 0..self.partitions() {
            let end = self.end(p);
            self.scan(p, end.saturating_sub(RECEIVE_ORDER_SLACK_RECORDS), end, |_, r| {
                newest = newest.max(Some(r.received_at_ms));
            })?;
        }
        Ok(newest)
    }

    /// The ids of the events received at or after `floor_ms` (unix ms), read from the end of each partition
    /// back. Records are appended in about the order they were received (concurrent requests within
    /// moments of each other), so a partition is read back in chunks until a whole chunk was received
    /// more than [`RECEIVE_ORDER_SLACK_MS`] before the floor.
    pub fn event_ids_received_since(&self, floor_ms: i64) -> Result<HashSet<String>, StoreError> {
        const CHUNK: u64 = 4096;
        let mut ids = HashSet::new();
        for p in 0..self.partitions() {
            let mut hi = self.end(p);
            while hi > 0 {
                let lo = hi.saturating_sub(CHUNK);
                let mut newest_in_chunk = i64::MIN;
                self.scan(p, lo, hi, |_, r| {
                    newest_in_chunk = newest_in_chunk.max(r.received_at_ms);
                    if r.received_at_ms >= floor_ms {
                        ids.insert(r.event_id.to_owned());
                    }
                })?;
                if newest_in_chunk < floor_ms.saturating_sub(RECEIVE_ORDER_SLACK_MS) {
                    break;
                }
                hi = lo;
            }
        }
        Ok(ids)
    }

    /// Bytes of the log on disk: segments and indexes.
    pub fn disk_bytes(&self) -> u64 {
        let segments = self.shared.segments.read().unwrap_or_else(PoisonError::into_inner);
        let seg: u64 = segments.iter().filter_map(|s| s.file.metadata().ok()).map(|m| m.len()).sum();
        seg + self.shared.indexes.iter().filter_map(|i| i.file.metadata().ok()).map(|m| m.len()).sum::<u64>()
    }

    /// A receiver that changes after every group commit (to wake the projector).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// Up to `max` durable records of `partition` from offset `from`.
    pub fn read(&self, partition: u32, from: u64, max: usize) -> Result<Vec<(u64, LogRecord)>, StoreError> {
        let mut out = Vec::new();
        self.scan(partition, from, from.saturating_add(max as u64), |o, r| out.push((o, LogRecord::from(r))))?;
        Ok(out)
    }

    /// Every durable record of `partition`, for tests and audits.
    pub fn read_all(&self, partition: u32) -> Result<Vec<(u64, LogRecord)>, StoreError> {
        self.read(partition, 0, usize::MAX)
    }

    /// Calls `each` with every durable record of `partition` in `[from, to)`, borrowed from a read buffer
    /// (no copy per record). Returns the number of records visited.
    pub fn scan(
        &self,
        partition: u32,
        from: u64,
        to: u64,
        mut each: impl FnMut(u64, RecordRef<'_>),
    ) -> Result<u64, StoreError> {
        let mut failed = None;
        let n = self.scan_raw(partition, from, to, &mut |o, raw| {
            if failed.is_none() {
                match RecordRef::decode(raw) {
                    Ok(r) => each(o, r),
                    Err(e) => failed = Some(record_error(partition, o, e)),
                }
            }
        })?;
        failed.map_or(Ok(n), Err)
    }

    fn index_entries(&self, partition: u32, from: u64, to: u64, out: &mut Vec<Entry>) -> Result<(), StoreError> {
        out.clear();
        let index = self.shared.indexes.get(partition as usize).ok_or(StoreError::NoSuchPartition(partition))?;
        let in_file = index.in_file.load(Ordering::Acquire);
        let file_to = to.min(in_file);
        if from < file_to {
            let mut buf = vec![0u8; usize::try_from(file_to - from).unwrap_or(usize::MAX) * INDEX_ENTRY];
            index.file.read_exact_at(&mut buf, from * INDEX_ENTRY as u64).map_err(|e| io(&index.path, e))?;
            out.extend(buf.chunks_exact(INDEX_ENTRY).filter_map(entry_at));
        }
        let over_from = usize::try_from(from.max(in_file) - in_file).unwrap_or(usize::MAX);
        let over_to = usize::try_from(to.max(in_file) - in_file).unwrap_or(usize::MAX);
        if let Some(s) = index.overlay.get(over_from..over_to.min(index.overlay.len())) {
            out.extend_from_slice(s);
        }
        Ok(())
    }

    /// The segment holding log position `pos`.
    fn segment_of(&self, pos: u64) -> Option<Arc<Segment>> {
        let segments = self.shared.segments.read().unwrap_or_else(PoisonError::into_inner);
        let i = segments.partition_point(|s| s.base <= pos).checked_sub(1)?;
        segments.get(i).cloned()
    }

    /// Calls `each` with every durable record of `partition` in `[from, to)` in its stored encoding.
    fn scan_raw(
        &self,
        partition: u32,
        from: u64,
        to: u64,
        each: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<u64, StoreError> {
        const CHUNK: u64 = 4096;
        let to = to.min(self.end(partition));
        let mut entries = Vec::new();
        let mut buf = Vec::new();
        let mut plain = Vec::new();
        let mut offset = from;
        while offset < to {
            let chunk_to = to.min(offset + CHUNK);
            self.index_entries(partition, offset, chunk_to, &mut entries)?;
            if entries.len() as u64 != chunk_to - offset {
                return Err(StoreError::CorruptRecord { partition, offset, why: "index entries missing".into() });
            }
            let mut i = 0;
            while let Some(first) = entries.get(i).copied() {
                // A run of frames adjacent on disk (and in one segment) is read with one pread.
                let seg = self.segment_of(first.pos).ok_or_else(|| StoreError::CorruptRecord {
                    partition,
                    offset,
                    why: format!("no segment holds position {}", first.pos),
                })?;
                let mut run_end = first.end();
                let mut j = i + 1;
                while let Some(e) = entries.get(j) {
                    if e.pos != run_end || (e.end() - first.pos) as usize > MAX_RUN_BYTES {
                        break;
                    }
                    run_end = e.end();
                    j += 1;
                }
                buf.resize(usize::try_from(run_end - first.pos).unwrap_or(usize::MAX), 0);
                seg.file.read_exact_at(&mut buf, first.pos - seg.base).map_err(|e| StoreError::CorruptRecord {
                    partition,
                    offset,
                    why: format!("reading {}: {e}", seg.path.display()),
                })?;
                for e in &entries[i..j] {
                    let at = usize::try_from(e.pos - first.pos).unwrap_or(usize::MAX);
                    let frame = buf.get(at..at + e.len as usize).unwrap_or_default();
                    let payload = frame_record(frame, partition, offset)?;
                    each(offset, decode_payload(payload, &mut plain, partition, offset)?);
                    offset += 1;
                }
                i = j;
            }
        }
        Ok(offset.saturating_sub(from))
    }

    /// Appends `records` (partition, record) and makes them durable: for loading a log offline
    /// (`paystate simulate --to-log`, migration). Records of one partition keep their order.
    pub fn append_bulk(&self, records: &[(u32, LogRecord)]) -> Result<(), StoreError> {
        let mut encoded = Vec::with_capacity(records.len());
        for (p, r) in records {
            encoded.push((*p, r.encode()?));
        }
        // Grouped by partition (stable), so that a partition's records are adjacent on disk.
        encoded.sort_by_key(|(p, _)| *p);
        self.append_encoded(encoded.iter().map(|(p, b)| (*p, b.as_slice())))
    }

    /// Appends already encoded records in groups and makes them durable.
    pub(crate) fn append_encoded<'a>(&self, records: impl Iterator<Item = (u32, &'a [u8])>) -> Result<(), StoreError> {
        let mut group: Vec<(u32, Vec<u8>)> = Vec::new();
        let mut bytes = 0;
        let flush = |group: &mut Vec<(u32, Vec<u8>)>| -> Result<(), StoreError> {
            let refs: Vec<(u32, &[u8])> = group.iter().map(|(p, b)| (*p, b.as_slice())).collect();
            self.write_group(&refs).into_iter().collect::<Result<Vec<_>, _>>()?;
            group.clear();
            Ok(())
        };
        for (p, r) in records {
            let payload = encode_payload(r)?;
            bytes += payload.len();
            group.push((p, payload));
            if bytes >= MAX_GROUP_BYTES {
                flush(&mut group)?;
                bytes = 0;
            }
        }
        if !group.is_empty() {
            flush(&mut group)?;
        }
        Ok(())
    }

    /// Writes one group of frame payloads durably (one write and one fsync), then indexes it and moves the
    /// durable ends.
    /// Each record gets its position or, if the group failed, an error (then none of it is visible).
    fn write_group(&self, group: &[(u32, &[u8])]) -> Vec<Result<Position, StoreError>> {
        let Some(writer) = &self.shared.writer else {
            return group.iter().map(|_| Err(StoreError::Unsupported("the log is open read-only"))).collect();
        };
        if let Err(e) = self.shared.space.check() {
            tracing::warn!(error = %e, records = group.len(), "log append refused");
            let why = e.to_string();
            return group.iter().map(|_| Err(StoreError::AppendFailed(why.clone()))).collect();
        }
        let mut w = writer.lock().unwrap_or_else(PoisonError::into_inner);
        match self.write_group_locked(&mut w, group) {
            Ok(placed) => {
                self.appended.send_modify(|g| *g += 1);
                placed
            }
            Err(e) => {
                tracing::error!(error = %e, records = group.len(), "log append failed; the group is not acknowledged");
                w.dirty = true;
                let why = e.to_string();
                group.iter().map(|_| Err(StoreError::AppendFailed(why.clone()))).collect()
            }
        }
    }

    fn write_group_locked(
        &self,
        w: &mut Writer,
        group: &[(u32, &[u8])],
    ) -> Result<Vec<Result<Position, StoreError>>, StoreError> {
        let shared = &self.shared;
        if w.dirty {
            self.rollback(w)?;
        }
        if w.len >= shared.options.segment_bytes {
            self.roll(w)?;
        }
        let base = w.active.base + w.len;
        let mut buf = Vec::with_capacity(group.iter().map(|(_, r)| r.len() + FRAME_HEADER).sum());
        let mut next = w.next.clone();
        let mut index_bufs: Vec<Vec<u8>> = vec![Vec::new(); next.len()];
        let mut placed = Vec::with_capacity(group.len());
        for (partition, record) in group {
            let p = *partition as usize;
            let (Some(n), Some(ib)) = (next.get_mut(p), index_bufs.get_mut(p)) else {
                placed.push(Err(StoreError::NoSuchPartition(*partition)));
                continue;
            };
            let pos = base + buf.len() as u64;
            match put_frame(&mut buf, *partition, *n, record) {
                Ok(len) => {
                    put_entry(ib, Entry { pos, len });
                    placed.push(Ok(Position { partition: *partition, offset: *n }));
                    *n += 1;
                }
                Err(e) => placed.push(Err(e)),
            }
        }
        let seg = &w.active;
        w.dirty = true;
        seg.file.write_all_at(&buf, w.len).and_then(|()| seg.file.sync_data()).map_err(|e| io(&seg.path, e))?;
        for (p, ib) in index_bufs.iter().enumerate() {
            if ib.is_empty() {
                continue;
            }
            let index = &shared.indexes[p];
            index.file.write_all_at(ib, w.next[p] * INDEX_ENTRY as u64).map_err(|e| io(&index.path, e))?;
        }
        w.dirty = false;
        w.len += buf.len() as u64;
        for (p, n) in next.iter().enumerate() {
            shared.indexes[p].in_file.store(*n, Ordering::Release);
            shared.durable_end[p].store(*n, Ordering::Release);
        }
        w.next = next;
        Ok(placed)
    }

    /// Cuts the active segment and the indexes back to the last acknowledged state.
    fn rollback(&self, w: &mut Writer) -> Result<(), StoreError> {
        let seg = &w.active;
        seg.file.set_len(w.len).and_then(|()| seg.file.sync_data()).map_err(|e| io(&seg.path, e))?;
        for (index, n) in self.shared.indexes.iter().zip(&w.next) {
            index.file.set_len(n * INDEX_ENTRY as u64).map_err(|e| io(&index.path, e))?;
        }
        w.dirty = false;
        Ok(())
    }

    /// Seals the active segment: indexes made durable, a checkpoint at its end, a new segment started.
    fn roll(&self, w: &mut Writer) -> Result<(), StoreError> {
        let shared = &self.shared;
        self.checkpoint(w)?;
        let base = w.active.base + w.len;
        let path = shared.dir.join(segment_name(base));
        // A file left by a roll that failed half-way holds nothing acknowledged: start it again.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        file.write_all(SEGMENT_MAGIC).and_then(|()| file.sync_all()).map_err(|e| io(&path, e))?;
        fsync_dir(&shared.dir)?;
        let seg = Arc::new(Segment { base, path, file });
        shared.segments.write().unwrap_or_else(PoisonError::into_inner).push(Arc::clone(&seg));
        w.active = seg;
        w.len = SEGMENT_MAGIC.len() as u64;
        Ok(())
    }

    /// Makes the indexes durable and records that everything before the active end is indexed.
    fn checkpoint(&self, w: &Writer) -> Result<(), StoreError> {
        for index in &self.shared.indexes {
            index.file.sync_data().map_err(|e| io(&index.path, e))?;
        }
        let c = Checkpoint { pos: w.active.base + w.len, counts: w.next.clone() };
        write_atomic(&self.shared.dir, "CHECKPOINT", &encode_checkpoint(&c))
    }

    /// Records a checkpoint at the current end, so that the next open has nothing to scan. Called on a
    /// clean shutdown; a crash without it costs only a scan of the tail.
    pub fn close(&self) -> Result<(), StoreError> {
        let Some(writer) = &self.shared.writer else { return Ok(()) };
        let mut w = writer.lock().unwrap_or_else(PoisonError::into_inner);
        if w.dirty {
            self.rollback(&mut w)?;
        }
        self.checkpoint(&w)
    }

    /// Starts the group-commit appender. Only one may run per log.
    pub fn start_appender(&self) -> Appender {
        let (tx, rx) = mpsc::sync_channel::<Request>(self.shared.options.queue_records.max(1));
        let log = self.clone();
        let handle =
            std::thread::Builder::new().name("paystate-appender".into()).spawn(move || log.appender_loop(&rx)).ok();
        Appender { sender: AppendHandle { tx: Some(tx), halted: Arc::new(AtomicBool::new(false)) }, handle }
    }

    fn appender_loop(&self, rx: &mpsc::Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut bytes = first.bytes.len();
            let mut group = vec![first];
            while group.len() < MAX_GROUP && bytes < MAX_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(r) => {
                        bytes += r.bytes.len();
                        group.push(r);
                    }
                    Err(_) => break,
                }
            }
            let records: Vec<(u32, &[u8])> = group.iter().map(|r| (r.partition, r.bytes.as_slice())).collect();
            let placed = self.write_group(&records);
            drop(records);
            for (req, result) in group.into_iter().zip(placed) {
                // The caller may have gone away (client disconnected): nothing to tell it.
                let _ = req.reply.send(result);
            }
        }
        if let Err(e) = self.close() {
            tracing::warn!(error = %e, "log: no checkpoint at shutdown (the next open scans the tail)");
        }
    }
}

fn record_error(partition: u32, offset: u64, e: StoreError) -> StoreError {
    StoreError::CorruptRecord { partition, offset, why: e.to_string() }
}

/// The segments of `dir` in position order, each checked to start where the previous one ends.
fn list_segments(dir: &Path, access: Access) -> Result<Vec<Arc<Segment>>, StoreError> {
    let mut found = Vec::new();
    for item in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let item = item.map_err(|e| io(dir, e))?;
        let name = item.file_name();
        let Some(base) = name.to_str().and_then(|n| n.strip_suffix(".seg")).and_then(|b| b.parse::<u64>().ok()) else {
            continue;
        };
        found.push((base, item.path()));
    }
    found.sort();
    // A last segment shorter than its magic was being created by a roll when the process died: it holds
    // nothing. The writer removes it; a reader ignores it.
    if let Some((_, path)) = found.last().filter(|_| found.len() > 1) {
        let len = std::fs::metadata(path).map_err(|e| io(path, e))?.len();
        if len < SEGMENT_MAGIC.len() as u64 {
            if access == Access::Write {
                std::fs::remove_file(path).map_err(|e| io(path, e))?;
            }
            found.pop();
        }
    }
    let mut out: Vec<Arc<Segment>> = Vec::new();
    for (base, path) in found {
        let file = match access {
            Access::Write => OpenOptions::new().read(true).write(true).open(&path),
            Access::Read => File::open(&path),
        }
        .map_err(|e| io(&path, e))?;
        let mut magic = [0u8; 8];
        if file.read_exact_at(&mut magic, 0).is_err() || &magic != SEGMENT_MAGIC {
            return Err(StoreError::Corrupt { tree: "log", why: format!("{} is not a log segment", path.display()) });
        }
        if let Some(prev) = out.last() {
            let prev_len = prev.file.metadata().map_err(|e| io(&prev.path, e))?.len();
            if prev.base + prev_len != base {
                return Err(StoreError::Corrupt {
                    tree: "log",
                    why: format!("{} does not start where {} ends", path.display(), prev.path.display()),
                });
            }
        }
        out.push(Arc::new(Segment { base, path, file }));
    }
    Ok(out)
}

/// What the scan after the checkpoint found.
struct Tail {
    /// Index entries of the frames after the checkpoint, per partition.
    entries: Vec<Vec<Entry>>,
    /// Position after the last valid frame.
    end: u64,
    /// Bytes after it in the last segment (a torn write) to cut off.
    dropped: u64,
}

/// Scans every frame from the checkpoint to the end: CRC, partition and the next offset of its partition.
fn recover_tail(segments: &[Arc<Segment>], cp: &Checkpoint, partitions: u32) -> Result<Tail, StoreError> {
    let mut next = cp.counts.clone();
    let mut entries: Vec<Vec<Entry>> = vec![Vec::new(); partitions as usize];
    let mut end = cp.pos;
    let start = segments.partition_point(|s| s.base <= cp.pos).saturating_sub(1);
    for (i, seg) in segments.iter().enumerate().skip(start) {
        let last = i + 1 == segments.len();
        let len = seg.file.metadata().map_err(|e| io(&seg.path, e))?.len();
        let mut at = cp.pos.saturating_sub(seg.base).max(SEGMENT_MAGIC.len() as u64);
        let mut reader = std::io::BufReader::with_capacity(1 << 20, &seg.file);
        std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(at)).map_err(|e| io(&seg.path, e))?;
        let mut head = [0u8; FRAME_HEADER];
        let mut record = Vec::new();
        while at < len {
            let torn = |why: String| -> Result<(), StoreError> {
                if last {
                    Ok(())
                } else {
                    Err(StoreError::Corrupt { tree: "log", why: format!("{} at byte {at}: {why}", seg.path.display()) })
                }
            };
            if len - at < FRAME_HEADER as u64 || reader.read_exact(&mut head).is_err() {
                torn("frame header cut short".into())?;
                break;
            }
            let Some(h) = frame_head(&head) else { break };
            let frame_len = FRAME_HEADER as u64 + u64::from(h.len);
            if h.len > MAX_RECORD || at + frame_len > len {
                torn(format!("frame of {} bytes runs past the end", h.len))?;
                break;
            }
            record.resize(h.len as usize, 0);
            reader.read_exact(&mut record).map_err(|e| io(&seg.path, e))?;
            let expected = next.get(h.partition as usize).copied();
            let valid = expected == Some(h.offset) && frame_crc(h.partition, h.offset, &record) == h.crc;
            if !valid {
                // Damage followed by a valid frame is not a torn write: nothing after it may be dropped.
                let follows = last && valid_frame_at(&seg.file, at + frame_len, len, &next);
                if !last || follows {
                    let (partition, offset) = match expected {
                        Some(o) => (h.partition, o),
                        None => (h.partition, h.offset),
                    };
                    return Err(StoreError::CorruptRecord {
                        partition,
                        offset,
                        why: format!("damaged frame in {} at byte {at}", seg.path.display()),
                    });
                }
                break;
            }
            let p = h.partition as usize;
            entries[p].push(Entry { pos: seg.base + at, len: frame_len as u32 });
            next[p] += 1;
            at += frame_len;
            end = seg.base + at;
        }
        if last {
            let dropped = (seg.base + len).saturating_sub(end.max(seg.base + SEGMENT_MAGIC.len() as u64));
            let end = end.max(seg.base + SEGMENT_MAGIC.len() as u64);
            return Ok(Tail { entries, end, dropped });
        }
        end = seg.base + len;
    }
    Ok(Tail { entries, end, dropped: 0 })
}

/// Whether a valid frame (any partition, the next offset of it) starts at `at`.
fn valid_frame_at(file: &File, at: u64, len: u64, next: &[u64]) -> bool {
    let mut head = [0u8; FRAME_HEADER];
    if file.read_exact_at(&mut head, at).is_err() {
        return false;
    }
    let Some(h) = frame_head(&head) else { return false };
    if h.len > MAX_RECORD || at + FRAME_HEADER as u64 + u64::from(h.len) > len {
        return false;
    }
    let mut record = vec![0u8; h.len as usize];
    file.read_exact_at(&mut record, at + FRAME_HEADER as u64).is_ok()
        && next.get(h.partition as usize).is_some_and(|n| h.offset >= *n)
        && frame_crc(h.partition, h.offset, &record) == h.crc
}

struct Request {
    partition: u32,
    bytes: Vec<u8>,
    reply: oneshot::Sender<Result<Position, StoreError>>,
}

/// Owner of the appender thread. [`Appender::close`] waits until every [`AppendHandle`] is dropped and
/// every queued request answered, then stops the thread (which writes a checkpoint).
#[derive(Debug)]
pub struct Appender {
    sender: AppendHandle,
    handle: Option<JoinHandle<()>>,
}

/// Whether the appender takes appends, for `/readyz`, without holding it open (an [`AppendHandle`] kept
/// for that would make [`Appender::close`] wait for ever).
#[derive(Debug, Clone)]
pub struct AppendHealth {
    halted: Arc<AtomicBool>,
}

/// The reason a stopped appender gives for `/readyz`.
const APPENDER_STOPPED: &str = "the embedded log's appender is stopped";

impl AppendHealth {
    /// `Err` with the reason once the appender refuses appends.
    pub fn check(&self) -> Result<(), String> {
        match self.halted.load(Ordering::Acquire) {
            true => Err(APPENDER_STOPPED.into()),
            false => Ok(()),
        }
    }
}

impl Appender {
    /// Its [`AppendHealth`].
    pub fn health(&self) -> AppendHealth {
        AppendHealth { halted: Arc::clone(&self.sender.halted) }
    }

    /// Refuses every append from now on (through every handle) with [`StoreError::AppenderStopped`];
    /// requests already queued are still written and answered.
    pub fn halt(&self) {
        self.sender.halted.store(true, Ordering::Release);
    }

    /// Appends `record` to `partition`; resolves once it is durable.
    pub async fn append(&self, partition: u32, record: &LogRecord) -> Result<Position, StoreError> {
        self.sender.append(partition, record).await
    }

    /// A sender for concurrent use (request handlers): appends from all handles share group commits.
    pub fn handle(&self) -> AppendHandle {
        self.sender.clone()
    }

    /// Stops accepting through this owner, lets the thread answer what is queued, and waits for it (which
    /// also waits for the other handles to be dropped).
    pub fn close(mut self) {
        self.sender.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A cloneable sender to the appender.
#[derive(Debug, Clone)]
pub struct AppendHandle {
    tx: Option<mpsc::SyncSender<Request>>,
    halted: Arc<AtomicBool>,
}

impl AppendHandle {
    /// Appends `record` to `partition`; resolves once it is durable. Refused at once with
    /// [`StoreError::Busy`] when the appender's queue is full.
    pub async fn append(&self, partition: u32, record: &LogRecord) -> Result<Position, StoreError> {
        if self.halted.load(Ordering::Acquire) {
            return Err(StoreError::AppenderStopped);
        }
        // Compressed here, on the caller's thread: the appender's one thread only writes.
        let bytes = encode_payload(&record.encode()?)?;
        let (reply, rx) = oneshot::channel();
        self.tx.as_ref().ok_or(StoreError::AppenderStopped)?.try_send(Request { partition, bytes, reply }).map_err(
            |e| match e {
                mpsc::TrySendError::Full(_) => StoreError::Busy,
                mpsc::TrySendError::Disconnected(_) => StoreError::AppenderStopped,
            },
        )?;
        rx.await.map_err(|_| StoreError::AppenderStopped)?
    }
}
