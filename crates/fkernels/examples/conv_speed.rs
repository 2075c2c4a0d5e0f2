//! Time one 3x3 stride-1 convolution (padding 1, no bias) on one thread with the CPU's kernel:
//! `cargo run --release -p edgediff-fkernels --example conv_speed -- C M SIDE REPS`.
//! Prints microseconds per call and the direct form's multiply-adds per second.

use std::time::Instant;

use edgediff_fkernels::{Conv2d, ConvGeometry, Kernel};

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|s| s.parse().ok()).collect();
    let [c, m, side, reps] = args[..] else {
        eprintln!("usage: conv_speed IN_CHANNELS OUT_CHANNELS SIDE REPS");
        std::process::exit(2);
    };
    let g = ConvGeometry { in_channels: c, out_channels: m, kernel: [3, 3], strides: [1, 1], pads: [1; 4] };
    let value = |i: usize, prime: usize| ((i * prime % 1000) as f32 - 500.0) * 1e-3;
    let w: Vec<f32> = (0..m * c * 9).map(|i| value(i, 7919)).collect();
    let x: Vec<f32> = (0..c * side * side).map(|i| value(i, 104_729)).collect();
    let conv = Conv2d::new(&w, g, None, Kernel::detect()).expect("a valid geometry");
    let run = || conv.run(&x, [1, side, side], None).expect("a valid input");
    std::hint::black_box(run());
    let start = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(run());
    }
    let seconds = start.elapsed().as_secs_f64() / reps.max(1) as f64;
    let macs = (m * c * 9 * side * side) as f64;
    println!("{c}->{m} {side}x{side}: {:.1} us, {:.1} GMAC/s direct-equivalent", seconds * 1e6, macs / seconds / 1e9);
}
