//! Where kernel memory held by sockets shows up, read three ways:
//!
//! - [`kernel_tcp_memory_bytes`]: the global TCP memory counter (`/proc/net/sockstat`, `TCP: ...
//!   mem N`, in pages), i.e. what every TCP socket of the machine has charged to
//!   `tcp_memory_allocated` and what `net.ipv4.tcp_mem` limits;
//! - [`socket_memory`]: per-socket `skmem` of one process's TCP sockets, from `ss -tmnpO`;
//! - [`MemInfo::read`]: `/proc/meminfo`, which sees memory no socket is charged for.
//!
//! They do not see the same things. An skb that a sockmap verdict redirects is unlinked from
//! the source's receive queue and orphaned (`tcp_read_skb` → `skb_set_owner_sk_safe`), which
//! returns its charge; while it waits in the destination psock's queue it is charged to no
//! socket and to no protocol counter, so only `/proc/meminfo` shows it.

use std::{fs, net::SocketAddr, process::Command};

/// Bytes per page, from the `AT_PAGESZ` entry of this process's auxiliary vector.
pub fn page_size() -> u64 {
    /// `AT_PAGESZ` in `<elf.h>`.
    const AT_PAGESZ: u64 = 6;
    let auxv = fs::read("/proc/self/auxv").expect("read /proc/self/auxv");
    let word = |bytes: &[u8]| {
        let bytes: [u8; 8] = bytes.try_into().expect("8-byte auxv word");
        u64::from_ne_bytes(bytes)
    };
    auxv.chunks_exact(16)
        .find(|entry| word(&entry[..8]) == AT_PAGESZ)
        .map(|entry| word(&entry[8..]))
        .expect("AT_PAGESZ in /proc/self/auxv")
}

/// The `mem` field of the `TCP:` line of `/proc/net/sockstat` (pages), or `None` if absent.
pub fn parse_sockstat_tcp_mem_pages(sockstat: &str) -> Option<u64> {
    let fields = sockstat
        .lines()
        .find_map(|line| line.strip_prefix("TCP:"))?;
    let mut words = fields.split_whitespace();
    while let Some(word) = words.next() {
        if word == "mem" {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// Kernel memory charged to TCP sockets, machine-wide, in bytes: `/proc/net/sockstat`'s
/// `TCP: ... mem N` (pages) × the page size.
pub fn kernel_tcp_memory_bytes() -> u64 {
    let sockstat = fs::read_to_string("/proc/net/sockstat").expect("read /proc/net/sockstat");
    let pages = parse_sockstat_tcp_mem_pages(&sockstat)
        .unwrap_or_else(|| panic!("no `TCP: ... mem N` in /proc/net/sockstat:\n{sockstat}"));
    pages * page_size()
}

/// One socket's `skmem:(r..,rb..,t..,tb..,f..,w..,o..,bl..,d..)` as `ss -m` prints it
/// (`inet_sk_diag_fill`, `SK_MEMINFO_*`), in bytes except `drops`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkMem {
    /// `r`: `sk_rmem_alloc`, truesize of the skbs in the receive (and out-of-order) queue.
    pub rmem_alloc: u64,
    /// `rb`: `sk_rcvbuf`, the limit of `r`.
    pub rcvbuf: u64,
    /// `t`: `sk_wmem_alloc`, truesize of skbs handed to the layer below and not yet freed.
    pub wmem_alloc: u64,
    /// `tb`: `sk_sndbuf`, the limit of `w`.
    pub sndbuf: u64,
    /// `f`: `sk_forward_alloc`, charged to the protocol but not used by any skb yet. Signed:
    /// the kernel passes this `int` as a `u32`, and it does go negative when an skb is charged
    /// to a socket without being scheduled first (`skb_set_owner_r` on a psock's ingress path).
    pub forward_alloc: i64,
    /// `w`: `sk_wmem_queued`, truesize of the write queue (unsent and unacknowledged).
    pub wmem_queued: u64,
    /// `o`: `sk_omem_alloc`, option memory (socket filters, psock bookkeeping, ...).
    pub optmem: u64,
    /// `bl`: `sk_backlog.len`, skbs queued while the socket was owned by a process.
    pub backlog: u64,
    /// `d`: packets dropped.
    pub drops: u64,
}

impl SkMem {
    /// Parses the inside of `skmem:( ... )`; `None` if a field is missing or not a number.
    pub fn parse(fields: &str) -> Option<Self> {
        let mut skmem = Self::default();
        let mut seen = 0;
        for field in fields.split(',') {
            let digits = field.find(|c: char| c.is_ascii_digit())?;
            let (name, value) = field.split_at(digits);
            let value = value.parse().ok()?;
            let slot = match name {
                "r" => &mut skmem.rmem_alloc,
                "rb" => &mut skmem.rcvbuf,
                "t" => &mut skmem.wmem_alloc,
                "tb" => &mut skmem.sndbuf,
                "f" => {
                    let raw = u32::try_from(value).ok()?;
                    skmem.forward_alloc = i64::from(i32::from_ne_bytes(raw.to_ne_bytes()));
                    seen += 1;
                    continue;
                }
                "w" => &mut skmem.wmem_queued,
                "o" => &mut skmem.optmem,
                "bl" => &mut skmem.backlog,
                "d" => &mut skmem.drops,
                // Newer kernels may add fields; they are not ours to sum.
                _ => continue,
            };
            *slot = value;
            seen += 1;
        }
        (seen == 9).then_some(skmem)
    }

    /// Memory the socket holds for data: `r + t + w + o + bl`.
    ///
    /// `rb` and `tb` are limits, not memory; `f` is a reservation already counted in the
    /// global TCP memory, held by no data; `d` is a count. `t` and `w` overlap for a segment
    /// that is both queued for retransmission and not yet freed below (a clone sharing its
    /// pages), so this is an upper bound on what the socket pins, which is what a bound
    /// should be checked against.
    pub fn held(&self) -> u64 {
        self.rmem_alloc + self.wmem_alloc + self.wmem_queued + self.optmem + self.backlog
    }

    /// What the socket has charged to its protocol's memory counter (the global TCP memory of
    /// [`kernel_tcp_memory_bytes`]): `r + w + f`, the queues plus the reservation.
    pub fn charged(&self) -> i64 {
        let queued = i64::try_from(self.rmem_alloc + self.wmem_queued).unwrap_or(i64::MAX);
        queued + self.forward_alloc
    }

    fn add(&mut self, other: &Self) {
        self.rmem_alloc += other.rmem_alloc;
        self.rcvbuf += other.rcvbuf;
        self.wmem_alloc += other.wmem_alloc;
        self.sndbuf += other.sndbuf;
        self.forward_alloc += other.forward_alloc;
        self.wmem_queued += other.wmem_queued;
        self.optmem += other.optmem;
        self.backlog += other.backlog;
        self.drops += other.drops;
    }
}

/// One line of `ss -tmnpO`: the socket's addresses, the processes holding it, its memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SsSocket {
    /// `None` if `ss` printed something that is not `IP:PORT` (e.g. an interface suffix).
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    pub pids: Vec<u32>,
    pub skmem: SkMem,
}

impl SsSocket {
    /// Parses one line of `ss -tmnpO` (`ESTAB 0 0 127.0.0.1:80 127.0.0.1:5000
    /// users:(("gateway",pid=7,fd=10)) skmem:(r0,...)`); `None` for the header or a line
    /// without `skmem`.
    pub fn parse(line: &str) -> Option<Self> {
        let mut columns = line.split_whitespace().skip(3);
        let local = columns.next().and_then(|addr| addr.parse().ok());
        let peer = columns.next().and_then(|addr| addr.parse().ok());
        let (_, after) = line.split_once("skmem:(")?;
        let (fields, _) = after.split_once(')')?;
        let skmem = SkMem::parse(fields)?;
        let pids = line
            .split("pid=")
            .skip(1)
            .filter_map(|rest| rest.split([',', ')']).next()?.parse().ok())
            .collect();
        Some(Self {
            local,
            peer,
            pids,
            skmem,
        })
    }
}

/// Every connected TCP socket of the machine (this network namespace) with its memory:
/// `ss -tmnpO` (TCP, memory, numeric, processes, one line per socket). Listening sockets are
/// left out: they hold no data.
pub fn ss_tcp_sockets() -> Vec<SsSocket> {
    let output = Command::new("ss")
        .args(["-tmnpO"])
        .output()
        .expect("run `ss -tmnpO` (iproute2)");
    assert!(
        output.status.success(),
        "`ss -tmnpO` failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(SsSocket::parse)
        .collect()
}

/// The TCP sockets of one process, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketMemory {
    /// Connected TCP sockets the process holds.
    pub sockets: usize,
    /// Each `skmem` field summed over those sockets.
    pub total: SkMem,
    /// [`SkMem::held`] summed over the sockets.
    pub held_bytes: u64,
    /// The largest [`SkMem::held`] of one socket.
    pub max_socket_held_bytes: u64,
}

impl SocketMemory {
    /// Sums the sockets of `sockets` that process `pid` holds.
    pub fn of(sockets: &[SsSocket], pid: u32) -> Self {
        Self::sum(sockets.iter().filter(|socket| socket.pids.contains(&pid)))
    }

    /// Sums `sockets`.
    pub fn sum<'a>(sockets: impl IntoIterator<Item = &'a SsSocket>) -> Self {
        let mut memory = Self::default();
        for socket in sockets {
            memory.sockets += 1;
            memory.total.add(&socket.skmem);
            memory.held_bytes += socket.skmem.held();
            memory.max_socket_held_bytes = memory.max_socket_held_bytes.max(socket.skmem.held());
        }
        memory
    }
}

/// Memory held by the connected TCP sockets of process `pid` (e.g. the gateway's), as `ss`
/// reports it: see [`SkMem::held`] for what is summed. Bytes a sockmap redirect has queued on a
/// psock are not in any of these fields.
pub fn socket_memory(pid: u32) -> SocketMemory {
    SocketMemory::of(&ss_tcp_sockets(), pid)
}

/// The lines of `/proc/meminfo` that socket buffers can move, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemFree`: pages nobody uses. skb payload pages (page frags) come from here.
    pub free: u64,
    /// `MemAvailable`: the kernel's estimate of what can be had without swapping.
    pub available: u64,
    /// `Slab`: slab caches, where skb heads (`skbuff_head_cache`) and small payloads live.
    pub slab: u64,
}

impl MemInfo {
    /// Parses `/proc/meminfo` text; `None` if a field is missing.
    pub fn parse(meminfo: &str) -> Option<Self> {
        let field = |name: &str| -> Option<u64> {
            let rest = meminfo
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))?;
            let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kib * 1024)
        };
        Some(Self {
            free: field("MemFree")?,
            available: field("MemAvailable")?,
            slab: field("Slab")?,
        })
    }

    /// The current `/proc/meminfo`.
    pub fn read() -> Self {
        let meminfo = fs::read_to_string("/proc/meminfo").expect("read /proc/meminfo");
        Self::parse(&meminfo).unwrap_or_else(|| {
            panic!("no MemFree, MemAvailable or Slab in /proc/meminfo:\n{meminfo}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOCKSTAT: &str = "sockets: used 24\n\
        TCP: inuse 7 orphan 0 tw 434 alloc 7 mem 112\n\
        UDP: inuse 0 mem 3\n";

    #[test]
    fn reads_the_tcp_mem_field() {
        assert_eq!(parse_sockstat_tcp_mem_pages(SOCKSTAT), Some(112));
        assert_eq!(parse_sockstat_tcp_mem_pages("UDP: inuse 0 mem 3\n"), None);
    }

    #[test]
    fn parses_an_ss_line() {
        let line = "ESTAB 0 4194304 127.0.0.1:41363 127.0.0.1:5000 \
            users:((\"gateway\",pid=15171,fd=10),(\"gateway\",pid=15172,fd=3)) \
            skmem:(r1,rb131072,t2,tb16384,f3,w4,o5,bl6,d7)";
        let socket = SsSocket::parse(line).expect("an ss line with skmem");
        assert_eq!(socket.pids, [15171, 15172]);
        assert_eq!(socket.local, "127.0.0.1:41363".parse().ok());
        assert_eq!(socket.peer, "127.0.0.1:5000".parse().ok());
        assert_eq!(socket.skmem.rcvbuf, 131_072);
        assert_eq!(socket.skmem.sndbuf, 16_384);
        assert_eq!(socket.skmem.forward_alloc, 3);
        assert_eq!(socket.skmem.drops, 7);
        assert_eq!(socket.skmem.held(), 1 + 2 + 4 + 5 + 6);
        assert_eq!(
            SsSocket::parse("State Recv-Q Send-Q Local Address:Port"),
            None
        );

        let memory = SocketMemory::of(&[socket.clone(), socket], 15171);
        assert_eq!(memory.sockets, 2);
        assert_eq!(memory.held_bytes, 36);
        assert_eq!(memory.max_socket_held_bytes, 18);
        assert_eq!(memory.total.wmem_queued, 8);
        assert_eq!(memory.total.charged(), 2 * (1 + 4 + 3));

        let negative = SsSocket::parse("x skmem:(r0,rb1,t0,tb1,f4294963200,w0,o0,bl0,d0)")
            .expect("an ss line with a negative forward_alloc");
        assert_eq!(negative.skmem.forward_alloc, -4096);
    }

    #[test]
    fn parses_meminfo() {
        let text = "MemTotal:       24684000 kB\nMemFree:        20360000 kB\n\
            MemAvailable:   24080000 kB\nSlab:             300000 kB\n";
        let meminfo = MemInfo::parse(text).expect("meminfo");
        assert_eq!(meminfo.free, 20_360_000 * 1024);
        assert_eq!(meminfo.slab, 300_000 * 1024);
        assert_eq!(MemInfo::parse("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn reads_the_running_kernel() {
        assert!(page_size().is_power_of_two());
        let _ = kernel_tcp_memory_bytes();
        assert!(MemInfo::read().available > 0);
    }
}
