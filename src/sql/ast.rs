//! Sluice statements. Standard SQL pieces (queries, expressions, data types) are
//! sqlparser's own AST types.

use std::collections::BTreeMap;

use sqlparser::ast::{DataType, Expr, Ident, Query};

use super::window::WindowClause;
use crate::error::SqlPosition;

/// One statement of a script, with the text it came from.
#[derive(Debug, Clone)]
pub struct ParsedStatement {
    pub statement: Statement,
    /// The statement's own text (without the trailing semicolon).
    pub text: String,
    /// Where the statement starts in the script.
    pub position: SqlPosition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelationKind {
    Stream,
    Table,
}

impl RelationKind {
    pub fn keyword(self) -> &'static str {
        match self {
            RelationKind::Stream => "STREAM",
            RelationKind::Table => "TABLE",
        }
    }
}

/// How a continuous query emits results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmitMode {
    Changes,
    Final,
}

#[derive(Debug, Clone)]
pub struct ColumnSpec {
    pub name: Ident,
    pub data_type: DataType,
    /// `KEY` (stream) or `PRIMARY KEY` (table).
    pub key: bool,
    pub not_null: bool,
}

/// `WITH (name = value, ...)`: names lower-cased, values as written (unquoted).
pub type WithOptions = BTreeMap<String, WithValue>;

#[derive(Debug, Clone, PartialEq)]
pub struct WithValue {
    pub value: String,
    pub position: SqlPosition,
}

/// `CREATE STREAM|TABLE name (columns) WITH (...)`: declares a relation over a topic.
#[derive(Debug, Clone)]
pub struct CreateSource {
    pub kind: RelationKind,
    pub name: Ident,
    pub or_replace: bool,
    pub if_not_exists: bool,
    pub columns: Vec<ColumnSpec>,
    /// `WATERMARK FOR ts AS ts - INTERVAL '5' SECOND` in the column list.
    pub watermark: Option<WatermarkSpec>,
    pub with: WithOptions,
}

/// Event time from `column`, with watermarks `delay_ms` behind the largest seen.
#[derive(Debug, Clone, PartialEq)]
pub struct WatermarkSpec {
    pub column: Ident,
    pub delay_ms: i64,
}

/// `CREATE STREAM|TABLE|MATERIALIZED VIEW name [WITH (...)] AS SELECT ...`.
#[derive(Debug, Clone)]
pub struct CreateAs {
    pub kind: RelationKind,
    /// Written as CREATE MATERIALIZED VIEW.
    pub materialized_view: bool,
    pub name: Ident,
    pub or_replace: bool,
    pub if_not_exists: bool,
    pub with: WithOptions,
    pub query: Box<Query>,
    /// Text of the SELECT (without EMIT), kept so the query can be re-planned on restart.
    pub query_text: String,
    pub emit: Option<EmitMode>,
    pub window: Option<WindowClause>,
}

/// `CREATE [OR REPLACE] VIEW [IF NOT EXISTS] name AS SELECT ...`: a named
/// query, expanded where it is read.
#[derive(Debug, Clone)]
pub struct CreateView {
    pub name: Ident,
    pub or_replace: bool,
    pub if_not_exists: bool,
    pub query: Box<Query>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShowWhat {
    Streams,
    Tables,
    Queries,
    Topics,
    Properties,
    /// `SHOW VIEWS`: the named queries (CREATE VIEW).
    Views,
    /// `SHOW server_version` and other Postgres settings drivers ask for.
    Setting(String),
    /// `SHOW CREATE {STREAM | TABLE | VIEW | MATERIALIZED VIEW} name`: the
    /// statement that made it. `kind` is what was asked for (VIEW: either).
    Create {
        kind: Option<RelationKind>,
        name: Ident,
    },
}

#[derive(Debug, Clone)]
pub enum Statement {
    CreateSource(CreateSource),
    CreateAs(CreateAs),
    CreateView(CreateView),
    /// `DROP VIEW [IF EXISTS] name`: a view, else a table made with
    /// CREATE MATERIALIZED VIEW.
    DropView {
        name: Ident,
        if_exists: bool,
    },
    /// `INSERT INTO target SELECT ...`: a continuous query appending to a stream.
    InsertSelect {
        target: Ident,
        query: Box<Query>,
        query_text: String,
        window: Option<WindowClause>,
    },
    /// `INSERT INTO target [(cols)] VALUES (...), ...`: produce rows now.
    InsertValues {
        target: Ident,
        columns: Vec<Ident>,
        rows: Vec<Vec<Expr>>,
    },
    /// A SELECT: a pull query, or a push query with EMIT CHANGES.
    Select {
        query: Box<Query>,
        query_text: String,
        emit: Option<EmitMode>,
        window: Option<WindowClause>,
    },
    Drop {
        kind: Option<RelationKind>,
        name: Ident,
        if_exists: bool,
        delete_topic: bool,
    },
    Show(ShowWhat),
    Describe {
        name: Ident,
        extended: bool,
    },
    /// `TERMINATE query_id` or `TERMINATE ALL` (`None`).
    Terminate(Option<String>),
    RunScript(String),
    Set {
        name: String,
        value: String,
    },
    Unset(String),
    Print {
        topic: String,
        from_beginning: bool,
        limit: Option<u64>,
    },
    Explain(Box<Statement>),
    /// Session statements Postgres drivers and tools send (`SET extra_float_digits = 3`,
    /// `BEGIN`, `DISCARD ALL` ...). Accepted so clients connect; they change nothing.
    ClientCompat {
        tag: String,
    },
    /// `DECLARE name CURSOR FOR <SELECT>`: a pull query's rows, or a push
    /// query's changes (a subscription), read a few at a time with FETCH.
    DeclareCursor {
        name: String,
        query: Box<Statement>,
    },
    /// `FETCH [n | ALL | NEXT] [FROM | IN] name`; `None` is ALL.
    Fetch {
        name: String,
        count: Option<u64>,
    },
    /// `CLOSE name | ALL`; `None` is ALL.
    CloseCursor(Option<String>),
}
