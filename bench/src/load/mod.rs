//! The client side of every workload: opens tunnels through a path (or straight to the
//! backend), moves payload and verifies it at the receiving end, and times only that.
//!
//! Each workload is its own module; the runner calls them through the re-exports here.
//! Every error names the stage that failed (connect, upgrade, transfer, verify, close) and the
//! target, so a report says where a path broke, not just that it did.
mod connect;
mod end;

pub mod bulk;
pub mod concurrent;
pub mod handshakes;
pub mod messages;
pub mod pingpong;

pub use bulk::bulk;
pub use handshakes::handshakes;
pub use messages::messages;
pub use pingpong::pingpong;

#[cfg(test)]
mod tests;
