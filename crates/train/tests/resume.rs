//! `--resume` is exact: a run trained 6 steps in one go, one trained 3 steps and resumed to 6,
//! and one stopped after its first step (the Ctrl-C path) and resumed to 6 must have identical
//! loss sequences and bit-identical final weights and EMA weights. (Adam's moments are not
//! compared directly - their record is keyed by random parameter ids - but steps 4..6 of the
//! resumed runs could not reproduce the weights bit for bit from different moments.)
//!
//! Tiny CPU network (base 8, mults [1, 2], attention at 8, 16x16, batch 4) with dropout on,
//! gradient clipping on and a warm-up shorter than the run, so every random and stateful part
//! of a step is exercised.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use burn::backend::Flex;
use burn::module::Module;
use edgediff_train::checkpoint::{self, EMA_FILE, MODEL_FILE};
use edgediff_train::device::CpuBackend;
use edgediff_train::fit::run_files::{flat_weights, load_record, load_state};
use edgediff_train::fit::{fit, FitOptions, FitOverrides};
use edgediff_train::unet::UNet;

fn overrides(steps: u64) -> FitOverrides {
    FitOverrides {
        data: Some("sprites".into()),
        steps: Some(steps),
        batch: Some(4),
        lr: Some(1e-3),
        warmup: Some(2),
        grad_clip: Some(0.5),
        ema: Some(0.9),
        checkpoint_every: Some(2),
        seed: Some(11),
        image_size: Some(16),
        base_channels: Some(8),
        channel_mults: Some(vec![1, 2]),
        attention: Some(vec![8]),
        dropout: Some(0.2),
        ..Default::default()
    }
}

/// burn-flex keeps its RNG in a process-wide static, so two trainings running at once in one
/// process (the test harness's threads) would share dropout draws. A real `train fit` runs one
/// training per process; here the tests take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn quiet() -> FitOptions {
    FitOptions { stop: Arc::new(AtomicBool::new(false)), progress: false, verbose: false }
}

/// (losses, model weights, EMA weights) of the run's latest checkpoint.
fn snapshot(run: &Path) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let device = Default::default();
    let (state, dir) = load_state(run).unwrap();
    let weights = |file: &str| {
        let model: UNet<Flex> = state.config.model.init(&device);
        let model = model.load_record(load_record::<Flex, _>(&dir, file, &device).unwrap());
        flat_weights::<Flex, _>(&model).unwrap()
    };
    (state.losses.clone(), weights(MODEL_FILE), weights(EMA_FILE))
}

fn assert_bits_eq(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    let diff = a.iter().zip(b).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
    assert_eq!(diff, 0, "{what}: {diff} of {} values differ", a.len());
}

#[test]
fn resumed_runs_match_an_uninterrupted_run_bit_for_bit() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let device = Default::default();
    let (a, b, c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));

    let sa = fit::<CpuBackend>(&a, &overrides(6), false, &device, &quiet()).unwrap();
    assert_eq!((sa.start_step, sa.final_step, sa.interrupted), (0, 6, false));

    // B: 3 steps (the last checkpoint is at 3, not on the every-2 grid), then resume to 6.
    fit::<CpuBackend>(&b, &overrides(3), false, &device, &quiet()).unwrap();
    assert_eq!(load_state(&b).unwrap().0.step, 3);
    let resume = FitOverrides { steps: Some(6), ..Default::default() };
    let sb = fit::<CpuBackend>(&b, &resume, true, &device, &quiet()).unwrap();
    assert_eq!((sb.start_step, sb.final_step), (3, 6));

    // C: stop requested before the first step (what Ctrl-C does): one step, saved, then resume.
    let stop = FitOptions { stop: Arc::new(AtomicBool::new(true)), ..quiet() };
    let sc = fit::<CpuBackend>(&c, &overrides(6), false, &device, &stop).unwrap();
    assert_eq!((sc.final_step, sc.interrupted), (1, true));
    fit::<CpuBackend>(&c, &FitOverrides::default(), true, &device, &quiet()).unwrap();

    let (la, wa, ea) = snapshot(&a);
    assert_eq!(la.len(), 6);
    assert!(la.iter().all(|l| l.is_finite() && *l > 0.0), "{la:?}");
    for (name, run) in [("3+3", &b), ("1+5", &c)] {
        let (l, w, e) = snapshot(run);
        assert_bits_eq(&format!("{name} losses"), &la, &l);
        assert_bits_eq(&format!("{name} weights"), &wa, &w);
        assert_bits_eq(&format!("{name} EMA"), &ea, &e);
    }
    // The weights did move, and the EMA differs from the raw weights (the test can fail).
    let init: UNet<Flex> = load_state(&a).unwrap().0.config.model.init(&device);
    assert_ne!(flat_weights::<Flex, _>(&init).unwrap(), wa);
    assert_ne!(wa, ea);
    // Only the newest checkpoint is kept, and the loss files exist.
    let dirs = std::fs::read_dir(a.join("checkpoints")).unwrap().count();
    assert_eq!(dirs, 1);
    assert!(checkpoint::latest(&a).unwrap().ends_with("step-00000006"));
    let csv = std::fs::read_to_string(a.join("loss.csv")).unwrap();
    assert_eq!(csv.lines().count(), 7, "{csv}");
    assert!(image::open(a.join("loss.png")).is_ok());
}

#[test]
fn a_different_seed_gives_a_different_run() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let device = Default::default();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    fit::<CpuBackend>(&a, &overrides(2), false, &device, &quiet()).unwrap();
    let other = FitOverrides { seed: Some(12), ..overrides(2) };
    fit::<CpuBackend>(&b, &other, false, &device, &quiet()).unwrap();
    assert_ne!(snapshot(&a).0, snapshot(&b).0);
}

/// A class-conditional run with label dropout resumes exactly too (the dropout coins are a
/// function of (seed, step)), records its classes and dropout, and really uses the labels:
/// dropping every label (all null class) gives another loss curve.
#[test]
fn conditional_runs_resume_bit_for_bit_and_use_their_labels() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let device = Default::default();
    let (a, b, null) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("null"));
    let conditional = |steps: u64, dropout: f64| FitOverrides {
        conditional: Some(true),
        label_dropout: Some(dropout),
        attention: Some(vec![]),
        ..overrides(steps)
    };
    fit::<CpuBackend>(&a, &conditional(4, 0.5), false, &device, &quiet()).unwrap();
    fit::<CpuBackend>(&b, &conditional(2, 0.5), false, &device, &quiet()).unwrap();
    fit::<CpuBackend>(&b, &FitOverrides { steps: Some(4), ..Default::default() }, true, &device, &quiet()).unwrap();
    let (state, _) = load_state(&a).unwrap();
    assert_eq!(state.config.model.num_classes, Some(7));
    assert_eq!(state.config.label_dropout, 0.5);
    assert_eq!(state.class_names.len(), 7);
    let (la, wa, ea) = snapshot(&a);
    let (lb, wb, eb) = snapshot(&b);
    assert_bits_eq("conditional 2+2 losses", &la, &lb);
    assert_bits_eq("conditional 2+2 weights", &wa, &wb);
    assert_bits_eq("conditional 2+2 EMA", &ea, &eb);

    fit::<CpuBackend>(&null, &conditional(4, 1.0), false, &device, &quiet()).unwrap();
    assert_ne!(snapshot(&null).0, la, "labels must reach the network");
    // A contradicting flag on resume is named.
    let clash =
        FitOverrides { steps: Some(5), label_dropout: Some(0.2), conditional: Some(true), ..Default::default() };
    let e = fit::<CpuBackend>(&a, &clash, true, &device, &quiet()).unwrap_err().to_string();
    assert!(e.contains("--label-dropout 0.2 (run has 0.5)"), "{e}");
}
