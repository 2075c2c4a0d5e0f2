//! The checks a graph passes before the quantiser reads or writes it: each broken graph is
//! refused with an error naming the node or tensor, and the well-formed ones pass.

use edgediff_onnx::{attr_int, data_type, Dim, GraphBuilder, GraphProto, NodeProto, TensorProto};
use edgediff_quantize::check::{structure, values};
use edgediff_quantize::CheckError;

fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

/// x → Relu → y, the output; `nodes` replace the Relu when given.
fn graph(nodes: Vec<NodeProto>, output: &str) -> GraphProto {
    let mut g = GraphBuilder::new("g");
    g.add_input("x", data_type::FLOAT, &[Dim::Fixed(4)]).unwrap();
    g.initializer_f32("w", &[4], &[1.0; 4]).unwrap();
    let mut graph = g.finish();
    graph.node = nodes;
    let mut g = GraphBuilder::from_graph(graph);
    g.add_output(output, data_type::FLOAT, &[Dim::Fixed(4)]).unwrap();
    g.finish()
}

#[test]
fn well_wired_graphs_pass() {
    let g = graph(vec![node("Relu", &["x"], "y")], "y");
    structure(&g).unwrap();
    // An omitted optional input, a graph input that is also an initializer (its default).
    let mut g = graph(vec![node("Clip", &["x", "", "w"], "y")], "y");
    g.input.push(g.input[0].clone());
    g.input[1].name = "w".into();
    structure(&g).unwrap();
}

#[test]
fn broken_wiring_is_named() {
    let mut no_output = graph(vec![node("Relu", &["x"], "y")], "y");
    no_output.output.clear();
    assert!(matches!(structure(&no_output), Err(CheckError::NoOutput)));
    let twice = graph(vec![node("Relu", &["x"], "y"), node("Neg", &["x"], "y")], "y");
    assert!(matches!(structure(&twice), Err(CheckError::MadeTwice(t)) if t == "y"));
    let over_weight = graph(vec![node("Relu", &["x"], "w")], "w");
    assert!(matches!(structure(&over_weight), Err(CheckError::MadeTwice(t)) if t == "w"));
    // Read before it is made (nodes must be in topological order), and never made.
    let late = graph(vec![node("Neg", &["y"], "z"), node("Relu", &["x"], "y")], "z");
    let e = structure(&late).unwrap_err().to_string();
    assert!(e.contains("node #0 (Neg writing `z`) reads `y`"), "{e}");
    let mut named = node("Neg", &["nowhere"], "z");
    named.name = "neg".into();
    let e = structure(&graph(vec![named], "z")).unwrap_err().to_string();
    assert!(e.contains("node `neg` reads `nowhere`"), "{e}");
    let mut unmade = graph(vec![node("Relu", &["x"], "y")], "y");
    unmade.output[0].name = "gone".into();
    assert!(matches!(structure(&unmade), Err(CheckError::OutputUnmade(t)) if t == "gone"));
}

/// x → QuantizeLinear(scale, zero point) → DequantizeLinear → y.
fn qdq(scale: &[f32], zero_point: TensorProto) -> GraphProto {
    let mut g = GraphBuilder::new("q");
    g.add_input("x", data_type::FLOAT, &[Dim::Fixed(4)]).unwrap();
    let s = g.initializer_f32("s", &[scale.len()], scale).unwrap();
    let z = g.add_initializer(TensorProto { name: "z".into(), ..zero_point });
    let q = g.node("QuantizeLinear", "q", &["x", &s, &z], vec![]);
    let y = g.node("DequantizeLinear", "y", &[&q, &s, &z], vec![]);
    g.add_output(&y, data_type::FLOAT, &[Dim::Fixed(4)]).unwrap();
    g.finish()
}

fn u8_zero(values: &[u8]) -> TensorProto {
    let dims = vec![values.len() as i64];
    TensorProto { dims, data_type: data_type::UINT8, raw_data: values.to_vec(), ..Default::default() }
}

#[test]
fn scales_must_be_finite_and_positive() {
    values(&qdq(&[0.5, 0.25], u8_zero(&[128, 3]))).unwrap();
    for bad in [0.0, -0.5, f32::INFINITY, f32::NAN] {
        let e = values(&qdq(&[0.5, bad], u8_zero(&[128, 3]))).unwrap_err();
        match e {
            CheckError::NonFinite { name, index: 1, .. } if !bad.is_finite() => assert_eq!(name, "s"),
            CheckError::BadScale { node, name, index: 1, .. } => {
                assert_eq!((node.as_str(), name.as_str()), ("node `q/QuantizeLinear`", "s"))
            }
            other => panic!("{bad}: {other}"),
        }
    }
}

#[test]
fn zero_points_must_fit_their_type_and_scale() {
    let float = TensorProto { dims: vec![2], data_type: data_type::FLOAT, raw_data: vec![0; 8], ..Default::default() };
    let e = values(&qdq(&[0.5, 0.25], float)).unwrap_err().to_string();
    assert!(e.contains("zero point `z` has data type 1"), "{e}");
    let e = values(&qdq(&[0.5, 0.25], u8_zero(&[1]))).unwrap_err().to_string();
    assert!(e.contains("has 1 values for 2 scales"), "{e}");
    let wide =
        TensorProto { dims: vec![2], data_type: data_type::UINT8, int32_data: vec![3, 300], ..Default::default() };
    let e = values(&qdq(&[0.5, 0.25], wide)).unwrap_err().to_string();
    assert!(e.contains("holds 300, outside 0..=255"), "{e}");
}

#[test]
fn a_computed_scale_is_refused() {
    let mut g = GraphBuilder::new("c");
    g.add_input("x", data_type::FLOAT, &[Dim::Fixed(4)]).unwrap();
    let s = g.scalar_f32("s", 0.5);
    let computed = g.node("Abs", "computed", &[&s], vec![]);
    let z = g.initializer_u8("z", &[], &[0]).unwrap();
    let q = g.node("QuantizeLinear", "q", &["x", &computed, &z], vec![]);
    g.add_output(&q, data_type::UINT8, &[Dim::Fixed(4)]).unwrap();
    let e = values(&g.finish()).unwrap_err().to_string();
    assert!(e.contains("node `q/QuantizeLinear`: `computed` must be an initializer"), "{e}");
}

/// ConvInteger → Cast → Mul(scale): the multiplier is a scale; a Mul elsewhere is not.
#[test]
fn the_scale_after_an_integer_sum_is_checked() {
    let integer = |scale: f32| {
        let mut g = GraphBuilder::new("i");
        g.add_input("x", data_type::UINT8, &[Dim::Fixed(1), Dim::Fixed(1), Dim::Fixed(2), Dim::Fixed(2)]).unwrap();
        let w = g.initializer_i8("w", &[1, 1, 1, 1], &[3]).unwrap();
        let acc = g.node("ConvInteger", "acc", &["x", &w], vec![]);
        let f = g.node("Cast", "f", &[&acc], vec![attr_int("to", data_type::FLOAT as i64)]);
        let s = g.scalar_f32("out_scale", scale);
        let y = g.node("Mul", "y", &[&f, &s], vec![]);
        let zero = g.scalar_f32("zero", 0.0);
        let z = g.node("Mul", "z", &[&y, &zero], vec![]);
        g.add_output(&z, data_type::FLOAT, &[]).unwrap();
        g.finish()
    };
    values(&integer(0.01)).unwrap();
    let e = values(&integer(0.0)).unwrap_err().to_string();
    assert!(e.contains("node `y/Mul`: scale `out_scale` holds 0"), "{e}");
}
