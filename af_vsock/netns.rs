// SPDX-License-Identifier: GPL-2.0
//! Network namespaces (in-tree 7.x semantics, on every kernel line) and `/proc/sys/net/vsock/`.
//!
//! Every network namespace has a vsock mode, `global` or `local`, fixed at its creation: the
//! initial namespace is global; a new one takes its creator's `child_ns_mode`. Sockets and
//! host devices carry their namespace as a *tag* (`u64`: the namespace's number shifted left
//! once, bit 0 = local; see `abi::ns_reach`), copied when they are created. Tags, not `struct
//! net` pointers, travel in packets and tables: comparing two is one instruction, and a
//! namespace that goes away while a connection crosses it leaves nothing dangling (numbers
//! are never reused while rvsock is loaded).
//!
//! Our per-namespace data (`NetData`) lives in the namespace's `net_generic` slot, allocated
//! by the kernel for our `pernet_operations` and freed after our `exit` callback. It holds the
//! tag, `child_ns_mode`, `g2h_fallback` and that namespace's copy of the sysctl table, whose
//! `data` pointers point back into it.
//!
//! Sysctls (all per namespace):
//! - `ns_mode` (0444): `global` or `local`; writes fail with EPERM.
//! - `child_ns_mode` (0644, write-once): the mode of namespaces created from this one; a
//!   second write of another value fails with EBUSY, `global` in a local namespace with EPERM.
//! - `g2h_fallback` (0 or 1, default 1): a connect to a CID above the host's that no H2G
//!   device has goes to the host over the G2H transport when there is one.

use crate::abi::NS_LOCAL;
use crate::family::KStatic;
use crate::ffi;
use crate::net::Sk;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use kernel::ffi::{c_int, c_void};
use kernel::prelude::*;

const MODE_GLOBAL: u32 = 0;
const MODE_LOCAL: u32 = 1;
const N_SYSCTL: usize = 3;

/// A sysctl handler.
type Handler =
    unsafe extern "C" fn(*const ffi::ctl_table, c_int, *mut c_void, *mut usize, *mut ffi::loff_t) -> c_int;

/// Our data in a network namespace (its `net_generic` slot; zeroed by the kernel).
#[repr(C)]
struct NetData {
    /// The namespace's tag; 0 until `init_net` ran (then never 0: numbers start at 1).
    tag: u64,
    /// `child_ns_mode` (`MODE_*`).
    child_mode: AtomicU32,
    /// 0: `child_ns_mode` never written; else the written mode + 1.
    child_locked: AtomicU32,
    /// `g2h_fallback`, written as a C `int` by `proc_dointvec_minmax` through `data`.
    g2h_fallback: AtomicI32,
    /// The ephemeral-port cursor of bind(2) with VMADDR_PORT_ANY (0 until the first one),
    /// one per namespace as in 7.3 in-tree: a namespace does not see its ports advance with
    /// another's binds. Moved only under the global table lock (`Global::pick_port`).
    port: AtomicU32,
    /// The registered sysctl table.
    hdr: *mut ffi::ctl_table_header,
    /// This namespace's copy of the table (`data` points into this struct).
    table: [ffi::ctl_table; N_SYSCTL],
}

/// Our `net_generic` id, assigned by `register_pernet_subsys`.
static NET_ID: KStatic<kernel::ffi::c_uint> = KStatic::new(0);
// SAFETY: an all-zero `pernet_operations` is valid (no callbacks); filled in `register`.
static OPS: KStatic<ffi::pernet_operations> = unsafe { KStatic::zeroed() };
/// The next namespace number.
static NEXT: AtomicU64 = AtomicU64::new(1);
/// True while `register_pernet_subsys` runs `init` for the namespaces that already exist.
/// Their creators are unknown then, and the loader's namespace may not be set up yet (its
/// `net_generic` array not even grown to our id): all of them count as global.
static REGISTERING: AtomicBool = AtomicBool::new(false);
/// The bounds of `g2h_fallback`.
static ZERO: i32 = 0;
static ONE: i32 = 1;

/// Our data of `net` (null while it is not set up: a namespace that existed before rvsock was
/// loaded, between our registration and its `init` call).
fn data(net: *const ffi::net) -> *mut NetData {
    if net.is_null() {
        return core::ptr::null_mut();
    }
    // SAFETY: `net` is a live namespace (callers' contract); reading our id, written once by
    // `register_pernet_subsys` before any of our callbacks can run.
    unsafe { ffi::rvsock_net_generic(net, *NET_ID.get()) as *mut NetData }
}

/// The tag of namespace `net` (live); a namespace we have no data for counts as global.
pub(crate) fn tag_of(net: *const ffi::net) -> u64 {
    // SAFETY: our data of a live namespace stays allocated while it lives; `tag` is written
    // once by `net_init`, before the namespace can hold sockets or devices.
    unsafe { data(net).as_ref() }.map_or(crate::abi::NS_GLOBAL, |d| d.tag)
}

/// The tag of a socket's namespace.
pub(crate) fn tag_of_sk(sk: Sk) -> u64 {
    // SAFETY: a live socket's namespace is live (a user socket holds a reference on it; a
    // kernel socket's owner keeps its namespace alive while the socket exists).
    tag_of(unsafe { ffi::rvsock_sock_net(sk.as_ptr()) })
}

/// Whether `g2h_fallback` is on in the namespace of `sk`.
pub(crate) fn g2h_fallback(sk: Sk) -> bool {
    // SAFETY: as in `tag_of_sk`.
    let d = data(unsafe { ffi::rvsock_sock_net(sk.as_ptr()) });
    // SAFETY: as in `tag_of`.
    unsafe { d.as_ref() }.map_or(true, |d| d.g2h_fallback.load(Ordering::Relaxed) != 0)
}

/// Runs `f` with the ephemeral-port cursor of `sk`'s namespace; `None` when the namespace has
/// no data of ours yet (one that existed before rvsock was loaded, until its `init` ran).
pub(crate) fn with_port_cursor<R>(sk: Sk, f: impl FnOnce(&AtomicU32) -> R) -> Option<R> {
    // SAFETY: as in `tag_of_sk`.
    let d = data(unsafe { ffi::rvsock_sock_net(sk.as_ptr()) });
    // SAFETY: as in `tag_of`; the reference does not outlive this call, during which the
    // socket (and so its namespace) is live.
    unsafe { d.as_ref() }.map(|d| f(&d.port))
}

/// The tag of the calling task's namespace (exported: vhost tags a device with its opener's).
#[no_mangle]
pub(crate) extern "C" fn rvsock_current_ns() -> u64 {
    // SAFETY: the current task's namespace is live while it runs.
    tag_of(unsafe { ffi::rvsock_current_net() })
}

fn mode_name(mode: u32) -> &'static [u8] {
    if mode == MODE_LOCAL { b"local" } else { b"global" }
}

/// Reads (`out`) or parses (`write`) a mode string with `proc_dostring` semantics (a trailing
/// newline ends a write), on a copy of `table` pointed at our own buffer.
///
/// # Safety
/// The arguments of a sysctl handler call.
unsafe fn mode_string(
    table: *const ffi::ctl_table,
    write: c_int,
    buf: *mut c_void,
    lenp: *mut usize,
    ppos: *mut ffi::loff_t,
    out: u32,
) -> core::result::Result<Option<u32>, c_int> {
    let mut s = [0u8; 8];
    // SAFETY: `table` is the live entry the handler was called for; a bitwise copy is a
    // plain C struct that we point elsewhere.
    let mut tmp = unsafe { core::ptr::read(table) };
    if write == 0 {
        let n = mode_name(out);
        s[..n.len()].copy_from_slice(n);
        tmp.maxlen = n.len() as c_int + 1;
    } else {
        tmp.maxlen = s.len() as c_int;
    }
    tmp.data = s.as_mut_ptr().cast();
    // SAFETY: `tmp` describes our NUL-terminated buffer of `maxlen` bytes; the rest are the
    // caller's arguments.
    let r = unsafe { ffi::proc_dostring(&tmp, write, buf, lenp, ppos) };
    if r != 0 {
        return Err(r);
    }
    if write == 0 {
        return Ok(None);
    }
    // A write of the buffer's size or more is refused whatever it starts with (in-tree:
    // "local\nXX" is EINVAL, not "local").
    // SAFETY: `lenp` is the handler's live length argument.
    if unsafe { *lenp } >= s.len() {
        return Err(EINVAL.to_errno());
    }
    let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
    match &s[..end] {
        b"global" => Ok(Some(MODE_GLOBAL)),
        b"local" => Ok(Some(MODE_LOCAL)),
        _ => Err(EINVAL.to_errno()),
    }
}

/// `ns_mode`: `data` is `&NetData::tag`.
unsafe extern "C" fn ns_mode_handler(
    table: *const ffi::ctl_table,
    write: c_int,
    buf: *mut c_void,
    lenp: *mut usize,
    ppos: *mut ffi::loff_t,
) -> c_int {
    if write != 0 {
        return EPERM.to_errno();
    }
    // SAFETY: our table's `data` points at the `tag` of live `NetData` (the table is
    // unregistered before the data is freed).
    let tag = unsafe { *((*table).data as *const u64) };
    let mode = if tag & NS_LOCAL != 0 { MODE_LOCAL } else { MODE_GLOBAL };
    // SAFETY: the handler's own arguments.
    match unsafe { mode_string(table, write, buf, lenp, ppos, mode) } {
        Ok(_) => 0,
        Err(e) => e,
    }
}

/// `child_ns_mode`: `data` is `&NetData::child_mode`.
unsafe extern "C" fn child_mode_handler(
    table: *const ffi::ctl_table,
    write: c_int,
    buf: *mut c_void,
    lenp: *mut usize,
    ppos: *mut ffi::loff_t,
) -> c_int {
    // SAFETY: as in `ns_mode_handler`: `data` is the `child_mode` field of live `NetData`.
    let d = unsafe {
        &*(((*table).data as *mut u8).sub(core::mem::offset_of!(NetData, child_mode)) as *const NetData)
    };
    // SAFETY: the handler's own arguments.
    let new = match unsafe { mode_string(table, write, buf, lenp, ppos, d.child_mode.load(Ordering::Relaxed)) } {
        Ok(Some(m)) => m,
        Ok(None) => return 0,
        Err(e) => return e,
    };
    // A local namespace cannot hand out global children (they would reach global CIDs).
    if d.tag & NS_LOCAL != 0 && new == MODE_GLOBAL {
        return EPERM.to_errno();
    }
    match d.child_locked.compare_exchange(0, new + 1, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            d.child_mode.store(new, Ordering::Release);
            0
        }
        Err(old) if old == new + 1 => 0,
        Err(_) => EBUSY.to_errno(),
    }
}

/// pernet `init`: the tag (the creator's `child_ns_mode`; global for the initial namespace
/// and for those that existed before we were loaded) and the sysctl table.
unsafe extern "C" fn net_init(net: *mut ffi::net) -> c_int {
    let d = data(net);
    if d.is_null() {
        return ENOMEM.to_errno();
    }
    // SAFETY: plain reads of the current task's namespace and of whether `net` is the initial one.
    let (creator, is_init) = unsafe { (ffi::rvsock_current_net(), ffi::rvsock_net_is_init(net)) };
    // Outside registration, `register_pernet_subsys` has set up every namespace that existed
    // (and the kernel's pernet lock keeps new ones from being made meanwhile), and a new one
    // runs our `init` only after its creator's namespace ran all of its own.
    let known = !is_init && creator != net && !REGISTERING.load(Ordering::Acquire);
    let creator_d = if known { data(creator) } else { core::ptr::null_mut() };
    // SAFETY: the creator's data is live while the creator task is in that namespace.
    let mode = unsafe { creator_d.as_ref() }.map_or(MODE_GLOBAL, |c| {
        if c.tag == 0 { MODE_GLOBAL } else { c.child_mode.load(Ordering::Acquire) }
    });
    let num = NEXT.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `d` is our zeroed slot of `net`, which nobody else uses before `init` returns.
    let d = unsafe { &mut *d };
    d.tag = (num << 1) | u64::from(mode == MODE_LOCAL);
    d.child_mode = AtomicU32::new(mode);
    d.child_locked = AtomicU32::new(0);
    d.g2h_fallback = AtomicI32::new(1);
    let entries: [(&core::ffi::CStr, *mut c_void, c_int, u16, Handler); N_SYSCTL] = [
        (c"ns_mode", core::ptr::addr_of_mut!(d.tag).cast(), 8, 0o444, ns_mode_handler),
        (c"child_ns_mode", d.child_mode.as_ptr().cast(), 8, 0o644, child_mode_handler),
        (c"g2h_fallback", d.g2h_fallback.as_ptr().cast(), 4, 0o644, ffi::proc_dointvec_minmax),
    ];
    for (t, (name, data, maxlen, mode, handler)) in d.table.iter_mut().zip(entries) {
        t.procname = name.as_ptr().cast();
        t.data = data;
        t.maxlen = maxlen;
        t.mode = mode as _;
        t.proc_handler = Some(handler);
    }
    d.table[2].extra1 = (&ZERO as *const i32).cast_mut().cast::<c_void>();
    d.table[2].extra2 = (&ONE as *const i32).cast_mut().cast::<c_void>();
    // SAFETY: the table lives in `net`'s slot until `net_exit` unregisters it.
    d.hdr = unsafe {
        ffi::register_net_sysctl_sz(net, c"net/vsock".as_ptr().cast(), d.table.as_mut_ptr(), N_SYSCTL)
    };
    if d.hdr.is_null() {
        return ENOMEM.to_errno();
    }
    0
}

/// pernet `exit`: unregisters the table (waits for running handlers).
unsafe extern "C" fn net_exit(net: *mut ffi::net) {
    // SAFETY: our slot of a namespace whose `init` succeeded.
    if let Some(d) = unsafe { data(net).as_mut() } {
        if !d.hdr.is_null() {
            // SAFETY: the header `net_init` got.
            unsafe { ffi::unregister_net_sysctl_table(d.hdr) };
            d.hdr = core::ptr::null_mut();
        }
    }
}

/// The registered pernet operations; unregistered on drop (after the socket family).
pub(crate) struct Registration;

/// Registers the pernet operations: `init` runs for every existing namespace now and for
/// every new one later.
pub(crate) fn register() -> Result<Registration> {
    // SAFETY: `OPS` is written only here, before registration publishes it.
    let r = unsafe {
        let o = &mut *OPS.get();
        o.init = Some(net_init);
        o.exit = Some(net_exit);
        o.id = NET_ID.get();
        o.size = core::mem::size_of::<NetData>();
        REGISTERING.store(true, Ordering::Release);
        let r = ffi::register_pernet_subsys(OPS.get());
        REGISTERING.store(false, Ordering::Release);
        r
    };
    if r != 0 {
        return Err(Error::from_errno(r));
    }
    Ok(Registration)
}

impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: registered by `register`; runs `exit` for every namespace.
        unsafe { ffi::unregister_pernet_subsys(OPS.get()) };
    }
}
