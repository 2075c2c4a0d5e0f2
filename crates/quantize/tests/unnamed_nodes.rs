//! ONNX lets nodes have no name. The quantiser knows a node by the tensor it writes, so the
//! shipped conditional model with every node name removed quantises to the same graph (node
//! names aside) as the model with them, and the sampler draws the same bytes from both.

use std::path::PathBuf;

use edgediff_core::SamplerSettings;
use edgediff_onnx::{decode_model, encode_model, GraphProto, ModelProto};
use edgediff_quantize::{quantize, ActivationType, CalibrationOptions, QuantForm, QuantizeOptions, RangeRule};
use edgediff_runtime::{sample, Denoiser, LoadOptions, SampleRequest};

fn conditional_fp32() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/sprites-cond.onnx");
    std::fs::read(&path).expect("models/sprites-cond.onnx")
}

fn strip_node_names(mut model: ModelProto) -> ModelProto {
    model.graph.as_mut().unwrap().node.iter_mut().for_each(|n| n.name.clear());
    model
}

fn graph_without_node_names(bytes: &[u8]) -> GraphProto {
    strip_node_names(decode_model(bytes).unwrap()).graph.unwrap()
}

/// Three DDIM steps of class 1 from seed 7 on the int8 model in `bytes`: the final sample.
fn three_steps(bytes: &[u8]) -> Vec<f32> {
    let mut net = Denoiser::load(bytes, &LoadOptions::default()).unwrap().into_network(1, 1).unwrap();
    let req = SampleRequest {
        seed: 7,
        settings: SamplerSettings::ddim(3),
        init_noise: None,
        class_labels: Some(vec![1]),
        guidance: None,
        memory_budget: None,
    };
    sample(&mut net, &req, |_| ()).unwrap().x0
}

#[test]
fn unnamed_nodes_quantise_and_sample_as_named_ones() {
    let named = conditional_fp32();
    let unnamed = encode_model(&strip_node_names(decode_model(&named).unwrap()));
    for (form, smoothing) in [(QuantForm::Integer, Some(0.5)), (QuantForm::QOperator, None)] {
        let opts = QuantizeOptions {
            form,
            activations: ActivationType::U8Asymmetric,
            calibration: CalibrationOptions { rule: RangeRule::MinMax, images: 1, steps: 2, seed: 0 },
            policy: Default::default(),
            bias_correction_sweeps: 0,
            smoothing,
            float_order: Default::default(),
        };
        let a = quantize(&named, &opts, |_, _| ()).expect("the named model quantises");
        let b = quantize(&unnamed, &opts, |_, _| ()).expect("the unnamed model quantises");
        assert_eq!(a.targets.len(), b.targets.len(), "{form}");
        let (ga, gb) = (graph_without_node_names(&a.bytes), graph_without_node_names(&b.bytes));
        assert_eq!(ga.initializer, gb.initializer, "{form}: the int8 weights differ");
        assert_eq!(ga, gb, "{form}: the graphs differ in more than node names");
        assert_eq!(three_steps(&a.bytes), three_steps(&b.bytes), "{form}: the samples differ");
    }
}
