//! Serial against band-parallel time of one int8 3x3 convolution, to place the runtime's
//! threshold for splitting a convolution over threads (`PARALLEL_MACS` in
//! `crates/runtime/src/int8_conv.rs`).
//!
//! ```text
//! cargo run --release -p edgediff-runtime --example parallel_speedup -- [CHANNELS] [SIZE] [THREADS]
//! ```
//! Runs a CHANNELS -> CHANNELS 3x3 convolution on a SIZE x SIZE image (defaults 128, 16, 2),
//! on this thread and split over a rayon pool of THREADS from inside the pool with the
//! runtime's own parallel-for (as the runtime runs a plan), and prints the mean time of each.

use std::time::Instant;

use edgediff_qconv::{Geometry, Input, Kernel, QConv2d, QuantParams};
use edgediff_runtime::threads::parallel_for;

fn main() {
    let arg = |i: usize, default: usize| std::env::args().nth(i).map_or(default, |s| s.parse().expect("a number"));
    let (c, size, threads) = (arg(1, 128), arg(2, 16), arg(3, 2));
    let g = Geometry {
        in_channels: c,
        out_channels: c,
        kernel_h: 3,
        kernel_w: 3,
        stride_h: 1,
        stride_w: 1,
        pad_top: 1,
        pad_left: 1,
        pad_bottom: 1,
        pad_right: 1,
    };
    let w: Vec<i8> = (0..c * c * 9).map(|i| ((i * 7919) % 255) as i8).collect();
    let x: Vec<u8> = (0..c * size * size).map(|i| ((i * 31) % 251) as u8).collect();
    let p = QuantParams { x_scale: 0.02, x_zero: 128, w_scales: vec![0.003; c], y_scale: 0.5, y_zero: 120 };
    let conv = QConv2d::qlinear(g, &w, None, &p, Kernel::detect()).expect("a valid convolution");
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool");
    let parallel = |jobs: usize, job: &(dyn Fn(usize) + Sync)| parallel_for(&pool, jobs, job);
    let reps = (2_000_000_000 / conv.macs_per_image(size, size).max(1)).clamp(10, 2000);
    let time = |f: &dyn Fn()| {
        f();
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        t.elapsed().as_secs_f64() * 1e6 / reps as f64
    };
    let serial = time(&|| drop(conv.run(Input::U8(&x), 1, size, size).expect("runs")));
    let split =
        pool.install(|| time(&|| drop(conv.run_parallel(Input::U8(&x), 1, size, size, &parallel).expect("runs"))));
    println!(
        "{c} channels, {size}x{size}, {:.1} M MACs: serial {serial:.1} us, {threads} threads {split:.1} us ({:.2}x)",
        conv.macs_per_image(size, size) as f64 / 1e6,
        serial / split
    );
}
