//! Case generation and execution. The engine draws each case from the corpus, or from the pool
//! of mutated inputs that went all the way through the target, and stacks one to four
//! mutations on it; everything comes from one generator seeded by the run's seed and the
//! target's name, so a seed names the same cases on every machine. A case runs under
//! `catch_unwind` with a silent panic hook that remembers where the last panic happened.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rand::seq::IndexedRandom;
use rand::{Rng as _, SeedableRng};

use crate::mutate::mutate_bytes;
use crate::{Context, Rng, Stage, Target};

/// Pool entries kept at most; a full pool replaces a random entry.
const POOL_SIZE: usize = 256;

pub struct Engine {
    target: &'static Target,
    rng: Rng,
    corpus: Vec<Vec<u8>>,
    pool: Vec<Vec<u8>>,
    /// Cases per stage reached, including [`PANICKED`].
    pub stages: BTreeMap<Stage, u64>,
}

/// The stage counted for a case that panicked.
pub const PANICKED: Stage = "panicked";

impl Engine {
    pub fn new(target: &'static Target, corpus: Vec<Vec<u8>>, seed: u64) -> Engine {
        let rng = Rng::seed_from_u64(seed ^ name_hash(target.name));
        Engine { target, rng, corpus, pool: Vec::new(), stages: BTreeMap::new() }
    }

    /// The next case: a corpus or pool entry with one to four mutations (structure-aware or
    /// byte-level, half and half), or a freshly generated one where the target has a grammar.
    pub fn next_case(&mut self) -> Vec<u8> {
        let (t, rng) = (self.target, &mut self.rng);
        if let Some(generate) = t.generate {
            if rng.random_bool(0.4) {
                return generate(rng);
            }
        }
        let from_pool = !self.pool.is_empty() && rng.random_bool(0.5);
        let source = if from_pool { &self.pool } else { &self.corpus };
        let mut data = source.choose(rng).cloned().unwrap_or_default();
        let other = self.corpus.choose(rng).map(Vec::as_slice).unwrap_or_default();
        for _ in 0..rng.random_range(1..=4) {
            if rng.random_bool(0.5) {
                if let Some(mutated) = (t.mutate)(rng, &data).filter(|m| m.len() <= t.max_len) {
                    data = mutated;
                    continue;
                }
            }
            mutate_bytes(rng, &mut data, other);
        }
        data.truncate(t.max_len);
        data
    }

    /// Counts the stage `case` reached; a case that went all the way joins the pool.
    pub fn record(&mut self, case: Vec<u8>, stage: Stage) {
        *self.stages.entry(stage).or_default() += 1;
        if stage != self.target.deepest || self.corpus.contains(&case) {
            return;
        }
        if self.pool.len() < POOL_SIZE {
            self.pool.push(case);
        } else {
            let i = self.rng.random_range(0..POOL_SIZE);
            self.pool[i] = case;
        }
    }
}

/// FNV-1a of a target's name: each target gets its own stream from the same run seed.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Where and why the last panic happened.
#[derive(Debug, Clone)]
pub struct PanicReport {
    /// `file:line`.
    pub location: String,
    pub message: String,
}

static LAST_PANIC: Mutex<Option<PanicReport>> = Mutex::new(None);
static PANICS: AtomicU64 = AtomicU64::new(0);

/// Replaces the panic hook with one that prints nothing and records the panic, so millions of
/// expected-to-be-rare panics cost no terminal output and each is attributed to its case.
pub fn install_quiet_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        PANICS.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = Some(PanicReport { location, message });
        }
    }));
}

/// How one case ended.
#[derive(Debug)]
pub enum Outcome {
    /// Returned, at this stage; `guarded` holds a panic the code under test caught itself.
    Returned {
        stage: Stage,
        guarded: Option<PanicReport>,
    },
    Panicked(PanicReport),
}

/// Runs `target` on `case` (the hook of [`install_quiet_hook`] must be installed).
pub fn run_case(target: &Target, ctx: &Context, case: &[u8]) -> Outcome {
    let before = PANICS.load(Ordering::Relaxed);
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| (target.run)(ctx, case)));
    let last = || LAST_PANIC.lock().ok().and_then(|l| l.clone());
    match result {
        Ok(stage) => {
            let guarded = (PANICS.load(Ordering::Relaxed) != before).then(last).flatten();
            Outcome::Returned { stage, guarded }
        }
        Err(_) => Outcome::Panicked(
            last().unwrap_or(PanicReport { location: String::new(), message: "unknown panic".into() }),
        ),
    }
}
