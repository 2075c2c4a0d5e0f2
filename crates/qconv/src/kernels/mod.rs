//! The dot-product loops. Each computes, for one block of [`ROWS`] output channels and one tile
//! of [`TILE`] output pixels, the exact i32 sums plus the per-channel offset, then applies the
//! epilogue with exactly the arithmetic of [`crate::requantize`] / [`crate::dequantize`].
//!
//! The SIMD kernels read the columns and weights and write the output through raw pointers.
//! What they rely on, for one call on a [`Block`], its [`Columns`] and its [`Out`] (the
//! *kernel bounds*, asserted by [`gemm`] before any kernel runs, in `assert_kernel_bounds`):
//! - `cols.data` holds `cols.k_quads` reduction rows of `cols.stride` pixels (4 bytes each),
//!   `cols.stride` is a multiple of [`TILE`] and at least `cols.pixels`, so every tile of
//!   [`TILE`] pixels starting below `cols.pixels` lies within each row; or, with
//!   `cols.windows` (given only to a kernel that [reads windows](Kernel::reads_windows)), what
//!   [`Windows::fit`](crate::pack::Windows::fit) checks: every step's tile of 16 words from each
//!   window lies within `cols.data`;
//! - `block.weights` holds `cols.k_quads` steps of [`ROWS`] x 4 bytes;
//! - `out` holds `block.offsets.len()` rows of `cols.out_stride` values, and
//!   `cols.out_first + cols.pixels <= cols.out_stride`.

#[cfg(target_arch = "aarch64")]
mod arm;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "aarch64")]
mod neon;
mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::io::AddendAt;
use crate::kernel::Kernel;
use crate::pack::{AlignedBuffer, Columns, PackBands, PackedWeights};
use crate::params::Epilogue;
use crate::{ROWS, TILE};

/// One image's output, `[M][pixels]` (a call on a band of columns fills that band's pixels of
/// every row).
pub(crate) enum Out<'a> {
    U8(&'a mut [u8]),
    F32(&'a mut [f32]),
}

/// The epilogue parameters of one block of rows.
#[derive(Clone, Copy)]
pub(crate) enum BlockEpilogue<'a> {
    Requantize { mult: &'a [f32], y_zero: u8 },
    Dequantize { scale: &'a [f32], bias: Option<&'a [f32]> },
}

/// What turns one call's sums into its outputs: the per-channel offsets and epilogue, and the
/// addend placed on the call's output (if any).
#[derive(Clone, Copy)]
pub(crate) struct Finish<'a> {
    pub offsets: &'a [i32],
    pub epilogue: &'a Epilogue,
    pub add: Option<&'a AddendAt<'a>>,
}

/// One block of up to [`ROWS`] output channels.
pub(crate) struct Block<'a> {
    /// `[K/4][ROWS][4]`.
    pub weights: &'a [i8],
    /// As many as there are valid rows.
    pub offsets: &'a [i32],
    pub epilogue: BlockEpilogue<'a>,
}

/// All blocks of output channels over the pixels of `cols`, into `out` (`[M][cols.out_stride]`).
/// `kernel` must be supported by this CPU (every `QConv2d::kernel` is).
pub(crate) fn gemm(kernel: Kernel, weights: &PackedWeights, cols: Columns<'_>, finish: Finish<'_>, mut out: Out<'_>) {
    assert_kernel_bounds(kernel, weights, &cols);
    run_blocks(kernel, weights, &cols, finish, 0..weights.blocks(), &mut out);
}

/// Blocks `blocks` of output channels over the pixels of `cols`, into `out`: those blocks' rows
/// of `cols.out_stride` values (each block's rows are sliced, bounds-checked, here), each block
/// plus its share of `add` while it is in the cache. The caller has asserted the kernel bounds
/// for `cols` and every block, and `kernel` is supported.
fn run_blocks(
    kernel: Kernel,
    weights: &PackedWeights,
    cols: &Columns<'_>,
    Finish { offsets, epilogue, add }: Finish<'_>,
    blocks: std::ops::Range<usize>,
    out: &mut Out<'_>,
) {
    let (pixels, first_row) = (cols.out_stride, blocks.start * ROWS);
    for b in blocks {
        let rows = block_rows(weights, b);
        let span = (rows.start - first_row) * pixels..(rows.end - first_row) * pixels;
        let out_block = match out {
            Out::U8(o) => Out::U8(&mut o[span.clone()]),
            Out::F32(o) => Out::F32(&mut o[span.clone()]),
        };
        // SAFETY: `kernel` is supported and the kernel bounds hold for `cols` and for
        // `weights.block(b)` (`k_quads · ROWS · 4` bytes) (this function's contract), and
        // `out_block` is exactly block `b`'s rows of `pixels` = `cols.out_stride` values.
        unsafe { run_block(kernel, weights, cols, offsets, epilogue, b, out_block) };
        if let (Some(add), Out::F32(o)) = (add, &mut *out) {
            add.add_to(rows, &mut o[span], pixels, cols.out_first, cols.pixels);
        }
    }
}

/// Output-channel blocks per job of [`gemm_blocks_parallel`], at least: a job of fewer blocks
/// costs more to hand out than it computes.
const MIN_JOB_BLOCKS: usize = 4;

/// Whether [`gemm_blocks_parallel`] makes at least two jobs of `weights`' blocks. With windows
/// read in place, splitting the channels beat bands of rows by 1.15x on the 35.7M int8 net's
/// convolutions at two threads (each band read every weight; Intel Xeon, `op_profile`).
pub(crate) fn splits_over_blocks(weights: &PackedWeights) -> bool {
    weights.blocks() >= 2 * MIN_JOB_BLOCKS
}

/// [`gemm`] with the blocks of output channels split over `parallel`'s jobs (contiguous runs of
/// blocks, each job writing only its blocks' rows of `out`). Same bytes: each block's sums do
/// not depend on which job computes them.
pub(crate) fn gemm_blocks_parallel(
    kernel: Kernel,
    weights: &PackedWeights,
    cols: Columns<'_>,
    finish: Finish<'_>,
    out: Out<'_>,
    parallel: crate::ParallelFor<'_>,
) {
    assert_kernel_bounds(kernel, weights, &cols);
    let (pixels, blocks) = (cols.out_stride, weights.blocks());
    let per_job = blocks.div_ceil(blocks.div_ceil(MIN_JOB_BLOCKS).clamp(1, 8)).max(1);
    let rows_per_job = per_job * ROWS * pixels;
    let shares: Vec<std::sync::Mutex<Out<'_>>> = match out {
        Out::U8(o) => o.chunks_mut(rows_per_job).map(|c| std::sync::Mutex::new(Out::U8(c))).collect(),
        Out::F32(o) => o.chunks_mut(rows_per_job).map(|c| std::sync::Mutex::new(Out::F32(c))).collect(),
    };
    let job = |j: usize| {
        let mut share = shares[j].lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let job_blocks = j * per_job..((j + 1) * per_job).min(blocks);
        run_blocks(kernel, weights, &cols, finish, job_blocks, &mut share);
    };
    parallel(shares.len(), &job);
}

/// Asserts the kernel bounds (see the module docs) for `cols` and each block of `weights`, and
/// that only a kernel that reads windows in place is given them.
fn assert_kernel_bounds(kernel: Kernel, weights: &PackedWeights, cols: &Columns<'_>) {
    let columns_fit = match &cols.windows {
        Some(windows) => kernel.reads_windows() && windows.fit(cols.data, cols.k_quads, cols.pixels),
        None => {
            cols.stride.is_multiple_of(TILE)
                && cols.pixels <= cols.stride
                && cols.data.len() >= cols.k_quads * cols.stride * 4
        }
    };
    assert!(
        weights.k_quads == cols.k_quads && columns_fit && cols.out_first + cols.pixels <= cols.out_stride,
        "columns do not fit the packed weights or the output"
    );
}

/// [`gemm`] over bands of output rows handed to `parallel` as independent jobs: each job packs
/// its band on its own thread (`packer`), computes every block of output channels for those
/// pixels into a buffer of its thread, and copies the band into its place in `out` (`[M][P]`).
/// Packing a band at a time keeps each job's columns in its core's cache, as on one thread.
pub(crate) fn gemm_bands_parallel(
    kernel: Kernel,
    weights: &PackedWeights,
    packer: &dyn PackBands,
    finish: Finish<'_>,
    out: Out<'_>,
    parallel: crate::ParallelFor<'_>,
) {
    let (base, len) = match out {
        Out::U8(o) => (SharedOut::U8(o.as_mut_ptr()), o.len()),
        Out::F32(o) => (SharedOut::F32(o.as_mut_ptr()), o.len()),
    };
    let rows = weights.rows;
    let pixels = len / rows.max(1);
    let job = |b: usize| {
        BAND_BUFFERS.with_borrow_mut(|buffers| {
            let BandBuffers { columns, out_u8, out_f32 } = buffers;
            let cols = packer.pack(b, columns);
            let (first, count) = (cols.out_first, cols.pixels);
            // `place_band` writes these pixels of each of the `rows` rows through a raw pointer.
            assert!(rows == 0 || first + count <= pixels, "band outside the output");
            let cols = Columns { out_stride: count, out_first: 0, ..cols };
            match base {
                SharedOut::U8(p) => {
                    out_u8.clear();
                    out_u8.resize(rows * count, 0);
                    gemm(kernel, weights, cols, finish, Out::U8(out_u8));
                    // SAFETY: `p` is the output's `rows · pixels` values (`pixels` = len / rows),
                    // `out_u8` is `rows` rows of `count`, and `first + count <= pixels` where
                    // there is a row to write (asserted above). Band `b` owns pixels
                    // `first..first + count` of every row: bands are disjoint, and by the
                    // `ParallelFor` contract each job runs once and `parallel` returns only
                    // after every job, while `out` is still borrowed.
                    unsafe { place_band(out_u8, count, p, pixels, first) };
                }
                SharedOut::F32(p) => {
                    out_f32.clear();
                    out_f32.resize(rows * count, 0.0);
                    // The band's columns are its image pixels from `first`.
                    let add = finish.add.map(|add| AddendAt { pixel_offset: add.pixel_offset + first, ..*add });
                    gemm(kernel, weights, cols, Finish { add: add.as_ref(), ..finish }, Out::F32(out_f32));
                    // SAFETY: as for the u8 output above.
                    unsafe { place_band(out_f32, count, p, pixels, first) };
                }
            }
        })
    };
    parallel(packer.bands(), &job);
}

/// Copies a band's `[M][count]` result into pixels `first .. first + count` of every row of the
/// `[M][pixels]` output at `out`.
///
/// # Safety
/// With `M = band.len() / count`: `out` must be valid for writes of `M · pixels` values with
/// `first + count <= pixels`, and no other thread may access pixels `first..first + count` of
/// any row meanwhile (in [`gemm_bands_parallel`] band `b` owns them, disjoint from every other
/// band's, and `parallel` returns only after every job has, so the output outlives the writes).
unsafe fn place_band<T: Copy>(band: &[T], count: usize, out: *mut T, pixels: usize, first: usize) {
    for (m, row) in band.chunks_exact(count).enumerate() {
        // SAFETY: m < M and first + count <= pixels, so the destination is within the `M · pixels`
        // values the caller guarantees, and no other thread touches it; `row` is a separate
        // buffer, so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), out.add(m * pixels + first), count) };
    }
}

/// A band job's buffers, one set per thread (separate from the calling thread's packing
/// scratch, which is borrowed while the jobs run).
#[derive(Default)]
struct BandBuffers {
    columns: AlignedBuffer,
    out_u8: Vec<u8>,
    out_f32: Vec<f32>,
}

thread_local! {
    static BAND_BUFFERS: std::cell::RefCell<BandBuffers> = std::cell::RefCell::new(BandBuffers::default());
}

/// The output's base pointer, shared by the jobs of [`gemm_bands_parallel`].
#[derive(Clone, Copy)]
enum SharedOut {
    U8(*mut u8),
    F32(*mut f32),
}
// SAFETY: the pointer is only written through by `place_band`, each job writing only its own
// band's pixels, disjoint from every other job's (see `gemm_bands_parallel`, which relies on the
// `ParallelFor` contract that each job runs once).
unsafe impl Sync for SharedOut {}
// SAFETY: as for `Sync`: sending the pointer to another thread lets that job write its own band
// only, and the output outlives every job.
unsafe impl Send for SharedOut {}

fn block_rows(weights: &PackedWeights, b: usize) -> std::ops::Range<usize> {
    b * ROWS..(b * ROWS + (weights.rows - b * ROWS).min(ROWS))
}

/// One block of [`ROWS`] output channels over every pixel, into its rows of the output.
///
/// # Safety
/// `kernel` must be supported by this CPU, and `cols`, `weights.block(b)` and `out_block` must
/// satisfy the kernel bounds (see the module docs), as [`gemm`] asserts.
unsafe fn run_block(
    kernel: Kernel,
    weights: &PackedWeights,
    cols: &Columns<'_>,
    offsets: &[i32],
    epilogue: &Epilogue,
    b: usize,
    out_block: Out<'_>,
) {
    let rows = block_rows(weights, b);
    let block = Block {
        weights: weights.block(b),
        offsets: &offsets[rows.clone()],
        epilogue: match epilogue {
            Epilogue::Requantize { mult, y_zero } => {
                BlockEpilogue::Requantize { mult: &mult[rows.clone()], y_zero: *y_zero }
            }
            Epilogue::Dequantize { scale, bias } => {
                BlockEpilogue::Dequantize { scale: &scale[rows.clone()], bias: bias.as_ref().map(|b| &b[rows.clone()]) }
            }
        },
    };
    match kernel {
        Kernel::Portable => portable::block(&block, cols, out_block),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX-512 F, BW and VNNI (`kernel` is supported: this function's
        // contract); the kernel bounds hold (also the contract), and `block.weights` is
        // `weights.block(b)`.
        Kernel::Avx512Vnni => unsafe { x86::block(&block, cols, out_block) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for AVX2 and AVX-VNNI.
        Kernel::AvxVnni => unsafe { avx2::block_vnni(&block, cols, out_block) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for AVX2.
        Kernel::Avx2 => unsafe { avx2::block_avx2(&block, cols, out_block) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above, for NEON and the dot-product extension.
        Kernel::ArmDotProd => unsafe { arm::block(&block, cols, out_block) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: the kernel bounds hold (this function's contract); NEON is part of every
        // aarch64 CPU.
        Kernel::Neon => unsafe { neon::block(&block, cols, out_block) },
    }
}

/// Applies the epilogue to one tile of sums (`acc[r][lane]`, offsets not yet added) and
/// stores pixels `p0..p0+valid` of each row (rows `pixels` apart in `out`).
///
/// Not inlined: inlined into the NEON kernel (its caller on an Armv8.0 core), it cost a
/// Cortex-A53 2% more instructions per evaluation of the default int8 model (firmware-sim
/// plugin).
#[inline(never)]
pub(crate) fn store_tile(
    block: &Block<'_>,
    acc: &[[i32; TILE]; ROWS],
    pixels: usize,
    p0: usize,
    valid: usize,
    out: &mut Out<'_>,
) {
    for (r, &off) in block.offsets.iter().enumerate() {
        let acc = &acc[r][..valid];
        match (&mut *out, block.epilogue) {
            (Out::U8(o), BlockEpilogue::Requantize { mult, y_zero }) => {
                for (d, &a) in o[r * pixels + p0..][..valid].iter_mut().zip(acc) {
                    *d = crate::requantize(a.wrapping_add(off), mult[r], y_zero);
                }
            }
            (Out::F32(o), BlockEpilogue::Dequantize { scale, bias }) => {
                let bias = bias.map(|b| b[r]);
                for (d, &a) in o[r * pixels + p0..][..valid].iter_mut().zip(acc) {
                    *d = crate::dequantize(a.wrapping_add(off), scale[r], bias);
                }
            }
            _ => unreachable!("QConv2d::run allocates the output its epilogue writes"),
        }
    }
}
