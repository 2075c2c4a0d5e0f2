//! The exported ONNX graph must compute what burn computes: run it in ONNX Runtime and in tract
//! and compare with `UNet::forward` on the Flex backend, at several timesteps and batch sizes.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::OnceLock;

use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use edgediff_core::meta::{self, ModelMeta};
use edgediff_onnx::{decode_model, metadata_map};
use edgediff_train::export::{export_onnx, export_onnx_with, ExportError, ExportOptions, GroupNormStyle, OUTPUT_NAME};
use edgediff_train::unet::{UNet, UNetConfig};
use ort::session::Session;
use tract_onnx::prelude::Tensor as TractTensor;
use tract_onnx::prelude::*;

const TOLERANCE: f32 = 1e-5;
const TIMESTEPS: [f32; 3] = [0.0, 500.0, 999.0];

/// ONNX Runtime, loaded once per process (ort allows one environment per process).
fn ort_env() -> &'static ort::environment::Environment {
    static ENV: OnceLock<ort::environment::Environment> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = match std::env::var_os("ORT_DYLIB_PATH") {
            Some(p) => PathBuf::from(p),
            None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/onnxruntime/libonnxruntime.so.1.31.1"),
        };
        // ort panics inside dlopen on a missing library: check first and say what to do.
        assert!(
            path.is_file(),
            "ONNX Runtime not found at {}: run `cargo xtask test` to fetch ONNX Runtime",
            path.display()
        );
        ort::init_from(&path)
            .unwrap_or_else(|e| panic!("cannot load ONNX Runtime from {}: {e}", path.display()))
            .build()
            .expect("ONNX Runtime environment")
    })
}

fn meta_for(config: &UNetConfig) -> ModelMeta {
    let mut props: BTreeMap<String, String> = [
        (meta::FORMAT, meta::FORMAT_VERSION.to_string()),
        (meta::MODEL_NAME, "parity-test".to_string()),
        (meta::NUM_TRAIN_TIMESTEPS, "1000".to_string()),
        (meta::BETA_SCHEDULE, "linear".to_string()),
        (meta::BETA_START, "0.0001".to_string()),
        (meta::BETA_END, "0.02".to_string()),
        (meta::PREDICTION_TYPE, "epsilon".to_string()),
        (meta::IMAGE_SIZE, config.image_size.to_string()),
        (meta::CHANNELS, config.in_channels.to_string()),
        (meta::VALUE_RANGE, "-1,1".to_string()),
        (meta::TRAINING_STEPS, "123".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(k) = config.num_classes {
        let names: Vec<String> = (0..k).map(|i| format!("class{i}")).collect();
        props.insert(meta::CLASS_NAMES.to_string(), names.join(","));
    }
    ModelMeta::from_props(&props).expect("valid test metadata")
}

/// Deterministic inputs in [-2, 2) (a fixed LCG; values only need to be non-trivial).
fn noise(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

struct Case {
    sample: Vec<f32>,
    shape: [usize; 4],
    timesteps: Vec<f32>,
    labels: Option<Vec<i64>>,
}

fn burn_forward(model: &UNet<Flex>, case: &Case) -> Vec<f32> {
    let device = Default::default();
    let x = Tensor::<Flex, 4>::from_data(TensorData::new(case.sample.clone(), case.shape), &device);
    let t = Tensor::<Flex, 1>::from_data(TensorData::new(case.timesteps.clone(), [case.shape[0]]), &device);
    let labels = case.labels.as_ref().map(|l| {
        let l: Vec<i32> = l.iter().map(|&v| v as i32).collect();
        Tensor::<Flex, 1, Int>::from_data(TensorData::new(l, [case.shape[0]]), &device)
    });
    model.forward(x, t, labels).into_data().to_vec::<f32>().expect("f32 output")
}

fn ort_forward(session: &mut Session, case: &Case) -> Vec<f32> {
    let n = case.shape[0];
    let shape: Vec<i64> = case.shape.iter().map(|&d| d as i64).collect();
    let mut inputs = ort::inputs![
        meta::INPUT_SAMPLE => ort::value::Tensor::from_array((shape, case.sample.clone())).expect("sample"),
        meta::INPUT_TIMESTEP => ort::value::Tensor::from_array((vec![n as i64], case.timesteps.clone())).expect("timestep"),
    ];
    if let Some(labels) = &case.labels {
        let labels = ort::value::Tensor::from_array((vec![n as i64], labels.clone())).expect("labels");
        inputs.push((meta::INPUT_CLASS_LABELS.into(), labels.into()));
    }
    let outputs = session.run(inputs).expect("ONNX Runtime run");
    let (out_shape, values) = outputs[OUTPUT_NAME].try_extract_tensor::<f32>().expect("f32 output");
    assert_eq!(out_shape.iter().map(|&d| d as usize).collect::<Vec<_>>(), case.shape.to_vec());
    values.to_vec()
}

fn tract_forward(bytes: &[u8], case: &Case) -> Vec<f32> {
    let model = tract_onnx::onnx()
        .model_for_read(&mut Cursor::new(bytes))
        .expect("tract reads the model")
        .into_optimized()
        .expect("tract optimises the model")
        .into_runnable()
        .expect("tract plans the model");
    let n = case.shape[0];
    let mut inputs: TVec<TValue> = TVec::new();
    inputs.push(TractTensor::from_shape(&case.shape, &case.sample).expect("sample").into());
    inputs.push(TractTensor::from_shape(&[n], &case.timesteps).expect("timestep").into());
    if let Some(labels) = &case.labels {
        inputs.push(TractTensor::from_shape(&[n], labels).expect("labels").into());
    }
    let outputs = model.run(inputs).expect("tract run");
    assert_eq!(outputs[0].shape(), &case.shape);
    outputs[0].to_plain_array_view::<f32>().expect("f32 output").iter().copied().collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Exports a seeded random network and checks both engines against burn; returns the worst
/// differences (ORT, tract).
fn check_parity(config: &UNetConfig, seed: u64, options: &ExportOptions) -> (f32, f32) {
    let device = Default::default();
    Flex::seed(&device, seed);
    let model = config.init::<Flex>(&device);
    let bytes = export_onnx_with(&model, config, &meta_for(config), options).expect("export");
    let mut session = Session::builder(ort_env())
        .expect("session builder")
        .with_intra_threads(1)
        .expect("threads")
        .commit_from_memory(&bytes)
        .expect("ONNX Runtime loads the export");
    // A conditional export takes `class_labels` (the runtime and ORT feed it by name).
    let names: Vec<&str> = session.inputs().iter().map(|o| o.name()).collect();
    let mut want = vec![meta::INPUT_SAMPLE, meta::INPUT_TIMESTEP];
    if config.num_classes.is_some() {
        want.push(meta::INPUT_CLASS_LABELS);
    }
    assert_eq!(names, want);
    let (c, s) = (config.in_channels, config.image_size);
    let mut cases = Vec::new();
    for (i, &t) in TIMESTEPS.iter().enumerate() {
        let labels = config.num_classes.map(|k| vec![(i % (k + 1)) as i64]);
        cases.push(Case { sample: noise(c * s * s, seed + i as u64), shape: [1, c, s, s], timesteps: vec![t], labels });
    }
    let labels = config.num_classes.map(|k| (0..3).map(|i| (i % (k + 1)) as i64).rev().collect());
    cases.push(Case {
        sample: noise(3 * c * s * s, seed + 99),
        shape: [3, c, s, s],
        timesteps: TIMESTEPS.to_vec(),
        labels,
    });

    let (mut worst_ort, mut worst_tract) = (0.0f32, 0.0f32);
    for case in &cases {
        let reference = burn_forward(&model, case);
        let scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(scale > 1e-3, "the network output is trivially small ({scale}); the comparison would prove nothing");
        let ort = max_abs_diff(&reference, &ort_forward(&mut session, case));
        let tract = max_abs_diff(&reference, &tract_forward(&bytes, case));
        println!(
            "{s}x{s} base {} {:?} batch {} t {:?}: max|burn| {scale:.3}, max diff ORT {ort:.2e}, tract {tract:.2e}",
            config.base_channels, options.group_norm, case.shape[0], case.timesteps
        );
        assert!(ort <= TOLERANCE, "ONNX Runtime differs from burn by {ort} at t={:?}", case.timesteps);
        assert!(tract <= TOLERANCE, "tract differs from burn by {tract} at t={:?}", case.timesteps);
        worst_ort = worst_ort.max(ort);
        worst_tract = worst_tract.max(tract);
    }
    (worst_ort, worst_tract)
}

fn small_config() -> UNetConfig {
    UNetConfig::new()
        .with_image_size(16)
        .with_base_channels(16)
        .with_channel_mults(vec![1, 2])
        .with_attention_resolutions(vec![8])
}

#[test]
fn small_unet_matches_burn_in_ort_and_tract() {
    check_parity(&small_config(), 7, &ExportOptions::default());
}

#[test]
fn unet_32_with_attention_matches_burn_in_ort_and_tract() {
    let config = UNetConfig::new()
        .with_image_size(32)
        .with_base_channels(16)
        .with_channel_mults(vec![1, 2, 2])
        .with_blocks_per_level(2)
        .with_attention_resolutions(vec![16, 8]);
    check_parity(&config, 11, &ExportOptions::default());
}

#[test]
fn class_conditional_grey_unet_matches_burn_in_ort_and_tract() {
    let config = small_config().with_in_channels(1).with_num_classes(Some(3)).with_groups(4);
    check_parity(&config, 13, &ExportOptions::default());
}

#[test]
fn native_group_norm_export_matches_burn_in_ort_and_tract() {
    let options = ExportOptions { group_norm: GroupNormStyle::Native };
    let config = small_config().with_num_classes(Some(2));
    check_parity(&config, 17, &options);
}

#[test]
fn export_is_loadable_deterministic_and_carries_metadata() {
    let device = Default::default();
    let config = small_config();
    let meta = meta_for(&config);
    Flex::seed(&device, 3);
    let model = config.init::<Flex>(&device);
    let bytes = export_onnx(&model, &config, &meta).expect("export");
    assert_eq!(bytes, export_onnx(&model, &config, &meta).expect("export"), "export must be byte-deterministic");

    let decoded = decode_model(&bytes).expect("decode");
    assert_eq!(ModelMeta::from_props(&metadata_map(&decoded)).expect("metadata parses"), meta);
    let graph = decoded.graph.expect("graph");
    let inputs: Vec<&str> = graph.input.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(inputs, [meta::INPUT_SAMPLE, meta::INPUT_TIMESTEP]);
    assert_eq!(graph.output.len(), 1);
    assert_eq!(graph.output[0].name, OUTPUT_NAME);

    let session = Session::builder(ort_env())
        .expect("session builder")
        .commit_from_memory(&bytes)
        .expect("ONNX Runtime accepts the model");
    let names: Vec<&str> = session.inputs().iter().map(|o| o.name()).collect();
    assert_eq!(names, [meta::INPUT_SAMPLE, meta::INPUT_TIMESTEP]);
    let ort_meta = session.metadata().expect("metadata");
    assert_eq!(ort_meta.custom(meta::MODEL_NAME).as_deref(), Some("parity-test"));
    assert_eq!(ort_meta.custom(meta::TRAINING_STEPS).as_deref(), Some("123"));
}

#[test]
fn training_backend_exports_the_same_bytes_as_its_inference_view() {
    use burn::backend::Autodiff;
    use burn::module::AutodiffModule;
    let device = Default::default();
    let config = small_config().with_num_classes(Some(2));
    let meta = meta_for(&config);
    let trained = config.init::<Autodiff<Flex>>(&device);
    let from_autodiff = export_onnx(&trained, &config, &meta).expect("export from Autodiff<Flex>");
    let from_flex = export_onnx(&trained.valid(), &config, &meta).expect("export from Flex");
    assert_eq!(from_autodiff, from_flex);
}

#[test]
fn export_rejects_metadata_that_contradicts_the_network() {
    let device = Default::default();
    let config = small_config();
    let model = config.init::<Flex>(&device);
    let mut meta = meta_for(&config);
    meta.channels = 1;
    assert!(matches!(export_onnx(&model, &config, &meta), Err(ExportError::Meta(_))));
    let mut meta = meta_for(&config);
    meta.class_names = vec!["a".into(), "b".into()];
    assert!(matches!(export_onnx(&model, &config, &meta), Err(ExportError::Meta(_))));
    let other = small_config().with_base_channels(32);
    assert!(matches!(export_onnx(&model, &other, &meta_for(&other)), Err(ExportError::Config(_))));
}
