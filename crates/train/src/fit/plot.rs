//! `loss.csv` and `loss.png`, refreshed at every checkpoint.
//!
//! The PNG is drawn directly into an `image::RgbImage` with a built-in 3x5 pixel font rather
//! than with `plotters`: plotters' bitmap backend needs a TrueType font (system fontconfig or
//! a bundled .ttf) to draw any text, and a training box may have neither; this is ~150 lines,
//! has no system dependency, and renders identically everywhere.
//!
//! Plot: log10(loss) against step; per pixel column the min..max of the raw losses in light
//! grey and their mean in light blue, plus a moving average over 2% of the run in dark red
//! (so noise and trend are both visible, at 100 steps or at 20k).

use image::{Rgb, RgbImage};

const W: u32 = 640;
const H: u32 = 360;
const LEFT: u32 = 56;
const RIGHT: u32 = 16;
const TOP: u32 = 16;
const BOTTOM: u32 = 32;
const SCALE: u32 = 2;

/// `step,loss,lr` rows; step k (1-based) is the k-th optimiser step, trained at `lrs[k-1]`.
pub fn loss_csv(losses: &[f32], lr_at: impl Fn(u64) -> f64) -> String {
    let mut s = String::from("step,loss,lr\n");
    for (i, l) in losses.iter().enumerate() {
        s += &format!("{},{},{}\n", i + 1, l, lr_at(i as u64) as f32);
    }
    s
}

/// 3x5 glyphs, one row per entry, bit 2 = leftmost column.
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        'e' => [0, 7, 7, 4, 7],
        'g' => [0, 7, 5, 7, 3],
        'l' => [4, 4, 4, 4, 7],
        'o' => [0, 7, 5, 5, 7],
        'p' => [0, 7, 5, 7, 4],
        's' => [0, 7, 6, 3, 7],
        't' => [2, 7, 2, 2, 3],
        '(' => [1, 2, 2, 2, 1],
        ')' => [4, 2, 2, 2, 4],
        ' ' => [0; 5],
        _ => return None,
    })
}

fn text_width(s: &str) -> u32 {
    s.chars().count() as u32 * 4 * SCALE
}

fn draw_text(img: &mut RgbImage, x: u32, y: u32, s: &str, colour: Rgb<u8>) {
    for (k, c) in s.chars().enumerate() {
        let Some(rows) = glyph(c) else { continue };
        for (ry, bits) in rows.iter().enumerate() {
            for rx in 0..3u32 {
                if bits & (4 >> rx) != 0 {
                    for dy in 0..SCALE {
                        for dx in 0..SCALE {
                            let px = x + (k as u32 * 4 + rx) * SCALE + dx;
                            let py = y + ry as u32 * SCALE + dy;
                            if px < img.width() && py < img.height() {
                                img.put_pixel(px, py, colour);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn vline(img: &mut RgbImage, x: u32, y0: u32, y1: u32, colour: Rgb<u8>) {
    for y in y0.min(y1)..=y0.max(y1).min(img.height() - 1) {
        img.put_pixel(x, y, colour);
    }
}

fn hline(img: &mut RgbImage, x0: u32, x1: u32, y: u32, colour: Rgb<u8>) {
    for x in x0..=x1.min(img.width() - 1) {
        img.put_pixel(x, y, colour);
    }
}

/// Decimal label of 10^e without exponent notation (the font has no letters for it).
fn decade_label(e: i32) -> String {
    if e >= 0 {
        format!("{}", 10u64.pow(e as u32))
    } else {
        format!("0.{}1", "0".repeat((-e - 1) as usize))
    }
}

/// Renders the curve of `losses` (index = step - 1). Non-finite and non-positive values are
/// left out (they have no logarithm).
pub fn loss_png(losses: &[f32]) -> RgbImage {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let (axis, grid, light, dark) = (Rgb([0, 0, 0]), Rgb([225, 225, 225]), Rgb([190, 190, 190]), Rgb([120, 150, 230]));
    let trend_colour = Rgb([190, 20, 20]);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let logs: Vec<Option<f32>> = losses.iter().map(|&l| (l.is_finite() && l > 0.0).then(|| l.log10())).collect();
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for v in logs.iter().flatten() {
        lo = lo.min(*v);
        hi = hi.max(*v);
    }
    if !lo.is_finite() {
        lo = -2.0;
        hi = 0.0;
    }
    let (lo, hi) = (lo.floor(), hi.ceil().max(lo.floor() + 1.0));
    let y_of =
        |v: f32| TOP + ph - 1 - (((v - lo) / (hi - lo)) * (ph - 1) as f32).round().clamp(0.0, (ph - 1) as f32) as u32;
    // Decade grid lines and labels.
    for e in lo as i32..=hi as i32 {
        let y = y_of(e as f32);
        hline(&mut img, LEFT, LEFT + pw - 1, y, grid);
        let label = decade_label(e);
        let x = LEFT.saturating_sub(text_width(&label) + 4);
        draw_text(&mut img, x, y.saturating_sub(5), &label, axis);
    }
    // Step axis: ticks at 0, 1/4, ..., 1 of the steps.
    let n = losses.len().max(1) as u64;
    for q in 0..=4u64 {
        let x = LEFT + ((pw - 1) as u64 * q / 4) as u32;
        vline(&mut img, x, TOP + ph, TOP + ph + 4, axis);
        let label = (n * q / 4).to_string();
        let lx = (x + 1).saturating_sub(text_width(&label) / 2).min(W - text_width(&label));
        draw_text(&mut img, lx, TOP + ph + 7, &label, axis);
    }
    draw_text(&mut img, LEFT + pw / 2 - text_width("step") / 2, H - 11, "step", axis);
    draw_text(&mut img, LEFT + 6, 2, "loss (log)", axis);
    // Centred moving average of the finite positive losses, via prefix sums.
    let half = (losses.len() / 100).max(1);
    let mut prefix = vec![(0f64, 0usize); losses.len() + 1];
    for (i, l) in losses.iter().enumerate() {
        let ok = l.is_finite() && *l > 0.0;
        prefix[i + 1] = (prefix[i].0 + if ok { *l as f64 } else { 0.0 }, prefix[i].1 + ok as usize);
    }
    let trend = |i: usize| -> Option<f32> {
        let (a, b) = (i.saturating_sub(half), (i + half + 1).min(losses.len()));
        let (sum, count) = (prefix[b].0 - prefix[a].0, prefix[b].1 - prefix[a].1);
        (count > 0).then(|| (sum / count as f64) as f32)
    };
    // Per-column min..max (grey) then mean (blue, joined between columns).
    let mut prev: Option<(u32, u32)> = None;
    let mut trend_points = Vec::new();
    for col in 0..pw {
        let a = (col as u64 * losses.len() as u64 / pw as u64) as usize;
        let b = (((col + 1) as u64 * losses.len() as u64 / pw as u64) as usize).max(a + 1).min(losses.len());
        let vals: Vec<f32> = logs.get(a..b).unwrap_or(&[]).iter().flatten().copied().collect();
        if vals.is_empty() {
            continue;
        }
        let x = LEFT + col;
        let (mn, mx) = vals.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        vline(&mut img, x, y_of(mn), y_of(mx), light);
        // Mean of the losses themselves (not of their logs), then its log.
        let mean = losses[a..b].iter().filter(|l| l.is_finite() && **l > 0.0).sum::<f32>() / vals.len() as f32;
        let y = y_of(mean.log10());
        match prev {
            Some((px, py)) if px + 1 == x => vline(&mut img, x, py, y, dark),
            _ => img.put_pixel(x, y, dark),
        }
        prev = Some((x, y));
        if let Some(t) = trend((a + b) / 2) {
            trend_points.push((x, y_of(t.log10())));
        }
    }
    for (k, &(x, y)) in trend_points.iter().enumerate() {
        match k.checked_sub(1).map(|p| trend_points[p]) {
            Some((px, py)) if px + 1 == x => vline(&mut img, x, py, y, trend_colour),
            _ => img.put_pixel(x, y, trend_colour),
        }
    }
    vline(&mut img, LEFT - 1, TOP, TOP + ph, axis);
    hline(&mut img, LEFT - 1, LEFT + pw - 1, TOP + ph, axis);
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_one_row_per_step() {
        let s = loss_csv(&[0.5, 0.25], |i| 0.1 * (i + 1) as f64);
        assert_eq!(s, "step,loss,lr\n1,0.5,0.1\n2,0.25,0.2\n");
    }

    #[test]
    fn png_draws_a_curve_inside_the_plot() {
        let losses: Vec<f32> = (0..3000).map(|i| 1.0 / (1.0 + i as f32 * 0.01)).collect();
        let img = loss_png(&losses);
        let red = img.pixels().filter(|p| p.0 == [190, 20, 20]).count();
        assert!(red > 400, "trend pixels {red}");
        // The trend descends: its first pixel is higher (smaller y) than its last.
        let col_y = |x: u32| (0..H).find(|&y| img.get_pixel(x, y).0 == [190, 20, 20]);
        assert!(col_y(LEFT).unwrap() < col_y(W - RIGHT - 1).unwrap());
        // Degenerate input still renders.
        let _ = loss_png(&[]);
        let _ = loss_png(&[f32::NAN, 0.0]);
    }

    #[test]
    fn decade_labels() {
        assert_eq!(decade_label(-3), "0.001");
        assert_eq!(decade_label(0), "1");
        assert_eq!(decade_label(1), "10");
    }
}
