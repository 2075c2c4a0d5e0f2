//! `train quantize` on broken or hostile models, each found by fuzzing: every one is refused with
//! one line naming what is wrong and no output file, and a model whose nodes have no names
//! quantises exactly as the same model with names.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use edgediff_onnx::{
    attr_ints, data_type, decode_model, encode_model, make_model, Dim, GraphBuilder, GraphProto, ModelProto,
};
use edgediff_runtime::{Denoiser, LoadOptions};

const FAST: [&str; 4] = ["--calib-images", "1", "--calib-steps", "2"];

fn train(args: &[&str]) -> Output {
    // RUST_BACKTRACE=1: a panic would print its message and backtrace, not one line.
    Command::new(env!("CARGO_BIN_EXE_train")).args(args).env("RUST_BACKTRACE", "1").output().expect("run train")
}

/// Asserts a refusal: exit `code`, one non-empty stderr line holding `needle`, no panic, no
/// file at `out`.
fn assert_refused(out: &Output, code: i32, needle: &str, path: &Path) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(stderr.lines().filter(|l| !l.trim().is_empty()).count(), 1, "not one line: {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("internal error"), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(!path.exists(), "a refused quantize wrote {}", path.display());
}

fn metadata(class_names: Option<&str>) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = [
        ("edgediff.format", "1"),
        ("edgediff.model_name", "tiny"),
        ("edgediff.num_train_timesteps", "1000"),
        ("edgediff.beta_schedule", "linear"),
        ("edgediff.beta_start", "0.0001"),
        ("edgediff.beta_end", "0.02"),
        ("edgediff.prediction_type", "epsilon"),
        ("edgediff.image_size", "8"),
        ("edgediff.channels", "3"),
        ("edgediff.value_range", "-1,1"),
        ("edgediff.precision", "fp32"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Some(names) = class_names {
        m.insert("edgediff.class_names".into(), names.into());
    }
    m
}

/// Deterministic small weights: `n` values in about ±0.3.
fn weights(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32 / 1000.0 - 0.5) * 0.6).collect()
}

/// A conv of `cin -> cout` channels, 3x3, padding 1, with a bias.
fn conv(g: &mut GraphBuilder, x: &str, cin: usize, cout: usize, seed: usize) -> String {
    let w = g.initializer_f32(&format!("w{seed}"), &[cout, cin, 3, 3], &weights(cout * cin * 9, seed)).unwrap();
    let b = g.initializer_f32(&format!("b{seed}"), &[cout], &weights(cout, seed + 50)).unwrap();
    let attrs = vec![attr_ints("kernel_shape", &[3, 3]), attr_ints("pads", &[1, 1, 1, 1])];
    g.node("Conv", &format!("conv{seed}"), &[x, &w, &b], attrs)
}

fn silu(g: &mut GraphBuilder, x: &str) -> String {
    let s = g.node("Sigmoid", "sig", &[x], vec![]);
    g.node("Mul", "silu", &[x, &s], vec![])
}

/// sample → conv → + timestep·1e-3 (+ class embedding) → SiLU → conv → SiLU → MatMul + bias →
/// conv → prediction: two int8 layers (the middle conv and the MatMul) between fp32 first and
/// last convs. `classes`: rows of the class table, for a conditional model.
fn tiny(classes: Option<usize>) -> ModelProto {
    let mut g = GraphBuilder::new("tiny");
    let n = || Dim::Param("N".into());
    let image = [n(), Dim::Fixed(3), Dim::Fixed(8), Dim::Fixed(8)];
    let x = g.add_input("sample", data_type::FLOAT, &image).unwrap();
    let t = g.add_input("timestep", data_type::FLOAT, &[n()]).unwrap();
    let h = conv(&mut g, &x, 3, 8, 1);
    let shape = g.const_i64s("shape", &[-1, 1, 1, 1]);
    let t4 = g.node("Reshape", "t4", &[&t, &shape], vec![]);
    let k = g.scalar_f32("k", 1e-3);
    let ts = g.node("Mul", "ts", &[&t4, &k], vec![]);
    let mut h = g.node("Add", "h", &[&h, &ts], vec![]);
    if let Some(rows) = classes {
        let labels = g.add_input("class_labels", data_type::INT64, &[n()]).unwrap();
        let table = g.initializer_f32("table", &[rows, 8], &weights(rows * 8, 9)).unwrap();
        let e = g.node("Gather", "e", &[&table, &labels], vec![]);
        let shape = g.const_i64s("eshape", &[-1, 8, 1, 1]);
        let e4 = g.node("Reshape", "e4", &[&e, &shape], vec![]);
        h = g.node("Add", "hc", &[&h, &e4], vec![]);
    }
    let a = silu(&mut g, &h);
    let h = conv(&mut g, &a, 8, 8, 2);
    let a = silu(&mut g, &h);
    let wm = g.initializer_f32("wm", &[8, 8], &weights(64, 3)).unwrap();
    let m = g.node("MatMul", "m", &[&a, &wm], vec![]);
    let bm = g.initializer_f32("bm", &[8], &weights(8, 4)).unwrap();
    let m = g.node("Add", "mb", &[&m, &bm], vec![]);
    let y = conv(&mut g, &m, 8, 3, 5);
    g.add_output(&y, data_type::FLOAT, &image).unwrap();
    let names = classes.map(|rows| (0..rows - 1).map(|i| format!("c{i}")).collect::<Vec<_>>().join(","));
    make_model(g.finish(), 17, &[], &metadata(names.as_deref()))
}

fn graph_mut(model: &mut ModelProto) -> &mut GraphProto {
    model.graph.as_mut().unwrap()
}

/// Writes `model` as `name` in `dir`; returns its path and the path of its would-be output.
fn write(dir: &Path, name: &str, model: &ModelProto) -> (String, std::path::PathBuf) {
    let path = dir.join(name);
    std::fs::write(&path, encode_model(model)).unwrap();
    (path.to_str().unwrap().to_string(), dir.join(format!("{name}.int8.onnx")))
}

fn quantize(input: &str, out: &Path, extra: &[&str]) -> Output {
    train(&[&["quantize", input, out.to_str().unwrap()][..], &FAST[..], extra].concat())
}

#[test]
fn the_tiny_model_quantises_its_two_inner_layers() {
    let d = tempfile::tempdir().unwrap();
    let (input, out) = write(d.path(), "tiny.onnx", &tiny(None));
    let o = quantize(&input, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("1 Conv + 1 MatMul nodes int8"));
    Denoiser::load(&std::fs::read(&out).unwrap(), &LoadOptions::default()).expect("the int8 file loads");
}

#[test]
fn a_graph_without_outputs_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut model = tiny(None);
    graph_mut(&mut model).output.clear();
    let (input, out) = write(d.path(), "no-output.onnx", &model);
    assert_refused(&quantize(&input, &out, &[]), 2, "no output", &out);
}

/// The graph with every node name removed (ONNX allows it).
fn unnamed(mut model: ModelProto) -> ModelProto {
    graph_mut(&mut model).node.iter_mut().for_each(|n| n.name.clear());
    model
}

/// `graph` with its node names removed, for comparing two graphs that differ only in them.
fn without_node_names(bytes: &[u8]) -> GraphProto {
    let mut model = unnamed(decode_model(bytes).unwrap());
    model.graph.take().unwrap()
}

#[test]
fn unnamed_nodes_quantise_as_the_named_model_does() {
    let d = tempfile::tempdir().unwrap();
    for form in ["integer", "qoperator", "qdq"] {
        let (named, named_out) = write(d.path(), &format!("named-{form}.onnx"), &tiny(Some(3)));
        let (bare, bare_out) = write(d.path(), &format!("bare-{form}.onnx"), &unnamed(tiny(Some(3))));
        for (input, out) in [(&named, &named_out), (&bare, &bare_out)] {
            let o = quantize(input, out, &["--form", form, "--bias-correction", "1", "--smooth", "0.5"]);
            assert!(o.status.success(), "{form}: {}", String::from_utf8_lossy(&o.stderr));
        }
        let (a, b) = (std::fs::read(&named_out).unwrap(), std::fs::read(&bare_out).unwrap());
        Denoiser::load(&b, &LoadOptions::default()).expect("the unnamed model's int8 file loads");
        let (a, b) = (without_node_names(&a), without_node_names(&b));
        assert_eq!(a.initializer, b.initializer, "{form}: int8 weights differ");
        assert_eq!(a, b, "{form}: the graphs differ in more than node names");
    }
}

#[test]
fn keep_fp32_takes_a_node_or_an_output_name_and_refuses_others() {
    let d = tempfile::tempdir().unwrap();
    let (input, out) = write(d.path(), "tiny.onnx", &tiny(None));
    for keep in ["conv2/Conv", "conv2"] {
        let o = quantize(&input, &out, &["--keep-fp32", keep]);
        assert!(o.status.success(), "{keep}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains("0 Conv + 1 MatMul nodes int8"), "{keep}");
        std::fs::remove_file(&out).unwrap();
    }
    assert_refused(&quantize(&input, &out, &["--keep-fp32", "conv2,nope"]), 2, "`nope`", &out);
    let (bare, bare_out) = write(d.path(), "bare.onnx", &unnamed(tiny(None)));
    assert_refused(&quantize(&bare, &bare_out, &["--keep-fp32", "conv2/Conv"]), 2, "`conv2/Conv`", &bare_out);
    assert_refused(&quantize(&bare, &bare_out, &["--keep-fp32", ""]), 2, "--keep-fp32", &bare_out);
}

#[test]
fn a_class_table_that_disagrees_with_class_names_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut model = tiny(Some(3));
    model.metadata_props.retain(|e| e.key != "edgediff.class_names");
    model
        .metadata_props
        .push(edgediff_onnx::StringStringEntryProto { key: "edgediff.class_names".into(), value: "a,b,c,d,e".into() });
    let (input, out) = write(d.path(), "classes.onnx", &model);
    assert_refused(&quantize(&input, &out, &[]), 2, "class table", &out);
}

/// A prediction of one channel for a sample of three: the sampler's plan refuses it, and
/// calibration, which steps the scheduler on the prediction, must too.
#[test]
fn a_prediction_not_shaped_like_the_sample_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut model = tiny(None);
    for t in graph_mut(&mut model).initializer.iter_mut() {
        let keep = match t.name.as_str() {
            "w5" => 8 * 9,
            "b5" => 1,
            _ => continue,
        };
        t.dims[0] = 1;
        t.raw_data.truncate(4 * keep);
    }
    graph_mut(&mut model).output[0].r#type = None;
    let (input, out) = write(d.path(), "one-channel.onnx", &model);
    assert_refused(&quantize(&input, &out, &[]), 2, "shape", &out);
}

/// `model` with `value` written over element 0 of initializer `name`.
fn poisoned(mut model: ModelProto, name: &str, value: f32) -> ModelProto {
    let t = graph_mut(&mut model).initializer.iter_mut().find(|t| t.name == name).unwrap();
    t.raw_data[..4].copy_from_slice(&value.to_le_bytes());
    model
}

#[test]
fn non_finite_weights_are_refused() {
    let d = tempfile::tempdir().unwrap();
    for (i, value) in [f32::NAN, f32::INFINITY].into_iter().enumerate() {
        let (input, out) = write(d.path(), &format!("nan{i}.onnx"), &poisoned(tiny(None), "w2", value));
        assert_refused(&quantize(&input, &out, &[]), 2, "`w2`", &out);
    }
}

/// Weights so small (1e-44) that their int8 scale rounds to 0 in f32: the graph it would write
/// has a zero scale, which no engine accepts.
#[test]
fn a_zero_scale_is_never_written() {
    let d = tempfile::tempdir().unwrap();
    let mut model = tiny(None);
    let t = graph_mut(&mut model).initializer.iter_mut().find(|t| t.name == "wm").unwrap();
    t.raw_data = [1e-44f32; 64].iter().flat_map(|v| v.to_le_bytes()).collect();
    for form in ["integer", "qoperator", "qdq"] {
        let (input, out) = write(d.path(), &format!("tiny-{form}.onnx"), &model);
        assert_refused(&quantize(&input, &out, &["--form", form]), 1, "scale", &out);
    }
}

#[test]
fn input_and_output_naming_one_file_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (input, _) = write(d.path(), "tiny.onnx", &tiny(None));
    let before = std::fs::read(&input).unwrap();
    let same = d.path().join(".").join("tiny.onnx");
    let o = quantize(&input, &same, &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("same file") && stderr.lines().count() == 1, "{stderr}");
    assert_eq!(std::fs::read(&input).unwrap(), before, "the input was replaced");
}

#[cfg(unix)]
#[test]
fn a_symbolic_link_as_output_is_not_replaced() {
    let d = tempfile::tempdir().unwrap();
    let (input, _) = write(d.path(), "tiny.onnx", &tiny(None));
    let target = d.path().join("target.bin");
    std::fs::write(&target, b"keep").unwrap();
    let link = d.path().join("link.onnx");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let o = quantize(&input, &link, &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("symbolic link") && stderr.lines().count() == 1, "{stderr}");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
}
