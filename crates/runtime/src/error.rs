//! Errors of the runtime: each renders as one line that names what was wrong and what was expected.

use edgediff_core::CoreError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("model: {0}")]
    Metadata(#[from] CoreError),
    #[error("model is not a readable ONNX file ({0})")]
    Decode(String),
    #[error("model: tract could not load it: {0}")]
    Load(String),
    #[error("model: {0}")]
    Interface(String),
    #[error("network evaluation failed at step {step} (t={timestep}): {message}")]
    Eval { step: usize, timestep: usize, message: String },
    #[error("network output at step {step} (t={timestep}) contains {what}: the model is broken or was fed bad input")]
    NonFinite { step: usize, timestep: usize, what: &'static str },
    #[error("--init-noise: expected {expected} values ({shape}), got {got}")]
    InitNoiseShape { expected: usize, got: usize, shape: String },
    #[error(
        "memory budget of {budget} is too small: {phase} needs {needed} of heap (measured); raise --memory-budget or use a smaller --batch"
    )]
    OverBudget { budget: String, needed: String, phase: &'static str },
    #[error(
        "memory budget needs the counting allocator installed as #[global_allocator] (see edgediff_runtime::memory)"
    )]
    NoAllocator,
    #[error("{0}")]
    Invalid(String),
}

/// Compact first line of a tract error chain (tract errors are multi-line anyhow chains).
pub(crate) fn tract_message(e: &tract_onnx::prelude::TractError) -> String {
    let chain: Vec<String> = e.chain().map(|c| c.to_string().replace('\n', " ")).collect();
    let mut msg = chain.join(": ");
    if msg.len() > 300 {
        msg.truncate(300);
        msg.push('…');
    }
    msg
}
