//! Which binds a new generation keeps, adds and removes, sans-io.

use crate::snapshot::BindId;

/// Which binds a reload keeps, adds and removes, by [`BindId`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BindDiff {
    /// In the new configuration's order.
    pub kept: Vec<BindId>,
    /// In the new configuration's order.
    pub added: Vec<BindId>,
    /// In the running order.
    pub removed: Vec<BindId>,
}

impl BindDiff {
    pub fn new(running: &[BindId], wanted: &[BindId]) -> Self {
        let (kept, added) = wanted.iter().cloned().partition(|id| running.contains(id));
        let removed = running
            .iter()
            .filter(|id| !wanted.contains(id))
            .cloned()
            .collect();
        Self {
            kept,
            added,
            removed,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config;

    fn id(addr: &str, listener: Option<&str>) -> BindId {
        BindId {
            addr: addr.parse().expect("addr"),
            listener: listener.map(Arc::from),
        }
    }

    #[test]
    fn binds_are_kept_added_and_removed_by_configured_address() {
        let running = [id("127.0.0.1:8080", None), id("127.0.0.1:8443", None)];
        let wanted = [id("127.0.0.1:9000", None), id("127.0.0.1:8080", None)];
        assert_eq!(
            BindDiff::new(&running, &wanted),
            BindDiff {
                kept: vec![id("127.0.0.1:8080", None)],
                added: vec![id("127.0.0.1:9000", None)],
                removed: vec![id("127.0.0.1:8443", None)],
            }
        );
        // Same binds in another order: nothing to do.
        let reordered = [running[1].clone(), running[0].clone()];
        let diff = BindDiff::new(&running, &reordered);
        assert_eq!(diff.kept, reordered);
        assert!(diff.added.is_empty() && diff.removed.is_empty());
    }

    #[test]
    fn port_zero_binds_are_told_apart_by_their_listener() {
        let running = [id("127.0.0.1:0", Some("a")), id("127.0.0.1:0", Some("b"))];
        let wanted = [id("127.0.0.1:0", Some("c")), id("127.0.0.1:0", Some("a"))];
        assert_eq!(
            BindDiff::new(&running, &wanted),
            BindDiff {
                kept: vec![id("127.0.0.1:0", Some("a"))],
                added: vec![id("127.0.0.1:0", Some("c"))],
                removed: vec![id("127.0.0.1:0", Some("b"))],
            }
        );
    }

    /// A fixed-port bind and a port-0 one.
    const TWO_BINDS: &str = "[global]\nadmin = \"127.0.0.1:9090\"\n\
        [[listeners]]\nname = \"fixed\"\nbind = \"127.0.0.1:18080\"\nprotocol = \"http\"\n\
        [[listeners]]\nname = \"eph\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n\
        [[backend_pools]]\nname = \"p\"\naddresses = [\"10.0.0.1\"]\n\
        [[backend_settings]]\nname = \"s\"\nport = 80\nprotocol = \"http\"\n\
        [[rules]]\nname = \"r1\"\nkind = \"basic\"\nlistener = \"fixed\"\n\
        backend_pool = \"p\"\nbackend_settings = \"s\"\n\
        [[rules]]\nname = \"r2\"\nkind = \"basic\"\nlistener = \"eph\"\n\
        backend_pool = \"p\"\nbackend_settings = \"s\"\n";

    fn two_binds() -> config::Config {
        config::from_toml(TWO_BINDS, "t.toml", std::path::Path::new(".")).expect("valid")
    }

    #[test]
    fn bind_ids_follow_the_configuration() {
        let config = two_binds();
        let ids: Vec<BindId> = config.binds.iter().map(BindId::of).collect();
        assert_eq!(
            ids,
            [id("127.0.0.1:18080", None), id("127.0.0.1:0", Some("eph"))]
        );
    }
}
