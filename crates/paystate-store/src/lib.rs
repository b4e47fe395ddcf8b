//! # paystate-store
//!
//! All of paystate's state on disk, in one data directory (two sled databases): the embedded durable log
//! ([`log`]) and the projection ([`projection`]). This is the only crate that depends on sled.
//!
//! It knows nothing of HTTP, Stripe's wire format or how payments fold: it stores bytes and
//! `paystate_core::Payment` values, and guarantees durability (appends are acknowledged after fsync) and
//! atomicity (a projector batch and its offset commit together).

pub mod error;
mod format;
pub mod log;
mod migrate;
pub mod projection;
pub mod record;
mod stored;

pub use error::StoreError;
pub use log::{
    AppendError, AppendHandle, AppendHealth, Appender, EmbeddedLog, LogOptions, LogSink, LogView, Position,
    RecordTooLarge, RECEIVE_ORDER_SLACK_MS,
};
pub use migrate::Progress;
pub use projection::{
    digest_of, state_hash, Batch, DeadLetter, HistoryChange, HistoryChanges, Located, Projection, Rebuild, StateHash,
    StoredHistory, Stream, Totals,
};
pub use record::{decode_frames, put_frame, LogRecord, Origin, RecordRef};

use std::path::{Path, PathBuf};

/// sled's cache for the live projection by default.
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

/// Default number of log partitions.
pub const DEFAULT_PARTITIONS: u32 = 8;

/// How a data directory is opened.
#[derive(Clone, Default)]
pub struct StoreOptions {
    /// The embedded log's settings.
    pub log: LogOptions,
    /// sled's page cache for the projection, in bytes (0: [`DEFAULT_CACHE_BYTES`]).
    pub cache_bytes: u64,
    /// Told how far a one-time migration of the previous release's log has come.
    pub progress: Option<Progress>,
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("log", &self.log)
            .field("cache_bytes", &self.cache_bytes)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl StoreOptions {
    fn cache(&self) -> u64 {
        if self.cache_bytes == 0 {
            DEFAULT_CACHE_BYTES
        } else {
            self.cache_bytes
        }
    }
}

/// An open data directory: the embedded log (`segments/`, see [`log`]) and the projection (`projection/`,
/// a sled database).
///
/// They are separate so that the appender's fsync only has log records to write: projector batches
/// would otherwise ride along in every webhook's flush. Nothing needs a transaction across the two: the
/// projector reads only the durable end of the log, and its position commits with its effects inside
/// `projection/`.
#[derive(Debug, Clone)]
pub struct Store {
    /// The embedded log.
    pub log: EmbeddedLog,
    /// The projection.
    pub projection: Projection,
}

/// sled settings: every durable point is an explicit `flush`, so sled's own periodic flusher only competes
/// for the disk; throughput mode favours write speed over space.
///
/// A projection created by this release is compressed (zstd level 1 on each page sled writes): measured with
/// `DELIVERIES=200000 tests/bench/soak`, the projection took 272 MB instead of 535 MB for the same
/// deliveries (sled rewrites pages, so its files hold several times the data's logical size; the data is
/// JSON and postcard, which compresses well). sled refuses to open a database with a different setting than
/// the one it was created with, so a projection written before (uncompressed) keeps its setting, read from
/// sled's own `conf` file.
///
/// `compress_new` says whether a database created here is compressed. Not for bulk writers (replay): sled
/// creates a zstd context for every page it compresses, which took 31.6 % of a replay's samples (perf, in
/// `ZSTD_createCCtx_advanced`, plus the zeroing of those allocations) and slowed it several times.
fn config(path: &Path, compress_new: bool) -> sled::Config {
    let compressed = created_compressed(path).unwrap_or(compress_new);
    sled::Config::new()
        .path(path)
        .mode(sled::Mode::HighThroughput)
        .flush_every_ms(None)
        .use_compression(compressed)
        .compression_factor(1)
}

/// Whether the sled database at `path` was created compressed, from the `use_compression:` line of the
/// `conf` file sled keeps there; `None` when there is no database yet.
fn created_compressed(path: &Path) -> Option<bool> {
    let conf = std::fs::read(path.join("conf")).ok()?;
    String::from_utf8_lossy(&conf).lines().find_map(|l| l.strip_prefix("use_compression: ")).map(|v| v.trim() == "true")
}

/// sled's cache limit counts a page by its size in the log, which with compression is a fraction of its
/// size in memory: the limit given to sled is divided by this so that `cache_bytes` stays about what the
/// cache holds (measured: a 64 MB limit grew `serve`'s RSS from 212 to 337 MB when compression came in).
const COMPRESSED_CACHE_DIVISOR: u64 = 3;

/// Free disk space a data directory keeps by default: appends are refused (503) below it and projector
/// commits below half of it, so that no write of the log or of sled ever meets a full filesystem.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 << 20;

/// The free space a directory's filesystem must keep: writes are refused with [`StoreError::DiskFull`]
/// before they would take it.
#[derive(Debug, Clone)]
pub(crate) struct SpaceGuard {
    pub(crate) dir: PathBuf,
    pub(crate) reserve: u64,
}

impl SpaceGuard {
    /// Refuses when less than the reserve is free. A filesystem that cannot say is let through (its
    /// writes fail on their own if it is full).
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        if self.reserve == 0 {
            return Ok(());
        }
        match fs2::available_space(&self.dir) {
            Ok(free) if free < self.reserve => {
                Err(StoreError::DiskFull { dir: self.dir.display().to_string(), free, reserve: self.reserve })
            }
            _ => Ok(()),
        }
    }
}

/// A consumer group as the log's broker sees it (Kafka), for status and metrics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupView {
    /// The group id.
    pub group: String,
    /// This member's client id (the name it has in `members`).
    pub me: String,
    /// The group's state as the broker names it (`Stable`, `PreparingRebalance`, `CompletingRebalance`,
    /// `Empty`, `Dead`; `Unknown` when it could not be described).
    pub state: String,
    /// Its members and their partitions of the raw topic.
    pub members: Vec<GroupMember>,
    /// This member's partitions (taken: positioned, restored where needed, producers fenced in).
    pub owned: Vec<u32>,
    /// Partitions the group assigned to this member that it has not taken yet.
    pub pending: Vec<u32>,
    /// Partitions no member owns.
    pub unowned: Vec<u32>,
    /// Each partition of the raw topic.
    pub partitions: Vec<GroupPartition>,
    /// Records between the group's committed offsets and the partitions' ends, summed (unknown parts
    /// counted as 0; see `caught_up`).
    pub lag: u64,
    /// The group is stable, every partition has an owner, and every partition's committed offset is its
    /// end. Never true while something is unknown.
    pub caught_up: bool,
    /// What could not be observed, if anything.
    pub errors: Vec<String>,
}

impl GroupView {
    /// A view from its parts, as member `me` (its client id) sees it; `pending`, `unowned`, `lag` and
    /// `caught_up` are derived.
    pub fn new(
        group: String,
        state: String,
        members: Vec<GroupMember>,
        me: &str,
        mut owned: Vec<u32>,
        partitions: Vec<GroupPartition>,
        errors: Vec<String>,
    ) -> GroupView {
        owned.sort_unstable();
        let unowned: Vec<u32> = partitions.iter().filter(|p| p.owner.is_none()).map(|p| p.partition).collect();
        let lag = partitions.iter().filter_map(|p| p.lag).sum();
        // What the group assigned to this member and it has not taken yet (it is restoring or fencing):
        // the group's offsets say nothing of those until it has.
        let assigned = members.iter().find(|m| m.client_id == me).map(|m| m.partitions.clone());
        let pending: Vec<u32> =
            assigned.iter().flatten().copied().filter(|p| owned.binary_search(p).is_err()).collect();
        let caught_up = state == "Stable"
            && errors.is_empty()
            && assigned.is_some()
            && pending.is_empty()
            && unowned.is_empty()
            && !partitions.is_empty()
            && partitions.iter().all(|p| p.lag == Some(0));
        let me = me.to_owned();
        GroupView { group, me, state, members, owned, pending, unowned, partitions, lag, caught_up, errors }
    }

    /// The member other than this one that owns `partition` and says where its admin API answers.
    pub fn other_owner(&self, partition: u32) -> Option<&GroupMember> {
        self.members
            .iter()
            .find(|m| m.partitions.contains(&partition))
            .filter(|m| m.client_id != self.me && m.admin_url.is_some())
    }

    /// The other members whose admin APIs can be asked.
    pub fn peers(&self) -> impl Iterator<Item = &GroupMember> {
        self.members.iter().filter(|m| m.client_id != self.me && m.admin_url.is_some())
    }
}

/// One member of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupMember {
    /// The broker's member id.
    pub member_id: String,
    /// The member's `client.id` (a projector's names its host and process).
    pub client_id: String,
    /// Where it connects from.
    pub host: String,
    /// Its partitions of the raw topic.
    pub partitions: Vec<u32>,
    /// Where its admin API answers (`--admin-advertise`, carried in its client id), if it says.
    pub admin_url: Option<String>,
}

/// One partition of the raw topic as the group sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupPartition {
    /// Partition.
    pub partition: u32,
    /// The partition's end (high watermark), if known.
    pub end: Option<u64>,
    /// The group's committed offset, if any.
    pub committed: Option<u64>,
    /// `end - committed` (the end when nothing is committed), if known.
    pub lag: Option<u64>,
    /// The `client.id` of the member that owns it.
    pub owner: Option<String>,
}

/// A partition whose next records were deleted from the log (Kafka's retention) before they were applied:
/// the projector stopped it rather than skip them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RetentionGap {
    /// The partition.
    pub partition: u32,
    /// The offset the projection needs next.
    pub expected: u64,
    /// The first offset the log still holds: the records from `expected` up to it are gone.
    pub first_retained: u64,
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
        Self::open_with(dir, Some(partitions), &StoreOptions::default())
    }

    /// [`Store::open`] with settings. `partitions: None` opens an existing directory with whatever count it
    /// was created with. The sled log of the previous release is migrated into segments first (once).
    pub fn open_with(dir: &Path, partitions: Option<u32>, options: &StoreOptions) -> Result<Self, StoreError> {
        migrate::sled_log(dir, options)?;
        let log_dir = dir.join(log::LOG_DIR);
        let log = match partitions {
            Some(n) => {
                std::fs::create_dir_all(dir).map_err(|e| error::io(dir, e))?;
                EmbeddedLog::open(&log_dir, n, options.log)?
            }
            None if log_dir.join("LOG").is_file() => EmbeddedLog::open_existing(&log_dir, options.log)?,
            None => {
                return Err(StoreError::Corrupt {
                    tree: "meta",
                    why: format!("{} is not a paystate data directory", dir.display()),
                })
            }
        };
        let mut projection = upgraded(Self::projection_db(dir, options.cache())?, options.progress.as_ref())?;
        projection.space = Some(SpaceGuard { dir: dir.to_owned(), reserve: options.log.min_free_bytes / 2 });
        Ok(Store { log, projection })
    }

    /// Opens (or creates) only the projection of a data directory: the projector of the Kafka log keeps
    /// its states, positions and outbox here while the log lives in Kafka. A projection written by the
    /// previous release is rebuilt from the log (positions back to 0, see [`Projection::rebuild_from_log`]).
    pub fn open_projection(dir: &Path) -> Result<Projection, StoreError> {
        let mut projection = upgraded(Self::projection_db(dir, DEFAULT_CACHE_BYTES)?, None)?;
        projection.space = Some(SpaceGuard { dir: dir.to_owned(), reserve: DEFAULT_MIN_FREE_BYTES / 2 });
        Ok(projection)
    }

    /// [`Store::open_projection`] with sled's cache limited to `cache_bytes` (replay writes a projection
    /// once and never reads it back, so a small cache costs nothing). A projection created here is not
    /// compressed (see `config`): replay writes it in bulk.
    pub fn open_projection_with_cache(dir: &Path, cache_bytes: u64) -> Result<Projection, StoreError> {
        let projection = Self::projection_db_with(dir, cache_bytes, false)?;
        if !projection.needs_rebuild()? {
            projection.migrate_payments_v2(&|_, _| {})?;
            projection.ensure_lifecycle_index()?;
        }
        Ok(projection)
    }

    /// The projection database of `dir` (created when missing), as it is on disk.
    fn projection_db(dir: &Path, cache_bytes: u64) -> Result<Projection, StoreError> {
        Self::projection_db_with(dir, cache_bytes, true)
    }

    fn projection_db_with(dir: &Path, cache_bytes: u64, compress_new: bool) -> Result<Projection, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Encode(format!("creating {}: {e}", dir.display())))?;
        let config = config(&dir.join("projection"), compress_new);
        let cache = match config.use_compression {
            true => cache_bytes / COMPRESSED_CACHE_DIVISOR,
            false => cache_bytes,
        };
        Projection::open(&config.cache_capacity(cache).open()?)
    }

    /// Opens only the embedded log of an existing data directory, to read it (replay): nothing in the
    /// directory is written. Fails while another process (`paystate serve`) has the log open, and on a
    /// directory whose log is still in the previous release's format (open it once with `serve` first).
    pub fn open_log(dir: &Path) -> Result<EmbeddedLog, StoreError> {
        let log_dir = dir.join(log::LOG_DIR);
        if !log_dir.join("LOG").is_file() {
            let why = if migrate::has_sled_log(dir) {
                format!("{} holds a log of the previous release: open it once with `paystate serve` (or `paystate project`) to migrate it", dir.display())
            } else {
                format!("{} has no embedded log", dir.display())
            };
            return Err(StoreError::Corrupt { tree: "meta", why });
        }
        EmbeddedLog::open_read_only(&log_dir)
    }

    /// Opens only the embedded log of an existing data directory, to append to it (`paystate catch-up`):
    /// the projection is left alone (the next `serve` folds what was appended). [`StoreError::Locked`] while
    /// another process has the log open.
    pub fn open_log_for_append(dir: &Path) -> Result<EmbeddedLog, StoreError> {
        let log_dir = dir.join(log::LOG_DIR);
        if !log_dir.join("LOG").is_file() {
            let why = if migrate::has_sled_log(dir) {
                format!(
                    "{} holds a log of the previous release: open it once with `paystate serve` to migrate it",
                    dir.display()
                )
            } else {
                format!(
                    "{} has no embedded log (start `paystate serve --data-dir {}` once to create it)",
                    dir.display(),
                    dir.display()
                )
            };
            return Err(StoreError::Corrupt { tree: "meta", why });
        }
        EmbeddedLog::open_existing(&log_dir, LogOptions::default())
    }

    /// Whether `dir` is a data directory with an embedded log (of this release, or one to migrate).
    pub fn has_embedded_log(dir: &Path) -> bool {
        dir.join(log::LOG_DIR).join("LOG").is_file() || migrate::has_sled_log(dir)
    }

    /// Opens an existing data directory with whatever partition count it was created with.
    pub fn open_existing(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, None, &StoreOptions::default())
    }
}

/// A projection whose payments are of the current format: payments of format 1 are rebuilt from the log,
/// those of format 2 (the previous release, history inside the state) are migrated in place, once.
fn upgraded(projection: Projection, progress: Option<&Progress>) -> Result<Projection, StoreError> {
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
    let migrated = projection.migrate_payments_v2(&|done, total| {
        if let Some(progress) = progress {
            progress(done, total);
        }
    })?;
    if migrated > 0 {
        tracing::info!(payments = migrated, "payments of the previous release's format migrated: histories split out");
    }
    projection.ensure_lifecycle_index()?;
    Ok(projection)
}
