//! Running prepared statements: single requests, paged reads, lightweight
//! transactions and batches, with driver errors mapped to storage errors.
//!
//! Every call checks that the bound tuple has exactly as many values as the
//! statement has markers before anything is sent.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::TryStreamExt;
use scylla::client::session::Session;
use scylla::deserialize::row::DeserializeRow;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};

use super::binds::{Arity, Bound};
use super::cqlerr::{classify_pager, classify_row, map_execution, map_other, FailureClass};
use super::statements::{Stmt, StmtKind};
use crate::error::{StorageError, StorageResult};

/// Largest estimated payload of one batch; bigger groups are split. Well
/// under ScyllaDB's default batch size warning (128 KiB) and failure
/// (1 MiB) thresholds.
pub const BATCH_MAX_BYTES: usize = 96 * 1024;
/// Largest number of statements in one batch.
pub const BATCH_MAX_STATEMENTS: usize = 256;

/// The prepared form of every [`Stmt`], indexed by [`Stmt::index`].
pub struct Prepared {
    stmts: Vec<PreparedStatement>,
}

impl Prepared {
    /// Wraps statements prepared in [`Stmt::ALL`] order.
    pub fn new(stmts: Vec<PreparedStatement>) -> StorageResult<Self> {
        if stmts.len() != Stmt::ALL.len() {
            return Err(StorageError::Internal(format!(
                "prepared {} statements, expected {}",
                stmts.len(),
                Stmt::ALL.len()
            )));
        }
        Ok(Prepared { stmts })
    }

    fn get(&self, s: Stmt) -> StorageResult<&PreparedStatement> {
        self.stmts
            .get(s.index())
            .ok_or_else(|| StorageError::Internal(format!("{s:?} is not prepared")))
    }
}

/// The result of a lightweight transaction: whether it applied, and the
/// columns the server returned with it (the existing values when it did not
/// apply; ScyllaDB returns the old row in both cases).
#[derive(Debug, Clone, PartialEq)]
pub struct LwtRow {
    /// The `[applied]` column.
    pub applied: bool,
    /// The other returned columns by name (`None` for null).
    pub columns: HashMap<String, Option<CqlValue>>,
}

impl LwtRow {
    /// A returned bigint column, if present and not null.
    pub fn bigint(&self, name: &str) -> Option<i64> {
        match self.columns.get(name) {
            Some(Some(CqlValue::BigInt(v))) => Some(*v),
            _ => None,
        }
    }

    /// A returned int column, if present and not null.
    pub fn int(&self, name: &str) -> Option<i32> {
        match self.columns.get(name) {
            Some(Some(CqlValue::Int(v))) => Some(*v),
            _ => None,
        }
    }

    /// A returned text column, if present and not null.
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.columns.get(name) {
            Some(Some(CqlValue::Text(v) | CqlValue::Ascii(v))) => Some(v.as_str()),
            _ => None,
        }
    }
}

/// Builds the [`LwtRow`] of an LWT's result columns.
pub fn lwt_row(names: &[String], row: Row) -> StorageResult<LwtRow> {
    let mut applied = None;
    let mut columns = HashMap::new();
    for (name, value) in names.iter().zip(row.columns) {
        if name == "[applied]" {
            applied = match value {
                Some(CqlValue::Boolean(b)) => Some(b),
                _ => None,
            };
        } else {
            columns.insert(name.clone(), value);
        }
    }
    let applied = applied.ok_or_else(|| {
        StorageError::Internal("lightweight transaction result without [applied]".into())
    })?;
    Ok(LwtRow { applied, columns })
}

/// A group of plain writes sent as one batch (split by size when large).
pub struct WriteBatch<'a> {
    kind: BatchType,
    stmts: Vec<Stmt>,
    values: Vec<Box<dyn SerializeRow + Send + Sync + 'a>>,
    bytes: Vec<usize>,
}

impl<'a> WriteBatch<'a> {
    /// An unlogged batch: for statements of one partition (applied
    /// atomically and in isolation by its replicas, one round trip).
    pub fn unlogged() -> Self {
        Self::new(BatchType::Unlogged)
    }

    /// A logged batch: for rows of several partitions that must all be
    /// written eventually (the batchlog replays them after a failure).
    pub fn logged() -> Self {
        Self::new(BatchType::Logged)
    }

    fn new(kind: BatchType) -> Self {
        WriteBatch {
            kind,
            stmts: Vec::new(),
            values: Vec::new(),
            bytes: Vec::new(),
        }
    }

    /// Adds a plain write with its estimated payload size in bytes.
    pub fn push<V>(&mut self, b: Bound<V>, approx_bytes: usize) -> StorageResult<()>
    where
        V: SerializeRow + Arity + Send + Sync + 'a,
    {
        check_arity(&b)?;
        if b.stmt.kind() != StmtKind::Write {
            return Err(StorageError::Internal(format!(
                "{:?} is not a plain write and cannot be batched",
                b.stmt
            )));
        }
        self.stmts.push(b.stmt);
        self.values.push(Box::new(b.values));
        self.bytes.push(approx_bytes.max(1));
        Ok(())
    }

    /// Number of statements.
    pub fn len(&self) -> usize {
        self.stmts.len()
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.stmts.is_empty()
    }
}

/// Splits `sizes` into consecutive chunks of at most `max_bytes` (a single
/// larger item forms its own chunk) and `max_items`; returns chunk lengths.
pub fn chunk_lengths(sizes: &[usize], max_bytes: usize, max_items: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut n, mut bytes) = (0usize, 0usize);
    for &s in sizes {
        if n > 0 && (bytes + s > max_bytes || n >= max_items) {
            out.push(n);
            n = 0;
            bytes = 0;
        }
        n += 1;
        bytes += s;
    }
    if n > 0 {
        out.push(n);
    }
    out
}

fn check_arity<V: Arity>(b: &Bound<V>) -> StorageResult<()> {
    if b.arity() != b.stmt.markers() {
        return Err(StorageError::Internal(format!(
            "{:?} binds {} values for {} markers",
            b.stmt,
            b.arity(),
            b.stmt.markers()
        )));
    }
    Ok(())
}

/// Runs statements on a session.
#[derive(Clone)]
pub struct Executor {
    session: Arc<Session>,
    prepared: Arc<Prepared>,
}

impl Executor {
    /// An executor over a connected session and its prepared statements.
    pub fn new(session: Arc<Session>, prepared: Prepared) -> Self {
        Executor {
            session,
            prepared: Arc::new(prepared),
        }
    }

    /// Runs one statement, unpaged (writes, and reads of one row).
    pub async fn execute<V>(&self, b: &Bound<V>) -> StorageResult<QueryResult>
    where
        V: SerializeRow + Arity,
    {
        check_arity(b)?;
        let p = self.prepared.get(b.stmt)?;
        self.session
            .execute_unpaged(p, &b.values)
            .await
            .map_err(|e| map_execution(format!("{:?}", b.stmt), &e))
    }

    /// Runs a read addressed by full primary key; its one row, if any.
    pub async fn one<V, R>(&self, b: &Bound<V>) -> StorageResult<Option<R>>
    where
        V: SerializeRow + Arity,
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let res = self.execute(b).await?;
        let rows = res
            .into_rows_result()
            .map_err(|e| map_other(format!("{:?}", b.stmt), FailureClass::Internal, e))?;
        rows.maybe_first_row::<R>()
            .map_err(|e| map_other(format!("{:?}", b.stmt), FailureClass::Internal, e))
    }

    /// Runs a read of many rows, following the driver's paging.
    pub async fn all<V, R>(&self, b: &Bound<V>) -> StorageResult<Vec<R>>
    where
        V: SerializeRow + Arity,
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        check_arity(b)?;
        let what = || format!("{:?}", b.stmt);
        let p = self.prepared.get(b.stmt)?.clone();
        let pager = self
            .session
            .execute_iter(p, &b.values)
            .await
            .map_err(|e| map_other(what(), classify_pager(&e), e))?;
        let stream = pager
            .rows_stream::<R>()
            .map_err(|e| map_other(what(), FailureClass::Internal, e))?;
        stream
            .try_collect::<Vec<R>>()
            .await
            .map_err(|e| map_other(what(), classify_row(&e), e))
    }

    /// Runs a lightweight transaction and decodes its outcome.
    pub async fn lwt<V>(&self, b: &Bound<V>) -> StorageResult<LwtRow>
    where
        V: SerializeRow + Arity,
    {
        if b.stmt.kind() != StmtKind::Lwt {
            return Err(StorageError::Internal(format!(
                "{:?} is not a lightweight transaction",
                b.stmt
            )));
        }
        let what = || format!("{:?}", b.stmt);
        let res = self.execute(b).await?;
        let rows = res
            .into_rows_result()
            .map_err(|e| map_other(what(), FailureClass::Internal, e))?;
        let names: Vec<String> = rows
            .column_specs()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        let row = rows
            .maybe_first_row::<Row>()
            .map_err(|e| map_other(what(), FailureClass::Internal, e))?
            .ok_or_else(|| StorageError::Internal(format!("{}: no result row", what())))?;
        lwt_row(&names, row)
    }

    /// Runs a group of plain writes as one or more batches (split so that
    /// none exceeds [`BATCH_MAX_BYTES`] or [`BATCH_MAX_STATEMENTS`]), all
    /// concurrently. Idempotent, so the driver may retry each.
    pub async fn write_batch(&self, batch: WriteBatch<'_>) -> StorageResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let WriteBatch {
            kind,
            stmts,
            values,
            bytes,
        } = batch;
        let lengths = chunk_lengths(&bytes, BATCH_MAX_BYTES, BATCH_MAX_STATEMENTS);
        let mut values = values.into_iter();
        let mut start = 0;
        let mut sends = Vec::with_capacity(lengths.len());
        for len in lengths {
            let mut b = Batch::new(kind);
            // Plain writes only (checked on push): safe to retry.
            b.set_is_idempotent(true);
            let mut chunk_values = Vec::with_capacity(len);
            for s in stmts.iter().skip(start).take(len) {
                b.append_statement(self.prepared.get(*s)?.clone());
                if let Some(v) = values.next() {
                    chunk_values.push(v);
                }
            }
            start += len;
            let session = Arc::clone(&self.session);
            sends.push(async move {
                session
                    .batch(&b, chunk_values)
                    .await
                    .map_err(|e| map_execution("batch", &e))
            });
        }
        futures_util::future::try_join_all(sends).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_bytes_and_counts() {
        assert_eq!(chunk_lengths(&[], 10, 3), Vec::<usize>::new());
        assert_eq!(chunk_lengths(&[4, 4, 4], 10, 10), vec![2, 1]);
        assert_eq!(chunk_lengths(&[1, 1, 1, 1, 1], 100, 2), vec![2, 2, 1]);
        assert_eq!(chunk_lengths(&[50, 1, 1], 10, 10), vec![1, 2]);
        assert_eq!(chunk_lengths(&[10, 10], 10, 10), vec![1, 1]);
        let sizes = vec![400usize; 1000];
        let lens = chunk_lengths(&sizes, BATCH_MAX_BYTES, BATCH_MAX_STATEMENTS);
        assert_eq!(lens.iter().sum::<usize>(), 1000);
        assert!(lens.iter().all(|n| *n * 400 <= BATCH_MAX_BYTES));
    }

    #[test]
    fn lwt_rows_decode_by_name() {
        let names = vec![
            "[applied]".to_string(),
            "last_seq".to_string(),
            "room_id".to_string(),
        ];
        let row = Row {
            columns: vec![
                Some(CqlValue::Boolean(false)),
                Some(CqlValue::BigInt(42)),
                Some(CqlValue::Text("r".into())),
            ],
        };
        let r = lwt_row(&names, row).expect("decodes");
        assert!(!r.applied);
        assert_eq!(r.bigint("last_seq"), Some(42));
        assert_eq!(r.text("room_id"), Some("r"));
        assert_eq!(r.bigint("missing"), None);
        let applied_only = lwt_row(
            &["[applied]".to_string()],
            Row {
                columns: vec![Some(CqlValue::Boolean(true))],
            },
        )
        .expect("decodes");
        assert!(applied_only.applied && applied_only.columns.is_empty());
        assert!(lwt_row(&[], Row { columns: vec![] }).is_err());
    }
}
