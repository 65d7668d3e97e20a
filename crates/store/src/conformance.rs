//! The conformance suite: every [`ObjectStore`] contract as a test,
//! generic over the driver.
//!
//! Each case is a function taking a maker of fresh, empty stores (called
//! once or more per case) and panicking on a violation. A driver runs them
//! all as separate `#[test]`s with [`conformance_tests!`](crate::conformance_tests):
//!
//! ```
//! mod memory {
//!     archipelago_store::conformance_tests!(archipelago_store::MemoryStore::new);
//! }
//! ```
//!
//! or in one go with [`run_all`]. Cases named after a bug of the original
//! (`copy_*_overwrites`, `lock_owners_are_compared_exactly`, ...) are
//! regressions; see `reference/peers-and-tools.md` §8.
//!
//! The module is compiled into the library (so other crates' drivers can
//! reuse it) but is not part of the API proper.
#![doc(hidden)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Barrier;

use archipelago_protocol::names::{is_content_name, MAX_STORE_NAME};
use archipelago_protocol::ErrorCode;

use crate::{content_name_of, Fault, FaultyStore, Fence, Gate, ObjectStore, OpKind, StoreError};

/// Expands to one `#[test]` per conformance case, each calling the case
/// with `$make` (an expression evaluating to a `Fn() -> impl ObjectStore`,
/// evaluated once per test).
///
/// `conformance_tests!(if $available => $make)` first evaluates
/// `$available` (a `bool`) in each test and returns at once when it is
/// false: for drivers needing an external service (a Ceph cluster) that
/// decide themselves when its absence may skip (and say so) or must fail.
#[macro_export]
macro_rules! conformance_tests {
    (if $available:expr => $make:expr) => {
        $crate::__conformance_cases!(@list emit_guarded ($available) $make);
    };
    ($make:expr) => {
        $crate::__conformance_cases!(@tests $make);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    (@tests $make:expr) => {
        $crate::__conformance_cases!(@list emit_tests $make);
    };
    (@run $make:expr) => {
        $crate::__conformance_cases!(@list emit_run $make);
    };
    (@list emit_guarded ($available:expr) $make:expr) => {
        $crate::__conformance_cases!(@list_with emit_guarded ($available) $make);
    };
    (@list $how:ident $make:expr) => {
        $crate::__conformance_cases!(@list_with $how () $make);
    };
    (@list_with $how:ident ($($available:expr)?) $make:expr) => {
        $crate::__conformance_cases!(@$how ($($available)?) $make;
            read_of_a_missing_object_is_not_found,
            write_then_read_round_trips_and_reads_zeros_past_the_end,
            a_write_at_an_offset_creates_a_sparse_object,
            an_empty_write_creates_an_empty_object_and_changes_nothing_else,
            an_overwrite_keeps_the_bytes_around_it,
            durable_writes_read_back,
            write_full_replaces_the_whole_object,
            delete_removes_the_object,
            stat_reports_the_size,
            copy_honours_both_offsets_and_the_length,
            a_copy_up_copies_like_copy_under_its_fence,
            a_second_copy_into_the_same_destination_overwrites,
            copy_reads_zeros_past_the_source_end,
            copy_from_a_missing_source_fails_and_creates_nothing,
            copy_of_zero_bytes_creates_an_empty_destination,
            copy_within_one_object_behaves_like_memmove,
            copy_of_several_megabytes_is_exact,
            store_content_names_the_stripped_data_by_its_sha256,
            store_content_ignores_trailing_zeros_and_never_rewrites,
            all_zero_content_is_the_empty_object,
            sync_keeps_everything_readable,
            locks_hand_out_increasing_fencing_tokens,
            lock_owners_are_compared_exactly,
            unlock_and_break_of_a_free_lock,
            locks_and_objects_are_separate_namespaces,
            exactly_one_of_many_concurrent_lockers_wins,
            concurrent_writers_to_different_objects_do_not_interfere,
            invalid_names_are_refused_by_every_method,
            invalid_lock_owners_are_refused,
            ranges_past_the_largest_offset_are_refused,
            list_is_sorted_and_filtered_by_prefix,
            list_pages_walk_the_listing_in_order,
            fenced_writes_with_a_broken_token_are_refused,
            the_fence_rises_with_newer_tokens_and_raise_fence,
            fenced_writes_check_their_names,
        );
    };
    (@emit_tests () $make:expr; $($case:ident,)*) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::$case($make);
            }
        )*
    };
    (@emit_guarded ($available:expr) $make:expr; $($case:ident,)*) => {
        $(
            #[test]
            fn $case() {
                if !$available {
                    return;
                }
                $crate::conformance::$case($make);
            }
        )*
    };
    (@emit_run () $make:expr; $($case:ident,)*) => {
        $( $crate::conformance::$case(&$make); )*
    };
}

/// Runs every case against stores from `make`.
pub fn run_all<S: ObjectStore>(make: impl Fn() -> S) {
    __conformance_cases!(@run make);
}

fn read_vec(s: &impl ObjectStore, name: &str, offset: u64, len: usize) -> (u64, Vec<u8>) {
    let mut buf = vec![0xAA; len];
    let size = s
        .read(name, offset, &mut buf)
        .unwrap_or_else(|e| panic!("read {name}: {e}"));
    (size, buf)
}

/// The whole object.
fn contents(s: &impl ObjectStore, name: &str) -> Vec<u8> {
    let size = s
        .stat(name)
        .unwrap_or_else(|e| panic!("stat {name}: {e}"))
        .size;
    read_vec(s, name, 0, size as usize).1
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(r: Result<T, StoreError>, name: &str) {
    match r {
        Err(StoreError::NotFound { name: n }) => assert_eq!(n, name),
        other => panic!("expected NotFound({name}), got {other:?}"),
    }
}

#[track_caller]
fn assert_locked_by<T: std::fmt::Debug>(r: Result<T, StoreError>, owner: &str) {
    match r {
        Err(e @ StoreError::Locked { .. }) => {
            assert_eq!(e.code(), ErrorCode::Locked);
            let StoreError::Locked { owner: o, .. } = e else {
                unreachable!()
            };
            assert_eq!(o, owner);
        }
        other => panic!("expected Locked by {owner}, got {other:?}"),
    }
}

/// Reading an object that was never written fails; it is not zeros.
pub fn read_of_a_missing_object_is_not_found<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    assert_not_found(s.read("nothing", 0, &mut [0; 8]), "nothing");
    assert_not_found(s.read("nothing", 0, &mut []), "nothing");
    assert_not_found(s.stat("nothing"), "nothing");
}

/// Data reads back; bytes past the end read as zeros; the size says how
/// much was real.
pub fn write_then_read_round_trips_and_reads_zeros_past_the_end<S: ObjectStore>(
    make: impl Fn() -> S,
) {
    let s = make();
    let data = pattern(5000, 1);
    s.write("obj", 0, &data, false).unwrap();
    let (size, buf) = read_vec(&s, "obj", 0, 5000);
    assert_eq!(size, 5000);
    assert_eq!(buf, data);
    let (size, buf) = read_vec(&s, "obj", 4000, 3000);
    assert_eq!(size, 5000);
    assert_eq!(&buf[..1000], &data[4000..]);
    assert!(
        buf[1000..].iter().all(|&b| b == 0),
        "past the end must be zeros"
    );
    let (size, buf) = read_vec(&s, "obj", 1 << 30, 16);
    assert_eq!(size, 5000);
    assert_eq!(buf, [0; 16]);
}

/// A write at an offset creates the object with zeros before it.
pub fn a_write_at_an_offset_creates_a_sparse_object<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    s.write("sparse", 1 << 20, b"tail", false).unwrap();
    assert_eq!(s.stat("sparse").unwrap().size, (1 << 20) + 4);
    let (_, buf) = read_vec(&s, "sparse", (1 << 20) - 4, 8);
    assert_eq!(&buf, b"\0\0\0\0tail");
    let (_, buf) = read_vec(&s, "sparse", 0, 4096);
    assert!(buf.iter().all(|&b| b == 0));
}

/// An empty write creates a missing object (size 0) and leaves an existing
/// one as it is (it does not extend it to its offset).
pub fn an_empty_write_creates_an_empty_object_and_changes_nothing_else<S: ObjectStore>(
    make: impl Fn() -> S,
) {
    let s = make();
    s.write("empty", 100, &[], false).unwrap();
    assert_eq!(s.stat("empty").unwrap().size, 0);
    s.write("empty", 0, b"abc", false).unwrap();
    s.write("empty", 100, &[], true).unwrap();
    assert_eq!(contents(&s, "empty"), b"abc");
}

/// Overwriting part of an object keeps the rest.
pub fn an_overwrite_keeps_the_bytes_around_it<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    s.write("obj", 0, b"0123456789", false).unwrap();
    s.write("obj", 3, b"abc", false).unwrap();
    assert_eq!(contents(&s, "obj"), b"012abc6789");
    s.write("obj", 8, b"XYZW", false).unwrap();
    assert_eq!(contents(&s, "obj"), b"012abc67XYZW");
}

/// `durable == true` writes behave like the others (durability itself is
/// tested per driver).
pub fn durable_writes_read_back<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    s.write("d", 0, b"durable", true).unwrap();
    s.write("d", 7, b"!", true).unwrap();
    s.write_full("f", b"full", true).unwrap();
    s.copy("d", 0, "c", 1, 3, true).unwrap();
    assert_eq!(contents(&s, "d"), b"durable!");
    assert_eq!(contents(&s, "f"), b"full");
    assert_eq!(contents(&s, "c"), b"\0dur");
}

/// `write_full` creates, and replaces everything (a shorter content
/// shrinks the object).
pub fn write_full_replaces_the_whole_object<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    s.write_full("map", b"a long first version", false).unwrap();
    assert_eq!(contents(&s, "map"), b"a long first version");
    s.write_full("map", b"short", false).unwrap();
    assert_eq!(contents(&s, "map"), b"short");
    s.write("map", 5, b"+", false).unwrap();
    assert_eq!(contents(&s, "map"), b"short+");
    s.write_full("map", b"", false).unwrap();
    assert_eq!(s.stat("map").unwrap().size, 0);
}

/// `delete` removes; deleting or reading what is gone is `NotFound`; a
/// deleted object can be created again from scratch.
pub fn delete_removes_the_object<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    s.write("gone", 0, b"content", false).unwrap();
    s.delete("gone").unwrap();
    assert_not_found(s.read("gone", 0, &mut [0; 4]), "gone");
    assert_not_found(s.delete("gone"), "gone");
    assert_not_found(s.delete("never"), "never");
    s.write("gone", 2, b"x", false).unwrap();
    assert_eq!(contents(&s, "gone"), b"\0\0x");
}

/// `stat` reports the size, holes included.
pub fn stat_reports_the_size<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    s.write("s", 0, &[1; 10], false).unwrap();
    assert_eq!(s.stat("s").unwrap().size, 10);
    s.write("s", 4096, &[1; 10], false).unwrap();
    assert_eq!(s.stat("s").unwrap().size, 4106);
    s.write("s", 0, &[2; 10], false).unwrap();
    assert_eq!(s.stat("s").unwrap().size, 4106);
}

/// Regression (filed COPY ignored the offset): both offsets and the
/// length are honoured, into a new and an existing destination.
pub fn copy_honours_both_offsets_and_the_length<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    s.write("src", 0, b"0123456789", false).unwrap();
    s.copy("src", 2, "new", 5, 4, false).unwrap();
    assert_eq!(contents(&s, "new"), b"\0\0\0\0\x002345");
    s.write("old", 0, b"abcdefghijkl", false).unwrap();
    s.copy("src", 6, "old", 1, 3, false).unwrap();
    assert_eq!(contents(&s, "old"), b"a678efghijkl");
    assert_eq!(contents(&s, "src"), b"0123456789");
}

/// A copy-up copies exactly as `copy` does, into a new and an existing
/// destination, a durable write to it keeps both, and it is fenced as a
/// write is.
pub fn a_copy_up_copies_like_copy_under_its_fence<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    let fence = |token| crate::Fence { lock: "vol", token };
    s.write("src", 0, b"0123456789", false).unwrap();
    s.copy_up("src", 2, "new", 5, 4, fence(2)).unwrap();
    assert_eq!(contents(&s, "new"), b"\0\0\0\0\x002345");
    s.write("new", 0, b"ab", true).unwrap();
    assert_eq!(contents(&s, "new"), b"ab\0\0\x002345");
    s.write("old", 0, b"abcdefghijkl", false).unwrap();
    s.copy_up("src", 6, "old", 1, 3, fence(2)).unwrap();
    assert_eq!(contents(&s, "old"), b"a678efghijkl");
    let e = s
        .copy_up("missing", 0, "other", 0, 1, fence(2))
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(s.stat("other").unwrap_err().is_not_found());
    // A newer token raised the fence: the old one copies nothing.
    s.write_fenced("x", 0, b"y", false, fence(3)).unwrap();
    assert_stale(s.copy_up("src", 0, "old", 0, 4, fence(2)), "old");
    assert_eq!(contents(&s, "old"), b"a678efghijkl");
}

/// Regression (filed COPY wrote at the cached fd's position, so a second
/// copy appended): copying twice into the same destination overwrites.
pub fn a_second_copy_into_the_same_destination_overwrites<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    s.write("a", 0, b"AAAA", false).unwrap();
    s.write("b", 0, b"BBBB", false).unwrap();
    s.copy("a", 0, "dst", 0, 4, false).unwrap();
    s.copy("b", 0, "dst", 0, 4, false).unwrap();
    assert_eq!(contents(&s, "dst"), b"BBBB");
    s.copy("a", 1, "dst", 2, 2, false).unwrap();
    s.copy("a", 1, "dst", 2, 2, false).unwrap();
    assert_eq!(contents(&s, "dst"), b"BBAA");
    // Reads in between (filling a descriptor cache) change nothing.
    read_vec(&s, "dst", 0, 4);
    s.copy("b", 0, "dst", 0, 1, false).unwrap();
    assert_eq!(contents(&s, "dst"), b"BBAA");
}

/// Source bytes past the source's end are copied as zeros (over existing
/// destination bytes too).
pub fn copy_reads_zeros_past_the_source_end<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    s.write("short", 0, b"xy", false).unwrap();
    s.write("dst", 0, b"123456", false).unwrap();
    s.copy("short", 1, "dst", 0, 4, false).unwrap();
    assert_eq!(contents(&s, "dst"), b"y\0\0\x0056");
    s.copy("short", 100, "dst2", 0, 3, false).unwrap();
    assert_eq!(contents(&s, "dst2"), b"\0\0\0");
}

/// A missing source is `NotFound` (naming the source) and no destination
/// appears.
pub fn copy_from_a_missing_source_fails_and_creates_nothing<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    assert_not_found(s.copy("nosrc", 0, "dst", 0, 10, false), "nosrc");
    assert_not_found(s.stat("dst"), "dst");
    assert_not_found(s.copy("nosrc", 0, "dst", 0, 0, false), "nosrc");
    assert_not_found(s.stat("dst"), "dst");
}

/// A copy of nothing is a write of nothing: it creates an empty missing
/// destination and leaves an existing one as it is.
pub fn copy_of_zero_bytes_creates_an_empty_destination<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    s.write("src", 0, b"abc", false).unwrap();
    s.copy("src", 0, "dst", 10, 0, false).unwrap();
    assert_eq!(s.stat("dst").unwrap().size, 0);
    s.write("dst", 0, b"keep", false).unwrap();
    s.copy("src", 0, "dst", 10, 0, false).unwrap();
    assert_eq!(contents(&s, "dst"), b"keep");
}

/// Copying within one object, with overlapping ranges either way, is as if
/// the source range had been read first.
pub fn copy_within_one_object_behaves_like_memmove<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    let data = pattern(3 << 20, 7);
    let len = 2 << 20;
    for (from, to) in [(0u64, 1000u64), (1000, 0), ((1 << 20) + 5, 1 << 20)] {
        s.write_full("self", &data, false).unwrap();
        s.copy("self", from, "self", to, len, false).unwrap();
        let mut expect = data.clone();
        let (f, t, l) = (from as usize, to as usize, len as usize);
        let src: Vec<u8> = (f..f + l).map(|i| *data.get(i).unwrap_or(&0)).collect();
        if expect.len() < t + l {
            expect.resize(t + l, 0);
        }
        expect[t..t + l].copy_from_slice(&src);
        assert!(
            contents(&s, "self") == expect,
            "copy {from} -> {to} differs"
        );
    }
}

/// A copy larger than any internal chunk, at unaligned offsets, is exact.
pub fn copy_of_several_megabytes_is_exact<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    let data = pattern((5 << 20) / 2, 3);
    s.write("big", 0, &data, false).unwrap();
    s.copy("big", 1, "big_copy", 4095, data.len() as u64 + 10, false)
        .unwrap();
    let got = contents(&s, "big_copy");
    assert_eq!(got.len(), 4095 + data.len() + 10);
    assert!(got[..4095].iter().all(|&b| b == 0));
    assert!(got[4095..4095 + data.len() - 1] == data[1..]);
    assert!(got[4095 + data.len() - 1..].iter().all(|&b| b == 0));
}

/// `store_content` stores the data without trailing zeros under the hex
/// SHA-256 of what remains.
pub fn store_content_names_the_stripped_data_by_its_sha256<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    let name = s.store_content(b"hello\0world\0\0\0", false).unwrap();
    assert!(is_content_name(name.as_bytes()), "{name}");
    assert_eq!(name, content_name_of(b"hello\0world"));
    // sha256("hello\0world")
    assert_eq!(contents(&s, &name), b"hello\0world");
    let durable = s.store_content(b"other", true).unwrap();
    assert_eq!(contents(&s, &durable), b"other");
    assert_eq!(s.list("").unwrap().len(), 2);
}

/// Regression (HASH of existing content misbehaved): content differing
/// only in trailing zeros gets the same name, and storing content that
/// exists writes nothing (proven by tampering with the stored object
/// first: the tampered bytes survive).
pub fn store_content_ignores_trailing_zeros_and_never_rewrites<S: ObjectStore>(
    make: impl Fn() -> S,
) {
    let s = make();
    let mut block = vec![0u8; 4 << 20];
    block[..5].copy_from_slice(b"block");
    let a = s.store_content(&block, false).unwrap();
    let b = s.store_content(b"block", false).unwrap();
    let c = s.store_content(b"block\0", false).unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(contents(&s, &a), b"block");
    s.write(&a, 0, b"TAMPERED", false).unwrap();
    assert_eq!(s.store_content(&block, true).unwrap(), a);
    assert_eq!(contents(&s, &a), b"TAMPERED");
}

/// Any all-zero block is the empty object named by SHA-256 of nothing.
pub fn all_zero_content_is_the_empty_object<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    let name = s.store_content(&[0; 4096], false).unwrap();
    assert_eq!(
        name,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(s.stat(&name).unwrap().size, 0);
    assert_eq!(s.store_content(&[], false).unwrap(), name);
}

/// `sync` succeeds after every kind of change, and changes nothing.
pub fn sync_keeps_everything_readable<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    s.sync().unwrap();
    s.write("a", 0, b"one", false).unwrap();
    s.write_full("b", b"two", false).unwrap();
    s.copy("a", 0, "c", 0, 3, false).unwrap();
    let h = s.store_content(b"three", false).unwrap();
    s.write("d", 0, b"x", false).unwrap();
    s.delete("d").unwrap();
    s.sync().unwrap();
    s.sync().unwrap();
    assert_eq!(contents(&s, "a"), b"one");
    assert_eq!(contents(&s, "b"), b"two");
    assert_eq!(contents(&s, "c"), b"one");
    assert_eq!(contents(&s, &h), b"three");
    assert_not_found(s.stat("d"), "d");
}

/// Tokens strictly increase across grants, releases and breaks;
/// re-acquiring is idempotent; `lock_owner` and `break_lock` report the
/// holder.
pub fn locks_hand_out_increasing_fencing_tokens<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    assert_eq!(s.lock_owner("vol").unwrap(), None);
    let t1 = s.try_lock("vol", "host_a").unwrap();
    assert_eq!(s.try_lock("vol", "host_a").unwrap(), t1);
    assert_eq!(s.lock_owner("vol").unwrap(), Some(("host_a".into(), t1)));
    assert_locked_by(s.try_lock("vol", "host_b"), "host_a");
    assert_eq!(s.break_lock("vol").unwrap().as_deref(), Some("host_a"));
    assert_eq!(s.lock_owner("vol").unwrap(), None);
    let t2 = s.try_lock("vol", "host_b").unwrap();
    assert!(t2 > t1, "token after a break: {t2} <= {t1}");
    s.unlock("vol", "host_b").unwrap();
    let t3 = s.try_lock("vol", "host_b").unwrap();
    assert!(t3 > t2, "token after a release: {t3} <= {t2}");
    s.unlock("vol", "host_b").unwrap();
    let t4 = s.try_lock("vol", "host_a").unwrap();
    assert!(t4 > t3);
    // Another lock has its own holder.
    let other = s.try_lock("vol2", "host_b").unwrap();
    assert_eq!(
        s.lock_owner("vol2").unwrap(),
        Some(("host_b".into(), other))
    );
    assert_eq!(s.lock_owner("vol").unwrap(), Some(("host_a".into(), t4)));
}

/// Regression (filed compared owners by prefix): `host_1` can neither
/// release nor take a lock `host_10` holds, and vice versa.
pub fn lock_owners_are_compared_exactly<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    for (holder, other) in [("host_10", "host_1"), ("host_1", "host_10")] {
        let t = s.try_lock("vol", holder).unwrap();
        assert_locked_by(s.try_lock("vol", other), holder);
        assert_locked_by(s.unlock("vol", other), holder);
        assert_eq!(s.lock_owner("vol").unwrap(), Some((holder.into(), t)));
        s.unlock("vol", holder).unwrap();
    }
    let t = s.try_lock("vol", "host").unwrap();
    assert_locked_by(s.try_lock("vol", "host "), "host");
    assert_locked_by(s.try_lock("vol", "Host"), "host");
    assert_eq!(s.try_lock("vol", "host").unwrap(), t);
}

/// Releasing a free lock is `NotFound`; breaking one is `None`.
pub fn unlock_and_break_of_a_free_lock<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    assert_not_found(s.unlock("free", "me"), "free");
    assert_eq!(s.break_lock("free").unwrap(), None);
    s.try_lock("free", "me").unwrap();
    s.unlock("free", "me").unwrap();
    assert_not_found(s.unlock("free", "me"), "free");
}

/// The lock `x` and the object `x` are unrelated.
pub fn locks_and_objects_are_separate_namespaces<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    s.try_lock("x", "me").unwrap();
    assert_not_found(s.stat("x"), "x");
    assert_not_found(s.stat("x_lock"), "x_lock");
    assert!(s.list("").unwrap().is_empty(), "locks must not be listed");
    s.write("x", 0, b"data", false).unwrap();
    s.delete("x").unwrap();
    assert_eq!(
        s.lock_owner("x").unwrap().map(|o| o.0).as_deref(),
        Some("me")
    );
    s.write_full("y_lock", b"an object", false).unwrap();
    assert_eq!(s.lock_owner("y").unwrap(), None);
    s.try_lock("y", "me").unwrap();
    assert_eq!(contents(&s, "y_lock"), b"an object");
}

/// Of many threads racing for a free lock, exactly one wins, and the
/// others are told who.
pub fn exactly_one_of_many_concurrent_lockers_wins<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    const N: usize = 6;
    for round in 0..3 {
        let barrier = Barrier::new(N);
        let winners = AtomicUsize::new(0);
        let results: Vec<Result<u64, StoreError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..N)
                .map(|i| {
                    let (s, barrier, winners) = (&s, &barrier, &winners);
                    scope.spawn(move || {
                        barrier.wait();
                        let r = s.try_lock("contended", &format!("host_{i}"));
                        if r.is_ok() {
                            winners.fetch_add(1, Ordering::Relaxed);
                        }
                        r
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(winners.load(Ordering::Relaxed), 1, "round {round}");
        let (owner, _) = s.lock_owner("contended").unwrap().unwrap();
        for r in results.into_iter().filter(|r| r.is_err()) {
            assert_locked_by(r, &owner);
        }
        s.break_lock("contended").unwrap();
    }
}

/// Threads writing their own objects concurrently each read back their
/// own data.
pub fn concurrent_writers_to_different_objects_do_not_interfere<S: ObjectStore>(
    make: impl Fn() -> S,
) {
    let s = make();
    std::thread::scope(|scope| {
        for t in 0..4u8 {
            let s = &s;
            scope.spawn(move || {
                let name = format!("thread_{t}");
                for i in 0..32u64 {
                    s.write(&name, i * 512, &[t + 1; 512], false).unwrap();
                    let other = format!("shared_{}", i % 4);
                    s.copy(&name, 0, &other, u64::from(t) * 512, 512, false)
                        .unwrap();
                }
            });
        }
    });
    for t in 0..4u8 {
        assert_eq!(contents(&s, &format!("thread_{t}")), vec![t + 1; 32 * 512]);
    }
    for i in 0..4 {
        let shared = contents(&s, &format!("shared_{i}"));
        for t in 0..4u8 {
            assert_eq!(&shared[t as usize * 512..][..512], &[t + 1; 512][..]);
        }
    }
}

/// Names that could be paths, options or garbage are refused with
/// `InvalidName` by every method, and nothing is created.
pub fn invalid_names_are_refused_by_every_method<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    s.write("good", 0, b"x", false).unwrap();
    let long = "a".repeat(MAX_STORE_NAME + 1);
    let bad = [
        "",
        ".",
        "..",
        "../x",
        "a/b",
        "/abs",
        "x/../..",
        ".hidden",
        "-rf",
        "a b",
        "a\0b",
        "caf\u{e9}",
        &long,
    ];
    for name in bad {
        #[track_caller]
        fn refused<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str, name: &str) {
            match r {
                Err(e @ StoreError::InvalidName(_)) => {
                    assert_eq!(e.code(), ErrorCode::InvalidArgument)
                }
                other => panic!("{what}({name:?}) gave {other:?}, not InvalidName"),
            }
        }
        refused(s.read(name, 0, &mut [0; 1]), "read", name);
        refused(s.write(name, 0, b"x", false), "write", name);
        refused(s.write_full(name, b"x", true), "write_full", name);
        refused(s.delete(name), "delete", name);
        refused(s.stat(name), "stat", name);
        refused(s.copy(name, 0, "good", 0, 1, false), "copy from", name);
        refused(s.copy("good", 0, name, 0, 1, false), "copy to", name);
        refused(s.try_lock(name, "me"), "try_lock", name);
        refused(s.unlock(name, "me"), "unlock", name);
        refused(s.break_lock(name), "break_lock", name);
        refused(s.lock_owner(name), "lock_owner", name);
    }
    assert_eq!(s.list("").unwrap(), ["good"]);
    // The longest valid name works.
    let longest = "b".repeat(MAX_STORE_NAME);
    s.write(&longest, 0, b"x", false).unwrap();
    s.try_lock(&longest, "me").unwrap();
}

/// Lock owners must be 1 to 256 bytes.
pub fn invalid_lock_owners_are_refused<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    for owner in [String::new(), "o".repeat(257)] {
        assert!(matches!(
            s.try_lock("vol", &owner),
            Err(StoreError::InvalidArgument { .. })
        ));
        assert!(matches!(
            s.unlock("vol", &owner),
            Err(StoreError::InvalidArgument { .. })
        ));
    }
    assert_eq!(s.lock_owner("vol").unwrap(), None);
    let odd = "host 1\n(pid 7) \u{e9}";
    let t = s.try_lock("vol", odd).unwrap();
    assert_eq!(s.lock_owner("vol").unwrap(), Some((odd.to_owned(), t)));
    s.try_lock("vol", &"o".repeat(256)).unwrap_err();
}

/// Ranges ending past `i64::MAX` are `InvalidArgument`.
pub fn ranges_past_the_largest_offset_are_refused<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    s.write("obj", 0, b"x", false).unwrap();
    let invalid = |r: Result<(), StoreError>| {
        assert!(
            matches!(r, Err(StoreError::InvalidArgument { .. })),
            "{r:?}"
        )
    };
    invalid(s.write("obj", i64::MAX as u64, b"x", false));
    invalid(s.write("obj", u64::MAX, b"x", false));
    invalid(s.read("obj", u64::MAX, &mut [0; 2]).map(|_| ()));
    invalid(s.copy("obj", u64::MAX, "obj2", 0, 2, false));
    invalid(s.copy("obj", 0, "obj2", u64::MAX - 1, 2, false));
    assert_not_found(s.stat("obj2"), "obj2");
    assert_eq!(contents(&s, "obj"), b"x");
}

/// `list` returns the objects with a prefix, sorted, and nothing else.
pub fn list_is_sorted_and_filtered_by_prefix<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    assert!(s.list("").unwrap().is_empty());
    for name in ["vol_b", "vol_a", "other", "vol", "vol_c"] {
        s.write(name, 0, b"x", false).unwrap();
    }
    s.delete("vol_c").unwrap();
    assert_eq!(s.list("vol_").unwrap(), ["vol_a", "vol_b"]);
    assert_eq!(s.list("").unwrap(), ["other", "vol", "vol_a", "vol_b"]);
    assert!(s.list("zzz").unwrap().is_empty());
    assert!(s.list("../").unwrap().is_empty());
}

/// `list_page` walks the same names as `list`, a page at a time, each
/// page's cursor leading to the next.
pub fn list_pages_walk_the_listing_in_order<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    let empty = s.list_page("", None, 10).unwrap();
    assert!(empty.names.is_empty() && empty.next.is_none());
    for i in 0..23 {
        s.write(&format!("p{i:02}"), 0, b"x", false).unwrap();
    }
    s.write("a", 0, b"x", false).unwrap();
    s.write("q", 0, b"x", false).unwrap();
    let walk = |s: &S, prefix: &str, limit: usize| {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let page = s.list_page(prefix, cursor.as_deref(), limit).unwrap();
            assert!(page.names.len() <= limit);
            all.extend(page.names);
            match page.next {
                Some(c) => cursor = Some(c),
                None => {
                    all.sort();
                    return all;
                }
            }
        }
        panic!("paging never ended");
    };
    assert_eq!(walk(&s, "p", 5), s.list("p").unwrap());
    assert_eq!(walk(&s, "p", 5).len(), 23);
    assert_eq!(walk(&s, "", 1), s.list("").unwrap());
    assert_eq!(walk(&s, "p", 100), s.list("p").unwrap());
    // Objects deleted or created meanwhile do not disturb the rest.
    let first = s.list_page("p", None, 5).unwrap();
    s.delete(&first.names[4]).unwrap();
    s.write("p99", 0, b"x", false).unwrap();
    let mut rest = first.names[..4].to_vec();
    let mut cursor = first.next;
    while let Some(c) = cursor {
        let page = s.list_page("p", Some(&c), 5).unwrap();
        rest.extend(page.names);
        cursor = page.next;
    }
    rest.sort();
    let mut expect = s.list("p").unwrap();
    expect.retain(|n| n != "p99");
    rest.retain(|n| n != "p99");
    assert_eq!(rest, expect);
}

/// Refused as stale: [`StoreError::StaleToken`] from a driver, or any
/// error of code `Fenced` naming the object from a store reached over the
/// protocol (which carries the code and the object, not the tokens).
fn assert_stale<T: std::fmt::Debug>(r: Result<T, StoreError>, name: &str) {
    match r {
        Err(e @ (StoreError::StaleToken { .. } | StoreError::Fenced { .. })) => {
            assert_eq!(e.code(), ErrorCode::Fenced);
            assert!(e.to_string().contains(name), "{e}");
        }
        other => panic!("expected a write refused as stale for {name}, got {other:?}"),
    }
}

/// A fenced write carrying the token of a broken lock is refused and
/// writes nothing, at once after the break (before any new grant) and
/// after one; the new holder's token writes.
pub fn fenced_writes_with_a_broken_token_are_refused<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    let t1 = s.try_lock("vol", "host_a").unwrap();
    let old = Fence {
        lock: "vol",
        token: t1,
    };
    s.write_fenced("obj", 0, b"one", false, old).unwrap();
    s.write_full_fenced("full", b"one", true, old).unwrap();
    assert_eq!(contents(&s, "obj"), b"one");
    s.break_lock("vol").unwrap();
    assert_stale(s.write_fenced("obj", 0, b"two", false, old), "obj");
    assert_stale(s.write_full_fenced("full", b"two", false, old), "full");
    assert_stale(s.write_fenced("new", 0, b"two", true, old), "new");
    assert_not_found(s.stat("new"), "new");
    let t2 = s.try_lock("vol", "host_b").unwrap();
    assert!(t2 > t1);
    let new = Fence {
        lock: "vol",
        token: t2,
    };
    s.write_fenced("obj", 0, b"TWO", false, new).unwrap();
    assert_stale(s.write_fenced("obj", 0, b"old", false, old), "obj");
    assert_eq!(contents(&s, "obj"), b"TWO");
    assert_eq!(contents(&s, "full"), b"one");
    // A release (not a break) keeps the holder's writes valid until the
    // next grant: the writer released only after its writes were done.
    s.unlock("vol", "host_b").unwrap();
    let t3 = s.try_lock("vol", "host_a").unwrap();
    assert!(t3 > t2);
    assert_stale(s.write_fenced("obj", 0, b"b", false, new), "obj");
    // Other locks are not concerned; unfenced writes are not checked.
    s.write_fenced(
        "obj",
        0,
        b"x",
        false,
        Fence {
            lock: "vol2",
            token: 1,
        },
    )
    .unwrap();
    s.write("obj", 1, b"y", false).unwrap();
    assert_eq!(contents(&s, "obj"), b"xyO");
}

/// A store that holds data but not the lock learns the fence from the
/// writes' tokens and from `raise_fence` (what a breaker calls); grants
/// go past it.
pub fn the_fence_rises_with_newer_tokens_and_raise_fence<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    let at = |token| Fence { lock: "vol", token };
    s.write_fenced("obj", 0, b"a", false, at(5)).unwrap();
    assert_stale(s.write_fenced("obj", 0, b"b", false, at(4)), "obj");
    s.write_fenced("obj", 0, b"c", false, at(5)).unwrap();
    assert_eq!(s.raise_fence("vol", 9).unwrap(), 9);
    assert_eq!(s.raise_fence("vol", 3).unwrap(), 9, "a fence never drops");
    assert_stale(s.write_fenced("obj", 0, b"d", false, at(8)), "obj");
    s.write_fenced("obj", 0, b"e", false, at(9)).unwrap();
    assert_eq!(contents(&s, "obj"), b"e");
    assert!(s.try_lock("vol", "host_a").unwrap() > 9);
    assert_eq!(s.raise_fence("other", 0).unwrap(), 0);
}

/// The lock name of a fence is checked like any name.
pub fn fenced_writes_check_their_names<S: ObjectStore>(make: impl Fn() -> S) {
    let s = make();
    let bad = Fence {
        lock: "a/b",
        token: 1,
    };
    assert!(matches!(
        s.write_fenced("obj", 0, b"x", false, bad),
        Err(StoreError::InvalidName(_))
    ));
    assert!(matches!(
        s.raise_fence("..", 1),
        Err(StoreError::InvalidName(_))
    ));
    assert_not_found(s.stat("obj"), "obj");
}

/// Two clients of one shared store, as two hosts see it: `a` locks `vol`
/// and writes under its token; one write of `a` is held in flight (a
/// [`Fault::Hold`] on `a`) while `b` breaks the lock, takes it and writes
/// the same object; then `fenced` runs (what the driver's old owner goes
/// through after a break: e.g. RADOS blocklisting and reconnecting) and
/// the held write is let go. It must not land, nor any later write of
/// `a` with its old token: `b`'s data stays.
///
/// For drivers whose clients share a backend (files on one directory, RADOS
/// on one pool); `a` must be a fresh client, `b` another.
pub fn a_broken_owners_held_writes_never_land<S, T>(
    a: std::sync::Arc<FaultyStore<S>>,
    b: T,
    fenced: impl FnOnce(&S),
) where
    S: ObjectStore + 'static,
    T: ObjectStore,
{
    let deadline = std::time::Duration::from_secs(60);
    let t1 = a.try_lock("vol", "host_a").unwrap();
    let old = Fence {
        lock: "vol",
        token: t1,
    };
    // A write before: whatever the driver caches, it caches this token.
    a.write_fenced("obj", 0, b"old-0", false, old).unwrap();
    a.write_full_fenced("chunk", b"old-0", true, old).unwrap();
    let (gate, gate_full) = (Gate::new(), Gate::new());
    a.fail_next(OpKind::Write, Fault::Hold(gate.clone()));
    a.fail_next(OpKind::WriteFull, Fault::Hold(gate_full.clone()));
    let held = {
        let a = a.clone();
        std::thread::spawn(move || {
            let old = Fence {
                lock: "vol",
                token: t1,
            };
            (
                a.write_fenced("obj", 0, b"old-1", false, old),
                a.write_full_fenced("chunk", b"old-1", true, old),
            )
        })
    };
    assert!(
        gate.wait_arrived(1, deadline),
        "the write never reached the gate"
    );
    assert_eq!(b.break_lock("vol").unwrap().as_deref(), Some("host_a"));
    let t2 = b.try_lock("vol", "host_b").unwrap();
    assert!(t2 > t1);
    let new = Fence {
        lock: "vol",
        token: t2,
    };
    b.write_fenced("obj", 0, b"new-1", false, new).unwrap();
    b.write_full_fenced("chunk", b"new-1", true, new).unwrap();
    fenced(a.inner());
    gate.open();
    assert!(
        gate_full.wait_arrived(1, deadline),
        "write_full never reached the gate"
    );
    gate_full.open();
    let (w, wf) = held.join().unwrap();
    for (what, r) in [("held write", w), ("held write_full", wf)] {
        match r {
            Err(e) => assert_eq!(e.code(), ErrorCode::Fenced, "{what}: {e}"),
            Ok(()) => panic!("{what} of the broken owner landed"),
        }
    }
    for r in [
        a.write_fenced("obj", 0, b"old-2", false, old),
        a.write_full_fenced("chunk", b"old-2", false, old),
    ] {
        match r {
            Err(e) => assert_eq!(e.code(), ErrorCode::Fenced, "{e}"),
            Ok(()) => panic!("a later write of the broken owner landed"),
        }
    }
    assert_eq!(contents(&b, "obj"), b"new-1");
    assert_eq!(contents(&b, "chunk"), b"new-1");
}
