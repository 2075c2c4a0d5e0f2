//! `sampler` against small hand-made ONNX graphs that break the contract in one way each:
//! a network that outputs Inf/NaN at a known step, a wrong output shape, inputs that play no
//! role, several outputs, missing metadata (and the `--meta` flags that supply it).

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
    crafted(sample_name, out_channels, &[], false)
}

/// [`divide_by_timestep`] with unused extra f32 `[N]` inputs, and optionally a second output.
fn crafted(sample_name: &str, out_channels: usize, extra_inputs: &[&str], two_outputs: bool) -> Vec<u8> {
    let mut g = GraphBuilder::new("crafted");
    let n = || Dim::Param("N".into());
    let x =
        g.add_input(sample_name, data_type::FLOAT, &[n(), Dim::Fixed(3), Dim::Fixed(SIZE), Dim::Fixed(SIZE)]).unwrap();
    let t = g.add_input("timestep", data_type::FLOAT, &[n()]).unwrap();
    for name in extra_inputs {
        g.add_input(name, data_type::FLOAT, &[n()]).unwrap();
    }
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
    if two_outputs {
        let twice = g.node("Add", "twice", &[&out, &out], vec![]);
        g.add_output(&twice, data_type::FLOAT, &[n(), Dim::Fixed(out_channels), Dim::Fixed(SIZE), Dim::Fixed(SIZE)])
            .unwrap();
    }
    encode_model(&make_model(g.finish(), 17, &[], &metadata()))
}

/// prediction = sample / Cast<f32>(t) with the timestep declared as `elem` of shape `dims`
/// (`[N]`, `[1]` or a scalar), as exports declare it.
fn typed_timestep(elem: i32, dims: &[Dim]) -> Vec<u8> {
    let mut g = GraphBuilder::new("crafted");
    let n = || Dim::Param("N".into());
    let x = g.add_input("sample", data_type::FLOAT, &[n(), Dim::Fixed(3), Dim::Fixed(SIZE), Dim::Fixed(SIZE)]).unwrap();
    let t = g.add_input("timesteps", elem, dims).unwrap();
    let tf = g.node("Cast", "tf", &[&t], vec![edgediff_onnx::attr_int("to", data_type::FLOAT as i64)]);
    let shape = g.const_i64s("shape", &[-1, 1, 1, 1]);
    let t4 = g.node("Reshape", "t4", &[&tf, &shape], vec![]);
    let y = g.node("Div", "y", &[&x, &t4], vec![]);
    g.add_output(&y, data_type::FLOAT, &[n(), Dim::Fixed(3), Dim::Fixed(SIZE), Dim::Fixed(SIZE)]).unwrap();
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
fn wrong_output_shape_and_inputs_without_a_role_are_rejected() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("o.png");
    let run = |m: &str| sampler(&["--model", m, "--steps", "2", "--spacing", "trailing", out.to_str().unwrap()]);
    let m = write(d.path(), "narrow.onnx", &divide_by_timestep("sample", 1));
    assert_fails(&run(&m), 2, "expected f32 [1, 3, 8, 8]");
    let m = write(d.path(), "mask.onnx", &crafted("sample", 3, &["mask"], false));
    assert_fails(&run(&m), 2, "input `mask` float[N]: unknown");
    let m = write(d.path(), "text.onnx", &crafted("sample", 3, &["encoder_hidden_states"], false));
    assert_fails(&run(&m), 2, "text-conditioned");
    let m = write(d.path(), "two.onnx", &crafted("sample", 3, &[], true));
    assert_fails(&run(&m), 2, "choose one with --output NAME");
    assert!(!out.exists());
}

#[test]
fn inputs_are_found_by_role_and_an_output_by_flag() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("o.png");
    let raw = |name: &str| d.path().join(name).to_str().unwrap().to_string();
    let sample = |m: &str, extra: &[&str], npy: &str| {
        let mut args = vec!["--model", m, "--steps", "2", "--spacing", "trailing", "--quiet"];
        args.extend(extra);
        let npy = raw(npy);
        args.extend(["--save-raw", &npy, out.to_str().unwrap()]);
        let o = sampler(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read(npy).unwrap()
    };
    let plain = sample(&write(d.path(), "plain.onnx", &divide_by_timestep("sample", 3)), &[], "a.npy");
    let renamed = sample(&write(d.path(), "x.onnx", &divide_by_timestep("x", 3)), &[], "b.npy");
    assert_eq!(plain, renamed, "a sample input named `x` is the sample");
    let two = write(d.path(), "two.onnx", &crafted("sample", 3, &[], true));
    assert_eq!(sample(&two, &["--output", "prediction"], "c.npy"), plain);
    let e = sampler(&["--model", &two, "--output", "nope", out.to_str().unwrap()]);
    assert_fails(&e, 2, "--output nope: the graph's outputs are [prediction, twice]");
}

#[test]
fn missing_metadata_is_an_error_unless_flags_supply_it() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("o.png");
    let mut model = edgediff_onnx::decode_model(&divide_by_timestep("sample", 3)).unwrap();
    model.metadata_props.retain(|e| e.key != "edgediff.prediction_type");
    let m = write(d.path(), "nometa.onnx", &encode_model(&model));
    assert_fails(&sampler(&["--model", &m, "--steps", "2", out.to_str().unwrap()]), 2, "edgediff.prediction_type");
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
    assert_fails(&o, 2, "edgediff.prediction_type");
}

/// Every timestep type and shape exports use samples the bytes of the f32 `[N]` contract, for a
/// batch of 2 too (all images of a batch are at the same timestep).
#[test]
fn every_timestep_type_and_shape_samples_the_same_bytes() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("o.png");
    let run = |m: &str, npy: &str| {
        let npy = d.path().join(npy);
        let args = ["--model", m, "--steps", "3", "--spacing", "trailing", "--batch", "2", "--quiet", "--save-raw"];
        let o = sampler(&[&args[..], &[npy.to_str().unwrap(), out.to_str().unwrap()]].concat());
        assert!(o.status.success(), "{m}: {}", String::from_utf8_lossy(&o.stderr));
        std::fs::read(npy).unwrap()
    };
    let n = || Dim::Param("N".into());
    let want = run(&write(d.path(), "f32.onnx", &typed_timestep(data_type::FLOAT, &[n()])), "f32.npy");
    for (name, elem, dims) in [
        ("i64", data_type::INT64, vec![n()]),
        ("i32", data_type::INT32, vec![n()]),
        ("f16", data_type::FLOAT16, vec![n()]),
        ("one", data_type::INT64, vec![Dim::Fixed(1)]),
        ("scalar", data_type::FLOAT, vec![]),
        ("scalar-i64", data_type::INT64, vec![]),
    ] {
        let m = write(d.path(), &format!("{name}.onnx"), &typed_timestep(elem, &dims));
        assert_eq!(run(&m, &format!("{name}.npy")), want, "timestep {name}");
    }
    let m = write(d.path(), "u8.onnx", &typed_timestep(data_type::UINT8, &[n()]));
    assert_fails(&sampler(&["--model", &m, out.to_str().unwrap()]), 2, "the timestep must be");
}
