//! `paystate export`: payments or their transitions as JSON lines, CSV or Parquet, for DuckDB, pandas,
//! spreadsheets.
//!
//! JSON lines of payments are the summary objects of the admin API (maps nested). Otherwise both tables are
//! flat: one typed column per field (text, 64-bit integer, boolean, timestamp in UTC
//! seconds; milliseconds in Parquet), so that readers need no conversion. Maps (metadata, refunds) are one JSON text column. Rows
//! are written in chunks: memory does not grow with the projection.

use crate::admin::Remote;
use anyhow::{bail, Context, Result};
use arrow_array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use paystate_core::Transition;
use paystate_store::Projection;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// Rows buffered before they are written (one Parquet row group, one CSV flush).
const CHUNK: usize = 8192;

/// What to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum What {
    /// One row per payment: its current state.
    Payments,
    /// One row per applied event: the payment's history, lifecycle before and after, amounts after.
    Transitions,
}

/// File format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// JSON lines.
    Jsonl,
    /// CSV with a header row (RFC 4180 quoting; timestamps in RFC 3339).
    Csv,
    /// Apache Parquet (snappy), one row group per 8192 rows.
    Parquet,
}

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Int,
    Bool,
    Time,
}

#[derive(Clone, PartialEq, Debug)]
enum Cell {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(bool),
    Time(Option<i64>),
}

const PAYMENT_COLUMNS: &[(&str, Kind)] = &[
    ("id", Kind::Text),
    ("account", Kind::Text),
    ("livemode", Kind::Bool),
    ("status", Kind::Text),
    ("lifecycle", Kind::Text),
    ("amount", Kind::Int),
    ("currency", Kind::Text),
    ("amount_received", Kind::Int),
    ("amount_refunded", Kind::Int),
    ("refunds", Kind::Text),
    ("disputed", Kind::Bool),
    ("dispute_status", Kind::Text),
    ("latest_charge", Kind::Text),
    ("latest_charge_status", Kind::Text),
    ("failure_count", Kind::Int),
    ("last_failure_code", Kind::Text),
    ("customer", Kind::Text),
    ("metadata", Kind::Text),
    ("events_applied", Kind::Int),
    ("last_event_id", Kind::Text),
    ("first_event_at", Kind::Time),
    ("last_event_at", Kind::Time),
];

const TRANSITION_COLUMNS: &[(&str, Kind)] = &[
    ("payment_id", Kind::Text),
    ("account", Kind::Text),
    ("event_id", Kind::Text),
    ("event_type", Kind::Text),
    ("created", Kind::Time),
    ("lifecycle_before", Kind::Text),
    ("lifecycle_after", Kind::Text),
    ("amount", Kind::Int),
    ("amount_received", Kind::Int),
    ("amount_refunded", Kind::Int),
    ("currency", Kind::Text),
];

/// The cell of column `name` of kind `kind` in a payment's summary object (a map or list is its JSON text).
fn cell(v: &Value, name: &str, kind: Kind) -> Cell {
    let field = &v[name];
    match kind {
        Kind::Text => Cell::Text(match field {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }),
        Kind::Int => Cell::Int(field.as_i64()),
        Kind::Bool => Cell::Bool(field.as_bool().unwrap_or(false)),
        Kind::Time => Cell::Time(field.as_i64()),
    }
}

/// One row of a payment's summary object (`PaymentState::summary`, as the admin API gives it): the payment
/// table's columns are fields of it.
fn payment_row(summary: &Value) -> Vec<Cell> {
    PAYMENT_COLUMNS.iter().map(|(name, kind)| cell(summary, name, *kind)).collect()
}

/// One row per transition of the payment whose summary is `summary` (its history in causal order, each
/// with the amounts right after its event).
fn transition_rows(summary: &Value, transitions: &[Transition], rows: &mut Vec<Vec<Cell>>) {
    let (id, account) = (cell(summary, "id", Kind::Text), cell(summary, "account", Kind::Text));
    let name = |l: paystate_core::Lifecycle| Cell::Text(Some(l.as_str().to_owned()));
    for t in transitions {
        rows.push(vec![
            id.clone(),
            account.clone(),
            Cell::Text(Some(t.event_id.clone())),
            Cell::Text(Some(t.event_type.clone())),
            Cell::Time(Some(t.created)),
            name(t.lifecycle_before),
            name(t.lifecycle),
            Cell::Int(Some(t.amount)),
            Cell::Int(Some(t.amount_received)),
            Cell::Int(Some(t.amount_refunded)),
            Cell::Text(t.currency.clone()),
        ]);
    }
}

/// One payment to export: its summary object and, when transitions are exported, its transitions.
pub struct Item {
    /// `PaymentState::summary` as JSON.
    pub summary: Value,
    /// Its transitions in causal order (empty when payments are exported).
    pub transitions: Vec<Transition>,
}

/// The payments of a local projection as export items (transitions refolded from each one's history when
/// `what` asks for them).
pub fn local_items(projection: &Projection, what: What) -> impl Iterator<Item = Result<Item>> + '_ {
    projection.all_payments().map(move |p| {
        let s = p?.state;
        let transitions = match what {
            What::Payments => Vec::new(),
            What::Transitions => paystate_core::transitions(&s.key, &projection.history(&s.key.to_string())?),
        };
        Ok(Item { summary: serde_json::to_value(s.summary())?, transitions })
    })
}

/// The payments of a running admin API as export items, paged through `GET /v1/payments`; their
/// transitions (when `what` asks for them) from each one's `GET /v1/payments/{id}/history`.
pub fn remote_items(remote: &Remote, what: What) -> impl Iterator<Item = Result<Item>> + '_ {
    remote.payments().map(move |summary| {
        let summary = summary?;
        let transitions = match what {
            What::Payments => Vec::new(),
            What::Transitions => {
                let id = summary["id"].as_str().context("a payment without id")?;
                let mut query = Vec::new();
                query.extend(summary["account"].as_str().map(|a| ("account", a)));
                let view = remote
                    .get(&format!("/v1/payments/{id}/history"), &query)?
                    .map_err(|why| anyhow::anyhow!("{id}: {why} (removed while exporting?)"))?;
                serde_json::from_value(view["history"].clone()).with_context(|| format!("the history of {id}"))?
            }
        };
        Ok(Item { summary, transitions })
    })
}

/// A unix time as RFC 3339 in UTC (the number itself when it is out of range).
pub(crate) fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| t.to_string())
}

/// A table writer in one of the formats.
enum Sink<'w> {
    Jsonl(Box<dyn Write + 'w>),
    Csv(csv::Writer<Box<dyn Write + 'w>>),
    Parquet(parquet::arrow::ArrowWriter<std::fs::File>),
}

impl Sink<'_> {
    fn write(&mut self, columns: &[(&str, Kind)], rows: &[Vec<Cell>]) -> Result<()> {
        match self {
            Sink::Jsonl(w) => {
                for row in rows {
                    let mut obj = serde_json::Map::new();
                    for ((name, _), cell) in columns.iter().zip(row) {
                        let v = match cell {
                            Cell::Text(s) => serde_json::json!(s),
                            Cell::Int(i) => serde_json::json!(i),
                            Cell::Bool(b) => serde_json::json!(b),
                            Cell::Time(t) => serde_json::json!(t.map(rfc3339)),
                        };
                        obj.insert((*name).to_owned(), v);
                    }
                    serde_json::to_writer(&mut *w, &obj)?;
                    w.write_all(b"\n")?;
                }
            }
            Sink::Csv(w) => {
                for row in rows {
                    w.write_record(row.iter().map(|c| match c {
                        Cell::Text(s) => s.clone().unwrap_or_default(),
                        Cell::Int(i) => i.map(|i| i.to_string()).unwrap_or_default(),
                        Cell::Bool(b) => b.to_string(),
                        Cell::Time(t) => t.map(rfc3339).unwrap_or_default(),
                    }))?;
                }
            }
            Sink::Parquet(w) => w.write(&record_batch(columns, rows)?)?,
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        match self {
            Sink::Jsonl(mut w) => w.flush()?,
            Sink::Csv(mut w) => w.flush()?,
            Sink::Parquet(w) => {
                w.close()?;
            }
        }
        Ok(())
    }
}

fn schema(columns: &[(&str, Kind)]) -> Arc<Schema> {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, kind)| {
                let t = match kind {
                    Kind::Text => DataType::Utf8,
                    Kind::Int => DataType::Int64,
                    Kind::Bool => DataType::Boolean,
                    // Parquet has no second unit: milliseconds, so that readers see a timestamp column.
                    Kind::Time => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                };
                Field::new(*name, t, !matches!(kind, Kind::Bool))
            })
            .collect::<Vec<_>>(),
    ))
}

fn record_batch(columns: &[(&str, Kind)], rows: &[Vec<Cell>]) -> Result<RecordBatch> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for (i, (name, kind)) in columns.iter().enumerate() {
        let cells = rows.iter().map(|r| r.get(i).with_context(|| format!("row without column {name}")));
        let array: ArrayRef = match kind {
            Kind::Text => Arc::new(
                cells
                    .map(|c| match c? {
                        Cell::Text(s) => Ok(s.clone()),
                        other => bail!("{name}: {other:?} is not text"),
                    })
                    .collect::<Result<StringArray>>()?,
            ),
            Kind::Int => Arc::new(
                cells
                    .map(|c| match c? {
                        Cell::Int(v) => Ok(*v),
                        other => bail!("{name}: {other:?} is not an integer"),
                    })
                    .collect::<Result<Int64Array>>()?,
            ),
            Kind::Bool => Arc::new(
                cells
                    .map(|c| match c? {
                        Cell::Bool(b) => Ok(Some(*b)),
                        other => bail!("{name}: {other:?} is not a boolean"),
                    })
                    .collect::<Result<BooleanArray>>()?,
            ),
            Kind::Time => Arc::new(
                cells
                    .map(|c| match c? {
                        Cell::Time(t) => Ok(t.map(|t| t.saturating_mul(1000))),
                        other => bail!("{name}: {other:?} is not a time"),
                    })
                    .collect::<Result<TimestampMillisecondArray>>()?
                    .with_timezone("UTC"),
            ),
        };
        arrays.push(array);
    }
    Ok(RecordBatch::try_new(schema(columns), arrays)?)
}

/// `paystate export`: writes `what` of `items` (in order) in `format` to `out` (stdout when `None`; Parquet
/// needs a file). Returns the number of rows.
pub fn export(
    items: impl Iterator<Item = Result<Item>>,
    what: What,
    format: Format,
    out: Option<&Path>,
) -> Result<u64> {
    let columns = match what {
        What::Payments => PAYMENT_COLUMNS,
        What::Transitions => TRANSITION_COLUMNS,
    };
    let create = |p: &Path| std::fs::File::create(p).with_context(|| format!("creating {}", p.display()));
    let writer = |out: Option<&Path>| -> Result<Box<dyn Write>> {
        Ok(match out {
            Some(p) => Box::new(std::io::BufWriter::new(create(p)?)),
            None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
        })
    };
    let mut sink = match format {
        Format::Jsonl => Sink::Jsonl(writer(out)?),
        Format::Csv => {
            let mut w = csv::Writer::from_writer(writer(out)?);
            w.write_record(columns.iter().map(|(n, _)| *n))?;
            Sink::Csv(w)
        }
        Format::Parquet => {
            let Some(path) = out else { bail!("--format parquet needs --out FILE") };
            let props = parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::SNAPPY)
                .build();
            Sink::Parquet(parquet::arrow::ArrowWriter::try_new(create(path)?, schema(columns), Some(props))?)
        }
    };
    let mut rows: Vec<Vec<Cell>> = Vec::with_capacity(CHUNK);
    let mut total = 0u64;
    for item in items {
        let item = item?;
        // JSON lines of payments are the summary objects the admin API and streams use (maps nested).
        if let (What::Payments, Sink::Jsonl(w)) = (what, &mut sink) {
            serde_json::to_writer(&mut *w, &item.summary)?;
            w.write_all(b"\n")?;
            total += 1;
            continue;
        }
        match what {
            What::Payments => rows.push(payment_row(&item.summary)),
            What::Transitions => transition_rows(&item.summary, &item.transitions, &mut rows),
        }
        if rows.len() >= CHUNK {
            sink.write(columns, &rows)?;
            total += rows.len() as u64;
            rows.clear();
        }
    }
    // An empty Parquet file still gets its schema (one empty batch).
    if !rows.is_empty() || (total == 0 && matches!(sink, Sink::Parquet(_))) {
        sink.write(columns, &rows)?;
        total += rows.len() as u64;
    }
    sink.finish()?;
    Ok(total)
}
