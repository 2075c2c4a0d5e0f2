//! Time one convolution (3x3 with padding 1 and stride 1 unless a window size and stride are
//! given; no bias) on one thread with the CPU's kernel, taking four inputs in turn (`INPUTS=N`
//! for another count):
//! `cargo run --release -p edgediff-fkernels --example conv_speed -- C M SIDE REPS [WINDOW [STRIDE]]`.
//! Prints microseconds per call and the direct form's multiply-adds per second.

use std::time::Instant;

use edgediff_fkernels::{Conv2d, ConvGeometry, Kernel};

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|s| s.parse().ok()).collect();
    let (&[c, m, side, reps], window) = (&args[..4.min(args.len())], args.get(4).copied().unwrap_or(3)) else {
        eprintln!("usage: conv_speed IN_CHANNELS OUT_CHANNELS SIDE REPS [WINDOW [STRIDE]]");
        std::process::exit(2);
    };
    let (k, pad, stride) = (window, window / 2, args.get(5).copied().unwrap_or(1).max(1));
    let g = ConvGeometry { in_channels: c, out_channels: m, kernel: [k, k], strides: [stride; 2], pads: [pad; 4] };
    let (oh, ow) = g.output_size(side, side).expect("the window fits the image");
    let value = |i: usize, prime: usize| ((i * prime % 1000) as f32 - 500.0) * 1e-3;
    let w: Vec<f32> = (0..m * c * k * k).map(|i| value(i, 7919)).collect();
    // Several inputs, taken in turn, so that each call's input is not the last call's (hot in
    // the caches) unless `INPUTS=1`: in a network each layer reads what the one before wrote.
    let inputs = std::env::var("INPUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(4usize).max(1);
    let xs: Vec<Vec<f32>> =
        (0..inputs).map(|n| (0..c * side * side).map(|i| value(i + n, 104_729)).collect()).collect();
    let conv = Conv2d::new(&w, g, None, Kernel::detect()).expect("a valid geometry");
    let mut y = vec![0f32; m * oh * ow];
    let mut run = |x: &[f32]| conv.run_into(x, [1, side, side], None, &mut y).expect("a valid input");
    run(&xs[0]);
    let start = Instant::now();
    for rep in 0..reps {
        run(&xs[rep % inputs]);
    }
    std::hint::black_box(&y);
    let seconds = start.elapsed().as_secs_f64() / reps.max(1) as f64;
    let macs = (m * c * k * k * oh * ow) as f64;
    println!(
        "{c}->{m} {k}x{k}/{stride} {side}x{side}: {:.1} us, {:.1} GMAC/s direct-equivalent",
        seconds * 1e6,
        macs / seconds / 1e9
    );
}
