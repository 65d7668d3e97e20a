//! The workload: the order of the blocks, the stamps of written blocks,
//! and where each offset goes.

use super::{Pattern, BLOCKER_OBJECT};

/// Block order: sequential, or a permutation of `0..n` from a full-period
/// LCG modulo the next power of two (cycle walking).
pub struct Order {
    n: u64,
    mask: u64,
    a: u64,
    c: u64,
    x: u64,
    rand: bool,
}

impl Order {
    pub fn new(n: u64, pattern: Pattern, seed: u64) -> Order {
        assert!(n > 0);
        let m = n.next_power_of_two();
        let s = splitmix(seed);
        Order {
            n,
            mask: m - 1,
            // a = 1 mod 4 and c odd: period m (Hull-Dobell).
            a: (s << 2) | 1,
            c: splitmix(s) | 1,
            x: splitmix(s ^ 0x9e37) & (m - 1),
            rand: pattern == Pattern::Rand,
        }
    }

    pub fn next_block(&mut self) -> u64 {
        if !self.rand {
            let b = self.x % self.n;
            self.x = (b + 1) % self.n;
            return b;
        }
        loop {
            self.x = self.x.wrapping_mul(self.a).wrapping_add(self.c) & self.mask;
            if self.x < self.n {
                return self.x;
            }
        }
    }
}

pub(super) fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The 16-byte stamp of the block at `offset`.
pub fn stamp(buf: &mut [u8], offset: u64, seed: u64) {
    buf[..8].copy_from_slice(&offset.to_le_bytes());
    buf[8..16].copy_from_slice(&splitmix(offset ^ splitmix(seed)).to_le_bytes());
}

/// Whether `buf` carries the stamp of `offset`.
pub fn stamped(buf: &[u8], offset: u64, seed: u64) -> bool {
    let mut want = [0u8; 16];
    stamp(&mut want, offset, seed);
    buf.len() >= 16 && buf[..16] == want
}

/// Where I/O goes.
pub(super) enum Target {
    /// A volume through a composer (`null`: of the null pipeline).
    Volume {
        port: u32,
        name: String,
        null: bool,
    },
    Blocker {
        port: u32,
        names: Vec<String>,
    },
}

impl Target {
    pub(super) fn locate(&self, offset: u64) -> (u32, &str, u64) {
        match self {
            Target::Volume { port, name, .. } => (*port, name, offset),
            Target::Blocker { port, names } => (
                *port,
                &names[(offset / BLOCKER_OBJECT) as usize],
                offset % BLOCKER_OBJECT,
            ),
        }
    }

    pub(super) fn kind(&self) -> &'static str {
        match self {
            Target::Volume { null: false, .. } => "volume",
            Target::Volume { null: true, .. } => "null",
            Target::Blocker { .. } => "blocker",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rand_order_is_a_permutation_each_pass() {
        for n in [1u64, 2, 3, 7, 64, 1000, 4096] {
            let mut o = Order::new(n, Pattern::Rand, 42);
            for _pass in 0..2 {
                let mut seen = vec![false; n as usize];
                for _ in 0..n {
                    let b = o.next_block();
                    assert!(!seen[b as usize], "n {n}: {b} twice");
                    seen[b as usize] = true;
                }
            }
        }
        let mut s = Order::new(5, Pattern::Seq, 1);
        let first = s.next_block();
        let v: Vec<u64> = (0..4).map(|_| s.next_block()).collect();
        assert_eq!(v, (1..5).map(|i| (first + i) % 5).collect::<Vec<_>>());
    }

    #[test]
    fn stamps_depend_on_offset_and_seed() {
        let mut b = [0u8; 32];
        stamp(&mut b, 4096, 7);
        assert!(stamped(&b, 4096, 7));
        assert!(!stamped(&b, 8192, 7));
        assert!(!stamped(&b, 4096, 8));
        assert!(!stamped(&b[..8], 4096, 7));
    }
}
