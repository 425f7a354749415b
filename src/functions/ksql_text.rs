//! ksqlDB's text functions: URL parts (`URL_EXTRACT_*`) and masking
//! (`MASK`, `MASK_KEEP_LEFT`, ...), with ksqlDB's NULL semantics.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int32Array, StringArray};
use arrow::datatypes::DataType;
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::ScalarUDF;

use super::ksql::{arity, ksql_udf, longs, strings, Body};

pub(super) fn functions() -> Vec<ScalarUDF> {
    let text = |name: &'static str, body: Body| ksql_udf(name, DataType::Utf8, body);
    vec![
        text("url_extract_host", |a, _| {
            url_part(a, "url_extract_host", |u| u.host_str().map(str::to_string))
        }),
        text("url_extract_path", |a, _| {
            url_part(a, "url_extract_path", |u| Some(u.path().to_string()))
        }),
        text("url_extract_protocol", |a, _| {
            url_part(a, "url_extract_protocol", |u| Some(u.scheme().to_string()))
        }),
        text("url_extract_query", |a, _| {
            url_part(a, "url_extract_query", |u| u.query().map(str::to_string))
        }),
        text("url_extract_fragment", |a, _| {
            url_part(a, "url_extract_fragment", |u| {
                u.fragment().map(str::to_string)
            })
        }),
        text("url_extract_parameter", url_parameter),
        ksql_udf("url_extract_port", DataType::Int32, url_port),
        text("mask", |a, _| {
            mask_where(a, "mask", &[1, 5], 1, |_, _| true)
        }),
        text("mask_keep_left", |a, _| {
            mask_where(a, "mask_keep_left", &[2, 6], 2, |i, (n, _)| i >= n)
        }),
        text("mask_keep_right", |a, _| {
            mask_where(a, "mask_keep_right", &[2, 6], 2, |i, (n, len)| i + n < len)
        }),
        text("mask_left", |a, _| {
            mask_where(a, "mask_left", &[2, 6], 2, |i, (n, _)| i < n)
        }),
        text("mask_right", |a, _| {
            mask_where(a, "mask_right", &[2, 6], 2, |i, (n, len)| i + n >= len)
        }),
    ]
}

fn parse_url(text: &str) -> Option<url::Url> {
    url::Url::parse(text).ok()
}

fn url_part(
    args: &[ArrayRef],
    name: &str,
    part: fn(&url::Url) -> Option<String>,
) -> DfResult<ArrayRef> {
    arity(name, args, &[1])?;
    let out: StringArray = strings(&args[0])?
        .iter()
        .map(|t| part(&parse_url(t?)?))
        .collect();
    Ok(Arc::new(out))
}

/// `URL_EXTRACT_PORT(url)`: the port written in the URL, NULL without one.
fn url_port(args: &[ArrayRef], _: usize) -> DfResult<ArrayRef> {
    arity("url_extract_port", args, &[1])?;
    let out: Int32Array = strings(&args[0])?
        .iter()
        .map(|t| parse_url(t?)?.port().map(i32::from))
        .collect();
    Ok(Arc::new(out))
}

/// `URL_EXTRACT_PARAMETER(url, name)`: the first value of a query parameter,
/// decoded.
fn url_parameter(args: &[ArrayRef], _: usize) -> DfResult<ArrayRef> {
    arity("url_extract_parameter", args, &[2])?;
    let names = strings(&args[1])?;
    let out: StringArray = strings(&args[0])?
        .iter()
        .zip(names.iter())
        .map(|(t, name)| {
            let name = name?;
            parse_url(t?)?
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        })
        .collect();
    Ok(Arc::new(out))
}

/// ksqlDB's masks: upper-case letters become `X`, lower-case `x`, digits `n`,
/// others `-`, unless the call names its own (a NULL one keeps those
/// characters as they are). `masked(i, (n, len))` says which character
/// positions are masked; `n` is the call's count argument.
fn mask_where(
    args: &[ArrayRef],
    name: &str,
    arities: &[usize],
    first_replacement: usize,
    masked: fn(usize, (usize, usize)) -> bool,
) -> DfResult<ArrayRef> {
    arity(name, args, arities)?;
    let texts = strings(&args[0])?;
    let counts = match first_replacement {
        2 => Some(longs(&args[1])?),
        _ => None,
    };
    let replacements = args[first_replacement.min(args.len())..]
        .iter()
        .map(strings)
        .collect::<DfResult<Vec<_>>>()?;
    let out: StringArray = (0..texts.len())
        .map(|row| {
            if texts.is_null(row) {
                return None;
            }
            let text = texts.value(row);
            let n = match &counts {
                Some(c) if c.is_null(row) => return None,
                Some(c) => usize::try_from(c.value(row)).ok()?,
                None => 0,
            };
            // (upper, lower, digit, other); None keeps the character.
            let pick = |k: usize, default: char| -> Option<char> {
                match replacements.get(k) {
                    None => Some(default),
                    Some(r) if r.is_null(row) => None,
                    Some(r) => r.value(row).chars().next(),
                }
            };
            let with = [pick(0, 'X'), pick(1, 'x'), pick(2, 'n'), pick(3, '-')];
            let len = text.chars().count();
            Some(
                text.chars()
                    .enumerate()
                    .map(|(i, c)| {
                        if !masked(i, (n, len)) {
                            return c;
                        }
                        let class = if c.is_uppercase() {
                            0
                        } else if c.is_lowercase() {
                            1
                        } else if c.is_numeric() {
                            2
                        } else {
                            3
                        };
                        with[class].unwrap_or(c)
                    })
                    .collect::<String>(),
            )
        })
        .collect();
    Ok(Arc::new(out))
}

#[cfg(test)]
mod tests {
    use super::super::ksql::test_support::text;
    use super::*;

    fn run(name: &str, args: &[ArrayRef]) -> Vec<Option<String>> {
        let f = functions().into_iter().find(|f| f.name() == name).unwrap();
        let args = args
            .iter()
            .map(|a| datafusion::logical_expr::ColumnarValue::Array(Arc::clone(a)))
            .collect::<Vec<_>>();
        let fields = args
            .iter()
            .map(|a| Arc::new(arrow::datatypes::Field::new("a", a.data_type(), true)))
            .collect::<Vec<_>>();
        let out = f
            .invoke_with_args(datafusion::logical_expr::ScalarFunctionArgs {
                number_rows: 2,
                arg_fields: fields,
                return_field: Arc::new(arrow::datatypes::Field::new(
                    "r",
                    f.return_type(&[]).unwrap(),
                    true,
                )),
                args,
                config_options: Arc::new(Default::default()),
            })
            .unwrap()
            .into_array(2)
            .unwrap();
        strings(&out)
            .unwrap()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect()
    }

    #[test]
    fn masks_as_ksqldb_documents_them() {
        let s = text(&[Some("AbCd#$123xy Z"), None]);
        assert_eq!(
            run("mask", std::slice::from_ref(&s)),
            vec![Some("XxXx--nnnxx-X".into()), None]
        );
        let five: ArrayRef = Arc::new(arrow::array::Int64Array::from(vec![5, 5]));
        assert_eq!(
            run("mask_keep_left", &[s.clone(), five.clone()])[0].as_deref(),
            Some("AbCd#-nnnxx-X")
        );
        assert_eq!(
            run("mask_keep_right", &[s.clone(), five.clone()])[0].as_deref(),
            Some("XxXx--nn3xy Z")
        );
        assert_eq!(
            run("mask_left", &[s.clone(), five.clone()])[0].as_deref(),
            Some("XxXx-$123xy Z")
        );
        assert_eq!(
            run("mask_right", &[s.clone(), five])[0].as_deref(),
            Some("AbCd#$12nxx-X")
        );
        let custom = [
            s,
            text(&[Some("U"); 2]),
            text(&[Some("l"); 2]),
            text(&[None; 2]),
            text(&[Some("o"); 2]),
        ];
        assert_eq!(run("mask", &custom)[0].as_deref(), Some("UlUloo123lloU"));
    }

    #[test]
    fn url_parts() {
        let u = text(&[
            Some("http://user:pw@www.example.com:8080/docs/page.html?q=a%20b&x=1#frag"),
            Some("not a url"),
        ]);
        assert_eq!(
            run("url_extract_host", std::slice::from_ref(&u)),
            vec![Some("www.example.com".into()), None]
        );
        assert_eq!(
            run("url_extract_path", std::slice::from_ref(&u))[0].as_deref(),
            Some("/docs/page.html")
        );
        assert_eq!(
            run("url_extract_protocol", std::slice::from_ref(&u))[0].as_deref(),
            Some("http")
        );
        assert_eq!(
            run("url_extract_query", std::slice::from_ref(&u))[0].as_deref(),
            Some("q=a%20b&x=1")
        );
        assert_eq!(
            run("url_extract_fragment", std::slice::from_ref(&u))[0].as_deref(),
            Some("frag")
        );
        assert_eq!(
            run("url_extract_parameter", &[u.clone(), text(&[Some("q"); 2])])[0].as_deref(),
            Some("a b")
        );
        assert_eq!(
            run("url_extract_port", &[u]),
            vec![Some("8080".into()), None]
        );
    }
}
