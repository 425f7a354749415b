//! Window clauses: ksqlDB's `WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 5 SECONDS)`
//! (HOPPING, SESSION too), which sqlparser does not know, is cut out of the token
//! stream before the query is parsed; the table-valued functions `TUMBLE(...)`,
//! `HOP(...)`, `SESSION(...)` and `CUMULATE(...)` are ordinary FROM items and are
//! recognised by the planner.

use std::fmt;

use sqlparser::tokenizer::{Token, TokenWithSpan};

use super::duration::{format_duration, unit_ms};
use crate::error::{Result, SluiceError, SqlPosition};

/// Which windows an event belongs to. Durations are milliseconds; windows are
/// `[start, end)` and aligned to the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Tumbling {
        size: i64,
    },
    /// A window of `size` starting every `advance`.
    Hopping {
        size: i64,
        advance: i64,
    },
    /// Events closer than `gap` to each other share a window.
    Session {
        gap: i64,
    },
    /// Windows growing by `step` from the start of each `max`-long period.
    Cumulate {
        step: i64,
        max: i64,
    },
}

impl WindowKind {
    /// The longest a window can be (sessions: unbounded, so the gap).
    pub fn max_size(&self) -> i64 {
        match *self {
            WindowKind::Tumbling { size } | WindowKind::Hopping { size, .. } => size,
            WindowKind::Session { gap } => gap,
            WindowKind::Cumulate { max, .. } => max,
        }
    }
}

/// Where the window columns come from and what they are called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowSyntax {
    /// `WINDOW TUMBLING (...)`: columns `windowstart` / `windowend`, time = event time.
    Ksql,
    /// `TUMBLE(src, ts, ...)`: columns `window_start` / `window_end`; `time_column`
    /// names the event-time column the user passed.
    Tvf { time_column: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowClause {
    pub kind: WindowKind,
    /// How long after a window ends it still accepts late events (event time).
    pub grace: i64,
    /// How long a closed window stays queryable in the materialized table.
    pub retention: Option<i64>,
    pub syntax: WindowSyntax,
    pub position: Option<SqlPosition>,
}

impl WindowClause {
    pub fn start_column(&self) -> &'static str {
        match self.syntax {
            WindowSyntax::Ksql => "windowstart",
            WindowSyntax::Tvf { .. } => "window_start",
        }
    }

    pub fn end_column(&self) -> &'static str {
        match self.syntax {
            WindowSyntax::Ksql => "windowend",
            WindowSyntax::Tvf { .. } => "window_end",
        }
    }
}

/// The ksqlDB form, written back so a persisted query re-parses to the same window.
impl fmt::Display for WindowClause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |ms: i64| format_duration(ms);
        match self.kind {
            WindowKind::Tumbling { size } => write!(f, "WINDOW TUMBLING (SIZE {}", d(size))?,
            WindowKind::Hopping { size, advance } => write!(
                f,
                "WINDOW HOPPING (SIZE {}, ADVANCE BY {}",
                d(size),
                d(advance)
            )?,
            WindowKind::Session { gap } => write!(f, "WINDOW SESSION ({}", d(gap))?,
            WindowKind::Cumulate { step, max } => {
                write!(f, "WINDOW CUMULATE (SIZE {}, STEP {}", d(max), d(step))?
            }
        }
        if let Some(r) = self.retention {
            write!(f, ", RETENTION {}", d(r))?;
        }
        write!(f, ", GRACE PERIOD {})", d(self.grace))
    }
}

pub(super) fn word(t: &Token) -> Option<String> {
    match t {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
        _ => None,
    }
}

pub(super) fn is_trivia(t: &Token) -> bool {
    matches!(t, Token::Whitespace(_))
}

pub(super) fn pos(t: &TokenWithSpan) -> SqlPosition {
    SqlPosition {
        line: t.span.start.line,
        column: t.span.start.column,
    }
}

const HINT: &str =
    "WINDOW TUMBLING (SIZE 1 MINUTE [, GRACE PERIOD 5 SECONDS] [, RETENTION 1 HOUR]), \
WINDOW HOPPING (SIZE 1 MINUTE, ADVANCE BY 10 SECONDS), WINDOW SESSION (30 MINUTES)";

/// Removes a top-level `WINDOW TUMBLING|HOPPING|SESSION|CUMULATE (...)` from the
/// tokens of a statement and returns it.
pub fn strip_window(tokens: &mut Vec<TokenWithSpan>) -> Result<Option<WindowClause>> {
    let mut depth = 0i32;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i].token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            t if depth == 0 && word(t).as_deref() == Some("WINDOW") => {
                let significant: Vec<usize> = (i + 1..tokens.len())
                    .filter(|&j| !is_trivia(&tokens[j].token))
                    .take(2)
                    .collect();
                let kind = significant.first().and_then(|&j| word(&tokens[j].token));
                let is_ours = matches!(
                    kind.as_deref(),
                    Some("TUMBLING" | "HOPPING" | "SESSION" | "CUMULATE")
                );
                if !is_ours {
                    i += 1;
                    continue;
                }
                let open = match significant.get(1) {
                    Some(&j) if tokens[j].token == Token::LParen => j,
                    _ => {
                        return Err(SluiceError::sql_at(
                            "expected '(' after the window type",
                            Some(pos(&tokens[significant[0]])),
                            Some(HINT.into()),
                        ))
                    }
                };
                let mut d = 0;
                let mut close = None;
                for (j, t) in tokens.iter().enumerate().skip(open) {
                    match t.token {
                        Token::LParen => d += 1,
                        Token::RParen => {
                            d -= 1;
                            if d == 0 {
                                close = Some(j);
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let close = close.ok_or_else(|| {
                    SluiceError::sql_at(
                        "the window clause is missing its ')'",
                        Some(pos(&tokens[open])),
                        Some(HINT.into()),
                    )
                })?;
                let inner: Vec<TokenWithSpan> = tokens[open + 1..close]
                    .iter()
                    .filter(|t| !is_trivia(&t.token))
                    .cloned()
                    .collect();
                let clause =
                    parse_clause(kind.as_deref().unwrap_or_default(), &inner, pos(&tokens[i]))?;
                tokens.drain(i..=close);
                return Ok(Some(clause));
            }
            _ => {}
        }
        i += 1;
    }
    Ok(None)
}

/// `<number> <unit>` at `tokens[*at..]`.
fn duration(tokens: &[TokenWithSpan], at: &mut usize, what: &str) -> Result<i64> {
    duration_at(tokens, at, what, HINT)
}

/// `<number> <unit>` at `tokens[*at..]`; errors carry `hint`. Only a grace
/// period may be zero.
pub(super) fn duration_at(
    tokens: &[TokenWithSpan],
    at: &mut usize,
    what: &str,
    hint: &str,
) -> Result<i64> {
    let err = |t: Option<&TokenWithSpan>| {
        SluiceError::sql_at(
            format!("expected a duration for {what}, like 5 SECONDS"),
            t.map(pos),
            Some(hint.into()),
        )
    };
    let n = match tokens.get(*at).map(|t| &t.token) {
        Some(Token::Number(n, _)) => n.parse::<f64>().map_err(|_| err(tokens.get(*at)))?,
        _ => return Err(err(tokens.get(*at))),
    };
    let unit = tokens
        .get(*at + 1)
        .and_then(|t| word(&t.token))
        .and_then(|u| unit_ms(&u))
        .ok_or_else(|| err(tokens.get(*at + 1)))?;
    *at += 2;
    let ms = (n * unit as f64).round();
    if ms <= 0.0 && what != "GRACE PERIOD" && !what.starts_with("WITHIN (") {
        return Err(err(tokens.get(*at - 2)));
    }
    Ok(ms as i64)
}

fn parse_clause(kind: &str, tokens: &[TokenWithSpan], at: SqlPosition) -> Result<WindowClause> {
    let mut size = None;
    let mut advance = None;
    let mut gap = None;
    let mut step = None;
    let mut grace = 0;
    let mut retention = None;
    let mut i = 0;
    if kind == "SESSION" && matches!(tokens.first().map(|t| &t.token), Some(Token::Number(..))) {
        gap = Some(duration(tokens, &mut i, "the session gap")?);
    }
    while i < tokens.len() {
        if tokens[i].token == Token::Comma {
            i += 1;
            continue;
        }
        let w = word(&tokens[i].token).unwrap_or_default();
        let at_word = pos(&tokens[i]);
        i += 1;
        match w.as_str() {
            "SIZE" => size = Some(duration(tokens, &mut i, "SIZE")?),
            "ADVANCE" => {
                if word(&tokens.get(i).map(|t| t.token.clone()).unwrap_or(Token::EOF)).as_deref()
                    == Some("BY")
                {
                    i += 1;
                }
                advance = Some(duration(tokens, &mut i, "ADVANCE BY")?);
            }
            "STEP" => step = Some(duration(tokens, &mut i, "STEP")?),
            "GAP" => gap = Some(duration(tokens, &mut i, "the session gap")?),
            "RETENTION" => retention = Some(duration(tokens, &mut i, "RETENTION")?),
            "GRACE" => {
                if word(&tokens.get(i).map(|t| t.token.clone()).unwrap_or(Token::EOF)).as_deref()
                    == Some("PERIOD")
                {
                    i += 1;
                }
                grace = duration(tokens, &mut i, "GRACE PERIOD")?;
            }
            _ => {
                return Err(SluiceError::sql_at(
                    format!("unexpected '{}' in the window clause", tokens[i - 1].token),
                    Some(at_word),
                    Some(HINT.into()),
                ))
            }
        }
    }
    let missing = |what: &str| {
        SluiceError::sql_at(
            format!("WINDOW {kind} needs {what}"),
            Some(at),
            Some(HINT.into()),
        )
    };
    let kind = match kind {
        "TUMBLING" => WindowKind::Tumbling {
            size: size.ok_or_else(|| missing("a SIZE"))?,
        },
        "HOPPING" => {
            let size = size.ok_or_else(|| missing("a SIZE"))?;
            let advance = advance.ok_or_else(|| missing("ADVANCE BY"))?;
            check_hop(size, advance, Some(at))?;
            WindowKind::Hopping { size, advance }
        }
        "SESSION" => WindowKind::Session {
            gap: gap.ok_or_else(|| missing("a gap, as in WINDOW SESSION (30 MINUTES)"))?,
        },
        _ => {
            let max = size.ok_or_else(|| missing("a SIZE"))?;
            let step = step.ok_or_else(|| missing("a STEP"))?;
            check_cumulate(step, max, Some(at))?;
            WindowKind::Cumulate { step, max }
        }
    };
    // Retention counts from the window's end; a window may change until end + grace.
    if let Some(r) = retention.filter(|r| *r < grace) {
        return Err(SluiceError::sql_at(
            format!(
                "RETENTION ({}) must be at least the grace period ({})",
                format_duration(r),
                format_duration(grace)
            ),
            Some(at),
            Some("closed windows are kept for RETENTION after their end; they can change until end + grace".into()),
        ));
    }
    Ok(WindowClause {
        kind,
        grace,
        retention,
        syntax: WindowSyntax::Ksql,
        position: Some(at),
    })
}

/// Windows one event may belong to, at most (each is updated per event).
const MAX_WINDOWS_PER_EVENT: i64 = 10_000;

pub fn check_hop(size: i64, advance: i64, at: Option<SqlPosition>) -> Result<()> {
    if advance > size {
        return Err(SluiceError::sql_at(
            "a hopping window's advance must not exceed its size",
            at,
            Some("use a TUMBLING window when advance = size".into()),
        ));
    }
    if size / advance > MAX_WINDOWS_PER_EVENT {
        return Err(SluiceError::sql_at(
            format!(
                "each event would belong to {} windows; the limit is {MAX_WINDOWS_PER_EVENT}",
                size / advance
            ),
            at,
            Some("advance by a larger step".into()),
        ));
    }
    Ok(())
}

pub fn check_cumulate(step: i64, max: i64, at: Option<SqlPosition>) -> Result<()> {
    if max / step > MAX_WINDOWS_PER_EVENT {
        return Err(SluiceError::sql_at(
            format!(
                "each event would belong to up to {} windows; the limit is {MAX_WINDOWS_PER_EVENT}",
                max / step
            ),
            at,
            Some("use a larger step".into()),
        ));
    }
    if max % step != 0 {
        return Err(SluiceError::sql_at(
            "a cumulating window's size must be a multiple of its step",
            at,
            Some("e.g. CUMULATE(src, ts, INTERVAL '1' MINUTE, INTERVAL '1' HOUR)".into()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::GenericDialect;
    use sqlparser::tokenizer::Tokenizer;

    fn strip(sql: &str) -> (Result<Option<WindowClause>>, String) {
        let mut tokens = Tokenizer::new(&GenericDialect {}, sql)
            .tokenize_with_location()
            .unwrap();
        let clause = strip_window(&mut tokens);
        let rest: String = tokens.iter().map(|t| t.token.to_string()).collect();
        (clause, rest)
    }

    #[test]
    fn ksql_windows() {
        let (c, rest) = strip(
            "SELECT url, COUNT(*) FROM pv WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 5 SECONDS) GROUP BY url",
        );
        let c = c.unwrap().unwrap();
        assert_eq!(c.kind, WindowKind::Tumbling { size: 60_000 });
        assert_eq!(c.grace, 5_000);
        assert_eq!(rest, "SELECT url, COUNT(*) FROM pv  GROUP BY url");
        let (c, _) = strip("SELECT 1 FROM pv WINDOW HOPPING (SIZE 1 MINUTE, ADVANCE BY 10 SECONDS, RETENTION 2 HOURS) GROUP BY x");
        let c = c.unwrap().unwrap();
        assert_eq!(
            c.kind,
            WindowKind::Hopping {
                size: 60_000,
                advance: 10_000
            }
        );
        assert_eq!(c.retention, Some(7_200_000));
        let (c, _) = strip("SELECT 1 FROM pv WINDOW SESSION (30 MINUTES) GROUP BY x");
        assert_eq!(
            c.unwrap().unwrap().kind,
            WindowKind::Session { gap: 1_800_000 }
        );
        // A standard named window is left for sqlparser.
        let (c, rest) = strip("SELECT 1 FROM t WINDOW w AS (PARTITION BY a)");
        assert!(c.unwrap().is_none());
        assert!(rest.contains("WINDOW w"));
    }

    #[test]
    fn display_round_trips() {
        for sql in [
            "WINDOW TUMBLING (SIZE 90 SECONDS, GRACE PERIOD 0 MILLISECONDS)",
            "WINDOW HOPPING (SIZE 1 MINUTES, ADVANCE BY 5 SECONDS, RETENTION 1 DAYS, GRACE PERIOD 2 SECONDS)",
            "WINDOW SESSION (30 MINUTES, GRACE PERIOD 0 MILLISECONDS)",
            "WINDOW CUMULATE (SIZE 1 HOURS, STEP 10 MINUTES, GRACE PERIOD 0 MILLISECONDS)",
        ] {
            let (c, _) = strip(&format!("SELECT 1 FROM t {sql} GROUP BY a"));
            assert_eq!(c.unwrap().unwrap().to_string(), sql);
        }
    }

    #[test]
    fn errors_point_at_the_clause() {
        let (c, _) = strip("SELECT 1 FROM pv\nWINDOW HOPPING (SIZE 1 MINUTE) GROUP BY x");
        let e = c.unwrap_err().to_string();
        assert!(e.contains("ADVANCE BY"), "{e}");
        assert!(e.contains("line 2"), "{e}");
        let (c, _) = strip("SELECT 1 FROM pv WINDOW TUMBLING (SIZE 1 FORTNIGHT) GROUP BY x");
        assert!(c.unwrap_err().to_string().contains("duration"));
        let (c, _) = strip("SELECT 1 FROM pv WINDOW HOPPING (SIZE 1 SECOND, ADVANCE BY 1 MINUTE)");
        assert!(c.unwrap_err().to_string().contains("advance"));
    }
}
