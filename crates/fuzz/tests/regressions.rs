//! Every finding of the fuzzer is replayed here, by the `edgediff-fuzz replay` binary under the
//! address-space limit a fuzz run's workers have (so an unbounded allocation aborts here as it
//! did there): its input is committed under `regressions/<target>/`. A finding in code outside
//! this crate stays `#[ignore]`d, naming the failure, until that code is fixed; its entry in
//! `src/known.rs` goes with the `#[ignore]`. The seed corpus must run clean too.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use edgediff_fuzz::known::KNOWN;
use edgediff_fuzz::TARGETS;

/// The limit of `edgediff-fuzz run`'s default `--memory-limit-mib 4096`, in KiB.
const MEMORY_LIMIT_KIB: &str = "4194304";

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `edgediff-fuzz replay --target TARGET FILES` under the memory limit.
fn replay(target: &str, files: &[PathBuf]) -> Output {
    Command::new("sh")
        .args(["-c", r#"ulimit -v "$1" && shift && exec "$@""#, "sh", MEMORY_LIMIT_KIB])
        .arg(env!("CARGO_BIN_EXE_edgediff-fuzz"))
        .args(["replay", "--target", target])
        .args(files)
        .output()
        .expect("run edgediff-fuzz replay")
}

fn assert_clean(target: &str, files: &[PathBuf]) -> String {
    let out = replay(target, files);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{target}: {}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    stdout.into_owned()
}

/// The input of one regression test.
fn regression(target: &str, name: &str) -> Vec<PathBuf> {
    let path = crate_dir().join("regressions").join(target).join(name);
    assert!(path.is_file(), "{} is missing", path.display());
    vec![path]
}

#[test]
fn every_seed_runs_clean_and_the_model_seeds_sample() {
    for target in TARGETS {
        let files = edgediff_fuzz::corpus::files_in(&crate_dir().join("corpus").join(target.name)).unwrap();
        assert!(!files.is_empty(), "no seeds for {}", target.name);
        let stdout = assert_clean(target.name, &files);
        if target.name == "model" {
            // Mutations start from models that reach every stage, so their mutants can too.
            for line in stdout.lines() {
                assert!(line.ends_with(": sampled"), "a model seed stops early: {line}");
            }
        }
    }
}

#[test]
fn every_known_finding_has_its_regression_test() {
    let source = include_str!("regressions.rs");
    for known in KNOWN {
        assert!(source.contains(&format!("fn {}()", known.test)), "no test `{}` for {known:?}", known.test);
    }
}

/// A `.npy` file of version 2 declares a header of 0xfe000074 bytes (4 GiB) in 132 bytes:
/// `edgediff_io::npy::read_f32` checks the declared length against the file before npyz, which
/// would allocate it first, reads the header.
#[test]
fn npy_header_length_beyond_the_file() {
    assert_clean("npy", &regression("npy", "header-length-4gib.npy"));
}

/// `edgediff.null_class=none` with no class names contradicts itself (no classes, so no null
/// class to lack) and would not survive `to_props`/`from_props`: it is refused at parse.
#[test]
fn meta_null_class_none_without_class_names() {
    assert_clean("meta", &regression("meta", "null-class-none-without-class-names.txt"));
}

/// Models with a node that writes no output inside a chain the load-time rewrites walk (the
/// GroupNorm square `Mul(centred, centred)` and centring `Sub`, a per-channel `Mul`, an int8
/// `Cast` after `ConvInteger`): refused at load as a bad model, before any rewrite indexes the
/// node's outputs.
#[test]
fn model_group_norm_node_without_output() {
    let mut files = regression("model", "group-norm-square-without-output.onnx");
    files.extend(regression("model", "group-norm-sub-without-output.onnx"));
    assert_clean("model", &files);
}

#[test]
fn model_channel_affine_node_without_output() {
    assert_clean("model", &regression("model", "channel-affine-mul-without-output.onnx"));
}

#[test]
fn model_int8_node_without_output() {
    assert_clean("model", &regression("model", "int8-cast-without-output.onnx"));
}

/// Replays `name` and asserts that no panic was caught on the way: the input is refused (or
/// run) by a check of ours, not by the guard around tract.
fn assert_refused_by_a_check(name: &str) -> String {
    let stdout = assert_clean("model", &regression("model", name));
    assert!(!stdout.contains("a panic was caught"), "{name}: {stdout}");
    stdout
}

/// Initializers and attribute tensors whose raw bytes tract cannot read (a data type it only
/// reads from typed fields, or fewer bytes than the dims need) are refused at load.
#[test]
fn model_raw_data_of_an_unreadable_type() {
    let stdout = assert_refused_by_a_check("raw-data-of-unreadable-type.onnx");
    assert!(stdout.ends_with("refused\n"), "{stdout}");
}

/// Convolutions and pools whose `strides`, `dilations`, `pads` or `kernel_shape` do not have
/// one entry per spatial axis (two for pads) are refused at load, before tract indexes them.
#[test]
fn model_window_attributes_of_the_wrong_length() {
    for name in ["conv-attribute-lists-too-short.onnx", "pool-attribute-lists-too-short.onnx"] {
        let stdout = assert_refused_by_a_check(name);
        assert!(stdout.ends_with("refused\n"), "{name}: {stdout}");
    }
}

/// Our GroupNorm and channel-affine ops given shapes they do not fit (a rank-1 input, a beta
/// shorter than gamma) fall back to or fail as plain ops instead of indexing past the end.
#[test]
fn model_fused_ops_on_shapes_they_do_not_fit() {
    assert_refused_by_a_check("group-norm-rank-1-input.onnx");
    assert_refused_by_a_check("channel-affine-beta-shorter-than-gamma.onnx");
}

/// A `Conv` whose optional bias is written as an empty name (`[x, w, ""]`, valid ONNX) runs:
/// trailing empty inputs are dropped at load, as ONNX reads them.
#[test]
fn model_conv_with_an_empty_trailing_bias_samples() {
    let stdout = assert_refused_by_a_check("conv-trailing-empty-bias.onnx");
    assert!(stdout.ends_with("sampled\n"), "{stdout}");
}
