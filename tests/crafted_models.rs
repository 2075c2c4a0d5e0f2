//! `sampler` against small hand-made ONNX graphs that break the contract in one way each:
//! a network that outputs Inf/NaN at a known step, a wrong output shape, wrong input names,
//! missing metadata (and the `--meta` flags that supply it).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use edgediff_onnx::{data_type, encode_model, make_model, Dim, GraphBuilder};

fn sampler(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sampler")).args(args).output().expect("run sampler")
}

fn assert_fails(o: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().filter(|l| !l.trim().is_empty()).count(), 1, "not one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
}

const SIZE: usize = 8;

fn metadata() -> BTreeMap<String, String> {
    [
        ("edgediff.format", "1"),
        ("edgediff.model_name", "crafted"),
        ("edgediff.num_train_timesteps", "1000"),
        ("edgediff.beta_schedule", "linear"),
        ("edgediff.beta_start", "0.0001"),
        ("edgediff.beta_end", "0.02"),
        ("edgediff.prediction_type", "epsilon"),
        ("edgediff.image_size", "8"),
        ("edgediff.channels", "3"),
        ("edgediff.value_range", "-1,1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// prediction = sample / t (broadcast over C,H,W): finite until the step where t = 0.
fn divide_by_timestep(sample_name: &str, out_channels: usize) -> Vec<u8> {
    let mut g = GraphBuilder::new("crafted");
    let n = || Dim::Param("N".into());
    let x =
        g.add_input(sample_name, data_type::FLOAT, &[n(), Dim::Fixed(3), Dim::Fixed(SIZE), Dim::Fixed(SIZE)]).unwrap();
    let t = g.add_input("timestep", data_type::FLOAT, &[n()]).unwrap();
    let shape = g.const_i64s("shape", &[-1, 1, 1, 1]);
    let t4 = g.node("Reshape", "t4", &[&t, &shape], vec![]);
    let mut y = g.node("Div", "y", &[&x, &t4], vec![]);
    if out_channels != 3 {
        let starts = g.const_i64s("starts", &[0]);
        let ends = g.const_i64s("ends", &[out_channels as i64]);
        let axes = g.const_i64s("axes", &[1]);
        y = g.node("Slice", "sliced", &[&y, &starts, &ends, &axes], vec![]);
    }
    let out = g.node("Identity", "prediction", &[&y], vec![]);
    g.add_output(&out, data_type::FLOAT, &[n(), Dim::Fixed(out_channels), Dim::Fixed(SIZE), Dim::Fixed(SIZE)]).unwrap();
    encode_model(&make_model(g.finish(), 17, &[], &metadata()))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn non_finite_network_output_names_the_step() {
    let d = tempfile::tempdir().unwrap();
    let m = write(d.path(), "div.onnx", &divide_by_timestep("sample", 3));
    let out = d.path().join("o.png");
    // leading spacing with 2 steps: timesteps 500, 0 -> division by zero at step 1.
    let o = sampler(&["--model", &m, "--steps", "2", out.to_str().unwrap()]);
    assert_fails(&o, 1, "step 1 (t=0)");
    assert!(String::from_utf8_lossy(&o.stderr).contains("NaN") || String::from_utf8_lossy(&o.stderr).contains("Inf"));
    assert!(!out.exists(), "partial output written");
    // trailing spacing never reaches t=0: the same model samples without error.
    let o = sampler(&["--model", &m, "--steps", "2", "--spacing", "trailing", "--quiet", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.exists());
}

#[test]
fn wrong_output_shape_and_input_names_are_rejected() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("o.png");
    let m = write(d.path(), "narrow.onnx", &divide_by_timestep("sample", 1));
    assert_fails(&sampler(&["--model", &m, "--steps", "2", out.to_str().unwrap()]), 1, "expected f32 [1, 3, 8, 8]");
    let m = write(d.path(), "names.onnx", &divide_by_timestep("x", 3));
    assert_fails(&sampler(&["--model", &m, "--steps", "2", out.to_str().unwrap()]), 1, "expected `sample`");
    assert!(!out.exists());
}

#[test]
fn missing_metadata_is_an_error_unless_flags_supply_it() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("o.png");
    let mut model = edgediff_onnx::decode_model(&divide_by_timestep("sample", 3)).unwrap();
    model.metadata_props.retain(|e| e.key != "edgediff.prediction_type");
    let m = write(d.path(), "nometa.onnx", &encode_model(&model));
    assert_fails(&sampler(&["--model", &m, "--steps", "2", out.to_str().unwrap()]), 1, "edgediff.prediction_type");
    let o = sampler(&[
        "--model",
        &m,
        "--meta",
        "prediction_type=epsilon",
        "--steps",
        "2",
        "--spacing",
        "trailing",
        "--quiet",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = sampler(&["info", "--model", &m]);
    assert_fails(&o, 1, "edgediff.prediction_type");
}
