//! The one-time migration of the previous release's log (a sled database in `<data dir>/log/`, one tree
//! per partition keyed by big-endian offsets) into segments.
//!
//! The records are copied byte for byte, partition by partition in offset order, into
//! `segments.partial/`, made durable, and the directory renamed to `segments/` (atomic): a crash before
//! the rename leaves the old log as it was and the migration starts again; after it, the old log is
//! removed. Offsets do not change, so the projection's positions stay valid.

use crate::error::{io, StoreError};
use crate::log::{fsync_dir, EmbeddedLog, LOG_DIR};
use crate::StoreOptions;
use std::path::Path;
use std::sync::Arc;

/// Told `(records copied, records in all)` while a migration runs.
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

const SLED_LOG: &str = "log";

/// Whether `dir` holds a sled log of the previous release.
pub(crate) fn has_sled_log(dir: &Path) -> bool {
    dir.join(SLED_LOG).join("conf").is_file()
}

/// Migrates the sled log of `dir`, if it has one, into segments.
pub(crate) fn sled_log(dir: &Path, options: &StoreOptions) -> Result<(), StoreError> {
    let old = dir.join(SLED_LOG);
    if !has_sled_log(dir) {
        return Ok(());
    }
    let done = dir.join(LOG_DIR);
    if done.join("LOG").is_file() {
        // Migrated, then interrupted before the old log was removed.
        return std::fs::remove_dir_all(&old).map_err(|e| io(&old, e));
    }
    let db = sled::Config::new().path(&old).open()?;
    let meta = db.open_tree("meta")?;
    let partitions = match meta.get(b"partitions")? {
        Some(v) => u32::from_be_bytes(
            v.as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt { tree: "meta", why: "partitions of the sled log".into() })?,
        ),
        None => return Err(StoreError::Corrupt { tree: "meta", why: "the sled log has no partition count".into() }),
    };
    let trees: Vec<sled::Tree> =
        (0..partitions).map(|p| db.open_tree(format!("log/{p}"))).collect::<Result<_, sled::Error>>()?;
    let total: u64 = trees.iter().map(|t| t.len() as u64).sum();
    tracing::warn!(
        dir = %dir.display(),
        records = total,
        "the log is in the previous release's format (sled): copying it into segments once"
    );
    let partial = dir.join(format!("{LOG_DIR}.partial"));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| io(&partial, e))?;
    }
    let log = EmbeddedLog::open(&partial, partitions, options.log)?;
    let mut copied = 0u64;
    for (p, tree) in (0u32..).zip(&trees) {
        let mut expected = 0u64;
        let mut chunk: Vec<sled::IVec> = Vec::new();
        let mut bytes = 0;
        for item in tree.iter() {
            let (k, v) = item?;
            let offset = <[u8; 8]>::try_from(k.as_ref()).map(u64::from_be_bytes).map_err(|_| StoreError::Corrupt {
                tree: "log",
                why: format!("partition {p}: an offset key of {} bytes", k.len()),
            })?;
            if offset != expected {
                return Err(StoreError::CorruptRecord {
                    partition: p,
                    offset: expected,
                    why: format!("the sled log jumps to offset {offset}"),
                });
            }
            crate::record::RecordRef::decode(&v).map_err(|e| StoreError::CorruptRecord {
                partition: p,
                offset,
                why: e.to_string(),
            })?;
            expected += 1;
            bytes += v.len();
            chunk.push(v);
            if bytes >= 8 << 20 {
                log.append_encoded(chunk.iter().map(|v| (p, v.as_ref())))?;
                copied += chunk.len() as u64;
                chunk.clear();
                bytes = 0;
                if let Some(progress) = &options.progress {
                    progress(copied, total);
                }
            }
        }
        log.append_encoded(chunk.iter().map(|v| (p, v.as_ref())))?;
        copied += chunk.len() as u64;
        if let Some(progress) = &options.progress {
            progress(copied, total);
        }
        if log.end(p) != expected {
            return Err(StoreError::CorruptRecord {
                partition: p,
                offset: log.end(p),
                why: format!("migration copied {} records of {expected}", log.end(p)),
            });
        }
    }
    log.close()?;
    drop(log);
    std::fs::rename(&partial, &done).map_err(|e| io(&done, e))?;
    fsync_dir(dir)?;
    drop(trees);
    drop(meta);
    drop(db);
    std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
    tracing::warn!(dir = %dir.display(), records = copied, "log migrated into segments; the sled log is removed");
    Ok(())
}
