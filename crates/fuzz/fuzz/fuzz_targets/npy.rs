//! libFuzzer entry for the `npy` target (see crates/fuzz/README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let target = edgediff_fuzz::find_target("npy").expect("a target of edgediff-fuzz");
    (target.run)(edgediff_fuzz::Context::shared(), data);
});
