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
