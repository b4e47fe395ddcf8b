//! # paystate-store
//!
//! All of paystate's state on disk, in one data directory (two sled databases): the embedded durable log
//! ([`log`]) and the projection ([`projection`]). This is the only crate that depends on sled.
//!
//! It knows nothing of HTTP, Stripe's wire format or how payments fold: it stores bytes and
//! `paystate_core::Payment` values, and guarantees durability (appends are acknowledged after fsync) and
//! atomicity (a projector batch and its offset commit together).

pub mod error;
pub mod log;
pub mod projection;
pub mod record;

pub use error::StoreError;
pub use log::{AppendError, AppendHandle, Appender, EmbeddedLog, LogSink, LogView, Position};
pub use projection::{digest_of, state_hash, Batch, DeadLetter, Projection, Rebuild, StateHash, Stream, Totals};
pub use record::{decode_frames, put_frame, LogRecord, RecordRef};

use std::path::Path;

/// sled's default cache size (1 GiB), kept for the live store.
const DEFAULT_CACHE_BYTES: u64 = 1 << 30;

/// Default number of log partitions.
pub const DEFAULT_PARTITIONS: u32 = 8;

/// An open data directory: two sled databases, `log/` and `projection/`.
///
/// They are separate so that the appender's fsync only has log records to write: projector batches (payment
/// states rewritten on every event) would otherwise ride along in every webhook's flush. Nothing needs a
/// transaction across the two: the projector reads only the durable end of the log, and its position
/// commits with its effects inside `projection/`.
#[derive(Debug, Clone)]
pub struct Store {
    /// The embedded log.
    pub log: EmbeddedLog,
    /// The projection.
    pub projection: Projection,
}

/// sled settings for both databases: every durable point is an explicit `flush`, so sled's own periodic
/// flusher only competes for the disk; throughput mode favours write speed over space.
fn config(path: &Path) -> sled::Config {
    sled::Config::new().path(path).mode(sled::Mode::HighThroughput).flush_every_ms(None)
}

fn stored_partitions(meta: &sled::Tree) -> Result<Option<u32>, StoreError> {
    meta.get(b"partitions")?
        .map(|v| {
            let arr: [u8; 4] =
                v.as_ref().try_into().map_err(|_| StoreError::Corrupt { tree: "meta", why: "partitions".into() })?;
            Ok(u32::from_be_bytes(arr))
        })
        .transpose()
}

/// How far the projection is behind the log in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PartitionStatus {
    /// Partition.
    pub partition: u32,
    /// Offset after the last durable record.
    pub log_end: u64,
    /// Next offset the projector will apply.
    pub applied: u64,
    /// Records durable but not yet applied.
    pub lag: u64,
}

/// Each partition's log end (from `log`), applied position (from `projection`) and lag.
pub fn partition_status(projection: &Projection, log: &dyn LogView) -> Result<Vec<PartitionStatus>, StoreError> {
    (0..log.partitions())
        .map(|partition| {
            // Position first: both only grow, so this order never shows applied beyond the log end.
            let applied = projection.position(partition)?;
            let log_end = log.end(partition);
            Ok(PartitionStatus { partition, log_end, applied, lag: log_end.saturating_sub(applied) })
        })
        .collect()
}

impl Store {
    /// Each partition's log end, applied position and lag.
    pub fn partition_status(&self) -> Result<Vec<PartitionStatus>, StoreError> {
        partition_status(&self.projection, &self.log)
    }

    /// Opens (or creates) the data directory with `partitions` log partitions. Reopening with another
    /// count is refused: it would move payments between partitions.
    pub fn open(dir: &Path, partitions: u32) -> Result<Self, StoreError> {
        let log_db = config(&dir.join("log")).open()?;
        let meta = log_db.open_tree("meta")?;
        match stored_partitions(&meta)? {
            Some(found) if found != partitions => {
                return Err(StoreError::PartitionMismatch { found, wanted: partitions })
            }
            Some(_) => {}
            None => {
                meta.insert(b"partitions", &partitions.to_be_bytes())?;
                log_db.flush()?;
            }
        }
        let projection_db = config(&dir.join("projection")).open()?;
        let projection = upgraded(Projection::open(&projection_db)?)?;
        Ok(Store { log: EmbeddedLog::open(&log_db, partitions)?, projection })
    }

    /// Opens (or creates) only the projection of a data directory: the projector of the Kafka log keeps
    /// its states, positions and outbox here while the log lives in Kafka. A projection written by the
    /// previous release is rebuilt from the log (positions back to 0, see [`Projection::rebuild_from_log`]).
    pub fn open_projection(dir: &Path) -> Result<Projection, StoreError> {
        upgraded(Self::open_projection_with_cache(dir, DEFAULT_CACHE_BYTES)?)
    }

    /// [`Store::open_projection`] with sled's cache limited to `cache_bytes` (replay writes a projection
    /// once and never reads it back, so a small cache costs nothing).
    pub fn open_projection_with_cache(dir: &Path, cache_bytes: u64) -> Result<Projection, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Encode(format!("creating {}: {e}", dir.display())))?;
        Projection::open(&config(&dir.join("projection")).cache_capacity(cache_bytes).open()?)
    }

    /// Opens only the embedded log of an existing data directory, to read it (replay). sled keeps a cache of
    /// `cache_bytes`; the log is read once from start to end, so a small cache costs nothing. sled locks the
    /// database: this fails while another process (`paystate serve`) has the directory open.
    pub fn open_log(dir: &Path, cache_bytes: u64) -> Result<EmbeddedLog, StoreError> {
        if !dir.join("log").is_dir() {
            return Err(StoreError::Corrupt { tree: "meta", why: format!("{} has no embedded log", dir.display()) });
        }
        let log_db = config(&dir.join("log")).cache_capacity(cache_bytes).open()?;
        let partitions = stored_partitions(&log_db.open_tree("meta")?)?
            .ok_or_else(|| StoreError::Corrupt { tree: "meta", why: "no partition count".into() })?;
        EmbeddedLog::open(&log_db, partitions)
    }

    /// Opens an existing data directory with whatever partition count it was created with.
    pub fn open_existing(dir: &Path) -> Result<Self, StoreError> {
        if !dir.join("log").is_dir() {
            return Err(StoreError::Corrupt {
                tree: "meta",
                why: format!("{} is not a paystate data directory", dir.display()),
            });
        }
        let log_db = config(&dir.join("log")).open()?;
        let partitions = stored_partitions(&log_db.open_tree("meta")?)?
            .ok_or_else(|| StoreError::Corrupt { tree: "meta", why: "no partition count".into() })?;
        let projection_db = config(&dir.join("projection")).open()?;
        let projection = upgraded(Projection::open(&projection_db)?)?;
        Ok(Store { log: EmbeddedLog::open(&log_db, partitions)?, projection })
    }
}

/// A projection whose payments are of the current format: one written by the previous release is rebuilt
/// from its log first.
fn upgraded(projection: Projection) -> Result<Projection, StoreError> {
    if projection.needs_rebuild()? {
        let r = projection.rebuild_from_log()?;
        tracing::warn!(
            payments = r.payments,
            ledgers = r.ledgers,
            partitions = r.partitions,
            "projection written by an earlier release: its payments are rebuilt from the log with the current \
             rules (actions already emitted are not emitted again)"
        );
    }
    Ok(projection)
}
