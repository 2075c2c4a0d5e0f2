/// The shape of one 2-D convolution (one group, no dilation: what edgediff's U-Nets use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub pad_bottom: usize,
    pub pad_right: usize,
}

impl Geometry {
    /// A square `k`x`k` kernel, stride `s`, the same padding `pad` on every side.
    pub fn square(in_channels: usize, out_channels: usize, k: usize, s: usize, pad: usize) -> Geometry {
        Geometry {
            in_channels,
            out_channels,
            kernel_h: k,
            kernel_w: k,
            stride_h: s,
            stride_w: s,
            pad_top: pad,
            pad_left: pad,
            pad_bottom: pad,
            pad_right: pad,
        }
    }

    /// Output height and width for an `h`x`w` input, `None` if the kernel does not fit or a
    /// size is zero.
    pub fn output_size(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let hp = h + self.pad_top + self.pad_bottom;
        let wp = w + self.pad_left + self.pad_right;
        if h == 0 || w == 0 || self.stride_h == 0 || self.stride_w == 0 || self.kernel_h == 0 || self.kernel_w == 0 {
            return None;
        }
        if hp < self.kernel_h || wp < self.kernel_w {
            return None;
        }
        Some(((hp - self.kernel_h) / self.stride_h + 1, (wp - self.kernel_w) / self.stride_w + 1))
    }

    /// Input channels rounded up to a multiple of four (one dot-product group).
    pub(crate) fn channel_quads(&self) -> usize {
        self.in_channels.div_ceil(4)
    }

    /// Reduction length in groups of four: `C/4 · kh · kw`.
    pub(crate) fn k_quads(&self) -> usize {
        self.channel_quads() * self.kernel_h * self.kernel_w
    }
}
