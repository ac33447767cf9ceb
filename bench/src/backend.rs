//! The benchmark backend: `gateway-bench backend`, a process of its own so its CPU is
//! accounted apart from the load generator's and the proxy's.
//!
//! Every connection is one upgrade (see [`crate::wire`]) followed by raw bytes whose meaning
//! the request's [`Mode`] gives. The backend never allocates per byte: it writes from the shared
//! payload pattern and reads into a per-thread scratch buffer, so it is not what limits a run.
use std::{
    io::{self, Write as _},
    net::SocketAddr,
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{
        tcp::{ReadHalf, WriteHalf},
        TcpListener, TcpSocket, TcpStream,
    },
};

use crate::{
    cli::BackendArgs,
    machine,
    payload::{self, Checksum, Source},
    wire::{self, Mode, ServerHandshake, Upgrade},
};

/// Pending-connection queue: the handshake workload and the opening of ten thousand tunnels
/// connect in bursts; the kernel caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// A client that has not sent its whole request head by then is dropped, so a stuck proxy
/// cannot pile up connections in the backend.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause after a failed `accept` (e.g. out of descriptors) so the loop does not spin.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(10);

/// Runs the backend until the process is killed. Prints `backend ready ADDR` once listening.
pub fn serve(args: &BackendArgs) -> anyhow::Result<()> {
    // The concurrent workload opens up to ten thousand tunnels, one descriptor each here.
    machine::raise_nofile_limit().context("raise the RLIMIT_NOFILE soft limit")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    let listener = runtime
        .block_on(async { listen(args.listen) })
        .with_context(|| format!("listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("local address of the listener")?;
    let mut stdout = io::stdout();
    writeln!(stdout, "backend ready {addr}").context("write the ready line")?;
    stdout.flush().context("flush the ready line")?;
    runtime.block_on(accept_loop(listener));
    Ok(())
}

/// Binds `addr` with a deep accept queue.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts forever, serving every connection in its own task. Factored out of [`serve`] so
/// tests can run the backend inside their own runtime.
pub async fn accept_loop(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(async move {
                    if let Err(e) = serve_connection(stream).await {
                        eprintln!("backend: connection from {peer}: {e}");
                    }
                });
            }
            Err(e) => {
                eprintln!("backend: accept failed: {e}");
                tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
            }
        }
    }
}

async fn serve_connection(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let upgrade = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no request head in time",
            ))
        }
        Ok(Ok(None)) => return Ok(()),
        Ok(Ok(Some(Ok(upgrade)))) => upgrade,
        Ok(Ok(Some(Err(refused)))) => {
            stream.write_all(&wire::bad_request(&refused)).await?;
            stream.shutdown().await?;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("refused: {refused}"),
            ));
        }
        Ok(Err(e)) => return Err(e),
    };
    stream.write_all(&upgrade.response).await?;
    let Upgrade { mode, leftover, .. } = upgrade;
    match mode {
        Mode::Sink(len) => sink(&mut stream, len, &leftover).await,
        Mode::Source(len) => source(&mut stream, len).await,
        Mode::Both(len) => both(&mut stream, len, &leftover).await,
        Mode::Echo => echo(&mut stream, &leftover).await,
    }
}

/// Reads until the request head is complete; `None` if the client left before.
async fn read_head(
    stream: &mut TcpStream,
) -> io::Result<Option<Result<Upgrade, wire::HandshakeError>>> {
    let mut handshake = ServerHandshake::default();
    // On the heap and dropped after the head: a buffer in the future itself would stay
    // allocated for the life of every tunnel.
    let mut buf = vec![0_u8; 4096];
    loop {
        let read = stream.read(&mut buf).await?;
        if read == 0 {
            return Ok(None);
        }
        match handshake.feed(&buf[..read]) {
            Ok(None) => {}
            Ok(Some(upgrade)) => return Ok(Some(Ok(upgrade))),
            Err(refused) => return Ok(Some(Err(refused))),
        }
    }
}

/// Reads `len` bytes, then reports what it read.
async fn sink(stream: &mut TcpStream, len: u64, leftover: &[u8]) -> io::Result<()> {
    let (reader, mut writer) = stream.split();
    let mut checksum = Checksum::default();
    checksum.update(leftover);
    payload::receive_at_least(&reader, &mut checksum, len).await?;
    finish(&reader, &mut writer, Some(&checksum)).await
}

/// Sends `len` bytes.
async fn source(stream: &mut TcpStream, len: u64) -> io::Result<()> {
    let (reader, mut writer) = stream.split();
    payload::send(&mut writer, Source::new(0, len)).await?;
    finish(&reader, &mut writer, None).await
}

/// Sends `len` bytes while reading as many, then reports what it read.
async fn both(stream: &mut TcpStream, len: u64, leftover: &[u8]) -> io::Result<()> {
    let (reader, mut writer) = stream.split();
    let mut checksum = Checksum::default();
    checksum.update(leftover);
    let (sent, received) = tokio::join!(
        payload::send(&mut writer, Source::new(0, len)),
        payload::receive_at_least(&reader, &mut checksum, len),
    );
    sent?;
    received?;
    finish(&reader, &mut writer, Some(&checksum)).await
}

/// Ends a tunnel from the backend's side: the summary of what was read (if the mode has
/// one), a half-close that tells the client nothing more follows, then waiting for the
/// client to close (whatever it still sends is the client's defect to find, not ours).
async fn finish(
    reader: &ReadHalf<'_>,
    writer: &mut WriteHalf<'_>,
    summary_of: Option<&Checksum>,
) -> io::Result<()> {
    if let Some(checksum) = summary_of {
        writer.write_all(&checksum.summary().to_wire()).await?;
    }
    writer.shutdown().await?;
    while payload::read_chunk(reader, |_| ()).await?.is_some() {}
    Ok(())
}

/// Echoes every byte until EOF. Bytes are written back straight from the scratch buffer when
/// the socket takes them; only what it does not take is copied, so an idle tunnel holds no
/// buffer.
async fn echo(stream: &mut TcpStream, leftover: &[u8]) -> io::Result<()> {
    let (reader, mut writer) = stream.split();
    writer.write_all(leftover).await?;
    loop {
        let unwritten = payload::read_chunk(&reader, |bytes| match writer.try_write(bytes) {
            Ok(written) => Ok(bytes[written..].to_vec()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(bytes.to_vec()),
            Err(e) => Err(e),
        })
        .await?;
        match unwritten {
            None => break,
            Some(unwritten) => writer.write_all(&unwritten?).await?,
        }
    }
    writer.shutdown().await
}
