//! Owned models of the streams, their encoding and decoding through the
//! crate, and applying a diff to an image in memory: shared by the
//! property tests and the interoperability tests.
#![allow(dead_code)] // each test binary uses part of it

use archipelago_rbd_stream::{
    DecodeError, DiffReader, DiffRecord, DiffVersion, DiffWriter, ImageReader, ImageRecord,
    ImageWriter,
};

/// One extent of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extent {
    /// Data at an offset.
    Write(u64, Vec<u8>),
    /// Zeroes: offset, length.
    Zero(u64, u64),
}

/// A whole diff, owned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diff {
    pub from: Option<String>,
    pub to: Option<String>,
    pub protected: Option<bool>,
    pub size: u64,
    pub extents: Vec<Extent>,
}

/// A whole full-image stream, owned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Image {
    pub order: Option<u64>,
    pub features: Option<u64>,
    pub stripe_unit: Option<u64>,
    pub stripe_count: Option<u64>,
    pub meta: Vec<(String, Vec<u8>)>,
    pub diffs: Vec<Diff>,
}

pub fn encode_diff(d: &Diff, version: DiffVersion) -> Vec<u8> {
    let mut w = DiffWriter::new(Vec::new(), version).unwrap();
    if let Some(f) = &d.from {
        w.from_snap(f).unwrap();
    }
    if let Some(t) = &d.to {
        w.to_snap(t).unwrap();
    }
    if let Some(p) = d.protected {
        w.protected(p).unwrap();
    }
    w.size(d.size).unwrap();
    for e in &d.extents {
        match e {
            Extent::Write(off, data) => {
                // Stream it in pieces, as an exporter would.
                w.begin_write(*off, data.len() as u64).unwrap();
                for piece in data.chunks(1000) {
                    w.write_data(piece).unwrap();
                }
            }
            Extent::Zero(off, len) => w.zero(*off, *len).unwrap(),
        }
    }
    w.finish().unwrap()
}

/// Drains the data of a `w` record through a small buffer.
fn drain(
    mut read: impl FnMut(&mut [u8]) -> Result<usize, DecodeError>,
    buf_len: usize,
) -> Result<Vec<u8>, DecodeError> {
    let mut buf = vec![0u8; buf_len.max(1)];
    let mut out = Vec::new();
    loop {
        let n = read(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Adds a decoded diff record to a model; true at the end.
fn add(
    d: &mut Diff,
    rec: DiffRecord,
    data: impl FnOnce() -> Result<Vec<u8>, DecodeError>,
) -> Result<bool, DecodeError> {
    match rec {
        DiffRecord::FromSnap(s) => d.from = Some(s),
        DiffRecord::ToSnap(s) => d.to = Some(s),
        DiffRecord::Protected(p) => d.protected = Some(p),
        DiffRecord::Size(s) => d.size = s,
        DiffRecord::Write { offset, len } => {
            let data = data()?;
            assert_eq!(
                data.len() as u64,
                len,
                "read_data gives exactly the record's data"
            );
            d.extents.push(Extent::Write(offset, data));
        }
        DiffRecord::Zero { offset, len } => d.extents.push(Extent::Zero(offset, len)),
        DiffRecord::Skipped { .. } => {}
        DiffRecord::End => return Ok(true),
    }
    Ok(false)
}

pub fn decode_diff(bytes: &[u8], buf_len: usize) -> Result<(Diff, DiffVersion), DecodeError> {
    let mut r = DiffReader::new(bytes)?;
    let mut d = Diff::default();
    let mut ended = false;
    while let Some(rec) = r.next_record()? {
        assert!(!ended, "no record after End");
        let r2 = &mut r;
        ended = add(&mut d, rec, || drain(|b| r2.read_data(b), buf_len))?;
    }
    assert!(ended, "None only after End");
    Ok((d, r.version()))
}

pub fn encode_image(img: &Image) -> Vec<u8> {
    let mut w = ImageWriter::new(Vec::new()).unwrap();
    if let Some(v) = img.order {
        w.order(v).unwrap();
    }
    if let Some(v) = img.features {
        w.features(v).unwrap();
    }
    if let Some(v) = img.stripe_unit {
        w.stripe_unit(v).unwrap();
    }
    if let Some(v) = img.stripe_count {
        w.stripe_count(v).unwrap();
    }
    for (k, v) in &img.meta {
        w.meta(k, v).unwrap();
    }
    w.begin_diffs(img.diffs.len() as u64).unwrap();
    for d in &img.diffs {
        w.begin_diff(d.from.as_deref(), d.to.as_deref()).unwrap();
        if let Some(p) = d.protected {
            w.protected(p).unwrap();
        }
        w.size(d.size).unwrap();
        for e in &d.extents {
            match e {
                Extent::Write(off, data) => w.write(*off, data).unwrap(),
                Extent::Zero(off, len) => w.zero(*off, *len).unwrap(),
            }
        }
        w.end_diff().unwrap();
    }
    w.finish().unwrap()
}

pub fn decode_image(bytes: &[u8], buf_len: usize) -> Result<Image, DecodeError> {
    let mut r = ImageReader::new(bytes)?;
    let mut img = Image::default();
    let mut ended = false;
    while let Some(rec) = r.next_record()? {
        assert!(!ended, "no record after End");
        match rec {
            ImageRecord::Order(v) => img.order = Some(v),
            ImageRecord::Format(_) | ImageRecord::Skipped { .. } | ImageRecord::Diffs { .. } => {}
            ImageRecord::Features(v) => img.features = Some(v),
            ImageRecord::StripeUnit(v) => img.stripe_unit = Some(v),
            ImageRecord::StripeCount(v) => img.stripe_count = Some(v),
            ImageRecord::Meta { key, value } => img.meta.push((key, value)),
            ImageRecord::DiffStart { index } => {
                assert_eq!(index as usize, img.diffs.len());
                img.diffs.push(Diff::default());
            }
            ImageRecord::Diff(rec) => {
                let d = img.diffs.last_mut().expect("DiffStart comes first");
                let r2 = &mut r;
                add(d, rec, || drain(|b| r2.read_data(b), buf_len))?;
            }
            ImageRecord::End => ended = true,
        }
    }
    assert!(ended, "None only after End");
    Ok(img)
}

/// Applies a diff to an image's bytes, as `rbd import-diff` does:
/// resize, then the extents in order.
pub fn apply(image: &mut Vec<u8>, d: &Diff) {
    image.resize(d.size as usize, 0);
    for e in &d.extents {
        match e {
            Extent::Write(off, data) => {
                image[*off as usize..*off as usize + data.len()].copy_from_slice(data)
            }
            Extent::Zero(off, len) => image[*off as usize..(*off + *len) as usize].fill(0),
        }
    }
}
