//! The part of librados' C API (`rados/librados.h`, Ceph 16.2) this driver
//! uses, declared by hand: a few dozen functions, no bindgen.
//!
//! Every function returns a negative errno on failure unless noted.

#![allow(non_camel_case_types)]

use libc::{c_char, c_int, c_void, size_t, ssize_t, time_t, timeval};

pub type rados_t = *mut c_void;
pub type rados_ioctx_t = *mut c_void;
pub type rados_completion_t = *mut c_void;
pub type rados_write_op_t = *mut c_void;
pub type rados_read_op_t = *mut c_void;
pub type rados_list_ctx_t = *mut c_void;
pub type rados_xattrs_iter_t = *mut c_void;
pub type rados_callback_t = Option<unsafe extern "C" fn(cb: rados_completion_t, arg: *mut c_void)>;

/// `rados_write_op_create`: fail with `EEXIST` if the object exists.
pub const LIBRADOS_CREATE_EXCLUSIVE: c_int = 1;
/// `rados_write_op_cmpxattr`: equal.
pub const LIBRADOS_CMPXATTR_OP_EQ: u8 = 1;
/// `rados_*_op_operate` flags: none.
pub const LIBRADOS_OPERATION_NOFLAG: c_int = 0;

#[link(name = "rados")]
extern "C" {
    pub fn rados_create(cluster: *mut rados_t, id: *const c_char) -> c_int;
    pub fn rados_conf_read_file(cluster: rados_t, path: *const c_char) -> c_int;
    pub fn rados_conf_set(cluster: rados_t, option: *const c_char, value: *const c_char) -> c_int;
    pub fn rados_conf_get(
        cluster: rados_t,
        option: *const c_char,
        buf: *mut c_char,
        len: size_t,
    ) -> c_int;
    pub fn rados_connect(cluster: rados_t) -> c_int;
    pub fn rados_shutdown(cluster: rados_t);
    pub fn rados_get_instance_id(cluster: rados_t) -> u64;
    /// `*addrs` is allocated by librados; freed with `free`.
    pub fn rados_getaddrs(cluster: rados_t, addrs: *mut *mut c_char) -> c_int;
    pub fn rados_blocklist_add(
        cluster: rados_t,
        client_address: *mut c_char,
        expire_seconds: u32,
    ) -> c_int;

    pub fn rados_ioctx_create(
        cluster: rados_t,
        pool_name: *const c_char,
        ioctx: *mut rados_ioctx_t,
    ) -> c_int;
    pub fn rados_ioctx_destroy(io: rados_ioctx_t);
    pub fn rados_ioctx_set_namespace(io: rados_ioctx_t, nspace: *const c_char);

    pub fn rados_aio_create_completion2(
        cb_arg: *mut c_void,
        cb_complete: rados_callback_t,
        pc: *mut rados_completion_t,
    ) -> c_int;
    pub fn rados_aio_get_return_value(c: rados_completion_t) -> c_int;
    pub fn rados_aio_release(c: rados_completion_t);
    pub fn rados_aio_write(
        io: rados_ioctx_t,
        oid: *const c_char,
        completion: rados_completion_t,
        buf: *const c_char,
        len: size_t,
        off: u64,
    ) -> c_int;
    pub fn rados_aio_write_full(
        io: rados_ioctx_t,
        oid: *const c_char,
        completion: rados_completion_t,
        buf: *const c_char,
        len: size_t,
    ) -> c_int;
    pub fn rados_aio_remove(
        io: rados_ioctx_t,
        oid: *const c_char,
        completion: rados_completion_t,
    ) -> c_int;
    pub fn rados_aio_stat(
        io: rados_ioctx_t,
        oid: *const c_char,
        completion: rados_completion_t,
        psize: *mut u64,
        pmtime: *mut time_t,
    ) -> c_int;
    pub fn rados_aio_flush(io: rados_ioctx_t) -> c_int;

    pub fn rados_create_write_op() -> rados_write_op_t;
    pub fn rados_release_write_op(op: rados_write_op_t);
    pub fn rados_write_op_create(op: rados_write_op_t, exclusive: c_int, category: *const c_char);
    pub fn rados_write_op_write_full(op: rados_write_op_t, buffer: *const c_char, len: size_t);
    pub fn rados_write_op_cmpxattr(
        op: rados_write_op_t,
        name: *const c_char,
        comparison_operator: u8,
        value: *const c_char,
        value_len: size_t,
    );
    pub fn rados_write_op_setxattr(
        op: rados_write_op_t,
        name: *const c_char,
        value: *const c_char,
        value_len: size_t,
    );
    pub fn rados_aio_write_op_operate(
        op: rados_write_op_t,
        io: rados_ioctx_t,
        completion: rados_completion_t,
        oid: *const c_char,
        mtime: *mut time_t,
        flags: c_int,
    ) -> c_int;

    pub fn rados_create_read_op() -> rados_read_op_t;
    pub fn rados_release_read_op(op: rados_read_op_t);
    pub fn rados_read_op_stat(
        op: rados_read_op_t,
        psize: *mut u64,
        pmtime: *mut time_t,
        prval: *mut c_int,
    );
    pub fn rados_read_op_read(
        op: rados_read_op_t,
        offset: u64,
        len: size_t,
        buffer: *mut c_char,
        bytes_read: *mut size_t,
        prval: *mut c_int,
    );
    pub fn rados_aio_read_op_operate(
        op: rados_read_op_t,
        io: rados_ioctx_t,
        completion: rados_completion_t,
        oid: *const c_char,
        flags: c_int,
    ) -> c_int;

    pub fn rados_getxattr(
        io: rados_ioctx_t,
        oid: *const c_char,
        name: *const c_char,
        buf: *mut c_char,
        len: size_t,
    ) -> c_int;
    pub fn rados_setxattr(
        io: rados_ioctx_t,
        oid: *const c_char,
        name: *const c_char,
        buf: *const c_char,
        len: size_t,
    ) -> c_int;
    pub fn rados_getxattrs(
        io: rados_ioctx_t,
        oid: *const c_char,
        iter: *mut rados_xattrs_iter_t,
    ) -> c_int;
    /// At the end `*name` is null.
    pub fn rados_getxattrs_next(
        iter: rados_xattrs_iter_t,
        name: *mut *const c_char,
        val: *mut *const c_char,
        len: *mut size_t,
    ) -> c_int;
    pub fn rados_getxattrs_end(iter: rados_xattrs_iter_t);

    pub fn rados_lock_exclusive(
        io: rados_ioctx_t,
        oid: *const c_char,
        name: *const c_char,
        cookie: *const c_char,
        desc: *const c_char,
        duration: *mut timeval,
        flags: u8,
    ) -> c_int;
    pub fn rados_unlock(
        io: rados_ioctx_t,
        oid: *const c_char,
        name: *const c_char,
        cookie: *const c_char,
    ) -> c_int;
    pub fn rados_break_lock(
        io: rados_ioctx_t,
        oid: *const c_char,
        name: *const c_char,
        client: *const c_char,
        cookie: *const c_char,
    ) -> c_int;
    /// Returns the number of lockers; `-ERANGE` with the needed lengths
    /// stored if a buffer is too small. Each buffer holds NUL-terminated
    /// strings back to back.
    #[allow(clippy::too_many_arguments)]
    pub fn rados_list_lockers(
        io: rados_ioctx_t,
        oid: *const c_char,
        name: *const c_char,
        exclusive: *mut c_int,
        tag: *mut c_char,
        tag_len: *mut size_t,
        clients: *mut c_char,
        clients_len: *mut size_t,
        cookies: *mut c_char,
        cookies_len: *mut size_t,
        addrs: *mut c_char,
        addrs_len: *mut size_t,
    ) -> ssize_t;

    pub fn rados_nobjects_list_open(io: rados_ioctx_t, ctx: *mut rados_list_ctx_t) -> c_int;
    /// `-ENOENT` at the end.
    pub fn rados_nobjects_list_next(
        ctx: rados_list_ctx_t,
        entry: *mut *const c_char,
        key: *mut *const c_char,
        nspace: *mut *const c_char,
    ) -> c_int;
    pub fn rados_nobjects_list_close(ctx: rados_list_ctx_t);
}
