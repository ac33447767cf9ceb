//! Non-blocking socket I/O on spliced sockets, done with direct syscalls: tokio's
//! `try_read` may answer from its cached readiness without asking the kernel, and several
//! steps of the splice depend on what the kernel does during the call itself.

use std::{io, net::TcpStream, os::fd::AsRawFd};

/// Makes the kernel run the verdict on segments queued before the socket was spliced.
pub(super) fn kick(sock: &TcpStream) -> io::Result<()> {
    let mut byte = [0u8; 1];
    recv_nonblocking(sock, &mut byte, libc::MSG_PEEK).map(drop)
}

/// Runs a non-blocking socket syscall: `Ok(None)` when it would block, retried when
/// interrupted.
fn nonblocking(mut syscall: impl FnMut() -> isize) -> io::Result<Option<usize>> {
    loop {
        let n = syscall();
        if let Ok(n) = usize::try_from(n) {
            return Ok(Some(n));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::WouldBlock => return Ok(None),
            io::ErrorKind::Interrupted => continue,
            _ => return Err(err),
        }
    }
}

/// `recv` with `MSG_DONTWAIT | flags`. A direct syscall, not tokio's `try_read`, which may
/// answer from its cached readiness without asking the kernel.
pub(super) fn recv_nonblocking(
    sock: &impl AsRawFd,
    buf: &mut [u8],
    flags: libc::c_int,
) -> io::Result<Option<usize>> {
    // SAFETY: `buf` is valid for writes of its length.
    nonblocking(|| unsafe {
        libc::recv(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | flags,
        )
    })
}

/// `send` with `MSG_DONTWAIT | MSG_NOSIGNAL`.
pub(super) fn send_nonblocking(sock: &TcpStream, buf: &[u8]) -> io::Result<Option<usize>> {
    // SAFETY: `buf` is valid for reads of its length.
    nonblocking(|| unsafe {
        libc::send(
            sock.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    })
}

/// Reads everything queued on `sock` into `into`, until a read comes back short: only then
/// is it certain that no skb in the receive queue is partly consumed. That matters because
/// the verdict is handed whole skbs (`tcp_read_skb` ignores how much of the head skb was
/// already read), so a partly read skb would have its read bytes redirected a second time.
///
/// Returns `false`, with the queue possibly still holding a partly read skb, if more than
/// `limit` bytes kept arriving: such a tunnel must not be spliced.
pub fn take_queued(sock: &impl AsRawFd, into: &mut Vec<u8>, limit: usize) -> io::Result<bool> {
    let mut buf = [0u8; 64 * 1024];
    let mut taken = 0;
    loop {
        let Some(n) = recv_nonblocking(sock, &mut buf, 0)? else {
            return Ok(true);
        };
        into.extend_from_slice(&buf[..n]);
        taken += n;
        if n < buf.len() {
            return Ok(true);
        }
        if taken > limit {
            return Ok(false);
        }
    }
}
