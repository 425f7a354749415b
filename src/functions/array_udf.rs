//! A scalar UDF from a name, a signature, a return type and a function over
//! whole argument arrays: the shape of the Postgres catalog functions and of
//! ksqlDB's functions, which convert their arguments themselves.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::DataType;
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

/// The body: argument arrays (scalars expanded to the batch's rows) and the
/// number of rows, to one result array.
pub type ArrayFn = dyn Fn(&[ArrayRef], usize) -> DfResult<ArrayRef> + Send + Sync;

/// Builds the UDF; two with the same name are the same function.
pub fn array_udf(
    name: &'static str,
    signature: Signature,
    return_type: DataType,
    body: impl Fn(&[ArrayRef], usize) -> DfResult<ArrayRef> + Send + Sync + 'static,
) -> ScalarUDF {
    ScalarUDF::new_from_impl(ArrayUdf {
        name,
        signature,
        return_type,
        body: Arc::new(body),
    })
}

struct ArrayUdf {
    name: &'static str,
    signature: Signature,
    return_type: DataType,
    body: Arc<ArrayFn>,
}

impl fmt::Debug for ArrayUdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrayUdf")
            .field("name", &self.name)
            .finish()
    }
}

impl PartialEq for ArrayUdf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for ArrayUdf {}

impl Hash for ArrayUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for ArrayUdf {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(self.return_type.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        Ok(ColumnarValue::Array((self.body)(&arrays, n)?))
    }
}
