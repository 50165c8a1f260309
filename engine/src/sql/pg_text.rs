//! Case folding in DataFusion as PostgreSQL does it, with the one definition the
//! in-memory filters use (`read::pattern::lower_char`): `lower()` is replaced by a
//! function that folds each character as `towlower` does, and every case-insensitive
//! LIKE (`ILIKE` in SQL, `_ilike` in GraphQL aggregates) becomes a LIKE of the two
//! lowercased sides. DataFusion's own ILIKE folds through a regular expression's
//! case-insensitivity, which matches `ſ` with `s` and not `İ` with `i`.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result as DfResult;
use datafusion::execution::SessionState;
use datafusion::logical_expr::expr::{Like, ScalarFunction};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

use crate::read::pattern::pg_lower;

/// `lower(text)`, folding as PostgreSQL does under a UTF-8 locale.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Lower {
    signature: Signature,
}

impl ScalarUDFImpl for Lower {
    fn name(&self) -> &str {
        "lower"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(arg_types.first().cloned().unwrap_or(DataType::Utf8))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let Some(arg) = args.args.first() else {
            return datafusion::common::plan_err!("lower() takes one argument");
        };
        let scalar = matches!(arg, ColumnarValue::Scalar(_));
        let input = arg.to_array(if scalar { 1 } else { args.number_rows })?;
        let ty = input.data_type().clone();
        let text = cast(&input, &DataType::Utf8)?;
        let lowered: StringArray = text.as_string::<i32>().iter().map(|v| v.map(pg_lower)).collect();
        let out: ArrayRef = cast(&lowered, &ty)?;
        Ok(if scalar {
            ColumnarValue::Scalar(datafusion::common::ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        })
    }
}

/// Rewrites each case-insensitive LIKE as a LIKE of the lowercased sides.
#[derive(Debug)]
struct IlikeAsLower {
    lower: Arc<ScalarUDF>,
}

impl IlikeAsLower {
    fn lower(&self, e: Expr) -> Box<Expr> {
        Box::new(Expr::ScalarFunction(ScalarFunction::new_udf(
            self.lower.clone(),
            vec![e],
        )))
    }
}

impl AnalyzerRule for IlikeAsLower {
    fn name(&self) -> &str {
        "ilike_as_lower"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            node.map_expressions(|e| {
                e.transform_up(|e| match e {
                    Expr::Like(like) if like.case_insensitive => Ok(Transformed::yes(Expr::Like(Like {
                        negated: like.negated,
                        expr: self.lower(*like.expr),
                        pattern: self.lower(*like.pattern),
                        escape_char: like.escape_char,
                        case_insensitive: false,
                    }))),
                    other => Ok(Transformed::no(other)),
                })
            })
        })
        .map(|t| t.data)
    }
}

/// Installs PostgreSQL's case folding: `lower()` and the ILIKE rewrite.
pub(crate) fn fold_case_as_postgresql(state: &mut SessionState) {
    let lower = Arc::new(ScalarUDF::new_from_impl(Lower {
        signature: Signature::uniform(
            1,
            vec![DataType::Utf8, DataType::LargeUtf8, DataType::Utf8View],
            Volatility::Immutable,
        ),
    }));
    if let Err(e) = datafusion::execution::FunctionRegistry::register_udf(state, lower.clone()) {
        tracing::error!(error = %e, "cannot replace lower()");
    }
    state.add_analyzer_rule(Arc::new(IlikeAsLower { lower }));
}
