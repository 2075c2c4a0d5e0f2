//! The direct form of [`Conv2d::run`]: for every tile of [`NR`] output pixels, the input
//! values each pixel reads (read in place from the padded input, or packed into panels for
//! strided windows, see `source`) against the packed weights, [`max_rows`] output channels per
//! micro-kernel call.

use std::ops::Range;

use super::source::{self, Padded, Source};
use super::{blocks_per_job, groups, with_sums, Conv2d, ConvOut, Image, MIN_JOBS};
use crate::tiles::{max_rows, up_to_three_tiles, Step};
use crate::{ParallelFor, NR};

/// Pixel tiles one job computes from packed panels (strided convolutions): the panels are
/// packed per job. Windows read in place take every tile of an image in one job, so that each
/// weight comes from memory once per image, unless the input is the larger of the two.
const PACKED_TILES_PER_JOB: usize = 4;
/// Bytes of input one pass over a job's tiles may read before the tiles are taken in runs (see
/// `Conv2d::sum_tiles`): half of a 1 MiB L2 cache.
const L2_INPUT_BYTES: usize = 512 * 1024;

impl Conv2d {
    /// The direct form of [`Conv2d::run`] on a checked input and its output size, reading
    /// windows in place where `in_place` allows it (tests compare the two ways).
    pub(super) fn direct(
        &self,
        x: &[f32],
        [n, h, w]: [usize; 3],
        (oh, ow): (usize, usize),
        parallel: Option<ParallelFor<'_>>,
        in_place: bool,
        out: &ConvOut<'_>,
    ) {
        let g = &self.geometry;
        let image = Image { h, w, oh, ow };
        let source = Source::new(g, x, n, &image, (in_place, parallel));
        let tiles = source.tiles_per_image(&image);
        let per_job = match source {
            // A layer whose weights are fewer than its input values (few output channels, a
            // large image: a 1x1 skip at 32x32) splits its pixels over the jobs instead, so
            // that each job does not read the whole input again for a slice of its channels.
            Source::Direct { .. } if parallel.is_some() && g.out_channels < image.oh * image.ow => {
                tiles.div_ceil(MIN_JOBS.div_ceil(n)).max(1)
            }
            Source::Direct { .. } => tiles,
            Source::Packed { .. } => PACKED_TILES_PER_JOB,
        };
        let tile_groups = n * tiles.div_ceil(per_job);
        // Few tile groups: with threads, split the output channels too, by whole groups of
        // weight blocks where there are enough.
        let blocks = g.out_channels.div_ceil(max_rows(self.kernel));
        let channel_groups = match parallel {
            Some(_) if tile_groups < MIN_JOBS => blocks.min(MIN_JOBS.div_ceil(tile_groups)),
            _ => 1,
        };
        let blocks_per_job = blocks_per_job(blocks, channel_groups);
        let channel_groups = blocks.div_ceil(blocks_per_job);
        let tile_group = |group: usize| {
            let (b, first_tile) = (group / tiles.div_ceil(per_job), (group % tiles.div_ceil(per_job)) * per_job);
            (b, first_tile..(first_tile + per_job).min(tiles))
        };
        // Jobs that share a tile group share its packed panels, packed once (fewer than
        // MIN_JOBS groups of at most PACKED_TILES_PER_JOB tiles: bounded scratch).
        let shared: Vec<std::sync::OnceLock<Vec<f32>>> = match &source {
            Source::Packed { padded, .. } if channel_groups > 1 => {
                let slots: Vec<std::sync::OnceLock<Vec<f32>>> = (0..tile_groups).map(|_| Default::default()).collect();
                let pack = |group: usize| {
                    let (b, job_tiles) = tile_group(group);
                    let _ = slots[group].set(self.pack_panels(padded, b, &image, job_tiles));
                };
                crate::for_each_job(parallel, tile_groups, &pack);
                slots
            }
            _ => Vec::new(),
        };
        let job = |j: usize| {
            let (group, channels) = (j / channel_groups, j % channel_groups);
            let (b, job_tiles) = tile_group(group);
            let job_blocks = channels * blocks_per_job..((channels + 1) * blocks_per_job).min(blocks);
            let packed = shared.get(group).and_then(|slot| slot.get()).map(Vec::as_slice);
            self.tiles(&source, (b, packed), &image, job_tiles, job_blocks, out);
        };
        crate::for_each_job(parallel, tile_groups * channel_groups, &job);
    }

    /// Pixel tiles `tiles` of image `b` into its output, for the output channels of weight
    /// blocks `blocks`; a packed source's panels are packed here unless given.
    ///
    /// The reduction runs in passes of [`K_BLOCK`] steps over every output channel and tile, so
    /// a pass's weights and panels stay in cache; each pass resumes the sums where the last
    /// stopped, which keeps the one ascending order.
    fn tiles(
        &self,
        source: &Source,
        (b, prepacked): (usize, Option<&[f32]>),
        image: &Image,
        tiles: Range<usize>,
        blocks: Range<usize>,
        out: &ConvOut<'_>,
    ) {
        let (k, rows) = (self.geometry.k(), max_rows(self.kernel));
        let packed = match (source, prepacked) {
            (Source::Packed { .. }, Some(packed)) => std::borrow::Cow::Borrowed(packed),
            (Source::Packed { padded, .. }, None) => self.pack_panels(padded, b, image, tiles.clone()).into(),
            (Source::Direct { .. }, _) => Vec::new().into(),
        };
        let placed: Vec<(&[f32], source::Runs)> =
            tiles.clone().enumerate().map(|(i, t)| source.tile(&packed, k, b, image, i, t)).collect();
        let count = placed.len();
        with_sums(blocks.len() * count * rows * NR, |sums| {
            self.sum_tiles(source, (b, image), &placed, blocks.clone(), sums, out)
        });
    }

    /// The passes of [`Conv2d::tiles`] over the `placed` tiles of image `b` for `blocks` into
    /// `sums` (written before they are read: the first pass starts each sum at +0), then the
    /// output.
    fn sum_tiles(
        &self,
        source: &Source,
        (b, image): (usize, &Image),
        placed: &[(&[f32], source::Runs)],
        blocks: Range<usize>,
        sums: &mut [f32],
        out: &ConvOut<'_>,
    ) {
        let (m, rows, count) = (self.geometry.out_channels, max_rows(self.kernel), placed.len());
        let step = Step { row: 1, k: rows };
        let tile_len = rows * NR;
        // Runs of tiles whose input for one pass fits in the L2 cache beside the weights, each
        // run taken through every block and pass before the next: otherwise a large input (a 1x1
        // layer over 384 channels at 32x32) streams from further out once per block.
        let run = match source.pass_input_bytes(&self.geometry) {
            bytes if bytes > L2_INPUT_BYTES => (count * L2_INPUT_BYTES / bytes).max(2) & !1,
            _ => count,
        };
        for first_tile in (0..count).step_by(run.max(1)) {
            let tiles = first_tile..(first_tile + run).min(count);
            for group in groups(blocks.clone()) {
                for pass in source.passes() {
                    let resume = pass.k0 > 0;
                    for block in group.clone() {
                        let at = ((block - blocks.start) * count + tiles.start) * tile_len;
                        let run_sums = &mut sums[at..at + tiles.len() * tile_len];
                        let w = self.block_weights(block, pass.k0, pass.walk.len());
                        let tile_rows = (m - block * rows).min(rows);
                        for (i, s) in run_sums.chunks_mut(3 * tile_len).enumerate() {
                            let t = tiles.start + 3 * i;
                            let panel = |k: usize| &placed[t + k].0[pass.shift..];
                            up_to_three_tiles(self.kernel, w, step, tile_rows, pass.walk, panel, s, tile_len, resume);
                        }
                    }
                }
            }
        }
        let pixels = image.oh * image.ow;
        for (block, block_sums) in blocks.zip(sums.chunks_exact(count * rows * NR)) {
            for r in 0..(m - block * rows).min(rows) {
                let channel = block * rows + r;
                let at = (b * m + channel) * pixels;
                let plane = out.plane(at, self.bias.as_ref().map(|bias| bias[channel]));
                for (s, (_, runs)) in block_sums.chunks_exact(rows * NR).zip(placed) {
                    let sum = &s[r * NR..][..NR];
                    for (lane, p0, len) in *runs {
                        // SAFETY: the `len` pixels from p0 lie in one output row of this image
                        // and channel < M, so the range is inside the output; no other job writes
                        // these pixels: jobs own disjoint tiles or images.
                        let dst = unsafe { out.slice(at + p0, len) };
                        plane.write(p0, dst, &sum[lane..lane + len]);
                    }
                }
            }
        }
    }

    /// The panels of tiles `tiles` of image `b` (`[K][NR]` each, one after another) for the
    /// packed form.
    fn pack_panels(&self, padded: &Padded, b: usize, image: &Image, tiles: Range<usize>) -> Vec<f32> {
        let (k, pixels) = (self.geometry.k(), image.oh * image.ow);
        let mut panels = vec![0f32; tiles.len() * k * NR];
        let planes = &padded.values[b * padded.image_len..][..padded.image_len];
        for (panel, t) in panels.chunks_exact_mut(k * NR).zip(tiles) {
            self.pack_panel(planes, padded, image, t * NR, (pixels - t * NR).min(NR), panel);
        }
        panels
    }

    /// The input values output pixels `p0..p0 + valid` read, `[K][NR]` (zero in the columns past
    /// `valid`), gathered from one image's padded planes: every window lies inside them, so no
    /// value needs a bounds check.
    fn pack_panel(&self, planes: &[f32], padded: &Padded, image: &Image, p0: usize, valid: usize, panel: &mut [f32]) {
        let g = &self.geometry;
        let ([kh, kw], [sh, sw], wp) = (g.kernel, g.strides, padded.wp);
        let corners: Vec<usize> = (p0..p0 + valid).map(|p| (p / image.ow) * sh * wp + (p % image.ow) * sw).collect();
        let mut rows = panel.chunks_exact_mut(NR);
        for plane in planes.chunks_exact(padded.plane) {
            for ky in 0..kh {
                for kx in 0..kw {
                    let row = rows.next().expect("K rows");
                    let window = &plane[ky * wp + kx..];
                    for (v, &corner) in row.iter_mut().zip(&corners) {
                        *v = window[corner];
                    }
                    row[valid..].fill(0.0);
                }
            }
        }
    }
}
