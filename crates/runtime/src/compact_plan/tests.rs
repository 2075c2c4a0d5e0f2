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
