// SPDX-License-Identifier: GPL-2.0
//! Registration with the socket layer: `struct proto`, the AF_VSOCK `net_proto_family`, the
//! `proto_ops` table for STREAM and SEQPACKET, and `/dev/vsock`. Each C callback converts its
//! pointers once and calls the safe implementation in `sock.rs`.

use crate::ffi;
use crate::net::{self, Msg, Sk, SkRef};
use crate::sock::{self, Inherit, VSock};
use core::cell::UnsafeCell;
use kernel::ffi::{c_int, c_long, c_uint, c_ulong};
use kernel::prelude::*;

/// A C object the kernel mutates through pointers we hand it (proto, ops tables).
pub(crate) struct KStatic<T>(UnsafeCell<T>);

// SAFETY: the kernel serialises its own accesses to these objects (registration happens once,
// at init, before any concurrent use).
unsafe impl<T> Sync for KStatic<T> {}

impl<T> KStatic<T> {
    /// An object with the initial value `v`.
    pub(crate) const fn new(v: T) -> Self {
        KStatic(UnsafeCell::new(v))
    }

    /// An all-zero object, filled in before it is registered.
    ///
    /// # Safety
    /// All-zero bytes must be a valid `T` (a C struct of pointers, integers and optional
    /// callbacks).
    pub(crate) const unsafe fn zeroed() -> Self {
        // SAFETY: the caller guarantees that all-zero is a valid `T`.
        KStatic(UnsafeCell::new(unsafe { core::mem::MaybeUninit::zeroed().assume_init() }))
    }

    /// The raw pointer for registration calls.
    pub(crate) fn get(&self) -> *mut T {
        self.0.get()
    }
}

fn zeroed<T>() -> T {
    // SAFETY: only used for C structs of pointers and integers, for which all-zero is valid.
    unsafe { core::mem::zeroed() }
}

// SAFETY: all-zero is a valid `struct proto`; the fields we need are set in `register`.
static PROTO: KStatic<ffi::proto> = unsafe { KStatic::zeroed() };
// SAFETY: all-zero is a valid `proto_ops` (no callbacks); filled in `register`.
static OPS: KStatic<ffi::proto_ops> = unsafe { KStatic::zeroed() };
// SAFETY: all-zero is a valid `net_proto_family`; filled in `register`.
static FAMILY: KStatic<ffi::net_proto_family> = unsafe { KStatic::zeroed() };
// SAFETY: all-zero is a valid `file_operations`; filled in `register`.
static FOPS: KStatic<ffi::file_operations> = unsafe { KStatic::zeroed() };
// SAFETY: all-zero is a valid `miscdevice`; filled in `register`.
static MISC: KStatic<ffi::miscdevice> = unsafe { KStatic::zeroed() };

const SO_ZEROCOPY: c_int = 60;

/// What `register` set up; `Drop` undoes it in reverse order.
pub(crate) struct Registration {
    proto: bool,
    family: bool,
    misc: bool,
}

/// Registers proto, family and /dev/vsock.
pub(crate) fn register(owner: *mut ffi::module) -> Result<Registration> {
    let mut r = Registration { proto: false, family: false, misc: false };
    // SAFETY: the statics are only written here, before registration publishes them.
    unsafe {
        let p = &mut *PROTO.get();
        let name = b"AF_VSOCK\0";
        for (d, s) in p.name.iter_mut().zip(name.iter()) {
            *d = *s as _;
        }
        p.owner = owner;
        p.obj_size = core::mem::size_of::<VSock>() as c_uint;

        let o = &mut *OPS.get();
        o.family = ffi::PF_VSOCK as c_int;
        o.owner = owner;
        o.release = Some(op_release);
        o.bind = Some(op_bind);
        o.connect = Some(op_connect);
        o.socketpair = Some(ffi::sock_no_socketpair);
        o.accept = Some(op_accept);
        o.getname = Some(op_getname);
        o.poll = Some(op_poll);
        o.ioctl = Some(op_ioctl);
        o.listen = Some(op_listen);
        o.shutdown = Some(op_shutdown);
        o.setsockopt = Some(op_setsockopt);
        o.getsockopt = Some(op_getsockopt);
        o.sendmsg = Some(op_sendmsg);
        o.recvmsg = Some(op_recvmsg);
        // In-kernel consumers (read_sock.rs). splice(2) from a socket stays the socket layer's
        // copy_splice_read (no splice_read here): see docs/design.md "Kernel users".
        o.read_sock = Some(op_read_sock);
        o.mmap = Some(ffi::sock_no_mmap);
        o.set_rcvlowat = Some(op_set_rcvlowat);

        let f = &mut *FAMILY.get();
        f.family = ffi::PF_VSOCK as c_int;
        f.create = Some(op_create);
        f.owner = owner;

        let fo = &mut *FOPS.get();
        fo.owner = owner;
        fo.unlocked_ioctl = Some(dev_ioctl);
        fo.compat_ioctl = Some(dev_ioctl);
        fo.open = Some(ffi::nonseekable_open);

        let m = &mut *MISC.get();
        m.minor = ffi::MISC_DYNAMIC_MINOR as c_int;
        m.name = b"vsock\0".as_ptr().cast();
        m.fops = FOPS.get();
        m.mode = 0o666;
    }
    // SAFETY: PROTO is a fully set up static that outlives the registration.
    kernel::error::to_result(unsafe { ffi::proto_register(PROTO.get(), 1) })?;
    r.proto = true;
    // SAFETY: FAMILY is a fully set up static that outlives the registration.
    kernel::error::to_result(unsafe { ffi::sock_register(FAMILY.get()) })?;
    r.family = true;
    // SAFETY: MISC is a fully set up static that outlives the registration.
    kernel::error::to_result(unsafe { ffi::misc_register(MISC.get()) })?;
    r.misc = true;
    Ok(r)
}

impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: each call undoes a successful registration above, in reverse order.
        unsafe {
            if self.misc {
                ffi::misc_deregister(MISC.get());
            }
            if self.family {
                ffi::sock_unregister(ffi::PF_VSOCK as c_int);
            }
            if self.proto {
                ffi::proto_unregister(PROTO.get());
            }
        }
    }
}

unsafe extern "C" fn sk_destruct(sk: *mut ffi::sock) {
    // SAFETY: the kernel calls this once, for a socket of our proto, when its last reference
    // is gone.
    let s = unsafe { Sk::from_raw(sk) };
    // Completions queued after release (a packet freed late by a transport) die here.
    s.purge_errqueue();
    // SAFETY: as above.
    unsafe { VSock::destruct(s) };
}

/// Allocates and initialises a socket (`sock`: the `struct socket` for socket(2), null for a
/// child created by the receive path).
fn alloc_sock(net_: *mut ffi::net, sock: *mut ffi::socket, ty: u16, kern: c_int, parent: Option<&Inherit>) -> Result<SkRef> {
    // SAFETY: PROTO is registered; `net_` is a live namespace (from the caller's socket).
    let p = unsafe { ffi::sk_alloc(net_, ffi::PF_VSOCK as c_int, kernel::bindings::GFP_KERNEL, PROTO.get(), kern) };
    if p.is_null() {
        return Err(ENOMEM);
    }
    // SAFETY: `p` was just allocated for our proto; we own its only reference.
    let sk = unsafe { SkRef::from_raw(p) };
    // SAFETY: `sock` is null or the caller's fresh socket; `p` is fresh.
    unsafe {
        ffi::sock_init_data(sock, p);
        (*p).sk_type = ty;
        // Writers wait for credit and for transport memory (`sock::charge_tx`); the default
        // callback would only wake them while `sk_wmem_alloc` is under half of `sk_sndbuf`.
        (*p).sk_write_space = Some(ffi::rvsock_write_space);
        (*p).sk_destruct = Some(sk_destruct);
    }
    // SAFETY: the socket is fresh and not yet visible to anybody else. On failure the
    // destructor must not drop uninitialised fields: clear it first.
    if let Err(e) = unsafe { VSock::init(sk.sk(), parent) } {
        // SAFETY: as above.
        unsafe { (*p).sk_destruct = None };
        return Err(e);
    }
    Ok(sk)
}

/// Creates a child for a listener (receive path: process context, no spinlock held, so the
/// allocation may sleep, as in-tree; an atomic one failed under memory pressure).
pub(crate) fn new_child(lsk: Sk, parent: &Inherit) -> Result<SkRef> {
    // SAFETY: the listener is live; reading its namespace pointer.
    let net_ = unsafe { ffi::rvsock_sock_net(lsk.as_ptr()) };
    let child = alloc_sock(net_, core::ptr::null_mut(), lsk.ty(), 0, Some(parent))?;
    // The child takes the listener's security label (SELinux: its sid), as in-tree: otherwise
    // an LSM checks the accepted socket's calls against an unlabeled socket.
    // SAFETY: both sockets are live; the child is fresh and not yet visible to anybody.
    unsafe { ffi::rvsock_security_sk_clone(lsk.as_ptr(), child.sk().as_ptr()) };
    Ok(child)
}

unsafe extern "C" fn op_create(net_: *mut ffi::net, sock: *mut ffi::socket, protocol: c_int, kern: c_int) -> c_int {
    if sock.is_null() {
        return -(ffi::EINVAL as c_int);
    }
    if protocol != 0 && protocol != ffi::PF_VSOCK as c_int {
        return -(ffi::EPROTONOSUPPORT as c_int);
    }
    // SAFETY: the socket layer passes a live, fresh `struct socket`.
    let ty = unsafe { (*sock).type_ } as u32;
    match ty {
        net::SOCK_STREAM_U32 | net::SOCK_SEQPACKET_U32 => {}
        // No datagram transport exists in rvsock: in-tree answers ENODEV then.
        net::SOCK_DGRAM_U32 => return -(ffi::ENODEV as c_int),
        _ => return -(ffi::ESOCKTNOSUPPORT as c_int),
    }
    // SAFETY: as above.
    unsafe {
        (*sock).state = sock::ss::UNCONNECTED as _;
        (*sock).ops = OPS.get();
        // SO_ZEROCOPY at SOL_SOCKET level comes to our setsockopt. Every rvsock transport
        // takes MSG_ZEROCOPY (in-tree: all virtio transports' `msgzerocopy_allow`), so io_uring
        // may send with its own completion (SEND_ZC, `msg_ubuf`).
        (*sock).flags |= (1 << ffi::SOCK_CUSTOM_SOCKOPT_BIT) | (1 << ffi::SOCK_SUPPORT_ZC_BIT);
    }
    match alloc_sock(net_, sock, ty as u16, kern, None) {
        Ok(sk) => {
            sock::list_unbound(sk.sk());
            // The socket owns this reference now; released in op_release.
            let _ = sk.into_raw();
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// The `Sk` of a `struct socket` (None once released).
///
/// # Safety
/// `sock` is a live socket of our family.
unsafe fn sk_of(sock: *mut ffi::socket) -> Option<Sk> {
    // SAFETY: per the contract; `sk` is ours or null.
    let p = unsafe { (*sock).sk };
    // SAFETY: a non-null `sk` of our socket is a live vsock sock.
    (!p.is_null()).then(|| unsafe { Sk::from_raw(p) })
}

fn ret(r: Result) -> c_int {
    match r {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

unsafe extern "C" fn op_release(sock: *mut ffi::socket) -> c_int {
    // SAFETY: the socket layer passes our live socket.
    let Some(sk) = (unsafe { sk_of(sock) }) else { return 0 };
    sock::release(sk);
    // SAFETY: detach and drop the reference the `struct socket` held (from op_create or
    // accept's graft).
    unsafe {
        (*sock).sk = core::ptr::null_mut();
        drop(SkRef::from_raw(sk.as_ptr()));
    }
    0
}

unsafe extern "C" fn op_bind(sock: *mut ffi::socket, addr: *mut ffi::sockaddr_arg, len: c_int) -> c_int {
    // SAFETY: our live socket.
    let Some(sk) = (unsafe { sk_of(sock) }) else { return -(ffi::EINVAL as c_int) };
    if addr.is_null() || len < 0 {
        return -(ffi::EINVAL as c_int);
    }
    // SAFETY: the socket layer copied `len` bytes of address into kernel memory at `addr`.
    let raw = unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) };
    ret(sock::bind(sk, raw))
}

unsafe extern "C" fn op_connect(sock: *mut ffi::socket, addr: *mut ffi::sockaddr_arg, len: c_int, flags: c_int) -> c_int {
    // SAFETY: our live socket.
    let Some(sk) = (unsafe { sk_of(sock) }) else { return -(ffi::EINVAL as c_int) };
    if addr.is_null() || len < 0 {
        return -(ffi::EINVAL as c_int);
    }
    // SAFETY: the socket layer copied `len` bytes of address into kernel memory at `addr`.
    let raw = unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) };
    ret(sock::connect(sk, raw, flags & ffi::O_NONBLOCK as c_int != 0))
}

unsafe extern "C" fn op_accept(sock: *mut ffi::socket, newsock: *mut ffi::socket, arg: *mut ffi::proto_accept_arg) -> c_int {
    // SAFETY: our live socket.
    let Some(sk) = (unsafe { sk_of(sock) }) else { return -(ffi::EINVAL as c_int) };
    // SAFETY: `arg` is the socket layer's accept argument.
    let flags = unsafe { (*arg).flags };
    match sock::accept(sk, flags & ffi::O_NONBLOCK as c_int != 0) {
        Ok(child) => {
            let c = child.sk();
            let _g = c.lock();
            // SAFETY: `newsock` is the fresh socket for the accepted connection. Like the
            // sockets of op_create, it sends SOL_SOCKET SO_ZEROCOPY to our setsockopt.
            unsafe {
                (*newsock).state = sock::ss::CONNECTED as _;
                (*newsock).flags |= (1 << ffi::SOCK_CUSTOM_SOCKOPT_BIT) | (1 << ffi::SOCK_SUPPORT_ZC_BIT);
            }
            c.graft(newsock);
            // The new `struct socket` owns this reference from now on.
            let _ = child.into_raw();
            0
        }
        Err(e) => e.to_errno(),
    }
}

unsafe extern "C" fn op_read_sock(sk: *mut ffi::sock, desc: *mut ffi::read_descriptor_t, actor: ffi::sk_read_actor_t) -> c_int {
    if sk.is_null() {
        return -(ffi::EINVAL as c_int);
    }
    // SAFETY: read_sock is called on a live socket of our family (its proto_ops are ours).
    let sk = unsafe { Sk::from_raw(sk) };
    // SAFETY: the caller's descriptor and actor, live for the call.
    unsafe { crate::read_sock::read_sock(sk, desc, actor) }
}

unsafe extern "C" fn op_getname(sock: *mut ffi::socket, addr: *mut ffi::sockaddr, peer: c_int) -> c_int {
    // SAFETY: our live socket.
    let Some(sk) = (unsafe { sk_of(sock) }) else { return -(ffi::EINVAL as c_int) };
    match sock::getname(sk, peer != 0) {
        Ok(b) => {
            // SAFETY: the socket layer passes a kernel buffer of sockaddr_storage size.
            unsafe { core::ptr::copy_nonoverlapping(b.as_ptr(), addr as *mut u8, b.len()) };
            b.len() as c_int
        }
        Err(e) => e.to_errno(),
    }
}

unsafe extern "C" fn op_poll(file: *mut ffi::file, sock: *mut ffi::socket, wait: *mut ffi::poll_table_struct) -> ffi::__poll_t {
    // SAFETY: our live socket.
    let Some(sk) = (unsafe { sk_of(sock) }) else { return 0 };
    // SAFETY: registering the socket's wait queue with the poll table of this call.
    unsafe { ffi::rvsock_sock_poll_wait(file, sock, wait) };
    sock::poll_mask(sk) as ffi::__poll_t
}

unsafe extern "C" fn op_ioctl(sock: *mut ffi::socket, cmd: c_uint, arg: c_ulong) -> c_int {
    // SAFETY: our live socket.
    let Some(sk) = (unsafe { sk_of(sock) }) else { return -(ffi::EINVAL as c_int) };
    let inq = match cmd {
        net::SIOCINQ => true,
        net::SIOCOUTQ => false,
        _ => return -(ffi::ENOIOCTLCMD as c_int),
    };
    match sock::ioctl_queue(sk, inq) {
        Ok(v) => ret(net::put_user_bytes(arg as *mut u8, &v.to_ne_bytes())),
        Err(e) => e.to_errno(),
    }
}

unsafe extern "C" fn op_listen(sock: *mut ffi::socket, backlog: c_int) -> c_int {
    // SAFETY: our live socket.
    let Some(sk) = (unsafe { sk_of(sock) }) else { return -(ffi::EINVAL as c_int) };
    ret(sock::listen(sk, backlog))
}

unsafe extern "C" fn op_shutdown(sock: *mut ffi::socket, how: c_int) -> c_int {
    // SAFETY: our live socket.
    let Some(sk) = (unsafe { sk_of(sock) }) else { return -(ffi::EINVAL as c_int) };
    ret(sock::shutdown(sk, how))
}

unsafe extern "C" fn op_set_rcvlowat(sk: *mut ffi::sock, val: c_int) -> c_int {
    // SAFETY: the socket layer passes our live socket.
    let s = unsafe { Sk::from_raw(sk) };
    ret(sock::set_rcvlowat(s, val))
}

/// Copies a setsockopt value (`sockptr_t`: kernel or user memory).
fn copy_sockptr(dst: &mut [u8], p: &ffi::sockptr_t, len: c_uint) -> Result {
    if (len as usize) < dst.len() {
        return Err(EINVAL);
    }
    // SAFETY: reading the union member selected by `is_kernel`.
    let (is_kernel, ptr) = unsafe { (p.is_kernel(), p.__bindgen_anon_1.kernel) };
    if is_kernel {
        // SAFETY: a kernel sockptr points to at least `len >= dst.len()` readable bytes.
        unsafe { core::ptr::copy_nonoverlapping(ptr as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    } else {
        net::get_user_bytes(dst, ptr as *const u8)
    }
}

unsafe extern "C" fn op_setsockopt(sock: *mut ffi::socket, level: c_int, name: c_int, val: ffi::sockptr_t, len: c_uint) -> c_int {
    // SAFETY: our live socket.
    let Some(sk) = (unsafe { sk_of(sock) }) else { return -(ffi::EINVAL as c_int) };
    if level == ffi::SOL_SOCKET as c_int {
        if name != SO_ZEROCOPY {
            // SAFETY: forwarding the caller's arguments unchanged.
            return unsafe { ffi::sock_setsockopt(sock, level, name, val, len) };
        }
        let mut b = [0u8; 4];
        if let Err(e) = copy_sockptr(&mut b, &val, len) {
            return e.to_errno();
        }
        let v = i32::from_ne_bytes(b);
        if !(0..=1).contains(&v) {
            return -(ffi::EINVAL as c_int);
        }
        let _g = sk.lock();
        if v == 1 {
            sk.set_flag(net::SOCK_ZEROCOPY);
        } else {
            // SAFETY: clearing a flag bit of our live socket under lock_sock.
            unsafe { ffi::rvsock_sock_reset_flag(sk.as_ptr(), net::SOCK_ZEROCOPY) };
        }
        return 0;
    }
    if level != ffi::AF_VSOCK as c_int {
        return -(ffi::ENOPROTOOPT as c_int);
    }
    let name = name as u32;
    match name {
        ffi::SO_VM_SOCKETS_BUFFER_SIZE | ffi::SO_VM_SOCKETS_BUFFER_MAX_SIZE | ffi::SO_VM_SOCKETS_BUFFER_MIN_SIZE => {
            let mut b = [0u8; 8];
            if let Err(e) = copy_sockptr(&mut b, &val, len) {
                return e.to_errno();
            }
            sock::set_buffer(sk, name, u64::from_ne_bytes(b));
            0
        }
        ffi::SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW | ffi::SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD => {
            let mut tv: ffi::__kernel_sock_timeval = zeroed();
            let old = name == ffi::SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD;
            // SAFETY: `tv` is a valid destination; the helper validates `val`/`len`.
            let r = unsafe { ffi::sock_copy_user_timeval(&mut tv, val, len as c_int, old) };
            if r != 0 {
                return r;
            }
            let hz = net::msecs_to_jiffies(1000) as i64;
            // In-tree's range check has no lower bound on tv_usec and rounds it up as an
            // unsigned long: a negative one is accepted (a timeout of some 10^15 jiffies, or
            // none from -1 .. -(USEC_PER_SEC/HZ - 2), where the rounding wraps). The same here,
            // saturating where in-tree's long would overflow.
            if tv.tv_sec >= 0 && tv.tv_usec < 1_000_000 && tv.tv_sec < (c_long::MAX as i64 / hz - 1) {
                let per = (1_000_000 / hz) as u64;
                let usec = (tv.tv_usec as u64).wrapping_add(per - 1) / per;
                let mut j = (tv.tv_sec * hz).saturating_add(i64::try_from(usec).unwrap_or(i64::MAX));
                if j == 0 {
                    j = 2 * hz;
                }
                sock::set_connect_timeout(sk, j);
                0
            } else {
                -(ffi::ERANGE as c_int)
            }
        }
        _ => -(ffi::ENOPROTOOPT as c_int),
    }
}

unsafe extern "C" fn op_getsockopt(sock: *mut ffi::socket, level: c_int, name: c_int, optval: *mut kernel::ffi::c_char, optlen: *mut c_int) -> c_int {
    // SAFETY: our live socket.
    let Some(sk) = (unsafe { sk_of(sock) }) else { return -(ffi::EINVAL as c_int) };
    if level != ffi::AF_VSOCK as c_int {
        return -(ffi::ENOPROTOOPT as c_int);
    }
    let mut lb = [0u8; 4];
    if net::get_user_bytes(&mut lb, optlen as *const u8).is_err() {
        return -(ffi::EFAULT as c_int);
    }
    let len = i32::from_ne_bytes(lb);
    let mut v = [0u8; 16];
    let name = name as u32;
    let lv = match name {
        ffi::SO_VM_SOCKETS_BUFFER_SIZE | ffi::SO_VM_SOCKETS_BUFFER_MAX_SIZE | ffi::SO_VM_SOCKETS_BUFFER_MIN_SIZE => {
            v[..8].copy_from_slice(&sock::get_buffer(sk, name).to_ne_bytes());
            8
        }
        ffi::SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW | ffi::SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD => {
            let old = name == ffi::SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD;
            // SAFETY: `v` has room for the largest timeval layout (16 bytes).
            unsafe { ffi::sock_get_timeout(sock::connect_timeout(sk) as c_long, v.as_mut_ptr().cast(), old) }
        }
        _ => return -(ffi::ENOPROTOOPT as c_int),
    };
    if len < lv {
        return -(ffi::EINVAL as c_int);
    }
    let n = len.min(lv) as usize;
    if net::put_user_bytes(optval as *mut u8, &v[..n]).is_err() || net::put_user_bytes(optlen as *mut u8, &(n as i32).to_ne_bytes()).is_err() {
        return -(ffi::EFAULT as c_int);
    }
    0
}

unsafe extern "C" fn op_sendmsg(sock: *mut ffi::socket, m: *mut ffi::msghdr, len: usize) -> c_int {
    // SAFETY: our live socket.
    let Some(sk) = (unsafe { sk_of(sock) }) else { return -(ffi::EINVAL as c_int) };
    // SAFETY: the msghdr of the current call.
    let Some(mut msg) = (unsafe { Msg::from_raw(m) }) else { return -(ffi::EINVAL as c_int) };
    match sock::sendmsg(sk, &mut msg, len) {
        Ok(n) => n.min(i32::MAX as usize) as c_int,
        Err(e) => e.to_errno(),
    }
}

unsafe extern "C" fn op_recvmsg(sock: *mut ffi::socket, m: *mut ffi::msghdr, len: usize, flags: c_int) -> c_int {
    // SAFETY: our live socket.
    let Some(sk) = (unsafe { sk_of(sock) }) else { return -(ffi::EINVAL as c_int) };
    // SAFETY: the msghdr of the current call.
    let Some(mut msg) = (unsafe { Msg::from_raw(m) }) else { return -(ffi::EINVAL as c_int) };
    match sock::recvmsg(sk, &mut msg, len, flags as u32) {
        Ok(n) => n.min(i32::MAX as usize) as c_int,
        Err(e) => e.to_errno(),
    }
}

unsafe extern "C" fn dev_ioctl(_f: *mut ffi::file, cmd: c_uint, arg: c_ulong) -> c_long {
    if cmd != net::IOCTL_VM_SOCKETS_GET_LOCAL_CID {
        // In-tree: ENOIOCTLCMD, which the VFS turns into ENOTTY (isatty(3) asks).
        return -(ffi::ENOTTY as c_long);
    }
    let cid = crate::transport::local_cid();
    match net::put_user_bytes(arg as *mut u8, &cid.to_ne_bytes()) {
        Ok(()) => 0,
        Err(e) => e.to_errno() as c_long,
    }
}
