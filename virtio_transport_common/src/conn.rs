//! Per-socket transport state machine: what a connection does with each packet and each
//! local event, as the virtio common code sees it (upstream `virtio_transport_recv_pkt` and
//! its `recv_listen` / `recv_connecting` / `recv_connected` / `recv_disconnecting` helpers,
//! `virtio_transport_connect` / `shutdown` / `release` / `close` / `close_timeout`).
//!
//! [`Conn`] owns the state, shutdown bits, `done` (upstream `SOCK_DONE`), the credit state and
//! the SEQPACKET message counter. Events go in; [`Actions`] (or a [`Ctl`] to send) come out and
//! the glue carries them out: build and send packets, queue payload, wake waiters, set
//! `sk_err`, unhash, manage the close timer. Socket lookup, the accept backlog and the packet
//! queue itself belong to the glue.
//!
//! # Packet table (`on_packet`, after [`super::hdr::validate`] and socket lookup)
//!
//! Checked first, in every state: a type that differs from the socket's, or a socket that is
//! `done`, gets `RstReply` and nothing else. Otherwise, in every state but `Closed`/`Listen`,
//! the header's `buf_alloc`/`fwd_cnt` update [`TxCredit`] (`wake_writers` if space grew).
//!
//! | state | packet | effect | sent |
//! |-------|--------|--------|------|
//! | Closed | any | — | RstReply |
//! | Listen | REQUEST | `new_child` (unless listener shut down both ways: RstReply) | (child: RESPONSE) |
//! | Listen | other | — | RstReply |
//! | Connecting | RESPONSE | → Established, `connected`, `state_change` | CreditUpdate if our buffer size changed meanwhile |
//! | Connecting | RST | → Closed, error `ECONNRESET` (upstream's errno for a refused connect) | — |
//! | Connecting | other | → Closed, error `EPROTO` | RstReply |
//! | Established | RW fits credit | `enqueue`, `wake_readers` (SEQPACKET: only at EOM, which counts a message) | — |
//! | Established | RW over credit | do_close, error `ENOBUFS`, `unhash` | RstReply |
//! | Established | CREDIT_REQUEST | — | CreditUpdate |
//! | Established | CREDIT_UPDATE | (credit already taken) | — |
//! | Established | SHUTDOWN | peer_shutdown \|= flags; `state_change` if flags; if now both: `unhash`, and if no data queued: do_close | Rst if both and no data |
//! | Established | RST | do_close | — |
//! | Established | REQUEST, RESPONSE | ignored (upstream `-EINVAL`) | — |
//! | Closing | RST | do_close | — |
//! | Closing | other | ignored | — |
//!
//! do_close (upstream `virtio_transport_do_close`): `done`, peer_shutdown = both, → Closing if
//! no data is queued (else stay Established so the reader drains it), `state_change`, and if the
//! close timer is pending: `finish_close`.
//!
//! Additionally, when a packet shows that the peer's own buffer shrank, the credit policy is
//! re-run and a CreditUpdate may be sent (see [`super::credit`]).
//!
//! # Local events
//!
//! | event | states | effect | sent |
//! |-------|--------|--------|------|
//! | [`Conn::listen`] | Closed | → Listen | — |
//! | [`Conn::connect`] | Closed | fresh credit, → Connecting | REQUEST |
//! | [`Conn::connect_timeout`] | Connecting | → Closed, error `ETIMEDOUT` | — |
//! | [`Conn::shutdown`] | Connecting, Established, Closing | shutdown \|= mode, `done` cleared (as upstream) | SHUTDOWN(mode) |
//! | [`Conn::release`] | not Established/Closing | `done`; remove now | — |
//! | [`Conn::release`] | peer shut down both ways | `done`; remove now | Rst |
//! | [`Conn::release`] | otherwise | wait for the peer ([`Conn::start_close_timer`]) | SHUTDOWN(both) unless already |
//! | [`Conn::close_timeout`] | close timer pending, not done | do_close, `finish_close` | Rst |
//! | [`Conn::reset`] (transport) | Connecting | → Closed, error `ECONNRESET`, `unhash` | — |
//! | [`Conn::reset`] (transport) | Established, Closing, not done | → Closed, `done`, `reset`, queue dropped, error `ECONNRESET`, `unhash`, `finish_close` if the close timer is pending | — |
//!
//! # Deliberate differences from upstream
//!
//! * Credit updates follow [`super::credit`]'s policy, and none are sent once the peer can
//!   no longer send (`done` or peer shut down SEND).
//! * A peer that overruns an old, larger window after we shrank our buffer is accepted (see
//!   [`RxCredit::accept`]).
//! * Headers with `op == INVALID`/unknown are rejected by `validate` (the glue answers with an
//!   RST) instead of being ignored or resetting a connecting socket.

use super::credit::{Reader, RxCredit, TxCredit};
use super::hdr::{Addr, Hdr, Op, SockType, Valid, SEQ_EOM, SHUTDOWN_BOTH, SHUTDOWN_SEND};
use super::seqpacket::{Chunk, MsgTooBig, SeqRx, SeqTx};

/// Transport-level socket state (upstream `sk_state` as the virtio common code uses it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Unconnected, or a failed/finished connect (`TCP_CLOSE`).
    Closed,
    /// Listening socket (`TCP_LISTEN`).
    Listen,
    /// REQUEST sent, waiting for RESPONSE (`TCP_SYN_SENT`).
    Connecting,
    /// Connected (`TCP_ESTABLISHED`).
    Established,
    /// The peer reset or fully shut down and no data is left (`TCP_CLOSING`).
    Closing,
}

/// A control packet the glue must send on this connection.
///
/// Build it with [`Conn::packet`] (stamps credit), except [`Ctl::RstReply`], which answers the
/// packet being handled: build it with [`super::hdr::rst_reply`] from that packet's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ctl {
    /// Connection request.
    Request,
    /// Connection accepted (a reply to the REQUEST).
    Response,
    /// Unsolicited reset, to the socket's peer.
    Rst,
    /// Reset answering the packet just handled (never sent in answer to an RST).
    RstReply,
    /// Shutdown with these [`super::hdr::SHUTDOWN_RCV`]/[`super::hdr::SHUTDOWN_SEND`] flags.
    Shutdown(u32),
    /// Our credit information.
    CreditUpdate,
    /// Ask the peer for its credit information (never produced by [`Conn`]; upstream never
    /// sends it either, but answers it).
    CreditRequest,
}

impl Ctl {
    /// The packet's op.
    pub fn op(self) -> Op {
        match self {
            Ctl::Request => Op::Request,
            Ctl::Response => Op::Response,
            Ctl::Rst | Ctl::RstReply => Op::Rst,
            Ctl::Shutdown(_) => Op::Shutdown,
            Ctl::CreditUpdate => Op::CreditUpdate,
            Ctl::CreditRequest => Op::CreditRequest,
        }
    }

    /// The packet's flags.
    pub fn flags(self) -> u32 {
        match self {
            Ctl::Shutdown(f) => f & SHUTDOWN_BOTH,
            _ => 0,
        }
    }

    /// Whether the packet is a reply to a received packet (vhost accounts replies).
    pub fn is_reply(self) -> bool {
        matches!(self, Ctl::Response | Ctl::RstReply)
    }
}

/// Error to report on the socket (`sk_err` + `sk_error_report`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockError {
    /// `ECONNRESET`: RST while connecting (upstream's errno for a refused connect).
    ConnReset,
    /// `EPROTO`: unexpected packet while connecting.
    Proto,
    /// `ENOBUFS`: the peer overran our receive buffer.
    NoBufs,
    /// `ETIMEDOUT`: connect timed out.
    TimedOut,
}

impl SockError {
    /// The positive Linux errno.
    pub fn errno(self) -> i32 {
        match self {
            SockError::ConnReset => 104,
            SockError::Proto => 71,
            SockError::NoBufs => 105,
            SockError::TimedOut => 110,
        }
    }
}

/// What the glue must do after an event. All fields default to "nothing".
#[must_use]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Actions {
    /// Control packet to send (at most one per event).
    pub send: Option<Ctl>,
    /// Queue the packet's payload (already accounted in [`RxCredit`] / [`SeqRx`]); set for
    /// non-empty RW payloads and for empty SEQPACKET EOM packets (a boundary).
    pub enqueue: bool,
    /// Wake readers (`vsock_data_ready`).
    pub wake_readers: bool,
    /// Wake writers (`sk_write_space`): send space grew.
    pub wake_writers: bool,
    /// State or shutdown bits changed (`sk_state_change`).
    pub state_change: bool,
    /// Connect completed (`SS_CONNECTED`, `vsock_insert_connected`).
    pub connected: bool,
    /// Listener got a REQUEST: check the backlog, then [`Conn::accept_request`] (or send
    /// [`super::hdr::rst_reply`] if the backlog is full).
    pub new_child: bool,
    /// Report this error on the socket.
    pub error: Option<SockError>,
    /// The socket became done (`SOCK_DONE`): the peer reset or fully closed.
    pub done: bool,
    /// Remove the socket from the lookup tables (`vsock_remove_sock`), so a new connection
    /// from the same peer port can be made.
    pub unhash: bool,
    /// The close timer was pending and the close is now complete: cancel the timer, purge the
    /// receive queue, unhash, drop the timer's socket reference.
    pub finish_close: bool,
}

/// What [`Conn::release`] asks of the glue.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Release {
    /// Packet to send first.
    pub send: Option<Ctl>,
    /// `false`: remove the socket now. `true`: the peer has not closed yet; optionally linger
    /// (wait for `done` up to `SO_LINGER`), then call [`Conn::start_close_timer`].
    pub wait_for_peer: bool,
}

/// Transport state of one socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    state: State,
    ty: SockType,
    shutdown: u32,
    peer_shutdown: u32,
    done: bool,
    reset: bool,
    close_pending: bool,
    tx: TxCredit,
    rx: RxCredit,
    seq: SeqRx,
}

impl Conn {
    /// A new unconnected socket with a receive buffer of `buf_alloc` bytes (clamped to
    /// `u32::MAX`).
    pub fn new(ty: SockType, buf_alloc: u64) -> Conn {
        let buf = u32::try_from(buf_alloc).unwrap_or(u32::MAX);
        Conn {
            state: State::Closed,
            ty,
            shutdown: 0,
            peer_shutdown: 0,
            done: false,
            reset: false,
            close_pending: false,
            tx: TxCredit::new(buf),
            rx: RxCredit::new(buf),
            seq: SeqRx::new(),
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Socket type.
    pub fn ty(&self) -> SockType {
        self.ty
    }

    /// Whether the socket is done (`SOCK_DONE`).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether the transport reset the connection ([`Conn::reset`]): readers and writers get
    /// `ECONNRESET`, never an end of file.
    pub fn is_reset(&self) -> bool {
        self.reset
    }

    /// Local shutdown bits (`sk_shutdown`: RCV = 1, SEND = 2).
    pub fn local_shutdown(&self) -> u32 {
        self.shutdown
    }

    /// Peer shutdown bits (`peer_shutdown`: RCV = 1, SEND = 2).
    pub fn peer_shutdown(&self) -> u32 {
        self.peer_shutdown
    }

    /// Whether the close timer is armed.
    pub fn close_pending(&self) -> bool {
        self.close_pending
    }

    /// Sending-side credit (read-only; mutate through [`Conn`]).
    pub fn tx(&self) -> &TxCredit {
        &self.tx
    }

    /// Receiving-side credit (read-only; mutate through [`Conn`]).
    pub fn rx(&self) -> &RxCredit {
        &self.rx
    }

    /// SEQPACKET message counter.
    pub fn seq(&self) -> &SeqRx {
        &self.seq
    }

    /// Bytes queued for the reader (`stream_has_data`).
    pub fn has_data(&self) -> u32 {
        self.rx.rx_bytes()
    }

    /// Bytes we may send now (`stream_has_space`).
    pub fn has_space(&self) -> u32 {
        self.tx.space()
    }

    /// Complete SEQPACKET messages queued (`seqpacket_has_data`).
    pub fn seq_has_data(&self) -> u32 {
        self.seq.msg_count()
    }

    fn reader(&self) -> Reader {
        match self.ty {
            SockType::Stream => Reader::Stream,
            SockType::Seqpacket => Reader::Messages(self.seq.msg_count()),
        }
    }

    /// A CreditUpdate if the policy wants one and the peer can still use it.
    fn credit_update(&self, want: bool) -> Option<Ctl> {
        let useful = self.state == State::Established
            && !self.done
            && self.peer_shutdown & SHUTDOWN_SEND == 0;
        (want && useful).then_some(Ctl::CreditUpdate)
    }

    /// Fills the credit fields of an outgoing header and records them as advertised. Every
    /// packet sent on this connection must be stamped (upstream `virtio_transport_inc_tx_pkt`).
    pub fn stamp(&mut self, h: &mut Hdr) {
        let (buf_alloc, fwd_cnt) = self.rx.advertise();
        h.buf_alloc = buf_alloc;
        h.fwd_cnt = fwd_cnt;
    }

    /// A stamped control packet from `local` to `remote`.
    pub fn packet(&mut self, ctl: Ctl, local: Addr, remote: Addr) -> Hdr {
        let mut h = Hdr::new(self.ty, ctl.op(), local, remote);
        h.flags = ctl.flags();
        self.stamp(&mut h);
        h
    }

    /// A stamped RW header for a payload of `len` bytes with RW `flags`.
    pub fn data_packet(&mut self, len: u32, flags: u32, local: Addr, remote: Addr) -> Hdr {
        let mut h = Hdr::new(self.ty, Op::Rw, local, remote);
        h.len = len;
        h.flags = flags;
        self.stamp(&mut h);
        h
    }

    /// Handles one received packet (already validated and matched to this socket).
    pub fn on_packet(&mut self, v: &Valid, h: &Hdr) -> Actions {
        let mut a = Actions::default();
        if v.ty != self.ty || self.done {
            a.send = rst_reply(v);
            return a;
        }
        match self.state {
            State::Closed => a.send = rst_reply(v),
            State::Listen => {
                if v.op == Op::Request && self.shutdown != SHUTDOWN_BOTH {
                    a.new_child = true;
                } else {
                    a.send = rst_reply(v);
                }
            }
            State::Connecting | State::Established | State::Closing => {
                a.wake_writers = self.tx.update_from_peer(h.buf_alloc, h.fwd_cnt);
                let recheck = self.rx.set_peer_cap(h.buf_alloc);
                match self.state {
                    State::Connecting => self.recv_connecting(v, &mut a),
                    State::Established => self.recv_connected(v, &mut a),
                    _ => {
                        if v.op == Op::Rst {
                            self.do_close(&mut a);
                        }
                    }
                }
                if a.send.is_none() && recheck {
                    a.send = self.credit_update(self.rx.wants_update(self.reader()).send());
                }
            }
        }
        a
    }

    fn recv_connecting(&mut self, v: &Valid, a: &mut Actions) {
        match v.op {
            Op::Response => {
                self.state = State::Established;
                a.connected = true;
                a.state_change = true;
                // The buffer size changed while connecting (no update is sent then: the peer
                // has no connected socket yet and would answer with an RST).
                if self.rx.buf_alloc() != self.rx.last_buf_alloc() {
                    a.send = Some(Ctl::CreditUpdate);
                }
            }
            Op::Rst => {
                self.state = State::Closed;
                a.error = Some(SockError::ConnReset);
            }
            _ => {
                self.state = State::Closed;
                a.send = rst_reply(v);
                a.error = Some(SockError::Proto);
            }
        }
    }

    fn recv_connected(&mut self, v: &Valid, a: &mut Actions) {
        match v.op {
            Op::Rw if self.rx.accept(v.len) => {
                self.rx.on_enqueue(v.len);
                if self.ty == SockType::Seqpacket {
                    self.seq.on_enqueue(v.flags);
                    if v.flags & SEQ_EOM == 0 && v.len > 0 {
                        // A message's non-final piece: its sender may be out of credit for
                        // the rest while our reader waits for it (see `credit`'s policy).
                        a.send = self.credit_update(self.rx.wants_update(self.reader()).send());
                    }
                }
                a.enqueue = v.len > 0 || v.flags & SEQ_EOM != 0;
                // A SEQPACKET reader (recv(2), poll(2)) sees nothing before a message's last
                // piece: waking it for the others only makes it look and sleep again (over
                // loopback a large message comes in two pieces, pinned and copied).
                a.wake_readers = a.enqueue && (self.ty != SockType::Seqpacket || v.flags & SEQ_EOM != 0);
            }
            Op::Rw => self.overrun(v, a),
            Op::CreditRequest => a.send = Some(Ctl::CreditUpdate),
            Op::Shutdown => {
                self.peer_shutdown |= v.flags;
                if self.peer_shutdown == SHUTDOWN_BOTH {
                    if self.rx.rx_bytes() == 0 {
                        a.send = Some(Ctl::Rst);
                        self.do_close(a);
                    }
                    a.unhash = true;
                }
                a.state_change |= v.flags != 0;
            }
            Op::Rst => self.do_close(a),
            Op::CreditUpdate | Op::Request | Op::Response | Op::Invalid => {}
        }
    }

    /// The peer sent more than we can queue: RST, close with `ENOBUFS` (upstream).
    fn overrun(&mut self, v: &Valid, a: &mut Actions) {
        a.send = rst_reply(v);
        self.do_close(a);
        a.error = Some(SockError::NoBufs);
        a.unhash = true;
    }

    /// An RW packet within credit that the receive queue cannot hold within
    /// [`RxCredit::mem_budget`] (the glue measures the queue's memory): handled like a
    /// credit overrun. Call it instead of [`Conn::on_packet`] for that packet.
    pub fn on_mem_overrun(&mut self, v: &Valid) -> Actions {
        let mut a = Actions::default();
        if self.state == State::Established && !self.done {
            self.overrun(v, &mut a);
        }
        a
    }

    fn do_close(&mut self, a: &mut Actions) {
        self.done = true;
        a.done = true;
        self.peer_shutdown = SHUTDOWN_BOTH;
        if self.rx.rx_bytes() == 0 {
            self.state = State::Closing;
        }
        a.state_change = true;
        if self.close_pending {
            self.close_pending = false;
            a.finish_close = true;
        }
    }

    /// Makes a listening socket. Returns `false` (no change) unless `Closed`.
    pub fn listen(&mut self) -> bool {
        let ok = self.state == State::Closed;
        if ok {
            self.state = State::Listen;
        }
        ok
    }

    /// On a listener that got `new_child`: the child socket, already Established with the
    /// peer's credit, inheriting the listener's type and buffer size, and its actions
    /// (send RESPONSE; `wake_writers`). The glue then wakes the listener's accept waiters.
    pub fn accept_request(&self, v: &Valid, h: &Hdr) -> (Conn, Actions) {
        let mut child = Conn::new(v.ty, u64::from(self.rx.buf_alloc()));
        child.state = State::Established;
        let wake_writers = child.tx.update_from_peer(h.buf_alloc, h.fwd_cnt);
        let _ = child.rx.set_peer_cap(h.buf_alloc);
        let a = Actions {
            send: Some(Ctl::Response),
            wake_writers,
            ..Actions::default()
        };
        (child, a)
    }

    /// Starts connecting: returns the REQUEST to send, or `None` (no change) unless `Closed`.
    /// Credit and peer state start afresh; buffer size and `SO_RCVLOWAT` are kept.
    pub fn connect(&mut self) -> Option<Ctl> {
        if self.state != State::Closed {
            return None;
        }
        let buf = self.rx.buf_alloc();
        let lowat = self.rx.lowat();
        self.tx = TxCredit::new(buf);
        self.rx = RxCredit::new(buf);
        let _ = self.rx.set_lowat(lowat);
        self.seq = SeqRx::new();
        self.peer_shutdown = 0;
        self.done = false;
        self.reset = false;
        self.close_pending = false;
        self.state = State::Connecting;
        Some(Ctl::Request)
    }

    /// The connect timer fired: a still-Connecting socket fails with `ETIMEDOUT`.
    /// A RESPONSE arriving later is answered with an RST.
    pub fn connect_timeout(&mut self) -> Actions {
        let mut a = Actions::default();
        if self.state == State::Connecting {
            self.state = State::Closed;
            a.error = Some(SockError::TimedOut);
        }
        a
    }

    /// `shutdown(2)` with RCV/SEND bits `mode`: records them and returns the SHUTDOWN to send.
    /// The bits are recorded in any state (upstream sets `sk_shutdown` whenever the glue let
    /// the call through, e.g. after a refused non-blocking connect: a send then fails with
    /// EPIPE, poll shows HUP); `None` (nothing to send) if `mode` is empty or the socket is
    /// not connecting/connected (`ENOTCONN` is the glue's). Like upstream a SHUTDOWN sent
    /// clears `done`.
    pub fn shutdown(&mut self, mode: u32) -> Option<Ctl> {
        let mode = mode & SHUTDOWN_BOTH;
        let connected = matches!(
            self.state,
            State::Connecting | State::Established | State::Closing
        );
        self.shutdown |= mode;
        if mode == 0 || !connected {
            return None;
        }
        self.done = false;
        Some(Ctl::Shutdown(mode))
    }

    /// `close(2)` / socket release (upstream `virtio_transport_release`/`close`).
    ///
    /// A connection that is over already (`done`: the peer's RST came, or we answered its
    /// SHUTDOWN with ours) closes without a packet. Upstream sends an RST then too, which
    /// reaches a peer that has no socket for it any more (and so does not answer it): one
    /// packet, and on a virtio or vhost transport one notification, per connection whose peer
    /// closed first (issue 17: in the host-to-guest connect benchmark the guest's acceptor sent
    /// 2.96 packets per connection, RESPONSE, the RST answering the host's SHUTDOWN and this
    /// one).
    pub fn release(&mut self) -> Release {
        let r = match self.state {
            State::Established | State::Closing if self.done => Release {
                send: None,
                wait_for_peer: false,
            },
            State::Established | State::Closing if self.peer_shutdown != SHUTDOWN_BOTH => Release {
                send: (self.shutdown != SHUTDOWN_BOTH).then_some(Ctl::Shutdown(SHUTDOWN_BOTH)),
                wait_for_peer: true,
            },
            State::Established | State::Closing => Release {
                send: Some(Ctl::Rst),
                wait_for_peer: false,
            },
            _ => Release {
                send: None,
                wait_for_peer: false,
            },
        };
        self.shutdown = SHUTDOWN_BOTH;
        if !r.wait_for_peer {
            self.done = true;
        }
        r
    }

    /// After a [`Release`] with `wait_for_peer` (and any linger): `true` means arm the close
    /// timer ([`super::hdr::CLOSE_TIMEOUT_MS`]) and keep the socket; `false` means the peer
    /// already closed: remove the socket now.
    pub fn start_close_timer(&mut self) -> bool {
        self.close_pending = !self.done;
        self.close_pending
    }

    /// The transport ended the connection locally: the guest's TRANSPORT_RESET event (the VM
    /// was migrated or restored), the peer VM's device released, the transport unloaded. No
    /// packet reaches the peer any more and none of its packets is taken (`done`). Unlike a
    /// peer's RST, nothing queued is delivered: the socket is `Closed` and `reset`, and
    /// readers and writers get `ECONNRESET` (error [`SockError::ConnReset`]) where a peer's
    /// RST gives an end of file, so a stream cut by a reset is never taken for a whole one
    /// (upstream: the guest's reader gets `ENOTCONN` unless it was blocked; the host's, unless
    /// blocked, an end of file). The glue drops the receive queue. A connecting socket fails its connect
    /// with `ECONNRESET`; listening, unconnected and `done` sockets are left alone.
    pub fn reset(&mut self) -> Actions {
        let mut a = Actions::default();
        match self.state {
            State::Connecting => {
                self.state = State::Closed;
                a.error = Some(SockError::ConnReset);
                a.state_change = true;
                a.unhash = true;
            }
            State::Established | State::Closing if !self.done => {
                self.state = State::Closed;
                self.done = true;
                self.reset = true;
                self.rx.discard_queued();
                self.seq = SeqRx::new();
                a.error = Some(SockError::ConnReset);
                a.done = true;
                a.state_change = true;
                a.wake_readers = true;
                a.wake_writers = true;
                a.unhash = true;
                if self.close_pending {
                    self.close_pending = false;
                    a.finish_close = true;
                }
            }
            _ => {}
        }
        a
    }

    /// The close timer fired: reset the peer if it has not closed, and finish the close.
    pub fn close_timeout(&mut self) -> Actions {
        let mut a = Actions::default();
        if !self.close_pending {
            return a;
        }
        if self.done {
            self.close_pending = false;
            a.finish_close = true;
        } else {
            a.send = Some(Ctl::Rst);
            self.do_close(&mut a);
        }
        a
    }

    /// Reserves up to `want` bytes of send credit (STREAM: then send them in packets of at
    /// most [`super::hdr::MAX_PKT_BUF_SIZE`] with [`Conn::data_packet`]).
    pub fn take_credit(&mut self, want: u32) -> u32 {
        self.tx.take(want)
    }

    /// Returns reserved credit that could not be sent.
    pub fn put_back_credit(&mut self, n: u32) {
        self.tx.put_back(n);
    }

    /// The device consumed `n` of our payload bytes (`SIOCOUTQ` accounting).
    pub fn on_tx_done(&mut self, n: u32) {
        self.tx.on_sent(n);
    }

    /// Starts sending a SEQPACKET message; `Err` is `EMSGSIZE`.
    pub fn seq_send(&self, len: usize, eor: bool) -> Result<SeqTx, MsgTooBig> {
        SeqTx::new(len, eor, self.tx.buf_size())
    }

    /// The next packet of a SEQPACKET message, credit reserved; `None`: done or no credit.
    pub fn next_chunk(&mut self, m: &mut SeqTx, max_pkt: u32) -> Option<Chunk> {
        m.next(&mut self.tx, max_pkt)
    }

    /// The STREAM reader consumed `n` bytes; returns a CreditUpdate to send, if any.
    pub fn on_consume(&mut self, n: u32) -> Option<Ctl> {
        let want = self.rx.on_consume(n, Reader::Stream).send();
        self.credit_update(want)
    }

    /// The SEQPACKET reader dequeued one whole message of `msg_len` bytes; returns a
    /// CreditUpdate to send, if any.
    pub fn on_seq_consume(&mut self, msg_len: u32) -> Option<Ctl> {
        self.seq.on_dequeue();
        let want = self
            .rx
            .on_consume(msg_len, Reader::Messages(self.seq.msg_count()))
            .send();
        self.credit_update(want)
    }

    /// `SO_VM_SOCKETS_BUFFER_SIZE` changed: new receive buffer and send cap. Sends a
    /// CreditUpdate if the peer's view changed; `wake_writers` if send space grew.
    pub fn set_buf_alloc(&mut self, size: u64) -> Actions {
        let changed = self.rx.set_buf_alloc(size);
        Actions {
            send: self.credit_update(changed),
            wake_writers: self.tx.set_local_cap(self.rx.buf_alloc()),
            ..Actions::default()
        }
    }

    /// `SO_RCVLOWAT` changed; returns a CreditUpdate to send, if the peer could otherwise not
    /// send enough to wake the reader.
    pub fn set_rcvlowat(&mut self, lowat: u32) -> Option<Ctl> {
        let want = self.rx.set_lowat(lowat).send() && self.ty == SockType::Stream;
        self.credit_update(want)
    }
}

/// An RST answering `v`, unless `v` is itself an RST.
fn rst_reply(v: &Valid) -> Option<Ctl> {
    (v.op != Op::Rst).then_some(Ctl::RstReply)
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
