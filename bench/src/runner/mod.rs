//! `gateway-bench run`: starts the backend and every path's proxy, runs each workload over
//! every path (interleaved, round by round, so drift hits all paths alike), and writes the
//! report. A path that fails to start or a workload that fails verification is recorded as
//! a problem in the report (or stops the run with `--strict`).

mod backend;
mod plan;
mod workloads;

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;

use crate::{
    cli::RunArgs,
    machine,
    model::{PathKind, PathSetup, Report},
    proxies::{Proxy, ProxyConfig},
    report,
};

use self::{backend::BackendProcess, workloads::Bench};

pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the tokio runtime")?
        .block_on(run_async(args))
}

async fn run_async(args: &RunArgs) -> anyhow::Result<()> {
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .context("format the start time")?;
    machine::raise_nofile_limit().context("raise RLIMIT_NOFILE")?;
    let machine = machine::describe();
    let plan = plan::from_args(args);
    let paths = if args.paths.is_empty() {
        PathKind::ALL.to_vec()
    } else {
        args.paths.clone()
    };
    let gateway = args
        .gateway
        .canonicalize()
        .with_context(|| format!("gateway binary {}", args.gateway.display()))?;
    let mut work_dir = WorkDir::create()?;
    println!(
        "bench: preset {} · paths {} · work dir {}",
        plan.preset,
        paths
            .iter()
            .map(|p| p.label())
            .collect::<Vec<_>>()
            .join(", "),
        work_dir.0.display()
    );

    let backend = BackendProcess::start().await?;
    let starter = Starter {
        gateway_bin: gateway.clone(),
        work_dir: work_dir.0.clone(),
        backend: backend.addr(),
        max_tunnels: plan.concurrent_tunnels.iter().copied().max().unwrap_or(0),
        gateway_args: args.gateway_args.clone(),
    };
    let mut problems = Vec::new();
    let mut proxies = Vec::new();
    for &kind in &paths {
        match starter.start(kind, kind.label()).await {
            Ok(proxy) => proxies.push(proxy),
            Err(error) => {
                let problem = format!("{} did not start: {error:#}", kind.label());
                if args.strict {
                    anyhow::bail!(problem);
                }
                eprintln!("bench: {problem}");
                problems.push(problem);
            }
        }
    }
    let setups: Vec<PathSetup> = proxies.iter().map(Proxy::setup).collect();

    let mut bench = Bench::new(
        &plan,
        &machine,
        &proxies,
        &starter,
        backend.pid(),
        args.strict,
        &args.workloads,
    );
    bench.run_all().await?;
    let mut results = bench.finish();
    problems.append(&mut results.problems);

    for proxy in proxies {
        let label = proxy.kind().label();
        if let Err(error) = proxy.stop().await {
            problems.push(format!("{label}: {error:#}"));
        }
    }
    if let Err(error) = backend.stop().await {
        problems.push(format!("backend: {error:#}"));
    }

    let report = Report {
        started_at,
        machine,
        plan,
        paths: setups,
        pinning: results.pinning,
        bulk: results.bulk,
        latency: results.latency,
        messages: results.messages,
        concurrent: results.concurrent,
        handshakes: results.handshakes,
        problems,
    };
    let written = report::write(&report, &args.out)?;
    work_dir.1 = report.problems.is_empty();
    println!("{}", report::markdown(&report));
    println!("bench: wrote {}", written.markdown.display());
    println!("bench: wrote {}", written.json.display());
    for plot in &written.plots {
        println!("bench: wrote {}", plot.display());
    }
    // A problem in the full run is a failure, strict or not: a workload that failed
    // verification means bytes were lost, duplicated or reordered, never noise.
    let full = !(args.quick || args.tiny);
    if (args.strict || full) && !report.problems.is_empty() {
        anyhow::bail!("{} problem(s), see the report", report.problems.len());
    }
    Ok(())
}

/// Starts a path's proxy in a directory of its own under the work dir; the concurrent
/// workload uses it for a fresh proxy whose memory has not been touched by other workloads.
pub struct Starter {
    gateway_bin: PathBuf,
    work_dir: PathBuf,
    backend: std::net::SocketAddr,
    max_tunnels: usize,
    gateway_args: Vec<String>,
}

impl Starter {
    pub async fn start(&self, kind: PathKind, name: &str) -> anyhow::Result<Proxy> {
        let dir = self.work_dir.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let config = ProxyConfig {
            gateway_bin: &self.gateway_bin,
            work_dir: &dir,
            backend: self.backend,
            max_tunnels: self.max_tunnels,
            gateway_args: &self.gateway_args,
        };
        Proxy::start(kind, &config).await
    }
}

/// A private directory for configs and logs. It is removed only after a run without
/// problems; otherwise the proxies' logs are worth reading, and the path is printed.
struct WorkDir(PathBuf, bool);

impl WorkDir {
    fn create() -> anyhow::Result<Self> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis();
        let path =
            std::env::temp_dir().join(format!("gateway-bench-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(Self(path, false))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            eprintln!("bench: logs and configs kept in {}", self.0.display());
        }
    }
}
