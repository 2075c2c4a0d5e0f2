//! The weights, packed once at load into blocks of [`ROWS`] output channels.

use crate::geometry::Geometry;
use crate::ROWS;

/// Weights as `[M/ROWS][K/4][ROWS][4]` i8, reduction index `((c/4 · kh + i) · kw + j) · 4 + c%4`;
/// rows past `M` and channels past `C` are zero.
#[derive(Debug, Clone)]
pub(crate) struct PackedWeights {
    pub data: Vec<i8>,
    pub k_quads: usize,
    pub rows: usize,
}

impl PackedWeights {
    /// One block of `ROWS` output channels: `[K/4][ROWS][4]`, `k_quads · ROWS · 4` bytes.
    pub fn block(&self, b: usize) -> &[i8] {
        let len = self.k_quads * ROWS * 4;
        &self.data[b * len..(b + 1) * len]
    }

    pub fn blocks(&self) -> usize {
        self.rows.div_ceil(ROWS)
    }
}

pub(crate) fn pack_weights(g: &Geometry, w: &[i8]) -> PackedWeights {
    let (c, kh, kw) = (g.in_channels, g.kernel_h, g.kernel_w);
    let k_quads = g.k_quads();
    let blocks = g.out_channels.div_ceil(ROWS);
    let mut data = vec![0i8; blocks * k_quads * ROWS * 4];
    for m in 0..g.out_channels {
        let (b, r) = (m / ROWS, m % ROWS);
        for ci in 0..c {
            for i in 0..kh {
                for j in 0..kw {
                    let kq = ((ci / 4) * kh + i) * kw + j;
                    let dst = ((b * k_quads + kq) * ROWS + r) * 4 + ci % 4;
                    data[dst] = w[((m * c + ci) * kh + i) * kw + j];
                }
            }
        }
    }
    PackedWeights { data, k_quads, rows: g.out_channels }
}
