//! The padded, channel-interleaved copy of one input image (`[C/4][hp][wp][4]`) that the column
//! matrices are cut from: one im2col row for a kernel tap and four channels is then a plain copy.

use super::copy::AlignedBuffer;
use crate::geometry::Geometry;
use crate::kernel::Kernel;

/// [`pad_image`], compiled for AVX-512 where the VNNI kernel runs (see
/// [`super::pack_columns_for`]). `kernel` must be supported by this CPU (every
/// `QConv2d::kernel` is).
pub(crate) fn pad_image_for(
    kernel: Kernel,
    g: &Geometry,
    image: &[u8],
    h: usize,
    w: usize,
    x_zero: u8,
    padded: &mut AlignedBuffer,
) {
    let signed = kernel.signed_activations();
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx512Vnni {
        // SAFETY: the CPU has AVX-512 F and BW: `kernel` comes from a `QConv2d`, whose `build`
        // refuses kernels `Kernel::is_supported` denies, and that detects F, BW and VNNI.
        return unsafe { pad_image_avx512(g, image, h, w, x_zero, signed, padded) };
    }
    pad_image(g, image, h, w, x_zero, signed, padded)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn pad_image_avx512(
    g: &Geometry,
    image: &[u8],
    h: usize,
    w: usize,
    x_zero: u8,
    signed: bool,
    padded: &mut AlignedBuffer,
) {
    pad_image(g, image, h, w, x_zero, signed, padded)
}

/// `[C/4][hp][wp][4]`, padding = `x_zero`; with `signed` every byte is flipped by `0x80`.
/// Each byte is written once: the padding rows and columns filled, the rest copied (filling the
/// whole buffer first was 2-7% of a layer's time).
#[inline(always)]
pub(super) fn pad_image(
    g: &Geometry,
    image: &[u8],
    h: usize,
    w: usize,
    x_zero: u8,
    signed: bool,
    padded: &mut AlignedBuffer,
) {
    let (hp, wp) = (h + g.pad_top + g.pad_bottom, w + g.pad_left + g.pad_right);
    let quads = g.channel_quads();
    let flip = if signed { 0x80 } else { 0 };
    let fill = x_zero ^ flip;
    let padded = padded.resize(quads * hp * wp * 4, fill);
    let pad_channel = vec![x_zero; w];
    let flip4 = u32::from_ne_bytes([flip; 4]);
    for (q, plane) in padded.chunks_exact_mut(hp * wp * 4).enumerate() {
        let (top, rest) = plane.split_at_mut(g.pad_top * wp * 4);
        let (middle, bottom) = rest.split_at_mut(h * wp * 4);
        top.fill(fill);
        bottom.fill(fill);
        for (y, padded_row) in middle.chunks_exact_mut(wp * 4).enumerate() {
            let (left, rest) = padded_row.split_at_mut(g.pad_left * 4);
            let (dst, right) = rest.split_at_mut(w * 4);
            // A pixel or two each side: word stores (`fill` on these short slices is a
            // `memset` call per row on aarch64).
            for pixel in left.chunks_exact_mut(4).chain(right.chunks_exact_mut(4)) {
                pixel.copy_from_slice(&[fill; 4]);
            }
            // The same row of four channels (missing channels read as x_zero) ...
            let row = |lane: usize| {
                let c = q * 4 + lane;
                if c < g.in_channels {
                    &image[(c * h + y) * w..][..w]
                } else {
                    &pad_channel[..]
                }
            };
            let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
            // ... interleaved into one padded row, four bytes per pixel (one little-endian word
            // per pixel: a form the compiler vectorises).
            for ((((d, &a), &b), &c), &e) in dst.chunks_exact_mut(4).zip(r0).zip(r1).zip(r2).zip(r3) {
                let word = (a as u32 | (b as u32) << 8 | (c as u32) << 16 | (e as u32) << 24) ^ flip4;
                d.copy_from_slice(&word.to_le_bytes());
            }
        }
    }
}
