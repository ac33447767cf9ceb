//! A listening socket the bench binds and a proxy inherits.
//!
//! Binding port 0 ourselves and handing the socket down means no port is chosen, released
//! and raced for, and a client may connect before the proxy even runs: the connection waits
//! in the kernel's accept queue.

use std::{
    io,
    net::{Ipv4Addr, SocketAddr},
    os::fd::{AsRawFd as _, RawFd},
};

use anyhow::Context as _;
use socket2::{Domain, Protocol, Socket, Type};

/// Accept queue length; nginx and HAProxy are configured to the same, so their own
/// `listen()` on the inherited socket keeps it (net.core.somaxconn caps it anyway).
pub const BACKLOG: i32 = 4096;

/// A bound, listening, non-blocking TCP socket on loopback, close-on-exec in this process.
pub struct InheritedListener {
    socket: Socket,
    addr: SocketAddr,
}

impl InheritedListener {
    /// Binds `127.0.0.1:0` with `SO_REUSEADDR` and listens.
    pub fn bind() -> anyhow::Result<Self> {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
            .context("create the listening socket")?;
        socket.set_reuse_address(true).context("set SO_REUSEADDR")?;
        socket
            .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
            .context("bind 127.0.0.1:0")?;
        socket.listen(BACKLOG).context("listen")?;
        // nginx leaves an inherited socket's flags as they are (in a binary upgrade the old
        // master made it non-blocking). A blocking one stalls a worker: woken for a
        // connection another worker took, it blocks in accept() until the next one arrives,
        // and its open connections wait with it.
        socket
            .set_nonblocking(true)
            .context("make the listening socket non-blocking")?;
        let addr = socket
            .local_addr()
            .context("local address of the listening socket")?
            .as_socket()
            .context("the listening socket has an IP address")?;
        Ok(Self { socket, addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The descriptor number the child will find the socket under.
    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Makes the child that `command` spawns inherit the socket under [`Self::fd`].
    ///
    /// The socket stays close-on-exec here and is cleared only in the forked child, so
    /// children spawned meanwhile by other threads do not inherit it. The socket must stay
    /// open until the child is spawned; drop it then, so only the proxy holds it.
    pub fn pass_to(&self, command: &mut tokio::process::Command) {
        let fd = self.fd();
        let clear_cloexec = move || {
            // SAFETY: fcntl is async-signal-safe, and `fd` is open in the forked child: it
            // is a copy of this process's descriptors, and close-on-exec only acts at exec.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        };
        // SAFETY: the closure only calls fcntl, which is async-signal-safe, and allocates
        // nothing, as code between fork and exec must.
        unsafe { command.pre_exec(clear_cloexec) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_is_non_blocking_and_close_on_exec_here() {
        let listener = InheritedListener::bind().expect("bind");
        // SAFETY: fcntl on a descriptor `listener` owns; F_GETFL/F_GETFD only read flags.
        let (status, fd_flags) = unsafe {
            (
                libc::fcntl(listener.fd(), libc::F_GETFL),
                libc::fcntl(listener.fd(), libc::F_GETFD),
            )
        };
        assert_ne!(status & libc::O_NONBLOCK, 0, "blocking listening socket");
        assert_ne!(
            fd_flags & libc::FD_CLOEXEC,
            0,
            "inheritable in the bench itself"
        );
        assert_eq!(listener.addr().ip(), Ipv4Addr::LOCALHOST);
        assert_ne!(listener.addr().port(), 0);
    }
}
