// SPDX-License-Identifier: GPL-2.0
//! Trace events (tracefs; `perf trace`, bpftrace): the in-tree packet events with their
//! in-tree names and fields, `vsock:virtio_transport_alloc_pkt` for every packet handed to a
//! transport and `vsock:virtio_transport_recv_pkt` for every packet a transport delivers
//! (before validation, as in-tree), and rvsock's `rvsock:rvsock_sk_state` for each change of
//! a socket's `sk_state`. Disabled events cost a call and a static branch. Definitions: the
//! kernel's own `trace/events/vsock_virtio_transport_common.h` and `trace.h` (in shim.c).

use crate::ffi;
use crate::net::Sk;
use crate::proto::hdr::Hdr;
use crate::sock::VState;

/// A packet handed to a transport (`zcopy`: its payload is pinned user pages).
pub(crate) fn alloc_pkt(h: &Hdr, zcopy: bool) {
    // SAFETY: plain values; the tracepoint copies them.
    unsafe {
        ffi::rvsock_trace_alloc_pkt(
            h.src_cid as u32,
            h.src_port,
            h.dst_cid as u32,
            h.dst_port,
            h.len,
            h.ty,
            h.op,
            h.flags,
            zcopy,
        )
    };
}

/// A packet a transport delivered.
pub(crate) fn recv_pkt(h: &Hdr) {
    // SAFETY: plain values; the tracepoint copies them.
    unsafe {
        ffi::rvsock_trace_recv_pkt(
            h.src_cid as u32,
            h.src_port,
            h.dst_cid as u32,
            h.dst_port,
            h.len,
            h.ty,
            h.op,
            h.flags,
            h.buf_alloc,
            h.fwd_cnt,
        )
    };
}

/// `sk`'s state went from `old` to `new` (called under its state lock).
pub(crate) fn sk_state(sk: Sk, s: &VState, old: u8, new: u8, shutdown: u8) {
    // SAFETY: plain values; the tracepoint copies them.
    unsafe {
        ffi::rvsock_trace_sk_state(s.local.cid, s.local.port, s.remote.cid, s.remote.port, sk.ty(), old, new, shutdown)
    };
}
