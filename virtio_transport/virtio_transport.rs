// SPDX-License-Identifier: GPL-2.0
//! rvsock virtio transport (`rvsock_virtio.ko`): the guest driver of the virtio-vsock device,
//! registered with the rvsock core as its guest-to-host (G2H) transport while a device is
//! bound. The protocol lives in the core; this module moves packets between the core and the
//! device's rx, tx and event virtqueues.
//!
//! Module map: `virtio` (binding layer over the virtio API), `dev` (the driver: probe/remove,
//! rx/tx/event paths), this file (module, parameter, driver and transport descriptors, and
//! the C callbacks, which only convert pointers and call `dev`).
//!
//! Module parameter `rx_buf_size`: bytes allocated per receive buffer, 4096..65536, default
//! 65536. See `dev.rs` and docs/design.md for why large buffers are the default.
// The driver state's pin-initialiser has more fields than the default macro recursion limit.
#![recursion_limit = "256"]

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicPtr, Ordering};
use kernel::ffi::{c_int, c_uint};
use kernel::prelude::*;

include!("../include/mods.rs");
#[allow(dead_code, unused_imports, unreachable_pub)]
mod proto;

mod dev;
mod virtio;

use abi::{RawPkt, RawTransport, TRANSPORT_F_SEQPACKET, TRANSPORT_F_ZEROCOPY, TRANSPORT_G2H};
use dev::Shared;
use pkt::Pkt;
use proto::hdr::VMADDR_CID_ANY;

module! {
    type: RvsockVirtio,
    name: "rvsock_virtio",
    description: "AF_VSOCK virtio transport: virtio-vsock guest driver (Rust)",
    license: "GPL",
    alias: ["virtio:d00000013v*", "vmw_vsock_virtio_transport"],
}

// ---- module parameter ----------------------------------------------------------------------

/// Default `rx_buf_size`: one 64 KiB allocation per buffer (an order-4 page block, no slack).
const DEFAULT_RX_BUF_SIZE: c_uint = 64 * 1024;
/// Smallest `rx_buf_size` accepted (in-tree's buffer size).
const MIN_RX_BUF_SIZE: c_uint = 4096;

/// Storage of a `uint` module parameter, written by the module loader before `init` runs.
#[repr(transparent)]
struct ParamU32(UnsafeCell<c_uint>);

// SAFETY: the loader writes the value before `init` (permission 0444: never written later);
// afterwards it is only read.
unsafe impl Sync for ParamU32 {}

static RX_BUF_SIZE: ParamU32 = ParamU32(UnsafeCell::new(DEFAULT_RX_BUF_SIZE));

/// A `struct kernel_param` in the `__param` section (what C's `module_param()` emits).
#[repr(transparent)]
struct KernelParam(ffi::kernel_param);

// SAFETY: immutable descriptor read by the module loader and sysfs.
unsafe impl Sync for KernelParam {}

// `struct module` holds zero-sized lockdep maps in some configurations; it is only reached
// behind a pointer here.
#[allow(improper_ctypes)]
extern "C" {
    // Defined by modpost for every module (the same declaration as the `module!` macro's).
    static __this_module: kernel::types::Opaque<kernel::bindings::module>;
}

#[used(compiler)]
#[link_section = "__param"]
static RX_BUF_SIZE_PARAM: KernelParam = KernelParam(ffi::kernel_param {
    name: c"rx_buf_size".as_ptr().cast(),
    // SAFETY: taking the address of the module's own descriptor.
    mod_: unsafe { __this_module.get() }.cast(),
    ops: core::ptr::addr_of!(ffi::param_ops_uint),
    perm: 0o444,
    level: -1,
    flags: 0,
    __bindgen_anon_1: ffi::kernel_param__bindgen_ty_1 { arg: RX_BUF_SIZE.0.get().cast() },
});

#[used(compiler)]
#[link_section = ".modinfo"]
static RX_BUF_SIZE_PARMTYPE: [u8; 26] = *b"parmtype=rx_buf_size:uint\0";

#[used(compiler)]
#[link_section = ".modinfo"]
static RX_BUF_SIZE_PARMDESC: [u8; 78] =
    *b"parm=rx_buf_size:Largest receive buffer in bytes, 4096..65536 (default 65536)\0";

/// The payload capacity of the large rx buffers, from the parameter (clamped).
fn rx_cap_param() -> u32 {
    // SAFETY: written by the loader before `init`, read-only afterwards.
    let v = unsafe { core::ptr::read_volatile(RX_BUF_SIZE.0.get()) };
    let size = v.clamp(MIN_RX_BUF_SIZE, DEFAULT_RX_BUF_SIZE);
    if size != v {
        pr_warn!("rx_buf_size {} out of range, using {}\n", v, size);
    }
    let cap = size - core::mem::size_of::<RawPkt>() as u32;
    cap.clamp(dev::SMALL_CAP, dev::MAX_CAP)
}

// ---- transport descriptors -----------------------------------------------------------------

/// Any CID may live behind the host (sibling VMs it forwards to): in-tree
/// `virtio_transport_has_remote_cid` assumes so too.
unsafe extern "C" fn has_remote_cid(_t: *const RawTransport, _remote_cid: u32, _ns: u64) -> bool {
    true
}

/// A transport descriptor; `owner` is written once in `init`, before any registration.
pub(crate) struct TransportCell(UnsafeCell<RawTransport>);

// SAFETY: written once in `init` before registration publishes it, read-only afterwards.
unsafe impl Sync for TransportCell {}

impl TransportCell {
    const fn new(features: u32) -> TransportCell {
        TransportCell(UnsafeCell::new(RawTransport {
            owner: core::ptr::null_mut(),
            name: c"virtio".as_ptr().cast(),
            kind: TRANSPORT_G2H,
            features,
            local_cid,
            send_pkt,
            seqpacket_allow: None,
            has_remote_cid: Some(has_remote_cid),
            cancel_pkt: Some(cancel_pkt),
            priv_: core::ptr::null_mut(),
        }))
    }

    /// The descriptor to register.
    pub(crate) fn get(&'static self) -> *mut RawTransport {
        self.0.get()
    }
}

/// Registered when the device negotiated VIRTIO_VSOCK_F_SEQPACKET. Two immutable descriptors
/// instead of one with a per-device feature word: a socket of a previous device may still
/// read its descriptor while a new device is probed. The symbol names follow the in-tree
/// `virtio_transport`, so tools that look for registered transports in /proc/kallsyms find
/// ours (module data appears there with CONFIG_KALLSYMS_ALL).
#[export_name = "virtio_transport"]
static T_SEQPACKET: TransportCell = TransportCell::new(TRANSPORT_F_SEQPACKET | TRANSPORT_F_ZEROCOPY);
/// Registered otherwise (STREAM only).
#[export_name = "virtio_transport_stream_only"]
static T_STREAM: TransportCell = TransportCell::new(TRANSPORT_F_ZEROCOPY);

/// The descriptor matching the negotiated features.
pub(crate) fn transport_for(seqpacket: bool) -> &'static TransportCell {
    if seqpacket {
        &T_SEQPACKET
    } else {
        &T_STREAM
    }
}

// ---- the driver state and the C callbacks --------------------------------------------------

static SHARED: AtomicPtr<Shared> = AtomicPtr::new(core::ptr::null_mut());

/// The driver state; `None` only outside `init`..`exit`.
fn shared() -> Option<&'static Shared> {
    let p = SHARED.load(Ordering::Acquire);
    // SAFETY: non-null only while the module owns the (pinned) state: published in `init`
    // before anything can call us, cleared in `drop` after every caller is gone.
    unsafe { p.as_ref() }
}

unsafe extern "C" fn local_cid(_t: *const RawTransport) -> u32 {
    shared().map_or(VMADDR_CID_ANY, |s| s.local_cid())
}

unsafe extern "C" fn send_pkt(_t: *const RawTransport, pkt: *mut RawPkt) -> c_int {
    // SAFETY: the core hands us ownership of `pkt` (ABI contract).
    let Some(p) = (unsafe { Pkt::from_raw(pkt) }) else { return EINVAL.to_errno() };
    match shared() {
        Some(s) => match s.send(p) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        },
        None => ENODEV.to_errno(),
    }
}

/// Drops what `owner` still has waiting for ring space (a timed-out connect's REQUEST).
unsafe extern "C" fn cancel_pkt(_t: *const RawTransport, owner: *mut core::ffi::c_void, _remote_cid: u32, _ns: u64) {
    if let Some(s) = shared() {
        s.cancel(owner);
    }
}

/// rx virtqueue callback (interrupt context).
pub(crate) unsafe extern "C" fn rx_done(_vq: *mut ffi::virtqueue) {
    if let Some(s) = shared() {
        s.kick_rx();
    }
}

/// tx virtqueue callback (interrupt context).
pub(crate) unsafe extern "C" fn tx_done(_vq: *mut ffi::virtqueue) {
    if let Some(s) = shared() {
        s.kick_tx();
    }
}

/// Event virtqueue callback (interrupt context).
pub(crate) unsafe extern "C" fn ev_done(_vq: *mut ffi::virtqueue) {
    if let Some(s) = shared() {
        s.kick_ev();
    }
}

/// rx work function.
pub(crate) unsafe extern "C" fn rx_work_fn(_w: *mut ffi::work_struct) {
    if let Some(s) = shared() {
        s.rx_work();
    }
}

/// tx work function.
pub(crate) unsafe extern "C" fn tx_work_fn(_w: *mut ffi::work_struct) {
    if let Some(s) = shared() {
        s.tx_work();
    }
}

/// Event work function.
pub(crate) unsafe extern "C" fn ev_work_fn(_w: *mut ffi::work_struct) {
    if let Some(s) = shared() {
        s.ev_work();
    }
}

unsafe extern "C" fn probe(vdev: *mut ffi::virtio_device) -> c_int {
    // SAFETY: the driver core passes a device bound to us until `remove` returns.
    let Some(d) = (unsafe { virtio::VDev::from_raw(vdev) }) else { return EINVAL.to_errno() };
    match shared() {
        Some(s) => match s.probe(d) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        },
        None => ENODEV.to_errno(),
    }
}

unsafe extern "C" fn remove(vdev: *mut ffi::virtio_device) {
    if let Some(s) = shared() {
        s.remove(vdev);
    }
}

unsafe extern "C" fn freeze(vdev: *mut ffi::virtio_device) -> c_int {
    if let Some(s) = shared() {
        s.freeze(vdev);
    }
    0
}

unsafe extern "C" fn restore(vdev: *mut ffi::virtio_device) -> c_int {
    match shared() {
        Some(s) => match s.restore(vdev) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        },
        None => ENODEV.to_errno(),
    }
}

static DRIVER: virtio::Driver = virtio::Driver::new();

static ID_TABLE: [ffi::virtio_device_id; 2] = [
    ffi::virtio_device_id { device: ffi::VIRTIO_ID_VSOCK, vendor: ffi::VIRTIO_DEV_ANY_ID },
    ffi::virtio_device_id { device: 0, vendor: 0 },
];

static FEATURES: [c_uint; 1] = [ffi::VIRTIO_VSOCK_F_SEQPACKET];

struct RvsockVirtio {
    /// Before `_shared`: its files read the counters in there.
    _debug: debugfs::DebugDir,
    _shared: Pin<KBox<Shared>>,
}

impl kernel::Module for RvsockVirtio {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let rx_cap = rx_cap_param();
        // SAFETY: returns this module's `THIS_MODULE`.
        let owner = unsafe { ffi::rvsock_this_module() };
        for t in [&T_SEQPACKET, &T_STREAM] {
            // SAFETY: not registered yet, so nobody else reads the descriptors.
            unsafe { (*t.get()).owner = owner };
        }
        let wq = virtio::WorkQueue::new(kernel::c_str!("rvsock_virtio"))?;
        let shared = KBox::pin_init(Shared::new(wq, rx_cap), GFP_KERNEL)?;
        SHARED.store(&*shared as *const Shared as *mut Shared, Ordering::Release);
        let cb = virtio::Callbacks { probe, remove, freeze, restore };
        // SAFETY: registered once; `ID_TABLE` ends with a zero entry; unregistered in `drop`
        // (or right here on failure, by not publishing the module).
        let r = unsafe { DRIVER.register(kernel::c_str!("rvsock_virtio"), &ID_TABLE, &FEATURES, cb, owner) };
        if let Err(e) = r {
            SHARED.store(core::ptr::null_mut(), Ordering::Release);
            return Err(e);
        }
        let debug = debugfs::DebugDir::new(b"rvsock_virtio\0", None);
        // SAFETY: `debug` is dropped before `shared` (field order of `RvsockVirtio`).
        unsafe { shared.debugfs(&debug) };
        Ok(RvsockVirtio { _debug: debug, _shared: shared })
    }
}

impl Drop for RvsockVirtio {
    fn drop(&mut self) {
        // SAFETY: registered in `init`. This removes a bound device (teardown cancels every
        // work item); with no device, no callback or work item can be queued any more.
        unsafe { DRIVER.unregister() };
        SHARED.store(core::ptr::null_mut(), Ordering::Release);
        // `_shared` drops next: its workqueue is destroyed (empty) before the rest is freed.
    }
}
