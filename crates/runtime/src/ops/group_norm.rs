//! `EdgediffGroupNorm`: GroupNorm as one tract op, in place of the eleven ONNX nodes our exporter
//! writes for it (the pattern is matched by [`crate::rewrite::group_norm`]).
//!
//! Why: memory and time. tract keeps its plan's node table for the plan's life (1.6 KB per
//! node in 0.23.9) and each `IntoShape` holds its own axes mapping (about 5 KB). tract
//! optimised each GroupNorm into 7 nodes (2 reshapes, a sum, a scale, a subtraction, its
//! `RmsNorm` and our [`crate::ops::channel_affine`]): on the default model 189 of 476 nodes,
//! about 0.7 MiB of a 3.0 MiB plan (`examples/op_profile.rs` prints the plan's heap).
//!
//! Same bits as tract: the op runs tract's own arithmetic for that graph, on tract's kernels —
//! the sum by `tract_linalg`'s reduction kernel, times `1/n` (tract turns the mean's division
//! into that product), the mean subtracted, tract's `RmsNorm` kernel (`x / sqrt(mean(x²) + eps)`
//! as tract computes it), then `x · gamma + beta` without FMA. These kernels differ between
//! CPUs (AVX-512 or not, NEON), as they did before the fusion; `tests/int8_kernels.rs` checks
//! the shipped models bit for bit against tract's unfused graph.
//!
//! Models in the fixed float order (`edgediff.float_order`, the default) ask for arithmetic of
//! our own instead ([`GroupNorm::fixed_order`], set by [`crate::rewrite::fixed_math`]): a fixed
//! lane order for the sums ([`edgediff_fkernels::norm`]), the same bytes on every CPU, with the
//! SiLU that follows folded in. An int8 model measured in tract's order keeps tract's: its
//! activations sit near quantisation steps and cross them on a last-bit change (final int8
//! images 47 to 58 dB from before).
//!

use std::sync::{Arc, OnceLock};

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::expandable::{expand, Expansion};

use super::{f32_in_out, GROUP_NORM_OP};
use crate::constants::const_f32s;

pub(crate) fn parse(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let attr = |name: &str| node.attribute.iter().find(|a| a.name == name);
    let groups = attr("num_groups").map(|a| a.i).with_context(|| format!("{}: no num_groups", node.name))?;
    let eps = attr("epsilon").map(|a| a.f).with_context(|| format!("{}: no epsilon", node.name))?;
    let groups = usize::try_from(groups).ok().filter(|&g| g > 0);
    let groups = groups.with_context(|| format!("{}: num_groups must be positive", node.name))?;
    let fixed_order = attr(super::FIXED_ORDER_ATTR).is_some_and(|a| a.i == 1);
    let silu = attr(super::SILU_ATTR).is_some_and(|a| a.i == 1);
    ensure!(!silu || fixed_order, "{}: silu needs the fixed order", node.name);
    Ok((expand(GroupNormExpansion { groups, eps, fixed_order, silu }), vec![]))
}

#[derive(Debug, Clone)]
struct GroupNormExpansion {
    groups: usize,
    eps: f32,
    fixed_order: bool,
    silu: bool,
}

impl Expansion for GroupNormExpansion {
    fn name(&self) -> StaticName {
        GROUP_NORM_OP.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        f32_in_out(s, inputs, outputs, 3)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let f32s = |i| const_f32s(model, prefix, inputs, i);
        let (gamma, beta) = (f32s(1)?, f32s(2)?);
        let x = model.outlet_fact(inputs[0])?;
        let c = x.shape.get(1).and_then(|c| c.to_usize().ok());
        ensure!(
            x.rank() >= 3 && c == Some(gamma.len()) && gamma.len() == beta.len() && gamma.len() % self.groups == 0,
            "{prefix}: input {:?} does not fit {} groups of gamma[{}], beta[{}]",
            x.shape,
            self.groups,
            gamma.len(),
            beta.len()
        );
        let mut op = GroupNorm::new(self.groups, self.eps, gamma, beta);
        if self.fixed_order {
            op.fixed_order = Some(crate::kernels::fp32_for_op()?);
            op.silu = self.silu;
        }
        model.wire_node(prefix, op, &[inputs[0]])
    }
}

/// The typed op: GroupNorm of `x` f32 `[N, C, H, W]` (or `[N, C, T]`) with per-channel
/// `gamma` and `beta`.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    groups: usize,
    eps: f32,
    gamma: Arc<Vec<f32>>,
    beta: Arc<Vec<f32>>,
    /// Our own arithmetic on this fp32 kernel, the same on every CPU
    /// ([`edgediff_fkernels::norm`]), instead of tract's kernels.
    pub fixed_order: Option<edgediff_fkernels::Kernel>,
    /// With the fixed order: SiLU applied to each group once normalised (the bytes of a
    /// separate SiLU op, while the group is still in cache).
    pub silu: bool,
}

impl GroupNorm {
    /// `gamma.len()` channels in `groups` groups; `gamma.len()` must be a multiple of `groups`.
    pub fn new(groups: usize, eps: f32, gamma: Vec<f32>, beta: Vec<f32>) -> GroupNorm {
        GroupNorm { groups, eps, gamma: Arc::new(gamma), beta: Arc::new(beta), fixed_order: None, silu: false }
    }

    /// Normalises `x`, f32 `[N, C, ...]` in row-major order with `plane` values per channel
    /// (H·W for an image, the token count for attention's `[N, C, T]`), in place.
    /// Groups are independent: large inputs are split over the plan's thread pool by whole
    /// groups (from tract's threshold for its own sum and `RmsNorm`), so the bits do not change.
    pub fn run(&self, x: &mut [f32], plane: usize) -> TractResult<()> {
        self.run_from(None, x, plane)
    }

    /// [`GroupNorm::run`] of `src` into `x` where given (the same bytes; the source is read in
    /// place, by tract's order in its first pass over each group).
    fn run_from(&self, src: Option<&[f32]>, x: &mut [f32], plane: usize) -> TractResult<()> {
        ensure!(src.is_none_or(|s| s.len() == x.len()), "GroupNorm: source and output lengths differ");
        let c = self.gamma.len();
        let group_len = c / self.groups * plane;
        ensure!(
            group_len > 0 && x.len().is_multiple_of(c * plane),
            "GroupNorm: {} values, {c} channels of {plane}",
            x.len()
        );
        let kernels = kernels()?;
        let pool = crate::threads::values_pool(x.len());
        // Four chunks of whole groups per thread, as tract splits its row-parallel ops; one
        // chunk of every group without threads.
        let groups_per_chunk = match &pool {
            Some(pool) => (x.len() / group_len).div_ceil(4 * pool.current_num_threads()).max(1),
            None => (x.len() / group_len).max(1),
        };
        let chunk_len = groups_per_chunk * group_len;
        crate::threads::try_for_each_chunk(pool.as_deref(), x, chunk_len, |i, groups| {
            let first = i * groups_per_chunk;
            if let Some(kernel) = self.fixed_order {
                // Our arithmetic takes the chunk's groups together (their sums side by side).
                let params: TVec<edgediff_fkernels::norm::Group> =
                    (first..first + groups.len() / group_len).map(|g| self.params(g % self.groups, plane)).collect();
                match src {
                    Some(src) => {
                        let src = &src[i * chunk_len..i * chunk_len + groups.len()];
                        edgediff_fkernels::norm::group_norms(kernel, src, groups, &params, self.silu)
                    }
                    None => edgediff_fkernels::norm::group_norms_in_place(kernel, groups, &params, self.silu),
                }
                return Ok(());
            }
            for (j, group) in groups.chunks_exact_mut(group_len).enumerate() {
                let src = src.map(|s| &s[(first + j) * group_len..][..group_len]);
                self.normalise_group(src, group, (first + j) % self.groups, plane, kernels)?;
            }
            Ok(())
        })
    }

    /// Group `g`'s parameters for our arithmetic.
    fn params(&self, g: usize, plane: usize) -> edgediff_fkernels::norm::Group<'_> {
        let per_group = self.gamma.len() / self.groups;
        let channels = g * per_group..(g + 1) * per_group;
        edgediff_fkernels::norm::Group {
            plane,
            eps: self.eps,
            gamma: &self.gamma[channels.clone()],
            beta: &self.beta[channels],
        }
    }

    /// One group (`C/G` channels of `plane` values) of group index `g`, in tract's order.
    fn normalise_group(
        &self,
        src: Option<&[f32]>,
        group: &mut [f32],
        g: usize,
        plane: usize,
        kernels: &Kernels,
    ) -> TractResult<()> {
        let first = g * (self.gamma.len() / self.groups);
        let (sum, rms_norm) = kernels;
        let input = src.unwrap_or(group);
        // tract's ReduceMean: a sum, then the division by n as a product by its reciprocal.
        let inv_count = (input.len() as f32).recip();
        // As tract's `Reduce<Sum>` on a contiguous last axis: its kernel from 4 values on.
        let total = if input.len() >= 4 { sum.run_with_params(input, ())? } else { input.iter().sum() };
        let mean = total * inv_count;
        // The source, where given, is read here and not copied first.
        match src {
            Some(src) => group.iter_mut().zip(src).for_each(|(v, &x)| *v = x - mean),
            None => group.iter_mut().for_each(|v| *v -= mean),
        }
        rms_norm(group, self.eps);
        for (channel, values) in group.chunks_exact_mut(plane).enumerate() {
            let (gamma, beta) = (self.gamma[first + channel], self.beta[first + channel]);
            for v in values {
                *v = *v * gamma + beta;
            }
        }
        Ok(())
    }
}

/// tract's f32 sum and RmsNorm kernels for this CPU.
type Kernels = (Box<dyn tract_linalg::reduce::Reduce<f32>>, fn(&mut [f32], f32));

/// [`Kernels`], looked up once.
fn kernels() -> TractResult<&'static Kernels> {
    static KERNELS: OnceLock<Kernels> = OnceLock::new();
    if let Some(k) = KERNELS.get() {
        return Ok(k);
    }
    let found = (tract_linalg::Func::ReduceSum.reduce_f32()?, tract_linalg::routines::rms_norm_f32()?);
    Ok(KERNELS.get_or_init(|| found))
}

impl PartialEq for GroupNorm {
    fn eq(&self, other: &Self) -> bool {
        self.groups == other.groups
            && self.fixed_order == other.fixed_order
            && self.silu == other.silu
            && self.eps.to_bits() == other.eps.to_bits()
            && Arc::ptr_eq(&self.gamma, &other.gamma)
            && Arc::ptr_eq(&self.beta, &other.beta)
    }
}
impl Eq for GroupNorm {}

impl Op for GroupNorm {
    fn name(&self) -> StaticName {
        "GroupNorm".into()
    }

    op_as_typed_op!();
}

impl EvalOp for GroupNorm {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs.into_iter().next().context("GroupNorm: no input")?;
        ensure!(x.rank() >= 3 && x.shape()[1] == self.gamma.len(), "GroupNorm: input {:?}", x.shape());
        let plane: usize = x.shape()[2..].iter().product();
        if plane > 0 && !x.is_exclusive() {
            // A shared input (the residual stream) is left as it is: it is read in place and
            // normalised into a new tensor (`run_from`).
            // SAFETY: `run_from` writes every value of `y` (every group of the input's shape).
            let mut y = unsafe { Tensor::uninitialized::<f32>(x.shape())? };
            let src = x.try_as_plain_ram()?;
            let mut view = y.try_as_plain_ram_mut()?;
            self.run_from(Some(src.as_slice::<f32>()?), view.as_slice_mut::<f32>()?, plane)?;
            return Ok(tvec!(y.into_tvalue()));
        }
        let mut x = x.into_tensor();
        if plane > 0 {
            let mut view = x.try_as_plain_ram_mut()?;
            self.run(view.as_slice_mut::<f32>()?, plane)?;
        }
        Ok(tvec!(x.into_tvalue()))
    }
}

impl TypedOp for GroupNorm {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(inputs[0].without_value()))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GroupNorm in f64, the textbook way.
    fn reference(x: &[f32], c: usize, groups: usize, plane: usize, eps: f32, gamma: &[f32], beta: &[f32]) -> Vec<f64> {
        let group_len = c / groups * plane;
        let mut out = Vec::with_capacity(x.len());
        for (i, group) in x.chunks(group_len).enumerate() {
            let n = group.len() as f64;
            let mean = group.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = group.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            for (j, &v) in group.iter().enumerate() {
                let ch = (i % groups) * (c / groups) + j / plane;
                out.push((v as f64 - mean) / (var + eps as f64).sqrt() * gamma[ch] as f64 + beta[ch] as f64);
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        // A small LCG: offsets and scales that differ per position, as activations do.
        let mut s = seed;
        (0..n)
            .map(|i| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1 << 24) as f32 * 6.0 - 2.0 + (i % 7) as f32
            })
            .collect()
    }

    #[test]
    fn matches_the_f64_definition() {
        // 2 images, 12 channels in 3 groups, 5x5 planes (the group length, 100, is not a
        // multiple of 8: the tail path runs too).
        let (n, c, groups, plane, eps) = (2, 12, 3, 25, 1e-5f32);
        let x = values(n * c * plane, 1);
        let gamma: Vec<f32> = (0..c).map(|i| 0.5 + i as f32 / 8.0).collect();
        let beta: Vec<f32> = (0..c).map(|i| i as f32 / 4.0 - 1.0).collect();
        let want = reference(&x, c, groups, plane, eps, &gamma, &beta);
        let mut got = x.clone();
        GroupNorm::new(groups, eps, gamma, beta).run(&mut got, plane).unwrap();
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert!((g as f64 - w).abs() <= 2e-6 * w.abs().max(1.0), "value {i}: {g} vs {w}");
        }
    }

    #[test]
    fn each_image_is_normalised_on_its_own() {
        // The same image gives the same bits alone and as the second of a batch.
        let (c, groups, plane) = (8, 4, 16);
        let op = GroupNorm::new(groups, 1e-5, vec![1.5; c], vec![0.25; c]);
        let (a, b) = (values(c * plane, 2), values(c * plane, 3));
        let mut alone = b.clone();
        op.run(&mut alone, plane).unwrap();
        let mut batch = [a, b].concat();
        op.run(&mut batch, plane).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&batch[c * plane..]), bits(&alone));
    }

    #[test]
    fn threads_split_whole_groups_and_change_no_bits() {
        // 2 x 64 channels of 32x32: 131,072 values, above the threading threshold.
        let (c, groups, plane) = (64, 8, 1024);
        let x = values(2 * c * plane, 4);
        let op = GroupNorm::new(groups, 1e-5, (0..c).map(|i| 1.0 + i as f32 / 64.0).collect(), vec![0.5; c]);
        let mut serial = x.clone();
        op.run(&mut serial, plane).unwrap();
        let pool = crate::threads::new_pool(3).unwrap().unwrap();
        let mut threaded = x;
        crate::threads::with_pool(&pool, || op.run(&mut threaded, plane)).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&threaded), bits(&serial));
    }

    /// A shared input (also read by another node) is left as it was and normalised into a new
    /// tensor, with the bytes an unshared one gets in place, in both orders, on threads too.
    #[test]
    fn a_shared_input_is_read_in_place_with_the_same_bytes() {
        let (c, groups, plane) = (64, 8, 1024);
        let x = Tensor::from_shape(&[2, c, 32, 32], &values(2 * c * plane, 5)).unwrap();
        let pool = crate::threads::new_pool(2).unwrap().unwrap();
        for fixed in [None, Some(crate::kernels::fp32().unwrap())] {
            let mut op = GroupNorm::new(groups, 1e-5, (0..c).map(|i| 1.0 - i as f32 / 128.0).collect(), vec![0.5; c]);
            (op.fixed_order, op.silu) = (fixed, fixed.is_some());
            let eval = |input: TValue| {
                let session = crate::session::fresh_session().unwrap();
                crate::threads::with_pool(&pool, || op.eval(&TurnState::default().context(session, 0), tvec![input]))
            };
            let alone = eval(x.clone().into_tvalue()).unwrap().remove(0);
            let shared = x.clone().into_tvalue();
            let out = eval(shared.clone()).unwrap().remove(0);
            assert_eq!(out.as_bytes(), alone.as_bytes(), "fixed order {fixed:?}");
            assert_eq!(shared.as_bytes(), x.as_bytes(), "the shared input changed");
        }
    }
}
