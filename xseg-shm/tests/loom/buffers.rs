//! The buffer allocator: a buffer has one owner at a time, and freeing it
//! publishes its bytes to the next owner.

use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicU32;
use loom::sync::Arc;
use loom::thread;

use xseg_shm::buffers;

use crate::model;

/// One class of buffers on the heap: owner words, and bytes that only the
/// owner may touch.
struct Class {
    owners: Vec<AtomicU32>,
    bytes: Vec<UnsafeCell<u64>>,
}

impl Class {
    fn new(count: usize) -> Class {
        Class {
            owners: (0..count).map(|_| AtomicU32::new(0)).collect(),
            bytes: (0..count).map(|_| UnsafeCell::new(0)).collect(),
        }
    }

    /// The owner appends `digit` to buffer `i`'s bytes (a write that loom
    /// checks against every other access).
    fn append(&self, i: u32, digit: u64) {
        self.bytes[i as usize].with_mut(|b| {
            // SAFETY: the pointer comes from the cell and is valid; that no
            // other thread accesses it concurrently is what the model
            // checks (loom panics if one does).
            unsafe { *b = *b * 10 + digit }
        });
    }

    fn read(&self, i: u32) -> u64 {
        // SAFETY: as in `append`.
        self.bytes[i as usize].with(|b| unsafe { *b })
    }
}

/// Descriptors 1 and 2 each allocate from a class of one buffer (two
/// tries), write it and free it: never both own it, the other descriptor
/// cannot free it meanwhile, and each owner's bytes are visible to the
/// next (`release`'s Release, `grab`'s Acquire).
#[test]
fn buffers_grab_is_exclusive_and_release_publishes_the_bytes() {
    model(|| {
        let class = Arc::new(Class::new(1));
        let users: Vec<_> = [1u32, 2]
            .into_iter()
            .map(|req| {
                let class = class.clone();
                thread::spawn(move || {
                    for _ in 0..2 {
                        if let Some(i) = buffers::grab(&class.owners, 0, req) {
                            // The bytes first: `grab` alone must order
                            // them after the previous owner's.
                            class.append(i, u64::from(req));
                            let owner = &class.owners[i as usize];
                            assert!(buffers::owned_by(owner, req));
                            assert!(!buffers::release(owner, 3 - req), "not the owner");
                            assert!(buffers::release(owner, req));
                            return true;
                        }
                        thread::yield_now();
                    }
                    false
                })
            })
            .collect();
        let grabs = users
            .into_iter()
            .map(|u| u.join().unwrap())
            .filter(|&got| got)
            .count();
        assert!(grabs >= 1, "a grab fails only while the other owns it");
        assert!(buffers::is_free(&class.owners[0]));
        assert!(matches!((grabs, class.read(0)), (1, 1 | 2) | (2, 12 | 21)));
    });
}

/// Two descriptors allocate from a class of two buffers starting at the
/// same cursor: each gets one, never the same one.
#[test]
fn buffers_concurrent_grabs_get_different_buffers() {
    model(|| {
        let class = Arc::new(Class::new(2));
        let users: Vec<_> = [1u32, 2]
            .into_iter()
            .map(|req| {
                let class = class.clone();
                thread::spawn(move || {
                    let i = buffers::grab(&class.owners, 0, req).expect("two buffers for two");
                    class.append(i, u64::from(req));
                    i
                })
            })
            .collect();
        let got: Vec<u32> = users.into_iter().map(|u| u.join().unwrap()).collect();
        assert_ne!(got[0], got[1]);
        for (req, &i) in (1u32..).zip(&got) {
            assert_eq!(buffers::owner(&class.owners[i as usize]), Some(req));
            assert_eq!(class.read(i), u64::from(req));
        }
    });
}
