//! Delivers the verdict program's requests for attention (`EVENTS` ring buffer) to the
//! tunnels they concern. One task for the whole gateway; a tunnel is woken only when one of
//! its flows crosses a watermark or pauses, never per segment.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use gateway_common::{counter, FlowEvent};
use tokio::{io::unix::AsyncFd, sync::Notify};

use super::EbpfDataplane;

/// How often lost events are looked for when no event arrives.
const LOST_EVENTS_CHECK: Duration = Duration::from_secs(1);

/// Which tunnel to wake for a source socket's cookie.
#[derive(Default)]
pub struct Registry {
    tunnels: Mutex<HashMap<u64, Arc<Notify>>>,
}

impl Registry {
    /// Wakes `notify` for events of either cookie until [`Registry::remove`].
    pub fn insert(&self, cookies: [u64; 2], notify: &Arc<Notify>) {
        let mut tunnels = self.tunnels.lock().unwrap_or_else(PoisonError::into_inner);
        for cookie in cookies {
            tunnels.insert(cookie, notify.clone());
        }
    }

    pub fn remove(&self, cookies: [u64; 2]) {
        let mut tunnels = self.tunnels.lock().unwrap_or_else(PoisonError::into_inner);
        for cookie in cookies {
            tunnels.remove(&cookie);
        }
    }

    fn wake(&self, cookie: u64) {
        let tunnels = self.tunnels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(notify) = tunnels.get(&cookie) {
            notify.notify_one();
        }
    }

    fn wake_all(&self) {
        let tunnels = self.tunnels.lock().unwrap_or_else(PoisonError::into_inner);
        for notify in tunnels.values() {
            notify.notify_one();
        }
    }
}

/// Reads `ring` forever, waking the tunnel each event names. When the program reports
/// lost events (ring full), every tunnel is woken so none stays paused unnoticed.
pub async fn dispatch(ebpf: Arc<EbpfDataplane>, ring: RingBuf<MapData>) {
    // SAFETY: the ring owns its fd and moves into the AsyncFd, which deregisters it before
    // dropping (and so closing) it; nothing else closes it meanwhile.
    let mut ring = match unsafe { AsyncFd::register(ring) } {
        Ok(ring) => ring,
        Err(err) => {
            tracing::error!(error = %err, "cannot poll the eBPF event ring; flow control is blind");
            return;
        }
    };
    let mut lost_seen = ebpf.raw_counter(counter::EVENTS_LOST);
    loop {
        let ready = tokio::time::timeout(LOST_EVENTS_CHECK, ring.readable_mut()).await;
        if let Ok(Ok(mut guard)) = ready {
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                if let Some(event) = parse(&item) {
                    ebpf.registry.wake(event.cookie);
                }
            }
            guard.clear_ready();
        }
        let lost = ebpf.raw_counter(counter::EVENTS_LOST);
        if lost != lost_seen {
            tracing::warn!(
                lost = lost.saturating_sub(lost_seen),
                "eBPF events lost; waking every tunnel"
            );
            lost_seen = lost;
            ebpf.registry.wake_all();
        }
    }
}

fn parse(bytes: &[u8]) -> Option<FlowEvent> {
    let bytes: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
    let cookie = u64::from_ne_bytes(bytes[..8].try_into().ok()?);
    let kind = u32::from_ne_bytes(bytes[8..12].try_into().ok()?);
    Some(FlowEvent {
        cookie,
        kind,
        reserved: 0,
    })
}
