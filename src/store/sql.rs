//! Helpers the table modules share: integer booleans, and statements over many rows.
//!
//! sqlx's `QueryBuilder` is not used for multi-row statements: over the `Any` driver it
//! writes `?` placeholders, which PostgreSQL rejects. These helpers write `$n`, which
//! both backends accept.

use sqlx::any::{Any, AnyArguments, AnyTypeInfo, AnyValueRef};
use sqlx::error::BoxDynError;
use sqlx::{AnyConnection, Decode, Type};

/// A boolean stored as an integer (0/1) on both backends; decodes with
/// `#[sqlx(try_from = "IntBool")]`.
pub(super) struct IntBool(bool);

impl Type<Any> for IntBool {
    fn type_info() -> AnyTypeInfo {
        <i64 as Type<Any>>::type_info()
    }
    fn compatible(ty: &AnyTypeInfo) -> bool {
        <i64 as Type<Any>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Any> for IntBool {
    fn decode(value: AnyValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self(<i64 as Decode<Any>>::decode(value)? != 0))
    }
}

impl From<IntBool> for bool {
    fn from(b: IntBool) -> bool {
        b.0
    }
}

/// Rows per multi-row statement: well under SQLite's and PostgreSQL's parameter limits.
pub(super) const CHUNK: usize = 256;

pub(super) type Query<'q> = sqlx::query::Query<'q, Any, AnyArguments<'q>>;

/// `($1, $2, $3), ($4, $5, $6), …` for `rows` rows of `cols` values each.
fn values_clause(rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| {
            let cells: Vec<String> = (1..=cols).map(|c| format!("${}", r * cols + c)).collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `$first, $first+1, …` for `n` values.
fn list(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Inserts `rows` in chunks: `{head} VALUES (…), (…) {tail}`, each row's `cols` values
/// bound by `bind` in column order.
pub(super) async fn insert_many<T>(
    conn: &mut AnyConnection,
    head: &str,
    tail: &str,
    cols: usize,
    rows: &[T],
    bind: impl for<'a> Fn(Query<'a>, &'a T) -> Query<'a>,
) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(CHUNK) {
        let sql = format!("{head} VALUES {} {tail}", values_clause(chunk.len(), cols));
        let mut q = sqlx::query(&sql);
        for row in chunk {
            q = bind(q, row);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Runs `{head} IN (…){tail}` over `ids` in chunks and collects the rows. `fixed` values
/// are bound first (as `$1…`), the ids after them.
pub(super) async fn fetch_in<T>(
    conn: &mut AnyConnection,
    head: &str,
    tail: &str,
    fixed: &[&str],
    ids: &[&str],
) -> Result<Vec<T>, sqlx::Error>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
{
    let mut out = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        let sql = format!("{head} IN ({}){tail}", list(fixed.len() + 1, chunk.len()));
        let mut q = sqlx::query_as::<_, T>(&sql);
        for v in fixed.iter().chain(chunk) {
            q = q.bind(*v);
        }
        out.extend(q.fetch_all(&mut *conn).await?);
    }
    Ok(out)
}

/// Runs `{head} IN (…){tail}` over `ids` in chunks, for statements without rows back.
pub(super) async fn execute_in(
    conn: &mut AnyConnection,
    head: &str,
    tail: &str,
    fixed: &[&str],
    ids: &[String],
) -> Result<u64, sqlx::Error> {
    let mut affected = 0;
    for chunk in ids.chunks(CHUNK) {
        let sql = format!("{head} IN ({}){tail}", list(fixed.len() + 1, chunk.len()));
        let mut q = sqlx::query(&sql);
        for v in fixed {
            q = q.bind(*v);
        }
        for id in chunk {
            q = q.bind(id.as_str());
        }
        affected += q.execute(&mut *conn).await?.rows_affected();
    }
    Ok(affected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_from_one_across_rows() {
        assert_eq!(values_clause(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(list(2, 3), "$2, $3, $4");
    }
}
