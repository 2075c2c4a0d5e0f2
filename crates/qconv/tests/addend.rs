//! An addend fused into the output pass gives the bytes of adding it after the convolution: on
//! every kernel, through each way a call runs (bands of rows on one thread, windows read in
//! place, blocks of channels or bands of rows split over threads), for each shape of addend.

use edgediff_qconv::{Addend, Geometry, Input, Kernel, OutputMut, QConv2d, QConvError, QuantParams};

/// A parallel-for on three scoped threads, each taking every third job from the end.
fn three_threads(jobs: usize, job: &(dyn Fn(usize) + Sync)) {
    std::thread::scope(|s| {
        for t in 0..3 {
            s.spawn(move || (0..jobs).rev().skip(t).step_by(3).for_each(job));
        }
    });
}

/// `n` values in [-1, 1) from `seed`, by a fixed integer rule.
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919 + seed * 104_729) % 2000) as f32 / 1000.0 - 1.0).collect()
}

#[test]
fn a_fused_addend_gives_the_bytes_of_a_separate_add() {
    // 70 channels split over blocks with threads; 24 over bands of rows (four bands of ten); a
    // 1x1 window.
    for (g, n, side) in [
        (Geometry::square(12, 70, 3, 1, 1), 2, 16),
        (Geometry::square(32, 24, 3, 1, 1), 2, 40),
        (Geometry::square(16, 16, 1, 1, 0), 2, 9),
    ] {
        let (m, pixels) = (g.out_channels, side * side);
        let x = values(n * g.in_channels * pixels, 1);
        let wt: Vec<i8> = (0..m * g.in_channels * g.kernel_h * g.kernel_w).map(|i| (i * 37 % 255) as i8).collect();
        let scale: Vec<f32> = (0..m).map(|i| 1e-3 * (1 + i % 5) as f32).collect();
        let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.1 - 0.5).collect();
        let (outputs, channels) = (values(n * m * pixels, 2), values(n * m, 3));
        let kernels = Kernel::all().iter().copied().filter(|k| k.is_supported());
        for kernel in kernels {
            let conv = QConv2d::integer(g, &wt, 0.013, 128, scale.clone(), Some(bias.clone()), kernel).unwrap();
            let mut plain = vec![0f32; n * m * pixels];
            conv.run_into(Input::F32(&x), [n, side, side], None, OutputMut::F32(&mut plain)).unwrap();
            for addend in [
                Addend::Outputs(&outputs),
                Addend::Outputs(&outputs[..m * pixels]),
                Addend::Channels(&channels),
                Addend::Channels(&channels[..m]),
            ] {
                let want: Vec<u32> = plain
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| match addend {
                        Addend::Outputs(a) => v + a[i % a.len()],
                        Addend::Channels(a) => v + a[i / pixels % a.len()],
                    })
                    .map(f32::to_bits)
                    .collect();
                for parallel in [None, Some(&three_threads as edgediff_qconv::ParallelFor)] {
                    let mut got = vec![f32::NAN; plain.len()];
                    let dims = [n, side, side];
                    conv.run_into_adding(Input::F32(&x), dims, parallel, Some(addend), OutputMut::F32(&mut got))
                        .unwrap();
                    let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
                    let name = kernel.name();
                    assert!(got == want, "{name} {g:?} {addend:?} threads {}", parallel.is_some());
                }
            }
        }
    }
}

#[test]
fn an_addend_of_the_wrong_length_or_on_a_u8_output_is_refused() {
    let g = Geometry::square(4, 8, 1, 1, 0);
    let conv = QConv2d::integer(g, &[1; 32], 0.1, 128, vec![0.01; 8], None, Kernel::detect()).unwrap();
    let (x, mut y) = (vec![0.5f32; 2 * 4 * 9], vec![0f32; 2 * 8 * 9]);
    let wrong = vec![0f32; 7];
    let error =
        conv.run_into_adding(Input::F32(&x), [2, 3, 3], None, Some(Addend::Channels(&wrong)), OutputMut::F32(&mut y));
    assert_eq!(error.unwrap_err(), QConvError::AddendLen { got: 7, per_image: 8, all: 16 });
    let p = QuantParams { x_scale: 0.02, x_zero: 128, w_scales: vec![0.004], y_scale: 0.3, y_zero: 117 };
    let requantized = QConv2d::qlinear(g, &[1; 32], None, &p, Kernel::detect()).unwrap();
    let mut y8 = vec![0u8; 2 * 8 * 9];
    let addend = Some(Addend::Channels(&[0.0; 8]));
    let error = requantized.run_into_adding(Input::F32(&x), [2, 3, 3], None, addend, OutputMut::U8(&mut y8));
    assert_eq!(error.unwrap_err(), QConvError::AddendOnU8);
}
