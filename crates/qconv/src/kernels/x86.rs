//! x86_64 with AVX-512 VNNI: `vpdpbusd` multiplies 64 unsigned activation bytes by 64 signed
//! weight bytes and adds each group of four products into one of 16 i32 lanes, i.e. one
//! instruction does four reduction steps for 16 output pixels of one output channel. The
//! epilogue runs in the same registers, with explicit round-to-nearest-even conversions.

use std::arch::x86_64::*;

use super::{Block, BlockEpilogue, Out};
use crate::pack::Columns;
use crate::{ROWS, TILE};

const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn block(block: &Block<'_>, cols: &Columns<'_>, mut out: Out<'_>) {
    let pixels = cols.pixels;
    for p0 in (0..pixels).step_by(TILE) {
        let mut acc = [_mm512_setzero_si512(); ROWS];
        let mut x = cols.data.as_ptr().add(p0 * 4);
        let mut w = block.weights.as_ptr() as *const i32;
        for _ in 0..cols.k_quads {
            let xv = _mm512_loadu_si512(x as *const _);
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm512_dpbusd_epi32(*a, xv, _mm512_set1_epi32(w.add(r).read_unaligned()));
            }
            x = x.add(cols.stride * 4);
            w = w.add(ROWS);
        }
        let valid = (pixels - p0).min(TILE);
        let mask: __mmask16 = if valid == TILE { 0xffff } else { (1u16 << valid) - 1 };
        for (r, &off) in block.offsets.iter().enumerate() {
            let v = _mm512_cvt_roundepi32_ps::<NEAREST>(_mm512_add_epi32(acc[r], _mm512_set1_epi32(off)));
            match (&mut out, block.epilogue) {
                (Out::U8(o), BlockEpilogue::Requantize { mult, y_zero }) => {
                    let f = _mm512_mul_ps(v, _mm512_set1_ps(mult[r]));
                    let f = _mm512_min_ps(_mm512_max_ps(f, _mm512_set1_ps(-512.0)), _mm512_set1_ps(512.0));
                    let q = _mm512_add_epi32(_mm512_cvt_roundps_epi32::<NEAREST>(f), _mm512_set1_epi32(y_zero as i32));
                    let q = _mm512_min_epi32(_mm512_max_epi32(q, _mm512_setzero_si512()), _mm512_set1_epi32(255));
                    _mm512_mask_cvtepi32_storeu_epi8(
                        o.as_mut_ptr().add(r * cols.out_stride + cols.out_first + p0) as *mut i8,
                        mask,
                        q,
                    );
                }
                (Out::F32(o), BlockEpilogue::Dequantize { scale, bias }) => {
                    let mut f = _mm512_mul_ps(v, _mm512_set1_ps(scale[r]));
                    if let Some(b) = bias {
                        f = _mm512_add_ps(f, _mm512_set1_ps(b[r]));
                    }
                    _mm512_mask_storeu_ps(o.as_mut_ptr().add(r * cols.out_stride + cols.out_first + p0), mask, f);
                }
                _ => unreachable!("QConv2d::run allocates the output its epilogue writes"),
            }
        }
    }
}
