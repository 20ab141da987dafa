// SPDX-License-Identifier: GPL-2.0
//! Host-to-guest packets waiting for guest receive buffers, queued per connection and served
//! round robin (issue 17, fairness): one FIFO for the whole device let eight bulk streams park
//! up to eight credit windows (2 MiB at 256 KiB each) ahead of an interactive connection's
//! 64-byte request. Each connection's packets keep their order (they share a queue); the
//! connections that share a queue (their ports hash alike) share its turns.

use crate::pkt::{Pkt, PktQueue};

/// Number of queues (a power of two, at most 32: `busy` is a bitmap).
const FLOWS: usize = 16;

/// The queue a packet belongs to: a hash of its connection's ports.
fn flow_of(p: &Pkt) -> usize {
    let h = p.hdr();
    let k = h.src_port.rotate_left(16) ^ h.dst_port;
    (k.wrapping_mul(0x9E37_79B9) >> (32 - FLOWS.trailing_zeros())) as usize
}

/// Per-connection queues served one packet at a time in turn.
pub(crate) struct FlowQueues {
    q: [PktQueue; FLOWS],
    /// Bit `i` set: `q[i]` holds packets.
    busy: u32,
    /// The queue whose turn is next (or the first busy one after it).
    next: usize,
}

impl FlowQueues {
    /// No packets.
    pub(crate) const fn new() -> Self {
        FlowQueues { q: [const { PktQueue::new() }; FLOWS], busy: 0, next: 0 }
    }

    /// Queues a packet behind the earlier ones of its connection.
    pub(crate) fn push_back(&mut self, p: Pkt) {
        let i = flow_of(&p);
        self.q[i].push_back(p);
        self.busy |= 1 << i;
    }

    /// Puts back the packet [`Self::pop`] returned last (not or not fully sent): it is its
    /// queue's first again and that queue has the next turn, as if it had not been taken.
    pub(crate) fn requeue(&mut self, p: Pkt) {
        let i = flow_of(&p);
        self.q[i].push_front(p);
        self.busy |= 1 << i;
        self.next = i;
    }

    /// The first packet of the next busy queue in turn.
    pub(crate) fn pop(&mut self) -> Option<Pkt> {
        if self.busy == 0 {
            return None;
        }
        // The first busy queue at or after `next`, wrapping around.
        let i = (self.next + self.busy.rotate_right(self.next as u32).trailing_zeros() as usize) % FLOWS;
        let p = self.q[i].pop_front();
        if self.q[i].is_empty() {
            self.busy &= !(1 << i);
        }
        self.next = (i + 1) % FLOWS;
        p
    }
}
