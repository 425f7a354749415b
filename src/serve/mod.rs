//! The serving layer: turns protocol requests into calls on the [`Engine`] and
//! engine results into protocol responses.
//!
//! - [`pgwire`] speaks the Postgres wire protocol (psql, drivers, dashboards):
//!   [`pgwire::serve_pgwire`].
//! - [`http`] is an axum router with a ksqlDB-like REST API, metrics and health:
//!   [`http::router`] / [`http::serve_http`].
//!
//! Both servers share the Arrow conversions in `arrow_convert`. Nothing in here
//! leaks into the engine: the engine sees SQL text, a [`Session`] and
//! parameter values, and returns [`StatementResult`]s.
//!
//! [`Engine`]: crate::engine::Engine
//! [`Session`]: crate::engine::session::Session
//! [`StatementResult`]: crate::engine::result::StatementResult

mod arrow_convert;
mod copy_in;
pub mod http;
pub mod pgwire;
pub mod security;

pub use arrow_convert::{pg_type, pg_type_modifier, sql_type_name};

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use crate::error::SqlPosition;

pub use crate::engine::pg_types::SERVER_VERSION;

/// Byte offset of a 1-based (line, column-in-characters) position in `text`.
///
/// Columns count characters, not bytes, the way the SQL tokenizer and editors
/// count them. A column one past the end of a line is allowed (it points at the
/// line break), anything further is `None`.
pub(crate) fn byte_offset(text: &str, line: u64, column: u64) -> Option<usize> {
    if line == 0 || column == 0 {
        return None;
    }
    let mut line_start = 0usize;
    for _ in 1..line {
        line_start += text[line_start..].find('\n')? + 1;
    }
    let line_text = &text[line_start..];
    let line_end = line_text.find('\n').unwrap_or(line_text.len());
    let line_text = &line_text[..line_end];
    let wanted = usize::try_from(column - 1).ok()?;
    let mut chars = line_text.char_indices();
    match chars.nth(wanted) {
        Some((idx, _)) => Some(line_start + idx),
        None if line_text.chars().count() == wanted => Some(line_start + line_text.len()),
        None => None,
    }
}

/// The 1-based line and column of the character at byte offset `offset`.
pub(crate) fn position_at(text: &str, offset: usize) -> SqlPosition {
    let offset = offset.min(text.len());
    // `offset` always comes from a char boundary we computed, but be defensive:
    // step back to one so slicing cannot panic.
    let offset = (0..=offset)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    let before = &text[..offset];
    let line = before.matches('\n').count() as u64 + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = text[line_start..offset].chars().count() as u64 + 1;
    SqlPosition { line, column }
}

/// Translates an error position reported for `inner` (a piece of the client's
/// text starting at byte `inner_offset` of `outer`) into a position in `outer`,
/// plus the 1-based character index Postgres puts in the error's `P` field.
pub(crate) fn translate_position(
    outer: &str,
    inner: &str,
    inner_offset: usize,
    pos: SqlPosition,
) -> Option<(SqlPosition, usize)> {
    let in_inner = byte_offset(inner, pos.line, pos.column)?;
    let absolute = inner_offset + in_inner;
    if absolute > outer.len() || !outer.is_char_boundary(absolute) {
        return None;
    }
    let char_index = outer[..absolute].chars().count() + 1;
    Some((position_at(outer, absolute), char_index))
}

/// Tokenizes SQL the way the engine's parser sees it (Postgres dialect), with
/// comments and whitespace removed. `None` when the text does not tokenize
/// (for example an unterminated string); callers then leave the text alone
/// and let the engine report the error with its position.
pub(crate) fn significant_tokens(sql: &str) -> Option<Vec<TokenWithSpan>> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .with_unescape(false)
        .tokenize_with_location()
        .ok()?;
    Some(
        tokens
            .into_iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .collect(),
    )
}

/// Byte offset in `sql` where a token starts.
pub(crate) fn token_start(sql: &str, token: &TokenWithSpan) -> Option<usize> {
    let Location { line, column } = token.span.start;
    byte_offset(sql, line, column)
}

/// Splits a script into its statements (top-level `;`), tokenizer-aware so
/// semicolons inside strings, quoted identifiers and comments do not split.
/// Each entry is the trimmed statement text without its `;`. Falls back to the
/// whole text when it does not tokenize.
pub(crate) fn split_statements(sql: &str) -> Vec<&str> {
    let Some(tokens) = significant_tokens(sql) else {
        let trimmed = sql.trim();
        return if trimmed.is_empty() {
            vec![]
        } else {
            vec![trimmed]
        };
    };
    let mut out = Vec::new();
    let mut start = 0usize;
    for tok in &tokens {
        if tok.token == Token::SemiColon {
            if let Some(end) = token_start(sql, tok) {
                let piece = sql[start..end].trim();
                if !piece.is_empty() {
                    out.push(piece);
                }
                start = end + 1;
            }
        }
    }
    let rest = sql[start.min(sql.len())..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_offset_counts_characters() {
        let text = "SELECT 'é'\nFROM x";
        assert_eq!(byte_offset(text, 1, 1), Some(0));
        assert_eq!(byte_offset(text, 1, 10), Some(10)); // the closing quote, after a 2-byte char
        assert_eq!(byte_offset(text, 2, 1), Some(12));
        assert_eq!(byte_offset(text, 2, 6), Some(17)); // end of text
        assert_eq!(byte_offset(text, 2, 8), None);
        assert_eq!(byte_offset(text, 3, 1), None);
        assert_eq!(byte_offset(text, 0, 1), None);
    }

    #[test]
    fn position_roundtrip() {
        let text = "SELECT 1;\n  SELEC 2";
        let off = byte_offset(text, 2, 3).unwrap();
        assert_eq!(&text[off..off + 5], "SELEC");
        assert_eq!(position_at(text, off), SqlPosition { line: 2, column: 3 });
    }

    #[test]
    fn translate_inner_position_to_outer() {
        let outer = "COPY (\n  SELEC 1) TO STDOUT";
        let inner_offset = 6;
        let inner = &outer[inner_offset..outer.find(')').unwrap()];
        let (pos, idx) = translate_position(
            outer,
            inner,
            inner_offset,
            SqlPosition { line: 2, column: 3 },
        )
        .unwrap();
        assert_eq!(pos, SqlPosition { line: 2, column: 3 });
        assert_eq!(idx, 10);
        let (pos, idx) = translate_position(
            outer,
            inner,
            inner_offset,
            SqlPosition { line: 1, column: 1 },
        )
        .unwrap();
        assert_eq!(pos, SqlPosition { line: 1, column: 7 });
        assert_eq!(idx, 7);
    }

    #[test]
    fn split_respects_strings_and_comments() {
        let sql =
            "CREATE STREAM a (x INT) WITH (kafka_topic='a;b');\n-- c;omment\nSELECT ';' FROM a; ;";
        assert_eq!(
            split_statements(sql),
            vec![
                "CREATE STREAM a (x INT) WITH (kafka_topic='a;b')",
                "-- c;omment\nSELECT ';' FROM a",
            ]
        );
        assert_eq!(split_statements("  "), Vec::<&str>::new());
        assert_eq!(split_statements("SELECT 1"), vec!["SELECT 1"]);
        // Unterminated string: no split, the engine reports the error.
        assert_eq!(split_statements("SELECT 'a; b"), vec!["SELECT 'a; b"]);
    }
}
