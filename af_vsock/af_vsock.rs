// SPDX-License-Identifier: GPL-2.0
//! rvsock core (`rvsock.ko`): the AF_VSOCK address family (STREAM and SEQPACKET sockets),
//! `/dev/vsock`, and the registration API transports plug into. The virtio-vsock protocol
//! logic comes from the kernel-independent `virtio_transport_common` crate, compiled in.
//!
//! Module map: `net` (binding layer over struct sock & co.), `family` (registration and C
//! callbacks), `sock` (the socket and its state), `connect`/`io`/`close` (socket calls), `read_sock` (kernel consumers), `rx` (receive path), `table` (global tables), `netns` (network namespaces, /proc/sys/net/vsock),
//! `diag`/`netlink` (sock_diag: `ss --vsock`), `stats` (debugfs counters), `tap` (vsockmon capture), `trace` (trace events), `transport` (exported API), `pkt`/`abi` (shared with the transports).

use kernel::prelude::*;

include!("../include/mods.rs");
#[allow(dead_code, unused_imports, unused_attributes, unreachable_pub)]
#[path = "../virtio_transport_common/src/lib.rs"]
mod proto;

#[macro_use]
mod net;
mod close;
mod connect;
mod diag;
mod family;
mod io;
mod netlink;
mod read_sock;
mod rx;
mod sock;
mod stats;
mod netns;
mod table;
mod tap;
mod trace;
mod transport;
mod zerocopy;

module! {
    type: RvsockCore,
    name: "rvsock",
    description: "AF_VSOCK core (Rust)",
    license: "GPL",
    // net-pf-16-proto-4-type-40: sock_diag (NETLINK_SOCK_DIAG) for AF_VSOCK, in-tree vsock_diag's alias.
    alias: ["net-pf-40", "vsock", "net-pf-16-proto-4-type-40"],
}

struct RvsockCore {
    _stats: stats::Registration,
    _taps: tap::Registration,
    _diag: diag::Registration,
    _reg: family::Registration,
    _netns: netns::Registration,
    _global: table::GlobalOwner,
    _merge: transport::MergeCache,
}

impl kernel::Module for RvsockCore {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let merge = transport::MergeCache::new();
        let global = table::GlobalOwner::new()?;
        let taps = tap::register()?;
        // SAFETY: returns this module's `THIS_MODULE`.
        let owner = unsafe { ffi::rvsock_this_module() };
        let netns = netns::register()?;
        let reg = family::register(owner)?;
        let diag = diag::register(owner);
        let stats = stats::register();
        Ok(RvsockCore { _stats: stats, _taps: taps, _diag: diag, _reg: reg, _netns: netns, _global: global, _merge: merge })
    }
}
