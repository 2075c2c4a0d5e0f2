//! [`Conv2d`]: a 2-D convolution, NCHW, one group, as a product of the packed weights
//! `[M][K]` (`K = C · kh · kw`, ordered channel, row, column) and, for every tile of [`NR`]
//! output pixels, the panel of the input values each pixel reads (`[K][NR]`, zero where the
//! window lies in the padding). Every output is summed in ascending `K` by one lane, as in
//! [`crate::MatMul`]: the bytes do not depend on the CPU, the batch or the threads.

use std::ops::Range;

use crate::tiles::max_rows;
use crate::{FKernelError, Kernel, ParallelFor};
pub use output::Addend;
use output::ConvOut;

/// With threads, at least this many jobs where the output channels allow (small images split
/// their channels as well as their pixels).
const MIN_JOBS: usize = 8;
/// Reduction steps per pass, at most (see `direct`'s `Conv2d::tiles`).
const K_BLOCK: usize = 256;
/// Weight blocks in one group of the packed layout: the output channels one job takes at least
/// where there are enough of them.
const GROUP_BLOCKS: usize = 4;

/// A convolution's shape: channels, window, strides and padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Vertical and horizontal stride, each at least 1.
    pub strides: [usize; 2],
    /// Padding: top, left, bottom, right.
    pub pads: [usize; 4],
}

impl ConvGeometry {
    /// The output height and width for an input of `h` x `w`, if the window fits.
    pub fn output_size(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.strides;
        let (ph, pw) = (h + self.pads[0] + self.pads[2], w + self.pads[1] + self.pads[3]);
        (ph >= kh && pw >= kw && sh > 0 && sw > 0).then(|| ((ph - kh) / sh + 1, (pw - kw) / sw + 1))
    }

    /// The reduction length `C · kh · kw`.
    pub fn k(&self) -> usize {
        self.in_channels * self.kernel[0] * self.kernel[1]
    }

    /// Reduction steps per pass: whole channels' windows, up to [`K_BLOCK`] (at least one
    /// channel), so that a pass can read its windows in place (see `source`).
    fn pass_len(&self) -> usize {
        let window = self.kernel[0] * self.kernel[1];
        (K_BLOCK / window).max(1) * window
    }

    /// The passes' starts and lengths, in order.
    fn passes(&self) -> impl Iterator<Item = (usize, usize)> {
        let (k, len) = (self.k(), self.pass_len());
        (0..k).step_by(len).map(move |k0| (k0, (k - k0).min(len)))
    }
}

/// A convolution with constant weights, packed for one kernel.
#[derive(Debug, Clone)]
pub struct Conv2d {
    geometry: ConvGeometry,
    /// Blocks of `rows = max_rows(kernel)` output channels (zero rows at the end), in groups of
    /// [`GROUP_BLOCKS`], each group pass-major: `[group][pass][block][pass steps][rows]`. A job
    /// runs whole groups pass by pass, so it reads its weights in one sequential stream (a
    /// 256-channel 3x3 layer's 2.4 MB come from memory at each evaluation; short strided runs
    /// starved the prefetcher).
    weights: Vec<f32>,
    bias: Option<Vec<f32>>,
    kernel: Kernel,
}

impl Conv2d {
    /// Packs `weights` (`[M][C][kh][kw]`) and `bias` (`[M]`) for `kernel`.
    pub fn new(
        weights: &[f32],
        geometry: ConvGeometry,
        bias: Option<&[f32]>,
        kernel: Kernel,
    ) -> Result<Conv2d, FKernelError> {
        let (m, k) = (geometry.out_channels, geometry.k());
        if weights.len() != m * k {
            return Err(FKernelError::Length { what: "weights", got: weights.len(), expected: m * k });
        }
        if let Some(b) = bias.filter(|b| b.len() != m) {
            return Err(FKernelError::Length { what: "bias", got: b.len(), expected: m });
        }
        if !kernel.is_supported() {
            return Err(FKernelError::Unsupported(kernel.name()));
        }
        let (rows, blocks) = (max_rows(kernel), m.div_ceil(max_rows(kernel)));
        let mut packed = vec![0f32; blocks * k * rows];
        let mut at = 0;
        for group in groups(0..blocks) {
            for (k0, len) in geometry.passes() {
                for b in group.clone() {
                    for kk in k0..k0 + len {
                        for r in 0..rows.min(m.saturating_sub(b * rows)) {
                            packed[at + r] = weights[(b * rows + r) * k + kk];
                        }
                        at += rows;
                    }
                }
            }
        }
        Ok(Conv2d { geometry, weights: packed, bias: bias.map(<[f32]>::to_vec), kernel })
    }

    pub fn geometry(&self) -> ConvGeometry {
        self.geometry
    }

    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// `y [n, M, oh, ow]` for `x [n, C, h, w]`; jobs handed to `parallel` if given.
    pub fn run(
        &self,
        x: &[f32],
        dims: [usize; 3],
        parallel: Option<ParallelFor<'_>>,
    ) -> Result<Vec<f32>, FKernelError> {
        let [n, h, w] = dims;
        // No output where the window does not fit: `run_into` reports the input first.
        let len = self.geometry.output_size(h, w).map_or(0, |(oh, ow)| n * self.geometry.out_channels * oh * ow);
        let mut y = vec![0f32; len];
        self.run_into(x, dims, parallel, &mut y)?;
        Ok(y)
    }

    /// [`Conv2d::run`] into `y`, which must hold exactly `n · M · oh · ow` values (a tensor the
    /// caller allocated: no copy of the result).
    pub fn run_into(
        &self,
        x: &[f32],
        dims: [usize; 3],
        parallel: Option<ParallelFor<'_>>,
        y: &mut [f32],
    ) -> Result<(), FKernelError> {
        self.run_into_adding(x, dims, parallel, None, y)
    }

    /// [`Conv2d::run_into`], each output plus its value of `addend` (after the bias), added as
    /// the output is written: the bytes of adding it afterwards, without reading the output
    /// back (a residual connection, or a timestep embedding's value per channel).
    pub fn run_into_adding(
        &self,
        x: &[f32],
        dims: [usize; 3],
        parallel: Option<ParallelFor<'_>>,
        addend: Option<Addend<'_>>,
        y: &mut [f32],
    ) -> Result<(), FKernelError> {
        let [n, h, w] = dims;
        let expected = n * self.geometry.in_channels * h * w;
        if x.len() != expected {
            return Err(FKernelError::Length { what: "input", got: x.len(), expected });
        }
        let (oh, ow) = self.geometry.output_size(h, w).ok_or(FKernelError::Window { h, w })?;
        let expected = n * self.geometry.out_channels * oh * ow;
        if y.len() != expected {
            return Err(FKernelError::Length { what: "output", got: y.len(), expected });
        }
        if let Some(addend) = &addend {
            addend.check(n, self.geometry.out_channels, oh * ow)?;
        }
        let out = ConvOut::new(y, oh * ow, addend);
        if let Some(form) = winograd::form(self, oh, ow) {
            winograd::run(self, form, x, (oh, ow), dims, parallel, &out);
        } else if channels::applies(self, &Image { h, w, oh, ow }) {
            channels::run(self, x, n, &Image { h, w, oh, ow }, parallel, &out);
        } else {
            self.direct(x, dims, (oh, ow), parallel, true, &out);
        }
        Ok(())
    }

    /// The packed weights of `block` for the pass of `len` steps from `k0`.
    fn block_weights(&self, block: usize, k0: usize, len: usize) -> &[f32] {
        let (k, rows) = (self.geometry.k(), max_rows(self.kernel));
        let blocks = self.geometry.out_channels.div_ceil(rows);
        let first = block / GROUP_BLOCKS * GROUP_BLOCKS;
        let in_group = (blocks - first).min(GROUP_BLOCKS);
        &self.weights[(first * k + k0 * in_group + (block - first) * len) * rows..]
    }
}

/// Weight blocks per job for about `jobs` jobs: whole groups of the packed layout where there
/// are enough blocks.
fn blocks_per_job(blocks: usize, jobs: usize) -> usize {
    match blocks.div_ceil(jobs) {
        b if b >= GROUP_BLOCKS => b.next_multiple_of(GROUP_BLOCKS),
        b => b,
    }
}

/// `blocks` cut at the packed layout's group boundaries.
fn groups(blocks: Range<usize>) -> impl Iterator<Item = Range<usize>> {
    let mut start = blocks.start;
    std::iter::from_fn(move || {
        (start < blocks.end).then(|| {
            let end = (start / GROUP_BLOCKS + 1) * GROUP_BLOCKS;
            let group = start..end.min(blocks.end);
            start = group.end;
            group
        })
    })
}

/// One input image's size and its output's.
pub(crate) struct Image {
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
}

thread_local! {
    /// A sums buffer kept between calls on this thread, as large as the largest a call needed:
    /// zeroing a fresh one at every call was a fifth of the `memset` of an evaluation.
    static SUMS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// `f` on `len` values of this thread's sums buffer, whose contents are left from earlier calls:
/// every user writes each sum before it reads it.
fn with_sums<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut sums = SUMS.take();
    if sums.len() < len {
        sums.resize(len, 0.0);
    }
    let result = f(&mut sums[..len]);
    SUMS.set(sums);
    result
}

#[cfg(test)]
mod addend_tests;
mod channels;
mod direct;
mod output;
mod source;
#[cfg(test)]
mod tests;
mod winograd;
