//! `map`, `unmap` and `showmapped`: the mapped set nbdd serves
//! (`<run_dir>/nbd-mapped.json`) and its connected clients
//! (`<run_dir>/nbd-clients.json`).

use std::io::Write;

use archipelago_client::Client;
use archipelago_config::mapped::{MappedSet, MappedVolume, NbdClients};
use serde::Serialize;

use crate::failure::{Failure, On};
use crate::target::Target;

/// The NBD URI of `name`.
pub fn uri(t: &Target, name: &str) -> String {
    format!("nbd+unix:///{name}?socket={}", t.nbd_socket.display())
}

fn load(t: &Target) -> Result<MappedSet, Failure> {
    MappedSet::load(&t.mapped_file).on(&t.mapped_file.display().to_string())
}

/// Changes the mapped set under its lock ([`MappedSet::update`]).
fn update<R>(
    t: &Target,
    change: impl FnOnce(&mut MappedSet) -> Result<R, Failure>,
) -> Result<R, Failure> {
    let label = t.mapped_file.display().to_string();
    if let Some(dir) = t.mapped_file.parent() {
        std::fs::create_dir_all(dir).on(&dir.display().to_string())?;
    }
    MappedSet::update(&t.mapped_file, change).on(&label)?
}

/// `map NAME [--readonly]`.
pub fn map(
    t: &Target,
    c: &Client,
    name: &str,
    readonly: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let opened = std::cell::Cell::new(false);
    let mapped = update(t, |set| {
        if set.get(name).is_some() {
            return Err(Failure::new(name, "already mapped"));
        }
        let info = c.volume_info(t.vlmcd, name).on(name)?;
        let readonly = readonly || info.readonly;
        if !readonly {
            c.open_volume(t.vlmcd, name, true).on(name)?;
            opened.set(true);
        }
        set.volumes.push(MappedVolume {
            name: name.to_owned(),
            readonly,
        });
        Ok(())
    });
    if let Err(e) = mapped {
        // Opened, but the set could not be saved: not mapped after all.
        if opened.get() {
            let _ = c.close_volume(t.vlmcd, name);
        }
        return Err(e);
    }
    writeln!(out, "{}", uri(t, name)).on("stdout")
}

/// `unmap [-f] NAME`.
pub fn unmap(t: &Target, name: &str, force: bool) -> Result<(), Failure> {
    let clients = NbdClients::load(&t.clients_file).unwrap_or_default();
    let connected = clients.connected(name);
    let entry = update(t, |set| {
        let Some(entry) = set.get(name).cloned() else {
            return Err(Failure::new(name, "not mapped"));
        };
        if connected > 0 && !force {
            return Err(Failure::new(
                name,
                format!(
                    "{connected} NBD client{} connected; nothing was changed (disconnect, or use -f)",
                    if connected == 1 { " is" } else { "s are" }
                ),
            ));
        }
        set.volumes.retain(|v| v.name != name);
        Ok(entry)
    })?;
    if connected > 0 {
        // nbdd re-reads the set on SIGHUP and disconnects the clients of
        // exports no longer in it.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(clients.pid as i32),
            nix::sys::signal::Signal::SIGHUP,
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while NbdClients::load(&t.clients_file)
            .unwrap_or_default()
            .connected(name)
            > 0
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    if !entry.readonly {
        match crate::commands::connect(t)?.close_volume(t.vlmcd, name) {
            // Closed already (`vlmc close -f` while mapped): unmapped all
            // the same.
            Err(e) if e.code == archipelago_protocol::ErrorCode::NotFound => {}
            r => r.on(name)?,
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct Row {
    name: String,
    readonly: bool,
    clients: u32,
    uri: String,
}

/// `showmapped [--json]`.
pub fn showmapped(t: &Target, json: bool, out: &mut dyn Write) -> Result<(), Failure> {
    let set = load(t)?;
    let clients = NbdClients::load(&t.clients_file).unwrap_or_default();
    let rows: Vec<Row> = set
        .volumes
        .iter()
        .map(|v| Row {
            name: v.name.clone(),
            readonly: v.readonly,
            clients: clients.connected(&v.name),
            uri: uri(t, &v.name),
        })
        .collect();
    if json {
        let text = serde_json::to_string_pretty(&rows).on("json")?;
        return writeln!(out, "{text}").on("stdout");
    }
    for r in rows {
        writeln!(
            out,
            "{} {} {} {}",
            r.name,
            if r.readonly { "ro" } else { "rw" },
            r.clients,
            r.uri
        )
        .on("stdout")?;
    }
    Ok(())
}
