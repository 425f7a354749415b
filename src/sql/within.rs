//! ksqlDB's stream-stream join bound, `JOIN r WITHIN 1 HOUR [GRACE PERIOD 1
//! MINUTE] ON ...` and `WITHIN (10 SECONDS, 1 MINUTE)` (before, after), which
//! sqlparser does not know. It is rewritten in the token stream to
//! `ON __sluice_within(before_ms, after_ms, grace_ms) AND (...)`; the planner
//! takes the marker back out of the join condition (planner/join.rs). Written
//! back as SQL, a persisted query keeps the marker and re-plans the same.

use sqlparser::tokenizer::{Token, TokenWithSpan};

use super::window::{duration_at, is_trivia, pos, word};
use crate::error::{Result, SluiceError};
use crate::functions::within::NAME;

const HINT: &str = "JOIN r WITHIN 1 HOUR ON ..., or WITHIN (10 SECONDS, 1 MINUTE) for \
different bounds before and after the left row's time, optionally followed by GRACE PERIOD 5 SECONDS";

/// Words that end a join's ON condition.
const ENDS_ON: &[&str] = &[
    "JOIN",
    "INNER",
    "LEFT",
    "RIGHT",
    "FULL",
    "CROSS",
    "NATURAL",
    "WHERE",
    "GROUP",
    "HAVING",
    "ORDER",
    "LIMIT",
    "UNION",
    "EMIT",
    "WINDOW",
    "QUALIFY",
    "EXCEPT",
    "INTERSECT",
];

/// Rewrites every `WITHIN` join bound of a statement's tokens.
pub fn rewrite_within(tokens: &mut Vec<TokenWithSpan>) -> Result<()> {
    loop {
        let sig: Vec<usize> = (0..tokens.len())
            .filter(|&i| !is_trivia(&tokens[i].token))
            .collect();
        let words: Vec<TokenWithSpan> = sig.iter().map(|&i| tokens[i].clone()).collect();
        let found = (0..words.len()).find(|&k| {
            word(&words[k].token).as_deref() == Some("WITHIN")
                // WITHIN GROUP (ORDER BY ...) belongs to ordered aggregates.
                && words
                    .get(k + 1)
                    .and_then(|t| word(&t.token))
                    .as_deref()
                    != Some("GROUP")
        });
        let Some(k) = found else {
            return Ok(());
        };
        let mut j = k + 1;
        let (before, after) = if words.get(j).map(|t| &t.token) == Some(&Token::LParen) {
            j += 1;
            let before = duration_at(&words, &mut j, "WITHIN (before, after)", HINT)?;
            expect(&words, &mut j, Token::Comma)?;
            let after = duration_at(&words, &mut j, "WITHIN (before, after)", HINT)?;
            expect(&words, &mut j, Token::RParen)?;
            (before, after)
        } else {
            let d = duration_at(&words, &mut j, "WITHIN", HINT)?;
            (d, d)
        };
        let mut grace = 0;
        if words.get(j).and_then(|t| word(&t.token)).as_deref() == Some("GRACE") {
            j += 1;
            if words.get(j).and_then(|t| word(&t.token)).as_deref() == Some("PERIOD") {
                j += 1;
            }
            grace = duration_at(&words, &mut j, "GRACE PERIOD", HINT)?;
        }
        if words.get(j).and_then(|t| word(&t.token)).as_deref() != Some("ON") {
            return Err(SluiceError::sql_at(
                "a WITHIN join bound must be followed by ON <join condition>",
                words.get(j).or(words.get(k)).map(pos),
                Some(HINT.into()),
            ));
        }
        // The end of the ON condition: the first clause word or closing
        // parenthesis at its own nesting level.
        let mut depth = 0i32;
        let mut end = words.len();
        for (m, t) in words.iter().enumerate().skip(j + 1) {
            match &t.token {
                Token::LParen => depth += 1,
                Token::RParen if depth == 0 => {
                    end = m;
                    break;
                }
                Token::RParen => depth -= 1,
                Token::SemiColon if depth == 0 => {
                    end = m;
                    break;
                }
                other
                    if depth == 0 && word(other).is_some_and(|w| ENDS_ON.contains(&w.as_str())) =>
                {
                    end = m;
                    break;
                }
                _ => {}
            }
        }
        let span = words[k].span;
        let at = |token: Token| TokenWithSpan::new(token, span);
        let number = |v: i64| at(Token::Number(v.to_string(), false));
        let marker = vec![
            at(Token::make_word(NAME, None)),
            at(Token::LParen),
            number(before),
            at(Token::Comma),
            number(after),
            at(Token::Comma),
            number(grace),
            at(Token::RParen),
            at(Token::make_keyword("AND")),
            at(Token::LParen),
        ];
        let (within_at, on_at) = (sig[k], sig[j]);
        let end_at = sig.get(end).copied().unwrap_or(tokens.len());
        let mut rewritten = Vec::with_capacity(tokens.len() + marker.len() + 1);
        rewritten.extend_from_slice(&tokens[..within_at]);
        rewritten.push(tokens[on_at].clone());
        rewritten.extend(marker);
        rewritten.extend_from_slice(&tokens[on_at + 1..end_at]);
        rewritten.push(at(Token::RParen));
        rewritten.push(at(Token::Whitespace(
            sqlparser::tokenizer::Whitespace::Space,
        )));
        rewritten.extend_from_slice(&tokens[end_at..]);
        *tokens = rewritten;
    }
}

fn expect(words: &[TokenWithSpan], j: &mut usize, token: Token) -> Result<()> {
    if words.get(*j).map(|t| &t.token) == Some(&token) {
        *j += 1;
        Ok(())
    } else {
        Err(SluiceError::sql_at(
            format!("expected '{token}' in the WITHIN clause"),
            words.get(*j).map(pos),
            Some(HINT.into()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::GenericDialect;
    use sqlparser::tokenizer::Tokenizer;

    fn rewrite(sql: &str) -> Result<String> {
        let mut tokens = Tokenizer::new(&GenericDialect {}, sql)
            .tokenize_with_location()
            .unwrap();
        rewrite_within(&mut tokens)?;
        Ok(tokens.iter().map(|t| t.token.to_string()).collect())
    }

    #[test]
    fn within_becomes_a_marker_in_the_on_condition() {
        assert_eq!(
            rewrite("SELECT * FROM a JOIN b WITHIN 1 HOUR ON a.id = b.id WHERE a.x > 1").unwrap(),
            "SELECT * FROM a JOIN b ON__sluice_within(3600000,3600000,0)AND( a.id = b.id ) WHERE a.x > 1"
        );
        assert_eq!(
            rewrite("SELECT * FROM a JOIN b WITHIN (10 SECONDS, 1 MINUTE) GRACE PERIOD 5 SECONDS ON a.id = b.id OR a.y = b.y").unwrap(),
            "SELECT * FROM a JOIN b ON__sluice_within(10000,60000,5000)AND( a.id = b.id OR a.y = b.y) "
        );
    }

    #[test]
    fn within_group_is_left_alone_and_errors_point_at_the_clause() {
        let sql = "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) FROM t";
        assert_eq!(rewrite(sql).unwrap(), sql);
        let e = rewrite("SELECT * FROM a JOIN b WITHIN 1 HOUR WHERE 1 = 1").unwrap_err();
        assert!(e.to_string().contains("followed by ON"), "{e}");
        let e = rewrite("SELECT * FROM a JOIN b WITHIN (1 HOUR ON a.id = b.id").unwrap_err();
        assert!(e.to_string().contains("expected ','"), "{e}");
    }
}
