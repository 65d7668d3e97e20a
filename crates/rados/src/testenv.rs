//! The test cluster: how tests that need RADOS find one.
//!
//! Tests read `CEPH_CONF` (the cluster's configuration file) and
//! `CEPH_POOL` (a pool they may write to), as exported by
//! `eval "$(scripts/ceph-dev-cluster.sh start)"`. Without them:
//!
//! - under CI (`CI` set), the test **fails**: the RADOS tests are never
//!   skipped there (`.ci/run` starts a cluster);
//! - elsewhere it prints why and how to get a cluster, and returns
//!   without testing anything.
//!
//! Each test works in a namespace of its own ([`unique_namespace`]), so
//! tests share one pool without seeing each other's objects or locks.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::RadosOptions;

/// The cluster's configuration file and pool, or `None` (after printing
/// why) when a test may skip. Panics under CI without a cluster.
pub fn cluster(test: &str) -> Option<(PathBuf, String)> {
    let conf = std::env::var_os("CEPH_CONF").filter(|v| !v.is_empty());
    let pool = std::env::var("CEPH_POOL").ok().filter(|v| !v.is_empty());
    match (conf, pool) {
        (Some(c), Some(p)) => Some((PathBuf::from(c), p)),
        _ if std::env::var_os("CI").is_some() => panic!(
            "{test}: CEPH_CONF and CEPH_POOL must name a Ceph cluster and pool under CI \
             (.ci/run starts one with scripts/ceph-dev-cluster.sh)"
        ),
        _ => {
            eprintln!(
                "{test}: SKIPPED: no Ceph cluster (CEPH_CONF and CEPH_POOL unset); \
                 run: eval \"$(scripts/ceph-dev-cluster.sh start)\""
            );
            None
        }
    }
}

/// A namespace no other test (or run) uses.
pub fn unique_namespace(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "t-{tag}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Options for the test cluster in a fresh namespace, with short
/// timeouts (a broken cluster fails the test quickly instead of hanging).
pub fn options(conf: PathBuf, pool: String, tag: &str) -> RadosOptions {
    let mut o = RadosOptions::new(pool);
    o.ceph_conf = Some(conf);
    o.namespace = unique_namespace(tag);
    o.op_timeout = std::time::Duration::from_secs(20);
    o
}
