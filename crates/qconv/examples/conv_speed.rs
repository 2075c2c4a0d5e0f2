//! Times one convolution per kernel on a U-Net-sized layer (wall clock, for quick comparisons;
//! the criterion benches measure whole networks).
//!
//! ```text
//! cargo run --release -p edgediff-qconv --example conv_speed -- [C M K H ITERS]
//! ```
//!
//! `FAST_ONLY=1` skips the portable kernel; `ONLY=avx512-vnni` (a kernel's name) times that
//! one alone.

use std::time::Instant;

use edgediff_qconv::{Geometry, Input, Kernel, QConv2d};

fn main() {
    let a: Vec<usize> = std::env::args().skip(1).map(|s| s.parse().expect("numbers")).collect();
    let (c, m, k, h, iters) = match a.as_slice() {
        [c, m, k, h, i] => (*c, *m, *k, *h, *i),
        _ => (64, 64, 3, 16, 2000),
    };
    let g = Geometry::square(c, m, k, 1, k / 2);
    let w: Vec<i8> = (0..m * c * k * k).map(|i| ((i * 37) % 255) as i8 / 2).collect();
    let x: Vec<f32> = (0..c * h * h).map(|i| ((i * 13) % 101) as f32 / 50.0 - 1.0).collect();
    let macs = (m * c * k * k * h * h) as f64;
    let fast_only = std::env::var_os("FAST_ONLY").is_some();
    let only = std::env::var("ONLY").ok();
    let kernels = Kernel::all().iter().filter(|k| {
        k.is_supported() && !(fast_only && **k == Kernel::Portable) && only.as_deref().is_none_or(|o| o == k.name())
    });
    for &kernel in kernels {
        let conv = QConv2d::integer(g, &w, 0.01, 128, vec![1e-4; m], Some(vec![0.1; m]), kernel).unwrap();
        let _ = conv.run(Input::F32(&x), 1, h, h).unwrap();
        let t = Instant::now();
        for _ in 0..iters {
            std::hint::black_box(conv.run(Input::F32(&x), 1, h, h).unwrap());
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / iters as f64;
        println!("{:>12}: {c}->{m} {k}x{k} on {h}x{h}: {us:8.1} us/call, {:.1} GMAC/s", kernel.name(), macs / us / 1e3);
    }
}
