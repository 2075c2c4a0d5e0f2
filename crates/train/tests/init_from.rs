//! `train fit --init-from M.onnx`: a new run starts from an exported model's weights (the warm
//! start used to fine-tune the shipped model after its run directory was gone), records where
//! it came from, counts the source's training steps in its own export, and refuses a model of
//! another task or architecture with an error naming the file.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use burn::backend::Flex;
use burn::module::Module;
use edgediff_io::sha256_hex;
use edgediff_train::checkpoint::MODEL_FILE;
use edgediff_train::device::CpuBackend;
use edgediff_train::export::export_onnx;
use edgediff_train::fit::run_files::{flat_weights, load_ema, load_record, load_state};
use edgediff_train::fit::{fit, FitOptions, FitOverrides};
use edgediff_train::reference::meta_from_run;
use edgediff_train::unet::UNet;

const LR: f64 = 1e-3;

fn overrides(steps: u64, seed: u64) -> FitOverrides {
    FitOverrides {
        data: Some("sprites".into()),
        steps: Some(steps),
        batch: Some(2),
        lr: Some(LR),
        warmup: Some(1),
        checkpoint_every: Some(steps),
        seed: Some(seed),
        image_size: Some(8),
        base_channels: Some(8),
        channel_mults: Some(vec![1, 2]),
        attention: Some(vec![4]),
        conditional: Some(true),
        ..Default::default()
    }
}

fn quiet() -> FitOptions {
    FitOptions { stop: Arc::new(AtomicBool::new(false)), progress: false, verbose: false }
}

/// The trained (not EMA) weights of the run's latest checkpoint.
fn model_weights(run: &Path) -> Vec<f32> {
    let device = Default::default();
    let (state, dir) = load_state(run).unwrap();
    let model: UNet<Flex> = state.config.model.init(&device);
    let model = model.load_record(load_record::<Flex, _>(&dir, MODEL_FILE, &device).unwrap());
    flat_weights::<Flex, _>(&model).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn a_warm_start_continues_the_exported_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, warm, cold) = (tmp.path().join("source"), tmp.path().join("warm"), tmp.path().join("cold"));
    let device = Default::default();
    fit::<CpuBackend>(&source, &overrides(2, 1), false, &device, &quiet()).unwrap();
    let (ema, state) = load_ema::<Flex>(&source, &device).unwrap();
    let onnx = tmp.path().join("source.onnx");
    let bytes = export_onnx(&ema, &state.config.model, &meta_from_run(&state, "source".into()).unwrap()).unwrap();
    std::fs::write(&onnx, &bytes).unwrap();
    let exported = flat_weights::<Flex, _>(&ema).unwrap();

    let with_init = FitOverrides { init_from: Some(onnx.clone()), ..overrides(1, 2) };
    fit::<CpuBackend>(&warm, &with_init, false, &device, &quiet()).unwrap();
    fit::<CpuBackend>(&cold, &overrides(1, 2), false, &device, &quiet()).unwrap();

    // One Adam step moves each weight by at most about the learning rate; a random init is
    // orders of magnitude further away.
    let moved = max_abs_diff(&model_weights(&warm), &exported);
    let cold_distance = max_abs_diff(&model_weights(&cold), &exported);
    assert!(moved <= 1.5 * LR as f32, "warm start moved {moved} in one step of lr {LR}");
    assert!(cold_distance > 100.0 * moved, "the cold run is as close ({cold_distance}): the test proves nothing");

    let (_, warm_state) = load_ema::<Flex>(&warm, &device).unwrap();
    let init = warm_state.config.init_from.clone().expect("the run records its warm start");
    assert_eq!(init.sha256, sha256_hex(&bytes));
    assert_eq!(init.training_steps, 2);
    assert_eq!(meta_from_run(&warm_state, "warm".into()).unwrap().training_steps, 3, "2 source steps + 1");
}

#[test]
fn a_model_of_another_task_or_architecture_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let device = Default::default();
    let source = tmp.path().join("source");
    fit::<CpuBackend>(&source, &overrides(1, 1), false, &device, &quiet()).unwrap();
    let (ema, state) = load_ema::<Flex>(&source, &device).unwrap();
    let onnx = tmp.path().join("source.onnx");
    let meta = meta_from_run(&state, "source".into()).unwrap();
    std::fs::write(&onnx, export_onnx(&ema, &state.config.model, &meta).unwrap()).unwrap();

    let wider = FitOverrides { init_from: Some(onnx.clone()), base_channels: Some(16), ..overrides(1, 2) };
    let err = fit::<CpuBackend>(&tmp.path().join("wider"), &wider, false, &device, &quiet()).unwrap_err().to_string();
    assert!(err.contains("source.onnx") && err.contains("--base-channels"), "{err}");

    let v = FitOverrides { init_from: Some(onnx.clone()), prediction: Some("v_prediction".into()), ..overrides(1, 2) };
    let err = fit::<CpuBackend>(&tmp.path().join("v"), &v, false, &device, &quiet()).unwrap_err().to_string();
    assert!(err.contains("source.onnx") && err.contains("prediction epsilon"), "{err}");
}
