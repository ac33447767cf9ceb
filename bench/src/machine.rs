//! The machine a run happened on, for the report, and the one process limit the benchmark
//! needs raised: open descriptors, which caps how many tunnels can be open at once.

use std::{fs, process::Command};

use anyhow::Context as _;

use crate::{model::Machine, pin};

/// What the report says about this machine. Anything unreadable is `unknown` (or 0): the
/// description must never stop a run.
pub fn describe() -> Machine {
    Machine {
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_owned(), |text| text.trim().to_owned()),
        cpu_model: cpu_model().unwrap_or_else(|| "unknown".to_owned()),
        cpus: pin::all_cpus().len(),
        memory_bytes: memory_bytes().unwrap_or(0),
        nofile_hard_limit: nofile_limit().map_or(0, |limit| limit.rlim_max),
        rustc: rustc_version().unwrap_or_else(|| "unknown".to_owned()),
    }
}

/// Sets the soft `RLIMIT_NOFILE` to the hard one and returns it. Children (the proxies,
/// the backend) inherit it, so each can hold as many descriptors as the machine allows.
pub fn raise_nofile_limit() -> anyhow::Result<u64> {
    let mut limit = nofile_limit().context("getrlimit(RLIMIT_NOFILE)")?;
    // An unlimited hard limit is not a valid soft limit for descriptors: the kernel caps
    // them at fs.nr_open.
    let ceiling = if limit.rlim_max == libc::RLIM_INFINITY {
        fs::read_to_string("/proc/sys/fs/nr_open")
            .context("read /proc/sys/fs/nr_open")?
            .trim()
            .parse()
            .context("parse /proc/sys/fs/nr_open")?
    } else {
        limit.rlim_max
    };
    if limit.rlim_cur != ceiling {
        limit.rlim_cur = ceiling;
        // SAFETY: `limit` is a valid rlimit; setrlimit only reads it.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("setrlimit(RLIMIT_NOFILE, soft {ceiling})"));
        }
    }
    Ok(ceiling)
}

fn nofile_limit() -> std::io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if rc == 0 {
        Ok(limit)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `model name` from `/proc/cpuinfo` (x86); ARM kernels have no such line and say
/// `CPU implementer`/`CPU part` instead, which are kept raw.
fn cpu_model() -> Option<String> {
    let info = fs::read_to_string("/proc/cpuinfo").ok()?;
    let value = |key: &str| {
        info.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            (name.trim() == key).then(|| value.trim().to_owned())
        })
    };
    value("model name").or_else(|| {
        let implementer = value("CPU implementer")?;
        let part = value("CPU part")?;
        Some(format!("CPU implementer {implementer}, part {part}"))
    })
}

fn memory_bytes() -> Option<u64> {
    let info = fs::read_to_string("/proc/meminfo").ok()?;
    let kib = info
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

fn rustc_version() -> Option<String> {
    let output = Command::new("rustc").arg("-V").output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_this_machine() {
        let machine = describe();
        assert!(!machine.kernel.is_empty() && machine.kernel != "unknown");
        assert!(machine.cpus >= 1);
        assert!(machine.memory_bytes > 0);
        assert!(machine.nofile_hard_limit > 0);
    }

    #[test]
    fn nofile_soft_limit_reaches_the_hard_one() {
        let raised = raise_nofile_limit().expect("raise RLIMIT_NOFILE");
        let limit = nofile_limit().expect("getrlimit");
        assert_eq!(limit.rlim_cur, raised);
        assert!(limit.rlim_cur == limit.rlim_max || limit.rlim_max == libc::RLIM_INFINITY);
    }
}
