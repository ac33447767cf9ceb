//! The workloads, each run over every started path, round by round. Each measurement
//! samples the proxy's and the machine's CPU around it; every failure becomes a problem
//! entry (or stops the run when strict), never a silent gap.

use std::time::Duration;

use anyhow::Context as _;

use crate::{
    cli::Workload,
    load,
    model::{
        BulkSample, ConcurrentSample, CpuUse, Direction, HandshakeSample, LatencySample, Machine,
        MessageSample, Plan,
    },
    pin, procstat,
    proxies::Proxy,
    report,
};

/// Descriptors a proxy holds per tunnel (client side and backend side); the gateway,
/// HAProxy and each nginx worker are one process, so this caps the concurrent workload.
const PROXY_FDS_PER_TUNNEL: u64 = 2;
/// Descriptors left for everything else in a process.
const SPARE_FDS: u64 = 512;
/// Upgrades in flight at once while opening many tunnels.
const CONNECTING: usize = 128;
/// A transfer slower than this is a stalled path, not a slow one: it fails, and the run
/// goes on with the next measurement.
const SLOWEST_BYTES_PER_SEC: u64 = 20 << 20;

/// Time allowed for moving `bytes`: a minute plus `bytes` at [`SLOWEST_BYTES_PER_SEC`].
fn transfer_deadline(bytes: u64) -> Duration {
    Duration::from_secs(60 + bytes / SLOWEST_BYTES_PER_SEC)
}

/// `work`, or an error naming what stalled once `limit` has passed.
async fn bounded<T>(
    what: &str,
    limit: Duration,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| anyhow::bail!("{what} stalled: not done after {limit:?}"))
}

/// What one concurrent measurement saw, before it becomes a sample.
struct ConcurrentRun {
    /// Proxy RSS before the first tunnel, and with all of them open.
    idle: u64,
    open_rss: u64,
    opened: usize,
    outcome: load::concurrent::ExchangeOutcome,
    cpu: CpuUse,
}

/// Samples of one run, and what went wrong.
#[derive(Default)]
pub struct Results {
    pub bulk: Vec<BulkSample>,
    pub latency: Vec<LatencySample>,
    pub messages: Vec<MessageSample>,
    pub concurrent: Vec<ConcurrentSample>,
    pub handshakes: Vec<HandshakeSample>,
    pub pinning: String,
    pub problems: Vec<String>,
}

pub struct Bench<'a> {
    plan: &'a Plan,
    machine: &'a Machine,
    proxies: &'a [Proxy],
    starter: &'a super::Starter,
    backend_pid: u32,
    strict: bool,
    workloads: Vec<Workload>,
    results: Results,
}

impl<'a> Bench<'a> {
    pub fn new(
        plan: &'a Plan,
        machine: &'a Machine,
        proxies: &'a [Proxy],
        starter: &'a super::Starter,
        backend_pid: u32,
        strict: bool,
        workloads: &[Workload],
    ) -> Self {
        Self {
            plan,
            machine,
            proxies,
            starter,
            backend_pid,
            strict,
            workloads: workloads.to_vec(),
            results: Results::default(),
        }
    }

    pub fn finish(self) -> Results {
        self.results
    }

    pub async fn run_all(&mut self) -> anyhow::Result<()> {
        self.results.pinning = self.pinning_description();
        let runs = |workload| self.workloads.is_empty() || self.workloads.contains(&workload);
        let (bulk, latency) = (runs(Workload::Bulk), runs(Workload::Latency));
        let messages = runs(Workload::Messages);
        let (concurrent, handshakes) = (runs(Workload::Concurrent), runs(Workload::Handshakes));
        for round in 0..self.plan.rounds {
            for proxy in self.rotated(round).into_iter().filter(|_| bulk) {
                for direction in Direction::ALL {
                    let outcome = self.bulk(proxy, direction, round).await;
                    self.record(proxy, "bulk", outcome, |r, s| r.bulk.push(s))?;
                }
            }
            for pinned in [false, true].into_iter().filter(|_| latency) {
                if pinned && self.pinned_cpus().is_none() {
                    continue;
                }
                for proxy in self.rotated(round) {
                    let outcome = self.latency(proxy, pinned, round).await;
                    self.record(proxy, "latency", outcome, |r, s| r.latency.push(s))?;
                }
            }
            let sizes = if messages {
                self.plan.message_sizes.clone()
            } else {
                Vec::new()
            };
            for size in sizes {
                for proxy in self.rotated(round) {
                    let outcome = self.messages(proxy, size, round).await;
                    self.record(proxy, "messages", outcome, |r, s| r.messages.push(s))?;
                }
            }
            let counts = if concurrent {
                self.plan.concurrent_tunnels.clone()
            } else {
                Vec::new()
            };
            for requested in counts {
                for proxy in self.rotated(round) {
                    let outcome = self.concurrent(proxy, requested, round).await;
                    self.record(proxy, "concurrent", outcome, |r, s| r.concurrent.push(s))?;
                }
            }
            for proxy in self.rotated(round).into_iter().filter(|_| handshakes) {
                let outcome = self.handshakes(proxy, round).await;
                self.record(proxy, "handshakes", outcome, |r, s| r.handshakes.push(s))?;
            }
        }
        Ok(())
    }

    /// The paths in a different order each round, so no path always runs first or last.
    fn rotated(&self, round: u32) -> Vec<&'a Proxy> {
        let mut order: Vec<&'a Proxy> = self.proxies.iter().collect();
        if !order.is_empty() {
            let shift = round as usize % order.len();
            order.rotate_left(shift);
        }
        order
    }

    fn record<T>(
        &mut self,
        proxy: &Proxy,
        workload: &str,
        outcome: anyhow::Result<T>,
        push: impl FnOnce(&mut Results, T),
    ) -> anyhow::Result<()> {
        match outcome {
            Ok(sample) => {
                push(&mut self.results, sample);
                Ok(())
            }
            Err(error) => {
                let problem = format!("{} {workload}: {error:#}", proxy.kind().label());
                eprintln!("bench: {problem}");
                if self.strict {
                    anyhow::bail!(problem);
                }
                self.results.problems.push(problem);
                Ok(())
            }
        }
    }

    async fn bulk(
        &self,
        proxy: &Proxy,
        direction: Direction,
        round: u32,
    ) -> anyhow::Result<BulkSample> {
        let bytes = self.plan.bulk_bytes;
        let work = load::bulk(proxy.addr(), direction, bytes);
        let (outcome, cpu) =
            measured(proxy, bounded("bulk", transfer_deadline(2 * bytes), work)).await?;
        let sample = BulkSample {
            path: proxy.kind(),
            direction,
            round,
            bytes: outcome.bytes,
            secs: outcome.elapsed.as_secs_f64(),
            cpu,
        };
        println!(
            "bench: round {round} bulk {:<9} {:<18} {:>7.2} Gbit/s",
            direction.label(),
            proxy.kind().label(),
            sample.gbit_per_sec()
        );
        Ok(sample)
    }

    /// CPUs for the pinned latency runs: the client on the first, backend and proxy on the
    /// last. `None` on a single-CPU machine.
    fn pinned_cpus(&self) -> Option<(usize, usize)> {
        let cpus = pin::all_cpus();
        match (cpus.first(), cpus.last()) {
            (Some(&first), Some(&last)) if first != last => Some((first, last)),
            _ => None,
        }
    }

    fn pinning_description(&self) -> String {
        match self.pinned_cpus() {
            Some((client, rest)) => format!(
                "pinned runs: the client thread on CPU {client}; the backend and the proxy \
                 (every process and thread) on CPU {rest}. Unpinned runs: the scheduler \
                 places everything on any of the {} CPUs.",
                self.machine.cpus
            ),
            None => "one CPU: no pinned runs".into(),
        }
    }

    async fn latency(
        &self,
        proxy: &Proxy,
        pinned: bool,
        round: u32,
    ) -> anyhow::Result<LatencySample> {
        let client_cpu = if pinned {
            let (client, rest) = self.pinned_cpus().context("no CPUs to pin to")?;
            self.set_affinity(proxy, &[rest])?;
            Some(client)
        } else {
            None
        };
        let target = proxy.addr();
        let (warmup, count) = (self.plan.pingpong_warmup, self.plan.pingpong_count);
        // A thread of its own: pinning it leaves no runtime thread pinned afterwards.
        let (done, histogram) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("pingpong".into())
            .spawn(move || {
                let outcome = client_cpu
                    .map_or(Ok(()), pin::pin_current_thread)
                    .and_then(|()| load::pingpong(target, warmup, count));
                let _ = done.send(outcome);
            })
            .context("start the ping-pong thread")?;
        let histogram = histogram.await.context("the ping-pong thread panicked")?;
        if pinned {
            self.set_affinity(proxy, &pin::all_cpus())?;
        }
        let histogram = histogram?;
        let us = |q: f64| histogram.value_at_quantile(q) as f64 / 1_000.0;
        let sample = LatencySample {
            path: proxy.kind(),
            pinned,
            round,
            count: histogram.len(),
            p50_us: us(0.5),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: histogram.max() as f64 / 1_000.0,
            cdf: cdf_points(&histogram),
        };
        println!(
            "bench: round {round} latency {:<8} {:<18} p50 {:>7.1} µs  p99 {:>7.1} µs  p99.9 {:>7.1} µs",
            if pinned { "pinned" } else { "unpinned" },
            proxy.kind().label(),
            sample.p50_us,
            sample.p99_us,
            sample.p999_us
        );
        Ok(sample)
    }

    /// One tunnel echoing the plan's number of `size`-byte messages, one at a time. Unpinned:
    /// what is measured is milliseconds of bulk movement and the pauses between, which
    /// pinning everything but the client to one CPU would only slow down.
    async fn messages(
        &self,
        proxy: &Proxy,
        size: u64,
        round: u32,
    ) -> anyhow::Result<MessageSample> {
        let (warmup, count) = (self.plan.message_warmup, self.plan.message_count);
        let work = load::messages(proxy.addr(), size, warmup, count);
        let moved = 2 * size * (warmup + count);
        let (times, cpu) =
            measured(proxy, bounded("messages", transfer_deadline(moved), work)).await?;
        let sample = MessageSample {
            path: proxy.kind(),
            round,
            bytes: size,
            exchange_ms: times.iter().map(|t| t.as_secs_f64() * 1e3).collect(),
            cpu,
        };
        println!(
            "bench: round {round} messages {:>7} {:<18} p50 {:>8.2} ms  max {:>8.2} ms",
            report::bytes(size),
            proxy.kind().label(),
            sample.p50_ms().unwrap_or(f64::NAN),
            sample.max_ms().unwrap_or(f64::NAN),
        );
        Ok(sample)
    }

    /// Pins (or unpins) the backend and the proxy's processes.
    fn set_affinity(&self, proxy: &Proxy, cpus: &[usize]) -> anyhow::Result<()> {
        pin::set_process_affinity(self.backend_pid, cpus).context("pin the backend")?;
        for pid in proxy.pids() {
            pin::set_process_affinity(pid, cpus)
                .with_context(|| format!("pin {} (pid {pid})", proxy.kind().label()))?;
        }
        Ok(())
    }

    /// How many tunnels the descriptor limit allows: a proxy holds two per tunnel, so the
    /// same count is used for every path (direct included) to keep them comparable.
    fn feasible_tunnels(&self, requested: usize) -> (usize, Option<String>) {
        let hard = self.machine.nofile_hard_limit;
        let feasible = hard.saturating_sub(SPARE_FDS) / PROXY_FDS_PER_TUNNEL;
        let feasible = usize::try_from(feasible).unwrap_or(usize::MAX);
        if feasible >= requested {
            (requested, None)
        } else {
            (
                feasible,
                Some(format!(
                    "RLIMIT_NOFILE hard limit {hard}: a proxy holds {PROXY_FDS_PER_TUNNEL} \
                     descriptors per tunnel, and raising the limit needs CAP_SYS_RESOURCE"
                )),
            )
        }
    }

    async fn concurrent(
        &self,
        proxy: &Proxy,
        requested: usize,
        round: u32,
    ) -> anyhow::Result<ConcurrentSample> {
        let (tunnels, limited_by) = self.feasible_tunnels(requested);
        // A fresh proxy: memory left over from earlier workloads (allocator caches, grown
        // buffers) would hide what the tunnels cost.
        let fresh = if proxy.kind().is_proxy() {
            let name = format!("{}-concurrent-{requested}-{round}", proxy.kind().label());
            Some(self.starter.start(proxy.kind(), &name).await?)
        } else {
            None
        };
        let measured_proxy = fresh.as_ref().unwrap_or(proxy);
        let outcome = self.concurrent_on(measured_proxy, tunnels).await;
        if let Some(fresh) = fresh {
            fresh.stop().await.context("stop the fresh proxy")?;
        }
        let ConcurrentRun {
            idle,
            open_rss,
            opened,
            outcome,
            cpu,
        } = outcome?;
        let sample = ConcurrentSample {
            path: proxy.kind(),
            round,
            requested,
            tunnels: opened,
            limited_by,
            proxy_rss_idle_bytes: idle,
            proxy_rss_open_bytes: open_rss,
            bytes: outcome.bytes,
            secs: outcome.elapsed.as_secs_f64(),
            cpu,
        };
        println!(
            "bench: round {round} concurrent {:>6} {:<18} {:>7.2} Gbit/s  {:>6.1} KiB/tunnel",
            tunnels,
            proxy.kind().label(),
            sample.gbit_per_sec(),
            sample.rss_per_tunnel_bytes() / 1024.0
        );
        Ok(sample)
    }

    /// Opens `tunnels` through `proxy`, reads its memory idle and with them open, then
    /// moves the plan's bytes through all of them at once and closes them.
    async fn concurrent_on(&self, proxy: &Proxy, tunnels: usize) -> anyhow::Result<ConcurrentRun> {
        let idle = procstat::rss_bytes(&proxy.pids())?;
        let mut open = load::concurrent::open(proxy.addr(), tunnels, CONNECTING)
            .await
            .with_context(|| format!("open {tunnels} tunnels"))?;
        let open_rss = procstat::rss_bytes(&proxy.pids())?;
        let opened = open.len();
        let bytes_each_way = self.plan.concurrent_bytes_per_tunnel;
        let total = 2 * bytes_each_way * opened as u64;
        let work = bounded(
            "exchange",
            transfer_deadline(total),
            open.exchange(bytes_each_way),
        );
        let (outcome, cpu) = measured(proxy, work).await?;
        open.close().await.context("close the tunnels")?;
        Ok(ConcurrentRun {
            idle,
            open_rss,
            opened,
            outcome,
            cpu,
        })
    }

    async fn handshakes(&self, proxy: &Proxy, round: u32) -> anyhow::Result<HandshakeSample> {
        let duration = Duration::from_secs_f64(self.plan.handshake_secs);
        let (outcome, cpu) = measured(proxy, async {
            load::handshakes(proxy.addr(), duration, self.plan.handshake_concurrency).await
        })
        .await?;
        if let Some(failure) = &outcome.first_failure {
            eprintln!(
                "bench: {} handshakes: {} failed, first: {failure}",
                proxy.kind().label(),
                outcome.failed
            );
        }
        let sample = HandshakeSample {
            path: proxy.kind(),
            round,
            completed: outcome.completed,
            failed: outcome.failed,
            secs: outcome.elapsed.as_secs_f64(),
            cpu,
        };
        println!(
            "bench: round {round} handshakes {:<18} {:>9.0} /s  ({} failed)",
            proxy.kind().label(),
            sample.per_sec(),
            sample.failed
        );
        Ok(sample)
    }
}

/// Runs `work` and returns its result with the CPU the proxy and the machine spent on it.
async fn measured<T>(
    proxy: &Proxy,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(T, CpuUse)> {
    let before = procstat::cpu_snapshot(&proxy.pids())?;
    let value = work.await?;
    let after = procstat::cpu_snapshot(&proxy.pids())?;
    Ok((value, after.since(&before)))
}

/// Points of the latency distribution for plots: every percent, then the tail.
fn cdf_points(histogram: &hdrhistogram::Histogram<u64>) -> Vec<(f64, f64)> {
    let body = (1..100).map(|percent| f64::from(percent) / 100.0);
    let tail = [0.995, 0.999, 0.9995, 0.9999, 1.0];
    body.chain(tail)
        .map(|q| (histogram.value_at_quantile(q) as f64 / 1_000.0, q))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_is_monotonic_and_ends_at_the_maximum() {
        let mut histogram = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
        for ns in (1..=10_000u64).map(|i| i * 1_000) {
            histogram.record(ns).expect("record");
        }
        let points = cdf_points(&histogram);
        assert!(points
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
        let last = points.last().expect("points");
        assert_eq!(last.1, 1.0);
        assert!((last.0 - 10_000.0).abs() / 10_000.0 < 0.01, "{last:?}");
    }
}
