// SPDX-License-Identifier: GPL-2.0
//! The host driver's counters: per device (reported when it is released) and the module's
//! totals since load (debugfs `/sys/kernel/debug/rvsock_vhost/`).

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use kernel::prelude::*;

/// Why a guest packet was dropped (each has a counter).
#[derive(Clone, Copy)]
pub(crate) enum Reject {
    /// Device-writable descriptors in a TX chain.
    BadChain,
    /// Chain shorter than the header, or than the header's length.
    Truncated,
    /// `src_cid` is not the guest's CID (or no CID assigned yet).
    Spoofed,
    /// `dst_cid` is not the host.
    Misaddressed,
    /// Length above 64 KiB.
    Oversized,
    /// Guest memory not readable.
    Fault,
    /// Allocation failed.
    NoMem,
}

/// What a device counts: packets moved, and each reason to drop one.
#[derive(Clone, Copy)]
pub(crate) enum Count {
    /// A guest packet handed to the core.
    Delivered,
    /// A guest packet handed to the core with its payload by reference (`Delivered` too).
    Held,
    /// A held chain returned to the guest by a stop (its payload copied first).
    HeldStop,
    /// A packet written into a guest receive buffer (the last piece of it).
    Sent,
    /// A packet, or its first part, written into a guest receive buffer behind another
    /// packet of its connection (`Sent` counts it too, once whole).
    Joined,
    /// A guest receive buffer that was not one (read-only, too small, not writable).
    BadRxBuf,
    /// A guest packet dropped.
    Drop(Reject),
}

/// Counters of one device (reported when it is released); every count also goes to the
/// module's totals (`TOTALS`, in debugfs as `/sys/kernel/debug/rvsock_vhost/`).
pub(crate) struct Stats {
    delivered: AtomicU64,
    held: AtomicU64,
    held_stop: AtomicU64,
    sent: AtomicU64,
    joined: AtomicU64,
    bad_chain: AtomicU64,
    truncated: AtomicU64,
    spoofed: AtomicU64,
    misaddressed: AtomicU64,
    oversized: AtomicU64,
    fault: AtomicU64,
    nomem: AtomicU64,
    bad_rx_buf: AtomicU64,
}

/// The module's totals over every device since load.
pub(crate) static TOTALS: Stats = Stats {
    delivered: AtomicU64::new(0),
    held: AtomicU64::new(0),
    held_stop: AtomicU64::new(0),
    sent: AtomicU64::new(0),
    joined: AtomicU64::new(0),
    bad_chain: AtomicU64::new(0),
    truncated: AtomicU64::new(0),
    spoofed: AtomicU64::new(0),
    misaddressed: AtomicU64::new(0),
    oversized: AtomicU64::new(0),
    fault: AtomicU64::new(0),
    nomem: AtomicU64::new(0),
    bad_rx_buf: AtomicU64::new(0),
};

impl Stats {
    fn field(&self, c: Count) -> &AtomicU64 {
        match c {
            Count::Delivered => &self.delivered,
            Count::Held => &self.held,
            Count::HeldStop => &self.held_stop,
            Count::Sent => &self.sent,
            Count::Joined => &self.joined,
            Count::BadRxBuf => &self.bad_rx_buf,
            Count::Drop(Reject::BadChain) => &self.bad_chain,
            Count::Drop(Reject::Truncated) => &self.truncated,
            Count::Drop(Reject::Spoofed) => &self.spoofed,
            Count::Drop(Reject::Misaddressed) => &self.misaddressed,
            Count::Drop(Reject::Oversized) => &self.oversized,
            Count::Drop(Reject::Fault) => &self.fault,
            Count::Drop(Reject::NoMem) => &self.nomem,
        }
    }

    pub(crate) fn count(&self, c: Count) {
        self.add(c, 1);
    }

    pub(crate) fn add(&self, c: Count, n: u64) {
        self.field(c).fetch_add(n, Relaxed);
        TOTALS.field(c).fetch_add(n, Relaxed);
    }

    /// Shows these counters in `d`.
    ///
    /// # Safety
    /// `self` outlives `d`'s files (true of `TOTALS`, a static).
    pub(crate) unsafe fn debugfs(&'static self, d: &crate::debugfs::DebugDir) {
        for (name, c) in [
            (&b"rx_delivered\0"[..], &self.delivered),
            (b"rx_held\0", &self.held),
            (b"rx_held_stop\0", &self.held_stop),
            (b"tx_sent\0", &self.sent),
            (b"tx_joined\0", &self.joined),
            (b"tx_bad_rx_buffers\0", &self.bad_rx_buf),
            (b"drop_bad_chain\0", &self.bad_chain),
            (b"drop_truncated\0", &self.truncated),
            (b"drop_spoofed_source\0", &self.spoofed),
            (b"drop_misaddressed\0", &self.misaddressed),
            (b"drop_oversized\0", &self.oversized),
            (b"drop_fault\0", &self.fault),
            (b"drop_no_memory\0", &self.nomem),
        ] {
            // SAFETY: `self` is 'static.
            unsafe { d.counter(name, c) };
        }
    }

    /// Logs a released device's drops, if it had any: the first 8 such releases, then the
    /// 16th, 32nd, 64th... (whoever may open /dev/vhost-vsock can make a device drop and
    /// release it in a loop; in-tree's `vq_err` is `pr_debug`). Each line says its number.
    pub(crate) fn report(&self, cid: u32) {
        static REPORTS: AtomicU64 = AtomicU64::new(0);
        let s = self;
        let dropped = [&s.bad_chain, &s.truncated, &s.spoofed, &s.misaddressed, &s.oversized, &s.fault, &s.nomem, &s.bad_rx_buf]
            .iter()
            .map(|c| c.load(Relaxed))
            .sum::<u64>();
        if dropped == 0 {
            return;
        }
        let n = REPORTS.fetch_add(1, Relaxed) + 1;
        if n <= 8 || n.is_power_of_two() {
            pr_info!(
                "guest cid {} (drop report {}; from the 8th only the 16th, 32nd, ...): {} packets delivered, {} sent; dropped: {} spoofed, {} misaddressed, {} truncated, {} oversized, {} bad chains, {} faults, {} no memory, {} bad rx buffers\n",
                cid,
                n,
                s.delivered.load(Relaxed),
                s.sent.load(Relaxed),
                s.spoofed.load(Relaxed),
                s.misaddressed.load(Relaxed),
                s.truncated.load(Relaxed),
                s.oversized.load(Relaxed),
                s.bad_chain.load(Relaxed),
                s.fault.load(Relaxed),
                s.nomem.load(Relaxed),
                s.bad_rx_buf.load(Relaxed),
            );
        }
    }
}
