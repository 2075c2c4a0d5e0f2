//! Structure-aware mutations of an ONNX model: decode it, change one field the loader reads
//! (metadata values, input/output types and dims, nodes, attributes, initializers, names,
//! opsets), encode it again. A byte flip would mostly break the protobuf framing instead.

mod graph;

use edgediff_core::meta;
use edgediff_onnx::{decode_model, encode_model, ModelProto, OperatorSetIdProto, StringStringEntryProto};
use rand::seq::IndexedRandom;
use rand::Rng as _;

use super::edge_number;
use crate::Rng;

/// Every metadata key the runtime reads.
pub(crate) const META_KEYS: &[&str] = &[
    meta::FORMAT,
    meta::MODEL_NAME,
    meta::NUM_TRAIN_TIMESTEPS,
    meta::BETA_SCHEDULE,
    meta::BETA_START,
    meta::BETA_END,
    meta::PREDICTION_TYPE,
    meta::IMAGE_SIZE,
    meta::CHANNELS,
    meta::VALUE_RANGE,
    meta::CLIP_SAMPLE,
    meta::PRECISION,
    meta::TRAINING_STEPS,
    meta::CLASS_NAMES,
    meta::QUANTIZATION,
    meta::GUIDANCE_SCALE,
    meta::TRAINED_BETAS,
    meta::RESCALE_BETAS_ZERO_SNR,
    meta::DPM_CLIP_SAMPLE,
    meta::NULL_CLASS,
    meta::TIMESTEP_SPACING,
    meta::STEPS_OFFSET,
    meta::SET_ALPHA_TO_ONE,
];

/// Values that are valid for some key, or nearly valid for one.
const META_WORDS: &[&str] = &[
    "linear",
    "scaled_linear",
    "squaredcos_cap_v2",
    "epsilon",
    "v_prediction",
    "sample",
    "fp32",
    "int8",
    "none",
    "leading",
    "trailing",
    "linspace",
    "true",
    "false",
    "-1,1",
    "0,255",
    "1,-1",
    "NaN,1",
    "0,0",
    "a,b,c",
    "a,,a",
    ",",
    "1,2,3",
];

pub fn mutate(rng: &mut Rng, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut model = decode_model(bytes).ok()?;
    match rng.random_range(0..8) {
        0 | 1 => metadata(rng, &mut model),
        2 => opsets(rng, &mut model),
        _ => graph::mutate(rng, model.graph.get_or_insert_with(Default::default)),
    }
    Some(encode_model(&model))
}

/// A metadata value: valid-looking or at an edge; or a key added, removed or repeated.
pub fn meta_value(rng: &mut Rng) -> String {
    match rng.random_range(0..4) {
        0 => META_WORDS.choose(rng).copied().unwrap_or("").to_string(),
        1 => {
            let n = [1usize, 2, 9, 10, 11, 1000, 1001].choose(rng).copied().unwrap_or(1);
            vec![edge_number(rng); n].join(",")
        }
        _ => edge_number(rng).to_string(),
    }
}

fn metadata(rng: &mut Rng, model: &mut ModelProto) {
    let props = &mut model.metadata_props;
    let key = META_KEYS.choose(rng).copied().unwrap_or(meta::FORMAT).to_string();
    match rng.random_range(0..5) {
        0 if !props.is_empty() => {
            let i = rng.random_range(0..props.len());
            props.remove(i);
        }
        1 if !props.is_empty() => {
            let i = rng.random_range(0..props.len());
            let again = StringStringEntryProto { key: props[i].key.clone(), value: meta_value(rng) };
            props.push(again);
        }
        2 => props.push(StringStringEntryProto { key, value: meta_value(rng) }),
        _ => match props.iter_mut().find(|p| p.key == key) {
            Some(p) => p.value = meta_value(rng),
            None => props.push(StringStringEntryProto { key, value: meta_value(rng) }),
        },
    }
}

fn opsets(rng: &mut Rng, model: &mut ModelProto) {
    let version = [0i64, 1, 7, 11, 13, 17, 18, 21, 22, 9999, -1].choose(rng).copied().unwrap_or(17);
    match rng.random_range(0..4) {
        0 => model.ir_version = [0i64, 3, 7, 8, 10, 11, 99].choose(rng).copied().unwrap_or(8),
        1 => model.opset_import.clear(),
        2 => {
            let domain = ["com.microsoft", "ai.onnx.ml", "ai.onnx", "x"].choose(rng).copied().unwrap_or("");
            model.opset_import.push(OperatorSetIdProto { domain: domain.into(), version });
        }
        _ => match model.opset_import.first_mut() {
            Some(o) => o.version = version,
            None => model.opset_import.push(OperatorSetIdProto { domain: String::new(), version }),
        },
    }
}
