//! How complex a statement may be. A chain like `1+1+...+1` or `SELECT 1 UNION
//! ALL SELECT 1 ...` parses without recursion into a tree as deep as the chain
//! is long, and everything after the parser (cloning, visiting, planning,
//! dropping the tree) recurses over that depth. sqlparser bounds nesting
//! (parentheses, subqueries) but not chains, so chains are bounded here, from
//! the tokens, before anything recurses: a statement over the budget is refused
//! with SQLSTATE 54001 (Postgres' "statement too complex") instead of
//! exhausting a thread's stack.

use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::error::{Result, SluiceError};

/// Operator budget of one statement. With the server's 64 MiB thread stacks
/// a debug build runs chains of about 12,000 `+` or 3,600 `UNION ALL`s before
/// its stack runs out (a release build several times more), so the budget
/// leaves a margin of at least 3.5x, also for chains nested in each other. It
/// also bounds planning time, which grows with the square of a chain's length
/// (DataFusion names every sub-expression): 1,000 terms take about 5 s to plan
/// in a debug build, 2,000 about 23 s.
pub const MAX_OPERATOR_COST: usize = 2_000;

/// A set operation (UNION, INTERSECT, EXCEPT) costs this many operators: each
/// level of its tree takes several times the stack of an arithmetic one.
const SET_OPERATION_COST: usize = 2;

/// Refuses a statement whose operators cost more than [`MAX_OPERATOR_COST`].
pub fn check_complexity(tokens: &[TokenWithSpan]) -> Result<()> {
    let cost: usize = tokens.iter().map(|t| cost(&t.token)).sum();
    if cost <= MAX_OPERATOR_COST {
        return Ok(());
    }
    Err(SluiceError::too_complex(
        format!(
            "statement too complex: its operators count {cost}, more than the {MAX_OPERATOR_COST} a statement may have (a UNION, INTERSECT or EXCEPT counts {SET_OPERATION_COST})"
        ),
        "split it into several statements, e.g. a CREATE ... AS SELECT per part, or use IN (...) instead of a chain of ORs",
    ))
}

fn cost(token: &Token) -> usize {
    match token {
        Token::Word(w) if w.quote_style.is_none() => match w.keyword {
            Keyword::UNION | Keyword::INTERSECT | Keyword::EXCEPT => SET_OPERATION_COST,
            Keyword::AND | Keyword::OR => 1,
            _ => 0,
        },
        Token::Plus
        | Token::Minus
        | Token::Mul
        | Token::Div
        | Token::Mod
        | Token::DuckIntDiv
        | Token::StringConcat
        | Token::Eq
        | Token::DoubleEq
        | Token::Neq
        | Token::Lt
        | Token::Gt
        | Token::LtEq
        | Token::GtEq
        | Token::Spaceship
        | Token::Ampersand
        | Token::Pipe
        | Token::Caret
        | Token::ShiftLeft
        | Token::ShiftRight
        | Token::DoubleColon
        | Token::Arrow
        | Token::LongArrow => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::GenericDialect;
    use sqlparser::tokenizer::Tokenizer;

    fn check(sql: &str) -> Result<()> {
        let tokens = Tokenizer::new(&GenericDialect {}, sql)
            .tokenize_with_location()
            .unwrap();
        check_complexity(&tokens)
    }

    #[test]
    fn chains_within_the_budget_pass_and_longer_ones_are_refused() {
        let plus = |n: usize| format!("SELECT {}", vec!["1"; n].join("+"));
        assert!(check(&plus(MAX_OPERATOR_COST + 1)).is_ok());
        let e = check(&plus(MAX_OPERATOR_COST + 2)).unwrap_err();
        assert_eq!(e.sqlstate(), "54001");
        let unions = |n: usize| vec!["SELECT 1"; n].join(" UNION ALL ");
        assert!(check(&unions(MAX_OPERATOR_COST / SET_OPERATION_COST + 1)).is_ok());
        assert!(check(&unions(MAX_OPERATOR_COST / SET_OPERATION_COST + 2)).is_err());
    }

    #[test]
    fn operators_in_strings_and_quoted_names_do_not_count() {
        let text = format!("SELECT '{}' AS \"union\"", "+".repeat(20_000));
        assert!(check(&text).is_ok());
    }
}
