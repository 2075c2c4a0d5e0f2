//! PNG output with provenance in tEXt chunks, written atomically.

use std::path::Path;

use anyhow::{Context, Result};
use edgediff_io::write_atomic;

/// An 8-bit image: `channels` = 1 (grey) or 3 (RGB), interleaved rows.
pub struct Picture {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub pixels: Vec<u8>,
}

impl Picture {
    /// Lays out square tiles of side `size` in a near-square grid, row-major.
    pub fn grid(tiles: &[Vec<u8>], size: usize, channels: usize) -> Picture {
        let n = tiles.len().max(1);
        let cols = (1..=n).find(|c| c * c >= n).unwrap_or(n);
        let rows = n.div_ceil(cols);
        let (width, height) = (cols * size, rows * size);
        let mut pixels = vec![0u8; width * height * channels];
        for (k, tile) in tiles.iter().enumerate() {
            let (gx, gy) = ((k % cols) * size, (k / cols) * size);
            for y in 0..size {
                let src = &tile[y * size * channels..(y + 1) * size * channels];
                let start = ((gy + y) * width + gx) * channels;
                pixels[start..start + size * channels].copy_from_slice(src);
            }
        }
        Picture { width, height, channels, pixels }
    }

    /// The picture `n` times as wide and high, each pixel repeated (nearest neighbour).
    pub fn upscaled(self, n: usize) -> Picture {
        if n <= 1 {
            return self;
        }
        let (c, width, height) = (self.channels, self.width * n, self.height * n);
        let mut pixels = Vec::with_capacity(width * height * c);
        for row in self.pixels.chunks_exact(self.width * c) {
            let wide: Vec<u8> = row.chunks_exact(c).flat_map(|px| px.repeat(n)).collect();
            for _ in 0..n {
                pixels.extend_from_slice(&wide);
            }
        }
        Picture { width, height, channels: c, pixels }
    }

    /// Encodes as PNG with the given tEXt chunks (keyword, text).
    pub fn encode(&self, text: &[(String, String)]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
            enc.set_color(if self.channels == 1 { png::ColorType::Grayscale } else { png::ColorType::Rgb });
            enc.set_depth(png::BitDepth::Eight);
            for (k, v) in text {
                enc.add_text_chunk(k.clone(), v.clone()).context("PNG text chunk")?;
            }
            let mut w = enc.write_header().context("PNG header")?;
            w.write_image_data(&self.pixels).context("PNG data")?;
            w.finish().context("PNG end")?;
        }
        Ok(out)
    }

    pub fn save(&self, path: &Path, text: &[(String, String)]) -> Result<()> {
        let bytes = self.encode(text)?;
        write_atomic(path, &bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upscaling_repeats_each_pixel_n_by_n() {
        let pic = Picture { width: 2, height: 1, channels: 3, pixels: vec![1, 2, 3, 4, 5, 6] };
        let big = pic.upscaled(2);
        assert_eq!((big.width, big.height), (4, 2));
        let row = [1, 2, 3, 1, 2, 3, 4, 5, 6, 4, 5, 6];
        assert_eq!(big.pixels, [row, row].concat());
    }
}
