//! [`MemoryStore`]: objects and locks in memory, for tests and benchmarks.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use crate::{
    check_copy, check_name, check_owner, check_range, content_name_of, strip_trailing_zeros, Fence,
    ListPage, ObjectStat, ObjectStore, StoreError,
};

/// An [`ObjectStore`] in memory: one mutex over a sorted map of objects
/// (each a contiguous `Vec<u8>`) and a map of locks.
///
/// Everything is "durable" as soon as it is acknowledged (there is nothing
/// to crash to), and `sync` does nothing. Objects are not sparse: a write
/// at a large offset allocates everything before it, so give the store a
/// [capacity](MemoryStore::with_capacity) when offsets come from untrusted
/// input. A store with a capacity fails any operation that would hold more
/// than that many bytes in total with [`StoreError::NoSpace`] and changes
/// nothing (stricter than the trait asks of an in-place `write`), which
/// makes it a real "full disk" for tests.
///
/// Every operation takes the one mutex, so operations are linearizable
/// (stricter than the trait asks), and the store does not scale across
/// threads; it is for tests and for benchmarking the layers above.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    capacity: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, Vec<u8>>,
    /// Sum of the objects' lengths.
    used: u64,
    locks: HashMap<String, Lock>,
}

#[derive(Debug, Default)]
struct Lock {
    /// Owner and token, while held.
    holder: Option<(String, u64)>,
    /// The fence: the largest token ever granted (kept across releases),
    /// raised by `raise_fence`, by fenced writes with newer tokens and
    /// past the holder's by a break.
    last_token: u64,
}

impl MemoryStore {
    /// An empty store without a capacity.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// An empty store holding at most `bytes` bytes of objects in total.
    pub fn with_capacity(bytes: u64) -> MemoryStore {
        MemoryStore {
            capacity: Some(bytes),
            ..MemoryStore::default()
        }
    }

    /// Bytes held by all objects.
    pub fn used_bytes(&self) -> u64 {
        self.lock().used
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the mutex cannot leave `State` torn: every
        // mutation below is checked first, then applied without panicking.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// Makes room for `name` to become `new_len` bytes long, or fails with
    /// `NoSpace` changing nothing.
    fn reserve(
        &mut self,
        capacity: Option<u64>,
        name: &str,
        new_len: u64,
    ) -> Result<(), StoreError> {
        let old = self.objects.get(name).map_or(0, |o| o.len() as u64);
        let used = self.used - old + new_len;
        if capacity.is_some_and(|c| used > c) {
            return Err(StoreError::NoSpace {
                name: name.to_owned(),
            });
        }
        Ok(())
    }

    /// Writes `data` at `offset` of `name` (creating it), after `reserve`;
    /// fails with `NoSpace`, changing nothing, if memory runs out.
    fn write(&mut self, name: &str, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        let no_space = |_| StoreError::NoSpace {
            name: name.to_owned(),
        };
        let mut fresh = Vec::new();
        let obj = self.objects.get_mut(name).unwrap_or(&mut fresh);
        let old = obj.len() as u64;
        if !data.is_empty() {
            let start = offset as usize;
            let end = start + data.len();
            if obj.len() < end {
                obj.try_reserve_exact(end - obj.len()).map_err(no_space)?;
                obj.resize(end, 0);
            }
            obj[start..end].copy_from_slice(data);
        }
        let new = obj.len() as u64;
        if !self.objects.contains_key(name) {
            self.objects.insert(name.to_owned(), fresh);
        }
        self.used = self.used - old + new;
        Ok(())
    }

    fn write_checked(
        &mut self,
        capacity: Option<u64>,
        name: &str,
        offset: u64,
        data: &[u8],
    ) -> Result<(), StoreError> {
        let old = self.objects.get(name).map_or(0, |o| o.len() as u64);
        let new_len = if data.is_empty() {
            old
        } else {
            old.max(offset + data.len() as u64)
        };
        // A Vec cannot be longer than isize::MAX: treat that as full.
        if usize::try_from(new_len).map_or(true, |n| n > isize::MAX as usize) {
            return Err(StoreError::NoSpace {
                name: name.to_owned(),
            });
        }
        self.reserve(capacity, name, new_len)?;
        self.write(name, offset, data)
    }

    fn write_full_checked(
        &mut self,
        capacity: Option<u64>,
        name: &str,
        data: &[u8],
    ) -> Result<(), StoreError> {
        self.reserve(capacity, name, data.len() as u64)?;
        let old = self
            .objects
            .insert(name.to_owned(), data.to_vec())
            .map_or(0, |o| o.len() as u64);
        self.used = self.used - old + data.len() as u64;
        Ok(())
    }

    /// Refuses `fence` if its token is below the lock's fence; raises the
    /// fence to a newer token. Under the state's mutex, so atomic with the
    /// write that follows.
    fn check_fence(&mut self, name: &str, fence: Fence<'_>) -> Result<(), StoreError> {
        let current = self.locks.get(fence.lock).map_or(0, |l| l.last_token);
        if fence.token < current {
            return Err(StoreError::StaleToken {
                name: name.to_owned(),
                lock: fence.lock.to_owned(),
                token: fence.token,
                current,
            });
        }
        if fence.token > current {
            self.locks
                .entry(fence.lock.to_owned())
                .or_default()
                .last_token = fence.token;
        }
        Ok(())
    }
}

/// Copies `obj[offset..offset + buf.len()]` into `buf`, zeros past the end.
fn read_into(obj: &[u8], offset: u64, buf: &mut [u8]) {
    buf.fill(0);
    let len = obj.len() as u64;
    if offset < len {
        let start = offset as usize;
        let n = (len - offset).min(buf.len() as u64) as usize;
        buf[..n].copy_from_slice(&obj[start..start + n]);
    }
}

impl ObjectStore for MemoryStore {
    fn write_fenced(
        &self,
        name: &str,
        offset: u64,
        data: &[u8],
        _durable: bool,
        fence: Fence<'_>,
    ) -> Result<(), StoreError> {
        check_name(name)?;
        check_name(fence.lock)?;
        check_range(name, offset, data.len() as u64)?;
        let mut state = self.lock();
        state.check_fence(name, fence)?;
        state.write_checked(self.capacity, name, offset, data)
    }

    fn write_full_fenced(
        &self,
        name: &str,
        data: &[u8],
        _durable: bool,
        fence: Fence<'_>,
    ) -> Result<(), StoreError> {
        check_name(name)?;
        check_name(fence.lock)?;
        let mut state = self.lock();
        state.check_fence(name, fence)?;
        state.write_full_checked(self.capacity, name, data)
    }

    fn raise_fence(&self, lock: &str, token: u64) -> Result<u64, StoreError> {
        check_name(lock)?;
        let mut state = self.lock();
        let l = state.locks.entry(lock.to_owned()).or_default();
        l.last_token = l.last_token.max(token);
        Ok(l.last_token)
    }

    fn read(&self, name: &str, offset: u64, buf: &mut [u8]) -> Result<u64, StoreError> {
        check_name(name)?;
        check_range(name, offset, buf.len() as u64)?;
        let state = self.lock();
        let obj = state
            .objects
            .get(name)
            .ok_or_else(|| StoreError::not_found(name))?;
        read_into(obj, offset, buf);
        Ok(obj.len() as u64)
    }

    fn write(
        &self,
        name: &str,
        offset: u64,
        data: &[u8],
        _durable: bool,
    ) -> Result<(), StoreError> {
        check_name(name)?;
        check_range(name, offset, data.len() as u64)?;
        self.lock().write_checked(self.capacity, name, offset, data)
    }

    fn write_full(&self, name: &str, data: &[u8], _durable: bool) -> Result<(), StoreError> {
        check_name(name)?;
        self.lock().write_full_checked(self.capacity, name, data)
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        check_name(name)?;
        let mut state = self.lock();
        let old = state
            .objects
            .remove(name)
            .ok_or_else(|| StoreError::not_found(name))?;
        state.used -= old.len() as u64;
        Ok(())
    }

    fn stat(&self, name: &str) -> Result<ObjectStat, StoreError> {
        check_name(name)?;
        let state = self.lock();
        let obj = state
            .objects
            .get(name)
            .ok_or_else(|| StoreError::not_found(name))?;
        Ok(ObjectStat {
            size: obj.len() as u64,
        })
    }

    fn copy(
        &self,
        src: &str,
        src_offset: u64,
        dst: &str,
        dst_offset: u64,
        len: u64,
        _durable: bool,
    ) -> Result<(), StoreError> {
        check_copy(src, src_offset, dst, dst_offset, len)?;
        let mut state = self.lock();
        let obj = state
            .objects
            .get(src)
            .ok_or_else(|| StoreError::not_found(src))?;
        let n = usize::try_from(len).map_err(|_| StoreError::NoSpace {
            name: dst.to_owned(),
        })?;
        let mut data = Vec::new();
        data.try_reserve_exact(n).map_err(|_| StoreError::NoSpace {
            name: dst.to_owned(),
        })?;
        data.resize(n, 0);
        read_into(obj, src_offset, &mut data);
        state.write_checked(self.capacity, dst, dst_offset, &data)
    }

    fn store_content(&self, data: &[u8], _durable: bool) -> Result<String, StoreError> {
        let name = content_name_of(data);
        let mut state = self.lock();
        if !state.objects.contains_key(&name) {
            let stripped = strip_trailing_zeros(data);
            state.reserve(self.capacity, &name, stripped.len() as u64)?;
            state.write(&name, 0, stripped)?;
        }
        Ok(name)
    }

    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn try_lock(&self, name: &str, owner: &str) -> Result<u64, StoreError> {
        check_name(name)?;
        check_owner(name, owner)?;
        let mut state = self.lock();
        let lock = state.locks.entry(name.to_owned()).or_default();
        match &lock.holder {
            Some((holder, token)) if holder == owner => Ok(*token),
            Some((holder, _)) => Err(StoreError::Locked {
                name: name.to_owned(),
                owner: holder.clone(),
            }),
            None => {
                lock.last_token += 1;
                lock.holder = Some((owner.to_owned(), lock.last_token));
                Ok(lock.last_token)
            }
        }
    }

    fn unlock(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        check_name(name)?;
        check_owner(name, owner)?;
        let mut state = self.lock();
        let lock = state.locks.get_mut(name);
        match lock.as_ref().and_then(|l| l.holder.as_ref()) {
            None => Err(StoreError::not_found(name)),
            Some((holder, _)) if holder != owner => Err(StoreError::Locked {
                name: name.to_owned(),
                owner: holder.clone(),
            }),
            Some(_) => {
                lock.expect("held").holder = None;
                Ok(())
            }
        }
    }

    fn break_lock(&self, name: &str) -> Result<Option<String>, StoreError> {
        check_name(name)?;
        let mut state = self.lock();
        let Some(lock) = state.locks.get_mut(name) else {
            return Ok(None);
        };
        let Some((owner, token)) = lock.holder.take() else {
            return Ok(None);
        };
        // Fenced writes carrying the holder's token are refused from now on.
        lock.last_token = lock.last_token.max(token + 1);
        Ok(Some(owner))
    }

    fn lock_owner(&self, name: &str) -> Result<Option<(String, u64)>, StoreError> {
        check_name(name)?;
        let state = self.lock();
        Ok(state.locks.get(name).and_then(|l| l.holder.clone()))
    }

    /// Cost: a range scan of the sorted map, O(matches + log n).
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let state = self.lock();
        Ok(state
            .objects
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }

    /// Every call is a copy under one mutex, held for at most one object's
    /// bytes.
    fn never_blocks(&self) -> bool {
        true
    }

    fn list_page(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        use std::ops::Bound;
        let state = self.lock();
        let start = match cursor {
            Some(a) if a >= prefix => Bound::Excluded(a.to_owned()),
            _ => Bound::Included(prefix.to_owned()),
        };
        let names = state
            .objects
            .range::<String, _>((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit.max(1))
            .map(|(k, _)| k.clone())
            .collect();
        Ok(ListPage::after_last(names, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_store_refuses_writes_and_changes_nothing() {
        let s = MemoryStore::with_capacity(10);
        s.write("a", 0, b"12345678", false).unwrap();
        let e = s.write("a", 6, b"abcdef", false).unwrap_err();
        assert!(matches!(e, StoreError::NoSpace { ref name } if name == "a"));
        let mut buf = [0; 8];
        assert_eq!(s.read("a", 0, &mut buf).unwrap(), 8);
        assert_eq!(&buf, b"12345678");
        assert!(s.write_full("b", b"abc", false).is_err());
        assert!(s.stat("b").unwrap_err().is_not_found());
        s.delete("a").unwrap();
        assert_eq!(s.used_bytes(), 0);
        s.write_full("b", b"0123456789", false).unwrap();
        assert_eq!(s.used_bytes(), 10);
    }
}
