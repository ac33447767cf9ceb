//! [`HealthBackend`]: a backend whose answer to health probes the test switches at run time
//! (pass, a status, a body, hang, slow, close), that answers ordinary requests with its
//! name, echoes WebSocket tunnels byte for byte, and can be stopped (connection refused)
//! and started again on the same port.
//!
//! A request is a probe when its `User-Agent` is the gateway's probe agent, whatever its
//! path: the probes' heads are kept for the test to check their path and `Host`.

use std::{
    io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use crate::{
    data::{Hasher, Summary, CHUNK_BYTES},
    http::{self, Head},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    task::{AbortHandle, JoinHandle},
};

/// The `User-Agent` prefix of the gateway's probes.
pub const PROBE_AGENT: &str = "gateway-health-probe/";

/// The body of a passing probe answer; a `match_body = "all good"` probe accepts it.
pub const HEALTHY_BODY: &str = "status: all good";

/// How long [`ProbeAnswer::Slow`] waits: longer than the tests' 1 s probe timeout.
const SLOW_ANSWER: Duration = Duration::from_millis(1_500);

/// How the backend answers a probe.
#[derive(Clone, Debug)]
pub enum ProbeAnswer {
    /// `200` with [`HEALTHY_BODY`].
    Pass,
    /// This status, with a one-line body.
    Status(u16),
    /// `200` with this body.
    Body(&'static str),
    /// Reads the request and never answers (holds the connection until the prober drops it).
    Hang,
    /// A passing answer, after [`SLOW_ANSWER`].
    Slow,
    /// Closes the connection without a byte.
    Close,
}

/// What the backend saw on one tunnel, once it ended.
#[derive(Clone, Debug)]
pub struct TunnelRecord {
    /// The `X-Tunnel` number it sent in its `101`.
    pub id: usize,
    /// Every byte received after the request head.
    pub received: Summary,
    /// `Ok` for a clean EOF.
    pub ended: Result<(), String>,
}

struct Shared {
    name: String,
    answer: Mutex<ProbeAnswer>,
    probes: Mutex<Vec<Head>>,
    /// Ordinary (non-probe, non-upgrade) requests answered.
    requests: AtomicUsize,
    upgrades: AtomicUsize,
    tunnels: Mutex<Vec<TunnelRecord>>,
    /// Connections being served, aborted by [`HealthBackend::stop`].
    conns: Mutex<Vec<AbortHandle>>,
}

pub struct HealthBackend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl HealthBackend {
    /// Listens on `127.0.0.1:0`, answering probes with `answer`; `name` comes back in
    /// `X-Backend` and as the body of ordinary requests.
    pub async fn start(name: &str, answer: ProbeAnswer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a backend on 127.0.0.1:0");
        let addr = listener.local_addr().expect("backend address");
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            answer: Mutex::new(answer),
            probes: Mutex::new(Vec::new()),
            requests: AtomicUsize::new(0),
            upgrades: AtomicUsize::new(0),
            tunnels: Mutex::new(Vec::new()),
            conns: Mutex::new(Vec::new()),
        });
        let accept = Some(tokio::spawn(accept_loop(listener, shared.clone())));
        Self {
            addr,
            shared,
            accept,
        }
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers probes with `answer` from now on.
    pub fn set(&self, answer: ProbeAnswer) {
        *lock(&self.shared.answer) = answer;
    }

    /// The heads of the probes received so far.
    pub fn probes(&self) -> Vec<Head> {
        lock(&self.shared.probes).clone()
    }

    /// Ordinary requests answered so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Tunnels that have ended, in the order they ended.
    pub fn tunnel_records(&self) -> Vec<TunnelRecord> {
        lock(&self.shared.tunnels).clone()
    }

    /// Closes the listener and every connection: connecting is refused from now on.
    pub async fn stop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            // Returns once the task, and the listener it owns, are dropped.
            let _ = accept.await;
        }
        for conn in lock(&self.shared.conns).drain(..) {
            conn.abort();
        }
    }

    /// Listens again on the same address after [`Self::stop`].
    pub async fn restart(&mut self) {
        assert!(self.accept.is_none(), "restart a backend that is running");
        // tokio sets SO_REUSEADDR: the port's closed connections do not hold it.
        let listener = TcpListener::bind(self.addr)
            .await
            .unwrap_or_else(|error| panic!("bind {} again: {error}", self.addr));
        self.accept = Some(tokio::spawn(accept_loop(listener, self.shared.clone())));
    }
}

impl Drop for HealthBackend {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        for conn in lock(&self.shared.conns).drain(..) {
            conn.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((stream, _)) = listener.accept().await {
        let task = tokio::spawn(serve(stream, shared.clone()));
        let mut conns = lock(&shared.conns);
        conns.retain(|conn| !conn.is_finished());
        conns.push(task.abort_handle());
    }
}

/// One connection: one request (every answer says `Connection: close`), or one tunnel.
async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let Ok((head, leftover)) = http::read_head(&mut stream).await else {
        return;
    };
    let is_probe = head
        .header("user-agent")
        .is_some_and(|agent| agent.starts_with(PROBE_AGENT));
    if is_probe {
        lock(&shared.probes).push(head);
        let answer = lock(&shared.answer).clone();
        answer_probe(stream, answer).await;
    } else if head
        .header("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
    {
        tunnel(stream, &head, &leftover, &shared).await;
    } else {
        shared.requests.fetch_add(1, Ordering::SeqCst);
        let name = &shared.name;
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Backend: {name}\r\n\
             Connection: close\r\n\r\n{name}",
            name.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
    }
}

async fn answer_probe(mut stream: TcpStream, answer: ProbeAnswer) {
    let (status, body) = match answer {
        ProbeAnswer::Pass => (200, HEALTHY_BODY.to_owned()),
        ProbeAnswer::Status(status) => (status, format!("status {status}")),
        ProbeAnswer::Body(body) => (200, body.to_owned()),
        ProbeAnswer::Hang => {
            // Until the prober gives up and closes.
            let mut buf = [0; 1024];
            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            return;
        }
        ProbeAnswer::Slow => {
            // The delay is the behaviour under test: an answer after the probe timeout.
            tokio::time::sleep(SLOW_ANSWER).await;
            (200, HEALTHY_BODY.to_owned())
        }
        ProbeAnswer::Close => return,
    };
    let reason = match status {
        200 => "OK",
        204 => "No Content",
        302 => "Found",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let location = if status == 302 {
        "Location: /elsewhere\r\n"
    } else {
        ""
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\n{location}Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
}

/// Answers the upgrade (`X-Backend`, `X-Tunnel`), then echoes every byte until the
/// gateway's EOF and half-closes; records what it received and how the tunnel ended.
async fn tunnel(mut stream: TcpStream, head: &Head, leftover: &[u8], shared: &Shared) {
    let id = shared.upgrades.fetch_add(1, Ordering::SeqCst) + 1;
    let mut answer = http::switching_protocols(head.header("sec-websocket-key").unwrap_or(""));
    // Before the blank line that ends the head.
    answer.truncate(answer.len() - 2);
    answer.extend_from_slice(
        format!("X-Backend: {}\r\nX-Tunnel: {id}\r\n\r\n", shared.name).as_bytes(),
    );
    let mut received = Hasher::default();
    let ended = match stream.write_all(&answer).await {
        Err(error) => Err(format!("write the 101: {error}")),
        Ok(()) => echo(&mut stream, leftover, &mut received)
            .await
            .map_err(|error| error.to_string()),
    };
    lock(&shared.tunnels).push(TunnelRecord {
        id,
        received: received.finish(),
        ended,
    });
}

/// Echoes `leftover`, then every byte read, until EOF; then half-closes.
async fn echo(stream: &mut TcpStream, leftover: &[u8], received: &mut Hasher) -> io::Result<()> {
    received.update(leftover);
    stream.write_all(leftover).await?;
    let mut chunk = vec![0; CHUNK_BYTES];
    loop {
        match stream.read(&mut chunk).await? {
            0 => break,
            read => {
                received.update(&chunk[..read]);
                stream.write_all(&chunk[..read]).await?;
            }
        }
    }
    stream.shutdown().await
}
