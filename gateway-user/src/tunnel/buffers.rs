//! The relay's copy buffers, lent for one read and its write from a small free list per
//! thread: a relayed tunnel that waits for bytes holds none. Tunnels start on the relay
//! (the lazy splice), so with a buffer per direction each one waiting held 128 KiB until
//! its promotion, and every short tunnel allocated and zeroed that much.

use std::{
    cell::RefCell,
    ops::{Deref, DerefMut},
};

/// Bytes per buffer: one read's worth.
pub const BUFFER_BYTES: usize = 64 * 1024;
/// Most idle buffers a thread keeps (one per direction of a few tunnels copying at once on
/// it); more go back to the allocator.
const KEPT_PER_THREAD: usize = 8;

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer on loan; it goes back to the free list of the thread that drops it.
pub struct Buffer(Option<Box<[u8]>>);

impl Buffer {
    /// A buffer from this thread's free list, or a new one.
    pub fn lend() -> Self {
        let kept = FREE.with(|free| free.borrow_mut().pop());
        Self(Some(
            kept.unwrap_or_else(|| vec![0; BUFFER_BYTES].into_boxed_slice()),
        ))
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(buf) = self.0.take() {
            // During thread teardown the list may be gone; the buffer is then just freed.
            let _ = FREE.try_with(|free| {
                let mut free = free.borrow_mut();
                if free.len() < KEPT_PER_THREAD {
                    free.push(buf);
                }
            });
        }
    }
}

impl Deref for Buffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.0.as_deref().expect("lent until dropped")
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.0.as_deref_mut().expect("lent until dropped")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_goes_back_to_the_thread_and_is_lent_again() {
        let first = Buffer::lend();
        let at = first.as_ptr();
        assert_eq!(first.len(), BUFFER_BYTES);
        drop(first);
        let again = Buffer::lend();
        assert_eq!(again.as_ptr(), at, "the same allocation, not a new one");
    }

    #[test]
    fn a_thread_keeps_only_a_few() {
        let lent: Vec<_> = (0..KEPT_PER_THREAD + 3).map(|_| Buffer::lend()).collect();
        drop(lent);
        assert_eq!(FREE.with(|free| free.borrow().len()), KEPT_PER_THREAD);
    }
}
