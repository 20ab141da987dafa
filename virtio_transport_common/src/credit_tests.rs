//! Unit tests of `credit` (kept out of the module file so the library code stays free of
//! test-only `unwrap`s).
use super::*;

const K: u32 = 1024;

#[test]
fn space_and_take() {
    let mut t = TxCredit::new(256 * K);
    assert_eq!(t.space(), 0);
    assert!(t.update_from_peer(100, 0));
    assert_eq!(t.take(30), 30);
    assert_eq!(t.take(100), 70);
    assert_eq!(t.space(), 0);
    assert_eq!(t.unsent(), 100);
    t.put_back(20);
    assert_eq!((t.space(), t.unsent(), t.tx_cnt()), (20, 80, 80));
    t.on_sent(80);
    assert_eq!(t.unsent(), 0);
    t.put_back(5); // nothing unsent: ignored
    assert_eq!(t.tx_cnt(), 80);
}

#[test]
fn local_cap_limits_window() {
    let mut t = TxCredit::new(10);
    t.update_from_peer(100, 0);
    assert_eq!((t.buf_size(), t.space()), (10, 10));
    assert!(t.set_local_cap(50));
    assert_eq!(t.space(), 50);
}

#[test]
fn shrinking_peer_gives_zero_not_wrap() {
    let mut t = TxCredit::new(u32::MAX);
    t.update_from_peer(100, 0);
    t.take(100);
    assert!(!t.update_from_peer(10, 50));
    assert_eq!((t.in_flight(), t.space()), (50, 0));
}

#[test]
fn lying_fwd_cnt_is_ignored() {
    let mut t = TxCredit::new(u32::MAX);
    t.update_from_peer(100, 0);
    t.take(60);
    assert!(!t.update_from_peer(100, 61)); // more than we sent
    assert_eq!((t.peer_fwd_cnt(), t.space()), (0, 40));
    assert!(t.update_from_peer(100, 60));
    assert!(!t.update_from_peer(100, 10)); // backwards
    assert_eq!((t.peer_fwd_cnt(), t.space()), (60, 100));
}

#[test]
fn stale_packet_buf_alloc_is_ignored() {
    let mut t = TxCredit::new(u32::MAX);
    t.update_from_peer(1000, 0);
    t.take(600);
    // The peer read 500 and shrank its buffer to 200 (newer), after a packet stamped with
    // fwd_cnt 100 and its old 1000 (older), which arrives second.
    t.update_from_peer(200, 500);
    assert_eq!(t.space(), 100); // 500 + 200 - 600
    assert!(!t.update_from_peer(1000, 100));
    assert_eq!((t.peer_fwd_cnt(), t.space()), (500, 100));
    // Same fwd_cnt: taken (a buffer size change without reads in between).
    assert!(t.update_from_peer(300, 500));
    assert_eq!(t.space(), 200);
}

#[test]
fn counters_wrap() {
    let mut t = TxCredit::new(u32::MAX);
    t.tx_cnt = u32::MAX - 10;
    t.peer_fwd_cnt = u32::MAX - 10;
    t.update_from_peer(100, u32::MAX - 10);
    assert_eq!(t.take(50), 50);
    assert_eq!(t.in_flight(), 50);
    assert!(t.update_from_peer(100, t.tx_cnt()));
    assert_eq!(t.space(), 100);
}

#[test]
fn rx_counters_wrap() {
    let mut r = RxCredit::new(64 * K);
    r.fwd_cnt = u32::MAX - 100;
    r.advertise();
    r.on_enqueue(64 * K);
    assert!(!r.accept(1));
    assert!(r.on_consume(64 * K, Reader::Stream).send());
    assert_eq!(r.fwd_cnt(), 64 * K - 101);
    assert_eq!(r.unadvertised(), 64 * K);
    assert_eq!(r.advertise(), (64 * K, 64 * K - 101));
    assert!(r.accept(64 * K) && !r.accept(64 * K + 1));
}

#[test]
fn accept_respects_window_and_survives_shrink() {
    let mut r = RxCredit::new(100);
    r.advertise();
    assert!(r.accept(100));
    assert!(!r.accept(101));
    r.on_enqueue(60);
    assert!(r.accept(40) && !r.accept(41));
    assert!(r.set_buf_alloc(10));
    // The peer may still be sending under the 100-byte window it knows.
    assert!(r.accept(40));
    r.advertise();
    assert!(r.accept(40));
    let _ = r.on_consume(60, Reader::Stream);
    // Old edge: 100 past fwd 0 = 40 past fwd 60; new window only 10.
    assert!(r.accept(40) && !r.accept(41));
    r.advertise();
    assert!(r.accept(40));
    let _ = r.on_consume(0, Reader::Stream);
    r.on_enqueue(40);
    let _ = r.on_consume(40, Reader::Stream);
    r.advertise();
    assert!(r.accept(10) && !r.accept(11));
}

#[test]
fn set_buf_alloc_clamps_and_reports_change() {
    let mut r = RxCredit::new(100);
    assert!(!r.set_buf_alloc(100));
    assert!(r.set_buf_alloc(u64::MAX));
    assert_eq!(r.buf_alloc(), u32::MAX);
    r.advertise();
    assert!(!r.set_buf_alloc(u64::from(u32::MAX)));
}

/// A reader that keeps up with a 256 KiB window: `n` payloads of `len` bytes, each consumed
/// as it arrives; returns the credit updates sent.
fn keep_up(n: u32, len: u32, reader: Reader) -> u32 {
    let mut r = RxCredit::new(256 * K);
    r.advertise();
    let mut updates = 0;
    for _ in 0..n {
        r.on_enqueue(len);
        if r.on_consume(len, reader).send() {
            updates += 1;
            r.advertise();
        }
    }
    updates
}

/// Default 256 KiB buffer, reader keeping up: one update per half window consumed
/// (upstream would send one per read).
#[test]
fn fast_reader_is_quiet_until_needed() {
    // 1 MiB consumed, one update per 128 KiB (upstream: one per read, 256).
    assert_eq!(keep_up(256, 4 * K, Reader::Stream), 8);
}

/// Slow reader with a full buffer: updates at most every 64 KiB, not per 4 KiB read.
#[test]
fn slow_reader_avoids_silly_window() {
    let mut r = RxCredit::new(256 * K);
    r.advertise();
    r.on_enqueue(256 * K);
    let mut sent_at = vec![];
    for i in 1..=48 {
        if r.on_consume(4 * K, Reader::Stream).send() {
            sent_at.push(i * 4);
            r.advertise();
        }
    }
    // After the first update the peer knows it may send a full 64 KiB packet again; nothing
    // arrives here, so the next update waits for half the window (128 KiB more).
    assert_eq!(sent_at, vec![64, 192]);
}

/// vsock_test "credit update + low rx_bytes": 128 KiB buffer full, SO_RCVLOWAT 64 KiB + 1,
/// reading 64 KiB must produce an update.
#[test]
fn low_rx_bytes_update() {
    let mut r = RxCredit::new(128 * K);
    assert_eq!(r.set_lowat(64 * K + 1), CreditAction::Quiet);
    r.advertise();
    r.on_enqueue(128 * K);
    assert!(r.on_consume(64 * K, Reader::Stream).send());
}

/// A reader whose lowat the peer cannot reach without an update gets one on set_lowat.
#[test]
fn raising_lowat_can_require_update() {
    let mut r = RxCredit::new(256 * K);
    r.advertise();
    r.on_enqueue(100 * K);
    let _ = r.on_consume(40 * K, Reader::Stream);
    // 60 KiB queued, the peer may send 156 KiB more: 216 KiB reachable.
    assert!(!r.set_lowat(216 * K).send());
    assert!(r.set_lowat(216 * K + 1).send());
}

/// A sender capped by its own small buffer is still unblocked when the reader drains.
#[test]
fn small_peer_cap_still_gets_updates() {
    let mut r = RxCredit::new(256 * K);
    r.set_peer_cap(4 * K);
    r.advertise();
    r.on_enqueue(4 * K);
    assert!(r.on_consume(4 * K, Reader::Stream).send());
}

/// SEQPACKET: update after the last complete message is read (the rest of a partial
/// message may need credit), but not while more complete messages wait.
#[test]
fn seqpacket_policy() {
    let mut r = RxCredit::new(256 * K);
    r.advertise();
    r.on_enqueue(256 * K);
    assert!(!r.on_consume(10, Reader::Messages(1)).send());
    assert!(r.on_consume(10, Reader::Messages(0)).send());
}

/// SEQPACKET: a reader that keeps up with small messages updates once per half window, not
/// after every message (upstream does the latter).
#[test]
fn seqpacket_fast_reader_stays_quiet() {
    assert_eq!(keep_up(4096, 64, Reader::Messages(0)), 2);
}

/// SEQPACKET: a reader blocked on a partial message gets the peer more credit once the peer
/// may be short of it (the check on a non-final piece's arrival), not before.
#[test]
fn seqpacket_partial_message_starving() {
    let mut r = RxCredit::new(256 * K);
    r.advertise();
    r.on_enqueue(100 * K);
    assert!(!r.on_consume(100 * K, Reader::Messages(0)).send());
    // The next message's first 100 KiB arrive: the peer has 56 KiB left, less than a packet.
    r.on_enqueue(100 * K);
    assert!(r.wants_update(Reader::Messages(0)).send());
}
