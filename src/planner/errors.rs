//! DataFusion errors → Sluice SQL errors with line, column and a hint.

use datafusion::error::DataFusionError;

use crate::error::{SluiceError, SqlPosition};

pub fn df_error(e: DataFusionError) -> SluiceError {
    let diagnostic = e.diagnostic().cloned();
    let root = e.find_root();
    let is_user_error = matches!(
        root,
        DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::SQL(..)
            | DataFusionError::NotImplemented(_)
    );
    if !is_user_error && diagnostic.is_none() {
        return SluiceError::DataFusion(e);
    }
    let message = match root {
        DataFusionError::Plan(m) | DataFusionError::NotImplemented(m) => m.clone(),
        other => other.to_string(),
    };
    // DataFusion repeats "Error during planning:" style prefixes; keep the substance.
    let message = message.lines().next().unwrap_or_default().to_string();
    let position = diagnostic
        .as_ref()
        .and_then(|d| d.span)
        .map(|s| SqlPosition {
            line: s.start.line,
            column: s.start.column,
        });
    let hint = diagnostic
        .as_ref()
        .and_then(|d| {
            d.helps
                .first()
                .map(|h| h.message.clone())
                .or_else(|| d.notes.first().map(|n| n.message.clone()))
        })
        .or_else(|| hint_for(&message));
    let sqlstate = if message.contains("not found") || message.contains("No field named") {
        "42703"
    } else if matches!(root, DataFusionError::NotImplemented(_)) {
        "0A000"
    } else {
        "42000"
    };
    SluiceError::Sql {
        message,
        position,
        hint,
        sqlstate,
    }
}

fn hint_for(message: &str) -> Option<String> {
    if message.contains("No field named") {
        Some("DESCRIBE <stream> lists its columns; unquoted names are lower-cased".into())
    } else if message.contains("Cannot infer common argument type")
        || message.contains("There isn't a common type")
    {
        Some("compare values of the same type, or CAST one side".into())
    } else if message.contains("Invalid function") {
        Some("SHOW FUNCTIONS is not available yet; see DataFusion's scalar function list in docs/sql-reference.md".into())
    } else {
        None
    }
}
