//! Every kernel this CPU has must give exactly the bytes of a naive QLinearConv written from
//! the ONNX definition, for the shapes edgediff's U-Nets use and for awkward ones (channel
//! counts not a multiple of 4, pixel counts not a multiple of 16, stride 2, asymmetric pads).

use edgediff_qconv::{
    dequantize, quantize, requantize, Geometry, Input, Kernel, Output, OutputMut, QConv2d, QConvError, QuantParams,
};

/// xorshift64*: test data only.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 56) as u8).collect()
    }
}

/// The ONNX definition, one output value at a time: the exact i32 sums of `x`, `[n][C][h][w]`.
fn naive(g: &Geometry, x: &[u8], (n, h, w): (usize, usize, usize), wt: &[i8], bias: &[i32], x_zero: u8) -> Vec<i32> {
    let (ho, wo) = g.output_size(h, w).unwrap();
    let mut out = Vec::new();
    for b in 0..n {
        for m in 0..g.out_channels {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = bias[m];
                    for c in 0..g.in_channels {
                        for i in 0..g.kernel_h {
                            for j in 0..g.kernel_w {
                                let iy = (oy * g.stride_h + i) as isize - g.pad_top as isize;
                                let ix = (ox * g.stride_w + j) as isize - g.pad_left as isize;
                                let inside = iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w;
                                let xv = if inside {
                                    x[((b * g.in_channels + c) * h + iy as usize) * w + ix as usize]
                                } else {
                                    x_zero
                                };
                                let wv = wt[((m * g.in_channels + c) * g.kernel_h + i) * g.kernel_w + j];
                                acc += (xv as i32 - x_zero as i32) * wv as i32;
                            }
                        }
                    }
                    out.push(acc);
                }
            }
        }
    }
    out
}

/// Every kernel this CPU can run (on x86_64 with AVX-512 VNNI: all four).
fn kernels() -> Vec<Kernel> {
    let k: Vec<Kernel> = Kernel::all().iter().copied().filter(|k| k.is_supported()).collect();
    eprintln!("kernels on this CPU: {:?}", k.iter().map(|k| k.name()).collect::<Vec<_>>());
    k
}

/// A parallel-for on three scoped threads, each taking every third job from the end, so jobs
/// run out of order and at the same time.
fn three_threads(jobs: usize, job: &(dyn Fn(usize) + Sync)) {
    std::thread::scope(|s| {
        for t in 0..3 {
            s.spawn(move || (0..jobs).rev().skip(t).step_by(3).for_each(job));
        }
    });
}

fn check(g: Geometry, n: usize, h: usize, w: usize, seed: u64) {
    let mut rng = Rng(seed | 1);
    let x = rng.bytes(n * g.in_channels * h * w);
    // Symmetric weights never use -128.
    let wt: Vec<i8> = rng
        .bytes(g.out_channels * g.in_channels * g.kernel_h * g.kernel_w)
        .iter()
        .map(|&b| (b as i8).max(-127))
        .collect();
    let bias: Vec<i32> = (0..g.out_channels).map(|_| (rng.next() % 20001) as i32 - 10000).collect();
    let w_scales: Vec<f32> = (0..g.out_channels).map(|_| 0.002 + (rng.next() % 1000) as f32 * 1e-5).collect();
    // Output scale chosen so values spread over the u8 range and some saturate.
    let fan_in = (g.in_channels * g.kernel_h * g.kernel_w) as f32;
    let p =
        QuantParams { x_scale: 0.02, x_zero: 131, w_scales, y_scale: 0.02 * 0.007 * fan_in.sqrt() * 12.0, y_zero: 117 };
    let acc = naive(&g, &x, (n, h, w), &wt, &bias, p.x_zero);
    let pixels = acc.len() / (n * g.out_channels);
    let channel = |i: usize| (i / pixels) % g.out_channels;
    let want: Vec<u8> = acc
        .iter()
        .enumerate()
        .map(|(i, &a)| requantize(a, (p.x_scale * p.w_scales[channel(i)]) / p.y_scale, p.y_zero))
        .collect();
    let distinct = want.iter().collect::<std::collections::HashSet<_>>().len();
    assert!(distinct >= (want.len() / 4).min(100), "test data too flat: {distinct} distinct outputs");
    if want.len() >= 2000 {
        assert!(want.contains(&0) && want.contains(&255), "test data should saturate both ends");
    }
    for k in kernels() {
        let conv = QConv2d::qlinear(g, &wt, Some(&bias), &p, k).unwrap();
        let (got, ho, wo) = conv.run(Input::U8(&x), n, h, w).unwrap();
        assert_eq!((ho, wo), g.output_size(h, w).unwrap());
        let Output::U8(got) = got else { panic!("QLinearConv returns u8") };
        let bad = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(bad, 0, "{} kernel, {g:?} on {n}x{h}x{w}: {bad} of {} bytes differ", k.name(), want.len());
        let (parallel, ..) = conv.run_parallel(Input::U8(&x), n, h, w, &three_threads).unwrap();
        assert_eq!(parallel, Output::U8(want.clone()), "{} kernel, {g:?}: run_parallel differs", k.name());
        // Into a buffer that holds something else: every byte is written, on one and three threads.
        for (fill, threads) in [(0xa5u8, false), (0x5a, true)] {
            let mut out = vec![fill; want.len()];
            let par: Option<edgediff_qconv::ParallelFor> = if threads { Some(&three_threads) } else { None };
            assert_eq!(conv.run_into(Input::U8(&x), [n, h, w], par, OutputMut::U8(&mut out)).unwrap(), (ho, wo));
            assert!(out == want, "{} kernel, {g:?}: run_into differs (threads {threads})", k.name());
        }
    }

    // The ConvInteger form, from f32 activations: quantise, exact sums, f32(acc)·scale + bias.
    let xf: Vec<f32> = x.iter().enumerate().map(|(i, &v)| (v as f32 - 120.0) * 0.031 + (i % 7) as f32 * 1e-3).collect();
    let (x_scale, x_zero) = (0.029f32, 124u8);
    let xq: Vec<u8> = xf.iter().map(|&v| quantize(v, 1.0 / x_scale, x_zero)).collect();
    let zero_bias = vec![0; g.out_channels];
    let acc = naive(&g, &xq, (n, h, w), &wt, &zero_bias, x_zero);
    let scale: Vec<f32> = p.w_scales.iter().map(|s| s * x_scale).collect();
    let fbias: Vec<f32> = bias.iter().map(|&b| b as f32 * 1e-4).collect();
    for with_bias in [false, true] {
        let want: Vec<u32> = acc
            .iter()
            .enumerate()
            .map(|(i, &a)| dequantize(a, scale[channel(i)], with_bias.then(|| fbias[channel(i)])).to_bits())
            .collect();
        for k in kernels() {
            let conv =
                QConv2d::integer(g, &wt, x_scale, x_zero, scale.clone(), with_bias.then(|| fbias.clone()), k).unwrap();
            let (got, ..) = conv.run(Input::F32(&xf), n, h, w).unwrap();
            let (parallel, ..) = conv.run_parallel(Input::F32(&xf), n, h, w, &three_threads).unwrap();
            assert_eq!(parallel, got, "{} kernel, integer form: run_parallel differs", k.name());
            for threads in [false, true] {
                let mut out = vec![f32::NAN; want.len()];
                let par: Option<edgediff_qconv::ParallelFor> = if threads { Some(&three_threads) } else { None };
                conv.run_into(Input::F32(&xf), [n, h, w], par, OutputMut::F32(&mut out)).unwrap();
                assert_eq!(Output::F32(out), got, "{} kernel, integer form: run_into differs", k.name());
            }
            let Output::F32(got) = got else { panic!("the integer form returns f32") };
            let bad = got.iter().zip(&want).filter(|(a, b)| a.to_bits() != **b).count();
            assert_eq!(
                bad,
                0,
                "{} kernel, integer form, bias {with_bias}, {g:?}: {bad} of {} values differ",
                k.name(),
                want.len()
            );
        }
    }
}

#[test]
fn unet_shapes() {
    check(Geometry::square(32, 32, 3, 1, 1), 1, 16, 16, 1);
    check(Geometry::square(64, 128, 3, 1, 1), 2, 8, 8, 2);
    check(Geometry::square(64, 64, 3, 2, 1), 1, 8, 8, 3);
    check(Geometry::square(128, 64, 1, 1, 0), 1, 4, 4, 4);
}

#[test]
fn awkward_shapes() {
    check(Geometry::square(3, 5, 3, 1, 1), 1, 7, 5, 5);
    check(Geometry::square(9, 13, 3, 2, 0), 3, 11, 9, 6);
    let g = Geometry {
        pad_top: 0,
        pad_left: 2,
        pad_bottom: 1,
        pad_right: 0,
        kernel_w: 2,
        ..Geometry::square(6, 17, 3, 1, 0)
    };
    check(g, 1, 6, 19, 7);
    check(Geometry::square(1, 1, 1, 1, 0), 1, 1, 1, 8);
    // One band, its 6 blocks of output channels split over two jobs, the last block partial.
    check(Geometry::square(16, 45, 3, 1, 1), 1, 5, 5, 12);
}

/// Column matrices over 32 KiB are packed a band of output rows at a time on one thread (whole
/// tiles where the row width allows, partial tiles in every band otherwise, stride 2); the
/// bytes must not change.
#[test]
fn banded_columns() {
    check(Geometry::square(128, 64, 3, 1, 1), 1, 16, 16, 9);
    check(Geometry::square(64, 24, 3, 1, 1), 2, 20, 13, 10);
    check(Geometry::square(48, 16, 3, 2, 1), 1, 30, 30, 11);
}

/// Stride-1 convolutions whose output width is whole tiles, which the AVX-512 VNNI kernel reads
/// in place from the padded image (no columns packed): asymmetric pads with a 3x2 kernel and
/// channels not a multiple of 4 over two images, a 32x32 layer in bands of rows split over
/// threads, a 1x1 layer, and 70 output channels split over threads (9 blocks, the last
/// partial).
#[test]
fn windows_read_in_place() {
    let g = Geometry {
        pad_top: 2,
        pad_left: 1,
        pad_bottom: 0,
        pad_right: 0,
        kernel_w: 2,
        ..Geometry::square(6, 11, 3, 1, 0)
    };
    check(g, 2, 9, 16, 13);
    check(Geometry::square(64, 24, 3, 1, 1), 1, 32, 32, 14);
    check(Geometry::square(30, 20, 1, 1, 0), 2, 3, 32, 15);
    check(Geometry::square(12, 70, 3, 1, 1), 2, 5, 16, 16);
}

/// `run_channels_last` (a matrix product's `[pixels][C]` operand) gives the bytes `run` gives
/// on the transposed image, for every kernel, with the f32 and the u8 input forms, and so does
/// `run_channels_last_parallel`: over blocks of output channels where there are eight blocks
/// (64 and 72 channels), else over bands of 64 pixels (150 is three, the last short).
#[test]
fn channels_last_is_the_transposed_run() {
    let shapes =
        [(64, 64, 64, 1u64), (13, 10, 5, 2), (3, 17, 33, 3), (128, 8, 1, 4), (40, 24, 150, 5), (64, 72, 150, 6)];
    for (c, m, pixels, seed) in shapes {
        let g = Geometry::square(c, m, 1, 1, 0);
        let mut rng = Rng(seed | 1);
        let rows = rng.bytes(pixels * c);
        let xf: Vec<f32> = rows.iter().map(|&v| (v as f32 - 128.0) * 0.013).collect();
        let transposed =
            |v: &[f32]| -> Vec<f32> { (0..c).flat_map(|ci| (0..pixels).map(move |p| v[p * c + ci])).collect() };
        let wt: Vec<i8> = rng.bytes(m * c).iter().map(|&b| (b as i8).max(-127)).collect();
        let scale: Vec<f32> = (0..m).map(|i| 1e-3 * (1 + i % 5) as f32).collect();
        let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.1 - 0.5).collect();
        let p = QuantParams { x_scale: 0.02, x_zero: 131, w_scales: vec![0.004], y_scale: 0.3, y_zero: 117 };
        for k in kernels() {
            let conv = QConv2d::integer(g, &wt, 0.013, 128, scale.clone(), Some(bias.clone()), k).unwrap();
            let (Output::F32(want), ..) = conv.run(Input::F32(&transposed(&xf)), 1, 1, pixels).unwrap() else {
                panic!("f32 out")
            };
            let Output::F32(got) = conv.run_channels_last(Input::F32(&xf), pixels).unwrap() else { panic!("f32 out") };
            let bad = got.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!((got.len(), bad), (m * pixels, 0), "{} kernel, {c}->{m} x {pixels}", k.name());
            let Output::F32(split) = conv.run_channels_last_parallel(Input::F32(&xf), pixels, &three_threads).unwrap()
            else {
                panic!("f32 out")
            };
            assert!(split.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{} kernel, split", k.name());
            for threads in [false, true] {
                let mut into = vec![f32::NAN; want.len()];
                let par: Option<edgediff_qconv::ParallelFor> = if threads { Some(&three_threads) } else { None };
                conv.run_channels_last_into(Input::F32(&xf), pixels, par, OutputMut::F32(&mut into)).unwrap();
                let same = into.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{} kernel, run_channels_last_into (threads {threads})", k.name());
            }

            let conv = QConv2d::qlinear(g, &wt, None, &p, k).unwrap();
            let rows = &rows;
            let image: Vec<u8> = (0..c).flat_map(|ci| (0..pixels).map(move |px| rows[px * c + ci])).collect();
            let (want, ..) = conv.run(Input::U8(&image), 1, 1, pixels).unwrap();
            let got = conv.run_channels_last(Input::U8(rows), pixels).unwrap();
            assert_eq!(got, want, "{} kernel, u8, {c}->{m} x {pixels}", k.name());
            let split = conv.run_channels_last_parallel(Input::U8(rows), pixels, &three_threads).unwrap();
            assert_eq!(split, want, "{} kernel, u8, split, {c}->{m} x {pixels}", k.name());
        }
    }
    let conv3 =
        QConv2d::integer(Geometry::square(4, 4, 3, 1, 1), &[1; 144], 0.1, 0, vec![1.0; 4], None, Kernel::Portable)
            .unwrap();
    assert_eq!(conv3.run_channels_last(Input::F32(&[0.0; 8]), 2).unwrap_err(), QConvError::NotPointwise);
    let conv1 =
        QConv2d::integer(Geometry::square(4, 4, 1, 1, 0), &[1; 16], 0.1, 0, vec![1.0; 4], None, Kernel::Portable)
            .unwrap();
    assert_eq!(
        conv1.run_channels_last(Input::F32(&[0.0; 7]), 2).unwrap_err(),
        QConvError::InputLen { got: 7, want: 8 }
    );
}

#[test]
fn bad_input_is_an_error() {
    let g = Geometry::square(4, 8, 3, 1, 1);
    let p = QuantParams { x_scale: 0.1, x_zero: 0, w_scales: vec![0.1], y_scale: 0.1, y_zero: 0 };
    let conv = QConv2d::qlinear(g, &[0; 4 * 8 * 9], None, &p, Kernel::Portable).unwrap();
    assert_eq!(conv.run(Input::U8(&[0; 10]), 1, 4, 4).unwrap_err(), QConvError::InputLen { got: 10, want: 64 });
    assert!(matches!(QConv2d::qlinear(g, &[0; 5], None, &p, Kernel::Portable), Err(QConvError::WeightLen { .. })));
    let zero_scale = QuantParams { y_scale: 0.0, ..p.clone() };
    assert_eq!(
        QConv2d::qlinear(g, &[0; 288], None, &zero_scale, Kernel::Portable).unwrap_err(),
        QConvError::Scale("y_scale")
    );
    let short = QConv2d::integer(g, &[0; 288], 0.1, 0, vec![0.1; 7], None, Kernel::Portable).unwrap_err();
    assert_eq!(short, QConvError::ParamLen { what: "output scale", got: 7, want: 8 });
    let conv = QConv2d::qlinear(Geometry::square(1, 1, 5, 1, 0), &[0; 25], None, &p, Kernel::Portable).unwrap();
    assert!(matches!(conv.run(Input::U8(&[0; 9]), 1, 3, 3), Err(QConvError::TooSmall { .. })));
    // An output buffer of the wrong length or type.
    let conv = QConv2d::qlinear(g, &[0; 4 * 8 * 9], None, &p, Kernel::Portable).unwrap();
    let x = [0u8; 64];
    let mut short = [0u8; 127];
    let err = conv.run_into(Input::U8(&x), [1, 4, 4], None, OutputMut::U8(&mut short)).unwrap_err();
    assert_eq!(err, QConvError::OutputLen { got: 127, want: 128 });
    let mut floats = [0f32; 128];
    let err = conv.run_into(Input::U8(&x), [1, 4, 4], None, OutputMut::F32(&mut floats)).unwrap_err();
    assert_eq!(err, QConvError::OutputType { got: "f32", want: "u8" });
}

/// Input multipliers (a fused per-channel `Mul`, `train quantize --smooth`) give exactly the
/// bytes of running on the input already multiplied in f32: NCHW (2 images, on one and on three
/// threads) and channels-last, on every kernel. A u8 input or a wrong count is an error.
#[test]
fn input_multipliers_are_the_premultiplied_run() {
    let (c, m, h, w) = (13, 10, 7, 9);
    let g = Geometry::square(c, m, 3, 1, 1);
    let mut rng = Rng(11);
    let xf: Vec<f32> = rng.bytes(2 * c * h * w).iter().map(|&v| (v as f32 - 128.0) * 0.017).collect();
    let mult: Vec<f32> = (0..c).map(|i| 1.0 + (i * 7 % 13) as f32 * 0.37).collect();
    let wt: Vec<i8> = rng.bytes(m * c * 9).iter().map(|&b| (b as i8).max(-127)).collect();
    let scale: Vec<f32> = (0..m).map(|i| 1e-3 * (1 + i % 5) as f32).collect();
    let nchw: Vec<f32> = xf.iter().enumerate().map(|(i, v)| v * mult[(i / (h * w)) % c]).collect();
    let bits = |o: Output| match o {
        Output::F32(v) => v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        Output::U8(_) => panic!("f32 out"),
    };
    for k in kernels() {
        let plain = QConv2d::integer(g, &wt, 0.03, 120, scale.clone(), None, k).unwrap();
        let multiplied = plain.clone().with_input_multipliers(mult.clone()).unwrap();
        let want = bits(plain.run(Input::F32(&nchw), 2, h, w).unwrap().0);
        assert_eq!(bits(multiplied.run(Input::F32(&xf), 2, h, w).unwrap().0), want, "{} kernel", k.name());
        let threaded = multiplied.run_parallel(Input::F32(&xf), 2, h, w, &three_threads).unwrap().0;
        assert_eq!(bits(threaded), want, "{} kernel, 3 threads", k.name());
        assert_eq!(multiplied.run(Input::U8(&[0; 2 * 13 * 63]), 2, h, w).unwrap_err(), QConvError::MultipliedU8);

        let pointwise =
            QConv2d::integer(Geometry::square(c, m, 1, 1, 0), &wt[..m * c], 0.03, 120, scale.clone(), None, k).unwrap();
        let rows = &xf[..c * 20];
        let premultiplied: Vec<f32> = rows.iter().enumerate().map(|(i, v)| v * mult[i % c]).collect();
        let want = bits(pointwise.run_channels_last(Input::F32(&premultiplied), 20).unwrap());
        let got = pointwise.with_input_multipliers(mult.clone()).unwrap().run_channels_last(Input::F32(rows), 20);
        assert_eq!(bits(got.unwrap()), want, "{} kernel, channels-last", k.name());
    }
    let conv = QConv2d::integer(g, &wt, 0.03, 120, scale, None, Kernel::Portable).unwrap();
    assert!(matches!(conv.with_input_multipliers(vec![1.0; 3]), Err(QConvError::ParamLen { .. })));
}

/// A convolution over zero input channels has no reduction steps: every sum is 0, so each
/// output is its channel's requantised bias, on every kernel and on one or three threads.
#[test]
fn no_input_channels() {
    let (m, h, w) = (9, 4, 5);
    let g = Geometry::square(0, m, 3, 1, 1);
    let p = QuantParams { x_scale: 0.1, x_zero: 3, w_scales: vec![0.1], y_scale: 0.1, y_zero: 7 };
    let bias: Vec<i32> = (0..m as i32).map(|i| i * 10 - 40).collect();
    let mult = (p.x_scale * p.w_scales[0]) / p.y_scale;
    let want: Vec<u8> = bias.iter().flat_map(|&b| std::iter::repeat_n(requantize(b, mult, p.y_zero), h * w)).collect();
    for k in kernels() {
        let conv = QConv2d::qlinear(g, &[], Some(&bias), &p, k).unwrap();
        assert_eq!(conv.run(Input::U8(&[]), 1, h, w).unwrap().0, Output::U8(want.clone()), "{} kernel", k.name());
        let (parallel, ..) = conv.run_parallel(Input::U8(&[]), 1, h, w, &three_threads).unwrap();
        assert_eq!(parallel, Output::U8(want.clone()), "{} kernel, 3 threads", k.name());
    }
}

/// A convolution with no output channels returns an empty output, on every kernel and on one or
/// three threads.
#[test]
fn no_output_channels() {
    let (c, h, w) = (5, 4, 6);
    let g = Geometry::square(c, 0, 3, 1, 1);
    let p = QuantParams { x_scale: 0.1, x_zero: 3, w_scales: vec![0.1], y_scale: 0.1, y_zero: 7 };
    let x = vec![9u8; c * h * w];
    for k in kernels() {
        let conv = QConv2d::qlinear(g, &[], None, &p, k).unwrap();
        assert_eq!(conv.run(Input::U8(&x), 1, h, w).unwrap(), (Output::U8(vec![]), h, w), "{} kernel", k.name());
        let parallel = conv.run_parallel(Input::U8(&x), 1, h, w, &three_threads).unwrap();
        assert_eq!(parallel, (Output::U8(vec![]), h, w), "{} kernel, 3 threads", k.name());
    }
}
