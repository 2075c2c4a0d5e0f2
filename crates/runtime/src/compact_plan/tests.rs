//! The compact plan against tract's own plan: same bits, fewer bytes.

use super::*;
use crate::network::{fix_input_facts, input_values};
use edgediff_core::meta::ModelMeta;

fn bits(v: &TValue) -> Vec<u32> {
    v.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().iter().map(|x| x.to_bits()).collect()
}

/// The shipped int8 default, planned as the sampler plans it (batch 2), on tract's own
/// plan and on the compact one, at 1 and 2 threads: bit-identical outputs, every
/// `IntoShape` replaced, and steps far smaller than tract's nodes.
#[test]
fn compact_plan_gives_tracts_bits() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/sprites-cond-int8.onnx");
    let mut proto = tract_onnx::onnx().proto_model_for_path(path).unwrap();
    let props = proto.metadata_props.iter().map(|e| (e.key.clone(), e.value.clone())).collect();
    let meta = ModelMeta::from_props(&props).unwrap();
    let model = crate::denoiser::prepare(&mut proto, crate::Ops::Edgediff, Default::default())
        .0
        .model_for_proto_model(&proto)
        .unwrap();
    let (model, slots) = fix_input_facts(model, &meta, 2).unwrap();
    let optimized = model.into_optimized().unwrap();
    let reshapes = optimized.nodes.iter().filter(|n| n.op_is::<IntoShape>()).count();
    assert!(reshapes > 0, "the attention blocks reshape");
    let tract_plan = optimized.clone().into_runnable().unwrap();
    let mut compact = CompactPlan::new(optimized.clone(), 1).unwrap();
    let mut threaded = CompactPlan::new(optimized, 2).unwrap();
    let evaluated = tract_plan.order_without_consts().len() - slots.len();
    assert_eq!(compact.steps().len(), evaluated, "every node tract evaluates but the sources");
    assert_eq!(compact.steps().iter().filter(|s| s.op().downcast_ref::<Reshape>().is_some()).count(), reshapes);
    assert!(compact.steps().iter().all(|s| s.op().downcast_ref::<IntoShape>().is_none()));
    assert!(std::mem::size_of::<Step>() * 6 < 536, "a step is {} B", std::mem::size_of::<Step>());
    let mut noise = vec![0f32; 2 * meta.image_len()];
    edgediff_core::GaussianStream::new(3).fill(&mut noise);
    for (t, labels) in [([999.0, 321.0], [7, 2]), ([10.0, 500.0], [0, 1])] {
        let inputs = input_values(&slots, &meta, &noise, &t, &labels).unwrap();
        let want = bits(&tract_plan.run(inputs.clone()).unwrap()[0]);
        assert_eq!(bits(&compact.run(inputs.clone()).unwrap()[0]), want);
        assert_eq!(bits(&threaded.run(inputs).unwrap()[0]), want);
    }
}

/// A wrong input is an error naming it, and the plan still runs afterwards.
#[test]
fn wrong_input_is_an_error() {
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact([3usize])).unwrap();
    let y = model.wire_node("double", tract_onnx::tract_core::ops::math::add(), &[x, x]).unwrap();
    model.select_output_outlets(&y).unwrap();
    let mut plan = CompactPlan::new(model.into_optimized().unwrap(), 1).unwrap();
    let err = plan.run(tvec!(tensor1(&[1f32, 2.0]).into_tvalue())).unwrap_err();
    assert!(format!("{err}").contains("input 0 is F32 [2], expected F32 [3]"), "{err}");
    let out = plan.run(tvec!(tensor1(&[1f32, 2.0, 4.0]).into_tvalue())).unwrap();
    assert_eq!(out[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap(), &[2.0, 4.0, 8.0]);
}

/// The broadcast additions and products and the concatenations tract optimises into its own
/// ops run split over two threads ([`SplitBinary`], [`SplitConcat`]) with tract's bits: a
/// same-shape sum, one over leading axes, sums and products by one value per channel, a
/// concatenation of channels, and an addition whose first operand other nodes read as well.
#[test]
fn split_adds_and_concatenations_give_tracts_bits() {
    use tract_onnx::tract_core::ops::{array::TypedConcat, math};
    let mut model = TypedModel::default();
    let fact = |shape: &[usize]| f32::fact(shape);
    let a = model.add_source("a", fact(&[2, 40, 32, 32])).unwrap();
    let b = model.add_source("b", fact(&[2, 40, 32, 32])).unwrap();
    let lead = model.add_source("lead", fact(&[1, 40, 32, 32])).unwrap();
    let scale = model.add_source("scale", fact(&[2, 40, 1, 1])).unwrap();
    let more = model.add_source("more", fact(&[2, 24, 32, 32])).unwrap();
    let sum = model.wire_node("sum", math::add(), &[a, b]).unwrap()[0];
    let led = model.wire_node("led", math::add(), &[sum, lead]).unwrap()[0];
    let shifted = model.wire_node("shifted", math::add(), &[led, scale]).unwrap()[0];
    let scaled = model.wire_node("scaled", math::mul(), &[shifted, scale]).unwrap()[0];
    // `a` again, and `sum` read by two nodes: shared first operands.
    let again = model.wire_node("again", math::add(), &[a, scaled]).unwrap()[0];
    let twice = model.wire_node("twice", math::add(), &[sum, again]).unwrap()[0];
    let joined = model.wire_node("joined", TypedConcat { axis: 1 }, &[twice, more]).unwrap()[0];
    // Each step an output too, so that tract does not fuse the chain into one op.
    model.select_output_outlets(&[joined, led, shifted, scaled]).unwrap();
    let optimized = model.into_optimized().unwrap();
    let tract_plan = optimized.clone().into_runnable().unwrap();
    let mut threaded = CompactPlan::new(optimized, 2).unwrap();
    let count = |f: &dyn Fn(&dyn TypedOp) -> bool| threaded.steps().iter().filter(|s| f(s.op())).count();
    assert_eq!(count(&|op| op.downcast_ref::<SplitBinary>().is_some()), 6, "the sums and products are split");
    assert_eq!(count(&|op| op.downcast_ref::<SplitConcat>().is_some()), 1, "the concatenation is split");
    let values = crate::ops::gaussian_tensor;
    let inputs = tvec![
        values(&[2, 40, 32, 32], 1),
        values(&[2, 40, 32, 32], 2),
        values(&[1, 40, 32, 32], 3),
        values(&[2, 40, 1, 1], 4),
        values(&[2, 24, 32, 32], 5)
    ];
    let want: Vec<Vec<u32>> = tract_plan.run(inputs.clone()).unwrap().iter().map(bits).collect();
    let got: Vec<Vec<u32>> = threaded.run(inputs).unwrap().iter().map(bits).collect();
    assert_eq!(got, want);
}

/// tract's axis moves of f32 tensors run as [`Transpose`] with tract's bits: a later and an
/// earlier move, one with elements of several values, and one of over 64K values split over
/// two threads.
#[test]
fn axis_moves_give_tracts_bits() {
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact([2, 24, 9, 7])).unwrap();
    let big = model.add_source("big", f32::fact([300, 260])).unwrap();
    let later = model.wire_node("later", AxisOp::Move(1, 3), &[x]).unwrap()[0];
    let earlier = model.wire_node("earlier", AxisOp::Move(3, 0), &[x]).unwrap()[0];
    let runs = model.wire_node("runs", AxisOp::Move(0, 1), &[x]).unwrap()[0];
    let tokens = model.wire_node("tokens", AxisOp::Move(0, 1), &[big]).unwrap()[0];
    model.select_output_outlets(&[later, earlier, runs, tokens]).unwrap();
    let optimized = model.into_optimized().unwrap();
    let tract_plan = optimized.clone().into_runnable().unwrap();
    let mut threaded = CompactPlan::new(optimized, 2).unwrap();
    let moves = threaded.steps().iter().filter(|s| s.op().downcast_ref::<Transpose>().is_some()).count();
    assert_eq!(moves, 4, "every move is a transpose");
    let values = crate::ops::gaussian_tensor;
    let inputs = tvec![values(&[2, 24, 9, 7], 1), values(&[300, 260], 2)];
    let want: Vec<Vec<u32>> = tract_plan.run(inputs.clone()).unwrap().iter().map(bits).collect();
    let got: Vec<Vec<u32>> = threaded.run(inputs).unwrap().iter().map(bits).collect();
    assert_eq!(got, want);
}
