//! A crew: the calling thread and helpers from the rayon pool, sharing a sequence of short
//! parallel jobs without a round trip into the pool per job.
//!
//! The simulator's passes are short: at d = 16, n = 10³ a round is about thirty passes of
//! 1–6 µs each (sampling blocks, then per Newton iteration a gradient-and-Hessian pass and a
//! margin-and-loss pass), and handing half of such a pass to another thread through rayon's
//! `join` or a parallel iterator costs about what it saves. A crew's helpers instead stay in a
//! spin loop for the whole sequence ([`Crew::scope`]), and each job ([`Crew::map`],
//! [`Crew::for_each_mut`]) is a number of units that every participant claims one at a time
//! from one atomic word. `sim::simulate` hands a crew whole rounds when they are this small, and
//! the passes of each round when they are large.
//!
//! * **No waiting on absent helpers.** The caller claims units too, and waits only for units a
//!   helper has already claimed (and is running): a helper that starts late, or never (a busy
//!   pool), only means the caller runs more units itself.
//! * **Results never depend on the crew.** Each unit writes its own output and the caller
//!   combines them in unit order, so which participant ran which unit, and how many there
//!   were, changes nothing, bit for bit.
//! * **Locality.** The caller takes units from the front and helpers from the back, so with
//!   one helper and two units (the simulator's size) each thread keeps its half of the rows,
//!   and their cache lines, from pass to pass: units handed out first come, first served, moved
//!   a chunk's data between the cores' caches on most passes and made the fit slower than on
//!   one thread.
//! * **Panics.** A unit that panics on a helper still counts as finished (so the caller does
//!   not wait forever) and the panic resurfaces when [`Crew::scope`] returns; one that panics on
//!   the caller first closes the job and waits until no helper is inside it.

// One lifetime erasure: a job lives on the caller's stack while helpers call it; the argument
// is at `Crew::run`.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Bits of the unit counter (and of the unit count) in the job word.
const UNIT_BITS: u32 = 16;
/// Most units a job hands out through the crew; larger jobs run on the caller alone (no pass
/// of the simulator comes near it: 65 535 chunks are 33 million rows).
pub const MAX_UNITS: usize = (1 << UNIT_BITS) - 1;
/// Empty polls before an idle helper starts sleeping between polls (≈ 0.1 ms of spinning).
/// Passes a few microseconds apart keep a helper spinning; a long serial stretch of the
/// caller (a Cholesky at d = 256) lets it sleep instead of calling `sched_yield` in a loop,
/// which cost the caller time in the kernel.
const SPINS_BEFORE_SLEEP: u32 = 1 << 12;
/// An idle helper's sleep between polls.
const IDLE_SLEEP: std::time::Duration = std::time::Duration::from_micros(20);

/// The job being handed out: a type-erased reference to the caller's closure.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
}

/// The calling thread plus the helpers of one [`Crew::scope`].
#[derive(Debug)]
pub struct Crew {
    /// `(job id << 32) | (lo << 16) | hi`: units `lo..hi` of the job are unclaimed; id 0 means
    /// no job yet.
    state: AtomicU64,
    /// The current job (valid while its id is in `state` and a unit of it is unclaimed or
    /// running).
    job: AtomicPtr<Job<'static>>,
    /// Units of the current job finished.
    done: AtomicUsize,
    /// Helpers between reading `state` and finishing (or failing to claim) a unit.
    active: AtomicUsize,
    /// Last job id given out (written by the caller only).
    last_id: AtomicU32,
    stop: AtomicBool,
    helpers: usize,
}

fn pack(id: u32, lo: usize, hi: usize) -> u64 {
    (u64::from(id) << 32) | ((lo as u64) << UNIT_BITS) | hi as u64
}

/// `(id, lo, hi)`.
fn unpack(s: u64) -> (u32, usize, usize) {
    let mask = (1u64 << UNIT_BITS) - 1;
    (
        (s >> 32) as u32,
        ((s >> UNIT_BITS) & mask) as usize,
        (s & mask) as usize,
    )
}

/// Adds one to a counter when dropped (also while unwinding).
struct Bump<'a>(&'a AtomicUsize, bool);

impl Drop for Bump<'_> {
    fn drop(&mut self) {
        if self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        } else {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Crew {
    fn new(helpers: usize) -> Self {
        Self {
            state: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            done: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            last_id: AtomicU32::new(0),
            stop: AtomicBool::new(false),
            helpers,
        }
    }

    /// A crew of the calling thread alone: every job runs its units in order, here.
    pub fn serial() -> Self {
        Self::new(0)
    }

    /// Runs `f` on the calling thread with a crew of it and, as helpers, all but one thread of
    /// the current rayon pool (none when the pool has one thread). A helper joins when its
    /// pool thread picks it up; `f` does not wait for that (`rayon::in_place_scope`: no round
    /// trip into the pool, which cost about 5 µs per round of a 20-round simulation at d = 16,
    /// n = 10³).
    pub fn scope<R: Send>(f: impl FnOnce(&Crew) -> R + Send) -> R {
        let helpers = rayon::current_num_threads().saturating_sub(1);
        if helpers == 0 {
            return f(&Crew::serial());
        }
        let crew = Crew::new(helpers);
        rayon::in_place_scope(|s| {
            for _ in 0..helpers {
                s.spawn(|_| crew.help());
            }
            // The helpers leave when `f` returns or unwinds.
            let _stop = Stop(&crew.stop);
            f(&crew)
        })
    }

    /// Helpers in this crew (0 for [`Crew::serial`]).
    pub fn helpers(&self) -> usize {
        self.helpers
    }

    /// `f(0), …, f(units − 1)`, spread over the crew, in unit order.
    pub fn map<T: Send>(&self, units: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
        if self.helpers == 0 || units <= 1 {
            return (0..units).map(f).collect();
        }
        let slots: Vec<Mutex<Option<T>>> = (0..units).map(|_| Mutex::new(None)).collect();
        self.run(units, &|u| {
            let v = f(u);
            *slots[u].lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
        });
        slots
            .into_iter()
            .map(|m| {
                m.into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .expect("every unit of a crew job runs")
            })
            .collect()
    }

    /// `f(u, &mut items[u])` for every u, spread over the crew.
    pub fn for_each_mut<T: Send>(&self, items: &mut [T], f: impl Fn(usize, &mut T) + Sync) {
        if self.helpers == 0 || items.len() <= 1 {
            items.iter_mut().enumerate().for_each(|(u, t)| f(u, t));
            return;
        }
        let cells: Vec<Mutex<&mut T>> = items.iter_mut().map(Mutex::new).collect();
        self.run(cells.len(), &|u| {
            let mut item = cells[u].lock().unwrap_or_else(|e| e.into_inner());
            f(u, &mut item);
        });
    }

    /// Runs `f(u)` for `u < units` on the crew; returns when every unit has finished.
    fn run(&self, units: usize, f: &(dyn Fn(usize) + Sync)) {
        if units > MAX_UNITS {
            (0..units).for_each(f);
            return;
        }
        let job = Job { f };
        let id = match self.last_id.load(Ordering::SeqCst).wrapping_add(1) {
            0 => 1,
            id => id,
        };
        self.last_id.store(id, Ordering::SeqCst);
        self.done.store(0, Ordering::SeqCst);
        // The lifetime of `job` is erased here. A helper dereferences the pointer only after
        // claiming a unit of job `id` (a successful compare-exchange on `state` while `id` is
        // in it with units left), and this function returns only once every unit of `id` is
        // claimed and finished (`done == units`), or, when unwinding, once the job is closed
        // and no helper is between reading `state` and finishing its unit (`Closer`). So the
        // pointer is never dereferenced after `job` is gone.
        let ptr = &job as *const Job<'_> as *mut Job<'static>;
        self.job.store(ptr, Ordering::SeqCst);
        self.state.store(pack(id, 0, units), Ordering::SeqCst);
        let closer = Closer {
            crew: self,
            id,
            units,
        };
        // The caller claims from the front.
        loop {
            let s = self.state.load(Ordering::SeqCst);
            let (_, lo, hi) = unpack(s);
            if lo >= hi {
                break;
            }
            if self
                .state
                .compare_exchange(s, s + (1 << UNIT_BITS), Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                let _done = Bump(&self.done, true);
                f(lo);
            }
        }
        while self.done.load(Ordering::SeqCst) < units {
            std::hint::spin_loop();
        }
        std::mem::forget(closer);
    }

    /// A helper's loop: run units of whatever job is current until the scope ends.
    fn help(&self) {
        let mut idle = 0u32;
        while !self.stop.load(Ordering::SeqCst) {
            if self.try_unit() {
                idle = 0;
            } else if idle < SPINS_BEFORE_SLEEP {
                idle += 1;
                std::hint::spin_loop();
            } else {
                std::thread::sleep(IDLE_SLEEP);
            }
        }
    }

    /// Claims (from the back) and runs one unit of the current job; false when there is none.
    fn try_unit(&self) -> bool {
        let s = self.state.load(Ordering::SeqCst);
        let (id, lo, hi) = unpack(s);
        if id == 0 || lo >= hi {
            return false;
        }
        self.active.fetch_add(1, Ordering::SeqCst);
        let _active = Bump(&self.active, false);
        // Read after `s` (so it is job `id`'s pointer or a later one) and before the claim
        // (which succeeds only while job `id` still has this unit unclaimed, so no later
        // pointer can have been stored yet): on success it is job `id`'s.
        let job = self.job.load(Ordering::SeqCst);
        if self
            .state
            .compare_exchange(s, s - 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return true;
        }
        let _done = Bump(&self.done, true);
        // SAFETY: unit `hi − 1` of job `id` is claimed and not yet counted in `done`, so the
        // caller is still inside `run` for this job and `*job` is alive (see `Crew::run`).
        let job = unsafe { &*job };
        (job.f)(hi - 1);
        true
    }
}

/// Sets the crew's stop flag when dropped.
struct Stop<'a>(&'a AtomicBool);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Closes a job whose caller unwinds, and waits until no helper can still touch it.
struct Closer<'a> {
    crew: &'a Crew,
    id: u32,
    units: usize,
}

impl Drop for Closer<'_> {
    fn drop(&mut self) {
        self.crew
            .state
            .store(pack(self.id, self.units, self.units), Ordering::SeqCst);
        while self.crew.active.load(Ordering::SeqCst) > 0 {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool")
    }

    #[test]
    fn jobs_give_every_unit_once_in_order() {
        for threads in [1, 2, 3] {
            let out = pool(threads).install(|| {
                Crew::scope(|crew| {
                    let mut all = Vec::new();
                    for job in 0..300 {
                        let units = job % 7;
                        all.push(crew.map(units, |u| (job, u, u * u)));
                    }
                    all
                })
            });
            for (job, v) in out.iter().enumerate() {
                let want: Vec<_> = (0..job % 7).map(|u| (job, u, u * u)).collect();
                assert_eq!(v, &want, "{threads} threads, job {job}");
            }
        }
    }

    #[test]
    fn for_each_mut_writes_every_item() {
        let out = pool(2).install(|| {
            Crew::scope(|crew| {
                let mut v: Vec<Vec<usize>> = (0..50).map(|i| vec![i; 3]).collect();
                for _ in 0..100 {
                    crew.for_each_mut(&mut v, |u, item| item.push(u));
                }
                v
            })
        });
        for (i, item) in out.iter().enumerate() {
            assert_eq!(item.len(), 103);
            assert!(item[3..].iter().all(|&u| u == i));
        }
    }

    #[test]
    fn helpers_take_units_when_the_caller_is_slow() {
        // The units sleep, so a live helper must pick some up; keep trying (a busy machine may
        // not schedule the helper at once) for up to 2000 jobs.
        let seen = pool(2).install(|| {
            Crew::scope(|crew| {
                let mut seen = std::collections::HashSet::new();
                for _ in 0..2000 {
                    let who = crew.map(4, |_| {
                        std::thread::sleep(std::time::Duration::from_micros(500));
                        rayon::current_thread_index()
                    });
                    seen.extend(who);
                    if seen.len() >= 2 {
                        break;
                    }
                }
                seen
            })
        });
        assert!(seen.len() >= 2, "only {seen:?} ran units");
    }

    #[test]
    fn a_panicking_unit_surfaces_from_the_scope() {
        let r = std::panic::catch_unwind(|| {
            pool(2).install(|| {
                Crew::scope(|crew| {
                    crew.map(8, |u| {
                        assert!(u != 5, "unit 5 fails");
                        u
                    })
                })
            })
        });
        assert!(r.is_err());
    }

    #[test]
    fn serial_crew_runs_in_order_on_the_caller() {
        let crew = Crew::serial();
        let me = std::thread::current().id();
        let v = crew.map(5, |u| (u, std::thread::current().id() == me));
        assert_eq!(v, (0..5).map(|u| (u, true)).collect::<Vec<_>>());
    }
}
