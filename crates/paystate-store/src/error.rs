//! Storage errors.

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled refused an operation (IO error, corruption, …).
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// A stored record does not decode; the store was written by something else or is damaged.
    #[error("corrupt record in {tree}: {why}")]
    Corrupt {
        /// The tree it was read from.
        tree: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A file of the store could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A log record is damaged or missing where the log says it is.
    #[error("log partition {partition} offset {offset}: {why}")]
    CorruptRecord {
        /// Partition.
        partition: u32,
        /// Offset within the partition.
        offset: u64,
        /// What is wrong.
        why: String,
    },
    /// Another process has the log open (`paystate serve`, or a writer while reading).
    #[error("{0} is in use by another process (is `paystate serve` running on it?)")]
    Locked(String),
    /// The appender's queue is full: the append is refused at once (the sender retries).
    #[error("the log's append queue is full")]
    Busy,
    /// A stream cursor older than the retention keeps: entries after it were removed.
    #[error("the entries after this cursor were removed by the stream's retention; the oldest cursor is {oldest}")]
    CursorExpired {
        /// The oldest cursor that can still be read from (`after=oldest`).
        oldest: u64,
    },
    /// A group commit failed (disk full, IO error): nothing of it was acknowledged.
    #[error("append failed: {0}")]
    AppendFailed(String),
    /// The data directory's filesystem has less free space than the reserve kept so that nothing ever
    /// writes into a full disk (sled does not recover from a failed write in-process): nothing was written.
    #[error(
        "disk nearly full: {free} bytes free on the filesystem of {dir}, {reserve} kept in reserve \
         (--min-free-disk-mb); free some space and paystate resumes by itself"
    )]
    DiskFull {
        /// The data directory (or its log or projection).
        dir: String,
        /// Bytes available to paystate there.
        free: u64,
        /// Bytes it keeps free.
        reserve: u64,
    },
    /// The data directory was created with another partition count.
    #[error("data directory has {found} partitions, {wanted} were asked for")]
    PartitionMismatch {
        /// Stored.
        found: u32,
        /// Asked.
        wanted: u32,
    },
    /// A partition number out of range.
    #[error("no partition {0}")]
    NoSuchPartition(u32),
    /// The appender thread is gone (shut down or crashed).
    #[error("the log appender has stopped")]
    AppenderStopped,
    /// The operation is not available on this kind of log or store.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// A log could not be read from where it lives (another process's admin API).
    #[error("reading the log: {0}")]
    Read(String),
    /// A value could not be encoded.
    #[error("encode: {0}")]
    Encode(String),
}

/// [`StoreError::Io`] for `path`.
pub(crate) fn io(path: &std::path::Path, e: std::io::Error) -> StoreError {
    StoreError::Io { path: path.display().to_string(), source: e }
}

impl From<sled::transaction::TransactionError<StoreError>> for StoreError {
    fn from(e: sled::transaction::TransactionError<StoreError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}
