//! Small ONNX models, a few KB each, that reach the loader's every path: plain graphs, a class
//! table, convolutions with GroupNorm in our exporter's form and as the opset-21 op, a MatMul,
//! an int64 timestep, weights stored outside the file, and int8 forms from the quantiser.

use std::collections::BTreeMap;

use edgediff_onnx::{
    attr_float, attr_int, attr_ints, data_type, encode_model, make_model, Dim, GraphBuilder, TensorProto,
};
use edgediff_quantize::{
    quantize, ActivationType, CalibrationOptions, QuantForm, QuantizeOptions, RangeRule, TargetPolicy,
};

use crate::targets::model::EXTERNAL_FILE;

/// Height = width of every seed model.
const SIZE: usize = 8;

/// Our metadata keys for an 8x8 RGB ε-model, with `extra` over them.
fn metadata(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let base = crate::targets::scheduler_config::BASE_PROPS;
    base.iter().chain(extra).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn batch() -> Dim {
    Dim::Param("N".into())
}

fn image() -> [Dim; 4] {
    [batch(), Dim::Fixed(3), Dim::Fixed(SIZE), Dim::Fixed(SIZE)]
}

/// Deterministic small weights in [-0.25, 0.25).
fn weights(n: usize, salt: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919 + salt * 104_729) % 97) as f32 / 194.0 - 0.25).collect()
}

/// prediction = sample / (t + 1), plus a class embedding (three classes and the null class)
/// when `conditional`.
pub fn divide_model(conditional: bool) -> Vec<u8> {
    let mut g = GraphBuilder::new("divide");
    let x = g.add_input("sample", data_type::FLOAT, &image()).expect("fresh name");
    let t = g.add_input("timestep", data_type::FLOAT, &[batch()]).expect("fresh name");
    let shape = g.const_i64s("shape", &[-1, 1, 1, 1]);
    let one = g.scalar_f32("one", 1.0);
    let t1 = g.node("Add", "t1", &[&t, &one], vec![]);
    let t4 = g.node("Reshape", "t4", &[&t1, &shape], vec![]);
    let mut y = g.node("Div", "y", &[&x, &t4], vec![]);
    let mut extra = vec![];
    if conditional {
        let labels = g.add_input("class_labels", data_type::INT64, &[batch()]).expect("fresh name");
        let table = g.initializer_f32("class_table", &[4, 1], &[0.1, 0.2, 0.3, 0.0]).expect("4 values");
        let e = g.node("Gather", "class_emb", &[&table, &labels], vec![attr_int("axis", 0)]);
        let e4 = g.node("Reshape", "class_emb4", &[&e, &shape], vec![]);
        y = g.node("Add", "y_cond", &[&y, &e4], vec![]);
        extra = vec![("edgediff.class_names", "a,b,c"), ("edgediff.guidance_scale", "2")];
    }
    let out = g.node("Identity", "prediction", &[&y], vec![]);
    g.add_output(&out, data_type::FLOAT, &image()).expect("made above");
    encode_model(&make_model(g.finish(), 17, &[], &metadata(&extra)))
}

/// prediction = sample / Cast<f32>(t + 1) with an int64 `timesteps` input, as torch exports it.
pub fn int64_timestep_model() -> Vec<u8> {
    let mut g = GraphBuilder::new("int64-timestep");
    let x = g.add_input("sample", data_type::FLOAT, &image()).expect("fresh name");
    let t = g.add_input("timesteps", data_type::INT64, &[batch()]).expect("fresh name");
    let tf = g.node("Cast", "tf", &[&t], vec![attr_int("to", data_type::FLOAT as i64)]);
    let one = g.scalar_f32("one", 1.0);
    let t1 = g.node("Add", "t1", &[&tf, &one], vec![]);
    let shape = g.const_i64s("shape", &[-1, 1, 1, 1]);
    let t4 = g.node("Reshape", "t4", &[&t1, &shape], vec![]);
    let y = g.node("Div", "y", &[&x, &t4], vec![]);
    g.add_output(&y, data_type::FLOAT, &image()).expect("made above");
    encode_model(&make_model(g.finish(), 17, &[], &metadata(&[])))
}

/// How [`conv_model`] normalises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    /// The eleven-node chain our exporter writes (fused into one op at load).
    Exporter,
    /// ONNX's `GroupNormalization` (opset 21).
    Native,
    None,
}

/// Conv 3→4 (3x3), GroupNorm (2 groups), SiLU, + t/1000, Conv 4→3 (1x1), MatMul over the rows.
pub fn conv_model(norm: Norm) -> Vec<u8> {
    let mut g = GraphBuilder::new("conv");
    let x = g.add_input("sample", data_type::FLOAT, &image()).expect("fresh name");
    let t = g.add_input("timestep", data_type::FLOAT, &[batch()]).expect("fresh name");
    let mut h = conv(&mut g, &x, "conv_in", [4, 3, 3, 3]);
    h = match norm {
        Norm::Exporter => exporter_group_norm(&mut g, &h),
        Norm::Native => {
            let gamma = g.initializer_f32("gn.gamma", &[4], &[1.0, 0.9, 1.1, 1.0]).expect("4 values");
            let beta = g.initializer_f32("gn.beta", &[4], &[0.0, 0.1, -0.1, 0.0]).expect("4 values");
            let attrs = vec![attr_float("epsilon", 1e-5), attr_int("num_groups", 2)];
            g.node("GroupNormalization", "gn", &[&h, &gamma, &beta], attrs)
        }
        Norm::None => h,
    };
    let s = g.node("Sigmoid", "silu.sigmoid", &[&h], vec![]);
    h = g.node("Mul", "silu", &[&h, &s], vec![]);
    let scale = g.scalar_f32("t_scale", 1e-3);
    let ts = g.node("Mul", "t_scaled", &[&t, &scale], vec![]);
    let shape = g.const_i64s("t_shape", &[-1, 1, 1, 1]);
    let t4 = g.node("Reshape", "t4", &[&ts, &shape], vec![]);
    h = g.node("Add", "h_t", &[&h, &t4], vec![]);
    let y = conv(&mut g, &h, "conv_out", [3, 4, 1, 1]);
    let m = g.initializer_f32("rows.weight", &[SIZE, SIZE], &weights(SIZE * SIZE, 3)).expect("64 values");
    let y = g.node("MatMul", "prediction", &[&y, &m], vec![]);
    g.add_output(&y, data_type::FLOAT, &image()).expect("made above");
    let opset = if norm == Norm::Native { 21 } else { 17 };
    encode_model(&make_model(g.finish(), opset, &[], &metadata(&[])))
}

/// A biased convolution with `dims` = [out, in, k, k] weights, padded to keep the size.
fn conv(g: &mut GraphBuilder, x: &str, name: &str, dims: [usize; 4]) -> String {
    let n: usize = dims.iter().product();
    let w = g.initializer_f32(&format!("{name}.weight"), &dims, &weights(n, dims[0])).expect("sized");
    let b = g.initializer_f32(&format!("{name}.bias"), &[dims[0]], &weights(dims[0], 7)).expect("sized");
    let (k, pad) = (dims[2] as i64, dims[2] as i64 / 2);
    let attrs = vec![
        attr_ints("kernel_shape", &[k, k]),
        attr_ints("strides", &[1, 1]),
        attr_ints("dilations", &[1, 1]),
        attr_ints("pads", &[pad, pad, pad, pad]),
        attr_int("group", 1),
    ];
    g.node("Conv", name, &[x, &w, &b], attrs)
}

/// GroupNorm over 4 channels in 2 groups, node for node as `crates/train/src/export` writes it.
fn exporter_group_norm(g: &mut GraphBuilder, x: &str) -> String {
    let eps = g.scalar_f32("gn.eps", 1e-5);
    let grouped_shape = g.const_i64s("gn.grouped_shape", &[0, 2, -1]);
    let image_shape = g.const_i64s("gn.shape", &[0, 4, SIZE as i64, SIZE as i64]);
    let reduce = || vec![attr_ints("axes", &[2]), attr_int("keepdims", 1)];
    let grouped = g.node("Reshape", "gn.grouped", &[x, &grouped_shape], vec![]);
    let mean = g.node("ReduceMean", "gn.mean", &[&grouped], reduce());
    let centred = g.node("Sub", "gn.centred", &[&grouped, &mean], vec![]);
    let squared = g.node("Mul", "gn.squared", &[&centred, &centred], vec![]);
    let var = g.node("ReduceMean", "gn.var", &[&squared], reduce());
    let var_eps = g.node("Add", "gn.var_eps", &[&var, &eps], vec![]);
    let std = g.node("Sqrt", "gn.std", &[&var_eps], vec![]);
    let normed = g.node("Div", "gn.normed", &[&centred, &std], vec![]);
    let normed = g.node("Reshape", "gn.ungrouped", &[&normed, &image_shape], vec![]);
    let gamma = g.initializer_f32("gn.gamma", &[4, 1, 1], &[1.0, 0.9, 1.1, 1.0]).expect("4 values");
    let beta = g.initializer_f32("gn.beta", &[4, 1, 1], &[0.0, 0.1, -0.1, 0.0]).expect("4 values");
    let scaled = g.node("Mul", "gn.scaled", &[&normed, &gamma], vec![]);
    g.node("Add", "gn", &[&scaled, &beta], vec![])
}

/// [`conv_model`] without normalisation, its first weights read from [`EXTERNAL_FILE`] (the
/// first 108 of the values the model target writes there).
pub fn external_model() -> Vec<u8> {
    let mut model = edgediff_onnx::decode_model(&conv_model(Norm::None)).expect("decodes what was encoded");
    let graph = model.graph.as_mut().expect("has a graph");
    let weight = graph.initializer.iter_mut().find(|t| t.name == "conv_in.weight").expect("conv_in.weight");
    let bytes = weight.raw_data.len();
    *weight = TensorProto {
        raw_data: Vec::new(),
        data_location: 1,
        external_data: [("location", EXTERNAL_FILE.to_string()), ("offset", "0".into()), ("length", bytes.to_string())]
            .into_iter()
            .map(|(key, value)| edgediff_onnx::StringStringEntryProto { key: key.into(), value })
            .collect(),
        ..weight.clone()
    };
    encode_model(&model)
}

/// [`conv_model`] quantised by the project's quantiser in `form`, every layer int8.
pub fn int8_model(form: QuantForm) -> Vec<u8> {
    let opts = QuantizeOptions {
        form,
        activations: ActivationType::U8Asymmetric,
        calibration: CalibrationOptions { rule: RangeRule::MinMax, images: 1, steps: 2, seed: 0 },
        policy: TargetPolicy { quantize_io: true, quantize_concat_inputs: true, ..TargetPolicy::default() },
        bias_correction_sweeps: 0,
        smoothing: None,
        float_order: Default::default(),
    };
    quantize(&conv_model(Norm::Exporter), &opts, |_, _| {}).expect("the seed model quantises").bytes
}
