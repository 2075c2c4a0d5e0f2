//! `sampler` against broken and hostile inputs, one class of failure per test: each must end
//! with one line on stderr naming what was wrong, a non-zero exit code, no panic, no file
//! written or replaced, and a small peak RSS (the child's, from `wait4`), however large the
//! sizes the input asks for. RELIABILITY.md lists the classes and these tests.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use edgediff_onnx::{data_type, encode_model, make_model, Dim, GraphBuilder};

/// What a run of `sampler` left: exit code (`None` if a signal ended it), stderr, peak RSS.
struct Run {
    code: Option<i32>,
    stderr: String,
    max_rss_bytes: u64,
}

/// Runs `sampler` and measures its peak RSS with `wait4`.
#[expect(clippy::zombie_processes, reason = "the child is reaped by `wait4`, which also reports its peak RSS")]
fn sampler(args: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sampler"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sampler");
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let mut status = 0;
    // SAFETY: `rusage` is plain data that `wait4` fills; the zeroed value is a valid one.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our own child, not yet reaped (`Child::wait` is never called), and
    // both out-pointers point to live locals of the right types.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4 failed");
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Run { code, stderr, max_rss_bytes: usage.ru_maxrss as u64 * 1024 }
}

/// The run failed with `code`, one line naming `needle`, no panic, and under 100 MB of RSS.
fn assert_refused(run: &Run, code: i32, needle: &str) {
    let err = &run.stderr;
    assert_eq!(run.code, Some(code), "exit code; stderr: {err}");
    assert!(!err.contains("panicked") && !err.contains("internal error"), "panic: {err}");
    assert_eq!(err.lines().filter(|l| !l.trim().is_empty()).count(), 1, "not one line: {err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
    assert!(run.max_rss_bytes < 100 << 20, "peak RSS {} MB: {err}", run.max_rss_bytes >> 20);
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const SIZE: usize = 8;

/// The metadata of a small grey model, with `changes` applied (`None` removes the key).
fn metadata(changes: &[(&str, Option<&str>)]) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = [
        ("format", "1"),
        ("model_name", "hostile"),
        ("num_train_timesteps", "1000"),
        ("beta_schedule", "linear"),
        ("beta_start", "0.0001"),
        ("beta_end", "0.02"),
        ("prediction_type", "epsilon"),
        ("image_size", "8"),
        ("channels", "1"),
        ("value_range", "-1,1"),
    ]
    .into_iter()
    .map(|(k, v)| (format!("edgediff.{k}"), v.to_string()))
    .collect();
    for (k, v) in changes {
        match v {
            Some(v) => m.insert(format!("edgediff.{k}"), v.to_string()),
            None => m.remove(&format!("edgediff.{k}")),
        };
    }
    m
}

/// prediction = sample * w + t·0 (a weight `w` of one value), with the sample declared as
/// `sample_type` of `sample_dims`.
fn scaled(w: f32, sample_type: i32, sample_dims: &[Dim], meta: &BTreeMap<String, String>) -> Vec<u8> {
    let mut g = GraphBuilder::new("hostile");
    let x = g.add_input("sample", sample_type, sample_dims).unwrap();
    let t = g.add_input("timestep", data_type::FLOAT, &[Dim::Param("N".into())]).unwrap();
    let w = g.scalar_f32("w", w);
    let zero = g.scalar_f32("zero", 0.0);
    let t0 = g.node("Mul", "t0", &[&t, &zero], vec![]);
    let shape = g.const_i64s("shape", &[-1, 1, 1, 1]);
    let t4 = g.node("Reshape", "t4", &[&t0, &shape], vec![]);
    let y = g.node("Mul", "y", &[&x, &w], vec![]);
    let out = g.node("Add", "prediction", &[&y, &t4], vec![]);
    g.add_output(&out, data_type::FLOAT, sample_dims).unwrap();
    encode_model(&make_model(g.finish(), 17, &[], meta))
}

fn nchw(h: Dim, w: Dim) -> [Dim; 4] {
    [Dim::Param("N".into()), Dim::Fixed(1), h, w]
}

fn fixed() -> [Dim; 4] {
    nchw(Dim::Fixed(SIZE), Dim::Fixed(SIZE))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn the_crafted_model_itself_samples() {
    let d = tempfile::tempdir().unwrap();
    let m = write(d.path(), "m.onnx", &scaled(0.5, data_type::FLOAT, &fixed(), &metadata(&[])));
    let out = d.path().join("o.png");
    let run = sampler(&["--model", s(&m), "--steps", "2", "--quiet", s(&out)]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(out.is_file());
}

#[test]
fn inconsistent_metadata_is_refused_by_key() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("o.png");
    let cases: &[(&str, &str, &str)] = &[
        ("num_train_timesteps", "18446744073709551615", "num_train_timesteps"),
        ("num_train_timesteps", "4294967296", "num_train_timesteps"),
        ("num_train_timesteps", "1000000000", "num_train_timesteps"),
        ("beta_start", "0.5", "beta_start"),
        ("beta_end", "nan", "beta_"),
        ("clip_sample", "2", "clip_sample"),
        ("clip_sample", "-1", "clip_sample"),
        ("clip_sample", "nan", "clip_sample"),
        ("value_range", "-1e38,1e38", "value_range"),
        ("value_range", "1,-1", "value_range"),
        ("image_size", "0", "image_size"),
        ("image_size", "100000", "image_size"),
        ("guidance_scale", "1e30", "guidance_scale"),
        ("trained_betas", "0.1,0.2", "trained_betas"),
    ];
    let m = write(d.path(), "m.onnx", &scaled(0.5, data_type::FLOAT, &fixed(), &metadata(&[])));
    for (key, value, needle) in cases {
        let meta = format!("{key}={value}");
        assert_refused(&sampler(&["--model", s(&m), "--meta", &meta, "--steps", "2", s(&out)]), 2, needle);
        // `sampler info` reads the model the same way, so it refuses the same schedules.
        assert_refused(&sampler(&["info", "--model", s(&m), "--meta", &meta]), 2, needle);
    }
    assert_eq!(files_in(d.path()), vec![m]);
}

#[test]
fn graphs_that_contradict_themselves_are_refused_before_tract_runs_them() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("o.png");
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    // Weights that hold NaN or Inf predict NaN everywhere.
    cases.push(("nan.onnx", scaled(f32::NAN, data_type::FLOAT, &fixed(), &metadata(&[])), "non-finite"));
    cases.push(("inf.onnx", scaled(f32::INFINITY, data_type::FLOAT, &fixed(), &metadata(&[])), "non-finite"));
    // A sample input the sampler cannot feed.
    for (name, t) in [("f16.onnx", data_type::FLOAT16), ("f64.onnx", data_type::DOUBLE), ("i64.onnx", data_type::INT64)]
    {
        cases.push((name, scaled(0.5, t, &fixed(), &metadata(&[])), "float32"));
    }
    let huge_batch = [Dim::Fixed(1 << 40), Dim::Fixed(1), Dim::Fixed(SIZE), Dim::Fixed(SIZE)];
    cases.push(("batch.onnx", scaled(0.5, data_type::FLOAT, &huge_batch, &metadata(&[])), "batch"));
    // An output that no node makes, and a graph with no output at all.
    let mut model = edgediff_onnx::decode_model(&scaled(0.5, data_type::FLOAT, &fixed(), &metadata(&[]))).unwrap();
    model.graph.as_mut().unwrap().output[0].name = "nobody".into();
    cases.push(("orphan.onnx", encode_model(&model), "nobody"));
    model.graph.as_mut().unwrap().output.clear();
    cases.push(("no-output.onnx", encode_model(&model), "output"));
    // A node of an operator set we do not implement: tract reads op types by name only, so it
    // would run the standard operator of that name in its place.
    let mut model = edgediff_onnx::decode_model(&scaled(0.5, data_type::FLOAT, &fixed(), &metadata(&[]))).unwrap();
    model.graph.as_mut().unwrap().node[0].domain = "com.example".into();
    cases.push(("domain.onnx", encode_model(&model), "com.example"));
    for (name, bytes, needle) in cases {
        let m = write(d.path(), name, &bytes);
        assert_refused(&sampler(&["--model", s(&m), "--steps", "2", s(&out)]), 2, needle);
        std::fs::remove_file(&m).unwrap();
    }
    assert!(files_in(d.path()).is_empty());
}

/// A class-conditional model: prediction = sample + table[class] (broadcast), with a table of
/// `rows` rows.
fn with_class_table(rows: usize, class_names: &str) -> Vec<u8> {
    let mut g = GraphBuilder::new("hostile");
    let n = || Dim::Param("N".into());
    let x = g.add_input("sample", data_type::FLOAT, &fixed()).unwrap();
    let t = g.add_input("timestep", data_type::FLOAT, &[n()]).unwrap();
    let labels = g.add_input("class_labels", data_type::INT64, &[n()]).unwrap();
    let table = g.initializer_f32("table", &[rows, 1], &vec![0.1; rows]).unwrap();
    let rows = g.node("Gather", "rows", &[&table, &labels], vec![]);
    let zero = g.scalar_f32("zero", 0.0);
    let t0 = g.node("Mul", "t0", &[&t, &zero], vec![]);
    let shape = g.const_i64s("shape", &[-1, 1, 1, 1]);
    let t4 = g.node("Reshape", "t4", &[&t0, &shape], vec![]);
    let r4 = g.node("Reshape", "r4", &[&rows, &shape], vec![]);
    let y = g.node("Add", "y", &[&x, &r4], vec![]);
    let out = g.node("Add", "prediction", &[&y, &t4], vec![]);
    g.add_output(&out, data_type::FLOAT, &fixed()).unwrap();
    encode_model(&make_model(g.finish(), 17, &[], &metadata(&[("class_names", Some(class_names))])))
}

#[test]
fn a_class_table_must_have_a_row_per_class_and_the_null_class() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("o.png");
    let fits = write(d.path(), "fits.onnx", &with_class_table(3, "a,b"));
    let run = sampler(&["--model", s(&fits), "--class", "b", "--steps", "2", "--quiet", s(&out)]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    std::fs::remove_file(&out).unwrap();
    // More names than rows: tract's Gather would read past the table.
    let long = write(d.path(), "long.onnx", &with_class_table(3, "a,b,c,d"));
    assert_refused(&sampler(&["--model", s(&long), "--steps", "2", s(&out)]), 2, "class table");
    // Fewer names: the "null" row would be a real class, an unconditional run a class run.
    let short = write(d.path(), "short.onnx", &with_class_table(3, "a"));
    assert_refused(&sampler(&["--model", s(&short), "--steps", "2", s(&out)]), 2, "class table");
    assert!(!out.exists());
}

/// A model whose H and W are symbolic, so only the metadata's image size fixes them.
fn dynamic_size() -> Vec<u8> {
    let dims = nchw(Dim::Param("H".into()), Dim::Param("W".into()));
    scaled(0.5, data_type::FLOAT, &dims, &metadata(&[("image_size", Some("2048"))]))
}

/// A graph that builds a [100000, 100000] tensor from constants alone.
fn constant_of_shape() -> Vec<u8> {
    let mut model = edgediff_onnx::decode_model(&scaled(0.5, data_type::FLOAT, &fixed(), &metadata(&[]))).unwrap();
    let mut g = GraphBuilder::from_graph(model.graph.take().unwrap());
    let shape = g.const_i64s("big_shape", &[100_000, 100_000]);
    let big = g.node("ConstantOfShape", "big", &[&shape], vec![]);
    let sum = g.node("ReduceSum", "sum", &[&big], vec![edgediff_onnx::attr_int("keepdims", 0)]);
    let mut graph = g.finish();
    graph.output.push(graph.output[0].clone());
    graph.output[1].name = sum;
    model.graph = Some(graph);
    encode_model(&model)
}

#[test]
fn absurd_sizes_are_refused_from_the_prediction_before_allocating() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("o.png");
    let dynamic = write(d.path(), "dynamic.onnx", &dynamic_size());
    let builder = write(d.path(), "builder.onnx", &constant_of_shape());
    let small = write(d.path(), "small.onnx", &scaled(0.5, data_type::FLOAT, &fixed(), &metadata(&[])));
    // Exit 1: the model is usable, the run does not fit; exit 2: the input itself is bad.
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["--model", s(&dynamic), "--batch", "4096"], 1, "needs at least"),
        (vec!["--model", s(&dynamic), "--batch", "16", "--memory-budget", "100MiB"], 1, "memory budget"),
        (vec!["--model", s(&builder), "--output", "prediction"], 1, "ConstantOfShape"),
        (vec!["--batch", "4096", "--memory-budget", "100MiB"], 1, "memory budget"),
        (vec!["--batch", "4096", "--class", "0", "--guidance", "3", "--memory-budget", "100MiB"], 1, "memory budget"),
        (vec!["--model", s(&small), "--batch", "4096", "--upscale", "64", "--memory-budget", "1GiB"], 1, "image"),
        (vec!["--model", s(&small), "--memory-budget", "1KiB"], 1, "memory budget"),
        (vec!["--model", s(&small), "--meta", "num_train_timesteps=4294967296"], 2, "num_train_timesteps"),
        (vec!["--model", s(&small), "--meta", "image_size=1000000"], 2, "image_size"),
        (vec!["--model", s(&small), "--steps", "1000000"], 2, "steps"),
    ];
    for (args, code, needle) in cases {
        let steps: &[&str] = if args.contains(&"--steps") { &[] } else { &["--steps", "2"] };
        let all = [args.as_slice(), steps, &[s(&out)]].concat();
        assert_refused(&sampler(&all), code, needle);
    }
    assert!(!out.exists());
}

#[cfg(unix)]
#[test]
fn outputs_never_replace_links_devices_read_only_files_or_inputs() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let d = tempfile::tempdir().unwrap();
    let model = write(d.path(), "m.onnx", &scaled(0.5, data_type::FLOAT, &fixed(), &metadata(&[])));
    let target = write(d.path(), "target.png", b"keep");
    let link = d.path().join("link.png");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let read_only = write(d.path(), "ro.png", b"keep");
    std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o444)).unwrap();
    let fifo = d.path().join("fifo.png");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let noise = write(d.path(), "x.npy", b"not read");
    let out = d.path().join("o.png");
    let m = ["--model", s(&model), "--steps", "2"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![s(&link)], "symbolic link"),
        (vec![s(&read_only)], "read-only"),
        (vec![s(&fifo)], "not a regular file"),
        (vec!["/dev/null"], "not a regular file"),
        (vec![s(d.path())], "directory"),
        (vec![s(&model)], "is the --model input"),
        (vec!["--init-noise", s(&noise), "--save-raw", s(&noise), s(&out)], "is the --init-noise input"),
        (vec!["--save-raw", s(&out), s(&out)], "both name"),
        (vec!["--save-init-noise", s(&link), s(&out)], "symbolic link"),
        (vec!["--report-json", s(&read_only), s(&out)], "read-only"),
    ];
    for (args, needle) in cases {
        let all = [m.as_slice(), args.as_slice()].concat();
        let run = sampler(&all);
        assert_refused(&run, if needle.contains("input") || needle == "both name" { 2 } else { 1 }, needle);
    }
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    assert_eq!(std::fs::read(&read_only).unwrap(), b"keep");
    assert_eq!(std::fs::read(&noise).unwrap(), b"not read");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(edgediff_onnx::decode_model(&std::fs::read(&model).unwrap()).is_ok());
    assert!(!out.exists());
}

/// A float32 `.npy` of `values` with `shape`, then `extra` bytes.
fn npy(shape: &[usize], values: &[f32], extra: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}", dims.join(", "));
    let padded = format!("{header:<118}\n");
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((padded.len() as u16).to_le_bytes());
    bytes.extend(padded.as_bytes());
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    bytes.extend(extra);
    bytes
}

#[test]
fn an_init_noise_that_is_not_noise_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let model = write(d.path(), "m.onnx", &scaled(0.5, data_type::FLOAT, &fixed(), &metadata(&[])));
    let out = d.path().join("o.png");
    let n = SIZE * SIZE;
    let good = write(d.path(), "good.npy", &npy(&[1, 1, SIZE, SIZE], &vec![0.5; n], b""));
    let run = sampler(&["--model", s(&model), "--steps", "2", "--init-noise", s(&good), "--quiet", s(&out)]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    std::fs::remove_file(&out).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("huge.npy", npy(&[1, 1, SIZE, SIZE], &vec![1e30; n], b""), "expected noise within"),
        ("nan.npy", npy(&[1, 1, SIZE, SIZE], &vec![f32::NAN; n], b""), "NaN"),
        ("trailing.npy", npy(&[1, 1, SIZE, SIZE], &vec![0.5; n], &[0; 4]), "bytes of data"),
        ("short.npy", npy(&[1, 1, SIZE, SIZE], &vec![0.5; n - 1], b""), "bytes of data"),
        ("shape.npy", npy(&[1, 1, SIZE, SIZE + 1], &vec![0.5; n + SIZE], b""), "does not match"),
        ("claims.npy", npy(&[1 << 40, 1 << 20], &[], b""), "--init-noise"),
    ];
    for (name, bytes, needle) in cases {
        let x = write(d.path(), name, &bytes);
        assert_refused(&sampler(&["--model", s(&model), "--steps", "2", "--init-noise", s(&x), s(&out)]), 2, needle);
    }
    assert_refused(&sampler(&["--model", s(&model), "--init-noise", "/dev/zero", s(&out)]), 2, "not a regular file");
    assert!(!out.exists());
}

#[test]
fn a_model_without_node_names_samples_the_same_bytes() {
    let d = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/sprites-cond.onnx");
    let mut model = edgediff_onnx::decode_model(&std::fs::read(&shipped).unwrap()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    for (k, node) in graph.node.iter_mut().enumerate() {
        // ONNX allows empty names and does not require distinct ones: both at once.
        node.name = if k % 2 == 0 { String::new() } else { "same".into() };
    }
    let unnamed = write(d.path(), "unnamed.onnx", &encode_model(&model));
    let raw = |model: &Path, name: &str| {
        let x0 = d.path().join(format!("{name}.npy"));
        let out = d.path().join(format!("{name}.png"));
        let run = sampler(&["--model", s(model), "--steps", "3", "--quiet", "--save-raw", s(&x0), s(&out)]);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        std::fs::read(x0).unwrap()
    };
    assert_eq!(raw(&shipped, "named"), raw(&unnamed, "unnamed"));
}

/// A model whose weights alone are over the budget is refused from their declared size,
/// before any of them is read: the weights (160 MiB, in a sparse external-data file so that
/// this test process stays small: a child's peak RSS counts its parent's at the spawn) never
/// reach the sampler's memory.
#[test]
fn weights_over_the_budget_are_refused_before_they_are_read() {
    let d = tempfile::tempdir().unwrap();
    let count: usize = 40 << 20;
    std::fs::File::create(d.path().join("heavy.bin")).unwrap().set_len(count as u64 * 4).unwrap();
    let entry = |key: &str, value: String| edgediff_onnx::StringStringEntryProto { key: key.into(), value };
    let weights = edgediff_onnx::TensorProto {
        name: "unused_weights".into(),
        dims: vec![count as i64],
        data_type: data_type::FLOAT,
        data_location: 1,
        external_data: vec![entry("location", "heavy.bin".into()), entry("length", (count * 4).to_string())],
        ..Default::default()
    };
    let small = scaled(0.5, data_type::FLOAT, &fixed(), &metadata(&[]));
    let mut model = edgediff_onnx::decode_model(&small).unwrap();
    model.graph.as_mut().unwrap().initializer.push(weights);
    let m = write(d.path(), "heavy.onnx", &encode_model(&model));
    let out = d.path().join("o.png");
    let run = sampler(&["--model", s(&m), "--memory-budget", "64MiB", "--steps", "2", s(&out)]);
    assert_refused(&run, 1, "the model's weights");
    assert!(run.max_rss_bytes < 40 << 20, "peak RSS {} MiB", run.max_rss_bytes >> 20);
    assert!(!out.exists());
    // With room for them, the same files load and sample.
    let run = sampler(&["--model", s(&m), "--memory-budget", "1GiB", "--steps", "2", "--quiet", s(&out)]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}
