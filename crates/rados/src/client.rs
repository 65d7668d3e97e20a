//! Safe wrappers over the FFI: a connected cluster handle, I/O contexts,
//! completions, read and write operations. Errors are positive errno
//! values; the store turns them into [`StoreError`](archipelago_store::StoreError)s.

use std::ffi::{CStr, CString};
use std::path::Path;
use std::ptr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use libc::{c_char, c_int, c_void, size_t};

use crate::ffi::*;

/// A positive errno.
pub type Errno = i32;

/// `Ok(n)` for `n >= 0`, else the errno.
fn check(ret: c_int) -> Result<c_int, Errno> {
    if ret < 0 {
        Err(-ret)
    } else {
        Ok(ret)
    }
}

/// A C string for librados. Names reaching here passed the store-name
/// grammar (no NUL); other strings (configuration, owners' hex) cannot
/// hold NUL either, so a NUL is reported as `EINVAL`.
pub fn cstr(s: &str) -> Result<CString, Errno> {
    CString::new(s).map_err(|_| libc::EINVAL)
}

/// A connected cluster handle (`rados_t`), shut down on drop after every
/// I/O context made from it (they hold an `Arc` to it).
pub struct Cluster {
    handle: rados_t,
}

// SAFETY: librados handles are thread-safe: the C API may be called on one
// `rados_t` from any number of threads at once.
unsafe impl Send for Cluster {}
// SAFETY: as above.
unsafe impl Sync for Cluster {}

impl Cluster {
    /// Creates a handle for `client.<id>` (`admin` when `None`), reads
    /// `conf` (or librados' default search: `$CEPH_CONF`,
    /// `/etc/ceph/ceph.conf`, ...), applies each `(option, value, default)`
    /// of `settings` the file left at librados' `default`, and connects.
    pub fn connect(
        conf: Option<&Path>,
        id: Option<&str>,
        settings: &[(&str, String, &str)],
    ) -> Result<Arc<Cluster>, (&'static str, Errno)> {
        let id = id.map(cstr).transpose().map_err(|e| ("client id", e))?;
        let mut handle: rados_t = ptr::null_mut();
        // SAFETY: `handle` is a valid out-pointer; `id` is NUL-terminated or null.
        check(unsafe {
            rados_create(&mut handle, id.as_ref().map_or(ptr::null(), |s| s.as_ptr()))
        })
        .map_err(|e| ("rados_create", e))?;
        // From here on `Drop` shuts the handle down, connected or not.
        let cluster = Cluster { handle };
        let path = conf
            .map(|p| cstr(&p.to_string_lossy()))
            .transpose()
            .map_err(|e| ("ceph_conf", e))?;
        // SAFETY: a created handle; `path` is NUL-terminated or null (default search).
        check(unsafe {
            rados_conf_read_file(handle, path.as_ref().map_or(ptr::null(), |p| p.as_ptr()))
        })
        .map_err(|e| ("reading the Ceph configuration", e))?;
        // Ours apply where the file left librados' default (`unset`).
        for (k, v, unset) in settings {
            let kc = cstr(k).map_err(|e| ("option", e))?;
            let mut cur = [0u8; 64];
            // SAFETY: a created handle; a NUL-terminated name; a buffer of its length.
            let got =
                unsafe { rados_conf_get(handle, kc.as_ptr(), cur.as_mut_ptr().cast(), cur.len()) };
            let cur = CStr::from_bytes_until_nul(&cur).map(|c| c.to_string_lossy().into_owned());
            let is_unset = match (got, cur) {
                (0, Ok(c)) => c.trim().parse::<f64>().ok() == unset.parse::<f64>().ok(),
                _ => true,
            };
            if !is_unset {
                continue;
            }
            let vc = cstr(v).map_err(|e| ("option", e))?;
            // SAFETY: a created, not yet connected handle; both strings NUL-terminated.
            check(unsafe { rados_conf_set(handle, kc.as_ptr(), vc.as_ptr()) })
                .map_err(|e| ("rados_conf_set", e))?;
        }
        // SAFETY: a configured handle, connected once.
        check(unsafe { rados_connect(handle) }).map_err(|e| ("connecting to the cluster", e))?;
        Ok(Arc::new(cluster))
    }

    /// The client's global id (`client.<id>` in lock listings).
    pub fn instance_id(&self) -> u64 {
        // SAFETY: a connected handle.
        unsafe { rados_get_instance_id(self.handle) }
    }

    /// The client's messenger address(es), as `rados_getaddrs` prints them.
    pub fn addrs(&self) -> Result<String, Errno> {
        let mut out: *mut c_char = ptr::null_mut();
        // SAFETY: a connected handle and a valid out-pointer.
        check(unsafe { rados_getaddrs(self.handle, &mut out) })?;
        if out.is_null() {
            return Err(libc::EIO);
        }
        // SAFETY: librados returned a NUL-terminated string it allocated
        // with malloc; we copy it and free it exactly once.
        let s = unsafe { CStr::from_ptr(out) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: as above.
        unsafe { libc::free(out.cast()) };
        Ok(s)
    }

    /// Adds `addr` to the OSD map's blocklist for `expire` (0: the
    /// cluster's default, an hour). Returns once the monitors committed it.
    pub fn blocklist_add(&self, addr: &str, expire: Duration) -> Result<(), Errno> {
        let a = cstr(addr)?;
        let secs = u32::try_from(expire.as_secs()).unwrap_or(u32::MAX);
        // SAFETY: a connected handle; librados only reads the (mutable by
        // its signature) NUL-terminated address.
        check(unsafe { rados_blocklist_add(self.handle, a.as_ptr().cast_mut(), secs) })?;
        Ok(())
    }

    /// An I/O context on `pool`, namespace `ns` ("" is the default one).
    pub fn ioctx(self: &Arc<Self>, pool: &str, ns: &str) -> Result<IoCtx, Errno> {
        let p = cstr(pool)?;
        let n = cstr(ns)?;
        let mut io: rados_ioctx_t = ptr::null_mut();
        // SAFETY: a connected handle, a NUL-terminated pool name, an out-pointer.
        check(unsafe { rados_ioctx_create(self.handle, p.as_ptr(), &mut io) })?;
        // SAFETY: a fresh context nobody else uses yet (setting the
        // namespace is not thread-safe, so it is only done here).
        unsafe { rados_ioctx_set_namespace(io, n.as_ptr()) };
        Ok(IoCtx {
            io,
            _cluster: self.clone(),
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: every I/O context holds an Arc to us, so all are gone;
        // the handle is shut down once.
        unsafe { rados_shutdown(self.handle) };
    }
}

/// An I/O context: a pool and a namespace.
pub struct IoCtx {
    io: rados_ioctx_t,
    _cluster: Arc<Cluster>,
}

// SAFETY: I/O contexts may be used from several threads at once, except to
// change their settings (namespace, locator), which only `Cluster::ioctx`
// does, before sharing.
unsafe impl Send for IoCtx {}
// SAFETY: as above.
unsafe impl Sync for IoCtx {}

impl Drop for IoCtx {
    fn drop(&mut self) {
        // SAFETY: no operation is in flight: every synchronous submission
        // waits for its completion before returning, and the callers of
        // the `start_*` functions keep the context alive until their
        // callback ran (see there); destroyed once.
        unsafe { rados_ioctx_destroy(self.io) };
    }
}

/// The callback of [`IoCtx::start_stat_and_read`]: `(size, bytes read)`.
pub type ReadDone = Box<dyn FnOnce(Result<(u64, usize), Errno>) + Send>;
/// The callback of [`IoCtx::start_write`].
pub type WriteDone = Box<dyn FnOnce(Result<(), Errno>) + Send>;

/// What runs when an operation started with [`start`] completes, given
/// the operation's return value (negative: an errno).
type Finish = Box<dyn FnOnce(c_int) + Send>;

/// The completion callback of [`start`]: takes back the finish closure,
/// releases the completion, and runs the closure (on librados' finisher
/// thread).
unsafe extern "C" fn on_finish(c: rados_completion_t, arg: *mut c_void) {
    // SAFETY: `arg` is the `Box<Finish>` `start` leaked for this callback,
    // which librados calls exactly once.
    let finish = unsafe { Box::from_raw(arg as *mut Finish) };
    // SAFETY: a complete completion; librados keeps its own reference
    // while the callback runs, so releasing ours here is allowed.
    let ret = unsafe {
        let ret = rados_aio_get_return_value(c);
        rados_aio_release(c);
        ret
    };
    finish(ret);
}

/// Submits an operation with `submit` (given the completion) without
/// waiting: `finish` runs once with its return value, on librados'
/// finisher thread, or here at once if the submission failed.
fn start(submit: impl FnOnce(rados_completion_t) -> c_int, finish: Finish) {
    let arg = Box::into_raw(Box::new(finish));
    let mut c: rados_completion_t = ptr::null_mut();
    // SAFETY: `arg` stays valid until the callback takes it back (or we do
    // below when nothing was submitted); `c` is an out-pointer.
    let ret = unsafe { rados_aio_create_completion2(arg.cast(), Some(on_finish), &mut c) };
    if ret < 0 {
        // SAFETY: no completion, so no callback: reclaim the closure.
        let finish = unsafe { Box::from_raw(arg) };
        finish(ret);
        return;
    }
    let ret = submit(c);
    if ret < 0 {
        // SAFETY: nothing was submitted, so the callback never runs:
        // release the completion and reclaim the closure, once.
        let finish = unsafe {
            rados_aio_release(c);
            Box::from_raw(arg)
        };
        finish(ret);
    }
}

/// A read operation handle that may cross to the finisher thread.
struct ReadOpHandle(rados_read_op_t);

// SAFETY: the handle is only released (once) on the thread that runs the
// completion, after librados is done with it.
unsafe impl Send for ReadOpHandle {}

impl Drop for ReadOpHandle {
    fn drop(&mut self) {
        // SAFETY: created by `rados_create_read_op`, released once, after
        // its operation completed or was never submitted.
        unsafe { rados_release_read_op(self.0) };
    }
}

/// The out-values of an asynchronous stat-and-read, on the heap so that
/// their addresses hold while the operation runs.
struct ReadOut {
    size: u64,
    mtime: libc::time_t,
    stat_rval: c_int,
    got: size_t,
    read_rval: c_int,
}

/// Set by the completion callback; waited on by the submitter.
struct Signal {
    done: Mutex<bool>,
    cv: Condvar,
}

/// Called by librados (on its finisher thread) when the operation is
/// complete: durable for writes, data in the buffer for reads.
unsafe extern "C" fn on_complete(_c: rados_completion_t, arg: *mut c_void) {
    // SAFETY: `arg` is the `Arc<Signal>` reference `Completion::new` leaked
    // for this callback, which librados calls exactly once; we take it back.
    let signal = unsafe { Arc::from_raw(arg as *const Signal) };
    let mut done = signal.done.lock().unwrap_or_else(|p| p.into_inner());
    *done = true;
    signal.cv.notify_all();
}

/// An asynchronous completion (`rados_aio_create_completion2`) whose
/// callback wakes the waiter: the hook an asynchronous submission path
/// would wake a future from. The synchronous driver submits and waits, so
/// each worker thread keeps one operation in flight and a blocker with N
/// workers keeps N.
pub struct Completion {
    c: rados_completion_t,
    signal: Arc<Signal>,
    /// Whether librados accepted an operation (and so will call back).
    submitted: bool,
}

impl Completion {
    pub fn new() -> Result<Completion, Errno> {
        let signal = Arc::new(Signal {
            done: Mutex::new(false),
            cv: Condvar::new(),
        });
        let arg = Arc::into_raw(signal.clone()) as *mut c_void;
        let mut c: rados_completion_t = ptr::null_mut();
        // SAFETY: `arg` stays valid until the callback takes it back (or
        // `Drop` does if nothing was submitted); `c` is an out-pointer.
        let ret = unsafe { rados_aio_create_completion2(arg, Some(on_complete), &mut c) };
        if let Err(e) = check(ret) {
            // SAFETY: the completion was not created: reclaim the reference.
            drop(unsafe { Arc::from_raw(arg as *const Signal) });
            return Err(e);
        }
        Ok(Completion {
            c,
            signal,
            submitted: false,
        })
    }

    pub fn raw(&self) -> rados_completion_t {
        self.c
    }

    /// Records the result of a submission call; on success waits for the
    /// completion and returns its result.
    pub fn wait(mut self, submit_ret: c_int) -> Result<c_int, Errno> {
        check(submit_ret)?;
        self.submitted = true;
        let mut done = self.signal.done.lock().unwrap_or_else(|p| p.into_inner());
        while !*done {
            done = self.signal.cv.wait(done).unwrap_or_else(|p| p.into_inner());
        }
        drop(done);
        // SAFETY: a completed completion we own.
        check(unsafe { rados_aio_get_return_value(self.c) })
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.submitted {
            // Nothing was submitted, so the callback never runs: take back
            // the reference it would have consumed.
            // SAFETY: the pointer leaked in `new`, reclaimed once.
            drop(unsafe { Arc::from_raw(Arc::as_ptr(&self.signal)) });
        }
        // SAFETY: complete (waited for) or never submitted; released once.
        unsafe { rados_aio_release(self.c) };
    }
}

/// A compound write operation, applied atomically by the OSD.
pub struct WriteOp {
    op: rados_write_op_t,
    /// Strings and buffers the operation points into until it is sent.
    keep: Vec<CString>,
}

impl WriteOp {
    pub fn new() -> WriteOp {
        // SAFETY: no preconditions; a null result would be an allocation failure.
        let op = unsafe { rados_create_write_op() };
        assert!(!op.is_null(), "rados_create_write_op failed");
        WriteOp {
            op,
            keep: Vec::new(),
        }
    }

    fn keep(&mut self, s: &str) -> *const c_char {
        let c = CString::new(s).expect("xattr names hold no NUL");
        let p = c.as_ptr();
        self.keep.push(c);
        p
    }

    /// Creates the object; `exclusive`: fail with `EEXIST` if it exists.
    pub fn create(&mut self, exclusive: bool) -> &mut Self {
        let flag = if exclusive {
            LIBRADOS_CREATE_EXCLUSIVE
        } else {
            0
        };
        // SAFETY: a live op; a null category is allowed.
        unsafe { rados_write_op_create(self.op, flag, ptr::null()) };
        self
    }

    /// Asserts the xattr `name` equals `value` (a missing xattr compares as
    /// empty); the whole operation fails with `ECANCELED` otherwise.
    pub fn cmpxattr(&mut self, name: &str, value: &[u8]) -> &mut Self {
        let n = self.keep(name);
        let v = self.keep_bytes(value);
        // SAFETY: a live op; `n` and `v` live in `self.keep` until the op is sent.
        unsafe { rados_write_op_cmpxattr(self.op, n, LIBRADOS_CMPXATTR_OP_EQ, v, value.len()) };
        self
    }

    pub fn setxattr(&mut self, name: &str, value: &[u8]) -> &mut Self {
        let n = self.keep(name);
        let v = self.keep_bytes(value);
        // SAFETY: as for `cmpxattr`.
        unsafe { rados_write_op_setxattr(self.op, n, v, value.len()) };
        self
    }

    fn keep_bytes(&mut self, value: &[u8]) -> *const c_char {
        // Xattr values here are ASCII (decimal, hex, addresses); a CString
        // keeps them alive and is never read past `value.len()`.
        let c = CString::new(value.to_vec()).expect("xattr values hold no NUL");
        let p = c.as_ptr();
        self.keep.push(c);
        p
    }

    /// Sends the operation and waits for it. `data` is a buffer given to
    /// `write_full`/`write` (it must outlive the call, which it does: we
    /// wait here).
    pub fn operate(self, io: &IoCtx, oid: &str) -> Result<(), Errno> {
        let o = cstr(oid)?;
        let c = Completion::new()?;
        // SAFETY: a live op, context and completion; every pointer the op
        // holds (in `self.keep` or borrowed by the caller) outlives the wait.
        let ret = unsafe {
            rados_aio_write_op_operate(
                self.op,
                io.io,
                c.raw(),
                o.as_ptr(),
                ptr::null_mut(),
                LIBRADOS_OPERATION_NOFLAG,
            )
        };
        c.wait(ret).map(|_| ())
    }

    /// Adds a full replace of the object's data with `data`.
    ///
    /// # Safety
    /// `data` must stay valid until `operate` returns.
    pub unsafe fn write_full(&mut self, data: &[u8]) -> &mut Self {
        // SAFETY: a live op; the caller keeps `data` alive until sent.
        unsafe { rados_write_op_write_full(self.op, data.as_ptr().cast(), data.len()) };
        self
    }
}

impl Drop for WriteOp {
    fn drop(&mut self) {
        // SAFETY: created by us, released once (after `operate` waited).
        unsafe { rados_release_write_op(self.op) };
    }
}

impl IoCtx {
    fn aio(
        &self,
        oid: &str,
        submit: impl FnOnce(rados_completion_t, *const c_char) -> c_int,
    ) -> Result<c_int, Errno> {
        let o = cstr(oid)?;
        let c = Completion::new()?;
        let ret = submit(c.raw(), o.as_ptr());
        c.wait(ret)
    }

    pub fn write(&self, oid: &str, data: &[u8], offset: u64) -> Result<(), Errno> {
        self.aio(oid, |c, o| {
            // SAFETY: live context and completion; `data` outlives the wait.
            unsafe { rados_aio_write(self.io, o, c, data.as_ptr().cast(), data.len(), offset) }
        })
        .map(|_| ())
    }

    pub fn write_full(&self, oid: &str, data: &[u8]) -> Result<(), Errno> {
        self.aio(oid, |c, o| {
            // SAFETY: as for `write`.
            unsafe { rados_aio_write_full(self.io, o, c, data.as_ptr().cast(), data.len()) }
        })
        .map(|_| ())
    }

    pub fn remove(&self, oid: &str) -> Result<(), Errno> {
        self.aio(oid, |c, o| {
            // SAFETY: live context and completion.
            unsafe { rados_aio_remove(self.io, o, c) }
        })
        .map(|_| ())
    }

    pub fn stat(&self, oid: &str) -> Result<u64, Errno> {
        let mut size = 0u64;
        let mut mtime: libc::time_t = 0;
        self.aio(oid, |c, o| {
            // SAFETY: live context and completion; the out-pointers outlive the wait.
            unsafe { rados_aio_stat(self.io, o, c, &mut size, &mut mtime) }
        })?;
        Ok(size)
    }

    /// Reads the object's size and `buf.len()` bytes from `offset` in one
    /// operation (so both describe the same version). Returns
    /// `(size, bytes read)`.
    pub fn stat_and_read(
        &self,
        oid: &str,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(u64, usize), Errno> {
        // SAFETY: no preconditions.
        let op = unsafe { rados_create_read_op() };
        assert!(!op.is_null(), "rados_create_read_op failed");
        struct Release(rados_read_op_t);
        impl Drop for Release {
            fn drop(&mut self) {
                // SAFETY: created above, released once after the wait.
                unsafe { rados_release_read_op(self.0) };
            }
        }
        let _release = Release(op);
        let (mut size, mut mtime, mut stat_rval) = (0u64, 0 as libc::time_t, 0 as c_int);
        let (mut got, mut read_rval) = (0 as size_t, 0 as c_int);
        // SAFETY: a live op; every out-pointer and `buf` outlive the wait below.
        unsafe {
            rados_read_op_stat(op, &mut size, &mut mtime, &mut stat_rval);
            if !buf.is_empty() {
                rados_read_op_read(
                    op,
                    offset,
                    buf.len(),
                    buf.as_mut_ptr().cast(),
                    &mut got,
                    &mut read_rval,
                );
            }
        }
        self.aio(oid, |c, o| {
            // SAFETY: live op, context and completion.
            unsafe { rados_aio_read_op_operate(op, self.io, c, o, LIBRADOS_OPERATION_NOFLAG) }
        })?;
        check(stat_rval)?;
        check(read_rval)?;
        Ok((size, got.min(buf.len())))
    }

    /// [`IoCtx::stat_and_read`] without waiting: `done` gets
    /// `(size, bytes read)` or the errno, once, on librados' finisher
    /// thread (or here at once if the submission failed).
    ///
    /// # Safety
    /// `buf` must be valid for writes of `len` bytes and not otherwise
    /// accessed, and this context must stay alive, until `done` runs.
    pub unsafe fn start_stat_and_read(
        &self,
        oid: &str,
        offset: u64,
        buf: *mut u8,
        len: usize,
        done: ReadDone,
    ) {
        let o = match cstr(oid) {
            Ok(o) => o,
            Err(e) => return done(Err(e)),
        };
        // SAFETY: no preconditions.
        let op = ReadOpHandle(unsafe { rados_create_read_op() });
        assert!(!op.0.is_null(), "rados_create_read_op failed");
        let mut out = Box::new(ReadOut {
            size: 0,
            mtime: 0,
            stat_rval: 0,
            got: 0,
            read_rval: 0,
        });
        // SAFETY: a live op; the out-values live in `out`, which the
        // finish closure owns until the operation completed (a Box's
        // contents do not move with it), and the caller keeps `buf` valid.
        unsafe {
            rados_read_op_stat(op.0, &mut out.size, &mut out.mtime, &mut out.stat_rval);
            if len > 0 {
                rados_read_op_read(
                    op.0,
                    offset,
                    len,
                    buf.cast(),
                    &mut out.got,
                    &mut out.read_rval,
                );
            }
        }
        let raw_op = op.0;
        let finish: Finish = Box::new(move |ret| {
            drop(op);
            let r = check(ret)
                .and_then(|_| check(out.stat_rval))
                .and_then(|_| check(out.read_rval))
                .map(|_| (out.size, out.got.min(len)));
            done(r);
        });
        start(
            |c| {
                // SAFETY: live op, context (the caller's promise) and
                // completion; `o` outlives the call, which copies it.
                unsafe {
                    rados_aio_read_op_operate(
                        raw_op,
                        self.io,
                        c,
                        o.as_ptr(),
                        LIBRADOS_OPERATION_NOFLAG,
                    )
                }
            },
            finish,
        );
    }

    /// [`IoCtx::write`] without waiting: `done` gets the result once, on
    /// librados' finisher thread (or here at once if the submission
    /// failed).
    ///
    /// # Safety
    /// `data` must be valid for reads of `len` bytes until `done` runs
    /// (librados copies it at submission, but the contract does not rely
    /// on that), and this context must stay alive until `done` runs.
    pub unsafe fn start_write(
        &self,
        oid: &str,
        data: *const u8,
        len: usize,
        offset: u64,
        done: WriteDone,
    ) {
        let o = match cstr(oid) {
            Ok(o) => o,
            Err(e) => return done(Err(e)),
        };
        start(
            |c| {
                // SAFETY: live context and completion; the caller keeps
                // `data` valid; `o` outlives the call, which copies it.
                unsafe { rados_aio_write(self.io, o.as_ptr(), c, data.cast(), len, offset) }
            },
            Box::new(move |ret| done(check(ret).map(|_| ()))),
        );
    }

    pub fn flush(&self) -> Result<(), Errno> {
        // SAFETY: a live context.
        check(unsafe { rados_aio_flush(self.io) }).map(|_| ())
    }

    /// The xattr `name` of `oid`; `None` if the object or the xattr is missing.
    pub fn getxattr(&self, oid: &str, name: &str) -> Result<Option<Vec<u8>>, Errno> {
        let (o, n) = (cstr(oid)?, cstr(name)?);
        let mut len = 4096;
        loop {
            let mut buf = vec![0u8; len];
            // SAFETY: live context, NUL-terminated strings, a buffer of `len` bytes.
            let r = unsafe {
                rados_getxattr(
                    self.io,
                    o.as_ptr(),
                    n.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    len,
                )
            };
            match check(r) {
                Ok(n) => {
                    buf.truncate(n as usize);
                    return Ok(Some(buf));
                }
                Err(libc::ENODATA) | Err(libc::ENOENT) => return Ok(None),
                Err(libc::ERANGE) if len < 1 << 20 => len *= 4,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn setxattr(&self, oid: &str, name: &str, value: &[u8]) -> Result<(), Errno> {
        let (o, n) = (cstr(oid)?, cstr(name)?);
        // SAFETY: live context, NUL-terminated strings, `value` valid for its length.
        check(unsafe {
            rados_setxattr(
                self.io,
                o.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
            )
        })
        .map(|_| ())
    }

    /// Every xattr of `oid` (empty if the object is missing).
    pub fn getxattrs(&self, oid: &str) -> Result<Vec<(String, Vec<u8>)>, Errno> {
        let o = cstr(oid)?;
        let mut iter: rados_xattrs_iter_t = ptr::null_mut();
        // SAFETY: live context, NUL-terminated name, out-pointer.
        match check(unsafe { rados_getxattrs(self.io, o.as_ptr(), &mut iter) }) {
            Ok(_) => {}
            Err(libc::ENOENT) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
        let mut out = Vec::new();
        let result = loop {
            let (mut name, mut val, mut len) = (ptr::null(), ptr::null(), 0 as size_t);
            // SAFETY: a live iterator and out-pointers.
            let ret = unsafe { rados_getxattrs_next(iter, &mut name, &mut val, &mut len) };
            if let Err(e) = check(ret) {
                break Err(e);
            }
            if name.is_null() {
                break Ok(());
            }
            // SAFETY: librados hands out a NUL-terminated name and `len`
            // bytes of value, valid until the next call on the iterator.
            let (n, v) = unsafe {
                (
                    CStr::from_ptr(name).to_string_lossy().into_owned(),
                    if len == 0 {
                        Vec::new()
                    } else {
                        std::slice::from_raw_parts(val.cast::<u8>(), len).to_vec()
                    },
                )
            };
            out.push((n, v));
        };
        // SAFETY: a live iterator, ended once.
        unsafe { rados_getxattrs_end(iter) };
        result.map(|()| out)
    }

    /// Takes the exclusive lock `name` on `oid` (creating the object if
    /// needed) for this client and `cookie`, with no expiry. `EBUSY`: held
    /// by another client or cookie; `EEXIST`: we already hold it.
    pub fn lock_exclusive(
        &self,
        oid: &str,
        name: &str,
        cookie: &str,
        desc: &str,
    ) -> Result<(), Errno> {
        let (o, n, c, d) = (cstr(oid)?, cstr(name)?, cstr(cookie)?, cstr(desc)?);
        // SAFETY: live context, NUL-terminated strings, no duration (never expires).
        check(unsafe {
            rados_lock_exclusive(
                self.io,
                o.as_ptr(),
                n.as_ptr(),
                c.as_ptr(),
                d.as_ptr(),
                ptr::null_mut(),
                0,
            )
        })
        .map(|_| ())
    }

    pub fn unlock(&self, oid: &str, name: &str, cookie: &str) -> Result<(), Errno> {
        let (o, n, c) = (cstr(oid)?, cstr(name)?, cstr(cookie)?);
        // SAFETY: live context, NUL-terminated strings.
        check(unsafe { rados_unlock(self.io, o.as_ptr(), n.as_ptr(), c.as_ptr()) }).map(|_| ())
    }

    pub fn break_lock(
        &self,
        oid: &str,
        name: &str,
        client: &str,
        cookie: &str,
    ) -> Result<(), Errno> {
        let (o, n, cl, c) = (cstr(oid)?, cstr(name)?, cstr(client)?, cstr(cookie)?);
        // SAFETY: live context, NUL-terminated strings.
        check(unsafe { rados_break_lock(self.io, o.as_ptr(), n.as_ptr(), cl.as_ptr(), c.as_ptr()) })
            .map(|_| ())
    }

    /// The holders of the lock `name` on `oid` (empty if free or the
    /// object is missing).
    pub fn list_lockers(&self, oid: &str, name: &str) -> Result<Vec<Locker>, Errno> {
        let (o, n) = (cstr(oid)?, cstr(name)?);
        let mut lens = [256usize; 4];
        loop {
            let mut bufs: Vec<Vec<u8>> = lens.iter().map(|&l| vec![0u8; l]).collect();
            let mut got = lens;
            let mut exclusive: c_int = 0;
            let [tag, clients, cookies, addrs] = &mut bufs[..] else {
                unreachable!()
            };
            let [tag_len, clients_len, cookies_len, addrs_len] = &mut got;
            // SAFETY: live context, NUL-terminated strings, four buffers
            // whose lengths are passed with them.
            let r = unsafe {
                rados_list_lockers(
                    self.io,
                    o.as_ptr(),
                    n.as_ptr(),
                    &mut exclusive,
                    tag.as_mut_ptr().cast(),
                    tag_len,
                    clients.as_mut_ptr().cast(),
                    clients_len,
                    cookies.as_mut_ptr().cast(),
                    cookies_len,
                    addrs.as_mut_ptr().cast(),
                    addrs_len,
                )
            };
            if r == -(libc::ERANGE as isize) {
                for (l, g) in lens.iter_mut().zip(got) {
                    *l = (*l).max(g) * 2;
                }
                continue;
            }
            if r == -(libc::ENOENT as isize) {
                return Ok(Vec::new());
            }
            if r < 0 {
                return Err(-r as Errno);
            }
            let split = |b: &[u8], len: usize| -> Vec<String> {
                b[..len.min(b.len())]
                    .split(|&c| c == 0)
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            };
            let (cl, co, ad) = (
                split(clients, got[1]),
                split(cookies, got[2]),
                split(addrs, got[3]),
            );
            return Ok((0..r as usize)
                .map(|i| Locker {
                    client: cl.get(i).cloned().unwrap_or_default(),
                    cookie: co.get(i).cloned().unwrap_or_default(),
                    addr: ad.get(i).cloned().unwrap_or_default(),
                })
                .collect());
        }
    }

    /// Every object name in this context's namespace.
    pub fn list(&self) -> Result<Vec<String>, Errno> {
        let mut ctx: rados_list_ctx_t = ptr::null_mut();
        // SAFETY: live context, out-pointer.
        check(unsafe { rados_nobjects_list_open(self.io, &mut ctx) })?;
        let mut out = Vec::new();
        let result = loop {
            let mut entry: *const c_char = ptr::null();
            // SAFETY: a live listing; key and namespace not wanted (null).
            match check(unsafe {
                rados_nobjects_list_next(ctx, &mut entry, ptr::null_mut(), ptr::null_mut())
            }) {
                Ok(_) => {
                    // SAFETY: a NUL-terminated name valid until the next call.
                    out.push(
                        unsafe { CStr::from_ptr(entry) }
                            .to_string_lossy()
                            .into_owned(),
                    );
                }
                Err(libc::ENOENT) => break Ok(out),
                Err(e) => break Err(e),
            }
        };
        // SAFETY: a live listing, closed once.
        unsafe { rados_nobjects_list_close(ctx) };
        result
    }
}

/// One holder of a RADOS lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locker {
    /// `client.<global id>`.
    pub client: String,
    pub cookie: String,
    /// The holder's messenger address.
    pub addr: String,
}
