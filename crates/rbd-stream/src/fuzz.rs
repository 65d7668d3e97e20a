//! [`fuzz_readers`]: what must hold of any input, for fuzzers and
//! property tests.

use crate::{
    DecodeError, DiffReader, DiffRecord, DiffVersion, DiffWriter, ImageReader, ImageRecord,
    ImageWriter,
};

/// Feeds `bytes` to both readers and checks what must hold of any input:
/// no panic, and a stream that decodes to its end is one the writers
/// can write: re-encoded, it decodes to the same records and data
/// (byte for byte for a diff v1; unknown records, which the writers
/// cannot write, aside).
#[doc(hidden)]
pub fn fuzz_readers(bytes: &[u8]) {
    if let Ok((version, records)) = read_diff(bytes) {
        let again = write_diff(version, &records);
        let known: Vec<_> = records
            .into_iter()
            .filter(|(r, _)| !matches!(r, DiffRecord::Skipped { .. }))
            .collect();
        assert_eq!(
            read_diff(&again).expect("a re-encoded diff decodes"),
            (version, known)
        );
        if version == DiffVersion::V1 {
            assert_eq!(again, bytes, "diff v1 re-encodes byte for byte");
        }
    }
    if let Ok(image) = read_image(bytes) {
        let again = write_image(&image);
        let image = Image {
            meta: image
                .meta
                .into_iter()
                .filter(|r| !matches!(r, ImageRecord::Skipped { .. }))
                .collect(),
            diffs: image.diffs,
        };
        assert_eq!(
            read_image(&again).expect("a re-encoded image decodes"),
            image
        );
    }
}

type Records = Vec<(DiffRecord, Vec<u8>)>;

fn drain(
    mut read: impl FnMut(&mut [u8]) -> Result<usize, DecodeError>,
) -> Result<Vec<u8>, DecodeError> {
    let mut buf = [0u8; 4096];
    let mut out = Vec::new();
    loop {
        match read(&mut buf)? {
            0 => return Ok(out),
            n => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn read_diff(bytes: &[u8]) -> Result<(DiffVersion, Records), DecodeError> {
    let mut r = DiffReader::new(bytes)?;
    let mut out = Vec::new();
    while let Some(rec) = r.next_record()? {
        let data = drain(|b| r.read_data(b))?;
        out.push((rec, data));
    }
    Ok((r.version(), out))
}

fn write_diff(version: DiffVersion, records: &Records) -> Vec<u8> {
    let mut w = DiffWriter::new(Vec::new(), version).expect("a Vec takes the banner");
    for (rec, data) in records {
        let r = match rec {
            DiffRecord::FromSnap(s) => w.from_snap(s),
            DiffRecord::ToSnap(s) => w.to_snap(s),
            DiffRecord::Protected(p) => w.protected(*p),
            DiffRecord::Size(s) => w.size(*s),
            DiffRecord::Write { offset, .. } => w.write(*offset, data),
            DiffRecord::Zero { offset, len } => w.zero(*offset, *len),
            DiffRecord::Skipped { .. } | DiffRecord::End => Ok(()),
        };
        r.unwrap_or_else(|e| panic!("the writer refuses {rec:?}, which the reader accepted: {e}"));
    }
    w.finish()
        .expect("the writer ends what the reader accepted")
}

/// A full image, its diffs normalised (metadata records in a set order).
#[derive(Debug, PartialEq, Eq)]
struct Image {
    meta: Vec<ImageRecord>,
    diffs: Vec<Diff>,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Diff {
    from: Option<String>,
    to: Option<String>,
    protected: Option<bool>,
    size: u64,
    extents: Records,
}

fn read_image(bytes: &[u8]) -> Result<Image, DecodeError> {
    let mut r = ImageReader::new(bytes)?;
    let mut image = Image {
        meta: Vec::new(),
        diffs: Vec::new(),
    };
    while let Some(rec) = r.next_record()? {
        let data = drain(|b| r.read_data(b))?;
        match rec {
            ImageRecord::DiffStart { .. } => image.diffs.push(Diff::default()),
            ImageRecord::Diff(rec) => {
                let d = image.diffs.last_mut().expect("DiffStart comes first");
                match rec {
                    DiffRecord::FromSnap(s) => d.from = Some(s),
                    DiffRecord::ToSnap(s) => d.to = Some(s),
                    DiffRecord::Protected(p) => d.protected = Some(p),
                    DiffRecord::Size(s) => d.size = s,
                    DiffRecord::Skipped { .. } | DiffRecord::End => {}
                    extent => d.extents.push((extent, data)),
                }
            }
            ImageRecord::End => {}
            meta => image.meta.push(meta),
        }
    }
    Ok(image)
}

fn write_image(image: &Image) -> Vec<u8> {
    let mut w = ImageWriter::new(Vec::new()).expect("a Vec takes the banner");
    let fail = |what: &dyn std::fmt::Debug, e| -> ! {
        panic!("the writer refuses {what:?}, which the reader accepted: {e}")
    };
    for rec in &image.meta {
        let r = match rec {
            ImageRecord::Order(v) => w.order(*v),
            ImageRecord::Format(v) => w.format(*v),
            ImageRecord::Features(v) => w.features(*v),
            ImageRecord::StripeUnit(v) => w.stripe_unit(*v),
            ImageRecord::StripeCount(v) => w.stripe_count(*v),
            ImageRecord::Meta { key, value } => w.meta(key, value),
            ImageRecord::Diffs { count } => w.begin_diffs(*count),
            _ => Ok(()),
        };
        r.unwrap_or_else(|e| fail(rec, e));
    }
    for d in &image.diffs {
        w.begin_diff(d.from.as_deref(), d.to.as_deref())
            .unwrap_or_else(|e| fail(d, e));
        if let Some(p) = d.protected {
            w.protected(p).unwrap_or_else(|e| fail(d, e));
        }
        w.size(d.size).unwrap_or_else(|e| fail(d, e));
        for (rec, data) in &d.extents {
            let r = match rec {
                DiffRecord::Write { offset, .. } => w.write(*offset, data),
                DiffRecord::Zero { offset, len } => w.zero(*offset, *len),
                _ => unreachable!("extents only"),
            };
            r.unwrap_or_else(|e| fail(rec, e));
        }
        w.end_diff().unwrap_or_else(|e| fail(d, e));
    }
    w.finish()
        .expect("the writer ends what the reader accepted")
}
