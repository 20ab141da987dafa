// SPDX-License-Identifier: GPL-2.0
//! Binding layer of `rvsock_vhost.ko` over the kernel's vhost core (`drivers/vhost/vhost.h`):
//! safe types for a locked virtqueue (descriptor fetch, used ring, notifications, weights),
//! copies between packets and a descriptor chain's iovecs, the device mutex, and user copies.
//! Every raw vhost call of the module is in this file; `dev.rs` above it is safe Rust.

use crate::ffi;
use core::ffi::c_void;
use core::ptr::NonNull;
use kernel::ffi::{c_int, c_long};
use kernel::prelude::*;

/// Maximum iovecs per descriptor chain (`UIO_MAXIOV`, the size of `vhost_virtqueue::iov`).
pub(crate) const IOV_MAX: u32 = ffi::UIO_MAXIOV;

/// A virtqueue of a live vhost device.
///
/// # Invariants
/// Points to a `vhost_virtqueue` initialised by `vhost_dev_init` that stays live (and is not
/// moved) while the `Vq` is used; its `dev` points to the device it belongs to.
#[derive(Clone, Copy)]
pub(crate) struct Vq(NonNull<ffi::vhost_virtqueue>);

// SAFETY: a virtqueue is designed for use from any thread; every access to its ring state
// goes through its mutex (`VqGuard`).
unsafe impl Send for Vq {}
// SAFETY: see `Send`.
unsafe impl Sync for Vq {}

impl Vq {
    /// Wraps a virtqueue pointer.
    ///
    /// # Safety
    /// `p` is a virtqueue initialised by `vhost_dev_init` that stays live while the `Vq` is used.
    pub(crate) unsafe fn from_raw(p: NonNull<ffi::vhost_virtqueue>) -> Vq {
        Vq(p)
    }

    /// The raw pointer.
    pub(crate) fn as_ptr(self) -> *mut ffi::vhost_virtqueue {
        self.0.as_ptr()
    }

    /// The device this virtqueue belongs to.
    pub(crate) fn dev(self) -> *mut ffi::vhost_dev {
        // SAFETY: `dev` is set by `vhost_dev_init` and never changes afterwards.
        unsafe { (*self.as_ptr()).dev }
    }

    /// Takes the virtqueue mutex.
    pub(crate) fn lock(self) -> VqGuard {
        // SAFETY: the mutex was initialised by `vhost_dev_init`; released by `VqGuard::drop`.
        unsafe { ffi::rvsock_mutex_lock(core::ptr::addr_of_mut!((*self.as_ptr()).mutex)) };
        VqGuard { vq: self }
    }

    /// Ring size, read without the mutex (a snapshot, as in-tree's reply accounting does).
    pub(crate) fn num_unlocked(self) -> u32 {
        // SAFETY: an aligned u32 read of a live virtqueue; a torn value is impossible and a
        // stale one only delays a restart.
        unsafe { core::ptr::read_volatile(&(*self.as_ptr()).num) }
    }

    /// Queues the virtqueue's own kick handler on the device worker (`vhost_poll_queue`).
    pub(crate) fn poll_queue(self) {
        // SAFETY: the poll structure was initialised by `vhost_dev_init`.
        unsafe { ffi::vhost_poll_queue(core::ptr::addr_of_mut!((*self.as_ptr()).poll)) };
    }

    /// Queues `work` on this virtqueue's worker; false if no worker is attached yet.
    ///
    /// # Safety
    /// `work` was initialised with `vhost_work_init` and stays live until it has run or the
    /// device has been flushed.
    pub(crate) unsafe fn work_queue(self, work: *mut ffi::vhost_work) -> bool {
        // SAFETY: per the contract; the call does not sleep (usable under a spinlock).
        unsafe { ffi::vhost_vq_work_queue(self.as_ptr(), work) }
    }
}

/// Result of fetching the next available descriptor chain.
pub(crate) enum Desc {
    /// A chain: `head` to give back with `add_used`, `out` readable then `inn` writable iovecs
    /// now in the virtqueue's `iov` array.
    Chain {
        head: u32,
        out: u32,
        inn: u32,
        /// Dirty-log entries of the chain's writable part, in the virtqueue's `log` array
        /// (0 unless the VMM turned dirty logging on: `VHOST_F_LOG_ALL`, during migration).
        log: u32,
    },
    /// No buffer available.
    Empty,
    /// The ring is broken (bad descriptor, fault): stop processing this virtqueue.
    Broken,
}

/// A virtqueue with its mutex held.
pub(crate) struct VqGuard {
    vq: Vq,
}

impl Drop for VqGuard {
    fn drop(&mut self) {
        // SAFETY: we hold the mutex (taken in `Vq::lock`).
        unsafe { ffi::mutex_unlock(core::ptr::addr_of_mut!((*self.vq.as_ptr()).mutex)) };
    }
}

impl VqGuard {
    fn raw(&self) -> *mut ffi::vhost_virtqueue {
        self.vq.as_ptr()
    }

    /// The backend (`private_data`): non-null while the device is running.
    pub(crate) fn backend(&self) -> *mut c_void {
        // SAFETY: `private_data` is protected by the mutex we hold.
        unsafe { (*self.raw()).private_data }
    }

    /// Sets the backend (`vhost_vq_set_backend`).
    pub(crate) fn set_backend(&mut self, p: *mut c_void) {
        // SAFETY: as above.
        unsafe { (*self.raw()).private_data = p };
    }

    /// Ring size.
    pub(crate) fn num(&self) -> u32 {
        // SAFETY: `num` is protected by the mutex we hold.
        unsafe { (*self.raw()).num }
    }

    /// Sets the negotiated features.
    pub(crate) fn set_acked_features(&mut self, f: u64) {
        // SAFETY: `acked_features` is protected by the mutex we hold.
        unsafe { ffi::rvsock_vq_set_acked_features(self.raw(), f) };
    }

    /// Whether the ring addresses are accessible (`vhost_vq_access_ok`).
    pub(crate) fn access_ok(&self) -> bool {
        // SAFETY: called with the mutex held, as vhost requires.
        unsafe { ffi::vhost_vq_access_ok(self.raw()) }
    }

    /// Prepares the ring for use (`vhost_vq_init_access`).
    pub(crate) fn init_access(&mut self) -> Result {
        // SAFETY: called with the mutex held, as vhost requires.
        kernel::error::to_result(unsafe { ffi::vhost_vq_init_access(self.raw()) })
    }

    /// Prefetches the ring metadata (`vq_meta_prefetch`); false if the rings are unmapped.
    pub(crate) fn meta_prefetch(&mut self) -> bool {
        // SAFETY: called with the mutex held.
        unsafe { ffi::vq_meta_prefetch(self.raw()) != 0 }
    }

    /// Suppresses guest notifications while we process the ring.
    pub(crate) fn disable_notify(&mut self) {
        // SAFETY: called with the mutex held; `dev` is the virtqueue's device.
        unsafe { ffi::vhost_disable_notify(self.vq.dev(), self.raw()) };
    }

    /// Re-enables guest notifications; true if buffers arrived meanwhile (process again).
    pub(crate) fn enable_notify(&mut self) -> bool {
        // SAFETY: as above.
        unsafe { ffi::vhost_enable_notify(self.vq.dev(), self.raw()) }
    }

    /// Fetches the next available descriptor chain into the virtqueue's iovec array.
    pub(crate) fn get_desc(&mut self) -> Desc {
        let (mut out, mut inn, mut log) = (0u32, 0u32, 0u32);
        // While the VMM logs dirty pages, the chain's writable addresses go to the virtqueue's
        // `log` array (allocated by the vhost core with the iovecs, `IOV_MAX` entries), for
        // `log_write` once we wrote into them.
        // SAFETY: mutex held; reading the virtqueue's acked features and its array pointer.
        let log_arr = unsafe {
            if ffi::rvsock_vhost_has_feature(self.raw(), ffi::VHOST_F_LOG_ALL as c_int) {
                (*self.raw()).log
            } else {
                core::ptr::null_mut()
            }
        };
        let log_num = if log_arr.is_null() { core::ptr::null_mut() } else { &mut log as *mut u32 };
        // SAFETY: mutex held; `iov` is the virtqueue's own array of `IOV_MAX` entries; the
        // log arguments are null or the virtqueue's log array and our counter.
        let head = unsafe {
            ffi::vhost_get_vq_desc(
                self.raw(),
                (*self.raw()).iov.as_mut_ptr(),
                IOV_MAX,
                &mut out,
                &mut inn,
                log_arr,
                log_num,
            )
        };
        if head < 0 {
            return Desc::Broken;
        }
        let head = head as u32;
        if head == self.num() {
            return Desc::Empty;
        }
        // vhost_get_vq_desc bounds out + in by the array size; check anyway, since the
        // iterators below index the array with them.
        if out.checked_add(inn).map_or(true, |n| n > IOV_MAX) {
            return Desc::Broken;
        }
        Desc::Chain { head, out, inn, log }
    }

    /// Marks the `len` bytes just written into the last chain's writable part (`inn`
    /// iovecs from the start of the array: a receive chain has no readable part) dirty in the
    /// VMM's log, as vhost-net does for its receive buffers: a page we write while the VMM
    /// copies guest memory for a migration is copied again. `log`: the chain's log entries
    /// (`Desc::Chain::log`); nothing to do when 0.
    pub(crate) fn log_write(&mut self, log: u32, len: usize, inn: u32) {
        if log == 0 {
            return;
        }
        // SAFETY: mutex held; `log` entries of the virtqueue's log array and `inn` iovecs of
        // its iovec array were filled by the `get_desc` that returned `log`.
        unsafe {
            let vq = self.raw();
            ffi::vhost_log_write(vq, (*vq).log, log, len as u64, (*vq).iov.as_mut_ptr(), inn as c_int);
        }
    }

    /// Total length of iovecs `first..first + n` (`iov_length`), saturating.
    pub(crate) fn iov_len(&self, first: u32, n: u32) -> usize {
        let mut len = 0usize;
        for i in first..first.saturating_add(n).min(IOV_MAX) {
            // SAFETY: `i < IOV_MAX`, within the virtqueue's iovec array; mutex held.
            let l = unsafe { (*self.raw()).iov[i as usize].iov_len };
            len = len.saturating_add(l);
        }
        len
    }

    /// An iterator over iovecs `first..first + n` of the last fetched chain, `len` bytes.
    /// `dest`: we write into guest memory (the chain's writable part).
    pub(crate) fn iter(&mut self, first: u32, n: u32, len: usize, dest: bool) -> IovIter<'_> {
        let (first, n) = if first.checked_add(n).map_or(true, |e| e > IOV_MAX) { (0, 0) } else { (first, n) };
        // SAFETY: all-zero is a valid `iov_iter`; `iov_iter_init` fills it in.
        let mut it: ffi::iov_iter = unsafe { core::mem::zeroed() };
        let dir = if dest { ffi::ITER_DEST } else { ffi::ITER_SOURCE };
        // SAFETY: `first + n <= IOV_MAX` entries of the virtqueue's array, filled by the last
        // `get_desc`; the iterator borrows the guard, so the array cannot change while it is
        // used (a new `get_desc` needs `&mut self`).
        unsafe {
            ffi::iov_iter_init(&mut it, dir, (*self.raw()).iov.as_ptr().add(first as usize), n as _, len);
        }
        IovIter { it, _g: core::marker::PhantomData }
    }

    /// Returns a chain to the guest with `len` bytes written (`vhost_add_used`).
    pub(crate) fn add_used(&mut self, head: u32, len: u32) {
        // SAFETY: mutex held; `head` came from `get_desc` on this virtqueue. A failure means
        // the used ring is unmapped; vhost reports it to the VMM through vq_err itself.
        unsafe { ffi::vhost_add_used(self.raw(), head, len as c_int) };
    }

    /// Interrupts the guest if it asked for it (`vhost_signal`).
    pub(crate) fn signal(&mut self) {
        // SAFETY: mutex held; `dev` is the virtqueue's device.
        unsafe { ffi::vhost_signal(self.vq.dev(), self.raw()) };
    }

    /// Whether this run used up its budget (`vhost_exceeds_weight`: requeues the handler).
    pub(crate) fn exceeds_weight(&mut self, pkts: i32, bytes: i32) -> bool {
        // SAFETY: mutex held.
        unsafe { ffi::vhost_exceeds_weight(self.raw(), pkts, bytes) }
    }

    /// Reports a guest error to the VMM's error eventfd (`vq_err`).
    pub(crate) fn err(&self) {
        // SAFETY: `error_ctx` is protected by the mutex we hold; non-null means a live
        // eventfd context owned by the virtqueue.
        unsafe {
            let ctx = (*self.raw()).error_ctx;
            if !ctx.is_null() {
                ffi::rvsock_eventfd_signal(ctx);
            }
        }
    }
}

/// An `iov_iter` over the iovecs of the chain last fetched from a locked virtqueue.
pub(crate) struct IovIter<'a> {
    it: ffi::iov_iter,
    _g: core::marker::PhantomData<&'a mut VqGuard>,
}

impl IovIter<'_> {
    /// Bytes left.
    pub(crate) fn count(&self) -> usize {
        // SAFETY: `it` was initialised by `iov_iter_init`.
        unsafe { ffi::rvsock_iov_iter_count(&self.it) }
    }

    /// Copies `src` into guest memory; returns the bytes copied (short on a fault).
    pub(crate) fn write(&mut self, src: &[u8]) -> usize {
        // SAFETY: `src` is a valid kernel buffer; the iterator points at guest user memory
        // (checked by the copy itself).
        unsafe { ffi::rvsock_copy_to_iter(src.as_ptr().cast(), src.len(), &mut self.it) }
    }

    /// The raw iterator, for the core's payload copier.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut ffi::iov_iter {
        &mut self.it
    }

    /// Copies guest memory into `dst`; returns the bytes copied (short on a fault).
    pub(crate) fn read(&mut self, dst: &mut [core::mem::MaybeUninit<u8>]) -> usize {
        // SAFETY: `dst` is a valid kernel buffer (possibly uninitialised: it is only written);
        // the copy checks the user side.
        unsafe { ffi::rvsock_copy_from_iter(dst.as_mut_ptr().cast(), dst.len(), &mut self.it) }
    }
}

/// The vhost device embedded in our per-VMM state.
///
/// # Invariants
/// Points to a `vhost_dev` that stays live while the `Dev` is used, initialised by `init`.
#[derive(Clone, Copy)]
pub(crate) struct Dev(NonNull<ffi::vhost_dev>);

// SAFETY: the vhost device is designed for concurrent use; its state is protected by its
// mutex and the virtqueue mutexes.
unsafe impl Send for Dev {}
// SAFETY: see `Send`.
unsafe impl Sync for Dev {}

/// Kick handler type of a virtqueue or work item.
pub(crate) type WorkFn = unsafe extern "C" fn(*mut ffi::vhost_work);

impl Dev {
    /// Initialises a device with the virtqueues `vq_ptrs` (`vhost_dev_init`).
    ///
    /// # Safety
    /// `dev`, `vq_ptrs` and the virtqueues it points to are zeroed, live and never moved until
    /// `cleanup` has returned; `kicks[i]` is the kick handler of `vq_ptrs[i]`.
    pub(crate) unsafe fn init(
        dev: *mut ffi::vhost_dev,
        vq_ptrs: *mut [*mut ffi::vhost_virtqueue; 2],
        kicks: [WorkFn; 2],
        pkt_weight: i32,
        byte_weight: i32,
    ) -> Dev {
        // SAFETY: per the contract: handle_kick must be set before vhost_dev_init, which
        // initialises the poll structures with it.
        unsafe {
            for (i, k) in kicks.iter().enumerate() {
                (*(*vq_ptrs)[i]).handle_kick = Some(*k);
            }
            ffi::vhost_dev_init(dev, (*vq_ptrs).as_mut_ptr(), 2, IOV_MAX as c_int, pkt_weight, byte_weight, true, None);
            Dev(NonNull::new_unchecked(dev))
        }
    }

    /// Wraps an initialised device.
    ///
    /// # Safety
    /// `dev` was initialised with `init` and stays live while the `Dev` is used.
    pub(crate) unsafe fn from_raw(dev: NonNull<ffi::vhost_dev>) -> Dev {
        Dev(dev)
    }

    fn raw(self) -> *mut ffi::vhost_dev {
        self.0.as_ptr()
    }

    /// Takes the device mutex.
    pub(crate) fn lock(self) -> DevGuard {
        // SAFETY: initialised by `vhost_dev_init`; released by `DevGuard::drop`.
        unsafe { ffi::rvsock_mutex_lock(core::ptr::addr_of_mut!((*self.raw()).mutex)) };
        DevGuard { dev: self }
    }

    /// Waits for every queued work item of the device (`vhost_dev_flush`).
    pub(crate) fn flush(self) {
        // SAFETY: live initialised device.
        unsafe { ffi::vhost_dev_flush(self.raw()) };
    }

    /// Stops polling the kick eventfds (`vhost_dev_stop`).
    pub(crate) fn stop(self) {
        // SAFETY: live initialised device.
        unsafe { ffi::vhost_dev_stop(self.raw()) };
    }

    /// Releases everything vhost allocated for the device (`vhost_dev_cleanup`): workers,
    /// memory tables, eventfds, the owner's mm.
    pub(crate) fn cleanup(self) {
        // SAFETY: live initialised device, stopped and flushed by the caller.
        unsafe { ffi::vhost_dev_cleanup(self.raw()) };
    }

    /// `read(2)` on the device (IOTLB messages).
    ///
    /// # Safety
    /// `to` is the iterator of the current read call.
    pub(crate) unsafe fn chr_read(self, to: *mut ffi::iov_iter, nonblock: bool) -> isize {
        // SAFETY: per the contract.
        unsafe { ffi::vhost_chr_read_iter(self.raw(), to, nonblock as c_int) }
    }

    /// `write(2)` on the device (IOTLB messages).
    ///
    /// # Safety
    /// `from` is the iterator of the current write call.
    pub(crate) unsafe fn chr_write(self, from: *mut ffi::iov_iter) -> isize {
        // SAFETY: per the contract.
        unsafe { ffi::vhost_chr_write_iter(self.raw(), from) }
    }

    /// `poll(2)` on the device.
    ///
    /// # Safety
    /// `file` and `wait` are the arguments of the current poll call.
    pub(crate) unsafe fn chr_poll(self, file: *mut ffi::file, wait: *mut ffi::poll_table_struct) -> ffi::__poll_t {
        // SAFETY: per the contract.
        unsafe { ffi::vhost_chr_poll(file, self.raw(), wait) }
    }
}

/// The device with its mutex held.
pub(crate) struct DevGuard {
    dev: Dev,
}

impl Drop for DevGuard {
    fn drop(&mut self) {
        // SAFETY: we hold the mutex (taken in `Dev::lock`).
        unsafe { ffi::mutex_unlock(core::ptr::addr_of_mut!((*self.dev.raw()).mutex)) };
    }
}

impl DevGuard {
    /// Whether the caller's mm owns the device (`vhost_dev_check_owner`).
    pub(crate) fn check_owner(&self) -> Result {
        // SAFETY: device mutex held.
        kernel::error::to_result(unsafe { ffi::vhost_dev_check_owner(self.dev.raw()) } as c_int)
    }

    /// Whether the dirty log is accessible (`vhost_log_access_ok`).
    pub(crate) fn log_access_ok(&self) -> bool {
        // SAFETY: device mutex held.
        unsafe { ffi::vhost_log_access_ok(self.dev.raw()) }
    }

    /// Enables the device IOTLB (`vhost_init_device_iotlb`).
    pub(crate) fn init_iotlb(&mut self) -> Result {
        // SAFETY: device mutex held.
        kernel::error::to_result(unsafe { ffi::vhost_init_device_iotlb(self.dev.raw()) })
    }

    /// Disables the device IOTLB (`vhost_clear_device_iotlb`).
    pub(crate) fn clear_iotlb(&mut self) {
        // SAFETY: device mutex held.
        unsafe { ffi::vhost_clear_device_iotlb(self.dev.raw()) };
    }

    /// Generic device and vring ioctls (`vhost_dev_ioctl`, then `vhost_vring_ioctl`), as
    /// in-tree vhost-vsock forwards them; the device is flushed after a device ioctl.
    ///
    /// # Safety
    /// `argp` is the user pointer argument of the current ioctl call.
    pub(crate) unsafe fn generic_ioctl(&mut self, cmd: u32, argp: *mut c_void) -> c_long {
        // SAFETY: device mutex held, as both functions require; `argp` per the contract
        // (vhost copies through it with the user-access helpers).
        unsafe {
            let r = ffi::vhost_dev_ioctl(self.dev.raw(), cmd, argp);
            if r == -(ffi::ENOIOCTLCMD as c_long) {
                ffi::vhost_vring_ioctl(self.dev.raw(), cmd, argp)
            } else {
                ffi::vhost_dev_flush(self.dev.raw());
                r
            }
        }
    }
}

impl Dev {
    /// Sets the backend features (`vhost_set_backend_features`; takes the device mutex).
    pub(crate) fn set_backend_features(self, f: u64) {
        // SAFETY: live initialised device; the function locks what it needs.
        unsafe { ffi::vhost_set_backend_features(self.raw(), f) };
    }
}

/// Initialises a work item (`vhost_work_init`).
///
/// # Safety
/// `w` points to a work item that stays live and unmoved while it may be queued.
pub(crate) unsafe fn work_init(w: *mut ffi::vhost_work, f: WorkFn) {
    // SAFETY: per the contract.
    unsafe { ffi::vhost_work_init(w, Some(f)) };
}

/// The task running the current code (for recognising our own worker's recursion).
pub(crate) fn current_task() -> *const c_void {
    // SAFETY: plain read of `current`.
    unsafe { ffi::rvsock_current() as *const c_void }
}

/// Copies a plain value to user space.
pub(crate) fn put_user_bytes(dst: *mut c_void, src: &[u8]) -> Result {
    // SAFETY: `_copy_to_user` checks the user range itself; `src` is a valid kernel buffer.
    let left = unsafe { ffi::_copy_to_user(dst, src.as_ptr().cast(), src.len() as _) };
    if left == 0 { Ok(()) } else { Err(EFAULT) }
}

/// Copies a plain value from user space.
pub(crate) fn get_user_bytes(dst: &mut [u8], src: *const c_void) -> Result {
    // SAFETY: `_copy_from_user` checks the user range itself; `dst` is a valid kernel buffer.
    let left = unsafe { ffi::_copy_from_user(dst.as_mut_ptr().cast(), src, dst.len() as _) };
    if left == 0 { Ok(()) } else { Err(EFAULT) }
}

/// Allocates `size` zeroed bytes with `kvzalloc` (physically contiguous if possible).
pub(crate) fn kvzalloc(size: usize) -> *mut c_void {
    // SAFETY: plain allocation (kvmalloc falls back to vmalloc for large sizes); null is
    // handled by the caller.
    unsafe { ffi::rvsock_kvzalloc(size, kernel::bindings::GFP_KERNEL) }
}

/// Frees memory from [`kvzalloc`].
///
/// # Safety
/// `p` came from `kvzalloc` and is not used afterwards.
pub(crate) unsafe fn kvfree(p: *mut c_void) {
    // SAFETY: per the contract.
    unsafe { ffi::kvfree(p) };
}

/// Whether `cid` is one of this host's own CIDs for the AF_VSOCK stack (in-tree
/// `vsock_find_cid`: the guest CID of a loaded G2H transport when we are nested, the host or
/// loopback CID). The core exports no such query, so ask it the way any user can: binding a
/// kernel socket to `cid` succeeds exactly for local CIDs (the socket is released at once).
pub(crate) fn cid_is_local(cid: u32) -> bool {
    const SOCK_STREAM: c_int = 1;
    let mut sock: *mut ffi::socket = core::ptr::null_mut();
    // SAFETY: `init_net` is the initial namespace (always live); `sock` receives the socket.
    let r = unsafe {
        ffi::sock_create_kern(
            core::ptr::addr_of_mut!(ffi::init_net),
            ffi::AF_VSOCK as c_int,
            SOCK_STREAM,
            0,
            &mut sock,
        )
    };
    if r != 0 || sock.is_null() {
        return false;
    }
    // struct sockaddr_vm: family u16, reserved1 u16, port u32, cid u32, flags u8, zero[3].
    let mut sa = [0u8; 16];
    sa[0..2].copy_from_slice(&(ffi::AF_VSOCK as u16).to_ne_bytes());
    sa[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    sa[8..12].copy_from_slice(&cid.to_ne_bytes());
    // SAFETY: `sock` is the fresh socket; `sa` is a valid 16-byte sockaddr_vm for the call.
    let r = unsafe { ffi::kernel_bind(sock, sa.as_mut_ptr().cast(), sa.len() as c_int) };
    // SAFETY: releases the socket created above; not used afterwards.
    unsafe { ffi::sock_release(sock) };
    r == 0
}
