//! A process's resident memory, read from `/proc/<pid>/status`, and this process's limit on
//! open descriptors, which the gateway it starts inherits.

use std::{fs, io};

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
}
