//! Two halves of a step's work on two cores, handed over by spinning: a mid-size GEMM's column halves, attention's
//! heads, GELU's rows.
//!
//! A GEMM of a few MFLOP takes a few hundred µs on one core, and waking a sleeping thread (rayon's workers, or a
//! new one) likely costs tens of µs on a VM: a `rayon::join` split of the bundled model's GEMMs ran 27 % slower,
//! and this hand-off made the bundled demo 14–33 % faster (bench/results/2026-11-25-cpu-fast-kernels.md). One
//! helper thread spins for [`SPIN`] after each job, so the next half reaches it in well under a µs, then parks
//! until the next job wakes it. Work inside a half runs on its own core ([`may_split`]).

use std::cell::{Cell, UnsafeCell};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock, TryLockError};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long the helper spins for the next job before it parks.
const SPIN: Duration = Duration::from_micros(200);

const IDLE: u8 = 0;
const READY: u8 = 1;
const DONE: u8 = 2;
const PANICKED: u8 = 3;

type Job = *mut (dyn FnMut() + Send);

thread_local! {
    /// Whether this thread is running one half of a [`join`]: the helper always, a caller while its own half runs.
    static IN_HALF: Cell<bool> = const { Cell::new(false) };
}

/// Whether work on this thread may take the second core: two or more cores, not inside a rayon task (samples or
/// streams already in parallel), and not inside a half of a [`join`] (the other core is busy with the other half;
/// a nested split would only run its halves one after the other).
pub fn may_split() -> bool {
    rayon::current_num_threads() > 1 && rayon::current_thread_index().is_none() && !IN_HALF.get()
}

/// Runs `f` on two halves of `data`, cut at a multiple of `unit` (a row), on two cores when [`may_split`] and
/// `data` holds at least `min_len` values; otherwise on the whole of it here.
pub fn for_halves<T: Send>(data: &mut [T], unit: usize, min_len: usize, f: impl Fn(&mut [T]) + Sync) {
    let mid = data.len() / unit / 2 * unit;
    if data.len() < min_len || mid == 0 || !may_split() {
        return f(data);
    }
    let (left, right) = data.split_at_mut(mid);
    join(|| f(left), || f(right));
}

struct Helper {
    state: AtomicU8,
    /// The job, written by the caller before `READY` and read by the helper after it (the state orders them).
    job: UnsafeCell<Option<Job>>,
    thread: Thread,
    /// One caller at a time; a second finds it taken and runs both halves itself.
    caller: Mutex<()>,
}

// SAFETY: `job` is only touched by the caller holding `caller` (before READY) and by the helper (between READY and
// DONE), never at the same time: the atomic state hands it over with release/acquire ordering.
unsafe impl Sync for Helper {}

fn helper() -> &'static Helper {
    static HELPER: OnceLock<&'static Helper> = OnceLock::new();
    HELPER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<&'static Helper>();
        let thread = std::thread::Builder::new()
            .name("rmt-gemm-pair".into())
            .spawn(move || serve(rx.recv().expect("the helper is sent once")))
            .expect("spawning the GEMM helper thread");
        let h: &'static Helper = Box::leak(Box::new(Helper {
            state: AtomicU8::new(IDLE),
            job: UnsafeCell::new(None),
            thread: thread.thread().clone(),
            caller: Mutex::new(()),
        }));
        tx.send(h).expect("the helper thread waits for its state");
        h
    })
}

/// The helper's loop: spin for a job, run it, report; park when none came for [`SPIN`].
fn serve(h: &'static Helper) {
    IN_HALF.set(true);
    let mut idle_since = Instant::now();
    loop {
        if h.state.load(Ordering::Acquire) == READY {
            // SAFETY: READY means the caller wrote the job and waits until this thread reports DONE or PANICKED.
            let job = unsafe { (*h.job.get()).take().expect("a ready job") };
            let result = catch_unwind(AssertUnwindSafe(|| unsafe { (*job)() }));
            h.state.store(if result.is_ok() { DONE } else { PANICKED }, Ordering::Release);
            idle_since = Instant::now();
        } else if idle_since.elapsed() < SPIN {
            std::hint::spin_loop();
        } else {
            std::thread::park_timeout(Duration::from_millis(100));
            idle_since = Instant::now();
        }
    }
}

/// Runs `a` on the calling thread and `b` on the helper thread, and returns when both are done. If another caller
/// holds the helper, both run here, one after the other. A panic in `b` is raised here after `a` finishes.
pub fn join(a: impl FnOnce(), b: impl FnOnce() + Send) {
    let h = helper();
    // a caller that panicked poisons the lock but leaves the helper serving: the lock is still good
    let _guard = match h.caller.try_lock() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(TryLockError::WouldBlock) => {
            a();
            b();
            return;
        }
    };
    let mut b = Some(b);
    let mut job = move || (b.take().expect("run once"))();
    let job: &mut (dyn FnMut() + Send) = &mut job;
    // SAFETY: the job's lifetime is erased, but this function does not return (nor unwind: `a` runs under
    // catch_unwind) until the helper has reported the job finished, so the borrow outlives every use of it.
    unsafe { *h.job.get() = Some(std::mem::transmute::<&mut (dyn FnMut() + Send), Job>(job)) };
    h.state.store(READY, Ordering::Release);
    h.thread.unpark();
    IN_HALF.set(true);
    let a_result = catch_unwind(AssertUnwindSafe(a));
    IN_HALF.set(false);
    let b_state = loop {
        match h.state.load(Ordering::Acquire) {
            READY => std::hint::spin_loop(),
            s => break s,
        }
    };
    h.state.store(IDLE, Ordering::Relaxed);
    if let Err(panic) = a_result {
        resume_unwind(panic);
    }
    assert_ne!(b_state, PANICKED, "the GEMM helper's half panicked");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn both_halves_run_once_and_each_sees_its_own_data() {
        let mut left = vec![0u32; 1000];
        let mut right = vec![0u32; 1000];
        for round in 1..=200u32 {
            join(|| left.iter_mut().for_each(|v| *v += round), || right.iter_mut().for_each(|v| *v += 2 * round));
        }
        assert!(left.iter().all(|&v| v == 200 * 201 / 2));
        assert!(right.iter().all(|&v| v == 200 * 201));
    }

    #[test]
    fn halves_cover_the_data_once_cut_at_a_row() {
        let mut data = vec![0u32; 11 * 3];
        let lens = Mutex::new(Vec::new());
        for_halves(&mut data, 3, 0, |half| {
            half.iter_mut().for_each(|v| *v += 1);
            lens.lock().unwrap().push(half.len());
        });
        assert!(data.iter().all(|&v| v == 1));
        // (which thread ran which half depends on whether another test holds the helper)
        let mut lens = lens.into_inner().unwrap();
        lens.sort();
        assert_eq!(lens, [15, 18], "two halves cut at a row");
        // below min_len: one call on the whole
        let calls = AtomicUsize::new(0);
        for_halves(&mut data, 3, 34, |whole| {
            assert_eq!(whole.len(), 33);
            calls.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn concurrent_callers_all_finish() {
        let count = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let add = || {
                        count.fetch_add(1, Ordering::Relaxed);
                    };
                    for _ in 0..100 {
                        join(add, add);
                    }
                });
            }
        });
        assert_eq!(count.load(Ordering::Relaxed), 800);
    }

    #[test]
    fn a_panic_in_the_helper_half_reaches_the_caller_and_the_helper_serves_on() {
        let caught = catch_unwind(|| join(|| {}, || panic!("planted")));
        assert!(caught.is_err());
        let mut ran = false;
        join(|| {}, || ran = true);
        assert!(ran);
    }
}
