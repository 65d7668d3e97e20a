//! Lineage: who depends on whom, and the map side of rollback and of
//! the end of a flatten. Pure code over headers.
//!
//! Every format 3 header names its parent by `(volume id, epoch)`
//! ([`Header::parent`]): a volume's parent is its latest snapshot (or,
//! before any, the snapshot it was cloned from); a snapshot's parent is
//! what its volume's parent was when it was taken. So the headers form a
//! forest, and following parent links from any header walks back through
//! its own volume's snapshots (same id) to the snapshot it was cloned from
//! (another id: a *clone edge*), and on through that volume's history.
//!
//! A header *depends on* a snapshot S when its walk reaches S after
//! crossing at least one clone edge: its map may list objects (and
//! chunks) S's volume wrote, so S must stay ([`dependents`]). Walking
//! through removed headers is deliberate: a removed snapshot still links
//! its volume to the volume's own ancestors. The relation is
//! conservative: a snapshot of a clone taken before the clone was
//! flattened still depends on the clone's source, as it still lists the
//! source's objects.
//!
//! Flattening a clone ends with [`detach`]: the clone's parent link is
//! dropped, so it (and snapshots taken of it from then on) depends on
//! nothing.

use crate::header::{Header, Parent};
use crate::ops::bump;
use crate::MapError;

/// A header as the lineage sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The header's object name (the volume or snapshot name).
    pub name: String,
    /// Its volume id (a snapshot shares its volume's).
    pub volume_id: u64,
    /// Its epoch.
    pub epoch: u64,
    /// A snapshot.
    pub readonly: bool,
    /// Removed (the header is kept for its lineage).
    pub removed: bool,
    /// Its parent link.
    pub parent: Option<Parent>,
}

impl Node {
    /// The lineage fields of `header`, named `name`.
    pub fn of(name: &str, header: &Header) -> Node {
        Node {
            name: name.to_owned(),
            volume_id: header.volume_id,
            epoch: header.epoch,
            readonly: header.flags.readonly,
            removed: header.flags.removed,
            parent: header.parent.clone(),
        }
    }

    /// `(volume id, epoch)`: what a parent link names.
    pub fn key(&self) -> (u64, u64) {
        (self.volume_id, self.epoch)
    }
}

/// Indexes of the live (not removed) nodes that depend on the snapshot
/// `(volume id, epoch)` = `snap`: whose parent walk reaches it across at
/// least one clone edge. Snapshots of `snap`'s own volume are not among
/// them (they share its id all along). The walk is bounded by the number
/// of nodes, so a corrupt cycle ends it.
pub fn dependents(nodes: &[Node], snap: (u64, u64)) -> Vec<usize> {
    let by_key: std::collections::HashMap<(u64, u64), &Node> =
        nodes.iter().map(|n| (n.key(), n)).collect();
    let mut out = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        if n.removed || n.key() == snap {
            continue;
        }
        let mut child = n;
        let mut crossed = false;
        for _ in 0..=nodes.len() {
            let Some(p) = child.parent.as_ref() else {
                break;
            };
            crossed |= p.volume_id != child.volume_id;
            if (p.volume_id, p.epoch) == snap {
                if crossed {
                    out.push(i);
                }
                break;
            }
            match by_key.get(&(p.volume_id, p.epoch)) {
                Some(parent) => child = parent,
                None => break,
            }
        }
    }
    out
}

/// The snapshot a node's volume was cloned from: the first parent link,
/// walking back, whose id differs from the node's. `None` for a volume
/// that was never a clone, or a flattened one.
pub fn clone_source<'a>(nodes: &'a [Node], node: &'a Node) -> Option<&'a Parent> {
    let by_key: std::collections::HashMap<(u64, u64), &Node> =
        nodes.iter().map(|n| (n.key(), n)).collect();
    let mut child = node;
    for _ in 0..=nodes.len() {
        let p = child.parent.as_ref()?;
        if p.volume_id != node.volume_id {
            return Some(p);
        }
        child = by_key.get(&(p.volume_id, p.epoch))?;
    }
    None
}

/// Returns `volume` rolled back to its snapshot `snap` (named
/// `snap_name`): the snapshot's size, chunk refs and HASHED flag, in a
/// new epoch (`volume.epoch + 1`, never used before: a volume's epoch is
/// the highest of its id), so every entry it takes from the snapshot is
/// copy-on-write and nothing of the snapshot is ever written in place.
/// Every chunk is shared (`first_private_serial = next_serial`; serials
/// are never reused). Its parent becomes the snapshot.
///
/// The caller checks that `snap` is a live snapshot of the same volume
/// (same id, older epoch); this checks it too and refuses anything else
/// ([`MapError::NotASnapshot`], [`MapError::Removed`],
/// [`MapError::ReadOnly`] for a snapshot as `volume`,
/// [`MapError::BadVolumeId`] for another volume's snapshot).
pub fn rollback(volume: &Header, snap: &Header, snap_name: &str) -> Result<Header, MapError> {
    if volume.flags.removed || snap.flags.removed {
        return Err(MapError::Removed);
    }
    if volume.flags.readonly {
        return Err(MapError::ReadOnly);
    }
    if !snap.flags.readonly {
        return Err(MapError::NotASnapshot);
    }
    if snap.volume_id != volume.volume_id || snap.epoch >= volume.epoch {
        return Err(MapError::BadVolumeId {
            what: "rollback snapshot id",
            id: snap.volume_id,
        });
    }
    crate::header::check_volume_name("rollback snapshot name", snap_name)?;
    let h = Header {
        size: snap.size,
        object_size_log2: snap.object_size_log2,
        flags: crate::HeaderFlags {
            readonly: false,
            ..snap.flags
        },
        epoch: bump(volume.epoch, "epoch")?,
        commit_seq: bump(volume.commit_seq, "commit sequence")?,
        first_private_serial: volume.next_serial,
        parent: Some(Parent {
            volume_id: snap.volume_id,
            epoch: snap.epoch,
            name: snap_name.to_owned(),
        }),
        chunks: snap.chunks.clone(),
        ..volume.clone()
    };
    h.validate()?;
    Ok(h)
}

/// Returns `volume` without its parent link: the last step of a flatten,
/// once no entry and no chunk ref of it names another volume's object or
/// chunk (the caller checks).
pub fn detach(volume: &Header) -> Result<Header, MapError> {
    if volume.flags.removed {
        return Err(MapError::Removed);
    }
    if volume.flags.readonly {
        return Err(MapError::ReadOnly);
    }
    let h = Header {
        parent: None,
        commit_seq: bump(volume.commit_seq, "commit sequence")?,
        ..volume.clone()
    };
    h.validate()?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{clone_from, snapshot};

    fn nodes(hs: &[(&str, &Header)]) -> Vec<Node> {
        hs.iter().map(|(n, h)| Node::of(n, h)).collect()
    }

    #[test]
    fn dependents_cross_clone_edges_only() {
        let base = Header::new(10, 1 << 30, 22).unwrap();
        let (s1, base) = snapshot(&base, "s1").unwrap();
        let (s2, base) = snapshot(&base, "s2").unwrap();
        let c = clone_from(&s1, "s1", 20, 1 << 30).unwrap();
        let (cs, c) = snapshot(&c, "cs").unwrap();
        let d = clone_from(&cs, "cs", 30, 1 << 30).unwrap();
        let all = nodes(&[
            ("base", &base),
            ("s1", &s1),
            ("s2", &s2),
            ("c", &c),
            ("cs", &cs),
            ("d", &d),
        ]);
        let names = |v: Vec<usize>| {
            v.into_iter()
                .map(|i| all[i].name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(dependents(&all, s1_key(&s1))), ["c", "cs", "d"]);
        assert_eq!(names(dependents(&all, s1_key(&s2))), Vec::<String>::new());
        assert_eq!(names(dependents(&all, s1_key(&cs))), ["d"]);
        assert_eq!(clone_source(&all, &all[3]).unwrap().name, "s1");
        assert_eq!(clone_source(&all, &all[4]).unwrap().name, "s1");
        assert!(clone_source(&all, &all[0]).is_none());

        // A flattened clone (detached) no longer depends on s1; its
        // earlier snapshot and that snapshot's clone still do.
        let c = detach(&c).unwrap();
        let all = nodes(&[("s1", &s1), ("c", &c), ("cs", &cs), ("d", &d)]);
        let names = |v: Vec<usize>| {
            v.into_iter()
                .map(|i| all[i].name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(dependents(&all, s1_key(&s1))), ["cs", "d"]);
    }

    fn s1_key(h: &Header) -> (u64, u64) {
        (h.volume_id, h.epoch)
    }

    #[test]
    fn rollback_takes_the_snapshot_map_in_a_new_epoch() {
        let v = Header::new(10, 1 << 30, 22).unwrap();
        let (s1, v) = snapshot(&v, "s1").unwrap();
        let mut v = v;
        v.size = 2 << 30;
        v.chunks.push(crate::ChunkRef::ZERO);
        v.next_serial = 7;
        let r = rollback(&v, &s1, "s1").unwrap();
        assert_eq!(
            (r.size, r.epoch, r.chunks.clone()),
            (1 << 30, 3, s1.chunks.clone())
        );
        assert_eq!((r.next_serial, r.first_private_serial), (7, 7));
        assert_eq!(r.parent.as_ref().unwrap().epoch, s1.epoch);
        assert!(!r.flags.readonly);
        let other = clone_from(&s1, "s1", 99, 1 << 30).unwrap();
        assert!(
            rollback(&other, &s1, "s1").is_err(),
            "another volume's snapshot"
        );
        assert!(
            rollback(&s1, &s1, "s1").is_err(),
            "a snapshot is not rolled back"
        );
        assert!(rollback(&v, &v, "v").is_err(), "not a snapshot");
        let d = detach(&r).unwrap();
        assert!(d.parent.is_none() && d.commit_seq == r.commit_seq + 1);
    }
}
