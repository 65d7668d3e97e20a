//! Transmission, the reading side: requests are read (payloads included)
//! and checked against the export, then handed to the connection's
//! `IoWorker` as `Job`s.

use std::io::{self, Read};
use std::sync::mpsc::SyncSender;

use crate::handshake::{bad, Handshake};
use crate::proto::*;
use crate::server::Server;
use crate::sock::Sock;
use crate::HARD_MAX;

/// Read buffer of a connection's request reader.
const READ_BUFFER: usize = 256 << 10;

impl Server {
    /// Reads requests until DISC, EOF or a protocol error.
    pub(crate) fn read_requests(
        &self,
        s: &mut Sock,
        hs: &Handshake,
        tx: &SyncSender<Job>,
    ) -> io::Result<()> {
        let size = hs.export.size;
        // Buffered: at a queue depth, one read(2) takes many requests.
        let mut s = io::BufReader::with_capacity(READ_BUFFER, s);
        loop {
            let mut b = [0u8; RequestHeader::SIZE];
            match s.read_exact(&mut b) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
            let h = RequestHeader::parse(&b).ok_or_else(|| bad("bad request magic"))?;
            let in_range = h
                .offset
                .checked_add(u64::from(h.length))
                .is_some_and(|end| end <= size);
            let job = match h.kind {
                CMD_DISC => return Ok(()),
                CMD_WRITE => {
                    if h.length > HARD_MAX {
                        return Err(bad("write larger than the maximum"));
                    }
                    let mut data = vec![0u8; h.length as usize];
                    s.read_exact(&mut data)?;
                    if hs.export.readonly {
                        Job::fail(h, EPERM)
                    } else if !in_range {
                        Job::fail(h, EINVAL)
                    } else {
                        Job::new(h, Kind::Write(data))
                    }
                }
                CMD_READ if h.length > HARD_MAX => Job::fail(h, EOVERFLOW),
                CMD_READ if !in_range => Job::fail(h, EINVAL),
                CMD_READ => Job::new(h, Kind::Read),
                CMD_FLUSH => Job::new(h, Kind::Flush),
                CMD_TRIM | CMD_WRITE_ZEROES if hs.export.readonly => Job::fail(h, EPERM),
                CMD_TRIM | CMD_WRITE_ZEROES if !in_range => Job::fail(h, EINVAL),
                CMD_TRIM => Job::new(h, Kind::Trim),
                CMD_WRITE_ZEROES => Job::new(h, Kind::Zeroes),
                CMD_BLOCK_STATUS if !hs.meta || !in_range || h.length == 0 => Job::fail(h, EINVAL),
                CMD_BLOCK_STATUS => Job::new(h, Kind::Status),
                _ => Job::fail(h, EINVAL),
            };
            if tx.send(job).is_err() {
                return Ok(());
            }
        }
    }
}

/// What a request asks for.
#[derive(Debug)]
pub(crate) enum Kind {
    Read,
    Write(Vec<u8>),
    Flush,
    Trim,
    Zeroes,
    Status,
    Failed(u32),
}

/// A checked request, ready for the I/O thread.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) h: RequestHeader,
    pub(crate) kind: Kind,
}

impl Job {
    fn new(h: RequestHeader, kind: Kind) -> Job {
        Job { h, kind }
    }
    fn fail(h: RequestHeader, errno: u32) -> Job {
        Job {
            h,
            kind: Kind::Failed(errno),
        }
    }
}
