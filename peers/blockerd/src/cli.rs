//! The flags of `blockerd`, parsed by its binary (and by the tests that check the
//! launch descriptions of `archipelago_peer::launch` against them).

use archipelago_peer::PeerArgs;
use clap::Parser;

use crate::BackendArgs;

/// Serve an object store (files, memory, a RADOS pool, or null) over xseg.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// The flags every peer takes.
    #[command(flatten)]
    pub peer: PeerArgs,

    /// The store served.
    #[command(flatten)]
    pub store: BackendArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Backend;
    use archipelago_peer::launch::{Blocker, Common, Files, Launch, Rados, Store};

    /// Parses the command line `b` makes with blockerd's own flags and
    /// checks every value is the one described (or the default where the
    /// description leaves it out).
    fn check(b: &Blocker) {
        let cli = Cli::try_parse_from(Launch::from(b.clone()).argv())
            .unwrap_or_else(|e| panic!("{b:?}: {e}"));
        assert_eq!(Common::parsed(&cli.peer), b.common.resolved(), "{b:?}");
        let s = &cli.store;
        let (files, rados) = match &b.store {
            Store::Files(f) => {
                assert_eq!(s.backend, Backend::Files);
                assert_eq!(s.data_dir.as_ref(), Some(&f.dir));
                assert_eq!(s.no_sync, !f.sync);
                assert_eq!(s.fd_cache, f.fd_cache.unwrap_or(256));
                (true, false)
            }
            Store::Memory => {
                assert_eq!(s.backend, Backend::Memory);
                (false, false)
            }
            Store::Null => {
                assert_eq!(s.backend, Backend::Null);
                (false, false)
            }
            Store::Rados(r) => {
                assert_eq!(s.backend, Backend::Rados);
                assert_eq!(s.pool.as_ref(), Some(&r.pool));
                assert_eq!(s.ceph_conf, r.ceph_conf);
                assert_eq!(s.client_id, r.client_id);
                assert_eq!(s.namespace, r.namespace.clone().unwrap_or_default());
                assert_eq!(s.member, r.member.as_deref().unwrap_or("blocker"));
                assert_eq!(s.op_timeout, r.op_timeout.unwrap_or(30));
                assert_eq!(s.fence_quarantine, r.fence_quarantine.unwrap_or(10));
                (false, true)
            }
        };
        if !files {
            assert_eq!(
                (s.data_dir.as_ref(), s.no_sync, s.fd_cache),
                (None, false, 256)
            );
        }
        if !rados {
            assert_eq!((s.pool.as_ref(), s.ceph_conf.as_ref()), (None, None));
            assert_eq!((s.client_id.as_ref(), s.member.as_str()), (None, "blocker"));
        }
    }

    #[test]
    fn launch_descriptions_parse_as_described() {
        let common = Common {
            threads: Some(3),
            host_id: Some("host-b".into()),
            log_level: Some(log::Level::Warn),
            ..Common::new("/tmp/seg", 2)
        };
        let stores = [
            Store::Files(Files::new("/var/d")),
            Store::Files(Files {
                dir: "/d2".into(),
                sync: false,
                fd_cache: Some(99),
            }),
            Store::Memory,
            Store::Null,
            Store::Rados(Rados::new("pool-a")),
            Store::Rados(Rados {
                pool: "p".into(),
                ceph_conf: Some("/c/ceph.conf".into()),
                client_id: Some("arch".into()),
                namespace: Some("ns".into()),
                member: Some("blockerm".into()),
                op_timeout: Some(20),
                fence_quarantine: Some(2),
            }),
        ];
        for store in stores {
            for common in [Common::new("seg", 1), common.clone()] {
                check(&Blocker {
                    common,
                    store: store.clone(),
                });
            }
        }
    }
}
