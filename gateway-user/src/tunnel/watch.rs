//! Waits for hang-ups and errors on a spliced tunnel's sockets without being woken for the
//! data the kernel redirects. A private epoll set registers only `EPOLLRDHUP` (plus the
//! always-reported `EPOLLERR`/`EPOLLHUP`), edge-triggered, and that epoll fd is what tokio
//! polls. Readability (`EPOLLIN`) is never asked for, so a redirected segment wakes nobody.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
};

use tokio::io::{unix::AsyncFd, Interest};

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

struct EpollFd(OwnedFd);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Watches two sockets, identified as `0` and `1`.
pub struct HangupWatch {
    epoll: AsyncFd<EpollFd>,
    fds: [RawFd; 2],
    /// Bit `i` set: EPOLLOUT is asked for socket `i`.
    writable: std::sync::atomic::AtomicU8,
}

const BASE_EVENTS: i32 = libc::EPOLLRDHUP | libc::EPOLLET;

impl HangupWatch {
    pub fn new(first: BorrowedFd<'_>, second: BorrowedFd<'_>) -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        let epoll = EpollFd(unsafe { OwnedFd::from_raw_fd(fd) });
        for (token, sock) in [(0u64, first), (1u64, second)] {
            let mut event = libc::epoll_event {
                events: BASE_EVENTS as u32,
                u64: token,
            };
            // SAFETY: both fds are valid; `event` is a valid epoll_event.
            let rc = unsafe {
                libc::epoll_ctl(fd, libc::EPOLL_CTL_ADD, sock.as_raw_fd(), &raw mut event)
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: `epoll` owns its fd and moves into the AsyncFd, which deregisters it
        // before dropping (and so closing) it; nothing else can close it meanwhile.
        let epoll = unsafe { AsyncFd::register_with_interest(epoll, Interest::READABLE)? };
        Ok(Self {
            epoll,
            fds: [first.as_raw_fd(), second.as_raw_fd()],
            writable: std::sync::atomic::AtomicU8::new(0),
        })
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
        let mut event = libc::epoll_event {
            events: events as u32,
            u64: index as u64,
        };
        // SAFETY: both fds are valid for the life of `self`; `event` is a valid epoll_event.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epoll.as_fd().as_raw_fd(),
                libc::EPOLL_CTL_MOD,
                self.fds[index],
                &raw mut event,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        self.writable
            .store(if on { current | bit } else { current & !bit }, Relaxed);
        Ok(())
    }

    /// Waits until something happened to either socket; returns the events of both.
    pub async fn next(&self) -> io::Result<[Events; 2]> {
        loop {
            let mut guard = self.epoll.readable().await?;
            let events = self.drain()?;
            if events == [Events::default(); 2] {
                guard.clear_ready();
                continue;
            }
            return Ok(events);
        }
    }

    fn drain(&self) -> io::Result<[Events; 2]> {
        let mut out = [Events::default(); 2];
        let mut raw = [libc::epoll_event { events: 0, u64: 0 }; 4];
        loop {
            // SAFETY: `raw` is valid for `raw.len()` events; timeout 0 never blocks.
            let n =
                unsafe { libc::epoll_wait(self.epoll.as_fd().as_raw_fd(), raw.as_mut_ptr(), 4, 0) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            for event in &raw[..n as usize] {
                let bits = event.events as i32;
                let slot = &mut out[usize::from(event.u64 != 0)];
                slot.read_hangup |= bits & libc::EPOLLRDHUP != 0;
                slot.hangup |= bits & libc::EPOLLHUP != 0;
                slot.error |= bits & libc::EPOLLERR != 0;
                slot.writable |= bits & libc::EPOLLOUT != 0;
            }
            if (n as usize) < raw.len() {
                return Ok(out);
            }
        }
    }
}
