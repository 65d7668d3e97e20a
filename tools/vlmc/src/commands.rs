//! The verbs. Every name is checked against the grammar and every size
//! parsed before the first call, so a bad argument changes nothing.

use std::collections::BTreeMap;
use std::io::Write;

use archipelago_client::{Client, VolumeInfo};
use archipelago_protocol::names::check_volume_name;
use archipelago_protocol::sizes::{check_volume_size, parse_size, MIN_OBJECT_SIZE};
use archipelago_protocol::ErrorCode;
use serde::Serialize;

use crate::cli::{Cli, Verb};
use crate::failure::{Failure, On};
use crate::progress::Progress;
use crate::target::Target;
use crate::transfer;

/// Room for the map blocker's object names in a LIST reply.
const LIST_ROOM: u64 = 4 << 20;
/// Names per LIST page: 8192 of at most 255 bytes fit `LIST_ROOM`.
const LIST_PAGE: u64 = 8192;

/// Runs the verb, printing to `out`.
pub fn run(cli: &Cli, out: &mut dyn Write) -> Result<(), Failure> {
    let t = Target::resolve(&cli.global)?;
    let json = cli.global.json;
    match &cli.verb {
        Verb::Create {
            name,
            size,
            object_size,
            snap,
        } => {
            check_name(name)?;
            let size = size.as_deref().map(|s| volume_size(name, s)).transpose()?;
            let object_size = object_size
                .as_deref()
                .map(|s| parse_object_size(name, s))
                .transpose()?;
            match snap {
                Some(snap) => {
                    check_name(snap)?;
                    connect(&t)?
                        .clone_volume(t.vlmcd, snap, name, size)
                        .on(name)
                }
                None => {
                    let size = size.expect("clap requires --size without --snap");
                    connect(&t)?
                        .create_volume(t.vlmcd, name, size, object_size)
                        .on(name)
                }
            }
        }
        Verb::Snapshot { volume, snap } => {
            check_name(volume)?;
            check_name(snap)?;
            connect(&t)?.snapshot(t.vlmcd, volume, snap).on(volume)
        }
        Verb::Remove { name, force } => {
            check_name(name)?;
            if !force {
                refuse_mapped(&t, name, "removing it")?;
            }
            remove(&t, &connect(&t)?, name, *force)
        }
        Verb::Rename { old, new } => {
            check_name(old)?;
            check_name(new)?;
            rename(&t, &connect(&t)?, old, new)
        }
        Verb::Resize {
            name,
            size,
            allow_shrink,
        } => {
            check_name(name)?;
            let size = volume_size(name, size)?;
            let c = connect(&t)?;
            let info = c.volume_info(t.vlmcd, name).on(name)?;
            if size < info.size && !*allow_shrink {
                return Err(Failure::new(
                    name,
                    format!(
                        "shrinking from {} to {} bytes loses data: pass --allow-shrink",
                        info.size, size
                    ),
                ));
            }
            c.resize_volume(t.vlmcd, name, size, *allow_shrink).on(name)
        }
        Verb::List { all } => {
            let c = connect(&t)?;
            let mut family = Family::load(&t, &c)?;
            let mut views = Vec::new();
            for (name, info) in family.all() {
                if info.removed && !*all {
                    continue;
                }
                views.push(View::new(&t, &c, &mut family, name, info)?);
            }
            print_views(out, &views, json)?;
            // Listed the rest; the unreadable ones fail the command.
            match family.broken.iter().next() {
                None => Ok(()),
                Some((name, why)) => Err(Failure::new(
                    family.broken.keys().cloned().collect::<Vec<_>>().join(", "),
                    format!(
                        "{} not listed: {why}{}",
                        if family.broken.len() == 1 {
                            "map"
                        } else {
                            "maps"
                        },
                        if family.broken.len() > 1 {
                            format!(" ({name}; the others likewise)")
                        } else {
                            String::new()
                        }
                    ),
                )),
            }
        }
        Verb::Info { name } => {
            check_name(name)?;
            let c = connect(&t)?;
            let info = c.volume_info(t.vlmcd, name).on(name)?;
            let mut family = Family::empty(&t, &c);
            let view = View::new(&t, &c, &mut family, name.clone(), info)?;
            if json {
                print_json(out, &view)
            } else {
                print_info(out, &view)
            }
        }
        Verb::Children { snap } => {
            check_name(snap)?;
            let c = connect(&t)?;
            let mut family = Family::empty(&t, &c);
            let mut views = Vec::new();
            for (name, clone) in crate::lineage::children(&t, &c, snap)? {
                let info = match c.volume_info(t.vlmcd, &name) {
                    Ok(info) => info,
                    // Removed or renamed since the lineage was read.
                    Err(e) if e.code == ErrorCode::NotFound => continue,
                    Err(e) => return Err(Failure::new(&name, e)),
                };
                let mut v = View::new(&t, &c, &mut family, name, info)?;
                v.clone = Some(clone);
                views.push(v);
            }
            print_views(out, &views, json)
        }
        Verb::Tree { name } => {
            if let Some(n) = name {
                check_name(n)?;
            }
            let forest = crate::lineage::tree(&t, &connect(&t)?, name.as_deref())?;
            if json {
                print_json(out, &forest)
            } else {
                crate::lineage::print_tree(out, &forest)
            }
        }
        Verb::Flatten { name, rate } => {
            check_name(name)?;
            let rate = crate::lineage::parse_rate(name, rate)?;
            let r = crate::lineage::flatten(&t, &connect(&t)?, name, rate)?;
            crate::lineage::print_flatten(out, &r, json)
        }
        Verb::Rollback { volume, snap } => {
            check_name(volume)?;
            check_name(snap)?;
            let c = connect(&t)?;
            let info = c.volume_info(t.vlmcd, volume).on(volume)?;
            if info.readonly {
                return Err(Failure::new(
                    volume,
                    "a snapshot: only a volume is rolled back",
                ));
            }
            refuse_open(&t, &c, volume, "rolling it back")?;
            c.rollback_volume(t.vlmcd, volume, snap).on(volume)
        }
        Verb::Open { name } => {
            check_name(name)?;
            connect(&t)?
                .open_volume(t.vlmcd, name, true)
                .map(|_| ())
                .on(name)
        }
        Verb::Close { name, force } => {
            check_name(name)?;
            if !force {
                refuse_mapped(&t, name, "closing it")?;
            }
            connect(&t)?.close_volume(t.vlmcd, name).on(name)
        }
        Verb::Lock { name } => {
            check_name(name)?;
            connect(&t)?
                .acquire(t.blockerm, name, &t.host_id)
                .map(|_| ())
                .on(name)
        }
        Verb::Unlock { force, name } => {
            check_name(name)?;
            let c = connect(&t)?;
            if *force {
                // Fence the data store first: once the lock is broken, no
                // data write carrying the holder's token may land there.
                // (The map store fences itself when it breaks the lock.)
                if let Some((_, token)) = c.lock_owner(t.blockerm, name).on(name)? {
                    c.raise_fence(t.blockerb, name, token + 1).on(name)?;
                }
                c.break_lock(t.blockerm, name).map(|_| ()).on(name)
            } else {
                c.release(t.blockerm, name, &t.host_id, false).on(name)
            }
        }
        Verb::Hash { snap, wait } => {
            check_name(snap)?;
            let wait = std::time::Duration::from_secs(*wait);
            // The call covers the hash and the wait for holders.
            let c = connect(&t)?.with_timeout(wait + std::time::Duration::from_secs(120));
            let mut progress = Progress::new(format!("hashing {snap}"), 1);
            let (r, rebase) = c.hash_snapshot_wait(t.vlmcd, snap, Some(wait)).on(snap)?;
            progress.add(1);
            progress.finish();
            let rebase = rebase.unwrap_or_default();
            let view = HashView {
                snapshot: snap.clone(),
                objects: r.objects,
                distinct: r.distinct,
                zero_objects: r.zero_objects,
                bytes_saved: r.bytes_saved,
                maps_moved: rebase.maps_moved,
                maps_left: rebase.names,
                maps_left_count: rebase.maps_left,
            };
            if json {
                print_json(out, &view)
            } else {
                writeln!(
                    out,
                    "{snap}: {} objects, {} distinct, {} zero, {} saved; {} other maps moved onto content",
                    view.objects,
                    view.distinct,
                    view.zero_objects,
                    human(view.bytes_saved),
                    view.maps_moved,
                )
                .on("stdout")?;
                if view.maps_left_count > 0 {
                    writeln!(
                        out,
                        "{snap}: {} maps still name replaced objects (their holders move them; run vlmc hash {snap} again to check): {}",
                        view.maps_left_count,
                        view.maps_left.join(", ")
                    )
                    .on("stdout")?;
                }
                Ok(())
            }
        }
        Verb::Upgrade { name } => {
            check_name(name)?;
            connect(&t)?.update_volume(t.vlmcd, name).on(name)
        }
        Verb::Map(m) => {
            check_name(&m.name)?;
            crate::nbd::map(&t, &connect(&t)?, &m.name, m.readonly, out)
        }
        Verb::Unmap { force, name } => {
            check_name(name)?;
            crate::nbd::unmap(&t, name, *force)
        }
        Verb::Showmapped => crate::nbd::showmapped(&t, json, out),
        Verb::Gc {
            dry_run,
            break_lock,
        } => crate::gc::gc(&t, *dry_run, *break_lock, json, out),
        Verb::Du { name } => {
            if let Some(n) = name {
                check_name(n)?;
            }
            crate::gc::du(&t, name.as_deref(), json, out)
        }
        Verb::Import { name, file, io } => {
            check_name(name)?;
            let io = transfer::IoPlan::parse(name, io)?;
            let r = transfer::import(&t, &connect(&t)?, name, file, &io)?;
            print_transfer(out, &r, json, "imported")
        }
        Verb::Export { name, file, io } => {
            check_name(name)?;
            let io = transfer::IoPlan::parse(name, io)?;
            let r = transfer::export(&t, &connect(&t)?, name, file, &io)?;
            print_transfer(out, &r, json, "exported")
        }
    }
}

/// Checks a volume or snapshot name against the grammar.
pub fn check_name(name: &str) -> Result<(), Failure> {
    check_volume_name(name.as_bytes()).map(|_| ()).on(name)
}

/// Parses and checks a volume size.
fn volume_size(name: &str, s: &str) -> Result<u64, Failure> {
    let size = parse_size(s).on(name)?;
    check_volume_size(size).on(name)
}

fn parse_object_size(name: &str, s: &str) -> Result<u64, Failure> {
    let size = parse_size(s).on(name)?;
    if !size.is_power_of_two() || size < MIN_OBJECT_SIZE {
        return Err(Failure::new(
            name,
            format!("object size {size} must be a power of two of at least {MIN_OBJECT_SIZE}"),
        ));
    }
    Ok(size)
}

/// A client on the target's segment.
pub fn connect(t: &Target) -> Result<Client, Failure> {
    Client::connect(&t.segment).on(&t.segment)
}

/// The volumes and snapshots on the map blocker, removed ones included,
/// with their INFO, and the lineage between them.
///
/// A volume's `parent` as the mapper reports it is the link of its epoch
/// chain: its latest snapshot (or, for a clone never snapshotted, the
/// clone's source), even once that snapshot is removed. Here a volume's
/// parent is what an operator means by it (as `rbd` and `vlmc tree` show
/// it): the snapshot it was cloned from, the nearest ancestor of another
/// volume (id) that is not removed; its own snapshots are not parents.
struct Family<'a> {
    t: &'a Target,
    c: &'a Client,
    /// Every name seen: its INFO, `None` if it has none (vanished).
    infos: BTreeMap<String, Option<VolumeInfo>>,
    /// Names whose map could not be read (a corrupt header), with why:
    /// shown as having no INFO, and reported by `list`.
    broken: BTreeMap<String, String>,
}

/// Every object name on the blocker at `port`, page by page (one LIST
/// reply is bounded by the largest buffer; a store is not), sorted.
fn all_names(c: &Client, port: u32) -> Result<Vec<String>, archipelago_protocol::Error> {
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (page, next) = c.list_page(port, "", cursor.as_deref(), LIST_PAGE, LIST_ROOM)?;
        names.extend(page);
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    names.sort_unstable();
    Ok(names)
}

impl<'a> Family<'a> {
    /// Nothing known yet (INFO is asked for as needed).
    fn empty(t: &'a Target, c: &'a Client) -> Family<'a> {
        Family {
            t,
            c,
            infos: BTreeMap::new(),
            broken: BTreeMap::new(),
        }
    }

    /// Every volume and snapshot on the map blocker.
    fn load(t: &'a Target, c: &'a Client) -> Result<Family<'a>, Failure> {
        let mut f = Family::empty(t, c);
        let names = all_names(c, t.blockerm).on(&format!("port {}", t.blockerm))?;
        for name in names {
            if check_volume_name(name.as_bytes()).is_ok() {
                f.get(&name)?;
            }
        }
        Ok(f)
    }

    /// INFO of `name` (cached); `None` if it has none.
    fn get(&mut self, name: &str) -> Result<Option<VolumeInfo>, Failure> {
        if let Some(i) = self.infos.get(name) {
            return Ok(i.clone());
        }
        let info = match self.c.volume_info(self.t.vlmcd, name) {
            Ok(info) => Some(info),
            // Not a header (or renamed meanwhile).
            Err(e) if matches!(e.code, ErrorCode::NotFound | ErrorCode::InvalidArgument) => None,
            // A map that cannot be read (corrupt, or its store failing):
            // the others are still listed; `list` names it.
            Err(e) if e.code == ErrorCode::Io => {
                self.broken.insert(name.to_owned(), e.to_string());
                None
            }
            Err(e) => return Err(Failure::new(name, e)),
        };
        self.infos.insert(name.to_owned(), info.clone());
        Ok(info)
    }

    /// Every volume and snapshot with INFO, sorted by name.
    fn all(&self) -> Vec<(String, VolumeInfo)> {
        self.infos
            .iter()
            .filter_map(|(n, i)| i.clone().map(|i| (n.clone(), i)))
            .collect()
    }

    /// The clone source of a volume (INFO `info`): its nearest ancestor
    /// that is neither removed nor one of its own snapshots (same volume
    /// id; old-format maps have id 0 and no own snapshots).
    fn parent(&mut self, info: &VolumeInfo) -> Result<Option<String>, Failure> {
        let own = info.volume_id;
        let mut p = info.parent.clone();
        // A chain longer than this is a loop.
        for _ in 0..10_000 {
            let Some(name) = p else {
                return Ok(None);
            };
            match self.get(&name)? {
                Some(i) if i.removed || (own != 0 && i.volume_id == own) => p = i.parent,
                _ => return Ok(Some(name)),
            }
        }
        Ok(p)
    }
}

/// Refuses a volume that is open (its storage lock is held).
fn refuse_open(t: &Target, c: &Client, name: &str, what: &str) -> Result<(), Failure> {
    if let Some((owner, _)) = c.lock_owner(t.blockerm, name).on(name)? {
        return Err(Failure::new(
            name,
            format!(
                "open or locked (its lock is held by {owner}): close or unlock it before {what}"
            ),
        ));
    }
    Ok(())
}

/// Refuses (changing nothing) while `name` is in the NBD mapped set: its
/// export serves it (and, mapped read-write, holds it open).
fn refuse_mapped(t: &Target, name: &str, what: &str) -> Result<(), Failure> {
    let set = archipelago_config::mapped::MappedSet::load(&t.mapped_file)
        .on(&t.mapped_file.display().to_string())?;
    if set.get(name).is_some() {
        return Err(Failure::new(
            name,
            format!(
                "is mapped for NBD; nothing was changed (vlmc unmap it before {what}, or use -f)"
            ),
        ));
    }
    Ok(())
}

fn remove(t: &Target, c: &Client, name: &str, force: bool) -> Result<(), Failure> {
    let info = match c.volume_info(t.vlmcd, name) {
        Ok(info) => info,
        // A map that cannot be read: forced, the mapper removes it if it
        // is certainly corrupt (not for a store error).
        Err(e) if force && e.code == ErrorCode::Io => {
            return c.remove_corrupt_volume(t.vlmcd, name).on(name);
        }
        Err(e) => return Err(Failure::new(name, e)),
    };
    if info.removed {
        return Err(Failure::new(name, "already removed"));
    }
    // A snapshot with dependents is refused by the mapper, which names
    // them (the rule `children` shows).
    refuse_open(t, c, name, "removing it")?;
    c.remove_volume(t.vlmcd, name).on(name)
}

fn rename(t: &Target, c: &Client, old: &str, new: &str) -> Result<(), Failure> {
    // Its export is under the old name.
    refuse_mapped(t, old, "renaming it")?;
    let info = c.volume_info(t.vlmcd, old).on(old)?;
    if info.removed {
        return Err(Failure::new(old, "removed"));
    }
    refuse_open(t, c, old, "renaming it")?;
    match c.volume_info(t.vlmcd, new) {
        // A removed name can be used again.
        Ok(i) if i.removed => {}
        Ok(_) => return Err(Failure::new(new, "already exists")),
        Err(e) if e.code == ErrorCode::NotFound => {}
        Err(e) => return Err(Failure::new(new, e)),
    }
    c.rename_volume(t.vlmcd, old, new).on(old)
}

/// What `info`, `list` and `children` print.
#[derive(Debug, Serialize)]
struct View {
    name: String,
    size: u64,
    object_size: u64,
    readonly: bool,
    removed: bool,
    hashed: bool,
    epoch: u64,
    volume_id: u64,
    parent: Option<String>,
    format_version: u32,
    lock_owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    clone: Option<bool>,
}

impl View {
    fn new(
        t: &Target,
        c: &Client,
        family: &mut Family<'_>,
        name: String,
        i: VolumeInfo,
    ) -> Result<View, Failure> {
        let lock_owner = c.lock_owner(t.blockerm, &name).on(&name)?.map(|(o, _)| o);
        let parent = family.parent(&i)?;
        Ok(View {
            name,
            size: i.size,
            object_size: i.object_size,
            readonly: i.readonly,
            removed: i.removed,
            hashed: i.hashed,
            epoch: i.epoch,
            volume_id: i.volume_id,
            parent,
            format_version: i.format_version,
            lock_owner,
            clone: None,
        })
    }

    fn flags(&self) -> String {
        let mut f: Vec<&str> = Vec::new();
        if self.readonly {
            f.push("snapshot");
        }
        if self.removed {
            f.push("removed");
        }
        if self.hashed {
            f.push("hashed");
        }
        if self.lock_owner.is_some() {
            f.push("locked");
        }
        if self.clone == Some(true) {
            f.push("clone");
        }
        if f.is_empty() {
            "-".to_owned()
        } else {
            f.join(",")
        }
    }
}

#[derive(Debug, Serialize)]
struct HashView {
    snapshot: String,
    objects: u64,
    distinct: u64,
    zero_objects: u64,
    bytes_saved: u64,
    /// Other maps moved onto the content objects.
    maps_moved: u64,
    /// Maps still naming replaced objects (as many names as the reply
    /// held).
    maps_left: Vec<String>,
    /// How many maps still name replaced objects.
    maps_left_count: u64,
}

pub fn print_json(out: &mut dyn Write, v: &impl Serialize) -> Result<(), Failure> {
    let s = serde_json::to_string_pretty(v).on("json")?;
    writeln!(out, "{s}").on("stdout")
}

fn print_views(out: &mut dyn Write, views: &[View], json: bool) -> Result<(), Failure> {
    if json {
        return print_json(out, &views);
    }
    let w = views.iter().map(|v| v.name.len()).max().unwrap_or(4).max(4);
    let p = views
        .iter()
        .map(|v| v.parent.as_deref().unwrap_or("-").len())
        .max()
        .unwrap_or(6)
        .max(6);
    writeln!(
        out,
        "{:w$}  {:>10}  {:>8}  {:p$}  {:24}  FORMAT",
        "NAME", "SIZE", "OBJECT", "PARENT", "FLAGS"
    )
    .on("stdout")?;
    for v in views {
        writeln!(
            out,
            "{:w$}  {:>10}  {:>8}  {:p$}  {:24}  v{}",
            v.name,
            human(v.size),
            human(v.object_size),
            v.parent.as_deref().unwrap_or("-"),
            v.flags(),
            v.format_version
        )
        .on("stdout")?;
    }
    Ok(())
}

fn print_info(out: &mut dyn Write, v: &View) -> Result<(), Failure> {
    let lines = [
        ("name", v.name.clone()),
        ("size", format!("{} ({})", v.size, human(v.size))),
        (
            "object size",
            format!("{} ({})", v.object_size, human(v.object_size)),
        ),
        ("parent", v.parent.clone().unwrap_or_else(|| "-".into())),
        ("flags", v.flags()),
        ("epoch", v.epoch.to_string()),
        ("volume id", format!("{:016x}", v.volume_id)),
        ("format", format!("v{}", v.format_version)),
        (
            "lock owner",
            v.lock_owner.clone().unwrap_or_else(|| "-".into()),
        ),
    ];
    for (k, val) in lines {
        writeln!(out, "{:12} {val}", format!("{k}:")).on("stdout")?;
    }
    Ok(())
}

fn print_transfer(
    out: &mut dyn Write,
    r: &transfer::Report,
    json: bool,
    verb: &str,
) -> Result<(), Failure> {
    if json {
        return print_json(out, r);
    }
    writeln!(
        out,
        "{verb} {} ({}): {} written, {} of {} chunks all zeros",
        r.volume,
        human(r.size),
        human(r.bytes_written),
        r.chunks_skipped,
        r.chunks
    )
    .on("stdout")
}

/// `1536` → `1.5 KiB`.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut unit = 0;
    let mut v = n as f64;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else if v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_binary_units() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(4 << 20), "4 MiB");
    }

    #[test]
    fn names_and_sizes_are_checked_locally() {
        assert!(check_name("vol-1.a").is_ok());
        for bad in ["", "-x", "a/b", "archip_x", "x_lock", "0123456789abcdef"] {
            let e = check_name(bad).unwrap_err();
            assert_eq!(e.subject, bad);
        }
        assert_eq!(volume_size("v", "1M"), Ok(1 << 20));
        assert!(volume_size("v", "1000").is_err());
        assert!(volume_size("v", "0").is_err());
        assert!(volume_size("v", "1X").is_err());
        assert!(parse_object_size("v", "3K").is_err());
        assert_eq!(parse_object_size("v", "64K"), Ok(64 << 10));
    }
}
