//! Splits a script into statements and parses each into a [`Statement`].

use sqlparser::ast::{self, Ident, SetExpr};
use sqlparser::dialect::GenericDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use super::ast::*;
use super::window::{strip_window, WindowClause};
use crate::error::{Result, SluiceError, SqlPosition};

const STATEMENT_HINT: &str =
    "Sluice understands CREATE STREAM|TABLE [AS SELECT], CREATE MATERIALIZED VIEW, \
INSERT INTO, SELECT [EMIT CHANGES], DROP, SHOW STREAMS|TABLES|QUERIES|TOPICS, DESCRIBE, TERMINATE, \
PRINT, RUN SCRIPT, SET and EXPLAIN; see docs/sql-reference.md";

/// Parses every statement of `sql`. Errors carry the line and column in `sql`.
pub fn parse_script(sql: &str) -> Result<Vec<ParsedStatement>> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| {
            SluiceError::sql_at(
                e.message.clone(),
                Some(position(e.location)),
                Some("check quotes and comments are closed".into()),
            )
        })?;
    let lines = LineIndex::new(sql);
    let mut out = Vec::new();
    for group in split_statements(tokens) {
        let (Some(first), Some(last)) = (
            group.iter().find(|t| !is_trivia(&t.token)),
            group.iter().rev().find(|t| !is_trivia(&t.token)),
        ) else {
            continue;
        };
        let start = position(first.span.start);
        let text = lines.slice(first.span.start, last.span.end).to_string();
        let statement = parse_statement(group)?;
        out.push(ParsedStatement {
            statement,
            text,
            position: start,
        });
    }
    Ok(out)
}

/// Parses exactly one statement (used by the extended protocol and tests).
pub fn parse_one(sql: &str) -> Result<ParsedStatement> {
    let mut statements = parse_script(sql)?;
    match statements.len() {
        1 => Ok(statements.remove(0)),
        0 => Err(SluiceError::sql("empty statement")),
        n => Err(SluiceError::sql_at(
            format!("expected one statement, found {n}"),
            Some(statements[1].position),
            Some("send statements one at a time here, or use RUN SCRIPT".into()),
        )),
    }
}

fn is_trivia(t: &Token) -> bool {
    matches!(t, Token::Whitespace(_) | Token::EOF)
}

fn position(l: Location) -> SqlPosition {
    l.into()
}

/// Splits on top-level semicolons; the tokenizer already keeps `;` inside strings,
/// quoted identifiers and comments out of `Token::SemiColon`.
fn split_statements(tokens: Vec<TokenWithSpan>) -> Vec<Vec<TokenWithSpan>> {
    let mut groups = vec![Vec::new()];
    for t in tokens {
        if t.token == Token::SemiColon {
            groups.push(Vec::new());
        } else if let Some(g) = groups.last_mut() {
            g.push(t);
        }
    }
    groups
}

/// Maps sqlparser's (line, column) locations back to byte offsets of the script.
struct LineIndex<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, line_starts }
    }

    fn offset(&self, l: Location) -> usize {
        let Some(&line_start) = self.line_starts.get((l.line as usize).saturating_sub(1)) else {
            return self.text.len();
        };
        let line = &self.text[line_start..];
        line.char_indices()
            .nth((l.column as usize).saturating_sub(1))
            .map(|(i, _)| line_start + i)
            .unwrap_or(self.text.len())
    }

    /// Text from `start` (inclusive) to `end` (exclusive), as sqlparser spans are.
    fn slice(&self, start: Location, end: Location) -> &'a str {
        let s = self.offset(start);
        let e = self.offset(end);
        &self.text[s..e.max(s)]
    }
}

/// Turns a sqlparser error ("Expected: x, found: y at Line: 3, Column: 7") into
/// a Sluice SQL error with the position as a field.
pub(crate) fn parser_error(e: ParserError, hint: Option<&str>) -> SluiceError {
    let text = match e {
        ParserError::TokenizerError(s) | ParserError::ParserError(s) => s,
        ParserError::RecursionLimitExceeded => {
            return SluiceError::too_complex(
                "statement too complex: nested too deeply (parentheses, subqueries or expressions more than 50 levels deep)",
                "flatten the nesting, e.g. with CREATE ... AS SELECT for inner parts",
            )
        }
    };
    let (message, pos) = match text.rfind(" at Line: ") {
        Some(i) => {
            let rest = &text[i + " at Line: ".len()..];
            let mut parts = rest.split(", Column: ");
            let line = parts.next().and_then(|s| s.trim().parse().ok());
            let column = parts.next().and_then(|s| s.trim().parse().ok());
            match (line, column) {
                (Some(line), Some(column)) => {
                    (text[..i].to_string(), Some(SqlPosition { line, column }))
                }
                _ => (text.clone(), None),
            }
        }
        None => (text, None),
    };
    SluiceError::sql_at(message, pos, hint.map(str::to_string))
}

fn word_is(t: &Token, word: &str) -> bool {
    matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// Removes a top-level `EMIT CHANGES` / `EMIT FINAL` and reports which it was.
fn strip_emit(tokens: &mut Vec<TokenWithSpan>) -> Option<EmitMode> {
    let mut depth = 0i32;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i].token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            t if depth == 0 && word_is(t, "EMIT") => {
                let next = (i + 1..tokens.len()).find(|&j| !is_trivia(&tokens[j].token));
                if let Some(j) = next {
                    let mode = if word_is(&tokens[j].token, "CHANGES") {
                        Some(EmitMode::Changes)
                    } else if word_is(&tokens[j].token, "FINAL") {
                        Some(EmitMode::Final)
                    } else {
                        None
                    };
                    if let Some(mode) = mode {
                        tokens.drain(i..=j);
                        return Some(mode);
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn parse_statement(mut tokens: Vec<TokenWithSpan>) -> Result<Statement> {
    super::limits::check_complexity(&tokens)?;
    let emit = strip_emit(&mut tokens);
    let window = strip_window(&mut tokens)?;
    super::within::rewrite_within(&mut tokens)?;
    let dialect = GenericDialect {};
    let mut p = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let first = p.peek_token();
    let stmt = match &first.token {
        Token::Word(w) if w.quote_style.is_none() => {
            let head = w.value.to_ascii_uppercase();
            match head.as_str() {
                "CREATE" => parse_create(&mut p, emit, window.clone())?,
                "INSERT" => parse_insert(&mut p, window.clone())?,
                "SELECT" | "WITH" | "VALUES" => parse_select(&mut p, emit, window.clone())?,
                "DROP" => parse_drop(&mut p)?,
                "SHOW" | "LIST" => parse_show(&mut p)?,
                "DESCRIBE" | "DESC" => parse_describe(&mut p)?,
                "TERMINATE" => parse_terminate(&mut p)?,
                "RUN" => parse_run_script(&mut p)?,
                "SET" => parse_set(&mut p)?,
                "UNSET" => parse_unset(&mut p)?,
                "PRINT" => parse_print(&mut p)?,
                "EXPLAIN" => parse_explain(&mut p, emit, window.clone())?,
                "DECLARE" => parse_declare(&mut p, emit, window.clone())?,
                "FETCH" => parse_fetch(&mut p)?,
                "CLOSE" => parse_close(&mut p)?,
                "BEGIN" | "START" | "COMMIT" | "ROLLBACK" | "END" | "ABORT" | "DISCARD"
                | "DEALLOCATE" | "RESET" | "SAVEPOINT" | "RELEASE" => {
                    p.next_token();
                    let tag = match head.as_str() {
                        "START" => "START TRANSACTION".to_string(),
                        "END" => "COMMIT".to_string(),
                        "ABORT" => "ROLLBACK".to_string(),
                        "DISCARD" => "DISCARD ALL".to_string(),
                        // Stays in the transaction, unlike ROLLBACK (see the
                        // pgwire server's status_after).
                        "ROLLBACK" if p.parse_keyword(Keyword::TO) => {
                            "ROLLBACK TO SAVEPOINT".to_string()
                        }
                        other => other.to_string(),
                    };
                    // Consume the rest: these carry no meaning for a streaming server.
                    while p.next_token().token != Token::EOF {}
                    Statement::ClientCompat { tag }
                }
                _ => {
                    return Err(SluiceError::sql_at(
                        format!("unknown statement '{}'", w.value),
                        Some(position(first.span.start)),
                        Some(STATEMENT_HINT.into()),
                    ))
                }
            }
        }
        Token::LParen => parse_select(&mut p, emit, window.clone())?,
        _ => {
            return Err(SluiceError::sql_at(
                format!("expected a statement, found '{}'", first.token),
                Some(position(first.span.start)),
                Some(STATEMENT_HINT.into()),
            ))
        }
    };
    expect_end(&mut p)?;
    Ok(stmt)
}

fn expect_end(p: &mut Parser) -> Result<()> {
    let t = p.peek_token();
    if t.token == Token::EOF {
        Ok(())
    } else {
        Err(SluiceError::sql_at(
            format!("unexpected '{}' after the end of the statement", t.token),
            Some(position(t.span.start)),
            Some("a missing semicolon or operator?".into()),
        ))
    }
}

fn peek_word(p: &Parser, word: &str) -> bool {
    word_is(&p.peek_token().token, word)
}

fn parse_word(p: &mut Parser, word: &str) -> bool {
    if peek_word(p, word) {
        p.next_token();
        true
    } else {
        false
    }
}

fn expect_word(p: &mut Parser, word: &str, hint: &str) -> Result<()> {
    if parse_word(p, word) {
        return Ok(());
    }
    let t = p.peek_token();
    Err(SluiceError::sql_at(
        format!("expected {word}, found '{}'", t.token),
        Some(position(t.span.start)),
        Some(hint.into()),
    ))
}

fn pe(hint: &'static str) -> impl Fn(ParserError) -> SluiceError {
    move |e| parser_error(e, Some(hint))
}

fn parse_create(
    p: &mut Parser,
    emit: Option<EmitMode>,
    window: Option<WindowClause>,
) -> Result<Statement> {
    p.next_token(); // CREATE
    let or_replace = p.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
    // ksqlDB's CREATE SOURCE STREAM|TABLE is the same as CREATE STREAM|TABLE here.
    parse_word(p, "SOURCE");
    let (kind, materialized_view) = if parse_word(p, "STREAM") {
        (RelationKind::Stream, false)
    } else if p.parse_keyword(Keyword::TABLE) {
        (RelationKind::Table, false)
    } else if p.parse_keywords(&[Keyword::MATERIALIZED, Keyword::VIEW]) {
        (RelationKind::Table, true)
    } else if p.parse_keyword(Keyword::VIEW) {
        return parse_create_view(p, or_replace, emit, window);
    } else {
        let t = p.peek_token();
        return Err(SluiceError::sql_at(
            format!("expected STREAM, TABLE, VIEW or MATERIALIZED VIEW after CREATE, found '{}'", t.token),
            Some(position(t.span.start)),
            Some("e.g. CREATE STREAM pageviews (url VARCHAR, status INT) WITH (kafka_topic='pageviews', value_format='json')".into()),
        ));
    };
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = parse_name(p)?;
    if p.peek_token().token == Token::LParen && !materialized_view {
        let (columns, watermark) = parse_columns(p, kind)?;
        let with = parse_with(p)?;
        if p.peek_keyword(Keyword::AS) {
            let t = p.peek_token();
            return Err(SluiceError::sql_at(
                "a CREATE ... AS SELECT takes its columns from the query, not a column list",
                Some(position(t.span.start)),
                Some("remove the column list".into()),
            ));
        }
        return Ok(Statement::CreateSource(CreateSource {
            kind,
            name,
            or_replace,
            if_not_exists,
            columns,
            watermark,
            with,
        }));
    }
    let with = parse_with(p)?;
    let at_end = matches!(p.peek_token().token, Token::EOF | Token::SemiColon);
    if !materialized_view && !with.is_empty() && at_end {
        // No column list: a source that knows its own columns (connector='nexmark');
        // the engine refuses it for the others.
        return Ok(Statement::CreateSource(CreateSource {
            kind,
            name,
            or_replace,
            if_not_exists,
            columns: Vec::new(),
            watermark: None,
            with,
        }));
    }
    if !p.parse_keyword(Keyword::AS) {
        let t = p.peek_token();
        return Err(SluiceError::sql_at(
            format!("expected a column list or AS SELECT, found '{}'", t.token),
            Some(position(t.span.start)),
            Some(format!(
                "declare columns: CREATE {} {} (col TYPE, ...) WITH (...), or derive it: CREATE {} {} AS SELECT ...",
                kind.keyword(),
                name.value,
                kind.keyword(),
                name.value
            )),
        ));
    }
    let query = p
        .parse_query()
        .map_err(pe("the query after AS must be a SELECT"))?;
    let query_text = continuous_text(&query, window.as_ref(), emit);
    Ok(Statement::CreateAs(CreateAs {
        kind,
        materialized_view,
        name,
        or_replace,
        if_not_exists,
        with,
        query,
        query_text,
        emit,
        window,
    }))
}

/// `CREATE [OR REPLACE] VIEW [IF NOT EXISTS] name AS SELECT ...` (after VIEW).
fn parse_create_view(
    p: &mut Parser,
    or_replace: bool,
    emit: Option<EmitMode>,
    window: Option<WindowClause>,
) -> Result<Statement> {
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = parse_name(p)?;
    if p.peek_token().token == Token::LParen {
        let t = p.peek_token();
        return Err(SluiceError::sql_at(
            "a view takes its column names from its query",
            Some(position(t.span.start)),
            Some("name the columns in the SELECT: SELECT a AS x, b AS y".into()),
        ));
    }
    if !p.parse_keyword(Keyword::AS) {
        let t = p.peek_token();
        return Err(SluiceError::sql_at(
            format!(
                "expected AS SELECT after CREATE VIEW {}, found '{}'",
                name.value, t.token
            ),
            Some(position(t.span.start)),
            Some("CREATE VIEW name AS SELECT ...".into()),
        ));
    }
    let query = p
        .parse_query()
        .map_err(pe("the query after AS must be a SELECT"))?;
    if emit.is_some() || window.is_some() {
        return Err(SluiceError::sql(
            "a view is a named query without EMIT or WINDOW: the query that reads it says how",
        ));
    }
    Ok(Statement::CreateView(CreateView {
        name,
        or_replace,
        if_not_exists,
        query,
    }))
}

/// The text a persistent query is saved as and re-parsed from on restart: the
/// SELECT, then the clauses sqlparser does not know (window, EMIT FINAL).
pub fn continuous_text(
    query: &ast::Query,
    window: Option<&WindowClause>,
    emit: Option<EmitMode>,
) -> String {
    let mut text = query.to_string();
    if let Some(w) = window {
        text.push(' ');
        text.push_str(&w.to_string());
    }
    if emit == Some(EmitMode::Final) {
        text.push_str(" EMIT FINAL");
    }
    text
}

/// A relation name: one identifier (a schema-qualified name keeps its last part).
fn parse_name(p: &mut Parser) -> Result<Ident> {
    let name = p.parse_object_name(false).map_err(pe("expected a name"))?;
    let mut parts: Vec<Ident> = name
        .0
        .into_iter()
        .filter_map(|part| part.as_ident().cloned())
        .collect();
    parts
        .pop()
        .ok_or_else(|| SluiceError::sql("expected a name"))
}

fn parse_columns(
    p: &mut Parser,
    kind: RelationKind,
) -> Result<(Vec<ColumnSpec>, Option<WatermarkSpec>)> {
    p.expect_token(&Token::LParen).map_err(pe("expected '('"))?;
    let mut columns: Vec<ColumnSpec> = Vec::new();
    let mut table_key: Vec<Ident> = Vec::new();
    let mut watermark = None;
    loop {
        // `WATERMARK FOR ...`; a column may still be called watermark.
        if peek_word(p, "WATERMARK")
            && matches!(&p.peek_nth_token(1).token, Token::Word(w) if w.keyword == Keyword::FOR)
        {
            watermark = Some(parse_watermark(p)?);
        } else if p.parse_keywords(&[Keyword::PRIMARY, Keyword::KEY]) {
            // Table constraint: PRIMARY KEY (a, b)
            p.expect_token(&Token::LParen)
                .map_err(pe("expected '(' after PRIMARY KEY"))?;
            table_key = p
                .parse_comma_separated(|p| p.parse_identifier())
                .map_err(pe("expected column names"))?;
            p.expect_token(&Token::RParen).map_err(pe("expected ')'"))?;
        } else {
            let name = p.parse_identifier().map_err(pe("expected a column name"))?;
            let data_type = p
                .parse_data_type()
                .map_err(pe("column types: VARCHAR, INT, BIGINT, DOUBLE, BOOLEAN, DECIMAL(p,s), TIMESTAMP, DATE, BYTES, ARRAY<T>, MAP<K,V>, STRUCT<...>"))?;
            let mut col = ColumnSpec {
                name,
                data_type,
                key: false,
                not_null: false,
            };
            loop {
                if p.parse_keywords(&[Keyword::PRIMARY, Keyword::KEY])
                    || p.parse_keyword(Keyword::KEY)
                {
                    col.key = true;
                } else if p.parse_keywords(&[Keyword::NOT, Keyword::NULL]) {
                    col.not_null = true;
                } else if p.parse_keyword(Keyword::NULL) {
                } else {
                    break;
                }
            }
            columns.push(col);
        }
        if !p.consume_token(&Token::Comma) {
            break;
        }
    }
    p.expect_token(&Token::RParen)
        .map_err(pe("expected ',' or ')' in the column list"))?;
    for k in &table_key {
        match columns
            .iter_mut()
            .find(|c| c.name.value.eq_ignore_ascii_case(&k.value))
        {
            Some(c) => c.key = true,
            None => {
                return Err(SluiceError::sql_at(
                    format!(
                        "PRIMARY KEY names column '{}', which is not declared",
                        k.value
                    ),
                    Some(position(k.span.start)),
                    None,
                ))
            }
        }
    }
    if kind == RelationKind::Table && !columns.iter().any(|c| c.key) {
        return Err(SluiceError::sql(
            "a TABLE needs a PRIMARY KEY: the topic's records are upserts keyed by it",
        )
        .with_hint("mark the key column: id VARCHAR PRIMARY KEY, or declare a STREAM for an append-only topic"));
    }
    if let Some(w) = &watermark {
        if !columns
            .iter()
            .any(|c| c.name.value.eq_ignore_ascii_case(&w.column.value))
        {
            return Err(SluiceError::sql_at(
                format!(
                    "WATERMARK FOR names column '{}', which is not declared",
                    w.column.value
                ),
                Some(position(w.column.span.start)),
                Some("WATERMARK FOR <event-time column> AS <column> - INTERVAL '5' SECOND".into()),
            ));
        }
    }
    Ok((columns, watermark))
}

/// `WATERMARK FOR ts AS ts [- INTERVAL '5' SECOND]` (Flink, RisingWave).
fn parse_watermark(p: &mut Parser) -> Result<WatermarkSpec> {
    const HINT: &str = "WATERMARK FOR ts AS ts - INTERVAL '5' SECOND";
    let start = p.next_token(); // WATERMARK
    if !p.parse_keyword(Keyword::FOR) {
        return Err(SluiceError::sql_at(
            "expected FOR after WATERMARK",
            Some(position(start.span.start)),
            Some(HINT.into()),
        ));
    }
    let column = p.parse_identifier().map_err(pe(HINT))?;
    p.expect_keyword_is(Keyword::AS).map_err(pe(HINT))?;
    let expr = p.parse_expr().map_err(pe(HINT))?;
    let bad = || {
        SluiceError::sql_at(
            format!(
                "the watermark must be '{0}' or '{0} - INTERVAL ...'",
                column.value
            ),
            Some(position(start.span.start)),
            Some(HINT.into()),
        )
    };
    let same_column = |e: &ast::Expr| matches!(e, ast::Expr::Identifier(i) if i.value.eq_ignore_ascii_case(&column.value));
    let delay_ms = match &expr {
        e if same_column(e) => 0,
        ast::Expr::BinaryOp {
            left,
            op: ast::BinaryOperator::Minus,
            right,
        } if same_column(left) => super::duration::interval_ms(right).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    Ok(WatermarkSpec { column, delay_ms })
}

/// `WITH (a = 'x', b = 3)`; absent → empty.
fn parse_with(p: &mut Parser) -> Result<WithOptions> {
    let mut out = WithOptions::new();
    if !p.parse_keyword(Keyword::WITH) {
        return Ok(out);
    }
    p.expect_token(&Token::LParen)
        .map_err(pe("expected '(' after WITH"))?;
    loop {
        let key_tok = p.next_token();
        let key = match &key_tok.token {
            Token::Word(w) => w.value.to_ascii_lowercase(),
            Token::SingleQuotedString(s) => s.to_ascii_lowercase(),
            other => {
                return Err(SluiceError::sql_at(
                    format!("expected a property name, found '{other}'"),
                    Some(position(key_tok.span.start)),
                    Some("properties look like kafka_topic='name'".into()),
                ))
            }
        };
        // Dotted names such as 'scan.startup.mode' arrive as one quoted string; an
        // unquoted a.b.c is several tokens.
        let mut key = key;
        while p.consume_token(&Token::Period) {
            let part = p.next_token();
            key.push('.');
            key.push_str(&part.token.to_string().to_ascii_lowercase());
        }
        p.expect_token(&Token::Eq)
            .map_err(pe("properties look like name = 'value'"))?;
        let v = p.next_token();
        let value = match &v.token {
            Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s.clone(),
            Token::Number(n, _) => n.clone(),
            Token::Word(w) => w.value.clone(),
            other => {
                return Err(SluiceError::sql_at(
                    format!("expected a value for '{key}', found '{other}'"),
                    Some(position(v.span.start)),
                    None,
                ))
            }
        };
        out.insert(
            key,
            WithValue {
                value,
                position: position(key_tok.span.start),
            },
        );
        if !p.consume_token(&Token::Comma) {
            break;
        }
    }
    p.expect_token(&Token::RParen)
        .map_err(pe("expected ',' or ')' in WITH (...)"))?;
    Ok(out)
}

fn parse_insert(p: &mut Parser, window: Option<WindowClause>) -> Result<Statement> {
    let stmt = p.parse_statement().map_err(pe(
        "INSERT INTO s [(cols)] VALUES (...) or INSERT INTO s SELECT ...",
    ))?;
    let ast::Statement::Insert(insert) = stmt else {
        return Err(SluiceError::sql("expected INSERT"));
    };
    let target = match &insert.table {
        ast::TableObject::TableName(name) => name
            .0
            .last()
            .and_then(|part| part.as_ident().cloned())
            .ok_or_else(|| SluiceError::sql("INSERT needs a target name"))?,
        other => return Err(SluiceError::sql(format!("cannot insert into {other}"))),
    };
    let Some(source) = insert.source else {
        return Err(SluiceError::sql("INSERT needs VALUES or a SELECT"));
    };
    match *source.body {
        SetExpr::Values(values) => Ok(Statement::InsertValues {
            target,
            columns: insert
                .columns
                .into_iter()
                .filter_map(|c| c.0.last().and_then(|p| p.as_ident()).cloned())
                .collect(),
            rows: values.rows.into_iter().map(|r| r.content).collect(),
        }),
        _ => {
            if !insert.columns.is_empty() {
                return Err(SluiceError::sql(
                    "INSERT INTO s (cols) SELECT is not supported: the SELECT must produce the stream's columns in order",
                ));
            }
            let query_text = continuous_text(&source, window.as_ref(), None);
            Ok(Statement::InsertSelect {
                target,
                query: source,
                query_text,
                window,
            })
        }
    }
}

fn parse_select(
    p: &mut Parser,
    emit: Option<EmitMode>,
    window: Option<WindowClause>,
) -> Result<Statement> {
    let query = p.parse_query().map_err(pe("check the SELECT syntax"))?;
    let query_text = continuous_text(&query, window.as_ref(), None);
    Ok(Statement::Select {
        query,
        query_text,
        emit,
        window,
    })
}

/// `DECLARE name [BINARY] [INSENSITIVE] [[NO] SCROLL] CURSOR [{WITH | WITHOUT}
/// HOLD] FOR <SELECT>`. Every cursor behaves as WITH HOLD (there are no real
/// transactions) and reads forward only.
fn parse_declare(
    p: &mut Parser,
    emit: Option<EmitMode>,
    window: Option<WindowClause>,
) -> Result<Statement> {
    const HINT: &str = "DECLARE c CURSOR FOR SELECT ...";
    p.next_token(); // DECLARE
    let name = p.parse_identifier().map_err(pe(HINT))?;
    let _ = parse_word(p, "BINARY");
    let _ = parse_word(p, "INSENSITIVE") || parse_word(p, "ASENSITIVE");
    if parse_word(p, "NO") {
        expect_word(p, "SCROLL", HINT)?;
    } else if parse_word(p, "SCROLL") {
        let t = p.peek_token();
        return Err(SluiceError::sql_at(
            "SCROLL cursors are not supported: a cursor reads forward only",
            Some(position(t.span.start)),
            Some("leave out SCROLL".into()),
        ));
    }
    expect_word(p, "CURSOR", HINT)?;
    if parse_word(p, "WITH") || parse_word(p, "WITHOUT") {
        expect_word(p, "HOLD", HINT)?;
    }
    expect_word(p, "FOR", HINT)?;
    let query = parse_select(p, emit, window)?;
    Ok(Statement::DeclareCursor {
        name: normalize_cursor(&name),
        query: Box::new(query),
    })
}

/// `FETCH [FORWARD] [n | ALL | NEXT] [FROM | IN] name`.
fn parse_fetch(p: &mut Parser) -> Result<Statement> {
    const HINT: &str = "FETCH 100 FROM c";
    p.next_token(); // FETCH
    let _ = parse_word(p, "FORWARD");
    let count = if parse_word(p, "ALL") {
        None
    } else if parse_word(p, "NEXT") {
        Some(1)
    } else if let Token::Number(n, _) = p.peek_token().token {
        p.next_token();
        Some(n.parse::<u64>().map_err(|_| {
            SluiceError::sql(format!("FETCH takes a count of rows, not '{n}'")).with_hint(HINT)
        })?)
    } else {
        Some(1)
    };
    let _ = p.parse_keyword(Keyword::FROM) || p.parse_keyword(Keyword::IN);
    let name = p.parse_identifier().map_err(pe(HINT))?;
    Ok(Statement::Fetch {
        name: normalize_cursor(&name),
        count,
    })
}

/// `CLOSE name | ALL`.
fn parse_close(p: &mut Parser) -> Result<Statement> {
    p.next_token(); // CLOSE
    if p.parse_keyword(Keyword::ALL) {
        return Ok(Statement::CloseCursor(None));
    }
    let name = p.parse_identifier().map_err(pe("CLOSE c"))?;
    Ok(Statement::CloseCursor(Some(normalize_cursor(&name))))
}

fn normalize_cursor(name: &Ident) -> String {
    match name.quote_style {
        Some(_) => name.value.clone(),
        None => name.value.to_ascii_lowercase(),
    }
}

fn parse_drop(p: &mut Parser) -> Result<Statement> {
    p.next_token(); // DROP
    if p.parse_keyword(Keyword::VIEW) {
        let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let name = parse_name(p)?;
        return Ok(Statement::DropView { name, if_exists });
    }
    let kind = if parse_word(p, "STREAM") {
        Some(RelationKind::Stream)
    } else if p.parse_keyword(Keyword::TABLE)
        || p.parse_keywords(&[Keyword::MATERIALIZED, Keyword::VIEW])
    {
        Some(RelationKind::Table)
    } else {
        let t = p.peek_token();
        return Err(SluiceError::sql_at(
            format!(
                "expected STREAM, TABLE, VIEW or MATERIALIZED VIEW after DROP, found '{}'",
                t.token
            ),
            Some(position(t.span.start)),
            None,
        ));
    };
    let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
    let name = parse_name(p)?;
    let delete_topic = p.parse_keyword(Keyword::DELETE);
    if delete_topic {
        expect_word(p, "TOPIC", "DROP STREAM s DELETE TOPIC")?;
    }
    Ok(Statement::Drop {
        kind,
        name,
        if_exists,
        delete_topic,
    })
}

fn parse_show(p: &mut Parser) -> Result<Statement> {
    p.next_token(); // SHOW | LIST
    let t = p.next_token();
    let what = match &t.token {
        t if word_is(t, "STREAMS") => ShowWhat::Streams,
        t if word_is(t, "TABLES") => ShowWhat::Tables,
        t if word_is(t, "QUERIES") => ShowWhat::Queries,
        t if word_is(t, "TOPICS") => ShowWhat::Topics,
        t if word_is(t, "PROPERTIES") => ShowWhat::Properties,
        t if word_is(t, "VIEWS") => ShowWhat::Views,
        t if word_is(t, "MATERIALIZED") => {
            expect_word(p, "VIEWS", "SHOW MATERIALIZED VIEWS")?;
            ShowWhat::Tables
        }
        t if word_is(t, "CREATE") => {
            const HINT: &str = "SHOW CREATE TABLE name (or STREAM, VIEW, MATERIALIZED VIEW)";
            let kind = if parse_word(p, "STREAM") {
                Some(RelationKind::Stream)
            } else if p.parse_keyword(Keyword::TABLE) {
                Some(RelationKind::Table)
            } else if parse_word(p, "MATERIALIZED") {
                expect_word(p, "VIEW", HINT)?;
                Some(RelationKind::Table)
            } else {
                expect_word(p, "VIEW", HINT)?;
                None
            };
            ShowWhat::Create {
                kind,
                name: parse_name(p)?,
            }
        }
        Token::Word(w) => {
            // A Postgres setting (SHOW server_version, SHOW TRANSACTION ISOLATION LEVEL).
            let mut name = w.value.to_ascii_lowercase();
            loop {
                let next = p.peek_token();
                match &next.token {
                    Token::Word(w) => {
                        p.next_token();
                        name.push('_');
                        name.push_str(&w.value.to_ascii_lowercase());
                    }
                    Token::Period => {
                        p.next_token();
                        name.push('.');
                    }
                    _ => break,
                }
            }
            if name == "transaction_isolation_level" {
                name = "transaction_isolation".into(); // Postgres' name for it
            }
            ShowWhat::Setting(name)
        }
        other => {
            return Err(SluiceError::sql_at(
                format!("cannot SHOW '{other}'"),
                Some(position(t.span.start)),
                Some(
                    "SHOW STREAMS, SHOW TABLES, SHOW QUERIES, SHOW TOPICS or SHOW PROPERTIES"
                        .into(),
                ),
            ))
        }
    };
    parse_word(p, "EXTENDED");
    Ok(Statement::Show(what))
}

fn parse_describe(p: &mut Parser) -> Result<Statement> {
    p.next_token();
    let extended = parse_word(p, "EXTENDED");
    // DESCRIBE STREAM x / DESCRIBE TABLE x read naturally too.
    if !peek_word_followed_by_end(p) {
        parse_word(p, "STREAM");
        if peek_word(p, "TABLE") && !peek_word_followed_by_end(p) {
            p.next_token();
        }
    }
    let name = parse_name(p)?;
    Ok(Statement::Describe { name, extended })
}

/// True when the next token is a word and nothing follows it (so it is a name,
/// even if it reads like a keyword).
fn peek_word_followed_by_end(p: &Parser) -> bool {
    matches!(p.peek_token().token, Token::Word(_)) && p.peek_nth_token(1).token == Token::EOF
}

fn parse_terminate(p: &mut Parser) -> Result<Statement> {
    p.next_token();
    if p.parse_keyword(Keyword::ALL) {
        return Ok(Statement::Terminate(None));
    }
    let t = p.next_token();
    let id = match &t.token {
        Token::Word(w) => w.value.clone(),
        Token::SingleQuotedString(s) => s.clone(),
        Token::Number(n, _) => n.clone(),
        other => {
            return Err(SluiceError::sql_at(
                format!("expected a query id, found '{other}'"),
                Some(position(t.span.start)),
                Some("SHOW QUERIES lists the ids".into()),
            ))
        }
    };
    Ok(Statement::Terminate(Some(id)))
}

fn parse_run_script(p: &mut Parser) -> Result<Statement> {
    p.next_token(); // RUN
    expect_word(p, "SCRIPT", "RUN SCRIPT '/path/to/file.sql'")?;
    let path = p.parse_literal_string().map_err(pe(
        "RUN SCRIPT takes a quoted path: RUN SCRIPT '/path/to/file.sql'",
    ))?;
    Ok(Statement::RunScript(path))
}

fn parse_property_name(p: &mut Parser) -> Result<String> {
    let t = p.next_token();
    let mut name = match &t.token {
        Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s.clone(),
        Token::Word(w) => w.value.clone(),
        other => {
            return Err(SluiceError::sql_at(
                format!("expected a property name, found '{other}'"),
                Some(position(t.span.start)),
                Some("SET 'auto.offset.reset' = 'earliest'".into()),
            ))
        }
    };
    while p.consume_token(&Token::Period) {
        name.push('.');
        name.push_str(&p.next_token().token.to_string());
    }
    Ok(name.to_ascii_lowercase())
}

fn parse_set(p: &mut Parser) -> Result<Statement> {
    p.next_token(); // SET
                    // Postgres forms drivers send: SET [SESSION|LOCAL] name {=|TO} value, SET TIME ZONE x.
    let _ = p.parse_one_of_keywords(&[Keyword::SESSION, Keyword::LOCAL]);
    if p.parse_keywords(&[Keyword::TIME, Keyword::ZONE]) {
        while p.next_token().token != Token::EOF {}
        return Ok(Statement::ClientCompat { tag: "SET".into() });
    }
    let name = parse_property_name(p)?;
    if !p.consume_token(&Token::Eq) && !p.parse_keyword(Keyword::TO) {
        let t = p.peek_token();
        return Err(SluiceError::sql_at(
            format!("expected '=' after the property name, found '{}'", t.token),
            Some(position(t.span.start)),
            Some("SET 'auto.offset.reset' = 'earliest'".into()),
        ));
    }
    let mut parts = Vec::new();
    loop {
        let t = p.next_token();
        match t.token {
            Token::EOF => break,
            Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => parts.push(s),
            Token::Whitespace(_) | Token::Comma => {}
            other => parts.push(other.to_string()),
        }
    }
    Ok(Statement::Set {
        name,
        value: parts.join(","),
    })
}

fn parse_unset(p: &mut Parser) -> Result<Statement> {
    p.next_token();
    Ok(Statement::Unset(parse_property_name(p)?))
}

fn parse_print(p: &mut Parser) -> Result<Statement> {
    p.next_token(); // PRINT
    let t = p.next_token();
    let mut topic = match &t.token {
        Token::Word(w) => w.value.clone(),
        Token::SingleQuotedString(s) => s.clone(),
        other => {
            return Err(SluiceError::sql_at(
                format!("expected a topic name, found '{other}'"),
                Some(position(t.span.start)),
                Some("PRINT 'topic' FROM BEGINNING LIMIT 10".into()),
            ))
        }
    };
    // Unquoted topic names may contain '-' and '.'.
    loop {
        let t = p.peek_token();
        match t.token {
            Token::Minus | Token::Period => {
                p.next_token();
                topic.push_str(&t.token.to_string());
                topic.push_str(&p.next_token().token.to_string());
            }
            _ => break,
        }
    }
    let from_beginning = if p.parse_keyword(Keyword::FROM) {
        expect_word(p, "BEGINNING", "PRINT 'topic' FROM BEGINNING")?;
        true
    } else {
        false
    };
    let limit = if p.parse_keyword(Keyword::LIMIT) {
        Some(p.parse_literal_uint().map_err(pe("LIMIT takes a number"))?)
    } else {
        None
    };
    Ok(Statement::Print {
        topic,
        from_beginning,
        limit,
    })
}

fn parse_explain(
    p: &mut Parser,
    emit: Option<EmitMode>,
    window: Option<WindowClause>,
) -> Result<Statement> {
    p.next_token();
    let inner = if p.peek_keyword(Keyword::CREATE) {
        parse_create(p, emit, window)?
    } else if p.peek_keyword(Keyword::INSERT) {
        parse_insert(p, window)?
    } else {
        parse_select(p, emit, window)?
    };
    Ok(Statement::Explain(Box::new(inner)))
}

impl SluiceError {
    /// Adds a hint to a SQL error (other errors are returned unchanged).
    pub fn with_hint(self, new_hint: impl Into<String>) -> Self {
        match self {
            SluiceError::Sql {
                message,
                position,
                sqlstate,
                ..
            } => SluiceError::Sql {
                message,
                position,
                hint: Some(new_hint.into()),
                sqlstate,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Statement {
        parse_one(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .statement
    }

    #[test]
    fn create_stream_with_key_and_options() {
        let s = one(
            "CREATE STREAM IF NOT EXISTS pageviews (user_id VARCHAR KEY, url VARCHAR, status INT, latency_ms DOUBLE, ts TIMESTAMP)\n WITH (kafka_topic='pageviews', value_format='json', timestamp='ts', partitions=4)",
        );
        let Statement::CreateSource(c) = s else {
            panic!("{s:?}")
        };
        assert_eq!(c.kind, RelationKind::Stream);
        assert!(c.if_not_exists);
        assert_eq!(c.name.value, "pageviews");
        assert_eq!(c.columns.len(), 5);
        assert!(c.columns[0].key);
        assert!(!c.columns[1].key);
        assert_eq!(c.with["kafka_topic"].value, "pageviews");
        assert_eq!(c.with["partitions"].value, "4");
        assert_eq!(c.with["timestamp"].value, "ts");
    }

    #[test]
    fn watermark_declarations() {
        let Statement::CreateSource(c) = one(
            "CREATE STREAM s (ts TIMESTAMP, watermark INT, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) WITH (kafka_topic='s')",
        ) else {
            panic!()
        };
        assert_eq!(c.columns.len(), 2, "a column may be called watermark");
        assert_eq!(c.watermark.unwrap().delay_ms, 5_000);
        let err =
            parse_script("CREATE STREAM s (ts TIMESTAMP, WATERMARK FOR ts AS ts + 1)").unwrap_err();
        assert!(err.to_string().contains("INTERVAL"), "{err}");
    }

    #[test]
    fn create_table_needs_primary_key() {
        let err = parse_one("CREATE TABLE users (id VARCHAR, name VARCHAR) WITH (kafka_topic='u')")
            .unwrap_err();
        assert!(err.to_string().contains("PRIMARY KEY"), "{err}");
        let Statement::CreateSource(c) =
            one("CREATE TABLE users (id VARCHAR, name VARCHAR, PRIMARY KEY (id)) WITH (kafka_topic='u')")
        else {
            panic!()
        };
        assert!(c.columns[0].key);
    }

    #[test]
    fn create_as_select_with_emit() {
        let s = one(
            "CREATE TABLE t AS SELECT url, COUNT(*) AS n FROM pageviews GROUP BY url EMIT CHANGES",
        );
        let Statement::CreateAs(c) = s else { panic!() };
        assert_eq!(c.emit, Some(EmitMode::Changes));
        assert!(c.query_text.contains("GROUP BY url"), "{}", c.query_text);
        assert!(!c.query_text.to_uppercase().contains("EMIT"));
    }

    #[test]
    fn materialized_view() {
        let Statement::CreateAs(c) = one("CREATE MATERIALIZED VIEW v AS SELECT * FROM s") else {
            panic!()
        };
        assert!(c.materialized_view);
        assert_eq!(c.kind, RelationKind::Table);
    }

    #[test]
    fn push_query_with_limit() {
        let Statement::Select { emit, query, .. } =
            one("SELECT * FROM s WHERE x > 1 EMIT CHANGES LIMIT 5")
        else {
            panic!()
        };
        assert_eq!(emit, Some(EmitMode::Changes));
        assert!(query.to_string().contains("LIMIT 5"));
    }

    #[test]
    fn script_split_keeps_positions_and_semicolons_in_strings() {
        let stmts = parse_script("SHOW STREAMS;\n-- a comment; with semicolon\nINSERT INTO s (a) VALUES ('x;y');\n  DESCRIBE s;").unwrap();
        assert_eq!(stmts.len(), 3);
        assert_eq!(stmts[1].position, SqlPosition { line: 3, column: 1 });
        assert_eq!(stmts[1].text, "INSERT INTO s (a) VALUES ('x;y')");
        assert_eq!(stmts[2].position, SqlPosition { line: 4, column: 3 });
        let Statement::InsertValues { rows, columns, .. } = &stmts[1].statement else {
            panic!()
        };
        assert_eq!(columns.len(), 1);
        assert_eq!(rows.len(), 1);
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let err = parse_script("SHOW STREAMS;\nSELECT a FROM s WHERE AND x").unwrap_err();
        let pos = err.position().expect("position");
        assert_eq!(pos.line, 2);
        assert!((23..=27).contains(&pos.column), "{pos:?}");
    }

    #[test]
    fn unknown_statement_has_hint() {
        let err = parse_one("FROBNICATE everything").unwrap_err();
        assert!(err.hint().unwrap().contains("CREATE STREAM"));
        assert_eq!(err.position(), Some(SqlPosition { line: 1, column: 1 }));
    }

    #[test]
    fn ksql_commands() {
        assert!(matches!(
            one("SHOW QUERIES"),
            Statement::Show(ShowWhat::Queries)
        ));
        assert!(matches!(
            one("list topics"),
            Statement::Show(ShowWhat::Topics)
        ));
        assert!(matches!(
            one("DESCRIBE EXTENDED pageviews"),
            Statement::Describe { extended: true, .. }
        ));
        assert!(
            matches!(one("TERMINATE CSAS_ERRORS_1"), Statement::Terminate(Some(ref id)) if id == "CSAS_ERRORS_1")
        );
        assert!(
            matches!(one("RUN SCRIPT '/tmp/x.sql'"), Statement::RunScript(ref p) if p == "/tmp/x.sql")
        );
        assert!(matches!(
            one("DROP STREAM IF EXISTS s DELETE TOPIC"),
            Statement::Drop {
                if_exists: true,
                delete_topic: true,
                ..
            }
        ));
        assert!(
            matches!(one("SET 'auto.offset.reset' = 'earliest'"), Statement::Set { ref name, ref value } if name == "auto.offset.reset" && value == "earliest")
        );
        assert!(matches!(
            one("SET extra_float_digits = 3"),
            Statement::Set { .. }
        ));
        assert!(matches!(
            one("PRINT 'my-topic' FROM BEGINNING LIMIT 3"),
            Statement::Print {
                from_beginning: true,
                limit: Some(3),
                ..
            }
        ));
        assert!(matches!(one("BEGIN"), Statement::ClientCompat { .. }));
        for (sql, tag) in [
            ("SAVEPOINT sa_1", "SAVEPOINT"),
            ("RELEASE SAVEPOINT sa_1", "RELEASE"),
            ("ROLLBACK TO SAVEPOINT sa_1", "ROLLBACK TO SAVEPOINT"),
            ("ROLLBACK", "ROLLBACK"),
            ("ABORT", "ROLLBACK"),
        ] {
            assert!(
                matches!(one(sql), Statement::ClientCompat { tag: ref t } if t == tag),
                "{sql}"
            );
        }
        assert!(matches!(
            one(r#"DECLARE "Big" NO SCROLL CURSOR WITH HOLD FOR SELECT n FROM nums EMIT CHANGES"#),
            Statement::DeclareCursor { ref name, ref query }
                if name == "Big" && matches!(**query, Statement::Select { emit: Some(EmitMode::Changes), .. })
        ));
        assert!(parse_script("DECLARE c SCROLL CURSOR FOR SELECT 1").is_err());
        assert!(matches!(
            one("FETCH FORWARD 25 FROM c"),
            Statement::Fetch { ref name, count: Some(25) } if name == "c"
        ));
        assert!(matches!(
            one("FETCH ALL IN c"),
            Statement::Fetch { count: None, .. }
        ));
        assert!(matches!(
            one("FETCH c"),
            Statement::Fetch { count: Some(1), .. }
        ));
        assert!(matches!(one("CLOSE ALL"), Statement::CloseCursor(None)));
        assert!(matches!(one("CLOSE C"), Statement::CloseCursor(Some(ref n)) if n == "c"));
        assert!(
            matches!(one("SHOW server_version"), Statement::Show(ShowWhat::Setting(ref s)) if s == "server_version")
        );
        assert!(
            matches!(one("SHOW TRANSACTION ISOLATION LEVEL"), Statement::Show(ShowWhat::Setting(ref s)) if s == "transaction_isolation")
        );
    }

    #[test]
    fn insert_select() {
        assert!(matches!(
            one("INSERT INTO errors SELECT * FROM pageviews WHERE status >= 500"),
            Statement::InsertSelect { .. }
        ));
    }
}
