//! Time GroupNorm (32 groups), GroupNorm + SiLU (in place, and from the input into another
//! tensor), SiLU alone, and a softmax of each row of
//! `SIDE x SIDE` values (an attention's scores at 16x16: `256 16 REPS`) on a `C x SIDE x SIDE`
//! f32 tensor on one thread with the CPU's kernel (the copy that restores the input each time
//! is timed alone too, to subtract):
//! `cargo run --release -p edgediff-fkernels --example norm_speed -- [C SIDE REPS]`.

use std::time::Instant;

use edgediff_fkernels::math::{silu_in_place, softmax_rows};
use edgediff_fkernels::norm::{group_norms, group_norms_in_place, Group};
use edgediff_fkernels::Kernel;

const GROUPS: usize = 32;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|s| s.parse().ok()).collect();
    let (c, side, reps) = match args.as_slice() {
        [c, side, reps] => (*c, *side, *reps),
        _ => (128, 32, 2000),
    };
    if c % GROUPS != 0 {
        eprintln!("usage: norm_speed C SIDE REPS, with C a multiple of {GROUPS}");
        std::process::exit(2);
    }
    let plane = side * side;
    let x: Vec<f32> = (0..c * plane).map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3).collect();
    let (gamma, beta) = (vec![1.1f32; c / GROUPS], vec![0.1f32; c / GROUPS]);
    let kernel = Kernel::detect();
    let mut v = x.clone();
    let mut time = |name: &str, f: &dyn Fn(&mut [f32])| {
        let start = Instant::now();
        for _ in 0..reps {
            v.copy_from_slice(&x);
            f(&mut v);
            std::hint::black_box(&mut v);
        }
        println!("{name:>16}: {:8.1} us", start.elapsed().as_secs_f64() * 1e6 / reps.max(1) as f64);
    };
    let groups = vec![Group { plane, eps: 1e-5, gamma: &gamma, beta: &beta }; GROUPS];
    let norm = |v: &mut [f32], silu: bool| group_norms_in_place(kernel, v, &groups, silu);
    time("copy", &|_| {});
    time("group norm", &|v| norm(v, false));
    time("group norm+silu", &|v| norm(v, true));
    time("... from x", &|v| group_norms(kernel, &x, v, &groups, true));
    time("silu", &|v| silu_in_place(kernel, v));
    time("softmax rows", &|v| softmax_rows(kernel, v, plane));
}
