//! A second "host" for a backend that a test can cut off: a network namespace of its own,
//! joined to the test's namespace by a veth pair with a /30 in `10.200.0.0/16`.
//!
//! ```text
//! test namespace                         gwt-1a2b3c4d
//!   gwt1a2b3c4dh  10.200.X.Y+1/30  <-->  gwt1a2b3c4dn  10.200.X.Y+2/30
//! ```
//! [`VethNamespace::bind`] opens a listener inside the namespace from a short-lived thread
//! that joins it (`setns`); the socket stays there, so the backend runs in this process.
//! [`VethNamespace::cut`] takes the test's end of the link down: the gateway's packets to the
//! backend go nowhere and nothing comes back, without a reset or an ICMP error the gateway
//! could act on. Dropping the guard deletes the link and the namespace, also on panic.

use std::{
    fs::File,
    io,
    net::{Ipv4Addr, SocketAddr},
    os::fd::AsRawFd as _,
    process::Command,
    thread,
};

use rand::Rng as _;

/// A network namespace and the veth pair into it; removed on drop.
pub struct VethNamespace {
    name: String,
    host_link: String,
    host_addr: Ipv4Addr,
    ns_addr: Ipv4Addr,
    /// Whether `ip netns add` succeeded, so drop knows what to remove.
    created: bool,
}

impl VethNamespace {
    /// Creates the namespace and the link, with a /30 no interface here uses yet.
    pub fn create() -> Self {
        let tag: u32 = rand::random();
        let (host_addr, ns_addr) = free_subnet();
        let mut guard = Self {
            name: format!("gwt-{tag:08x}"),
            host_link: format!("gwt{tag:08x}h"),
            host_addr,
            ns_addr,
            created: false,
        };
        let ns_link = format!("gwt{tag:08x}n");
        let name = guard.name.clone();
        let host_link = guard.host_link.clone();
        ip(&["netns", "add", &name]);
        guard.created = true;
        ip(&[
            "link", "add", &host_link, "type", "veth", "peer", "name", &ns_link,
        ]);
        ip(&["link", "set", &ns_link, "netns", &name]);
        ip(&["addr", "add", &format!("{host_addr}/30"), "dev", &host_link]);
        ip(&["link", "set", &host_link, "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{ns_addr}/30"),
            "dev",
            &ns_link,
        ]);
        ip(&["-n", &name, "link", "set", &ns_link, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        guard
    }

    /// The namespace's name (`ip netns exec NAME ...`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The test's end of the veth pair.
    pub fn host_link(&self) -> &str {
        &self.host_link
    }

    /// The address on the test's end of the link.
    pub fn host_addr(&self) -> Ipv4Addr {
        self.host_addr
    }

    /// The address inside the namespace, where backends listen.
    pub fn ns_addr(&self) -> Ipv4Addr {
        self.ns_addr
    }

    /// A listener on `ns_addr:0` inside the namespace. Must be called within a tokio runtime.
    pub fn bind(&self) -> tokio::net::TcpListener {
        let path = format!("/run/netns/{}", self.name);
        let addr = SocketAddr::from((self.ns_addr, 0));
        let listener = thread::spawn(move || -> io::Result<std::net::TcpListener> {
            let namespace = File::open(&path)?;
            // SAFETY: setns with a valid descriptor of a network namespace only moves this
            // thread, which ends right after creating the socket; the socket stays in the
            // namespace it was created in.
            if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let listener = std::net::TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .join()
        .expect("the thread that binds inside the namespace")
        .unwrap_or_else(|error| panic!("bind {addr} inside namespace {}: {error}", self.name));
        tokio::net::TcpListener::from_std(listener).expect("register the namespace listener")
    }

    /// Takes the test's end of the link down: from now on nothing passes either way.
    pub fn cut(&self) {
        ip(&["link", "set", &self.host_link, "down"]);
    }
}

impl Drop for VethNamespace {
    fn drop(&mut self) {
        if !self.created {
            return;
        }
        // Deleting one end of a veth pair deletes both. The namespace goes once nothing in
        // it is in use any more (a socket inside keeps it until closed).
        for args in [
            ["link", "del", self.host_link.as_str()],
            ["netns", "del", self.name.as_str()],
        ] {
            match Command::new("ip").args(args).output() {
                Ok(output) if output.status.success() => {}
                Ok(output) => eprintln!(
                    "cleanup `ip {}`: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
                Err(error) => eprintln!("cleanup `ip {}`: {error}", args.join(" ")),
            }
        }
    }
}

/// Runs `ip ARGS`, panicking with its stderr if it fails.
fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("run `ip {}`: {error}", args.join(" ")));
    assert!(
        output.status.success(),
        "`ip {}` failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// Two addresses of a /30 in `10.200.0.0/16` that no route here covers yet.
fn free_subnet() -> (Ipv4Addr, Ipv4Addr) {
    let output = Command::new("ip")
        .args(["-4", "route", "show", "table", "all"])
        .output()
        .expect("run `ip -4 route show table all`");
    let routes = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut rng = rand::rng();
    for _ in 0..64 {
        let third: u8 = rng.random();
        let base = rng.random_range(0..64u8) * 4;
        if !routes.contains(&format!("10.200.{third}.{base}/30")) {
            return (
                Ipv4Addr::new(10, 200, third, base + 1),
                Ipv4Addr::new(10, 200, third, base + 2),
            );
        }
    }
    panic!("no free /30 in 10.200.0.0/16 after 64 tries; routes:\n{routes}")
}
