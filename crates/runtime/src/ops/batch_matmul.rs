//! `EdgediffBatchMatMul`: ONNX `MatMul` of two computed tensors (attention's scores `Q·Kᵀ` and
//! its mix `P·V`) on [`edgediff_fkernels::MatMul`], summed in that crate's one order so the
//! bytes are the same on every CPU. Leading axes broadcast as ONNX says; a 1-D operand is a
//! row (`a`) or a column (`b`). Taken by [`crate::rewrite::fixed_math`] in fp32 models.

use edgediff_fkernels::{MatMul, WeightLayout};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::expandable::{expand, Expansion};

use super::{f32_in_out, BATCH_MATMUL_OP};

pub(crate) fn parse(_ctx: &ParsingContext, _node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(BatchMatMulExpansion), vec![]))
}

#[derive(Debug, Clone)]
struct BatchMatMulExpansion;

impl Expansion for BatchMatMulExpansion {
    fn name(&self) -> StaticName {
        BATCH_MATMUL_OP.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        f32_in_out(s, inputs, outputs, 2)?;
        s.equals(&inputs[1].datum_type, f32::datum_type())?;
        s.given_2(&inputs[0].shape, &inputs[1].shape, move |s, a, b| {
            let concrete = |d: &[TDim]| d.iter().map(|d| d.to_usize().ok()).collect::<Option<Vec<_>>>();
            // Symbolic shapes are left for later: the runtime fixes every input's shape.
            let (Some(a), Some(b)) = (concrete(&a), concrete(&b)) else { return Ok(()) };
            let out = Shapes::of(&a, &b)?.output;
            s.equals(&outputs[0].shape, ShapeFactoid::from(out.iter().map(|d| d.to_dim()).collect::<TVec<_>>()))
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let kernel = crate::kernels::fp32_for_op()?;
        model.wire_node(prefix, BatchMatMul { kernel }, &[inputs[0], inputs[1]])
    }
}

/// The shapes of one product: `a` as `[batch.., m, k]`, `b` as `[batch.., k, n]`, the output.
struct Shapes {
    m: usize,
    k: usize,
    n: usize,
    /// The output's leading axes (broadcast), with `a`'s and `b`'s padded to their length.
    batch: Vec<usize>,
    a_batch: Vec<usize>,
    b_batch: Vec<usize>,
    output: Vec<usize>,
}

impl Shapes {
    fn of(a: &[usize], b: &[usize]) -> TractResult<Shapes> {
        ensure!(!a.is_empty() && !b.is_empty(), "{BATCH_MATMUL_OP}: scalar operand");
        let a2: Vec<usize> = if a.len() == 1 { vec![1, a[0]] } else { a.to_vec() };
        let b2: Vec<usize> = if b.len() == 1 { vec![b[0], 1] } else { b.to_vec() };
        let (m, k, kb, n) = (a2[a2.len() - 2], a2[a2.len() - 1], b2[b2.len() - 2], b2[b2.len() - 1]);
        ensure!(k == kb, "{BATCH_MATMUL_OP}: shapes {a:?} and {b:?} do not multiply");
        let (la, lb) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
        let rank = la.len().max(lb.len());
        let pad = |l: &[usize]| [vec![1; rank - l.len()], l.to_vec()].concat();
        let (a_batch, b_batch) = (pad(la), pad(lb));
        let batch = a_batch
            .iter()
            .zip(&b_batch)
            .map(|(&x, &y)| match (x, y) {
                _ if x == y => Ok(x),
                (1, y) => Ok(y),
                (x, 1) => Ok(x),
                _ => bail!("{BATCH_MATMUL_OP}: leading axes of {a:?} and {b:?} do not broadcast"),
            })
            .collect::<TractResult<Vec<_>>>()?;
        let mut output = batch.clone();
        if a.len() > 1 {
            output.push(m);
        }
        if b.len() > 1 {
            output.push(n);
        }
        Ok(Shapes { m, k, n, batch, a_batch, b_batch, output })
    }

    /// The flat index into `a`'s (`which == 0`) or `b`'s matrices of output matrix `i`.
    fn source(&self, i: usize, which: usize) -> usize {
        let dims = if which == 0 { &self.a_batch } else { &self.b_batch };
        let (mut rest, mut index, mut stride) = (i, 0, 1);
        for (&out, &d) in self.batch.iter().zip(dims).rev() {
            let coordinate = rest % out;
            rest /= out;
            index += if d == 1 { 0 } else { coordinate * stride };
            stride *= d;
        }
        index
    }
}

/// The typed op: `a · b` for two f32 tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMatMul {
    kernel: edgediff_fkernels::Kernel,
}

impl Op for BatchMatMul {
    fn name(&self) -> StaticName {
        "BatchMatMul".into()
    }

    op_as_typed_op!();
}

impl EvalOp for BatchMatMul {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let sh = Shapes::of(a.shape(), b.shape())?;
        let (a, b) = (a.try_as_plain_ram()?, b.try_as_plain_ram()?);
        let (a, b) = (a.as_slice::<f32>()?, b.as_slice::<f32>()?);
        let matrices: usize = sh.batch.iter().product();
        // SAFETY: the products cover `y` (one `[m][n]` block per output matrix) and `run_into`
        // writes every value of its block; on an error `y` is dropped unread.
        let mut y = unsafe { Tensor::uninitialized::<f32>(&sh.output)? };
        let mut view = y.try_as_plain_ram_mut()?;
        let out = view.as_slice_mut::<f32>()?;
        // An empty product has no block to write.
        for (i, out) in out.chunks_exact_mut((sh.m * sh.n).max(1)).enumerate().take(matrices) {
            let bm = &b[sh.source(i, 1) * sh.k * sh.n..][..sh.k * sh.n];
            let macs = sh.m * sh.k * sh.n;
            let parallel = |jobs: usize, job: &(dyn Fn(usize) + Sync)| crate::threads::run_jobs(macs, jobs, job);
            MatMul::new(bm, WeightLayout::KByM, sh.k, sh.n, None, self.kernel)
                .and_then(|mm| {
                    mm.run_into(&a[sh.source(i, 0) * sh.m * sh.k..][..sh.m * sh.k], sh.m, Some(&parallel), out)
                })
                .map_err(|e| format_err!("BatchMatMul: {e}"))?;
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for BatchMatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let dims = |f: &TypedFact| f.shape.iter().map(|d| Ok(d.to_usize()?)).collect::<TractResult<Vec<_>>>();
        let sh = Shapes::of(&dims(inputs[0])?, &dims(inputs[1])?)?;
        Ok(tvec!(f32::fact(sh.output)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_broadcast_as_onnx_says() {
        let sh = Shapes::of(&[2, 1, 3, 4], &[5, 4, 6]).unwrap();
        assert_eq!((sh.m, sh.k, sh.n, sh.output.clone()), (3, 4, 6, vec![2, 5, 3, 6]));
        // Output matrix (1, 3) reads a's matrix (1, 0) and b's matrix 3.
        assert_eq!((sh.source(8, 0), sh.source(8, 1)), (1, 3));
        assert_eq!(Shapes::of(&[4], &[4, 6]).unwrap().output, vec![6]);
        assert_eq!(Shapes::of(&[3, 4], &[4]).unwrap().output, vec![3]);
        assert!(Shapes::of(&[3, 4], &[5, 6]).is_err());
        assert!(Shapes::of(&[2, 3, 4], &[3, 4, 6]).is_err());
    }
}
