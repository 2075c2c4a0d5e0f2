// TEMPORARY diagnostic (removed after use).
use edgediff_train::eval::features::FeatureExtractor;
use edgediff_train::eval::frechet::{frechet_distance, Gaussian};
use edgediff_train::eval::images::*;

#[test]
fn diag() {
    let gen = load_samples(std::path::Path::new("/tmp/eval-helper/gen16.npy"), 500).unwrap().quantised();
    let (a, b) = real_sets("sprites", 16, 500, 0x4556_414C).unwrap();
    let blur = blurred(&b);
    let noise = noise_images(3, 16, 500, 1);
    let fx = FeatureExtractor::new();
    let feats = |s: &ImageSet| fx.extract_all(&s.data, 16, 2);
    let (fa, fb, fg, fbl, fn_) = (feats(&a), feats(&b), feats(&gen), feats(&blur), feats(&noise));
    let d = fx.dim(); let per = (d - 9) / 160; let groups: [(&str, std::ops::Range<usize>); 5] = [("colour", 0..9), ("L1", 9..9+32*per), ("L2", 9+32*per..9+96*per), ("L3", 9+96*per..d), ("all", 0..d)];
    for (name, r) in groups {
        let sub = |f: &Vec<Vec<f32>>| Gaussian::fit(&f.iter().map(|x| x[r.clone()].to_vec()).collect::<Vec<_>>(), r.len());
        let ga = sub(&fa);
        let d = |f: &Vec<Vec<f32>>| frechet_distance(&ga, &sub(f));
        let mean_gap = |f: &Vec<Vec<f32>>| { let g = sub(f); ga.mean.iter().zip(&g.mean).map(|(x,y)| (x-y)*(x-y)).sum::<f64>() };
        println!("{name:7} floor {:.4} gen {:.4} (mean {:.4}) blur {:.4} (mean {:.4}) noise {:.3}", d(&fb), d(&fg), mean_gap(&fg), d(&fbl), mean_gap(&fbl), d(&fn_));
    }
}
