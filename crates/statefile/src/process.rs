//! What the threads of one process share, and a process forked from it does not.
//!
//! `fork(2)` copies a process's memory but only the thread that called it. A child
//! starts with copies of the process-wide state (the lock queues, the helper threads'
//! pool, the open journals) as the parent's other threads left it at that instant:
//! - a mutex one of them held is locked for ever in the child, whose first use of it
//!   hangs past any deadline;
//! - a queue's turn one of them held is never handed on, so the child waits out its lock
//!   timeout;
//! - an open journal's descriptors are copies that share their open file descriptions
//!   with the parent's, and with them the parent's `flock(2)` locks: a lock on the same
//!   description is granted at once to whoever asks. Parent and child would both "hold"
//!   the journal's locks and write its records and shared state at the same time,
//!   damaging the journal (two commits at one position).
//!
//! So each such state is a [`PerProcess`]: the process that made it uses it, and a
//! process forked from it makes its own, fresh, never touching the copy (not even its
//! mutex). The copy's descriptors stay open in the child, unused; they share the
//! parent's locks, so one the parent held when it died stays held while the child
//! lives (docs/design.md lists this and the other limits).
//!
//! A fork is recognised by the process id, and, for a process that cannot be told from
//! its parent that way (pid 1 of a new pid namespace forked from pid 1 of another), by
//! [`after_fork_in_child`], which a binding calls from its runtime's fork hook (Python's
//! `os.register_at_fork`).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// How many levels of processes forked from processes forked from ... one that used
/// statefile get a state of their own. Each level is a process that used it: the
/// count is of nested forks, not of children (siblings use the same level, each in its
/// own copy of memory). The last level, if a chain ever reaches it, is shared by
/// everything forked below it, as every process's was before forks were told apart.
const LEVELS: usize = 64;

/// Raised in a child by [`after_fork_in_child`]: every level made before is its
/// parent's, whatever the process id says.
static FORKS: AtomicU64 = AtomicU64::new(0);

/// Tell statefile that this process was just forked, in the child, before anything
/// else of statefile's is used in it: every process-wide state it finds was its
/// parent's, and it makes its own.
///
/// statefile tells a forked child by its process id without this, so a program needs it
/// only where a child may have its parent's id: pid 1 of a new pid namespace forked from
/// pid 1 of another (a container's init). The Python package calls it from
/// `os.register_at_fork`. Calling it in a process that was not just forked is harmless
/// but for the cost of making those states anew (the old ones stay, unused).
pub fn after_fork_in_child() {
    FORKS.fetch_add(1, Ordering::SeqCst);
}

/// One level's state: `value`, made by process `pid` after `forks` calls of
/// [`after_fork_in_child`].
struct Level<T> {
    pid: u32,
    forks: u64,
    value: T,
}

/// A `T` for each process: made on first use in the process (with `T::default()`),
/// never the one a parent made. See the module's docs.
pub(crate) struct PerProcess<T> {
    levels: [OnceLock<Level<T>>; LEVELS],
    /// The level this process's state is at, or the next to make.
    at: AtomicUsize,
}

impl<T: Default> PerProcess<T> {
    pub(crate) const fn new() -> PerProcess<T> {
        PerProcess {
            levels: [const { OnceLock::new() }; LEVELS],
            at: AtomicUsize::new(0),
        }
    }

    /// This process's state.
    pub(crate) fn get(&self) -> &T {
        self.get_as(std::process::id(), FORKS.load(Ordering::SeqCst))
    }

    /// The state of process `pid` after `forks` calls of [`after_fork_in_child`].
    fn get_as(&self, pid: u32, forks: u64) -> &T {
        loop {
            let at = self.at.load(Ordering::Acquire);
            let level = self.levels[at].get_or_init(|| Level {
                pid,
                forks,
                value: T::default(),
            });
            if (level.pid == pid && level.forks == forks) || at + 1 == LEVELS {
                return &level.value;
            }
            // Made before this process was forked: its parent's. The next level is not
            // made yet in this process: the parent had not moved past the one it made.
            let _ = self
                .at
                .compare_exchange(at, at + 1, Ordering::AcqRel, Ordering::Acquire);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn one_state_for_every_thread_of_a_process() {
        static S: PerProcess<Mutex<Vec<u32>>> = PerProcess::new();
        std::thread::scope(|s| {
            for i in 0..8 {
                s.spawn(move || S.get().lock().unwrap().push(i));
            }
        });
        let mut seen = S.get().lock().unwrap().clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn a_forked_child_gets_a_fresh_state_and_never_touches_its_parents() {
        let s: PerProcess<Mutex<Vec<u32>>> = PerProcess::new();
        s.get_as(100, 0).lock().unwrap().push(1);
        // As in a child forked while another thread of the parent held the mutex: the
        // copy stays locked, and the child must not wait for it (this would hang).
        let held = s.get_as(100, 0).lock().unwrap();
        assert!(s.get_as(101, 0).lock().unwrap().is_empty(), "by its pid");
        s.get_as(101, 0).lock().unwrap().push(2);
        assert_eq!(*s.get_as(101, 0).lock().unwrap(), vec![2]);
        // pid 1 forked from pid 1 (pid namespaces): told by the hook.
        assert!(s.get_as(101, 1).lock().unwrap().is_empty(), "by the hook");
        drop(held);
    }

    #[test]
    fn a_chain_of_forks_deeper_than_the_levels_shares_the_last() {
        let s: PerProcess<Mutex<Vec<u32>>> = PerProcess::new();
        for pid in 0..LEVELS as u32 {
            s.get_as(pid, 0).lock().unwrap().push(pid);
            assert_eq!(*s.get_as(pid, 0).lock().unwrap(), vec![pid]);
        }
        s.get_as(LEVELS as u32, 0).lock().unwrap().push(0);
        assert_eq!(
            *s.get_as(LEVELS as u32 + 1, 0).lock().unwrap(),
            vec![LEVELS as u32 - 1, 0],
            "the last level is shared"
        );
    }
}
