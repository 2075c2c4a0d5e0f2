//! Class labels of one conditional training batch, with label dropout.
//!
//! Classifier-free guidance needs one network that predicts both with and without the class:
//! each label is replaced by the null class (index `num_classes`) with probability
//! `dropout` (Ho & Salimans 2022 use 0.1-0.2). The coin flips come from a stream seeded by
//! (seed, step), like the timesteps and noise in `noising`, so a resumed run flips exactly the
//! same coins. Images without a label (an image folder's root) always get the null class.

use edgediff_data::rng::{mix, Stream};

const LABEL_TAG: u64 = 0x4C41_4245;

/// The label to feed for each image of step `step`'s batch.
pub fn training_labels(labels: &[Option<usize>], num_classes: usize, dropout: f64, seed: u64, step: u64) -> Vec<i64> {
    let null = num_classes as i64;
    let mut coins = Stream::new(mix(&[seed, step, LABEL_TAG]));
    labels
        .iter()
        .map(|label| {
            // One draw per image whatever the label, so the stream's layout is fixed.
            let drop = (coins.uniform() as f64) < dropout;
            match label {
                Some(c) if !drop && *c < num_classes => *c as i64,
                _ => null,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_rate_matches_the_request_on_a_large_sample() {
        let n = 200_000;
        let labels: Vec<Option<usize>> = (0..n).map(|i| Some(i % 7)).collect();
        for p in [0.1, 0.25] {
            let out = training_labels(&labels, 7, p, 3, 5);
            let dropped = out.iter().filter(|&&l| l == 7).count() as f64 / n as f64;
            // Binomial standard deviation at p = 0.25 is 0.001: 0.004 is four of them.
            assert!((dropped - p).abs() < 0.004, "p {p}: dropped {dropped}");
            // Kept labels are the original ones.
            assert!(out.iter().zip(&labels).all(|(&o, l)| o == 7 || Some(o as usize) == *l));
        }
        assert!(training_labels(&labels, 7, 0.0, 3, 5).iter().zip(&labels).all(|(&o, l)| Some(o as usize) == *l));
        assert!(training_labels(&labels, 7, 1.0, 3, 5).iter().all(|&o| o == 7));
    }

    #[test]
    fn pure_function_of_seed_and_step_and_unlabelled_images_get_the_null_class() {
        let labels = vec![Some(0), None, Some(2), Some(1)];
        let a = training_labels(&labels, 3, 0.5, 9, 4);
        assert_eq!(a, training_labels(&labels, 3, 0.5, 9, 4));
        assert_eq!(a[1], 3);
        let many: Vec<Option<usize>> = vec![Some(1); 64];
        assert_ne!(training_labels(&many, 3, 0.5, 9, 4), training_labels(&many, 3, 0.5, 9, 5));
    }
}
