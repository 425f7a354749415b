//! `COPY target [(columns)] FROM STDIN [WITH (FORMAT text|csv, HEADER,
//! DELIMITER 'c', NULL 's')]`: bulk loads from psql's `\copy`, psycopg's
//! `cursor.copy()` and JDBC's CopyManager.
//!
//! The statement is parsed by sqlparser. The data arrives in CopyData
//! messages cut anywhere; [`CopyIn::push`] keeps the unfinished tail and hands
//! back complete rows, split the way Postgres' text format (tab-separated,
//! backslash escapes, `\N` for NULL) or CSV format (quotes, `""` for a quote,
//! an empty unquoted field is NULL) defines them. Rows are written in batches
//! as they come, so a load of any size runs in bounded memory; a bad row stops
//! the COPY, and batches written before it stay written (there are no
//! transactions to roll back).

use sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Ident, Statement,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// Rows collected before they are written.
pub const BATCH_ROWS: usize = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    Text,
    Csv,
}

/// A parsed `COPY ... FROM STDIN`.
#[derive(Debug, Clone)]
pub struct CopyFrom {
    pub target: Ident,
    pub columns: Vec<Ident>,
    pub format: Format,
    pub delimiter: char,
    /// The text that means NULL (text format: `\N`; CSV: an unquoted empty field).
    pub null: Option<String>,
    pub header: bool,
}

/// `Some` when `sql` is one `COPY ... FROM STDIN` statement; `Err` for one
/// Sluice cannot load.
pub fn parse(sql: &str) -> Option<Result<CopyFrom, String>> {
    let head = sql.trim_start();
    if !head
        .get(..4)
        .is_some_and(|h| h.eq_ignore_ascii_case("COPY"))
    {
        return None;
    }
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let [Statement::Copy {
        source,
        to: false,
        target,
        options,
        legacy_options,
        ..
    }] = statements.as_slice()
    else {
        return None;
    };
    Some(from_statement(source, target, options, legacy_options))
}

fn from_statement(
    source: &CopySource,
    target: &CopyTarget,
    options: &[CopyOption],
    legacy: &[CopyLegacyOption],
) -> Result<CopyFrom, String> {
    let CopySource::Table {
        table_name,
        columns,
    } = source
    else {
        return Err("COPY FROM loads a stream or table, not a query".into());
    };
    if *target != CopyTarget::Stdin {
        return Err(
            "COPY FROM reads STDIN only; the server does not read files for COPY \
             (use psql's \\copy, or a file source)"
                .into(),
        );
    }
    let target = table_name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .cloned()
        .ok_or("COPY needs a stream or table name")?;
    let mut copy = CopyFrom {
        target,
        columns: columns.clone(),
        format: Format::Text,
        delimiter: '\t',
        null: None,
        header: false,
    };
    let mut delimiter = None;
    for option in options {
        match option {
            CopyOption::Format(f) => {
                copy.format = match f.value.to_ascii_lowercase().as_str() {
                    "text" => Format::Text,
                    "csv" => Format::Csv,
                    other => {
                        return Err(format!("COPY FORMAT {other} is not supported (text, csv)"))
                    }
                }
            }
            CopyOption::Delimiter(c) => delimiter = Some(*c),
            CopyOption::Null(s) => copy.null = Some(s.clone()),
            CopyOption::Header(h) => copy.header = *h,
            CopyOption::Encoding(e)
                if e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("utf-8") => {}
            CopyOption::Quote('"') | CopyOption::Escape('"') | CopyOption::Freeze(_) => {}
            other => return Err(format!("COPY option {other} is not supported")),
        }
    }
    for option in legacy {
        match option {
            CopyLegacyOption::Csv(csv) => {
                copy.format = Format::Csv;
                for o in csv {
                    match o {
                        CopyLegacyCsvOption::Header => copy.header = true,
                        CopyLegacyCsvOption::Quote('"') | CopyLegacyCsvOption::Escape('"') => {}
                        other => return Err(format!("COPY option {other} is not supported")),
                    }
                }
            }
            CopyLegacyOption::Delimiter(c) => delimiter = Some(*c),
            CopyLegacyOption::Null(s) => copy.null = Some(s.clone()),
            CopyLegacyOption::Header => copy.header = true,
            other => return Err(format!("COPY option {other} is not supported")),
        }
    }
    copy.delimiter = delimiter.unwrap_or(match copy.format {
        Format::Text => '\t',
        Format::Csv => ',',
    });
    Ok(copy)
}

/// The state of one COPY FROM STDIN while its data arrives.
#[derive(Debug)]
pub struct CopyIn {
    pub copy: CopyFrom,
    /// Bytes of an unfinished row.
    tail: Vec<u8>,
    /// Complete rows not written yet.
    pub rows: Vec<Vec<Option<String>>>,
    /// Rows written so far.
    pub written: usize,
    /// Rows seen so far, to name a bad one.
    seen: usize,
    header_pending: bool,
    /// psql's text-format end marker `\.` was seen: ignore the rest.
    ended: bool,
    /// The first error; later data is ignored and CopyDone reports it.
    pub failed: Option<String>,
}

impl CopyIn {
    pub fn new(copy: CopyFrom) -> CopyIn {
        let header_pending = copy.header;
        CopyIn {
            copy,
            tail: Vec::new(),
            rows: Vec::new(),
            written: 0,
            seen: 0,
            header_pending,
            ended: false,
            failed: None,
        }
    }

    /// Takes a CopyData payload; complete rows go to `rows`.
    pub fn push(&mut self, data: &[u8]) -> Result<(), String> {
        self.tail.extend_from_slice(data);
        let mut start = 0;
        let mut quoted = false;
        let mut i = 0;
        while i < self.tail.len() {
            match self.tail[i] {
                b'"' if self.copy.format == Format::Csv => quoted = !quoted,
                b'\n' if !quoted => {
                    let line = self.tail[start..i].to_vec();
                    self.line(&line)?;
                    start = i + 1;
                }
                _ => {}
            }
            i += 1;
        }
        self.tail.drain(..start);
        Ok(())
    }

    /// The data ended: a last row without a newline counts too.
    pub fn finish(&mut self) -> Result<(), String> {
        if !self.tail.is_empty() {
            let line = std::mem::take(&mut self.tail);
            self.line(&line)?;
        }
        Ok(())
    }

    fn line(&mut self, raw: &[u8]) -> Result<(), String> {
        if self.ended {
            return Ok(());
        }
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = std::str::from_utf8(raw)
            .map_err(|_| format!("row {}: not valid UTF-8", self.seen + 1))?;
        if line == "\\." {
            self.ended = true;
            return Ok(());
        }
        if self.header_pending {
            self.header_pending = false;
            return Ok(());
        }
        self.seen += 1;
        let fields = match self.copy.format {
            Format::Text => text_fields(line, self.copy.delimiter, self.copy.null.as_deref()),
            Format::Csv => csv_fields(line, self.copy.delimiter, self.copy.null.as_deref()),
        }
        .map_err(|e| format!("row {}: {e}", self.seen))?;
        self.rows.push(fields);
        Ok(())
    }
}

/// One line of Postgres' text format.
fn text_fields(
    line: &str,
    delimiter: char,
    null: Option<&str>,
) -> Result<Vec<Option<String>>, String> {
    let null = null.unwrap_or("\\N");
    let mut fields = Vec::new();
    let mut raw = String::new();
    let mut field = String::new();
    let mut chars = line.chars();
    let end_field = |raw: &mut String, field: &mut String, fields: &mut Vec<Option<String>>| {
        fields.push((raw.as_str() != null).then(|| std::mem::take(field)));
        raw.clear();
        field.clear();
    };
    while let Some(c) = chars.next() {
        if c == delimiter {
            end_field(&mut raw, &mut field, &mut fields);
            continue;
        }
        raw.push(c);
        if c != '\\' {
            field.push(c);
            continue;
        }
        let e = chars.next().ok_or("a backslash ends the line")?;
        raw.push(e);
        field.push(match e {
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'v' => '\u{b}',
            other => other,
        });
    }
    end_field(&mut raw, &mut field, &mut fields);
    Ok(fields)
}

/// One record of CSV (it may span lines inside quotes).
fn csv_fields(
    line: &str,
    delimiter: char,
    null: Option<&str>,
) -> Result<Vec<Option<String>>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        let mut was_quoted = false;
        if chars.next_if_eq(&'"').is_some() {
            was_quoted = true;
            loop {
                match chars.next() {
                    Some('"') if chars.next_if_eq(&'"').is_some() => field.push('"'),
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("unterminated quoted field".into()),
                }
            }
        }
        while let Some(c) = chars.next_if(|c| *c != delimiter) {
            if was_quoted {
                return Err(format!("'{c}' after a quoted field"));
            }
            field.push(c);
        }
        let is_null = !was_quoted && field == null.unwrap_or("");
        fields.push((!is_null).then_some(field));
        if chars.next().is_none() {
            return Ok(fields);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_of(sql: &str) -> CopyFrom {
        parse(sql).expect("a COPY FROM").expect("supported")
    }

    #[test]
    fn statements_and_options() {
        let c = copy_of("COPY ev (k, n) FROM STDIN");
        assert_eq!(c.target.value, "ev");
        assert_eq!(c.columns.len(), 2);
        assert_eq!((c.format.clone(), c.delimiter), (Format::Text, '\t'));
        let c = copy_of("COPY ev FROM STDIN WITH (FORMAT csv, HEADER true, DELIMITER ';')");
        assert_eq!((c.format, c.delimiter, c.header), (Format::Csv, ';', true));
        let c = copy_of("COPY ev FROM STDIN CSV HEADER");
        assert_eq!((c.format, c.header), (Format::Csv, true));
        assert!(parse("COPY ev FROM '/etc/passwd'").unwrap().is_err());
        assert!(parse("COPY ev TO STDOUT").is_none());
        assert!(parse("SELECT 1").is_none());
    }

    #[test]
    fn text_rows_split_anywhere() {
        let mut c = CopyIn::new(copy_of("COPY ev FROM STDIN"));
        c.push(b"a\t1\tx\\ty\nb\t\\N").unwrap();
        c.push(b"\t\\\\\nc\t3\t\n\\.\nignored\n").unwrap();
        c.finish().unwrap();
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            c.rows,
            vec![
                vec![s("a"), s("1"), s("x\ty")],
                vec![s("b"), None, s("\\")],
                vec![s("c"), s("3"), s("")],
            ]
        );
    }

    #[test]
    fn csv_rows_with_quotes_newlines_and_nulls() {
        let mut c = CopyIn::new(copy_of("COPY ev FROM STDIN WITH (FORMAT csv, HEADER)"));
        c.push(b"k,n,note\na,1,\"two\nlines\"\nb,,\"\"\nc,3,\"say \"\"hi\"\"\"")
            .unwrap();
        c.finish().unwrap();
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            c.rows,
            vec![
                vec![s("a"), s("1"), s("two\nlines")],
                vec![s("b"), None, s("")],
                vec![s("c"), s("3"), s("say \"hi\"")],
            ]
        );
        let mut bad = CopyIn::new(copy_of("COPY ev FROM STDIN CSV"));
        assert!(bad.push(b"\"a\"b,1\n").unwrap_err().contains("row 1"));
    }
}
