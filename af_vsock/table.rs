// SPDX-License-Identifier: GPL-2.0
//! Global state of the core: the bound and connected socket tables and the registered
//! transports, all under one spinlock (`Global`). Lookups are O(1) on average: both tables
//! are hashed on ports, and every entry carries its key so a lookup never takes a socket lock.
//!
//! Lock order: the global lock may be held while taking a socket's state lock, never the
//! reverse. Every table entry owns a socket reference; removal drops it after the global lock
//! is released (the last `sock_put` may free the socket).

use crate::abi::{ns_reach, RawTransport, NS_ANY, TRANSPORT_G2H, TRANSPORT_H2G, TRANSPORT_LOCAL};
use crate::ffi;
use crate::net::{Sk, SkRef};
use crate::proto::conn::State;
use crate::proto::hdr::{Addr, LAST_RESERVED_PORT, VMADDR_CID_ANY, VMADDR_CID_HOST, VMADDR_CID_LOCAL, VMADDR_PORT_ANY};
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use kernel::prelude::*;
use kernel::alloc::flags::__GFP_NOWARN;
use kernel::sync::SpinLock;

const BUCKETS: usize = 251;

/// One registered transport (pointer owned by the transport module while registered).
#[derive(Clone, Copy)]
pub(crate) struct TransportPtr(pub *const RawTransport);

// SAFETY: a registered transport is immutable and valid until unregistered.
unsafe impl Send for TransportPtr {}

impl TransportPtr {
    /// The descriptor.
    pub(crate) fn get(&self) -> &RawTransport {
        // SAFETY: valid while registered (the registry only hands out registered ones) or
        // while a socket holds a module reference on its owner.
        unsafe { &*self.0 }
    }

    /// The CID this transport answers to.
    pub(crate) fn local_cid(&self) -> u32 {
        // SAFETY: calling the transport's own callback with its own descriptor.
        unsafe { (self.get().local_cid)(self.0) }
    }

    /// The transport's `has_remote_cid` answer for a socket of namespace `ns`, or `None`
    /// when it has no such callback.
    pub(crate) fn has_remote_cid(&self, cid: u32, ns: u64) -> Option<bool> {
        // SAFETY: the transport's own callback with its own descriptor; it takes only its
        // own locks (RawTransport::has_remote_cid), so calling it under ours is allowed.
        self.get().has_remote_cid.map(|f| unsafe { f(self.0, cid, ns) })
    }
}

/// Everything under the global lock.
pub(crate) struct Global {
    // Invariant: both have exactly BUCKETS buckets (built by `new`), so indexing by
    // `bucket()`/`conn_bucket()` is always in range.
    // A lookup from namespace `ns` sees only the sockets `ns_reach` allows; a socket's tag is
    // read from the socket (`VSock::ns`, fixed at creation) once the address matched, so an
    // entry costs no more than before namespaces.
    bound: KVec<KVec<(Addr, SkRef)>>,
    connected: KVec<KVec<(Addr, Addr, SkRef)>>,
    /// Sockets that were never bound, hashed by address: only sock_diag reads it (as in-tree,
    /// `ss` lists a fresh socket before its bind).
    unbound: KVec<KVec<SkRef>>,
    /// Registered transports by kind.
    pub(crate) local: Option<TransportPtr>,
    /// Guest-to-host transport.
    pub(crate) g2h: Option<TransportPtr>,
    /// Host-to-guest transport.
    pub(crate) h2g: Option<TransportPtr>,
    /// The ephemeral-port cursor of namespaces without data of ours (`netns::with_port_cursor`).
    pub(crate) port_cursor: AtomicU32,
    /// The buckets' hash seed (random, fixed at load).
    seed: u32,
}

impl Global {
    /// The bound-table bucket of `port`. Hashed with a secret seed, so that nobody can choose
    /// ports that all land in one bucket: a bucket is one vector, and a huge one would make
    /// every bind in it fail for want of a large atomic allocation (in-tree's lists cannot).
    fn bucket(&self, port: u32) -> usize {
        // SAFETY: a pure function.
        (unsafe { ffi::rvsock_jhash_3words(port, 0, 0, self.seed) }) as usize % BUCKETS
    }

    /// The connected-table bucket of a connection (seeded as `bucket`).
    fn conn_bucket(&self, remote: Addr, local: Addr) -> usize {
        // SAFETY: a pure function.
        (unsafe { ffi::rvsock_jhash_3words(remote.cid, remote.port, local.port, self.seed) }) as usize % BUCKETS
    }
}

fn sk_bucket(sk: Sk) -> usize {
    (sk.as_ptr() as usize >> 6) % BUCKETS
}

/// Which table a walk is in ([`Global::walk`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    /// Bound sockets (listeners, clients, bound only).
    Bound,
    /// Connected sockets (accepted children; a socket in both tables is seen in `Bound`).
    Connected,
    /// Sockets never bound.
    Unbound,
}

/// Where a walk over every table stands, so that a sock_diag dump can resume where its
/// last message did not fit (in-tree keeps table, bucket and index in `cb->args` alike).
#[derive(Clone, Copy, Default)]
pub(crate) struct WalkPos {
    /// 0 bound, 1 connected, 2 unbound, 3 done.
    pub(crate) table: usize,
    /// Bucket within that table.
    pub(crate) bucket: usize,
    /// Entries of that bucket already visited.
    pub(crate) index: usize,
}

/// Whether a transport reset would end this connection (`Conn::reset` acts on it): one
/// connecting, or established or closing and not over.
fn resettable(c: &crate::proto::conn::Conn) -> bool {
    match c.state() {
        State::Connecting => true,
        State::Established | State::Closing => !c.is_done(),
        _ => false,
    }
}


impl Global {
    fn new() -> Result<Self> {
        let mut bound = KVec::with_capacity(BUCKETS, GFP_KERNEL)?;
        let mut connected = KVec::with_capacity(BUCKETS, GFP_KERNEL)?;
        let mut unbound = KVec::with_capacity(BUCKETS, GFP_KERNEL)?;
        for _ in 0..BUCKETS {
            bound.push(KVec::new(), GFP_KERNEL)?;
            connected.push(KVec::new(), GFP_KERNEL)?;
            unbound.push(KVec::new(), GFP_KERNEL)?;
        }
        Ok(Global {
            bound,
            connected,
            unbound,
            local: None,
            g2h: None,
            h2g: None,
            port_cursor: AtomicU32::new(0),
            // SAFETY: plain call to the kernel's random source.
            seed: unsafe { ffi::get_random_u32() },
        })
    }

    /// The socket bound to `addr` that namespace `ns` sees (a CID_ANY on either side matches
    /// any CID).
    pub(crate) fn find_bound(&self, addr: Addr, ns: u64) -> Option<&SkRef> {
        self.bound[self.bucket(addr.port)].iter().find_map(|(a, s)| {
            let hit = a.port == addr.port
                && (a.cid == addr.cid || a.cid == VMADDR_CID_ANY || addr.cid == VMADDR_CID_ANY)
                && ns_reach(crate::sock::vsk(s.sk()).ns, ns);
            hit.then_some(s)
        })
    }

    /// The connected socket for a packet of namespace `ns` from `remote` to `local`.
    pub(crate) fn find_connected(&self, remote: Addr, local: Addr, ns: u64) -> Option<&SkRef> {
        self.connected[self.conn_bucket(remote, local)].iter().find_map(|(r, l, s)| {
            let hit = *r == remote
                && l.port == local.port
                && (l.cid == local.cid || l.cid == VMADDR_CID_ANY)
                && ns_reach(crate::sock::vsk(s.sk()).ns, ns);
            hit.then_some(s)
        })
    }

    /// Picks a free ephemeral port for `cid` as in-tree does: from the namespace's `cursor`
    /// (callers hold the global lock, so its load and store do not race), whose start is random,
    /// 1024 and up, giving up (EADDRNOTAVAIL) after `MAX_PORT_RETRIES` taken ports in a row
    /// (upstream vsock_test "transport release use-after-free" relies on that).
    pub(crate) fn pick_port(&self, cid: u32, ns: u64, cursor: &AtomicU32) -> Option<u32> {
        const MAX_PORT_RETRIES: u32 = 24;
        let mut next = cursor.load(Ordering::Relaxed);
        if next == 0 {
            // SAFETY: plain call to the kernel's random source.
            next = unsafe { ffi::get_random_u32() };
        }
        let mut found = None;
        for _ in 0..MAX_PORT_RETRIES {
            if next == VMADDR_PORT_ANY || next <= LAST_RESERVED_PORT {
                next = LAST_RESERVED_PORT + 1;
            }
            let p = next;
            next = next.wrapping_add(1);
            if self.find_bound(Addr { cid, port: p }, ns).is_none() {
                found = Some(p);
                break;
            }
        }
        cursor.store(next, Ordering::Relaxed);
        found
    }

    /// Inserts a bound socket (of its namespace, `VSock::ns`).
    pub(crate) fn insert_bound(&mut self, addr: Addr, sk: Sk) -> Result {
        let i = self.bucket(addr.port);
        let b = &mut self.bound[i];
        b.push((addr, sk.hold()), GFP_ATOMIC | __GFP_NOWARN)?;
        Ok(())
    }

    /// Removes a bound socket, returning its reference for the caller to drop unlocked.
    pub(crate) fn remove_bound(&mut self, sk: Sk, port: u32) -> Option<SkRef> {
        let i = self.bucket(port);
        let b = &mut self.bound[i];
        let i = b.iter().position(|(_, s)| s.sk().as_ptr() == sk.as_ptr())?;
        let e = vec_swap_remove(b, i);
        vec_shrink(b);
        e.map(|e| e.1)
    }

    /// Inserts a connected socket (of its namespace, `VSock::ns`).
    pub(crate) fn insert_connected(&mut self, remote: Addr, local: Addr, sk: Sk) -> Result {
        let i = self.conn_bucket(remote, local);
        let b = &mut self.connected[i];
        b.push((remote, local, sk.hold()), GFP_ATOMIC | __GFP_NOWARN)?;
        Ok(())
    }

    /// Removes a connected socket, returning its reference for the caller to drop unlocked.
    pub(crate) fn remove_connected(&mut self, sk: Sk, remote: Addr, local: Addr) -> Option<SkRef> {
        let i = self.conn_bucket(remote, local);
        let b = &mut self.connected[i];
        let i = b.iter().position(|(_, _, s)| s.sk().as_ptr() == sk.as_ptr())?;
        let e = vec_swap_remove(b, i);
        vec_shrink(b);
        e.map(|e| e.2)
    }

    /// Lists a socket that is not bound yet.
    pub(crate) fn insert_unbound(&mut self, sk: Sk) -> Result {
        self.unbound[sk_bucket(sk)].push(sk.hold(), GFP_ATOMIC | __GFP_NOWARN)?;
        Ok(())
    }

    /// Removes a socket from the unbound list, returning its reference for the caller to
    /// drop unlocked.
    pub(crate) fn remove_unbound(&mut self, sk: Sk) -> Option<SkRef> {
        let b = &mut self.unbound[sk_bucket(sk)];
        let i = b.iter().position(|s| s.sk().as_ptr() == sk.as_ptr())?;
        let e = vec_swap_remove(b, i);
        vec_shrink(b);
        e
    }

    /// Visits the sockets of every table from `pos` on (bound, connected, unbound; each
    /// table's entry once) until `f` returns false; `pos` then names that socket, which a
    /// resumed walk visits again.
    pub(crate) fn walk(&self, pos: &mut WalkPos, mut f: impl FnMut(Table, Sk) -> bool) {
        while pos.table < 3 {
            let kind = match pos.table {
                0 => Table::Bound,
                1 => Table::Connected,
                _ => Table::Unbound,
            };
            while pos.bucket < BUCKETS {
                loop {
                    let sk = match kind {
                        Table::Bound => self.bound[pos.bucket].get(pos.index).map(|e| e.1.sk()),
                        Table::Connected => self.connected[pos.bucket].get(pos.index).map(|e| e.2.sk()),
                        Table::Unbound => self.unbound[pos.bucket].get(pos.index).map(|e| e.sk()),
                    };
                    let Some(sk) = sk else { break };
                    if !f(kind, sk) {
                        return;
                    }
                    pos.index += 1;
                }
                pos.bucket += 1;
                pos.index = 0;
            }
            pos.table += 1;
            pos.bucket = 0;
        }
    }

    /// Every connected socket using `t` towards `cid` (`u32::MAX`: any CID) from a namespace
    /// that reaches `ns` (`NS_ANY`: any) and not reset yet, referenced; false if `out` could
    /// not take them all (an atomic allocation failed: the caller resets these and asks again).
    pub(crate) fn connected_of(&self, t: *const RawTransport, cid: u32, ns: u64, out: &mut KVec<SkRef>) -> bool {
        let ns_ok = |n: u64| ns == NS_ANY || ns_reach(n, ns);
        let mut all = true;
        for b in self.connected.iter() {
            for (r, _, s) in b.iter() {
                if (cid == u32::MAX || r.cid == cid)
                    && ns_ok(crate::sock::vsk(s.sk()).ns)
                    && crate::sock::vsk(s.sk()).uses_transport(t)
                    && resettable(&crate::sock::vsk(s.sk()).st.lock().conn)
                {
                    all &= out.push(s.clone(), GFP_ATOMIC).is_ok();
                }
            }
        }
        // Client sockets (connect) live in the bound table only: those connecting or
        // connected over `t` to `cid` are connections of it too.
        for b in self.bound.iter() {
            for (_, s) in b.iter() {
                let hit = ns_ok(crate::sock::vsk(s.sk()).ns) && {
                    let st = crate::sock::vsk(s.sk()).st.lock();
                    st.connected_key.is_none()
                        && resettable(&st.conn)
                        && st.transport.as_ref().map(|r| r.ptr().0) == Some(t)
                        && (cid == u32::MAX || st.remote.cid == cid)
                };
                if hit {
                    all &= out.push(s.clone(), GFP_ATOMIC).is_ok();
                }
            }
        }
        all
    }

    /// Whether `cid` is one of ours (bind only accepts local CIDs, as in-tree).
    pub(crate) fn is_local_cid(&self, cid: u32) -> bool {
        if let Some(t) = &self.g2h {
            if t.local_cid() == cid {
                return true;
            }
        }
        (cid == VMADDR_CID_HOST && self.h2g.is_some()) || (cid == VMADDR_CID_LOCAL && self.local.is_some())
    }

    /// The transport for a connection from namespace `ns` (`g2h_fallback`: that namespace's
    /// setting) to `remote_cid` (in-tree 7.x `vsock_assign_transport`),
    /// and whether the peer is reached through the host although no flag asked for it (the
    /// g2h fallback: the socket's remote address then carries `VMADDR_FLAG_TO_HOST`).
    /// Above the host's CID: the H2G transport when it has that CID (or cannot tell); else,
    /// with `net.vsock.g2h_fallback` on (the default), the G2H transport when it can reach it
    /// (any CID may be a sibling VM that the host forwards to); else the H2G transport, none
    /// meaning ENODEV.
    pub(crate) fn pick_transport(
        &self,
        remote_cid: u32,
        to_host: bool,
        ns: u64,
        g2h_fallback: bool,
    ) -> Option<(TransportPtr, bool)> {
        let use_local = self.local.is_some()
            && (remote_cid == VMADDR_CID_LOCAL
                || match &self.g2h {
                    Some(g) => remote_cid == g.local_cid(),
                    None => remote_cid == VMADDR_CID_HOST,
                });
        if use_local {
            return self.local.map(|t| (t, false));
        }
        if remote_cid <= VMADDR_CID_HOST || to_host {
            return self.g2h.map(|t| (t, false));
        }
        if let Some(h) = self.h2g {
            if h.has_remote_cid(remote_cid, ns) != Some(false) {
                return Some((h, false));
            }
        }
        if let Some(g) = self.g2h {
            if g2h_fallback && g.has_remote_cid(remote_cid, ns) == Some(true) {
                return Some((g, true));
            }
        }
        self.h2g.map(|t| (t, false))
    }

    /// Slot of a transport kind.
    pub(crate) fn slot(&mut self, kind: u32) -> Option<&mut Option<TransportPtr>> {
        match kind {
            TRANSPORT_LOCAL => Some(&mut self.local),
            TRANSPORT_G2H => Some(&mut self.g2h),
            TRANSPORT_H2G => Some(&mut self.h2g),
            _ => None,
        }
    }
}

static GLOBAL: AtomicPtr<SpinLock<Global>> = AtomicPtr::new(core::ptr::null_mut());

// A named #[pin_data] box, not `KBox<SpinLock<T>>`: that one's symbol names outgrow a
// /proc/kallsyms line on the sanitizer kernel (af_vsock/tap.rs).
#[pin_data]
struct GlobalBox {
    #[pin]
    g: SpinLock<Global>,
}

/// Owner of the global state; created at module init, dropped at exit.
pub(crate) struct GlobalOwner(#[allow(dead_code)] Pin<KBox<GlobalBox>>);

impl GlobalOwner {
    /// Allocates the global state and publishes it.
    pub(crate) fn new() -> Result<Self> {
        let g = Global::new()?;
        let b = KBox::pin_init(pin_init!(GlobalBox { g <- kernel::new_spinlock!(g, "rvsock_global") }), GFP_KERNEL)?;
        let p = &b.g as *const SpinLock<Global> as *mut SpinLock<Global>;
        GLOBAL.store(p, Ordering::Release);
        Ok(GlobalOwner(b))
    }
}

impl Drop for GlobalOwner {
    fn drop(&mut self) {
        GLOBAL.store(core::ptr::null_mut(), Ordering::Release);
    }
}

/// The global state. Only called from our own callbacks, which exist only between module
/// init (which publishes it first) and exit (which unpublishes it last).
pub(crate) fn global() -> &'static SpinLock<Global> {
    let p = GLOBAL.load(Ordering::Acquire);
    // SAFETY: see above: non-null and alive whenever one of our entry points runs.
    unsafe { &*p }
}

/// Removes element `i` by moving the last one into its place.
pub(crate) fn vec_swap_remove<T>(v: &mut KVec<T>, i: usize) -> Option<T> {
    let len = v.len();
    if i >= len {
        return None;
    }
    v.as_mut_slice().swap(i, len - 1);
    crate::ffi::vec_pop(v)
}

/// Halves a table bucket's capacity once it holds a quarter of it or less (from 16 entries
/// up): a `KVec` only grows, so after 10,000 connections every bucket kept room for its peak
/// for good. Keeps the order (a sock_diag dump resumes by index). Best effort, under the
/// global spinlock: without memory at hand the bucket stays as it is.
fn vec_shrink<T>(v: &mut KVec<T>) {
    let (len, cap) = (v.len(), v.capacity());
    if cap < 16 || len > cap / 4 {
        return;
    }
    let Ok(n) = KVec::<T>::with_capacity(cap / 2, GFP_ATOMIC | __GFP_NOWARN) else { return };
    let (to, _, to_cap) = n.into_raw_parts();
    let (from, len, from_cap) = core::mem::replace(v, KVec::new()).into_raw_parts();
    // SAFETY: `to` has room for `to_cap >= cap / 2 > len` elements, `from` holds `len`
    // initialised ones; distinct allocations. The copy moves their ownership to the new
    // vector; the old buffer is then freed as an empty vector (nothing dropped twice, nothing
    // leaked). Both come from `into_raw_parts` of `KVec`s, as `from_raw_parts` requires.
    unsafe {
        core::ptr::copy_nonoverlapping(from, to, len);
        drop(KVec::from_raw_parts(from, 0, from_cap));
        *v = KVec::from_raw_parts(to, len, to_cap);
    }
}

/// Removes and returns the first element, keeping the order of the rest (FIFO use).
pub(crate) fn vec_pop_front<T>(v: &mut KVec<T>) -> Option<T> {
    if v.is_empty() {
        return None;
    }
    v.as_mut_slice().rotate_left(1);
    let last = v.len() - 1;
    vec_swap_remove(v, last)
}
