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
