//! Errors users see. SQL errors carry a line, a column and a hint; every error maps
//! to a Postgres SQLSTATE so pgwire clients can react to it.

use std::fmt;

/// A position in the SQL text the user sent, 1-based like editors show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlPosition {
    pub line: u64,
    pub column: u64,
}

impl From<sqlparser::tokenizer::Location> for SqlPosition {
    fn from(l: sqlparser::tokenizer::Location) -> Self {
        SqlPosition {
            line: l.line,
            column: l.column,
        }
    }
}

impl SqlPosition {
    /// Where an identifier starts in the statement text.
    pub fn of(ident: &sqlparser::ast::Ident) -> Self {
        ident.span.start.into()
    }
}

impl fmt::Display for SqlPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SluiceError {
    /// The statement is not valid SQL for Sluice, or refers to something wrong.
    #[error("{message}{}{}", position.map(|p| format!(" at {p}")).unwrap_or_default(), hint.as_ref().map(|h| format!("\nHINT: {h}")).unwrap_or_default())]
    Sql {
        message: String,
        position: Option<SqlPosition>,
        hint: Option<String>,
        sqlstate: &'static str,
    },
    #[error("{0}")]
    Catalog(String),
    #[error("{context}: {source}")]
    Connector {
        context: String,
        #[source]
        source: ConnectorError,
    },
    #[error("state store: {0}")]
    State(String),
    /// State this build must not read (another format, another plan): the
    /// query stays stopped with this message instead of misreading it.
    #[error("incompatible state: {0}")]
    IncompatibleState(String),
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("{0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
}

/// How to allow a refused path.
pub const PATHS_HINT: &str = "the server reads and writes files only under its --allowed-path \
     directories (by default its data directory)";

impl SluiceError {
    pub fn sql(message: impl Into<String>) -> Self {
        SluiceError::Sql {
            message: message.into(),
            position: None,
            hint: None,
            sqlstate: "42601",
        }
    }

    pub fn sql_at(
        message: impl Into<String>,
        position: Option<SqlPosition>,
        hint: Option<String>,
    ) -> Self {
        SluiceError::Sql {
            message: message.into(),
            position,
            hint,
            sqlstate: "42601",
        }
    }

    /// An error about a name that does not exist (SQLSTATE 42P01).
    pub fn undefined(
        message: impl Into<String>,
        position: Option<SqlPosition>,
        hint: Option<String>,
    ) -> Self {
        SluiceError::Sql {
            message: message.into(),
            position,
            hint,
            sqlstate: "42P01",
        }
    }

    /// An error about a name that already exists (SQLSTATE 42P07).
    pub fn duplicate(message: impl Into<String>, hint: Option<String>) -> Self {
        SluiceError::Sql {
            message: message.into(),
            position: None,
            hint,
            sqlstate: "42P07",
        }
    }

    pub fn connector(context: impl Into<String>, source: ConnectorError) -> Self {
        SluiceError::Connector {
            context: context.into(),
            source,
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SluiceError::Io {
            context: context.into(),
            source,
        }
    }

    /// The Postgres SQLSTATE for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            SluiceError::Sql { sqlstate, .. } => sqlstate,
            SluiceError::Catalog(_) => "42000",
            SluiceError::DataFusion(e) => match e.find_root() {
                datafusion::error::DataFusionError::Plan(_)
                | datafusion::error::DataFusionError::SchemaError(..)
                | datafusion::error::DataFusionError::SQL(..) => "42000",
                datafusion::error::DataFusionError::NotImplemented(_) => "0A000",
                datafusion::error::DataFusionError::ArrowError(e, _) => arrow_sqlstate(e),
                // Evaluating the user's expressions (constant folding included):
                // bad values, not a server fault.
                datafusion::error::DataFusionError::Execution(_) => "22000",
                datafusion::error::DataFusionError::ResourcesExhausted(_) => "53200",
                _ => "XX000",
            },
            SluiceError::Arrow(e) => arrow_sqlstate(e),
            SluiceError::Connector {
                source: ConnectorError::NotAllowed { .. },
                ..
            } => "42501",
            SluiceError::Connector { .. } => "08006",
            SluiceError::Io { .. } => "58030",
            _ => "XX000",
        }
    }

    /// A statement refused because it is too large or too deeply nested.
    pub fn too_complex(message: impl Into<String>, hint: impl Into<String>) -> Self {
        SluiceError::Sql {
            message: message.into(),
            position: None,
            hint: Some(hint.into()),
            sqlstate: "54001",
        }
    }

    /// An error that may go away by itself (a topic or broker that is away, a
    /// file not there yet): the query is retried instead of left stopped.
    pub fn is_transient(&self) -> bool {
        match self {
            // Retrying does not make a refused path allowed.
            SluiceError::Connector {
                source: ConnectorError::NotAllowed { .. },
                ..
            } => false,
            SluiceError::Connector { .. } | SluiceError::Io { .. } | SluiceError::State(_) => true,
            _ => false,
        }
    }

    /// The message without position and hint (those are separate fields in pgwire).
    pub fn message(&self) -> String {
        match self {
            SluiceError::Sql { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    pub fn hint(&self) -> Option<&str> {
        match self {
            SluiceError::Sql { hint, .. } => hint.as_deref(),
            SluiceError::Connector {
                source: ConnectorError::NotAllowed { .. },
                ..
            } => Some(PATHS_HINT),
            _ => None,
        }
    }

    pub fn position(&self) -> Option<SqlPosition> {
        match self {
            SluiceError::Sql { position, .. } => *position,
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, SluiceError>;

/// The SQLSTATE of an Arrow compute error: data exceptions are the user's values.
fn arrow_sqlstate(e: &arrow::error::ArrowError) -> &'static str {
    use arrow::error::ArrowError;
    match e {
        ArrowError::DivideByZero => "22012",
        ArrowError::CastError(_) | ArrowError::ParseError(_) => "22P02",
        ArrowError::ArithmeticOverflow(_) => "22003",
        ArrowError::ComputeError(_) | ArrowError::InvalidArgumentError(_) => "22000",
        _ => "XX000",
    }
}

/// What a log backend (the local log, Kafka, files) reports. It lives here,
/// below the connectors, so that [`SluiceError`] can carry it without the
/// error types depending on the connectors.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("kafka: {0}")]
    Kafka(String),
    #[error("local log {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("local log {path} is corrupt: {detail}")]
    Corrupt { path: String, detail: String },
    #[error("invalid topic name '{name}': {reason}")]
    InvalidTopicName { name: String, reason: String },
    /// The caller asked for something the backend cannot do (a partition that does
    /// not exist, a record larger than the log accepts, ...).
    #[error("{0}")]
    InvalidRequest(String),
    /// A client named a file the server must not touch (see
    /// `connectors::file_access`).
    #[error("path '{path}' is not allowed: {reason}")]
    NotAllowed { path: String, reason: String },
}
