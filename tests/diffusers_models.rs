//! Models made with diffusers and PyTorch, run unchanged: each fixture under
//! `tests/fixtures/diffusers/` is a small `UNet2DModel` exported by `torch.onnx.export` in a
//! layout people have, with the configuration files diffusers writes, and the x0 that diffusers'
//! own scheduler reached driving ONNX Runtime from a stored x_T (`generate.py` made them). The
//! sampler, given the same files and flags, must land on that x0: max |ours − theirs| at most
//! 1e-4 of max |theirs|. Then the same through `sampler import` (one self-describing file), and
//! the errors for what such a model cannot do.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use edgediff_io::npy;

/// max |ours − theirs| / max |theirs| allowed.
const TOLERANCE: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diffusers")
}

fn sampler(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sampler")).args(args).output().expect("run sampler")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// One recorded run of a fixture.
struct Run {
    name: String,
    args: Vec<String>,
    x0: PathBuf,
}

/// A fixture: where `--model` points, its x_T and its runs (from `case.json`).
struct Case {
    dir: PathBuf,
    model: PathBuf,
    x_t: PathBuf,
    runs: Vec<Run>,
}

fn case(name: &str) -> Case {
    let dir = fixtures().join(name);
    let text = std::fs::read_to_string(dir.join("case.json")).expect("case.json");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let runs = json["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Run {
            name: r["name"].as_str().unwrap().to_string(),
            args: r["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect(),
            x0: dir.join(r["x0"].as_str().unwrap()),
        })
        .collect();
    Case { model: dir.join(json["model"].as_str().unwrap()), x_t: dir.join(json["x_T"].as_str().unwrap()), runs, dir }
}

/// Runs the sampler on `model` with the run's flags (paths in them relative to the fixture's
/// folder) from the fixture's x_T; returns x0.
fn sample(case: &Case, model: &Path, run: &Run, extra: &[&str]) -> Vec<f32> {
    let out = tempfile::tempdir().unwrap();
    let (png, raw) = (out.path().join("x.png"), out.path().join("x0.npy"));
    let args: Vec<String> = run
        .args
        .iter()
        .map(|a| if a.ends_with(".json") { case.dir.join(a).display().to_string() } else { a.clone() })
        .collect();
    let mut all: Vec<&str> =
        vec!["--quiet", "--model", model.to_str().unwrap(), "--init-noise", case.x_t.to_str().unwrap()];
    all.extend(args.iter().map(String::as_str));
    all.extend(extra);
    all.extend(["--save-raw", raw.to_str().unwrap(), png.to_str().unwrap()]);
    let o = sampler(&all);
    assert!(o.status.success(), "{} {}: {}", case.dir.display(), run.name, stderr(&o));
    npy::read_f32(&raw).unwrap().0
}

/// max |a − b| / max |b|.
fn relative_error(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    diff / b.iter().map(|y| y.abs()).fold(0.0, f32::max)
}

fn check_case(name: &str) {
    let c = case(name);
    for run in &c.runs {
        let want = npy::read_f32(&run.x0).unwrap().0;
        let got = sample(&c, &c.model, run, &[]);
        let err = relative_error(&got, &want);
        println!("{name} {}: relative error {err:e}", run.name);
        assert!(err <= TOLERANCE, "{name} {}: relative error {err:e} > {TOLERANCE:e}", run.name);
    }
}

#[test]
fn int64_timestep_in_a_flat_folder() {
    check_case("a-int64-timestep");
}

#[test]
fn float_scalar_timestep_with_configs_by_flag() {
    check_case("b-float-scalar");
}

#[test]
fn class_conditional_without_a_null_class() {
    check_case("c-class-labels");
}

#[test]
fn v_prediction_trailing_zero_snr_with_ddim_and_dpm_solver() {
    check_case("d-vpred-zsnr");
}

#[test]
fn optimum_folder_with_external_data() {
    check_case("e-optimum");
}

/// `sampler import` turns each fixture into one file that samples the very same bytes.
#[test]
fn imported_files_sample_the_same_bytes() {
    for name in ["a-int64-timestep", "b-float-scalar", "c-class-labels", "d-vpred-zsnr", "e-optimum"] {
        let c = case(name);
        let dir = tempfile::tempdir().unwrap();
        let imported = dir.path().join("m.onnx");
        let run = &c.runs[0];
        let configs: Vec<String> = run
            .args
            .windows(2)
            .filter(|w| w[0] == "--scheduler-config" || w[0] == "--unet-config")
            .flat_map(|w| [w[0].clone(), c.dir.join(&w[1]).display().to_string()])
            .collect();
        let mut args = vec!["import", c.model.to_str().unwrap(), imported.to_str().unwrap()];
        args.extend(configs.iter().map(String::as_str));
        let o = sampler(&args);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let flags: Vec<String> =
            run.args.chunks(2).filter(|p| !p[0].ends_with("-config")).flat_map(|p| p.iter().cloned()).collect();
        let plain = Run { name: run.name.clone(), args: flags, x0: run.x0.clone() };
        let direct = sample(&c, &c.model, run, &[]);
        let from_file = sample(&c, &imported, &plain, &[]);
        assert_eq!(direct, from_file, "{name}: the imported file samples other bytes");
    }
}

#[test]
fn what_a_model_without_a_null_class_cannot_do_is_refused() {
    let c = case("c-class-labels");
    let out = tempfile::tempdir().unwrap();
    let png = out.path().join("x.png");
    for (extra, needle) in [
        (&["--steps", "2"][..], "null class"),
        (&["--steps", "2", "--class", "1", "--guidance", "3"], "null class"),
        (&["--steps", "2", "--class", "7"], "unknown class"),
    ] {
        let mut args = vec!["--model", c.model.to_str().unwrap()];
        args.extend(extra);
        args.push(png.to_str().unwrap());
        let o = sampler(&args);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{extra:?}: {}", stderr(&o));
        assert!(!png.exists());
    }
}
