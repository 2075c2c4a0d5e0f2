//! The CLI's answers to bad input: one line on stderr, exit 1 (2 for malformed flags), before
//! anything is built or emulated. (The emulated parity run itself is `cargo xtask test`'s
//! firmware-sim step: it needs the cross build, which cannot run inside `cargo test`'s build.)

use std::path::Path;
use std::process::{Command, Output};

fn sim(args: &[&str], path_env: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_firmware-sim"));
    cmd.args(args);
    if let Some(p) = path_env {
        cmd.env("PATH", p).env_remove("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER").env_remove("RUSTC");
    }
    cmd.output().expect("run firmware-sim")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

/// A model file (contents unchecked before the tools are found) and a minimal valid reference.
fn fixture(dir: &Path) -> (String, String) {
    let model = dir.join("m.onnx");
    std::fs::write(&model, b"not checked before the tools").unwrap();
    let reference = dir.join("ref");
    std::fs::create_dir_all(reference.join("seed-0")).unwrap();
    std::fs::write(
        reference.join("reference.json"),
        r#"{"steps": 2, "seeds": [0], "scheduler": "ddim", "spacing": "leading", "eta": 0.0}"#,
    )
    .unwrap();
    for name in ["x_T.npy", "x0.npy"] {
        edgediff_io::npy::write_f32(&reference.join("seed-0").join(name), &[0.0, 1.0], &[1, 1, 1, 2]).unwrap();
    }
    (model.display().to_string(), reference.display().to_string())
}

fn assert_one_line_error(o: &Output, code: i32, wants: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {e}");
    assert_eq!(e.lines().count(), 1, "one line expected: {e}");
    for w in wants {
        assert!(e.contains(w), "expected `{w}` in: {e}");
    }
}

#[test]
fn list_shows_every_profile() {
    let o = sim(&["list"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for (name, kind) in [("cortex-a53", "a53"), ("cortex-a72", "a72"), ("cortex-a76", "generic")] {
        let line = out.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} missing from:\n{out}"));
        assert!(line.split_whitespace().nth(2) == Some(kind), "{line}");
    }
}

#[test]
fn unknown_profile_is_refused() {
    let o = sim(&["run", "--profile", "cortex-m4"], None);
    assert_one_line_error(&o, 1, &["unknown profile `cortex-m4`", "cortex-a53, cortex-a72, cortex-a76"]);
}

#[test]
fn missing_reference_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _) = fixture(dir.path());
    let empty = dir.path().join("no-reference");
    std::fs::create_dir_all(&empty).unwrap();
    let o =
        sim(&["run", "--profile", "cortex-a53", "--model", &model, "--reference", &empty.display().to_string()], None);
    assert_one_line_error(&o, 1, &["no-reference", "reference.json not found", "train sample"]);
}

#[test]
fn empty_model_and_unknown_seed_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, reference) = fixture(dir.path());
    let empty = dir.path().join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    let o = sim(
        &["run", "--profile", "cortex-a53", "--model", &empty.display().to_string(), "--reference", &reference],
        None,
    );
    assert_one_line_error(&o, 1, &["empty.onnx", "file is empty"]);
    let (model, _) = fixture(dir.path());
    let o = sim(&["run", "--all", "--model", &model, "--reference", &reference, "--seeds", "5"], None);
    assert_one_line_error(&o, 1, &["has no seed 5"]);
}

#[test]
fn missing_qemu_and_cross_linker_print_the_install_command() {
    let dir = tempfile::tempdir().unwrap();
    let (model, reference) = fixture(dir.path());
    let bare_path = dir.path().join("bin");
    std::fs::create_dir_all(&bare_path).unwrap();
    let o = sim(&["run", "--profile", "cortex-a53", "--model", &model, "--reference", &reference], Some(&bare_path));
    assert_one_line_error(
        &o,
        1,
        &[
            "missing tools: qemu-aarch64, aarch64-linux-gnu-gcc",
            "apt-get install -y qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross",
        ],
    );
}

#[test]
fn int8_runs_the_default_int8_model_against_the_fp32_reference() {
    // Gates, the default int8 model and the fp32 reference all resolve: the first thing missing
    // is the toolchain (the emulated run itself is `cargo xtask test`'s firmware-sim step).
    let dir = tempfile::tempdir().unwrap();
    let bare_path = dir.path().join("bin");
    std::fs::create_dir_all(&bare_path).unwrap();
    for precision in ["int8", "fp32,int8"] {
        let o = sim(&["run", "--profile", "cortex-a53", "--precision", precision, "--seeds", "0"], Some(&bare_path));
        assert_one_line_error(&o, 1, &["missing tools: qemu-aarch64"]);
    }
    // The default reference has no seed 9: proves which reference an int8 run is judged against.
    let o = sim(&["run", "--all", "--precision", "int8", "--seeds", "9"], None);
    assert_one_line_error(&o, 1, &["models/reference/sprites-cond", "has no seed 9"]);
}

#[test]
fn one_model_takes_one_precision() {
    let dir = tempfile::tempdir().unwrap();
    let (model, reference) = fixture(dir.path());
    let o = sim(&["run", "--all", "--model", &model, "--reference", &reference, "--precision", "fp32,int8"], None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--model names one model: give exactly one --precision"), "{}", stderr(&o));
}

#[test]
fn malformed_flags_are_usage_errors() {
    let o = sim(&["run"], None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = sim(&["run", "--all", "--precision", "fp16"], None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
