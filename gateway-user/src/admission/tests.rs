use std::net::{IpAddr, Ipv6Addr};

use super::*;

fn limits(max: u64, per_ip: u64, rate: u32, burst: u32) -> Limits {
    Limits {
        max_connections: max,
        max_connections_per_ip: Some(per_ip).filter(|&n| n > 0),
        upgrade_rate: bucket::Rate::new(rate, burst),
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an IP address")
}

fn admission() -> Arc<Admission> {
    Arc::new(Admission::new(Metrics::default()))
}

#[test]
fn the_global_limit_counts_every_client_and_frees_on_drop() {
    let admission = admission();
    let limits = limits(2, 0, 0, 1);
    let a = admission.admit(ip("192.0.2.1"), &limits).expect("first");
    let _b = admission.admit(ip("192.0.2.2"), &limits).expect("second");
    assert_eq!(
        admission.admit(ip("192.0.2.3"), &limits).err(),
        Some(Refused::GlobalLimit)
    );
    assert_eq!(admission.open(), 2);
    drop(a);
    assert_eq!(admission.open(), 1);
    assert_eq!(
        admission.tracked(),
        1,
        "192.0.2.1 has nothing left: forgotten"
    );
    admission
        .admit(ip("192.0.2.3"), &limits)
        .expect("room again");
}

#[test]
fn the_per_client_limit_counts_an_ipv6_64_as_one_client() {
    let admission = admission();
    let limits = limits(100, 2, 0, 1);
    let _a = admission.admit(ip("2001:db8::1"), &limits).expect("first");
    let _b = admission.admit(ip("2001:db8::2"), &limits).expect("second");
    assert_eq!(
        admission.admit(ip("2001:db8::3"), &limits).err(),
        Some(Refused::PerIpLimit)
    );
    let _other = admission
        .admit(ip("2001:db8:0:1::1"), &limits)
        .expect("another /64");
    assert_eq!(admission.open(), 3, "a refusal is not counted as open");
    // Off: any number.
    let off = self::limits(100, 0, 0, 1);
    let held: Vec<Permit> = (0..10)
        .map(|_| admission.admit(ip("2001:db8::9"), &off).expect("no limit"))
        .collect();
    assert_eq!(held.len(), 10);
}

#[test]
fn upgrades_past_the_burst_wait_for_the_rate_and_the_bucket_outlives_the_connection() {
    let admission = admission();
    let limits = limits(100, 0, 1, 2);
    let permit = admission.admit(ip("192.0.2.9"), &limits).expect("admitted");
    let client = permit.client();
    admission.upgrade(client, &limits).expect("burst 1");
    admission.upgrade(client, &limits).expect("burst 2");
    let wait = admission
        .upgrade(client, &limits)
        .expect_err("the burst is spent");
    assert!(wait >= Duration::from_secs(1), "{wait:?}");
    // Closing the connection and coming back does not refill the bucket.
    drop(permit);
    assert_eq!(admission.tracked(), 1, "kept while its bucket refills");
    let again = admission.admit(ip("192.0.2.9"), &limits).expect("admitted");
    assert!(admission.upgrade(again.client(), &limits).is_err());
    // Without a rate, nothing is refused.
    let free = self::limits(100, 0, 0, 1);
    for _ in 0..100 {
        admission.upgrade(again.client(), &free).expect("no rate");
    }
}

#[test]
fn the_map_stays_bounded_under_many_clients() {
    let admission = admission();
    let limits = limits(u64::MAX, 0, 1, 1);
    // Each client connects, upgrades once (its bucket now refills for a second) and
    // leaves: only the sweep forgets them.
    let clients = 2 * MAX_REFILLING_CLIENTS + 10;
    for n in 0..clients {
        let octets = u64::try_from(n).expect("fits").to_be_bytes();
        let mut v6 = [0u8; 16];
        v6[..8].copy_from_slice(&octets);
        let permit = admission
            .admit(IpAddr::V6(Ipv6Addr::from(v6)), &limits)
            .expect("no connection limit");
        admission
            .upgrade(permit.client(), &limits)
            .expect("a first upgrade");
    }
    let tracked = admission.tracked();
    assert!(
        tracked <= 2 * MAX_REFILLING_CLIENTS + 1,
        "{tracked} clients kept"
    );
    assert_eq!(admission.open(), 0);
}
