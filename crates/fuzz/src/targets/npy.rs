//! `.npy` files (`--init-noise`, reference vectors): the bytes written to a file and read by
//! `edgediff_io::npy::read_f32`; what it accepts must survive `encode_f32` and a second read.

use edgediff_io::npy::{encode_f32, read_f32};

use super::Stage;
use crate::Context;

pub const REFUSED: Stage = "refused";
pub const ROUND_TRIPPED: Stage = "read and round-tripped";

pub fn run(ctx: &Context, bytes: &[u8]) -> Stage {
    let path = ctx.scratch().join("input.npy");
    std::fs::write(&path, bytes).expect("write the scratch .npy file");
    let Ok((data, shape)) = read_f32(&path) else { return REFUSED };
    assert_eq!(data.len(), shape.iter().product::<usize>(), "shape {shape:?} does not describe the data");
    let encoded = encode_f32(&data, &shape).expect("encode_f32 refuses what read_f32 returned");
    std::fs::write(&path, &encoded).expect("write the scratch .npy file");
    let (again, again_shape) = read_f32(&path).expect("read_f32 refuses what encode_f32 wrote");
    assert_eq!(again_shape, shape, "shape changed in the round trip");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    assert!(bits(&again) == bits(&data), "values changed in the round trip");
    ROUND_TRIPPED
}
