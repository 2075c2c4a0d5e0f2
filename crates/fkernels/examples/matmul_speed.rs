//! Time one matrix product `[ROWS, K] x [K, M]` (weights packed once, no bias) on one thread
//! with the CPU's kernel, and the packing of its weights alone:
//! `cargo run --release -p edgediff-fkernels --example matmul_speed -- ROWS K M REPS`.
//! Prints microseconds per product and per packing, and multiply-adds per second.

use std::time::Instant;

use edgediff_fkernels::{Kernel, MatMul, WeightLayout};

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|s| s.parse().ok()).collect();
    let &[rows, k, m, reps] = &args[..] else {
        eprintln!("usage: matmul_speed ROWS K M REPS");
        std::process::exit(2);
    };
    let value = |i: usize, prime: usize| ((i * prime % 1000) as f32 - 500.0) * 1e-3;
    let w: Vec<f32> = (0..k * m).map(|i| value(i, 7919)).collect();
    let x: Vec<f32> = (0..rows * k).map(|i| value(i, 104_729)).collect();
    let kernel = Kernel::detect();
    let timed = |f: &mut dyn FnMut()| {
        f();
        let start = Instant::now();
        for _ in 0..reps {
            f();
        }
        start.elapsed().as_secs_f64() / reps.max(1) as f64
    };
    let pack = timed(&mut || {
        std::hint::black_box(MatMul::new(&w, WeightLayout::KByM, k, m, None, kernel).expect("valid sizes"));
    });
    let product = MatMul::new(&w, WeightLayout::KByM, k, m, None, kernel).expect("valid sizes");
    let mut y = vec![0f32; rows * m];
    let seconds = timed(&mut || product.run_into(&x, rows, None, &mut y).expect("valid sizes"));
    std::hint::black_box(&y);
    println!(
        "[{rows}x{k}] x [{k}x{m}]: {:.1} us, {:.1} GMAC/s; packing {:.1} us",
        seconds * 1e6,
        (rows * k * m) as f64 / seconds / 1e9,
        pack * 1e6
    );
}
