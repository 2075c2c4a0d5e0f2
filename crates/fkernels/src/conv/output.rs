//! Where a convolution's outputs go: the output buffer, and what is added to each output after
//! its bias by the pass that writes it (a residual, or one value per image and channel such as
//! a timestep embedding). The add is the one a separate add after the convolution would make,
//! so the bytes are the same; the output is not read back from memory for it.

use crate::{FKernelError, SharedOut};

/// Values added to a convolution's outputs after their bias: output `(b, m, y, x)` becomes
/// `(sum + bias[m]) + addend`, rounded after each add.
#[derive(Debug, Clone, Copy)]
pub enum Addend<'a> {
    /// One value per output, `[n, M, oh, ow]`, or `[M, oh, ow]` for every image alike.
    Outputs(&'a [f32]),
    /// One value per image and output channel, `[n, M]`, or `[M]` for every image alike.
    Channels(&'a [f32]),
}

impl Addend<'_> {
    /// An error unless the values suit `n` images of `m` channels of `pixels` outputs each.
    pub(super) fn check(&self, n: usize, m: usize, pixels: usize) -> Result<(), FKernelError> {
        let (got, per_image) = match *self {
            Addend::Outputs(values) => (values.len(), m * pixels),
            Addend::Channels(values) => (values.len(), m),
        };
        match got == per_image || got == n * per_image {
            true => Ok(()),
            false => Err(FKernelError::Length { what: "addend", got, expected: n * per_image }),
        }
    }
}

/// One call's output `y [n, M, oh, ow]`, which several jobs write at disjoint places, and the
/// addend of its values.
pub(super) struct ConvOut<'a> {
    y: SharedOut,
    addend: Option<Addend<'a>>,
    /// Outputs per channel plane, `oh · ow`.
    pixels: usize,
    /// `y` stays borrowed while this lives.
    borrow: std::marker::PhantomData<&'a mut [f32]>,
}

impl<'a> ConvOut<'a> {
    /// `addend` must have been checked against `y`'s shape ([`Addend::check`]).
    pub(super) fn new(y: &'a mut [f32], pixels: usize, addend: Option<Addend<'a>>) -> ConvOut<'a> {
        ConvOut { y: SharedOut(y.as_mut_ptr(), y.len()), addend, pixels, borrow: std::marker::PhantomData }
    }

    /// The `len` outputs from `at`.
    ///
    /// # Safety
    /// As for [`SharedOut::slice`]: no other live slice may overlap this one.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn slice(&self, at: usize, len: usize) -> &mut [f32] {
        // SAFETY: the caller's promise.
        unsafe { self.y.slice(at, len) }
    }

    /// How the outputs of the channel plane that starts at `plane` (image and channel) are
    /// written: its bias and its addend.
    #[inline(always)]
    pub(super) fn plane(&self, plane: usize, bias: Option<f32>) -> PlaneOut<'a> {
        let addend = match self.addend {
            None => Run::None,
            Some(Addend::Outputs(values)) => {
                let from = plane % values.len();
                Run::Values(&values[from..from + self.pixels])
            }
            Some(Addend::Channels(values)) => Run::Value(values[plane / self.pixels % values.len()]),
        };
        PlaneOut { bias, addend }
    }

    /// Adds the addend to `plane`, the outputs of the channel plane that starts at `at`,
    /// already written (sum plus bias).
    pub(super) fn add_addend(&self, at: usize, plane: &mut [f32]) {
        match self.plane(at, None).addend {
            Run::None => {}
            Run::Value(a) => plane.iter_mut().for_each(|y| *y += a),
            Run::Values(a) => plane.iter_mut().zip(a).for_each(|(y, &a)| *y += a),
        }
    }
}

/// What the outputs of one channel plane get after their sums: the bias, then the addend.
pub(super) struct PlaneOut<'a> {
    bias: Option<f32>,
    addend: Run<'a>,
}

impl PlaneOut<'_> {
    /// Writes `sums` plus the bias plus the addend into `dst`, the plane's outputs from pixel
    /// `p0`: one pass, each add rounded as a separate add would be (without a bias the sums are
    /// copied, so a sum of -0 stays -0).
    #[inline(always)]
    pub(super) fn write(&self, p0: usize, dst: &mut [f32], sums: &[f32]) {
        let sums = &sums[..dst.len()];
        match (self.bias, &self.addend) {
            (None, Run::None) => dst.copy_from_slice(sums),
            (Some(b), Run::None) => dst.iter_mut().zip(sums).for_each(|(y, &v)| *y = v + b),
            (None, &Run::Value(a)) => dst.iter_mut().zip(sums).for_each(|(y, &v)| *y = v + a),
            (Some(b), &Run::Value(a)) => dst.iter_mut().zip(sums).for_each(|(y, &v)| *y = (v + b) + a),
            (None, Run::Values(a)) => dst.iter_mut().zip(sums).zip(&a[p0..]).for_each(|((y, &v), &a)| *y = v + a),
            (Some(b), Run::Values(a)) => {
                dst.iter_mut().zip(sums).zip(&a[p0..]).for_each(|((y, &v), &a)| *y = (v + b) + a)
            }
        }
    }

    /// [`PlaneOut::write`] of the sums `step` apart in `sums`.
    #[inline(always)]
    pub(super) fn write_every(&self, p0: usize, dst: &mut [f32], sums: &[f32], step: usize) {
        let sums = sums.iter().step_by(step);
        match (self.bias, &self.addend) {
            (None, Run::None) => dst.iter_mut().zip(sums).for_each(|(y, &v)| *y = v),
            (Some(b), Run::None) => dst.iter_mut().zip(sums).for_each(|(y, &v)| *y = v + b),
            (None, &Run::Value(a)) => dst.iter_mut().zip(sums).for_each(|(y, &v)| *y = v + a),
            (Some(b), &Run::Value(a)) => dst.iter_mut().zip(sums).for_each(|(y, &v)| *y = (v + b) + a),
            (None, Run::Values(a)) => dst.iter_mut().zip(sums).zip(&a[p0..]).for_each(|((y, &v), &a)| *y = v + a),
            (Some(b), Run::Values(a)) => {
                dst.iter_mut().zip(sums).zip(&a[p0..]).for_each(|((y, &v), &a)| *y = (v + b) + a)
            }
        }
    }
}

/// The addend of one channel plane.
enum Run<'a> {
    None,
    /// One value for the whole plane.
    Value(f32),
    /// One value per output of the plane.
    Values(&'a [f32]),
}
