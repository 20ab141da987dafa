//! Unit tests of `conn` (kept out of the module file so the library code stays free of
//! test-only `unwrap`s).
use super::super::hdr::{validate, ValidateCtx, SEQ_EOR, SHUTDOWN_RCV};
use super::*;

const G: Addr = Addr { cid: 3, port: 1000 };
const H: Addr = Addr { cid: 2, port: 80 };

fn pkt(op: Op, ty: SockType, len: u32, flags: u32, buf_alloc: u32, fwd: u32) -> (Valid, Hdr) {
    let mut h = Hdr::new(ty, op, G, H);
    h.len = len;
    h.flags = flags;
    h.buf_alloc = buf_alloc;
    h.fwd_cnt = fwd;
    let ctx = ValidateCtx {
        seqpacket: true,
        ..ValidateCtx::default()
    };
    (validate(&h, &ctx).unwrap(), h)
}

fn feed(c: &mut Conn, op: Op, len: u32, flags: u32) -> Actions {
    let (v, h) = pkt(op, c.ty(), len, flags, 4096, 0);
    c.on_packet(&v, &h)
}

fn established(ty: SockType) -> Conn {
    established_with(ty, 4096)
}

fn established_with(ty: SockType, buf: u32) -> Conn {
    let mut l = Conn::new(ty, u64::from(buf));
    assert!(l.listen());
    let (v, h) = pkt(Op::Request, ty, 0, 0, buf, 0);
    let a = l.on_packet(&v, &h);
    assert!(a.new_child && a.send.is_none());
    let (mut c, a) = l.accept_request(&v, &h);
    assert_eq!((a.send, a.wake_writers), (Some(Ctl::Response), true));
    assert_eq!(c.state(), State::Established);
    let resp = c.packet(Ctl::Response, H, G);
    assert_eq!((resp.op, resp.buf_alloc), (Op::Response as u16, buf));
    c
}

#[test]
fn connect_then_response() {
    let mut c = Conn::new(SockType::Stream, 1 << 20);
    assert_eq!(c.connect(), Some(Ctl::Request));
    assert_eq!(c.connect(), None);
    let a = feed(&mut c, Op::Response, 0, 0);
    assert!(a.connected && a.state_change && a.wake_writers);
    assert_eq!((c.state(), c.has_space()), (State::Established, 4096));
}

#[test]
fn buffer_change_while_connecting_is_sent_once_connected() {
    let mut c = Conn::new(SockType::Stream, 4096);
    let _ = c.connect();
    let _ = c.packet(Ctl::Request, G, H);
    assert_eq!(c.set_buf_alloc(8192).send, None);
    assert_eq!(
        feed(&mut c, Op::Response, 0, 0).send,
        Some(Ctl::CreditUpdate)
    );
}

#[test]
fn connect_refused_and_proto_error() {
    let mut c = Conn::new(SockType::Stream, 4096);
    let _ = c.connect();
    let a = feed(&mut c, Op::Rst, 0, 0);
    assert_eq!((a.send, a.error), (None, Some(SockError::ConnReset)));
    assert_eq!(c.state(), State::Closed);
    let _ = c.connect();
    let a = feed(&mut c, Op::Rw, 3, 0);
    assert_eq!(
        (a.send, a.error),
        (Some(Ctl::RstReply), Some(SockError::Proto))
    );
    let _ = c.connect();
    assert_eq!(c.connect_timeout().error, Some(SockError::TimedOut));
    assert_eq!(feed(&mut c, Op::Response, 0, 0).send, Some(Ctl::RstReply));
}

#[test]
fn listener_rejects_non_request_and_after_release() {
    let mut l = Conn::new(SockType::Stream, 4096);
    let _ = l.listen();
    assert_eq!(feed(&mut l, Op::Rw, 1, 0).send, Some(Ctl::RstReply));
    assert_eq!(feed(&mut l, Op::Rst, 0, 0).send, None);
    let r = l.release();
    assert_eq!((r.send, r.wait_for_peer), (None, false));
    assert_eq!(feed(&mut l, Op::Request, 0, 0).send, Some(Ctl::RstReply));
}

#[test]
fn type_mismatch_gets_rst() {
    let mut c = established(SockType::Stream);
    let (v, h) = pkt(Op::Rw, SockType::Seqpacket, 1, 0, 4096, 0);
    let a = c.on_packet(&v, &h);
    assert_eq!(
        a,
        Actions {
            send: Some(Ctl::RstReply),
            ..Actions::default()
        }
    );
}

#[test]
fn data_and_credit_request() {
    let mut c = established(SockType::Stream);
    let a = feed(&mut c, Op::Rw, 100, 0);
    assert!(a.enqueue && a.wake_readers && a.send.is_none());
    assert_eq!(c.has_data(), 100);
    assert_eq!(
        feed(&mut c, Op::CreditRequest, 0, 0).send,
        Some(Ctl::CreditUpdate)
    );
    assert_eq!(c.on_consume(100), Some(Ctl::CreditUpdate));
    let h = c.packet(Ctl::CreditUpdate, H, G);
    assert_eq!(
        (h.op, h.buf_alloc, h.fwd_cnt),
        (Op::CreditUpdate as u16, 4096, 100)
    );
    assert_eq!(c.on_consume(1), None);
}

#[test]
fn overrun_resets_with_enobufs() {
    let mut c = established(SockType::Stream);
    let _ = feed(&mut c, Op::Rw, 4000, 0);
    let a = feed(&mut c, Op::Rw, 97, 0);
    assert_eq!(
        (a.send, a.error),
        (Some(Ctl::RstReply), Some(SockError::NoBufs))
    );
    assert!(a.done && a.unhash && !a.enqueue);
    // Data still queued: the reader may drain it.
    assert_eq!(c.state(), State::Established);
    assert_eq!(feed(&mut c, Op::Rw, 1, 0).send, Some(Ctl::RstReply));
    assert_eq!(c.on_consume(4000), None);
}

#[test]
fn shutdown_both_with_and_without_data() {
    let mut c = established(SockType::Stream);
    let a = feed(&mut c, Op::Shutdown, 0, SHUTDOWN_SEND);
    assert!(a.state_change && !a.unhash && a.send.is_none());
    let a = feed(&mut c, Op::Shutdown, 0, SHUTDOWN_RCV);
    assert_eq!(a.send, Some(Ctl::Rst));
    assert!(a.unhash && a.done);
    assert_eq!(c.state(), State::Closing);
    // Our RST went already: the close sends nothing more (upstream sends a second RST).
    let r = c.release();
    assert_eq!((r.send, r.wait_for_peer), (None, false));

    let mut c = established(SockType::Stream);
    let _ = feed(&mut c, Op::Rw, 10, 0);
    let a = feed(&mut c, Op::Shutdown, 0, SHUTDOWN_BOTH);
    assert!(a.unhash && !a.done && a.send.is_none());
    assert_eq!(c.state(), State::Established);
    let r = c.release();
    assert_eq!((r.send, r.wait_for_peer), (Some(Ctl::Rst), false));
}

#[test]
fn close_waits_for_peer_rst() {
    let mut c = established(SockType::Stream);
    let r = c.release();
    assert_eq!(
        (r.send, r.wait_for_peer),
        (Some(Ctl::Shutdown(SHUTDOWN_BOTH)), true)
    );
    assert!(c.start_close_timer());
    let a = feed(&mut c, Op::Rw, 5, 0); // still accepted, as upstream
    assert!(a.enqueue);
    let a = feed(&mut c, Op::Rst, 0, 0);
    assert!(a.done && a.finish_close && a.send.is_none());
    assert_eq!(c.close_timeout(), Actions::default());
}

#[test]
fn close_timeout_resets() {
    let mut c = established(SockType::Stream);
    let _ = c.shutdown(SHUTDOWN_BOTH);
    let r = c.release();
    assert_eq!((r.send, r.wait_for_peer), (None, true));
    assert!(c.start_close_timer());
    let a = c.close_timeout();
    assert_eq!(a.send, Some(Ctl::Rst));
    assert!(a.finish_close && a.done);
    assert_eq!(c.state(), State::Closing);
}

#[test]
fn peer_rst_before_close_removes_immediately() {
    let mut c = established(SockType::Stream);
    let a = feed(&mut c, Op::Rst, 0, 0);
    assert!(a.done && !a.finish_close);
    // The peer is gone: nothing to answer (upstream sends an RST nobody takes).
    let r = c.release();
    assert_eq!((r.send, r.wait_for_peer), (None, false));

    // Unless a shutdown(2) since reopened it (`done` cleared, as upstream): then the RST.
    let mut c = established(SockType::Stream);
    let _ = feed(&mut c, Op::Rst, 0, 0);
    let _ = c.shutdown(SHUTDOWN_SEND);
    let r = c.release();
    assert_eq!((r.send, r.wait_for_peer), (Some(Ctl::Rst), false));
}

#[test]
fn transport_reset_is_not_an_end_of_file() {
    // Data queued: unlike a peer's RST, nothing is left for the reader.
    let mut c = established(SockType::Stream);
    let _ = feed(&mut c, Op::Rw, 100, 0);
    let a = c.reset();
    assert_eq!((a.error, a.send), (Some(SockError::ConnReset), None));
    assert!(a.done && a.unhash && a.state_change && a.wake_readers && a.wake_writers);
    assert!(!a.finish_close);
    assert_eq!((c.state(), c.has_data()), (State::Closed, 0));
    assert!(c.is_reset() && c.is_done() && c.peer_shutdown() == 0);
    // Whatever the old peer still sends is answered with an RST, and a second reset is a no-op.
    assert_eq!(feed(&mut c, Op::Rw, 1, 0).send, Some(Ctl::RstReply));
    assert_eq!(c.reset(), Actions::default());
    // Connecting again starts afresh.
    let mut again = c;
    assert_eq!(again.connect(), Some(Ctl::Request));
    assert!(!again.is_reset() && !again.is_done());
    let r = c.release();
    assert_eq!((r.send, r.wait_for_peer), (None, false));

    // Closed and waiting for the peer's RST: the close ends now.
    let mut c = established(SockType::Seqpacket);
    let _ = c.release();
    assert!(c.start_close_timer());
    let a = c.reset();
    assert!(a.finish_close && c.is_reset());
    assert_eq!(c.close_timeout(), Actions::default());

    // Connecting: the connect fails with ECONNRESET; the socket may connect again.
    let mut c = Conn::new(SockType::Stream, 4096);
    let _ = c.connect();
    let a = c.reset();
    assert!(a.unhash);
    assert_eq!(
        (a.error, c.state(), c.is_reset()),
        (Some(SockError::ConnReset), State::Closed, false)
    );
    assert_eq!(c.connect(), Some(Ctl::Request));

    // A peer that already reset, a listener, an unconnected socket: nothing happens.
    let mut c = established(SockType::Stream);
    let _ = feed(&mut c, Op::Rst, 0, 0);
    assert_eq!(c.reset(), Actions::default());
    assert!(!c.is_reset());
    let mut l = Conn::new(SockType::Stream, 4096);
    assert!(l.listen());
    assert_eq!(l.reset(), Actions::default());
    assert_eq!(
        Conn::new(SockType::Stream, 4096).reset(),
        Actions::default()
    );
}

#[test]
fn shutdown_local() {
    // Not connected (a refused connect): nothing to send, but the bits stay (EPIPE, HUP).
    let mut c = Conn::new(SockType::Stream, 4096);
    assert_eq!(c.shutdown(SHUTDOWN_SEND), None);
    assert_eq!(c.local_shutdown(), SHUTDOWN_SEND);
    let mut c = established(SockType::Stream);
    assert_eq!(c.shutdown(0), None);
    assert_eq!(
        c.shutdown(SHUTDOWN_SEND | 8),
        Some(Ctl::Shutdown(SHUTDOWN_SEND))
    );
    assert_eq!(c.local_shutdown(), SHUTDOWN_SEND);
    let h = c.packet(Ctl::Shutdown(SHUTDOWN_SEND), H, G);
    assert_eq!(h.flags, SHUTDOWN_SEND);
}

#[test]
fn seqpacket_messages() {
    let mut c = established(SockType::Seqpacket);
    let a = feed(&mut c, Op::Rw, 10, 0);
    // Queued, but no reader is woken before the message is whole.
    assert!(a.enqueue && !a.wake_readers);
    assert_eq!(c.seq_has_data(), 0);
    let a = feed(&mut c, Op::Rw, 0, SEQ_EOM | SEQ_EOR);
    assert!(a.enqueue && a.wake_readers);
    let _ = feed(&mut c, Op::Rw, 5, SEQ_EOM);
    assert_eq!((c.seq_has_data(), c.has_data()), (2, 15));
    assert_eq!(c.on_seq_consume(10), None);
    assert_eq!(c.on_seq_consume(5), Some(Ctl::CreditUpdate));
    assert_eq!(c.seq_send(4097, false), Err(MsgTooBig));
    let mut m = c.seq_send(100, true).unwrap();
    let ch = c.next_chunk(&mut m, 64).unwrap();
    assert_eq!((ch.len, ch.flags), (64, 0));
    let ch = c.next_chunk(&mut m, 64).unwrap();
    assert_eq!((ch.len, ch.flags), (36, SEQ_EOM | SEQ_EOR));
}

#[test]
fn buffer_size_changes() {
    let mut c = established(SockType::Stream);
    let a = c.set_buf_alloc(8192);
    assert_eq!(a.send, Some(Ctl::CreditUpdate));
    let _ = c.packet(Ctl::CreditUpdate, H, G);
    assert_eq!(c.set_buf_alloc(8192).send, None);
    assert_eq!(c.set_rcvlowat(1), None);
}

#[test]
fn credit_from_every_packet() {
    let mut c = established(SockType::Stream);
    assert_eq!(c.take_credit(5000), 4096);
    let (v, h) = pkt(Op::CreditUpdate, SockType::Stream, 0, 0, 4096, 4096);
    assert!(c.on_packet(&v, &h).wake_writers);
    assert_eq!(c.has_space(), 4096);
}

#[test]
fn peer_cap_shrink_rechecks_credit() {
    const K: u32 = 1024;
    let mut c = established_with(SockType::Stream, 256 * K);
    for _ in 0..2 {
        let (v, h) = pkt(Op::Rw, SockType::Stream, 64 * K, 0, 256 * K, 0);
        assert!(c.on_packet(&v, &h).enqueue);
    }
    // 100 KiB consumed, the peer may still send 128 KiB: stay quiet.
    assert_eq!(c.on_consume(100 * K), None);
    // The peer's own buffer shrinks to 100 KiB: it is now blocked by its own cap.
    let (v, h) = pkt(Op::CreditUpdate, SockType::Stream, 0, 0, 100 * K, 0);
    assert_eq!(c.on_packet(&v, &h).send, Some(Ctl::CreditUpdate));
}

#[test]
fn memory_overrun_resets_like_a_credit_overrun() {
    let mut c = established(SockType::Seqpacket);
    let (v, _) = pkt(Op::Rw, SockType::Seqpacket, 0, SEQ_EOM, 4096, 0);
    let a = c.on_mem_overrun(&v);
    assert_eq!(a.send, Some(Ctl::RstReply));
    assert_eq!(a.error, Some(SockError::NoBufs));
    assert!(a.done && a.unhash && !a.enqueue);
    assert!(c.is_done());
    // Once done, nothing more happens.
    assert_eq!(c.on_mem_overrun(&v), Actions::default());
}

#[test]
fn memory_budget_is_twice_the_window_plus_three_packets() {
    let c = established_with(SockType::Stream, 256 * 1024);
    assert_eq!(c.rx().mem_budget(), 2 * 256 * 1024 + 3 * 64 * 1024);
    // Shrinking the buffer keeps the budget of the window already advertised.
    let mut c = c;
    let _ = c.set_buf_alloc(4096);
    assert_eq!(c.rx().mem_budget(), 2 * 256 * 1024 + 3 * 64 * 1024);
}
