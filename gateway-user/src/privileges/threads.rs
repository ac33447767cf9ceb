//! The syscalls of the drop, made on every thread of the process.
//!
//! Capabilities belong to threads: `capset(2)` and the `prctl(2)` bounding and ambient
//! operations change the calling thread only. tokio's worker threads, which run every
//! connection, exist long before start-up ends, so dropping on the calling thread alone would
//! leave them privileged (while `/proc/<pid>/status`, which shows the main thread, says
//! otherwise). Each thread is therefore sent a signal whose handler makes the same
//! async-signal-safe syscalls: the technique glibc uses for `setuid` and libcap's `psx` for
//! `cap_set_proc`. The result is then read back from `/proc/self/task/*/status`, and threads
//! that still hold more (e.g. created by a thread not reached yet) are signalled again.
//!
//! The `caps` crate is not used: it changes the calling thread only, and it allocates, which
//! a signal handler must not do.

use std::{
    fmt, fs, io, mem,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst},
        Mutex, PoisonError,
    },
    thread,
    time::{Duration, Instant},
};

use libc::{c_int, c_ulong};

use super::{CapSet, DropError, ThreadCaps};

/// The calling thread's status in `/proc`.
pub(super) const OWN_STATUS: &str = "/proc/thread-self/status";

/// Rounds of "signal every thread that holds too much, then look again" before giving up.
const ROUNDS: usize = 5;
/// How long a round waits for the signalled threads' handlers to have run.
const HANDLER_TIMEOUT: Duration = Duration::from_secs(2);

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets, as two 32-bit words.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

/// `struct __user_cap_data_struct`: one 32-bit word of each set.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// What every thread applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Plan {
    /// Capabilities to keep (where held); every other one goes.
    pub keep: CapSet,
    /// Also shrink the bounding set to `keep` (needs `CAP_SETPCAP`).
    pub bounding: bool,
    /// The highest capability number the kernel knows.
    pub last_cap: u32,
}

/// The plan, where the signal handler reads it. Written before any thread is signalled.
static PLAN_KEEP: AtomicU64 = AtomicU64::new(0);
static PLAN_BOUNDING: AtomicBool = AtomicBool::new(false);
static PLAN_LAST_CAP: AtomicU32 = AtomicU32::new(0);
/// Handler runs so far.
static HANDLED: AtomicUsize = AtomicUsize::new(0);
/// The first failure in a handler ([`Failed::encode`]); 0 while none.
static FAILED: AtomicU64 = AtomicU64::new(0);
/// One drop at a time: the plan above is global.
static DROPPING: Mutex<()> = Mutex::new(());

impl Plan {
    fn publish(self) {
        PLAN_KEEP.store(self.keep.bits(), SeqCst);
        PLAN_BOUNDING.store(self.bounding, SeqCst);
        PLAN_LAST_CAP.store(self.last_cap, SeqCst);
    }

    fn published() -> Self {
        Self {
            keep: CapSet::from_bits(PLAN_KEEP.load(SeqCst)),
            bounding: PLAN_BOUNDING.load(SeqCst),
            last_cap: PLAN_LAST_CAP.load(SeqCst),
        }
    }
}

/// The syscall of a thread's drop that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Bounding = 1,
    Ambient = 2,
    Capget = 3,
    Capset = 4,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bounding => "dropping from the bounding set (prctl PR_CAPBSET_DROP)",
            Self::Ambient => "lowering an ambient capability (prctl PR_CAP_AMBIENT_LOWER)",
            Self::Capget => "reading the capability sets (capget)",
            Self::Capset => "setting the capability sets (capset)",
        })
    }
}

/// A failed step on thread `tid`, with its errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Failed {
    tid: i32,
    step: Step,
    errno: i32,
}

impl Failed {
    /// The failure of `step` just now on this thread. Async-signal-safe.
    fn now(step: Step) -> Self {
        // SAFETY: `__errno_location` returns this thread's errno, valid for reading;
        // `gettid` has no preconditions.
        let (errno, tid) = unsafe { (*libc::__errno_location(), libc::gettid()) };
        Self { tid, step, errno }
    }

    /// Packed into one word, so the first failure is recorded whole: tid, step, errno.
    fn encode(self) -> u64 {
        let tid = u64::from(self.tid.cast_unsigned());
        let errno = u64::from(self.errno.cast_unsigned()) & 0xff_ffff;
        (tid << 32) | ((self.step as u64) << 24) | errno
    }

    fn decode(word: u64) -> Option<Self> {
        let step = match (word >> 24) & 0xff {
            1 => Step::Bounding,
            2 => Step::Ambient,
            3 => Step::Capget,
            4 => Step::Capset,
            _ => return None,
        };
        Some(Self {
            tid: ((word >> 32) as u32).cast_signed(),
            step,
            errno: (word & 0xff_ffff) as i32,
        })
    }

    fn into_error(self) -> DropError {
        DropError::Syscall {
            tid: self.tid,
            step: self.step,
            source: io::Error::from_raw_os_error(self.errno),
        }
    }
}

/// The highest capability number this kernel knows (`/proc/sys/kernel/cap_last_cap`, which
/// a sandbox may hide): the last one `PR_CAPBSET_READ` does not refuse.
pub(super) fn last_cap() -> u32 {
    (0..64u32)
        // SAFETY: prctl with integer arguments only.
        .take_while(|&cap| unsafe { libc::prctl(libc::PR_CAPBSET_READ, c_ulong::from(cap)) } >= 0)
        .last()
        .unwrap_or(0)
}

/// `prctl(option, arg2, arg3, 0, 0)`: the capability options take at most two arguments.
/// Async-signal-safe.
fn prctl(option: libc::c_int, arg2: c_ulong, arg3: c_ulong) -> libc::c_int {
    // SAFETY: integer arguments only. The unused ones are passed as 0 because prctl is
    // variadic and PR_CAP_AMBIENT refuses non-zero ones.
    unsafe { libc::prctl(option, arg2, arg3, 0 as c_ulong, 0 as c_ulong) }
}

/// Drops what `plan` says on the calling thread: bounding set (while `CAP_SETPCAP` is still
/// effective), ambient set, then effective, permitted and inheritable in one `capset`.
/// Async-signal-safe: syscalls only, no allocation, no lock.
fn apply_here(plan: Plan) -> Result<(), Failed> {
    let unwanted = (0..=plan.last_cap.min(63)).filter(|&cap| !plan.keep.contains(cap));
    for cap in unwanted.clone() {
        let cap = c_ulong::from(cap);
        if plan.bounding
            && prctl(libc::PR_CAPBSET_READ, cap, 0) == 1
            && prctl(libc::PR_CAPBSET_DROP, cap, 0) != 0
        {
            return Err(Failed::now(Step::Bounding));
        }
    }
    for cap in unwanted {
        let cap = c_ulong::from(cap);
        let is_set = c_ulong::try_from(libc::PR_CAP_AMBIENT_IS_SET).unwrap_or_default();
        let lower = c_ulong::try_from(libc::PR_CAP_AMBIENT_LOWER).unwrap_or_default();
        if prctl(libc::PR_CAP_AMBIENT, is_set, cap) == 1
            && prctl(libc::PR_CAP_AMBIENT, lower, cap) != 0
        {
            return Err(Failed::now(Step::Ambient));
        }
    }
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: version 3 reads one header and writes two data words, both valid here.
    if unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) } != 0 {
        return Err(Failed::now(Step::Capget));
    }
    let keep = plan.keep.bits();
    for (word, half) in data.iter_mut().zip([keep as u32, (keep >> 32) as u32]) {
        word.effective &= half;
        word.permitted &= half;
        word.inheritable &= half;
    }
    // SAFETY: version 3 reads one header and two data words, both valid here.
    if unsafe { libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) } != 0 {
        return Err(Failed::now(Step::Capset));
    }
    Ok(())
}

/// The signal handler: [`apply_here`] with the published plan. Keeps the interrupted code's
/// errno.
extern "C" fn on_signal(_signal: c_int) {
    // SAFETY: `__errno_location` returns this thread's errno, valid for reads and writes.
    let errno = unsafe { *libc::__errno_location() };
    if let Err(failed) = apply_here(Plan::published()) {
        let _ = FAILED.compare_exchange(0, failed.encode(), SeqCst, SeqCst);
    }
    HANDLED.fetch_add(1, SeqCst);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// The real-time signal carrying the drop to other threads, handled by [`on_signal`] while
/// this lives, ignored afterwards (not reset to its default, which would kill the process
/// if a late one arrived).
struct Handler {
    signal: c_int,
}

impl Handler {
    /// Takes the highest real-time signal nobody handles.
    fn install() -> io::Result<Self> {
        for signal in (libc::SIGRTMIN()..=libc::SIGRTMAX()).rev() {
            // SAFETY: all-zero is a valid `sigaction`; sigaction(2) only reads `action` and
            // writes `old`, both valid.
            unsafe {
                let mut old: libc::sigaction = mem::zeroed();
                if libc::sigaction(signal, std::ptr::null(), &raw mut old) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if old.sa_sigaction != libc::SIG_DFL {
                    continue;
                }
                let mut action: libc::sigaction = mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(c_int) as libc::sighandler_t;
                action.sa_flags = libc::SA_RESTART;
                libc::sigfillset(&raw mut action.sa_mask);
                if libc::sigaction(signal, &raw const action, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            return Ok(Self { signal });
        }
        Err(io::Error::other("every real-time signal is in use"))
    }

    /// Signals thread `tid`; `false` if it has exited meanwhile.
    fn send(&self, tid: i32) -> io::Result<bool> {
        // SAFETY: getpid has no preconditions; tgkill takes integers.
        let rc = unsafe { libc::tgkill(libc::getpid(), tid, self.signal) };
        match rc {
            0 => Ok(true),
            _ => match io::Error::last_os_error() {
                err if err.raw_os_error() == Some(libc::ESRCH) => Ok(false),
                err => Err(err),
            },
        }
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        // SAFETY: all-zero is a valid `sigaction`, then set to SIG_IGN.
        unsafe {
            let mut action: libc::sigaction = mem::zeroed();
            action.sa_sigaction = libc::SIG_IGN;
            libc::sigaction(self.signal, &raw const action, std::ptr::null_mut());
        }
    }
}

/// The threads of this process, and those among them that hold more than `plan` allows.
fn threads_over(plan: Plan) -> Result<(usize, Vec<i32>), DropError> {
    let dir = "/proc/self/task";
    let entries = fs::read_dir(dir).map_err(|source| DropError::Status {
        path: dir.to_owned(),
        source,
    })?;
    let (mut count, mut over) = (0, Vec::new());
    for entry in entries {
        let entry = entry.map_err(|source| DropError::Status {
            path: dir.to_owned(),
            source,
        })?;
        let Some(tid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let caps = match ThreadCaps::read(&format!("{dir}/{tid}/status")) {
            Ok(caps) => caps,
            // The thread exited since the directory was listed.
            Err(DropError::Status { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                continue
            }
            Err(err) => return Err(err),
        };
        count += 1;
        if caps.exceeds(plan.keep, plan.bounding) {
            over.push(tid);
        }
    }
    Ok((count, over))
}

/// Applies `plan` on every thread of the process until `/proc` shows none holding more;
/// returns the number of threads.
pub(super) fn apply_everywhere(plan: Plan) -> Result<usize, DropError> {
    let _one_at_a_time = DROPPING.lock().unwrap_or_else(PoisonError::into_inner);
    plan.publish();
    FAILED.store(0, SeqCst);
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() };
    let mut handler: Option<Handler> = None;
    let mut over = Vec::new();
    for _ in 0..ROUNDS {
        let (count, still) = threads_over(plan)?;
        if still.is_empty() {
            return Ok(count);
        }
        over = still;
        let handled_before = HANDLED.load(SeqCst);
        let mut sent = 0;
        for &tid in &over {
            if tid == me {
                apply_here(plan).map_err(Failed::into_error)?;
                continue;
            }
            let handler = match &mut handler {
                Some(handler) => handler,
                slot => slot.insert(Handler::install().map_err(DropError::Signal)?),
            };
            if handler.send(tid).map_err(DropError::Signal)? {
                sent += 1;
            }
        }
        // Short: each handler makes a few syscalls. Threads that exited never answer, so
        // the wait ends at the deadline at worst, and `/proc` is what decides.
        let deadline = Instant::now() + HANDLER_TIMEOUT;
        while HANDLED.load(SeqCst) - handled_before < sent && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        if let Some(failed) = Failed::decode(FAILED.load(SeqCst)) {
            return Err(failed.into_error());
        }
    }
    Err(DropError::StillPrivileged {
        tids: over,
        keep: plan.keep,
        rounds: ROUNDS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_capability_is_the_kernels() {
        let known = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .expect("read cap_last_cap")
            .trim()
            .parse::<u32>()
            .expect("a number");
        assert_eq!(last_cap(), known);
    }

    #[test]
    fn failures_survive_packing() {
        for step in [Step::Bounding, Step::Ambient, Step::Capget, Step::Capset] {
            let failed = Failed {
                tid: 4_000_000,
                step,
                errno: libc::EPERM,
            };
            assert_eq!(Failed::decode(failed.encode()), Some(failed));
        }
        assert_eq!(Failed::decode(0), None);
    }

    #[test]
    fn keeping_everything_held_changes_nothing() {
        // Safe to run in the test process: nothing this thread holds is dropped.
        let before = ThreadCaps::read(OWN_STATUS).expect("read our capabilities");
        let plan = Plan {
            keep: before.held().union(before.bounding),
            bounding: false,
            last_cap: last_cap(),
        };
        apply_here(plan).expect("a capset that keeps everything");
        assert_eq!(
            ThreadCaps::read(OWN_STATUS).expect("read them again"),
            before
        );
    }
}
