//! Human-readable output of reports.

use std::fmt::Write as _;

use xseg_shm::{RecoveryReport, SegmentReport};

use crate::size::{mib, short_size};

/// Column alignment.
#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

/// Lays out a table: a header row and data rows, columns two spaces apart.
fn table(header: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|(h, _)| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for ((cell, (_, align)), w) in cells.zip(header).zip(&widths) {
            if !l.is_empty() {
                l.push_str("  ");
            }
            match align {
                Align::Left => write!(l, "{cell:<w$}"),
                Align::Right => write!(l, "{cell:>w$}"),
            }
            .expect("writing to a String");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().map(|(h, _)| *h));
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// `now/high-water`.
fn with_hw(now: impl std::fmt::Display, hw: impl std::fmt::Display) -> String {
    format!("{now}/{hw}")
}

/// The whole report: header block, buffer classes, ports.
pub fn segment_report(r: &SegmentReport) -> String {
    let mut out = String::new();
    let buffer_bytes: u64 = r.buffers.iter().map(|b| b.size * u64::from(b.count)).sum();
    let kv = [
        ("segment", r.name.clone()),
        ("size", format!("{} ({} bytes)", mib(r.size), r.size)),
        (
            "versions",
            format!(
                "layout {}, protocol {}",
                r.layout_version, r.protocol_version
            ),
        ),
        (
            "ports",
            format!(
                "{} ({} static, {} dynamic)",
                r.ports,
                r.static_ports,
                r.ports - r.static_ports.min(r.ports)
            ),
        ),
        (
            "requests",
            format!(
                "{} free of {} (owned {}, queued {}, replied {})",
                r.requests_free,
                r.requests,
                r.requests_owned,
                r.requests_queued,
                r.requests_replied
            ),
        ),
        (
            "buffers",
            format!(
                "{} free of {} in {} classes ({})",
                r.buffers.iter().map(|b| u64::from(b.free)).sum::<u64>(),
                r.buffers.iter().map(|b| u64::from(b.count)).sum::<u64>(),
                r.buffers.len(),
                mib(buffer_bytes)
            ),
        ),
    ];
    for (k, v) in kv {
        writeln!(out, "{k:<9} {v}").expect("writing to a String");
    }

    if !r.buffers.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = r
            .buffers
            .iter()
            .map(|b| {
                vec![
                    short_size(b.size),
                    b.count.to_string(),
                    b.free.to_string(),
                    b.count.saturating_sub(b.free).to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                ("BUFFER", Align::Right),
                ("COUNT", Align::Right),
                ("FREE", Align::Right),
                ("USED", Align::Right),
            ],
            &rows,
        ));
    }

    out.push('\n');
    if r.port_list.is_empty() {
        out.push_str("no port has been bound yet\n");
        return out;
    }
    let rows: Vec<Vec<String>> = r
        .port_list
        .iter()
        .map(|p| {
            vec![
                p.port.to_string(),
                p.kind.to_string(),
                p.state.to_string(),
                if p.pid == 0 {
                    "-".to_string()
                } else {
                    p.pid.to_string()
                },
                p.generation.to_string(),
                with_hw(p.requests_queued, p.requests_queued_high_water),
                with_hw(p.replies_queued, p.replies_queued_high_water),
                with_hw(p.requests_in_use, p.requests_high_water),
                with_hw(p.buffers_in_use, p.buffers_high_water),
                p.busy_events.to_string(),
                p.recoveries.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            ("PORT", Align::Right),
            ("KIND", Align::Left),
            ("STATE", Align::Left),
            ("PID", Align::Right),
            ("GEN", Align::Right),
            ("REQ-Q/HW", Align::Right),
            ("REPLY-Q/HW", Align::Right),
            ("REQS/HW", Align::Right),
            ("BUFS/HW", Align::Right),
            ("BUSY", Align::Right),
            ("RECOVERED", Align::Right),
        ],
        &rows,
    ));
    let dead = r.port_list.iter().filter(|p| p.state == "dead").count();
    if dead > 0 {
        writeln!(
            out,
            "\n{dead} port(s) have a dead owner: run `xseg --segment {} recover --dead`",
            r.name
        )
        .expect("writing to a String");
    }
    out
}

/// `n thing` or `n things`.
fn count(n: u32, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One line saying what a recovery did.
pub fn recovery(r: &RecoveryReport) -> String {
    let who = if r.dead_pid == 0 {
        "had no dead owner, tidied".to_string()
    } else {
        format!("recovered from dead process {}", r.dead_pid)
    };
    format!(
        "port {}: {who}: {} failed back, {} resent, {} and {} freed, {}",
        r.port,
        count(r.failed_back, "request", "requests"),
        count(r.replies_resent, "reply", "replies"),
        count(r.requests_freed, "request", "requests"),
        count(r.buffers_freed, "orphan buffer", "orphan buffers"),
        count(r.ring_repairs, "ring repair", "ring repairs"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use xseg_shm::{BufferClassReport, PortReport};

    fn sample() -> SegmentReport {
        SegmentReport {
            name: "/tmp/seg".into(),
            size: 3 << 20,
            layout_version: 1,
            protocol_version: 7,
            ports: 8,
            static_ports: 2,
            requests: 64,
            requests_free: 60,
            requests_owned: 2,
            requests_queued: 1,
            requests_replied: 1,
            buffers: vec![
                BufferClassReport {
                    size: 4096,
                    count: 16,
                    free: 15,
                },
                BufferClassReport {
                    size: 8192,
                    count: 4,
                    free: 4,
                },
            ],
            port_list: vec![PortReport {
                port: 1,
                kind: "static",
                state: "dead",
                pid: 4242,
                generation: 3,
                requests_queued: 1,
                requests_queued_high_water: 9,
                replies_queued: 0,
                replies_queued_high_water: 2,
                requests_in_use: 2,
                requests_high_water: 5,
                buffers_in_use: 1,
                buffers_high_water: 4,
                busy_events: 11,
                recoveries: 0,
            }],
        }
    }

    #[test]
    fn report_shows_header_buffers_and_ports() {
        let text = segment_report(&sample());
        assert!(text.contains("segment   /tmp/seg\n"), "{text}");
        assert!(text.contains("3.0 MiB (3145728 bytes)"), "{text}");
        assert!(text.contains("layout 1, protocol 7"), "{text}");
        assert!(text.contains("8 (2 static, 6 dynamic)"), "{text}");
        assert!(
            text.contains("60 free of 64 (owned 2, queued 1, replied 1)"),
            "{text}"
        );
        assert!(text.contains("19 free of 20 in 2 classes"), "{text}");
        let buffer_row = text
            .lines()
            .find(|l| l.trim_start().starts_with("4K"))
            .unwrap();
        assert_eq!(
            buffer_row.split_whitespace().collect::<Vec<_>>(),
            ["4K", "16", "15", "1"]
        );
        let port_row = text.lines().find(|l| l.contains("4242")).expect("port row");
        assert_eq!(
            port_row.split_whitespace().collect::<Vec<_>>(),
            ["1", "static", "dead", "4242", "3", "1/9", "0/2", "2/5", "1/4", "11", "0"]
        );
        assert!(text.contains("recover --dead"), "{text}");
    }

    #[test]
    fn table_columns_line_up() {
        let text = table(
            &[
                ("A", Align::Right),
                ("BB", Align::Left),
                ("C", Align::Right),
            ],
            &[
                vec!["100".into(), "x".into(), "1".into()],
                vec!["2".into(), "yyy".into(), "22".into()],
            ],
        );
        assert_eq!(text, "  A  BB    C\n100  x     1\n  2  yyy  22\n");
    }

    #[test]
    fn no_ports_says_so() {
        let mut r = sample();
        r.port_list.clear();
        let text = segment_report(&r);
        assert!(text.ends_with("no port has been bound yet\n"), "{text}");
        assert!(!text.contains("recover --dead"));
    }

    #[test]
    fn recovery_lines() {
        let r = RecoveryReport {
            port: 5,
            dead_pid: 77,
            failed_back: 1,
            replies_resent: 2,
            requests_freed: 3,
            buffers_freed: 0,
            ring_repairs: 1,
        };
        assert_eq!(
            recovery(&r),
            "port 5: recovered from dead process 77: 1 request failed back, 2 replies resent, \
             3 requests and 0 orphan buffers freed, 1 ring repair"
        );
        let tidy = RecoveryReport {
            port: 2,
            ..Default::default()
        };
        assert!(recovery(&tidy).starts_with("port 2: had no dead owner, tidied: "));
    }
}
