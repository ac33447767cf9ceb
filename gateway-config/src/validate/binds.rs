//! Listeners → binds: each listener has exactly one rule; listeners sharing a bind (one
//! socket) share its protocol, at most one of them goes without `host_names` (the
//! catch-all), and no host name is claimed twice; binds must not overlap each other or the
//! admin listener.

use std::{collections::HashMap, net::SocketAddr};

use super::{listeners::Listener, rules::Rules, Checker};
use crate::{
    document::Element,
    model::{Bind, HostMatch, HostPattern, Site},
    raw::RawListener,
};

pub fn group(
    elements: &[Element<RawListener>],
    listeners: &[Option<Listener>],
    rules: &Rules,
    admin: Option<SocketAddr>,
    c: &mut Checker<'_>,
) -> Vec<Bind> {
    let rule_of = one_rule_each(elements, rules, c);

    // Port 0 asks the kernel for a free port: such listeners never share a socket.
    let mut groups: Vec<(SocketAddr, Vec<(usize, &Listener)>)> = Vec::new();
    for (i, listener) in listeners.iter().enumerate() {
        let Some(listener) = listener else { continue };
        let shared = listener.bind.port() != 0;
        match groups
            .iter_mut()
            .find(|(addr, _)| shared && *addr == listener.bind)
        {
            Some((_, members)) => members.push((i, listener)),
            None => groups.push((listener.bind, vec![(i, listener)])),
        }
    }
    for (addr, members) in &groups {
        check_sharing(*addr, members, c);
    }
    check_overlaps(&groups, admin, c);

    let mut binds = Vec::new();
    for (addr, members) in groups {
        let Some((_, first)) = members.first() else {
            continue;
        };
        let protocol = first.protocol;
        let mut sites: Vec<(usize, Site)> = members
            .iter()
            .filter_map(|&(i, listener)| {
                let rule = rules.checked.get(*rule_of.get(&i)?)?.as_ref()?;
                Some((
                    i,
                    Site {
                        listener: listener.name.clone(),
                        hosts: listener.hosts.clone(),
                        tls: listener.tls.clone(),
                        rule: rule.clone(),
                    },
                ))
            })
            .collect();
        // Catch-all last; then by priority (unset after set), then file order.
        sites.sort_by_key(|(i, site)| {
            (
                site.hosts == HostMatch::Any,
                site.rule.priority.is_none(),
                site.rule.priority,
                *i,
            )
        });
        binds.push(Bind {
            addr,
            protocol,
            sites: sites.into_iter().map(|(_, site)| site).collect(),
        });
    }
    binds
}

/// Each listener is used by exactly one rule (Azure's model); returns listener → rule.
fn one_rule_each(
    elements: &[Element<RawListener>],
    rules: &Rules,
    c: &mut Checker<'_>,
) -> HashMap<usize, usize> {
    let mut rule_of: HashMap<usize, usize> = HashMap::new();
    let mut first_user: HashMap<usize, String> = HashMap::new();
    for (rule_index, origin, listener) in &rules.uses {
        match first_user.get(listener) {
            Some(first) => c.error(
                origin,
                "listener",
                format!(
                    "listener {:?} is already used by {first}; a listener has exactly one rule",
                    elements[*listener].name.as_deref().unwrap_or_default()
                ),
                "give this rule its own listener (listeners may share a bind if they have \
                 different host_names), or use a path_based rule for several destinations",
            ),
            None => {
                first_user.insert(*listener, origin.key.clone());
                rule_of.insert(*listener, *rule_index);
            }
        }
    }
    if rules.all_read {
        for (i, element) in elements.iter().enumerate() {
            // A listener whose name an earlier one has is reported as a duplicate only.
            let duplicate = elements[..i]
                .iter()
                .any(|e| e.name.is_some() && e.name == element.name);
            if element.raw.is_some() && !duplicate && !first_user.contains_key(&i) {
                let name = element.name.as_deref().unwrap_or_default();
                c.error(
                    &element.origin,
                    "",
                    format!("no rule uses listener {name:?}"),
                    format!(
                        "add a [[rules]] entry with listener = {name:?}, or remove the listener"
                    ),
                );
            }
        }
    }
    rule_of
}

fn check_sharing(addr: SocketAddr, members: &[(usize, &Listener)], c: &mut Checker<'_>) {
    let Some((_, first)) = members.first() else {
        return;
    };
    let mut catch_all: Option<&Listener> = None;
    let mut hosts: HashMap<&HostPattern, &Listener> = HashMap::new();
    for &(_, listener) in members {
        if listener.protocol != first.protocol {
            c.error(
                &listener.origin,
                "protocol",
                format!(
                    "listener {:?} is {} but {:?} on the same bind {addr} is {}",
                    listener.name,
                    listener.protocol.as_str(),
                    first.name,
                    first.protocol.as_str()
                ),
                "listeners sharing a bind share its protocol: use the same protocol, or \
                 another port",
            );
        }
        match &listener.hosts {
            HostMatch::Any => match catch_all {
                Some(other) => c.error(
                    &listener.origin,
                    "host_names",
                    format!(
                        "listener {:?} has no host_names, and neither has {:?} on the same bind \
                         {addr}; only one listener per bind may take every host",
                        listener.name, other.name
                    ),
                    "give this listener host_names, or its own bind",
                ),
                None => catch_all = Some(listener),
            },
            HostMatch::Names(patterns) => {
                for (j, pattern) in patterns.iter().enumerate() {
                    if let Some(other) = hosts.insert(pattern, listener) {
                        if other.name != listener.name {
                            c.error(
                                &listener.origin,
                                &format!("host_names[{j}]"),
                                format!(
                                    "host name {pattern} is also claimed by listener {:?} on \
                                     the same bind {addr}",
                                    other.name
                                ),
                                "each host name on a bind belongs to one listener: remove it \
                                 from one of them",
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Two binds on one port where one is a wildcard address (`0.0.0.0`, `[::]`) cannot both be
/// bound; neither can a listener on the admin address.
fn check_overlaps(
    groups: &[(SocketAddr, Vec<(usize, &Listener)>)],
    admin: Option<SocketAddr>,
    c: &mut Checker<'_>,
) {
    let overlap = |a: SocketAddr, b: SocketAddr| {
        a.port() != 0
            && a.port() == b.port()
            && a.ip() != b.ip()
            && ((a.ip().is_unspecified() && (a.is_ipv6() || b.is_ipv4()))
                || (b.ip().is_unspecified() && (b.is_ipv6() || a.is_ipv4())))
    };
    for (i, (addr, members)) in groups.iter().enumerate() {
        let Some((_, listener)) = members.first() else {
            continue;
        };
        if let Some((other, _)) = groups[..i].iter().find(|(other, _)| overlap(*addr, *other)) {
            c.error(
                &listener.origin,
                "bind",
                format!(
                    "bind {addr} overlaps bind {other} of another listener: both cannot be bound"
                ),
                format!(
                    "use the same bind address for both, or another port than {}",
                    addr.port()
                ),
            );
        }
        if let Some(admin) =
            admin.filter(|admin| *admin == *addr && addr.port() != 0 || overlap(*admin, *addr))
        {
            c.error(
                &listener.origin,
                "bind",
                format!("bind {addr} collides with the admin address {admin}"),
                "give the admin listener ([global] admin) or this listener another port",
            );
        }
    }
}
