//! Ties `docs/design.md` to the code: the document's byte diagrams of a
//! format 3 header and chunk are golden bytes, checked here against what
//! the encoders write for the samples below.
//!
//! A diagram is the fenced block after a line `<!-- golden: NAME -->`.
//! Each of its lines that starts with a digit is `OFFSET  HEX BYTES | field`:
//! the decimal offset must be where the line's bytes start, and the bytes
//! of all lines, in order, must be the encoding exactly. Other lines (the
//! column titles) are ignored. The document is read at compile time
//! (`include_str!`), so editing it rebuilds this test.
//!
//! When the format changes on purpose, the failure message prints the new
//! bytes; update the diagram (and the format's change log) from it.

use archipelago_mapfmt::{Chunk, ChunkRef, Entry, Header, HeaderFlags, Parent};

const DOC: &str = include_str!("../../../docs/design.md");

/// The bytes of the diagram `name`, with each line's offset checked.
fn golden(name: &str) -> Vec<u8> {
    let marker = format!("<!-- golden: {name} -->");
    let start = DOC
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/design.md has no `{marker}`"));
    let mut lines = DOC[start + marker.len()..].lines().skip(1);
    let fence = lines.next().unwrap_or("");
    assert!(
        fence.starts_with("```"),
        "`{marker}` must be followed by a fenced block, found {fence:?}"
    );
    let mut bytes = Vec::new();
    for line in lines.by_ref() {
        if line.starts_with("```") {
            return bytes;
        }
        let data = line.split('|').next().unwrap_or("");
        let mut tokens = data.split_whitespace();
        let Some(first) = tokens.next() else { continue };
        if !first.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let offset: usize = first
            .parse()
            .unwrap_or_else(|_| panic!("{name}: bad offset in {line:?}"));
        assert_eq!(offset, bytes.len(), "{name}: offset of {line:?}");
        for t in tokens {
            assert_eq!(t.len(), 2, "{name}: {t:?} in {line:?} is not one byte");
            bytes.push(
                u8::from_str_radix(t, 16)
                    .unwrap_or_else(|_| panic!("{name}: {t:?} in {line:?} is not hex")),
            );
        }
    }
    panic!("{name}: the fenced block is not closed");
}

/// The bytes as a diagram's lines would hold them, 16 to a line, for the
/// failure message.
fn dump(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .enumerate()
        .map(|(i, c)| {
            let hex: Vec<String> = c.iter().map(|b| format!("{b:02x}")).collect();
            format!("{:4}  {}\n", i * 16, hex.join(" "))
        })
        .collect()
}

fn assert_golden(name: &str, encoded: &[u8]) {
    let doc = golden(name);
    assert!(
        doc == encoded,
        "docs/design.md's `{name}` diagram ({} bytes) differs from the encoder ({} bytes), which writes:\n{}",
        doc.len(),
        encoded.len(),
        dump(encoded)
    );
}

const ID: u64 = 0x0102_0304_0506_0708;

/// A 20 GiB volume with 4 MiB objects (5120 objects: two chunk refs) in
/// its third epoch, cloned from `base`, that changed its first chunk.
fn sample_header() -> Header {
    Header {
        size: 20 << 30,
        object_size_log2: 22,
        flags: HeaderFlags::default(),
        volume_id: ID,
        epoch: 3,
        commit_seq: 7,
        next_serial: 5,
        first_private_serial: 4,
        parent: Some(Parent {
            volume_id: 0xaa,
            epoch: 2,
            name: "base".into(),
        }),
        chunks: vec![
            ChunkRef {
                owner: ID,
                serial: 4,
            },
            ChunkRef::ZERO,
        ],
    }
}

/// Chunk 4 of that volume: one entry of each kind that is stored.
fn sample_chunk() -> Chunk {
    Chunk::from_entries(
        ChunkRef {
            owner: ID,
            serial: 4,
        },
        vec![
            Entry::Owned {
                owner: ID,
                epoch: 3,
            },
            Entry::partial(
                ID,
                3,
                0b101,
                Entry::Owned {
                    owner: 0xaa,
                    epoch: 2,
                },
                u64::MAX,
            ),
            Entry::Content(std::array::from_fn(|i| 0xa0 + i as u8)),
            Entry::Legacy("archip_ab".into()),
        ],
    )
    .expect("a valid chunk")
}

#[test]
fn the_design_document_s_header_diagram_is_what_the_encoder_writes() {
    let h = sample_header();
    assert_golden("header", &h.encode().unwrap());
    assert_eq!(Header::decode(&golden("header")).unwrap(), h);
}

#[test]
fn the_design_document_s_chunk_diagram_is_what_the_encoder_writes() {
    let c = sample_chunk();
    assert_golden("chunk", &c.encode().unwrap());
    assert_eq!(Chunk::decode(&golden("chunk")).unwrap(), c);
}
