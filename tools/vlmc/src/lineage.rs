//! `tree`, `children`, `flatten` and `rollback`: the verbs over the
//! lineage the mapper reports (LINEAGE: every format 3 header with its
//! parent link `(volume id, epoch)`).
//!
//! The tree: a volume (the writable header of a volume id) has its
//! snapshots (the read-only headers of that id, by epoch) as children,
//! and a snapshot has the volumes cloned from it as children. A volume's
//! clone source is the first link of another id on its parent walk
//! ([`clone_source`]); a flattened clone has none and is a root. Removed
//! headers are shown (marked) only while something below them is live.
//!
//! `children SNAP` lists exactly what keeps SNAP from being removed
//! ([`dependents`], the rule the mapper applies), plus SNAP's own
//! volume's headers whose parent link is SNAP.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

use archipelago_client::{Client, LineageNode};
use archipelago_mapfmt::lineage::{clone_source, dependents, Node};
use archipelago_mapfmt::Parent;
use archipelago_protocol::sizes::parse_size;
use serde::Serialize;

use crate::commands::human;
use crate::failure::{Failure, On};
use crate::progress::Progress;
use crate::target::Target;

/// Every format 3 header, as lineage nodes (same order as `records`).
fn nodes_of(records: &[LineageNode]) -> Vec<Node> {
    records
        .iter()
        .map(|r| Node {
            name: r.name.clone(),
            volume_id: r.volume_id,
            epoch: r.epoch,
            readonly: r.readonly,
            removed: r.removed,
            parent: r.parent.as_ref().map(|(id, epoch, name)| Parent {
                volume_id: *id,
                epoch: *epoch,
                name: name.clone(),
            }),
        })
        .collect()
}

fn lineage(t: &Target, c: &Client) -> Result<Vec<LineageNode>, Failure> {
    c.lineage(t.mapperd)
        .on(&format!("mapper port {}", t.mapperd))
}

/// `children SNAP`: `(name, clone)` of every live header depending on
/// `snap` (`clone` true) and of `snap`'s own volume's live headers whose
/// parent link is `snap` (`clone` false), sorted by name.
pub fn children(t: &Target, c: &Client, snap: &str) -> Result<Vec<(String, bool)>, Failure> {
    let records = lineage(t, c)?;
    let nodes = nodes_of(&records);
    let Some(s) = nodes.iter().find(|n| n.name == snap) else {
        return Err(Failure::new(snap, "not found (or in an old map format)"));
    };
    if !s.readonly {
        return Err(Failure::new(snap, "not a snapshot"));
    }
    let key = s.key();
    let mut out: BTreeMap<String, bool> = dependents(&nodes, key)
        .into_iter()
        .map(|i| (nodes[i].name.clone(), true))
        .collect();
    for n in &nodes {
        let linked = n
            .parent
            .as_ref()
            .is_some_and(|p| (p.volume_id, p.epoch) == key);
        if linked && !n.removed && n.volume_id == s.volume_id {
            out.insert(n.name.clone(), false);
        }
    }
    Ok(out.into_iter().collect())
}

/// A node of `vlmc tree`.
#[derive(Debug, Serialize)]
pub struct TreeNode {
    name: String,
    /// "volume" (no clone source), "clone", or "snapshot".
    kind: &'static str,
    volume_id: u64,
    epoch: u64,
    size: u64,
    removed: bool,
    children: Vec<TreeNode>,
}

/// The lineage forest (or the tree holding `name`).
pub fn tree(t: &Target, c: &Client, name: Option<&str>) -> Result<Vec<TreeNode>, Failure> {
    let records = lineage(t, c)?;
    let nodes = nodes_of(&records);
    let by_key: HashMap<(u64, u64), usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.key(), i))
        .collect();
    // Volume ids: the volume's header and its snapshots by epoch.
    let mut groups: BTreeMap<u64, (Option<usize>, Vec<usize>)> = BTreeMap::new();
    for (i, n) in nodes.iter().enumerate() {
        let g = groups.entry(n.volume_id).or_default();
        if n.readonly {
            g.1.push(i);
        } else {
            g.0 = Some(i);
        }
    }
    // The snapshot each volume id was cloned from (a node index), if it
    // is known.
    let mut clones_of: HashMap<usize, Vec<u64>> = HashMap::new();
    let mut roots: Vec<u64> = Vec::new();
    for (id, (vol, snaps)) in groups.iter_mut() {
        snaps.sort_by_key(|&i| nodes[i].epoch);
        let head = vol
            .or_else(|| snaps.last().copied())
            .expect("a group has a header");
        match clone_source(&nodes, &nodes[head]).and_then(|p| by_key.get(&(p.volume_id, p.epoch))) {
            Some(&src) => clones_of.entry(src).or_default().push(*id),
            None => roots.push(*id),
        }
    }
    fn build(
        id: u64,
        nodes: &[Node],
        records: &[LineageNode],
        groups: &BTreeMap<u64, (Option<usize>, Vec<usize>)>,
        clones_of: &HashMap<usize, Vec<u64>>,
        is_clone: bool,
        depth: usize,
    ) -> Vec<TreeNode> {
        let (vol, snaps) = &groups[&id];
        let leaf = |i: usize, kind: &'static str, children: Vec<TreeNode>| TreeNode {
            name: nodes[i].name.clone(),
            kind,
            volume_id: nodes[i].volume_id,
            epoch: nodes[i].epoch,
            size: records[i].size,
            removed: nodes[i].removed,
            children,
        };
        let mut snap_nodes = Vec::new();
        for &s in snaps {
            let mut kids = Vec::new();
            // Bounded by the number of headers: a corrupt cycle ends.
            if depth <= nodes.len() {
                let mut ids = clones_of.get(&s).cloned().unwrap_or_default();
                ids.sort_by_key(|g| groups[g].0.map(|i| nodes[i].name.clone()));
                for g in ids {
                    kids.extend(build(g, nodes, records, groups, clones_of, true, depth + 1));
                }
            }
            snap_nodes.push(leaf(s, "snapshot", kids));
        }
        let kind = if is_clone { "clone" } else { "volume" };
        match vol {
            Some(v) => vec![leaf(*v, kind, snap_nodes)],
            // The volume's header is gone: its snapshots stand alone.
            None => snap_nodes,
        }
    }
    let mut forest: Vec<TreeNode> = Vec::new();
    for id in roots {
        forest.extend(build(id, &nodes, &records, &groups, &clones_of, false, 0));
    }
    forest.retain_mut(prune);
    forest.sort_by(|a, b| a.name.cmp(&b.name));
    match name {
        None => Ok(forest),
        Some(name) => match forest.into_iter().find(|r| contains(r, name)) {
            Some(r) => Ok(vec![r]),
            None => Err(Failure::new(
                name,
                "not found (or removed, or in an old map format)",
            )),
        },
    }
}

/// Drops removed nodes with nothing live below them; whether `n` stays.
fn prune(n: &mut TreeNode) -> bool {
    n.children.retain_mut(prune);
    !n.removed || !n.children.is_empty()
}

fn contains(n: &TreeNode, name: &str) -> bool {
    n.name == name || n.children.iter().any(|c| contains(c, name))
}

/// Prints the forest as an indented tree.
pub fn print_tree(out: &mut dyn Write, forest: &[TreeNode]) -> Result<(), Failure> {
    fn line(
        out: &mut dyn Write,
        n: &TreeNode,
        prefix: &str,
        last: bool,
        root: bool,
    ) -> std::io::Result<()> {
        let branch = match (root, last) {
            (true, _) => "",
            (false, true) => "└── ",
            (false, false) => "├── ",
        };
        let mut what = vec![n.kind.to_owned()];
        if n.kind != "snapshot" {
            what.push(human(n.size));
        }
        if n.removed {
            what.push("removed".into());
        }
        writeln!(out, "{prefix}{branch}{}  ({})", n.name, what.join(", "))?;
        let below = match (root, last) {
            (true, _) => prefix.to_owned(),
            (false, true) => format!("{prefix}    "),
            (false, false) => format!("{prefix}│   "),
        };
        for (i, c) in n.children.iter().enumerate() {
            line(out, c, &below, i + 1 == n.children.len(), false)?;
        }
        Ok(())
    }
    for r in forest {
        line(out, r, "", true, true).on("stdout")?;
    }
    Ok(())
}

/// How fast a flatten may copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// As fast as it goes.
    Unlimited,
    /// Bytes per second.
    Bytes(u64),
    /// Objects per second.
    Objects(u64),
}

impl Rate {
    /// How long copying `objects` objects of `bytes` bytes in all should
    /// take at this rate.
    fn due(self, objects: u64, bytes: u64) -> Duration {
        match self {
            Rate::Unlimited => Duration::ZERO,
            Rate::Bytes(r) => Duration::from_secs_f64(bytes as f64 / r as f64),
            Rate::Objects(r) => Duration::from_secs_f64(objects as f64 / r as f64),
        }
    }
}

/// Parses a flatten rate: bytes per second (`50M`, `50MiB/s`), objects
/// per second (`20obj/s`); 0 is unthrottled.
pub fn parse_rate(name: &str, s: &str) -> Result<Rate, Failure> {
    let bad = |e: String| {
        Failure::new(
            name,
            format!("bad --rate {s:?}: {e} (like 50M, 50MiB/s or 20obj/s)"),
        )
    };
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let rate = match t.strip_suffix("obj") {
        Some(n) => Rate::Objects(n.trim().parse().map_err(|e| bad(format!("{e}")))?),
        None => Rate::Bytes(parse_size(t).map_err(|e| bad(e.to_string()))?),
    };
    Ok(match rate {
        Rate::Bytes(0) | Rate::Objects(0) => Rate::Unlimited,
        r => r,
    })
}

/// What `flatten` reports.
#[derive(Debug, Serialize)]
pub struct FlattenReport {
    volume: String,
    /// The snapshot it was cloned from (null if none is known).
    parent: Option<String>,
    /// Shared objects when this run started.
    shared_at_start: u64,
    objects_copied: u64,
    bytes_copied: u64,
    objects: u64,
    seconds: f64,
}

/// How long a flatten waits for writes in flight to the last shared
/// objects to commit before giving up.
const PENDING_PATIENCE: Duration = Duration::from_secs(60);

/// Flattens `name`, one object a step, at most at `rate`, showing
/// progress on a terminal.
pub fn flatten(t: &Target, c: &Client, name: &str, rate: Rate) -> Result<FlattenReport, Failure> {
    let info = c.volume_info(t.vlmcd, name).on(name)?;
    if info.readonly {
        return Err(Failure::new(
            name,
            "a snapshot is never flattened: flatten its clones",
        ));
    }
    let records = lineage(t, c)?;
    let nodes = nodes_of(&records);
    let source = nodes
        .iter()
        .find(|n| n.name == name)
        .and_then(|n| clone_source(&nodes, n))
        .map(|p| p.name.clone());
    let first = c.flatten_step(t.vlmcd, name, 0, 0).on(name)?;
    let mut progress = Progress::new(format!("flattening {name}"), first.remaining);
    let started = Instant::now();
    let mut report = FlattenReport {
        volume: name.to_owned(),
        parent: source,
        shared_at_start: first.remaining,
        objects_copied: 0,
        bytes_copied: 0,
        objects: first.total,
        seconds: 0.0,
    };
    let mut next = 0;
    let mut stalled: Option<Instant> = None;
    loop {
        let s = c.flatten_step(t.vlmcd, name, next, 1).on(name)?;
        report.objects_copied += s.copied;
        report.bytes_copied += s.bytes;
        progress.add(s.copied);
        if s.done {
            break;
        }
        next = s.next;
        if s.copied == 0 {
            // Only objects with a write in flight are left: it commits
            // them as the volume's own.
            let since = *stalled.get_or_insert_with(Instant::now);
            if since.elapsed() > PENDING_PATIENCE {
                return Err(Failure::new(
                    name,
                    format!(
                        "{} shared objects have writes that never committed; run flatten again later",
                        s.remaining
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        stalled = None;
        let due = rate.due(report.objects_copied, report.bytes_copied);
        let spent = started.elapsed();
        if due > spent {
            std::thread::sleep(due - spent);
        }
    }
    progress.finish();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Prints a flatten report.
pub fn print_flatten(out: &mut dyn Write, r: &FlattenReport, json: bool) -> Result<(), Failure> {
    if json {
        let s = serde_json::to_string_pretty(r).on("json")?;
        return writeln!(out, "{s}").on("stdout");
    }
    let from = match &r.parent {
        Some(p) => format!("; it no longer depends on {p}"),
        None => String::new(),
    };
    writeln!(
        out,
        "flattened {}: {} objects ({}) copied in {:.1} s{from}",
        r.volume,
        r.objects_copied,
        human(r.bytes_copied),
        r.seconds
    )
    .on("stdout")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_as_bytes_or_objects_per_second() {
        assert_eq!(parse_rate("v", "50MiB/s").unwrap(), Rate::Bytes(50 << 20));
        assert_eq!(parse_rate("v", "64K").unwrap(), Rate::Bytes(64 << 10));
        assert_eq!(parse_rate("v", "20obj/s").unwrap(), Rate::Objects(20));
        assert_eq!(parse_rate("v", "0").unwrap(), Rate::Unlimited);
        for bad in ["fast", "-1M", "obj/s", "5X/s"] {
            let e = parse_rate("v", bad).unwrap_err();
            assert!(e.cause.contains("bad --rate"), "{bad}: {e}");
        }
        assert_eq!(Rate::Objects(4).due(8, 0), Duration::from_secs(2));
        assert_eq!(Rate::Bytes(1 << 20).due(1, 3 << 20), Duration::from_secs(3));
        assert_eq!(Rate::Unlimited.due(100, 100), Duration::ZERO);
    }
}
