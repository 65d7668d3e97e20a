use super::*;

/// The start of `rbd export --export-format 2` (Ceph 16.2.15) of an
/// image with order 22, the default features, no striping, the
/// metadata `k1=v1` and two snapshots: up to the diff count.
const RBD_16_HEADER: &str = "72626420696d6167652076320a4f0800000000000000160000000000000054080000\
    00000000003d00000000000000550800000000000000000040000000000043080000000000000001000000000000\
    004d0c00000000000000020000006b310200000076314572626420696d6167652064696666732076320a030000\
    0000000000";

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn header(count: u64) -> ImageWriter<Vec<u8>> {
    let mut w = ImageWriter::new(Vec::new()).unwrap();
    w.order(22).unwrap();
    w.features(0x3d).unwrap();
    w.stripe_unit(4 << 20).unwrap();
    w.stripe_count(1).unwrap();
    w.meta("k1", b"v1").unwrap();
    w.begin_diffs(count).unwrap();
    w
}

/// Three diffs: none→s1, s1→s2, s2→HEAD.
fn sample() -> Vec<u8> {
    let mut w = header(3);
    w.begin_diff(None, Some("s1")).unwrap();
    w.protected(true).unwrap();
    w.size(8192).unwrap();
    w.write(0, b"hello").unwrap();
    w.end_diff().unwrap();
    w.begin_diff(Some("s1"), Some("s2")).unwrap();
    w.protected(false).unwrap();
    w.size(8192).unwrap();
    w.zero(0, 4096).unwrap();
    w.end_diff().unwrap();
    w.begin_diff(Some("s2"), None).unwrap();
    w.size(16384).unwrap();
    w.write(8192, b"world").unwrap();
    w.end_diff().unwrap();
    w.finish().unwrap()
}

fn decode_all(bytes: &[u8]) -> Result<Vec<ImageRecord>, DecodeError> {
    let mut r = ImageReader::new(bytes)?;
    let mut out = Vec::new();
    while let Some(rec) = r.next_record()? {
        out.push(rec);
    }
    Ok(out)
}

#[test]
fn the_metadata_section_is_byte_for_byte_what_rbd_16_writes() {
    let want = unhex(RBD_16_HEADER);
    assert_eq!(header(3).finish_unchecked_for_test(), want);
    let mut r = ImageReader::new(&want[..]).unwrap();
    let mut recs = Vec::new();
    for _ in 0..6 {
        recs.push(r.next_record().unwrap().unwrap());
    }
    assert_eq!(
        recs,
        vec![
            ImageRecord::Order(22),
            ImageRecord::Features(0x3d),
            ImageRecord::StripeUnit(4 << 20),
            ImageRecord::StripeCount(1),
            ImageRecord::Meta {
                key: "k1".into(),
                value: b"v1".to_vec()
            },
            ImageRecord::Diffs { count: 3 },
        ]
    );
    let e = r.next_record().unwrap_err();
    assert!(e.is_truncated(), "{e}");
    assert_eq!(e.diff, Some(0));
}

#[test]
fn a_full_image_round_trips_with_its_diffs_in_order() {
    let recs = decode_all(&sample()).unwrap();
    let tail: Vec<_> = recs.iter().skip(6).cloned().collect();
    use DiffRecord as D;
    use ImageRecord::{Diff, DiffStart};
    assert_eq!(
        tail,
        vec![
            DiffStart { index: 0 },
            Diff(D::ToSnap("s1".into())),
            Diff(D::Protected(true)),
            Diff(D::Size(8192)),
            Diff(D::Write { offset: 0, len: 5 }),
            Diff(D::End),
            DiffStart { index: 1 },
            Diff(D::FromSnap("s1".into())),
            Diff(D::ToSnap("s2".into())),
            Diff(D::Protected(false)),
            Diff(D::Size(8192)),
            Diff(D::Zero {
                offset: 0,
                len: 4096
            }),
            Diff(D::End),
            DiffStart { index: 2 },
            Diff(D::FromSnap("s2".into())),
            Diff(D::Size(16384)),
            Diff(D::Write {
                offset: 8192,
                len: 5
            }),
            Diff(D::End),
            ImageRecord::End,
        ]
    );
}

#[test]
fn the_reader_refuses_diffs_that_do_not_chain() {
    // Build streams whose chain is broken (the writer refuses to).
    let diff = |from: Option<&str>, to: Option<&str>| {
        let mut w = crate::DiffWriter::new(Vec::new(), DiffVersion::V2).unwrap();
        if let Some(f) = from {
            w.from_snap(f).unwrap();
        }
        if let Some(t) = to {
            w.to_snap(t).unwrap();
        }
        w.size(0).unwrap();
        w.finish().unwrap()
    };
    let image = |diffs: &[(Option<&str>, Option<&str>)]| {
        let mut s = header(diffs.len() as u64).finish_unchecked_for_test();
        for &(f, t) in diffs {
            s.extend(diff(f, t));
        }
        s
    };
    for (diffs, bad) in [
        (vec![(Some("x"), None)], 0),
        (vec![(None, Some("s1"))], 0),
        (vec![(None, Some("s1")), (Some("s0"), None)], 1),
        (vec![(None, Some("s1")), (None, None)], 1),
        (vec![(None, None), (None, None)], 0),
    ] {
        let e = decode_all(&image(&diffs)).unwrap_err();
        assert!(
            matches!(e.kind, DecodeErrorKind::Chain(_)),
            "{diffs:?}: {e}"
        );
        assert_eq!(e.diff, Some(bad), "{diffs:?}: {e}");
    }
    decode_all(&image(&[(None, Some("s1")), (Some("s1"), None)])).unwrap();
}

#[test]
fn bytes_after_the_last_diff_are_refused() {
    let mut s = sample();
    let at = s.len() as u64;
    s.extend_from_slice(b"rbd diff v2\n");
    let e = decode_all(&s).unwrap_err();
    assert!(matches!(e.kind, DecodeErrorKind::AfterEnd), "{e}");
    assert_eq!((e.offset, e.diff), (at, Some(2)));
}

#[test]
fn a_v1_diff_inside_a_full_image_is_refused() {
    let mut s = header(1).finish_unchecked_for_test();
    let at = s.len() as u64;
    let mut w = crate::DiffWriter::new(Vec::new(), DiffVersion::V1).unwrap();
    w.size(0).unwrap();
    s.extend(w.finish().unwrap());
    let e = decode_all(&s).unwrap_err();
    assert!(matches!(e.kind, DecodeErrorKind::BadMagic { .. }), "{e}");
    assert_eq!((e.part, e.offset, e.diff), (Part::Banner, at, Some(0)));
}

#[test]
fn malformed_metadata_records_are_refused() {
    let base = b"rbd image v2\n".to_vec();
    let rec = |tag: u8, len: u64, body: &[u8]| {
        let mut s = base.clone();
        s.push(tag);
        s.extend_from_slice(&len.to_le_bytes());
        s.extend_from_slice(body);
        s
    };
    let kind = |s: Vec<u8>| decode_all(&s).unwrap_err().kind;
    assert!(matches!(
        kind(rec(b'O', 4, &[0; 8])),
        DecodeErrorKind::LengthMismatch { .. }
    ));
    let mut twice = rec(b'O', 8, &[0; 8]);
    twice.extend_from_slice(&rec(b'O', 8, &[0; 8])[base.len()..]);
    assert!(matches!(kind(twice), DecodeErrorKind::Duplicate));
    assert!(matches!(
        kind(rec(b'M', u64::MAX, b"")),
        DecodeErrorKind::TooLong { .. }
    ));
    // The key's length runs past the record's.
    assert!(matches!(
        kind(rec(b'M', 12, &[9, 0, 0, 0])),
        DecodeErrorKind::LengthMismatch { .. }
    ));
    // Key and value lengths that do not add up to the record's.
    assert!(matches!(
        kind(rec(b'M', 12, b"\x01\0\0\0k\x02\0\0\0vv")),
        DecodeErrorKind::LengthMismatch { .. }
    ));
    assert!(matches!(
        kind(rec(b'M', 10, b"\x01\0\0\0\xff\x01\0\0\0v")),
        DecodeErrorKind::NotUtf8(_)
    ));
    let mut skipped = rec(b'Z', 2, b"ab");
    skipped.push(b'E');
    skipped.extend_from_slice(b"rbd image diffs v2\n");
    skipped.extend_from_slice(&0u64.to_le_bytes());
    let mut r = ImageReader::new(&skipped[..]).unwrap();
    assert_eq!(
        r.next_record().unwrap(),
        Some(ImageRecord::Skipped { tag: b'Z', len: 2 })
    );
    let e = r.next_record().unwrap_err();
    assert!(matches!(e.kind, DecodeErrorKind::NoDiffs), "{e}");
    assert_eq!(
        (e.part, e.offset),
        (Part::DiffCount, base.len() as u64 + 11 + 1 + 19)
    );
}

#[test]
fn the_writer_refuses_a_broken_chain_or_count_before_writing() {
    let kind = |r: Result<(), EncodeError>| r.unwrap_err().kind;
    let mut w = ImageWriter::new(Vec::new()).unwrap();
    assert!(matches!(kind(w.size(1)), EncodeErrorKind::OutOfPlace(_)));
    assert!(matches!(
        kind(w.begin_diffs(0)),
        EncodeErrorKind::DiffCount(_)
    ));
    w.begin_diffs(2).unwrap();
    assert!(matches!(kind(w.order(22)), EncodeErrorKind::OutOfPlace(_)));
    assert!(matches!(
        kind(w.begin_diff(Some("a"), Some("b"))),
        EncodeErrorKind::Chain(_)
    ));
    assert!(matches!(
        kind(w.begin_diff(None, None)),
        EncodeErrorKind::Chain(_)
    ));
    w.begin_diff(None, Some("s1")).unwrap();
    w.size(0).unwrap();
    w.end_diff().unwrap();
    assert!(matches!(
        kind(w.begin_diff(Some("s1"), Some("s2"))),
        EncodeErrorKind::Chain(_)
    ));
    let before = w.out.len();
    assert!(matches!(
        kind(w.begin_diff(Some("s0"), None)),
        EncodeErrorKind::Chain(_)
    ));
    assert_eq!(w.out.len(), before, "a refused diff writes nothing");
    w.begin_diff(Some("s1"), None).unwrap();
    assert!(matches!(
        kind(w.protected(true)),
        EncodeErrorKind::MissingToSnap
    ));
    w.size(0).unwrap();
    w.end_diff().unwrap();
    assert!(matches!(
        kind(w.begin_diff(Some("s1"), None)),
        EncodeErrorKind::DiffCount(_)
    ));
    let bytes = w.finish().unwrap();
    assert_eq!(decode_all(&bytes).unwrap().last(), Some(&ImageRecord::End));

    let mut w = ImageWriter::new(Vec::new()).unwrap();
    w.begin_diffs(2).unwrap();
    assert!(matches!(
        w.finish().unwrap_err().kind,
        EncodeErrorKind::DiffCount(_)
    ));
}

impl ImageWriter<Vec<u8>> {
    /// The bytes so far, whatever the phase.
    fn finish_unchecked_for_test(self) -> Vec<u8> {
        self.out
    }
}
