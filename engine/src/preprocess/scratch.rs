//! Per-thread reusable buffers for the image path's per-request arrays (the decoded pixels,
//! the resized pixels, the input tensor): a worker takes one, the request fills it, and it
//! comes back for the next request. A fresh multi-hundred-kilobyte allocation per request
//! costs page faults each time the allocator hands the memory back to the kernel and maps it
//! again (the size of glibc's dynamic mmap and trim thresholds); a reused one costs nothing.
//!
//! Policy: each thread keeps at most [`KEPT`] buffers of each element type, each of at most
//! [`MAX_KEPT_BYTES`]; a larger one is freed as before. A taken buffer has the asked length
//! and arbitrary (initialised) contents: every user writes all of it before reading it.

use std::cell::RefCell;

/// Buffers of one element type a thread keeps.
pub const KEPT: usize = 4;
/// Largest buffer a thread keeps, bytes (a 2048x2048 RGB decode is 12 MiB).
pub const MAX_KEPT_BYTES: usize = 16 << 20;

thread_local! {
    static BYTES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static FLOATS: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

fn take<T: Copy + Default>(pool: &RefCell<Vec<Vec<T>>>, len: usize) -> Vec<T> {
    let mut pool = pool.borrow_mut();
    // The smallest kept buffer that holds `len`, else the largest (it grows once).
    let pick = pool
        .iter()
        .enumerate()
        .filter(|(_, v)| v.capacity() >= len)
        .min_by_key(|(_, v)| v.capacity())
        .or_else(|| pool.iter().enumerate().max_by_key(|(_, v)| v.capacity()))
        .map(|(i, _)| i);
    let mut v = pick.map(|i| pool.swap_remove(i)).unwrap_or_default();
    if v.len() < len {
        v.resize(len, T::default());
    } else {
        v.truncate(len);
    }
    v
}

fn give<T>(pool: &RefCell<Vec<Vec<T>>>, v: Vec<T>) {
    if v.capacity() == 0 || v.capacity() * std::mem::size_of::<T>() > MAX_KEPT_BYTES {
        return;
    }
    let mut pool = pool.borrow_mut();
    if pool.len() < KEPT {
        pool.push(v);
    } else if let Some(small) = pool.iter_mut().min_by_key(|p| p.capacity())
        && small.capacity() < v.capacity()
    {
        *small = v;
    }
}

/// A byte buffer of `len` (contents arbitrary), from this thread's kept ones when it can.
pub fn bytes(len: usize) -> Vec<u8> {
    BYTES.with(|p| take(p, len))
}

/// Hands a byte buffer back for this thread's next [`bytes()`].
pub fn give_bytes(v: Vec<u8>) {
    BYTES.with(|p| give(p, v));
}

/// An f32 buffer of `len` (contents arbitrary), from this thread's kept ones when it can.
pub fn floats(len: usize) -> Vec<f32> {
    FLOATS.with(|p| take(p, len))
}

/// Hands an f32 buffer back for this thread's next [`floats`].
pub fn give_floats(v: Vec<f32>) {
    FLOATS.with(|p| give(p, v));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_reused_with_the_asked_length() {
        let mut v = bytes(1000);
        assert_eq!(v.len(), 1000);
        v[999] = 7;
        let at = v.as_ptr();
        give_bytes(v);
        let w = bytes(600);
        assert_eq!((w.len(), w.as_ptr()), (600, at), "the same allocation");
        give_bytes(w);
        let x = bytes(2000);
        assert_eq!(x.len(), 2000, "grows when asked for more");
    }

    #[test]
    fn at_most_kept_buffers_and_none_over_the_size_cap() {
        std::thread::spawn(|| {
            for n in 1..=KEPT + 3 {
                give_floats(vec![0.0; n * 10]);
            }
            FLOATS.with(|p| {
                let p = p.borrow();
                assert_eq!(p.len(), KEPT);
                // The largest ones are kept.
                assert!(p.iter().all(|v| v.capacity() >= 40));
            });
            give_bytes(vec![0; MAX_KEPT_BYTES + 1]);
            BYTES.with(|p| assert!(p.borrow().is_empty()));
        })
        .join()
        .expect("thread");
    }
}
