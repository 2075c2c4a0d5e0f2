//! The activations one call takes and the values it returns.

/// The activations of one call.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// Already quantised (the output of a `QuantizeLinear`).
    U8(&'a [u8]),
    /// f32, quantised here with [`quantize`](crate::quantize), `1 / x_scale` and `x_zero` (a fused
    /// `QuantizeLinear`).
    F32(&'a [f32]),
}

impl Input<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Input::U8(x) => x.len(),
            Input::F32(x) => x.len(),
        }
    }
}

/// The result of one call, `[n][M][ho][wo]`.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

impl Output {
    /// The whole result as the buffer a call writes.
    pub(crate) fn as_mut(&mut self) -> OutputMut<'_> {
        match self {
            Output::U8(v) => OutputMut::U8(v),
            Output::F32(v) => OutputMut::F32(v),
        }
    }
}

/// Where one call writes its result, `[n][M][ho][wo]` (or `[M][pixels]`): a buffer the caller
/// owns, such as a tensor's, so the result needs no copy. Every value is written, once (its
/// previous contents are never read).
#[derive(Debug)]
pub enum OutputMut<'a> {
    U8(&'a mut [u8]),
    F32(&'a mut [f32]),
}

impl OutputMut<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            OutputMut::U8(o) => o.len(),
            OutputMut::F32(o) => o.len(),
        }
    }
}

/// Values added to an f32 result after its bias, by the pass that has just written each block
/// of output channels (while it is in the cache): output `(b, m, y, x)` becomes
/// `dequantize(..) + addend`, the bytes of a separate add afterwards.
#[derive(Debug, Clone, Copy)]
pub enum Addend<'a> {
    /// One value per output, `[n][M][ho][wo]`, or `[M][ho][wo]` for every image alike.
    Outputs(&'a [f32]),
    /// One value per image and output channel, `[n][M]`, or `[M]` for every image alike.
    Channels(&'a [f32]),
}

impl Addend<'_> {
    /// The values and how many of them one image takes for `m` channels of `pixels` outputs.
    pub(crate) fn values_per_image(&self, m: usize, pixels: usize) -> (&[f32], usize) {
        match *self {
            Addend::Outputs(values) => (values, m * pixels),
            Addend::Channels(values) => (values, m),
        }
    }
}

/// An [`Addend`] placed on one call's output: where its image's values start in the whole
/// result, and which image pixel the call's first output column is.
#[derive(Clone, Copy)]
pub(crate) struct AddendAt<'a> {
    pub addend: Addend<'a>,
    /// `b · M · plane` for image `b`.
    pub image_first: usize,
    /// Output pixels per channel, `ho · wo`.
    pub plane: usize,
    /// The image pixel of output column 0 of the call (a band's first pixel).
    pub pixel_offset: usize,
}

impl AddendAt<'_> {
    /// Adds the addend to the outputs of channels `channels` (rows `stride` values apart in
    /// `rows`) from output column `column`, `pixels` of them per row. Whole rows of an
    /// `Outputs` addend are one run in both, added in one pass.
    pub(crate) fn add_to(
        &self,
        channels: std::ops::Range<usize>,
        rows: &mut [f32],
        stride: usize,
        column: usize,
        pixels: usize,
    ) {
        let at = |channel: usize| self.image_first + channel * self.plane + self.pixel_offset + column;
        match self.addend {
            Addend::Outputs(values) if column == 0 && pixels == stride && stride == self.plane => {
                let (from, len) = (at(channels.start) % values.len(), channels.len() * pixels);
                rows[..len].iter_mut().zip(&values[from..from + len]).for_each(|(y, &a)| *y += a);
            }
            Addend::Outputs(values) => {
                for (channel, row) in channels.zip(rows.chunks_mut(stride)) {
                    let from = at(channel) % values.len();
                    row[column..column + pixels]
                        .iter_mut()
                        .zip(&values[from..from + pixels])
                        .for_each(|(y, &a)| *y += a);
                }
            }
            Addend::Channels(values) => {
                for (channel, row) in channels.zip(rows.chunks_mut(stride)) {
                    let a = values[at(channel) / self.plane % values.len()];
                    row[column..column + pixels].iter_mut().for_each(|y| *y += a);
                }
            }
        }
    }
}
