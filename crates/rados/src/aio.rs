//! Asynchronous reads and writes (`AsyncIo`): librados completions,
//! fenced writes checked through the client they go through.

use super::*;

/// Drops a connection handle on the finisher thread of one of its
/// operations: if it is the last one (the store reconnected meanwhile),
/// dropping it there would shut the cluster handle down from its own
/// finisher thread, which waits for that thread: another thread does it.
fn release_conn(c: Arc<Conn>) {
    if Arc::strong_count(&c) == 1 {
        let _ = std::thread::Builder::new()
            .name("rados-release".into())
            .spawn(move || drop(c));
    }
}

impl AsyncIo for RadosStore {
    unsafe fn start_read(&self, name: &str, offset: u64, buf: *mut u8, len: usize, done: IoDone) {
        let c = match check_store_name(name.as_bytes())
            .map_err(StoreError::from)
            .and_then(|_| check_range(name, offset, len as u64))
            .and_then(|_| self.live(name, false))
        {
            Ok(c) => c,
            Err(e) => return done(Err(e)),
        };
        let (pool, timeout) = (self.opts.pool.clone(), self.opts.op_timeout);
        let (owned, conn) = (name.to_owned(), c.clone());
        let buf_addr = buf as usize;
        let finish = Box::new(move |r: Result<(u64, usize), Errno>| {
            let result = match r {
                Ok((size, got)) => {
                    // SAFETY: the caller keeps `buf` valid for `len` bytes
                    // until `done` runs, which is below.
                    let b = unsafe { std::slice::from_raw_parts_mut(buf_addr as *mut u8, len) };
                    b[got..].fill(0);
                    Ok(size)
                }
                Err(libc::ENOENT) => Err(StoreError::not_found(&owned)),
                Err(e) => Err(errno_error(&pool, timeout, &conn, &owned, "read", e)),
            };
            release_conn(conn);
            done(result);
        });
        // SAFETY: the caller's promise covers `buf`; `c.data` stays alive
        // until the callback, which owns a reference to its connection.
        unsafe { c.data.start_stat_and_read(name, offset, buf, len, finish) };
    }

    unsafe fn start_write(
        &self,
        name: &str,
        offset: u64,
        data: *const u8,
        len: usize,
        done: IoDone,
    ) {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.start_write_maybe_fenced(name, offset, data, len, None, done) }
    }

    /// A cache miss reads the lock object synchronously, on the calling
    /// (loop) thread: once per lock and client.
    unsafe fn start_write_fenced(
        &self,
        name: &str,
        offset: u64,
        data: *const u8,
        len: usize,
        fence: Fence<'_>,
        done: IoDone,
    ) {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.start_write_maybe_fenced(name, offset, data, len, Some(fence), done) }
    }
}

impl RadosStore {
    /// `start_write`, checking `fence` first (through the client the
    /// write goes through) if there is one.
    ///
    /// # Safety
    /// As for [`AsyncIo::start_write`].
    pub(crate) unsafe fn start_write_maybe_fenced(
        &self,
        name: &str,
        offset: u64,
        data: *const u8,
        len: usize,
        fence: Option<Fence<'_>>,
        done: IoDone,
    ) {
        if len == 0 {
            // Creating an empty object is a compound op: the synchronous
            // path does it.
            // SAFETY: nothing is read from `data` for an empty write.
            return done(
                match fence {
                    Some(f) => self.write_fenced(name, offset, &[], false, f),
                    None => self.write(name, offset, &[], false),
                }
                .map(|_| 0),
            );
        }
        let c = match check_store_name(name.as_bytes())
            .map_err(StoreError::from)
            .and_then(|_| check_range(name, offset, len as u64))
            .and_then(|_| self.live(name, false))
            .and_then(|c| match fence {
                Some(f) => self.check_fence(&c, name, f).map(|_| c),
                None => Ok(c),
            }) {
            Ok(c) => c,
            Err(e) => return done(Err(e)),
        };
        let (pool, timeout) = (self.opts.pool.clone(), self.opts.op_timeout);
        let (owned, conn) = (name.to_owned(), c.clone());
        let finish = Box::new(move |r: Result<(), Errno>| {
            let result = r
                .map(|_| len as u64)
                .map_err(|e| errno_error(&pool, timeout, &conn, &owned, "write", e));
            release_conn(conn);
            done(result);
        });
        // SAFETY: the caller's promise covers `data`; `c.data` stays alive
        // until the callback, which owns a reference to its connection.
        unsafe { c.data.start_write(name, data, len, offset, finish) };
    }
}
