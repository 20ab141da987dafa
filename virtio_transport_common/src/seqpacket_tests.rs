//! Unit tests of `seqpacket` (kept out of the module file so the library code stays free of
//! test-only `unwrap`s).
use super::*;

fn credit(n: u32) -> TxCredit {
    let mut t = TxCredit::new(u32::MAX);
    t.update_from_peer(n, 0);
    t
}

#[test]
fn counts_messages() {
    let mut s = SeqRx::new();
    s.on_enqueue(0);
    s.on_enqueue(SEQ_EOR); // EOR without EOM is no boundary
    assert_eq!(s.msg_count(), 0);
    s.on_enqueue(SEQ_EOM);
    s.on_enqueue(SEQ_EOM | SEQ_EOR);
    assert_eq!(s.msg_count(), 2);
    s.on_dequeue();
    s.on_dequeue();
    s.on_dequeue();
    assert_eq!(s.msg_count(), 0);
}

/// vsock_test "SOCK_SEQPACKET MSG_TRUNC flag": 32-byte message, 16-byte buffer.
#[test]
fn msg_trunc() {
    let mut r = SeqReader::new(16);
    assert_eq!(r.feed(32, SEQ_EOM), 16);
    assert_eq!(r.report(true).ret, 32);
    let rep = r.report(false);
    assert_eq!((rep.ret, rep.trunc, rep.eor), (16, true, false));
    assert_eq!(r.feed(5, SEQ_EOM), 0);
    assert_eq!(r.report(false).msg_len, 32);
}

#[test]
fn exact_fit_is_not_truncated() {
    let mut r = SeqReader::new(8);
    r.feed(4, 0);
    r.feed(4, SEQ_EOM);
    assert!(!r.report(true).trunc);
}

#[test]
fn split_with_credit() {
    let mut t = credit(100);
    let mut m = SeqTx::new(150, true, 150).unwrap();
    assert_eq!(m.next(&mut t, 64), Some(Chunk { len: 64, flags: 0 }));
    assert_eq!(m.next(&mut t, 64), Some(Chunk { len: 36, flags: 0 }));
    assert_eq!(m.next(&mut t, 64), None);
    t.update_from_peer(100, 100);
    let last = m.next(&mut t, 64).unwrap();
    assert_eq!(
        last,
        Chunk {
            len: 50,
            flags: SEQ_EOM | SEQ_EOR
        }
    );
    assert!(m.is_done());
    assert_eq!(m.next(&mut t, 64), None);
    m.put_back(last);
    t.put_back(last.len);
    assert_eq!(m.next(&mut t, 64), Some(last));
}

/// vsock_test "SOCK_SEQPACKET big message": buffer size + 1 is EMSGSIZE.
#[test]
fn too_big_and_empty() {
    assert_eq!(SeqTx::new(257, false, 256), Err(MsgTooBig));
    let mut t = credit(10);
    let mut m = SeqTx::new(0, true, 256).unwrap();
    assert!(m.is_done());
    assert_eq!(m.next(&mut t, 64), None);
    assert_eq!(t.tx_cnt(), 0);
}
