//! One librados client (`Conn`): opening it, its fenced state, errno
//! conversion, and the store's choice of client for an operation
//! (reconnecting after a fence).

use super::*;

/// One librados client: the cluster handle and its two contexts.
pub(crate) struct Conn {
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) data: IoCtx,
    pub(crate) locks: IoCtx,
    /// `client.<global id>`, as lock listings name holders.
    pub(crate) client: String,
    /// This client's address (as `rados_getaddrs` gives it).
    pub(crate) addr: String,
    /// When an operation first failed with `EBLOCKLISTED`.
    pub(crate) fenced: Mutex<Option<Instant>>,
    /// Per lock, the token this client last read from (or wrote to) the
    /// lock object: fenced writes through this client are checked against
    /// it. Dies with the client: a reconnected client reads again.
    pub(crate) fences: Mutex<HashMap<String, u64>>,
}

/// The addresses in a `rados_getaddrs` or lock-listing string:
/// `[v2:IP:PORT/NONCE,v1:...]`, `v2:IP:PORT/NONCE` or `IP:PORT/NONCE`,
/// each reduced to `IP:PORT/NONCE` (what the blocklist matches; one per
/// distinct address).
pub(crate) fn split_addrs(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in s
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
    {
        let a = part.trim();
        let a = a
            .strip_prefix("v2:")
            .or_else(|| a.strip_prefix("v1:"))
            .or_else(|| a.strip_prefix("any:"))
            .unwrap_or(a);
        if !a.is_empty() && !out.iter().any(|x| x == a) {
            out.push(a.to_owned());
        }
    }
    out
}

impl Conn {
    pub(crate) fn open(opts: &RadosOptions) -> Result<Conn, StoreError> {
        let secs = opts.op_timeout.as_secs().max(1).to_string();
        // librados' defaults: no timeout for operations, 300 s to connect.
        let settings = [
            ("rados_osd_op_timeout", secs.clone(), "0"),
            ("rados_mon_op_timeout", secs.clone(), "0"),
            ("client_mount_timeout", secs, "300"),
        ];
        let fail = |what: &str, errno: Errno| StoreError::Io {
            name: opts.pool.clone(),
            op: "connect",
            source: io::Error::new(
                io::Error::from_raw_os_error(errno).kind(),
                format!(
                    "{what}: {} (ceph_conf {}, client {})",
                    io::Error::from_raw_os_error(errno),
                    opts.ceph_conf
                        .as_ref()
                        .map_or("from $CEPH_CONF or /etc/ceph".to_owned(), |p| p
                            .display()
                            .to_string()),
                    opts.client_id.as_deref().unwrap_or("admin"),
                ),
            ),
        };
        let cluster = Cluster::connect(
            opts.ceph_conf.as_deref(),
            opts.client_id.as_deref(),
            &settings,
        )
        .map_err(|(what, e)| fail(what, e))?;
        let pool = |e: Errno| fail(&format!("opening pool {}", opts.pool), e);
        let data = cluster.ioctx(&opts.pool, &opts.namespace).map_err(pool)?;
        let locks = cluster
            .ioctx(&opts.pool, &locks_namespace(&opts.namespace))
            .map_err(pool)?;
        let addr = cluster.addrs().map_err(|e| fail("rados_getaddrs", e))?;
        let client = format!("client.{}", cluster.instance_id());
        log::info!("connected to pool {} as {client} ({addr})", opts.pool);
        let conn = Conn {
            cluster,
            data,
            locks,
            client,
            addr,
            fenced: Mutex::new(None),
            fences: Mutex::new(HashMap::new()),
        };
        if let Some(i) = &opts.instance {
            let reg = registry_object(&i.host);
            conn.locks
                .setxattr(&reg, &i.member, conn.addr.as_bytes())
                .map_err(|e| fail(&format!("registering {} of host {}", i.member, i.host), e))?;
        }
        Ok(conn)
    }

    pub(crate) fn fenced_since(&self) -> Option<Instant> {
        *self.fenced.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Turns an errno from `op` on `name` into a [`StoreError`] (marking the
/// client fenced on `EBLOCKLISTED`). `ENOENT` is the caller's to interpret
/// and not handled here.
pub(crate) fn errno_error(
    pool: &str,
    op_timeout: Duration,
    c: &Conn,
    name: &str,
    op: &'static str,
    errno: Errno,
) -> StoreError {
    match errno {
        EBLOCKLISTED => {
            let mut f = c.fenced.lock().unwrap_or_else(|p| p.into_inner());
            if f.is_none() {
                log::error!(
                    "pool {}: {} ({}) is blocklisted: another host broke our lock; failing every request until reconnected",
                    pool,
                    c.client,
                    c.addr
                );
                *f = Some(Instant::now());
            }
            StoreError::Fenced {
                name: name.to_owned(),
            }
        }
        libc::ETIMEDOUT => StoreError::Io {
            name: name.to_owned(),
            op,
            source: io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the Ceph cluster did not answer within {} s (pool {}: cluster down, or full?)",
                    op_timeout.as_secs(),
                    pool
                ),
            ),
        },
        e => StoreError::io(name, op, io::Error::from_raw_os_error(e)),
    }
}

impl RadosStore {
    pub(crate) fn current(&self) -> Arc<Conn> {
        self.conn.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The client to use for an operation on `name`: the current one if
    /// not fenced; after a fence a new one if `relock` (a lock is being
    /// taken) or the quarantine is over; else `Fenced`.
    pub(crate) fn live(&self, name: &str, relock: bool) -> Result<Arc<Conn>, StoreError> {
        let c = self.current();
        let Some(since) = c.fenced_since() else {
            return Ok(c);
        };
        if !relock && since.elapsed() < self.opts.fence_quarantine {
            return Err(StoreError::Fenced {
                name: name.to_owned(),
            });
        }
        let _one = self.reconnecting.lock().unwrap_or_else(|p| p.into_inner());
        let c = self.current();
        if c.fenced_since().is_none() {
            return Ok(c); // another thread reconnected
        }
        let fresh = Arc::new(Conn::open(&self.opts)?);
        log::warn!(
            "pool {}: reconnected after being fenced: {} ({}) replaces {} ({})",
            self.opts.pool,
            fresh.client,
            fresh.addr,
            c.client,
            c.addr
        );
        *self.conn.write().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        Ok(fresh)
    }

    /// Turns an errno from `op` on `name` into a [`StoreError`]. `ENOENT`
    /// is the caller's to interpret and not handled here.
    pub(crate) fn err(&self, c: &Conn, name: &str, op: &'static str, errno: Errno) -> StoreError {
        errno_error(&self.opts.pool, self.opts.op_timeout, c, name, op, errno)
    }

    /// `err`, with `ENOENT` as `NotFound` of `name`.
    pub(crate) fn err_nf(
        &self,
        c: &Conn,
        name: &str,
        op: &'static str,
        errno: Errno,
    ) -> StoreError {
        if errno == libc::ENOENT {
            StoreError::not_found(name)
        } else {
            self.err(c, name, op, errno)
        }
    }

    /// Addresses of every client of our own instance (never blocklisted
    /// by us): ours, plus the host registry's.
    pub(crate) fn own_addrs(&self, c: &Conn) -> Result<Vec<String>, StoreError> {
        let mut addrs = split_addrs(&c.addr);
        if let Some(i) = &self.opts.instance {
            let reg = registry_object(&i.host);
            let entries = c
                .locks
                .getxattrs(&reg)
                .map_err(|e| self.err(c, &reg, "registry", e))?;
            for (_, v) in entries {
                for a in split_addrs(&String::from_utf8_lossy(&v)) {
                    if !addrs.contains(&a) {
                        addrs.push(a);
                    }
                }
            }
        }
        Ok(addrs)
    }
}
