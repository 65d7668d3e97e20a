//! A set of names kept on disk: names are pushed in any order, sorted in
//! memory up to a byte budget, spilled as sorted runs, and read back as
//! one sorted stream without duplicates (a k-way merge of the runs).
//!
//! Memory: the budget while pushing (names plus their `String` overhead,
//! counted as 24 bytes each), and one buffered reader (64 KiB) plus one
//! name per run while merging. Names must not contain `\n` (store names
//! cannot).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Bytes counted per name besides its text (a `String` on 64-bit).
const NAME_OVERHEAD: usize = 24;
/// Read buffer per run while merging.
const RUN_BUFFER: usize = 64 << 10;

/// Sorts names with bounded memory.
pub struct ExternalSorter {
    dir: PathBuf,
    budget: usize,
    buffer: Vec<String>,
    buffered_bytes: usize,
    runs: Vec<PathBuf>,
    pushed: u64,
}

impl ExternalSorter {
    /// A sorter spilling runs into `dir` (which must exist) once the
    /// buffered names pass `budget` bytes.
    pub fn new(dir: &Path, budget: usize) -> ExternalSorter {
        ExternalSorter {
            dir: dir.to_owned(),
            budget: budget.max(1),
            buffer: Vec::new(),
            buffered_bytes: 0,
            runs: Vec::new(),
            pushed: 0,
        }
    }

    /// Adds a name.
    pub fn push(&mut self, name: String) -> io::Result<()> {
        self.buffered_bytes += name.len() + NAME_OVERHEAD;
        self.buffer.push(name);
        self.pushed += 1;
        if self.buffered_bytes >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    /// Names pushed so far (duplicates included).
    pub fn pushed(&self) -> u64 {
        self.pushed
    }

    /// Runs written so far.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    fn spill(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.buffer.sort_unstable();
        self.buffer.dedup();
        let path = self.dir.join(format!("run-{:06}", self.runs.len()));
        let mut w = BufWriter::new(File::create(&path)?);
        for n in self.buffer.drain(..) {
            w.write_all(n.as_bytes())?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
        self.buffered_bytes = 0;
        self.runs.push(path);
        Ok(())
    }

    /// The sorted, deduplicated names.
    pub fn finish(mut self) -> io::Result<SortedNames> {
        self.spill()?;
        let mut readers = Vec::with_capacity(self.runs.len());
        let mut heap = BinaryHeap::new();
        for (i, p) in self.runs.iter().enumerate() {
            let mut r = BufReader::with_capacity(RUN_BUFFER, File::open(p)?);
            if let Some(n) = read_line(&mut r)? {
                heap.push(Reverse((n, i)));
            }
            readers.push(r);
        }
        Ok(SortedNames {
            readers,
            heap,
            last: None,
        })
    }
}

fn read_line(r: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut s = String::new();
    if r.read_line(&mut s)? == 0 {
        return Ok(None);
    }
    if s.ends_with('\n') {
        s.pop();
    }
    Ok(Some(s))
}

/// The merged stream of an [`ExternalSorter`].
pub struct SortedNames {
    readers: Vec<BufReader<File>>,
    heap: BinaryHeap<Reverse<(String, usize)>>,
    last: Option<String>,
}

impl Iterator for SortedNames {
    type Item = io::Result<String>;

    fn next(&mut self) -> Option<io::Result<String>> {
        loop {
            let Reverse((name, i)) = self.heap.pop()?;
            match read_line(&mut self.readers[i]) {
                Ok(Some(n)) => self.heap.push(Reverse((n, i))),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            if self.last.as_deref() != Some(name.as_str()) {
                self.last = Some(name.clone());
                return Some(Ok(name));
            }
        }
    }
}

/// A sorted list of names in a file, written in order and read back once.
pub struct NameFile {
    path: PathBuf,
    writer: Option<BufWriter<File>>,
    count: u64,
    last: Option<String>,
}

impl NameFile {
    /// A new empty list at `path`.
    pub fn create(path: PathBuf) -> io::Result<NameFile> {
        let writer = Some(BufWriter::new(File::create(&path)?));
        Ok(NameFile {
            path,
            writer,
            count: 0,
            last: None,
        })
    }

    /// Appends `name`, which must sort after the previous one.
    pub fn push(&mut self, name: &str) -> io::Result<()> {
        if self.last.as_deref().is_some_and(|l| l >= name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("listing out of order at {name}"),
            ));
        }
        let w = self.writer.as_mut().expect("open for writing");
        w.write_all(name.as_bytes())?;
        w.write_all(b"\n")?;
        self.count += 1;
        self.last = Some(name.to_owned());
        Ok(())
    }

    /// Names written.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// No names.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Closes the list and returns its path, for [`read_names`].
    pub fn close(mut self) -> io::Result<PathBuf> {
        if let Some(mut w) = self.writer.take() {
            w.flush()?;
        }
        Ok(self.path)
    }
}

/// The names of a list written by a [`NameFile`], in order.
pub fn read_names(path: &Path) -> io::Result<impl Iterator<Item = io::Result<String>>> {
    let mut r = BufReader::with_capacity(RUN_BUFFER, File::open(path)?);
    Ok(std::iter::from_fn(move || read_line(&mut r).transpose()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_spilled_runs_in_order_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        // A tiny budget: a run every few names.
        let mut s = ExternalSorter::new(dir.path(), 100);
        let mut expect = Vec::new();
        for i in 0..500u64 {
            let n = format!("{:08x}", (i * 7919) % 331);
            expect.push(n.clone());
            s.push(n).unwrap();
        }
        assert!(s.runs() > 10, "spilled {} runs", s.runs());
        expect.sort();
        expect.dedup();
        let got: Vec<String> = s.finish().unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn a_name_file_refuses_disorder_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = NameFile::create(dir.path().join("l")).unwrap();
        f.push("a").unwrap();
        f.push("b").unwrap();
        assert!(f.push("b").is_err());
        assert_eq!(f.len(), 2);
        let path = f.close().unwrap();
        let got: Vec<String> = read_names(&path).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(got, ["a", "b"]);
    }
}
