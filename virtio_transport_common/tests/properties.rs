//! Property tests: header codec and validation, a two-endpoint STREAM simulation (flow control
//! safety, liveness, integrity), a SEQPACKET simulation (boundaries, MSG_TRUNC/MSG_EOR,
//! EMSGSIZE), and random event sequences against the connection state machine.

use std::collections::VecDeque;

use proptest::prelude::*;
use virtio_transport_common::conn::{Actions, Conn, Ctl, State};
use virtio_transport_common::hdr::{
    rst_reply, validate, Addr, Hdr, HdrError, Op, SockType, ValidateCtx, HDR_LEN, MAX_PKT_BUF_SIZE,
    SEQ_EOM, SEQ_EOR, SHUTDOWN_BOTH,
};
use virtio_transport_common::seqpacket::SeqReader;

const A: Addr = Addr { cid: 3, port: 1025 };
const B: Addr = Addr { cid: 2, port: 80 };
const K: u32 = 1024;

/// `n` cases, or `PROPTEST_CASES` if set (for long soak runs).
fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    ProptestConfig::with_cases(n)
}

fn ctx() -> ValidateCtx {
    ValidateCtx {
        max_len: MAX_PKT_BUF_SIZE,
        seqpacket: true,
        src_cid: None,
        dst_cid: None,
    }
}

fn any_hdr() -> impl Strategy<Value = Hdr> {
    (
        (
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
        ),
        (
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
        ),
    )
        .prop_map(|((sc, dc, sp, dp, len), (ty, op, flags, ba, fc))| Hdr {
            src_cid: sc,
            dst_cid: dc,
            src_port: sp,
            dst_port: dp,
            len,
            ty,
            op,
            flags,
            buf_alloc: ba,
            fwd_cnt: fc,
        })
}

/// Headers that are mostly plausible, so validation reaches every rule.
fn near_valid_hdr() -> impl Strategy<Value = Hdr> {
    (
        prop_oneof![Just(3u64), Just(2u64), any::<u64>()],
        prop_oneof![Just(2u64), Just(3u64), Just(1u64 << 32)],
        0u16..5,
        0u16..10,
        prop_oneof![
            Just(0u32),
            1u32..5000,
            Just(MAX_PKT_BUF_SIZE),
            Just(MAX_PKT_BUF_SIZE + 1)
        ],
        any::<u32>(),
    )
        .prop_map(|(sc, dc, ty, op, len, flags)| Hdr {
            src_cid: sc,
            dst_cid: dc,
            ty,
            op,
            len,
            flags,
            ..Hdr::default()
        })
}

proptest! {
    #[test]
    fn hdr_roundtrip(h in any_hdr()) {
        prop_assert_eq!(Hdr::decode(&h.encode()), h);
        let mut b = [0u8; HDR_LEN];
        h.encode_into(&mut b);
        prop_assert_eq!(b, h.encode());
    }

    #[test]
    fn decode_any_bytes_is_bijective(b in proptest::array::uniform32(any::<u8>()), tail in proptest::array::uniform12(any::<u8>())) {
        let mut bytes = [0u8; HDR_LEN];
        bytes[..32].copy_from_slice(&b);
        bytes[32..].copy_from_slice(&tail);
        let h = Hdr::decode(&bytes);
        prop_assert_eq!(h.encode(), bytes);
        let (p, rest) = Hdr::parse(&bytes).unwrap();
        prop_assert_eq!(p, h);
        prop_assert!(rest.is_empty());
    }

    #[test]
    fn validate_accepts_exactly_the_rules(h in near_valid_hdr(), seq in any::<bool>(), max_len in prop_oneof![Just(MAX_PKT_BUF_SIZE), 0u32..5000]) {
        let c = ValidateCtx { max_len, seqpacket: seq, src_cid: Some(3), dst_cid: Some(2) };
        let r = validate(&h, &c);
        let good_ty = h.ty == 1 || (h.ty == 2 && seq);
        let good_op = (1..=7).contains(&h.op);
        let good_len = h.len <= max_len && (h.op == Op::Rw as u16 || h.len == 0);
        let good_cid = h.src_cid == 3 && h.dst_cid == 2;
        match r {
            Ok(v) => {
                prop_assert!(good_ty && good_op && good_len && good_cid);
                prop_assert_eq!(v.op as u16, h.op);
                prop_assert_eq!(v.ty as u16, h.ty);
                prop_assert_eq!(v.len, h.len);
                prop_assert_eq!(v.flags & !h.flags, 0);
                let allowed = match (v.op, v.ty) {
                    (Op::Rw, SockType::Seqpacket) => SEQ_EOM | SEQ_EOR,
                    (Op::Shutdown, _) => SHUTDOWN_BOTH,
                    _ => 0,
                };
                prop_assert_eq!(v.flags, h.flags & allowed);
                prop_assert_eq!((v.src.cid, v.dst.cid), (3, 2));
            }
            Err(e) => {
                prop_assert!(!(good_ty && good_op && good_len && good_cid));
                match e {
                    HdrError::BadSrcCid => prop_assert!(h.src_cid != 3),
                    HdrError::BadDstCid => prop_assert!(h.dst_cid != 2),
                    HdrError::LenTooLarge => prop_assert!(h.len > max_len),
                    HdrError::BadType => prop_assert!(!good_ty),
                    HdrError::BadOp => prop_assert!(!good_op),
                    HdrError::LenNonZeroForControlOp => prop_assert!(h.len != 0 && h.op != 5),
                }
                if e.wants_rst() {
                    prop_assert_eq!(rst_reply(&h).is_none(), h.op == Op::Rst as u16);
                }
            }
        }
    }

    #[test]
    fn rst_reply_never_answers_rst(h in any_hdr()) {
        match rst_reply(&h) {
            None => prop_assert_eq!(h.op, Op::Rst as u16),
            Some(r) => {
                prop_assert_eq!(r.op, Op::Rst as u16);
                prop_assert_eq!((r.src_cid, r.src_port, r.dst_cid, r.dst_port), (h.dst_cid, h.dst_port, h.src_cid, h.src_port));
                prop_assert!(rst_reply(&r).is_none());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Two endpoints over in-order channels (virtio queues deliver in order).

/// Byte `i` of the STREAM.
fn byte(i: u64) -> u8 {
    (i % 251) as u8
}

struct Link {
    a: Conn,
    b: Conn,
    a2b: VecDeque<(Hdr, Vec<u8>)>,
    b2a: VecDeque<Hdr>,
    /// Largest buf_alloc B ever advertised.
    b_max_adv: u32,
    /// Bytes A put into packets, bytes B's reader consumed.
    sent: u64,
    read: u64,
    /// B's receive queue: packet payloads and their flags; offset into the front one.
    rq: VecDeque<(Vec<u8>, u32)>,
    rq_off: usize,
    credit_updates: u32,
}

impl Link {
    fn new(ty: SockType, buf_a: u32, buf_b: u32) -> Link {
        let mut a = Conn::new(ty, buf_a.into());
        let mut l = Conn::new(ty, buf_b.into());
        assert!(l.listen());
        let req = a.connect().unwrap();
        let h = a.packet(req, A, B);
        let v = validate(&h, &ctx()).unwrap();
        assert!(l.on_packet(&v, &h).new_child);
        let (mut b, acts) = l.accept_request(&v, &h);
        let resp = b.packet(acts.send.unwrap(), B, A);
        let v = validate(&resp, &ctx()).unwrap();
        assert!(a.on_packet(&v, &resp).connected);
        assert_eq!(
            (a.state(), b.state()),
            (State::Established, State::Established)
        );
        Link {
            a,
            b,
            a2b: VecDeque::new(),
            b2a: VecDeque::new(),
            b_max_adv: resp.buf_alloc,
            sent: 0,
            read: 0,
            rq: VecDeque::new(),
            rq_off: 0,
            credit_updates: 0,
        }
    }

    fn b_send(&mut self, ctl: Ctl) {
        assert!(matches!(ctl, Ctl::CreditUpdate), "B sent {ctl:?}");
        self.credit_updates += 1;
        let h = self.b.packet(ctl, B, A);
        self.b_max_adv = self.b_max_adv.max(h.buf_alloc);
        self.b2a.push_back(h);
    }

    fn a_send(&mut self, ctl: Ctl) {
        assert!(matches!(ctl, Ctl::CreditUpdate), "A sent {ctl:?}");
        let h = self.a.packet(ctl, A, B);
        self.a2b.push_back((h, Vec::new()));
    }

    /// Delivers one A→B packet; returns false if none was queued.
    fn deliver_ab(&mut self) -> bool {
        let Some((h, payload)) = self.a2b.pop_front() else {
            return false;
        };
        let v = validate(&h, &ctx()).unwrap();
        let acts = self.b.on_packet(&v, &h);
        assert_eq!(acts.error, None, "B rejected a packet: {h:?}");
        assert!(!acts.done);
        if v.op == Op::Rw {
            assert_eq!(acts.enqueue, !payload.is_empty() || v.flags & SEQ_EOM != 0);
            if acts.enqueue {
                self.rq.push_back((payload, v.flags));
            }
        }
        if let Some(c) = acts.send {
            self.b_send(c);
        }
        true
    }

    fn deliver_ba(&mut self) -> bool {
        let Some(h) = self.b2a.pop_front() else {
            return false;
        };
        let v = validate(&h, &ctx()).unwrap();
        let acts: Actions = self.a.on_packet(&v, &h);
        assert_eq!(acts.error, None);
        if let Some(c) = acts.send {
            self.a_send(c);
        }
        true
    }

    /// A sends up to `want` STREAM bytes as credit allows; returns bytes sent.
    fn a_stream(&mut self, want: u64) -> u64 {
        let mut done = 0u64;
        while done < want {
            let chunk = (want - done).min(u64::from(MAX_PKT_BUF_SIZE)) as u32;
            let n = self.a.take_credit(chunk);
            if n == 0 {
                break;
            }
            let payload: Vec<u8> = (self.sent..self.sent + u64::from(n)).map(byte).collect();
            let h = self.a.data_packet(n, 0, A, B);
            self.a2b.push_back((h, payload));
            self.sent += u64::from(n);
            done += u64::from(n);
        }
        done
    }

    /// B's STREAM reader consumes up to `n` bytes, checking order and content.
    fn b_read(&mut self, n: u64) -> u64 {
        let mut got = 0u64;
        while got < n {
            let Some((front, _)) = self.rq.front() else {
                break;
            };
            let take = (front.len() - self.rq_off).min((n - got) as usize);
            for &x in &front[self.rq_off..self.rq_off + take] {
                assert_eq!(x, byte(self.read), "stream corrupted at {}", self.read);
                self.read += 1;
            }
            self.rq_off += take;
            got += take as u64;
            if self.rq_off == front.len() {
                self.rq.pop_front();
                self.rq_off = 0;
            }
        }
        if got > 0 {
            if let Some(c) = self.b.on_consume(got as u32) {
                self.b_send(c);
            }
        }
        got
    }

    /// Flow-control safety, checked after every step.
    fn check(&self) {
        let queued: u64 =
            self.rq.iter().map(|(p, _)| p.len() as u64).sum::<u64>() - self.rq_off as u64;
        assert_eq!(u64::from(self.b.has_data()), queued);
        // Bytes sent and not consumed never exceed the largest window B advertised.
        let in_flight = self.a.tx().tx_cnt().wrapping_sub(self.b.rx().fwd_cnt());
        assert!(
            in_flight <= self.b_max_adv,
            "in flight {in_flight} > {}",
            self.b_max_adv
        );
        assert!(self.b.rx().rx_bytes() <= self.b_max_adv);
        // A never believes it may exceed what B advertised.
        assert!(self.a.tx().in_flight() <= self.b_max_adv);
    }
}

#[derive(Clone, Debug)]
enum Step {
    Send(u32),
    DeliverAB(u8),
    DeliverBA(u8),
    Read(u32),
    SetBufA(u32),
    SetBufB(u32),
    SetLowat(u32),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u32..150 * K).prop_map(Step::Send),
        3 => (1u8..8).prop_map(Step::DeliverAB),
        2 => (1u8..4).prop_map(Step::DeliverBA),
        3 => (1u32..100 * K).prop_map(Step::Read),
        1 => (1u32..512 * K).prop_map(Step::SetBufA),
        1 => (1u32..512 * K).prop_map(Step::SetBufB),
        1 => any::<u32>().prop_map(Step::SetLowat),
    ]
}

fn buf_size() -> impl Strategy<Value = u32> {
    prop_oneof![Just(256 * K), Just(4 * K), 1u32..1024 * K]
}

/// Drains after the random phase: A keeps sending, both channels are delivered, B's reader
/// reads `read_chunk` at a time whenever it would wake (`rx_bytes >= lowat`, or everything
/// sent has arrived). A round without progress is a deadlock.
fn drain_stream(l: &mut Link, total: u64, read_chunk: u64) {
    for _ in 0..1_000_000 {
        let mut progress = l.a_stream(total - l.sent) > 0;
        while l.deliver_ab() {
            progress = true;
            l.check();
        }
        while l.deliver_ba() {
            progress = true;
        }
        let rx = u64::from(l.b.has_data());
        let eof = l.sent == total && l.a2b.is_empty();
        if rx > 0 && (rx >= u64::from(l.b.rx().lowat()) || eof) {
            progress |= l.b_read(read_chunk) > 0;
        }
        l.check();
        if l.read == total {
            return;
        }
        assert!(
            progress,
            "deadlock: sent {} read {} total {total} a.space {} b {:?}",
            l.sent,
            l.read,
            l.a.has_space(),
            l.b.rx()
        );
    }
    panic!("no completion");
}

proptest! {
    #![proptest_config(cases(192))]

    #[test]
    fn stream_flow_control(
        buf_a in buf_size(),
        buf_b in buf_size(),
        steps in proptest::collection::vec(step(), 0..60),
        read_chunk in prop_oneof![Just(u64::MAX), 1u64..200_000],
    ) {
        let mut l = Link::new(SockType::Stream, buf_a, buf_b);
        let (mut cur_a, mut cur_b, mut lowat) = (buf_a, buf_b, 1u32);
        let mut total = 0u64;
        for s in steps {
            match s {
                Step::Send(n) => {
                    total += u64::from(n);
                    let pending = total - l.sent;
                    l.a_stream(pending);
                }
                Step::DeliverAB(k) => for _ in 0..k { l.deliver_ab(); l.check(); },
                Step::DeliverBA(k) => for _ in 0..k { l.deliver_ba(); },
                Step::Read(n) => { l.b_read(n.into()); }
                // Buffers never go below SO_RCVLOWAT (a reader waiting for more than the
                // window could ever hold blocks forever on Linux too).
                Step::SetBufA(n) => {
                    cur_a = n.max(lowat);
                    let acts = l.a.set_buf_alloc(cur_a.into());
                    if let Some(c) = acts.send { l.a_send(c); }
                }
                Step::SetBufB(n) => {
                    cur_b = n.max(lowat);
                    let acts = l.b.set_buf_alloc(cur_b.into());
                    if let Some(c) = acts.send { l.b_send(c); }
                }
                Step::SetLowat(x) => {
                    lowat = x % cur_a.min(cur_b) + 1;
                    if let Some(c) = l.b.set_rcvlowat(lowat) { l.b_send(c); }
                }
            }
            l.check();
        }
        drain_stream(&mut l, total, read_chunk);
        prop_assert!(l.a2b.is_empty());
    }
}

/// Far fewer credit updates than upstream's one-per-read when the reader keeps up.
#[test]
fn stream_fast_reader_update_count() {
    let mut l = Link::new(SockType::Stream, 256 * K, 256 * K);
    let total = 16u64 << 20;
    let mut reads = 0u32;
    while l.read < total {
        l.a_stream(total - l.sent);
        while l.deliver_ab() {
            reads += u32::from(l.b_read(u64::MAX) > 0);
        }
        while l.deliver_ba() {}
    }
    // Upstream: one update per read (256 reads of 64 KiB). Here: one per 128 KiB.
    assert_eq!(reads, 256);
    assert!(l.credit_updates <= 130, "{} updates", l.credit_updates);
}

// ---------------------------------------------------------------------------------------------
// SEQPACKET over the same link.

#[derive(Clone, Debug)]
enum SeqStep {
    /// Queue a message of this length, with or without MSG_EOR.
    Msg(u32, bool),
    DeliverAB(u8),
    DeliverBA(u8),
    /// Receive one message into a buffer of this size, with or without MSG_TRUNC.
    Recv(u32, bool),
}

fn seq_step() -> impl Strategy<Value = SeqStep> {
    prop_oneof![
        3 => (prop_oneof![Just(0u32), 1u32..200, 1u32..300 * K], any::<bool>()).prop_map(|(n, e)| SeqStep::Msg(n, e)),
        3 => (1u8..8).prop_map(SeqStep::DeliverAB),
        2 => (1u8..4).prop_map(SeqStep::DeliverBA),
        3 => (prop_oneof![0u32..64, 1u32..300 * K], any::<bool>()).prop_map(|(n, t)| SeqStep::Recv(n, t)),
    ]
}

/// Message `id`'s content.
fn msg_bytes(id: usize, len: u32) -> Vec<u8> {
    (0..len)
        .map(|i| (i as usize).wrapping_mul(7).wrapping_add(id) as u8)
        .collect()
}

struct SeqSim {
    l: Link,
    /// Messages accepted for sending (after EMSGSIZE filtering): (id, len, eor).
    out: VecDeque<(usize, u32, bool)>,
    /// The message being sent and how much of it.
    cur: Option<(usize, virtio_transport_common::seqpacket::SeqTx, u32)>,
    /// Messages sent completely, in order, for the receiver to check against.
    expect: VecDeque<(usize, u32, bool)>,
    received: usize,
}

impl SeqSim {
    /// Sends as much as credit allows; returns whether anything was sent.
    fn pump(&mut self) -> bool {
        let mut any = false;
        loop {
            if self.cur.is_none() {
                let Some((id, len, eor)) = self.out.pop_front() else {
                    return any;
                };
                let m = self.l.a.seq_send(len as usize, eor).unwrap();
                self.expect.push_back((id, len, eor));
                self.cur = Some((id, m, 0));
            }
            let (id, mut m, off) = self.cur.take().unwrap();
            if m.is_done() {
                continue; // zero-length message: nothing on the wire
            }
            let Some(ch) = self.l.a.next_chunk(&mut m, MAX_PKT_BUF_SIZE) else {
                self.cur = Some((id, m, off));
                return any;
            };
            any = true;
            let (_, len, eor) = *self.expect.back().unwrap();
            let data = msg_bytes(id, len)[off as usize..(off + ch.len) as usize].to_vec();
            let last = off + ch.len == len;
            assert_eq!(ch.flags & SEQ_EOM != 0, last);
            assert_eq!(ch.flags & SEQ_EOR != 0, last && eor);
            let h = self.l.a.data_packet(ch.len, ch.flags, A, B);
            self.l.a2b.push_back((h, data));
            if !m.is_done() {
                self.cur = Some((id, m, off + ch.len));
            }
        }
    }

    /// Receives one message if one is complete; checks boundaries and flags.
    fn recv(&mut self, buf_len: u32, trunc_flag: bool) -> bool {
        if self.l.b.seq_has_data() == 0 {
            return false;
        }
        // Zero-length messages never reach the wire.
        while self.expect.front().is_some_and(|&(_, len, _)| len == 0) {
            self.expect.pop_front();
        }
        let (id, len, eor) = self.expect.pop_front().expect("message nobody sent");
        let want = msg_bytes(id, len);
        let mut r = SeqReader::new(buf_len as usize);
        let mut user = Vec::new();
        while !r.is_complete() {
            let (p, flags) = self.l.rq.pop_front().expect("message without EOM");
            let n = r.feed(p.len() as u32, flags);
            user.extend_from_slice(&p[..n]);
        }
        let rep = r.report(trunc_flag);
        let copied = (len as usize).min(buf_len as usize);
        assert_eq!(user, want[..copied].to_vec(), "message {id} content");
        assert_eq!(rep.copied, copied);
        assert_eq!(rep.msg_len, len as usize);
        assert_eq!(rep.ret, if trunc_flag { len as usize } else { copied });
        assert_eq!(rep.trunc, len > buf_len);
        assert_eq!(rep.eor, eor);
        if let Some(c) = self.l.b.on_seq_consume(len) {
            self.l.b_send(c);
        }
        self.received += 1;
        true
    }
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn seqpacket_boundaries(
        buf_a in buf_size(),
        buf_b in buf_size(),
        steps in proptest::collection::vec(seq_step(), 0..50),
    ) {
        let mut s = SeqSim {
            l: Link::new(SockType::Seqpacket, buf_a, buf_b),
            out: VecDeque::new(),
            cur: None,
            expect: VecDeque::new(),
            received: 0,
        };
        let mut ids = 0usize;
        let mut nonempty = 0usize;
        for st in steps {
            match st {
                SeqStep::Msg(len, eor) => {
                    if s.l.a.seq_send(len as usize, eor).is_err() {
                        prop_assert!(len > s.l.a.tx().buf_size());
                    } else {
                        s.out.push_back((ids, len, eor));
                        ids += 1;
                        nonempty += usize::from(len > 0);
                        s.pump();
                    }
                }
                SeqStep::DeliverAB(k) => for _ in 0..k { s.l.deliver_ab(); },
                SeqStep::DeliverBA(k) => for _ in 0..k { s.l.deliver_ba(); s.pump(); },
                SeqStep::Recv(n, t) => { s.recv(n, t); }
            }
            s.l.check();
        }
        // Drain: the reader takes every complete message; the sender must finish them all.
        for _ in 0..1_000_000 {
            if s.received == nonempty {
                break;
            }
            let mut progress = s.pump();
            while s.l.deliver_ab() { progress = true; s.l.check(); }
            while s.l.deliver_ba() { progress = true; }
            while s.recv(64 * K, false) { progress = true; }
            prop_assert!(progress, "seqpacket deadlock: {} of {} received", s.received, nonempty);
        }
        prop_assert_eq!(s.received, nonempty);
        prop_assert!(s.l.rq.is_empty());
        prop_assert_eq!(s.l.b.has_data(), 0);
    }
}

/// SEQPACKET: a reader that keeps up with 64-byte messages updates once per half window
/// (upstream: once per message).
#[test]
fn seqpacket_fast_reader_update_count() {
    let mut s = SeqSim {
        l: Link::new(SockType::Seqpacket, 256 * K, 256 * K),
        out: VecDeque::new(),
        cur: None,
        expect: VecDeque::new(),
        received: 0,
    };
    for id in 0..8192 {
        s.out.push_back((id, 64, false));
        s.pump();
        while s.l.deliver_ab() {}
        while s.recv(64, false) {}
        while s.l.deliver_ba() {}
    }
    assert_eq!(s.received, 8192);
    assert!(s.l.credit_updates <= 5, "{} updates", s.l.credit_updates);
}

// ---------------------------------------------------------------------------------------------
// Random events against one connection: no panics, RSTs are never answered with RSTs, and the
// actions are consistent with the state.

#[derive(Clone, Debug)]
enum Ev {
    Pkt {
        op: u16,
        ty: u16,
        len: u32,
        flags: u32,
        buf_alloc: u32,
        fwd_cnt: u32,
    },
    Connect,
    Listen,
    Shutdown(u32),
    Release,
    StartTimer,
    CloseTimeout,
    ConnectTimeout,
    Consume(u32),
    SeqConsume(u32),
    SetBuf(u64),
    SetLowat(u32),
    Take(u32),
    PutBack(u32),
    TxDone(u32),
}

fn ev() -> impl Strategy<Value = Ev> {
    let pkt = (
        0u16..9,
        prop_oneof![4 => Just(1u16), 4 => Just(2u16), 1 => 0u16..5],
        prop_oneof![Just(0u32), 0u32..5000],
        prop_oneof![0u32..4, any::<u32>()],
        prop_oneof![Just(4096u32), any::<u32>()],
        any::<u32>(),
    )
        .prop_map(|(op, ty, len, flags, buf_alloc, fwd_cnt)| Ev::Pkt {
            op,
            ty,
            len,
            flags,
            buf_alloc,
            fwd_cnt,
        });
    prop_oneof![
        12 => pkt,
        1 => Just(Ev::Connect),
        1 => Just(Ev::Listen),
        1 => (0u32..4).prop_map(Ev::Shutdown),
        1 => Just(Ev::Release),
        1 => Just(Ev::StartTimer),
        1 => Just(Ev::CloseTimeout),
        1 => Just(Ev::ConnectTimeout),
        2 => any::<u32>().prop_map(Ev::Consume),
        1 => any::<u32>().prop_map(Ev::SeqConsume),
        1 => prop_oneof![any::<u64>(), 0u64..10_000].prop_map(Ev::SetBuf),
        1 => any::<u32>().prop_map(Ev::SetLowat),
        1 => any::<u32>().prop_map(Ev::Take),
        1 => any::<u32>().prop_map(Ev::PutBack),
        1 => any::<u32>().prop_map(Ev::TxDone),
    ]
}

/// `model_tx`: net bytes reserved with take_credit (minus put back) since the connection
/// started.
fn check_conn(c: &Conn, model_tx: u64) {
    assert!(c.tx().space() <= c.tx().buf_size());
    assert_eq!(c.tx().tx_cnt(), model_tx as u32);
    // The peer can never be credited with consuming more than we sent.
    assert!(u64::from(c.tx().in_flight()) <= model_tx);
    assert!(u64::from(c.tx().unsent()) <= model_tx);
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn state_machine_random_events(
        seqpacket in any::<bool>(),
        start in 0u8..3,
        evs in proptest::collection::vec(ev(), 0..80),
    ) {
        let ty = if seqpacket { SockType::Seqpacket } else { SockType::Stream };
        let mut c = Conn::new(ty, 4096);
        match start {
            0 => {}
            1 => { c.listen(); }
            _ => { c.connect(); }
        }
        let mut model_rx = 0u64;
        let mut model_tx = 0u64;
        for e in evs {
            let before = c;
            match e {
                Ev::Pkt { op, ty: pty, len, flags, buf_alloc, fwd_cnt } => {
                    let h = Hdr { src_cid: 3, dst_cid: 2, src_port: 1, dst_port: 2, len, ty: pty, op, flags, buf_alloc, fwd_cnt };
                    let v = match validate(&h, &ctx()) {
                        Ok(v) => v,
                        Err(err) => {
                            if err.wants_rst() {
                                prop_assert_eq!(rst_reply(&h).is_some(), op != Op::Rst as u16);
                            }
                            continue;
                        }
                    };
                    let a = c.on_packet(&v, &h);
                    if v.op == Op::Rst {
                        prop_assert_eq!(a.send, None, "answered an RST");
                    }
                    if a.enqueue {
                        prop_assert_eq!(v.op, Op::Rw);
                        prop_assert_eq!(before.state(), State::Established);
                        model_rx += u64::from(v.len);
                    }
                    if a.connected {
                        prop_assert_eq!(before.state(), State::Connecting);
                        prop_assert_eq!(c.state(), State::Established);
                    }
                    if a.new_child {
                        prop_assert_eq!(c.state(), State::Listen);
                        prop_assert_eq!(v.op, Op::Request);
                        let (child, ca) = c.accept_request(&v, &h);
                        prop_assert_eq!(child.state(), State::Established);
                        prop_assert_eq!(ca.send, Some(Ctl::Response));
                        check_conn(&child, 0);
                    }
                    if a.finish_close {
                        prop_assert!(before.close_pending() && !c.close_pending());
                    }
                    if a.done {
                        prop_assert!(c.is_done());
                        prop_assert_eq!(c.peer_shutdown(), SHUTDOWN_BOTH);
                    }
                    if a.send == Some(Ctl::CreditUpdate) {
                        prop_assert_eq!(c.state(), State::Established);
                    }
                    if let Some(e) = a.error {
                        prop_assert!(e.errno() > 0);
                    }
                    if before.state() != State::Established && before.state() != State::Connecting {
                        prop_assert!(!a.enqueue && !a.connected && a.error.is_none());
                    }
                }
                Ev::Connect => {
                    let r = c.connect();
                    prop_assert_eq!(r.is_some(), before.state() == State::Closed);
                    if r.is_some() { model_rx = 0; model_tx = 0; }
                }
                Ev::Listen => { prop_assert_eq!(c.listen(), before.state() == State::Closed); }
                Ev::Shutdown(m) => {
                    if let Some(Ctl::Shutdown(f)) = c.shutdown(m) { prop_assert_eq!(f, m & 3); }
                }
                Ev::Release => {
                    let r = c.release();
                    prop_assert_eq!(c.local_shutdown(), SHUTDOWN_BOTH);
                    prop_assert!(r.wait_for_peer || c.is_done());
                }
                Ev::StartTimer => { let armed = c.start_close_timer(); prop_assert_eq!(armed, !c.is_done()); }
                Ev::CloseTimeout => {
                    let a = c.close_timeout();
                    prop_assert!(!c.close_pending());
                    prop_assert_eq!(a.finish_close, before.close_pending());
                }
                Ev::ConnectTimeout => {
                    let a = c.connect_timeout();
                    prop_assert_eq!(a.error.is_some(), before.state() == State::Connecting);
                }
                Ev::Consume(n) => {
                    let _ = c.on_consume(n);
                    model_rx -= model_rx.min(n.into());
                }
                Ev::SeqConsume(n) => {
                    if c.seq_has_data() > 0 {
                        let n = (u64::from(n) % (u64::from(c.has_data()) + 1)) as u32;
                        let _ = c.on_seq_consume(n);
                        model_rx -= u64::from(n);
                        prop_assert_eq!(c.seq_has_data(), before.seq_has_data() - 1);
                    }
                }
                Ev::SetBuf(n) => {
                    let a = c.set_buf_alloc(n);
                    prop_assert_eq!(u64::from(c.rx().buf_alloc()), n.min(u64::from(u32::MAX)));
                    if a.send.is_some() { prop_assert_eq!(c.state(), State::Established); }
                }
                Ev::SetLowat(n) => { let _ = c.set_rcvlowat(n); prop_assert_eq!(c.rx().lowat(), n.max(1)); }
                Ev::Take(n) => {
                    let space = c.has_space();
                    let got = c.take_credit(n);
                    prop_assert_eq!(got, n.min(space));
                    model_tx += u64::from(got);
                }
                Ev::PutBack(n) => {
                    c.put_back_credit(n);
                    model_tx -= u64::from(n.min(before.tx().unsent()).min(before.tx().in_flight()));
                }
                Ev::TxDone(n) => c.on_tx_done(n),
            }
            prop_assert_eq!(u64::from(c.has_data()), model_rx);
            check_conn(&c, model_tx);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RxCredit::accept against an exact model: a payload is legal iff it ends within the right
// edge (fwd_cnt + buf_alloc) of some window we advertised.

#[derive(Clone, Debug)]
enum RxEv {
    Advertise,
    SetBuf(u32),
    Recv(u32),
    /// A payload ending this many bytes past the furthest legal edge (boundary probing).
    RecvAtEdge(i8),
    Consume(u32),
}

proptest! {
    #[test]
    fn rx_accept_matches_advertised_windows(
        init in 1u32..100_000,
        evs in proptest::collection::vec(prop_oneof![
            1 => Just(RxEv::Advertise),
            1 => (0u32..100_000).prop_map(RxEv::SetBuf),
            3 => (0u32..40_000).prop_map(RxEv::Recv),
            2 => (-2i8..3).prop_map(RxEv::RecvAtEdge),
            2 => (0u32..40_000).prop_map(RxEv::Consume),
        ], 0..100),
    ) {
        use virtio_transport_common::credit::{Reader, RxCredit};
        let mut r = RxCredit::new(init);
        let (mut max_edge, mut received, mut consumed) = (u64::from(init), 0u64, 0u64);
        for e in evs {
            match e {
                RxEv::Advertise => {
                    let (buf, fwd) = r.advertise();
                    prop_assert_eq!(u64::from(fwd), consumed);
                    max_edge = max_edge.max(consumed + u64::from(buf));
                }
                RxEv::SetBuf(n) => { let _ = r.set_buf_alloc(n.into()); }
                RxEv::Recv(_) | RxEv::RecvAtEdge(_) => {
                    let len = match e {
                        RxEv::Recv(len) => len,
                        RxEv::RecvAtEdge(d) => (max_edge - received).saturating_add_signed(d.into()) as u32,
                        _ => unreachable!(),
                    };
                    let legal = received + u64::from(len) <= max_edge;
                    prop_assert_eq!(r.accept(len), legal);
                    if legal {
                        r.on_enqueue(len);
                        received += u64::from(len);
                    }
                }
                RxEv::Consume(n) => {
                    let n = u64::from(n).min(received - consumed);
                    let _ = r.on_consume(n as u32, Reader::Stream);
                    consumed += n;
                }
            }
            prop_assert_eq!(u64::from(r.rx_bytes()), received - consumed);
            prop_assert_eq!(u64::from(r.fwd_cnt()), consumed);
        }
    }
}
