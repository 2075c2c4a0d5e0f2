//! The threads of one evaluation, kept awake between its parallel steps.
//!
//! A rayon worker that finds no work goes to sleep, and waking it again took 11 us on average
//! per split on a 2-vCPU VM (35.7M-parameter net: 140 splits per evaluation, `op_profile`),
//! longer than many of the default model's steps take. While a plan evaluates on several
//! threads, the other workers therefore wait in [`Team::serve`] instead: they spin on the
//! team's slot, take the jobs each parallel step publishes there, and run any other work of the
//! pool (tract's) meanwhile. The team closes when the evaluation ends, so the workers spin only
//! while one runs.
//!
//! Which thread runs which job never changes a byte (every job computes its own outputs).

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

/// One parallel step: `job(i)` for every `i < jobs`, the next `i` taken from a counter.
struct Batch<'a> {
    job: &'a (dyn Fn(usize) + Sync),
    jobs: usize,
    next: AtomicUsize,
}

impl Batch<'_> {
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.jobs {
                return;
            }
            (self.job)(i);
        }
    }
}

/// The evaluation's thread and the workers serving it.
pub(crate) struct Team {
    /// The evaluating thread's index in the pool: it never serves its own team (it could pick
    /// a serving task from its own queue while it waits inside a rayon join of tract's, and
    /// would then serve until a close that only it can reach).
    owner: Option<usize>,
    /// The step being run, or null. It lives on the evaluating thread's stack; see `run`.
    slot: AtomicPtr<Batch<'static>>,
    /// Workers that may be reading `slot`'s step: each registers here before it reads `slot`.
    active: AtomicUsize,
    closed: AtomicBool,
}

impl Team {
    /// A team for an evaluation running on this thread.
    pub(crate) fn new() -> Team {
        Team {
            owner: rayon::current_thread_index(),
            slot: AtomicPtr::new(std::ptr::null_mut()),
            active: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// A worker's part: takes the jobs of every step published until the team closes, and
    /// runs the pool's other work in between.
    pub(crate) fn serve(&self) {
        if rayon::current_thread_index() == self.owner {
            return;
        }
        while !self.closed.load(Ordering::Acquire) {
            let registered = Registered::new(&self.active);
            let step = self.slot.load(Ordering::SeqCst);
            if !step.is_null() {
                // SAFETY: `run` publishes a step only while it lives, and retires it (null in
                // `slot`) then waits for `active` to reach zero before it returns or unwinds.
                // This worker registered in `active` before loading `slot` (both SeqCst), so
                // either it loaded null or `run` is still waiting for it: the step is alive
                // until `registered` is dropped below.
                unsafe { &*step }.work();
            }
            drop(registered);
            if step.is_null() && rayon::yield_now() != Some(rayon::Yield::Executed) {
                std::hint::spin_loop();
            }
        }
    }

    /// `job(i)` for every `i < jobs`, on this thread and every serving worker; returns when
    /// all have returned.
    pub(crate) fn run(&self, jobs: usize, job: &(dyn Fn(usize) + Sync)) {
        let batch = Batch { job, jobs, next: AtomicUsize::new(0) };
        let published = (&batch as *const Batch<'_>).cast::<Batch<'static>>().cast_mut();
        let _retire = Retire(self);
        self.slot.store(published, Ordering::SeqCst);
        batch.work();
    }

    /// Ends the team: every worker returns from `serve` once it sees this.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

/// A worker's registration in `Team::active`, withdrawn when dropped (also if a job panics).
struct Registered<'a>(&'a AtomicUsize);

impl<'a> Registered<'a> {
    fn new(active: &'a AtomicUsize) -> Self {
        active.fetch_add(1, Ordering::SeqCst);
        Registered(active)
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Withdraws the published step and waits until no worker can still be reading it: the step
/// lives on `run`'s stack, so this runs before `run` returns, and also if a job panics there.
struct Retire<'a>(&'a Team);

impl Drop for Retire<'_> {
    fn drop(&mut self) {
        self.0.slot.store(std::ptr::null_mut(), Ordering::SeqCst);
        while self.0.active.load(Ordering::SeqCst) != 0 {
            std::hint::spin_loop();
        }
    }
}
