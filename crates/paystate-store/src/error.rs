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

impl From<sled::transaction::TransactionError<StoreError>> for StoreError {
    fn from(e: sled::transaction::TransactionError<StoreError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}
