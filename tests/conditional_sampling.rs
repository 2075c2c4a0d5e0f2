//! Class-conditional sampling with classifier-free guidance, on a tiny conditional U-Net with
//! seeded random weights exported to ONNX: the batched 2N guided loop equals a manual loop of
//! separate conditional and unconditional evaluations, the w = 1 and w = 0 shortcuts equal
//! plain conditional and unconditional sampling, and the `sampler` flags behave (errors for
//! models and classes that cannot be honoured, classes in `info`, provenance, determinism).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use burn::backend::Flex;
use burn::tensor::backend::Backend;
use edgediff_core::meta::{ModelMeta, Precision};
use edgediff_core::{
    build_scheduler, image_seed, GaussianStream, ModelSchedule, PredictionType, SamplerSettings, Spacing,
};
use edgediff_runtime::{sample, Denoiser, SampleRequest};
use edgediff_train::export::export_onnx;
use edgediff_train::unet::UNetConfig;

const SIZE: usize = 8;
const CLASSES: [&str; 3] = ["circle", "square", "ring"];

/// A conditional v-prediction model with random weights (the guidance formula applies to the
/// raw model output whatever it predicts).
fn conditional_model() -> (Vec<u8>, ModelMeta) {
    let config = UNetConfig::new()
        .with_image_size(SIZE)
        .with_base_channels(8)
        .with_channel_mults(vec![1, 2])
        .with_attention_resolutions(vec![])
        .with_groups(4)
        .with_dropout(0.0)
        .with_num_classes(Some(CLASSES.len()));
    let device = Default::default();
    Flex::seed(&device, 21);
    let model = config.init::<Flex>(&device);
    let meta = ModelMeta {
        model_name: "tiny-conditional".into(),
        schedule: ModelSchedule {
            prediction_type: PredictionType::VPrediction,
            clip_sample: Some(1.0),
            ..ModelSchedule::default()
        },
        image_size: SIZE,
        channels: 3,
        value_range: (-1.0, 1.0),
        precision: Precision::Fp32,
        training_steps: 0,
        class_names: CLASSES.iter().map(|s| s.to_string()).collect(),
        has_null_class: true,
        guidance_scale: None,
        sampling: Default::default(),
        float_order: Default::default(),
    };
    (export_onnx(&model, &config, &meta).expect("export"), meta)
}

fn ddim(steps: usize, eta: f32) -> SamplerSettings {
    SamplerSettings { spacing: Spacing::Trailing, eta, ..SamplerSettings::ddim(steps) }
}

fn request(seed: u64, labels: Option<Vec<i64>>, guidance: Option<f32>) -> SampleRequest {
    SampleRequest {
        seed,
        settings: ddim(4, 0.5),
        init_noise: None,
        class_labels: labels,
        guidance,
        memory_budget: None,
    }
}

/// Samples with the runtime, the network planned as the request says.
fn run(bytes: &[u8], req: &SampleRequest, images: usize, threads: usize) -> (Vec<f32>, Vec<f32>) {
    let batch = req.network_batch(images).unwrap();
    let mut net = Denoiser::from_onnx_bytes(bytes, &BTreeMap::new()).unwrap().into_network(batch, threads).unwrap();
    assert_eq!(net.batch, batch);
    let out = sample(&mut net, req, |_| {}).unwrap();
    (out.x_t, out.x0)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn guided_batch_of_2n_equals_two_separate_evaluations_combined() {
    let (bytes, meta) = conditional_model();
    let (n, seed, w) = (2usize, 5u64, 3.0f32);
    let labels = vec![1i64, 2];
    let req = request(seed, Some(labels.clone()), Some(w));
    assert_eq!(req.network_batch(n).unwrap(), 2 * n, "guidance plans a batch of 2N");
    let (x_t, guided) = run(&bytes, &req, n, 1);

    // By hand: a batch-N network evaluated twice per step, with the class and with the null class.
    let mut net = Denoiser::from_onnx_bytes(&bytes, &BTreeMap::new()).unwrap().into_network(n, 1).unwrap();
    let per_image = meta.image_len();
    let mut scheduler = build_scheduler(&meta.schedule, &req.settings).unwrap();
    let mut streams: Vec<GaussianStream> = (0..n).map(|k| GaussianStream::new(image_seed(seed, k))).collect();
    let mut x = vec![0f32; n * per_image];
    for (s, chunk) in streams.iter_mut().zip(x.chunks_mut(per_image)) {
        s.fill(chunk);
    }
    assert_eq!(x, x_t, "x_T depends only on the seed and the image index");
    let null = vec![CLASSES.len() as i64; n];
    let mut noise = vec![0f32; x.len()];
    for (i, &t) in scheduler.timesteps().to_vec().iter().enumerate() {
        let ts = vec![t as f32; n];
        let cond = net.eval(&x, &ts, Some(&labels)).unwrap();
        let uncond = net.eval(&x, &ts, Some(&null)).unwrap();
        let out: Vec<f32> = cond.iter().zip(&uncond).map(|(&c, &u)| u + w * (c - u)).collect();
        let z = scheduler.needs_noise(i).then(|| {
            for (s, chunk) in streams.iter_mut().zip(noise.chunks_mut(per_image)) {
                s.fill(chunk);
            }
            noise.as_slice()
        });
        scheduler.step(i, &out, &mut x, z);
    }
    let diff = max_abs_diff(&guided, &x);
    println!("guided 2N batch vs manual combination: max |diff| = {diff:e}");
    assert!(diff <= 1e-5, "guided sampling differs from the manual combination by {diff}");

    // Guidance changes the result (the comparison above is not between two no-ops).
    let (_, plain) = run(&bytes, &request(seed, Some(labels), None), n, 1);
    assert!(max_abs_diff(&guided, &plain) > 1e-3, "w = 3 must differ from w = 1");
}

#[test]
fn w1_is_plain_conditional_and_w0_is_unconditional() {
    let (bytes, _) = conditional_model();
    let labels = Some(vec![0i64, 2, 1]);
    let one = request(9, labels.clone(), Some(1.0));
    assert_eq!(one.network_batch(3).unwrap(), 3, "w = 1 needs no unconditional half");
    let (xt_one, x_one) = run(&bytes, &one, 3, 1);
    let (xt_plain, x_plain) = run(&bytes, &request(9, labels.clone(), None), 3, 1);
    assert_eq!((xt_one, &x_one), (xt_plain.clone(), &x_plain), "w = 1 must equal no guidance, bit for bit");

    let (_, x_zero) = run(&bytes, &request(9, labels.clone(), Some(0.0)), 3, 1);
    let (xt_uncond, x_uncond) = run(&bytes, &request(9, None, None), 3, 1);
    assert_eq!(x_zero, x_uncond, "w = 0 must equal unconditional sampling");
    assert_eq!(xt_plain, xt_uncond, "the class never changes x_T");
    assert!(max_abs_diff(&x_plain, &x_uncond) > 1e-3, "the class must change the sample");

    // Guided sampling is identical for 1 and 2 threads.
    let guided = request(9, labels, Some(2.5));
    assert_eq!(run(&bytes, &guided, 3, 1), run(&bytes, &guided, 3, 2));
}

#[test]
fn runtime_rejects_labels_it_cannot_use() {
    let (bytes, _) = conditional_model();
    let mut net = Denoiser::from_onnx_bytes(&bytes, &BTreeMap::new()).unwrap().into_network(2, 1).unwrap();
    for (labels, guidance, needle) in [
        (Some(vec![0i64, 4]), None, "outside 0..=3"),
        (Some(vec![0i64]), None, "expected 2 class labels"),
        (None, Some(2.0), "needs a class"),
        (Some(vec![0i64, 1]), Some(-1.0), "guidance scale -1"),
        // A network planned for 2 images cannot guide 2 images (it needs 4).
        (Some(vec![0i64, 1]), Some(2.0), "expected 1 class labels"),
    ] {
        let e = sample(&mut net, &request(0, labels, guidance), |_| {}).unwrap_err().to_string();
        assert!(e.contains(needle), "expected {needle:?} in {e}");
    }
}

// ---- the `sampler` binary ----

fn sampler(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sampler")).args(args).output().expect("run sampler")
}

fn assert_usage_error(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "exit code; stderr: {err}");
    assert_eq!(err.lines().filter(|l| !l.trim().is_empty()).count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

fn write_model(dir: &Path) -> PathBuf {
    let path = dir.join("cond.onnx");
    std::fs::write(&path, conditional_model().0).unwrap();
    path
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn png_text(path: &Path) -> BTreeMap<String, String> {
    let reader = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap())).read_info().unwrap();
    reader.info().uncompressed_latin1_text.iter().map(|t| (t.keyword.clone(), t.text.clone())).collect()
}

#[test]
fn class_flags_on_models_that_cannot_take_them_are_usage_errors() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("o.png");
    // The shipped unconditional model.
    let plain = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/sprites-eps.onnx");
    assert_usage_error(
        &sampler(&["--model", s(&plain), "--class", "circle", "--steps", "2", s(&out)]),
        "not class-conditional",
    );
    assert_usage_error(
        &sampler(&["--model", s(&plain), "--guidance", "3", "--steps", "2", s(&out)]),
        "not class-conditional",
    );
    let model = write_model(d.path());
    let m = s(&model);
    assert_usage_error(&sampler(&["--model", m, "--class", "banana", "--steps", "2", s(&out)]), "circle, square, ring");
    assert_usage_error(&sampler(&["--model", m, "--class", "3", "--steps", "2", s(&out)]), "unknown class");
    assert_usage_error(
        &sampler(&["--model", m, "--guidance", "2", "--steps", "2", s(&out)]),
        "--guidance needs --class",
    );
    assert_usage_error(&sampler(&["--model", m, "--class", "ring", "--guidance", "-1", s(&out)]), "--guidance");
    assert!(!out.exists(), "no output after a usage error");

    let info = sampler(&["info", "--model", m]);
    assert!(info.status.success());
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains("classes:     circle, square, ring") && text.contains("class_labels: int64[N]"), "{text}");
}

#[test]
fn guided_cli_run_is_deterministic_and_records_class_and_guidance() {
    let d = tempfile::tempdir().unwrap();
    let model = write_model(d.path());
    let m = s(&model);
    let (a, b, c) = (d.path().join("a.png"), d.path().join("b.png"), d.path().join("c.png"));
    let report = d.path().join("r.json");
    let common = ["--model", m, "--steps", "3", "--seed", "4", "--batch", "2", "--guidance", "3", "--quiet"];
    let o =
        sampler(&[&common[..], &["--class", "square", "--threads", "1", "--report-json", s(&report), s(&a)]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = sampler(&[&common[..], &["--class", "1", "--threads", "2", s(&b)]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "name and index, 1 and 2 threads: same bytes");

    let text = png_text(&a);
    assert_eq!((text["class"].as_str(), text["guidance"].as_str()), ("square", "3"));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(
        (r["class"].as_str(), r["class_index"].as_u64(), r["guidance"].as_f64()),
        (Some("square"), Some(1), Some(3.0))
    );
    assert_eq!(r["network_batch"], 4, "one batched call of 2N per step");

    // No --guidance: the model's recommended scale (edgediff.guidance_scale) is used, and recorded.
    let d2 = d.path().join("d.png");
    let o = sampler(&[
        "--model",
        m,
        "--meta",
        "guidance_scale=3",
        "--steps",
        "3",
        "--seed",
        "4",
        "--batch",
        "2",
        "--quiet",
        "--class",
        "square",
        s(&d2),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(png_text(&d2)["guidance"], "3");
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&d2).unwrap(), "model default 3 == --guidance 3");
    let info = sampler(&["info", "--model", m, "--meta", "guidance_scale=3"]);
    assert!(String::from_utf8_lossy(&info.stdout).contains("guidance:    3 by default"));
    let o = sampler(&["--model", m, "--meta", "guidance_scale=-2", "--class", "ring", "--steps", "2", s(&d2)]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("edgediff.guidance_scale"));

    // Without --class: unconditional (null class), recorded as such, and a different image.
    let o = sampler(&["--model", m, "--steps", "3", "--seed", "4", "--batch", "2", "--quiet", s(&c)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(png_text(&c)["class"], "null (unconditional)");
    assert!(!png_text(&c).contains_key("guidance"));
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
}

/// The embedded default model is the conditional sprites model: it names its classes and a
/// recommended guidance scale, `--class` uses that scale, and no `--class` samples unconditionally.
#[test]
fn embedded_default_is_conditional_with_a_recommended_guidance() {
    let d = tempfile::tempdir().unwrap();
    let info = sampler(&["info", "--json"]);
    assert!(info.status.success(), "{}", String::from_utf8_lossy(&info.stderr));
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(v["conditional"], true);
    let classes: Vec<&str> = v["classes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(classes, ["circle", "square", "triangle", "diamond", "plus", "star", "ring"]);
    let w = v["guidance_scale"].as_f64().expect("the default model recommends a guidance scale");
    let out = d.path().join("star.png");
    let o = sampler(&["--class", "star", "--steps", "2", "--quiet", s(&out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(png_text(&out)["guidance"], (w as f32).to_string());
    let plain = d.path().join("plain.png");
    assert!(sampler(&["--steps", "2", "--quiet", s(&plain)]).status.success());
    assert_eq!(png_text(&plain)["class"], "null (unconditional)");
}
