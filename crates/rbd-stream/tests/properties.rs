//! Property tests: arbitrary valid streams round-trip through the writers
//! and readers; arbitrary, mutated and truncated bytes never panic a
//! reader, and a cut-off stream is always reported as truncated.

mod common;

use archipelago_rbd_stream::{fuzz_readers, DiffReader, DiffVersion, ImageReader};
use common::{decode_diff, decode_image, encode_diff, encode_image, Diff, Extent, Image};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    // Any UTF-8, including the empty name and multi-byte characters.
    prop::collection::vec(any::<char>(), 0..12).prop_map(|c| c.into_iter().collect())
}

/// Extents in ascending order without overlaps, and a size that holds them.
fn extents() -> impl Strategy<Value = (Vec<Extent>, u64)> {
    let one = (0u64..5000, prop::bool::ANY, 0usize..3000, any::<u8>());
    (
        prop::collection::vec(one, 0..8),
        0u64..10_000,
        prop::bool::ANY,
    )
        .prop_map(|(parts, slack, huge)| {
            let mut at = if huge { u64::MAX / 2 } else { 0 };
            let mut out = Vec::new();
            for (gap, is_write, len, byte) in parts {
                at += gap;
                if is_write {
                    let data: Vec<u8> = (0..len).map(|i| byte.wrapping_add(i as u8)).collect();
                    out.push(Extent::Write(at, data));
                } else {
                    out.push(Extent::Zero(at, len as u64 * 1000));
                    at += len as u64 * 999;
                }
                at += len as u64;
            }
            (out, at + slack)
        })
}

fn diff(v2: bool) -> impl Strategy<Value = Diff> {
    (
        prop::option::of(name()),
        prop::option::of(name()),
        prop::option::of(any::<bool>()),
        extents(),
    )
        .prop_map(move |(from, to, protected, (extents, size))| Diff {
            protected: if v2 && to.is_some() { protected } else { None },
            from,
            to,
            size,
            extents,
        })
}

fn image() -> impl Strategy<Value = Image> {
    (
        prop::option::of(12u64..26),
        prop::option::of(any::<u64>()),
        prop::option::of(any::<u64>()),
        prop::option::of(any::<u64>()),
        prop::collection::vec((name(), prop::collection::vec(any::<u8>(), 0..40)), 0..4),
        prop::collection::vec(diff(true), 1..4),
    )
        .prop_map(
            |(order, features, stripe_unit, stripe_count, meta, mut diffs)| {
                // Chain the diffs: none → s0 → s1 → ... → HEAD.
                let n = diffs.len();
                for (i, d) in diffs.iter_mut().enumerate() {
                    d.from = (i > 0).then(|| format!("s{}", i - 1));
                    d.to = (i + 1 < n).then(|| format!("s{i}"));
                    if d.to.is_none() {
                        d.protected = None;
                    }
                }
                Image {
                    order,
                    features,
                    stripe_unit,
                    stripe_count,
                    meta,
                    diffs,
                }
            },
        )
}

/// Reads a diff stream to its end or first error; never panics.
fn drain_diff(bytes: &[u8]) -> Result<(), archipelago_rbd_stream::DecodeError> {
    let mut r = DiffReader::new(bytes)?;
    let mut buf = [0u8; 333];
    while r.next_record()?.is_some() {
        while r.read_data(&mut buf)? > 0 {}
    }
    Ok(())
}

fn drain_image(bytes: &[u8]) -> Result<(), archipelago_rbd_stream::DecodeError> {
    let mut r = ImageReader::new(bytes)?;
    let mut buf = [0u8; 333];
    while r.next_record()?.is_some() {
        while r.read_data(&mut buf)? > 0 {}
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_valid_v1_diff_round_trips(mut d in diff(false), buf in 1usize..5000) {
        d.protected = None;
        let bytes = encode_diff(&d, DiffVersion::V1);
        prop_assert_eq!(decode_diff(&bytes, buf).unwrap(), (d, DiffVersion::V1));
    }

    #[test]
    fn any_valid_v2_diff_round_trips(d in diff(true), buf in 1usize..5000) {
        let bytes = encode_diff(&d, DiffVersion::V2);
        prop_assert_eq!(decode_diff(&bytes, buf).unwrap(), (d, DiffVersion::V2));
    }

    #[test]
    fn any_valid_full_image_round_trips(img in image(), buf in 1usize..5000) {
        let bytes = encode_image(&img);
        prop_assert_eq!(decode_image(&bytes, buf).unwrap(), img);
    }

    #[test]
    fn every_strict_prefix_of_a_valid_stream_is_reported_truncated(
        d in diff(true), img in image(), v2 in any::<bool>(), cut in any::<prop::sample::Index>()
    ) {
        let version = if v2 { DiffVersion::V2 } else { DiffVersion::V1 };
        let mut d = d;
        if !v2 { d.protected = None; }
        let bytes = encode_diff(&d, version);
        let at = cut.index(bytes.len());
        let e = drain_diff(&bytes[..at]).unwrap_err();
        prop_assert!(e.is_truncated(), "cut at {}: {}", at, e);
        let bytes = encode_image(&img);
        let at = cut.index(bytes.len());
        let e = drain_image(&bytes[..at]).unwrap_err();
        prop_assert!(e.is_truncated(), "cut at {}: {}", at, e);
    }

    #[test]
    fn arbitrary_bytes_after_a_banner_never_panic_a_reader(
        banner in 0usize..4, tail in prop::collection::vec(any::<u8>(), 0..600)
    ) {
        let banner: &[u8] = [
            &b"rbd diff v1\n"[..],
            b"rbd diff v2\n",
            b"rbd image v2\n",
            b"",
        ][banner];
        let mut bytes = banner.to_vec();
        bytes.extend_from_slice(&tail);
        let _ = drain_diff(&bytes);
        let _ = drain_image(&bytes);
        fuzz_readers(&bytes);
    }

    #[test]
    fn mutated_valid_streams_never_panic_a_reader(
        d in diff(true), img in image(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)
    ) {
        for mut bytes in [encode_diff(&d, DiffVersion::V2), encode_image(&img)] {
            for (i, b) in &flips {
                let i = i.index(bytes.len());
                bytes[i] = *b;
            }
            let _ = drain_diff(&bytes);
            let _ = drain_image(&bytes);
            fuzz_readers(&bytes);
        }
    }

    #[test]
    fn whatever_decodes_re_encodes_to_the_same(d in diff(true), img in image(), v2 in any::<bool>()) {
        let mut d = d;
        if !v2 { d.protected = None; }
        let version = if v2 { DiffVersion::V2 } else { DiffVersion::V1 };
        fuzz_readers(&encode_diff(&d, version));
        fuzz_readers(&encode_image(&img));
    }
}
