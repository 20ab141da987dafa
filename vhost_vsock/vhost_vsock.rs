// SPDX-License-Identifier: GPL-2.0
//! rvsock host driver (`rvsock_vhost.ko`): `/dev/vhost-vsock` on the kernel's vhost core, so
//! an unmodified VMM (QEMU `-device vhost-vsock-pci,guest-cid=N`) gives its guest a virtio
//! vsock device whose host side is rvsock. Registers the H2G transport (local CID 2) with
//! SEQPACKET (per guest: only if its driver negotiated it) and MSG_ZEROCOPY (the worker copies
//! a zerocopy packet's pinned user pages straight into guest buffers through the core's
//! `rvsock_pkt_copy_to_iter`, as in-tree vhost-vsock does with an skb's frags; upstream
//! vsock_test's MSG_ZEROCOPY tests expect zerocopy on this transport).
//!
//! Module map: `vhost` (binding layer over drivers/vhost/vhost.h), `dev` (one open file: the
//! vhost device, ioctls, host-to-guest and guest-to-host paths), `table` (guest CID ->
//! device); this file holds the transport callbacks and the misc device's file operations.

use core::cell::UnsafeCell;
use core::ptr::NonNull;
use kernel::ffi::{c_int, c_long, c_uint, c_ulong};
use kernel::prelude::*;

include!("../include/mods.rs");
#[allow(dead_code, unused_imports, unused_attributes, unreachable_pub)]
#[path = "../virtio_transport_common/src/lib.rs"]
mod proto;

mod dev;
mod pending;
mod stats;
mod table;
mod vhost;

use abi::{RawPkt, RawTransport, TRANSPORT_F_COPY_OUT, TRANSPORT_F_SEQPACKET, TRANSPORT_F_ZEROCOPY, TRANSPORT_H2G};
use dev::VhostVsock;
use pkt::Pkt;

/// A positive kernel errno from the generated bindings as an `Error`.
#[macro_export]
macro_rules! errno {
    ($e:ident) => {
        kernel::error::Error::from_errno(-($crate::ffi::$e as i32))
    };
}

module! {
    type: RvsockVhost,
    name: "rvsock_vhost",
    description: "vhost-vsock host driver (Rust): /dev/vhost-vsock, H2G transport",
    license: "GPL",
    alias: ["vhost_vsock", "char-major-10-241", "devname:vhost-vsock"],
}

/// A C object the kernel reads (and may update) through pointers we hand it.
struct KStatic<T>(UnsafeCell<T>);

// SAFETY: written only in `init`, before registration publishes the object; afterwards only
// the kernel (which serialises its own accesses) and our read-only callbacks use it.
unsafe impl<T> Sync for KStatic<T> {}

impl<T> KStatic<T> {
    fn get(&self) -> *mut T {
        self.0.get()
    }
}

/// The descriptor carries the in-tree transport's symbol name, so tools that look for the
/// registered transports in /proc/kallsyms (upstream vsock_test; needs CONFIG_KALLSYMS_ALL
/// for module data) find ours.
#[export_name = "vhost_transport"]
static TRANSPORT: KStatic<RawTransport> = KStatic(UnsafeCell::new(RawTransport {
    owner: core::ptr::null_mut(),
    name: c"vhost".as_ptr().cast(),
    kind: TRANSPORT_H2G,
    features: TRANSPORT_F_SEQPACKET | TRANSPORT_F_ZEROCOPY | TRANSPORT_F_COPY_OUT,
    local_cid,
    send_pkt,
    seqpacket_allow: Some(seqpacket_allow),
    has_remote_cid: Some(has_remote_cid),
    cancel_pkt: Some(cancel_pkt),
    priv_: core::ptr::null_mut(),
}));

static FOPS: KStatic<ffi::file_operations> = KStatic(UnsafeCell::new(
    // SAFETY: all-zero is a valid `file_operations` (no callbacks); filled in `init`.
    unsafe { core::mem::MaybeUninit::zeroed().assume_init() },
));
static MISC: KStatic<ffi::miscdevice> = KStatic(UnsafeCell::new(
    // SAFETY: all-zero is a valid `miscdevice`; filled in `init`.
    unsafe { core::mem::MaybeUninit::zeroed().assume_init() },
));

/// The host's CID (`VHOST_VSOCK_DEFAULT_HOST_CID`).
unsafe extern "C" fn local_cid(_t: *const RawTransport) -> u32 {
    proto::hdr::VMADDR_CID_HOST
}

/// Host to guest: route by `dst_cid` to that guest's device and queue (never sleeps: the
/// worker does the copy). A packet for a CID without a device is dropped (-ENODEV), one for
/// a device that never ran too (-EHOSTUNREACH, `VhostVsock::started`).
unsafe extern "C" fn send_pkt(_t: *const RawTransport, pkt: *mut RawPkt) -> c_int {
    // SAFETY: the core hands us ownership of `pkt`.
    let Some(p) = (unsafe { Pkt::from_raw(pkt) }) else { return EINVAL.to_errno() };
    let Ok(cid) = u32::try_from(p.hdr().dst_cid) else { return ENODEV.to_errno() };
    // The device of that CID in a namespace the sending socket's reaches.
    let ns = p.ns();
    // `p` moves into the closure only if the device exists; otherwise it is dropped here.
    let mut p = Some(p);
    let queued = table::with_dev(cid, ns, |d| {
        if !d.started() {
            return crate::errno!(EHOSTUNREACH).to_errno();
        }
        if let Some(p) = p.take() {
            d.queue(p);
        }
        0
    });
    queued.unwrap_or(ENODEV.to_errno())
}

/// Drops what `owner` still has queued for guest `remote_cid` (a timed-out connect's
/// REQUEST, in-tree `vhost_transport_cancel_pkt`).
unsafe extern "C" fn cancel_pkt(_t: *const RawTransport, owner: *mut core::ffi::c_void, remote_cid: u32, ns: u64) {
    let gone = table::with_dev(remote_cid, ns, |d| d.cancel(owner));
    // Freed outside the CID table lock: freeing uncharges the socket and may wake writers.
    drop(gone);
}

/// SEQPACKET towards a guest only if its driver negotiated it. Called under the core's
/// spinlocks: takes only the CID table lock.
/// A CID is ours when one of our devices has it (in-tree `vhost_transport_has_remote_cid`).
unsafe extern "C" fn has_remote_cid(_t: *const RawTransport, remote_cid: u32, ns: u64) -> bool {
    table::with_dev(remote_cid, ns, |_| ()).is_some()
}

unsafe extern "C" fn seqpacket_allow(_t: *const RawTransport, remote_cid: u32, ns: u64) -> bool {
    table::with_dev(remote_cid, ns, |d| d.seqpacket()).unwrap_or(false)
}

/// Hands a validated guest packet of a device of namespace `ns` to the core (process
/// context, no spinlock held).
pub(crate) fn deliver(mut p: Pkt, ns: u64) {
    p.set_ns(ns);
    // SAFETY: our transport is registered while any device exists (devices pin the module,
    // which unregisters only at exit); the core takes ownership of the packet.
    unsafe { abi::rvsock_recv_pkt(TRANSPORT.get(), p.into_raw()) };
}

/// Resets every host connection to guest `cid` from namespaces that reach `ns` (its device,
/// of namespace `ns`, went away or changed CID).
pub(crate) fn reset_cid(cid: u32, ns: u64) {
    // SAFETY: as in `deliver`; process context, no lock of ours held.
    unsafe { abi::rvsock_transport_reset(TRANSPORT.get(), cid, ns) };
}

/// The device of an open file.
///
/// # Safety
/// `file` is an open file of our misc device, between `dev_open` and `dev_release`.
unsafe fn dev_of<'a>(file: *mut ffi::file) -> Option<&'a VhostVsock> {
    // SAFETY: `private_data` was set to our device by `dev_open` and stays valid until
    // `dev_release`, per the contract.
    unsafe { ((*file).private_data as *const VhostVsock).as_ref() }
}

unsafe extern "C" fn dev_open(_inode: *mut ffi::inode, file: *mut ffi::file) -> c_int {
    match VhostVsock::open() {
        Ok(d) => {
            // SAFETY: the VFS passes the file being opened; we own its `private_data`.
            unsafe { (*file).private_data = d.as_ptr().cast() };
            0
        }
        Err(e) => e.to_errno(),
    }
}

unsafe extern "C" fn dev_release(_inode: *mut ffi::inode, file: *mut ffi::file) -> c_int {
    // SAFETY: last close of a file opened by `dev_open`: no other file operation runs.
    let p = unsafe { (*file).private_data as *mut VhostVsock };
    if let Some(p) = NonNull::new(p) {
        // SAFETY: `p` came from `VhostVsock::open`; the file is going away.
        unsafe {
            (*file).private_data = core::ptr::null_mut();
            VhostVsock::release(p);
        }
    }
    0
}

unsafe extern "C" fn dev_ioctl(file: *mut ffi::file, cmd: c_uint, arg: c_ulong) -> c_long {
    // SAFETY: an open file of our device.
    match unsafe { dev_of(file) } {
        // SAFETY: `arg` is this ioctl's argument.
        Some(d) => unsafe { d.ioctl(cmd, arg as usize) },
        None => EINVAL.to_errno() as c_long,
    }
}

unsafe extern "C" fn dev_read_iter(iocb: *mut ffi::kiocb, to: *mut ffi::iov_iter) -> isize {
    // SAFETY: the VFS passes the live kiocb of this read, whose file is ours.
    let file = unsafe { (*iocb).ki_filp };
    // SAFETY: as above.
    let Some(d) = (unsafe { dev_of(file) }) else { return EINVAL.to_errno() as isize };
    // SAFETY: reading the file's flags; `to` is this call's iterator.
    unsafe {
        let nonblock = (*file).f_flags & ffi::O_NONBLOCK != 0;
        d.read(to, nonblock)
    }
}

unsafe extern "C" fn dev_write_iter(iocb: *mut ffi::kiocb, from: *mut ffi::iov_iter) -> isize {
    // SAFETY: as in `dev_read_iter`.
    let file = unsafe { (*iocb).ki_filp };
    // SAFETY: as above.
    let Some(d) = (unsafe { dev_of(file) }) else { return EINVAL.to_errno() as isize };
    // SAFETY: `from` is this call's iterator.
    unsafe { d.write(from) }
}

unsafe extern "C" fn dev_poll(file: *mut ffi::file, wait: *mut ffi::poll_table_struct) -> ffi::__poll_t {
    // SAFETY: an open file of our device.
    match unsafe { dev_of(file) } {
        // SAFETY: this call's arguments.
        Some(d) => unsafe { d.poll(file, wait) },
        None => 0,
    }
}

struct RvsockVhost {
    _debug: debugfs::DebugDir,
    _table: table::TableOwner,
    transport: bool,
    misc: bool,
}

impl kernel::Module for RvsockVhost {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let debug = debugfs::DebugDir::new(b"rvsock_vhost\0", None);
        // SAFETY: the totals are a static.
        unsafe { stats::TOTALS.debugfs(&debug) };
        let mut me = RvsockVhost { _debug: debug, _table: table::TableOwner::new()?, transport: false, misc: false };
        // SAFETY: returns this module's THIS_MODULE.
        let owner = unsafe { ffi::rvsock_this_module() };
        // SAFETY: the statics are written only here, before registration publishes them.
        unsafe {
            (*TRANSPORT.get()).owner = owner;
            let fo = &mut *FOPS.get();
            fo.owner = owner;
            fo.open = Some(dev_open);
            fo.release = Some(dev_release);
            fo.llseek = Some(ffi::noop_llseek);
            fo.unlocked_ioctl = Some(dev_ioctl);
            // 32-bit VMMs (in-tree: `compat_ptr_ioctl`: every argument is a pointer to a
            // structure laid out alike on 32 and 64 bits); None without CONFIG_COMPAT.
            fo.compat_ioctl = ffi::rvsock_compat_ptr_ioctl();
            fo.read_iter = Some(dev_read_iter);
            fo.write_iter = Some(dev_write_iter);
            fo.poll = Some(dev_poll);
            let m = &mut *MISC.get();
            m.minor = ffi::VHOST_VSOCK_MINOR as c_int;
            m.name = c"vhost-vsock".as_ptr().cast();
            m.fops = FOPS.get();
        }
        // SAFETY: TRANSPORT is a fully set up static that outlives the registration.
        kernel::error::to_result(unsafe { abi::rvsock_transport_register(TRANSPORT.get()) })?;
        me.transport = true;
        // SAFETY: MISC is a fully set up static that outlives the registration.
        kernel::error::to_result(unsafe { ffi::misc_register(MISC.get()) })?;
        me.misc = true;
        Ok(me)
    }
}

impl Drop for RvsockVhost {
    fn drop(&mut self) {
        // SAFETY: each call undoes a successful registration of `init`, in reverse order.
        // Open files pin the module, so no device exists any more.
        unsafe {
            if self.misc {
                ffi::misc_deregister(MISC.get());
            }
            if self.transport {
                abi::rvsock_transport_unregister(TRANSPORT.get());
            }
        }
    }
}
