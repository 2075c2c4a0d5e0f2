//! One network evaluation, batch 1, behind one trait, for both engines.
//!
//! Both sides do the same work per call: copy the input into the engine's tensor type, run the
//! planned graph, copy the prediction out into a `Vec<f32>`. tract runs through our runtime
//! (`edgediff_runtime::Network`, exactly what `sampler` uses); ONNX Runtime through the `ort`
//! crate with its library loaded at run time (`cargo xtask setup` fetches it), all graph
//! optimisations on, sequential execution, `threads` intra-op threads.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use edgediff_core::meta;
use edgediff_core::GaussianStream;
use edgediff_runtime::{Denoiser, Ops};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

/// Which inference engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// Our runtime, as `sampler` runs it (tract plus our own ops).
    Tract,
    /// Our runtime on tract's operators alone (`Ops::TractOnly`): the "before" of our own ops.
    TractOnly,
    Ort,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Tract => "tract",
            EngineKind::TractOnly => "tractonly",
            EngineKind::Ort => "ort",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "tract" => Ok(EngineKind::Tract),
            "tractonly" => Ok(EngineKind::TractOnly),
            "ort" => Ok(EngineKind::Ort),
            _ => bail!("unknown engine {s:?}: expected tract, tractonly or ort"),
        }
    }
}

/// A model planned for batch 1 on a fixed number of threads.
pub trait Engine {
    /// `[C, H, W]` of one image, from the model's metadata.
    fn chw(&self) -> [usize; 3];
    /// Evaluates the network once: `sample` `[1, C, H, W]`, `timestep` `[1]`.
    fn eval(&mut self, sample: &[f32], timestep: &[f32]) -> Result<Vec<f32>>;
}

/// Loads and plans the ONNX file at `path` the way each engine is normally used from a file:
/// tract through our runtime exactly like `sampler --model` (the file decoded as it is read,
/// the weights freed while tract parses and read back from the file in turn, then planned), ONNX Runtime with `commit_from_file`. Nothing else is loaded,
/// so a process that only does this measures the engine's own peak memory.
pub fn load(kind: EngineKind, path: &Path, threads: usize) -> Result<Box<dyn Engine>> {
    Ok(match kind {
        EngineKind::Tract | EngineKind::TractOnly => {
            let proto = edgediff_runtime::source::stream::read_model_proto(path, None)?.proto;
            let ops = if kind == EngineKind::Tract { Ops::Edgediff } else { Ops::TractOnly };
            let weights = Some(edgediff_runtime::source::regions::WeightSource::File(path.to_path_buf()));
            let model =
                Denoiser::load_proto(proto, &edgediff_runtime::LoadOptions { ops, weights, ..Default::default() })?;
            Box::new(TractEngine(model.into_network(1, threads)?))
        }
        EngineKind::Ort => {
            let session =
                ort_session(path, threads).map_err(|e| anyhow!("ONNX Runtime cannot load {}: {e}", path.display()))?;
            let conditional = session.inputs().iter().any(|i| i.name() == meta::INPUT_CLASS_LABELS);
            let metadata = session.metadata()?;
            let number = |key: &str| -> Result<usize> {
                let v = metadata.custom(key).with_context(|| format!("{}: metadata lacks {key}", path.display()))?;
                v.trim().parse().with_context(|| format!("{}: metadata {key} = {v:?} is not a number", path.display()))
            };
            let (c, s) = (number(meta::CHANNELS)?, number(meta::IMAGE_SIZE)?);
            // The null class is index `class_names.len()`, as the tract runtime feeds it.
            let null_class = match metadata.custom(meta::CLASS_NAMES) {
                Some(names) if !names.trim().is_empty() => names.split(',').count() as i64,
                _ => 0,
            };
            drop(metadata);
            Box::new(OrtEngine { session, chw: [c, s, s], conditional, null_class })
        }
    })
}

fn ort_session(path: &Path, threads: usize) -> Result<Session> {
    let err = |e: ort::Error<ort::session::builder::SessionBuilder>| anyhow!("{e}");
    let mut builder = Session::builder(ort_env()?)?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(err)?
        .with_parallel_execution(false)
        .map_err(err)?
        .with_intra_threads(threads)
        .map_err(err)?;
    Ok(builder.commit_from_file(path)?)
}

struct TractEngine(edgediff_runtime::Network);

impl Engine for TractEngine {
    fn chw(&self) -> [usize; 3] {
        let m = &self.0.meta;
        [m.channels, m.image_size, m.image_size]
    }
    fn eval(&mut self, sample: &[f32], timestep: &[f32]) -> Result<Vec<f32>> {
        self.0.eval(sample, timestep, None).map_err(|e| anyhow!("tract: {e}"))
    }
}

struct OrtEngine {
    session: Session,
    chw: [usize; 3],
    conditional: bool,
    null_class: i64,
}

impl Engine for OrtEngine {
    fn chw(&self) -> [usize; 3] {
        self.chw
    }
    fn eval(&mut self, sample: &[f32], timestep: &[f32]) -> Result<Vec<f32>> {
        let shape: Vec<i64> = [1].into_iter().chain(self.chw).map(|d| d as i64).collect();
        let err = |e: ort::Error| anyhow!("ONNX Runtime: {e}");
        let mut inputs = ort::inputs![
            meta::INPUT_SAMPLE => ort::value::Tensor::from_array((shape, sample.to_vec())).map_err(err)?,
            meta::INPUT_TIMESTEP => ort::value::Tensor::from_array((vec![1i64], timestep.to_vec())).map_err(err)?,
        ];
        if self.conditional {
            let null = ort::value::Tensor::from_array((vec![1i64], vec![self.null_class])).map_err(err)?;
            inputs.push((meta::INPUT_CLASS_LABELS.into(), null.into()));
        }
        let outputs = self.session.run(inputs).map_err(err)?;
        let (_, values) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
        Ok(values.to_vec())
    }
}

/// Where ONNX Runtime is: `ORT_DYLIB_PATH`, else where `cargo xtask setup` puts it.
pub fn ort_library() -> Result<PathBuf> {
    let path = match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) => PathBuf::from(p),
        None => super::root().join("target/onnxruntime/libonnxruntime.so.1.31.1"),
    };
    // ort panics inside dlopen on a missing file: check first.
    if !path.is_file() {
        bail!("ONNX Runtime not found at {} (run `cargo xtask setup`, or set ORT_DYLIB_PATH)", path.display());
    }
    Ok(path)
}

/// The process-wide ONNX Runtime environment (ort allows one per process).
fn ort_env() -> Result<&'static ort::environment::Environment> {
    static ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();
    let env = ENV.get_or_init(|| {
        let path = ort_library().map_err(|e| e.to_string())?;
        let builder =
            ort::init_from(&path).map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?;
        builder.build().map_err(|e| format!("ONNX Runtime environment: {e}"))
    });
    env.as_ref().map_err(|e| anyhow!("{e}"))
}

/// ONNX Runtime's version: the library file's version suffix (`libonnxruntime.so.1.31.1`, after
/// resolving links) and the commit from its build-info string (which names no release).
pub fn ort_version() -> Result<String> {
    let path = ort_library()?;
    ort_env()?;
    let file = std::fs::canonicalize(&path).unwrap_or(path);
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let version = name.split_once(".so.").map(|(_, v)| v.to_string()).unwrap_or_else(|| "unknown version".into());
    let commit = ort::info().split(',').find_map(|p| p.trim().strip_prefix("git-commit-id=")).map(str::to_string);
    Ok(match commit {
        Some(c) => format!("{version} (commit {c})"),
        None => version,
    })
}

/// The input every measurement uses: x_T of seed 0 (the sampler's first step) at timestep 500.
pub fn bench_input(chw: [usize; 3]) -> (Vec<f32>, Vec<f32>) {
    let mut sample = vec![0f32; chw.iter().product()];
    GaussianStream::new(0).fill(&mut sample);
    (sample, vec![500.0])
}

/// Loads, plans and evaluates once, checking the output has the sample's length and is finite,
/// so a bench never times an engine that fails or computes garbage.
pub fn load_checked(kind: EngineKind, path: &Path, threads: usize) -> Result<Box<dyn Engine>> {
    let mut engine = load(kind, path, threads).with_context(|| format!("{} with {threads} thread(s)", kind.name()))?;
    let (sample, t) = bench_input(engine.chw());
    let out = engine.eval(&sample, &t)?;
    if out.len() != sample.len() || out.iter().any(|v| !v.is_finite()) {
        bail!(
            "{}: the first evaluation gave {} values (want {}) or non-finite ones",
            kind.name(),
            out.len(),
            sample.len()
        );
    }
    Ok(engine)
}
