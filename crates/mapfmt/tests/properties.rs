//! Properties: every structure survives encode/decode, every decoder
//! takes any bytes without panicking, and snapshots keep their view under
//! any sequence of writes.

mod common;

use archipelago_mapfmt::{
    chunk_count, fuzz_decoders, snapshot, Chunk, ChunkRef, Entry, Header, HeaderFlags, Parent,
    ENTRIES_PER_CHUNK,
};
use common::Stores;
use proptest::prelude::*;
use sha2::{Digest, Sha256};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

fn volume_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9.-]{0,165}"
}

fn legacy_name() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._-]{0,122}"
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        Just(Entry::Zero),
        (1..=u64::MAX, any::<u64>()).prop_map(|(owner, epoch)| Entry::Owned { owner, epoch }),
        any::<[u8; 32]>().prop_map(Entry::Content),
        prop_oneof![Just("archip_x".to_owned()), legacy_name()].prop_map(Entry::Legacy),
    ]
}

fn chunk() -> impl Strategy<Value = Chunk> {
    (
        1..=u64::MAX,
        1..=u64::MAX,
        prop::collection::vec((0..ENTRIES_PER_CHUNK, entry()), 0..40),
    )
        .prop_map(|(owner, serial, sets)| {
            let mut c = Chunk::empty(ChunkRef { owner, serial });
            for (off, e) in sets {
                c.set(off, e).unwrap();
            }
            c
        })
}

fn chunk_ref(id: u64, next: u64) -> BoxedStrategy<ChunkRef> {
    let foreign = (1..=u64::MAX, 1..=u64::MAX)
        .prop_filter("another owner", move |(o, _)| *o != id)
        .prop_map(|(owner, serial)| ChunkRef { owner, serial });
    if next > 1 {
        prop_oneof![
            Just(ChunkRef::ZERO),
            (1..next).prop_map(move |serial| ChunkRef { owner: id, serial }),
            foreign,
        ]
        .boxed()
    } else {
        prop_oneof![Just(ChunkRef::ZERO), foreign].boxed()
    }
}

fn header() -> impl Strategy<Value = Header> {
    (
        1..=u64::MAX,
        12u32..=30,
        1u64..=(3 * ENTRIES_PER_CHUNK as u64 + 5),
        any::<u64>(),
        0u32..8,
        (any::<u64>(), any::<u64>()),
        (1u64..1000, any::<u64>()),
        prop::option::of((1..=u64::MAX, any::<u64>(), volume_name())),
    )
        .prop_flat_map(
            |(id, log2, objects, tail, flags, (epoch, seq), (next, fp), parent)| {
                let sectors_per_object = 1u64 << (log2 - 9);
                let size = (objects - 1) * (1 << log2) + (tail % sectors_per_object + 1) * 512;
                let count = chunk_count(size, log2) as usize;
                let first_private = fp % next + 1;
                prop::collection::vec(chunk_ref(id, next), count).prop_map(move |chunks| Header {
                    size,
                    object_size_log2: log2,
                    flags: HeaderFlags::from_bits(flags).unwrap(),
                    volume_id: id,
                    epoch,
                    commit_seq: seq,
                    next_serial: next,
                    first_private_serial: first_private,
                    parent: parent.clone().map(|(volume_id, epoch, name)| Parent {
                        volume_id,
                        epoch,
                        name,
                    }),
                    chunks,
                })
            },
        )
}

/// Valid encodings with a few bytes changed, cut or extended: they reach
/// the checks behind the magic and the checksum.
fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = valid.len();
    (
        prop::collection::vec((0..len.max(1), any::<u8>()), 0..4),
        0..=len + 8,
    )
        .prop_map(move |(flips, cut)| {
            let mut b = valid.clone();
            for (i, v) in flips {
                if let Some(x) = b.get_mut(i) {
                    *x = v;
                }
            }
            b.resize(cut, 0);
            b
        })
}

/// Recomputes a header's trailing SHA-256 over whatever precedes it.
fn reseal_header(mut b: Vec<u8>) -> Vec<u8> {
    if b.len() >= 32 {
        let n = b.len() - 32;
        let sum = Sha256::digest(&b[..n]);
        b[n..].copy_from_slice(&sum);
    }
    b
}

/// Recomputes a chunk's 16-byte checksum (bytes 32..48, hashed as zeros).
fn reseal_chunk(mut b: Vec<u8>) -> Vec<u8> {
    if b.len() >= 48 {
        b[32..48].fill(0);
        let sum = Sha256::digest(&b);
        b[32..48].copy_from_slice(&sum[..16]);
    }
    b
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn headers_round_trip(h in header()) {
        let bytes = h.encode().unwrap();
        prop_assert_eq!(bytes.len() as u64, h.encoded_len());
        prop_assert_eq!(Header::encoded_len_from(&bytes).unwrap(), h.encoded_len());
        prop_assert_eq!(Header::decode(&bytes).unwrap(), h);
    }

    #[test]
    fn chunks_round_trip(c in chunk()) {
        let bytes = c.encode().unwrap();
        prop_assert_eq!(Chunk::decode_as(&bytes, c.id()).unwrap(), c.clone());
        prop_assert_eq!(Chunk::decode(&bytes).unwrap().encode().unwrap(), bytes);
    }

    #[test]
    fn entries_round_trip(e in entry(), index in 0u32..3) {
        let names = vec!["n0".to_owned(), "n1".to_owned(), "n2".to_owned()];
        let e = match e {
            Entry::Legacy(_) => Entry::Legacy(names[index as usize].clone()),
            e => e,
        };
        prop_assert_eq!(Entry::decode(&e.encode(index), &names).unwrap(), e);
    }

    #[test]
    fn any_bytes_are_decoded_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        fuzz_decoders(&bytes);
    }

    #[test]
    fn bytes_behind_a_known_magic_are_decoded_or_refused(
        prefix in prop_oneof![
            Just(b"AMF.\0\0\0\x03".to_vec()),
            Just(b"AMF.\0\0\0\x02".to_vec()),
            Just(b"AMC.\x03\0\0\0".to_vec()),
            Just(vec![1, 0, 0, 0]),
        ],
        rest in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        fuzz_decoders(&[prefix, rest].concat());
    }

    #[test]
    fn damaged_headers_are_decoded_or_refused(b in header().prop_flat_map(|h| mutated(h.encode().unwrap()))) {
        fuzz_decoders(&b);
    }

    #[test]
    fn damaged_chunks_are_decoded_or_refused(b in chunk().prop_flat_map(|c| mutated(c.encode().unwrap()))) {
        fuzz_decoders(&b);
    }

    #[test]
    fn resealed_damaged_headers_are_decoded_or_refused(
        b in header().prop_flat_map(|h| mutated(h.encode().unwrap()))
    ) {
        fuzz_decoders(&reseal_header(b));
    }

    #[test]
    fn resealed_damaged_chunks_are_decoded_or_refused(
        b in chunk().prop_flat_map(|c| mutated(c.encode().unwrap()))
    ) {
        fuzz_decoders(&reseal_chunk(b));
    }

    /// A model check: a volume and its snapshots read what a plain array
    /// per view would, under any mix of writes and snapshots.
    #[test]
    fn snapshots_keep_their_view_under_any_writes(
        ops in prop::collection::vec(
            prop_oneof![
                // Three chunk slots; the first 64 objects of each keep
                // chunks small (every read decodes one).
                4 => (0u64..3, 0u64..64, 1u8..=255)
                    .prop_map(|(slot, off, v)| Some((slot * ENTRIES_PER_CHUNK as u64 + off, v))),
                1 => Just(None),
            ],
            1..40,
        )
    ) {
        let mut s = Stores::default();
        let h = Header::new(0x77, 3 * ENTRIES_PER_CHUNK as u64 * (4 << 20), 22).unwrap();
        s.commit("v", &h, &[]);
        let mut model: std::collections::HashMap<u64, u8> = Default::default();
        let mut snaps: Vec<(String, std::collections::HashMap<u64, u8>)> = Vec::new();
        for op in ops {
            match op {
                Some((index, value)) => {
                    s.write("v", index, value).unwrap();
                    model.insert(index, value);
                }
                None => {
                    let name = format!("s{}", snaps.len());
                    let (sh, vh) = snapshot(&s.header("v"), &name).unwrap();
                    s.commit("v", &vh, &[]);
                    s.commit(&name, &sh, &[]);
                    snaps.push((name, model.clone()));
                }
            }
        }
        let indexes: Vec<u64> = snaps
            .iter()
            .flat_map(|(_, m)| m.keys().copied())
            .chain(model.keys().copied())
            .chain([0, 1])
            .collect();
        for &i in &indexes {
            prop_assert_eq!(s.read("v", i), model.get(&i).copied().unwrap_or(0));
            for (name, m) in &snaps {
                prop_assert_eq!(s.read(name, i), m.get(&i).copied().unwrap_or(0));
            }
        }
    }
}
