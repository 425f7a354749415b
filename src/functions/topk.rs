//! `TOPK(x, k)`: the k largest values of `x`, largest first (ksqlDB). Incremental:
//! the accumulator keeps at most k values, and two partial results merge by
//! keeping the k largest of both.

use std::cmp::Ordering;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{exec_err, plan_err, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};
use datafusion::physical_expr::expressions::Literal;

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TopK {
    signature: Signature,
}

impl TopK {
    pub fn new() -> Self {
        TopK {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

fn list_of(t: &DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(t.clone(), true)))
}

impl AggregateUDFImpl for TopK {
    fn name(&self) -> &str {
        "topk"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if !arg_types[1].is_integer() {
            return plan_err!("TOPK(x, k): k must be an integer constant");
        }
        Ok(list_of(&arg_types[0]))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[topk]", args.name),
            list_of(args.input_fields[0].data_type()),
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let k = args.exprs[1]
            .downcast_ref::<Literal>()
            .and_then(|l| match l.value() {
                ScalarValue::Int64(Some(k)) => Some(*k),
                ScalarValue::Int32(Some(k)) => Some(*k as i64),
                other => other.cast_to(&DataType::Int64).ok().and_then(|v| match v {
                    ScalarValue::Int64(k) => k,
                    _ => None,
                }),
            });
        match k {
            Some(k) if (1..=10_000).contains(&k) => Ok(Box::new(TopKAccumulator {
                k: k as usize,
                values: Vec::new(),
                data_type: args.expr_fields[0].data_type().clone(),
            })),
            _ => exec_err!("TOPK(x, k): k must be a constant between 1 and 10000"),
        }
    }
}

#[derive(Debug)]
struct TopKAccumulator {
    k: usize,
    /// Largest first, at most k.
    values: Vec<ScalarValue>,
    data_type: DataType,
}

impl TopKAccumulator {
    fn offer(&mut self, v: ScalarValue) {
        if v.is_null() {
            return;
        }
        if self.values.len() == self.k {
            match self.values.last().and_then(|min| v.partial_cmp(min)) {
                Some(Ordering::Greater) => {
                    self.values.pop();
                }
                _ => return,
            }
        }
        let pos = self
            .values
            .partition_point(|x| x.partial_cmp(&v) != Some(Ordering::Less));
        self.values.insert(pos, v);
    }

    fn offer_array(&mut self, array: &ArrayRef) -> Result<()> {
        for i in 0..array.len() {
            if array.is_valid(i) {
                self.offer(ScalarValue::try_from_array(array, i)?);
            }
        }
        Ok(())
    }

    fn list(&self) -> Result<ScalarValue> {
        let values = if self.values.is_empty() {
            arrow::array::new_empty_array(&self.data_type)
        } else {
            ScalarValue::iter_to_array(self.values.iter().cloned())?
        };
        Ok(ScalarValue::List(Arc::new(arrow::array::ListArray::new(
            Arc::new(Field::new_list_field(self.data_type.clone(), true)),
            arrow::buffer::OffsetBuffer::from_lengths([values.len()]),
            values,
            None,
        ))))
    }
}

impl Accumulator for TopKAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.offer_array(&values[0])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.list()
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.values.iter().map(|v| v.size()).sum::<usize>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.list()?])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let lists = states[0].as_list::<i32>();
        for i in 0..lists.len() {
            if lists.is_valid(i) {
                self.offer_array(&lists.value(i))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    #[test]
    fn keeps_the_k_largest_and_merges() {
        let mut a = TopKAccumulator {
            k: 3,
            values: vec![],
            data_type: DataType::Int64,
        };
        a.update_batch(&[Arc::new(Int64Array::from(vec![
            Some(5),
            None,
            Some(1),
            Some(9),
            Some(7),
            Some(2),
        ]))])
        .unwrap();
        let mut b = TopKAccumulator {
            k: 3,
            values: vec![],
            data_type: DataType::Int64,
        };
        b.update_batch(&[Arc::new(Int64Array::from(vec![8, 3]))])
            .unwrap();
        let state = b.state().unwrap()[0].to_array().unwrap();
        a.merge_batch(&[state]).unwrap();
        let ScalarValue::List(list) = a.evaluate().unwrap() else {
            panic!()
        };
        let values = list.value(0);
        let values = values.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(values.values().to_vec(), vec![9, 8, 7]);
    }
}
