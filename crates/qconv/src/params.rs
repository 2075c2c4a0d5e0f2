//! Quantisation parameters: what a caller gives for a `QLinearConv`, and what the kernels apply
//! to the exact i32 sums.

/// Quantisation parameters of one `QLinearConv`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantParams {
    pub x_scale: f32,
    pub x_zero: u8,
    /// One per output channel (a single value applies to all).
    pub w_scales: Vec<f32>,
    pub y_scale: f32,
    pub y_zero: u8,
}

/// What happens to the exact i32 sums.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Epilogue {
    /// `QLinearConv`: [`requantize`](crate::requantize) to u8.
    Requantize { mult: Vec<f32>, y_zero: u8 },
    /// `ConvInteger → Cast(f32) → Mul(scale) [→ Add(bias)]`: [`dequantize`](crate::dequantize) to f32.
    Dequantize { scale: Vec<f32>, bias: Option<Vec<f32>> },
}
