//! edgediff's own ops inside whole networks: int8 convolutions and matrix products
//! (`crates/qconv`, wired into tract by `edgediff_runtime::int8_conv`) and GroupNorm
//! (`edgediff_runtime::group_norm`). The shipped models must run on them and agree with ONNX
//! Runtime, our independent reference executor, and give bit for bit what tract alone gives
//! (same arithmetic, fused).

#[path = "../benches/support/mod.rs"]
mod support;

use std::collections::BTreeMap;

use edgediff_core::GaussianStream;
use edgediff_runtime::{Denoiser, Ops};
use support::engines::{self, EngineKind};

const INT8_DEFAULT: &str = "models/sprites-cond-int8.onnx";

/// One evaluation and which of our ops ran.
struct Run {
    out: Vec<f32>,
    /// int8 convolutions and int8 matrix products on our kernels.
    int8: (usize, usize),
    group_norms: usize,
    channel_affines: usize,
    float_convs: usize,
}

fn eval_runtime(bytes: &[u8], ops: Ops, sample: &[f32], t: f32) -> Run {
    let model = Denoiser::from_onnx_bytes_with(bytes, &BTreeMap::new(), ops).unwrap();
    let mut net = model.into_network(1, 1).unwrap();
    Run {
        out: net.eval(sample, &[t], None).unwrap(),
        int8: (net.int8_convs, net.int8_matmuls),
        group_norms: net.group_norms,
        channel_affines: net.channel_affines,
        float_convs: net.float_convs,
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn rms(v: &[f32]) -> f32 {
    (v.iter().map(|v| v * v).sum::<f32>() / v.len() as f32).sqrt()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn int8_default_runs_on_our_kernels_and_agrees_with_onnx_runtime() {
    let path = support::root().join(INT8_DEFAULT);
    let bytes = std::fs::read(&path).unwrap();
    let mut ort = engines::load(EngineKind::Ort, &path, 1)
        .unwrap_or_else(|e| panic!("ONNX Runtime is needed for this test (`cargo xtask setup`): {e:#}"));
    let [c, h, w] = ort.chw();
    for (seed, t) in [(0u64, 999.0f32), (1, 500.0), (2, 20.0)] {
        let mut sample = vec![0f32; c * h * w];
        GaussianStream::new(seed).fill(&mut sample);
        let reference = ort.eval(&sample, &[t]).unwrap();
        let ours = eval_runtime(&bytes, Ops::Edgediff, &sample, t);
        let tract_fp32 = eval_runtime(&bytes, Ops::TractMatMul, &sample, t);
        let kernels_only = eval_runtime(&bytes, Ops::TractGroupNorm, &sample, t);
        let tracts = eval_runtime(&bytes, Ops::TractOnly, &sample, t);
        assert_eq!((ours.group_norms, ours.channel_affines), (27, 0), "GroupNorms on our op");
        assert_eq!((kernels_only.group_norms, kernels_only.channel_affines, tracts.channel_affines), (0, 27, 0));
        // Every ConvInteger of the file (27: the first, last and concat-input convs stay fp32)
        // and every MatMulInteger (16: query, key, value and output of 4 attention blocks),
        // where this CPU has a SIMD kernel (else the runtime keeps tract's own, see model.rs).
        let want = if Denoiser::int8_kernel().unwrap() == "portable" { (0, 0) } else { (27, 16) };
        assert_eq!((ours.int8, kernels_only.int8, tracts.int8), (want, want, (0, 0)), "int8 ops on our kernels");
        let rms = rms(&reference);
        let (d_ours, d_tract) = (max_abs_diff(&ours.out, &reference), max_abs_diff(&tracts.out, &reference));
        eprintln!(
            "seed {seed} t {t}: max |ours - ORT| {d_ours:.2e}, max |tract - ORT| {d_tract:.2e}, output RMS {rms:.3}"
        );
        // ONNX Runtime quantises `x / scale`, tract (and so we) `x · (1/scale)`: a value within an
        // ulp of a rounding tie lands one uint8 step apart, and the step spreads through the
        // layers after it. Measured: with the model before smoothing, seed 2 had 10 of 768
        // outputs apart, max 4.7e-4; with the smoothed one, seed 1 has 702 of 768, max 3.2e-3,
        // relative L2 9.3e-4 (one early flip); the other seeds agree to 3e-6.
        let l2 = (ours.out.iter().zip(&reference).map(|(a, b)| (a - b) * (a - b)).sum::<f32>()
            / reference.iter().map(|b| b * b).sum::<f32>())
        .sqrt();
        assert!(d_ours <= 5e-3 * rms.max(1.0) && l2 <= 2e-3, "ours vs ONNX Runtime: max {d_ours}, relative L2 {l2}");
        // Same arithmetic as tract's unfused chains (see `edgediff_qconv::quantize` and
        // `edgediff_runtime::group_norm`): same bits, with or without our GroupNorm.
        assert_eq!(bits(&kernels_only.out), bits(&tracts.out), "our int8 kernels vs tract's int8 path");
        assert_eq!(bits(&tract_fp32.out), bits(&tracts.out), "our int8 kernels and GroupNorm vs tract alone");
        // An int8 model's fp32 layers stay on tract (see `edgediff_runtime::load`).
        assert_eq!(bits(&ours.out), bits(&tracts.out), "our int8 kernels and GroupNorm vs tract alone");
        assert_eq!((ours.float_convs, tract_fp32.float_convs), (0, 0), "fp32 layers of an int8 model on tract");
        assert!(
            d_ours <= d_tract.max(1e-5) * 1.5,
            "ours ({d_ours}) much further from ONNX Runtime than tract's int8 ({d_tract})"
        );
    }
}

/// On fp32 models our GroupNorm (or, left to tract, its channel affine) must not change a bit;
/// our convolutions and products sum in their own order, within rounding of tract's.
#[test]
fn fp32_outputs_are_tracts_bit_for_bit_but_for_our_summation_order() {
    let bytes = std::fs::read(support::root().join("models/sprites-cond.onnx")).unwrap();
    let (meta, _) = Denoiser::inspect(&bytes, &BTreeMap::new()).unwrap();
    let mut sample = vec![0f32; meta.image_len()];
    GaussianStream::new(3).fill(&mut sample);
    let ours = eval_runtime(&bytes, Ops::Edgediff, &sample, 300.0);
    let group_norm = eval_runtime(&bytes, Ops::TractMatMul, &sample, 300.0);
    let affines_only = eval_runtime(&bytes, Ops::TractGroupNorm, &sample, 300.0);
    let tracts = eval_runtime(&bytes, Ops::TractOnly, &sample, 300.0);
    assert_eq!((ours.int8, ours.group_norms, ours.channel_affines, ours.float_convs), ((0, 0), 27, 0, 35));
    assert_eq!(affines_only.channel_affines, 27);
    assert_eq!(bits(&group_norm.out), bits(&tracts.out), "our GroupNorm vs tract's");
    let d = max_abs_diff(&ours.out, &tracts.out);
    assert!(d > 0.0 && d <= 1e-4 * rms(&tracts.out).max(1.0), "our fp32 kernels vs tract's: max {d}");
    assert_eq!(bits(&affines_only.out), bits(&tracts.out), "the channel affine vs tract's Mul and Add");
}

/// With more than one thread our widest int8 convolutions split their bands of output rows over
/// tract's pool; the bytes must not depend on the thread count (batch 2, as guided sampling runs).
#[test]
fn int8_outputs_do_not_depend_on_the_thread_count() {
    let bytes = std::fs::read(support::root().join(INT8_DEFAULT)).unwrap();
    let (meta, _) = Denoiser::inspect(&bytes, &BTreeMap::new()).unwrap();
    let mut sample = vec![0f32; 2 * meta.image_len()];
    GaussianStream::new(4).fill(&mut sample);
    let labels = [2i64, meta.class_names.len() as i64];
    let run = |threads: usize| {
        let model = Denoiser::from_onnx_bytes(&bytes, &BTreeMap::new()).unwrap();
        let mut net = model.into_network(2, threads).unwrap();
        net.eval(&sample, &[700.0, 700.0], Some(&labels)).unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    let one = run(1);
    assert_eq!(run(2), one, "2 threads");
    assert_eq!(run(3), one, "3 threads");
}

/// `edgediff.float_order`: the shipped default int8 file keeps tract's kernels for its float
/// layers (its quality gates were measured with them), and `float_order=fixed` (a `--meta`
/// override, or the key `train quantize` writes by default) moves them to our fixed order.
#[test]
fn the_float_order_key_picks_whose_kernels_run_the_float_layers() {
    let bytes = std::fs::read(INT8_DEFAULT).unwrap();
    let load = |overrides: &[(&str, &str)]| {
        let overrides = overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Denoiser::from_onnx_bytes(&bytes, &overrides)
    };
    let tract = load(&[]).unwrap();
    assert_eq!(tract.meta.float_order, edgediff_core::meta::FloatOrder::Tract);
    assert_eq!((tract.fast_paths.float_convs, tract.fast_paths.fixed_math), (0, 0));
    let fixed = load(&[("float_order", "fixed")]).unwrap();
    assert!(fixed.fast_paths.float_convs > 0 && fixed.fast_paths.fixed_math > 0, "{:?}", fixed.fast_paths);
    let err = load(&[("float_order", "fast")]).err().expect("a bad value is refused").to_string();
    assert!(err.contains("edgediff.float_order") && err.contains("fixed or tract"), "{err}");
}
