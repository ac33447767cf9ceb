//! A process's resident memory and CPU time, read from `/proc/<pid>/status` and `stat`, and
//! this process's limit on open descriptors, which the gateway it starts inherits.

use std::{fs, io, time::Duration};

/// Resident set size of process `pid`, in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {path}: {error}"));
    parse_vm_rss(&status).unwrap_or_else(|| panic!("no VmRSS line in {path}:\n{status}"))
}

/// The `VmRSS:  1234 kB` line of a `/proc/<pid>/status` text, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// CPU time process `pid` has used so far, user and system (`/proc/<pid>/stat` fields 14
/// and 15, in clock ticks).
pub fn cpu_time(pid: u32) -> Duration {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {path}: {error}"));
    let ticks =
        parse_cpu_ticks(&stat).unwrap_or_else(|| panic!("no utime/stime in {path}: {stat}"));
    // SAFETY: sysconf only reads a configuration value.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_sec = u64::try_from(per_sec)
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or(100);
    Duration::from_millis(ticks * 1000 / per_sec)
}

/// utime + stime of a `/proc/<pid>/stat` line, in clock ticks. The fields are counted
/// after the command name, which is in parentheses and may hold spaces.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name; utime is field 14, stime 15.
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// This process's `RLIMIT_NOFILE`: (soft, hard).
pub fn nofile_limits() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable `rlimit` for the call to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Raises this process's `RLIMIT_NOFILE` (soft, and hard if needed) to at least `want`;
/// children started afterwards inherit it. Raising the hard limit needs `CAP_SYS_RESOURCE`
/// (`EPERM` without it).
pub fn raise_nofile_limit(want: u64) -> io::Result<()> {
    let (soft, hard) = nofile_limits()?;
    if soft >= want {
        return Ok(());
    }
    let limit = libc::rlimit {
        rlim_cur: want,
        rlim_max: hard.max(want),
    };
    // SAFETY: `limit` is a valid `rlimit`; setrlimit only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tgateway\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(12345 * 1024));
        assert_eq!(parse_vm_rss("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn parses_cpu_ticks() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 \
                    3 0 1000 1000000 200";
        assert_eq!(parse_cpu_ticks(stat), Some(22));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1"), None);
    }
}
