//! Reading and writing a run directory's checkpoint: model + optimiser + EMA + `state.json`,
//! and the `loss.csv` / `loss.png` that accompany it. Used by `fit` (save, resume) and by
//! the other subcommands (`export`, later `sample`/`eval`) that need the trained EMA weights.

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::record::Record;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::checkpoint::{self, CheckpointError, EMA_FILE, MODEL_FILE, OPTIM_FILE, STATE_FILE};
use crate::unet::UNet;

use super::config::{RunState, STATE_FORMAT};
use super::plot;
use super::FitError;

/// Loads `state.json` of the newest checkpoint; returns it with the checkpoint directory.
pub fn load_state(run_dir: &Path) -> Result<(RunState, PathBuf), FitError> {
    let dir = checkpoint::latest(run_dir)?;
    let bytes = checkpoint::read(&dir, STATE_FILE)?;
    let path = dir.join(STATE_FILE);
    let state: RunState = serde_json::from_slice(&bytes)
        .map_err(|e| CheckpointError::Corrupt { path: path.clone(), reason: e.to_string() })?;
    if state.format != STATE_FORMAT {
        return Err(CheckpointError::Corrupt {
            path,
            reason: format!("state format {} (expected {STATE_FORMAT})", state.format),
        }
        .into());
    }
    if state.losses.len() as u64 != state.step {
        return Err(CheckpointError::Corrupt {
            path,
            reason: format!("{} losses for {} steps", state.losses.len(), state.step),
        }
        .into());
    }
    Ok((state, dir))
}

/// Loads one burn record file of a checkpoint. burn panics on some malformed inputs (e.g. a
/// bad parameter id), so the load runs under `catch_unwind` with the panic message silenced
/// and turned into a one-line error naming the file.
pub fn load_record<B: Backend, R: Record<B>>(dir: &Path, file: &str, device: &B::Device) -> Result<R, FitError> {
    let bytes = checkpoint::read(dir, file)?;
    let path = dir.join(file);
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        checkpoint::record_from_bytes::<B, R>(bytes, &path, device)
    }));
    std::panic::set_hook(hook);
    match result {
        Ok(r) => Ok(r?),
        Err(_) => Err(CheckpointError::Corrupt { path, reason: "malformed record".into() }.into()),
    }
}

/// The EMA weights of the newest checkpoint (what gets exported and sampled), on any backend.
pub fn load_ema<B: Backend>(run_dir: &Path, device: &B::Device) -> Result<(UNet<B>, RunState), FitError> {
    let (state, dir) = load_state(run_dir)?;
    let model = state.config.model.init::<B>(device);
    let record = load_record::<B, _>(&dir, EMA_FILE, device)?;
    Ok((model.load_record(record), state))
}

/// Writes a checkpoint (atomically, see [`checkpoint::save`]), then refreshes the loss files.
pub fn save_checkpoint(
    run_dir: &Path,
    state: &RunState,
    model_bytes: Vec<u8>,
    optim_bytes: Vec<u8>,
    ema_bytes: Vec<u8>,
) -> Result<PathBuf, FitError> {
    let json = serde_json::to_vec_pretty(state)
        .map_err(|e| CheckpointError::Encode { what: "state", reason: e.to_string() })?;
    let dir = checkpoint::save(
        run_dir,
        state.step,
        &[(MODEL_FILE, &model_bytes), (OPTIM_FILE, &optim_bytes), (EMA_FILE, &ema_bytes), (STATE_FILE, &json)],
    )?;
    write_loss_files(run_dir, state)?;
    Ok(dir)
}

/// `loss.csv` and `loss.png` for the losses so far.
pub fn write_loss_files(run_dir: &Path, state: &RunState) -> Result<(), FitError> {
    let csv_path = run_dir.join("loss.csv");
    let csv = plot::loss_csv(&state.losses, |s| state.config.lr_at(s));
    edgediff_io::write_atomic(&csv_path, csv.as_bytes()).map_err(CheckpointError::from)?;
    let png_path = run_dir.join("loss.png");
    edgediff_data::write_png_atomic(&plot::loss_png(&state.losses), &png_path)?;
    Ok(())
}

struct Flatten {
    values: Vec<f32>,
    error: Option<String>,
}

impl<B: Backend> ModuleVisitor<B> for Flatten {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        match param.val().into_data().convert::<f32>().to_vec::<f32>() {
            Ok(v) => self.values.extend_from_slice(&v),
            Err(e) => self.error = Some(format!("{e:?}")),
        }
    }
}

/// Every float parameter of `module`, concatenated in visiting order: a fingerprint of the
/// weights for bit-exact comparisons (resume tests, export checks).
pub fn flat_weights<B: Backend, M: Module<B>>(module: &M) -> Result<Vec<f32>, FitError> {
    let mut v = Flatten { values: Vec::new(), error: None };
    module.visit(&mut v);
    match v.error {
        Some(e) => Err(FitError::Backend(e)),
        None => Ok(v.values),
    }
}
