//! End-to-end tests of the `sampler` binary with the embedded default model: determinism,
//! provenance, and every kind of bad input (one-line error, right exit code, no partial file).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sampler(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sampler")).args(args).output().expect("run sampler")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A bad-input run: the expected exit code, exactly one line on stderr, no panic or backtrace.
fn assert_one_line_error(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "exit code; stderr: {err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Files left in a directory (to prove that failures leave no partial output).
fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect()
}

#[test]
fn same_seed_same_bytes_for_any_thread_count() {
    let d = tmp();
    let (a, b, c) = (d.path().join("a.png"), d.path().join("b.png"), d.path().join("c.png"));
    let (ra, rc) = (d.path().join("a.npy"), d.path().join("c.npy"));
    for (out, raw, threads) in [(&a, Some(&ra), "1"), (&b, None, "1"), (&c, Some(&rc), "2")] {
        let mut args = vec!["--steps", "8", "--seed", "7", "--threads", threads, "--quiet", s(out)];
        if let Some(raw) = raw {
            args.extend(["--save-raw", s(raw)]);
        }
        let o = sampler(&args);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let read = |p: &PathBuf| std::fs::read(p).unwrap();
    assert_eq!(read(&a), read(&b), "two runs differ");
    assert_eq!(read(&a), read(&c), "--threads 1 and 2 differ");
    assert_eq!(read(&ra), read(&rc), "raw x0 differs between thread counts");
    let o = sampler(&["--steps", "8", "--seed", "8", "--quiet", s(&b)]);
    assert!(o.status.success());
    assert_ne!(read(&a), read(&b), "different seeds gave the same image");
}

#[test]
fn png_carries_provenance_text_chunks() {
    let d = tmp();
    let out = d.path().join("o.png");
    let o = sampler(&["--steps", "4", "--seed", "3", "--eta", "0.5", "--spacing", "trailing", "--quiet", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&out).unwrap()));
    let reader = decoder.read_info().unwrap();
    let text: std::collections::HashMap<String, String> =
        reader.info().uncompressed_latin1_text.iter().map(|t| (t.keyword.clone(), t.text.clone())).collect();
    assert_eq!(text["seed"], "3");
    assert_eq!(text["steps"], "4");
    assert_eq!(text["eta"], "0.5");
    assert_eq!(text["scheduler"], "ddim");
    assert_eq!(text["spacing"], "trailing");
    assert_eq!(text["model_sha256"].len(), 64);
    assert!(!text["model"].is_empty());
    assert!(text["Software"].contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn batch_image_k_equals_seed_plus_k() {
    let d = tmp();
    let grid_raw = d.path().join("grid.npy");
    let o = sampler(&[
        "--steps",
        "4",
        "--seed",
        "10",
        "--batch",
        "3",
        "--separate",
        "--quiet",
        "--save-raw",
        s(&grid_raw),
        s(&d.path().join("b.png")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for k in 0..3 {
        assert!(d.path().join(format!("b-{k}.png")).exists());
    }
    let single = d.path().join("single.png");
    let o = sampler(&["--steps", "4", "--seed", "12", "--quiet", s(&single)]);
    assert!(o.status.success());
    let a = std::fs::read(d.path().join("b-2.png")).unwrap();
    let b = std::fs::read(&single).unwrap();
    // Same pixels; the text chunks differ only in batch size, so compare decoded pixels.
    assert_eq!(decode(&a), decode(&b));
}

fn decode(png_bytes: &[u8]) -> Vec<u8> {
    let mut reader = png::Decoder::new(std::io::Cursor::new(png_bytes)).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    buf
}

#[test]
fn init_noise_round_trip_reproduces_the_seeded_run() {
    let d = tmp();
    let (xt, raw1, raw2) = (d.path().join("xt.npy"), d.path().join("r1.npy"), d.path().join("r2.npy"));
    let o = sampler(&[
        "--steps",
        "5",
        "--seed",
        "4",
        "--quiet",
        "--save-init-noise",
        s(&xt),
        "--save-raw",
        s(&raw1),
        s(&d.path().join("a.png")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = sampler(&[
        "--steps",
        "5",
        "--seed",
        "99",
        "--quiet",
        "--init-noise",
        s(&xt),
        "--save-raw",
        s(&raw2),
        s(&d.path().join("b.png")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&raw1).unwrap(), std::fs::read(&raw2).unwrap());
}

#[test]
fn usage_errors_exit_2() {
    let d = tmp();
    let out = d.path().join("o.png");
    assert_one_line_error(&sampler(&["--no-such-flag", s(&out)]), 2, "--no-such-flag");
    assert_one_line_error(&sampler(&["--eta", "1.5", s(&out)]), 2, "outside [0, 1]");
    assert_one_line_error(&sampler(&["--steps", "0", s(&out)]), 2, "--steps");
    assert_one_line_error(&sampler(&["--steps", "5000", s(&out)]), 2, "at most 1000 steps");
    assert_one_line_error(&sampler(&["--scheduler", "euler", s(&out)]), 2, "euler");
    assert_one_line_error(&sampler(&["--memory-budget", "lots", s(&out)]), 2, "not a size");
    assert_one_line_error(&sampler(&[]), 2, "OUT.png");
    assert!(files_in(d.path()).is_empty());
}

#[test]
fn bad_models_are_one_line_bad_input_errors() {
    let d = tmp();
    let out = d.path().join("o.png");
    let missing = d.path().join("missing.onnx");
    assert_one_line_error(&sampler(&["--model", s(&missing), s(&out)]), 2, "missing.onnx");

    let model = d.path().join("m.onnx");
    let info = sampler(&["info", "--json"]);
    assert!(info.status.success());
    let default = default_model_bytes();
    std::fs::write(&model, &default[..default.len() / 2]).unwrap();
    assert_one_line_error(&sampler(&["--model", s(&model), s(&out)]), 2, "m.onnx");
    std::fs::write(&model, b"this is not a protobuf at all \xff\xfe").unwrap();
    assert_one_line_error(&sampler(&["--model", s(&model), s(&out)]), 2, "m.onnx");
    std::fs::write(&model, b"").unwrap();
    assert_one_line_error(&sampler(&["--model", s(&model), s(&out)]), 2, "empty");
    // Metadata that contradicts the graph's shapes.
    assert_one_line_error(&sampler(&["--meta", "channels=1", "--steps", "2", s(&out)]), 2, "sample");
    assert_one_line_error(
        &sampler(&["--meta", "prediction_type=banana", "--steps", "2", s(&out)]),
        2,
        "prediction_type",
    );
    assert!(files_in(d.path()).iter().all(|p| p.extension().is_some_and(|e| e == "onnx")), "partial output left");
}

/// The embedded model, as `sampler` sees it (read back from the repository's models/).
fn default_model_bytes() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/sprites-cond.onnx")).unwrap()
}

#[test]
fn unwritable_outputs_fail_before_sampling() {
    let d = tmp();
    let nowhere = d.path().join("no/such/dir/o.png");
    assert_one_line_error(&sampler(&["--steps", "2", s(&nowhere)]), 1, "no/such/dir");
    assert_one_line_error(&sampler(&["--steps", "2", s(d.path())]), 1, "is a directory");
    let raw = d.path().join("nope/x0.npy");
    assert_one_line_error(&sampler(&["--steps", "2", "--save-raw", s(&raw), s(&d.path().join("o.png"))]), 1, "nope");
    assert!(files_in(d.path()).is_empty(), "partial output left: {:?}", files_in(d.path()));
}

#[test]
fn memory_budget_too_small_fails_predicted_or_measured() {
    let d = tmp();
    let out = d.path().join("o.png");
    // Below the weights alone: refused from the prediction, before loading.
    let o = sampler(&["--steps", "2", "--memory-budget", "1MiB", s(&out)]);
    assert_one_line_error(
        &o,
        1,
        "needs at least 4.3 MiB (the model's weights), more than the memory budget of 1.0 MiB",
    );
    // Above the prediction (weights, activations, buffers: 4.5 MiB) but below what loading
    // takes (measured 5.4 MiB): refused from the measurement.
    let o = sampler(&["--steps", "2", "--memory-budget", "5.0MiB", s(&out)]);
    assert_one_line_error(&o, 1, "memory budget of 5.0 MiB is too small");
    assert!(!out.exists());
    let o = sampler(&["--steps", "2", "--memory-budget", "1GiB", "--verbose", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("peak memory:  heap"), "{}", stderr(&o));
}

#[test]
fn bad_init_noise_is_rejected() {
    let d = tmp();
    let xt = d.path().join("xt.npy");
    std::fs::write(&xt, b"junk").unwrap();
    assert_one_line_error(&sampler(&["--init-noise", s(&xt), s(&d.path().join("o.png"))]), 2, "xt.npy");
    assert_one_line_error(
        &sampler(&["--init-noise", s(&d.path().join("none.npy")), s(&d.path().join("o.png"))]),
        2,
        "none.npy",
    );
    assert!(!d.path().join("o.png").exists());
}

#[test]
fn info_reports_metadata_and_parameters() {
    let o = sampler(&["info"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    for needle in ["parameters:", "edgediff.prediction_type", "sample: float[N, 3", "timestep: float[N]"] {
        assert!(text.contains(needle), "missing '{needle}' in:\n{text}");
    }
    // The memory prediction: the weights as stored, activations growing with the batch.
    let memory = |batch: &str| {
        let o = sampler(&["info", "--json", "--memory", "--batch", batch]);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["memory"].clone()
    };
    let (one, four) = (memory("1"), memory("4"));
    assert_eq!(one["weights_bytes"], four["weights_bytes"]);
    assert!(one["weights_bytes"].as_u64().unwrap() > 4_000_000, "{one}");
    let activations = |m: &serde_json::Value| m["activations_bytes"].as_u64().unwrap();
    assert!(activations(&one) > 0 && activations(&four) >= 3 * activations(&one), "{one} {four}");
}

#[test]
fn report_json_records_settings_and_measured_memory() {
    let d = tmp();
    let report = d.path().join("r.json");
    let o =
        sampler(&["--steps", "3", "--seed", "5", "--quiet", "--report-json", s(&report), s(&d.path().join("o.png"))]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["seed"], 5);
    assert_eq!(r["steps"], 3);
    assert_eq!(r["evaluations"], 3);
    assert_eq!(r["precision"], "fp32");
    assert_eq!(r["model_sha256"].as_str().unwrap().len(), 64);
    let heap = r["peak_heap_bytes"].as_u64().unwrap();
    let rss = r["peak_rss_bytes"].as_u64().unwrap();
    // A real measurement: at least the decoded weights, and never more than the whole process.
    assert!(heap > 4_000_000 && heap < rss, "heap {heap} rss {rss}");
    // The prediction is a floor of what the run holds: the weights as stored, some activations.
    let predicted = &r["predicted_bytes"];
    assert!(predicted["weights"].as_u64().unwrap() > 4_000_000, "{predicted}");
    assert!(predicted["activations"].as_u64().unwrap() > 0, "{predicted}");
    assert!(predicted["total"].as_u64().unwrap() < heap, "{predicted} vs heap {heap}");
}

/// The int8 model runs through the same CLI, says so, and its planned network holds less heap
/// than the fp32 one: no f32 copy of its int8 weights (the fp32 weights alone are 4.5 MB).
#[test]
fn int8_model_runs_and_holds_less_than_fp32() {
    let d = tmp();
    let held = |model: &str| {
        let report = d.path().join(format!("{model}.json"));
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(model);
        let o = sampler(&[
            "--model",
            s(&path),
            "--steps",
            "2",
            "--quiet",
            "--report-json",
            s(&report),
            s(&d.path().join("o.png")),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        (r["precision"].as_str().unwrap().to_string(), r["heap_held_after_load_bytes"].as_u64().unwrap())
    };
    let (p32, fp32) = held("sprites-cond.onnx");
    let (p8, int8) = held("sprites-cond-int8.onnx");
    assert_eq!((p32.as_str(), p8.as_str()), ("fp32", "int8"));
    // Measured: fp32 7.0 MB, int8 4.3 MB.
    assert!(fp32 > 4_500_000, "fp32 plan holds {fp32} bytes, less than its weights");
    assert!((int8 as f64) < 0.7 * fp32 as f64, "int8 plan holds {int8} bytes vs fp32 {fp32}");
}

/// DPM-Solver++(2M) through the CLI: one evaluation per step, deterministic, and not DDIM.
#[test]
fn dpmpp2m_runs_one_eval_per_step_and_repeats() {
    let d = tmp();
    let run = |sched: &str, tag: &str| {
        let report = d.path().join(format!("{tag}.json"));
        let raw = d.path().join(format!("{tag}.npy"));
        let o = sampler(&[
            "--scheduler",
            sched,
            "--steps",
            "10",
            "--seed",
            "3",
            "--quiet",
            "--report-json",
            s(&report),
            "--save-raw",
            s(&raw),
            s(&d.path().join(format!("{tag}.png"))),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!((r["scheduler"].as_str().unwrap(), r["evaluations"].as_u64().unwrap()), (sched, 10));
        std::fs::read(&raw).unwrap()
    };
    let (a, b, ddim) = (run("dpmpp2m", "a"), run("dpmpp2m", "b"), run("ddim", "c"));
    assert_eq!(a, b);
    assert_ne!(a, ddim);
}
