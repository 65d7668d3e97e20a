use super::*;

fn le64(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

/// Every record, then all the data, for comparisons.
fn decode_all(bytes: &[u8]) -> Result<(Vec<DiffRecord>, Vec<u8>), DecodeError> {
    let mut r = DiffReader::new(bytes)?;
    let (mut recs, mut data) = (Vec::new(), Vec::new());
    while let Some(rec) = r.next_record()? {
        if let DiffRecord::Write { .. } = rec {
            let mut buf = [0u8; 7];
            loop {
                let n = r.read_data(&mut buf)?;
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
            }
        }
        recs.push(rec);
    }
    Ok((recs, data))
}

fn decode_err(bytes: &[u8]) -> DecodeError {
    decode_all(bytes).expect_err("the stream must not decode")
}

fn v1_sample() -> Vec<u8> {
    let mut w = DiffWriter::new(Vec::new(), DiffVersion::V1).unwrap();
    w.from_snap("a").unwrap();
    w.to_snap("bc").unwrap();
    w.size(0x10000).unwrap();
    w.write(0x200, b"xyz").unwrap();
    w.zero(0x1000, 0x800).unwrap();
    w.finish().unwrap()
}

#[test]
fn a_v1_diff_is_the_documented_bytes() {
    let mut want = b"rbd diff v1\n".to_vec();
    want.extend_from_slice(b"f\x01\0\0\0a");
    want.extend_from_slice(b"t\x02\0\0\0bc");
    want.push(b's');
    want.extend_from_slice(&le64(0x10000));
    want.push(b'w');
    want.extend_from_slice(&le64(0x200));
    want.extend_from_slice(&le64(3));
    want.extend_from_slice(b"xyz");
    want.push(b'z');
    want.extend_from_slice(&le64(0x1000));
    want.extend_from_slice(&le64(0x800));
    want.push(b'e');
    assert_eq!(v1_sample(), want);
}

#[test]
fn a_v2_diff_puts_the_contents_length_after_every_tag_but_the_end() {
    let mut w = DiffWriter::new(Vec::new(), DiffVersion::V2).unwrap();
    w.from_snap("a").unwrap();
    w.to_snap("bc").unwrap();
    w.protected(true).unwrap();
    w.size(0x10000).unwrap();
    w.write(0x200, b"xyz").unwrap();
    w.zero(0x1000, 0x800).unwrap();
    let got = w.finish().unwrap();
    let mut want = b"rbd diff v2\n".to_vec();
    want.push(b'f');
    want.extend_from_slice(&le64(5));
    want.extend_from_slice(b"\x01\0\0\0a");
    want.push(b't');
    want.extend_from_slice(&le64(6));
    want.extend_from_slice(b"\x02\0\0\0bc");
    want.push(b'p');
    want.extend_from_slice(&le64(1));
    want.push(1);
    want.push(b's');
    want.extend_from_slice(&le64(8));
    want.extend_from_slice(&le64(0x10000));
    want.push(b'w');
    want.extend_from_slice(&le64(16 + 3));
    want.extend_from_slice(&le64(0x200));
    want.extend_from_slice(&le64(3));
    want.extend_from_slice(b"xyz");
    want.push(b'z');
    want.extend_from_slice(&le64(16));
    want.extend_from_slice(&le64(0x1000));
    want.extend_from_slice(&le64(0x800));
    want.push(b'e');
    assert_eq!(got, want);
    let (recs, data) = decode_all(&got).unwrap();
    assert_eq!(
        recs,
        vec![
            DiffRecord::FromSnap("a".into()),
            DiffRecord::ToSnap("bc".into()),
            DiffRecord::Protected(true),
            DiffRecord::Size(0x10000),
            DiffRecord::Write {
                offset: 0x200,
                len: 3
            },
            DiffRecord::Zero {
                offset: 0x1000,
                len: 0x800
            },
            DiffRecord::End,
        ]
    );
    assert_eq!(data, b"xyz");
}

#[test]
fn the_protection_record_of_rbd_16_declaring_8_bytes_for_1_is_read() {
    // As `rbd export --export-format 2` of Ceph 16.2 writes it.
    let mut s = b"rbd diff v2\nt".to_vec();
    s.extend_from_slice(&le64(6));
    s.extend_from_slice(b"\x02\0\0\0s1p");
    s.extend_from_slice(&le64(8));
    s.push(1);
    s.push(b's');
    s.extend_from_slice(&le64(8));
    s.extend_from_slice(&le64(4096));
    s.push(b'e');
    let (recs, _) = decode_all(&s).unwrap();
    assert_eq!(recs[1], DiffRecord::Protected(true));
    assert_eq!(recs[2], DiffRecord::Size(4096));
}

#[test]
fn a_v2_record_with_an_unknown_tag_is_skipped_by_its_length() {
    let mut s = b"rbd diff v2\nX".to_vec();
    s.extend_from_slice(&le64(3));
    s.extend_from_slice(b"abc");
    s.push(b's');
    s.extend_from_slice(&le64(8));
    s.extend_from_slice(&le64(0));
    s.push(b'e');
    let (recs, _) = decode_all(&s).unwrap();
    assert_eq!(
        recs,
        vec![
            DiffRecord::Skipped { tag: b'X', len: 3 },
            DiffRecord::Size(0),
            DiffRecord::End
        ]
    );
}

#[test]
fn data_not_read_by_the_caller_is_skipped() {
    let s = v1_sample();
    let mut r = DiffReader::new(&s[..]).unwrap();
    let mut recs = Vec::new();
    while let Some(rec) = r.next_record().unwrap() {
        recs.push(rec);
    }
    assert_eq!(recs.len(), 6);
    assert_eq!(r.position(), s.len() as u64);
}

#[test]
fn a_wrong_banner_is_bad_magic_at_byte_0() {
    let e = decode_err(b"rbd diff v3\ne");
    assert!(matches!(e.kind, DecodeErrorKind::BadMagic { .. }), "{e}");
    assert_eq!((e.part, e.offset), (Part::Banner, 0));
    assert!(!e.is_truncated());
    let e = decode_err(b"rbd di");
    assert!(e.is_truncated(), "{e}");
    let e = decode_err(b"rbd diff v2");
    assert!(e.is_truncated(), "{e}");
}

#[test]
fn an_unknown_tag_in_v1_names_its_offset() {
    let mut s = v1_sample();
    let at = 12 + 6 + 7;
    assert_eq!(s[at], b's');
    s[at] = b'Q';
    let e = decode_err(&s);
    assert!(matches!(e.kind, DecodeErrorKind::UnknownTag(b'Q')), "{e}");
    assert_eq!((e.part, e.offset), (Part::Unknown(b'Q'), at as u64));
    assert_eq!(
        e.to_string(),
        format!("unknown record `Q` (0x51) at byte {at}: diff v1 has no record 0x51 (only v2 can skip unknown records)")
    );
}

#[test]
fn a_stream_cut_inside_data_is_truncated_at_the_data_record() {
    let s = v1_sample();
    let w_at = s.iter().position(|&b| b == b'w').unwrap() as u64;
    let e = decode_err(&s[..w_at as usize + 17 + 2]);
    assert!(e.is_truncated(), "{e}");
    assert_eq!((e.part, e.offset), (Part::Write, w_at));
    let e = decode_err(&s[..s.len() - 1]);
    assert!(matches!(e.kind, DecodeErrorKind::MissingEnd), "{e}");
}

#[test]
fn a_huge_declared_length_fails_as_truncated_without_allocating() {
    let mut s = b"rbd diff v1\ns".to_vec();
    s.extend_from_slice(&le64(u64::MAX));
    s.push(b'w');
    s.extend_from_slice(&le64(0));
    s.extend_from_slice(&le64(u64::MAX - 1));
    s.extend_from_slice(b"some data");
    let e = decode_err(&s);
    assert!(e.is_truncated(), "{e}");
    let mut s = b"rbd diff v1\nf".to_vec();
    s.extend_from_slice(&u32::MAX.to_le_bytes());
    let e = decode_err(&s);
    assert!(matches!(e.kind, DecodeErrorKind::TooLong { .. }), "{e}");
}

#[test]
fn a_v2_length_that_disagrees_with_the_contents_is_refused() {
    let mut s = b"rbd diff v2\ns".to_vec();
    s.extend_from_slice(&le64(9));
    s.extend_from_slice(&le64(4096));
    s.push(b'e');
    let e = decode_err(&s);
    assert!(
        matches!(
            e.kind,
            DecodeErrorKind::LengthMismatch {
                declared: 9,
                expected: 8
            }
        ),
        "{e}"
    );
    let mut s = b"rbd diff v2\nw".to_vec();
    s.extend_from_slice(&le64(0));
    s.extend_from_slice(&le64(0));
    s.extend_from_slice(&le64(u64::MAX - 3));
    let e = decode_err(&s);
    assert!(matches!(e.kind, DecodeErrorKind::LengthOverflow(_)), "{e}");
}

fn v1_with(records: &[(u8, u64, u64)], size: Option<u64>) -> Vec<u8> {
    let mut s = b"rbd diff v1\n".to_vec();
    if let Some(size) = size {
        s.push(b's');
        s.extend_from_slice(&le64(size));
    }
    for &(tag, off, len) in records {
        s.push(tag);
        s.extend_from_slice(&le64(off));
        s.extend_from_slice(&le64(len));
        if tag == b'w' {
            s.extend(std::iter::repeat_n(7u8, len as usize));
        }
    }
    s.push(b'e');
    s
}

#[test]
fn extents_must_ascend_without_overlap_within_the_size() {
    let ok = v1_with(&[(b'w', 0, 10), (b'z', 10, 5), (b'w', 100, 1)], Some(101));
    decode_all(&ok).unwrap();
    let e = decode_err(&v1_with(&[(b'w', 0, 10), (b'z', 9, 5)], Some(100)));
    assert!(
        matches!(
            e.kind,
            DecodeErrorKind::Unordered {
                offset: 9,
                prev_end: 10
            }
        ),
        "{e}"
    );
    assert_eq!(e.part, Part::Zero);
    let e = decode_err(&v1_with(&[(b'z', 50, 5), (b'w', 0, 1)], Some(100)));
    assert!(matches!(e.kind, DecodeErrorKind::Unordered { .. }), "{e}");
    let e = decode_err(&v1_with(&[(b'z', 90, 11)], Some(100)));
    assert!(
        matches!(e.kind, DecodeErrorKind::BeyondSize { end: 101, .. }),
        "{e}"
    );
    let e = decode_err(&v1_with(&[(b'z', u64::MAX, 2)], Some(u64::MAX)));
    assert!(
        matches!(e.kind, DecodeErrorKind::ExtentOverflow { .. }),
        "{e}"
    );
}

#[test]
fn metadata_after_data_or_twice_is_refused() {
    let mut s = v1_with(&[(b'z', 0, 1)], Some(10));
    s.pop();
    s.push(b's');
    s.extend_from_slice(&le64(10));
    s.push(b'e');
    let e = decode_err(&s);
    assert!(matches!(e.kind, DecodeErrorKind::MetadataAfterData), "{e}");
    let mut s = b"rbd diff v1\nt\x01\0\0\0at\x01\0\0\0be".to_vec();
    let e = decode_err(&s);
    assert!(matches!(e.kind, DecodeErrorKind::Duplicate), "{e}");
    assert_eq!((e.part, e.offset), (Part::ToSnap, 18));
    s.truncate(18);
    s.push(b's');
    s.extend_from_slice(&le64(0));
    s.push(b'e');
    decode_all(&s).unwrap();
}

#[test]
fn the_metadata_must_give_the_size_and_a_to_snapshot_for_a_protection_flag() {
    let e = decode_err(
        b"rbd diff v1
e",
    );
    assert!(matches!(e.kind, DecodeErrorKind::MissingSize), "{e}");
    assert_eq!((e.part, e.offset), (Part::End, 12));
    let e = decode_err(&v1_with(&[(b'z', 0, 1)], None));
    assert!(matches!(e.kind, DecodeErrorKind::MissingSize), "{e}");
    assert_eq!((e.part, e.offset), (Part::Zero, 12));
    let mut s = b"rbd diff v2
p"
    .to_vec();
    s.extend_from_slice(&le64(1));
    s.push(0);
    s.push(b's');
    s.extend_from_slice(&le64(8));
    s.extend_from_slice(&le64(0));
    s.push(b'e');
    let e = decode_err(&s);
    assert!(matches!(e.kind, DecodeErrorKind::MissingToSnap), "{e}");
}

#[test]
fn bytes_after_the_end_are_refused_before_the_end_is_returned() {
    let mut s = v1_sample();
    let end_at = s.len() as u64;
    s.push(b'z');
    let mut r = DiffReader::new(&s[..]).unwrap();
    let e = loop {
        match r.next_record() {
            Ok(Some(DiffRecord::End)) => panic!("End returned with bytes after it"),
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert!(matches!(e.kind, DecodeErrorKind::AfterEnd), "{e}");
    assert_eq!((e.part, e.offset), (Part::Zero, end_at));
    let again = r.next_record().unwrap_err();
    assert!(matches!(again.kind, DecodeErrorKind::Failed), "{again}");
}

#[test]
fn the_writer_refuses_records_out_of_order_and_writes_nothing_for_them() {
    let mut w = DiffWriter::new(Vec::new(), DiffVersion::V1).unwrap();
    let kind = |r: Result<(), EncodeError>| r.unwrap_err().kind;
    assert!(matches!(kind(w.zero(0, 1)), EncodeErrorKind::MissingSize));
    assert!(matches!(kind(w.protected(true)), EncodeErrorKind::NotInV1));
    w.to_snap("s").unwrap();
    assert!(matches!(kind(w.to_snap("s")), EncodeErrorKind::Duplicate));
    w.size(100).unwrap();
    w.begin_write(10, 4).unwrap();
    assert!(matches!(
        kind(w.zero(20, 1)),
        EncodeErrorKind::DataPending(4)
    ));
    assert!(matches!(
        kind(w.write_data(b"12345")),
        EncodeErrorKind::DataOverrun { .. }
    ));
    w.write_data(b"12").unwrap();
    w.write_data(b"34").unwrap();
    assert!(matches!(
        kind(w.zero(13, 1)),
        EncodeErrorKind::Unordered { .. }
    ));
    assert!(matches!(
        kind(w.zero(99, 2)),
        EncodeErrorKind::BeyondSize { .. }
    ));
    assert!(matches!(
        kind(w.from_snap("f")),
        EncodeErrorKind::MetadataAfterData
    ));
    assert!(matches!(
        kind(w.zero(u64::MAX, 2)),
        EncodeErrorKind::ExtentOverflow { .. }
    ));
    w.zero(14, 86).unwrap();
    let bytes = w.finish().unwrap();
    let (recs, data) = decode_all(&bytes).unwrap();
    assert_eq!(
        recs,
        vec![
            DiffRecord::ToSnap("s".into()),
            DiffRecord::Size(100),
            DiffRecord::Write { offset: 10, len: 4 },
            DiffRecord::Zero {
                offset: 14,
                len: 86
            },
            DiffRecord::End
        ]
    );
    assert_eq!(data, b"1234");
}

#[test]
fn the_writer_refuses_to_end_with_data_missing_or_without_a_size() {
    let w = DiffWriter::new(Vec::new(), DiffVersion::V1).unwrap();
    assert!(matches!(
        w.finish().unwrap_err().kind,
        EncodeErrorKind::MissingSize
    ));
    let mut w = DiffWriter::new(Vec::new(), DiffVersion::V2).unwrap();
    w.protected(false).unwrap();
    w.size(10).unwrap();
    assert!(matches!(
        w.zero(0, 1).unwrap_err().kind,
        EncodeErrorKind::MissingToSnap
    ));
    w.to_snap("t").unwrap();
    w.begin_write(0, 3).unwrap();
    assert!(matches!(
        w.finish().unwrap_err().kind,
        EncodeErrorKind::DataPending(3)
    ));
}
