//! Property test: the file driver behaves exactly like the memory driver
//! (the model) on random sequences of writes, reads, copies, deletes,
//! whole-object replaces, content stores and reopens.

use archipelago_store::{FileStore, FileStoreOptions, MemoryStore, ObjectStore, StoreError};
use proptest::prelude::*;

const NAMES: [&str; 4] = ["a", "b", "vol_1", "vol_2"];

#[derive(Debug, Clone)]
enum Op {
    Write {
        name: usize,
        offset: u64,
        len: usize,
        seed: u8,
        durable: bool,
    },
    WriteFull {
        name: usize,
        len: usize,
        seed: u8,
    },
    Read {
        name: usize,
        offset: u64,
        len: usize,
    },
    Copy {
        src: usize,
        src_offset: u64,
        dst: usize,
        dst_offset: u64,
        len: u64,
    },
    Delete {
        name: usize,
    },
    Stat {
        name: usize,
    },
    StoreContent {
        len: usize,
        zeros: usize,
        seed: u8,
    },
    Sync,
    /// Close and reopen the file store (without syncing first).
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let name = 0..NAMES.len();
    prop_oneof![
        4 => (name.clone(), 0..20_000u64, 0..5_000usize, any::<u8>(), any::<bool>())
            .prop_map(|(name, offset, len, seed, durable)| Op::Write { name, offset, len, seed, durable }),
        1 => (name.clone(), 0..6_000usize, any::<u8>())
            .prop_map(|(name, len, seed)| Op::WriteFull { name, len, seed }),
        3 => (name.clone(), 0..25_000u64, 0..6_000usize)
            .prop_map(|(name, offset, len)| Op::Read { name, offset, len }),
        3 => (name.clone(), 0..20_000u64, name.clone(), 0..20_000u64, 0..9_000u64)
            .prop_map(|(src, src_offset, dst, dst_offset, len)| Op::Copy { src, src_offset, dst, dst_offset, len }),
        1 => name.clone().prop_map(|name| Op::Delete { name }),
        1 => name.prop_map(|name| Op::Stat { name }),
        1 => (0..3_000usize, 0..100usize, 0..4u8)
            .prop_map(|(len, zeros, seed)| Op::StoreContent { len, zeros, seed }),
        1 => Just(Op::Sync),
        1 => Just(Op::Reopen),
    ]
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13) ^ seed)
        .collect()
}

/// An outcome comparable across drivers: the value, or the error's code.
fn outcome<T: PartialEq + std::fmt::Debug>(
    r: Result<T, StoreError>,
) -> Result<T, archipelago_protocol::ErrorCode> {
    r.map_err(|e| e.code())
}

fn apply(s: &dyn ObjectStore, op: &Op) -> String {
    match *op {
        Op::Write {
            name,
            offset,
            len,
            seed,
            durable,
        } => {
            format!(
                "{:?}",
                outcome(s.write(NAMES[name], offset, &data(len, seed), durable))
            )
        }
        Op::WriteFull { name, len, seed } => {
            format!(
                "{:?}",
                outcome(s.write_full(NAMES[name], &data(len, seed), false))
            )
        }
        Op::Read { name, offset, len } => {
            let mut buf = vec![0xEE; len];
            let r = outcome(s.read(NAMES[name], offset, &mut buf));
            match r {
                Ok(size) => format!("Ok({size}, {buf:?})"),
                Err(e) => format!("{e:?}"),
            }
        }
        Op::Copy {
            src,
            src_offset,
            dst,
            dst_offset,
            len,
        } => format!(
            "{:?}",
            outcome(s.copy(NAMES[src], src_offset, NAMES[dst], dst_offset, len, false))
        ),
        Op::Delete { name } => format!("{:?}", outcome(s.delete(NAMES[name]))),
        Op::Stat { name } => format!("{:?}", outcome(s.stat(NAMES[name]))),
        Op::StoreContent { len, zeros, seed } => {
            let mut d = data(len, seed);
            d.resize(len + zeros, 0);
            format!("{:?}", outcome(s.store_content(&d, false)))
        }
        Op::Sync => format!("{:?}", outcome(s.sync())),
        Op::Reopen => String::new(),
    }
}

fn everything(s: &dyn ObjectStore) -> Vec<(String, Vec<u8>)> {
    s.list("")
        .unwrap()
        .into_iter()
        .map(|name| {
            let mut buf = vec![0; s.stat(&name).unwrap().size as usize];
            s.read(&name, 0, &mut buf).unwrap();
            (name, buf)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_file_store_behaves_like_the_memory_store(
        ops in prop::collection::vec(op(), 1..40),
        sync in any::<bool>(),
        fd_cache in 0..3usize,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let options = FileStoreOptions { sync, fd_cache };
        let model = MemoryStore::new();
        let mut files = Some(FileStore::open(dir.path(), options).unwrap());
        for (i, op) in ops.iter().enumerate() {
            if let Op::Reopen = op {
                // The old instance must be gone (closed) before the reopen.
                drop(files.take());
                files = Some(FileStore::open(dir.path(), options).unwrap());
                continue;
            }
            let expected = apply(&model, op);
            let got = apply(files.as_ref().unwrap(), op);
            prop_assert_eq!(got, expected, "op {} {:?}", i, op);
        }
        prop_assert_eq!(everything(files.as_ref().unwrap()), everything(&model));
    }
}
