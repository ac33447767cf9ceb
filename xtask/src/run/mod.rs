//! `cargo xtask run`: the gateway in front of the bundled demo backend, until Ctrl-C.
mod args;
mod gateway;

use std::path::Path;

use anyhow::Context as _;
use tokio::{
    net::TcpListener,
    signal::unix::{signal, Signal, SignalKind},
};

use crate::{
    build::{self, Profile},
    cli::RunArgs,
    demo,
    readiness::Ready,
    setup,
};

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    setup::run()?;
    let binary = build::gateway(Profile::Release)?;
    let runtime = tokio::runtime::Runtime::new().context("start the tokio runtime")?;
    runtime.block_on(demo_behind_gateway(&binary, &args))
}

async fn demo_behind_gateway(binary: &Path, args: &RunArgs) -> anyhow::Result<()> {
    // Watched from before the gateway starts, so that it is stopped whenever Ctrl-C comes.
    let mut stop = StopSignals::new()?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("bind the demo backend")?;
    let backend = listener
        .local_addr()
        .context("demo backend address")?
        .to_string();
    tokio::spawn(demo::serve(listener));
    println!("run: demo backend listening on http://{backend}/");

    let gateway_args = args::gateway_args(args, &backend);
    println!(
        "run: starting {} {}",
        binary.display(),
        gateway_args.join(" ")
    );
    let mut gateway = gateway::Gateway::spawn(binary, &gateway_args)?;
    let ready = tokio::select! {
        ready = gateway.ready() => ready?,
        () = stop.recv() => return gateway.stop().await,
    };
    print_urls(&ready, &backend);
    gateway.run_until(stop.recv()).await
}

/// SIGINT (Ctrl-C) and SIGTERM, registered at once so neither kills us with the gateway
/// left running.
struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("watch SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("watch SIGTERM")?,
        })
    }

    async fn recv(&mut self) {
        let name = tokio::select! {
            _ = self.interrupt.recv() => "Ctrl-C",
            _ = self.terminate.recv() => "SIGTERM",
        };
        println!("run: {name}: stopping the gateway");
    }
}

fn print_urls(ready: &Ready, backend: &str) {
    println!("run: gateway ready, dataplane: {}", ready.dataplane);
    for listen in &ready.listen {
        println!("run:   demo page through the gateway: {listen}/");
    }
    match &ready.admin {
        Some(admin) => println!("run:   metrics:                       {admin}/metrics"),
        None => println!("run:   metrics:                       (no admin endpoint)"),
    }
    println!("run:   demo backend, directly:        http://{backend}/");
    println!("run: press Ctrl-C to stop");
}
