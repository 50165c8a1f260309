//! Functions whose output size the caller chooses. `repeat('x', 1e12)` would ask the
//! allocator for a terabyte, and a failed allocation aborts the process; no memory pool
//! sees it coming, because a function's output is not reserved from the pool. Each such
//! function is wrapped: before it runs, the longest text it could build is computed from
//! its arguments, and past `max_value_bytes` it is refused with `RESULT_TOO_LARGE`.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::compute::kernels::length::length;
use datafusion::arrow::compute::{cast, max, min};
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::error::Result as DfResult;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

use crate::error::EngineError;

/// How a function's output length follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(text, n)`: the text's length times n.
    Repeat,
    /// `lpad(text, n [, fill])`, `rpad`: n characters of at most 4 bytes.
    Pad,
    /// `replace(text, from, to)`: with an empty `from`, `to` between every character.
    Replace,
}

const GROWING: [(&str, Growth); 4] = [
    ("repeat", Growth::Repeat),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("replace", Growth::Replace),
];

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    growth: Growth,
    max_bytes: usize,
}

fn as_array(v: &ColumnarValue) -> DfResult<ArrayRef> {
    v.to_array(1)
}

/// The largest integer among an argument's values (0 when all are null).
fn int_max(v: &ColumnarValue) -> DfResult<i128> {
    let a = cast(&as_array(v)?, &DataType::Int64)?;
    Ok(max(a.as_primitive::<Int64Type>()).map_or(0, i128::from))
}

/// The shortest and longest text (in bytes) among an argument's values.
fn text_len(v: &ColumnarValue) -> DfResult<(i128, i128)> {
    let a = cast(&as_array(v)?, &DataType::LargeUtf8)?;
    let lengths = cast(&length(&a)?, &DataType::Int64)?;
    let lengths = lengths.as_primitive::<Int64Type>();
    Ok((min(lengths).map_or(0, i128::from), max(lengths).map_or(0, i128::from)))
}

impl Bounded {
    /// An upper bound of the longest value the call can build, in bytes.
    fn bound(&self, args: &[ColumnarValue]) -> DfResult<i128> {
        let arg = |i: usize| args.get(i);
        Ok(match self.growth {
            Growth::Repeat => match (arg(0), arg(1)) {
                (Some(t), Some(n)) => text_len(t)?.1 * int_max(n)?.max(0),
                _ => 0,
            },
            Growth::Pad => match arg(1) {
                Some(n) => int_max(n)?.max(0) * 4,
                None => 0,
            },
            Growth::Replace => match (arg(0), arg(1), arg(2)) {
                (Some(t), Some(from), Some(to)) => {
                    let (text, (from_min, _), (_, to)) = (text_len(t)?.1, text_len(from)?, text_len(to)?);
                    if from_min == 0 {
                        text + (text + 1) * to
                    } else {
                        text * to.max(1)
                    }
                }
                _ => 0,
            },
        })
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let bound = self.bound(&args.args)?;
        if bound > self.max_bytes as i128 {
            return Err(EngineError::ResultTooLarge(format!(
                "{}() would build a value longer than {} bytes",
                self.inner.name(),
                self.max_bytes
            ))
            .into_datafusion());
        }
        self.inner.invoke_with_args(args)
    }
}

/// Replaces each function that can grow its output without bound by its bounded form.
pub(crate) fn bound_growing_functions(state: &mut SessionState, max_bytes: usize) {
    for (name, growth) in GROWING {
        let Some(inner) = state.scalar_functions().get(name).cloned() else {
            continue;
        };
        let bounded = ScalarUDF::new_from_impl(Bounded {
            inner,
            growth,
            max_bytes,
        });
        if let Err(e) = datafusion::execution::FunctionRegistry::register_udf(state, Arc::new(bounded)) {
            tracing::error!(error = %e, function = name, "cannot bound a function");
        }
    }
}
