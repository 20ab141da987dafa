//! SEQPACKET message boundaries, without allocation.
//!
//! On the wire a message is a run of RW packets whose last one carries [`SEQ_EOM`] (and
//! [`SEQ_EOR`] if the sender passed `MSG_EOR`). The glue keeps the packets in its own queue;
//! this module does the bookkeeping around it:
//!
//! * [`SeqRx`] counts complete messages queued (upstream `msg_count`): a reader may only
//!   dequeue when it is non-zero.
//! * [`SeqReader`] walks one message packet by packet, saying how much of each packet fits the
//!   user buffer, and produces the [`RecvReport`] (`recvmsg()` return value, `MSG_TRUNC`,
//!   `MSG_EOR`) exactly like `virtio_transport_seqpacket_do_dequeue` + af_vsock's
//!   `__vsock_seqpacket_recvmsg`: the whole message is always consumed; the return value is
//!   the bytes copied, or the full message length when the caller asked for `MSG_TRUNC`;
//!   `MSG_TRUNC` is reported whenever the message was longer than the buffer.
//! * [`SeqTx`] splits one message into packets as credit allows (upstream sends partial
//!   messages, EOM on the packet that completes it); a message larger than the peer's window
//!   is refused up front with [`MsgTooBig`] (`EMSGSIZE`), because it could never complete.
//!   A zero-length message sends nothing, as upstream.

use super::credit::TxCredit;
use super::hdr::{SEQ_EOM, SEQ_EOR};

/// Receive-side message counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqRx {
    msg_count: u32,
}

impl SeqRx {
    /// No messages queued.
    pub const fn new() -> Self {
        SeqRx { msg_count: 0 }
    }

    /// Complete messages queued.
    pub fn msg_count(&self) -> u32 {
        self.msg_count
    }

    /// An RW packet with these (validated) flags was queued.
    pub fn on_enqueue(&mut self, flags: u32) {
        if flags & SEQ_EOM != 0 {
            self.msg_count = self.msg_count.saturating_add(1);
        }
    }

    /// A whole message (up to and including its EOM packet) was dequeued.
    pub fn on_dequeue(&mut self) {
        self.msg_count = self.msg_count.saturating_sub(1);
    }
}

/// Outcome of receiving one message, for `recvmsg()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvReport {
    /// Bytes copied into the user buffer: `min(msg_len, buffer length)`.
    pub copied: usize,
    /// Full length of the message.
    pub msg_len: usize,
    /// What `recvmsg()` returns: `msg_len` if the caller passed `MSG_TRUNC`, else `copied`.
    pub ret: usize,
    /// Set `MSG_TRUNC` in `msg_flags`: the message was longer than the buffer.
    pub trunc: bool,
    /// Set `MSG_EOR` in `msg_flags`: the message was sent with `MSG_EOR`.
    pub eor: bool,
}

/// Walks the packets of one queued message for a receive into a buffer of `user_len` bytes.
///
/// ```
/// # use virtio_transport_common::seqpacket::SeqReader;
/// # use virtio_transport_common::hdr::{SEQ_EOM, SEQ_EOR};
/// let mut r = SeqReader::new(16);
/// assert_eq!(r.feed(10, 0), 10); // copy all 10 bytes of the first packet
/// assert_eq!(r.feed(22, SEQ_EOM | SEQ_EOR), 6); // only 6 fit; rest is discarded
/// assert!(r.is_complete());
/// let rep = r.report(false);
/// assert_eq!((rep.copied, rep.msg_len, rep.ret, rep.trunc, rep.eor), (16, 32, 16, true, true));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqReader {
    user_len: usize,
    copied: usize,
    msg_len: usize,
    eor: bool,
    complete: bool,
}

impl SeqReader {
    /// Starts a receive into a buffer of `user_len` bytes.
    pub const fn new(user_len: usize) -> Self {
        SeqReader {
            user_len,
            copied: 0,
            msg_len: 0,
            eor: false,
            complete: false,
        }
    }

    /// Feeds the next packet of the message (its payload length and validated flags) and
    /// returns how many bytes from its start to copy to the user buffer (the rest is
    /// discarded). Packets fed after the EOM packet are ignored (returns 0).
    pub fn feed(&mut self, pkt_len: u32, flags: u32) -> usize {
        if self.complete {
            return 0;
        }
        let len = usize::try_from(pkt_len).unwrap_or(usize::MAX);
        let n = len.min(self.user_len.saturating_sub(self.copied));
        self.copied = self.copied.saturating_add(n);
        self.msg_len = self.msg_len.saturating_add(len);
        if flags & SEQ_EOM != 0 {
            self.complete = true;
            self.eor = flags & SEQ_EOR != 0;
        }
        n
    }

    /// Whether the EOM packet has been fed.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// The result; `msg_trunc` is whether the caller passed `MSG_TRUNC` in the recv flags.
    pub fn report(&self, msg_trunc: bool) -> RecvReport {
        RecvReport {
            copied: self.copied,
            msg_len: self.msg_len,
            ret: if msg_trunc { self.msg_len } else { self.copied },
            trunc: self.msg_len > self.user_len,
            eor: self.eor,
        }
    }
}

/// One packet to send: payload length and RW flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Payload bytes.
    pub len: u32,
    /// [`SEQ_EOM`] (and [`SEQ_EOR`]) on the packet that completes the message, else 0.
    pub flags: u32,
}

/// The message is larger than the peer's window (`EMSGSIZE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsgTooBig;

/// Splits one outgoing message into packets as credit allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqTx {
    left: u32,
    eor: bool,
}

impl SeqTx {
    /// Starts sending a `msg_len`-byte message; `eor` is whether the caller passed `MSG_EOR`;
    /// `tx_buf_size` is [`TxCredit::buf_size`]. Fails with [`MsgTooBig`] if the message can
    /// never fit the window (upstream `virtio_transport_seqpacket_enqueue`).
    pub fn new(msg_len: usize, eor: bool, tx_buf_size: u32) -> Result<Self, MsgTooBig> {
        match u32::try_from(msg_len) {
            Ok(left) if left <= tx_buf_size => Ok(SeqTx { left, eor }),
            _ => Err(MsgTooBig),
        }
    }

    /// Bytes not yet handed out by [`Self::next`].
    pub fn remaining(&self) -> u32 {
        self.left
    }

    /// Whether the whole message has been handed out.
    pub fn is_done(&self) -> bool {
        self.left == 0
    }

    /// The next packet: at most `max_pkt` bytes, reserved from `tx`. `None` when done or when
    /// there is no credit (wait for the peer and call again).
    pub fn next(&mut self, tx: &mut TxCredit, max_pkt: u32) -> Option<Chunk> {
        let len = tx.take(self.left.min(max_pkt));
        if len == 0 {
            return None;
        }
        self.left = self.left.saturating_sub(len);
        let flags = match (self.left, self.eor) {
            (0, true) => SEQ_EOM | SEQ_EOR,
            (0, false) => SEQ_EOM,
            _ => 0,
        };
        Some(Chunk { len, flags })
    }

    /// Takes back a chunk that could not be sent (the glue also returns its credit with
    /// [`TxCredit::put_back`]), so the next call hands it out again.
    pub fn put_back(&mut self, c: Chunk) {
        self.left = self.left.saturating_add(c.len);
    }
}

#[cfg(test)]
#[path = "seqpacket_tests.rs"]
mod tests;
