// SPDX-License-Identifier: GPL-2.0
//! Binding layer of the core: safe types over `struct sock`, `struct socket`, `struct msghdr`,
//! wait queues, user copies and delayed work. All raw FFI of `rvsock.ko` except the
//! registration trampolines lives here; the socket logic above it is safe Rust.

use crate::ffi;
use kernel::ffi::{c_int, c_long};
use core::ptr::NonNull;
use kernel::prelude::*;
use kernel::types::Opaque;

/// `sk_state` values used by vsock (the TCP numbering, as in-tree).
pub(crate) mod state {
    /// Connected.
    pub(crate) const ESTABLISHED: u8 = 1;
    /// Connect in progress.
    pub(crate) const SYN_SENT: u8 = 2;
    /// Closed / never connected.
    pub(crate) const CLOSE: u8 = 7;
    /// Listening.
    pub(crate) const LISTEN: u8 = 10;
    /// Closing (peer shut down, waiting for the end).
    pub(crate) const CLOSING: u8 = 11;
}

/// Local shutdown bits in `sk_shutdown` (and in the wire's SHUTDOWN flags).
pub(crate) const RCV_SHUTDOWN: u32 = 1;
/// Local send shutdown.
pub(crate) const SEND_SHUTDOWN: u32 = 2;
/// Both directions.
pub(crate) const SHUTDOWN_MASK: u32 = 3;

/// A positive kernel errno from the generated bindings as an `Error`.
#[macro_export]
macro_rules! errno {
    ($e:ident) => {
        kernel::error::Error::from_errno(-($crate::ffi::$e as i32))
    };
}

/// Socket types (uapi numbering).
pub(crate) const SOCK_STREAM_U32: u32 = 1;
/// Datagram sockets.
pub(crate) const SOCK_DGRAM_U32: u32 = 2;
/// SEQPACKET sockets.
pub(crate) const SOCK_SEQPACKET_U32: u32 = 5;
/// `sk_type` of a SEQPACKET socket.
pub(crate) const SOCK_SEQPACKET: u16 = 5;
/// ioctl numbers (uapi).
pub(crate) const SIOCINQ: u32 = 0x541B;
/// Unsent bytes.
pub(crate) const SIOCOUTQ: u32 = 0x5411;
/// `_IO(7, 0xb9)` on /dev/vsock.
pub(crate) const IOCTL_VM_SOCKETS_GET_LOCAL_CID: u32 = 0x7b9;

/// `sock_flags` we use: set when the connection is over (in-tree meaning: recv returns 0, not ENOTCONN).
pub(crate) const SOCK_DONE: u32 = ffi::sock_flags_SOCK_DONE;
/// SO_LINGER set.
pub(crate) const SOCK_LINGER: u32 = ffi::sock_flags_SOCK_LINGER;
/// `SOCK_DEAD`: the socket was orphaned (its file is closed).
pub(crate) const SOCK_DEAD: u32 = ffi::sock_flags_SOCK_DEAD;
/// SO_ZEROCOPY set.
pub(crate) const SOCK_ZEROCOPY: u32 = ffi::sock_flags_SOCK_ZEROCOPY;

/// A `struct sock` we may use: callers hold a reference or the socket's owner.
///
/// # Invariants
/// Points to a live `struct sock` of family AF_VSOCK allocated with our `proto`.
#[derive(Clone, Copy)]
pub(crate) struct Sk(NonNull<ffi::sock>);

// SAFETY: `struct sock` is designed for concurrent use; every mutable access below goes
// through the kernel's own synchronisation or the fields' documented rules.
unsafe impl Send for Sk {}
// SAFETY: see `Send`.
unsafe impl Sync for Sk {}

impl Sk {
    /// Wraps a raw socket pointer.
    ///
    /// # Safety
    /// `p` is a live vsock `struct sock` and stays live while the `Sk` is used.
    pub(crate) unsafe fn from_raw(p: *mut ffi::sock) -> Sk {
        // SAFETY: the caller guarantees non-null.
        Sk(unsafe { NonNull::new_unchecked(p) })
    }

    /// The raw pointer.
    pub(crate) fn as_ptr(self) -> *mut ffi::sock {
        self.0.as_ptr()
    }

    /// Takes a reference (`sock_hold`).
    pub(crate) fn hold(self) -> SkRef {
        // SAFETY: the socket is live by the invariant.
        unsafe { ffi::rvsock_sock_hold(self.as_ptr()) };
        SkRef(self)
    }

    /// Socket type (SOCK_STREAM / SOCK_SEQPACKET).
    pub(crate) fn ty(self) -> u16 {
        // SAFETY: `sk_type` is set at creation and never changes.
        unsafe { (*self.as_ptr()).sk_type }
    }

    /// Current `sk_state`.
    pub(crate) fn state(self) -> u8 {
        // SAFETY: a byte read of a live socket; writers update it under our state lock.
        unsafe { core::ptr::read_volatile(&(*self.as_ptr()).__sk_common.skc_state) }
    }

    /// Sets `sk_state` (caller holds the socket's state lock).
    pub(crate) fn set_state(self, s: u8) {
        // SAFETY: a byte write of a live socket; callers serialise through the state lock.
        unsafe { core::ptr::write_volatile(&mut (*self.as_ptr()).__sk_common.skc_state, s) }
    }

    /// Local shutdown bits.
    pub(crate) fn shutdown(self) -> u32 {
        // SAFETY: a byte read of a live socket.
        unsafe { core::ptr::read_volatile(&(*self.as_ptr()).sk_shutdown) as u32 }
    }

    /// Sets local shutdown bits (caller holds the state lock).
    pub(crate) fn set_shutdown(self, bits: u32) {
        // SAFETY: a byte write of a live socket, serialised by the state lock.
        unsafe { core::ptr::write_volatile(&mut (*self.as_ptr()).sk_shutdown, bits as u8) }
    }

    /// Pending socket error (positive errno) or 0.
    pub(crate) fn err(self) -> i32 {
        // SAFETY: an int read of a live socket.
        unsafe { core::ptr::read_volatile(&(*self.as_ptr()).sk_err) }
    }

    /// Sets the socket error (positive errno) and reports it to waiters.
    pub(crate) fn set_err(self, e: i32) {
        // SAFETY: an int write of a live socket; `sk_error_report` is the kernel's notifier.
        unsafe {
            core::ptr::write_volatile(&mut (*self.as_ptr()).sk_err, e);
        }
    }


    /// Calls the socket's `sk_error_report`.
    pub(crate) fn error_report(self) {
        // SAFETY: the socket is live; `sk_error_report` handles its own locking.
        unsafe { ffi::sk_error_report(self.as_ptr()) };
    }

    /// Whether the error queue (MSG_ZEROCOPY completions) is empty.
    pub(crate) fn errqueue_empty(self) -> bool {
        // SAFETY: lockless emptiness test of a live socket's queue.
        unsafe { ffi::rvsock_errqueue_empty(self.as_ptr()) }
    }

    /// Frees every queued MSG_ZEROCOPY completion (nobody can read them any more).
    pub(crate) fn purge_errqueue(self) {
        // SAFETY: live socket; `skb_queue_purge` takes the queue's own lock.
        unsafe { ffi::rvsock_errqueue_purge(self.as_ptr()) };
    }

    /// Tests a `sock_flags` bit.
    pub(crate) fn flag(self, f: u32) -> bool {
        // SAFETY: atomic bit test on a live socket.
        unsafe { ffi::rvsock_sock_flag(self.as_ptr(), f) }
    }

    /// Sets a `sock_flags` bit.
    pub(crate) fn set_flag(self, f: u32) {
        // SAFETY: atomic bit set on a live socket.
        unsafe { ffi::rvsock_sock_set_flag(self.as_ptr(), f) }
    }

    /// `sk_lingertime` in jiffies.
    pub(crate) fn lingertime(self) -> c_long {
        // SAFETY: read of a live socket's field set by sock_setsockopt.
        unsafe { (*self.as_ptr()).sk_lingertime as c_long }
    }

    /// Sets `sk_rcvlowat` (called with the socket lock held, from `set_rcvlowat`).
    pub(crate) fn set_rcvlowat(self, v: i32) {
        // SAFETY: plain field write of a live socket; sock_setsockopt holds lock_sock.
        unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*self.as_ptr()).sk_rcvlowat), v) };
    }

    /// Backlog limit set by listen().
    pub(crate) fn set_max_ack_backlog(self, n: u32) {
        // SAFETY: plain field write of a live socket under lock_sock.
        unsafe { (*self.as_ptr()).sk_max_ack_backlog = n };
    }

    /// Whether the accept backlog is full (`sk_acceptq_is_full`).
    pub(crate) fn acceptq_is_full(self) -> bool {
        // SAFETY: live socket.
        unsafe { ffi::rvsock_sk_acceptq_is_full(self.as_ptr()) }
    }

    /// One more connection waits in the accept queue.
    pub(crate) fn acceptq_added(self) {
        // SAFETY: live socket.
        unsafe { ffi::rvsock_sk_acceptq_added(self.as_ptr()) }
    }

    /// One connection left the accept queue.
    pub(crate) fn acceptq_removed(self) {
        // SAFETY: live socket.
        unsafe { ffi::rvsock_sk_acceptq_removed(self.as_ptr()) }
    }

    /// Wakes readers (`sk_data_ready`).
    pub(crate) fn data_ready(self) {
        // SAFETY: the callback is set by sock_init_data and valid for a live socket.
        unsafe {
            if let Some(f) = (*self.as_ptr()).sk_data_ready {
                f(self.as_ptr())
            }
        }
    }

    /// Wakes writers (`sk_write_space`).
    pub(crate) fn write_space(self) {
        // SAFETY: as `data_ready`.
        unsafe {
            if let Some(f) = (*self.as_ptr()).sk_write_space {
                f(self.as_ptr())
            }
        }
    }

    /// Wakes everybody waiting on a state change (`sk_state_change`).
    pub(crate) fn state_change(self) {
        // SAFETY: as `data_ready`.
        unsafe {
            if let Some(f) = (*self.as_ptr()).sk_state_change {
                f(self.as_ptr())
            }
        }
    }

    /// Takes the socket lock (`lock_sock`): serialises the socket's system calls.
    pub(crate) fn lock(self) -> SockGuard {
        // SAFETY: live socket; released by the guard.
        unsafe { ffi::rvsock_lock_sock(self.as_ptr()) };
        SockGuard(self)
    }

    /// Receive timeout (or 0 when non-blocking).
    pub(crate) fn rcvtimeo(self, nonblock: bool) -> c_long {
        // SAFETY: live socket.
        unsafe { ffi::rvsock_sock_rcvtimeo(self.as_ptr(), nonblock) }
    }

    /// Send timeout (or 0 when non-blocking).
    pub(crate) fn sndtimeo(self, nonblock: bool) -> c_long {
        // SAFETY: live socket.
        unsafe { ffi::rvsock_sock_sndtimeo(self.as_ptr(), nonblock) }
    }

    /// `sock_rcvlowat`.
    pub(crate) fn rcvlowat(self, waitall: bool, len: i32) -> i32 {
        // SAFETY: live socket.
        unsafe { ffi::rvsock_sock_rcvlowat(self.as_ptr(), waitall as c_int, len) }
    }

    /// Marks the socket orphaned (no `struct socket` any more) and dead.
    pub(crate) fn orphan(self) {
        // SAFETY: live socket, called once from release with lock_sock held.
        unsafe { ffi::rvsock_sock_orphan(self.as_ptr()) }
    }

    /// Attaches the socket to a `struct socket` (accept).
    pub(crate) fn graft(self, parent: *mut ffi::socket) {
        // SAFETY: `parent` is the new socket handed to accept; `self` is live.
        unsafe { ffi::rvsock_sock_graft(self.as_ptr(), parent) }
    }

    /// The wait queue of the socket.
    fn wq(self) -> *mut ffi::wait_queue_head {
        // SAFETY: live socket; sk_sleep is valid while the socket is.
        unsafe { ffi::rvsock_sk_sleep(self.as_ptr()) }
    }

    /// Sleeps (socket lock released meanwhile) until woken, `timeo` jiffies pass or a signal
    /// arrives. Returns the remaining timeout. The caller re-checks its condition after; the
    /// wait entry is queued before `cond` is evaluated so no wake-up is lost.
    pub(crate) fn wait(self, guard: &SockGuard, timeo: c_long, cond: impl Fn() -> bool) -> c_long {
        let _ = guard;
        let mut w = core::mem::MaybeUninit::<ffi::wait_queue_entry>::zeroed();
        let wp = w.as_mut_ptr();
        // SAFETY: `wp` is a zeroed wait entry on our stack, initialised by init_wait_entry and
        // removed by finish_wait before it goes out of scope. `wq()` is the socket's queue.
        unsafe {
            ffi::init_wait_entry(wp, 0);
            ffi::prepare_to_wait(self.wq(), wp, ffi::TASK_INTERRUPTIBLE as c_int);
        }
        let mut left = timeo;
        if !cond() && !signal_pending() {
            // SAFETY: we hold lock_sock (the guard); it is dropped across the sleep as
            // in-tree does, and retaken before returning.
            unsafe {
                ffi::release_sock(self.as_ptr());
                left = ffi::schedule_timeout(timeo);
                ffi::rvsock_lock_sock(self.as_ptr());
            }
        }
        // SAFETY: pairs with prepare_to_wait above.
        unsafe { ffi::finish_wait(self.wq(), wp) };
        left
    }

}

/// A counted reference to a socket (`sock_hold`/`sock_put`).
pub(crate) struct SkRef(Sk);

impl SkRef {
    /// The socket.
    pub(crate) fn sk(&self) -> Sk {
        self.0
    }

    /// Gives the reference away as a raw pointer (see `from_raw`).
    pub(crate) fn into_raw(self) -> *mut ffi::sock {
        let p = self.0.as_ptr();
        core::mem::forget(self);
        p
    }

    /// Takes back a reference given away with `into_raw`.
    ///
    /// # Safety
    /// `p` came from `into_raw` and is not used again by the caller.
    pub(crate) unsafe fn from_raw(p: *mut ffi::sock) -> SkRef {
        // SAFETY: per the contract, `p` is a live socket whose reference we now own.
        SkRef(unsafe { Sk::from_raw(p) })
    }
}

impl Clone for SkRef {
    fn clone(&self) -> Self {
        self.0.hold()
    }
}

impl Drop for SkRef {
    fn drop(&mut self) {
        // SAFETY: we own one reference.
        unsafe { ffi::rvsock_sock_put(self.0.as_ptr()) };
    }
}

/// Holds `lock_sock`; dropping releases it.
pub(crate) struct SockGuard(Sk);

impl SockGuard {
    /// Runs `f` with the socket lock released (retaken before returning), as a wait does.
    pub(crate) fn unlocked<R>(&self, f: impl FnOnce() -> R) -> R {
        // SAFETY: the lock this guard holds (`Sk::lock`), released and retaken here, so it is
        // held again when the guard drops.
        unsafe { ffi::release_sock(self.0.as_ptr()) };
        let r = f();
        // SAFETY: the socket is alive (the caller's reference, as for the guard).
        unsafe { ffi::rvsock_lock_sock(self.0.as_ptr()) };
        r
    }
}

impl Drop for SockGuard {
    fn drop(&mut self) {
        // SAFETY: taken in `Sk::lock`.
        unsafe { ffi::release_sock(self.0.as_ptr()) };
    }
}

/// Whether the current task has a signal pending.
pub(crate) fn signal_pending() -> bool {
    // SAFETY: reads `current`'s flags.
    unsafe { ffi::rvsock_signal_pending() }
}

/// Whether the current task has a fatal signal pending (it is being killed).
pub(crate) fn fatal_signal_pending() -> bool {
    // SAFETY: reads `current`'s pending signals.
    unsafe { ffi::rvsock_fatal_signal_pending() }
}

/// Sleeps `ticks` jiffies whatever signals are pending (`schedule_timeout_uninterruptible`).
/// Process context, no spinlock held.
pub(crate) fn sleep_uninterruptible(ticks: c_long) {
    // SAFETY: a plain sleep of the current task; the callers run in process context with no
    // spinlock held.
    unsafe { ffi::schedule_timeout_uninterruptible(ticks) };
}

/// Whether the current task is exiting (`PF_EXITING`): a close from `do_exit` (the last
/// reference of a file dropped by an exiting process), which no signal can interrupt.
pub(crate) fn current_exiting() -> bool {
    // SAFETY: reads `current`'s flags.
    unsafe { ffi::rvsock_current_exiting() }
}

/// errno for an interrupted wait (`sock_intr_errno`): EINTR or ERESTARTSYS.
pub(crate) fn intr_errno(timeo: c_long) -> Error {
    // SAFETY: pure function of its argument.
    Error::from_errno(unsafe { ffi::rvsock_sock_intr_errno(timeo) })
}

/// Whether the caller may bind ports below 1024.
pub(crate) fn capable_net_bind() -> bool {
    // SAFETY: capability check of `current`.
    unsafe { ffi::rvsock_capable_net_bind() }
}

/// A `struct msghdr` of a sendmsg/recvmsg call.
pub(crate) struct Msg(NonNull<ffi::msghdr>);

impl Msg {
    /// Wraps the msghdr of the current call.
    ///
    /// # Safety
    /// `m` is the live msghdr passed to sendmsg/recvmsg, used only during that call.
    pub(crate) unsafe fn from_raw(m: *mut ffi::msghdr) -> Option<Msg> {
        NonNull::new(m).map(Msg)
    }

    /// The raw iterator (for page copies and pinning).
    pub(crate) fn iter_ptr(&self) -> *mut ffi::iov_iter {
        self.iter()
    }

    /// Offset into the current segment (non-zero after a partial send).
    pub(crate) fn iter_offset(&self) -> usize {
        // SAFETY: the iterator is live for the call.
        unsafe { ffi::rvsock_iov_iter_offset(self.iter()) }
    }

    /// Whether the buffer is user memory (`ITER_UBUF`/`ITER_IOVEC`, what page pinning takes),
    /// not a kernel caller's.
    pub(crate) fn user_backed(&self) -> bool {
        // SAFETY: the iterator is live for the call.
        unsafe { ffi::rvsock_iter_user_backed(self.iter()) }
    }

    /// Moves the iterator back by `n` bytes.
    /// Whether the data comes as a bio_vec array of kernel pages (a splice into the socket:
    /// sendfile(2), splice(2) from a pipe).
    pub(crate) fn is_bvec(&self) -> bool {
        // SAFETY: the iterator is live for the call.
        unsafe { ffi::rvsock_iter_is_bvec(self.iter()) }
    }

    pub(crate) fn revert(&mut self, n: usize) {
        // SAFETY: `n` bytes were consumed from this iterator by the caller.
        unsafe { ffi::iov_iter_revert(self.iter(), n) }
    }

    fn iter(&self) -> *mut ffi::iov_iter {
        // SAFETY: the msghdr is live for the call.
        unsafe { core::ptr::addr_of_mut!((*self.0.as_ptr()).msg_iter) }
    }

    /// The caller's own zerocopy completion (`msg_ubuf`: io_uring's SEND_ZC notification), or
    /// null for a plain sendmsg(2).
    pub(crate) fn ubuf(&self) -> *mut ffi::ubuf_info {
        // SAFETY: live msghdr.
        unsafe { (*self.0.as_ptr()).msg_ubuf }
    }

    /// Bytes left in the user buffer.
    pub(crate) fn left(&self) -> usize {
        // SAFETY: the iterator is live for the call.
        unsafe { ffi::rvsock_iov_iter_count(self.iter()) }
    }

    /// Copies from the user buffer into `dst` (a packet's uninitialised payload area);
    /// Err(EFAULT) on a short copy.
    pub(crate) fn copy_from_user(&mut self, dst: &mut [core::mem::MaybeUninit<u8>]) -> Result {
        // SAFETY: `dst` is valid for writes of its length; the iterator is live.
        let n = unsafe { ffi::rvsock_copy_from_iter(dst.as_mut_ptr().cast(), dst.len(), self.iter()) };
        if n == dst.len() { Ok(()) } else { Err(EFAULT) }
    }

    /// Copies `src` to the user buffer; Err(EFAULT) on a short copy.
    pub(crate) fn copy_to_user(&mut self, src: &[u8]) -> Result {
        // SAFETY: `src` is valid for reads of its length; the iterator is live.
        let n = unsafe { ffi::rvsock_copy_to_iter(src.as_ptr().cast(), src.len(), self.iter()) };
        if n == src.len() { Ok(()) } else { Err(EFAULT) }
    }

    /// `msg_namelen` (non-zero when the caller passed an address to sendmsg).
    pub(crate) fn namelen(&self) -> i32 {
        // SAFETY: live msghdr.
        unsafe { (*self.0.as_ptr()).msg_namelen }
    }


    /// `msg_flags` as passed to sendmsg.
    pub(crate) fn flags(&self) -> u32 {
        // SAFETY: live msghdr.
        unsafe { (*self.0.as_ptr()).msg_flags as u32 }
    }

    /// Adds bits to `msg_flags` (recvmsg results: MSG_TRUNC, MSG_EOR).
    pub(crate) fn add_flags(&mut self, f: u32) {
        // SAFETY: live msghdr.
        unsafe { (*self.0.as_ptr()).msg_flags |= f };
    }

    /// The raw msghdr (for sock_recv_errqueue).
    pub(crate) fn as_ptr(&self) -> *mut ffi::msghdr {
        self.0.as_ptr()
    }
}

/// Copies a plain value to user space.
pub(crate) fn put_user_bytes(dst: *mut u8, src: &[u8]) -> Result {
    // SAFETY: `_copy_to_user` checks the user range itself.
    let left = unsafe { ffi::_copy_to_user(dst.cast(), src.as_ptr().cast(), src.len() as _) };
    if left == 0 { Ok(()) } else { Err(EFAULT) }
}

/// Copies a plain value from user space.
pub(crate) fn get_user_bytes(dst: &mut [u8], src: *const u8) -> Result {
    // SAFETY: `_copy_from_user` checks the user range itself; `dst` is a valid kernel buffer.
    let left = unsafe { ffi::_copy_from_user(dst.as_mut_ptr().cast(), src.cast(), dst.len() as _) };
    if left == 0 { Ok(()) } else { Err(EFAULT) }
}

/// A delayed work item embedded in a socket; its function gets the socket back. `Opaque`:
/// the timer and the workqueue change it behind shared references.
#[repr(transparent)]
pub(crate) struct DelayedWork(Opaque<ffi::delayed_work>);

impl DelayedWork {
    /// Initialises the work item in place.
    ///
    /// # Safety
    /// `w` points to memory that stays valid (and unmoved) until the work is cancelled.
    pub(crate) unsafe fn init(w: *mut DelayedWork, f: unsafe extern "C" fn(*mut ffi::work_struct)) {
        // SAFETY: per the contract, `w` is valid; INIT_DELAYED_WORK initialises every field.
        unsafe { ffi::rvsock_init_delayed_work(ffi::opaque_raw(core::ptr::addr_of!((*w).0)), Some(f)) }
    }

    /// Queues the work after `delay` jiffies on the system workqueue; false if already queued.
    pub(crate) fn schedule(&self, delay: u64) -> bool {
        // SAFETY: the work item was initialised by `init`; the system workqueue is static.
        unsafe { ffi::rvsock_schedule_delayed_work(self.0.get(), delay as _) }
    }

    /// Cancels a pending (not running) work item; true if it was pending.
    pub(crate) fn cancel(&self) -> bool {
        // SAFETY: the work item was initialised by `init`.
        unsafe { ffi::cancel_delayed_work(self.0.get()) }
    }

    /// Cancels the work item and waits for a run in progress (which may requeue itself) to
    /// end (process context, may sleep).
    pub(crate) fn cancel_sync(&self) {
        // SAFETY: the work item was initialised by `init`.
        unsafe { ffi::cancel_delayed_work_sync(self.0.get()) };
    }

    /// Recovers the containing `DelayedWork` from the `work_struct` passed to the function.
    ///
    /// # Safety
    /// `w` is the `work_struct` of a `DelayedWork` initialised with `init`.
    pub(crate) unsafe fn from_work(w: *mut ffi::work_struct) -> *mut DelayedWork {
        // `work` is the first field of `delayed_work`, which is the only field of ours.
        w.cast()
    }
}

/// A work item embedded in a socket (no timer: 56 bytes smaller than a `DelayedWork`); its
/// function gets the socket back. `Opaque` as `DelayedWork`.
#[repr(transparent)]
pub(crate) struct Work(Opaque<ffi::work_struct>);

impl Work {
    /// Initialises the work item in place.
    ///
    /// # Safety
    /// `w` points to memory that stays valid (and unmoved) until the work has run or is
    /// cancelled.
    pub(crate) unsafe fn init(w: *mut Work, f: unsafe extern "C" fn(*mut ffi::work_struct)) {
        // SAFETY: per the contract, `w` is valid; INIT_WORK initialises every field.
        unsafe { ffi::rvsock_init_work(ffi::opaque_raw(core::ptr::addr_of!((*w).0)), Some(f)) }
    }

    /// Queues the work on the system workqueue; false if already queued.
    pub(crate) fn schedule(&self) -> bool {
        // SAFETY: the work item was initialised by `init`; the system workqueue is static.
        unsafe { ffi::rvsock_schedule_work(self.0.get()) }
    }

    /// Recovers the containing `Work` from the `work_struct` passed to the function.
    ///
    /// # Safety
    /// `w` is the `work_struct` of a `Work` initialised with `init`.
    pub(crate) unsafe fn from_work(w: *mut ffi::work_struct) -> *mut Work {
        // The `work_struct` is the only field of ours.
        w.cast()
    }
}

/// Converts milliseconds to jiffies.
pub(crate) fn msecs_to_jiffies(ms: u32) -> u64 {
    // SAFETY: pure function.
    unsafe { ffi::__msecs_to_jiffies(ms) as u64 }
}

