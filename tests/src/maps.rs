//! A process's file descriptors and the eBPF maps it holds, read through `/proc/<pid>`.
//!
//! The gateway owns its maps (nothing is pinned), so they are found through its descriptors:
//! `/proc/<pid>/fdinfo/<fd>` of a map descriptor has `map_type:` and `map_id:` lines, and the
//! id opens the map from this process (root or `CAP_SYS_ADMIN`).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::PathBuf,
};

use aya::maps::{HashMap, Map, MapData, SockHash};
use gateway_common::FlowStats;

/// `BPF_MAP_TYPE_HASH`.
pub const MAP_TYPE_HASH: u32 = 1;
/// `BPF_MAP_TYPE_SOCKHASH`.
pub const MAP_TYPE_SOCKHASH: u32 = 18;

/// An eBPF map a process holds a descriptor to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MapRef {
    pub id: u32,
    pub map_type: u32,
}

/// The descriptors of process `pid` with what they point to (`socket:[123]`, `anon_inode:bpf-map`,
/// ...). Descriptors closed while listing are left out.
pub fn fd_targets(pid: u32) -> Vec<(u32, PathBuf)> {
    let dir = format!("/proc/{pid}/fd");
    let entries = fs::read_dir(&dir).unwrap_or_else(|error| panic!("list {dir}: {error}"));
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let fd = entry.file_name().to_str()?.parse().ok()?;
            Some((fd, fs::read_link(entry.path()).ok()?))
        })
        .collect()
}

/// Number of open descriptors of process `pid`.
pub fn fd_count(pid: u32) -> usize {
    fd_targets(pid).len()
}

/// Number of socket descriptors of process `pid`.
pub fn socket_fd_count(pid: u32) -> usize {
    fd_targets(pid)
        .iter()
        .filter(|(_, target)| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// The eBPF maps process `pid` holds descriptors to.
pub fn maps_of(pid: u32) -> BTreeSet<MapRef> {
    fd_targets(pid)
        .into_iter()
        .filter_map(|(fd, _)| {
            parse_fdinfo(&fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?)
        })
        .collect()
}

/// The map id and type in the text of a map descriptor's fdinfo; `None` for other descriptors.
pub fn parse_fdinfo(fdinfo: &str) -> Option<MapRef> {
    let field = |name: &str| {
        fdinfo
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.trim().parse().ok())
    };
    Some(MapRef {
        id: field("map_id:")?,
        map_type: field("map_type:")?,
    })
}

/// Number of keys in each hash-like map of process `pid` (sockhashes, and hashes of
/// [`FlowStats`] keyed by `u64`), by map name. Other maps (arrays, ...) are left out.
pub fn map_entries(pid: u32) -> BTreeMap<String, usize> {
    maps_of(pid).into_iter().filter_map(name_and_len).collect()
}

/// The name and number of keys of `map`, if it is a map whose keys this harness can list.
fn name_and_len(map: MapRef) -> Option<(String, usize)> {
    let id = map.id;
    let data =
        MapData::from_id(id).unwrap_or_else(|error| panic!("open eBPF map id {id}: {error}"));
    let info = data
        .info()
        .unwrap_or_else(|error| panic!("read info of eBPF map id {id}: {error}"));
    let name = String::from_utf8_lossy(info.name()).into_owned();
    if info.key_size() as usize != size_of::<u64>() {
        return None;
    }
    let keys: Result<Vec<u64>, _> = match map.map_type {
        MAP_TYPE_SOCKHASH => SockHash::<_, u64>::try_from(Map::SockHash(data))
            .unwrap_or_else(|error| panic!("eBPF map id {id} as a SockHash<u64>: {error}"))
            .keys()
            .collect(),
        MAP_TYPE_HASH if info.value_size() as usize == size_of::<FlowStats>() => {
            HashMap::<_, u64, FlowStats>::try_from(Map::HashMap(data))
                .unwrap_or_else(|error| {
                    panic!("eBPF map id {id} as a HashMap<u64, FlowStats>: {error}")
                })
                .keys()
                .collect()
        }
        _ => return None,
    };
    let keys = keys.unwrap_or_else(|error| panic!("list the keys of eBPF map id {id}: {error}"));
    // A key deleted while iterating restarts the walk; count each key once.
    Some((name, keys.into_iter().collect::<BTreeSet<_>>().len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_map_fdinfo() {
        let fdinfo = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nmap_type:\t18\n\
                      key_size:\t8\nvalue_size:\t4\nmax_entries:\t131072\nmap_flags:\t0x0\n\
                      map_extra:\t0x0\nmemlock:\t1050624\nmap_id:\t42\nfrozen:\t0\n";
        assert_eq!(
            parse_fdinfo(fdinfo),
            Some(MapRef {
                id: 42,
                map_type: MAP_TYPE_SOCKHASH
            })
        );
        assert_eq!(parse_fdinfo("pos:\t0\nflags:\t02\nmnt_id:\t15\n"), None);
    }
}
