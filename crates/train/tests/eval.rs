//! `train eval`: the Frechet distance orders real < blurred < noise, is zero for identical sets
//! and symmetric, scores a `.npy` and the PNGs of the same samples identically, generates with
//! the runtime in `--model` mode, and fails cleanly on bad input.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use burn::backend::Flex;
use edgediff_core::meta::{self, ModelMeta};
use edgediff_core::SamplerSettings;
use edgediff_data::SPRITES;
use edgediff_eval::features::FeatureExtractor;
use edgediff_eval::frechet::{frechet_distance, Gaussian};
use edgediff_eval::images::{load_samples, real_sets, ImageSet};
use edgediff_eval::{evaluate, EvalOptions};
use edgediff_io::npy;
use edgediff_runtime::sampling::{sample, SampleRequest};
use edgediff_runtime::Denoiser;
use edgediff_train::export::export_onnx;
use edgediff_train::reference::files::png_bytes;
use edgediff_train::unet::UNetConfig;

fn train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_train")).args(args).output().expect("run train")
}

fn json_of(out: &Output) -> serde_json::Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn real_is_far_below_blurred_which_is_below_noise() {
    // "Generated" = real sprites of another seed: a perfect generator.
    let (perfect, _) = real_sets(SPRITES, 32, 300, 12345).unwrap();
    let opts = EvalOptions { data: SPRITES.into(), count: 300, seed: 777, threads: 2 };
    let r = evaluate(&perfect, &opts).unwrap();
    println!(
        "N=300 32x32: floor {:.4}, perfect generator {:.4}, blurred {:.4}, noise {:.4} (features {:.2} s, FD {:.2} s)",
        r.fd_floor, r.fd_samples, r.fd_blurred, r.fd_noise, r.seconds_features, r.seconds_fd
    );
    assert!(r.fd_floor > 0.0, "finite samples leave a positive floor");
    assert!(r.fd_noise > 100.0 * r.fd_floor, "noise must be far above the floor: {r:?}");
    assert!(r.fd_blurred > 3.0 * r.fd_floor, "blur must be clearly above the floor: {r:?}");
    assert!(r.fd_blurred < 0.1 * r.fd_noise, "blur must be far below noise: {r:?}");
    assert!(r.fd_samples < 2.0 * r.fd_floor, "real images of another seed score like the floor: {r:?}");
    let shapes = r.shapes.expect("sprites get the shape report");
    assert!(shapes.recognised > 0.9 && shapes.real_recognised > 0.9, "{shapes:?}");
    assert!(shapes.noise_recognised < 0.1, "{shapes:?}");
    assert!(shapes.class_distance < 0.1, "same class mix as real: {shapes:?}");
}

#[test]
fn fd_is_zero_for_identical_sets_and_symmetric() {
    let (a, b) = real_sets(SPRITES, 16, 60, 99).unwrap();
    let fx = FeatureExtractor::new();
    let fit = |s: &ImageSet| Gaussian::fit(&fx.extract_all(&s.data, 16, 2), fx.dim());
    let (ga, gb) = (fit(&a), fit(&b));
    let same = frechet_distance(&ga, &ga);
    let scale = ga.cov.trace();
    assert!(same <= 1e-9 * scale, "FD(a, a) = {same} (trace {scale})");
    let (ab, ba) = (frechet_distance(&ga, &gb), frechet_distance(&gb, &ga));
    assert!(ab > 0.0);
    assert!((ab - ba).abs() <= 1e-6 * ab, "FD(a,b) {ab} vs FD(b,a) {ba}");
}

#[test]
fn npy_and_png_directory_score_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let (set, _) = real_sets(SPRITES, 16, 20, 4242).unwrap();
    // Float samples slightly off the 8-bit grid and out of range, as a sampler's raw output is.
    let raw: Vec<f32> =
        set.data.iter().enumerate().map(|(i, v)| v * 1.02 + if i % 7 == 0 { 0.001 } else { 0.0 }).collect();
    let npy = tmp.path().join("s.npy");
    npy::write_f32(&npy, &raw, &[20, 3, 16, 16]).unwrap();
    let dir = tmp.path().join("pngs");
    std::fs::create_dir(&dir).unwrap();
    let m = test_meta(16, "pngs");
    for i in 0..20 {
        std::fs::write(dir.join(format!("s-{i}.png")), png_bytes(&raw[i * 768..(i + 1) * 768], &m).unwrap()).unwrap();
    }
    let from_npy = load_samples(&npy, 100).unwrap().quantised();
    let from_png = load_samples(&dir, 100).unwrap();
    assert_eq!(from_npy, from_png, "PNG pixels must equal the quantised floats, in natural file order");
    let run = |src: &Path| {
        json_of(&train(&["eval", "--samples", p(src), "--count", "20", "--seed", "5", "--threads", "1", "--json"]))
    };
    let (a, b) = (run(&npy), run(&dir));
    assert_eq!(a["fd"], b["fd"]);
    assert_eq!(a["count"], 20);
    assert!(a["fd"]["samples"].as_f64().unwrap() < a["fd"]["noise"].as_f64().unwrap());
    let table = train(&["eval", "--samples", p(&npy), "--count", "20", "--seed", "5"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("floor") && text.contains("ceiling") && text.contains("shape checker"), "{text}");
}

fn test_meta(size: usize, name: &str) -> ModelMeta {
    let props: BTreeMap<String, String> = [
        (meta::FORMAT, meta::FORMAT_VERSION),
        (meta::MODEL_NAME, name),
        (meta::NUM_TRAIN_TIMESTEPS, "1000"),
        (meta::BETA_SCHEDULE, "linear"),
        (meta::BETA_START, "0.0001"),
        (meta::BETA_END, "0.02"),
        (meta::PREDICTION_TYPE, "epsilon"),
        (meta::IMAGE_SIZE, &size.to_string()),
        (meta::CHANNELS, "3"),
        (meta::VALUE_RANGE, "-1,1"),
        (meta::CLIP_SAMPLE, "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    ModelMeta::from_props(&props).unwrap()
}

#[test]
fn model_mode_samples_with_the_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let config = UNetConfig::new()
        .with_image_size(8)
        .with_base_channels(8)
        .with_channel_mults(vec![1, 2])
        .with_attention_resolutions(vec![])
        .with_groups(4);
    let model = config.init::<Flex>(&Default::default());
    let bytes = export_onnx(&model, &config, &test_meta(8, "random")).unwrap();
    let onnx = tmp.path().join("m.onnx");
    std::fs::write(&onnx, &bytes).unwrap();
    let saved = tmp.path().join("gen.npy");
    let args = ["eval", "--model", p(&onnx), "--count", "12", "--steps", "3", "--batch", "5", "--threads", "1"];
    let out = train(&[&args[..], &["--sample-seed", "100", "--save-samples", p(&saved), "--json"]].concat());
    let v = json_of(&out);
    assert_eq!(v["count"], 12);
    assert_eq!(v["source"]["steps"], 3);
    let fd = |k: &str| v["fd"][k].as_f64().unwrap();
    assert!(fd("samples") > fd("floor_real_vs_real"), "an untrained network is worse than real data: {v}");

    // Sample 7 (third batch, a partial one of 2) is the runtime's image for seed 100 + 7.
    let (data, shape) = npy::read_f32(&saved).unwrap();
    assert_eq!(shape, vec![12, 3, 8, 8]);
    let settings = SamplerSettings::ddim(3);
    let mut net = Denoiser::from_onnx_bytes(&bytes, &BTreeMap::new()).unwrap().into_network(1, 1).unwrap();
    let req = SampleRequest {
        seed: 107,
        settings,
        init_noise: None,
        class_labels: None,
        guidance: None,
        memory_budget: None,
    };
    let single = sample(&mut net, &req, |_| {}).unwrap().x0;
    let batched = &data[7 * 192..8 * 192];
    let diff = single.iter().zip(batched).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff <= 1e-5, "sample 7 differs from seed 107 sampled alone by {diff}");
}

#[test]
fn bad_inputs_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such.npy");
    let not_npy = tmp.path().join("x.txt");
    std::fs::write(&not_npy, "hello").unwrap();
    let empty_dir = tmp.path().join("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    let garbage = tmp.path().join("g.npy");
    std::fs::write(&garbage, "not an npy").unwrap();
    let few = tmp.path().join("few.npy");
    npy::write_f32(&few, &vec![0.0; 3 * 3 * 8 * 8], &[3, 3, 8, 8]).unwrap();
    let missing_model = tmp.path().join("m.onnx");
    let cases: [(&[&str], &str); 6] = [
        (&["eval", "--samples", p(&missing)], p(&missing)),
        (&["eval", "--samples", p(&not_npy)], "expected a .npy file"),
        (&["eval", "--samples", p(&empty_dir)], "no .png files"),
        (&["eval", "--samples", p(&garbage)], "not a .npy file"),
        (&["eval", "--samples", p(&few)], "at least 10"),
        (&["eval", "--model", p(&missing_model)], p(&missing_model)),
    ];
    for (args, needle) in cases {
        let out = train(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: expected {needle:?} in {stderr}");
    }
    for args in [
        &["eval"][..],
        &["eval", "--samples", "a.npy", "--model", "m.onnx"],
        &["eval", "--samples", "a.npy", "--count", "3"],
        // Generation flags without --model would be silently ignored: refuse them.
        &["eval", "--samples", "a.npy", "--steps", "5"],
    ] {
        let out = train(args);
        assert_eq!(out.status.code(), Some(2), "{args:?} is a usage error");
    }
}

/// Sprite sets with one property of the real distribution broken.
fn degraded(kind: &str, n: usize, seed: u64) -> ImageSet {
    use edgediff_data::sprites::{Shape, SpriteParams};
    let mut data = Vec::new();
    let mut k = 0u64;
    while data.len() < n * 3 * 32 * 32 {
        let mut params = SpriteParams::draw(seed, k, 32);
        k += 1;
        match kind {
            "circles only" if params.shape != Shape::Circle => continue,
            "circles only" => {}
            "no shape" => params.fg = params.background(params.centre.0, params.centre.1, 32),
            "grey" => {
                let grey = |c: [f32; 3]| [(c[0] + c[1] + c[2]) / 3.0; 3];
                params.fg = grey(params.fg);
                params.bg = [grey(params.bg[0]), grey(params.bg[1])];
            }
            _ => unreachable!(),
        }
        data.extend(params.render(32));
    }
    ImageSet { channels: 3, size: 32, data }
}

/// FD must notice each way a generator can miss the data: no shape drawn, no colour, and
/// (more weakly) mode collapse to one class.
#[test]
fn broken_distributions_score_above_the_floor() {
    let opts = EvalOptions { data: SPRITES.into(), count: 300, seed: 777, threads: 2 };
    for kind in ["circles only", "no shape", "grey"] {
        let r = evaluate(&degraded(kind, 300, 31), &opts).unwrap();
        let ratio = r.fd_samples / r.fd_floor;
        println!("{kind}: FD {:.4} = {ratio:.1} x floor {:.4}", r.fd_samples, r.fd_floor);
        let least = match kind {
            // Same colours, sizes and places, one shape of seven: the weakest signal FD gets
            // (the shape checker's class table is the direct measure of this).
            "circles only" => 1.5,
            _ => 10.0,
        };
        assert!(ratio > least, "{kind}: {ratio:.2} x floor, expected more than {least}");
        if kind == "circles only" {
            // One class of seven: total variation 1 - 1/7 against uniform real classes.
            let d = r.shapes.unwrap().class_distance;
            assert!(d > 0.75, "mode collapse must show in the class distance: {d}");
        }
    }
}

/// Conditional accuracy means something: real sprites of a class, scored as that class, are
/// recognised (and score near that class's floor); scored as another class they are not.
#[test]
fn per_class_scores_tell_right_from_wrong_classes() {
    use edgediff_eval::conditional::evaluate_classes;
    use edgediff_eval::images::real_sets_of_class;
    let opts = EvalOptions { data: SPRITES.into(), count: 30, seed: 777, threads: 2 };
    let circles = real_sets_of_class(SPRITES, 16, 30, 12345, 0).unwrap().0;
    let pluses = real_sets_of_class(SPRITES, 16, 30, 12345, 4).unwrap().0;
    let right =
        evaluate_classes(&[(0, "circle".into(), circles), (4, "plus".into(), pluses.clone())], 1.0, &opts).unwrap();
    let wrong = evaluate_classes(&[(0, "circle".into(), pluses)], 1.0, &opts).unwrap();
    for r in &right.classes {
        let a = r.accuracy().unwrap();
        println!("{}: accuracy {a:.2}, FD {:.4} (floor {:.4})", r.name, r.report.fd_samples, r.report.fd_floor);
        assert!(a > 0.8, "{}: accuracy {a}", r.name);
        assert!(
            r.report.fd_samples < 3.0 * r.report.fd_floor,
            "{}: real images of the class score near its floor",
            r.name
        );
    }
    let swapped = wrong.classes[0].accuracy().unwrap();
    assert!(swapped < 0.2, "pluses scored as circles: accuracy {swapped}");
    assert!(wrong.overall.is_none(), "one class: nothing to pool");
    let overall = right.overall.as_ref().expect("two classes are pooled");
    assert_eq!(overall.count, 60);
    let table = right.table();
    assert!(table.contains("circle") && table.contains("plus") && table.contains("accuracy"), "{table}");
}

/// `train eval --model --class all` on a tiny random conditional model: one row per class,
/// the pooled set, and clean errors for classes and models that do not fit.
#[test]
fn model_mode_scores_each_class_of_a_conditional_model() {
    let tmp = tempfile::tempdir().unwrap();
    let config = UNetConfig::new()
        .with_image_size(16)
        .with_base_channels(8)
        .with_channel_mults(vec![1, 2])
        .with_attention_resolutions(vec![])
        .with_groups(4)
        .with_num_classes(Some(7));
    let model = config.init::<Flex>(&Default::default());
    let mut m = test_meta(16, "random-conditional");
    m.class_names = edgediff_data::SPRITE_CLASSES.iter().map(|s| s.to_string()).collect();
    let onnx = tmp.path().join("c.onnx");
    std::fs::write(&onnx, export_onnx(&model, &config, &m).unwrap()).unwrap();
    let args = ["eval", "--model", p(&onnx), "--count", "10", "--steps", "2", "--batch", "5", "--threads", "1"];
    let v = json_of(&train(&[&args[..], &["--class", "all", "--guidance", "2", "--json"]].concat()));
    assert_eq!(v["guidance"], 2.0);
    let classes = v["classes"].as_array().unwrap();
    assert_eq!(classes.len(), 7);
    for (k, c) in classes.iter().enumerate() {
        assert_eq!(c["index"], k);
        assert_eq!(c["report"]["count"], 10);
        let a = c["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&a), "{c}");
    }
    assert_eq!(v["overall"]["count"], 70);
    assert_eq!(v["source"][3]["class"], "diamond");

    let fails = |extra: &[&str], code: i32, needle: &str| {
        let out = train(&[&args[..], extra].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{extra:?}: {stderr}");
        assert!(stderr.contains(needle), "{extra:?}: expected {needle:?} in {stderr}");
    };
    fails(&["--class", "hexagon"], 1, "circle, square, triangle");
    fails(&["--guidance", "2"], 2, "--class");
    let plain = tmp.path().join("plain.onnx");
    let pc = UNetConfig::new()
        .with_image_size(8)
        .with_base_channels(8)
        .with_channel_mults(vec![1, 2])
        .with_attention_resolutions(vec![])
        .with_groups(4);
    std::fs::write(&plain, export_onnx(&pc.init::<Flex>(&Default::default()), &pc, &test_meta(8, "plain")).unwrap())
        .unwrap();
    let out = train(&["eval", "--model", p(&plain), "--class", "all", "--count", "10", "--steps", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not class-conditional"));
}
