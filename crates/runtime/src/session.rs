//! A fresh tract session id for each [`crate::compact_plan::CompactPlan`].

use std::sync::{Arc, Mutex};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

/// A session id of our own. Ops key per-session scratch on it (tract's `OptMatMul` keeps
/// output-store descriptors per session and node id), so two plans must not share one.
/// tract gives each `SimpleState` a fresh id but has no public constructor, so the id is
/// read from a throwaway one-node plan whose op records the id it is evaluated with.
pub(crate) fn fresh_session() -> TractResult<SessionId> {
    let probe = SessionProbe::default();
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact([1usize]))?;
    let y = model.wire_node("probe", probe.clone(), &[x])?;
    model.select_output_outlets(&y)?;
    SimplePlan::new(model)?.run(tvec!(tensor1(&[0f32]).into_tvalue()))?;
    let session = probe.0.lock().map_err(|_| format_err!("session probe poisoned"))?.take();
    session.context("the session probe was not evaluated")
}

#[derive(Debug, Clone, Default)]
struct SessionProbe(Arc<Mutex<Option<SessionId>>>);

impl PartialEq for SessionProbe {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SessionProbe {}

impl Op for SessionProbe {
    fn name(&self) -> StaticName {
        "SessionProbe".into()
    }

    op_as_typed_op!();
}

impl EvalOp for SessionProbe {
    not_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        *self.0.lock().map_err(|_| format_err!("session probe poisoned"))? = Some(ctx.session);
        Ok(inputs)
    }
}

impl TypedOp for SessionProbe {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(inputs[0].clone()))
    }

    as_op!();
}
