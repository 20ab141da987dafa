// SPDX-License-Identifier: GPL-2.0
//! Packet capture: the core serves in-tree `vsock_add_tap`/`vsock_remove_tap`, so the
//! kernel's own `vsockmon` driver (drivers/net/vsockmon.c: `ip link add type vsockmon`) loads
//! against rvsock and `tcpdump -i vsockmon0` sees rvsock's traffic in the in-tree capture
//! format (`struct af_vsockmon_hdr`, the virtio header, the payload; LINKTYPE_VSOCK).
//!
//! The transports capture, where a packet goes on the wire or comes off it, through the
//! exported `rvsock_tap_copy`/`rvsock_tap_deliver` (in-tree's transports call
//! `virtio_transport_deliver_tap_pkt` at the same points): vhost each guest buffer it fills,
//! as written (`rvsock_tap_start`/`rvsock_tap_append`: a piece of a split packet, or packets
//! joined), and each packet it reads from the guest (before its address check, so a spoofed
//! packet shows), virtio when the ring takes a packet and when the device hands one
//! over, loopback once, when it delivers. A packet that never went (a REQUEST taken back
//! from a queue, a packet for a device that never ran) is never captured. With no capture
//! device open, the cost is one call and one atomic load per packet.

use crate::abi::RawPkt;
use crate::ffi;
use crate::pkt::Pkt;
use crate::proto::hdr::{Hdr, Op, HDR_LEN};
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use kernel::ffi::c_int;
use kernel::prelude::*;
use kernel::sync::SpinLock;

/// `ARPHRD_VSOCKMON`: the device type `vsock_add_tap` accepts (as in-tree).
const ARPHRD_VSOCKMON: u16 = 826;
/// `struct af_vsockmon_hdr` (uapi linux/vsockmon.h): 32 bytes, little-endian.
const MON_HDR_LEN: usize = 32;
/// `AF_VSOCK_TRANSPORT_VIRTIO`: a virtio header follows.
const MON_TRANSPORT_VIRTIO: u16 = 2;

/// A registered capture device (`struct vsock_tap`, owned by the vsockmon device).
#[derive(Clone, Copy, PartialEq, Eq)]
struct TapPtr(*mut ffi::vsock_tap);

// SAFETY: a registered tap stays valid until `vsock_remove_tap` returns, which takes it out of
// the list under the lock that every user of the pointer holds.
unsafe impl Send for TapPtr {}

/// Number of registered taps: the packet paths look at it before anything else.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
static TAPS: AtomicPtr<SpinLock<KVec<TapPtr>>> = AtomicPtr::new(core::ptr::null_mut());

// Boxed in a named #[pin_data] type, not as a bare `SpinLock<T>`: on a sanitizer kernel the
// pin-init code of `KBox<SpinLock<T>>` stays out of line under a symbol name of 470-500 bytes,
// which made a /proc/kallsyms line longer than upstream vsock_test reads at once (512 bytes;
// tests 29 and 33 abort). scripts/build-modules.sh checks every module symbol's length.
#[pin_data]
struct TapList {
    #[pin]
    list: SpinLock<KVec<TapPtr>>,
}

/// Owner of the tap list; created at module init, dropped at exit (a registered tap holds a
/// reference on this module through the vsockmon module, so none is left by then).
pub(crate) struct Registration(#[allow(dead_code)] Pin<KBox<TapList>>);

/// Creates the tap list.
pub(crate) fn register() -> Result<Registration> {
    let b = KBox::pin_init(pin_init!(TapList { list <- kernel::new_spinlock!(KVec::new(), "rvsock_taps") }), GFP_KERNEL)?;
    TAPS.store(&b.list as *const _ as *mut _, Ordering::Release);
    Ok(Registration(b))
}

impl Drop for Registration {
    fn drop(&mut self) {
        TAPS.store(core::ptr::null_mut(), Ordering::Release);
    }
}

fn taps() -> Option<&'static SpinLock<KVec<TapPtr>>> {
    let p = TAPS.load(Ordering::Acquire);
    // SAFETY: non-null only between `register` and the registration's drop, during which
    // the list is alive (module exit cannot run while a tap holds the vsockmon module, which
    // holds ours).
    unsafe { p.as_ref() }
}

/// In-tree `vsock_add_tap`: registers a vsockmon device's tap (EINVAL for another device
/// type), pinning the device's module while registered.
///
/// # Safety
/// `vt` is a live `struct vsock_tap` whose device and module fields are set; it stays live
/// until `vsock_remove_tap` returns for it.
#[no_mangle]
pub(crate) unsafe extern "C" fn vsock_add_tap(vt: *mut ffi::vsock_tap) -> c_int {
    if vt.is_null() {
        return EINVAL.to_errno();
    }
    // SAFETY: per the contract.
    let (dev, owner) = unsafe { (ffi::rvsock_tap_dev(vt), ffi::rvsock_tap_module(vt)) };
    // SAFETY: the tap's device is live (the caller is its open routine).
    if dev.is_null() || unsafe { ffi::rvsock_netdev_type(dev) } != ARPHRD_VSOCKMON {
        return EINVAL.to_errno();
    }
    let Some(list) = taps() else { return ENODEV.to_errno() };
    let mut l = list.lock();
    if l.push(TapPtr(vt), GFP_ATOMIC).is_err() {
        return ENOMEM.to_errno();
    }
    // SAFETY: the caller's module is live (it is calling us); released in vsock_remove_tap.
    unsafe { ffi::rvsock_module_get(owner) };
    ACTIVE.fetch_add(1, Ordering::Relaxed);
    0
}

/// In-tree `vsock_remove_tap`: unregisters a tap (ENODEV if it was not registered). Once it
/// returns, no packet goes to the device any more (deliveries hold the list's lock).
///
/// # Safety
/// `vt` is a live `struct vsock_tap` (registered or not).
#[no_mangle]
pub(crate) unsafe extern "C" fn vsock_remove_tap(vt: *mut ffi::vsock_tap) -> c_int {
    let Some(list) = taps() else { return ENODEV.to_errno() };
    let found = {
        let mut l = list.lock();
        match l.iter().position(|t| *t == TapPtr(vt)) {
            Some(i) => {
                let _ = crate::table::vec_swap_remove(&mut l, i);
                ACTIVE.fetch_sub(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    };
    if !found {
        pr_warn!("vsock_remove_tap: {:p} not found\n", vt);
        return ENODEV.to_errno();
    }
    // SAFETY: pairs with the module reference taken in `vsock_add_tap`; `vt` is live.
    unsafe { ffi::rvsock_module_put(ffi::rvsock_tap_module(vt)) };
    0
}

/// Whether a capture device is open (cheap: one relaxed load).
pub(crate) fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed) != 0
}

/// In-tree `virtio_transport_build_skb`'s mapping of virtio ops to capture ops.
fn mon_op(op: u16) -> u16 {
    const CONNECT: u16 = 1;
    const DISCONNECT: u16 = 2;
    const CONTROL: u16 = 3;
    const PAYLOAD: u16 = 4;
    match op {
        x if x == Op::Request as u16 || x == Op::Response as u16 => CONNECT,
        x if x == Op::Rst as u16 || x == Op::Shutdown as u16 => DISCONNECT,
        x if x == Op::Rw as u16 => PAYLOAD,
        x if x == Op::CreditUpdate as u16 || x == Op::CreditRequest as u16 => CONTROL,
        _ => 0,
    }
}

/// The capture header of a packet with header `h`.
fn mon_hdr(h: &Hdr) -> [u8; MON_HDR_LEN] {
    let mut b = [0u8; MON_HDR_LEN];
    b[0..8].copy_from_slice(&h.src_cid.to_le_bytes());
    b[8..16].copy_from_slice(&h.dst_cid.to_le_bytes());
    b[16..20].copy_from_slice(&h.src_port.to_le_bytes());
    b[20..24].copy_from_slice(&h.dst_port.to_le_bytes());
    b[24..26].copy_from_slice(&mon_op(h.op).to_le_bytes());
    b[26..28].copy_from_slice(&MON_TRANSPORT_VIRTIO.to_le_bytes());
    b[28..30].copy_from_slice(&(HDR_LEN as u16).to_le_bytes());
    b
}

/// Starts a capture skb: the capture header and the wire header of `h`, with room for `plen`
/// payload bytes (`put_payload`).
fn start(h: &Hdr, plen: u32) -> Option<*mut ffi::sk_buff> {
    let size = plen.checked_add((MON_HDR_LEN + HDR_LEN) as u32)?;
    // SAFETY: plain allocation; null on failure.
    let skb = unsafe { ffi::rvsock_alloc_skb(size, kernel::bindings::GFP_ATOMIC | kernel::bindings::__GFP_NOWARN) };
    if skb.is_null() {
        return None;
    }
    let mon = mon_hdr(h);
    let wire = h.encode();
    // SAFETY: `skb` has room for `size` bytes: these two puts add the first part of them.
    unsafe {
        ffi::rvsock_skb_put_data(skb, mon.as_ptr().cast(), MON_HDR_LEN as u32);
        ffi::rvsock_skb_put_data(skb, wire.as_ptr().cast(), HDR_LEN as u32);
    }
    Some(skb)
}

/// Appends the first `n` unread payload bytes of `p` to `skb` (zeros for what `p` lacks);
/// false, appending nothing, if `skb` has no room for them.
///
/// # Safety
/// `skb` is a capture skb of ours (`start`), not yet handed on.
unsafe fn put_payload(skb: *mut ffi::sk_buff, p: &Pkt, n: u32) -> bool {
    // SAFETY: `skb` is ours (contract).
    if n == 0 || unsafe { ffi::rvsock_skb_tailroom(skb) } < n {
        return n == 0;
    }
    let ext = p.ext();
    // SAFETY: `skb` has room for `n` more bytes (checked above); `dst` is where they go.
    let dst = unsafe { ffi::rvsock_skb_put(skb, n) } as *mut u8;
    if ext.is_null() {
        let inline = p.unread();
        let k = inline.len().min(n as usize);
        // SAFETY: `dst` has `n >= k` bytes; `inline` holds `k`; distinct allocations. The
        // rest (a caller asking for more than the packet holds) reads as zeros.
        unsafe {
            core::ptr::copy_nonoverlapping(inline.as_ptr(), dst, k);
            core::ptr::write_bytes(dst.add(k), 0, n as usize - k);
        }
    } else {
        // SAFETY: `ext` is `p`'s payload; `dst` has room for `n` bytes. `copy_ext` copies
        // what `p` has of them and zeroes the rest.
        unsafe { copy_ext(p, ext, dst, n as usize) };
    }
    true
}

/// Builds the capture skb of `p` (header as it is now, payload up to the header's length).
fn build(p: &Pkt) -> Option<*mut ffi::sk_buff> {
    let h = p.hdr();
    let avail = if p.ext().is_null() { p.unread().len() as u32 } else { p.remaining() };
    let plen = h.len.min(avail);
    let skb = start(&h, plen)?;
    // SAFETY: ours, from `start` with room for `plen` payload bytes.
    unsafe { put_payload(skb, p, plen) };
    Some(skb)
}

/// Copies the first `n` unread bytes of `p`'s page payload `ext` to `dst` (zeros past what
/// its pieces hold).
///
/// # Safety
/// `ext` is the payload of `p`; `dst` has room for `n` bytes.
unsafe fn copy_ext(p: &Pkt, ext: *mut core::ffi::c_void, dst: *mut u8, n: usize) {
    let mut done = 0usize;
    crate::zerocopy::for_each_piece(p, ext, 0, n, |page, off, k| {
        // SAFETY: the page is held while `for_each_piece` hands it out (its `CopyOut`) and
        // the piece lies within it; `dst + done` has room for `k` bytes (`done + k <= n`).
        unsafe { ffi::rvsock_memcpy_from_page(dst.add(done).cast(), page, off, k) };
        done += k;
        true
    });
    if done < n {
        // SAFETY: within `dst`'s `n` bytes; what the pages did not cover reads as zeros.
        unsafe { core::ptr::write_bytes(dst.add(done), 0, n - done) };
    }
}

/// Whether a capture device is open (exported; see `abi`).
#[no_mangle]
pub(crate) extern "C" fn rvsock_tap_active() -> bool {
    active()
}

/// A capture copy of a packet a transport lends (exported; see `abi`): an skb in the
/// capture format, or null with no capture device open (or no memory).
///
/// # Safety
/// `pkt` is null or a live packet the caller owns and lends (read only) for the call.
#[no_mangle]
pub(crate) unsafe extern "C" fn rvsock_tap_copy(pkt: *const RawPkt) -> *mut core::ffi::c_void {
    if !active() {
        return core::ptr::null_mut();
    }
    // SAFETY: per the contract the packet is live and lent for this call; it is only read
    // here, and the handle is never dropped (`ManuallyDrop`): ownership stays with the caller.
    let p = core::mem::ManuallyDrop::new(unsafe { Pkt::from_raw(pkt.cast_mut()) });
    match p.as_ref().and_then(build) {
        Some(skb) => skb.cast(),
        None => core::ptr::null_mut(),
    }
}

/// Starts a capture of a packet a transport puts together itself (exported; see `abi`):
/// vhost's guest buffer, which may hold the piece of a packet or several packets joined.
///
/// # Safety
/// `hdr` points to `HDR_LEN` readable bytes (a virtio header in wire format).
#[no_mangle]
pub(crate) unsafe extern "C" fn rvsock_tap_start(hdr: *const u8, len: u32) -> *mut core::ffi::c_void {
    if !active() || hdr.is_null() {
        return core::ptr::null_mut();
    }
    let mut b = [0u8; HDR_LEN];
    // SAFETY: `hdr` has `HDR_LEN` readable bytes (contract); `b` is ours.
    unsafe { core::ptr::copy_nonoverlapping(hdr, b.as_mut_ptr(), HDR_LEN) };
    match start(&Hdr::decode(&b), len) {
        Some(skb) => skb.cast(),
        None => core::ptr::null_mut(),
    }
}

/// Appends the first `n` unread payload bytes of a lent packet to a capture (exported); false,
/// appending nothing, if they do not fit its skb's tailroom (at least the room
/// `rvsock_tap_start` was given).
///
/// # Safety
/// `copy` is a capture from `rvsock_tap_start` the caller owns; `pkt` a live packet the
/// caller owns and lends (read only) for the call.
#[no_mangle]
pub(crate) unsafe extern "C" fn rvsock_tap_append(copy: *mut core::ffi::c_void, pkt: *const RawPkt, n: u32) -> bool {
    if copy.is_null() {
        return false;
    }
    // SAFETY: as in `rvsock_tap_copy`: lent, only read, never dropped here. The caller's own
    // handle lives on meanwhile (as with `rvsock_pkt_copy_to_iter`): both only read the packet
    // (a page payload's copy-out state changes through its own atomics and lock).
    let p = core::mem::ManuallyDrop::new(unsafe { Pkt::from_raw(pkt.cast_mut()) });
    let Some(p) = p.as_ref() else { return false };
    // SAFETY: `copy` is a capture skb of ours that the caller owns (contract).
    unsafe { put_payload(copy.cast(), p, n) }
}

/// Hands a copy from `rvsock_tap_copy` or `rvsock_tap_start` to every capture device,
/// consuming it (exported).
///
/// # Safety
/// `copy` is null or a copy from `rvsock_tap_copy` or `rvsock_tap_start` that the caller
/// gives away.
#[no_mangle]
pub(crate) unsafe extern "C" fn rvsock_tap_deliver(copy: *mut core::ffi::c_void) {
    let skb: *mut ffi::sk_buff = copy.cast();
    if skb.is_null() {
        return;
    }
    if let Some(list) = taps() {
        let l = list.lock();
        for t in l.iter() {
            // SAFETY: registered taps are live while in the list (we hold its lock).
            let dev = unsafe { ffi::rvsock_tap_dev(t.0) };
            // SAFETY: `skb` is ours; a clone is handed to the device, which frees it.
            let n = unsafe { ffi::skb_clone(skb, kernel::bindings::GFP_ATOMIC) };
            if n.is_null() {
                continue;
            }
            // SAFETY: the device is live (its tap is registered); the reference spans the call.
            let r = unsafe {
                ffi::rvsock_dev_hold(dev);
                let r = ffi::rvsock_dev_queue_xmit(n, dev);
                ffi::rvsock_dev_put(dev);
                r
            };
            if r != 0 {
                break;
            }
        }
    }
    // SAFETY: our own skb (given away by the caller), no longer used.
    unsafe { ffi::rvsock_consume_skb(skb) };
}

/// Frees a copy from `rvsock_tap_copy` or `rvsock_tap_start` unseen (exported).
///
/// # Safety
/// `copy` is null or a copy from `rvsock_tap_copy` or `rvsock_tap_start` that the caller
/// gives away.
#[no_mangle]
pub(crate) unsafe extern "C" fn rvsock_tap_drop(copy: *mut core::ffi::c_void) {
    let skb: *mut ffi::sk_buff = copy.cast();
    if !skb.is_null() {
        // SAFETY: our own skb (given away by the caller), not handed to any device.
        unsafe { ffi::rvsock_consume_skb(skb) };
    }
}
