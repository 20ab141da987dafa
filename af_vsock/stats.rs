// SPDX-License-Identifier: GPL-2.0
//! The core's counters per transport kind, readable while running: one u64 file each in
//! debugfs, `/sys/kernel/debug/rvsock/{loopback,virtio,vhost}/<counter>` (the transports
//! count their own device-level drops under `rvsock_virtio/` and `rvsock_vhost/`). Relaxed
//! atomics: a reader sees each counter exact, not a snapshot of all of them together.

use crate::abi::{TRANSPORT_G2H, TRANSPORT_H2G, TRANSPORT_LOCAL};
use crate::debugfs::DebugDir;
use crate::table::TransportPtr;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use kernel::prelude::*;

/// What is counted.
#[derive(Clone, Copy)]
pub(crate) enum Ctr {
    /// Packets the transport delivered to the core.
    RxPackets,
    /// Their payload bytes (header `len`).
    RxBytes,
    /// Packets handed to the transport.
    TxPackets,
    /// Their payload bytes.
    TxBytes,
    /// Packets the transport refused (`send_pkt` error: no device for the CID, ...).
    TxErrors,
    /// Received packets whose header failed validation (dropped, RST where upstream sends one).
    BadHeader,
    /// Received packets for no socket (answered with RST).
    NoSocket,
    /// Received packets for a closed connection, or from another peer or transport than
    /// the connection's (RST).
    WrongPeer,
    /// Connections reset because their receive queue went over its memory budget.
    MemOverrun,
    /// Connection requests refused (accept queue full, listener closing, a peer that a
    /// connect() would reach through another transport, SEQPACKET not negotiated).
    Refused,
    /// Packets or sockets not allocated (memory), each failure once.
    AllocFail,
    /// Packets of plain sends that carried the sender's pinned pages (`zerocopy::SyncPin`).
    SyncPinned,
    /// Of those, the ones copied into pages of their own before they were read: the
    /// transport had not taken them within the wait (a guest without receive buffers, a
    /// stopped device, a signal), or (loopback) no reader was in recv(2) for them, a reader
    /// left them queued, or the send had to wait for credit or list more; or a copy-out of
    /// them would have faulted.
    SyncCopied,
    /// Packets of spliced sends (sendfile(2)) that carried the pipe's pages by reference
    /// (`zerocopy::fill_spliced`).
    Spliced,
}

const N: usize = 14;
const NAMES: [&'static [u8]; N] = [
    b"rx_packets\0",
    b"rx_bytes\0",
    b"tx_packets\0",
    b"tx_bytes\0",
    b"tx_errors\0",
    b"drop_bad_header\0",
    b"drop_no_socket\0",
    b"drop_wrong_peer\0",
    b"reset_mem_overrun\0",
    b"refused_connects\0",
    b"alloc_failures\0",
    b"tx_pinned\0",
    b"tx_pinned_copied\0",
    b"tx_spliced\0",
];
const KINDS: [(u32, &'static [u8]); 3] = [(TRANSPORT_LOCAL, b"loopback\0"), (TRANSPORT_G2H, b"virtio\0"), (TRANSPORT_H2G, b"vhost\0")];

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const ROW: [AtomicU64; N] = [ZERO; N];
static STATS: [[AtomicU64; N]; 3] = [ROW; 3];

/// Adds `n` to counter `c` of `t`'s kind.
pub(crate) fn add(t: TransportPtr, c: Ctr, n: u64) {
    let kind = t.get().kind;
    if let Some(k) = KINDS.iter().position(|(v, _)| *v == kind) {
        STATS[k][c as usize].fetch_add(n, Relaxed);
    }
}

/// Counts one event `c` on `t`.
pub(crate) fn inc(t: TransportPtr, c: Ctr) {
    add(t, c, 1);
}

/// The debugfs folders (`rvsock/` and one per transport kind); removed on drop, before the
/// counters (statics of this module) go.
pub(crate) struct Registration {
    _kinds: KVec<DebugDir>,
    _top: DebugDir,
}

/// Creates `/sys/kernel/debug/rvsock/`.
pub(crate) fn register() -> Registration {
    let top = DebugDir::new(b"rvsock\0", None);
    let mut kinds = KVec::new();
    for (k, (_, kname)) in KINDS.iter().enumerate() {
        let d = DebugDir::new(kname, Some(&top));
        for (c, name) in NAMES.iter().enumerate() {
            // SAFETY: the counters are statics of this module, which outlives the folders.
            unsafe { d.counter(name, &STATS[k][c]) };
        }
        // Without memory for the list the folder goes now (the top one still goes at exit).
        let _ = kinds.push(d, GFP_KERNEL);
    }
    Registration { _kinds: kinds, _top: top }
}
