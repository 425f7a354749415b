//! `pg_get_keywords()`: the SQL keywords of the dialect, as Postgres lists
//! its own. Tools read it to highlight and quote (pgJDBC's
//! `DatabaseMetaData.getSQLKeywords`, DBeaver, pgAdmin). The words are
//! sqlparser's, which parses Sluice's SQL.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::Result as DfResult;
use sqlparser::keywords::{Keyword, ALL_KEYWORDS, ALL_KEYWORDS_INDEX, RESERVED_FOR_COLUMN_ALIAS};

#[derive(Debug)]
pub(super) struct PgGetKeywords;

impl TableFunctionImpl for PgGetKeywords {
    fn call_with_args(&self, _args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("word", DataType::Utf8, false),
            Field::new("catcode", DataType::Utf8, false),
            Field::new("barelabel", DataType::Boolean, false),
            Field::new("catdesc", DataType::Utf8, false),
            Field::new("baredesc", DataType::Utf8, false),
        ]));
        // Postgres' categories: R(eserved) words cannot name a column without
        // quotes; the others are U(nreserved) here.
        let reserved = |k: &Keyword| RESERVED_FOR_COLUMN_ALIAS.contains(k);
        let words: Vec<String> = ALL_KEYWORDS.iter().map(|w| w.to_lowercase()).collect();
        let codes: Vec<&str> = ALL_KEYWORDS_INDEX
            .iter()
            .map(|k| if reserved(k) { "R" } else { "U" })
            .collect();
        let descriptions: Vec<&str> = codes
            .iter()
            .map(|c| if *c == "R" { "reserved" } else { "unreserved" })
            .collect();
        let bare: Vec<bool> = codes.iter().map(|c| *c != "R").collect();
        let bare_descriptions: Vec<&str> = bare
            .iter()
            .map(|b| {
                if *b {
                    "can be bare label"
                } else {
                    "requires AS"
                }
            })
            .collect();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(words)) as ArrayRef,
                Arc::new(StringArray::from(codes)),
                Arc::new(BooleanArray::from(bare)),
                Arc::new(StringArray::from(descriptions)),
                Arc::new(StringArray::from(bare_descriptions)),
            ],
        )?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }
}
