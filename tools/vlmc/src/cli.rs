//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Manage Archipelago volumes and snapshots.
///
/// Management calls go to the composer (vlmcd), which passes them on to
/// the mapper; `list` reads the map blocker's object names, `lock` and
/// `unlock` its storage locks. Errors are one line on stderr,
/// `vlmc: <volume>: <cause>`, with exit code 1; usage errors exit with 2.
#[derive(Debug, Parser)]
#[command(name = "vlmc", version)]
pub struct Cli {
    /// Where to find the peers.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub verb: Verb,
}

/// Flags every verb accepts.
#[derive(Debug, Args)]
pub struct Global {
    /// Configuration file [default: $ARCHIPELAGO_CONFIG, else
    /// /etc/archipelago/archipelago.toml if it exists, else built-in
    /// defaults]; the flags below override its values.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Segment name or path [default: $ARCHIPELAGO_SEGMENT, else segment.name].
    #[arg(long, global = true, value_name = "NAME|PATH")]
    pub segment: Option<String>,
    /// Port of the composer (vlmcd) [default: vlmcd.port].
    #[arg(long, global = true, value_name = "PORT")]
    pub vlmcd_port: Option<u32>,
    /// Port of the mapper (mapperd) [default: mapperd.port].
    #[arg(long, global = true, value_name = "PORT")]
    pub mapperd_port: Option<u32>,
    /// Port of the map blocker (maps and locks) [default: blockerm.port].
    #[arg(long, global = true, value_name = "PORT")]
    pub blockerm_port: Option<u32>,
    /// Port of the data blocker [default: blockerb.port].
    #[arg(long, global = true, value_name = "PORT")]
    pub blockerb_port: Option<u32>,
    /// Owner name for `lock` and `unlock` [default: host.id].
    #[arg(long, global = true, value_name = "ID")]
    pub host_id: Option<String>,
    /// Print JSON instead of text (verbs that print).
    #[arg(long, global = true)]
    pub json: bool,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Create a volume, or clone a snapshot with --snap.
    Create {
        /// The new volume.
        name: String,
        /// Size (K, M, G, T: powers of 1024; a multiple of 512). Required
        /// without --snap; with it, at least the snapshot's (default).
        #[arg(long, required_unless_present = "snap")]
        size: Option<String>,
        /// Object size (a power of two) [default: the mapper's, 4M].
        #[arg(long, conflicts_with = "snap")]
        object_size: Option<String>,
        /// Clone this snapshot.
        #[arg(long, value_name = "SNAP")]
        snap: Option<String>,
    },
    /// Snapshot a volume.
    Snapshot {
        /// The volume.
        volume: String,
        /// The snapshot's name.
        snap: String,
    },
    /// Remove a volume or snapshot (refused while open, while mapped for
    /// NBD, or for a snapshot with clones).
    Remove {
        /// The volume or snapshot.
        name: String,
        /// Remove it even while it is mapped (its NBD clients then get
        /// errors), or when its map is corrupt (the header is deleted;
        /// the next `vlmc gc` frees what only it named).
        #[arg(short, long)]
        force: bool,
    },
    /// Rename a volume (refused while open).
    Rename {
        /// The current name.
        old: String,
        /// The new name.
        new: String,
    },
    /// Resize a volume.
    Resize {
        /// The volume.
        name: String,
        /// The new size.
        #[arg(long)]
        size: String,
        /// Allow shrinking (the tail's data is lost).
        #[arg(long)]
        allow_shrink: bool,
    },
    /// List volumes and snapshots.
    ///
    /// Text: one line each, NAME SIZE OBJECT-SIZE PARENT FLAGS FORMAT.
    /// --json: an array of the objects `vlmc help info` describes.
    List {
        /// Include removed volumes.
        #[arg(long)]
        all: bool,
    },
    /// Show a volume or snapshot.
    ///
    /// --json: an object with `name`, `size` and `object_size` (bytes),
    /// `readonly` (a snapshot or old map), `removed`, `hashed`, `epoch`,
    /// `volume_id`, `parent` (the nearest ancestor snapshot not removed,
    /// or null: a volume's latest snapshot, a clone's source),
    /// `format_version`, and
    /// `lock_owner` (who holds its storage lock, null if free: a volume
    /// open for writing is locked by its mapper's host).
    Info {
        /// The volume or snapshot.
        name: String,
    },
    /// List what depends on a snapshot: the volumes and snapshots that
    /// share its objects through a clone (exactly those that keep
    /// `remove SNAP` refused, clones of its clones' snapshots included),
    /// and its own volume's headers whose parent it is.
    ///
    /// --json: an array of the objects `vlmc help info` describes, each
    /// with `clone`: true for a dependent through a clone (another volume
    /// id), false for the snapshot's own volume.
    Children {
        /// The snapshot.
        snap: String,
    },
    /// Show the snapshot/clone lineage as a tree: each volume with its
    /// snapshots (oldest first), each snapshot with the volumes cloned
    /// from it. A flattened clone is a root of its own. Removed volumes
    /// and snapshots appear (marked) only while something below them
    /// lives.
    ///
    /// --json: an array of root nodes `{"name", "kind" ("volume",
    /// "clone" or "snapshot"), "volume_id", "epoch", "size", "removed",
    /// "children": [nodes]}`.
    Tree {
        /// Show only the tree holding this volume or snapshot.
        name: Option<String>,
    },
    /// Flatten a clone: copy every object it still shares with its
    /// source into objects of its own, one object at a time through the
    /// mapper's copy-on-write (the clone stays online and writable), then
    /// record that it no longer depends on the source, which can then be
    /// removed. Interrupted, it resumes where it was when run again.
    ///
    /// --json: `{"volume", "parent" (the clone source), "shared_at_start",
    /// "objects_copied", "bytes_copied", "objects", "seconds"}`.
    Flatten {
        /// The clone.
        name: String,
        /// Most bytes copied per second (K, M, G: `50M`, `50MiB/s`) or
        /// objects per second (`20obj/s`); 0 is unthrottled.
        #[arg(long, default_value = "0", value_name = "RATE")]
        rate: String,
    },
    /// Roll a closed volume back to one of its own snapshots: the volume
    /// takes the snapshot's map (size included) in a new epoch, so the
    /// snapshot is never written; no data is copied. Snapshots of other
    /// volumes (its clone source too) are refused: clone them instead.
    Rollback {
        /// The volume (closed, not locked).
        volume: String,
        /// One of its snapshots.
        snap: String,
    },
    /// Open a volume for writing (takes its storage lock for the mapper's
    /// host until `close`).
    Open {
        /// The volume.
        name: String,
    },
    /// Close a volume (refused while it is mapped for NBD: the export
    /// needs its lock).
    Close {
        /// The volume.
        name: String,
        /// Close it even while it is mapped (the next write through the
        /// export takes the lock again, if it still can).
        #[arg(short, long)]
        force: bool,
    },
    /// Take a volume's storage lock for --host-id.
    Lock {
        /// The volume.
        name: String,
    },
    /// Release a volume's storage lock held by --host-id.
    Unlock {
        /// Break the lock whoever holds it.
        #[arg(short, long)]
        force: bool,
        /// The volume.
        name: String,
    },
    /// Hash a snapshot: store its objects by content, and move every map
    /// naming them (its volume, clones made from it, their snapshots)
    /// onto the content objects, so that `vlmc gc` frees the old ones.
    /// Maps open elsewhere are moved by their holder; the hash waits for
    /// them up to --wait, then lists those left.
    ///
    /// --json: `{"snapshot", "objects" (non-zero objects before),
    /// "distinct" (content objects after), "zero_objects", "bytes_saved",
    /// "maps_moved", "maps_left" (names), "maps_left_count"}`.
    Hash {
        /// Seconds to wait for the holders of open maps.
        #[arg(long, default_value_t = 10)]
        wait: u64,
        /// The snapshot.
        snap: String,
    },
    /// Upgrade an old-format map to the current format.
    Upgrade {
        /// The volume.
        name: String,
    },
    /// Map a volume for NBD: open it (writable unless a snapshot or
    /// --readonly), add it to the mapped set nbdd serves and print its
    /// NBD URI, `nbd+unix:///NAME?socket=PATH`.
    Map(MapArgs),
    /// Unmap a volume: remove it from the mapped set and close it
    /// (refused while an NBD client is connected, unless -f, which
    /// disconnects them).
    Unmap {
        /// Unmap even with clients connected.
        #[arg(short, long)]
        force: bool,
        /// The volume or snapshot.
        name: String,
    },
    /// List the mapped volumes.
    ///
    /// Text: one line each, NAME MODE CLIENTS URI. --json: an array of
    /// `{"name", "readonly", "clients", "uri"}`.
    Showmapped,
    /// Free every object no live volume or snapshot refers to: those of
    /// removed volumes, objects replaced by copy-on-write or hashing,
    /// unreferenced map chunks, leftovers of crashed operations. Safe
    /// while volumes are in use; interrupting it (or killing it) is safe,
    /// and the next run finishes the job.
    ///
    /// Text: one line of what was freed. --json: `{"dry_run",
    /// "generation", "data_objects", "map_objects" (listed), "live_maps",
    /// "removed_maps", "referenced", "freed_objects", "freed_bytes",
    /// "freed_chunks", "kept_in_flight", "pins"}`.
    Gc {
        /// Report what would be freed; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// First break the collectors' lock (held by a collector that died
        /// on another host; one on this host is taken over anyway).
        #[arg(long)]
        break_lock: bool,
    },
    /// Space used by volumes and snapshots.
    ///
    /// Text: NAME PROVISIONED USED UNIQUE DEDUP-SAVED. --json: an array
    /// of `{"name", "snapshot", "provisioned" (size), "objects",
    /// "referenced_bytes" (bytes of the objects it refers to),
    /// "unique_bytes" (referred to by no other live map: what removing it
    /// frees after gc), "dedup_saved_bytes" (hashed: bytes its content
    /// entries would take stored once each, minus their distinct
    /// objects)}`.
    Du {
        /// One volume or snapshot [default: all].
        name: Option<String>,
    },
    /// Import a raw image into a new volume of the file's size (rounded up
    /// to 512 bytes); all-zero chunks are not written.
    ///
    /// --json: `{"volume", "file", "size" (the volume's), "bytes_written",
    /// "chunks", "chunks_skipped"}`.
    Import {
        /// The new volume.
        name: String,
        /// The raw image.
        file: PathBuf,
        #[command(flatten)]
        io: IoArgs,
    },
    /// Export a volume or snapshot as a sparse raw image. A writable
    /// volume is held for the export (opens and writes of it are refused
    /// meanwhile) and left as it was; one in use on this host is refused:
    /// export a snapshot of it instead.
    ///
    /// --json: `{"volume", "file", "size", "bytes_written", "chunks",
    /// "chunks_skipped"}`.
    Export {
        /// The volume or snapshot.
        name: String,
        /// The image to write (created or truncated).
        file: PathBuf,
        #[command(flatten)]
        io: IoArgs,
    },
}

/// NBD verbs (served by nbdd).
#[derive(Debug, Clone, Args)]
pub struct MapArgs {
    /// The volume or snapshot.
    pub name: String,
    /// Export read-only (snapshots always are).
    #[arg(long)]
    pub readonly: bool,
}

/// How import and export move data.
#[derive(Debug, Clone, Args)]
pub struct IoArgs {
    /// Bytes per request.
    #[arg(long, default_value = "1M", value_name = "SIZE")]
    pub chunk: String,
    /// Requests in flight.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub depth: usize,
}
