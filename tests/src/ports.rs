//! [`ReservedPort`]: a port on 127.0.0.1 that stays the test's until it is dropped, for the
//! binds the gateway must make itself on a port known in advance (listeners sharing a bind,
//! which port 0 cannot express; a bind a reload adds or keeps by its address; a port written
//! into an imported file) and for a backend address where connects are refused.
//!
//! Most tests need none of this: a backend binds `127.0.0.1:0` and keeps its listener, and a
//! gateway listener on `127.0.0.1:0` reports its port in the ready line.

use std::net::{Ipv4Addr, SocketAddr};

use socket2::{Domain, Socket, Type};

/// A TCP socket bound to `127.0.0.1:0` with `SO_REUSEADDR` that never listens, held for as
/// long as the value lives. On Linux:
///
/// - nobody else gets the port: `bind(…:0)` and the local ports of outgoing connects skip
///   ports with a bound socket, and a bind of it without `SO_REUSEADDR` fails with "address
///   in use";
/// - connects to it are refused while nobody listens on it (a dead backend);
/// - the gateway can still listen on it: its listeners are tokio `TcpListener`s, which set
///   `SO_REUSEADDR`, and two sockets with it may share a port as long as at most one of them
///   listens. (Were that to change, the gateway would fail to start with "address in use",
///   loudly, not race.)
///
/// Unlike a port bound, closed and handed on, the port cannot be taken by a parallel test
/// between the moment it is picked and the moment the gateway binds it.
pub struct ReservedPort {
    _socket: Socket,
    addr: SocketAddr,
}

impl ReservedPort {
    pub fn new() -> Self {
        let socket =
            Socket::new(Domain::IPV4, Type::STREAM, None).expect("create a socket to reserve");
        socket
            .set_reuse_address(true)
            .expect("SO_REUSEADDR on the reserved port");
        socket
            .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
            .expect("bind 127.0.0.1:0 to reserve a port");
        let addr = socket
            .local_addr()
            .expect("the reserved socket's address")
            .as_socket()
            .expect("an IP address");
        Self {
            _socket: socket,
            addr,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Default for ReservedPort {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserved_port_refuses_connects_and_lets_a_reuseaddr_listener_in() {
        let reserved = ReservedPort::new();
        let refused = std::net::TcpStream::connect(reserved.addr()).expect_err("nobody listens");
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        let plain = Socket::new(Domain::IPV4, Type::STREAM, None).expect("create a socket to bind");
        assert!(
            plain.bind(&reserved.addr().into()).is_err(),
            "a bind without SO_REUSEADDR fails"
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            // As the gateway binds its listeners.
            let listener = tokio::net::TcpListener::bind(reserved.addr())
                .await
                .expect("a tokio listener binds the reserved port");
            let (connected, accepted) = tokio::join!(
                tokio::net::TcpStream::connect(reserved.addr()),
                listener.accept()
            );
            connected.expect("connect");
            accepted.expect("accept");
        });
    }
}
