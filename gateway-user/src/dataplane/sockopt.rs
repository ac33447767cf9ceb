//! Thin, safe wrappers over the socket options and ioctls the splice needs.

use std::{io, mem, os::fd::AsRawFd};

/// `SO_COOKIE` (include/uapi/asm-generic/socket.h); not exported by `libc`.
const SO_COOKIE: libc::c_int = 57;

/// The kernel's socket cookie: the key the eBPF program sees through
/// `bpf_get_socket_cookie`. Stable for the socket's lifetime and never reused while it lives.
pub fn socket_cookie(sock: &impl AsRawFd) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` and `len` are valid for writes of the sizes we pass.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(cookie)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Byte counters of one TCP socket, read from `TCP_INFO` and the queue ioctls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpCounters {
    /// Payload bytes received in sequence (`tcpi_bytes_received`); a received FIN adds 1.
    pub bytes_received: u64,
    /// Payload bytes the peer acknowledged (`tcpi_bytes_acked`).
    pub bytes_acked: u64,
    /// Bytes in the send queue, sent or not, not yet acknowledged (`SIOCOUTQ`).
    pub send_queue: u64,
    /// Bytes received but not yet read from the socket (`SIOCINQ`).
    pub recv_queue: u64,
    /// The peer's FIN has arrived (`tcpi_state` past `ESTABLISHED` on the receiving side).
    pub fin_received: bool,
}

impl TcpCounters {
    /// Every byte ever written into this socket's send queue, by userspace or by the
    /// kernel's redirect worker: acknowledged plus still queued.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_acked + self.send_queue
    }

    /// Bytes received and already taken off the receive queue (by a reader or the verdict).
    /// Once the FIN has arrived this counts one more for it, read or not: `SIOCINQ` leaves
    /// it out, `bytes_received` counts it.
    pub fn bytes_consumed(&self) -> u64 {
        self.bytes_received.saturating_sub(self.recv_queue)
    }
}

/// How often [`tcp_counters_settled`] tries for a consistent reading.
const SETTLE_ATTEMPTS: usize = 1000;

/// [`TcpCounters`] that are consistent with each other, for baselines.
///
/// `TCP_INFO` and the two queue ioctls are separate syscalls. A segment arriving between
/// them moves `bytes_received` and the receive queue together, an ACK moves
/// `bytes_acked` and the send queue; read apart, their sums are off by what moved. So
/// the queues are read before and after `TCP_INFO`, until both readings agree.
pub fn tcp_counters_settled(sock: &impl AsRawFd) -> io::Result<TcpCounters> {
    let fd = sock.as_raw_fd();
    for _ in 0..SETTLE_ATTEMPTS {
        let before = (
            queue_len(fd, libc::TIOCOUTQ)?,
            queue_len(fd, libc::FIONREAD)?,
        );
        let counters = tcp_counters(sock)?;
        if before == (counters.send_queue, counters.recv_queue) {
            return Ok(counters);
        }
    }
    Err(io::Error::other(
        "TCP counters kept moving; no consistent reading",
    ))
}

/// Reads [`TcpCounters`] for a connected TCP socket. `TCP_INFO` is read first, so with
/// traffic flowing [`TcpCounters::bytes_written`] is a lower bound (an ACK between the
/// reads is missed, a write is seen). Use [`tcp_counters_settled`] for baselines.
pub fn tcp_counters(sock: &impl AsRawFd) -> io::Result<TcpCounters> {
    let fd = sock.as_raw_fd();
    // SAFETY: all-zero is a valid `tcp_info`.
    let mut info: libc::tcp_info = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for writes of the sizes we pass.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // `include/net/tcp_states.h`; the libc crate has them for Hurd only.
    const TIME_WAIT: u8 = 6;
    const CLOSE_WAIT: u8 = 8;
    const LAST_ACK: u8 = 9;
    const CLOSING: u8 = 11;
    let fin_received = matches!(info.tcpi_state, TIME_WAIT | CLOSE_WAIT | LAST_ACK | CLOSING);
    Ok(TcpCounters {
        fin_received,
        bytes_received: info.tcpi_bytes_received,
        bytes_acked: info.tcpi_bytes_acked,
        send_queue: queue_len(fd, libc::TIOCOUTQ)?,
        recv_queue: queue_len(fd, libc::FIONREAD)?,
    })
}

fn queue_len(fd: libc::c_int, request: libc::Ioctl) -> io::Result<u64> {
    let mut value: libc::c_int = 0;
    // SAFETY: both ioctls write one `int` through the pointer.
    let rc = unsafe { libc::ioctl(fd, request, &raw mut value) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::try_from(value).unwrap_or(0))
}

/// The pending error of a socket (`SO_ERROR`), cleared by reading it.
pub fn take_socket_error(sock: &impl AsRawFd) -> io::Result<Option<io::Error>> {
    let err = int_option(sock, libc::SOL_SOCKET, libc::SO_ERROR)?;
    Ok((err != 0).then(|| io::Error::from_raw_os_error(err)))
}

/// Reads an `int` socket option.
pub fn int_option(
    sock: &impl AsRawFd,
    level: libc::c_int,
    option: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes of the sizes we pass.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            level,
            option,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets an `int` socket option.
pub fn set_int_option(
    sock: &impl AsRawFd,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a valid int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            option,
            (&raw const value).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets `TCP_WINDOW_CLAMP`, the largest receive window the socket may advertise. The kernel
/// never retracts a window it already advertised.
pub fn set_window_clamp(sock: &impl AsRawFd, clamp: u32) -> io::Result<()> {
    let value = libc::c_int::try_from(clamp).unwrap_or(libc::c_int::MAX);
    set_int_option(sock, libc::IPPROTO_TCP, libc::TCP_WINDOW_CLAMP, value)
}

/// The socket's `TCP_WINDOW_CLAMP`.
pub fn window_clamp(sock: &impl AsRawFd) -> io::Result<u32> {
    let value = int_option(sock, libc::IPPROTO_TCP, libc::TCP_WINDOW_CLAMP)?;
    Ok(u32::try_from(value).unwrap_or(0))
}

/// Sets the send buffer: `SO_SNDBUFFORCE` (ignores `wmem_max`, needs CAP_NET_ADMIN), else
/// `SO_SNDBUF` (capped by `net.core.wmem_max`).
pub fn set_send_buffer(sock: &impl AsRawFd, bytes: u32) -> io::Result<()> {
    set_buffer(sock, bytes, [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF])
}

/// Sets the receive buffer, and with it turns off its autotuning: `SO_RCVBUFFORCE`
/// (ignores `rmem_max`, needs CAP_NET_ADMIN), else `SO_RCVBUF` (capped by
/// `net.core.rmem_max`). The kernel doubles the value for its bookkeeping.
pub fn set_receive_buffer(sock: &impl AsRawFd, bytes: u32) -> io::Result<()> {
    set_buffer(sock, bytes, [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF])
}

/// The receive buffer the kernel granted (`SO_RCVBUF`: twice what was asked, or the
/// doubled `net.core.rmem_max` when that was lower).
pub fn receive_buffer(sock: &impl AsRawFd) -> io::Result<u32> {
    let value = int_option(sock, libc::SOL_SOCKET, libc::SO_RCVBUF)?;
    Ok(u32::try_from(value).unwrap_or(0))
}

fn set_buffer(sock: &impl AsRawFd, bytes: u32, options: [libc::c_int; 2]) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let [forced, capped] = options;
    set_int_option(sock, libc::SOL_SOCKET, forced, value)
        .or_else(|_| set_int_option(sock, libc::SOL_SOCKET, capped, value))
}

/// `SO_LINGER {on, 0}`: the next `close` sends a reset instead of a FIN. Used to pass a
/// reset on one side of a tunnel on to the other.
pub fn set_linger_zero(sock: &impl AsRawFd) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` is a valid struct of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes the coming close of both sockets a reset (`SO_LINGER {on, 0}`): when one side of a
/// tunnel fails, the other learns it at once instead of seeing a clean EOF or hanging.
pub fn reset_both(client: &impl AsRawFd, backend: &impl AsRawFd) {
    for result in [set_linger_zero(client), set_linger_zero(backend)] {
        if let Err(err) = result {
            tracing::debug!(error = %err, "could not arm a reset");
        }
    }
}

/// Shuts both sockets down both ways: both peers get a FIN now, whatever is still queued
/// (how a limit such as the idle timeout ends a tunnel).
pub fn shutdown_both(client: &impl AsRawFd, backend: &impl AsRawFd) {
    for sock in [client.as_raw_fd(), backend.as_raw_fd()] {
        // SAFETY: plain syscall on fds the caller owns; errors (already closed) are
        // harmless here.
        unsafe { libc::shutdown(sock, libc::SHUT_RDWR) };
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read, Write},
        net::{Shutdown, TcpListener, TcpStream},
    };

    use super::*;

    #[test]
    fn counters_follow_the_bytes() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut a = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut b, _) = listener.accept().expect("accept");
        assert_ne!(
            socket_cookie(&a).expect("cookie a"),
            socket_cookie(&b).expect("cookie b")
        );

        // The connecting side's `tcpi_bytes_acked` also counts its SYN, so only
        // differences are meaningful (the splice only ever uses differences).
        let before = tcp_counters(&a).expect("counters a").bytes_written();
        a.write_all(&[7u8; 1000]).expect("write");
        let mut got = [0u8; 1000];
        b.read_exact(&mut got).expect("read");
        let after = tcp_counters(&a).expect("counters a").bytes_written();
        assert_eq!(after - before, 1000);

        a.shutdown(Shutdown::Write).expect("shutdown");
        assert_eq!(b.read(&mut got).expect("read eof"), 0);

        let rx = tcp_counters(&b).expect("counters b");
        // 1000 payload bytes plus 1 for the FIN.
        assert_eq!(rx.bytes_received, 1001);
        assert_eq!(rx.recv_queue, 0);
        assert_eq!(rx.bytes_consumed(), 1001);
        assert!(take_socket_error(&a).expect("so_error").is_none());
    }

    #[test]
    fn send_buffer_is_forced_past_wmem_max() {
        if std::env::var("GATEWAY_TEST_UNPRIVILEGED").is_ok_and(|v| v == "1") {
            eprintln!("SKIPPED (GATEWAY_TEST_UNPRIVILEGED=1): SO_SNDBUFFORCE needs CAP_NET_ADMIN");
            return;
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let sock = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let wanted: u32 = 8 * 1024 * 1024;
        set_send_buffer(&sock, wanted).expect("set the send buffer");
        let mut value: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are valid for writes of the sizes we pass.
        let rc = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&raw mut value).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        // The kernel doubles the value to leave room for its bookkeeping. As root,
        // SO_SNDBUFFORCE goes past net.core.wmem_max (212992 by default).
        assert_eq!(value as u64, 2 * u64::from(wanted));
    }
}
