//! `paystate export`: payments or their transitions as JSON lines, CSV or Parquet, for DuckDB, pandas,
//! spreadsheets.
//!
//! JSON lines of payments are the summary objects of the admin API (maps nested). Otherwise both tables are
//! flat: one typed column per field (text, 64-bit integer, boolean, timestamp in UTC
//! seconds; milliseconds in Parquet), so that readers need no conversion. Maps (metadata, refunds) are one JSON text column. Rows
//! are written in chunks: memory does not grow with the projection.

use anyhow::{bail, Context, Result};
use arrow_array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use paystate_core::{PaymentEvent, PaymentState, PaymentWithHistory};
use paystate_store::Projection;
use serde::Serialize;
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

/// The snake_case name serde gives an enum value.
fn name_of<T: Serialize>(v: Option<T>) -> Option<String> {
    v.and_then(|v| serde_json::to_value(v).ok()).and_then(|v| v.as_str().map(str::to_owned))
}

fn text(v: Option<&str>) -> Cell {
    Cell::Text(v.map(str::to_owned))
}

fn payment_row(s: &PaymentState) -> Result<Vec<Cell>> {
    Ok(vec![
        text(Some(s.key.payment.as_str())),
        text(s.key.account.as_ref().map(|a| a.as_str())),
        Cell::Bool(s.livemode),
        Cell::Text(s.status.map(|x| x.as_str().to_owned())),
        text(Some(s.lifecycle.as_str())),
        Cell::Int(Some(s.amount)),
        text(s.currency.as_deref()),
        Cell::Int(Some(s.amount_received)),
        Cell::Int(Some(s.amount_refunded)),
        Cell::Text(Some(serde_json::to_string(&s.refunds)?)),
        Cell::Bool(s.disputed),
        Cell::Text(name_of(s.dispute_status)),
        text(s.latest_charge.as_deref()),
        Cell::Text(name_of(s.latest_charge_status)),
        Cell::Int(Some(i64::from(s.failure_count))),
        text(s.last_failure_code.as_deref()),
        text(s.customer.as_deref()),
        Cell::Text(Some(serde_json::to_string(&s.metadata)?)),
        Cell::Int(Some(i64::try_from(s.events_applied).unwrap_or(i64::MAX))),
        text(s.last_event.as_ref().map(|e| e.id.as_str())),
        Cell::Time(s.first_event_at),
        Cell::Time(s.last_event_at),
    ])
}

/// One row per applied event (`events`, the payment's history in causal order): the payment is refolded
/// event by event, so each row has the amounts right after its event.
fn transition_rows(s: &PaymentState, events: &[PaymentEvent], rows: &mut Vec<Vec<Cell>>) -> Result<()> {
    let mut p = PaymentWithHistory::new(s.key.clone());
    for ev in events {
        let before = p.state().lifecycle;
        p.apply(ev.clone()).with_context(|| format!("refolding {}", s.key))?;
        let after = p.state();
        rows.push(vec![
            text(Some(s.key.payment.as_str())),
            text(s.key.account.as_ref().map(|a| a.as_str())),
            text(Some(ev.id.as_str())),
            text(Some(&ev.event_type)),
            Cell::Time(Some(ev.created)),
            text(Some(before.as_str())),
            text(Some(after.lifecycle.as_str())),
            Cell::Int(Some(after.amount)),
            Cell::Int(Some(after.amount_received)),
            Cell::Int(Some(after.amount_refunded)),
            text(after.currency.as_deref()),
        ]);
    }
    Ok(())
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

/// `paystate export`: writes `what` of the projection in `format` to `out` (stdout when `None`; Parquet
/// needs a file). Returns the number of rows.
pub fn export(projection: &Projection, what: What, format: Format, out: Option<&Path>) -> Result<u64> {
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
    for p in projection.all_payments() {
        let p = p?;
        // JSON lines of payments are the summary objects the admin API and streams use (maps nested).
        if let (What::Payments, Sink::Jsonl(w)) = (what, &mut sink) {
            serde_json::to_writer(&mut *w, &p.state.summary())?;
            w.write_all(b"\n")?;
            total += 1;
            continue;
        }
        match what {
            What::Payments => rows.push(payment_row(&p.state)?),
            What::Transitions => transition_rows(&p.state, &projection.history(&p.state.key.to_string())?, &mut rows)?,
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
