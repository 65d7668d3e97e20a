//! Stage accounting: what each peer of a target added, from its STATS
//! before and after a run.

use archipelago_client::Client;
use archipelago_protocol::payload::StatsReply;
use archipelago_protocol::Role;
use serde::Serialize;

use super::workload::Target;
use super::{VolumeArgs, BLOCKERB, MAPPER, VLMCD};

/// One peer's share of a run, from the differences of its STATS.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub peer: &'static str,
    pub port: u32,
    /// Requests it accepted during the run.
    pub requests: u64,
    /// Mean wait in its queue (submit to accept).
    pub queue_ns: f64,
    /// Mean time it held a request (accept to reply).
    pub service_ns: f64,
    /// Sub-requests it sent per request.
    pub sub_per_request: f64,
    /// Mean round trip of a sub-request (submit to reply seen).
    pub sub_ns: f64,
    /// Its own share: holding time minus its sub-requests' round trips,
    /// per request (sub-requests sent one after the other, as vlmcd does
    /// for a one-object I/O; an upper bound of overlap otherwise).
    pub own_ns: f64,
}

/// The peers of a target, by name and port.
pub(super) fn stage_ports(t: &Target, a: &VolumeArgs) -> Vec<(&'static str, u32)> {
    match t {
        // A running system: vlmcd at --port, the mapper and the data
        // blocker at the roles' default ports (a peer not answering there
        // is left out of the table).
        Target::Volume { null: false, .. } if a.spawn.is_none() => vec![
            ("vlmcd", a.port),
            ("mapperd", Role::Mapperd.default_port()),
            ("blockerb", a.blocker_port),
        ],
        Target::Volume { .. } => vec![
            ("vlmcd", VLMCD),
            ("mapperd", MAPPER),
            ("blockerb", BLOCKERB),
        ],
        Target::Blocker { port, .. } => vec![("blockerb", *port)],
    }
}

pub(super) fn snapshot_stats(
    client: &Client,
    ports: &[(&'static str, u32)],
) -> Vec<Option<StatsReply>> {
    ports.iter().map(|&(_, p)| client.stats(p).ok()).collect()
}

pub(super) fn stages(
    ports: &[(&'static str, u32)],
    before: &[Option<StatsReply>],
    after: &[Option<StatsReply>],
) -> Vec<Stage> {
    let mut out = Vec::new();
    for (i, &(peer, port)) in ports.iter().enumerate() {
        let (Some(b), Some(a)) = (&before[i], &after[i]) else {
            continue;
        };
        let d = |x: u64, y: u64| x.saturating_sub(y) as f64;
        let requests = d(a.accepted, b.accepted);
        let completed = d(a.served + a.failed, b.served + b.failed);
        let subs = d(a.sub_requests, b.sub_requests);
        let per = |x: f64, n: f64| if n > 0.0 { x / n } else { 0.0 };
        let service_ns = per(d(a.service_ns, b.service_ns), completed);
        let sub_total = d(a.sub_ns, b.sub_ns);
        out.push(Stage {
            peer,
            port,
            requests: requests as u64,
            queue_ns: per(d(a.queue_ns, b.queue_ns), requests),
            service_ns,
            sub_per_request: per(subs, completed),
            sub_ns: per(sub_total, subs),
            own_ns: (service_ns - per(sub_total, completed)).max(0.0),
        });
    }
    out
}
