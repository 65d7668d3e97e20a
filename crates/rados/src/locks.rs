//! Locks and fences on RADOS: lock object names, owners and tokens,
//! raising a lock's fence, checking a fenced write, ending a grant and
//! breaking a lock (blocklisting its holder).

use super::*;

pub(crate) fn locks_namespace(ns: &str) -> String {
    if ns.is_empty() {
        "archipelago.locks".to_owned()
    } else {
        format!("{ns}.locks")
    }
}

pub(crate) fn registry_object(host: &str) -> String {
    format!(".host.{host}")
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The owner a cookie names (the cookie itself if it is not ours).
pub(crate) fn owner_of(cookie: &str) -> String {
    let b = cookie.as_bytes();
    if b.len() % 2 == 0 {
        let bytes: Option<Vec<u8>> = b
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
            .collect();
        if let Some(s) = bytes.and_then(|v| String::from_utf8(v).ok()) {
            return s;
        }
    }
    cookie.to_owned()
}

pub(crate) fn parse_token(v: Option<Vec<u8>>) -> u64 {
    v.and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

impl RadosStore {
    pub(crate) fn lockers(&self, c: &Conn, name: &str) -> Result<Vec<Locker>, StoreError> {
        c.locks
            .list_lockers(name, LOCK_NAME)
            .map_err(|e| self.err(c, name, "list_lockers", e))
    }

    /// Raises the `token` xattr of the lock object `lock` to at least
    /// `token` through `c` (creating the object if missing; never
    /// lowering it) and returns the value now recorded.
    pub(crate) fn raise_on(&self, c: &Conn, lock: &str, token: u64) -> Result<u64, StoreError> {
        for _ in 0..LOCK_ATTEMPTS {
            let old = c
                .locks
                .getxattr(lock, "token")
                .map_err(|e| self.err(c, lock, "raise_fence", e))?;
            let current = parse_token(old.clone());
            if current >= token {
                return Ok(current);
            }
            let value = token.to_string();
            if old.is_none() {
                // Maybe no lock object yet (a data pool): create it with
                // the token, exclusively (cmpxattr needs an object).
                let mut op = WriteOp::new();
                op.create(true).setxattr("token", value.as_bytes());
                match op.operate(&c.locks, lock) {
                    Ok(()) => return Ok(token),
                    Err(libc::EEXIST) => {} // exists: compare and set
                    Err(e) => return Err(self.err(c, lock, "raise_fence", e)),
                }
            }
            let mut op = WriteOp::new();
            op.cmpxattr("token", old.as_deref().unwrap_or(b""))
                .setxattr("token", value.as_bytes());
            match op.operate(&c.locks, lock) {
                Ok(()) => return Ok(token),
                // Raised (or created) meanwhile: read again.
                Err(libc::ECANCELED) | Err(libc::ENOENT) => continue,
                Err(e) => return Err(self.err(c, lock, "raise_fence", e)),
            }
        }
        Err(StoreError::Io {
            name: lock.to_owned(),
            op: "raise_fence",
            source: io::Error::other("lost the race for the fence too many times"),
        })
    }

    /// Checks `fence` for a write to `name` through `c`: against the
    /// token `c` last saw for the lock (no I/O), else read from the lock
    /// object (and raised there to a newer token). The caller writes
    /// through the same `c`: if another host broke the lock since, `c` is
    /// blocklisted and the write fails; a reconnected client starts with
    /// no cached token.
    pub(crate) fn check_fence(
        &self,
        c: &Conn,
        name: &str,
        fence: Fence<'_>,
    ) -> Result<(), StoreError> {
        check_store_name(fence.lock.as_bytes())?;
        let cached = c
            .fences
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(fence.lock)
            .copied();
        let current = match cached {
            Some(t) if t == fence.token => return Ok(()),
            Some(t) if t > fence.token => t,
            _ => {
                let now = self.raise_on(c, fence.lock, fence.token)?;
                c.fences
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(fence.lock.to_owned(), now);
                now
            }
        };
        if fence.token < current {
            return Err(self.stale(c, name, fence, current));
        }
        Ok(())
    }

    /// A refused write: forgets the cached token (the next write reads
    /// the lock object again).
    pub(crate) fn stale(&self, c: &Conn, name: &str, fence: Fence<'_>, current: u64) -> StoreError {
        c.fences
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(fence.lock);
        log::warn!(
            "pool {}: refused a write to {name}: lock {} is at token {current}, the writer holds {}",
            self.opts.pool,
            fence.lock,
            fence.token
        );
        StoreError::StaleToken {
            name: name.to_owned(),
            lock: fence.lock.to_owned(),
            token: fence.token,
            current,
        }
    }

    /// Ends the current grant of `name` for a break, in one write op:
    /// `token` raised past the holder's and `grant` emptied. From then on
    /// a fenced write with the holder's token is refused by any client
    /// that reads the lock object; the clients of the holder that read it
    /// before are blocklisted next, before the lock is free.
    pub(crate) fn end_grant(&self, c: &Conn, name: &str) -> Result<(), StoreError> {
        for _ in 0..LOCK_ATTEMPTS {
            let old = c
                .locks
                .getxattr(name, "token")
                .map_err(|e| self.err(c, name, "break_lock", e))?;
            let next = parse_token(old.clone()) + 1;
            let mut op = WriteOp::new();
            op.cmpxattr("token", old.as_deref().unwrap_or(b""))
                .setxattr("token", next.to_string().as_bytes())
                .setxattr("grant", b"");
            match op.operate(&c.locks, name) {
                Ok(()) => {
                    c.fences
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(name.to_owned(), next);
                    return Ok(());
                }
                Err(libc::ECANCELED) => continue,
                Err(e) => return Err(self.err(c, name, "break_lock", e)),
            }
        }
        Err(StoreError::Io {
            name: name.to_owned(),
            op: "break_lock",
            source: io::Error::other("lost the race for the fence too many times"),
        })
    }

    /// Blocklists the clients recorded in the lock `name` and the holder's
    /// address, except our own instance's; then breaks `holder`'s lock.
    /// With `end_grant` (a break, not a takeover by the same owner) the
    /// next grant raises the token.
    pub(crate) fn fence_and_break(
        &self,
        c: &Conn,
        name: &str,
        holder: &Locker,
        end_grant: bool,
    ) -> Result<(), StoreError> {
        if end_grant {
            self.end_grant(c, name)?;
        }
        let recorded = c
            .locks
            .getxattr(name, "clients")
            .map_err(|e| self.err(c, name, "break_lock", e))?
            .unwrap_or_default();
        let mut victims = split_addrs(&holder.addr);
        for line in String::from_utf8_lossy(&recorded).lines() {
            for a in split_addrs(line) {
                if !victims.contains(&a) {
                    victims.push(a);
                }
            }
        }
        let own = self.own_addrs(c)?;
        for a in victims.iter().filter(|a| !own.contains(a)) {
            log::warn!(
                "lock {name}: fencing {a} (held by {})",
                owner_of(&holder.cookie)
            );
            c.cluster
                .blocklist_add(a, self.opts.blocklist_expiry)
                .map_err(|e| self.err(c, name, "blocklist", e))?;
        }
        match c
            .locks
            .break_lock(name, LOCK_NAME, &holder.client, &holder.cookie)
        {
            Ok(()) | Err(libc::ENOENT) => Ok(()),
            Err(e) => Err(self.err(c, name, "break_lock", e)),
        }
    }
}
