//! `__sluice_within(before_ms, after_ms, grace_ms)`: the marker ksqlDB's
//! `JOIN r WITHIN ...` becomes in the ON condition (see `sql/within.rs`). The
//! planner takes it out of a continuous join and bounds the join by event time;
//! anywhere else (a pull query) it cannot be honoured, so evaluating it fails.

use arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

pub const NAME: &str = "__sluice_within";

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Within {
    signature: Signature,
}

impl Within {
    pub fn new() -> Self {
        Within {
            // Volatile: never folded away before the planner finds it.
            signature: Signature::exact(
                vec![DataType::Int64, DataType::Int64, DataType::Int64],
                Volatility::Volatile,
            ),
        }
    }
}

impl Default for Within {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for Within {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Err(DataFusionError::Plan(
            "JOIN ... WITHIN bounds a continuous join by event time; use it with EMIT CHANGES or CREATE STREAM ... AS SELECT".into(),
        ))
    }
}
