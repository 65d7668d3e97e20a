//! `vlmc gc` and `vlmc du`: the `archipelago-gc` library run against the
//! blockers (the map blocker for maps and locks, the data blocker for
//! objects), through [`RemoteStore`]s.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use archipelago_client::RemoteStore;
use archipelago_gc::{collect, usage, GcOptions, GcReport, Phase};

use crate::commands::human;
use crate::failure::{Failure, On};
use crate::progress::Progress;
use crate::target::Target;

/// Raised by SIGINT/SIGTERM: the collection stops at the next object.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Makes SIGINT and SIGTERM stop the collection cleanly (it releases its
/// lock and says how far it got); a second signal is not needed: a kill
/// at any point is safe too (see the gc crate).
fn stop_on_signals() -> Arc<AtomicBool> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe, and replaces no handler anything else relies on.
        let _ = unsafe { sigaction(sig, &action) };
    }
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    std::thread::spawn(move || loop {
        if STOP.load(Ordering::Relaxed) {
            f.store(true, Ordering::Relaxed);
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    });
    flag
}

/// `vlmc gc [--dry-run] [--break-lock]`.
pub fn gc(
    t: &Target,
    dry_run: bool,
    break_lock: bool,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let maps = RemoteStore::new(&t.segment, t.blockerm);
    let data = RemoteStore::new(&t.segment, t.blockerb);
    if break_lock {
        if let Some(owner) = archipelago_gc::break_lock(&maps).on("gc")? {
            eprintln!("vlmc: gc: broke the lock held by {owner}");
        }
    }
    let opts = GcOptions {
        dry_run,
        host: t.host_id.clone(),
        stop: Some(stop_on_signals()),
        ..GcOptions::default()
    };
    let mut bar: Option<(Phase, Progress)> = None;
    let mut on_progress = |phase: Phase, done: u64, total: u64| {
        if total == 0 {
            return;
        }
        if bar.as_ref().map(|b| b.0) != Some(phase) {
            let label = match phase {
                Phase::List => "gc: listing",
                Phase::Mark => "gc: reading maps",
                Phase::Sweep if dry_run => "gc: checking objects",
                Phase::Sweep => "gc: freeing",
            };
            // The previous phase's line ends before the next one starts.
            bar = None;
            bar = Some((phase, Progress::new(label, total)));
        }
        if let Some((_, p)) = bar.as_mut() {
            p.set(done);
        }
    };
    let r = collect(&maps, &data, &opts, &mut on_progress).on("gc");
    drop(bar);
    let r = r?;
    if json {
        return crate::commands::print_json(out, &r);
    }
    print_report(out, &r)
}

fn print_report(out: &mut dyn Write, r: &GcReport) -> Result<(), Failure> {
    let verb = if r.dry_run { "would free" } else { "freed" };
    writeln!(
        out,
        "{verb} {} objects, {} ({} map chunks); {} live maps, {} removed; {} objects listed, {} referenced; {} kept for operations in flight{}",
        r.freed_objects,
        human(r.freed_bytes),
        r.freed_chunks,
        r.live_maps,
        r.removed_maps,
        r.data_objects + r.map_objects,
        r.referenced,
        r.kept_in_flight,
        if r.pins > 0 {
            format!(" ({} hash pins: content kept)", r.pins)
        } else {
            String::new()
        }
    )
    .on("stdout")
}

/// `vlmc du [NAME]`.
pub fn du(t: &Target, name: Option<&str>, json: bool, out: &mut dyn Write) -> Result<(), Failure> {
    let maps = RemoteStore::new(&t.segment, t.blockerm);
    let data = RemoteStore::new(&t.segment, t.blockerb);
    let subject = name.unwrap_or("du");
    let rows = usage(&maps, &data, name).on(subject)?;
    if json {
        return crate::commands::print_json(out, &rows);
    }
    let mut text = format!(
        "{:<24} {:>12} {:>12} {:>12} {:>12}\n",
        "NAME", "PROVISIONED", "USED", "UNIQUE", "DEDUP-SAVED"
    );
    for u in &rows {
        text.push_str(&format!(
            "{:<24} {:>12} {:>12} {:>12} {:>12}\n",
            u.name,
            human(u.provisioned),
            human(u.referenced_bytes),
            human(u.unique_bytes),
            human(u.dedup_saved_bytes)
        ));
    }
    out.write_all(text.as_bytes()).on("stdout")
}
