//! Credit-based flow control (virtio spec "Buffer Space Management").
//!
//! Every packet carries its sender's `buf_alloc` (receive buffer size) and `fwd_cnt` (bytes its
//! reader has consumed, wrapping). A sender may have at most `buf_alloc` bytes "in flight",
//! i.e. sent but not yet consumed: `tx_cnt - peer_fwd_cnt <= peer_buf_alloc`, all counters
//! `u32` with wrapping arithmetic.
//!
//! * [`TxCredit`] is the sending side: our view of the peer's buffer.
//! * [`RxCredit`] is the receiving side: our buffer, what we advertised, whether an incoming
//!   payload respects the credit we gave, and when a CREDIT_UPDATE is worth sending.
//!
//! # When to send a CREDIT_UPDATE
//!
//! Consuming data opens our window, but the peer only learns about it from a packet we send.
//! Upstream (`virtio_transport_stream_do_dequeue`) sends an update after a read when something
//! was consumed since the last advertisement (`delta > 0`) and either
//! `buf_alloc - delta < 64 KiB` or `rx_bytes < SO_RCVLOWAT`. With the default `SO_RCVLOWAT` of 1
//! the second clause fires on every read that empties the queue, i.e. one update per `recv()`
//! when the reader keeps up. [`RxCredit::wants_update`] instead estimates what the peer can
//! still send and speaks only when that matters:
//!
//! * `W = min(last advertised buf_alloc, peer's own buf_alloc)` — Linux ≥ 6.12.117 senders cap
//!   their window at their own buffer size too (`virtio_transport_tx_buf_size`), so the peer's
//!   `buf_alloc` bounds what it will ever send. A sender that caps at neither is allowed more
//!   than `W`, which only makes the estimates below pessimistic (more updates, never fewer).
//! * `peer_free = W - (rx_bytes + delta)`: an upper bound of the peer's current credit (exact
//!   once nothing is in flight). `starving = peer_free < min(W, 64 KiB)`: the peer may be
//!   unable to send a full-size packet. `half = delta >= W/2`: half the window was consumed
//!   behind the peer's back; a sender that keeps sending is running low (like TCP's
//!   "acknowledge every other segment", it keeps a streaming sender from ever stalling when
//!   the round trip takes less than sending `W/2`).
//! * If the reader has more to read without new data ("ready": STREAM `rx_bytes >= lowat`,
//!   SEQPACKET a complete message queued), it will consume again, so we may wait: update if
//!   `half`, or if `starving` and `delta >= min(64 KiB, W/2)` (silly-window avoidance: never
//!   hand out crumbs while the reader is still busy).
//! * If the reader is about to block: STREAM updates if `starving`, `half`, or
//!   `W - delta < min(lowat, W)` (the peer cannot possibly send enough to wake the reader);
//!   SEQPACKET if `starving` or `half`.
//! * SEQPACKET, when a packet that does not end a message arrives and no complete message is
//!   queued (the reader stays blocked, so no consume will run the policy): the same test. A
//!   sender that runs out of credit in the middle of a message has just sent such a packet
//!   (or had nothing left to send it with, which the consume before it saw as `starving`).
//!
//! Liveness: suppose the sender stays blocked forever with data pending while the reader keeps
//! reading whenever it can. Once everything is delivered, `peer_free` is exact and zero, and the
//! reader is blocked, so the last consume ran the "about to block" branch, which updates unless
//! the peer could still send `lowat - rx_bytes` more bytes (STREAM) — contradicting that it is
//! blocked. SEQPACKET: the last event was a consume that left no complete message or the
//! arrival of a message's non-final packet; both ran the "about to block" test, and a blocked
//! sender (no credit: `peer_free` exact and 0) makes it `starving`, so it updated unless
//! nothing was consumed since the last update (then the queued messages fill the window and
//! the reader, woken by the complete ones, consumes again). This needs senders that send a
//! message in pieces as credit allows (Linux does, and so do we); one that waited for credit
//! for a whole message larger than 64 KiB could wait forever. This assumes `lowat <= W`
//! (af_vsock refuses `SO_RCVLOWAT` above the buffer size) and a peer that keeps at least `W`
//! in flight when it has data; when the peer's `buf_alloc` shrinks, [`RxCredit::set_peer_cap`]
//! tells the caller to re-run the policy. The STREAM and SEQPACKET simulations in
//! `tests/properties.rs` check it. Safety is [`RxCredit::accept`]'s job.
//!
//! Compared with upstream: a reader that keeps up sends one update per `W/2` consumed bytes
//! instead of one per `recv()` (the tests measure 128 vs 256 for 16 MiB in 64 KiB reads with
//! the default 256 KiB buffer; far fewer for smaller reads); a slow reader with a full buffer
//! sends at most one per `min(64 KiB, W/2)` consumed (upstream waits until `W - 64 KiB` were
//! consumed, leaving the sender idle meanwhile). SEQPACKET: upstream updates after every
//! message read; a reader that keeps up with small messages here updates once per `W/2`
//! consumed bytes (2,048 messages of 64 bytes with the default buffer), as STREAM.

use super::hdr::MAX_PKT_BUF_SIZE;

/// Sending side of flow control: what the peer's receive buffer lets us send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxCredit {
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    tx_cnt: u32,
    local_cap: u32,
    unsent: u32,
}

impl TxCredit {
    /// Fresh state for a new connection: no credit until the peer's first header.
    /// `local_cap` is our own buffer size: like upstream we never keep more than that in
    /// flight, whatever the peer advertises.
    pub const fn new(local_cap: u32) -> Self {
        TxCredit {
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
            local_cap,
            unsent: 0,
        }
    }

    /// The peer's advertised receive buffer size.
    pub fn peer_buf_alloc(&self) -> u32 {
        self.peer_buf_alloc
    }

    /// The peer's consumed-bytes counter, as last accepted.
    pub fn peer_fwd_cnt(&self) -> u32 {
        self.peer_fwd_cnt
    }

    /// Bytes we have reserved for sending so far (wrapping).
    pub fn tx_cnt(&self) -> u32 {
        self.tx_cnt
    }

    /// Bytes reserved by [`Self::take`] that the device has not consumed yet (`SIOCOUTQ`).
    pub fn unsent(&self) -> u32 {
        self.unsent
    }

    /// The window we use: `min(peer_buf_alloc, local_cap)` (upstream
    /// `virtio_transport_tx_buf_size`). A SEQPACKET message larger than this is `EMSGSIZE`.
    pub fn buf_size(&self) -> u32 {
        self.peer_buf_alloc.min(self.local_cap)
    }

    /// Bytes sent and not yet consumed by the peer's reader.
    pub fn in_flight(&self) -> u32 {
        self.tx_cnt.wrapping_sub(self.peer_fwd_cnt)
    }

    /// Bytes we may still send: `buf_size() - in_flight()`, or 0 when the peer shrank its
    /// buffer below what is already in flight.
    pub fn space(&self) -> u32 {
        self.buf_size().saturating_sub(self.in_flight())
    }

    /// Reserves `min(want, space())` bytes for sending and returns that amount.
    pub fn take(&mut self, want: u32) -> u32 {
        let n = want.min(self.space());
        self.tx_cnt = self.tx_cnt.wrapping_add(n);
        self.unsent = self.unsent.saturating_add(n);
        n
    }

    /// Returns reserved bytes that could not be sent (upstream `virtio_transport_put_credit`).
    /// Clamped to what is reserved and unsent, so a glue bug cannot corrupt the counters.
    pub fn put_back(&mut self, n: u32) {
        let n = n.min(self.unsent).min(self.in_flight());
        self.tx_cnt = self.tx_cnt.wrapping_sub(n);
        self.unsent = self.unsent.saturating_sub(n);
    }

    /// The device consumed `n` payload bytes of ours (upstream
    /// `virtio_transport_consume_skb_sent`); only affects [`Self::unsent`].
    pub fn on_sent(&mut self, n: u32) {
        self.unsent = self.unsent.saturating_sub(n);
    }

    /// Changes our own cap (our socket buffer size). Returns whether space grew.
    pub fn set_local_cap(&mut self, cap: u32) -> bool {
        let before = self.space();
        self.local_cap = cap;
        self.space() > before
    }

    /// Takes the credit fields of any packet from the peer. Returns whether [`Self::space`]
    /// grew, i.e. whether blocked writers should be woken.
    ///
    /// Rule for `fwd_cnt`: it is accepted only if it moves forward by at most what is in flight
    /// (`fwd_cnt - peer_fwd_cnt <= tx_cnt - peer_fwd_cnt`, wrapping). A value claiming more
    /// consumed than we ever sent, or going backwards, is ignored (the old value stays), so a
    /// lying peer can never make [`Self::space`] exceed `buf_size()`. (Upstream takes it
    /// blindly, which makes its space computation go negative and stall instead.)
    /// `buf_alloc` is taken with it, and also when `fwd_cnt` claims too much (shrinking only
    /// reduces what we send), but not from a packet whose `fwd_cnt` goes backwards: that one
    /// was stamped before a packet we already took, and its `buf_alloc` is as stale. Taken
    /// with the newer `fwd_cnt`, an older, larger `buf_alloc` put the window's edge past any
    /// the peer advertised (a loopback peer stamps control packets under its state lock and
    /// sends them after, so two can arrive swapped; the peer then reset us for overrunning).
    pub fn update_from_peer(&mut self, buf_alloc: u32, fwd_cnt: u32) -> bool {
        let before = self.space();
        let ahead = fwd_cnt.wrapping_sub(self.peer_fwd_cnt);
        if ahead <= self.in_flight() {
            self.peer_fwd_cnt = fwd_cnt;
        } else if ahead > u32::MAX / 2 {
            // Backwards (in wrapping terms): an older packet.
            return false;
        }
        self.peer_buf_alloc = buf_alloc;
        self.space() > before
    }
}

/// Whether a reader has more to read without new data from the peer; decides how eagerly
/// [`RxCredit::wants_update`] speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reader {
    /// STREAM reader: ready while `rx_bytes >= SO_RCVLOWAT`.
    Stream,
    /// SEQPACKET reader with this many complete messages queued: ready while non-zero.
    Messages(u32),
}

/// Whether to send a CREDIT_UPDATE now.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreditAction {
    /// The peer's view is good enough; stay quiet.
    Quiet,
    /// Send a CREDIT_UPDATE (stamped by [`RxCredit::advertise`]).
    SendUpdate,
}

impl CreditAction {
    /// `true` for [`CreditAction::SendUpdate`].
    pub fn send(self) -> bool {
        self == CreditAction::SendUpdate
    }
}

/// Receiving side of flow control: our buffer and what the peer knows about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxCredit {
    buf_alloc: u32,
    fwd_cnt: u32,
    rx_bytes: u32,
    last_fwd_cnt: u32,
    last_buf_alloc: u32,
    /// Bytes past `fwd_cnt` the peer may legitimately have sent: the right edge of the
    /// furthest window ever advertised, relative to `fwd_cnt`.
    room: u32,
    lowat: u32,
    peer_cap: u32,
}

impl RxCredit {
    /// Fresh state for a new connection with a `buf_alloc`-byte receive buffer.
    pub const fn new(buf_alloc: u32) -> Self {
        RxCredit {
            buf_alloc,
            fwd_cnt: 0,
            rx_bytes: 0,
            last_fwd_cnt: 0,
            last_buf_alloc: buf_alloc,
            room: buf_alloc,
            lowat: 1,
            peer_cap: u32::MAX,
        }
    }

    /// The queued bytes were dropped without being read (the connection was reset): nothing
    /// is queued any more; the counts the peer saw are kept.
    pub fn discard_queued(&mut self) {
        self.rx_bytes = 0;
    }

    /// Our receive buffer size.
    pub fn buf_alloc(&self) -> u32 {
        self.buf_alloc
    }

    /// Bytes consumed by our reader so far (wrapping).
    pub fn fwd_cnt(&self) -> u32 {
        self.fwd_cnt
    }

    /// Bytes queued and not yet read (upstream `stream_has_data`).
    pub fn rx_bytes(&self) -> u32 {
        self.rx_bytes
    }

    /// `fwd_cnt` as last advertised.
    pub fn last_fwd_cnt(&self) -> u32 {
        self.last_fwd_cnt
    }

    /// `buf_alloc` as last advertised.
    pub fn last_buf_alloc(&self) -> u32 {
        self.last_buf_alloc
    }

    /// The reader's `SO_RCVLOWAT` (at least 1).
    pub fn lowat(&self) -> u32 {
        self.lowat
    }

    /// Consumed bytes the peer has not been told about.
    pub fn unadvertised(&self) -> u32 {
        self.fwd_cnt.wrapping_sub(self.last_fwd_cnt)
    }

    /// Whether an incoming RW payload of `len` bytes respects the credit we gave: it must fit
    /// in the furthest window we ever advertised (`rx_bytes + len <= room`). The bound is the
    /// furthest window rather than the current `buf_alloc` so that shrinking the buffer never
    /// punishes a peer that sent under the old, larger window (upstream resets it), while
    /// `rx_bytes` stays bounded by the largest `buf_alloc` ever advertised. A `false` here is a
    /// peer protocol violation: the caller answers with an RST and closes with `ENOBUFS`, as
    /// upstream does, because dropping the payload would corrupt the stream.
    pub fn accept(&self, len: u32) -> bool {
        u64::from(self.rx_bytes).saturating_add(u64::from(len)) <= u64::from(self.room)
    }

    /// Most kernel memory (payloads plus per-packet overhead) the receive queue may hold:
    /// twice the furthest window ever advertised (at least the buffer size), plus three
    /// maximum-size packets. A peer that respects its credit stays below it however it cuts
    /// its data: the glue merges small payloads and copies a lagging reader's larger ones to
    /// exact-size buffers, which the allocator's power-of-two rounding makes up to twice
    /// their payload (hence twice the window); the packet at the head of the queue is the
    /// transport's own buffer (up to 128 KiB for a full packet), kept whole while the reader
    /// consumes it, so its memory outlives the credit it returns; the rest is a partly
    /// filled merge buffer and headers. With one packet of slack instead of three, a guest
    /// reader with 64 KiB receive buffers and a host sending 16 KiB payloads (vhost-device-
    /// vsock; each copy rounded to 32 KiB) was reset with ENOBUFS at 2 x 256 KiB + 64 KiB.
    /// Only a flood of tiny messages that cannot be merged (SEQPACKET, or empty ones, which
    /// credit does not limit at all) with a reader that does not consume reaches it.
    /// Upstream resets such a connection when its per-packet overhead exceeds `buf_alloc`;
    /// so does the glue here.
    pub fn mem_budget(&self) -> u64 {
        u64::from(self.room.max(self.buf_alloc))
            .saturating_mul(2)
            .saturating_add(3 * u64::from(MAX_PKT_BUF_SIZE))
    }

    /// Accounts an accepted payload as queued.
    pub fn on_enqueue(&mut self, len: u32) {
        self.rx_bytes = self.rx_bytes.saturating_add(len);
    }

    /// Accounts `n` bytes consumed by the reader (clamped to [`Self::rx_bytes`]) and says
    /// whether to send a CREDIT_UPDATE. `reader` describes what is left to read.
    pub fn on_consume(&mut self, n: u32, reader: Reader) -> CreditAction {
        let n = n.min(self.rx_bytes);
        self.rx_bytes = self.rx_bytes.saturating_sub(n);
        self.fwd_cnt = self.fwd_cnt.wrapping_add(n);
        self.room = self.room.saturating_sub(n);
        self.wants_update(reader)
    }

    /// Returns `(buf_alloc, fwd_cnt)` for an outgoing header and records them as what the
    /// peer now knows. Call it for every packet sent on this connection (upstream
    /// `virtio_transport_inc_tx_pkt`).
    pub fn advertise(&mut self) -> (u32, u32) {
        self.last_fwd_cnt = self.fwd_cnt;
        self.last_buf_alloc = self.buf_alloc;
        self.room = self.room.max(self.buf_alloc);
        (self.buf_alloc, self.fwd_cnt)
    }

    /// Changes the buffer size (`SO_VM_SOCKETS_BUFFER_SIZE`), clamped to `u32::MAX` like
    /// upstream. Returns whether the peer must be told (the value differs from the last one
    /// advertised): growing unblocks it, shrinking keeps it from overrunning the new size.
    pub fn set_buf_alloc(&mut self, size: u64) -> bool {
        self.buf_alloc = u32::try_from(size).unwrap_or(u32::MAX);
        self.buf_alloc != self.last_buf_alloc
    }

    /// Changes `SO_RCVLOWAT` (0 means 1, like the kernel) and says whether the peer must be
    /// told about consumed bytes so it can send enough to wake the reader.
    pub fn set_lowat(&mut self, lowat: u32) -> CreditAction {
        self.lowat = lowat.max(1);
        self.wants_update(Reader::Stream)
    }

    /// Records the peer's own `buf_alloc` (from any header it sends), which caps what a Linux
    /// peer keeps in flight. Returns whether it shrank, in which case the caller re-runs
    /// [`Self::wants_update`]: our earlier decision to stay quiet may no longer hold.
    pub fn set_peer_cap(&mut self, peer_buf_alloc: u32) -> bool {
        let shrank = peer_buf_alloc < self.peer_cap;
        self.peer_cap = peer_buf_alloc;
        shrank
    }

    /// The update policy described in the module docs.
    pub fn wants_update(&self, reader: Reader) -> CreditAction {
        let delta = self.unadvertised();
        if delta == 0 {
            return CreditAction::Quiet;
        }
        let window = self.last_buf_alloc.min(self.peer_cap.max(1));
        let full_pkt = window.min(MAX_PKT_BUF_SIZE);
        let peer_free = window.saturating_sub(self.rx_bytes.saturating_add(delta));
        let starving = peer_free < full_pkt;
        let half = delta >= window >> 1;
        let worth_it = half || (starving && delta >= MAX_PKT_BUF_SIZE.min(window >> 1));
        let send = match reader {
            Reader::Stream if self.rx_bytes >= self.lowat => worth_it,
            Reader::Messages(n) if n > 0 => worth_it,
            Reader::Stream => {
                starving || half || window.saturating_sub(delta) < self.lowat.min(window)
            }
            Reader::Messages(_) => starving || half,
        };
        if send {
            CreditAction::SendUpdate
        } else {
            CreditAction::Quiet
        }
    }
}

#[cfg(test)]
#[path = "credit_tests.rs"]
mod tests;
