//! Postgres' `information_schema` (`tables`, `columns`, `schemata`, `views`,
//! and a table's key as `table_constraints` and `key_column_usage`)
//! over Sluice's catalog, for the tools that read it instead of `pg_catalog`
//! (Grafana's query builder, Metabase's sync, SQLAlchemy, DBeaver).
//!
//! It replaces DataFusion's own information_schema, which numbers columns
//! from 0 and names Arrow types (`Utf8`, `Timestamp(ms)`). Here columns count
//! from 1 and types are the Postgres types the wire protocol reports (the same
//! ones `pg_attribute` and `format_type` give): `data_type` is the SQL name
//! (`integer`, `timestamp without time zone`, `ARRAY`), `udt_name` the type's
//! internal name (`int4`). Streams are views and tables are tables, as in
//! `pg_catalog`. Only user relations are listed.

use super::pg_catalog::{
    column_type, definition, format_type, int4, null, relkind, text, type_info, Row, Snapshot,
    TableDef, Ty::*, DATABASE,
};
use super::pg_keys::primary_keys;

const TABLES_COLUMNS: &[(&str, super::pg_catalog::Ty)] = &[
    ("table_catalog", Text),
    ("table_schema", Text),
    ("table_name", Text),
    ("table_type", Text),
    ("self_referencing_column_name", Text),
    ("reference_generation", Text),
    ("user_defined_type_catalog", Text),
    ("user_defined_type_schema", Text),
    ("user_defined_type_name", Text),
    ("is_insertable_into", Text),
    ("is_typed", Text),
    ("commit_action", Text),
];

const COLUMNS_COLUMNS: &[(&str, super::pg_catalog::Ty)] = &[
    ("table_catalog", Text),
    ("table_schema", Text),
    ("table_name", Text),
    ("column_name", Text),
    ("ordinal_position", I32),
    ("column_default", Text),
    ("is_nullable", Text),
    ("data_type", Text),
    ("character_maximum_length", I32),
    ("character_octet_length", I32),
    ("numeric_precision", I32),
    ("numeric_precision_radix", I32),
    ("numeric_scale", I32),
    ("datetime_precision", I32),
    ("interval_type", Text),
    ("udt_catalog", Text),
    ("udt_schema", Text),
    ("udt_name", Text),
    ("is_identity", Text),
    ("is_generated", Text),
    ("is_updatable", Text),
];

const SCHEMATA_COLUMNS: &[(&str, super::pg_catalog::Ty)] = &[
    ("catalog_name", Text),
    ("schema_name", Text),
    ("schema_owner", Text),
    ("default_character_set_catalog", Text),
    ("default_character_set_schema", Text),
    ("default_character_set_name", Text),
    ("sql_path", Text),
];

const VIEWS_COLUMNS: &[(&str, super::pg_catalog::Ty)] = &[
    ("table_catalog", Text),
    ("table_schema", Text),
    ("table_name", Text),
    ("view_definition", Text),
    ("check_option", Text),
    ("is_updatable", Text),
    ("is_insertable_into", Text),
];

const TABLE_CONSTRAINTS_COLUMNS: &[(&str, super::pg_catalog::Ty)] = &[
    ("constraint_catalog", Text),
    ("constraint_schema", Text),
    ("constraint_name", Text),
    ("table_catalog", Text),
    ("table_schema", Text),
    ("table_name", Text),
    ("constraint_type", Text),
    ("is_deferrable", Text),
    ("initially_deferred", Text),
    ("enforced", Text),
    ("nulls_distinct", Text),
];

const KEY_COLUMN_USAGE_COLUMNS: &[(&str, super::pg_catalog::Ty)] = &[
    ("constraint_catalog", Text),
    ("constraint_schema", Text),
    ("constraint_name", Text),
    ("table_catalog", Text),
    ("table_schema", Text),
    ("table_name", Text),
    ("column_name", Text),
    ("ordinal_position", I32),
    ("position_in_unique_constraint", I32),
];

pub(super) const TABLES: &[TableDef] = &[
    TableDef {
        name: "tables",
        oid: 13_001,
        columns: TABLES_COLUMNS,
        rows: Some(tables_rows),
    },
    TableDef {
        name: "columns",
        oid: 13_002,
        columns: COLUMNS_COLUMNS,
        rows: Some(columns_rows),
    },
    TableDef {
        name: "schemata",
        oid: 13_003,
        columns: SCHEMATA_COLUMNS,
        rows: Some(schemata_rows),
    },
    TableDef {
        name: "views",
        oid: 13_004,
        columns: VIEWS_COLUMNS,
        rows: Some(views_rows),
    },
    TableDef {
        name: "table_constraints",
        oid: 13_005,
        columns: TABLE_CONSTRAINTS_COLUMNS,
        rows: Some(table_constraints_rows),
    },
    TableDef {
        name: "key_column_usage",
        oid: 13_006,
        columns: KEY_COLUMN_USAGE_COLUMNS,
        rows: Some(key_column_usage_rows),
    },
];

fn table_constraints_rows(s: &Snapshot) -> Vec<Row> {
    primary_keys(s)
        .map(|k| {
            vec![
                text(DATABASE),
                text("public"),
                text(k.name()),
                text(DATABASE),
                text("public"),
                text(&k.table.name),
                text("PRIMARY KEY"),
                text("NO"),
                text("NO"),
                text("YES"),
                null(),
            ]
        })
        .collect()
}

fn key_column_usage_rows(s: &Snapshot) -> Vec<Row> {
    let mut rows = Vec::new();
    for k in primary_keys(s) {
        for (i, column) in k.column_names().into_iter().enumerate() {
            rows.push(vec![
                text(DATABASE),
                text("public"),
                text(k.name()),
                text(DATABASE),
                text("public"),
                text(&k.table.name),
                text(column),
                int4(i32::try_from(i + 1).unwrap_or(i32::MAX)),
                null(),
            ]);
        }
    }
    rows
}

fn yes_no(v: bool) -> &'static str {
    if v {
        "YES"
    } else {
        "NO"
    }
}

fn tables_rows(s: &Snapshot) -> Vec<Row> {
    s.relations
        .iter()
        .map(|r| {
            let table_type = if relkind(r) == "v" {
                "VIEW"
            } else {
                "BASE TABLE"
            };
            vec![
                text(DATABASE),
                text("public"),
                text(&r.name),
                text(table_type),
                null(),
                null(),
                null(),
                null(),
                null(),
                // INSERT INTO works on streams and tables alike.
                text("YES"),
                text("NO"),
                null(),
            ]
        })
        .collect()
}

fn columns_rows(s: &Snapshot) -> Vec<Row> {
    let mut rows = Vec::new();
    for r in &s.relations {
        let schema = r.schema();
        for (i, f) in schema.fields().iter().enumerate() {
            let (type_oid, typmod) = column_type(f.data_type());
            let info = type_info(type_oid);
            let udt_name = info.map_or("text", |t| t.name);
            let is_array = udt_name.starts_with('_');
            let data_type = if is_array {
                "ARRAY".to_string()
            } else {
                format_type(type_oid, None)
            };
            let (precision, radix, scale) = match type_oid {
                21 => (Some(16), Some(2), Some(0)),
                23 => (Some(32), Some(2), Some(0)),
                20 => (Some(64), Some(2), Some(0)),
                700 => (Some(24), Some(2), None),
                701 => (Some(53), Some(2), None),
                1700 if typmod >= 4 => (
                    Some((typmod - 4) >> 16),
                    Some(10),
                    Some((typmod - 4) & 0xffff),
                ),
                1700 => (None, Some(10), None),
                _ => (None, None, None),
            };
            let datetime_precision = match type_oid {
                // Timestamps and times travel in microseconds.
                1082 => Some(0),
                1083 | 1114 | 1184 => Some(6),
                _ => None,
            };
            let opt = |v: Option<i32>| v.map_or_else(null, int4);
            rows.push(vec![
                text(DATABASE),
                text("public"),
                text(&r.name),
                text(f.name()),
                int4(i32::try_from(i + 1).unwrap_or(i32::MAX)),
                null(),
                text(yes_no(f.is_nullable())),
                text(data_type),
                null(),
                // text: at most 1 GB, as Postgres reports it.
                if type_oid == 25 {
                    int4(1_073_741_824)
                } else {
                    null()
                },
                opt(precision),
                opt(radix),
                opt(scale),
                opt(datetime_precision),
                null(),
                text(DATABASE),
                text("pg_catalog"),
                text(udt_name),
                text("NO"),
                text("NEVER"),
                text("YES"),
            ]);
        }
    }
    rows
}

fn schemata_rows(_: &Snapshot) -> Vec<Row> {
    ["public", "pg_catalog", "information_schema"]
        .into_iter()
        .map(|name| {
            vec![
                text(DATABASE),
                text(name),
                text(super::pg_catalog::ROLE),
                null(),
                null(),
                null(),
                null(),
            ]
        })
        .collect()
}

fn views_rows(s: &Snapshot) -> Vec<Row> {
    s.relations
        .iter()
        .filter(|r| relkind(r) == "v")
        .map(|r| {
            vec![
                text(DATABASE),
                text("public"),
                text(&r.name),
                text(definition(r)),
                text("NONE"),
                text("NO"),
                text("YES"),
            ]
        })
        .collect()
}
