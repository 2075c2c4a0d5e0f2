//! The burn reference sampler and the edge runtime sample the same image: a tiny run (2 steps
//! of training, attention and dropout on) is exported to ONNX and sampled by both, with DDIM,
//! DDIM with noise and DDPM. x_T must be bit-identical (same noise stream) and the final x0
//! equal within 1e-4. Plus the `train sample` command's files and its errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use burn::backend::Flex;
use edgediff_core::meta::ModelMeta;
use edgediff_core::SamplerSettings;
use edgediff_core::{SchedulerKind, Spacing};
use edgediff_io::npy;
use edgediff_io::sha256_hex;
use edgediff_runtime::sampling::{sample, SampleRequest};
use edgediff_runtime::Denoiser;
use edgediff_train::device::CpuBackend;
use edgediff_train::export::export_onnx;
use edgediff_train::fit::run_files::load_ema;
use edgediff_train::fit::{fit, FitOptions, FitOverrides};
use edgediff_train::reference::{meta_from_run, sample_seed, sample_seed_with_class, ClassSetting};
use edgediff_train::unet::UNet;

const TOLERANCE: f32 = 1e-4;

/// Trains the tiny run (8x8, base 8, mults [1, 2], attention at 4x4, dropout 0.1) for two
/// steps and exports it. Returns (run dir, ONNX path, EMA network, its metadata).
fn tiny_run(root: &Path, steps: u64) -> (PathBuf, PathBuf, UNet<Flex>, ModelMeta) {
    tiny_run_with(root, steps, false)
}

/// [`tiny_run`], class-conditional on the 7 sprite shapes when `conditional`.
fn tiny_run_with(root: &Path, steps: u64, conditional: bool) -> (PathBuf, PathBuf, UNet<Flex>, ModelMeta) {
    let run = root.join("run");
    let overrides = FitOverrides {
        data: Some("sprites".into()),
        steps: Some(steps),
        batch: Some(2),
        checkpoint_every: Some(steps),
        seed: Some(3),
        image_size: Some(8),
        base_channels: Some(8),
        channel_mults: Some(vec![1, 2]),
        attention: Some(vec![4]),
        conditional: conditional.then_some(true),
        ..Default::default()
    };
    let opts = FitOptions { stop: Arc::new(AtomicBool::new(false)), progress: false, verbose: false };
    fit::<CpuBackend>(&run, &overrides, false, &Default::default(), &opts).expect("tiny training run");
    let (ema, state) = load_ema::<Flex>(&run, &Default::default()).unwrap();
    let meta = meta_from_run(&state, "tiny".into()).unwrap();
    let onnx = root.join("tiny.onnx");
    std::fs::write(&onnx, export_onnx(&ema, &state.config.model, &meta).unwrap()).unwrap();
    (run, onnx, ema, meta)
}

fn settings(kind: SchedulerKind, steps: usize, eta: f32, spacing: Spacing) -> SamplerSettings {
    SamplerSettings { kind, steps, spacing, steps_offset: 0, eta, set_alpha_to_one: true }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_train")).args(args).output().expect("run train")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn burn_reference_matches_the_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, onnx, ema, meta) = tiny_run(tmp.path(), 2);
    let bytes = std::fs::read(&onnx).unwrap();
    let cases = [
        ("ddim eta 0, 5 steps", settings(SchedulerKind::Ddim, 5, 0.0, Spacing::Leading)),
        ("ddim eta 1, 4 steps, trailing", settings(SchedulerKind::Ddim, 4, 1.0, Spacing::Trailing)),
        ("ddpm, 6 steps", settings(SchedulerKind::Ddpm, 6, 0.0, Spacing::Leading)),
    ];
    let mut worst = 0.0f32;
    for (name, s) in &cases {
        for seed in [0u64, 41] {
            let reference = sample_seed(&ema, &meta, s, seed, &Default::default()).unwrap();
            let mut net = Denoiser::from_onnx_bytes(&bytes, &BTreeMap::new()).unwrap().into_network(1, 1).unwrap();
            let req = SampleRequest {
                seed,
                settings: s.clone(),
                init_noise: None,
                class_labels: None,
                guidance: None,
                memory_budget: None,
            };
            let runtime = sample(&mut net, &req, |_| {}).unwrap();
            assert_eq!(bits(&reference.x_t), bits(&runtime.x_t), "{name}, seed {seed}: x_T differs");
            let diff = max_abs_diff(&reference.x0, &runtime.x0);
            println!("{name}, seed {seed}: max |x0 burn - x0 runtime| = {diff:e}");
            assert!(diff <= TOLERANCE, "{name}, seed {seed}: x0 differs by {diff}");
            // The comparison means something only if sampling moved far from x_T.
            assert!(max_abs_diff(&reference.x0, &reference.x_t) > 0.5, "{name}: x0 is still x_T");
            worst = worst.max(diff);
        }
    }
    println!("worst max abs x0 difference burn vs runtime: {worst:e}");
}

#[test]
fn sample_command_writes_reference_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, onnx, ema, meta) = tiny_run(tmp.path(), 2);
    let out = tmp.path().join("ref");
    let result = train(&[
        "sample",
        "--run",
        p(&run),
        "--onnx",
        p(&onnx),
        "--seeds",
        "5,2",
        "--steps",
        "4",
        "--scheduler",
        "ddpm",
        "--device",
        "cpu",
        "--out",
        p(&out),
    ]);
    assert_eq!(result.status.code(), Some(0), "{}", String::from_utf8_lossy(&result.stderr));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("reference.json")).unwrap()).unwrap();
    assert_eq!(json["onnx"]["sha256"], sha256_hex(&std::fs::read(&onnx).unwrap()));
    assert_eq!(json["onnx"]["weights_match_run"], true);
    assert_eq!(json["seeds"], serde_json::json!([5, 2]));
    assert_eq!(json["steps"], 4);
    assert_eq!(json["scheduler"], "ddpm");
    assert_eq!(json["device"], "cpu");
    assert_eq!(json["burn_version"], "0.21.0");
    assert_eq!(json["model_name"], "tiny");
    let command = json["command"].as_str().unwrap();
    assert!(
        command.starts_with("train sample --run ")
            && command.contains("--seeds 5,2")
            && command.contains("--device cpu"),
        "{command}"
    );
    assert!(json["date"].as_str().unwrap().ends_with('Z'));

    let cfg = settings(SchedulerKind::Ddpm, 4, 0.0, Spacing::Leading);
    for seed in [5u64, 2] {
        let dir = out.join(format!("seed-{seed}"));
        let (x_t, shape) = npy::read_f32(&dir.join("x_T.npy")).unwrap();
        let (x0, shape0) = npy::read_f32(&dir.join("x0.npy")).unwrap();
        assert_eq!((shape, shape0), (vec![1, 3, 8, 8], vec![1, 3, 8, 8]));
        // The command and the library (same CPU backend) agree bit for bit.
        let lib = sample_seed(&ema, &meta, &cfg, seed, &Default::default()).unwrap();
        assert_eq!((bits(&x_t), bits(&x0)), (bits(&lib.x_t), bits(&lib.x0)), "seed {seed}");
        let png = image::open(dir.join("sample.png")).unwrap();
        assert_eq!((png.width(), png.height()), (8, 8));
    }

    // Without --onnx: same samples, metadata from the run.
    let out2 = tmp.path().join("ref2");
    let result = train(&[
        "sample",
        "--run",
        p(&run),
        "--seeds",
        "5",
        "--steps",
        "4",
        "--scheduler",
        "ddpm",
        "--device",
        "cpu",
        "--out",
        p(&out2),
    ]);
    assert_eq!(result.status.code(), Some(0), "{}", String::from_utf8_lossy(&result.stderr));
    assert_eq!(std::fs::read(out2.join("seed-5/x0.npy")).unwrap(), std::fs::read(out.join("seed-5/x0.npy")).unwrap());
    let json2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out2.join("reference.json")).unwrap()).unwrap();
    assert!(json2["onnx"].is_null());
}

#[test]
fn sample_command_checks_its_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, onnx, _, meta) = tiny_run(tmp.path(), 2);
    let out = tmp.path().join("o");
    // Exit 2 for a model file that cannot be used (bad input), 1 for the other failures.
    let expect_error = |args: &[&str], code: i32, needle: &str| {
        let r = train(args);
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked") && stderr.lines().count() == 1, "{stderr}");
        assert!(stderr.contains(needle), "expected {needle:?} in {stderr}");
    };
    let missing = tmp.path().join("nothing-here");
    expect_error(&["sample", "--run", p(&missing), "--device", "cpu", "--out", p(&out)], 1, p(&missing));
    expect_error(
        &["sample", "--run", p(&run), "--onnx", p(&missing), "--device", "cpu", "--out", p(&out)],
        2,
        p(&missing),
    );

    // An ONNX file from another model (16x16) is refused.
    let other = edgediff_train::unet::UNetConfig::new()
        .with_image_size(16)
        .with_base_channels(8)
        .with_channel_mults(vec![1, 2])
        .with_attention_resolutions(vec![])
        .with_groups(4);
    let wrong = tmp.path().join("wrong.onnx");
    let wrong_meta = ModelMeta { image_size: 16, ..meta.clone() };
    std::fs::write(&wrong, export_onnx(&other.init::<Flex>(&Default::default()), &other, &wrong_meta).unwrap())
        .unwrap();
    expect_error(
        &["sample", "--run", p(&run), "--onnx", p(&wrong), "--device", "cpu", "--out", p(&out)],
        1,
        "image_size 16",
    );

    // Same architecture and metadata but other weights (another run's): sampled, with a
    // warning and `weights_match_run: false`. The matching file passes the same check.
    let (_, _, other_ema, _) = tiny_run(&tmp.path().join("second"), 3);
    let (_, state) = load_ema::<Flex>(&run, &Default::default()).unwrap();
    let other_weights = tmp.path().join("other-weights.onnx");
    std::fs::write(&other_weights, export_onnx(&other_ema, &state.config.model, &meta).unwrap()).unwrap();
    for (file, matches) in [(&other_weights, false), (&onnx, true)] {
        let r = train(&[
            "sample",
            "--run",
            p(&run),
            "--onnx",
            p(file),
            "--steps",
            "2",
            "--device",
            "cpu",
            "--out",
            p(&out),
        ]);
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(0), "{stderr}");
        assert_eq!(stderr.contains("does not hold exactly this run's EMA weights"), !matches, "{stderr}");
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("reference.json")).unwrap()).unwrap();
        assert_eq!(json["onnx"]["weights_match_run"], matches);
    }

    for args in [
        &["sample", "--run", "r", "--out", "o", "--seeds", "1,x"][..],
        &["sample", "--run", "r", "--out", "o", "--eta", "2"],
        &["sample", "--out", "o"],
    ] {
        assert_eq!(train(args).status.code(), Some(2), "{args:?} is a usage error");
    }
}

/// Classifier-free guidance in the burn reference (one batch-2 call per step) and in the
/// runtime (one batch-2N call) sample the same image; so does `train sample --class`.
#[test]
fn guided_reference_matches_the_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, onnx, ema, meta) = tiny_run_with(tmp.path(), 2, true);
    assert_eq!(meta.class_names.len(), 7);
    let bytes = std::fs::read(&onnx).unwrap();
    let cfg = settings(SchedulerKind::Ddim, 4, 0.5, Spacing::Trailing);
    let star = ClassSetting { class: Some(5), guidance: Some(2.5) };
    let reference = sample_seed_with_class(&ema, &meta, &cfg, 3, star, &Default::default()).unwrap();
    let req = SampleRequest {
        seed: 3,
        settings: cfg.clone(),
        init_noise: None,
        class_labels: Some(vec![5]),
        guidance: Some(2.5),
        memory_budget: None,
    };
    let batch = req.network_batch(1).unwrap();
    let mut net = Denoiser::from_onnx_bytes(&bytes, &BTreeMap::new()).unwrap().into_network(batch, 1).unwrap();
    let runtime = sample(&mut net, &req, |_| {}).unwrap();
    assert_eq!(bits(&reference.x_t), bits(&runtime.x_t));
    let diff = max_abs_diff(&reference.x0, &runtime.x0);
    println!("guided (w 2.5): max |x0 burn - x0 runtime| = {diff:e}");
    assert!(diff <= TOLERANCE, "guided x0 differs by {diff}");
    let unguided = sample_seed(&ema, &meta, &cfg, 3, &Default::default()).unwrap();
    assert!(max_abs_diff(&reference.x0, &unguided.x0) > 1e-3, "guidance must change the reference sample");

    let out = tmp.path().join("ref");
    let result = train(&[
        "sample",
        "--run",
        p(&run),
        "--onnx",
        p(&onnx),
        "--seeds",
        "3",
        "--steps",
        "4",
        "--eta",
        "0.5",
        "--spacing",
        "trailing",
        "--class",
        "star",
        "--guidance",
        "2.5",
        "--device",
        "cpu",
        "--out",
        p(&out),
    ]);
    assert_eq!(result.status.code(), Some(0), "{}", String::from_utf8_lossy(&result.stderr));
    let (x0, _) = npy::read_f32(&out.join("seed-3/x0.npy")).unwrap();
    assert_eq!(bits(&x0), bits(&reference.x0), "the command and the library agree bit for bit");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("reference.json")).unwrap()).unwrap();
    assert_eq!(
        (json["class"].as_str(), json["class_index"].as_u64(), json["guidance"].as_f64()),
        (Some("star"), Some(5), Some(2.5))
    );
    assert!(json["command"].as_str().unwrap().contains("--class star --guidance 2.5"));
    // An unknown class is a usage error, as in `sampler`.
    let r = train(&["sample", "--run", p(&run), "--class", "hexagon", "--device", "cpu", "--out", p(&out)]);
    assert_eq!(r.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("circle, square, triangle"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
}
