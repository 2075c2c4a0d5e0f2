//! [`MatMul`]: `y[r, m] = Σ_k x[r, k] · w[k, m] (+ bias[m])` with the weights packed at build.

use std::ops::Range;

use crate::tiles::{max_rows, tile, tile_group, Step, Walk};
use crate::{FKernelError, Kernel, ParallelFor, SharedOut, NR};

/// Rows of the activations one job computes (against every panel): large enough that a job
/// outweighs handing it out, small enough that a 32x32 image's 1024 tokens make 16 jobs.
const ROW_BLOCK: usize = 64;
/// With fewer row blocks than this, the panels are split over jobs as well: a product of a few
/// rows (a timestep embedding's projection, one row per image) is bound by reading its weights,
/// which a split of the panels shares out.
const MIN_JOBS: usize = 4;

/// How the weights are laid out in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// `w[k][m]`: ONNX `MatMul(x, w)`.
    KByM,
    /// `w[m][k]`: ONNX `Gemm(x, w, transB = 1)`, PyTorch's `nn.Linear.weight`.
    MByK,
}

/// A matrix product with constant weights `[K, M]` and an optional bias `[M]`.
#[derive(Debug, Clone)]
pub struct MatMul {
    k: usize,
    m: usize,
    /// `[ceil(M / NR)][K][NR]`, the last panel padded with zero columns.
    panels: Vec<f32>,
    bias: Option<Vec<f32>>,
    kernel: Kernel,
}

impl MatMul {
    /// Packs `weights` (`k * m` values in `layout`) for `kernel`.
    pub fn new(
        weights: &[f32],
        layout: WeightLayout,
        k: usize,
        m: usize,
        bias: Option<&[f32]>,
        kernel: Kernel,
    ) -> Result<MatMul, FKernelError> {
        let length = |what, got, expected| (got != expected).then_some(FKernelError::Length { what, got, expected });
        if let Some(e) = length("weights", weights.len(), k * m).or(bias.and_then(|b| length("bias", b.len(), m))) {
            return Err(e);
        }
        if !kernel.is_supported() {
            return Err(FKernelError::Unsupported(kernel.name()));
        }
        let panel_count = m.div_ceil(NR);
        let mut panels = vec![0f32; panel_count * k * NR];
        for (p, panel) in panels.chunks_exact_mut(k * NR).enumerate() {
            let cols = (m - p * NR).min(NR);
            for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
                match layout {
                    WeightLayout::KByM => row[..cols].copy_from_slice(&weights[kk * m + p * NR..][..cols]),
                    WeightLayout::MByK => {
                        for (j, v) in row[..cols].iter_mut().enumerate() {
                            *v = weights[(p * NR + j) * k + kk];
                        }
                    }
                }
            }
        }
        Ok(MatMul { k, m, panels, bias: bias.map(<[f32]>::to_vec), kernel })
    }

    /// The reduction length `K`.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The output width `M`.
    pub fn m(&self) -> usize {
        self.m
    }

    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// `y [rows, M]` for `x [rows, K]` (row-major), jobs of [`ROW_BLOCK`] rows handed to
    /// `parallel` if given. The bytes do not depend on `rows`, the split or the threads.
    pub fn run(&self, x: &[f32], rows: usize, parallel: Option<ParallelFor<'_>>) -> Result<Vec<f32>, FKernelError> {
        let mut y = vec![0f32; rows * self.m];
        self.run_into(x, rows, parallel, &mut y)?;
        Ok(y)
    }

    /// [`MatMul::run`] into `y`, which must hold exactly `rows · M` values (a tensor the caller
    /// allocated: no copy of the result).
    pub fn run_into(
        &self,
        x: &[f32],
        rows: usize,
        parallel: Option<ParallelFor<'_>>,
        y: &mut [f32],
    ) -> Result<(), FKernelError> {
        if x.len() != rows * self.k {
            return Err(FKernelError::Length { what: "activations", got: x.len(), expected: rows * self.k });
        }
        if y.len() != rows * self.m {
            return Err(FKernelError::Length { what: "output", got: y.len(), expected: rows * self.m });
        }
        if rows == 0 || self.m == 0 {
            return Ok(());
        }
        let (row_blocks, pairs) = (rows.div_ceil(ROW_BLOCK), self.m.div_ceil(NR).div_ceil(2));
        let pair_split = match parallel {
            Some(_) if row_blocks < MIN_JOBS => MIN_JOBS.div_ceil(row_blocks).min(pairs),
            _ => 1,
        };
        let pairs_per_job = pairs.div_ceil(pair_split);
        let pair_split = pairs.div_ceil(pairs_per_job);
        let out = SharedOut(y.as_mut_ptr(), y.len());
        let job = |j: usize| {
            let (first, part) = ((j / pair_split) * ROW_BLOCK, j % pair_split);
            let job_pairs = part * pairs_per_job..((part + 1) * pairs_per_job).min(pairs);
            self.block(&x[first * self.k..], (first, (rows - first).min(ROW_BLOCK)), job_pairs, &out);
        };
        crate::for_each_job(parallel, row_blocks * pair_split, &job);
        Ok(())
    }

    /// Rows `first..first + rows` (`x` from the first) against the panel pairs `pairs` into the
    /// output, two panels a call (each broadcast of `x` feeds both; a lane's sum is the same
    /// either way). Jobs take disjoint rows or pairs.
    fn block(&self, x: &[f32], (first, rows): (usize, usize), pairs: Range<usize>, out: &SharedOut) {
        let k = self.k;
        let step = max_rows(self.kernel);
        let mut sums = [[0f32; 8 * NR]; 2];
        let panels = &self.panels[pairs.start * 2 * k * NR..(pairs.end * 2 * k * NR).min(self.panels.len())];
        for (pair, two) in (pairs.start..).zip(panels.chunks(2 * k * NR)) {
            let (p0, p1) = two.split_at(two.len().min(k * NR));
            for r0 in (0..rows).step_by(step) {
                let tile_rows = (rows - r0).min(step);
                let (a, a_step, walk) = (&x[r0 * k..], Step { row: k, k: 1 }, Walk::packed(k));
                let [s0, s1] = &mut sums;
                let panels = if p1.is_empty() { 1 } else { 2 };
                if panels == 2 {
                    tile_group::<2>(self.kernel, a, a_step, tile_rows, walk, [p0, p1], [s0, s1], false);
                } else {
                    tile(self.kernel, a, a_step, tile_rows, walk, p0, s0, false);
                }
                for (i, sums) in sums.iter().enumerate().take(panels) {
                    self.store(sums, 2 * pair + i, first + r0, tile_rows, out);
                }
            }
        }
    }

    /// One tile's sums of panel `p` (rows `r0..r0 + tile_rows`) into the output `[rows, M]`,
    /// plus the bias.
    fn store(&self, sums: &[f32], p: usize, r0: usize, tile_rows: usize, y: &SharedOut) {
        let (m, cols) = (self.m, (self.m - p * NR).min(NR));
        for (r, sum) in sums.chunks_exact(NR).take(tile_rows).enumerate() {
            // SAFETY: row r0 + r and panel p's columns lie in the output (checked by `run_into`),
            // and no other job writes them: jobs own disjoint rows or panel pairs.
            let out = unsafe { y.slice((r0 + r) * m + p * NR, cols) };
            match &self.bias {
                Some(bias) => {
                    for ((o, &s), &b) in out.iter_mut().zip(sum).zip(&bias[p * NR..]) {
                        *o = s + b;
                    }
                }
                None => out.copy_from_slice(&sum[..cols]),
            }
        }
    }
}

#[cfg(test)]
mod tests;
