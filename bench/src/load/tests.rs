//! Every workload against the real backend, in process on `127.0.0.1:0`, with small sizes;
//! and against fake backends that corrupt the stream, to prove that verification bites.
use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use super::{bulk, concurrent, handshakes, messages, pingpong};
use crate::{
    backend,
    model::Direction,
    payload::{self, Checksum, Source, PATTERN_LEN},
    wire::{Mode, ServerHandshake},
};

const MIB: u64 = 1 << 20;

/// The real backend, serving from this test's runtime.
fn start_backend() -> SocketAddr {
    let listener =
        backend::listen(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind the backend");
    let addr = listener.local_addr().expect("the backend's address");
    tokio::spawn(backend::accept_loop(listener));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_verifies_every_direction() {
    let backend = start_backend();
    for direction in Direction::ALL {
        for bytes in [8 * MIB, 0, 1, PATTERN_LEN as u64 + 7] {
            let outcome = bulk(backend, direction, bytes)
                .await
                .unwrap_or_else(|e| panic!("bulk {} of {bytes} bytes: {e:#}", direction.label()));
            let expected = if direction == Direction::Both {
                2 * bytes
            } else {
                bytes
            };
            assert_eq!(outcome.bytes, expected, "{} of {bytes}", direction.label());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pingpong_records_every_measured_round_trip() {
    let backend = start_backend();
    let histogram = tokio::task::spawn_blocking(move || pingpong(backend, 20, 200))
        .await
        .expect("the ping-pong thread")
        .expect("ping-pong against the backend");
    assert_eq!(histogram.len(), 200);
    assert!(histogram.min() > 0, "a round trip cannot take no time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_echo_every_measured_exchange() {
    let backend = start_backend();
    // Larger than the socket buffers of both directions together: a client that wrote the
    // whole message before reading would stall here.
    for size in [16 * MIB, 1, PATTERN_LEN as u64 + 7] {
        let times = messages(backend, size, 2, 3)
            .await
            .unwrap_or_else(|e| panic!("messages of {size} bytes: {e:#}"));
        assert_eq!(times.len(), 3, "{size} bytes");
        assert!(
            times.iter().all(|t| *t > Duration::ZERO),
            "{size} bytes: {times:?}"
        );
    }
    let times = messages(backend, MIB, 1, 0).await.expect("warm-up only");
    assert!(times.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tunnels_open_exchange_and_close() {
    let backend = start_backend();
    let mut tunnels = concurrent::open(backend, 50, 8)
        .await
        .expect("open 50 tunnels");
    assert_eq!(tunnels.len(), 50);
    for _ in 0..2 {
        let outcome = tunnels
            .exchange(64 * 1024)
            .await
            .expect("exchange 64 KiB each way");
        assert_eq!(outcome.bytes, 2 * 64 * 1024 * 50);
    }
    assert_eq!(tunnels.len(), 50);
    tunnels.close().await.expect("close every tunnel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_complete_without_failures() {
    let backend = start_backend();
    let outcome = handshakes(backend, Duration::from_millis(300), 4)
        .await
        .expect("handshakes");
    assert!(outcome.completed > 0, "{outcome:?}");
    assert_eq!(outcome.failed, 0, "{outcome:?}");
    assert_eq!(outcome.first_failure, None);
    assert!(outcome.elapsed >= Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upgrade_names_the_stage_and_target() {
    let backend = start_backend();
    let mut stream = TcpStream::connect(backend).await.expect("connect");
    stream
        .write_all(b"GET /nope HTTP/1.1\r\nHost: bench\r\n\r\n")
        .await
        .expect("send a bad request");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .await
        .expect("read the answer to EOF");
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("names no mode"), "{answer}");

    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let error = bulk(closed, Direction::Download, 1)
        .await
        .expect_err("nothing listens there");
    assert!(
        format!("{error:#}").contains(&format!("connect to {closed}")),
        "{error:#}"
    );
}

/// How a fake backend breaks the stream.
#[derive(Clone, Copy, Debug)]
enum Tamper {
    /// `source`: one bit of one byte flipped.
    FlipByte,
    /// `source`: the last byte missing.
    DropLastByte,
    /// `source`: one byte too many.
    ExtraByte,
    /// `sink`: reads honestly, reports a wrong CRC.
    WrongSummary,
    /// `echo`: flips a bit of the first byte of every chunk it echoes.
    FlipEcho,
}

fn start_fake(tamper: Tamper) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake backend");
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let listener = TcpListener::from_std(listener).expect("register the listener");
    let addr = listener.local_addr().expect("the fake backend's address");
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.expect("accept");
            // The client hangs up as soon as it sees the damage; the I/O errors that
            // follow on the fake's side are expected.
            tokio::spawn(async move { fake_connection(stream, tamper).await.ok() });
        }
    });
    addr
}

async fn fake_connection(mut stream: TcpStream, tamper: Tamper) -> std::io::Result<()> {
    let mut handshake = ServerHandshake::default();
    let mut buf = vec![0_u8; 64 * 1024];
    let upgrade = loop {
        let read = stream.read(&mut buf).await?;
        if read == 0 {
            return Ok(());
        }
        if let Some(upgrade) = handshake
            .feed(&buf[..read])
            .expect("the client's request is valid")
        {
            break upgrade;
        }
    };
    stream.write_all(&upgrade.response).await?;
    match (upgrade.mode, tamper) {
        (Mode::Source(len), _) => {
            let mut bytes = cycled(0, len);
            match tamper {
                Tamper::FlipByte => bytes[usize::try_from(len / 2).expect("small")] ^= 0x04,
                Tamper::DropLastByte => drop(bytes.pop()),
                Tamper::ExtraByte => bytes.push(0),
                other => panic!("{other:?} does not apply to source"),
            }
            stream.write_all(&bytes).await?;
        }
        (Mode::Sink(len), Tamper::WrongSummary) => {
            let mut checksum = Checksum::default();
            checksum.update(&upgrade.leftover);
            while checksum.bytes() < len {
                let read = stream.read(&mut buf).await?;
                if read == 0 {
                    break;
                }
                checksum.update(&buf[..read]);
            }
            let mut summary = checksum.summary();
            summary.crc ^= 1;
            stream.write_all(&summary.to_wire()).await?;
        }
        (Mode::Echo, Tamper::FlipEcho) => loop {
            let read = stream.read(&mut buf).await?;
            if read == 0 {
                break;
            }
            buf[0] ^= 0x80;
            stream.write_all(&buf[..read]).await?;
        },
        (mode, tamper) => panic!("the fake backend has no {mode} with {tamper:?}"),
    }
    stream.shutdown().await?;
    while stream.read(&mut buf).await? > 0 {}
    Ok(())
}

/// The cycled payload stream, materialized (tests only).
fn cycled(start: u64, len: u64) -> Vec<u8> {
    Source::new(start, len).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_download_fails_verification() {
    for tamper in [Tamper::FlipByte, Tamper::DropLastByte, Tamper::ExtraByte] {
        let fake = start_fake(tamper);
        let error = bulk(fake, Direction::Download, 3 * MIB)
            .await
            .expect_err("a damaged stream must not verify");
        let message = format!("{error:#}");
        assert!(
            message.contains("verify (download"),
            "{tamper:?}: {message}"
        );
        assert!(message.contains(&fake.to_string()), "{tamper:?}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_upload_summary_fails_verification() {
    let fake = start_fake(Tamper::WrongSummary);
    let error = bulk(fake, Direction::Upload, 3 * MIB)
        .await
        .expect_err("wrong summary");
    let message = format!("{error:#}");
    assert!(message.contains("verify (upload"), "{message}");
    assert!(message.contains("as the backend reports it"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_echo_fails_every_echo_workload() {
    let fake = start_fake(Tamper::FlipEcho);

    let error = tokio::task::spawn_blocking(move || pingpong(fake, 0, 10))
        .await
        .expect("the ping-pong thread")
        .expect_err("a damaged echo must not verify");
    assert!(
        format!("{error:#}").contains("verify (round trip 0)"),
        "{error:#}"
    );

    let error = concurrent::open(fake, 5, 2)
        .await
        .expect_err("probes must fail");
    assert!(format!("{error:#}").contains("verify (probe)"), "{error:#}");

    let error = messages(fake, 4 * MIB, 0, 2)
        .await
        .expect_err("a damaged large echo must not verify");
    let message = format!("{error:#}");
    assert!(
        message.contains(&format!(
            "verify (message 0, {} bytes) with {fake}",
            4 * MIB
        )),
        "{message}"
    );
    assert!(message.contains("byte 0 of the echo"), "{message}");

    let outcome = handshakes(fake, Duration::from_millis(100), 2)
        .await
        .expect("handshakes run");
    assert_eq!(outcome.completed, 0, "{outcome:?}");
    assert!(outcome.failed > 0, "{outcome:?}");
    let failure = outcome.first_failure.expect("a failure is described");
    assert!(failure.contains("verify (echo)"), "{failure}");
}

/// The load generator's ceiling: 1 GiB each way straight to the backend, which runs on its
/// own two-thread runtime as it does in a real run. Release build:
/// `cargo test -p gateway-bench --release -- --ignored --nocapture load_generator_ceiling`.
#[test]
#[ignore = "a measurement, not a check: run it in a release build"]
fn load_generator_ceiling() {
    let (ready, addr) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("the backend's runtime");
        runtime.block_on(async {
            let listener = backend::listen(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
            ready
                .send(listener.local_addr().expect("address"))
                .expect("report the address");
            backend::accept_loop(listener).await;
        });
    });
    let backend = addr.recv().expect("the backend's address");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the client's runtime");
    let started = std::time::Instant::now();
    let expected = payload::expected(1 << 30);
    eprintln!(
        "expected summary of 1 GiB computed in {:?}: {expected}",
        started.elapsed()
    );
    for direction in Direction::ALL {
        for _ in 0..3 {
            let outcome = runtime
                .block_on(bulk(backend, direction, 1 << 30))
                .expect("bulk against the backend");
            let gbit = outcome.bytes as f64 * 8.0 / outcome.elapsed.as_secs_f64() / 1e9;
            eprintln!(
                "{:<8} {:>6.2} Gbit/s ({:?})",
                direction.label(),
                gbit,
                outcome.elapsed
            );
        }
    }
    // Client and backend share this process here: two descriptors per tunnel.
    crate::machine::raise_nofile_limit().expect("raise RLIMIT_NOFILE");
    runtime.block_on(async {
        let started = std::time::Instant::now();
        let mut tunnels = concurrent::open(backend, 9_000, 256).await.expect("open");
        eprintln!(
            "opened {} tunnels in {:?}",
            tunnels.len(),
            started.elapsed()
        );
        let outcome = tunnels.exchange(256 * 1024).await.expect("exchange");
        let gbit = outcome.bytes as f64 * 8.0 / outcome.elapsed.as_secs_f64() / 1e9;
        eprintln!("exchange {gbit:>6.2} Gbit/s ({:?})", outcome.elapsed);
        tunnels.close().await.expect("close");
    });
}
