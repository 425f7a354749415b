//! A Postgres `pg_catalog` over Sluice's own catalog, so that psql's meta-commands
//! (`\d`, `\dt`, `\dv`, `\d name`, `\l`, `\dn`, `\du` ...) and the catalog queries
//! drivers and dashboards send are answered by DataFusion like any pull query.
//!
//! Three parts:
//!
//! 1. **Tables.** A `pg_catalog` schema is registered in the engine's DataFusion
//!    catalog (`sluice`). Every table is a [`TableProvider`] whose scan builds its
//!    rows from the live catalog, so a stream created a moment ago is listed at
//!    once. Catalog objects Sluice does not have (indexes, constraints, policies,
//!    triggers, publications, inheritance ...) are tables with the Postgres columns
//!    and no rows.
//! 2. **Functions** those queries call (`pg_get_userbyid`, `format_type`,
//!    `pg_table_is_visible`, `pg_get_viewdef`, `current_setting`, `version()` ...),
//!    registered as DataFusion scalar UDFs under their unqualified names.
//! 3. **A rewrite** of the parsed query ([`Engine::rewrite_pg_catalog_query`]),
//!    applied only to queries that touch `pg_catalog`: it turns the Postgres-only
//!    syntax psql sends into what DataFusion plans, at the AST level (never by
//!    matching query text). See [`CatalogRewrite`] for the list.
//!
//! How Sluice objects appear: a **stream** is a view (`relkind 'v'`: each read
//! scans its topic, nothing is stored), a **table** is a table (`'r'`: its rows are
//! materialized), and a table created with `CREATE MATERIALIZED VIEW` is a
//! materialized view (`'m'`). So `\dt` lists tables, `\dv` streams, `\dm`
//! materialized views and `\d` all of them. Everything lives in schema `public`
//! of database `sluice`, owned by role `sluice`. Column types are the Postgres
//! types the wire protocol reports for the column (a `VARCHAR` column is `text`).

use std::collections::HashSet;
use std::fmt;
use std::ops::ControlFlow;
use std::sync::{Arc, Weak};

use arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, ListArray, ListBuilder, StringArray, StringBuilder,
    UInt32Array,
};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider, Session as DfSession};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr as DfExpr, ScalarUDF, Signature, TypeSignature, Volatility};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::scalar::ScalarValue;
use sqlparser::ast::{
    self, BinaryOperator, CastKind, DataType as SqlType, Expr, FunctionArg, FunctionArgExpr,
    FunctionArgumentList, FunctionArguments, GroupByExpr, Ident, JoinOperator, ObjectName,
    ObjectNamePart, Query, Select, SelectItem, SetExpr, SetOperator, TableFactor, TableWithJoins,
    Value, Visit, VisitMut, Visitor, VisitorMut,
};

use super::Engine;
use crate::catalog::Relation;
use crate::error::{Result, SluiceError};

/// The database every client is connected to.
pub(crate) const DATABASE: &str = "sluice";
/// The one role: owner of everything.
pub(super) const ROLE: &str = "sluice";
const ROLE_OID: u32 = 10;
const DATABASE_OID: u32 = 5;
const NS_PG_CATALOG: u32 = 11;
pub(super) const NS_PUBLIC: u32 = 2200;
const NS_INFORMATION_SCHEMA: u32 = 13_000;
const AM_HEAP: u32 = 2;
const TABLESPACE_DEFAULT: u32 = 1663;
/// First OID Postgres hands out to user objects.
const FIRST_USER_OID: u32 = 16_384;

// ---------------------------------------------------------------------------
// Column types of the catalog tables
// ---------------------------------------------------------------------------

/// Postgres catalog column types, as Arrow types.
#[derive(Clone, Copy, Debug)]
pub(super) enum Ty {
    /// `oid`, `regproc`, `xid`: unsigned 32-bit.
    Oid,
    /// `name`, `text`, `pg_node_tree`, timestamps shown as text.
    Text,
    /// Postgres' one-byte `"char"` (pg_type's kinds): text to Sluice,
    /// described as `"char"` on the wire, which asyncpg reads as bytes.
    Char,
    Bool,
    I16,
    I32,
    I64,
    F32,
    /// `text[]`, `aclitem[]`, `"char"[]`.
    TextArr,
    /// `oid[]`, `oidvector`.
    OidArr,
    /// `int2[]`, `int2vector`.
    I16Arr,
}

impl Ty {
    fn arrow(self) -> DataType {
        let list = |dt| DataType::List(Arc::new(Field::new_list_field(dt, true)));
        match self {
            Ty::Oid => DataType::UInt32,
            Ty::Text | Ty::Char => DataType::Utf8,
            Ty::Bool => DataType::Boolean,
            Ty::I16 => DataType::Int16,
            Ty::I32 => DataType::Int32,
            Ty::I64 => DataType::Int64,
            Ty::F32 => DataType::Float32,
            Ty::TextArr => list(DataType::Utf8),
            Ty::OidArr => list(DataType::UInt32),
            Ty::I16Arr => list(DataType::Int16),
        }
    }
}

pub(super) type Row = Vec<ScalarValue>;
pub(super) type RowsFn = fn(&Snapshot) -> Vec<Row>;

/// One `pg_catalog` table: its Postgres columns and how to produce its rows.
pub(super) struct TableDef {
    pub(super) name: &'static str,
    pub(super) oid: u32,
    pub(super) columns: &'static [(&'static str, Ty)],
    /// `None`: Sluice has no such objects, the table is always empty (and the
    /// rewrite may treat joins with it as empty).
    pub(super) rows: Option<RowsFn>,
}

use Ty::*;

const PG_CLASS: &[(&str, Ty)] = &[
    ("oid", Oid),
    ("relname", Text),
    ("relnamespace", Oid),
    ("reltype", Oid),
    ("reloftype", Oid),
    ("relowner", Oid),
    ("relam", Oid),
    ("relfilenode", Oid),
    ("reltablespace", Oid),
    ("relpages", I32),
    ("reltuples", F32),
    ("relallvisible", I32),
    ("reltoastrelid", Oid),
    ("relhasindex", Bool),
    ("relisshared", Bool),
    ("relpersistence", Text),
    ("relkind", Text),
    ("relnatts", I16),
    ("relchecks", I16),
    ("relhasrules", Bool),
    ("relhastriggers", Bool),
    ("relhassubclass", Bool),
    ("relrowsecurity", Bool),
    ("relforcerowsecurity", Bool),
    ("relispopulated", Bool),
    ("relreplident", Text),
    ("relispartition", Bool),
    ("relrewrite", Oid),
    ("relfrozenxid", Oid),
    ("relminmxid", Oid),
    ("relacl", TextArr),
    ("reloptions", TextArr),
    ("relpartbound", Text),
];

const PG_ATTRIBUTE: &[(&str, Ty)] = &[
    ("attrelid", Oid),
    ("attname", Text),
    ("atttypid", Oid),
    ("attstattarget", I32),
    ("attlen", I16),
    ("attnum", I16),
    ("attndims", I32),
    ("attcacheoff", I32),
    ("atttypmod", I32),
    ("attbyval", Bool),
    ("attalign", Text),
    ("attstorage", Text),
    ("attcompression", Text),
    ("attnotnull", Bool),
    ("atthasdef", Bool),
    ("atthasmissing", Bool),
    ("attidentity", Text),
    ("attgenerated", Text),
    ("attisdropped", Bool),
    ("attislocal", Bool),
    ("attinhcount", I32),
    ("attcollation", Oid),
    ("attacl", TextArr),
    ("attoptions", TextArr),
    ("attfdwoptions", TextArr),
    ("attmissingval", Text),
];

const PG_NAMESPACE: &[(&str, Ty)] = &[
    ("oid", Oid),
    ("nspname", Text),
    ("nspowner", Oid),
    ("nspacl", TextArr),
];

const PG_TYPE: &[(&str, Ty)] = &[
    ("oid", Oid),
    ("typname", Text),
    ("typnamespace", Oid),
    ("typowner", Oid),
    ("typlen", I16),
    ("typbyval", Bool),
    ("typtype", Char),
    ("typcategory", Char),
    ("typispreferred", Bool),
    ("typisdefined", Bool),
    ("typdelim", Char),
    ("typrelid", Oid),
    ("typsubscript", Oid),
    ("typelem", Oid),
    ("typarray", Oid),
    ("typinput", Text),
    ("typoutput", Text),
    ("typreceive", Text),
    ("typsend", Text),
    ("typmodin", Text),
    ("typmodout", Text),
    ("typanalyze", Text),
    ("typalign", Char),
    ("typstorage", Char),
    ("typnotnull", Bool),
    ("typbasetype", Oid),
    ("typtypmod", I32),
    ("typndims", I32),
    ("typcollation", Oid),
    ("typdefaultbin", Text),
    ("typdefault", Text),
    ("typacl", TextArr),
];

const PG_DATABASE: &[(&str, Ty)] = &[
    ("oid", Oid),
    ("datname", Text),
    ("datdba", Oid),
    ("encoding", I32),
    ("datlocprovider", Text),
    ("datistemplate", Bool),
    ("datallowconn", Bool),
    ("datconnlimit", I32),
    ("datfrozenxid", Oid),
    ("datminmxid", Oid),
    ("dattablespace", Oid),
    ("datcollate", Text),
    ("datctype", Text),
    ("daticulocale", Text),
    ("datcollversion", Text),
    ("datacl", TextArr),
];

const PG_AM: &[(&str, Ty)] = &[
    ("oid", Oid),
    ("amname", Text),
    ("amhandler", Text),
    ("amtype", Text),
];

const PG_ROLES: &[(&str, Ty)] = &[
    ("rolname", Text),
    ("rolsuper", Bool),
    ("rolinherit", Bool),
    ("rolcreaterole", Bool),
    ("rolcreatedb", Bool),
    ("rolcanlogin", Bool),
    ("rolreplication", Bool),
    ("rolconnlimit", I32),
    ("rolpassword", Text),
    ("rolvaliduntil", Text),
    ("rolbypassrls", Bool),
    ("rolconfig", TextArr),
    ("oid", Oid),
];

const PG_USER: &[(&str, Ty)] = &[
    ("usename", Text),
    ("usesysid", Oid),
    ("usecreatedb", Bool),
    ("usesuper", Bool),
    ("userepl", Bool),
    ("usebypassrls", Bool),
    ("passwd", Text),
    ("valuntil", Text),
    ("useconfig", TextArr),
];

/// Activity counters tools read for row estimates (Metabase's sync): Sluice
/// counts none of them, so they are zero.
const PG_STAT_USER_TABLES: &[(&str, Ty)] = &[
    ("relid", Oid),
    ("schemaname", Text),
    ("relname", Text),
    ("seq_scan", I64),
    ("seq_tup_read", I64),
    ("idx_scan", I64),
    ("idx_tup_fetch", I64),
    ("n_tup_ins", I64),
    ("n_tup_upd", I64),
    ("n_tup_del", I64),
    ("n_tup_hot_upd", I64),
    ("n_live_tup", I64),
    ("n_dead_tup", I64),
    ("n_mod_since_analyze", I64),
    ("last_vacuum", Text),
    ("last_autovacuum", Text),
    ("last_analyze", Text),
    ("last_autoanalyze", Text),
];

/// Sessions: Sluice does not list its connections here (yet), so tools that
/// read it (pgAdmin's dashboard) see none.
const PG_STAT_ACTIVITY: &[(&str, Ty)] = &[
    ("datid", Oid),
    ("datname", Text),
    ("pid", I32),
    ("usesysid", Oid),
    ("usename", Text),
    ("application_name", Text),
    ("client_addr", Text),
    ("client_port", I32),
    ("backend_start", Text),
    ("xact_start", Text),
    ("query_start", Text),
    ("state_change", Text),
    ("wait_event_type", Text),
    ("wait_event", Text),
    ("state", Text),
    ("backend_type", Text),
    ("query", Text),
];

const PG_SETTINGS: &[(&str, Ty)] = &[
    ("name", Text),
    ("setting", Text),
    ("unit", Text),
    ("category", Text),
    ("short_desc", Text),
    ("extra_desc", Text),
    ("context", Text),
    ("vartype", Text),
    ("source", Text),
    ("min_val", Text),
    ("max_val", Text),
    ("enumvals", TextArr),
    ("boot_val", Text),
    ("reset_val", Text),
    ("sourcefile", Text),
    ("sourceline", I32),
    ("pending_restart", Bool),
];

const PG_TABLESPACE: &[(&str, Ty)] = &[
    ("oid", Oid),
    ("spcname", Text),
    ("spcowner", Oid),
    ("spcacl", TextArr),
    ("spcoptions", TextArr),
];

const PG_TABLES: &[(&str, Ty)] = &[
    ("schemaname", Text),
    ("tablename", Text),
    ("tableowner", Text),
    ("tablespace", Text),
    ("hasindexes", Bool),
    ("hasrules", Bool),
    ("hastriggers", Bool),
    ("rowsecurity", Bool),
];

const PG_VIEWS: &[(&str, Ty)] = &[
    ("schemaname", Text),
    ("viewname", Text),
    ("viewowner", Text),
    ("definition", Text),
];

const PG_MATVIEWS: &[(&str, Ty)] = &[
    ("schemaname", Text),
    ("matviewname", Text),
    ("matviewowner", Text),
    ("tablespace", Text),
    ("hasindexes", Bool),
    ("ispopulated", Bool),
    ("definition", Text),
];

const PG_INDEX: &[(&str, Ty)] = &[
    ("indexrelid", Oid),
    ("indrelid", Oid),
    ("indnatts", I16),
    ("indnkeyatts", I16),
    ("indisunique", Bool),
    ("indnullsnotdistinct", Bool),
    ("indisprimary", Bool),
    ("indisexclusion", Bool),
    ("indimmediate", Bool),
    ("indisclustered", Bool),
    ("indisvalid", Bool),
    ("indcheckxmin", Bool),
    ("indisready", Bool),
    ("indislive", Bool),
    ("indisreplident", Bool),
    ("indkey", I16Arr),
    ("indcollation", OidArr),
    ("indclass", OidArr),
    ("indoption", I16Arr),
    ("indexprs", Text),
    ("indpred", Text),
];

const PG_CONSTRAINT: &[(&str, Ty)] = &[
    ("oid", Oid),
    ("conname", Text),
    ("connamespace", Oid),
    ("contype", Text),
    ("condeferrable", Bool),
    ("condeferred", Bool),
    ("convalidated", Bool),
    ("conrelid", Oid),
    ("contypid", Oid),
    ("conindid", Oid),
    ("conparentid", Oid),
    ("confrelid", Oid),
    ("confupdtype", Text),
    ("confdeltype", Text),
    ("confmatchtype", Text),
    ("conislocal", Bool),
    ("coninhcount", I32),
    ("connoinherit", Bool),
    ("conkey", I16Arr),
    ("confkey", I16Arr),
    ("conpfeqop", OidArr),
    ("conppeqop", OidArr),
    ("conffeqop", OidArr),
    ("confdelsetcols", I16Arr),
    ("conexclop", OidArr),
    ("conbin", Text),
];

const PG_DESCRIPTION: &[(&str, Ty)] = &[
    ("objoid", Oid),
    ("classoid", Oid),
    ("objsubid", I32),
    ("description", Text),
];
const PG_SHDESCRIPTION: &[(&str, Ty)] =
    &[("objoid", Oid), ("classoid", Oid), ("description", Text)];
const PG_INHERITS: &[(&str, Ty)] = &[
    ("inhrelid", Oid),
    ("inhparent", Oid),
    ("inhseqno", I32),
    ("inhdetachpending", Bool),
];
const PG_ATTRDEF: &[(&str, Ty)] = &[
    ("oid", Oid),
    ("adrelid", Oid),
    ("adnum", I16),
    ("adbin", Text),
];
const PG_COLLATION: &[(&str, Ty)] = &[
    ("oid", Oid),
    ("collname", Text),
    ("collnamespace", Oid),
    ("collowner", Oid),
    ("collprovider", Text),
    ("collisdeterministic", Bool),
    ("collencoding", I32),
    ("collcollate", Text),
    ("collctype", Text),
    ("colliculocale", Text),
    ("collversion", Text),
];
const PG_POLICY: &[(&str, Ty)] = &[
    ("oid", Oid),
    ("polname", Text),
    ("polrelid", Oid),
    ("polcmd", Text),
    ("polpermissive", Bool),
    ("polroles", OidArr),
    ("polqual", Text),
    ("polwithcheck", Text),
];
const PG_STATISTIC_EXT: &[(&str, Ty)] = &[
    ("oid", Oid),
    ("stxrelid", Oid),
    ("stxname", Text),
    ("stxnamespace", Oid),
    ("stxowner", Oid),
    ("stxstattarget", I32),
    ("stxkeys", I16Arr),
    ("stxkind", TextArr),
    ("stxexprs", Text),
];
const PG_PUBLICATION: &[(&str, Ty)] = &[
    ("oid", Oid),
    ("pubname", Text),
    ("pubowner", Oid),
    ("puballtables", Bool),
    ("pubinsert", Bool),
    ("pubupdate", Bool),
    ("pubdelete", Bool),
    ("pubtruncate", Bool),
    ("pubviaroot", Bool),
];
const PG_PUBLICATION_REL: &[(&str, Ty)] = &[
    ("oid", Oid),
    ("prpubid", Oid),
    ("prrelid", Oid),
    ("prqual", Text),
    ("prattrs", I16Arr),
];
const PG_PUBLICATION_NAMESPACE: &[(&str, Ty)] = &[("oid", Oid), ("pnpubid", Oid), ("pnnspid", Oid)];
const PG_REWRITE: &[(&str, Ty)] = &[
    ("oid", Oid),
    ("rulename", Text),
    ("ev_class", Oid),
    ("ev_type", Text),
    ("ev_enabled", Text),
    ("is_instead", Bool),
    ("ev_qual", Text),
    ("ev_action", Text),
];
const PG_TRIGGER: &[(&str, Ty)] = &[
    ("oid", Oid),
    ("tgrelid", Oid),
    ("tgparentid", Oid),
    ("tgname", Text),
    ("tgfoid", Oid),
    ("tgtype", I16),
    ("tgenabled", Text),
    ("tgisinternal", Bool),
    ("tgconstrrelid", Oid),
    ("tgconstrindid", Oid),
    ("tgconstraint", Oid),
    ("tgdeferrable", Bool),
    ("tginitdeferred", Bool),
    ("tgnargs", I16),
    ("tgattr", I16Arr),
    ("tgargs", Text),
    ("tgqual", Text),
    ("tgoldtable", Text),
    ("tgnewtable", Text),
];
const PG_PROC: &[(&str, Ty)] = &[
    ("oid", Oid),
    ("proname", Text),
    ("pronamespace", Oid),
    ("proowner", Oid),
    ("prolang", Oid),
    ("procost", F32),
    ("prorows", F32),
    ("provariadic", Oid),
    ("prosupport", Text),
    ("prokind", Text),
    ("prosecdef", Bool),
    ("proleakproof", Bool),
    ("proisstrict", Bool),
    ("proretset", Bool),
    ("provolatile", Text),
    ("proparallel", Text),
    ("pronargs", I16),
    ("pronargdefaults", I16),
    ("prorettype", Oid),
    ("proargtypes", OidArr),
    ("proallargtypes", OidArr),
    ("proargmodes", TextArr),
    ("proargnames", TextArr),
    ("proargdefaults", Text),
    ("protrftypes", OidArr),
    ("prosrc", Text),
    ("probin", Text),
    ("prosqlbody", Text),
    ("proconfig", TextArr),
    ("proacl", TextArr),
];
const PG_EXTENSION: &[(&str, Ty)] = &[
    ("oid", Oid),
    ("extname", Text),
    ("extowner", Oid),
    ("extnamespace", Oid),
    ("extrelocatable", Bool),
    ("extversion", Text),
    ("extconfig", OidArr),
    ("extcondition", TextArr),
];
const PG_AUTH_MEMBERS: &[(&str, Ty)] = &[
    ("oid", Oid),
    ("roleid", Oid),
    ("member", Oid),
    ("grantor", Oid),
    ("admin_option", Bool),
];
const PG_EVENT_TRIGGER: &[(&str, Ty)] = &[
    ("oid", Oid),
    ("evtname", Text),
    ("evtevent", Text),
    ("evtowner", Oid),
    ("evtfoid", Oid),
    ("evtenabled", Text),
    ("evttags", TextArr),
];
const PG_ENUM: &[(&str, Ty)] = &[
    ("oid", Oid),
    ("enumtypid", Oid),
    ("enumsortorder", F32),
    ("enumlabel", Text),
];
const PG_DEPEND: &[(&str, Ty)] = &[
    ("classid", Oid),
    ("objid", Oid),
    ("objsubid", I32),
    ("refclassid", Oid),
    ("refobjid", Oid),
    ("refobjsubid", I32),
    ("deptype", Text),
];
const PG_SEQUENCE: &[(&str, Ty)] = &[
    ("seqrelid", Oid),
    ("seqtypid", Oid),
    ("seqstart", I64),
    ("seqincrement", I64),
    ("seqmax", I64),
    ("seqmin", I64),
    ("seqcache", I64),
    ("seqcycle", Bool),
];
const PG_FOREIGN_TABLE: &[(&str, Ty)] =
    &[("ftrelid", Oid), ("ftserver", Oid), ("ftoptions", TextArr)];
const PG_PARTITIONED_TABLE: &[(&str, Ty)] = &[
    ("partrelid", Oid),
    ("partstrat", Text),
    ("partnatts", I16),
    ("partdefid", Oid),
    ("partattrs", I16Arr),
];
const PG_LANGUAGE: &[(&str, Ty)] = &[
    ("oid", Oid),
    ("lanname", Text),
    ("lanowner", Oid),
    ("lanispl", Bool),
    ("lanpltrusted", Bool),
    ("lanplcallfoid", Oid),
    ("laninline", Oid),
    ("lanvalidator", Oid),
    ("lanacl", TextArr),
];
const PG_CAST: &[(&str, Ty)] = &[
    ("oid", Oid),
    ("castsource", Oid),
    ("casttarget", Oid),
    ("castfunc", Oid),
    ("castcontext", Text),
    ("castmethod", Text),
];
const PG_TS_CONFIG: &[(&str, Ty)] = &[
    ("oid", Oid),
    ("cfgname", Text),
    ("cfgnamespace", Oid),
    ("cfgowner", Oid),
    ("cfgparser", Oid),
];
const PG_RANGE: &[(&str, Ty)] = &[
    ("rngtypid", Oid),
    ("rngsubtype", Oid),
    ("rngmultitypid", Oid),
    ("rngcollation", Oid),
];

/// Every `pg_catalog` table, with the OID its `pg_class` row gets (the real
/// Postgres OID for the common ones).
const TABLES: &[TableDef] = &[
    TableDef {
        name: "pg_class",
        oid: 1259,
        columns: PG_CLASS,
        rows: Some(class_rows),
    },
    TableDef {
        name: "pg_attribute",
        oid: 1249,
        columns: PG_ATTRIBUTE,
        rows: Some(attribute_rows),
    },
    TableDef {
        name: "pg_namespace",
        oid: 2615,
        columns: PG_NAMESPACE,
        rows: Some(namespace_rows),
    },
    TableDef {
        name: "pg_type",
        oid: 1247,
        columns: PG_TYPE,
        rows: Some(type_rows),
    },
    TableDef {
        name: "pg_database",
        oid: 1262,
        columns: PG_DATABASE,
        rows: Some(database_rows),
    },
    TableDef {
        name: "pg_am",
        oid: 2601,
        columns: PG_AM,
        rows: Some(am_rows),
    },
    TableDef {
        name: "pg_roles",
        oid: 12_001,
        columns: PG_ROLES,
        rows: Some(roles_rows),
    },
    TableDef {
        name: "pg_user",
        oid: 12_002,
        columns: PG_USER,
        rows: Some(user_rows),
    },
    TableDef {
        name: "pg_settings",
        oid: 12_003,
        columns: PG_SETTINGS,
        rows: Some(settings_rows),
    },
    TableDef {
        name: "pg_tablespace",
        oid: 1213,
        columns: PG_TABLESPACE,
        rows: Some(tablespace_rows),
    },
    TableDef {
        name: "pg_tables",
        oid: 12_004,
        columns: PG_TABLES,
        rows: Some(tables_rows),
    },
    TableDef {
        name: "pg_views",
        oid: 12_005,
        columns: PG_VIEWS,
        rows: Some(views_rows),
    },
    TableDef {
        name: "pg_matviews",
        oid: 12_006,
        columns: PG_MATVIEWS,
        rows: Some(matviews_rows),
    },
    TableDef {
        name: "pg_stat_user_tables",
        oid: 12_007,
        columns: PG_STAT_USER_TABLES,
        rows: Some(stat_user_tables_rows),
    },
    TableDef {
        name: "pg_stat_activity",
        oid: 12_008,
        columns: PG_STAT_ACTIVITY,
        rows: None,
    },
    TableDef {
        name: "pg_index",
        oid: 2610,
        columns: PG_INDEX,
        rows: Some(super::pg_keys::index_rows),
    },
    TableDef {
        name: "pg_constraint",
        oid: 2606,
        columns: PG_CONSTRAINT,
        rows: Some(super::pg_keys::constraint_rows),
    },
    TableDef {
        name: "pg_description",
        oid: 2609,
        columns: PG_DESCRIPTION,
        rows: None,
    },
    TableDef {
        name: "pg_shdescription",
        oid: 2396,
        columns: PG_SHDESCRIPTION,
        rows: None,
    },
    TableDef {
        name: "pg_inherits",
        oid: 2611,
        columns: PG_INHERITS,
        rows: None,
    },
    TableDef {
        name: "pg_attrdef",
        oid: 2604,
        columns: PG_ATTRDEF,
        rows: None,
    },
    TableDef {
        name: "pg_collation",
        oid: 3456,
        columns: PG_COLLATION,
        rows: None,
    },
    TableDef {
        name: "pg_policy",
        oid: 3256,
        columns: PG_POLICY,
        rows: None,
    },
    TableDef {
        name: "pg_statistic_ext",
        oid: 3381,
        columns: PG_STATISTIC_EXT,
        rows: None,
    },
    TableDef {
        name: "pg_publication",
        oid: 6104,
        columns: PG_PUBLICATION,
        rows: None,
    },
    TableDef {
        name: "pg_publication_rel",
        oid: 6106,
        columns: PG_PUBLICATION_REL,
        rows: None,
    },
    TableDef {
        name: "pg_publication_namespace",
        oid: 6237,
        columns: PG_PUBLICATION_NAMESPACE,
        rows: None,
    },
    TableDef {
        name: "pg_rewrite",
        oid: 2618,
        columns: PG_REWRITE,
        rows: None,
    },
    TableDef {
        name: "pg_trigger",
        oid: 2620,
        columns: PG_TRIGGER,
        rows: None,
    },
    TableDef {
        name: "pg_proc",
        oid: 1255,
        columns: PG_PROC,
        rows: None,
    },
    TableDef {
        name: "pg_extension",
        oid: 3079,
        columns: PG_EXTENSION,
        rows: None,
    },
    TableDef {
        name: "pg_auth_members",
        oid: 1261,
        columns: PG_AUTH_MEMBERS,
        rows: None,
    },
    TableDef {
        name: "pg_event_trigger",
        oid: 3466,
        columns: PG_EVENT_TRIGGER,
        rows: None,
    },
    TableDef {
        name: "pg_enum",
        oid: 3501,
        columns: PG_ENUM,
        rows: None,
    },
    TableDef {
        name: "pg_depend",
        oid: 2608,
        columns: PG_DEPEND,
        rows: None,
    },
    TableDef {
        name: "pg_sequence",
        oid: 2224,
        columns: PG_SEQUENCE,
        rows: None,
    },
    TableDef {
        name: "pg_foreign_table",
        oid: 3118,
        columns: PG_FOREIGN_TABLE,
        rows: None,
    },
    TableDef {
        name: "pg_partitioned_table",
        oid: 3350,
        columns: PG_PARTITIONED_TABLE,
        rows: None,
    },
    TableDef {
        name: "pg_range",
        oid: 3541,
        columns: PG_RANGE,
        rows: None,
    },
    TableDef {
        name: "pg_language",
        oid: 2612,
        columns: PG_LANGUAGE,
        rows: None,
    },
    TableDef {
        name: "pg_cast",
        oid: 2605,
        columns: PG_CAST,
        rows: None,
    },
    TableDef {
        name: "pg_ts_config",
        oid: 3602,
        columns: PG_TS_CONFIG,
        rows: None,
    },
];

fn table_def(name: &str) -> Option<&'static TableDef> {
    TABLES.iter().find(|t| t.name == name)
}

// ---------------------------------------------------------------------------
// Postgres types
// ---------------------------------------------------------------------------

/// A built-in Postgres type Sluice can put on the wire.
pub(super) struct PgTypeInfo {
    oid: u32,
    pub(super) name: &'static str,
    /// What `format_type` prints.
    display: &'static str,
    len: i16,
    category: &'static str,
    elem: u32,
    array: u32,
}

const fn ty(
    oid: u32,
    name: &'static str,
    display: &'static str,
    len: i16,
    category: &'static str,
    array: u32,
) -> PgTypeInfo {
    PgTypeInfo {
        oid,
        name,
        display,
        len,
        category,
        elem: 0,
        array,
    }
}

const fn arr(oid: u32, name: &'static str, display: &'static str, elem: u32) -> PgTypeInfo {
    PgTypeInfo {
        oid,
        name,
        display,
        len: -1,
        category: "A",
        elem,
        array: 0,
    }
}

const TYPES: &[PgTypeInfo] = &[
    ty(16, "bool", "boolean", 1, "B", 1000),
    ty(17, "bytea", "bytea", -1, "U", 1001),
    ty(18, "char", "\"char\"", 1, "Z", 1002),
    ty(19, "name", "name", 64, "S", 1003),
    ty(20, "int8", "bigint", 8, "N", 1016),
    ty(21, "int2", "smallint", 2, "N", 1005),
    ty(23, "int4", "integer", 4, "N", 1007),
    ty(25, "text", "text", -1, "S", 1009),
    ty(26, "oid", "oid", 4, "N", 1028),
    ty(114, "json", "json", -1, "U", 199),
    ty(700, "float4", "real", 4, "N", 1021),
    ty(701, "float8", "double precision", 8, "N", 1022),
    ty(1042, "bpchar", "character", -1, "S", 1014),
    ty(1043, "varchar", "character varying", -1, "S", 1015),
    ty(1082, "date", "date", 4, "D", 1182),
    ty(1083, "time", "time without time zone", 8, "D", 1183),
    ty(
        1114,
        "timestamp",
        "timestamp without time zone",
        8,
        "D",
        1115,
    ),
    ty(
        1184,
        "timestamptz",
        "timestamp with time zone",
        8,
        "D",
        1185,
    ),
    ty(1186, "interval", "interval", 16, "T", 1187),
    ty(1700, "numeric", "numeric", -1, "N", 1231),
    ty(2950, "uuid", "uuid", 16, "U", 2951),
    ty(3802, "jsonb", "jsonb", -1, "U", 3807),
    arr(199, "_json", "json[]", 114),
    arr(1000, "_bool", "boolean[]", 16),
    arr(1001, "_bytea", "bytea[]", 17),
    arr(1002, "_char", "\"char\"[]", 18),
    arr(1003, "_name", "name[]", 19),
    arr(1005, "_int2", "smallint[]", 21),
    arr(1007, "_int4", "integer[]", 23),
    arr(1009, "_text", "text[]", 25),
    arr(1014, "_bpchar", "character[]", 1042),
    arr(1015, "_varchar", "character varying[]", 1043),
    arr(1016, "_int8", "bigint[]", 20),
    arr(1021, "_float4", "real[]", 700),
    arr(1022, "_float8", "double precision[]", 701),
    arr(1028, "_oid", "oid[]", 26),
    arr(1115, "_timestamp", "timestamp without time zone[]", 1114),
    arr(1182, "_date", "date[]", 1082),
    arr(1183, "_time", "time without time zone[]", 1083),
    arr(1185, "_timestamptz", "timestamp with time zone[]", 1184),
    arr(1187, "_interval", "interval[]", 1186),
    arr(1231, "_numeric", "numeric[]", 1700),
    arr(2951, "_uuid", "uuid[]", 2950),
    arr(3807, "_jsonb", "jsonb[]", 3802),
];

pub(super) fn type_info(oid: u32) -> Option<&'static PgTypeInfo> {
    TYPES.iter().find(|t| t.oid == oid)
}

/// `format_type(oid, typmod)`: the SQL name of a type, with its modifier.
pub(super) fn format_type(oid: u32, typmod: Option<i64>) -> String {
    let Some(info) = type_info(oid) else {
        return "???".to_string();
    };
    let m = typmod.filter(|m| *m >= 0);
    match (info.oid, m) {
        (1700, Some(m)) if m >= 4 => format!("numeric({},{})", (m - 4) >> 16, (m - 4) & 0xffff),
        (1043, Some(m)) if m >= 4 => format!("character varying({})", m - 4),
        (1042, Some(m)) if m >= 4 => format!("character({})", m - 4),
        _ => info.display.to_string(),
    }
}

/// The wire type of an Arrow column (the same one the RowDescription carries)
/// and its type modifier.
pub(super) fn column_type(dt: &DataType) -> (u32, i32) {
    (
        super::pg_types::pg_type(dt).oid(),
        super::pg_types::pg_type_modifier(dt),
    )
}

// ---------------------------------------------------------------------------
// Snapshot of the catalog and the rows of each table
// ---------------------------------------------------------------------------

/// What the catalog tables are computed from: the user relations at scan time.
pub(crate) struct Snapshot {
    pub(super) relations: Vec<Relation>,
}

/// A stable OID for a user relation, derived from its name (FNV-1a), so it
/// survives restarts and psql's follow-up queries find the same object.
pub(super) fn relation_oid(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    FIRST_USER_OID + h % (i32::MAX as u32 - FIRST_USER_OID)
}

/// `relkind` of a Sluice relation: streams are views, tables are tables, and a
/// table declared with CREATE MATERIALIZED VIEW is a materialized view.
pub(super) fn relkind(r: &Relation) -> &'static str {
    if !r.is_table() {
        "v"
    } else if is_materialized_view(r) {
        "m"
    } else {
        "r"
    }
}

fn is_materialized_view(r: &Relation) -> bool {
    let words: Vec<String> = r
        .statement
        .split_whitespace()
        .take(5)
        .map(|w| w.to_ascii_uppercase())
        .collect();
    words
        .windows(2)
        .any(|w| w[0] == "MATERIALIZED" && w[1] == "VIEW")
}

/// The definition `pg_get_viewdef` and `pg_views` show: the statement that
/// created the relation.
pub(super) fn definition(r: &Relation) -> String {
    r.statement.clone()
}

impl Snapshot {
    fn relation_by_oid(&self, oid: u32) -> Option<&Relation> {
        self.relations.iter().find(|r| relation_oid(&r.name) == oid)
    }

    /// `to_regclass`: a (possibly schema-qualified, possibly quoted) name to an OID.
    fn regclass(&self, name: &str) -> Option<u32> {
        let parts = split_qualified(name)?;
        let (schema, rel) = match parts.as_slice() {
            [rel] => (None, rel.as_str()),
            [schema, rel] => (Some(schema.as_str()), rel.as_str()),
            [_, schema, rel] => (Some(schema.as_str()), rel.as_str()),
            _ => return None,
        };
        if schema.is_none() || schema == Some("public") {
            if let Some(r) = self.relations.iter().find(|r| r.name == rel) {
                return Some(relation_oid(&r.name));
            }
        }
        if schema.is_none() || schema == Some("pg_catalog") {
            return table_def(rel).map(|t| t.oid);
        }
        None
    }
}

/// Splits `a.b` / `"A".b` into normalized parts (unquoted folds to lower case).
fn split_qualified(name: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut chars = name.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                part.push(c.to_ascii_lowercase());
                chars.next();
            }
        }
        parts.push(part);
        match chars.next() {
            None => return Some(parts),
            Some('.') => continue,
            Some(_) => return None,
        }
    }
}

pub(super) fn oid(v: u32) -> ScalarValue {
    ScalarValue::UInt32(Some(v))
}
pub(super) fn text(v: impl Into<String>) -> ScalarValue {
    ScalarValue::Utf8(Some(v.into()))
}
pub(super) fn boolean(v: bool) -> ScalarValue {
    ScalarValue::Boolean(Some(v))
}
pub(super) fn int2(v: i16) -> ScalarValue {
    ScalarValue::Int16(Some(v))
}
pub(super) fn int4(v: i32) -> ScalarValue {
    ScalarValue::Int32(Some(v))
}
fn float4(v: f32) -> ScalarValue {
    ScalarValue::Float32(Some(v))
}
pub(super) fn null() -> ScalarValue {
    ScalarValue::Null
}

#[allow(clippy::too_many_arguments)]
pub(super) fn class_row(
    oid_: u32,
    name: &str,
    namespace: u32,
    kind: &str,
    natts: usize,
    am: u32,
) -> Row {
    vec![
        oid(oid_),
        text(name),
        oid(namespace),
        oid(0),
        oid(0),
        oid(ROLE_OID),
        oid(am),
        oid(if kind == "v" { 0 } else { oid_ }),
        oid(0),
        int4(0),
        float4(-1.0),
        int4(0),
        oid(0),
        boolean(false),
        boolean(false),
        text("p"),
        text(kind),
        int2(i16::try_from(natts).unwrap_or(i16::MAX)),
        int2(0),
        boolean(false),
        boolean(false),
        boolean(false),
        boolean(false),
        boolean(false),
        boolean(true),
        text(if kind == "v" { "n" } else { "d" }),
        boolean(false),
        oid(0),
        oid(0),
        oid(0),
        null(),
        null(),
        null(),
    ]
}

fn class_rows(s: &Snapshot) -> Vec<Row> {
    let mut rows: Vec<Row> = s
        .relations
        .iter()
        .map(|r| {
            let kind = relkind(r);
            let am = if kind == "v" { 0 } else { AM_HEAP };
            class_row(
                relation_oid(&r.name),
                &r.name,
                NS_PUBLIC,
                kind,
                r.columns.len(),
                am,
            )
        })
        .collect();
    rows.extend(super::pg_keys::index_class_rows(s));
    rows.extend(
        TABLES
            .iter()
            .map(|t| class_row(t.oid, t.name, NS_PG_CATALOG, "r", t.columns.len(), AM_HEAP)),
    );
    rows
}

#[allow(clippy::too_many_arguments)]
fn attribute_row(
    rel: u32,
    name: &str,
    num: usize,
    type_oid: u32,
    typmod: i32,
    not_null: bool,
) -> Row {
    let len = type_info(type_oid).map(|t| t.len).unwrap_or(-1);
    vec![
        oid(rel),
        text(name),
        oid(type_oid),
        int4(-1),
        int2(len),
        int2(i16::try_from(num).unwrap_or(i16::MAX)),
        int4(0),
        int4(-1),
        int4(typmod),
        boolean(len > 0 && len <= 8),
        text("i"),
        text(if len < 0 { "x" } else { "p" }),
        text(""),
        boolean(not_null),
        boolean(false),
        boolean(false),
        text(""),
        text(""),
        boolean(false),
        boolean(true),
        int4(0),
        oid(0),
        null(),
        null(),
        null(),
        null(),
    ]
}

fn attribute_rows(s: &Snapshot) -> Vec<Row> {
    let mut rows = Vec::new();
    for r in &s.relations {
        let rel = relation_oid(&r.name);
        let schema = r.schema();
        for (i, f) in schema.fields().iter().enumerate() {
            let (type_oid, typmod) = column_type(f.data_type());
            rows.push(attribute_row(
                rel,
                f.name(),
                i + 1,
                type_oid,
                typmod,
                !f.is_nullable(),
            ));
        }
    }
    for t in TABLES {
        for (i, (name, ty)) in t.columns.iter().enumerate() {
            let (type_oid, typmod) = column_type(&ty.arrow());
            rows.push(attribute_row(t.oid, name, i + 1, type_oid, typmod, false));
        }
    }
    rows
}

fn namespace_rows(_: &Snapshot) -> Vec<Row> {
    [
        (NS_PG_CATALOG, "pg_catalog"),
        (NS_PUBLIC, "public"),
        (NS_INFORMATION_SCHEMA, "information_schema"),
    ]
    .into_iter()
    .map(|(o, n)| vec![oid(o), text(n), oid(ROLE_OID), null()])
    .collect()
}

fn type_rows(_: &Snapshot) -> Vec<Row> {
    TYPES
        .iter()
        .map(|t| {
            vec![
                oid(t.oid),
                text(t.name),
                oid(NS_PG_CATALOG),
                oid(ROLE_OID),
                int2(t.len),
                boolean(t.len > 0 && t.len <= 8),
                text("b"),
                text(t.category),
                boolean(false),
                boolean(true),
                text(","),
                oid(0),
                oid(0),
                oid(t.elem),
                oid(t.array),
                text(format!("{}in", t.name)),
                text(format!("{}out", t.name)),
                text(format!("{}recv", t.name)),
                text(format!("{}send", t.name)),
                text("-"),
                text("-"),
                text("-"),
                text("i"),
                text(if t.len < 0 { "x" } else { "p" }),
                boolean(false),
                oid(0),
                int4(-1),
                int4(0),
                oid(if matches!(t.oid, 25 | 1042 | 1043) {
                    100
                } else {
                    0
                }),
                null(),
                null(),
                null(),
            ]
        })
        .collect()
}

fn database_rows(_: &Snapshot) -> Vec<Row> {
    vec![vec![
        oid(DATABASE_OID),
        text(DATABASE),
        oid(ROLE_OID),
        int4(6),
        text("c"),
        boolean(false),
        boolean(true),
        int4(-1),
        oid(0),
        oid(0),
        oid(TABLESPACE_DEFAULT),
        text("C.UTF-8"),
        text("C.UTF-8"),
        null(),
        null(),
        null(),
    ]]
}

fn am_rows(_: &Snapshot) -> Vec<Row> {
    vec![
        vec![
            oid(AM_HEAP),
            text("heap"),
            text("heap_tableam_handler"),
            text("t"),
        ],
        vec![oid(403), text("btree"), text("bthandler"), text("i")],
    ]
}

fn roles_rows(_: &Snapshot) -> Vec<Row> {
    vec![vec![
        text(ROLE),
        boolean(true),
        boolean(true),
        boolean(true),
        boolean(true),
        boolean(true),
        boolean(false),
        int4(-1),
        text("********"),
        null(),
        boolean(true),
        null(),
        oid(ROLE_OID),
    ]]
}

fn user_rows(_: &Snapshot) -> Vec<Row> {
    vec![vec![
        text(ROLE),
        oid(ROLE_OID),
        boolean(true),
        boolean(true),
        boolean(false),
        boolean(true),
        text("********"),
        null(),
        null(),
    ]]
}

/// Server settings reported by `pg_settings`, `current_setting()` (and the
/// ParameterStatus values drivers already received at startup).
fn settings() -> Vec<(&'static str, String, &'static str)> {
    vec![
        ("application_name", String::new(), "string"),
        ("client_encoding", "UTF8".into(), "string"),
        ("DateStyle", "ISO, MDY".into(), "string"),
        (
            "default_transaction_isolation",
            "read committed".into(),
            "enum",
        ),
        ("default_transaction_read_only", "off".into(), "bool"),
        ("extra_float_digits", "1".into(), "integer"),
        ("integer_datetimes", "on".into(), "bool"),
        ("IntervalStyle", "postgres".into(), "enum"),
        ("is_superuser", "on".into(), "bool"),
        ("lc_collate", "C.UTF-8".into(), "string"),
        ("lc_ctype", "C.UTF-8".into(), "string"),
        ("max_identifier_length", "63".into(), "integer"),
        // pgJDBC reads it before listing foreign keys.
        ("max_index_keys", "32".into(), "integer"),
        ("search_path", "\"$user\", public".into(), "string"),
        ("server_encoding", "UTF8".into(), "string"),
        (
            "server_version",
            super::pg_types::SERVER_VERSION.to_string(),
            "string",
        ),
        ("server_version_num", "150000".into(), "integer"),
        ("standard_conforming_strings", "on".into(), "bool"),
        ("TimeZone", "UTC".into(), "string"),
        ("transaction_isolation", "read committed".into(), "string"),
        ("transaction_read_only", "off".into(), "bool"),
    ]
}

/// The value of a server setting (case-insensitive name), as `current_setting`
/// reports it; for `SHOW <setting>` too.
pub(crate) fn setting(name: &str) -> Option<String> {
    settings()
        .into_iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v, _)| v)
}

fn settings_rows(_: &Snapshot) -> Vec<Row> {
    settings()
        .into_iter()
        .map(|(name, value, vartype)| {
            vec![
                text(name),
                text(value.clone()),
                null(),
                text("Sluice"),
                null(),
                null(),
                text("user"),
                text(vartype),
                text("default"),
                null(),
                null(),
                null(),
                text(value.clone()),
                text(value),
                null(),
                null(),
                boolean(false),
            ]
        })
        .collect()
}

fn tablespace_rows(_: &Snapshot) -> Vec<Row> {
    vec![
        vec![
            oid(TABLESPACE_DEFAULT),
            text("pg_default"),
            oid(ROLE_OID),
            null(),
            null(),
        ],
        vec![oid(1664), text("pg_global"), oid(ROLE_OID), null(), null()],
    ]
}

fn tables_rows(s: &Snapshot) -> Vec<Row> {
    let row = |schema: &str, name: &str| {
        vec![
            text(schema),
            text(name),
            text(ROLE),
            null(),
            boolean(false),
            boolean(false),
            boolean(false),
            boolean(false),
        ]
    };
    let mut rows: Vec<Row> = s
        .relations
        .iter()
        .filter(|r| relkind(r) == "r")
        .map(|r| row("public", &r.name))
        .collect();
    rows.extend(TABLES.iter().map(|t| row("pg_catalog", t.name)));
    rows
}

fn views_rows(s: &Snapshot) -> Vec<Row> {
    s.relations
        .iter()
        .filter(|r| relkind(r) == "v")
        .map(|r| {
            vec![
                text("public"),
                text(&r.name),
                text(ROLE),
                text(definition(r)),
            ]
        })
        .collect()
}

fn stat_user_tables_rows(s: &Snapshot) -> Vec<Row> {
    s.relations
        .iter()
        .filter(|r| r.is_table())
        .map(|r| {
            let mut row = vec![oid(relation_oid(&r.name)), text("public"), text(&r.name)];
            row.extend((0..11).map(|_| ScalarValue::Int64(Some(0))));
            row.extend((0..4).map(|_| null()));
            row
        })
        .collect()
}

fn matviews_rows(s: &Snapshot) -> Vec<Row> {
    s.relations
        .iter()
        .filter(|r| relkind(r) == "m")
        .map(|r| {
            vec![
                text("public"),
                text(&r.name),
                text(ROLE),
                null(),
                boolean(false),
                boolean(true),
                text(definition(r)),
            ]
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The tables as DataFusion providers
// ---------------------------------------------------------------------------

/// Where catalog tables and functions read the live catalog from. Weak: the
/// engine owns the DataFusion context that owns these.
#[derive(Clone)]
struct SnapshotSource(Weak<Engine>);

impl SnapshotSource {
    fn snapshot(&self) -> Snapshot {
        let relations = match self.0.upgrade() {
            Some(engine) => {
                let catalog = engine.catalog.read();
                // Views list as views, next to streams.
                let views = catalog.views.values().filter_map(|v| v.as_relation().ok());
                catalog.relations.values().cloned().chain(views).collect()
            }
            None => Vec::new(),
        };
        Snapshot { relations }
    }
}

fn table_schema(def: &TableDef) -> SchemaRef {
    Arc::new(Schema::new(
        def.columns
            .iter()
            .map(|(name, ty)| {
                let field = Field::new(*name, ty.arrow(), true);
                match ty {
                    Ty::Char => super::pg_types::as_char(field),
                    _ => field,
                }
            })
            .collect::<Vec<_>>(),
    ))
}

fn build_batch(schema: &SchemaRef, rows: &[Row]) -> DfResult<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (i, field) in schema.fields().iter().enumerate() {
        let typed_null = ScalarValue::try_from(field.data_type())?;
        let values = rows.iter().map(|row| match &row[i] {
            ScalarValue::Null => typed_null.clone(),
            v => v.clone(),
        });
        let array = if rows.is_empty() {
            arrow::array::new_empty_array(field.data_type())
        } else {
            ScalarValue::iter_to_array(values)?
        };
        columns.push(array);
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

struct PgTable {
    def: &'static TableDef,
    schema: SchemaRef,
    source: SnapshotSource,
}

impl fmt::Debug for PgTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTable")
            .field("name", &self.def.name)
            .finish()
    }
}

#[async_trait]
impl TableProvider for PgTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        _filters: &[DfExpr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let rows = match self.def.rows {
            Some(f) => f(&self.source.snapshot()),
            None => Vec::new(),
        };
        let batch = build_batch(&self.schema, &rows)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}

// ---------------------------------------------------------------------------
// Functions
// ---------------------------------------------------------------------------

fn signature(arities: &[usize]) -> Signature {
    let sigs: Vec<TypeSignature> = arities
        .iter()
        .map(|&n| {
            if n == 0 {
                TypeSignature::Nullary
            } else {
                TypeSignature::Any(n)
            }
        })
        .collect();
    if sigs.len() == 1 {
        Signature::new(
            sigs.into_iter().next().unwrap_or(TypeSignature::Nullary),
            Volatility::Stable,
        )
    } else {
        Signature::one_of(sigs, Volatility::Stable)
    }
}

fn udf(
    name: &'static str,
    arities: &[usize],
    return_type: DataType,
    body: impl Fn(&[ArrayRef], usize) -> DfResult<ArrayRef> + Send + Sync + 'static,
) -> ScalarUDF {
    crate::functions::array_udf(name, signature(arities), return_type, body)
}

/// A function whose value does not depend on its arguments.
fn constant(name: &'static str, arities: &[usize], value: ScalarValue) -> ScalarUDF {
    let dt = value.data_type();
    udf(name, arities, dt, move |_, n| value.to_array_of_size(n))
}

fn lenient_cast(a: &ArrayRef, to: &DataType) -> DfResult<ArrayRef> {
    let options = CastOptions {
        safe: true,
        ..Default::default()
    };
    Ok(cast_with_options(a, to, &options)?)
}

/// An argument as OIDs (numbers, or text holding a number as psql sends them).
fn oid_arg(a: &ArrayRef) -> DfResult<Vec<Option<u32>>> {
    let ints = lenient_cast(a, &DataType::Int64)?;
    let ints = ints
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| DataFusionError::Internal("cast to Int64".into()))?;
    Ok(ints
        .iter()
        .map(|v| v.and_then(|v| u32::try_from(v).ok()))
        .collect())
}

fn int_arg(a: &ArrayRef) -> DfResult<Vec<Option<i64>>> {
    let ints = lenient_cast(a, &DataType::Int64)?;
    let ints = ints
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| DataFusionError::Internal("cast to Int64".into()))?;
    Ok(ints.iter().collect())
}

fn text_arg(a: &ArrayRef) -> DfResult<Vec<Option<String>>> {
    let s = lenient_cast(a, &DataType::Utf8)?;
    let s = s
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| DataFusionError::Internal("cast to Utf8".into()))?;
    Ok(s.iter().map(|v| v.map(str::to_string)).collect())
}

/// Maps the first argument as OIDs to text.
fn oid_to_text(
    name: &'static str,
    arities: &[usize],
    f: impl Fn(u32) -> Option<String> + Send + Sync + 'static,
) -> ScalarUDF {
    udf(name, arities, DataType::Utf8, move |args, _| {
        let out: StringArray = oid_arg(&args[0])?
            .into_iter()
            .map(|o| o.and_then(&f))
            .collect();
        Ok(Arc::new(out) as ArrayRef)
    })
}

/// Maps the first argument as text to an OID.
fn text_to_oid(
    name: &'static str,
    f: impl Fn(&str) -> Option<u32> + Send + Sync + 'static,
) -> ScalarUDF {
    udf(name, &[1], DataType::UInt32, move |args, _| {
        let out: UInt32Array = text_arg(&args[0])?
            .into_iter()
            // An OID in text names itself, as Postgres' regclass input reads it.
            .map(|s| {
                s.as_deref()
                    .and_then(|s| s.trim().parse::<u32>().ok().or_else(|| f(s)))
            })
            .collect();
        Ok(Arc::new(out) as ArrayRef)
    })
}

/// `true` for every non-null first argument (visibility and privilege checks:
/// everything is in the search path and the one role may do anything).
fn always_true(name: &'static str, arities: &[usize]) -> ScalarUDF {
    udf(name, arities, DataType::Boolean, |args, n| {
        let out: BooleanArray = match args.first() {
            Some(a) => (0..a.len())
                .map(|i| a.is_valid(i).then_some(true))
                .collect(),
            None => (0..n).map(|_| Some(true)).collect(),
        };
        Ok(Arc::new(out) as ArrayRef)
    })
}

fn null_text(name: &'static str, arities: &[usize]) -> ScalarUDF {
    constant(name, arities, ScalarValue::Utf8(None))
}

fn pg_size_pretty(bytes: i64) -> String {
    let mut v = bytes as f64;
    let units = ["bytes", "kB", "MB", "GB", "TB", "PB"];
    let mut unit = 0;
    while v.abs() >= 10_240.0 && unit + 1 < units.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{} {}", v.round() as i64, units[unit])
    }
}

/// `quote_ident`: quotes an identifier when Postgres would need it.
/// `information_schema._pg_expandarray(a)` as a list: `{(x, n)}`, every
/// element with its position from 1. The rewrite unnests it, as Postgres'
/// set-returning function would (pgJDBC's getPrimaryKeys and getIndexInfo).
fn expand_array() -> ScalarUDF {
    let fields = arrow::datatypes::Fields::from(vec![
        Field::new("x", DataType::Int64, true),
        Field::new("n", DataType::Int64, true),
    ]);
    let item = Arc::new(Field::new_list_field(
        DataType::Struct(fields.clone()),
        true,
    ));
    udf(
        "_pg_expandarray",
        &[1],
        DataType::List(item.clone()),
        move |args, _| {
            let list = args[0]
                .as_any()
                .downcast_ref::<ListArray>()
                .ok_or_else(|| {
                    datafusion::error::DataFusionError::Plan(
                        "_pg_expandarray takes an array".into(),
                    )
                })?;
            let mut xs = Vec::new();
            let mut ns = Vec::new();
            let mut offsets = vec![0i32];
            for i in 0..list.len() {
                if list.is_valid(i) {
                    let values = lenient_cast(&list.value(i), &DataType::Int64)?;
                    let values = values
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .ok_or_else(|| {
                            datafusion::error::DataFusionError::Internal("not int64".into())
                        })?;
                    for (j, v) in values.iter().enumerate() {
                        xs.push(v);
                        ns.push(Some(i64::try_from(j + 1).unwrap_or(i64::MAX)));
                    }
                }
                offsets.push(i32::try_from(xs.len()).unwrap_or(i32::MAX));
            }
            let structs = arrow::array::StructArray::try_new(
                fields.clone(),
                vec![
                    Arc::new(Int64Array::from(xs)) as ArrayRef,
                    Arc::new(Int64Array::from(ns)) as ArrayRef,
                ],
                None,
            )?;
            let out = ListArray::try_new(
                item.clone(),
                arrow::buffer::OffsetBuffer::new(offsets.into()),
                Arc::new(structs),
                list.nulls().cloned(),
            )?;
            Ok(Arc::new(out) as ArrayRef)
        },
    )
}

/// Postgres' `format()`: `%s` a value as text (NULL as nothing), `%I` an
/// identifier quoted when needed, `%L` a literal quoted (NULL as `NULL`),
/// `%%` a percent sign. Positions (`%1$s`) and widths are not supported.
fn pg_format(template: &str, values: &[Option<&str>]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut next = values.iter();
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('s') => out.push_str(next.next().copied().flatten().unwrap_or("")),
            Some('I') => out.push_str(&quote_ident(next.next().copied().flatten().unwrap_or(""))),
            Some('L') => match next.next().copied().flatten() {
                Some(v) => out.push_str(&format!("'{}'", v.replace('\'', "''"))),
                None => out.push_str("NULL"),
            },
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

fn quote_ident(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !matches!(
            s,
            "all"
                | "and"
                | "as"
                | "asc"
                | "by"
                | "case"
                | "cast"
                | "check"
                | "column"
                | "create"
                | "default"
                | "desc"
                | "distinct"
                | "else"
                | "end"
                | "false"
                | "from"
                | "group"
                | "having"
                | "in"
                | "into"
                | "is"
                | "join"
                | "limit"
                | "not"
                | "null"
                | "on"
                | "or"
                | "order"
                | "select"
                | "table"
                | "then"
                | "to"
                | "true"
                | "union"
                | "user"
                | "using"
                | "when"
                | "where"
                | "with"
        );
    if plain {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

/// `array_upper(arr, 1)` / `array_lower(arr, 1)` for one-dimensional arrays.
fn array_bound(name: &'static str, upper: bool) -> ScalarUDF {
    // bigint, not Postgres' int4: DataFusion's generate_series takes only
    // bigints, and pgJDBC writes `generate_series(1, array_upper(...))`.
    udf(name, &[2], DataType::Int64, move |args, _| {
        let dims = int_arg(&args[1])?;
        let list = args[0].as_any().downcast_ref::<ListArray>();
        let out: Int64Array = (0..args[0].len())
            .map(|i| {
                let list = list?;
                if list.is_null(i) || dims[i] != Some(1) {
                    return None;
                }
                let len = i64::from(list.value_length(i));
                if len == 0 {
                    None
                } else if upper {
                    Some(len)
                } else {
                    Some(1)
                }
            })
            .collect();
        Ok(Arc::new(out) as ArrayRef)
    })
}

fn functions(source: SnapshotSource) -> Vec<ScalarUDF> {
    let version = format!(
        "PostgreSQL {} on {}-{}, compiled by rustc, 64-bit",
        super::pg_types::SERVER_VERSION,
        std::env::consts::ARCH,
        std::env::consts::OS
    );
    let viewdef_source = source.clone();
    let indexdef_source = source.clone();
    let constraintdef_source = source.clone();
    let regclass_source = source;
    vec![
        // Session and server facts.
        constant("version", &[0], ScalarValue::Utf8(Some(version))),
        constant(
            "current_database",
            &[0],
            ScalarValue::Utf8(Some(DATABASE.into())),
        ),
        constant(
            "current_catalog",
            &[0],
            ScalarValue::Utf8(Some(DATABASE.into())),
        ),
        constant(
            "current_schema",
            &[0],
            ScalarValue::Utf8(Some("public".into())),
        ),
        constant("current_user", &[0], ScalarValue::Utf8(Some(ROLE.into()))),
        constant("session_user", &[0], ScalarValue::Utf8(Some(ROLE.into()))),
        // Postgres' `user` is `current_user` (Grafana's search-path query).
        constant("user", &[0], ScalarValue::Utf8(Some(ROLE.into()))),
        udf(
            "format",
            &[1, 2, 3, 4, 5, 6, 7, 8, 9],
            DataType::Utf8,
            |args, n| {
                let args = args.iter().map(text_arg).collect::<DfResult<Vec<_>>>()?;
                let out: StringArray = (0..n)
                    .map(|row| {
                        let template = args[0][row].as_deref()?;
                        let values: Vec<Option<&str>> =
                            args[1..].iter().map(|a| a[row].as_deref()).collect();
                        Some(pg_format(template, &values))
                    })
                    .collect();
                Ok(Arc::new(out) as ArrayRef)
            },
        ),
        constant(
            "pg_backend_pid",
            &[0],
            ScalarValue::Int32(Some(std::process::id() as i32)),
        ),
        constant("pg_is_in_recovery", &[0], ScalarValue::Boolean(Some(false))),
        udf(
            "current_schemas",
            &[1],
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            |_, n| {
                let v = ScalarValue::List(ScalarValue::new_list_nullable(
                    &[text("pg_catalog"), text("public")],
                    &DataType::Utf8,
                ));
                v.to_array_of_size(n)
            },
        ),
        udf("current_setting", &[1, 2], DataType::Utf8, |args, _| {
            let out: StringArray = text_arg(&args[0])?
                .into_iter()
                .map(|name| name.and_then(|n| setting(&n)))
                .collect();
            Ok(Arc::new(out) as ArrayRef)
        }),
        // `set_config(name, value, is_local)`: settings are not per session
        // here, so it changes nothing and returns the value, as Postgres does
        // (asyncpg sets `jit` this way before its type introspection).
        udf("set_config", &[3], DataType::Utf8, |args, _| {
            let out: StringArray = text_arg(&args[1])?.into_iter().collect();
            Ok(Arc::new(out) as ArrayRef)
        }),
        udf("pg_encoding_to_char", &[1], DataType::Utf8, |args, _| {
            let out: StringArray = int_arg(&args[0])?
                .into_iter()
                .map(|e| {
                    e.map(|e| match e {
                        0 => "SQL_ASCII",
                        6 => "UTF8",
                        _ => "",
                    })
                })
                .collect();
            Ok(Arc::new(out) as ArrayRef)
        }),
        // Names of catalog objects.
        oid_to_text("pg_get_userbyid", &[1], |o| {
            Some(if o == ROLE_OID {
                ROLE.to_string()
            } else {
                format!("unknown (OID={o})")
            })
        }),
        udf("format_type", &[2], DataType::Utf8, |args, _| {
            let oids = oid_arg(&args[0])?;
            let mods = int_arg(&args[1])?;
            let out: StringArray = oids
                .into_iter()
                .zip(mods)
                .map(|(o, m)| o.map(|o| format_type(o, m)))
                .collect();
            Ok(Arc::new(out) as ArrayRef)
        }),
        oid_to_text("pg_get_viewdef", &[1, 2], move |o| {
            viewdef_source.snapshot().relation_by_oid(o).map(definition)
        }),
        text_to_oid("to_regclass", move |name| {
            regclass_source.snapshot().regclass(name)
        }),
        text_to_oid("to_regtype", |name| {
            let name = name.trim().trim_start_matches("pg_catalog.");
            TYPES
                .iter()
                .find(|t| t.name == name || t.display == name)
                .map(|t| t.oid)
        }),
        text_to_oid("to_regnamespace", |name| match name.trim() {
            "pg_catalog" => Some(NS_PG_CATALOG),
            "public" => Some(NS_PUBLIC),
            "information_schema" => Some(NS_INFORMATION_SCHEMA),
            _ => None,
        }),
        // Visibility and privileges.
        always_true("pg_table_is_visible", &[1]),
        always_true("pg_type_is_visible", &[1]),
        always_true("pg_function_is_visible", &[1]),
        always_true("pg_operator_is_visible", &[1]),
        always_true("pg_opclass_is_visible", &[1]),
        always_true("pg_opfamily_is_visible", &[1]),
        always_true("pg_collation_is_visible", &[1]),
        always_true("pg_conversion_is_visible", &[1]),
        always_true("pg_ts_config_is_visible", &[1]),
        always_true("has_table_privilege", &[2, 3]),
        always_true("has_schema_privilege", &[2, 3]),
        always_true("has_database_privilege", &[2, 3]),
        always_true("has_column_privilege", &[3, 4]),
        always_true("has_any_column_privilege", &[2, 3]),
        always_true("has_function_privilege", &[2, 3]),
        always_true("pg_has_role", &[2, 3]),
        constant(
            "pg_relation_is_publishable",
            &[1],
            ScalarValue::Boolean(Some(false)),
        ),
        // Definitions of objects Sluice does not have, and comments.
        null_text("pg_get_expr", &[2, 3]),
        udf(
            "pg_get_indexdef",
            &[1, 3],
            DataType::Utf8,
            move |args, _| {
                let snapshot = indexdef_source.snapshot();
                let columns = match args.get(1) {
                    Some(a) => int_arg(a)?,
                    None => vec![None; args[0].len()],
                };
                let out: StringArray = oid_arg(&args[0])?
                    .into_iter()
                    .zip(columns)
                    .map(|(o, c)| super::pg_keys::indexdef(&snapshot, o?, c))
                    .collect();
                Ok(Arc::new(out) as ArrayRef)
            },
        ),
        oid_to_text("pg_get_constraintdef", &[1, 2], move |o| {
            super::pg_keys::constraintdef(&constraintdef_source.snapshot(), o)
        }),
        expand_array(),
        null_text("pg_get_ruledef", &[1, 2]),
        null_text("pg_get_triggerdef", &[1, 2]),
        null_text("pg_get_functiondef", &[1]),
        null_text("pg_get_function_arguments", &[1]),
        null_text("pg_get_function_identity_arguments", &[1]),
        null_text("pg_get_function_result", &[1]),
        null_text("pg_get_partkeydef", &[1]),
        null_text("pg_get_statisticsobjdef_columns", &[1]),
        null_text("pg_tablespace_location", &[1]),
        null_text("obj_description", &[1, 2]),
        null_text("col_description", &[2]),
        null_text("shobj_description", &[2]),
        // Sizes: materialized state lives in RocksDB, not per relation files.
        constant("pg_table_size", &[1], ScalarValue::Int64(Some(0))),
        constant("pg_relation_size", &[1, 2], ScalarValue::Int64(Some(0))),
        constant("pg_total_relation_size", &[1], ScalarValue::Int64(Some(0))),
        constant("pg_indexes_size", &[1], ScalarValue::Int64(Some(0))),
        constant("pg_database_size", &[1], ScalarValue::Int64(Some(0))),
        udf("pg_size_pretty", &[1], DataType::Utf8, |args, _| {
            let out: StringArray = int_arg(&args[0])?
                .into_iter()
                .map(|b| b.map(pg_size_pretty))
                .collect();
            Ok(Arc::new(out) as ArrayRef)
        }),
        udf("quote_ident", &[1], DataType::Utf8, |args, _| {
            let out: StringArray = text_arg(&args[0])?
                .into_iter()
                .map(|s| s.map(|s| quote_ident(&s)))
                .collect();
            Ok(Arc::new(out) as ArrayRef)
        }),
        // `parse_ident('a."B".c')` → {a,B,c}: Grafana splits table names with it.
        udf(
            "parse_ident",
            &[1, 2],
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            |args, _| {
                let mut out = ListBuilder::new(StringBuilder::new());
                for name in text_arg(&args[0])? {
                    match name.as_deref().and_then(split_qualified) {
                        Some(parts) => {
                            for part in parts {
                                out.values().append_value(part);
                            }
                            out.append(true);
                        }
                        None => out.append(false),
                    }
                }
                Ok(Arc::new(out.finish()) as ArrayRef)
            },
        ),
        array_bound("array_upper", true),
        array_bound("array_lower", false),
    ]
}

// ---------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------

impl Engine {
    /// Registers schema `pg_catalog` and the Postgres functions in the engine's
    /// DataFusion context. Called once at startup.
    pub(super) fn register_pg_catalog(self: &Arc<Self>) -> Result<()> {
        let source = SnapshotSource(Arc::downgrade(self));
        let catalog = self.ctx.catalog(DATABASE).ok_or_else(|| {
            SluiceError::Internal(format!("DataFusion catalog '{DATABASE}' is missing"))
        })?;
        // information_schema is Postgres' (ordinals from 1, Postgres type
        // names), not DataFusion's, which the session leaves out.
        for (name, tables) in [
            ("pg_catalog", TABLES),
            ("information_schema", super::information_schema::TABLES),
        ] {
            let schema = MemorySchemaProvider::new();
            for def in tables {
                let table = PgTable {
                    def,
                    schema: table_schema(def),
                    source: source.clone(),
                };
                schema
                    .register_table(def.name.to_string(), Arc::new(table))
                    .map_err(crate::planner::df_error)?;
            }
            catalog
                .register_schema(name, Arc::new(schema))
                .map_err(crate::planner::df_error)?;
        }
        for f in functions(source) {
            self.ctx.register_udf(f);
        }
        self.ctx.register_udtf(
            "pg_get_keywords",
            Arc::new(super::pg_keywords::PgGetKeywords),
        );
        Ok(())
    }

    /// Rewrites a pull query that touches `pg_catalog` (see [`CatalogRewrite`]);
    /// `None` for every other query, which runs as written.
    pub(crate) fn rewrite_pg_catalog_query(&self, query: &Query) -> Option<Query> {
        let user_relations: HashSet<String> =
            self.catalog.read().relations.keys().cloned().collect();
        rewrite_query(query, &user_relations)
    }
}

// ---------------------------------------------------------------------------
// The rewrite
// ---------------------------------------------------------------------------

/// Rewrites `query` if it touches `pg_catalog`.
pub(crate) fn rewrite_query(query: &Query, user_relations: &HashSet<String>) -> Option<Query> {
    let ctes = cte_names(query);
    if !touches_pg_catalog(query, user_relations, &ctes) {
        return None;
    }
    let mut q = query.clone();
    let mut rewrite = CatalogRewrite {
        user_relations,
        ctes: &ctes,
    };
    let _ = VisitMut::visit(&mut q, &mut rewrite);
    Some(q)
}

fn ident_name(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_ascii_lowercase(),
    }
}

fn name_parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|p| p.as_ident().map(ident_name).unwrap_or_default())
        .collect()
}

fn is_pg_catalog_qualified(name: &ObjectName) -> bool {
    let parts = name_parts(name);
    parts.len() == 2 && parts[0] == "pg_catalog"
}

/// A catalog table name written without schema, the way Postgres' search path
/// (which always starts with pg_catalog) lets clients write `FROM pg_class`.
fn is_unqualified_catalog_table(
    name: &ObjectName,
    user_relations: &HashSet<String>,
    ctes: &HashSet<String>,
) -> bool {
    let parts = name_parts(name);
    parts.len() == 1
        && table_def(&parts[0]).is_some()
        && !user_relations.contains(&parts[0])
        && !ctes.contains(&parts[0])
}

fn cte_names(query: &Query) -> HashSet<String> {
    struct Ctes(HashSet<String>);
    impl Visitor for Ctes {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            if let Some(with) = &q.with {
                for cte in &with.cte_tables {
                    self.0.insert(ident_name(&cte.alias.name));
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = Ctes(HashSet::new());
    let _ = query.visit(&mut v);
    v.0
}

/// Casts to these types only exist in Postgres' catalog world.
fn is_pg_type_name(name: &str) -> bool {
    name.starts_with("reg")
        || matches!(
            name,
            "oid" | "name" | "xid" | "cid" | "tid" | "int2vector" | "oidvector"
        )
}

fn touches_pg_catalog(
    query: &Query,
    user_relations: &HashSet<String>,
    ctes: &HashSet<String>,
) -> bool {
    struct Detect<'a> {
        user_relations: &'a HashSet<String>,
        ctes: &'a HashSet<String>,
    }
    impl Visitor for Detect<'_> {
        type Break = ();
        fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
            let parts = name_parts(name);
            if is_pg_catalog_qualified(name)
                || is_unqualified_catalog_table(name, self.user_relations, self.ctes)
                || parts.first().is_some_and(|p| p == "information_schema")
                || parts
                    .last()
                    .is_some_and(|p| SCALAR_FUNCTIONS_IN_FROM.contains(&p.as_str()))
            {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            let found = match e {
                Expr::Function(f) => is_pg_catalog_qualified(&f.name),
                Expr::Cast { data_type, .. } => match custom_type_name(data_type) {
                    Some((qualified, name)) => qualified || is_pg_type_name(&name),
                    None => false,
                },
                Expr::BinaryOp {
                    op: BinaryOperator::PGCustomBinaryOperator(_),
                    ..
                } => true,
                _ => false,
            };
            if found {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }
    query
        .visit(&mut Detect {
            user_relations,
            ctes,
        })
        .is_break()
}

/// `(qualified with pg_catalog, lower-case name)` of a user-defined type name
/// such as `pg_catalog.regclass` or `"char"`.
fn custom_type_name(dt: &SqlType) -> Option<(bool, String)> {
    match dt {
        SqlType::Regclass => Some((false, "regclass".to_string())),
        SqlType::Custom(name, _) => {
            let parts = name_parts(name);
            match parts.as_slice() {
                [n] => Some((false, n.clone())),
                [schema, n] if schema == "pg_catalog" => Some((true, n.clone())),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The AST rewrite for catalog queries. In order:
///
/// * **Output names.** Unnamed projection items get the column name Postgres
///   would give them (`pg_get_userbyid(...)` is `pg_get_userbyid`, a literal is
///   `?column?`), made unique because DataFusion requires unique names.
/// * **Names.** `FROM pg_class` becomes `FROM pg_catalog.pg_class` (Postgres'
///   search path starts with pg_catalog); `pg_catalog.f(...)` calls and table
///   functions become `f(...)` (the UDFs are registered unqualified).
/// * **Operators.** `a OPERATOR(pg_catalog.~) b` becomes `a ~ b` (any schema,
///   any of the usual comparison, regex, LIKE and arithmetic operators).
/// * **Collations.** `x COLLATE pg_catalog.default` becomes `x` (Sluice
///   compares strings bytewise, which is what the C collation does).
/// * **Casts.** `'name'::regclass` becomes `to_regclass('name')` (likewise
///   regtype, regnamespace); a cast of anything else to an OID alias type
///   (`c.oid::regclass`) keeps the OID; `::oid` casts to bigint; `name`,
///   `"char"`, `pg_catalog.text` and friends are text.
/// * **Always-empty relations.** A SELECT that inner-joins a catalog table
///   Sluice never has rows in (indexes, constraints, policies, publications,
///   inheritance, ...) has no rows either, so it becomes
///   `SELECT CAST(NULL AS TEXT) AS <same names> WHERE false` and its ORDER BY
///   and LIMIT are dropped; a scalar subquery over one becomes NULL, `EXISTS`
///   false, `IN` false and `ARRAY(...)` an empty array. This keeps the
///   constructs psql uses only on such tables (correlated `generate_series`,
///   `unnest` of outer columns, array subscripts by a row alias) away from
///   DataFusion. A SELECT with aggregates and no GROUP BY is never emptied (it
///   returns one row).
struct CatalogRewrite<'a> {
    user_relations: &'a HashSet<String>,
    ctes: &'a HashSet<String>,
}

impl VisitorMut for CatalogRewrite<'_> {
    type Break = ();

    fn pre_visit_select(&mut self, select: &mut Select) -> ControlFlow<()> {
        name_projection(select);
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let Some(derived) = scalar_function_table(factor) {
            *factor = derived;
            return ControlFlow::Continue(());
        }
        if let TableFactor::Table {
            name, args, alias, ..
        } = factor
        {
            if args.is_some() {
                if is_pg_catalog_qualified(name) {
                    name.0.remove(0);
                }
                // `generate_series(1, 3) AS i`: Postgres names the column `i`
                // too, DataFusion `value`.
                if let Some(alias) = alias {
                    if alias.columns.is_empty() && name_parts(name) == ["generate_series"] {
                        alias.columns.push(ast::TableAliasColumnDef::from_name(
                            alias.name.value.clone(),
                        ));
                    }
                }
            } else if is_unqualified_catalog_table(name, self.user_relations, self.ctes) {
                name.0
                    .insert(0, ObjectNamePart::Identifier(Ident::new("pg_catalog")));
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        rewrite_expr(expr);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if !is_pruned(query) && query_is_empty(query) {
            prune(query);
        }
        in_subqueries_as_arrays(query);
        ControlFlow::Continue(())
    }
}

/// DataFusion runs `x IN (SELECT ...)` only as a filter; Grafana's table list
/// has it in a CASE in the select list and the ORDER BY. There it becomes
/// `array_has((SELECT array_agg(v) FROM (SELECT ...) AS __in(v)), x)`, a
/// scalar subquery DataFusion can run anywhere.
fn in_subqueries_as_arrays(query: &mut Query) {
    struct AsArray;
    impl VisitorMut for AsArray {
        type Break = ();
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            let Expr::InSubquery {
                expr,
                subquery,
                negated,
            } = e
            else {
                return ControlFlow::Continue(());
            };
            let sql = format!("SELECT array_agg(__in.v) FROM ({subquery}) AS __in(v)");
            let parsed = sqlparser::parser::Parser::parse_sql(
                &sqlparser::dialect::PostgreSqlDialect {},
                &sql,
            )
            .ok()
            .and_then(|mut s| s.pop());
            let Some(ast::Statement::Query(values)) = parsed else {
                return ControlFlow::Continue(());
            };
            let needle = std::mem::replace(expr.as_mut(), null_expr());
            let has = call("array_has", vec![Expr::Subquery(values), needle]);
            *e = if *negated {
                Expr::UnaryOp {
                    op: ast::UnaryOperator::Not,
                    expr: Box::new(has),
                }
            } else {
                has
            };
            ControlFlow::Continue(())
        }
    }
    if let SetExpr::Select(select) = query.body.as_mut() {
        for item in &mut select.projection {
            let _ = VisitMut::visit(item, &mut AsArray);
        }
    }
    if let Some(order_by) = &mut query.order_by {
        let _ = VisitMut::visit(order_by, &mut AsArray);
    }
}

/// Scalar functions tools call in FROM, where Postgres reads a one-row table
/// (Grafana: `string_to_array(current_setting('search_path'), ',') s`).
const SCALAR_FUNCTIONS_IN_FROM: &[&str] = &["string_to_array", "current_schemas", "parse_ident"];

/// `f(args) [AS a]` for such a function: `(SELECT f(args) AS a) AS a`.
fn scalar_function_table(factor: &TableFactor) -> Option<TableFactor> {
    let TableFactor::Table {
        name,
        args: Some(args),
        alias,
        ..
    } = factor
    else {
        return None;
    };
    let function = name_parts(name).last()?.clone();
    if !SCALAR_FUNCTIONS_IN_FROM.contains(&function.as_str()) {
        return None;
    }
    let column = alias
        .as_ref()
        .map(|a| a.name.clone())
        .unwrap_or_else(|| Ident::new(function.clone()));
    let args: Vec<String> = args.args.iter().map(ToString::to_string).collect();
    let sql = format!("SELECT {function}({}) AS {column}", args.join(", "));
    let statement =
        sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, &sql)
            .ok()?
            .pop()?;
    let ast::Statement::Query(subquery) = statement else {
        return None;
    };
    Some(TableFactor::Derived {
        lateral: false,
        subquery,
        alias: Some(ast::TableAlias {
            explicit: true,
            name: column,
            columns: Vec::new(),
            at: None,
        }),
        sample: None,
    })
}

fn null_expr() -> Expr {
    Expr::Value(Value::Null.with_empty_span())
}

fn bool_expr(b: bool) -> Expr {
    Expr::Value(Value::Boolean(b).with_empty_span())
}

fn null_text_expr() -> Expr {
    Expr::Cast {
        kind: CastKind::Cast,
        expr: Box::new(null_expr()),
        data_type: SqlType::Text,
        array: false,
        format: None,
    }
}

fn call(name: &str, args: Vec<Expr>) -> Expr {
    Expr::Function(ast::Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
                .collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

fn is_string_literal(e: &Expr) -> bool {
    matches!(
        e,
        Expr::Value(v) if matches!(
            v.value,
            Value::SingleQuotedString(_) | Value::EscapedStringLiteral(_) | Value::DollarQuotedString(_)
        )
    )
}

/// Postgres' set-returning functions in a select list, as DataFusion's
/// unnest: `_pg_expandarray(a)` → `unnest(_pg_expandarray(a))`,
/// `generate_subscripts(a, 1)` → the positions of `a` (from 0 for the
/// `int2vector` and `oidvector` columns of pg_index, from 1 for arrays).
fn set_returning(f: &ast::Function) -> Option<Expr> {
    let parts = name_parts(&f.name);
    let name = parts.last()?.as_str();
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let args: Vec<Expr> = list
        .args
        .iter()
        .filter_map(|a| match a {
            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => Some(e.clone()),
            _ => None,
        })
        .collect();
    match (name, args.as_slice()) {
        // Only the qualified name, as Postgres has it: the unnested call
        // keeps the plain name, so it is not rewritten again.
        ("_pg_expandarray", [_]) if parts.len() == 2 && parts[0] == "information_schema" => {
            let mut inner = f.clone();
            inner.name = ObjectName::from(vec![Ident::new("_pg_expandarray")]);
            Some(call("unnest", vec![Expr::Function(inner)]))
        }
        ("generate_subscripts", [array, _]) => {
            let vector = matches!(array, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) && {
                let text = array.to_string().to_ascii_lowercase();
                ["indkey", "indoption", "indclass", "indcollation"]
                    .iter()
                    .any(|c| text.ends_with(c))
            };
            let first: i64 = if vector { 0 } else { 1 };
            let length = Expr::Cast {
                kind: ast::CastKind::Cast,
                expr: Box::new(call(
                    "array_length",
                    vec![
                        array.clone(),
                        Expr::Value(Value::Number("1".into(), false).with_empty_span()),
                    ],
                )),
                data_type: SqlType::BigInt(None),
                array: false,
                format: None,
            };
            let number =
                |v: i64| Expr::Value(Value::Number(v.to_string(), false).with_empty_span());
            let end = Expr::BinaryOp {
                left: Box::new(length),
                op: BinaryOperator::Plus,
                right: Box::new(number(first)),
            };
            Some(call(
                "unnest",
                vec![call("range", vec![number(first), end])],
            ))
        }
        _ => None,
    }
}

/// `x.typtype = 'k'` for a kind no row of pg_type has (all are 'b').
fn tests_absent_type_kind(e: &Expr) -> bool {
    let Expr::BinaryOp {
        left,
        op: BinaryOperator::Eq,
        right,
    } = e
    else {
        return false;
    };
    let is_typtype = |e: &Expr| match e {
        Expr::Identifier(id) => ident_name(id) == "typtype",
        Expr::CompoundIdentifier(ids) => ids.last().is_some_and(|id| ident_name(id) == "typtype"),
        _ => false,
    };
    let other_kind = |e: &Expr| matches!(e, Expr::Value(v) if matches!(&v.value, Value::SingleQuotedString(k) if k != "b"));
    (is_typtype(left) && other_kind(right)) || (is_typtype(right) && other_kind(left))
}

fn contains_subquery(e: &Expr) -> bool {
    struct Find;
    impl Visitor for Find {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            match e {
                Expr::Subquery(_) | Expr::InSubquery { .. } | Expr::Exists { .. } => {
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            }
        }
    }
    e.visit(&mut Find).is_break()
}

fn is_placeholder(e: &Expr) -> bool {
    matches!(e, Expr::Value(v) if matches!(v.value, Value::Placeholder(_)))
}

/// What a `::regclass` cast looks up by name: a name written out
/// (`'pg_class'::regclass`), a parameter drivers bind as text
/// (`CAST($2 AS REGCLASS)`), or a name built by a function (Metabase's
/// `CAST(FORMAT('%I.%I', s, t) AS REGCLASS)`). Anything else (`c.oid::regclass`)
/// is an OID already and stays as it is.
fn names_a_relation(e: &Expr) -> bool {
    is_string_literal(e)
        || is_placeholder(e)
        || matches!(e, Expr::Function(_))
        || matches!(
            e,
            Expr::BinaryOp {
                op: BinaryOperator::StringConcat,
                ..
            }
        )
}

fn map_operator(parts: &[String]) -> Option<BinaryOperator> {
    Some(match parts.last()?.as_str() {
        "~" => BinaryOperator::PGRegexMatch,
        "~*" => BinaryOperator::PGRegexIMatch,
        "!~" => BinaryOperator::PGRegexNotMatch,
        "!~*" => BinaryOperator::PGRegexNotIMatch,
        "~~" => BinaryOperator::PGLikeMatch,
        "~~*" => BinaryOperator::PGILikeMatch,
        "!~~" => BinaryOperator::PGNotLikeMatch,
        "!~~*" => BinaryOperator::PGNotILikeMatch,
        "=" => BinaryOperator::Eq,
        "<>" | "!=" => BinaryOperator::NotEq,
        "<" => BinaryOperator::Lt,
        ">" => BinaryOperator::Gt,
        "<=" => BinaryOperator::LtEq,
        ">=" => BinaryOperator::GtEq,
        "+" => BinaryOperator::Plus,
        "-" => BinaryOperator::Minus,
        "*" => BinaryOperator::Multiply,
        "/" => BinaryOperator::Divide,
        "%" => BinaryOperator::Modulo,
        "||" => BinaryOperator::StringConcat,
        "@>" => BinaryOperator::AtArrow,
        "<@" => BinaryOperator::ArrowAt,
        _ => return None,
    })
}

/// The SQL type DataFusion should cast to for a Postgres type name, or `None`
/// to leave the cast alone.
fn map_type(name: &str) -> Option<SqlType> {
    Some(match name {
        "text" | "name" | "char" | "bpchar" | "varchar" | "citext" | "pg_node_tree" | "aclitem" => {
            SqlType::Text
        }
        // DataFusion's u32, which the wire describes as oid (asyncpg binds
        // its type lookups' `$1::oid[]` by that description).
        "oid" => SqlType::IntUnsigned(None),
        "xid" | "cid" | "int8" => SqlType::BigInt(None),
        "int2" => SqlType::SmallInt(None),
        "int4" => SqlType::Int(None),
        "float4" => SqlType::Real,
        "float8" => SqlType::Double(ast::ExactNumberInfo::None),
        "bool" => SqlType::Boolean,
        _ => return None,
    })
}

fn rewrite_expr(expr: &mut Expr) {
    match expr {
        Expr::Function(f) if set_returning(f).is_some() => {
            if let Some(e) = set_returning(f) {
                *expr = e;
            }
        }
        // `(f(x)).field`, `(t.col).field`: DataFusion reads fields with get_field.
        Expr::CompoundFieldAccess { root, access_chain }
            if matches!(root.as_ref(), Expr::Nested(_))
                && access_chain
                    .iter()
                    .all(|a| matches!(a, ast::AccessExpr::Dot(Expr::Identifier(_)))) =>
        {
            let mut e = std::mem::replace(root.as_mut(), null_expr());
            for access in access_chain.iter() {
                if let ast::AccessExpr::Dot(Expr::Identifier(field)) = access {
                    let name =
                        Expr::Value(Value::SingleQuotedString(ident_name(field)).with_empty_span());
                    e = call("get_field", vec![e, name]);
                }
            }
            *expr = e;
        }
        Expr::Function(f) => {
            if is_pg_catalog_qualified(&f.name) {
                f.name.0.remove(0);
            }
            let is_array = name_parts(&f.name) == ["array"];
            if is_array {
                if let FunctionArguments::Subquery(q) = &f.args {
                    if query_is_empty(q) {
                        *expr = Expr::Array(ast::Array {
                            elem: vec![],
                            named: true,
                        });
                    } else if let Some(e) =
                        unnest_transform(q).or_else(|| aggregate_subquery(q, "array_agg"))
                    {
                        *expr = e;
                    }
                }
            }
        }
        // `CASE WHEN t.typtype = 'd' THEN (correlated subquery) ...`: every
        // type here is a base type ('b'), so such a branch never applies,
        // and its subquery (asyncpg's domain and composite lookups, which
        // DataFusion cannot run) becomes NULL.
        Expr::Case { conditions, .. } => {
            for when in conditions.iter_mut() {
                if tests_absent_type_kind(&when.condition) && contains_subquery(&when.result) {
                    when.result = null_expr();
                }
            }
        }
        Expr::Subquery(q) if query_is_empty(q) => *expr = null_expr(),
        Expr::Subquery(q) => {
            if let Some(e) = aggregate_subquery(q, "max") {
                *expr = e;
            }
        }
        Expr::Exists { subquery, negated } if query_is_empty(subquery) => {
            *expr = bool_expr(*negated)
        }
        Expr::InSubquery {
            subquery, negated, ..
        } if query_is_empty(subquery) => *expr = bool_expr(*negated),
        Expr::Collate { expr: inner, .. } => {
            let inner = std::mem::replace(inner.as_mut(), null_expr());
            *expr = inner;
        }
        Expr::BinaryOp { op, .. } => {
            if let BinaryOperator::PGCustomBinaryOperator(parts) = op {
                if let Some(mapped) = map_operator(parts) {
                    *op = mapped;
                }
            }
        }
        Expr::Cast {
            expr: inner,
            data_type,
            ..
        } => {
            let Some((_, name)) = custom_type_name(data_type) else {
                if let SqlType::Array(ast::ArrayElemTypeDef::SquareBracket(elem, _)) = data_type {
                    if let Some(mapped) = custom_type_name(elem).and_then(|(_, n)| map_type(&n)) {
                        **elem = mapped;
                    }
                }
                return;
            };
            let lookup = match name.as_str() {
                "regclass" => Some("to_regclass"),
                "regtype" => Some("to_regtype"),
                "regnamespace" => Some("to_regnamespace"),
                _ => None,
            };
            if name.starts_with("reg") {
                let inner = std::mem::replace(inner.as_mut(), null_expr());
                *expr = match lookup {
                    // A name (`'pg_class'::regclass`, or a parameter drivers
                    // bind as text: `CAST($2 AS REGCLASS)`) is looked up.
                    Some(f) if names_a_relation(&inner) => call(f, vec![inner]),
                    _ => inner,
                };
            } else if let Some(mapped) = map_type(&name) {
                *data_type = mapped;
            }
        }
        _ => {}
    }
}

/// The one expression a simple `SELECT e FROM ... [WHERE ...] [ORDER BY ...]`
/// projects, and its SELECT, when it has no grouping, aggregates, DISTINCT or
/// LIMIT.
fn single_expression(q: &Query) -> Option<(&Select, &Expr)> {
    if q.with.is_some() || q.limit_clause.is_some() || q.fetch.is_some() {
        return None;
    }
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    if s.projection.len() != 1
        || s.distinct.is_some()
        || !group_by_is_empty(s)
        || s.having.is_some()
        || has_aggregate(s)
    {
        return None;
    }
    match &s.projection[0] {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some((s, e)),
        _ => None,
    }
}

/// `ARRAY(SELECT e FROM unnest(a) x)` is `array_transform(a, x -> e)` (or just
/// `a` when `e` is `x`).
fn unnest_transform(q: &Query) -> Option<Expr> {
    let (s, e) = single_expression(q)?;
    if q.order_by.is_some()
        || s.selection.is_some()
        || s.from.len() != 1
        || !s.from[0].joins.is_empty()
    {
        return None;
    }
    let (array, alias) = match &s.from[0].relation {
        TableFactor::UNNEST {
            alias,
            array_exprs,
            with_offset: false,
            with_ordinality: false,
            ..
        } if array_exprs.len() == 1 => (array_exprs[0].clone(), alias.as_ref()?),
        TableFactor::Table {
            name,
            args: Some(args),
            alias,
            ..
        } if name_parts(name) == ["unnest"] && args.args.len() == 1 => match &args.args[0] {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(a)) => (a.clone(), alias.as_ref()?),
            _ => return None,
        },
        _ => return None,
    };
    let var = alias
        .columns
        .first()
        .map(|c| c.name.clone())
        .unwrap_or_else(|| alias.name.clone());
    if matches!(e, Expr::Identifier(i) if ident_name(i) == ident_name(&var)) {
        return Some(array);
    }
    let lambda = Expr::Lambda(ast::LambdaFunction {
        params: ast::OneOrManyWithParens::One(ast::LambdaFunctionParameter {
            name: var,
            data_type: None,
        }),
        body: Box::new(e.clone()),
        syntax: ast::LambdaSyntax::Arrow,
    });
    Some(call("array_transform", vec![array, lambda]))
}

/// `(SELECT e FROM ... ORDER BY o)` as `(SELECT agg(e ORDER BY o) FROM ...)`:
/// `array_agg` for `ARRAY(subquery)`, `max` for a scalar subquery (which
/// Postgres requires to return at most one row, and DataFusion requires to be
/// aggregated when correlated).
fn aggregate_subquery(q: &Query, aggregate: &str) -> Option<Expr> {
    let (_, e) = single_expression(q)?;
    let mut order = Vec::new();
    if let Some(order_by) = &q.order_by {
        let ast::OrderByKind::Expressions(exprs) = &order_by.kind else {
            return None;
        };
        for o in exprs {
            let mut o = o.clone();
            // `ORDER BY 1` names the projected expression.
            if matches!(&o.expr, Expr::Value(v) if matches!(&v.value, Value::Number(n, _) if n == "1"))
            {
                o.expr = e.clone();
            }
            order.push(o);
        }
    }
    let mut agg = call(aggregate, vec![e.clone()]);
    if let Expr::Function(f) = &mut agg {
        if let FunctionArguments::List(list) = &mut f.args {
            if !order.is_empty() && aggregate == "array_agg" {
                list.clauses
                    .push(ast::FunctionArgumentClause::OrderBy(order));
            }
        }
    }
    let mut q = q.clone();
    q.order_by = None;
    if let SetExpr::Select(s) = q.body.as_mut() {
        s.projection = vec![SelectItem::UnnamedExpr(agg)];
    }
    Some(Expr::Subquery(Box::new(q)))
}

/// The name Postgres gives an unnamed output column (FigureColname).
fn pg_column_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(i) => Some(ident_name(i)),
        Expr::CompoundIdentifier(parts) => parts.last().map(ident_name),
        Expr::Function(f) => name_parts(&f.name).last().cloned(),
        Expr::Cast {
            expr, data_type, ..
        } => pg_column_name(expr).or_else(|| {
            Some(match custom_type_name(data_type) {
                Some((_, n)) => n,
                None => data_type.to_string().to_ascii_lowercase(),
            })
        }),
        Expr::Nested(inner) | Expr::Collate { expr: inner, .. } => pg_column_name(inner),
        Expr::Case { .. } => Some("case".into()),
        Expr::Exists { .. } => Some("exists".into()),
        Expr::Array(_) => Some("array".into()),
        Expr::Subquery(q) => match q.body.as_ref() {
            SetExpr::Select(s) => match s.projection.first() {
                Some(SelectItem::ExprWithAlias { alias, .. }) => Some(ident_name(alias)),
                Some(SelectItem::UnnamedExpr(e)) => pg_column_name(e),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

/// Gives every unnamed, non-column projection item its Postgres name.
fn name_projection(select: &mut Select) {
    let mut used: HashSet<String> = select
        .projection
        .iter()
        .filter_map(|item| match item {
            SelectItem::ExprWithAlias { alias, .. } => Some(ident_name(alias)),
            _ => None,
        })
        .collect();
    for item in select.projection.iter_mut() {
        let SelectItem::UnnamedExpr(e) = item else {
            continue;
        };
        if matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
            continue;
        }
        let base = pg_column_name(e).unwrap_or_else(|| "?column?".to_string());
        let mut name = base.clone();
        let mut n = 1;
        while used.contains(&name) {
            n += 1;
            name = format!("{base}_{n}");
        }
        used.insert(name.clone());
        let e = std::mem::replace(e, null_expr());
        *item = SelectItem::ExprWithAlias {
            expr: e,
            alias: Ident::with_quote('"', name),
        };
    }
}

fn is_empty_table(name: &ObjectName) -> bool {
    let parts = name_parts(name);
    let table = match parts.as_slice() {
        [schema, t] if schema == "pg_catalog" => t,
        [catalog, schema, t] if catalog == DATABASE && schema == "pg_catalog" => t,
        _ => return false,
    };
    table_def(table).is_some_and(|d| d.rows.is_none())
}

fn factor_is_empty(factor: &TableFactor) -> bool {
    match factor {
        TableFactor::Table {
            name, args: None, ..
        } => is_empty_table(name),
        TableFactor::Derived { subquery, .. } => query_is_empty(subquery),
        TableFactor::NestedJoin {
            table_with_joins, ..
        } => join_is_empty(table_with_joins),
        _ => false,
    }
}

fn join_is_empty(twj: &TableWithJoins) -> bool {
    let mut empty = factor_is_empty(&twj.relation);
    for join in &twj.joins {
        let right = factor_is_empty(&join.relation);
        empty = match &join.join_operator {
            JoinOperator::Join(_)
            | JoinOperator::Inner(_)
            | JoinOperator::CrossJoin(_)
            | JoinOperator::StraightJoin(_)
            | JoinOperator::CrossApply => empty || right,
            JoinOperator::Left(_) | JoinOperator::LeftOuter(_) | JoinOperator::OuterApply => empty,
            JoinOperator::Right(_) | JoinOperator::RightOuter(_) => right,
            JoinOperator::FullOuter(_) => empty && right,
            JoinOperator::Semi(_) | JoinOperator::LeftSemi(_) => empty || right,
            JoinOperator::RightSemi(_) => empty || right,
            JoinOperator::Anti(_) | JoinOperator::LeftAnti(_) => empty,
            JoinOperator::RightAnti(_) => right,
            _ => false,
        };
    }
    empty
}

const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "string_agg",
    "array_agg",
    "bool_and",
    "bool_or",
    "every",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "stddev",
    "variance",
    "bit_and",
    "bit_or",
];

fn has_aggregate(select: &Select) -> bool {
    /// Finds aggregate calls of this SELECT (not of its subqueries).
    struct Agg(bool, usize);
    impl Visitor for Agg {
        type Break = ();
        fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.1 += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.1 -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::Function(f) = e {
                if self.1 == 0
                    && f.over.is_none()
                    && name_parts(&f.name)
                        .last()
                        .is_some_and(|n| AGGREGATES.contains(&n.as_str()))
                {
                    self.0 = true;
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut agg = Agg(false, 0);
    let _ = select.projection.visit(&mut agg);
    let _ = select.having.visit(&mut agg);
    agg.0
}

fn group_by_is_empty(select: &Select) -> bool {
    match &select.group_by {
        GroupByExpr::Expressions(exprs, _) => exprs.is_empty(),
        GroupByExpr::All(_) => false,
    }
}

fn select_is_empty(select: &Select) -> bool {
    if group_by_is_empty(select) && has_aggregate(select) {
        return false;
    }
    let where_false =
        matches!(&select.selection, Some(Expr::Value(v)) if v.value == Value::Boolean(false));
    where_false || select.from.iter().any(join_is_empty)
}

fn set_expr_is_empty(body: &SetExpr) -> bool {
    match body {
        SetExpr::Select(s) => select_is_empty(s),
        SetExpr::Query(q) => query_is_empty(q),
        SetExpr::SetOperation {
            op, left, right, ..
        } => match op {
            SetOperator::Union => set_expr_is_empty(left) && set_expr_is_empty(right),
            SetOperator::Intersect => set_expr_is_empty(left) || set_expr_is_empty(right),
            SetOperator::Except | SetOperator::Minus => set_expr_is_empty(left),
        },
        _ => false,
    }
}

/// True when the query provably returns no rows (see [`CatalogRewrite`]).
fn query_is_empty(q: &Query) -> bool {
    set_expr_is_empty(&q.body)
}

/// The output column names of a query body (its leftmost SELECT), or `None`
/// when they cannot be known without the schema (`*`).
fn output_names(body: &SetExpr) -> Option<Vec<String>> {
    match body {
        SetExpr::Select(s) => s
            .projection
            .iter()
            .map(|item| match item {
                SelectItem::ExprWithAlias { alias, .. } => Some(ident_name(alias)),
                SelectItem::UnnamedExpr(e) => {
                    Some(pg_column_name(e).unwrap_or_else(|| "?column?".into()))
                }
                _ => None,
            })
            .collect(),
        SetExpr::Query(q) => output_names(&q.body),
        SetExpr::SetOperation { left, .. } => output_names(left),
        _ => None,
    }
}

fn leftmost_select(body: &SetExpr) -> Option<&Select> {
    match body {
        SetExpr::Select(s) => Some(s),
        SetExpr::Query(q) => leftmost_select(&q.body),
        SetExpr::SetOperation { left, .. } => leftmost_select(left),
        _ => None,
    }
}

/// A query already emptied by [`prune`].
fn is_pruned(q: &Query) -> bool {
    match q.body.as_ref() {
        SetExpr::Select(s) => {
            s.from.is_empty()
                && matches!(&s.selection, Some(Expr::Value(v)) if v.value == Value::Boolean(false))
                && q.order_by.is_none()
        }
        _ => false,
    }
}

/// Replaces a query that returns no rows with `SELECT CAST(NULL AS TEXT) AS
/// <name>, ... WHERE false` (same column names).
fn prune(query: &mut Query) {
    let Some(names) = output_names(&query.body) else {
        return;
    };
    let Some(template) = leftmost_select(&query.body) else {
        return;
    };
    let mut select = template.clone();
    let mut used = HashSet::new();
    select.projection = names
        .into_iter()
        .map(|base| {
            let mut name = base.clone();
            let mut n = 1;
            while !used.insert(name.clone()) {
                n += 1;
                name = format!("{base}_{n}");
            }
            SelectItem::ExprWithAlias {
                expr: null_text_expr(),
                alias: Ident::with_quote('"', name),
            }
        })
        .collect();
    select.distinct = None;
    select.from = vec![];
    select.selection = Some(bool_expr(false));
    select.group_by = GroupByExpr::Expressions(vec![], vec![]);
    select.having = None;
    select.named_window = vec![];
    select.qualify = None;
    select.sort_by = vec![];
    query.with = None;
    *query.body = SetExpr::Select(Box::new(select));
    query.order_by = None;
    query.limit_clause = None;
    query.fetch = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::GenericDialect;
    use sqlparser::parser::Parser;

    fn parse(sql: &str) -> Query {
        *Parser::new(&GenericDialect {})
            .try_with_sql(sql)
            .expect("tokenizes")
            .parse_query()
            .expect("parses")
    }

    fn rewritten(sql: &str) -> String {
        let users: HashSet<String> = ["pageviews".to_string()].into_iter().collect();
        rewrite_query(&parse(sql), &users)
            .expect("a catalog query is rewritten")
            .to_string()
    }

    #[test]
    fn user_queries_are_left_alone() {
        let users: HashSet<String> = ["pageviews".to_string()].into_iter().collect();
        for sql in [
            "SELECT url, COUNT(*) FROM pageviews GROUP BY url",
            "SELECT version()",
        ] {
            assert!(rewrite_query(&parse(sql), &users).is_none(), "{sql}");
        }
        // information_schema is a catalog too: tools' queries over it need
        // the rewrite (Grafana's `string_to_array(...) s` in FROM).
        assert!(rewrite_query(&parse("SELECT * FROM information_schema.tables"), &users).is_some());
    }

    #[test]
    fn psql_relation_lookup() {
        let sql = rewritten(
            "SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c \
             LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname OPERATOR(pg_catalog.~) '^(pageviews)$' COLLATE pg_catalog.default \
             AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 2, 3",
        );
        assert!(sql.contains("c.relname ~ '^(pageviews)$'"), "{sql}");
        assert!(!sql.contains("COLLATE"), "{sql}");
        assert!(!sql.contains("OPERATOR"), "{sql}");
        assert!(sql.contains(" pg_table_is_visible(c.oid)"), "{sql}");
    }

    #[test]
    fn unqualified_catalog_tables_and_casts() {
        let sql = rewritten(
            "SELECT c.oid::regclass, c.reloftype::pg_catalog.regtype::pg_catalog.text, '16384'::pg_catalog.oid \
             FROM pg_class c WHERE c.oid = 'pageviews'::regclass",
        );
        assert!(sql.contains("FROM pg_catalog.pg_class c"), "{sql}");
        assert!(sql.contains("to_regclass('pageviews')"), "{sql}");
        assert!(sql.contains("c.oid AS \"oid\""), "{sql}");
        assert!(sql.contains("c.reloftype::TEXT AS \"reloftype\""), "{sql}");
        assert!(sql.contains("'16384'::INT UNSIGNED"), "{sql}");
    }

    #[test]
    fn a_user_relation_named_like_a_catalog_table_is_not_requalified() {
        let users: HashSet<String> = ["pg_tables".to_string()].into_iter().collect();
        let q = parse("SELECT * FROM pg_tables, pg_catalog.pg_class");
        let sql = rewrite_query(&q, &users).expect("rewritten").to_string();
        assert!(sql.contains("FROM pg_tables, pg_catalog.pg_class"), "{sql}");
    }

    #[test]
    fn joins_with_always_empty_catalogs_are_pruned() {
        // psql's \d publications query: correlated generate_series, array subscripts.
        let sql = rewritten(
            "SELECT pubname, NULL, NULL FROM pg_catalog.pg_publication p \
               JOIN pg_catalog.pg_publication_namespace pn ON p.oid = pn.pnpubid \
               JOIN pg_catalog.pg_class pc ON pc.relnamespace = pn.pnnspid \
             WHERE pc.oid ='16384' and pg_catalog.pg_relation_is_publishable('16384') \
             UNION \
             SELECT pubname, pg_get_expr(pr.prqual, c.oid), \
               (CASE WHEN pr.prattrs IS NOT NULL THEN \
                 (SELECT string_agg(attname, ', ') \
                    FROM pg_catalog.generate_series(0, pg_catalog.array_upper(pr.prattrs::pg_catalog.int2[], 1)) s, \
                         pg_catalog.pg_attribute WHERE attrelid = pr.prrelid AND attnum = prattrs[s]) \
                ELSE NULL END) \
             FROM pg_catalog.pg_publication p JOIN pg_catalog.pg_publication_rel pr ON p.oid = pr.prpubid \
               JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid WHERE pr.prrelid = '16384' \
             ORDER BY 1",
        );
        assert_eq!(
            sql,
            "SELECT CAST(NULL AS TEXT) AS \"pubname\", CAST(NULL AS TEXT) AS \"?column?\", \
             CAST(NULL AS TEXT) AS \"?column?_2\" WHERE false"
        );
    }

    #[test]
    fn tools_queries_become_what_datafusion_runs() {
        assert_eq!(
            pg_format("%I.%I", &[Some("public"), Some("A b")]),
            "public.\"A b\""
        );
        assert_eq!(
            pg_format("%s-%L-%L-%%", &[None, Some("it's"), None]),
            "-'it''s'-NULL-%"
        );
        let sql = rewritten(
            "SELECT (information_schema._pg_expandarray(i.indkey)).n, \
               generate_subscripts(c.conkey, 1) AS ord, generate_subscripts(i.indkey, 1) AS pos \
             FROM pg_catalog.pg_index i, pg_catalog.pg_constraint c",
        );
        assert!(
            sql.contains("get_field((unnest(_pg_expandarray(i.indkey))), 'n')")
                && sql.contains("unnest(range(1, CAST(array_length(c.conkey, 1) AS BIGINT) + 1))")
                && sql.contains("unnest(range(0, CAST(array_length(i.indkey, 1) AS BIGINT) + 0))"),
            "{sql}"
        );
        let sql = rewritten(
            "SELECT s[i], CASE WHEN 'x' IN (SELECT nspname FROM pg_namespace) THEN 0 END \
             FROM generate_series(1, 2) AS i, string_to_array('a,b', ',') s",
        );
        assert!(
            sql.contains("FROM generate_series(1, 2) AS i (i)")
                && sql.contains("(SELECT string_to_array('a,b', ',') AS s) AS s")
                && sql.contains("array_has((SELECT array_agg(__in.v) FROM (SELECT nspname"),
            "{sql}"
        );
        let sql = rewritten(
            "SELECT CAST(format('%I', 't') AS regclass), c.oid::regclass FROM pg_class c",
        );
        assert!(
            sql.contains("to_regclass(format('%I', 't'))") && sql.contains(", c.oid"),
            "{sql}"
        );
    }

    #[test]
    fn left_joins_keep_rows_and_empty_subqueries_become_constants() {
        let sql = rewritten(
            "SELECT a.attname, (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true) \
               FROM pg_catalog.pg_attrdef d WHERE d.adrelid = a.attrelid AND a.atthasdef), \
               EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = a.attrelid), \
               ARRAY(SELECT polname FROM pg_catalog.pg_policy) \
             FROM pg_catalog.pg_attribute a LEFT JOIN pg_catalog.pg_description d ON d.objoid = a.attrelid",
        );
        assert_eq!(
            sql,
            "SELECT a.attname, NULL AS \"pg_get_expr\", false AS \"exists\", ARRAY[] AS \"array\" \
             FROM pg_catalog.pg_attribute a LEFT JOIN pg_catalog.pg_description d ON d.objoid = a.attrelid"
        );
    }

    #[test]
    fn aggregates_over_empty_catalogs_still_return_a_row() {
        let sql = rewritten("SELECT count(*) FROM pg_catalog.pg_index");
        assert_eq!(sql, "SELECT count(*) AS \"count\" FROM pg_catalog.pg_index");
    }

    #[test]
    fn array_subqueries_become_functions() {
        let sql = rewritten(
            "SELECT pg_catalog.array_to_string(c.reloptions || array(select 'toast.' || x \
               from pg_catalog.unnest(tc.reloptions) x), ', ') FROM pg_catalog.pg_class c \
             LEFT JOIN pg_catalog.pg_class tc ON (c.reltoastrelid = tc.oid)",
        );
        assert!(
            sql.contains("array_to_string(c.reloptions || array_transform(tc.reloptions, x -> 'toast.' || x), ', ')"),
            "{sql}"
        );
        let sql = rewritten(
            "SELECT ARRAY(SELECT attname FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid ORDER BY 1) \
             FROM pg_catalog.pg_class c",
        );
        assert!(
            sql.contains("(SELECT array_agg(attname ORDER BY attname) FROM"),
            "{sql}"
        );
    }

    #[test]
    fn type_names_and_helpers() {
        assert_eq!(format_type(23, Some(-1)), "integer");
        assert_eq!(format_type(1043, Some(24)), "character varying(20)");
        assert_eq!(format_type(1700, Some((10 << 16 | 2) + 4)), "numeric(10,2)");
        assert_eq!(format_type(1009, None), "text[]");
        assert_eq!(format_type(424_242, None), "???");
        assert_eq!(column_type(&DataType::Utf8), (25, -1));
        assert_eq!(column_type(&DataType::Int64), (20, -1));
        assert_eq!(
            split_qualified("public.\"Mixed\"\"Case\""),
            Some(vec!["public".to_string(), "Mixed\"Case".to_string()])
        );
        assert_eq!(quote_ident("per_url"), "per_url");
        assert_eq!(quote_ident("Per Url"), "\"Per Url\"");
        assert_eq!(quote_ident("select"), "\"select\"");
        assert_eq!(pg_size_pretty(8192), "8192 bytes");
        assert_eq!(pg_size_pretty(7_667_712), "7488 kB");
        let oid = relation_oid("pageviews");
        assert!(oid >= FIRST_USER_OID && oid < i32::MAX as u32);
        assert_eq!(oid, relation_oid("pageviews"));
    }

    #[test]
    fn every_catalog_table_builds() {
        let snapshot = Snapshot { relations: vec![] };
        for def in TABLES {
            let schema = table_schema(def);
            let rows = def.rows.map(|f| f(&snapshot)).unwrap_or_default();
            for row in &rows {
                assert_eq!(row.len(), def.columns.len(), "{}", def.name);
            }
            let batch = build_batch(&schema, &rows).unwrap_or_else(|e| panic!("{}: {e}", def.name));
            assert_eq!(batch.num_rows(), rows.len());
        }
    }
}
