use super::*;

fn user_env() -> Env {
    Env {
        uid: 1000,
        home: Some("/home/u".into()),
        hostname: "host-a".into(),
        ..Env::default()
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str_with(text, &user_env())
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(c) => panic!("accepted {text:?}: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.segment.name, "archipelago");
    assert_eq!((c.segment.ports, c.segment.static_ports), (128, 32));
    assert_eq!(c.segment.requests, 4096);
    assert_eq!(c.segment.max_buffer, "4M");
    assert_eq!(c.segment.idle_policy, IdlePolicy::Yield);
    assert_eq!(c.segment.idle_polls, 100);
    assert_eq!(c.host.id, "host-a");
    for role in Role::ALL {
        assert_eq!(c.port(role), role.default_port());
    }
    assert_eq!(c.blockerb.backend, Backend::Files);
    assert!(c.blockerb.sync);
    // Files blockers get more workers (durable writes hold one each).
    assert_eq!(c.blockerb.threads, 16);
    assert_eq!(c.mapperd.threads, 4);
    let m = parse("[blockerb]\nbackend = \"memory\"\n").unwrap();
    assert_eq!(m.blockerb.threads, 4);
    let t = parse("[blockerb]\nthreads = 2\n").unwrap();
    assert_eq!(t.blockerb.threads, 2);
    assert_eq!(
        c.blockerb.data_dir,
        PathBuf::from("/home/u/.local/share/archipelago/blocks")
    );
    assert_eq!(
        c.blockerm.data_dir,
        PathBuf::from("/home/u/.local/share/archipelago/maps")
    );
    assert_eq!(
        c.nbdd.socket,
        PathBuf::from("/tmp/archipelago-1000/nbd.sock")
    );
    // Issue 19: no TCP listener unless configured (any local user can
    // connect to a TCP port; the Unix socket has permissions).
    assert_eq!(c.nbdd.listen, None);
    let nbd_args = c.launch(Role::Nbdd).args();
    assert!(!nbd_args.iter().any(|a| a == "--listen"), "{nbd_args:?}");
    let seg = c.segment_config().unwrap();
    assert_eq!(seg.protocol_version, PROTOCOL_VERSION);
    assert_eq!(seg.buffer_counts, SegmentConfig::default().buffer_counts);
    assert!(Config::default_for_this_user().segment.name == "archipelago");
}

#[test]
fn path_defaults_for_root_and_users() {
    let root = Env {
        uid: 0,
        home: Some("/root".into()),
        ..Env::default()
    };
    assert_eq!(
        root.default_paths(),
        PathsSection {
            data_dir: "/var/lib/archipelago".into(),
            run_dir: "/run/archipelago".into(),
            log_dir: "/var/log/archipelago".into(),
        }
    );
    assert_eq!(
        user_env().default_paths(),
        PathsSection {
            data_dir: "/home/u/.local/share/archipelago".into(),
            run_dir: "/tmp/archipelago-1000".into(),
            log_dir: "/home/u/.local/state/archipelago".into(),
        }
    );
    let xdg = Env {
        xdg_data_home: Some("/x/data".into()),
        xdg_runtime_dir: Some("/run/user/1000".into()),
        xdg_state_home: Some("/x/state".into()),
        ..user_env()
    };
    assert_eq!(
        xdg.default_paths(),
        PathsSection {
            data_dir: "/x/data/archipelago".into(),
            run_dir: "/run/user/1000/archipelago".into(),
            log_dir: "/x/state/archipelago".into(),
        }
    );
    // Role directories follow [paths].
    let c = parse("[paths]\ndata_dir = \"/d\"\nrun_dir = \"/r\"\n").unwrap();
    assert_eq!(c.blockerb.data_dir, PathBuf::from("/d/blocks"));
    assert_eq!(c.nbdd.socket, PathBuf::from("/r/nbd.sock"));
}

#[test]
fn round_trip() {
    let text = r#"
        [segment]
        name = "/tmp/seg"
        ports = 64
        static_ports = 16
        requests = 1024
        buffer_mib = 64
        max_buffer = "1M"
        idle_policy = "sleep"
        idle_polls = 7
        [host]
        id = "h1"
        [blockerb]
        port = 10
        threads = 2
        backend = "memory"
        sync = false
        [blockerm]
        backend = "rados"
        pool = "maps"
        [mapperd]
        port = 11
        cache_mib = 32
        [vlmcd]
        port = 12
        threads = 8
        [nbdd]
        port = 13
        listen = "0.0.0.0:1"
    "#;
    let c = parse(text).unwrap();
    let back = parse(&c.to_toml()).unwrap();
    assert_eq!(c, back);
    let d = parse("").unwrap();
    assert_eq!(parse(&d.to_toml()).unwrap(), d);
    assert_eq!(c.segment_config().unwrap().max_buffer(), 1 << 20);
}

#[test]
fn buffer_mib_scales_the_buffers() {
    let c = parse("[segment]\nbuffer_mib = 64\n").unwrap();
    let seg = c.segment_config().unwrap();
    let total: u64 = seg
        .buffer_counts
        .iter()
        .enumerate()
        .map(|(i, &n)| (4096u64 << i) * u64::from(n))
        .sum();
    assert!(total <= (64 << 20) + (4 << 20) * 11, "{total}");
    assert!(seg.buffer_counts.iter().all(|&n| n > 0));
}

#[test]
fn every_error_names_its_key() {
    for (text, key) in [
        ("bogus = 1", "bogus"),
        ("[segment]\nbogus = 1", "bogus"),
        ("[blockerb]\ncolour = \"red\"", "colour"),
        ("[nope]", "nope"),
        ("[segment]\nports = \"x\"", "ports"),
        ("[segment]\nmax_buffer = \"huge\"", "segment.max_buffer"),
        ("[segment]\nmax_buffer = \"3K\"", "segment.max_buffer"),
        ("[segment]\nidle_policy = \"nap\"", "segment.idle_policy"),
        ("[segment]\nports = 0", "segment.ports"),
        ("[segment]\nstatic_ports = 200", "segment.static_ports"),
        ("[segment]\nrequests = 0", "segment.requests"),
        ("[segment]\nbuffer_mib = 0", "segment.buffer_mib"),
        ("[segment]\nname = \"\"", "segment.name"),
        ("[host]\nid = \"\"", "host.id"),
        ("[blockerb]\nbackend = \"tape\"", "blockerb.backend"),
        ("[blockerm]\npool = \"p\"", "blockerm.pool"),
        ("[mapperd]\nthreads = 0", "mapperd.threads"),
        ("[vlmcd]\nthreads = 1000", "vlmcd.threads"),
        ("[nbdd]\nlisten = \"here\"", "nbdd.listen"),
        ("[vlmcd]\nport = 3", "vlmcd.port: 3 is also mapperd.port"),
        (
            "[blockerm]\nport = 1",
            "blockerm.port: 1 is also blockerb.port",
        ),
        ("[nbdd]\nport = 32", "nbdd.port: 32 is not a static port"),
        (
            "[segment]\nstatic_ports = 4",
            "vlmcd.port: 4 is not a static port",
        ),
    ] {
        let e = err(text);
        assert!(e.contains(key), "{text:?}: {e:?} does not name {key:?}");
    }
}

#[test]
fn peer_command_lines() {
    let c = parse(
        "[segment]\nname = \"/tmp/s\"\n[blockerb]\nbackend = \"memory\"\n[blockerm]\ndata_dir = \"/m\"\nsync = false\n",
    )
    .unwrap();
    let a = c.peer_args(Role::Blockerb).join(" ");
    assert!(
        a.starts_with("--segment /tmp/s --port 1 --threads 4"),
        "{a}"
    );
    assert!(a.contains("--host-id host-a"), "{a}");
    assert!(a.ends_with("--backend memory"), "{a}");
    let a = c.peer_args(Role::Blockerm).join(" ");
    assert!(
        a.ends_with("--backend files --data-dir /m --no-sync"),
        "{a}"
    );
    let a = c.peer_args(Role::Mapperd).join(" ");
    assert!(a.ends_with("--blockerm-port 2 --blockerb-port 1"), "{a}");
    let a = c.peer_args(Role::Vlmcd).join(" ");
    assert!(a.contains("--port 4 "), "{a}");
    assert!(a.ends_with("--mapper-port 3 --blockerb-port 1"), "{a}");
    assert_eq!(Config::binary(Role::Blockerm), "blockerd");
    assert_eq!(c.launch(Role::Nbdd).binary(), "nbdd");
    // Whole, in order (the command line `ps` shows).
    assert_eq!(
        c.peer_args(Role::Mapperd).join(" "),
        format!(
            "--segment /tmp/s --port 3 --threads 4 --idle-policy yield --idle-polls {} \
             --host-id host-a --blockerm-port 2 --blockerb-port 1",
            xseg_shm::DEFAULT_IDLE_POLLS
        )
    );
    let r = parse(
        "[host]\nid = \"h\"\n[blockerb]\nbackend = \"rados\"\npool = \"b\"\nceph_conf = \"/c/ceph.conf\"\nclient_id = \"arch\"\nnamespace = \"t1\"",
    )
    .unwrap();
    let a = r.peer_args(Role::Blockerb).join(" ");
    assert!(
        a.ends_with(
            "--backend rados --pool b --ceph-conf /c/ceph.conf --client-id arch --namespace t1 --member blockerb"
        ),
        "{a}"
    );
    assert!(a.contains("--host-id h"), "{a}");
    let a = r.peer_args(Role::Blockerm).join(" ");
    assert!(a.contains("--backend files"), "{a}");
    let e = parse("[blockerm]\nbackend = \"rados\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("blockerm.pool") && e.contains("required"), "{e}");
}

#[test]
fn load_reads_the_named_file() {
    let dir = std::env::temp_dir().join(format!("archipelago-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("a.toml");
    std::fs::write(&f, "[host]\nid = \"from-file\"\n").unwrap();
    assert_eq!(Config::load(Some(&f)).unwrap().host.id, "from-file");
    std::fs::write(&f, "[host]\nidd = 1\n").unwrap();
    let e = Config::load(Some(&f)).unwrap_err().to_string();
    assert!(e.contains("a.toml") && e.contains("idd"), "{e}");
    let missing = dir.join("missing.toml");
    assert!(Config::load(Some(&missing)).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every key of the file changes what it says it changes: set to a value
/// other than its default, it reaches the peer's command line (or the
/// segment's layout) as documented, and the effective configuration
/// differs from the default's. The table must name every key the
/// configuration prints.
#[test]
fn every_key_changes_what_it_says() {
    enum Expect {
        /// In `role`'s command line.
        Arg(Role, &'static str),
        /// In the segment's layout.
        Segment(fn(&SegmentConfig) -> bool),
        /// The directory of the logs `archipelago` writes (used by the
        /// supervisor only; `tools/archipelago/tests` reads the logs there).
        LogDir(&'static str),
        /// What the supervisor reads.
        Supervisor(fn(&SupervisorSection) -> bool),
    }
    use Expect::*;
    let rados = "backend = \"rados\"\npool = \"p1\"\n";
    #[rustfmt::skip]
    let table: Vec<(&str, String, Expect)> = vec![
        ("segment.name", "[segment]\nname = \"/tmp/seg9\"".into(), Arg(Role::Vlmcd, "--segment /tmp/seg9 ")),
        ("segment.ports", "[segment]\nports = 64".into(), Segment(|s| s.ports == 64)),
        ("segment.static_ports", "[segment]\nstatic_ports = 16".into(), Segment(|s| s.static_ports == 16)),
        ("segment.requests", "[segment]\nrequests = 1000".into(), Segment(|s| s.requests == 1000)),
        ("segment.buffer_mib", "[segment]\nbuffer_mib = 1".into(), Segment(|s| s.buffer_counts.iter().enumerate().map(|(c, &n)| (4096u64 << c) * u64::from(n)).sum::<u64>() < 4 << 20)),
        ("segment.max_buffer", "[segment]\nmax_buffer = \"1M\"".into(), Segment(|s| s.buffer_counts.len() == 9)),
        ("segment.idle_policy", "[segment]\nidle_policy = \"sleep\"".into(), Arg(Role::Mapperd, "--idle-policy sleep ")),
        ("segment.idle_polls", "[segment]\nidle_polls = 7".into(), Arg(Role::Blockerb, "--idle-polls 7 ")),
        ("host.id", "[host]\nid = \"h9\"".into(), Arg(Role::Mapperd, "--host-id h9")),
        ("paths.data_dir", "[paths]\ndata_dir = \"/d9\"".into(), Arg(Role::Blockerm, "--data-dir /d9/maps")),
        ("paths.run_dir", "[paths]\nrun_dir = \"/r9\"".into(), Arg(Role::Nbdd, "--mapped-file /r9/nbd-mapped.json --status-file /r9/nbd-clients.json --socket /r9/nbd.sock")),
        ("paths.log_dir", "[paths]\nlog_dir = \"/l9\"".into(), LogDir("/l9")),
        ("blockerb.port", "[blockerb]\nport = 11".into(), Arg(Role::Vlmcd, "--blockerb-port 11")),
        ("blockerb.threads", "[blockerb]\nthreads = 3".into(), Arg(Role::Blockerb, "--threads 3 ")),
        ("blockerb.backend", "[blockerb]\nbackend = \"memory\"".into(), Arg(Role::Blockerb, "--backend memory")),
        ("blockerb.data_dir", "[blockerb]\ndata_dir = \"/bd\"".into(), Arg(Role::Blockerb, "--data-dir /bd")),
        ("blockerb.sync", "[blockerb]\nsync = false".into(), Arg(Role::Blockerb, "--no-sync")),
        ("blockerb.pool", format!("[blockerb]\n{rados}"), Arg(Role::Blockerb, "--backend rados --pool p1")),
        ("blockerb.ceph_conf", format!("[blockerb]\n{rados}ceph_conf = \"/c.conf\""), Arg(Role::Blockerb, "--ceph-conf /c.conf")),
        ("blockerb.client_id", format!("[blockerb]\n{rados}client_id = \"cid\""), Arg(Role::Blockerb, "--client-id cid")),
        ("blockerb.namespace", format!("[blockerb]\n{rados}namespace = \"ns9\""), Arg(Role::Blockerb, "--namespace ns9")),
        ("blockerm.port", "[blockerm]\nport = 12".into(), Arg(Role::Mapperd, "--blockerm-port 12")),
        ("blockerm.threads", "[blockerm]\nthreads = 3".into(), Arg(Role::Blockerm, "--threads 3 ")),
        ("blockerm.backend", "[blockerm]\nbackend = \"memory\"".into(), Arg(Role::Blockerm, "--backend memory")),
        ("blockerm.data_dir", "[blockerm]\ndata_dir = \"/md\"".into(), Arg(Role::Blockerm, "--data-dir /md")),
        ("blockerm.sync", "[blockerm]\nsync = false".into(), Arg(Role::Blockerm, "--no-sync")),
        ("blockerm.pool", format!("[blockerm]\n{rados}"), Arg(Role::Blockerm, "--backend rados --pool p1")),
        ("blockerm.ceph_conf", format!("[blockerm]\n{rados}ceph_conf = \"/c.conf\""), Arg(Role::Blockerm, "--ceph-conf /c.conf")),
        ("blockerm.client_id", format!("[blockerm]\n{rados}client_id = \"cid\""), Arg(Role::Blockerm, "--client-id cid")),
        ("blockerm.namespace", format!("[blockerm]\n{rados}namespace = \"ns9\""), Arg(Role::Blockerm, "--namespace ns9")),
        ("mapperd.port", "[mapperd]\nport = 13".into(), Arg(Role::Vlmcd, "--mapper-port 13")),
        ("mapperd.threads", "[mapperd]\nthreads = 5".into(), Arg(Role::Mapperd, "--threads 5 ")),
        ("mapperd.cache_mib", "[mapperd]\ncache_mib = 8".into(), Arg(Role::Mapperd, "--cache-mib 8")),
        ("vlmcd.port", "[vlmcd]\nport = 14".into(), Arg(Role::Nbdd, "--vlmcd-port 14")),
        ("vlmcd.threads", "[vlmcd]\nthreads = 6".into(), Arg(Role::Vlmcd, "--threads 6 ")),
        ("nbdd.port", "[nbdd]\nport = 15".into(), Arg(Role::Nbdd, "--port 15 ")),
        ("nbdd.socket", "[nbdd]\nsocket = \"/s9.sock\"".into(), Arg(Role::Nbdd, "--socket /s9.sock")),
        ("nbdd.listen", "[nbdd]\nlisten = \"127.0.0.1:1234\"".into(), Arg(Role::Nbdd, "--listen 127.0.0.1:1234")),
        ("supervisor.hang_timeout", "[supervisor]\nhang_timeout = 3".into(), Supervisor(|s| s.hang_timeout == 3)),
    ];
    let observable = |c: &Config| {
        let mut v = vec![
            format!("{:?}", c.segment_config().unwrap()),
            c.paths.log_dir.display().to_string(),
            format!("{:?}", c.supervisor),
        ];
        v.extend(Role::ALL.iter().map(|&r| c.peer_args(r).join(" ")));
        v
    };
    let base = parse("").unwrap();
    let mut printed = std::collections::BTreeSet::new();
    let mut collect = |c: &Config| {
        let v: toml::Value = toml::from_str(&c.to_toml()).unwrap();
        for (section, keys) in v.as_table().unwrap() {
            for key in keys.as_table().unwrap().keys() {
                printed.insert(format!("{section}.{key}"));
            }
        }
    };
    collect(&base);
    for (key, text, expect) in &table {
        let c = parse(text).unwrap_or_else(|e| panic!("{key}: {e}"));
        collect(&c);
        assert_ne!(observable(&c), observable(&base), "{key} changed nothing");
        match expect {
            Arg(role, want) => {
                let a = c.peer_args(*role).join(" ") + " ";
                assert!(
                    a.contains(want),
                    "{key}: {role:?}'s command line {a:?} lacks {want:?}"
                );
                let b = base.peer_args(*role).join(" ") + " ";
                assert!(!b.contains(want), "{key}: {want:?} is already the default");
            }
            Segment(holds) => {
                let s = c.segment_config().unwrap();
                assert!(holds(&s), "{key}: {s:?}");
                let b = base.segment_config().unwrap();
                assert!(!holds(&b), "{key}: the default already holds");
            }
            LogDir(want) => assert_eq!(c.paths.log_dir, PathBuf::from(want), "{key}"),
            Supervisor(holds) => {
                assert!(holds(&c.supervisor), "{key}: {:?}", c.supervisor);
                assert!(!holds(&base.supervisor), "{key}: the default already holds");
            }
        }
    }
    let named: std::collections::BTreeSet<String> =
        table.iter().map(|(k, _, _)| k.to_string()).collect();
    let missing: Vec<&String> = printed.difference(&named).collect();
    assert!(
        missing.is_empty(),
        "keys without a row in this table: {missing:?}"
    );
}
