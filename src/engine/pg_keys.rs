//! A table's key as Postgres shows a primary key: a constraint `<table>_pkey`
//! (`pg_constraint`) backed by a unique btree index of the same name
//! (`pg_index`, and a `pg_class` row of kind `i`). pgJDBC's `getPrimaryKeys`
//! and `getIndexInfo`, SQLAlchemy's `get_pk_constraint` and psql's `\d` read
//! them. A stream's KEY columns are no constraint (a stream holds many
//! records per key), so only tables have one.

use std::sync::Arc;

use arrow::array::ListArray;
use arrow::datatypes::Int16Type;
use datafusion::scalar::ScalarValue;

use super::pg_catalog::{
    boolean, class_row, int2, int4, null, oid, relation_oid, text, Row, Snapshot, NS_PUBLIC,
};
use crate::catalog::Relation;

const AM_BTREE: u32 = 403;

/// A table with key columns, and their attribute numbers (from 1).
pub(super) struct PrimaryKey<'a> {
    pub table: &'a Relation,
    attnums: Vec<i16>,
}

impl PrimaryKey<'_> {
    pub fn name(&self) -> String {
        format!("{}_pkey", self.table.name)
    }

    fn index_oid(&self) -> u32 {
        relation_oid(&self.name())
    }

    fn constraint_oid(&self) -> u32 {
        relation_oid(&format!("{} constraint", self.name()))
    }

    pub fn column_names(&self) -> Vec<&str> {
        self.table
            .columns
            .iter()
            .filter(|c| c.key)
            .map(|c| c.name.as_str())
            .collect()
    }
}

/// The primary keys: pg_constraint, pg_index and information_schema all
/// list these.
pub(super) fn primary_keys(s: &Snapshot) -> impl Iterator<Item = PrimaryKey<'_>> {
    s.relations.iter().filter(|r| r.is_table()).filter_map(|r| {
        let attnums: Vec<i16> = r
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.key)
            .map(|(i, _)| i16::try_from(i + 1).unwrap_or(i16::MAX))
            .collect();
        (!attnums.is_empty()).then_some(PrimaryKey { table: r, attnums })
    })
}

fn int2_list(values: &[i16]) -> ScalarValue {
    let list = ListArray::from_iter_primitive::<Int16Type, _, _>(vec![Some(
        values.iter().map(|v| Some(*v)).collect::<Vec<_>>(),
    )]);
    ScalarValue::List(Arc::new(list))
}

/// `pg_class` rows of the key indexes.
pub(super) fn index_class_rows(s: &Snapshot) -> Vec<Row> {
    primary_keys(s)
        .map(|k| {
            class_row(
                k.index_oid(),
                &k.name(),
                NS_PUBLIC,
                "i",
                k.attnums.len(),
                AM_BTREE,
            )
        })
        .collect()
}

pub(super) fn index_rows(s: &Snapshot) -> Vec<Row> {
    primary_keys(s)
        .map(|k| {
            let n = k.attnums.len();
            let count = int2(i16::try_from(n).unwrap_or(i16::MAX));
            vec![
                oid(k.index_oid()),
                oid(relation_oid(&k.table.name)),
                count.clone(),
                count,
                boolean(true),  // indisunique
                boolean(false), // indnullsnotdistinct
                boolean(true),  // indisprimary
                boolean(false), // indisexclusion
                boolean(true),  // indimmediate
                boolean(false), // indisclustered
                boolean(true),  // indisvalid
                boolean(false), // indcheckxmin
                boolean(true),  // indisready
                boolean(true),  // indislive
                boolean(false), // indisreplident
                int2_list(&k.attnums),
                null(),
                null(),
                int2_list(&vec![0; n]),
                null(),
                null(),
            ]
        })
        .collect()
}

pub(super) fn constraint_rows(s: &Snapshot) -> Vec<Row> {
    primary_keys(s)
        .map(|k| {
            vec![
                oid(k.constraint_oid()),
                text(k.name()),
                oid(NS_PUBLIC),
                text("p"),
                boolean(false), // condeferrable
                boolean(false), // condeferred
                boolean(true),  // convalidated
                oid(relation_oid(&k.table.name)),
                oid(0),
                oid(k.index_oid()),
                oid(0),
                oid(0),
                text(" "),
                text(" "),
                text(" "),
                boolean(true), // conislocal
                int4(0),
                boolean(true), // connoinherit
                int2_list(&k.attnums),
                null(),
                null(),
                null(),
                null(),
                null(),
                null(),
                null(),
            ]
        })
        .collect()
}

/// `pg_get_indexdef(index, column, pretty)`: the CREATE INDEX statement, or
/// with a column number (from 1) that column's name.
pub(super) fn indexdef(s: &Snapshot, index: u32, column: Option<i64>) -> Option<String> {
    let key = primary_keys(s).find(|k| k.index_oid() == index)?;
    let names = key.column_names();
    match column {
        Some(c) if c > 0 => names
            .get(usize::try_from(c - 1).ok()?)
            .map(|n| n.to_string()),
        _ => Some(format!(
            "CREATE UNIQUE INDEX {} ON public.{} USING btree ({})",
            key.name(),
            key.table.name,
            names.join(", ")
        )),
    }
}

/// `pg_get_constraintdef(constraint)`: `PRIMARY KEY (a, b)`.
pub(super) fn constraintdef(s: &Snapshot, constraint: u32) -> Option<String> {
    let key = primary_keys(s).find(|k| k.constraint_oid() == constraint)?;
    Some(format!("PRIMARY KEY ({})", key.column_names().join(", ")))
}
