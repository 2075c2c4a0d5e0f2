//! The channel form of a convolution on AVX-512 and NEON, for outputs narrower than [`NR`]:
//! the lanes hold 16 output channels and each input value is broadcast, so a 4x4 or 8x8 image
//! wastes no lanes (the direct form's tiles of [`NR`] positions of the padded width leave half
//! of a 4x4 image's lanes, and a fifth of an 8x8 image's, on values no pixel takes), and a
//! strided window is read in place (the direct form packs its panels first). Each output is
//! summed in the direct form's order (+0, one fused multiply-add per step, ascending), so the
//! bytes are the same and the choice may depend on the CPU.
//!
//! A job takes one image, a group of output channels and a run of output rows; the reduction
//! runs in short passes whose weights stay in the L1 cache while every row reads them.

use std::ops::Range;

use super::source::{window_walk, Padded};
use super::{with_sums, Conv2d, ConvOut, Image, MIN_JOBS};
use crate::tiles::{channel_panels, channel_rows, channel_tile, max_rows, Panel};
use crate::{Kernel, ParallelFor, NR};

/// Bytes of weights one pass reads, about: a pass's weights are read once per row segment, so
/// they should stay in the L1 cache (32-48 KiB).
const PASS_WEIGHT_BYTES: usize = 32 << 10;

/// Whether [`Conv2d::run`] takes the channel form for this layer and image: a kernel with a
/// channel tile (AVX-512, NEON), whole panels of 16 output channels (whole runs of the packed
/// layout's blocks), and either a stride (the direct form would pack panels: a 128-channel 3x3
/// stride-2 layer from 32x32 took 1.35x as long that way, from 64x64 1.3-1.8x; a strided 1x1
/// window on an output of [`NR`] or wider packs little, and ran 1.08x as long in the channel
/// form) or an output narrower than [`NR`] on which the direct form leaves more than an eighth
/// of its lanes idle (a 1x1 window on an unpadded 8x8 image fills every lane, and is faster
/// there: its short reduction pays the channel form's fixed costs).
pub(super) fn applies(conv: &Conv2d, image: &Image) -> bool {
    let g = &conv.geometry;
    let wp = image.w + g.pads[1] + g.pads[3];
    let tiles = (image.oh * wp).div_ceil(NR).min(image.oh * image.ow.div_ceil(NR));
    let idle = 8 * image.oh * image.ow < 7 * tiles * NR;
    let strided = g.strides != [1, 1];
    channel_rows(conv.kernel) > 0
        && NR.is_multiple_of(max_rows(conv.kernel))
        && g.out_channels.is_multiple_of(NR)
        && match image.ow < NR {
            true => strided || idle,
            false => strided && g.kernel != [1, 1],
        }
}

/// The layout of one layer's work: row segments of up to `channel_rows` pixels, panels of 16
/// channels.
struct Layout {
    /// Pixels per segment (the last of a row may have fewer).
    seg: usize,
    segs_per_row: usize,
    /// Panels per kernel call and per job.
    panels: usize,
}

impl Layout {
    fn new(ow: usize, kernel: Kernel) -> Layout {
        let seg = ow.min(channel_rows(kernel));
        Layout { seg, segs_per_row: ow.div_ceil(seg), panels: channel_panels(kernel, seg) }
    }

    /// Segment `s` of the image: its output row, first column and width.
    fn segment(&self, s: usize, ow: usize) -> (usize, usize, usize) {
        let (oy, ox) = (s / self.segs_per_row, (s % self.segs_per_row) * self.seg);
        (oy, ox, (ow - ox).min(self.seg))
    }
}

/// `y [n, M, oh, ow]` for `x [n, C, h, w]` (checked by the caller) in the channel form, every
/// value of `y` written.
pub(super) fn run(
    conv: &Conv2d,
    x: &[f32],
    n: usize,
    image: &Image,
    parallel: Option<ParallelFor<'_>>,
    out: &ConvOut<'_>,
) {
    let g = &conv.geometry;
    let padded = Padded::new(g, x, n, image, parallel);
    let layout = Layout::new(image.ow, conv.kernel);
    let groups = (g.out_channels / NR).div_ceil(layout.panels);
    let segments = image.oh * layout.segs_per_row;
    // With threads, the images and channel groups are the jobs, rows split too only while there
    // are fewer than half MIN_JOBS of them: jobs with their own weights read less from memory
    // (256 channels at 4x4 on two threads, 139 -> 99 us, when rows split to make 8 jobs).
    let split = match parallel {
        Some(_) => (MIN_JOBS / 2).div_ceil(n * groups).min(segments),
        None => 1,
    };
    let per_job = segments.div_ceil(split);
    let split = segments.div_ceil(per_job);
    let job = |j: usize| {
        let (b, group, part) = (j / (groups * split), j / split % groups, j % split);
        let panels = group * layout.panels..((group + 1) * layout.panels).min(g.out_channels / NR);
        let segs = part * per_job..((part + 1) * per_job).min(segments);
        job_sums(Job { conv, padded: &padded, b, image, layout: &layout, panels, segs }, out);
    };
    crate::for_each_job(parallel, n * groups * split, &job);
}

/// One job's share: panels `panels` of segments `segs` of image `b`.
struct Job<'a> {
    conv: &'a Conv2d,
    padded: &'a Padded<'a>,
    b: usize,
    image: &'a Image,
    layout: &'a Layout,
    panels: Range<usize>,
    segs: Range<usize>,
}

/// `job`'s sums, then its outputs.
fn job_sums(job: Job<'_>, out: &ConvOut<'_>) {
    let chunk = job.panels.len() * job.layout.seg * NR;
    // Every sum is written (the first pass starts it at +0) before it is read.
    with_sums(job.segs.len() * chunk, |sums| {
        sum_segments(&job, chunk, sums);
        write_segments(&job, chunk, sums, out)
    });
}

/// The reduction of `job` into `sums` (`chunk` values per segment), in short passes.
fn sum_segments(job: &Job<'_>, chunk: usize, sums: &mut [f32]) {
    let Job { conv, padded, b, image, layout, .. } = *job;
    let (g, panels) = (&conv.geometry, job.panels.clone());
    let ([sh, sw], window) = (g.strides, g.kernel[0] * g.kernel[1]);
    let steps = (PASS_WEIGHT_BYTES / (panels.len() * NR * 4) / window).max(1) * window;
    let (block, parts) = (max_rows(conv.kernel), NR / max_rows(conv.kernel));
    for (k0, len) in g.passes() {
        // Each panel's blocks of this pass (at most 4 panels: arrays, not a vector per pass).
        let mut weights: [Panel<'_>; 4] = [[&[]; 4]; 4];
        for (w, p) in weights.iter_mut().zip(panels.clone()) {
            for (part, w) in w.iter_mut().enumerate().take(parts) {
                *w = conv.block_weights(parts * p + part, k0, len);
            }
        }
        for s0 in (0..len).step_by(steps) {
            let s_len = steps.min(len - s0);
            let walk = window_walk(g, s_len, padded.plane, padded.wp);
            let from = block * s0;
            let panel_weights = weights.map(|p| p.map(|w| w.get(from..).unwrap_or_default()));
            let panel_weights = &panel_weights[..panels.len()];
            let c0 = (k0 + s0) / window;
            for (s, sums) in job.segs.clone().zip(sums.chunks_exact_mut(chunk)) {
                let (oy, ox, rows) = layout.segment(s, image.ow);
                let corner = oy * sh * padded.wp + ox * sw;
                let x = &padded.values[b * padded.image_len + c0 * padded.plane + corner..];
                channel_tile(conv.kernel, x, (rows, sw), walk, panel_weights, sums, k0 + s0 > 0);
            }
        }
    }
}

/// `job`'s sums into the output, plus the bias. Consecutive segments are consecutive pixels, so
/// each channel's pixels of this job are one run of the output: written channel by channel,
/// gathered from the sums.
fn write_segments(job: &Job<'_>, chunk: usize, sums: &[f32], out: &ConvOut<'_>) {
    let Job { conv, b, image, layout, .. } = *job;
    let (m, pixels) = (conv.geometry.out_channels, image.oh * image.ow);
    let widths: Vec<usize> = job.segs.clone().map(|s| layout.segment(s, image.ow).2).collect();
    let (oy, ox, _) = layout.segment(job.segs.start, image.ow);
    let run = widths.iter().sum();
    for (v, panel) in job.panels.clone().enumerate() {
        for j in 0..NR {
            let channel = panel * NR + j;
            let (plane_at, first) = ((b * m + channel) * pixels, oy * image.ow + ox);
            // SAFETY: the job's `run` pixels from (oy, ox) lie in image b's output (its segments
            // are consecutive) and channel < M; no other job writes them: jobs own disjoint
            // panels or segments.
            let dst = unsafe { out.slice(plane_at + first, run) };
            let plane = out.plane(plane_at, conv.bias.as_ref().map(|b| b[channel]));
            let mut at = 0;
            for (&rows, sums) in widths.iter().zip(sums.chunks_exact(chunk)) {
                // The segment's sums of this channel lie NR apart.
                plane.write_every(first + at, &mut dst[at..at + rows], &sums[v * rows * NR + j..], NR);
                at += rows;
            }
        }
    }
}
