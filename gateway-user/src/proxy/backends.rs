//! The backend pool: round-robin over the configured addresses.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
};

#[derive(Debug)]
pub struct Backends {
    addrs: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl Backends {
    /// `addrs` must not be empty (the CLI requires at least one `--backend`).
    pub fn new(addrs: Vec<SocketAddr>) -> Self {
        assert!(
            !addrs.is_empty(),
            "a backend pool needs at least one address"
        );
        Self {
            addrs,
            next: AtomicUsize::new(0),
        }
    }

    /// The next backend, round-robin.
    pub fn pick(&self) -> SocketAddr {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.addrs[i % self.addrs.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_visits_every_backend_in_turn() {
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:2".parse().expect("addr");
        let pool = Backends::new(vec![a, b]);
        assert_eq!([pool.pick(), pool.pick(), pool.pick()], [a, b, a]);
    }
}
