//! # paystate-store
//!
//! All of paystate's state on disk, in one sled database per data directory: the embedded durable log
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
pub use log::{AppendHandle, Appender, EmbeddedLog, Position};
pub use projection::{Batch, DeadLetter, Projection, Stream, Totals};
pub use record::LogRecord;

use std::path::Path;

/// Default number of log partitions.
pub const DEFAULT_PARTITIONS: u32 = 8;

/// An open data directory.
#[derive(Debug, Clone)]
pub struct Store {
    /// The embedded log.
    pub log: EmbeddedLog,
    /// The projection.
    pub projection: Projection,
}

impl Store {
    /// Opens (or creates) the data directory with `partitions` log partitions. Reopening with another
    /// count is refused: it would move payments between partitions.
    pub fn open(dir: &Path, partitions: u32) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).open()?;
        let meta = db.open_tree("meta")?;
        match meta.get(b"partitions")? {
            Some(v) => {
                let arr: [u8; 4] = v
                    .as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt { tree: "meta", why: "partitions".into() })?;
                let found = u32::from_be_bytes(arr);
                if found != partitions {
                    return Err(StoreError::PartitionMismatch { found, wanted: partitions });
                }
            }
            None => {
                meta.insert(b"partitions", &partitions.to_be_bytes())?;
                db.flush()?;
            }
        }
        Ok(Store { log: EmbeddedLog::open(&db, partitions)?, projection: Projection::open(&db)? })
    }

    /// Opens an existing data directory with whatever partition count it was created with.
    pub fn open_existing(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).open()?;
        let meta = db.open_tree("meta")?;
        let v = meta
            .get(b"partitions")?
            .ok_or(StoreError::Corrupt { tree: "meta", why: "not a paystate data directory".into() })?;
        let arr: [u8; 4] =
            v.as_ref().try_into().map_err(|_| StoreError::Corrupt { tree: "meta", why: "partitions".into() })?;
        let partitions = u32::from_be_bytes(arr);
        Ok(Store { log: EmbeddedLog::open(&db, partitions)?, projection: Projection::open(&db)? })
    }
}
