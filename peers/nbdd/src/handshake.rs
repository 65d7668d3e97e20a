//! The fixed newstyle handshake: the options a client may send before
//! transmission, and the export and features it ends with.

use std::io::{self, Read, Write};

use archipelago_config::mapped::MappedSet;

use crate::proto::*;
use crate::server::{Export, Server};
use crate::sock::Sock;

/// The longest option payload accepted.
const MAX_OPTION_LEN: u32 = 64 << 10;

/// What a finished handshake agreed on.
pub(crate) struct Handshake {
    pub(crate) export: Export,
    pub(crate) structured: bool,
    pub(crate) meta: bool,
}

impl Server {
    /// The handshake; `None` when the client aborted or left.
    pub(crate) fn handshake(&self, s: &mut Sock) -> io::Result<Option<Handshake>> {
        let mut hello = Vec::new();
        hello.extend_from_slice(&NBDMAGIC.to_be_bytes());
        hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
        hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
        s.write_all(&hello)?;
        let cflags = read_u32(s)?;
        if cflags & !u32::from(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES) != 0 {
            return Err(bad("unknown client flags"));
        }
        let no_zeroes = cflags & u32::from(FLAG_NO_ZEROES) != 0;
        let set = MappedSet::load(&self.settings.mapped_file).unwrap_or_else(|e| {
            log::warn!("{e}");
            MappedSet::default()
        });
        let mut structured = false;
        let mut meta = false;
        loop {
            if read_u64(s)? != IHAVEOPT {
                return Err(bad("bad option magic"));
            }
            let opt = read_u32(s)?;
            let len = read_u32(s)?;
            if len > MAX_OPTION_LEN {
                return Err(bad("option too long"));
            }
            let mut data = vec![0u8; len as usize];
            s.read_exact(&mut data)?;
            let reply =
                |s: &mut Sock, kind: u32, d: &[u8]| s.write_all(&option_reply(opt, kind, d));
            match opt {
                OPT_ABORT => {
                    let _ = reply(s, REP_ACK, &[]);
                    return Ok(None);
                }
                OPT_LIST => {
                    if len != 0 {
                        reply(s, REP_ERR_INVALID, &[])?;
                        continue;
                    }
                    for v in &set.volumes {
                        let mut d = (v.name.len() as u32).to_be_bytes().to_vec();
                        d.extend_from_slice(v.name.as_bytes());
                        reply(s, REP_SERVER, &d)?;
                    }
                    reply(s, REP_ACK, &[])?;
                }
                OPT_STRUCTURED_REPLY => {
                    if len != 0 {
                        reply(s, REP_ERR_INVALID, &[])?;
                    } else {
                        structured = true;
                        reply(s, REP_ACK, &[])?;
                    }
                }
                OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                    let Some((name, queries)) = parse_meta(&data) else {
                        reply(s, REP_ERR_INVALID, &[])?;
                        continue;
                    };
                    if opt == OPT_SET_META_CONTEXT && !structured {
                        reply(s, REP_ERR_INVALID, &[])?;
                        continue;
                    }
                    if set.get(&name).is_none() {
                        reply(s, REP_ERR_UNKNOWN, &[])?;
                        continue;
                    }
                    let listing = opt == OPT_LIST_META_CONTEXT;
                    let wanted = queries.iter().any(|q| {
                        q == BASE_ALLOCATION || (listing && (q == "base:" || q.is_empty()))
                    }) || (listing && queries.is_empty());
                    if opt == OPT_SET_META_CONTEXT {
                        meta = wanted;
                    }
                    if wanted {
                        let mut d = BASE_ALLOCATION_ID.to_be_bytes().to_vec();
                        d.extend_from_slice(BASE_ALLOCATION.as_bytes());
                        reply(s, REP_META_CONTEXT, &d)?;
                    }
                    reply(s, REP_ACK, &[])?;
                }
                OPT_EXPORT_NAME => {
                    let name = String::from_utf8_lossy(&data).into_owned();
                    let Ok(export) = self.lookup(&set, &name) else {
                        return Err(bad("unknown export"));
                    };
                    let mut d = export.size.to_be_bytes().to_vec();
                    d.extend_from_slice(&self.transmission_flags(&export).to_be_bytes());
                    if !no_zeroes {
                        d.extend_from_slice(&[0u8; 124]);
                    }
                    s.write_all(&d)?;
                    return Ok(Some(Handshake {
                        export,
                        structured,
                        meta: false,
                    }));
                }
                OPT_INFO | OPT_GO => {
                    let Some((name, _infos)) = parse_info(&data) else {
                        reply(s, REP_ERR_INVALID, &[])?;
                        continue;
                    };
                    let export = match self.lookup(&set, &name) {
                        Ok(e) => e,
                        Err(code) => {
                            reply(s, code, &[])?;
                            continue;
                        }
                    };
                    let mut d = INFO_EXPORT.to_be_bytes().to_vec();
                    d.extend_from_slice(&export.size.to_be_bytes());
                    d.extend_from_slice(&self.transmission_flags(&export).to_be_bytes());
                    reply(s, REP_INFO, &d)?;
                    let mut d = INFO_NAME.to_be_bytes().to_vec();
                    d.extend_from_slice(name.as_bytes());
                    reply(s, REP_INFO, &d)?;
                    let mut d = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
                    for v in [1u32, 4096, self.max_block] {
                        d.extend_from_slice(&v.to_be_bytes());
                    }
                    reply(s, REP_INFO, &d)?;
                    reply(s, REP_ACK, &[])?;
                    if opt == OPT_GO {
                        return Ok(Some(Handshake {
                            export,
                            structured,
                            meta,
                        }));
                    }
                }
                _ => reply(s, REP_ERR_UNSUP, &[])?,
            }
        }
    }

    fn transmission_flags(&self, e: &Export) -> u16 {
        let mut f = TF_HAS_FLAGS | TF_SEND_FLUSH | TF_SEND_FUA;
        if e.readonly {
            f |= TF_READ_ONLY;
        } else {
            f |= TF_SEND_TRIM | TF_SEND_WRITE_ZEROES | TF_CAN_MULTI_CONN;
        }
        f
    }
}

pub(crate) fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

fn read_u32(s: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    s.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_u64(s: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    s.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

/// `u32 len, name, u16 count, u16 infos...`.
fn parse_info(d: &[u8]) -> Option<(String, Vec<u16>)> {
    let n = u32::from_be_bytes(d.get(0..4)?.try_into().ok()?) as usize;
    let name = d.get(4..4usize.checked_add(n)?)?;
    let mut p = 4 + n;
    let count = u16::from_be_bytes(d.get(p..p + 2)?.try_into().ok()?) as usize;
    p += 2;
    if d.len() != p + 2 * count {
        return None;
    }
    let infos = (0..count)
        .map(|i| u16::from_be_bytes([d[p + 2 * i], d[p + 2 * i + 1]]))
        .collect();
    Some((String::from_utf8_lossy(name).into_owned(), infos))
}

/// `u32 len, name, u32 count, (u32 len, query)...`.
fn parse_meta(d: &[u8]) -> Option<(String, Vec<String>)> {
    let u32_at = |p: usize| -> Option<usize> {
        Some(u32::from_be_bytes(d.get(p..p.checked_add(4)?)?.try_into().ok()?) as usize)
    };
    let n = u32_at(0)?;
    let name = String::from_utf8_lossy(d.get(4..4usize.checked_add(n)?)?).into_owned();
    let mut p = 4 + n;
    let count = u32_at(p)?;
    p += 4;
    let mut queries = Vec::new();
    for _ in 0..count {
        let l = u32_at(p)?;
        p += 4;
        queries.push(String::from_utf8_lossy(d.get(p..p.checked_add(l)?)?).into_owned());
        p += l;
    }
    (p == d.len()).then_some((name, queries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_payloads_are_checked() {
        let mut d = 3u32.to_be_bytes().to_vec();
        d.extend_from_slice(b"vol");
        d.extend_from_slice(&1u16.to_be_bytes());
        d.extend_from_slice(&3u16.to_be_bytes());
        assert_eq!(parse_info(&d), Some(("vol".into(), vec![3])));
        assert_eq!(parse_info(&d[..d.len() - 1]), None);
        assert_eq!(parse_info(&[0xff; 4]), None);
        let mut m = 3u32.to_be_bytes().to_vec();
        m.extend_from_slice(b"vol");
        m.extend_from_slice(&1u32.to_be_bytes());
        m.extend_from_slice(&15u32.to_be_bytes());
        m.extend_from_slice(b"base:allocation");
        assert_eq!(
            parse_meta(&m),
            Some(("vol".into(), vec!["base:allocation".into()]))
        );
        assert_eq!(parse_meta(&m[..m.len() - 1]), None);
        let mut huge = 0u32.to_be_bytes().to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(parse_meta(&huge), None);
    }
}
