//! Thin wrappers around the libc calls the tests need.
//!
//! This is the only module that contains `unsafe`. Every wrapper returns
//! `io::Result` so callers can inspect the exact errno.

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use libc::{c_int, c_void, socklen_t};

/// Address family of vsock (uapi linux/socket.h).
pub const AF_VSOCK: c_int = 40;
/// Socket option level for the SO_VM_SOCKETS_* options (== AF_VSOCK).
pub const SOL_VSOCK_OPTS: c_int = AF_VSOCK;

// uapi linux/vm_sockets.h
pub const VMADDR_CID_ANY: u32 = u32::MAX;
pub const VMADDR_PORT_ANY: u32 = u32::MAX;
pub const SO_VM_SOCKETS_BUFFER_SIZE: c_int = 0;
pub const SO_VM_SOCKETS_BUFFER_MIN_SIZE: c_int = 1;
pub const SO_VM_SOCKETS_BUFFER_MAX_SIZE: c_int = 2;
pub const SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD: c_int = 6;
pub const SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW: c_int = 8;
/// `_IO(7, 0xb9)`, issued on /dev/vsock.
pub const IOCTL_VM_SOCKETS_GET_LOCAL_CID: u64 = 0x7b9;
/// SIOCINQ == FIONREAD, SIOCOUTQ == TIOCOUTQ.
pub const SIOCINQ: u64 = 0x541B;
pub const SIOCOUTQ: u64 = 0x5411;

/// `struct sockaddr_vm` from uapi linux/vm_sockets.h (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockaddrVm {
    pub svm_family: u16,
    pub svm_reserved1: u16,
    pub svm_port: u32,
    pub svm_cid: u32,
    pub svm_flags: u8,
    pub svm_zero: [u8; 3],
}

impl SockaddrVm {
    pub fn new(cid: u32, port: u32) -> Self {
        SockaddrVm { svm_family: AF_VSOCK as u16, svm_port: port, svm_cid: cid, ..Default::default() }
    }

    /// The native-endian wire image passed to the kernel.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..2].copy_from_slice(&self.svm_family.to_ne_bytes());
        b[2..4].copy_from_slice(&self.svm_reserved1.to_ne_bytes());
        b[4..8].copy_from_slice(&self.svm_port.to_ne_bytes());
        b[8..12].copy_from_slice(&self.svm_cid.to_ne_bytes());
        b[12] = self.svm_flags;
        b[13..16].copy_from_slice(&self.svm_zero);
        b
    }

    fn from_bytes(b: &[u8; 16]) -> Self {
        SockaddrVm {
            svm_family: u16::from_ne_bytes([b[0], b[1]]),
            svm_reserved1: u16::from_ne_bytes([b[2], b[3]]),
            svm_port: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
            svm_cid: u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
            svm_flags: b[12],
            svm_zero: [b[13], b[14], b[15]],
        }
    }
}

/// `struct timeval` / `struct __kernel_sock_timeval` image (both are two i64 on x86_64).
pub fn timeval_bytes(sec: i64, usec: i64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&sec.to_ne_bytes());
    b[8..].copy_from_slice(&usec.to_ne_bytes());
    b
}

pub fn timeval_from_bytes(b: &[u8]) -> Option<(i64, i64)> {
    let sec = i64::from_ne_bytes(b.get(..8)?.try_into().ok()?);
    let usec = i64::from_ne_bytes(b.get(8..16)?.try_into().ok()?);
    Some((sec, usec))
}

fn cvt(r: c_int) -> io::Result<c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cvt_size(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

fn raw(fd: &impl AsFd) -> c_int {
    fd.as_fd().as_raw_fd()
}

/// socket(2); `SOCK_CLOEXEC` is always added. `ty` may include `SOCK_NONBLOCK`.
pub fn socket(domain: c_int, ty: c_int, proto: c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket() takes no pointers; on success it returns a fresh fd we now own.
    let fd = cvt(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) })?;
    // SAFETY: `fd` is a valid, open descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// bind(2) with an arbitrary address image (lets tests pass malformed addresses).
pub fn bind_raw(fd: &impl AsFd, addr: &[u8]) -> io::Result<()> {
    // SAFETY: `addr` is valid for `addr.len()` bytes; the kernel only reads that many.
    cvt(unsafe { libc::bind(raw(fd), addr.as_ptr().cast(), addr.len() as socklen_t) }).map(drop)
}

pub fn bind_vm(fd: &impl AsFd, cid: u32, port: u32) -> io::Result<()> {
    bind_raw(fd, &SockaddrVm::new(cid, port).to_bytes())
}

/// connect(2) with an arbitrary address image.
pub fn connect_raw(fd: &impl AsFd, addr: &[u8]) -> io::Result<()> {
    // SAFETY: `addr` is valid for `addr.len()` bytes; the kernel only reads that many.
    cvt(unsafe { libc::connect(raw(fd), addr.as_ptr().cast(), addr.len() as socklen_t) }).map(drop)
}

pub fn connect_vm(fd: &impl AsFd, cid: u32, port: u32) -> io::Result<()> {
    connect_raw(fd, &SockaddrVm::new(cid, port).to_bytes())
}

pub fn listen(fd: &impl AsFd, backlog: c_int) -> io::Result<()> {
    // SAFETY: no pointers involved.
    cvt(unsafe { libc::listen(raw(fd), backlog) }).map(drop)
}

/// accept4(2) without peer address; the new fd is CLOEXEC (and NONBLOCK if asked).
pub fn accept(fd: &impl AsFd, nonblock: bool) -> io::Result<OwnedFd> {
    let flags = libc::SOCK_CLOEXEC | if nonblock { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: NULL addr/addrlen is allowed; on success the returned fd is ours.
    let fd = cvt(unsafe { libc::accept4(raw(fd), std::ptr::null_mut(), std::ptr::null_mut(), flags) })?;
    // SAFETY: `fd` is a valid, open descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn get_name(fd: &impl AsFd, peer: bool) -> io::Result<SockaddrVm> {
    let mut buf = [0u8; 128];
    let mut len = buf.len() as socklen_t;
    let p = buf.as_mut_ptr().cast::<libc::sockaddr>();
    // SAFETY: `buf` is writable for `len` bytes and `len` points to a valid socklen_t.
    let r = unsafe {
        if peer {
            libc::getpeername(raw(fd), p, &mut len)
        } else {
            libc::getsockname(raw(fd), p, &mut len)
        }
    };
    cvt(r)?;
    let img: [u8; 16] = buf[..16].try_into().expect("16-byte slice");
    Ok(SockaddrVm::from_bytes(&img))
}

pub fn local_addr(fd: &impl AsFd) -> io::Result<SockaddrVm> {
    get_name(fd, false)
}

pub fn peer_addr(fd: &impl AsFd) -> io::Result<SockaddrVm> {
    get_name(fd, true)
}

/// send(2); `MSG_NOSIGNAL` is always added so EPIPE is reported, not raised.
pub fn send(fd: &impl AsFd, buf: &[u8], flags: c_int) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
    cvt_size(unsafe { libc::send(raw(fd), buf.as_ptr().cast(), buf.len(), flags | libc::MSG_NOSIGNAL) })
}

/// sendto(2) with a vsock destination address.
pub fn send_to(fd: &impl AsFd, buf: &[u8], addr: SockaddrVm) -> io::Result<usize> {
    let a = addr.to_bytes();
    // SAFETY: `buf` and `a` are valid for reads of their lengths.
    cvt_size(unsafe {
        libc::sendto(
            raw(fd),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL,
            a.as_ptr().cast(),
            a.len() as socklen_t,
        )
    })
}

pub fn recv(fd: &impl AsFd, buf: &mut [u8], flags: c_int) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    cvt_size(unsafe { libc::recv(raw(fd), buf.as_mut_ptr().cast(), buf.len(), flags) })
}

pub fn shutdown(fd: &impl AsFd, how: c_int) -> io::Result<()> {
    // SAFETY: no pointers involved.
    cvt(unsafe { libc::shutdown(raw(fd), how) }).map(drop)
}

/// setsockopt(2) with a raw option image (optlen = `val.len()`).
pub fn setsockopt(fd: &impl AsFd, level: c_int, name: c_int, val: &[u8]) -> io::Result<()> {
    // SAFETY: `val` is valid for reads of `val.len()` bytes.
    cvt(unsafe { libc::setsockopt(raw(fd), level, name, val.as_ptr().cast::<c_void>(), val.len() as socklen_t) })
        .map(drop)
}

/// getsockopt(2) into `buf` (optlen = `buf.len()`); returns the length the kernel reported.
pub fn getsockopt(fd: &impl AsFd, level: c_int, name: c_int, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = buf.len() as socklen_t;
    // SAFETY: `buf` is writable for `len` bytes and `len` points to a valid socklen_t.
    cvt(unsafe { libc::getsockopt(raw(fd), level, name, buf.as_mut_ptr().cast::<c_void>(), &mut len) })?;
    Ok(len as usize)
}

pub fn getsockopt_u64(fd: &impl AsFd, level: c_int, name: c_int) -> io::Result<u64> {
    let mut b = [0u8; 8];
    getsockopt(fd, level, name, &mut b)?;
    Ok(u64::from_ne_bytes(b))
}

/// Pending socket error (SO_ERROR), which also clears it.
pub fn so_error(fd: &impl AsFd) -> io::Result<i32> {
    let mut b = [0u8; 4];
    getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, &mut b)?;
    Ok(i32::from_ne_bytes(b))
}

/// Bound every blocking send/recv/accept on `fd` by `t` (SO_RCVTIMEO + SO_SNDTIMEO).
pub fn set_io_timeout(fd: &impl AsFd, t: Duration) -> io::Result<()> {
    let tv = timeval_bytes(t.as_secs() as i64, t.subsec_micros() as i64);
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &tv)
}

pub fn set_nonblocking(fd: &impl AsFd, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL take an int argument only.
    let flags = cvt(unsafe { libc::fcntl(raw(fd), libc::F_GETFL) })?;
    let new = if on { flags | libc::O_NONBLOCK } else { flags & !libc::O_NONBLOCK };
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(raw(fd), libc::F_SETFL, new) }).map(drop)
}

/// ioctl(2) whose argument points to an int-sized out value.
pub fn ioctl_int(fd: &impl AsFd, req: u64) -> io::Result<i32> {
    // 64 bytes of room even though the requests used here write one int, so
    // that probing an unexpected request (e.g. TCGETS) cannot overflow.
    let mut v = [0 as c_int; 16];
    // SAFETY: `v` is valid and writable for 64 bytes and outlives the call.
    cvt(unsafe { libc::ioctl(raw(fd), req as _, v.as_mut_ptr()) })?;
    Ok(v[0])
}

/// poll(2), retried on EINTR. Returns the number of ready descriptors (0 = timeout).
pub fn poll(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<usize> {
    let ms = timeout.as_millis().min(i32::MAX as u128) as c_int;
    loop {
        // SAFETY: `fds` is a valid, writable array of `fds.len()` pollfd structs.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Poll a single descriptor; returns its revents (0 on timeout).
pub fn poll_one(fd: &impl AsFd, events: i16, timeout: Duration) -> io::Result<i16> {
    let mut p = [libc::pollfd { fd: raw(fd), events, revents: 0 }];
    poll(&mut p, timeout)?;
    Ok(p[0].revents)
}

/// Raise RLIMIT_NOFILE to at least `want` if possible; returns the resulting soft limit.
pub fn raise_nofile(want: u64) -> io::Result<u64> {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `rl` is a valid, writable rlimit struct.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) })?;
    if rl.rlim_cur >= want {
        return Ok(rl.rlim_cur);
    }
    let wanted = libc::rlimit { rlim_cur: want, rlim_max: rl.rlim_max.max(want) };
    // SAFETY: `wanted` is a valid rlimit struct; raising the hard limit needs
    // CAP_SYS_RESOURCE, so fall back to soft = hard below.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
        return Ok(want);
    }
    let capped = libc::rlimit { rlim_cur: rl.rlim_max, rlim_max: rl.rlim_max };
    // SAFETY: as above.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) })?;
    Ok(rl.rlim_max)
}

pub fn geteuid() -> u32 {
    // SAFETY: geteuid() cannot fail and takes no arguments.
    unsafe { libc::geteuid() }
}

/// Symbolic name of an errno value ("0" for success).
pub fn errno_name(e: i32) -> String {
    use libc::*;
    let n = match e {
        0 => "0",
        EPERM => "EPERM",
        ENOENT => "ENOENT",
        EINTR => "EINTR",
        EIO => "EIO",
        EBADF => "EBADF",
        EAGAIN => "EAGAIN",
        ENOMEM => "ENOMEM",
        EACCES => "EACCES",
        EFAULT => "EFAULT",
        EBUSY => "EBUSY",
        ENODEV => "ENODEV",
        EINVAL => "EINVAL",
        EMFILE => "EMFILE",
        ENOTTY => "ENOTTY",
        EPIPE => "EPIPE",
        EDOM => "EDOM",
        ERANGE => "ERANGE",
        ENOSYS => "ENOSYS",
        ENOTSOCK => "ENOTSOCK",
        EDESTADDRREQ => "EDESTADDRREQ",
        EPROTOTYPE => "EPROTOTYPE",
        ENOPROTOOPT => "ENOPROTOOPT",
        EPROTONOSUPPORT => "EPROTONOSUPPORT",
        ESOCKTNOSUPPORT => "ESOCKTNOSUPPORT",
        EOPNOTSUPP => "EOPNOTSUPP",
        EAFNOSUPPORT => "EAFNOSUPPORT",
        EADDRINUSE => "EADDRINUSE",
        EADDRNOTAVAIL => "EADDRNOTAVAIL",
        ENETUNREACH => "ENETUNREACH",
        ECONNABORTED => "ECONNABORTED",
        ECONNRESET => "ECONNRESET",
        ENOBUFS => "ENOBUFS",
        EISCONN => "EISCONN",
        ENOTCONN => "ENOTCONN",
        ESHUTDOWN => "ESHUTDOWN",
        ETIMEDOUT => "ETIMEDOUT",
        ECONNREFUSED => "ECONNREFUSED",
        EHOSTUNREACH => "EHOSTUNREACH",
        EALREADY => "EALREADY",
        EINPROGRESS => "EINPROGRESS",
        EPROTO => "EPROTO",
        _ => return format!("E#{e}"),
    };
    n.to_string()
}

/// The errno of a result (0 on success, -1 if it carries no OS error).
pub fn errno_of<T>(r: &io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// Format an io::Error as "ENAME (description)".
pub fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => format!("{} ({})", errno_name(n), io::Error::from_raw_os_error(n)),
        None => e.to_string(),
    }
}

const _: () = assert!(mem::size_of::<SockaddrVm>() == 16);

// ---------------------------------------------------------------------------------------
// vhost (the `vhost-hostile` fake guest): ioctls on /dev/vhost-vsock, eventfds, and the
// fake guest's memory, which the kernel's vhost worker reads and writes concurrently.

/// `_IOC(dir, 0xAF, nr, size)` of uapi linux/vhost.h (dir: 0 none, 1 write, 2 read).
pub const fn vhost_ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (0xAF << 8) | nr
}

/// Size field of an ioctl number.
pub const fn ioc_size(req: u64) -> usize {
    ((req >> 16) & 0x3fff) as usize
}

/// ioctl(2) without argument.
pub fn ioctl_none(fd: &impl AsFd, req: u64) -> io::Result<i32> {
    // SAFETY: the request takes no argument (callers pass `_IO` numbers only); a stray
    // third argument of 0 is never dereferenced.
    cvt(unsafe { libc::ioctl(raw(fd), req as _, 0usize) })
}

/// ioctl(2) whose argument points to `arg`, for fixed-size requests: refused (EINVAL)
/// unless `arg` holds at least the size encoded in `req`, the most the kernel accesses.
pub fn ioctl_buf(fd: &impl AsFd, req: u64, arg: &mut [u8]) -> io::Result<i32> {
    if arg.len() < ioc_size(req) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: `arg` is valid for reads and writes of at least `_IOC_SIZE(req)` bytes, which
    // bounds what the kernel copies in or out for a fixed-size request.
    cvt(unsafe { libc::ioctl(raw(fd), req as _, arg.as_mut_ptr()) })
}

/// `VHOST_SET_MEM_TABLE` with `regions` of (guest physical address, size, user address).
pub fn vhost_set_mem_table(fd: &impl AsFd, regions: &[(u64, u64, u64)]) -> io::Result<i32> {
    // struct vhost_memory { u32 nregions; u32 padding; struct vhost_memory_region[] }
    // struct vhost_memory_region { u64 guest_phys_addr, memory_size, userspace_addr, flags_padding }
    let mut b = vec![0u8; 8 + 32 * regions.len()];
    b[0..4].copy_from_slice(&(regions.len() as u32).to_ne_bytes());
    for (i, (gpa, size, ua)) in regions.iter().enumerate() {
        let o = 8 + 32 * i;
        b[o..o + 8].copy_from_slice(&gpa.to_ne_bytes());
        b[o + 8..o + 16].copy_from_slice(&size.to_ne_bytes());
        b[o + 16..o + 24].copy_from_slice(&ua.to_ne_bytes());
    }
    let req = vhost_ioc(1, 0x03, 8);
    // SAFETY: `b` holds the 8-byte header plus exactly `nregions` regions, which is all the
    // kernel reads for this request.
    cvt(unsafe { libc::ioctl(raw(fd), req as _, b.as_mut_ptr()) })
}

/// A non-blocking eventfd.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: no pointers; on success the returned fd is ours.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: `fd` is a valid, open descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds `v` to an eventfd's counter.
pub fn eventfd_write(fd: &impl AsFd, v: u64) -> io::Result<()> {
    let b = v.to_ne_bytes();
    // SAFETY: `b` is valid for reads of 8 bytes.
    cvt_size(unsafe { libc::write(raw(fd), b.as_ptr().cast(), 8) }).map(drop)
}

/// Reads (and resets) an eventfd's counter; 0 if it was zero.
pub fn eventfd_read(fd: &impl AsFd) -> io::Result<u64> {
    let mut b = [0u8; 8];
    // SAFETY: `b` is valid for writes of 8 bytes.
    match cvt_size(unsafe { libc::read(raw(fd), b.as_mut_ptr().cast(), 8) }) {
        Ok(_) => Ok(u64::from_ne_bytes(b)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}

/// An anonymous private mapping that plays the fake guest's RAM. The kernel (vhost worker)
/// reads and writes it concurrently, so every access is volatile or atomic and
/// bounds-checked; out-of-range accesses return `None` instead of touching memory.
pub struct GuestMem {
    ptr: *mut u8,
    len: usize,
}

impl GuestMem {
    pub fn new(len: usize) -> io::Result<GuestMem> {
        // SAFETY: anonymous mapping request without a fixed address; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(GuestMem { ptr: p.cast(), len })
    }

    /// User address of offset `off` (also used as the guest physical address).
    pub fn addr(&self, off: usize) -> u64 {
        self.ptr as u64 + off as u64
    }

    pub fn len(&self) -> usize {
        self.len
    }

    fn range_ok(&self, off: usize, n: usize) -> bool {
        off.checked_add(n).is_some_and(|e| e <= self.len)
    }

    pub fn write(&self, off: usize, data: &[u8]) -> Option<()> {
        if !self.range_ok(off, data.len()) {
            return None;
        }
        for (i, b) in data.iter().enumerate() {
            // SAFETY: `off + i < len`, inside our live mapping.
            unsafe { std::ptr::write_volatile(self.ptr.add(off + i), *b) };
        }
        Some(())
    }

    pub fn read(&self, off: usize, n: usize) -> Option<Vec<u8>> {
        if !self.range_ok(off, n) {
            return None;
        }
        // SAFETY: `off + i < len`, inside our live mapping.
        Some((0..n).map(|i| unsafe { std::ptr::read_volatile(self.ptr.add(off + i)) }).collect())
    }

    fn atomic16(&self, off: usize) -> Option<&std::sync::atomic::AtomicU16> {
        if !self.range_ok(off, 2) || off % 2 != 0 {
            return None;
        }
        // SAFETY: in range and 2-aligned (the mapping is page-aligned); the memory lives as
        // long as `self`; the kernel accesses it with atomic-sized stores as well.
        Some(unsafe { &*(self.ptr.add(off) as *const std::sync::atomic::AtomicU16) })
    }

    /// Acquire load of a ring index the kernel publishes.
    pub fn load16(&self, off: usize) -> Option<u16> {
        self.atomic16(off).map(|a| a.load(std::sync::atomic::Ordering::Acquire))
    }

    /// Release store of a ring index we publish.
    pub fn store16(&self, off: usize, v: u16) -> Option<()> {
        self.atomic16(off).map(|a| a.store(v, std::sync::atomic::Ordering::Release))
    }
}

impl Drop for GuestMem {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping we created; nothing uses it afterwards (the
        // vhost device using it is closed first by the owner of both).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

// ---------------------------------------------------------------------------------------
// `bench`, `regress`: the calling thread's CPU and scheduling policy.

/// A counter file's value (debugfs, sysfs); the error names the file.
pub fn read_counter(path: &str) -> Result<u64, String> {
    let s = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    s.trim().parse().map_err(|e| format!("{path}: {s:?}: {e}"))
}

/// One of the rvsock core's debugfs counters for a transport (`loopback`, `virtio`, `vhost`);
/// an error on the in-tree stack or without debugfs.
pub fn rvsock_counter(transport: &str, name: &str) -> Result<u64, String> {
    read_counter(&format!("/sys/kernel/debug/rvsock/{transport}/{name}"))
}

/// Binds the calling thread to CPU `cpu` (below `CPU_SETSIZE`); returns its previous CPU set,
/// for [`restore_affinity`].
pub fn pin_to_cpu(cpu: usize) -> io::Result<libc::cpu_set_t> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut old: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; `old` is a live cpu_set_t of the size passed.
    cvt(unsafe { libc::sched_getaffinity(0, mem::size_of::<libc::cpu_set_t>(), &mut old) })?;
    // SAFETY: as above.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: `cpu` is below CPU_SETSIZE (checked).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a live cpu_set_t of the size passed.
    cvt(unsafe { libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set) })?;
    Ok(old)
}

/// Gives the calling thread back the CPU set [`pin_to_cpu`] returned.
pub fn restore_affinity(old: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: pid 0 is the calling thread; `old` is a live cpu_set_t of the size passed.
    cvt(unsafe { libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), old) }).map(drop)
}

/// Puts the calling thread under SCHED_FIFO at `prio`, or back under SCHED_OTHER (`None`).
pub fn set_fifo(prio: Option<c_int>) -> io::Result<()> {
    let (policy, p) = match prio {
        Some(p) => (libc::SCHED_FIFO, libc::sched_param { sched_priority: p }),
        None => (libc::SCHED_OTHER, libc::sched_param { sched_priority: 0 }),
    };
    // SAFETY: pid 0 is the calling thread; `p` is a valid sched_param.
    cvt(unsafe { libc::sched_setscheduler(0, policy, &p) }).map(drop)
}

// ---------------------------------------------------------------------------------------
// `regress`: signals, per-thread capabilities.

/// Installs a handler for `sig` that does nothing, without `SA_RESTART`, so a blocking
/// system call the signal interrupts returns EINTR.
pub fn install_noop_handler(sig: c_int) -> io::Result<()> {
    extern "C" fn noop(_: c_int) {}
    // SAFETY: a zeroed sigaction is valid; the handler is an `extern "C" fn(c_int)` that
    // touches nothing (async-signal-safe); `old` may be NULL.
    unsafe {
        let mut sa: libc::sigaction = mem::zeroed();
        sa.sa_sigaction = noop as extern "C" fn(c_int) as usize;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        cvt(libc::sigaction(sig, &sa, std::ptr::null_mut())).map(drop)
    }
}

/// pthread_kill(3) on a thread of this process (from `JoinHandleExt::as_pthread_t`, the
/// thread still running: callers keep its handle and join it only afterwards).
pub fn pthread_kill(t: libc::pthread_t, sig: c_int) -> io::Result<()> {
    // SAFETY: `t` names a live thread of ours (caller contract); no pointers.
    let r = unsafe { libc::pthread_kill(t, sig) };
    if r != 0 {
        Err(io::Error::from_raw_os_error(r))
    } else {
        Ok(())
    }
}

/// Removes capability `cap` from the calling thread's effective set (capabilities are
/// per-thread in Linux; the raw capset system call changes only the caller).
pub fn drop_effective_cap(cap: u32) -> io::Result<()> {
    // struct __user_cap_header_struct { u32 version; int pid; } and two
    // struct __user_cap_data_struct { u32 effective, permitted, inheritable; } (v3).
    let mut hdr = [0x2008_0522u32, 0];
    let mut data = [0u32; 6];
    // SAFETY: `hdr` and `data` have the layout and size the v3 capget/capset expect.
    unsafe {
        if libc::syscall(libc::SYS_capget, hdr.as_mut_ptr(), data.as_mut_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        let (word, bit) = ((cap / 32) as usize, cap % 32);
        data[word * 3] &= !(1 << bit);
        if libc::syscall(libc::SYS_capset, hdr.as_mut_ptr(), data.as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// recvmsg(2) of one message into `buf`; returns (bytes, msg_flags).
pub fn recv_flags(fd: &impl AsFd, buf: &mut [u8], flags: c_int) -> io::Result<(usize, c_int)> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: a zeroed msghdr is valid (no name, no control); it points at `iov`, which
    // describes `buf`, both alive for the call.
    unsafe {
        let mut m: libc::msghdr = mem::zeroed();
        m.msg_iov = &mut iov;
        m.msg_iovlen = 1;
        let n = cvt_size(libc::recvmsg(raw(fd), &mut m, flags))?;
        Ok((n, m.msg_flags))
    }
}
