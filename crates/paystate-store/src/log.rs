//! The embedded durable log: append-only partitions on sled.
//!
//! Each partition is a tree whose keys are offsets (u64 big-endian, so sled's order is offset order) and
//! whose values are encoded [`LogRecord`]s. Appends go through one [`Appender`] thread that does **group
//! commit**: it takes every request waiting, inserts them all, calls one `flush` (fsync), and only then
//! answers each caller. A caller that got `Ok` knows its record is on disk; concurrent requests share one
//! fsync instead of paying one each.
//!
//! Readers only see the *durable* end of each partition (advanced after the flush), so the projector never
//! applies a record that a crash could still take back.
//!
//! Delivery guarantee of an append: `Ok` ⇒ durable. `Err` ⇒ not acknowledged; the record may or may not be
//! in the log (a failed flush may still have written it), which is safe because Stripe retries and the
//! projector ignores duplicates.

use crate::error::StoreError;
use crate::record::{LogRecord, RecordRef};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use tokio::sync::{oneshot, watch};

/// Most records one group commit takes.
const MAX_GROUP: usize = 4096;

/// Why an append was not acknowledged (the record may or may not be in the log; the sender retries).
pub type AppendError = Box<dyn std::error::Error + Send + Sync>;

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
}

impl LogView for EmbeddedLog {
    fn partitions(&self) -> u32 {
        EmbeddedLog::partitions(self)
    }
    fn end(&self, partition: u32) -> u64 {
        EmbeddedLog::end(self, partition)
    }
    fn read_encoded(&self, partition: u32, from: u64, max: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.durable(partition, from, u64::MAX)?.take(max).map(|r| r.map(|(o, v)| (o, v.to_vec()))).collect()
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
}

/// Where a record was appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Partition.
    pub partition: u32,
    /// Offset within the partition.
    pub offset: u64,
}

/// The log's partitions (read side). Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedLog {
    db: sled::Db,
    parts: Arc<Vec<sled::Tree>>,
    durable_end: Arc<Vec<AtomicU64>>,
    appended: watch::Sender<u64>,
}

impl std::fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLog").field("partitions", &self.parts.len()).finish()
    }
}

fn end_of(tree: &sled::Tree) -> Result<u64, StoreError> {
    Ok(match tree.last()? {
        Some((k, _)) => offset_from_key(&k)? + 1,
        None => 0,
    })
}

fn offset_from_key(k: &[u8]) -> Result<u64, StoreError> {
    let arr: [u8; 8] =
        k.try_into().map_err(|_| StoreError::Corrupt { tree: "log", why: "offset key is not 8 bytes".into() })?;
    Ok(u64::from_be_bytes(arr))
}

impl EmbeddedLog {
    pub(crate) fn open(db: &sled::Db, partitions: u32) -> Result<Self, StoreError> {
        let mut parts = Vec::new();
        let mut ends = Vec::new();
        for p in 0..partitions {
            let tree = db.open_tree(format!("log/{p}"))?;
            ends.push(AtomicU64::new(end_of(&tree)?));
            parts.push(tree);
        }
        let (appended, _) = watch::channel(0);
        Ok(EmbeddedLog { db: db.clone(), parts: Arc::new(parts), durable_end: Arc::new(ends), appended })
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u32 {
        u32::try_from(self.parts.len()).unwrap_or(u32::MAX)
    }

    /// The offset after the last durable record of `partition`.
    pub fn end(&self, partition: u32) -> u64 {
        self.durable_end.get(partition as usize).map_or(0, |e| e.load(Ordering::Acquire))
    }

    /// A receiver that changes after every group commit (to wake the projector).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// Up to `max` durable records of `partition` from offset `from`.
    pub fn read(&self, partition: u32, from: u64, max: usize) -> Result<Vec<(u64, LogRecord)>, StoreError> {
        self.durable(partition, from, u64::MAX)?
            .take(max)
            .map(|r| r.and_then(|(o, v)| Ok((o, LogRecord::decode(&v)?))))
            .collect()
    }

    /// The stored records of `partition` in `[from, to)`, up to its durable end, in offset order.
    fn durable(
        &self,
        partition: u32,
        from: u64,
        to: u64,
    ) -> Result<impl Iterator<Item = Result<(u64, sled::IVec), StoreError>>, StoreError> {
        let tree = self.parts.get(partition as usize).ok_or(StoreError::NoSuchPartition(partition))?;
        let to = to.min(self.end(partition)).max(from);
        Ok(tree.range(from.to_be_bytes()..to.to_be_bytes()).map(|item| {
            let (k, v) = item?;
            Ok((offset_from_key(&k)?, v))
        }))
    }

    /// Calls `each` with every durable record of `partition` in `[from, to)`, borrowed from the store
    /// (no copy of the bodies). Returns the number of records visited.
    pub fn scan(
        &self,
        partition: u32,
        from: u64,
        to: u64,
        mut each: impl FnMut(u64, RecordRef<'_>),
    ) -> Result<u64, StoreError> {
        let mut n = 0;
        for item in self.durable(partition, from, to)? {
            let (offset, v) = item?;
            each(offset, RecordRef::decode(&v)?);
            n += 1;
        }
        Ok(n)
    }

    /// Every durable record of `partition`, for tests and audits.
    pub fn read_all(&self, partition: u32) -> Result<Vec<(u64, LogRecord)>, StoreError> {
        self.read(partition, 0, usize::MAX)
    }

    /// Appends `records` (partition, record) in one go and makes them durable with one flush: for loading a
    /// log offline (`paystate simulate --to-log`). No appender may run on this log at the same time.
    pub fn append_bulk(&self, records: &[(u32, LogRecord)]) -> Result<(), StoreError> {
        let mut next: Vec<u64> = (0..self.partitions()).map(|p| self.end(p)).collect();
        let mut batches: Vec<sled::Batch> = (0..self.parts.len()).map(|_| sled::Batch::default()).collect();
        for (partition, record) in records {
            let p = *partition as usize;
            let (Some(n), Some(batch)) = (next.get_mut(p), batches.get_mut(p)) else {
                return Err(StoreError::NoSuchPartition(*partition));
            };
            batch.insert(&n.to_be_bytes(), record.encode()?);
            *n += 1;
        }
        for (tree, batch) in self.parts.iter().zip(batches) {
            tree.apply_batch(batch)?;
        }
        self.db.flush()?;
        for (end, n) in self.durable_end.iter().zip(next) {
            end.store(n, Ordering::Release);
        }
        self.appended.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Starts the group-commit appender. Only one may run per store.
    pub fn start_appender(&self) -> Appender {
        let (tx, rx) = mpsc::channel::<Request>();
        let log = self.clone();
        let handle =
            std::thread::Builder::new().name("paystate-appender".into()).spawn(move || log.appender_loop(&rx)).ok();
        Appender { sender: AppendHandle { tx: Some(tx), halted: Arc::new(AtomicBool::new(false)) }, handle }
    }

    fn appender_loop(&self, rx: &mpsc::Receiver<Request>) {
        let mut next: Vec<u64> = (0..self.partitions()).map(|p| self.end(p)).collect();
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            let mut placed = Vec::with_capacity(group.len());
            let mut failed: Option<String> = None;
            for req in &group {
                let Some(tree) = self.parts.get(req.partition as usize) else {
                    placed.push(Err(StoreError::NoSuchPartition(req.partition)));
                    continue;
                };
                let offset = next[req.partition as usize];
                match tree.insert(offset.to_be_bytes(), req.bytes.as_slice()) {
                    Ok(_) => {
                        next[req.partition as usize] += 1;
                        placed.push(Ok(Position { partition: req.partition, offset }));
                    }
                    Err(e) => {
                        failed.get_or_insert(e.to_string());
                        placed.push(Err(StoreError::Sled(e)));
                    }
                }
            }
            let flushed = self.db.flush();
            if let Err(e) = &flushed {
                tracing::error!(error = %e, records = group.len(), "log flush failed; appends not acknowledged");
            } else {
                for (p, n) in next.iter().enumerate() {
                    if let Some(end) = self.durable_end.get(p) {
                        end.store(*n, Ordering::Release);
                    }
                }
                self.appended.send_modify(|g| *g += 1);
            }
            for (req, result) in group.into_iter().zip(placed) {
                let result = match (&flushed, result) {
                    (Ok(_), r) => r,
                    (Err(e), _) => Err(StoreError::Encode(format!("flush failed: {e}"))),
                };
                // The caller may have gone away (client disconnected): nothing to tell it.
                let _ = req.reply.send(result);
            }
        }
    }
}

struct Request {
    partition: u32,
    bytes: Vec<u8>,
    reply: oneshot::Sender<Result<Position, StoreError>>,
}

/// Owner of the appender thread. [`Appender::close`] waits until every [`AppendHandle`] is dropped and
/// every queued request answered, then stops the thread.
#[derive(Debug)]
pub struct Appender {
    sender: AppendHandle,
    handle: Option<JoinHandle<()>>,
}

impl Appender {
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
    tx: Option<mpsc::Sender<Request>>,
    halted: Arc<AtomicBool>,
}

impl AppendHandle {
    /// Appends `record` to `partition`; resolves once it is durable.
    pub async fn append(&self, partition: u32, record: &LogRecord) -> Result<Position, StoreError> {
        if self.halted.load(Ordering::Acquire) {
            return Err(StoreError::AppenderStopped);
        }
        let bytes = record.encode()?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .as_ref()
            .ok_or(StoreError::AppenderStopped)?
            .send(Request { partition, bytes, reply })
            .map_err(|_| StoreError::AppenderStopped)?;
        rx.await.map_err(|_| StoreError::AppenderStopped)?
    }
}
