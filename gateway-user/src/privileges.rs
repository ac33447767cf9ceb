//! Dropping the capabilities start-up needed once [`crate::start`] has returned.
//!
//! Start-up needs `CAP_BPF` (create the maps, load the verdict program), `CAP_PERFMON` (the
//! verdict reads TCP sequence numbers with `bpf_probe_read_kernel`, which the verifier only
//! allows a program loaded with it), `CAP_NET_ADMIN` (sockmaps and the `sk_skb` program type
//! are networking objects) and, for ports below 1024,
//! `CAP_NET_BIND_SERVICE`. Once the gateway serves, the maps are only used through descriptors
//! it already holds, and the kernel checks no capability for that: since Linux 6.5,
//! `kernel.unprivileged_bpf_disabled` only guards creating maps and loading programs, and
//! `BPF_MAP_UPDATE_ELEM` on a sockmap needs write access to the map's descriptor, nothing more
//! (`tests/tests/privileges.rs` splices tunnels after the drop to show it). So
//! [`drop_after_start`] keeps what [`needed`] says the running gateway still uses and drops
//! everything else, from every set of every thread (see [`threads`] for why every thread).
//!
//! The pure part ([`needed`], [`CapSet`], [`ThreadCaps::parse`]) is here and unit-tested; the
//! syscalls are in [`threads`].

mod threads;

use std::{fmt, fs, io};

use crate::{config::Global, dataplane::Dataplane};

pub use threads::Step;

/// `CAP_SETPCAP`: needed to shrink the bounding set.
pub const CAP_SETPCAP: u32 = 8;
/// `CAP_NET_BIND_SERVICE`: bind ports below 1024.
pub const CAP_NET_BIND_SERVICE: u32 = 10;
/// `CAP_NET_ADMIN`: among others, `SO_SNDBUFFORCE`.
pub const CAP_NET_ADMIN: u32 = 12;

/// Capability names by number (`include/uapi/linux/capability.h`), for the log line.
const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// A set of capabilities: bit `n` is capability `n`, as in `/proc/<pid>/status`.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct CapSet(u64);

impl CapSet {
    pub const EMPTY: Self = Self(0);

    pub const fn of(caps: &[u32]) -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < caps.len() {
            bits |= 1 << caps[i];
            i += 1;
        }
        Self(bits)
    }

    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    pub const fn bits(self) -> u64 {
        self.0
    }

    pub const fn contains(self, cap: u32) -> bool {
        cap < 64 && self.0 & (1 << cap) != 0
    }

    pub const fn is_subset(self, of: Self) -> bool {
        self.0 & !of.0 == 0
    }

    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub const fn minus(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// The capabilities in the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = u32> {
        (0..64).filter(move |&cap| self.contains(cap))
    }

    /// The 16 hex digits of a `Cap*:` line of `/proc/<pid>/status`.
    fn parse_hex(hex: &str) -> Option<Self> {
        u64::from_str_radix(hex.trim(), 16).ok().map(Self)
    }
}

/// `CAP_A,CAP_B`, or `none`.
impl fmt::Display for CapSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("none");
        }
        for (i, cap) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match NAMES.get(cap as usize) {
                Some(name) => f.write_str(name)?,
                None => write!(f, "CAP_{cap}")?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for CapSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CapSet({self})")
    }
}

/// What the gateway still uses once it serves:
/// - `CAP_NET_BIND_SERVICE`, always: a configuration reload may bind a new listener on a port
///   below 1024;
/// - `CAP_NET_ADMIN` only when spliced sockets get forced buffers (`tunnel_sndbuf_bytes > 0`,
///   the default, on the eBPF dataplane: `SO_SNDBUFFORCE`, and `SO_RCVBUFFORCE` for the
///   receive buffer the backlog budget asks for). Without it `sockopt::set_send_buffer` and
///   `set_receive_buffer` fall back to `SO_SNDBUF`/`SO_RCVBUF`, capped by
///   `net.core.wmem_max`/`rmem_max`; the userspace relay never sets either. Map updates, `TCP_WINDOW_CLAMP`,
///   `SO_LINGER`, `TCP_INFO` and the queue ioctls need no capability.
///
/// `CAP_BPF`, `CAP_SYS_ADMIN`, `CAP_PERFMON` and everything else are dropped.
pub fn needed(tunnel_sndbuf_bytes: u32, spliced: bool) -> CapSet {
    if tunnel_sndbuf_bytes > 0 && spliced {
        CapSet::of(&[CAP_NET_BIND_SERVICE, CAP_NET_ADMIN])
    } else {
        CapSet::of(&[CAP_NET_BIND_SERVICE])
    }
}

/// The capability sets of one thread, from the `Cap*:` lines of its `status` in `/proc`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadCaps {
    pub inheritable: CapSet,
    pub permitted: CapSet,
    pub effective: CapSet,
    pub bounding: CapSet,
    pub ambient: CapSet,
}

impl ThreadCaps {
    /// Reads the five `Cap*:` lines of a `status` text; `None` if one is missing.
    pub fn parse(status: &str) -> Option<Self> {
        let line = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(CapSet::parse_hex)
        };
        Some(Self {
            inheritable: line("CapInh")?,
            permitted: line("CapPrm")?,
            effective: line("CapEff")?,
            bounding: line("CapBnd")?,
            ambient: line("CapAmb")?,
        })
    }

    /// Reads `path` (a `/proc/.../status`).
    fn read(path: &str) -> Result<Self, DropError> {
        let status = fs::read_to_string(path).map_err(|source| DropError::Status {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&status).ok_or_else(|| DropError::Unparsable {
            path: path.to_owned(),
        })
    }

    /// Every capability the thread holds or could pass on: effective, permitted, inheritable
    /// and ambient (not the bounding set, which only limits what it may gain).
    pub fn held(&self) -> CapSet {
        self.effective
            .union(self.permitted)
            .union(self.inheritable)
            .union(self.ambient)
    }

    /// Whether the thread holds more than `keep`; with `bounding`, also whether its bounding
    /// set goes beyond it.
    pub fn exceeds(&self, keep: CapSet, bounding: bool) -> bool {
        !self.held().is_subset(keep) || (bounding && !self.bounding.is_subset(keep))
    }
}

/// Why the capabilities could not be dropped.
#[derive(Debug, thiserror::Error)]
pub enum DropError {
    #[error("cannot read {path}: {source}")]
    Status {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} has no CapInh/CapPrm/CapEff/CapBnd/CapAmb lines")]
    Unparsable { path: String },
    #[error("cannot install the signal handler that reaches the other threads: {0}")]
    Signal(#[source] io::Error),
    #[error("thread {tid}: {step} failed: {source}")]
    Syscall {
        tid: i32,
        step: Step,
        #[source]
        source: io::Error,
    },
    #[error("threads {tids:?} still hold capabilities beyond {keep} after {rounds} attempts")]
    StillPrivileged {
        tids: Vec<i32>,
        keep: CapSet,
        rounds: usize,
    },
}

/// Drops every capability the started gateway does not need ([`needed`]) from the effective,
/// permitted, inheritable and ambient sets of every thread, and from the bounding sets when
/// the process holds `CAP_SETPCAP` (first, as that needs `CAP_SETPCAP` still effective). Logs
/// one line saying what was kept and what was dropped.
///
/// Dropping what the process does not hold is not an error: an unprivileged gateway (e.g. on
/// the userspace dataplane) has nothing to drop. Without `CAP_SETPCAP` the bounding set stays
/// as it is (under the systemd unit it is already the four capabilities of
/// `CapabilityBoundingSet=`); a capability out of the permitted set could only come back
/// through `execve` of a file with capabilities, which `NoNewPrivileges=` forbids.
///
/// # Errors
///
/// Any failure is returned, and `gateway run` exits non-zero rather than serve: some thread
/// may then still hold capabilities the gateway does not need, and running with more privilege
/// than documented is a security defect, not a degraded mode (nginx and HAProxy likewise
/// refuse to run when they cannot drop their privileges). Dropping capabilities only fails
/// when something forbids the syscalls themselves (e.g. a seccomp filter without `capset`).
pub fn drop_after_start(global: &Global, dataplane: &Dataplane) -> Result<(), DropError> {
    let keep = needed(global.tunnel_sndbuf_bytes, dataplane.ebpf().is_some());
    let before = ThreadCaps::read(threads::OWN_STATUS)?;
    let bounding = before.effective.contains(CAP_SETPCAP);
    let count = threads::apply_everywhere(threads::Plan {
        keep,
        bounding,
        last_cap: threads::last_cap(),
    })?;
    let after = ThreadCaps::read(threads::OWN_STATUS)?;
    let bounding_set = if bounding || after.bounding.is_subset(keep) {
        after.bounding.to_string()
    } else {
        format!("{} (unchanged: no CAP_SETPCAP)", after.bounding)
    };
    tracing::info!(
        kept = %after.permitted,
        dropped = %before.held().minus(after.held()),
        bounding = %bounding_set,
        threads = count,
        "capabilities dropped"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP_BPF: u32 = 39;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;

    #[test]
    fn only_bind_service_is_kept_by_default() {
        let keep = needed(0, true);
        assert_eq!(keep, CapSet::of(&[CAP_NET_BIND_SERVICE]));
        for dropped in [
            CAP_BPF,
            CAP_SYS_ADMIN,
            CAP_PERFMON,
            CAP_NET_ADMIN,
            CAP_SETPCAP,
        ] {
            assert!(!keep.contains(dropped), "{dropped} is dropped");
        }
    }

    #[test]
    fn net_admin_is_kept_for_a_forced_send_buffer_of_spliced_sockets() {
        assert_eq!(
            needed(4 << 20, true),
            CapSet::of(&[CAP_NET_BIND_SERVICE, CAP_NET_ADMIN])
        );
        // The userspace relay never forces a send buffer.
        assert_eq!(needed(4 << 20, false), CapSet::of(&[CAP_NET_BIND_SERVICE]));
        assert_eq!(needed(0, false), CapSet::of(&[CAP_NET_BIND_SERVICE]));
    }

    #[test]
    fn sets_are_named_for_the_log() {
        assert_eq!(CapSet::EMPTY.to_string(), "none");
        assert_eq!(
            CapSet::of(&[CAP_BPF, CAP_NET_BIND_SERVICE, CAP_NET_ADMIN]).to_string(),
            "CAP_NET_BIND_SERVICE,CAP_NET_ADMIN,CAP_BPF"
        );
        assert_eq!(
            CapSet::of(&[40, 41]).to_string(),
            "CAP_CHECKPOINT_RESTORE,CAP_41"
        );
        let all = CapSet::from_bits(0x1ff_ffff_ffff);
        assert_eq!(all.iter().count(), 41);
        assert!(CapSet::of(&[CAP_NET_BIND_SERVICE]).is_subset(all));
        assert!(!all.is_subset(CapSet::of(&[CAP_NET_BIND_SERVICE])));
        assert_eq!(
            all.minus(CapSet::of(&[CAP_NET_BIND_SERVICE]))
                .iter()
                .count(),
            40
        );
    }

    #[test]
    fn status_lines_are_parsed() {
        let status = "Name:\tgateway\nCapInh:\t0000000000000000\nCapPrm:\t0000008000001400\n\
                      CapEff:\t0000008000001400\nCapBnd:\t000001ffffffffff\n\
                      CapAmb:\t0000000000000400\nNoNewPrivs:\t1\n";
        let caps = ThreadCaps::parse(status).expect("parse the Cap lines");
        let three = CapSet::of(&[CAP_BPF, CAP_NET_ADMIN, CAP_NET_BIND_SERVICE]);
        assert_eq!(caps.inheritable, CapSet::EMPTY);
        assert_eq!(caps.permitted, three);
        assert_eq!(caps.effective, three);
        assert_eq!(caps.bounding.iter().count(), 41);
        assert_eq!(caps.ambient, CapSet::of(&[CAP_NET_BIND_SERVICE]));
        assert_eq!(caps.held(), three);
        let keep = CapSet::of(&[CAP_NET_BIND_SERVICE]);
        assert!(caps.exceeds(keep, false));
        assert!(!caps.exceeds(three, false));
        assert!(caps.exceeds(three, true), "the bounding set goes beyond");
        assert_eq!(ThreadCaps::parse("Name:\tx\nCapInh:\t0\n"), None);
    }

    #[test]
    fn this_thread_can_be_read() {
        let own = ThreadCaps::read(threads::OWN_STATUS).expect("read our own capabilities");
        assert!(own.effective.is_subset(own.permitted));
    }
}
