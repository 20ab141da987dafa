// SPDX-License-Identifier: GPL-2.0
//! vsock_ktest.ko (test only, never installed): an in-kernel user of AF_VSOCK, as SUNRPC or 9p
//! would be one. Kernel sockets throughout (create, bind, listen, accept, connect, sendmsg,
//! recvmsg, shutdown, release) and RFC 5531 record marking (a 4-byte big-endian header per
//! fragment: bit 31 "last fragment of the record", bits 0-30 its length), as SUNRPC frames
//! RPC over stream sockets.
//!
//! - `mode=server port=P`: listens on P; each accepted connection is consumed by `read_sock`
//!   from its data-ready callback (the parser runs in the read actor, atomic context); a
//!   complete record is echoed back as one fragment by a work item, which then reads on. Runs
//!   until the module is unloaded; unloading with connections open shuts them down cleanly.
//! - `mode=client cid=C port=P records=N seed=S [hold=1]`: at load, sends N records of random sizes
//!   (1 B to `max_size`, log-uniform) in 1-4 random fragments each, reads each echo with
//!   recvmsg and compares its hash; the load fails (EIO, the reason in the kernel log) on any
//!   difference, else logs "client: N records ... every hash equal" and the module stays
//!   loaded, idle. With `hold=1` it keeps that connection open and opens a second one holding
//!   half a record, both until the module is unloaded (unloading with connections open).
//! - `mode=loopback port=P ...`: both in this kernel, the client connecting to CID 1.

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_int, c_uint, c_void};
use core::ptr::{addr_of_mut, null_mut, NonNull};
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use kernel::prelude::*;

#[allow(unreachable_pub)]
#[path = "../../../../include/ffi.rs"]
mod ffi;

module! {
    type: KTest,
    name: "vsock_ktest",
    description: "rvsock in-kernel consumer test (kernel sockets, read_sock, record marking)",
    license: "GPL",
}

// The module parameters (shim.c: `module_param` declarations), set before `init` runs and
// never written afterwards.
extern "C" {
    static ktest_mode: *const c_char;
    static ktest_port: c_uint;
    static ktest_cid: c_uint;
    static ktest_records: c_uint;
    static ktest_seed: c_uint;
    static ktest_max_size: c_uint;
    static ktest_hold: c_uint;
}

const SOCK_STREAM: c_int = 1;
const O_NONBLOCK: c_int = 0o4000;
const MSG_NOSIGNAL: u32 = 0x4000;
const MSG_WAITALL: c_int = 0x100;
const SHUT_RDWR: c_uint = 2;
const VMADDR_CID_ANY: u32 = u32::MAX;
const VMADDR_PORT_ANY: u32 = u32::MAX;
const LAST_FRAG: u32 = 1 << 31;
const MAX_CONNS: usize = 64;

type SkCallback = Option<unsafe extern "C" fn(*mut ffi::sock)>;

fn errno(e: c_int) -> Error {
    Error::from_errno(e)
}

/// A kernel socket; released on drop.
struct KSock(NonNull<ffi::socket>);

// SAFETY: a `struct socket` may be used and released from any task.
unsafe impl Send for KSock {}
// SAFETY: the socket calls used here serialise themselves (lock_sock).
unsafe impl Sync for KSock {}

/// A `struct sockaddr_vm` as bytes: family, reserved, port, cid, flags, zero.
fn vm_addr(cid: u32, port: u32) -> [u8; 16] {
    let mut sa = [0u8; 16];
    sa[0..2].copy_from_slice(&(ffi::AF_VSOCK as u16).to_ne_bytes());
    sa[4..8].copy_from_slice(&port.to_ne_bytes());
    sa[8..12].copy_from_slice(&cid.to_ne_bytes());
    sa
}

impl KSock {
    fn create() -> Result<KSock> {
        let mut s: *mut ffi::socket = null_mut();
        // SAFETY: `init_net` is the initial namespace (always live); `s` receives the socket.
        let r = unsafe { ffi::sock_create_kern(addr_of_mut!(ffi::init_net), ffi::AF_VSOCK as c_int, SOCK_STREAM, 0, &mut s) };
        if r < 0 {
            return Err(errno(r));
        }
        NonNull::new(s).map(KSock).ok_or(ENOMEM)
    }

    fn sk(&self) -> *mut ffi::sock {
        // SAFETY: a live socket of ours; `sk` is set from creation to release.
        unsafe { (*self.0.as_ptr()).sk }
    }

    fn bind(&self, cid: u32, port: u32) -> Result {
        let mut sa = vm_addr(cid, port);
        // SAFETY: live socket; `sa` is a valid sockaddr_vm for the call.
        let r = unsafe { ffi::kernel_bind(self.0.as_ptr(), sa.as_mut_ptr().cast(), sa.len() as c_int) };
        if r < 0 { Err(errno(r)) } else { Ok(()) }
    }

    fn connect(&self, cid: u32, port: u32) -> Result {
        let mut sa = vm_addr(cid, port);
        // SAFETY: live socket; `sa` is a valid sockaddr_vm for the call.
        let r = unsafe { ffi::kernel_connect(self.0.as_ptr(), sa.as_mut_ptr().cast(), sa.len() as c_int, 0) };
        if r < 0 { Err(errno(r)) } else { Ok(()) }
    }

    fn listen(&self, backlog: c_int) -> Result {
        // SAFETY: live socket.
        let r = unsafe { ffi::kernel_listen(self.0.as_ptr(), backlog) };
        if r < 0 { Err(errno(r)) } else { Ok(()) }
    }

    /// A pending connection, without waiting (EAGAIN when there is none).
    fn accept(&self) -> Result<KSock> {
        let mut n: *mut ffi::socket = null_mut();
        // SAFETY: live listening socket; `n` receives the new socket.
        let r = unsafe { ffi::kernel_accept(self.0.as_ptr(), &mut n, O_NONBLOCK) };
        if r < 0 {
            return Err(errno(r));
        }
        NonNull::new(n).map(KSock).ok_or(ENOMEM)
    }

    fn shutdown(&self) {
        // SAFETY: live socket.
        unsafe { ffi::kernel_sock_shutdown(self.0.as_ptr(), SHUT_RDWR as _) };
    }

    /// Receive and send timeouts (jiffies), as SO_RCVTIMEO/SO_SNDTIMEO would set them.
    fn set_timeouts(&self, j: i64) {
        let sk = self.sk();
        // SAFETY: live socket; plain fields read by the socket calls.
        unsafe {
            (*sk).sk_rcvtimeo = j as _;
            (*sk).sk_sndtimeo = j as _;
        }
    }

    /// Sends all of `parts` (one sendmsg; repeated for what a short send left).
    fn send_all(&self, parts: &[&[u8]]) -> Result {
        let mut skip: usize = 0;
        let total: usize = parts.iter().map(|p| p.len()).sum();
        while skip < total {
            let mut v: [ffi::kvec; 2] = [ffi::kvec { iov_base: null_mut(), iov_len: 0 }, ffi::kvec { iov_base: null_mut(), iov_len: 0 }];
            let mut nv = 0;
            let mut at = 0usize;
            for p in parts {
                let end = at + p.len();
                if end > skip && nv < v.len() {
                    let from = skip.saturating_sub(at);
                    if let (Some(slot), Some(rest)) = (v.get_mut(nv), p.get(from..)) {
                        *slot = ffi::kvec { iov_base: rest.as_ptr() as *mut c_void, iov_len: rest.len() };
                        nv += 1;
                    }
                }
                at = end;
            }
            // SAFETY: all-zero is a valid msghdr (no name, no control); flags set below.
            let mut m: ffi::msghdr = unsafe { core::mem::zeroed() };
            m.msg_flags = MSG_NOSIGNAL as _;
            // SAFETY: live socket; the kvecs point into `parts`, readable for the call.
            let r = unsafe { ffi::kernel_sendmsg(self.0.as_ptr(), &mut m, v.as_mut_ptr(), nv, total - skip) };
            if r <= 0 {
                return Err(if r < 0 { errno(r) } else { EPIPE });
            }
            skip += r as usize;
        }
        Ok(())
    }

    /// Fills `buf` completely (EPIPE at EOF), in MSG_WAITALL reads of at most 64 KiB (a
    /// waiting read of the whole receive buffer or more is ENOMEM, as in-tree).
    fn recv_exact(&self, buf: &mut [u8]) -> Result {
        let mut got = 0usize;
        while got < buf.len() {
            let end = buf.len().min(got + 65536);
            let Some(rest) = buf.get_mut(got..end) else { return Err(EINVAL) };
            let mut v = ffi::kvec { iov_base: rest.as_mut_ptr().cast(), iov_len: rest.len() };
            // SAFETY: all-zero is a valid msghdr.
            let mut m: ffi::msghdr = unsafe { core::mem::zeroed() };
            // SAFETY: live socket; the kvec points into `buf`, writable for the call.
            let r = unsafe { ffi::kernel_recvmsg(self.0.as_ptr(), &mut m, &mut v, 1, rest.len(), MSG_WAITALL) };
            if r < 0 {
                return Err(errno(r));
            }
            if r == 0 {
                return Err(EPIPE);
            }
            got += r as usize;
        }
        Ok(())
    }
}

impl Drop for KSock {
    fn drop(&mut self) {
        // SAFETY: our socket, released once; nothing uses it afterwards.
        unsafe { ffi::sock_release(self.0.as_ptr()) };
    }
}

/// A `kvmalloc`ed byte buffer.
struct KvBuf {
    p: NonNull<u8>,
    len: usize,
}

// SAFETY: plain memory, owned.
unsafe impl Send for KvBuf {}

impl KvBuf {
    fn new(len: usize) -> Result<KvBuf> {
        // SAFETY: allocates `len` zeroed bytes (kmalloc or vmalloc).
        let p = unsafe { ffi::rvsock_kvzalloc(len.max(1), kernel::bindings::GFP_KERNEL) };
        NonNull::new(p.cast()).map(|p| KvBuf { p, len }).ok_or(ENOMEM)
    }

    fn as_mut_ptr(&self) -> *mut u8 {
        self.p.as_ptr()
    }

    fn slice(&self, n: usize) -> &[u8] {
        // SAFETY: `len` initialised (zeroed) bytes; `n` is clamped to them.
        unsafe { core::slice::from_raw_parts(self.p.as_ptr(), n.min(self.len)) }
    }

    fn slice_mut(&mut self, n: usize) -> &mut [u8] {
        // SAFETY: as `slice`, borrowed mutably.
        unsafe { core::slice::from_raw_parts_mut(self.p.as_ptr(), n.min(self.len)) }
    }
}

impl Drop for KvBuf {
    fn drop(&mut self) {
        // SAFETY: from `rvsock_kvzalloc`, freed once.
        unsafe { ffi::kvfree(self.p.as_ptr().cast()) };
    }
}

/// FNV-1a (64 bit) over 8-byte words, then the tail bytes: a record's check value. A word
/// at a time because the client hashes every byte it sends and gets back, and in a nested
/// guest under TCG the byte-at-a-time FNV-1a was most of the run.
fn fnv(b: &[u8]) -> u64 {
    const PRIME: u64 = 0x100_0000_01b3;
    let words = b.chunks_exact(8);
    let tail = words.remainder();
    let h = words.fold(0xcbf2_9ce4_8422_2325u64, |h, w| {
        let mut x = [0u8; 8];
        x.copy_from_slice(w);
        (h ^ u64::from_ne_bytes(x)).wrapping_mul(PRIME)
    });
    tail.iter().fold(h, |h, &x| (h ^ u64::from(x)).wrapping_mul(PRIME))
}

/// xorshift64*: sizes, splits and contents.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

// ---------------------------------------------------------------------------------------
// Server

/// The record parser of one connection.
struct Parser {
    hdr: [u8; 4],
    hdr_got: usize,
    frag_left: usize,
    last: bool,
    /// Bytes of the current record in `buf`.
    len: usize,
}

/// One accepted connection.
struct Conn {
    sock: KSock,
    buf: KvBuf,
    /// Touched only by the read actor (rvsock runs a socket's read actor calls one at a time,
    /// under the socket's state lock: read_sock.rs) while `ready` is false, and by the echo
    /// work while it is true (the actor then touches nothing).
    p: UnsafeCell<Parser>,
    /// A whole record is in `buf`, waiting for the echo work.
    ready: AtomicBool,
    failed: AtomicBool,
    work: ffi::work_struct,
    orig_data_ready: SkCallback,
}

// SAFETY: shared between the data-ready callback, the actor and the echo work under the
// rules stated on the fields.
unsafe impl Sync for Conn {}
// SAFETY: as above; owned by the connection table.
unsafe impl Send for Conn {}

impl Conn {
    /// Gives up on the connection: the echo work shuts it down (the peer sees EOF at once);
    /// callable in atomic context.
    fn fail(&self) {
        if !self.failed.swap(true, Ordering::AcqRel) {
            // SAFETY: the work item lives in this live `Conn`; the system workqueue is static.
            unsafe { ffi::rvsock_virtio_queue_work(ffi::system_dfl_wq_ptr(), &self.work as *const _ as *mut _) };
        }
    }

    /// Reads what is queued (the actor stops at a complete record).
    fn pump(&self) {
        let sk = self.sock.sk();
        // SAFETY: all-zero is a valid read_descriptor_t; the actor finds us in `arg.data`.
        let mut d: ffi::read_descriptor_t = unsafe { core::mem::zeroed() };
        d.count = usize::MAX;
        d.arg.data = self as *const Conn as *mut c_void;
        // SAFETY: a live socket of ours; its proto_ops (rvsock's) are static.
        let ops = unsafe { (*self.sock.0.as_ptr()).ops };
        // SAFETY: `ops` is the live socket's proto_ops.
        let Some(rs) = (unsafe { (*ops).read_sock }) else {
            pr_err!("server: the socket has no read_sock\n");
            self.fail();
            return;
        };
        // SAFETY: `d` lives across the call; `actor` reads `arg.data` as this `Conn`, which
        // outlives the call (teardown detaches callbacks and cancels the work first).
        let r = unsafe { rs(sk, &mut d, Some(actor)) };
        if r < 0 && r != -(ffi::EAGAIN as c_int) {
            pr_err!("server: read_sock: {}\n", r);
            self.fail();
        }
    }
}

/// The read actor: parses record fragments into the connection's buffer.
unsafe extern "C" fn actor(desc: *mut ffi::read_descriptor_t, skb: *mut ffi::sk_buff, off: c_uint, len: usize) -> c_int {
    // SAFETY: `desc` is the descriptor of `pump`, whose `arg.data` is a live `Conn`.
    let c = unsafe { &*((*desc).arg.data as *const Conn) };
    if c.ready.load(Ordering::Acquire) {
        // SAFETY: the caller's live descriptor.
        unsafe { (*desc).count = 0 };
        return 0;
    }
    // SAFETY: `ready` is false: only this actor touches the parser (see `Conn::p`).
    let p = unsafe { &mut *c.p.get() };
    let cap = c.buf.len;
    let mut used = 0usize;
    while used < len {
        let at = (off as usize + used) as c_int;
        if p.hdr_got < 4 {
            let k = (4 - p.hdr_got).min(len - used);
            // SAFETY: `skb` holds `off + len` bytes; `hdr` has room for `k` at `hdr_got`.
            if unsafe { ffi::skb_copy_bits(skb, at, p.hdr.as_mut_ptr().add(p.hdr_got).cast(), k as c_int) } != 0 {
                return -(ffi::EFAULT as c_int);
            }
            p.hdr_got += k;
            used += k;
            if p.hdr_got < 4 {
                continue;
            }
            let v = u32::from_be_bytes(p.hdr);
            p.last = v & LAST_FRAG != 0;
            p.frag_left = (v & !LAST_FRAG) as usize;
            if p.len + p.frag_left > cap {
                pr_err!("server: record of more than {} bytes\n", cap);
                c.fail();
                // SAFETY: the caller's live descriptor.
                unsafe { (*desc).error = -(ffi::EMSGSIZE as c_int) };
                return -(ffi::EMSGSIZE as c_int);
            }
        } else {
            let k = p.frag_left.min(len - used);
            // SAFETY: `buf` has `cap >= len + frag_left` bytes; the skb holds the range.
            if unsafe { ffi::skb_copy_bits(skb, at, c.buf.as_mut_ptr().add(p.len).cast(), k as c_int) } != 0 {
                return -(ffi::EFAULT as c_int);
            }
            p.len += k;
            p.frag_left -= k;
            used += k;
        }
        if p.hdr_got == 4 && p.frag_left == 0 {
            p.hdr_got = 0;
            if p.last {
                c.ready.store(true, Ordering::Release);
                // SAFETY: the work item lives in the live `Conn`; the system workqueue is static.
                unsafe { ffi::rvsock_virtio_queue_work(ffi::system_dfl_wq_ptr(), &c.work as *const _ as *mut _) };
                // SAFETY: the caller's live descriptor: stop this read.
                unsafe { (*desc).count = 0 };
                break;
            }
        }
    }
    used as c_int
}

/// The echo work: sends the complete record back as one fragment, then reads on.
unsafe extern "C" fn echo_work(w: *mut ffi::work_struct) {
    // SAFETY: `w` is the `work` field of a live `Conn` (cancelled before the Conn is freed).
    let c = unsafe { &*(w.cast::<u8>().sub(core::mem::offset_of!(Conn, work)) as *const Conn) };
    if c.failed.load(Ordering::Acquire) {
        c.sock.shutdown();
        return;
    }
    if !c.ready.load(Ordering::Acquire) {
        return;
    }
    // SAFETY: `ready` is true: the actor leaves the parser alone until we clear it.
    let p = unsafe { &mut *c.p.get() };
    let n = p.len;
    let hdr = (LAST_FRAG | n as u32).to_be_bytes();
    if c.sock.send_all(&[&hdr, c.buf.slice(n)]).is_err() {
        // The peer went away or the module is unloading: stop reading.
        return;
    }
    *p = Parser { hdr: [0; 4], hdr_got: 0, frag_left: 0, last: false, len: 0 };
    c.ready.store(false, Ordering::Release);
    // The data-ready callback stopped at the full buffer: continue with what is queued.
    c.pump();
}

/// The data-ready callback of a connection.
unsafe extern "C" fn conn_data_ready(sk: *mut ffi::sock) {
    // SAFETY: `sk` is a live socket; its callback lock guards `sk_user_data`.
    unsafe { ffi::rvsock_sk_callback_read_lock(sk) };
    // SAFETY: as above; set by `Server::add` to a live `Conn`, cleared before it is freed.
    let c = unsafe { (*sk).sk_user_data } as *const Conn;
    if !c.is_null() {
        // SAFETY: see above.
        unsafe { (*c).pump() };
    }
    // SAFETY: taken above.
    unsafe { ffi::rvsock_sk_callback_read_unlock(sk) };
}

/// The listening socket and the connections (a fixed table: this is a test module).
struct Server {
    listener: AtomicPtr<ffi::socket>,
    stopping: AtomicBool,
    orig_data_ready: UnsafeCell<SkCallback>,
    accept_work: UnsafeCell<ffi::work_struct>,
    conns: [AtomicPtr<Conn>; MAX_CONNS],
}

// SAFETY: `orig_data_ready` and `accept_work` are written in `start` before the listener is
// published to callbacks, and only read (or cancelled) afterwards.
unsafe impl Sync for Server {}

#[allow(clippy::declare_interior_mutable_const)]
const NO_CONN: AtomicPtr<Conn> = AtomicPtr::new(null_mut());

static SERVER: Server = Server {
    listener: AtomicPtr::new(null_mut()),
    stopping: AtomicBool::new(false),
    orig_data_ready: UnsafeCell::new(None),
    // SAFETY: all-zero is a valid (uninitialised, never queued) work_struct; `start` inits it.
    accept_work: UnsafeCell::new(unsafe { core::mem::zeroed() }),
    conns: [NO_CONN; MAX_CONNS],
};

/// The listener's data-ready callback: a connection is waiting.
unsafe extern "C" fn listen_data_ready(sk: *mut ffi::sock) {
    // SAFETY: a live socket; the callback lock orders us against `stop`.
    unsafe { ffi::rvsock_sk_callback_read_lock(sk) };
    if !SERVER.stopping.load(Ordering::Relaxed) {
        // SAFETY: initialised in `start`; the system workqueue is static.
        unsafe { ffi::rvsock_virtio_queue_work(ffi::system_dfl_wq_ptr(), SERVER.accept_work.get()) };
    }
    // SAFETY: taken above.
    unsafe { ffi::rvsock_sk_callback_read_unlock(sk) };
}

unsafe extern "C" fn accept_work(_w: *mut ffi::work_struct) {
    let l = SERVER.listener.load(Ordering::Acquire);
    if l.is_null() {
        return;
    }
    // Borrow the listener without owning it (`stop` releases it after cancelling us).
    let lsock = core::mem::ManuallyDrop::new(KSock(match NonNull::new(l) {
        Some(p) => p,
        None => return,
    }));
    while let Ok(s) = lsock.accept() {
        if let Err(e) = Server::add(s) {
            pr_err!("server: connection refused: {:?}\n", e);
        }
    }
}

impl Server {
    fn start(port: u32) -> Result {
        let s = KSock::create()?;
        s.bind(VMADDR_CID_ANY, port)?;
        s.listen(64)?;
        let sk = s.sk();
        // SAFETY: not yet published (no callback of ours runs before the listener is set up).
        unsafe {
            ffi::rvsock_init_work(SERVER.accept_work.get(), Some(accept_work));
            ffi::rvsock_sk_callback_write_lock(sk);
            *SERVER.orig_data_ready.get() = (*sk).sk_data_ready;
            (*sk).sk_data_ready = Some(listen_data_ready);
            ffi::rvsock_sk_callback_write_unlock(sk);
        }
        SERVER.listener.store(core::mem::ManuallyDrop::new(s).0.as_ptr(), Ordering::Release);
        // Connections that arrived before the callback was in place.
        // SAFETY: initialised above.
        unsafe { ffi::rvsock_virtio_queue_work(ffi::system_dfl_wq_ptr(), SERVER.accept_work.get()) };
        pr_info!("server: listening on port {}\n", port);
        Ok(())
    }

    /// Takes an accepted connection into the table and starts reading it.
    fn add(s: KSock) -> Result {
        // SAFETY: read once at init, never written afterwards.
        let cap = unsafe { ktest_max_size } as usize;
        let buf = KvBuf::new(cap)?;
        let c = KBox::new(
            Conn {
                sock: s,
                buf,
                p: UnsafeCell::new(Parser { hdr: [0; 4], hdr_got: 0, frag_left: 0, last: false, len: 0 }),
                ready: AtomicBool::new(false),
                failed: AtomicBool::new(false),
                // SAFETY: all-zero is a valid work_struct until initialised below.
                work: unsafe { core::mem::zeroed() },
                orig_data_ready: None,
            },
            GFP_KERNEL,
        )?;
        let c = KBox::into_raw(c);
        // SAFETY: `c` is ours and not yet shared: initialise the work in place (it does not
        // move again) and remember the socket's own callback.
        unsafe {
            ffi::rvsock_init_work(addr_of_mut!((*c).work), Some(echo_work));
            (*c).orig_data_ready = (*(*c).sock.sk()).sk_data_ready;
        }
        let Some(slot) = SERVER.conns.iter().find(|a| a.compare_exchange(null_mut(), c, Ordering::AcqRel, Ordering::Relaxed).is_ok())
        else {
            // SAFETY: `c` was never shared; freeing it releases the socket.
            drop(unsafe { KBox::from_raw(c) });
            return Err(EBUSY);
        };
        let _ = slot;
        // SAFETY: `c` is live until `stop` takes it out of the table.
        let cr = unsafe { &*c };
        let sk = cr.sock.sk();
        // SAFETY: a live socket; callbacks read `sk_user_data` under the same lock.
        unsafe {
            ffi::rvsock_sk_callback_write_lock(sk);
            (*sk).sk_user_data = c.cast();
            (*sk).sk_data_ready = Some(conn_data_ready);
            ffi::rvsock_sk_callback_write_unlock(sk);
        }
        // Payload that arrived before the callback was in place.
        cr.pump();
        Ok(())
    }

    /// Stops listening and closes every connection (module unload).
    fn stop() {
        let l = SERVER.listener.swap(null_mut(), Ordering::AcqRel);
        if let Some(l) = NonNull::new(l) {
            let lsock = KSock(l);
            let sk = lsock.sk();
            // SAFETY: a live socket; after the write section no callback queues the work.
            unsafe {
                ffi::rvsock_sk_callback_write_lock(sk);
                SERVER.stopping.store(true, Ordering::Relaxed);
                (*sk).sk_data_ready = *SERVER.orig_data_ready.get();
                ffi::rvsock_sk_callback_write_unlock(sk);
                ffi::cancel_work_sync(SERVER.accept_work.get());
            }
            drop(lsock);
        }
        let mut n = 0;
        for a in SERVER.conns.iter() {
            let c = a.swap(null_mut(), Ordering::AcqRel);
            if c.is_null() {
                continue;
            }
            n += 1;
            // SAFETY: taken out of the table: ours alone, besides callbacks and work, which
            // are detached and cancelled here before it is freed.
            unsafe {
                let sk = (*c).sock.sk();
                ffi::rvsock_sk_callback_write_lock(sk);
                (*sk).sk_user_data = null_mut();
                (*sk).sk_data_ready = (*c).orig_data_ready;
                ffi::rvsock_sk_callback_write_unlock(sk);
                // Wakes an echo blocked in sendmsg (EPIPE), then waits for the work.
                (*c).sock.shutdown();
                ffi::cancel_work_sync(addr_of_mut!((*c).work));
                if (*c).failed.load(Ordering::Relaxed) {
                    pr_err!("server: a connection failed (see above)\n");
                }
                drop(KBox::from_raw(c));
            }
        }
        pr_info!("server: stopped, {} connection(s) closed\n", n);
    }
}

// ---------------------------------------------------------------------------------------
// Client

/// Runs the client; with `hold`, returns its connection and a second one with half a record
/// sent, to stay open until the module is unloaded.
fn run_client(cid: u32, port: u32, records: u32, seed: u32, max: usize, hold: bool) -> Result<[Option<KSock>; 2]> {
    let s = KSock::create()?;
    // An explicit bind (any port), then connect: as a kernel RPC client does.
    s.bind(VMADDR_CID_ANY, VMADDR_PORT_ANY)?;
    s.set_timeouts(120 * 1000); // jiffies at HZ=1000 or fewer: at least 2 minutes
    s.connect(cid, port).inspect_err(|e| pr_err!("client: connect to {}:{}: {:?}\n", cid, port, e))?;
    let mut sbuf = KvBuf::new(max)?;
    let mut rbuf = KvBuf::new(max)?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(seed).wrapping_mul(0x1000_0000_01b3) | 1);
    let bits = usize::BITS - max.leading_zeros();
    let mut total: u64 = 0;
    for i in 0..records {
        // Log-uniform sizes: as many records under 1 KiB as between 512 KiB and 1 MiB.
        let e = rng.below(u64::from(bits) + 1) as u32;
        let n = ((1 + rng.below(1u64 << e)) as usize).min(max);
        let body = sbuf.slice_mut(n);
        for ch in body.chunks_mut(8) {
            let v = rng.next().to_ne_bytes();
            for (d, s) in ch.iter_mut().zip(v.iter()) {
                *d = *s;
            }
        }
        let h = fnv(sbuf.slice(n));
        // 1-4 fragments at random cut points.
        let nfrag = (1 + rng.below(4) as usize).min(n.max(1));
        let mut cuts = [0usize; 5];
        for c in cuts.iter_mut().take(nfrag).skip(1) {
            *c = rng.below(n as u64 + 1) as usize;
        }
        if let Some(c) = cuts.get_mut(nfrag) {
            *c = n;
        }
        // Order the (at most three) inner cuts.
        for a in 1..nfrag {
            for b in a + 1..nfrag {
                if let (Some(&x), Some(&y)) = (cuts.get(a), cuts.get(b)) {
                    if y < x {
                        cuts.swap(a, b);
                    }
                }
            }
        }
        for f in 0..nfrag {
            let (a, b) = (cuts.get(f).copied().unwrap_or(n), cuts.get(f + 1).copied().unwrap_or(n));
            let last = if f + 1 == nfrag { LAST_FRAG } else { 0 };
            let hdr = (last | (b - a) as u32).to_be_bytes();
            let part = sbuf.slice(b).get(a..).unwrap_or(&[]);
            s.send_all(&[&hdr, part]).inspect_err(|e| pr_err!("client: record {}: send: {:?}\n", i, e))?;
        }
        // The echo: fragments until the last one.
        let mut got = 0usize;
        loop {
            let mut hdr = [0u8; 4];
            s.recv_exact(&mut hdr).inspect_err(|e| pr_err!("client: record {}: receive: {:?}\n", i, e))?;
            let v = u32::from_be_bytes(hdr);
            let flen = (v & !LAST_FRAG) as usize;
            if got + flen > n {
                pr_err!("client: record {}: echo longer than the {} bytes sent\n", i, n);
                return Err(EIO);
            }
            let dst = rbuf.slice_mut(got + flen);
            if let Some(d) = dst.get_mut(got..) {
                s.recv_exact(d).inspect_err(|e| pr_err!("client: record {}: receive: {:?}\n", i, e))?;
            }
            got += flen;
            if v & LAST_FRAG != 0 {
                break;
            }
        }
        if got != n || fnv(rbuf.slice(n)) != h {
            pr_err!("client: record {} ({} bytes): echo of {} bytes differs (hash)\n", i, n, got);
            return Err(EIO);
        }
        total += n as u64;
    }
    pr_info!("client: {} records ({} bytes) echoed by {}:{}, every hash equal\n", records, total, cid, port);
    if !hold {
        s.shutdown();
        return Ok([None, None]);
    }
    let s2 = KSock::create()?;
    s2.set_timeouts(120 * 1000);
    s2.connect(cid, port)?;
    let half = (max / 2).max(1);
    let hdr = (LAST_FRAG | (half * 2) as u32).to_be_bytes();
    s2.send_all(&[&hdr, sbuf.slice(half)])?;
    pr_info!("client: holding 2 connections open (one with half a record sent)\n");
    Ok([Some(s), Some(s2)])
}

struct KTest {
    server: bool,
    held: [Option<KSock>; 2],
}

impl kernel::Module for KTest {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        // SAFETY: module parameters, set before init and never written afterwards; `mode`
        // is a NUL-terminated string (charp).
        let (mode, port, cid, records, seed, max, hold) = unsafe {
            (
                core::ffi::CStr::from_ptr(ktest_mode).to_bytes(),
                ktest_port,
                ktest_cid,
                ktest_records,
                ktest_seed,
                ktest_max_size as usize,
                ktest_hold != 0,
            )
        };
        match mode {
            b"server" => {
                Server::start(port)?;
                Ok(KTest { server: true, held: [None, None] })
            }
            b"client" => {
                let held = run_client(cid, port, records, seed, max.max(1), hold)?;
                Ok(KTest { server: false, held })
            }
            b"loopback" => {
                Server::start(port)?;
                match run_client(1, port, records, seed, max.max(1), hold) {
                    Ok(held) => Ok(KTest { server: true, held }),
                    Err(e) => {
                        Server::stop();
                        Err(e)
                    }
                }
            }
            _ => {
                pr_err!("mode must be server, client or loopback\n");
                Err(EINVAL)
            }
        }
    }
}

impl Drop for KTest {
    fn drop(&mut self) {
        // The server first: its connections (held ones included) are shut down while ours
        // are still open, then ours are released.
        if self.server {
            Server::stop();
        }
        for h in self.held.iter_mut() {
            drop(h.take());
        }
    }
}
