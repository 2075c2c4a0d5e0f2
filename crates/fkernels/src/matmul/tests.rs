use super::*;
use crate::test_values::{bits, values};

#[test]
fn every_kernel_gives_the_portable_bytes() {
    for (k, m, rows) in [(37, 45, 19), (128, 64, 1), (3, 16, 130), (256, 17, 9), (1, 1, 1)] {
        let (w, x, b) = (values(k * m, 1), values(rows * k, 2), values(m, 3));
        let reference = MatMul::new(&w, WeightLayout::KByM, k, m, Some(&b), Kernel::Portable).unwrap();
        let expected = bits(&reference.run(&x, rows, None).unwrap());
        for kernel in Kernel::supported() {
            let mm = MatMul::new(&w, WeightLayout::KByM, k, m, Some(&b), kernel).unwrap();
            assert_eq!(
                bits(&mm.run(&x, rows, None).unwrap()),
                expected,
                "{} at k={k} m={m} rows={rows}",
                kernel.name()
            );
        }
    }
}

/// `run_into` writes every value of the caller's buffer (NaN before), with and without bias,
/// partial panels and row blocks, alone and split over jobs: callers hand it uninitialised
/// tensors.
#[test]
fn run_into_writes_every_value() {
    let reversed = |jobs: usize, job: &(dyn Fn(usize) + Sync)| (0..jobs).rev().for_each(job);
    for (k, m, rows) in [(37, 45, 19), (64, 48, 300), (5, 3, 1)] {
        let (w, x, b) = (values(k * m, 11), values(rows * k, 12), values(m, 13));
        for kernel in Kernel::supported() {
            for bias in [None, Some(&b[..])] {
                let mm = MatMul::new(&w, WeightLayout::KByM, k, m, bias, kernel).unwrap();
                let expected = bits(&mm.run(&x, rows, None).unwrap());
                for parallel in [None, Some(&reversed as ParallelFor<'_>)] {
                    let mut y = vec![f32::NAN; rows * m];
                    mm.run_into(&x, rows, parallel, &mut y).unwrap();
                    assert_eq!(bits(&y), expected, "{} {k}x{m} x {rows}", kernel.name());
                }
            }
        }
    }
}

#[test]
fn matches_a_double_precision_product() {
    let (k, m, rows) = (70, 33, 11);
    let (w, x, b) = (values(k * m, 4), values(rows * k, 5), values(m, 6));
    let y = MatMul::new(&w, WeightLayout::KByM, k, m, Some(&b), Kernel::detect()).unwrap().run(&x, rows, None).unwrap();
    for r in 0..rows {
        for j in 0..m {
            let exact: f64 = b[j] as f64 + (0..k).map(|i| x[r * k + i] as f64 * w[i * m + j] as f64).sum::<f64>();
            assert!((y[r * m + j] as f64 - exact).abs() < 1e-5, "row {r} col {j}: {} vs {exact}", y[r * m + j]);
        }
    }
}

#[test]
fn sums_in_ascending_k_with_one_rounding_per_term() {
    // 1e8 + 1 rounds back to 1e8 in f32, so the ascending sum is exactly 0; any other order or
    // a split into partial sums would keep the 1.
    let x = [1e8f32, 1.0, -1e8];
    for kernel in Kernel::supported() {
        let mm = MatMul::new(&[1.0; 3], WeightLayout::KByM, 3, 1, None, kernel).unwrap();
        assert_eq!(mm.run(&x, 1, None).unwrap(), vec![0.0], "{}", kernel.name());
    }
    // One rounding per term: fma(a, a, -a*a rounded) keeps the product's low bits.
    let a = 1.0f32 + f32::EPSILON;
    let rounded = a * a;
    let mm = MatMul::new(&[a, -1.0], WeightLayout::KByM, 2, 1, None, Kernel::Portable).unwrap();
    let y = mm.run(&[a, rounded], 1, None).unwrap()[0];
    assert_eq!(y, a.mul_add(a, 0.0) - rounded);
    for kernel in Kernel::supported() {
        let mm = MatMul::new(&[a, -1.0], WeightLayout::KByM, 2, 1, None, kernel).unwrap();
        assert_eq!(mm.run(&[a, rounded], 1, None).unwrap()[0].to_bits(), y.to_bits(), "{}", kernel.name());
    }
}

#[test]
fn a_row_has_the_same_bytes_alone_and_in_any_batch() {
    let (k, m) = (96, 40);
    let (w, x) = (values(k * m, 7), values(150 * k, 8));
    for kernel in Kernel::supported() {
        let mm = MatMul::new(&w, WeightLayout::KByM, k, m, None, kernel).unwrap();
        let batch = mm.run(&x, 150, None).unwrap();
        for r in [0, 3, 7, 64, 149] {
            let alone = mm.run(&x[r * k..(r + 1) * k], 1, None).unwrap();
            assert_eq!(bits(&alone), bits(&batch[r * m..(r + 1) * m]), "{} row {r}", kernel.name());
        }
    }
}

#[test]
fn the_split_over_jobs_does_not_change_the_bytes() {
    let (k, m, rows) = (64, 48, 300);
    let (w, x) = (values(k * m, 9), values(rows * k, 10));
    let mm = MatMul::new(&w, WeightLayout::KByM, k, m, None, Kernel::detect()).unwrap();
    let serial = mm.run(&x, rows, None).unwrap();
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let reversed = |jobs: usize, job: &(dyn Fn(usize) + Sync)| {
        calls.fetch_add(jobs, std::sync::atomic::Ordering::Relaxed);
        (0..jobs).rev().for_each(job)
    };
    let split = mm.run(&x, rows, Some(&reversed)).unwrap();
    assert_eq!(calls.into_inner(), rows.div_ceil(ROW_BLOCK));
    assert_eq!(bits(&serial), bits(&split));
}

#[test]
fn transposed_weights_give_the_same_product() {
    let (k, m, rows) = (20, 13, 5);
    let (w, x) = (values(k * m, 11), values(rows * k, 12));
    let transposed: Vec<f32> = (0..m).flat_map(|j| (0..k).map(|i| w[i * m + j]).collect::<Vec<_>>()).collect();
    let a = MatMul::new(&w, WeightLayout::KByM, k, m, None, Kernel::detect()).unwrap();
    let b = MatMul::new(&transposed, WeightLayout::MByK, k, m, None, Kernel::detect()).unwrap();
    assert_eq!(bits(&a.run(&x, rows, None).unwrap()), bits(&b.run(&x, rows, None).unwrap()));
}

#[test]
fn wrong_lengths_are_refused() {
    let e = MatMul::new(&[0.0; 5], WeightLayout::KByM, 2, 3, None, Kernel::Portable).unwrap_err();
    assert_eq!(e, FKernelError::Length { what: "weights", got: 5, expected: 6 });
    let e = MatMul::new(&[0.0; 6], WeightLayout::KByM, 2, 3, Some(&[0.0; 2]), Kernel::Portable).unwrap_err();
    assert_eq!(e, FKernelError::Length { what: "bias", got: 2, expected: 3 });
    let mm = MatMul::new(&[0.0; 6], WeightLayout::KByM, 2, 3, None, Kernel::Portable).unwrap();
    assert_eq!(
        mm.run(&[0.0; 5], 3, None).unwrap_err(),
        FKernelError::Length { what: "activations", got: 5, expected: 6 }
    );
    assert_eq!(Kernel::by_name("sse9").unwrap_err(), FKernelError::UnknownKernel("sse9".into()));
    assert_eq!(Kernel::by_name("portable"), Ok(Kernel::Portable));
}
