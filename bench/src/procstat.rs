//! CPU time, resident memory and process trees, read from `/proc`.
//!
//! The proxies under test are separate processes (nginx even several), so what they cost is
//! read from the kernel's accounting rather than measured from inside. Processes may come and
//! go between listing and reading (an nginx worker exiting): a pid that vanished contributes
//! nothing instead of failing the measurement.

use std::{collections::BTreeMap, fs, io};

use anyhow::Context as _;

use crate::model::CpuUse;

/// CPU ticks of some processes and of the whole machine at one moment.
#[derive(Clone, Debug)]
pub struct CpuSnapshot {
    /// Per pid: its start time (to notice a reused pid) and its ticks.
    procs: BTreeMap<u32, ProcTicks>,
    /// Busy ticks of all CPUs together (`/proc/stat`, everything but idle and iowait).
    machine_busy_ticks: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ProcTicks {
    start_time: u64,
    /// utime + stime of all threads, plus cutime + cstime: the CPU of children it reaped, so
    /// an nginx worker that exits and is reaped by its master between two snapshots still
    /// counts (its ticks move from its own line to the master's).
    ticks: u64,
}

/// Reads the CPU ticks of `pids` (those still alive) and of the machine.
pub fn cpu_snapshot(pids: &[u32]) -> anyhow::Result<CpuSnapshot> {
    let mut procs = BTreeMap::new();
    for &pid in pids {
        if let Some(stat) = read_stat(pid)? {
            procs.insert(
                pid,
                ProcTicks {
                    start_time: stat.start_time,
                    ticks: stat.utime + stat.stime + stat.cutime + stat.cstime,
                },
            );
        }
    }
    Ok(CpuSnapshot {
        procs,
        machine_busy_ticks: machine_busy_ticks()?,
    })
}

impl CpuSnapshot {
    /// CPU spent between `earlier` and `self`. A process that appeared in between counts in
    /// full; one that vanished counts only through the parent that reaped it.
    pub fn since(&self, earlier: &CpuSnapshot) -> CpuUse {
        let proxy_ticks: u64 = self
            .procs
            .iter()
            .map(|(pid, now)| match earlier.procs.get(pid) {
                Some(before) if before.start_time == now.start_time => {
                    now.ticks.saturating_sub(before.ticks)
                }
                _ => now.ticks,
            })
            .sum();
        let machine_ticks = self
            .machine_busy_ticks
            .saturating_sub(earlier.machine_busy_ticks);
        let per_sec = clock_ticks_per_sec();
        CpuUse {
            proxy_secs: proxy_ticks as f64 / per_sec,
            machine_secs: machine_ticks as f64 / per_sec,
        }
    }
}

/// Sum of `VmRSS` of `pids`; vanished processes (and kernel threads) count 0.
///
/// Pages shared between processes (nginx master and workers) count once per process, as
/// `ps` shows them; differences between two readings are what the report uses.
pub fn rss_bytes(pids: &[u32]) -> anyhow::Result<u64> {
    let mut total = 0;
    for &pid in pids {
        let path = format!("/proc/{pid}/status");
        let Some(status) = read_if_alive(&path)? else {
            continue;
        };
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .map(|value| {
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .with_context(|| format!("VmRSS in {path}: {value:?}"))
            })
            .transpose()?
            .unwrap_or(0);
        total += kib * 1024;
    }
    Ok(total)
}

/// `root` and all its descendants that are alive now (empty if `root` is gone).
pub fn process_tree(root: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let mut root_alive = false;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // A process that exits while we scan simply is not part of the tree.
        if let Ok(Some(stat)) = read_stat(pid) {
            root_alive |= pid == root;
            children.entry(stat.ppid).or_default().push(pid);
        }
    }
    if !root_alive {
        return Vec::new();
    }
    let mut tree = vec![root];
    let mut next = 0;
    while let Some(&pid) = tree.get(next) {
        tree.extend(children.get(&pid).into_iter().flatten().copied());
        next += 1;
    }
    tree
}

/// The fields of `/proc/PID/stat` this module uses.
struct Stat {
    ppid: u32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
    start_time: u64,
}

/// Parses `/proc/PID/stat`; `None` if the process is gone.
fn read_stat(pid: u32) -> anyhow::Result<Option<Stat>> {
    let path = format!("/proc/{pid}/stat");
    let Some(text) = read_if_alive(&path)? else {
        return Ok(None);
    };
    // The command name (field 2) is in parentheses and may hold spaces or ')': the fixed
    // fields start after the last ')'.
    let rest = text
        .rsplit_once(')')
        .with_context(|| format!("no ')' in {path}: {text:?}"))?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 of proc(5) (state), so field N is `fields[N - 3]`.
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .with_context(|| format!("{path} has no field {n}: {text:?}"))?
            .parse::<u64>()
            .with_context(|| format!("field {n} of {path}: {text:?}"))
    };
    Ok(Some(Stat {
        ppid: u32::try_from(field(4)?).context("ppid fits in u32")?,
        utime: field(14)?,
        stime: field(15)?,
        cutime: field(16)?,
        cstime: field(17)?,
        start_time: field(22)?,
    }))
}

/// Busy ticks of all CPUs: the `cpu` line of `/proc/stat` without idle and iowait. `guest`
/// and `guest_nice` are left out because `user` and `nice` already include them.
fn machine_busy_ticks() -> anyhow::Result<u64> {
    let text = fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let line = text
        .lines()
        .find(|line| line.starts_with("cpu "))
        .context("no `cpu` line in /proc/stat")?;
    let values = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse::<u64>)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parse /proc/stat line {line:?}"))?;
    let [user, nice, system, _idle, _iowait, irq, softirq, steal] = values[..] else {
        anyhow::bail!("fewer than 8 values in /proc/stat line {line:?}");
    };
    Ok(user + nice + system + irq + softirq + steal)
}

/// `sysconf(_SC_CLK_TCK)`: the unit of the tick counts in `/proc`.
fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // Linux has reported 100 on every architecture for decades; it is only a fallback.
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// The file's contents, or `None` if the process it belongs to is gone.
fn read_if_alive(path: &str) -> anyhow::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        // ESRCH: the process exited between open and read.
        Err(error)
            if error.kind() == io::ErrorKind::NotFound
                || error.raw_os_error() == Some(libc::ESRCH) =>
        {
            Ok(None)
        }
        Err(error) => Err(error).with_context(|| format!("read {path}")),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        process::{Command, Stdio},
        time::{Duration, Instant},
    };

    use super::*;

    /// A thread of this process spins for 200 ms of its own CPU time, measured by the kernel
    /// (`CLOCK_THREAD_CPUTIME_ID`), not by a wall-clock sleep.
    #[test]
    fn cpu_snapshot_sees_cpu_burnt() {
        let pid = std::process::id();
        let before = cpu_snapshot(&[pid]).expect("snapshot before");
        std::thread::spawn(|| {
            let deadline = thread_cpu_time() + Duration::from_millis(200);
            let mut spins = 0_u64;
            while thread_cpu_time() < deadline {
                spins = std::hint::black_box(spins.wrapping_add(1));
            }
        })
        .join()
        .expect("the spinning thread");
        let used = cpu_snapshot(&[pid]).expect("snapshot after").since(&before);
        assert!(used.proxy_secs > 0.1, "{used:?}");
        assert!(used.machine_secs >= used.proxy_secs * 0.5, "{used:?}");
    }

    #[test]
    fn cpu_of_a_child_process() {
        let start = Instant::now();
        let mut child = Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("spawn a spinning shell");
        let pid = child.id();
        let before = cpu_snapshot(&[pid]).expect("snapshot before");
        // The kernel's tick accounting, not the wall clock, decides when it is done.
        let used = loop {
            let used = cpu_snapshot(&[pid]).expect("snapshot").since(&before);
            if used.proxy_secs > 0.1 || start.elapsed() > Duration::from_secs(10) {
                break used;
            }
            std::thread::yield_now();
        };
        child.kill().expect("kill the shell");
        child.wait().expect("reap the shell");
        assert!(used.proxy_secs > 0.1, "{used:?}");
    }

    #[test]
    fn vanished_pids_count_zero() {
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("reap true");
        let snapshot = cpu_snapshot(&[pid]).expect("snapshot of a dead pid");
        assert_eq!(snapshot.since(&snapshot).proxy_secs, 0.0);
        assert_eq!(rss_bytes(&[pid]).expect("rss of a dead pid"), 0);
        assert!(process_tree(pid).is_empty());
    }

    #[test]
    fn rss_of_self() {
        let rss = rss_bytes(&[std::process::id()]).expect("rss of self");
        assert!(rss > 0);
    }

    #[test]
    fn process_tree_holds_children() {
        let mut shell = Command::new("sh")
            .args(["-c", "sleep 30 & echo $!; wait"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn a shell with a child");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(shell.stdout.take().expect("piped stdout")),
            &mut line,
        )
        .expect("read the child's pid");
        let sleep: u32 = line.trim().parse().expect("the shell printed a pid");
        let tree = process_tree(shell.id());
        shell.kill().expect("kill the shell");
        shell.wait().expect("reap the shell");
        let _ = Command::new("kill").arg(sleep.to_string()).status();
        assert_eq!(tree.first(), Some(&shell.id()), "{tree:?}");
        assert!(tree.contains(&sleep), "{tree:?} lacks {sleep}");
    }

    fn thread_cpu_time() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime: {}", io::Error::last_os_error());
        Duration::new(
            u64::try_from(ts.tv_sec).expect("non-negative seconds"),
            u32::try_from(ts.tv_nsec).expect("nanoseconds below 1e9"),
        )
    }
}
