//! The `train` binary on bad input: one-line errors that name the path or flag, exit 1 for
//! runtime errors and 2 for usage errors, never a panic or backtrace. Plus the Ctrl-C path:
//! SIGINT finishes the step, saves a checkpoint and exits 0.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const TINY: &[&str] =
    &["--image-size", "8", "--base-channels", "8", "--channel-mults", "1,2", "--attention", "none", "--batch", "2"];

fn train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_train")).args(args).env("RUST_BACKTRACE", "1").output().expect("run train")
}

/// Asserts a clean failure with `code` whose stderr has one non-empty line containing `needle`.
fn assert_fails(out: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("stack backtrace"), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    if code == 1 {
        let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].contains(needle), "{stderr}");
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn missing_data_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("no-such-folder");
    let run = tmp.path().join("run");
    let out = train(&["fit", "--data", path_str(&data), "--out", path_str(&run), "--steps", "1", "--device", "cpu"]);
    assert_fails(&out, 1, path_str(&data));
}

#[test]
fn empty_data_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("empty");
    std::fs::create_dir(&data).unwrap();
    let run = tmp.path().join("run");
    let out = train(&["fit", "--data", path_str(&data), "--out", path_str(&run), "--steps", "1", "--device", "cpu"]);
    assert_fails(&out, 1, path_str(&data));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no PNG or JPEG"));
}

#[test]
fn folder_with_only_a_corrupt_image() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("broken");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("cat.png"), b"\x89PNG\r\n\x1a\nthis is not a png").unwrap();
    let run = tmp.path().join("run");
    let out = train(&["fit", "--data", path_str(&data), "--out", path_str(&run), "--steps", "1", "--device", "cpu"]);
    assert_fails(&out, 1, path_str(&data));
    assert!(String::from_utf8_lossy(&out.stderr).contains("none of its 1 image file(s) could be decoded"));
    let out = train(&["dataset", "--data", path_str(&data), "--preview", path_str(&tmp.path().join("g.png"))]);
    assert_fails(&out, 1, path_str(&data));
}

#[test]
fn bad_flags_are_usage_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["fit", "--out", "r", "--batch", "abc"], "--batch"),
        (&["fit", "--out", "r", "--batch", "0"], "--batch"),
        (&["fit", "--out", "r", "--lr", "-1"], "--lr"),
        (&["fit", "--out", "r", "--lr", "nan"], "--lr"),
        (&["fit", "--out", "r", "--ema", "1.5"], "--ema"),
        (&["fit", "--out", "r", "--prediction", "noise"], "--prediction"),
        (&["fit", "--out", "r", "--schedule", "cosine"], "--schedule"),
        (&["fit", "--out", "r", "--channel-mults", "1,x"], "--channel-mults"),
        (&["fit", "--out", "r", "--device", "tpu"], "--device"),
        (&["fit", "--out", "r", "--no-such-flag"], "--no-such-flag"),
        (&["fit", "--out", "r", "--label-dropout", "0.1"], "--conditional"),
        (&["fit", "--out", "r", "--conditional", "--label-dropout", "1.5"], "--label-dropout"),
        (&["fit", "--data", "sprites"], "--out"),
        (&["export", "--run", "r"], "--out"),
        (&["dataset", "--size", "2"], "--size"),
        (&["frobnicate"], "frobnicate"),
    ];
    for (args, flag) in cases {
        let out = train(args);
        assert_fails(&out, 2, flag);
    }
}

#[test]
fn invalid_model_config_is_a_one_line_error() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    // 30 is not divisible by 2^(levels-1) = 4.
    let out = train(&[
        "fit",
        "--data",
        "sprites",
        "--out",
        path_str(&run),
        "--image-size",
        "30",
        "--steps",
        "1",
        "--device",
        "cpu",
    ]);
    assert_fails(&out, 1, "model");
}

#[test]
fn unwritable_checkpoint_dir() {
    let tmp = tempfile::tempdir().unwrap();
    // A path below a regular file cannot be created, even by root.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let run = file.join("run");
    let mut args = vec!["fit", "--data", "sprites", "--out", path_str(&run), "--steps", "1", "--device", "cpu"];
    args.extend_from_slice(TINY);
    let out = train(&args);
    assert_fails(&out, 1, path_str(&run));
    let out = train(&["dataset", "--preview", path_str(&file.join("grid.png"))]);
    assert_fails(&out, 1, path_str(&file.join("grid.png")));
}

#[test]
fn resume_and_export_need_a_checkpoint_and_fresh_runs_do_not_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = train(&["fit", "--out", path_str(&run), "--resume", "--device", "cpu"]);
    assert_fails(&out, 1, path_str(&run));
    let out = train(&["export", "--run", path_str(&run), "--out", path_str(&tmp.path().join("m.onnx"))]);
    assert_fails(&out, 1, path_str(&run));

    let mut args = vec!["fit", "--data", "sprites", "--out", path_str(&run), "--steps", "2", "--device", "cpu"];
    args.extend_from_slice(TINY);
    let out = train(&args);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("parameters") && stdout.contains("s/step"), "{stdout}");
    // Same command again: refuses to overwrite the run.
    assert_fails(&train(&args), 1, "--resume");
    // Resume with a contradicting flag names it.
    let out = train(&["fit", "--out", path_str(&run), "--resume", "--steps", "3", "--seed", "5", "--device", "cpu"]);
    assert_fails(&out, 1, "--seed");
    // A damaged EMA file is reported by name, not a panic.
    let ema = edgediff_train::checkpoint::latest(&run).unwrap().join("ema.mpk");
    std::fs::write(&ema, b"\x93garbage").unwrap();
    let out = train(&["export", "--run", path_str(&run), "--out", path_str(&tmp.path().join("m.onnx"))]);
    assert_fails(&out, 1, "ema.mpk");
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let mut args = vec![
        "fit",
        "--data",
        "sprites",
        "--out",
        path_str(&run),
        "--steps",
        "100000",
        "--checkpoint-every",
        "100000",
        "--device",
        "cpu",
    ];
    args.extend_from_slice(TINY);
    let mut child = Command::new(env!("CARGO_BIN_EXE_train"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first stderr line after the device notice announces the run: training has started.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let t0 = Instant::now();
    while !seen.contains("parameters") && t0.elapsed() < Duration::from_secs(60) {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen += &line;
    }
    assert!(seen.contains("parameters"), "{seen}");
    std::thread::sleep(Duration::from_millis(800));
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{seen}{rest}");
    assert!(rest.contains("interrupted at step"), "{rest}");
    let (state, _) = edgediff_train::fit::run_files::load_state(&run).unwrap();
    assert!(state.step >= 1 && state.step < 100_000, "step {}", state.step);
    assert!(run.join("loss.csv").exists() && run.join("loss.png").exists());
    // And the run continues from there.
    let target = (state.step + 1).to_string();
    let out = train(&["fit", "--out", path_str(&run), "--resume", "--steps", &target, "--device", "cpu"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(edgediff_train::fit::run_files::load_state(&run).unwrap().0.step, state.step + 1);
}

#[test]
fn folder_training_reports_skipped_files_and_previews() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("imgs");
    for (class, colour) in [("red", [220u8, 30, 30]), ("blue", [30, 30, 220])] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for k in 0..2u32 {
            let img = image::RgbImage::from_fn(20 + k * 7, 12, |x, y| {
                image::Rgb(if (x + y) % 5 == 0 { [255; 3] } else { colour })
            });
            img.save(data.join(class).join(format!("{k}.png"))).unwrap();
        }
    }
    image::RgbImage::from_pixel(10, 10, image::Rgb([0, 200, 0])).save(data.join("green.jpg")).unwrap();
    std::fs::write(data.join("red").join("broken.jpeg"), b"\xff\xd8\xff truncated").unwrap();

    let run = tmp.path().join("run");
    let mut args = vec!["fit", "--data", path_str(&data), "--out", path_str(&run), "--steps", "2", "--device", "cpu"];
    args.extend_from_slice(TINY);
    let out = train(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("5 images") && stderr.contains("2 classes"), "{stderr}");
    assert!(stderr.contains("1 unreadable file(s) skipped") && stderr.contains("broken.jpeg"), "{stderr}");
    let (state, _) = edgediff_train::fit::run_files::load_state(&run).unwrap();
    assert_eq!(state.class_names, vec!["blue", "red"]);

    let grid = tmp.path().join("grid.png");
    let out =
        train(&["dataset", "--data", path_str(&data), "--size", "8", "--count", "9", "--preview", path_str(&grid)]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let img = image::open(&grid).unwrap();
    // 3x3 cells of 8 px with 1-px gaps.
    assert_eq!((img.width(), img.height()), (28, 28));
}

#[test]
fn a_killed_run_keeps_a_loadable_checkpoint_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    // A checkpoint after every step, so SIGKILL lands mid-write at some point.
    let mut args = vec![
        "fit",
        "--data",
        "sprites",
        "--out",
        path_str(&run),
        "--steps",
        "100000",
        "--checkpoint-every",
        "1",
        "--device",
        "cpu",
    ];
    args.extend_from_slice(TINY);
    let resume = ["fit", "--out", path_str(&run), "--resume", "--device", "cpu"];
    let mut last = 0;
    for delay_ms in [700u64, 900, 1100] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_train"))
            .args(if last == 0 { &args[..] } else { &resume[..] })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL: no handler runs
        child.wait().unwrap();
        if let Ok((state, _)) = edgediff_train::fit::run_files::load_state(&run) {
            assert!(state.step >= last, "checkpoint went backwards: {} < {last}", state.step);
            assert_eq!(state.losses.len() as u64, state.step);
            last = state.step;
        }
    }
    assert!(last > 0, "no checkpoint was ever completed");
    let target = (last + 1).to_string();
    let out = train(&["fit", "--out", path_str(&run), "--resume", "--steps", &target, "--device", "cpu"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // Leftovers of the killed writers are gone; exactly one checkpoint remains.
    assert_eq!(std::fs::read_dir(run.join("checkpoints")).unwrap().count(), 1);
}

#[test]
fn cuda_without_the_feature_or_a_gpu_is_a_one_line_error() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = train(&["fit", "--data", "sprites", "--out", path_str(&run), "--steps", "1", "--device", "cuda"]);
    if edgediff_train::device::CUDA_BUILT && edgediff_train::device::cuda_probe().is_ok() {
        return; // a CUDA build on a GPU machine: nothing to refuse
    }
    assert_fails(&out, 1, "--device cuda");
    assert!(!run.exists(), "nothing is written before the device is known");
}

#[test]
fn quantize_bad_input_is_a_one_line_error() {
    let tmp = tempfile::tempdir().unwrap();
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let out = tmp.path().join("q.onnx");
    let missing = tmp.path().join("missing.onnx");
    assert_fails(&train(&["quantize", path_str(&missing), path_str(&out)]), 2, path_str(&missing));
    let corrupt = tmp.path().join("corrupt.onnx");
    std::fs::write(&corrupt, b"\xff\xff\xffnot a protobuf").unwrap();
    assert_fails(&train(&["quantize", path_str(&corrupt), path_str(&out)]), 2, path_str(&corrupt));
    let int8 = models.join("sprites-eps-int8.onnx");
    assert_fails(&train(&["quantize", path_str(&int8), path_str(&out)]), 2, "already int8");
    let fp32 = models.join("sprites-eps.onnx");
    assert_fails(&train(&["quantize", path_str(&fp32), path_str(&out), "--form", "int4"]), 2, "int4");
    assert_fails(&train(&["quantize", path_str(&fp32), path_str(&out), "--calib-images", "0"]), 2, "calib-images");
    assert_fails(&train(&["quantize", path_str(&fp32), path_str(&out), "--smooth", "2"]), 2, "--smooth");
    let fast = ["--calib-images", "1", "--calib-steps", "2"];
    let nowhere = tmp.path().join("no-dir/q.onnx");
    assert_fails(&train(&[&["quantize", path_str(&fp32), path_str(&nowhere)][..], &fast[..]].concat()), 1, "no-dir");
    let keep = ["--keep-fp32", "nope/Conv"];
    assert_fails(
        &train(&[&["quantize", path_str(&fp32), path_str(&out)][..], &fast[..], &keep[..]].concat()),
        2,
        "nope/Conv",
    );
    assert!(!out.exists() && !nowhere.exists(), "a failed quantize left an output file");
}

fn write_folder(root: &Path, classes: &[(&str, [u8; 3])], per_class: u32) {
    for (class, colour) in classes {
        let dir = if class.is_empty() { root.to_path_buf() } else { root.join(class) };
        std::fs::create_dir_all(&dir).unwrap();
        for k in 0..per_class {
            let img = image::RgbImage::from_fn(12, 12, |x, y| {
                image::Rgb(if (x + y + k) % 4 == 0 { [255; 3] } else { *colour })
            });
            img.save(dir.join(format!("{class}{k}.png"))).unwrap();
        }
    }
}

#[test]
fn conditional_training_needs_classes_and_exports_a_class_input() {
    let tmp = tempfile::tempdir().unwrap();
    // No sub-folders: no classes to condition on.
    let flat = tmp.path().join("flat");
    write_folder(&flat, &[("", [200, 30, 30])], 3);
    let run = tmp.path().join("run-flat");
    let mut args = vec![
        "fit",
        "--data",
        path_str(&flat),
        "--out",
        path_str(&run),
        "--steps",
        "1",
        "--conditional",
        "--device",
        "cpu",
    ];
    args.extend_from_slice(TINY);
    assert_fails(&train(&args), 1, "has no classes");
    assert!(!run.exists(), "nothing is written for a refused run");

    // Two classes plus an unlabelled root image (trained as the null class).
    let data = tmp.path().join("classes");
    write_folder(&data, &[("red", [220, 30, 30]), ("blue", [30, 30, 220]), ("", [30, 200, 30])], 2);
    let run = tmp.path().join("run");
    let mut args = vec![
        "fit",
        "--data",
        path_str(&data),
        "--out",
        path_str(&run),
        "--steps",
        "2",
        "--conditional",
        "--device",
        "cpu",
    ];
    args.extend_from_slice(TINY);
    let out = train(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("conditional on 2 classes, label dropout 0.1"), "{stderr}");
    let (state, _) = edgediff_train::fit::run_files::load_state(&run).unwrap();
    assert_eq!((state.config.model.num_classes, state.config.label_dropout), (Some(2), 0.1));

    // --resume without --conditional continues the run as it was: conditional.
    let out = train(&["fit", "--out", path_str(&run), "--resume", "--steps", "3", "--device", "cpu"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    let onnx = tmp.path().join("m.onnx");
    let out = train(&["export", "--run", path_str(&run), "--out", path_str(&onnx)]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&onnx).unwrap();
    let (meta, info) = edgediff_runtime::Denoiser::inspect(&bytes, &Default::default()).unwrap();
    assert!(info.conditional, "inputs: {:?}", info.inputs);
    assert!(info.inputs.iter().any(|i| i == "class_labels: int64[N]"), "{:?}", info.inputs);
    assert_eq!(meta.class_names, vec!["blue", "red"]);
    assert_eq!(meta.training_steps, 3);
    assert_eq!(meta.guidance_scale, None, "no --guidance at export: the model names no scale");

    // --guidance at export stores the recommended scale in the metadata.
    let out = train(&["export", "--run", path_str(&run), "--out", path_str(&onnx), "--guidance", "2.5"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let (meta, _) = edgediff_runtime::Denoiser::inspect(&std::fs::read(&onnx).unwrap(), &Default::default()).unwrap();
    assert_eq!(meta.guidance_scale, Some(2.5));
    assert_fails(
        &train(&["export", "--run", path_str(&run), "--out", path_str(&onnx), "--guidance", "-1"]),
        2,
        "--guidance",
    );
    // ... and only for a run that has classes.
    let plain = tmp.path().join("run-plain");
    let mut args = vec!["fit", "--data", path_str(&flat), "--out", path_str(&plain), "--steps", "1", "--device", "cpu"];
    args.extend_from_slice(TINY);
    assert_eq!(train(&args).status.code(), Some(0));
    let refused = tmp.path().join("refused.onnx");
    assert_fails(
        &train(&["export", "--run", path_str(&plain), "--out", path_str(&refused), "--guidance", "3"]),
        1,
        "not class-conditional",
    );
    assert!(!refused.exists());
}
