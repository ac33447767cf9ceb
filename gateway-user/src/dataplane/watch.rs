//! Waits for hang-ups and errors on spliced tunnels' sockets without being woken for the
//! data the kernel redirects. Every socket is registered for `EPOLLRDHUP` only (plus the
//! always-reported `EPOLLERR`/`EPOLLHUP`), edge-triggered, and for `EPOLLOUT` only while its
//! tunnel asks for it ([`HangupWatch::want_writable`]). Readability (`EPOLLIN`) is never
//! asked for, so a redirected segment wakes nobody.
//!
//! All spliced tunnels of a dataplane share one epoll set ([`HangupReactor`]), which tokio
//! polls through a single `AsyncFd`; a dispatcher task drains it and wakes the tunnel each
//! event belongs to. A spliced tunnel thus costs the gateway two descriptors, its sockets.
//! The dataplane owns the set ([`LazyReactor`], a field of `EbpfDataplane`) and hands it to
//! each tunnel's [`HangupWatch`].

use std::{
    io,
    marker::PhantomData,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
    sync::{
        atomic::{AtomicBool, AtomicU8, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
};

use tokio::{
    io::{unix::AsyncFd, Interest},
    sync::Notify,
};

/// What happened to one socket of the pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Events {
    /// The peer sent FIN (`EPOLLRDHUP`).
    pub read_hangup: bool,
    /// Both directions are shut or the socket is closed (`EPOLLHUP`).
    pub hangup: bool,
    /// A pending socket error, typically a reset (`EPOLLERR`).
    pub error: bool,
    /// The send queue has room again (`EPOLLOUT`), reported only while asked for with
    /// [`HangupWatch::want_writable`].
    pub writable: bool,
}

const BASE_EVENTS: i32 = libc::EPOLLRDHUP | libc::EPOLLET;
/// Most events taken from the epoll set by one `epoll_wait`.
const BATCH: usize = 256;

/// The epoll data of a registered socket: which registration (slot, and the slot's
/// generation when it was taken) and which of its two sockets. An event fetched before its
/// tunnel deregistered carries an old generation, so it never reaches a tunnel that reused
/// the slot (a stale `EPOLLERR` would otherwise reset an unrelated tunnel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Token {
    generation: u32,
    /// Below [`MAX_SLOTS`].
    slot: u32,
    /// 0 or 1.
    index: usize,
}

/// Slots fit in 31 bits of the token.
const MAX_SLOTS: u32 = 1 << 31;

impl Token {
    fn encode(self) -> u64 {
        (u64::from(self.generation) << 32) | (u64::from(self.slot) << 1) | (self.index as u64 & 1)
    }

    fn decode(data: u64) -> Self {
        Self {
            generation: (data >> 32) as u32,
            slot: (data as u32) >> 1,
            index: (data & 1) as usize,
        }
    }
}

/// Event bits of both sockets in one byte, so that a tunnel takes them in one swap: four
/// per socket, socket `i` at bit `4 * i`.
const READ_HANGUP: u8 = 1;
const HANGUP: u8 = 2;
const ERROR: u8 = 4;
const WRITABLE: u8 = 8;

fn pack(epoll_events: u32, index: usize) -> u8 {
    let bits = epoll_events as i32;
    let mut packed = 0;
    for (epoll, ours) in [
        (libc::EPOLLRDHUP, READ_HANGUP),
        (libc::EPOLLHUP, HANGUP),
        (libc::EPOLLERR, ERROR),
        (libc::EPOLLOUT, WRITABLE),
    ] {
        if bits & epoll != 0 {
            packed |= ours;
        }
    }
    packed << (4 * (index & 1))
}

fn unpack(packed: u8) -> [Events; 2] {
    std::array::from_fn(|index| {
        let bits = packed >> (4 * index);
        Events {
            read_hangup: bits & READ_HANGUP != 0,
            hangup: bits & HANGUP != 0,
            error: bits & ERROR != 0,
            writable: bits & WRITABLE != 0,
        }
    })
}

/// What the dispatcher hands one tunnel: events not yet taken, and its wake-up.
#[derive(Default)]
struct Slot {
    pending: AtomicU8,
    notify: Notify,
}

/// The registered tunnels, by slot.
#[derive(Default)]
struct Slab {
    entries: Vec<Entry>,
    free: Vec<u32>,
}

struct Entry {
    /// Bumped each time the slot is freed.
    generation: u32,
    slot: Option<Arc<Slot>>,
}

impl Slab {
    /// Takes a free slot for `slot`; returns its number and generation.
    fn insert(&mut self, slot: Arc<Slot>) -> io::Result<(u32, u32)> {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let index = u32::try_from(self.entries.len())
                    .ok()
                    .filter(|&i| i < MAX_SLOTS)
                    .ok_or_else(|| io::Error::other("too many tunnels in the hang-up watch"))?;
                self.entries.push(Entry {
                    generation: 0,
                    slot: None,
                });
                index
            }
        };
        let entry = &mut self.entries[index as usize];
        entry.slot = Some(slot);
        Ok((index, entry.generation))
    }

    fn get(&self, token: Token) -> Option<&Arc<Slot>> {
        self.entries
            .get(token.slot as usize)
            .filter(|entry| entry.generation == token.generation)
            .and_then(|entry| entry.slot.as_ref())
    }

    fn remove(&mut self, index: u32) {
        if let Some(entry) = self.entries.get_mut(index as usize) {
            if entry.slot.take().is_some() {
                entry.generation = entry.generation.wrapping_add(1);
                self.free.push(index);
            }
        }
    }
}

struct EpollFd(OwnedFd);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// The epoll set every spliced tunnel's sockets are in, and the registered tunnels its
/// dispatcher task wakes.
pub struct HangupReactor {
    epoll: AsyncFd<EpollFd>,
    slab: Mutex<Slab>,
    /// The dispatcher has stopped (its runtime shut down, or `epoll_wait` failed): no event
    /// will be delivered any more, so waiting tunnels get an error and new tunnels a new
    /// reactor.
    stopped: AtomicBool,
}

/// A dataplane's reactor, made by its first spliced tunnel (in that tunnel's tokio runtime)
/// and kept from then on; made again if its dispatcher has stopped, which happens when the
/// runtime it was made in shuts down (each kernel test runs its own runtime).
#[derive(Default)]
pub struct LazyReactor {
    current: Mutex<Option<Arc<HangupReactor>>>,
}

impl LazyReactor {
    /// The reactor; made on first use, or after its dispatcher stopped, in the current
    /// tokio runtime. The lock is taken once per tunnel, when it starts being watched.
    pub fn get(&self) -> io::Result<Arc<HangupReactor>> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(reactor) = current.as_ref() {
            if !reactor.stopped.load(Ordering::Acquire) {
                return Ok(reactor.clone());
            }
        }
        let reactor = HangupReactor::new()?;
        *current = Some(reactor.clone());
        Ok(reactor)
    }
}

impl HangupReactor {
    /// A new epoll set with its dispatcher task; needs a tokio runtime.
    fn new() -> io::Result<Arc<Self>> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        let epoll = EpollFd(unsafe { OwnedFd::from_raw_fd(fd) });
        // SAFETY: `epoll` owns its fd and moves into the AsyncFd, which deregisters it
        // before dropping (and so closing) it; nothing else can close it meanwhile.
        let epoll = unsafe { AsyncFd::register_with_interest(epoll, Interest::READABLE)? };
        let reactor = Arc::new(Self {
            epoll,
            slab: Mutex::default(),
            stopped: AtomicBool::new(false),
        });
        tokio::spawn(dispatch(StopOnDrop(reactor.clone())));
        Ok(reactor)
    }

    fn lock(&self) -> MutexGuard<'_, Slab> {
        // Every critical section leaves the slab consistent, so a poisoned lock is usable.
        self.slab.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ctl(&self, op: i32, fd: RawFd, events: i32, token: Token) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: events as u32,
            u64: token.encode(),
        };
        // SAFETY: the epoll fd lives as long as `self`; `fd` is a socket its watch borrows;
        // `event` is a valid epoll_event (ignored by EPOLL_CTL_DEL).
        let rc = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &raw mut event) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Takes up to `raw.len()` ready events without blocking.
    fn wait(&self, raw: &mut [libc::epoll_event]) -> io::Result<usize> {
        let max = i32::try_from(raw.len()).unwrap_or(i32::MAX);
        loop {
            // SAFETY: `raw` is valid for `max` events; timeout 0 never blocks.
            let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), raw.as_mut_ptr(), max, 0) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// Adds each event's bits to its tunnel and collects the tunnels to wake in `woken`
    /// (woken by the caller, after the lock is released).
    fn deliver(&self, events: &[libc::epoll_event], woken: &mut Vec<Arc<Slot>>) {
        let slab = self.lock();
        for event in events {
            let (bits, token) = (event.events, Token::decode(event.u64));
            let Some(slot) = slab.get(token) else {
                continue; // deregistered since epoll reported it
            };
            slot.pending
                .fetch_or(pack(bits, token.index), Ordering::Release);
            if !woken.last().is_some_and(|last| Arc::ptr_eq(last, slot)) {
                woken.push(slot.clone());
            }
        }
    }
}

/// Marks the reactor stopped when the dispatcher ends, however it ends (also when its
/// runtime drops it unpolled), and wakes every tunnel so none waits for nothing.
struct StopOnDrop(Arc<HangupReactor>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::Release);
        let slots: Vec<Arc<Slot>> = self
            .0
            .lock()
            .entries
            .iter()
            .filter_map(|entry| entry.slot.clone())
            .collect();
        for slot in slots {
            slot.notify.notify_one();
        }
    }
}

/// Waits for the epoll set to have events, and hands them out, batch by batch.
async fn dispatch(reactor: StopOnDrop) {
    let reactor = &reactor.0;
    let mut raw = vec![libc::epoll_event { events: 0, u64: 0 }; BATCH];
    let mut woken = Vec::new();
    loop {
        let mut ready = match reactor.epoll.readable().await {
            Ok(ready) => ready,
            Err(err) => {
                tracing::error!(error = %err, "cannot poll the hang-up epoll set; spliced tunnels fail");
                return;
            }
        };
        let n = match reactor.wait(&mut raw) {
            Ok(n) => n,
            Err(err) => {
                tracing::error!(error = %err, "epoll_wait failed; spliced tunnels fail");
                return;
            }
        };
        reactor.deliver(&raw[..n], &mut woken);
        for slot in woken.drain(..) {
            slot.notify.notify_one();
        }
        // A full batch may have left events behind: go round again without clearing (the
        // next `readable` returns at once, and yields when the task's budget runs out).
        // Clearing only drops readiness seen so far: an event after `epoll_wait` re-arms it.
        if n < BATCH {
            ready.clear_ready();
        }
    }
}

/// Watches two sockets, identified as `0` and `1`, in a shared epoll set until dropped.
/// The sockets are borrowed for as long: they must stay open until they have left the set.
pub struct HangupWatch<'a> {
    reactor: Arc<HangupReactor>,
    slot: Arc<Slot>,
    slot_index: u32,
    generation: u32,
    fds: [RawFd; 2],
    /// Socket `i` is in the epoll set (and must leave it on drop).
    registered: [bool; 2],
    /// Bit `i` set: EPOLLOUT is asked for socket `i`.
    writable: AtomicU8,
    _socks: PhantomData<BorrowedFd<'a>>,
}

impl<'a> HangupWatch<'a> {
    /// Adds both sockets to `reactor`'s epoll set.
    pub fn new(
        reactor: Arc<HangupReactor>,
        first: BorrowedFd<'a>,
        second: BorrowedFd<'a>,
    ) -> io::Result<Self> {
        let slot = Arc::new(Slot::default());
        let (slot_index, generation) = reactor.lock().insert(slot.clone())?;
        // Built first so that a failure below deregisters and frees the slot on drop.
        let mut watch = Self {
            reactor,
            slot,
            slot_index,
            generation,
            fds: [first.as_raw_fd(), second.as_raw_fd()],
            registered: [false; 2],
            writable: AtomicU8::new(0),
            _socks: PhantomData,
        };
        for index in 0..2 {
            watch.reactor.ctl(
                libc::EPOLL_CTL_ADD,
                watch.fds[index],
                BASE_EVENTS,
                watch.token(index),
            )?;
            watch.registered[index] = true;
        }
        Ok(watch)
    }

    fn token(&self, index: usize) -> Token {
        Token {
            generation: self.generation,
            slot: self.slot_index,
            index,
        }
    }

    /// Also report `EPOLLOUT` for socket `index` (edge-triggered: once each time its send
    /// queue frees room), or stop doing so.
    pub fn want_writable(&self, index: usize, on: bool) -> io::Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        let bit = 1u8 << index;
        let current = self.writable.load(Relaxed);
        if (current & bit != 0) == on {
            return Ok(());
        }
        let events = BASE_EVENTS | if on { libc::EPOLLOUT } else { 0 };
        self.reactor.ctl(
            libc::EPOLL_CTL_MOD,
            self.fds[index],
            events,
            self.token(index),
        )?;
        self.writable
            .store(if on { current | bit } else { current & !bit }, Relaxed);
        Ok(())
    }

    /// Waits until something happened to either socket; returns the events of both.
    pub async fn next(&self) -> io::Result<[Events; 2]> {
        loop {
            let pending = self.slot.pending.swap(0, Ordering::Acquire);
            if pending != 0 {
                return Ok(unpack(pending));
            }
            if self.reactor.stopped.load(Ordering::Acquire) {
                return Err(io::Error::other("the hang-up dispatcher has stopped"));
            }
            // An event delivered since the swap left a permit: this returns at once.
            self.slot.notify.notified().await;
        }
    }
}

impl Drop for HangupWatch<'_> {
    fn drop(&mut self) {
        for (index, fd) in self.fds.into_iter().enumerate() {
            if self.registered[index] {
                if let Err(err) = self
                    .reactor
                    .ctl(libc::EPOLL_CTL_DEL, fd, 0, self.token(index))
                {
                    tracing::debug!(error = %err, "could not take a socket out of the epoll set");
                }
            }
        }
        // After the sockets left the set; an event fetched earlier finds a new generation.
        self.reactor.lock().remove(self.slot_index);
    }
}

#[cfg(test)]
mod tests;
