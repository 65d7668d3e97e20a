//! The asynchronous READ/WRITE path (`ObjectStore::async_io`) on a real
//! cluster: the same results as the synchronous calls, zeros past the end,
//! `NotFound` for a missing object, argument errors reported through the
//! callback, and many operations in flight from one thread.

use std::sync::mpsc;
use std::time::Duration;

use archipelago_protocol::ErrorCode;
use archipelago_rados::{testenv, RadosStore};
use archipelago_store::{ObjectStore, StoreError};

fn store(tag: &str) -> Option<RadosStore> {
    let (conf, pool) = testenv::cluster(tag)?;
    Some(RadosStore::connect(testenv::options(conf, pool, tag)).unwrap_or_else(|e| panic!("{e}")))
}

type Rx = mpsc::Receiver<(usize, Result<u64, StoreError>)>;

fn wait(rx: &Rx) -> (usize, Result<u64, StoreError>) {
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the callback ran within 30 s")
}

#[test]
fn async_write_then_read_match_the_synchronous_calls() {
    let Some(s) = store("aio-rw") else { return };
    let aio = s.async_io().expect("RADOS has an asynchronous path");
    let (tx, rx) = mpsc::channel();
    let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
    let t = tx.clone();
    // SAFETY: `data` outlives the wait for the callback below.
    unsafe {
        aio.start_write(
            "obj",
            4096,
            data.as_ptr(),
            data.len(),
            Box::new(move |r| t.send((0, r)).unwrap()),
        )
    };
    assert_eq!(wait(&rx).1.unwrap(), 8192);
    assert_eq!(s.stat("obj").unwrap().size, 4096 + 8192);

    // A read across the end: object bytes, then zeros; the object's size.
    let mut buf = vec![0xeeu8; 16384];
    let t = tx.clone();
    // SAFETY: `buf` is not touched until the callback ran.
    unsafe {
        aio.start_read(
            "obj",
            4096,
            buf.as_mut_ptr(),
            buf.len(),
            Box::new(move |r| t.send((1, r)).unwrap()),
        )
    };
    assert_eq!(wait(&rx).1.unwrap(), 4096 + 8192);
    assert_eq!(&buf[..8192], &data[..]);
    assert!(buf[8192..].iter().all(|&b| b == 0));
    let mut sync = vec![0u8; 16384];
    s.read("obj", 4096, &mut sync).unwrap();
    assert_eq!(sync, buf);

    // A missing object is NotFound, never zeros.
    let t = tx.clone();
    // SAFETY: as above.
    unsafe {
        aio.start_read(
            "missing",
            0,
            buf.as_mut_ptr(),
            4096,
            Box::new(move |r| t.send((2, r)).unwrap()),
        )
    };
    match wait(&rx).1 {
        Err(e) => assert_eq!(e.code(), ErrorCode::NotFound, "{e}"),
        Ok(n) => panic!("read of a missing object gave {n}"),
    }

    // A bad name fails through the callback, as the synchronous call does.
    let t = tx.clone();
    // SAFETY: as above.
    unsafe {
        aio.start_write(
            "",
            0,
            data.as_ptr(),
            16,
            Box::new(move |r| t.send((3, r)).unwrap()),
        )
    };
    let (_, r) = wait(&rx);
    let sync_err = s.write("", 0, &data[..16], false).unwrap_err();
    assert_eq!(r.unwrap_err().code(), sync_err.code());
}

#[test]
fn many_operations_in_flight_from_one_thread() {
    let Some(s) = store("aio-many") else { return };
    let aio = s.async_io().expect("RADOS has an asynchronous path");
    const N: usize = 64;
    let blocks: Vec<Vec<u8>> = (0..N).map(|i| vec![i as u8 + 1; 4096]).collect();
    let (tx, rx) = mpsc::channel();
    for (i, b) in blocks.iter().enumerate() {
        let t = tx.clone();
        // SAFETY: `blocks` outlives every callback (all waited for below).
        unsafe {
            aio.start_write(
                &format!("o{}", i % 8),
                (i / 8 * 4096) as u64,
                b.as_ptr(),
                b.len(),
                Box::new(move |r| t.send((i, r)).unwrap()),
            )
        };
    }
    let mut seen = [false; N];
    for _ in 0..N {
        let (i, r) = wait(&rx);
        assert_eq!(r.unwrap(), 4096);
        assert!(!seen[i], "callback {i} ran twice");
        seen[i] = true;
    }
    let mut bufs: Vec<Vec<u8>> = (0..N).map(|_| vec![0u8; 4096]).collect();
    for (i, b) in bufs.iter_mut().enumerate() {
        let t = tx.clone();
        // SAFETY: each buffer is read only after all callbacks ran.
        unsafe {
            aio.start_read(
                &format!("o{}", i % 8),
                (i / 8 * 4096) as u64,
                b.as_mut_ptr(),
                4096,
                Box::new(move |r| t.send((i, r)).unwrap()),
            )
        };
    }
    for _ in 0..N {
        let (_, r) = wait(&rx);
        assert_eq!(r.unwrap(), 8 * 4096);
    }
    for (i, b) in bufs.iter().enumerate() {
        assert_eq!(b, &blocks[i], "block {i}");
    }
}
