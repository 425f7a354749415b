//! SQL functions streaming users expect beyond DataFusion's built-ins: ksqlDB's
//! names for aggregates and scalar functions DataFusion already has
//! (registered as aliases, so they run DataFusion's own code), ksqlDB's scalar
//! functions DataFusion lacks (`ksql.rs`), `TOPK`, and `PROCTIME()`.

mod array_udf;
mod ksql;
mod ksql_more;
mod ksql_text;
pub mod percentile;
mod proctime;
mod topk;
pub mod within;

pub use array_udf::array_udf;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
use datafusion::prelude::SessionContext;

use crate::error::{Result, SluiceError};

/// (DataFusion aggregate, the extra names users call it by).
const AGGREGATE_ALIASES: &[(&str, &[&str])] = &[
    ("approx_percentile_cont", &["approx_percentile"]),
    (
        "approx_distinct",
        &["approx_count_distinct", "count_distinct_approx"],
    ),
    ("first_value", &["earliest_by_offset"]),
    ("last_value", &["latest_by_offset"]),
    ("array_agg", &["collect_list"]),
    ("percentile_cont", &["percentile"]),
];

/// Registers Sluice's functions on a session.
pub fn register(ctx: &SessionContext) -> Result<()> {
    let state = ctx.state();
    for (name, aliases) in AGGREGATE_ALIASES {
        let udaf = state.aggregate_functions().get(*name).ok_or_else(|| {
            SluiceError::Internal(format!("DataFusion has no aggregate '{name}'"))
        })?;
        ctx.register_udaf(udaf.as_ref().clone().with_aliases(aliases.iter().copied()));
    }
    for (name, aliases) in ksql::ALIASES {
        let udf = state
            .scalar_functions()
            .get(*name)
            .ok_or_else(|| SluiceError::Internal(format!("DataFusion has no function '{name}'")))?;
        ctx.register_udf(udf.as_ref().clone().with_aliases(aliases.iter().copied()));
    }
    for f in ksql::functions() {
        ctx.register_udf(f);
    }
    ctx.register_udaf(AggregateUDF::from(topk::TopK::new()));
    ctx.register_udf(ScalarUDF::from(proctime::ProcTime::new()));
    ctx.register_udf(ScalarUDF::from(within::Within::new()));
    Ok(())
}
