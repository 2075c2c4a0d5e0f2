//! How our ops use threads: the pool of the plan being run, a size below which splitting does not
//! pay, and a parallel-for that hands out jobs from a counter. Threads change only who computes
//! each job, never the bytes.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use crate::team::Team;

/// Below this many multiply-accumulates per image an int8 convolution runs on the calling
/// thread. A large image splits into bands of output rows; a small one (a single band: 4x4 and
/// 8x8 at 256 channels, 9 M and 38 M) into runs of output channels, so each thread reads only its
/// share of the weights, which come from memory at every evaluation of a large net: the 35.7M
/// int8 net on two threads, int8 convolutions 9.4 -> 8.5 ms per evaluation (`op_profile
/// --threads 2`). With bands only, small layers could not split at all, and a lower threshold
/// (2^21) made the same net slower (19.2 -> 20.3 ms). The default int8 model still runs on one
/// thread (see `network::SMALL_NETWORK_MACS`).
const PARALLEL_MACS: usize = 1 << 22;

/// A pool of `threads` workers for a plan, or none for one thread.
pub(crate) fn new_pool(threads: usize) -> TractResult<Option<Arc<rayon::ThreadPool>>> {
    if threads <= 1 {
        return Ok(None);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("edgediff-{i}"))
        .build()
        .map_err(|e| format_err!("cannot start {threads} threads: {e}"))?;
    Ok(Some(Arc::new(pool)))
}

thread_local! {
    /// The pool of the plan this thread is running (see [`with_pool`]).
    static CURRENT: RefCell<Option<Arc<rayon::ThreadPool>>> = const { RefCell::new(None) };
    /// The team of the evaluation this thread is running, or null (see [`with_pool`]).
    static TEAM: std::cell::Cell<*const Team> = const { std::cell::Cell::new(std::ptr::null()) };
}

/// Runs `f` on a worker of `pool`, with `pool` as the pool our ops split their work over, and
/// (with the `tract-threads` feature) tract's own multi-threaded kernels too.
///
/// The whole evaluation runs on a worker of the pool, so each op that splits its work starts on
/// the worker it is already on and only wakes the others. Run from outside the pool, every split
/// handed the work over and woke the caller afterwards: on a 2-vCPU VM that cost about 120 us
/// per split (`op_profile --threads 2`).
///
/// The other workers serve the evaluation as a [`Team`] until it ends, spinning between its
/// parallel steps rather than sleeping (see `team`).
pub(crate) fn with_pool<R: Send>(pool: &Arc<rayon::ThreadPool>, f: impl FnOnce() -> R + Send) -> R {
    pool.install(|| {
        let team = Team::new();
        // No more spinning workers than the CPU has other cores: a worker spinning on the
        // evaluating thread's core would only slow it down.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        pool.in_place_scope(|scope| {
            for _ in 1..pool.current_num_threads().min(cores) {
                scope.spawn(|_| team.serve());
            }
            let _running = Running {
                pool: CURRENT.with(|c| c.replace(Some(pool.clone()))),
                team: TEAM.with(|t| t.replace(&team as *const Team)),
                closes: &team,
            };
            tract_scope(pool, f)
        })
    })
}

/// This thread's pool and team while it runs an evaluation: when it ends (also by a panic),
/// the previous ones come back and the team closes (the scope then waits for the workers,
/// which return once they see it closed).
struct Running<'a> {
    pool: Option<Arc<rayon::ThreadPool>>,
    team: *const Team,
    closes: &'a Team,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        TEAM.with(|t| t.set(self.team));
        CURRENT.with(|c| *c.borrow_mut() = self.pool.take());
        self.closes.close();
    }
}

#[cfg(feature = "tract-threads")]
fn tract_scope<R>(pool: &Arc<rayon::ThreadPool>, f: impl FnOnce() -> R) -> R {
    use tract_linalg::multithread::{multithread_tract_scope, set_threading_element_threshold, Executor};
    set_threading_element_threshold(TRACT_SPLIT_ELEMENTS);
    multithread_tract_scope(Executor::MultiThread(pool.clone()), f)
}

/// Below this many elements tract's own element-wise ops (the residual adds, the timestep
/// broadcasts) run on one thread. Its default, 32K, split each 32x32x128 add into eight jobs
/// that took longer on two threads than on one (35.7M-parameter net, `op_profile --threads 2`:
/// adds 0.68 -> 0.32 ms per evaluation with this threshold). Process-wide: tract keeps it in a
/// global.
#[cfg(feature = "tract-threads")]
const TRACT_SPLIT_ELEMENTS: usize = 1 << 20;

#[cfg(not(feature = "tract-threads"))]
fn tract_scope<R>(_pool: &Arc<rayon::ThreadPool>, f: impl FnOnce() -> R) -> R {
    f()
}

/// The pool of the plan being run ([`with_pool`]), if it has more than one thread and the work
/// is worth splitting. Threads change only who computes each band, never the bytes.
pub(crate) fn thread_pool(macs: usize) -> Option<Arc<rayon::ThreadPool>> {
    pool_above(macs, PARALLEL_MACS)
}

/// [`thread_pool`] for an int8 matrix product (attention's projections): [`INT8_PRODUCT_MACS`].
pub(crate) fn int8_product_pool(macs: usize) -> Option<Arc<rayon::ThreadPool>> {
    pool_above(macs, INT8_PRODUCT_MACS)
}

/// Below this many multiply-accumulates an int8 matrix product runs on the calling thread. Its
/// jobs are bands of 64 tokens that pack their own columns from the tokens in place (no padded
/// image to share), so it splits well below [`PARALLEL_MACS`]: the 35.7M-parameter int8 net's
/// 16x16 attention projections (16.8 M each, four bands).
const INT8_PRODUCT_MACS: usize = 1 << 23;

/// [`thread_pool`] for the fp32 kernels: [`FP32_PARALLEL_MACS`].
pub(crate) fn fp32_thread_pool(macs: usize) -> Option<Arc<rayon::ThreadPool>> {
    pool_above(macs, FP32_PARALLEL_MACS)
}

/// Below this many multiply-accumulates an fp32 kernel runs on the calling thread. Far below
/// the int8 kernels' threshold: the evaluation's workers are awake (`team`), so a split costs
/// little more than the jobs' own setup; the default model's 0.6 M to 9 M multiply-add layers
/// split (2 threads: 0.95 -> 0.74 ms per evaluation; at 2^24 and the workers asleep it gained
/// nothing), and 2^17 was no faster than 2^19.
const FP32_PARALLEL_MACS: usize = 1 << 19;

/// The pool to split an element-wise pass over `values` values across, from tract's threshold
/// for its row-parallel ops ([`PARALLEL_VALUES`]).
pub(crate) fn values_pool(values: usize) -> Option<Arc<rayon::ThreadPool>> {
    pool_above(values, PARALLEL_VALUES)
}

/// The pool to split a pass that only moves values (a concatenation, an addition) across:
/// [`SPLIT_MOVE_VALUES`].
pub(crate) fn move_pool(values: usize) -> Option<Arc<rayon::ThreadPool>> {
    pool_above(values, SPLIT_MOVE_VALUES)
}

/// Below this many values a concatenation or a broadcast addition runs on the calling thread
/// (tract's op). On two threads the default model's (16K-32K values) took 1.3x as long split,
/// 120 -> 150 us per evaluation, while the 35.7M-parameter net's (64K-128K values) took
/// 0.6-0.7x as long (`op_profile --threads 2`).
const SPLIT_MOVE_VALUES: usize = 1 << 16;

/// Below this many values an element-wise pass runs on the calling thread: the default model's
/// GroupNorms (8K values at 16x16) split too (tract-linalg's own default, 32K, left them on one
/// thread).
const PARALLEL_VALUES: usize = 1 << 12;

fn pool_above(macs: usize, threshold: usize) -> Option<Arc<rayon::ThreadPool>> {
    if macs < threshold {
        return None;
    }
    CURRENT.with(|c| c.borrow().clone()).filter(|pool| pool.current_num_threads() > 1)
}

/// Runs `job(i)` for every `i < jobs` on the calling thread and the other threads of `pool`,
/// each taking the next job from a shared counter until none are left. Inside an evaluation
/// ([`with_pool`]) the jobs go to its team, whose workers are already awake.
///
/// Not rayon's `par_iter`: that splits the range in halves up front, so a worker that wakes
/// late holds its half while the caller waits. On a 2-vCPU VM the second worker sometimes
/// took longer to wake than the whole convolution (a band log showed every job of some convs on
/// one thread), and the same conv ran 1.2x to 1.9x faster on 2 threads from one run to the
/// next. With a counter the caller starts at once and a late worker only takes what is left.
/// Which thread computes a job never changes its bytes.
pub fn parallel_for(pool: &rayon::ThreadPool, jobs: usize, job: &(dyn Fn(usize) + Sync)) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let team = TEAM.with(|t| t.get());
    if !team.is_null() {
        // SAFETY: `TEAM` is set only by `with_pool`, to a team that outlives the evaluation it
        // runs on this thread, and reset before that team is dropped.
        return unsafe { &*team }.run(jobs, job);
    }
    let next = AtomicUsize::new(0);
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= jobs {
            break;
        }
        job(i);
    };
    pool.in_place_scope(|scope| {
        for _ in 1..pool.current_num_threads().min(jobs) {
            scope.spawn(|_| work());
        }
        work();
    });
}

/// Runs `f(i, chunk)` on each `chunk_len`-value chunk of `values` (chunk `i` starts at value
/// `i · chunk_len`; the last may be shorter): on `pool` ([`parallel_for`]), or without one in
/// order on the calling thread. Returns an error a chunk gave, if any did.
pub(crate) fn try_for_each_chunk(
    pool: Option<&rayon::ThreadPool>,
    values: &mut [f32],
    chunk_len: usize,
    f: impl Fn(usize, &mut [f32]) -> TractResult<()> + Sync,
) -> TractResult<()> {
    let Some(pool) = pool else {
        return values.chunks_mut(chunk_len).enumerate().try_for_each(|(i, chunk)| f(i, chunk));
    };
    let chunks: Vec<Mutex<&mut [f32]>> = values.chunks_mut(chunk_len).map(Mutex::new).collect();
    let failure = Mutex::new(None);
    let job = |i: usize| {
        let mut chunk = chunks[i].lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Err(e) = f(i, &mut chunk) {
            *failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(e);
        }
    };
    parallel_for(pool, chunks.len(), &job);
    failure.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner()).map_or(Ok(()), Err)
}

/// The jobs of an fp32 kernel of `macs` multiply-accumulates: on the plan's pool
/// ([`parallel_for`]) where [`fp32_thread_pool`] says splitting pays, else one after another on the calling thread.
pub(crate) fn run_jobs(macs: usize, jobs: usize, job: &(dyn Fn(usize) + Sync)) {
    match fp32_thread_pool(macs) {
        Some(pool) => parallel_for(&pool, jobs, job),
        None => (0..jobs).for_each(job),
    }
}
