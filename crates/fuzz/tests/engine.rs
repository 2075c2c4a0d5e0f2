//! The engine's promises: a seed names the same cases, cases stay within their target's size,
//! structure-aware mutations keep their format, a panic is caught with its location, and a
//! panic the code under test catches itself is reported as guarded.

use edgediff_fuzz::engine::{install_quiet_hook, run_case, Engine, Outcome};
use edgediff_fuzz::{corpus, mutate, Context, Rng, Stage, Target, TARGETS};
use rand::SeedableRng;

fn cases(target: &'static Target, seed: u64, n: usize) -> Vec<Vec<u8>> {
    let mut engine = Engine::new(target, corpus::load(target.name).unwrap(), seed);
    (0..n)
        .map(|_| {
            let case = engine.next_case();
            engine.record(case.clone(), target.deepest);
            case
        })
        .collect()
}

#[test]
fn a_seed_names_the_same_cases_and_another_seed_others() {
    for target in TARGETS {
        let a = cases(target, 7, 300);
        assert_eq!(a, cases(target, 7, 300), "{}: same seed, other cases", target.name);
        assert_ne!(a, cases(target, 8, 300), "{}: another seed, same cases", target.name);
        assert!(a.iter().all(|c| c.len() <= target.max_len), "{}: a case above max_len", target.name);
        let distinct: std::collections::HashSet<&Vec<u8>> = a.iter().collect();
        assert!(distinct.len() > 150, "{}: only {} distinct cases of 300", target.name, distinct.len());
    }
}

#[test]
fn structure_aware_mutations_keep_the_format() {
    let mut rng = Rng::seed_from_u64(1);
    let model = std::fs::read(corpus::corpus_dir().join("model/conv-groupnorm.onnx")).unwrap();
    let config = std::fs::read(corpus::corpus_dir().join("scheduler_config/ddim.json")).unwrap();
    for _ in 0..200 {
        let m = mutate::onnx::mutate(&mut rng, &model).expect("a model mutates");
        edgediff_onnx::decode_model(&m).expect("a mutated model still decodes");
        let j = mutate::json::mutate(&mut rng, &config).expect("a configuration mutates");
        assert!(j.starts_with(b"{"), "{}", String::from_utf8_lossy(&j));
    }
    assert!(mutate::onnx::mutate(&mut rng, b"\xff\xff\xff").is_none(), "not a model");
    assert!(mutate::text::mutate_npy(&mut rng, b"not npy").is_none());
}

fn panics_on_boom(_: &Context, input: &[u8]) -> Stage {
    assert!(input != b"boom", "boom");
    let caught = std::panic::catch_unwind(|| assert!(input != b"caught", "caught inside"));
    if caught.is_err() {
        "caught"
    } else {
        "returned"
    }
}

static FAKE: Target = Target {
    name: "fake",
    about: "panics on `boom`, catches its own panic on `caught`",
    run: panics_on_boom,
    mutate: |_, _| None,
    generate: None,
    deepest: "returned",
    max_len: 16,
    subprocess: false,
};

#[test]
fn a_panic_is_caught_with_its_location_and_a_caught_one_is_guarded() {
    install_quiet_hook();
    let ctx = Context::shared();
    assert!(matches!(run_case(&FAKE, ctx, b"fine"), Outcome::Returned { stage: "returned", guarded: None }));
    match run_case(&FAKE, ctx, b"boom") {
        Outcome::Panicked(report) => {
            assert_eq!(report.message, "boom");
            assert!(report.location.starts_with("crates/fuzz/tests/engine.rs:"), "{}", report.location);
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    match run_case(&FAKE, ctx, b"caught") {
        Outcome::Returned { stage: "caught", guarded: Some(report) } => assert_eq!(report.message, "caught inside"),
        other => panic!("expected a guarded panic, got {other:?}"),
    }
}
