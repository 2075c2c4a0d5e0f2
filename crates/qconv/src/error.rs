//! Why a convolution could not be built or run.

/// An invalid argument to a [`crate::QConv2d`] constructor or run.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QConvError {
    #[error("weights have {got} values, expected {want} (out {m} x in {c} x {kh} x {kw})")]
    WeightLen { got: usize, want: usize, m: usize, c: usize, kh: usize, kw: usize },
    #[error("{what} has {got} values, expected {want}")]
    ParamLen { what: &'static str, got: usize, want: usize },
    #[error("{0} must be finite and positive")]
    Scale(&'static str),
    #[error("input is {got} bytes, expected {want} (N x C x H x W)")]
    InputLen { got: usize, want: usize },
    #[error("a {h}x{w} input is smaller than the padded {kh}x{kw} kernel")]
    TooSmall { h: usize, w: usize, kh: usize, kw: usize },
    #[error("this CPU cannot run the {0} kernel")]
    UnsupportedKernel(&'static str),
    #[error("a channels-last input needs a 1x1 kernel with stride 1 and no padding")]
    NotPointwise,
    #[error("a convolution with input multipliers needs an f32 input")]
    MultipliedU8,
    #[error("output buffer holds {got} values, expected {want} (N x M x HO x WO)")]
    OutputLen { got: usize, want: usize },
    #[error("output buffer is {got}, but this convolution outputs {want}")]
    OutputType { got: &'static str, want: &'static str },
    #[error("an addend needs an f32 output")]
    AddendOnU8,
    #[error("addend has {got} values, expected {per_image} or {all} (one image, or every image)")]
    AddendLen { got: usize, per_image: usize, all: usize },
}
