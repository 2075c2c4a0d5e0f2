use super::winograd::Form;
use super::*;
use crate::test_values::{bits, values};

fn geometry(c: usize, m: usize, k: usize, stride: usize, pad: usize) -> ConvGeometry {
    ConvGeometry { in_channels: c, out_channels: m, kernel: [k, k], strides: [stride; 2], pads: [pad; 4] }
}

/// The direct form into a new vector.
fn direct(
    conv: &Conv2d,
    x: &[f32],
    dims: [usize; 3],
    out: (usize, usize),
    parallel: Option<ParallelFor<'_>>,
    in_place: bool,
) -> Vec<f32> {
    let mut y = vec![f32::NAN; dims[0] * conv.geometry.out_channels * out.0 * out.1];
    conv.direct(x, dims, out, parallel, in_place, &ConvOut::new(&mut y, out.0 * out.1, None));
    y
}

/// A Winograd form into a new vector (NaN first: every value must be written).
fn winograd_form(
    conv: &Conv2d,
    form: Form,
    x: &[f32],
    dims: [usize; 3],
    out: (usize, usize),
    parallel: Option<ParallelFor<'_>>,
) -> Vec<f32> {
    let mut y = vec![f32::NAN; dims[0] * conv.geometry.out_channels * out.0 * out.1];
    winograd::run(conv, form, x, out, dims, parallel, &ConvOut::new(&mut y, out.0 * out.1, None));
    y
}

/// The channel form into a new vector (NaN first: every value must be written).
fn channel_form(conv: &Conv2d, x: &[f32], n: usize, image: &Image, parallel: Option<ParallelFor<'_>>) -> Vec<f32> {
    let mut y = vec![f32::NAN; n * conv.geometry.out_channels * image.oh * image.ow];
    channels::run(conv, x, n, image, parallel, &ConvOut::new(&mut y, image.oh * image.ow, None));
    y
}

/// The convolution by its definition, in f64.
fn reference(x: &[f32], w: &[f32], b: &[f32], g: &ConvGeometry, [n, h, wd]: [usize; 3]) -> Vec<f64> {
    let (oh, ow) = g.output_size(h, wd).unwrap();
    let ([kh, kw], [sh, sw]) = (g.kernel, g.strides);
    let mut y = Vec::new();
    for img in 0..n {
        for m in 0..g.out_channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b[m] as f64;
                    for c in 0..g.in_channels {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let (iy, ix) = (
                                    (oy * sh + ky) as isize - g.pads[0] as isize,
                                    (ox * sw + kx) as isize - g.pads[1] as isize,
                                );
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                    let xv = x[((img * g.in_channels + c) * h + iy as usize) * wd + ix as usize];
                                    acc += xv as f64 * w[((m * g.in_channels + c) * kh + ky) * kw + kx] as f64;
                                }
                            }
                        }
                    }
                    y.push(acc);
                }
            }
        }
    }
    y
}

#[test]
fn matches_the_definition_for_windows_strides_and_padding() {
    for (g, size) in [
        (geometry(3, 10, 3, 1, 1), [2, 9, 7]),
        (geometry(8, 17, 3, 2, 1), [1, 16, 16]),
        (geometry(16, 9, 1, 1, 0), [2, 5, 6]),
        (geometry(2, 4, 2, 2, 0), [1, 8, 8]),
        // K = 360: the reduction runs in two passes (252 + 108 steps), read in place and, with
        // a stride, packed; the weights of each pass lie apart from the other's.
        (geometry(40, 11, 3, 1, 1), [1, 6, 7]),
        (geometry(40, 17, 3, 2, 1), [2, 9, 8]),
        // Rows of 16 or more output pixels: windows read in place from the padded input, the
        // last tile of each row short (20 = 16 + 4), one or two passes.
        (geometry(5, 9, 3, 1, 1), [2, 5, 20]),
        (geometry(40, 11, 3, 1, 1), [1, 3, 17]),
        (geometry(7, 10, 1, 1, 0), [1, 2, 33]),
        (
            ConvGeometry { in_channels: 3, out_channels: 5, kernel: [3, 2], strides: [1, 1], pads: [0, 1, 2, 0] },
            [1, 4, 18],
        ),
    ] {
        let [n, h, w] = size;
        let (x, wt, b) =
            (values(n * g.in_channels * h * w, 1), values(g.out_channels * g.k(), 2), values(g.out_channels, 3));
        let expected = reference(&x, &wt, &b, &g, size);
        for kernel in Kernel::supported() {
            let y = Conv2d::new(&wt, g, Some(&b), kernel).unwrap().run(&x, size, None).unwrap();
            assert_eq!(y.len(), expected.len());
            for (i, (a, e)) in y.iter().zip(&expected).enumerate() {
                assert!(
                    (*a as f64 - e).abs() < 1e-5 * (1.0 + e.abs()),
                    "{} {g:?} output {i}: {a} vs {e}",
                    kernel.name()
                );
            }
        }
    }
}

#[test]
fn every_kernel_batch_and_split_gives_the_same_bytes() {
    for w in [11, 18] {
        same_bytes_at_width(w);
    }
}

/// Width 11 packs panels, 18 reads windows in place; K = 432 takes two passes; 45 output
/// channels are two or three groups of weight blocks, split over jobs with a parallel-for.
fn same_bytes_at_width(w: usize) {
    let g = geometry(48, 45, 3, 1, 1);
    let (n, h) = (3, 10);
    let (x, wt, b) = (values(n * 48 * h * w, 4), values(45 * g.k(), 5), values(45, 6));
    let portable = Conv2d::new(&wt, g, Some(&b), Kernel::Portable).unwrap();
    let expected = bits(&portable.run(&x, [n, h, w], None).unwrap());
    let reversed = |jobs: usize, job: &(dyn Fn(usize) + Sync)| (0..jobs).rev().for_each(job);
    let image = 45 * h * w;
    for kernel in Kernel::supported() {
        let conv = Conv2d::new(&wt, g, Some(&b), kernel).unwrap();
        assert_eq!(bits(&conv.run(&x, [n, h, w], Some(&reversed)).unwrap()), expected, "{}", kernel.name());
        let second = conv.run(&x[48 * h * w..2 * 48 * h * w], [1, h, w], None).unwrap();
        assert_eq!(bits(&second), expected[image..2 * image], "{}: image 1 alone", kernel.name());
    }
}

/// Inputs of 64K padded values and more are padded by the jobs of a parallel call: the same
/// bytes as on one thread and on the portable kernel, for a padded 3x3 layer (two images; the
/// direct form both ways), a strided one and an unpadded 1x1 one.
#[test]
fn padding_split_over_jobs_gives_the_same_bytes() {
    let reversed = |jobs: usize, job: &(dyn Fn(usize) + Sync)| (0..jobs).rev().for_each(job);
    for (g, dims) in [
        (geometry(40, 16, 3, 1, 1), [2, 30, 32]),
        (geometry(70, 32, 3, 2, 1), [1, 32, 33]),
        (geometry(72, 16, 1, 1, 0), [1, 32, 32]),
    ] {
        let [n, h, w] = dims;
        let (x, wt, b) =
            (values(n * g.in_channels * h * w, 7), values(g.out_channels * g.k(), 8), values(g.out_channels, 9));
        let out = g.output_size(h, w).unwrap();
        let expected = bits(&Conv2d::new(&wt, g, Some(&b), Kernel::Portable).unwrap().run(&x, dims, None).unwrap());
        for kernel in Kernel::supported() {
            let conv = Conv2d::new(&wt, g, Some(&b), kernel).unwrap();
            assert_eq!(bits(&conv.run(&x, dims, Some(&reversed)).unwrap()), expected, "{} {g:?}", kernel.name());
            for in_place in [false, true] {
                let split = direct(&conv, &x, dims, out, Some(&reversed), in_place);
                assert_eq!(bits(&split), expected, "{} {g:?} direct, in place {in_place}", kernel.name());
            }
        }
    }
}

#[test]
fn bad_inputs_are_refused() {
    let g = geometry(2, 3, 3, 1, 0);
    assert_eq!(
        Conv2d::new(&[0.0; 5], g, None, Kernel::Portable).unwrap_err(),
        FKernelError::Length { what: "weights", got: 5, expected: 54 }
    );
    let conv = Conv2d::new(&[0.0; 54], g, None, Kernel::Portable).unwrap();
    assert_eq!(conv.run(&[0.0; 8], [1, 2, 2], None).unwrap_err(), FKernelError::Window { h: 2, w: 2 });
    assert_eq!(
        conv.run(&[0.0; 7], [1, 2, 2], None).unwrap_err(),
        FKernelError::Length { what: "input", got: 7, expected: 8 }
    );
}

#[test]
fn windows_read_in_place_give_the_packed_panels_bytes() {
    let pads = |c, m, kernel, pads| ConvGeometry { in_channels: c, out_channels: m, kernel, strides: [1, 1], pads };
    for (g, size) in [
        // Rows of whole tiles, and tiles running on over the padded width (20 wide, 8 wide,
        // 4 wide, 1 wide, uneven pads, a 2x3 window, two reduction passes).
        (geometry(300, 5, 3, 1, 1), [1, 3, 16]),
        (geometry(40, 9, 3, 1, 1), [2, 5, 20]),
        (geometry(64, 17, 3, 1, 1), [2, 8, 8]),
        (geometry(33, 8, 3, 1, 1), [3, 4, 4]),
        (pads(5, 6, [3, 3], [1, 0, 1, 0]), [1, 5, 3]),
        (pads(7, 4, [2, 3], [0, 2, 1, 1]), [2, 6, 5]),
        (geometry(3, 4, 1, 1, 0), [1, 7, 9]),
        // Unpadded with output rows of whole tiles: read from the input itself (two images, a
        // 3x3 window, two reduction passes).
        (geometry(6, 10, 1, 1, 0), [2, 3, 32]),
        (geometry(5, 7, 3, 1, 0), [1, 4, 18]),
        (geometry(300, 9, 1, 1, 0), [1, 2, 16]),
    ] {
        let [n, h, w] = size;
        let (x, wt, b) =
            (values(n * g.in_channels * h * w, 7), values(g.out_channels * g.k(), 8), values(g.out_channels, 9));
        for kernel in Kernel::supported() {
            let conv = Conv2d::new(&wt, g, Some(&b), kernel).unwrap();
            let out = g.output_size(size[1], size[2]).unwrap();
            let in_place = direct(&conv, &x, size, out, None, true);
            let packed = direct(&conv, &x, size, out, None, false);
            assert_eq!(bits(&in_place), bits(&packed), "{} {g:?}", kernel.name());
        }
    }
}

/// Σ |x · w| over each output's terms (the scale of its rounding error), in the reference's
/// order.
fn magnitudes(x: &[f32], w: &[f32], g: &ConvGeometry, size: [usize; 3]) -> Vec<f64> {
    let abs = |v: &[f32]| v.iter().map(|v| v.abs()).collect::<Vec<f32>>();
    let zero = vec![0f32; g.out_channels];
    reference(&abs(x), &abs(w), &zero, g, size)
}

#[test]
fn the_winograd_form_matches_the_definition() {
    let pads = |c, m, pads| ConvGeometry { in_channels: c, out_channels: m, kernel: [3, 3], strides: [1, 1], pads };
    for (g, size) in [
        // Even and odd output sides, uneven and no padding, two images, 45 output channels
        // (several blocks and groups), and 300 input channels (several chunks of passes).
        (geometry(3, 10, 3, 1, 1), [2, 16, 16]),
        (geometry(40, 45, 3, 1, 1), [1, 17, 19]),
        (pads(5, 6, [0, 1, 2, 0]), [1, 18, 17]),
        (geometry(7, 9, 3, 1, 0), [1, 19, 20]),
        (geometry(300, 9, 3, 1, 1), [1, 16, 17]),
    ] {
        let [n, h, w] = size;
        let (oh, ow) = g.output_size(h, w).unwrap();
        let (x, wt, b) =
            (values(n * g.in_channels * h * w, 10), values(g.out_channels * g.k(), 11), values(g.out_channels, 12));
        let (expected, scale) = (reference(&x, &wt, &b, &g, size), magnitudes(&x, &wt, &g, size));
        // F(4x4)'s transforms scale values by up to 8 and 1/24 before and after the sums, so
        // its rounding error is the larger (Lavin and Gray measure about 10x F(2x2)'s).
        for (form, tolerance) in [(Form::F2, 1e-6), (Form::F4, 4e-6)] {
            let mut worst = 0f64;
            for kernel in Kernel::supported() {
                let conv = Conv2d::new(&wt, g, Some(&b), kernel).unwrap();
                let y = winograd_form(&conv, form, &x, size, (oh, ow), None);
                assert_eq!(y.len(), expected.len());
                for (i, ((a, e), s)) in y.iter().zip(&expected).zip(&scale).enumerate() {
                    let error = (*a as f64 - e).abs() / (1.0 + s);
                    worst = worst.max(error);
                    assert!(error <= tolerance, "{form:?} {} {g:?} output {i}: {a} vs {e}", kernel.name());
                }
            }
            eprintln!("{form:?} {g:?}: worst error {worst:.2e} of 1 + sum |x w|");
        }
    }
}

#[test]
fn the_winograd_forms_give_the_same_bytes_on_every_kernel_batch_and_split() {
    let g = geometry(48, 45, 3, 1, 1);
    let (n, h, w) = (3, 16, 18);
    let (x, wt, b) = (values(n * 48 * h * w, 13), values(45 * g.k(), 14), values(45, 15));
    let out = g.output_size(h, w).unwrap();
    let reversed = |jobs: usize, job: &(dyn Fn(usize) + Sync)| (0..jobs).rev().for_each(job);
    let image = 45 * h * w;
    for form in [Form::F2, Form::F4] {
        let portable = Conv2d::new(&wt, g, Some(&b), Kernel::Portable).unwrap();
        let expected = bits(&winograd_form(&portable, form, &x, [n, h, w], out, None));
        for kernel in Kernel::supported() {
            let conv = Conv2d::new(&wt, g, Some(&b), kernel).unwrap();
            let all = winograd_form(&conv, form, &x, [n, h, w], out, Some(&reversed));
            assert_eq!(bits(&all), expected, "{form:?} {}", kernel.name());
            let second = winograd_form(&conv, form, &x[48 * h * w..2 * 48 * h * w], [1, h, w], out, None);
            assert_eq!(bits(&second), expected[image..2 * image], "{form:?} {}: image 1 alone", kernel.name());
        }
    }
}

#[test]
fn the_winograd_forms_are_taken_where_they_pay_and_only_for_3x3_at_stride_1() {
    let form = |g: ConvGeometry, side: usize| {
        let conv = Conv2d::new(&vec![0.0; g.out_channels * g.k()], g, None, Kernel::Portable).unwrap();
        winograd::form(&conv, side, side)
    };
    assert_eq!(form(geometry(128, 128, 3, 1, 1), 32), Some(Form::F4));
    assert_eq!(form(geometry(96, 256, 3, 1, 1), 32), Some(Form::F4));
    assert_eq!(form(geometry(256, 256, 3, 1, 1), 16), Some(Form::F2));
    assert_eq!(form(geometry(512, 256, 3, 1, 1), 16), Some(Form::F2));
    assert_eq!(form(geometry(64, 64, 3, 1, 1), 32), None);
    assert_eq!(form(geometry(128, 128, 3, 1, 1), 16), None);
    assert_eq!(form(geometry(256, 256, 3, 1, 1), 8), None);
    assert_eq!(form(geometry(256, 256, 3, 2, 1), 16), None);
    assert_eq!(form(geometry(256, 256, 1, 1, 0), 32), None);
    // Its transformed input would take 75 MB: the direct form's scratch is about the input's.
    assert_eq!(form(geometry(128, 128, 3, 1, 1), 256), None);
    assert_eq!(form(geometry(128, 128, 3, 1, 1), 64), Some(Form::F4));
}

/// FNV-1a over the values' bit patterns: a fingerprint of the exact bytes.
fn fingerprint(values: &[f32]) -> u64 {
    values
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// The same bytes on every CPU, not only on every kernel of this one: fixed fingerprints,
/// which CI checks natively on x86_64 and under qemu on aarch64.
#[test]
fn every_form_gives_these_bytes_on_every_cpu() {
    let g = geometry(24, 20, 3, 1, 1);
    let (n, h, w) = (2, 16, 18);
    let (x, wt, b) = (values(n * 24 * h * w, 16), values(20 * g.k(), 17), values(20, 18));
    let out = g.output_size(h, w).unwrap();
    for kernel in Kernel::supported() {
        let conv = Conv2d::new(&wt, g, Some(&b), kernel).unwrap();
        let direct = direct(&conv, &x, [n, h, w], out, None, true);
        let f2 = winograd_form(&conv, Form::F2, &x, [n, h, w], out, None);
        let f4 = winograd_form(&conv, Form::F4, &x, [n, h, w], out, None);
        assert_eq!(
            [fingerprint(&direct), fingerprint(&f2), fingerprint(&f4)],
            [0x879f_38f2_b28a_a62d, 0xdf25_4123_6535_09aa, 0x7396_524b_6f0e_663e],
            "{}",
            kernel.name()
        );
    }
}

/// The channel form (AVX-512 and NEON: outputs narrower than 16, and strided windows) gives the
/// portable kernel's bytes: 4x4 and 8x8 images, a 12-wide one (rows of two or three segments,
/// the last short), a 1x1 window on 5x5 and strided windows (one with an 18-wide output), two
/// reduction passes, a batch, and jobs split over a parallel-for run in reverse; an unpadded 1x1
/// window on an 8x8 image fills the direct form's lanes and keeps that form, as does a strided
/// 1x1 window on an output 16 wide.
#[test]
fn the_channel_form_gives_the_direct_forms_bytes() {
    let kernels: Vec<Kernel> = Kernel::supported().into_iter().filter(|&k| crate::tiles::channel_rows(k) > 0).collect();
    if kernels.is_empty() {
        eprintln!("no kernel with a channel form on this CPU (AVX-512 or NEON)");
    }
    for kernel in kernels {
        channel_form_bytes(kernel);
    }
}

fn channel_form_bytes(kernel: Kernel) {
    let reversed = |jobs: usize, job: &(dyn Fn(usize) + Sync)| (0..jobs).rev().for_each(job);
    for (g, size) in [
        (geometry(64, 64, 3, 1, 1), [1, 4, 4]),
        (geometry(40, 32, 3, 1, 1), [2, 8, 8]),
        (geometry(7, 48, 3, 1, 1), [1, 5, 12]),
        (geometry(96, 16, 1, 1, 0), [2, 5, 5]),
        (geometry(33, 32, 3, 2, 1), [1, 16, 16]),
        (geometry(16, 80, 3, 2, 1), [2, 9, 7]),
        (geometry(24, 32, 3, 2, 1), [1, 34, 36]),
    ] {
        let [n, h, w] = size;
        let (x, wt, b) =
            (values(n * g.in_channels * h * w, 10), values(g.out_channels * g.k(), 11), values(g.out_channels, 12));
        let (oh, ow) = g.output_size(h, w).unwrap();
        let conv = Conv2d::new(&wt, g, Some(&b), kernel).unwrap();
        let image = Image { h, w, oh, ow };
        assert!(channels::applies(&conv, &image), "{g:?} {size:?}");
        let expected = bits(&Conv2d::new(&wt, g, Some(&b), Kernel::Portable).unwrap().run(&x, size, None).unwrap());
        assert_eq!(bits(&channel_form(&conv, &x, n, &image, None)), expected, "{g:?} {size:?}");
        assert_eq!(bits(&channel_form(&conv, &x, n, &image, Some(&reversed))), expected, "{g:?} {size:?} split");
        assert_eq!(bits(&direct(&conv, &x, size, (oh, ow), None, true)), expected, "{g:?} {size:?} direct");
        let no_bias = Conv2d::new(&wt, g, None, kernel).unwrap().run(&x, size, None).unwrap();
        let portable = Conv2d::new(&wt, g, None, Kernel::Portable).unwrap().run(&x, size, None).unwrap();
        assert_eq!(bits(&no_bias), bits(&portable), "{g:?} {size:?} without bias");
    }
    let skip = Conv2d::new(&[0.0; 32 * 16], geometry(32, 16, 1, 1, 0), None, kernel).unwrap();
    assert!(!channels::applies(&skip, &Image { h: 8, w: 8, oh: 8, ow: 8 }));
    let strided_skip = Conv2d::new(&[0.0; 32 * 16], geometry(32, 16, 1, 2, 0), None, kernel).unwrap();
    assert!(!channels::applies(&strided_skip, &Image { h: 32, w: 32, oh: 16, ow: 16 }));
    assert!(channels::applies(&strided_skip, &Image { h: 16, w: 16, oh: 8, ow: 8 }));
}
