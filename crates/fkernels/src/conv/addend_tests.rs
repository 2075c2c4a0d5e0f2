//! An addend fused into the output pass gives the bytes of adding it after the convolution, in
//! every form, on every kernel, for each shape of addend, with jobs split or not.

use super::winograd::Form;
use super::*;
use crate::test_values::{bits, values};

/// Which form computes the convolution.
#[derive(Debug, Clone, Copy)]
enum Way {
    Direct { in_place: bool },
    Winograd(Form),
    Channels,
}

/// The convolution the way `way` computes it, plus `addend`, into a NaN-filled vector.
fn run(conv: &Conv2d, way: Way, x: &[f32], dims: [usize; 3], addend: Option<Addend<'_>>, split: bool) -> Vec<f32> {
    let reversed = |jobs: usize, job: &(dyn Fn(usize) + Sync)| (0..jobs).rev().for_each(job);
    let parallel: Option<ParallelFor<'_>> = if split { Some(&reversed) } else { None };
    let [n, h, w] = dims;
    let (oh, ow) = conv.geometry.output_size(h, w).unwrap();
    let mut y = vec![f32::NAN; n * conv.geometry.out_channels * oh * ow];
    let out = ConvOut::new(&mut y, oh * ow, addend);
    match way {
        Way::Direct { in_place } => conv.direct(x, dims, (oh, ow), parallel, in_place, &out),
        Way::Winograd(form) => winograd::run(conv, form, x, (oh, ow), dims, parallel, &out),
        Way::Channels => channels::run(conv, x, n, &Image { h, w, oh, ow }, parallel, &out),
    }
    y
}

/// `y` plus `addend`, added value by value after the convolution.
fn added_after(y: &[f32], addend: Addend<'_>, pixels: usize) -> Vec<f32> {
    y.iter()
        .enumerate()
        .map(|(i, &v)| match addend {
            Addend::Outputs(a) => v + a[i % a.len()],
            Addend::Channels(a) => v + a[i / pixels % a.len()],
        })
        .collect()
}

#[test]
fn a_fused_addend_gives_the_bytes_of_a_separate_add() {
    let every_kernel = [
        (geometry(24, 20, 3, 1, 1), [2, 16, 18], Way::Direct { in_place: true }),
        (geometry(24, 20, 3, 2, 1), [2, 16, 18], Way::Direct { in_place: false }),
        (geometry(40, 24, 1, 1, 0), [2, 8, 8], Way::Direct { in_place: true }),
        (geometry(24, 20, 3, 1, 1), [2, 16, 18], Way::Winograd(Form::F2)),
        (geometry(24, 20, 3, 1, 1), [2, 16, 18], Way::Winograd(Form::F4)),
    ];
    // The channel form runs on kernels with a channel tile only (AVX-512, NEON).
    let channel_form =
        [(geometry(40, 32, 3, 1, 1), [2, 8, 8], Way::Channels), (geometry(16, 32, 3, 2, 1), [2, 9, 7], Way::Channels)];
    let mut runs = Vec::new();
    for kernel in Kernel::supported() {
        runs.extend(every_kernel.iter().map(|&case| (kernel, case)));
        if crate::tiles::channel_rows(kernel) > 0 {
            runs.extend(channel_form.iter().map(|&case| (kernel, case)));
        }
    }
    for (kernel, (g, dims, way)) in runs {
        let [n, h, w] = dims;
        let (oh, ow) = g.output_size(h, w).unwrap();
        let (m, pixels) = (g.out_channels, oh * ow);
        let (x, wt, b) = (values(n * g.in_channels * h * w, 20), values(m * g.k(), 21), values(m, 22));
        let conv = Conv2d::new(&wt, g, Some(&b), kernel).unwrap();
        let plain = run(&conv, way, &x, dims, None, false);
        let (outputs, channels) = (values(n * m * pixels, 23), values(n * m, 24));
        for addend in [
            Addend::Outputs(&outputs),
            Addend::Outputs(&outputs[..m * pixels]),
            Addend::Channels(&channels),
            Addend::Channels(&channels[..m]),
        ] {
            let expected = bits(&added_after(&plain, addend, pixels));
            for split in [false, true] {
                let fused = run(&conv, way, &x, dims, Some(addend), split);
                assert_eq!(bits(&fused), expected, "{} {g:?} {dims:?} {way:?} {addend:?} split {split}", kernel.name());
            }
        }
    }
}

#[test]
fn run_into_adding_takes_each_layers_form_and_checks_the_addend() {
    let g = geometry(128, 128, 3, 1, 1);
    let (dims, kernel) = ([1, 16, 16], Kernel::Portable);
    let (x, wt) = (values(128 * 256, 30), values(128 * g.k(), 31));
    let conv = Conv2d::new(&wt, g, None, kernel).unwrap();
    let plain = conv.run(&x, dims, None).unwrap();
    let per_channel = values(128, 32);
    let mut y = vec![f32::NAN; plain.len()];
    conv.run_into_adding(&x, dims, None, Some(Addend::Channels(&per_channel)), &mut y).unwrap();
    assert_eq!(bits(&y), bits(&added_after(&plain, Addend::Channels(&per_channel), 256)));
    for wrong in [Addend::Channels(&per_channel[..127]), Addend::Outputs(&per_channel)] {
        let error = conv.run_into_adding(&x, dims, None, Some(wrong), &mut y).unwrap_err();
        assert!(matches!(error, FKernelError::Length { what: "addend", .. }), "{error}");
    }
}

fn geometry(c: usize, m: usize, k: usize, stride: usize, pad: usize) -> ConvGeometry {
    ConvGeometry { in_channels: c, out_channels: m, kernel: [k, k], strides: [stride; 2], pads: [pad; 4] }
}
