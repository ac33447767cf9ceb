//! Real TLS over real loopback sockets, with certificates made for each test.

mod client;
mod fixtures;
mod server;
mod stream;
