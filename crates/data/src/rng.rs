//! Counter-based randomness: every random draw in training is a pure function of a few
//! integers (seed, step, index), so a resumed run sees exactly the bytes an uninterrupted
//! one would have seen, whatever happened before the interruption.

use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// SplitMix64's finaliser: a bijective, well-mixed hash of one u64.
pub fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hashes an ordered list of integers to one u64 (order matters: `mix(&[a, b]) != mix(&[b, a])`).
pub fn mix(parts: &[u64]) -> u64 {
    parts.iter().fold(0x243F_6A88_85A3_08D3, |h, &p| splitmix(h ^ splitmix(p)))
}

/// A small deterministic random stream (xoshiro256++), seeded by a hash.
pub struct Stream(Xoshiro256PlusPlus);

impl Stream {
    pub fn new(seed: u64) -> Self {
        Stream(Xoshiro256PlusPlus::seed_from_u64(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1) with 24 random bits: exactly representable as f32 on every platform.
    pub fn uniform(&mut self) -> f32 {
        (self.0.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in [0, n); n must be > 0. Multiply-shift (Lemire) without rejection:
    /// the bias is below 2^-32 for the n used here, and it is deterministic.
    pub fn below(&mut self, n: u64) -> u64 {
        (((self.0.next_u64() >> 32) * n) >> 32).min(n.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_is_order_sensitive_and_stable() {
        assert_ne!(mix(&[1, 2]), mix(&[2, 1]));
        assert_eq!(mix(&[7, 9]), mix(&[7, 9]));
        let mut s = Stream::new(mix(&[3]));
        let u: Vec<f32> = (0..1000).map(|_| s.uniform()).collect();
        assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = u.iter().sum::<f32>() / 1000.0;
        assert!((mean - 0.5).abs() < 0.05, "mean {mean}");
        let mut s = Stream::new(5);
        assert!((0..1000).all(|_| s.below(7) < 7));
    }
}
