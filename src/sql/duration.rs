//! Durations as users write them: `5 SECONDS`, `'1 minute'`, `500 ms`, and SQL
//! interval literals (`INTERVAL '5' SECOND`, `INTERVAL '1 minute'`). Everything is
//! reduced to milliseconds, the unit event time is kept in.

use sqlparser::ast::{DateTimeField, Expr, Interval, Value};

/// Milliseconds in one `unit` (singular or plural, any case), or `None`.
pub fn unit_ms(unit: &str) -> Option<i64> {
    let u = unit.trim().to_ascii_lowercase();
    let u = u
        .strip_suffix('s')
        .filter(|s| !s.is_empty() && *s != "m")
        .unwrap_or(&u);
    Some(match u {
        "ms" | "millisecond" | "milli" => 1,
        "s" | "sec" | "second" => 1_000,
        "m" | "min" | "minute" => 60_000,
        "h" | "hr" | "hour" => 3_600_000,
        "d" | "day" => 86_400_000,
        "week" => 7 * 86_400_000,
        _ => return None,
    })
}

/// `"5 seconds"`, `"5s"`, `"1 MINUTE"`, `"250 ms"` → milliseconds.
pub fn parse_duration(text: &str) -> Option<i64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = if unit.trim().is_empty() { "ms" } else { unit };
    let n: f64 = number.trim().parse().ok()?;
    let ms = n * unit_ms(unit)? as f64;
    (ms.is_finite() && ms >= 0.0 && ms <= i64::MAX as f64).then_some(ms.round() as i64)
}

/// A sqlparser interval literal → milliseconds (`INTERVAL '5' SECOND`,
/// `INTERVAL '1 minute'`, `INTERVAL '2' HOURS`).
pub fn interval_ms(expr: &Expr) -> Option<i64> {
    let Expr::Interval(Interval {
        value,
        leading_field,
        ..
    }) = expr
    else {
        return None;
    };
    let text = match value.as_ref() {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::Number(s, _) => s.clone(),
            _ => return None,
        },
        _ => return None,
    };
    match leading_field {
        None => parse_duration(&text),
        Some(field) => {
            let unit = match field {
                DateTimeField::Millisecond | DateTimeField::Milliseconds => "ms",
                DateTimeField::Second | DateTimeField::Seconds => "second",
                DateTimeField::Minute | DateTimeField::Minutes => "minute",
                DateTimeField::Hour | DateTimeField::Hours => "hour",
                DateTimeField::Day | DateTimeField::Days => "day",
                DateTimeField::Week(_) | DateTimeField::Weeks => "week",
                _ => return None,
            };
            parse_duration(&format!("{text} {unit}"))
        }
    }
}

/// Milliseconds written back the way a user would (`5 SECONDS`), for statements
/// Sluice re-parses on restart.
pub fn format_duration(ms: i64) -> String {
    for (unit, size) in [
        ("DAYS", 86_400_000),
        ("HOURS", 3_600_000),
        ("MINUTES", 60_000),
        ("SECONDS", 1_000),
    ] {
        if ms != 0 && ms % size == 0 {
            return format!("{} {unit}", ms / size);
        }
    }
    format!("{ms} MILLISECONDS")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5 seconds"), Some(5_000));
        assert_eq!(parse_duration("5s"), Some(5_000));
        assert_eq!(parse_duration("1 MINUTE"), Some(60_000));
        assert_eq!(parse_duration("2 hours"), Some(7_200_000));
        assert_eq!(parse_duration("250 ms"), Some(250));
        assert_eq!(parse_duration("1.5 seconds"), Some(1_500));
        assert_eq!(parse_duration("3 m"), Some(180_000));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("five seconds"), None);
        assert_eq!(parse_duration("5 fortnights"), None);
        assert_eq!(format_duration(90_000), "90 SECONDS");
        assert_eq!(format_duration(3_600_000), "1 HOURS");
        assert_eq!(format_duration(1_500), "1500 MILLISECONDS");
        assert_eq!(parse_duration(&format_duration(1_500)), Some(1_500));
    }

    #[test]
    fn interval_literals() {
        let parse = |s: &str| {
            let dialect = sqlparser::dialect::GenericDialect {};
            let mut p = sqlparser::parser::Parser::new(&dialect)
                .try_with_sql(s)
                .unwrap();
            interval_ms(&p.parse_expr().unwrap())
        };
        assert_eq!(parse("INTERVAL '5' SECOND"), Some(5_000));
        assert_eq!(parse("INTERVAL '1 minute'"), Some(60_000));
        assert_eq!(parse("INTERVAL '2' HOUR"), Some(7_200_000));
        assert_eq!(parse("5"), None);
    }
}
