//! How a failed reply says why, for people.
//!
//! A peer failing a request sets its error code and, when it has more to
//! say ("volume vm1 is locked by host-a", "run vlmc upgrade vm1"), replaces
//! the request's target by that message and sets [`Flags::DETAIL`]: the
//! target is no longer needed once the request failed, and the data buffer
//! is left alone (a client may resend it). [`fail_with_detail`] writes it,
//! [`error_of`] reads it back.

use xseg_shm::{Descriptor, Port, Rejected, Request};

use archipelago_protocol::{Error, ErrorCode, Flags};

/// Fails `req` on `port` with `error`, carrying its detail (cut at a
/// character boundary to 256 bytes) in the target field.
pub fn fail_with_detail(port: &Port, mut req: Request, error: &Error) -> Result<(), Rejected> {
    if !error.detail.is_empty() {
        let mut end = error.detail.len().min(xseg_shm::layout::MAX_TARGET_LEN);
        while !error.detail.is_char_boundary(end) {
            end -= 1;
        }
        if port
            .set_target(&mut req, &error.detail.as_bytes()[..end])
            .is_ok()
        {
            let d = port.desc(&req);
            d.set_flags(d.flags() | Flags::DETAIL.0);
        }
    }
    port.fail(req, error.code.code())
}

/// The error of a failed reply: its code, and its detail if the peer gave
/// one, else `fallback` (e.g. the name the caller asked about).
pub fn error_of(desc: &Descriptor, fallback: impl FnOnce() -> String) -> Error {
    let code = ErrorCode::from_code(desc.error());
    if Flags(desc.flags()).contains(Flags::DETAIL) {
        let target = desc.target();
        Error::with(
            code,
            String::from_utf8_lossy(target.as_bytes()).into_owned(),
        )
    } else {
        Error::with(code, fallback())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use xseg_shm::{Segment, SegmentConfig, SegmentName};

    #[test]
    fn a_failure_carries_its_detail_and_a_plain_one_falls_back() {
        let path = std::env::temp_dir().join(format!("proto-reply-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let name = SegmentName::parse(path.to_str().unwrap()).unwrap();
        let config = SegmentConfig {
            ports: 4,
            static_ports: 2,
            requests: 4,
            buffer_counts: vec![],
            ..Default::default()
        };
        let seg = Arc::new(Segment::create(&name, &config).unwrap());
        let (server, client) = (seg.bind(1).unwrap(), seg.bind_dynamic().unwrap());
        for detail in ["volume vm1 is locked by host-a", "", &"é".repeat(200)] {
            let mut r = client.get(1).unwrap();
            client.set_target(&mut r, b"vm1").unwrap();
            client.submit(r).unwrap();
            let r = server.accept().unwrap();
            fail_with_detail(&server, r, &Error::with(ErrorCode::Locked, detail)).unwrap();
            let reply = client.receive().unwrap();
            let e = error_of(client.desc(&reply), || "vm1".to_owned());
            assert_eq!(e.code, ErrorCode::Locked);
            match detail {
                "" => assert_eq!(e.detail, "vm1"),
                d if d.len() > 256 => {
                    assert_eq!(e.detail, "é".repeat(128), "cut at a char boundary")
                }
                d => assert_eq!(e.detail, d),
            }
            client.put(reply);
        }
        drop((server, client));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn the_detail_flag_is_never_valid_in_a_request() {
        assert_ne!(Flags::DETAIL.0 & !Flags::ALL.0, 0);
        assert_eq!(Flags(Flags::DETAIL.0).unknown_bits(), Flags::DETAIL.0);
    }
}
