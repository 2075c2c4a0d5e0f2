//! Errors of the runtime: each renders as one line that names what was wrong and what was expected.

use edgediff_core::CoreError;
use tract_onnx::prelude::TractResult;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("model: {0}")]
    Metadata(#[from] CoreError),
    #[error("model is not a readable ONNX file ({0})")]
    Decode(String),
    /// The model file could not be read (missing, not a regular file, ...).
    #[error(transparent)]
    Read(#[from] edgediff_io::FileError),
    #[error("model: tract could not load it: {0}")]
    Load(String),
    #[error("model: {0}")]
    Interface(String),
    /// `EDGEDIFF_KERNELS` names no kernel, or one this CPU cannot run.
    #[error("{0}")]
    Kernels(String),
    #[error("network evaluation failed at step {step} (t={timestep}): {message}")]
    Eval { step: usize, timestep: usize, message: String },
    #[error("network output at step {step} (t={timestep}) contains {what}: the model is broken or was fed bad input")]
    NonFinite { step: usize, timestep: usize, what: &'static str },
    #[error("the sample after step {step} (t={timestep}) contains {what}: the model's schedule or its predictions are broken")]
    NonFiniteSample { step: usize, timestep: usize, what: &'static str },
    #[error("--init-noise: expected {expected} values ({shape}), got {got}")]
    InitNoiseShape { expected: usize, got: usize, shape: String },
    #[error(
        "memory budget of {budget} is too small: {phase} needs {needed} of heap (measured); raise --memory-budget or use a smaller --batch"
    )]
    OverBudget { budget: String, needed: String, phase: &'static str },
    #[error("needs at least {needed} ({parts}), more than {limit}: raise --memory-budget, or use a smaller --batch or model")]
    PredictedOverBudget { needed: String, parts: String, limit: String },
    #[error(
        "memory budget needs the counting allocator installed as #[global_allocator] (see edgediff_runtime::memory)"
    )]
    NoAllocator,
    #[error("{0}")]
    Invalid(String),
}

impl RuntimeError {
    /// Whether the error is the model's: its file, metadata or graph cannot be used (bad input,
    /// as opposed to a failure while running a usable model).
    pub fn is_bad_model(&self) -> bool {
        matches!(
            self,
            RuntimeError::Metadata(_)
                | RuntimeError::Decode(_)
                | RuntimeError::Read(_)
                | RuntimeError::Load(_)
                | RuntimeError::Interface(_)
        )
    }
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

/// Runs `f`, turning a panic inside it into an error message: a last line of defence around
/// tract, whose every known panic on a broken model is checked for before it runs
/// ([`crate::validate`], the bounds of `edgediff_core::meta`). A build that aborts on panic
/// (the `release-small` profile) cannot catch one: the binary's panic hook reports it instead.
pub(crate) fn guarded<T>(f: impl FnOnce() -> TractResult<T>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(tract_message(&e)),
        Err(payload) => {
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(format!("tract failed on this model: {}", text.replace('\n', " ")))
        }
    }
}
