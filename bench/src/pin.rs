//! CPU affinity: pinning the load generator's threads, the backend and the proxy to fixed
//! CPUs, so latency runs do not measure the scheduler moving them around.

use std::{fs, io, mem};

use anyhow::Context as _;

/// Restricts every thread of `pid` to `cpus`. Threads (or the whole process) that exit
/// meanwhile are skipped, like an nginx worker listed a moment ago; threads started later
/// inherit the affinity of the thread that creates them.
pub fn set_process_affinity(pid: u32, cpus: &[usize]) -> anyhow::Result<()> {
    let set = cpu_set(cpus)?;
    let task_dir = format!("/proc/{pid}/task");
    let tasks = match fs::read_dir(&task_dir) {
        Ok(tasks) => tasks,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error).with_context(|| format!("list {task_dir}")),
    };
    for task in tasks {
        let task = task.with_context(|| format!("list {task_dir}"))?;
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        match set_affinity(tid, &set) {
            Ok(()) => {}
            // The thread exited after it was listed.
            Err(error) if error.raw_os_error() == Some(libc::ESRCH) => {}
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("sched_setaffinity(thread {tid} of {pid}, {cpus:?})"))
            }
        }
    }
    Ok(())
}

/// Runs the calling thread on `cpu` only.
pub fn pin_current_thread(cpu: usize) -> anyhow::Result<()> {
    // Thread id 0 means the calling thread.
    set_affinity(0, &cpu_set(&[cpu])?)
        .with_context(|| format!("sched_setaffinity(this thread, [{cpu}])"))
}

/// The CPUs this process may run on (`sched_getaffinity` of the main thread, so a thread
/// that pinned itself does not shrink the answer). Falls back to CPU 0 alone if it fails.
pub fn all_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain bits; all zeros is the empty set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: getpid has no preconditions; `set` is a valid, writable cpu_set_t of the size
    // passed.
    let rc = unsafe {
        libc::sched_getaffinity(libc::getpid(), mem::size_of::<libc::cpu_set_t>(), &mut set)
    };
    if rc != 0 {
        return vec![0];
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the capacity of `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

fn cpu_set(cpus: &[usize]) -> anyhow::Result<libc::cpu_set_t> {
    anyhow::ensure!(!cpus.is_empty(), "an empty CPU set");
    // SAFETY: cpu_set_t is plain bits; all zeros is the empty set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    for &cpu in cpus {
        anyhow::ensure!(
            cpu < libc::CPU_SETSIZE as usize,
            "CPU {cpu} is beyond CPU_SETSIZE"
        );
        // SAFETY: `cpu` is below CPU_SETSIZE, the capacity of `set`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    Ok(set)
}

fn set_affinity(tid: libc::pid_t, set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: `set` is a valid cpu_set_t of the size passed; the kernel only reads it.
    let rc = unsafe { libc::sched_setaffinity(tid, mem::size_of::<libc::cpu_set_t>(), set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_thread_runs_on_its_cpu() {
        std::thread::spawn(|| {
            pin_current_thread(0).expect("pin to CPU 0");
            // SAFETY: sched_getcpu has no preconditions.
            let cpu = unsafe { libc::sched_getcpu() };
            assert_eq!(cpu, 0);
        })
        .join()
        .expect("the pinned thread");
    }

    #[test]
    fn all_cpus_lists_online_cpus() {
        let cpus = all_cpus();
        // A cgroup CPU quota can lower available_parallelism below the affinity mask.
        let parallelism = std::thread::available_parallelism().expect("available_parallelism");
        assert!(cpus.len() >= parallelism.get(), "{cpus:?}");
    }

    #[test]
    fn affinity_of_a_child_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let result = set_process_affinity(child.id(), &[0]);
        let status = fs::read_to_string(format!("/proc/{}/status", child.id()))
            .expect("read the child's status");
        child.kill().expect("kill sleep");
        child.wait().expect("reap sleep");
        result.expect("set the child's affinity");
        let allowed = status
            .lines()
            .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
            .expect("Cpus_allowed_list in status");
        assert_eq!(allowed.trim(), "0");
    }
}
