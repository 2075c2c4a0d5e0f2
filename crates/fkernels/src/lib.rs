//! fp32 kernels whose output bytes do not depend on the CPU, the thread count or the batch.
//!
//! Every output element is summed the same way on every path: starting from +0, one fused
//! multiply-add per term (`acc = fma(a[k], b[k], acc)`, rounded once), in ascending `k`, with
//! no split of the reduction into partial sums; a bias is added after the last term. The SIMD
//! kernels (AVX-512, AVX2+FMA, NEON) only compute several output elements at once, each in its
//! own lane, and the portable one uses `f32::mul_add`, which is the same correctly rounded
//! operation. So a product's bytes are the same on x86_64 and aarch64, for any row count (the
//! rows of a batch never meet) and any split over threads.
//!
//! [`Conv2d`] is a convolution computed the same way: its packed weights are the broadcast
//! operand and each tile of [`NR`] output pixels gets a panel of the input values it reads.
//!
//! [`MatMul`] is a matrix product with constant weights (a linear layer): the weights are packed
//! once into panels of [`NR`] columns, `[M/NR][K][NR]`, so the micro-kernel streams one panel
//! while each row of the activations is broadcast one value at a time.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod conv;
mod error;
mod kernel;
pub mod math;
mod matmul;
pub mod norm;
#[cfg(test)]
mod test_values;
mod tiles;
mod transpose;

pub use conv::{Addend, Conv2d, ConvGeometry};
pub use error::FKernelError;
pub use kernel::Kernel;
pub use matmul::{MatMul, WeightLayout};
pub use transpose::{transpose_rows, TransposeShape};

/// Output columns one micro-kernel call computes per row: one AVX-512 vector, two AVX2 vectors,
/// four NEON vectors.
pub const NR: usize = 16;

/// A parallel-for supplied by the caller (this crate has no thread pool of its own):
/// `parallel(jobs, job)` must call `job(i)` exactly once for every `i < jobs`, on any threads
/// in any order, and return only when all calls have returned.
pub type ParallelFor<'a> = &'a (dyn Fn(usize, &(dyn Fn(usize) + Sync)) + Sync);

/// `job(i)` for every `i < jobs`: through `parallel` where there is one and more than one job,
/// else one after another on this thread.
fn for_each_job(parallel: Option<ParallelFor<'_>>, jobs: usize, job: &(dyn Fn(usize) + Sync)) {
    match parallel {
        Some(parallel) if jobs > 1 => parallel(jobs, job),
        _ => (0..jobs).for_each(job),
    }
}

/// The output buffer, written by several jobs at once at disjoint places.
pub(crate) struct SharedOut(*mut f32, usize);

// SAFETY: jobs write disjoint ranges (each caller's jobs own disjoint outputs), and the
// callers keep the buffer alive and unread until every job has returned.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// # Safety
    /// `at + len` must be within the buffer, and no other live slice may overlap this one.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, at: usize, len: usize) -> &mut [f32] {
        assert!(at + len <= self.1, "output slice out of range");
        // SAFETY: in range (asserted) and not aliased (the caller's promise).
        unsafe { std::slice::from_raw_parts_mut(self.0.add(at), len) }
    }
}
