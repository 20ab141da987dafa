//! sock_diag for AF_VSOCK from user space: the dump `ss --vsock` makes, and rvsock's credit
//! extension (`vdiag_show` bit `SHOW_CREDIT`, attribute `ATTR_CREDIT`; the layout is
//! include/uapi/linux/rvsock_diag.h). `rvsock-tests ss` prints it: the reader for operators.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use crate::args::Args;
use crate::sys;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `vdiag_show` bit: add the credit attribute (rvsock; in-tree ignores the field).
pub const SHOW_CREDIT: u32 = 1;
/// Attribute type of the credit state.
pub const ATTR_CREDIT: u16 = 1;
/// Every `sk_state`.
pub const ALL_STATES: u32 = !0;
/// `sk_state` values (TCP numbering, as vsock uses them).
pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_SYN_SENT: u8 = 2;
pub const TCP_CLOSE: u8 = 7;
pub const TCP_LISTEN: u8 = 10;
pub const TCP_CLOSING: u8 = 11;

/// `struct rvsock_diag_credit`, field by field (all u32).
pub const CREDIT_FIELDS: [&str; 14] = [
    "peer_buf_alloc",
    "peer_fwd_cnt",
    "tx_cnt",
    "in_flight",
    "unsent",
    "buf_alloc",
    "fwd_cnt",
    "last_fwd_cnt",
    "rx_bytes",
    "rx_pkts",
    "rx_mem",
    "rx_mem_budget",
    "accept_q",
    "flags",
];
/// Names of the `flags` bits, lowest first.
pub const CREDIT_FLAGS: [&str; 6] = ["close-timer", "connect-timer", "orphan", "peer-shut-send", "peer-shut-rcv", "done"];

/// One socket as sock_diag reports it.
#[derive(Clone, Debug, Default)]
pub struct DiagSock {
    pub ty: u8,
    pub state: u8,
    pub shutdown: u8,
    pub src_cid: u32,
    pub src_port: u32,
    pub dst_cid: u32,
    pub dst_port: u32,
    pub ino: u32,
    pub cookie: u64,
    /// The credit attribute, when asked for and given (field order of `CREDIT_FIELDS`).
    pub credit: Option<[u32; 14]>,
}

impl DiagSock {
    /// A credit field by name (0 without the attribute).
    pub fn credit(&self, name: &str) -> u32 {
        let i = CREDIT_FIELDS.iter().position(|f| *f == name).unwrap_or(0);
        self.credit.map(|c| c[i]).unwrap_or(0)
    }
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

/// Parses one reply's payload: `struct vsock_diag_msg` (32 bytes), then attributes.
fn parse_msg(p: &[u8]) -> Option<DiagSock> {
    let mut s = DiagSock {
        ty: *p.get(1)?,
        state: *p.get(2)?,
        shutdown: *p.get(3)?,
        src_cid: u32_at(p, 4)?,
        src_port: u32_at(p, 8)?,
        dst_cid: u32_at(p, 12)?,
        dst_port: u32_at(p, 16)?,
        ino: u32_at(p, 20)?,
        cookie: u64::from(u32_at(p, 24)?) | u64::from(u32_at(p, 28)?) << 32,
        credit: None,
    };
    let mut off = 32;
    while off + 4 <= p.len() {
        let len = usize::from(u16_at(p, off)?);
        let ty = u16_at(p, off + 2)?;
        if len < 4 || off + len > p.len() {
            break;
        }
        if ty == ATTR_CREDIT && len >= 4 + 4 * CREDIT_FIELDS.len() {
            let mut c = [0u32; 14];
            for (i, v) in c.iter_mut().enumerate() {
                *v = u32_at(p, off + 4 + 4 * i)?;
            }
            s.credit = Some(c);
        }
        off += (len + 3) & !3;
    }
    Some(s)
}

/// One SOCK_DIAG_BY_FAMILY dump for AF_VSOCK: every socket whose `sk_state` bit is in
/// `states`, with the extensions `show` asks for.
pub fn dump(states: u32, show: u32) -> io::Result<Vec<DiagSock>> {
    let fd = sys::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_SOCK_DIAG)?;
    let mut req = Vec::with_capacity(40);
    req.extend(40u32.to_ne_bytes());
    req.extend(SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend(((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req.extend(1u32.to_ne_bytes()); // seq
    req.extend(0u32.to_ne_bytes()); // pid
    req.extend([sys::AF_VSOCK as u8, 0, 0, 0]); // family, protocol, pad
    req.extend(states.to_ne_bytes());
    req.extend(0u32.to_ne_bytes()); // ino
    req.extend(show.to_ne_bytes());
    req.extend([0xffu8; 8]); // cookie: none
    sys::send(&fd, &req, 0)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = sys::recv(&fd, &mut buf, 0)?;
        if n == 0 {
            return Ok(out);
        }
        let mut off = 0;
        while off + 16 <= n {
            let len = u32_at(&buf, off).unwrap_or(0) as usize;
            let ty = u16_at(&buf, off + 4).unwrap_or(0);
            if len < 16 || off + len > n {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated netlink message"));
            }
            let payload = &buf[off + 16..off + len];
            match ty {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let e = u32_at(payload, 0).unwrap_or(0) as i32;
                    return Err(io::Error::from_raw_os_error(-e));
                }
                SOCK_DIAG_BY_FAMILY => {
                    out.push(parse_msg(payload).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short vsock_diag_msg"))?)
                }
                _ => {}
            }
            off += (len + 3) & !3;
        }
    }
}

/// The inode number of a socket (what sock_diag reports as `vdiag_ino`).
pub fn inode(fd: &impl AsFd) -> io::Result<u32> {
    let f = File::from(OwnedFd::from(fd.as_fd().try_clone_to_owned()?));
    Ok(f.metadata()?.ino() as u32)
}

fn addr(cid: u32, port: u32) -> String {
    let c = if cid == u32::MAX { "*".to_string() } else { cid.to_string() };
    let p = if port == u32::MAX { "*".to_string() } else { port.to_string() };
    format!("{c}:{p}")
}

pub fn state_name(s: u8) -> &'static str {
    match s {
        TCP_ESTABLISHED => "ESTAB",
        TCP_SYN_SENT => "SYN-SENT",
        TCP_CLOSE => "UNCONN",
        TCP_LISTEN => "LISTEN",
        TCP_CLOSING => "CLOSING",
        _ => "?",
    }
}

/// `rvsock-tests ss [--all]`: every vsock socket with its credit state (one line per socket,
/// `key=value` fields), for an operator looking at a stalled connection. Without `--all`,
/// listeners and unbound sockets are left out.
pub fn ss_cmd(a: &Args) -> Result<(), String> {
    let all = a.flag("all");
    a.check_unused()?;
    let socks = dump(ALL_STATES, SHOW_CREDIT).map_err(|e| format!("sock_diag: {}", sys::describe(&e)))?;
    println!("{:<6} {:<8} {:<22} {:<22} {:>10}  credit", "type", "state", "local", "peer", "inode");
    for s in socks.iter().filter(|s| all || !matches!(s.state, TCP_LISTEN | TCP_CLOSE)) {
        let ty = match i32::from(s.ty) {
            libc::SOCK_STREAM => "stream",
            libc::SOCK_SEQPACKET => "seqpkt",
            _ => "?",
        };
        let mut line = format!(
            "{ty:<6} {:<8} {:<22} {:<22} {:>10} ",
            state_name(s.state),
            addr(s.src_cid, s.src_port),
            addr(s.dst_cid, s.dst_port),
            s.ino
        );
        match s.credit {
            None => line.push_str(" (no credit attribute: not rvsock)"),
            Some(c) => {
                for (name, v) in CREDIT_FIELDS.iter().zip(c.iter()).take(13) {
                    line.push_str(&format!(" {name}={v}"));
                }
                let flags: Vec<&str> =
                    CREDIT_FLAGS.iter().enumerate().filter(|(i, _)| c[13] & (1 << i) != 0).map(|(_, n)| *n).collect();
                if !flags.is_empty() {
                    line.push_str(&format!(" [{}]", flags.join(",")));
                }
            }
        }
        println!("{line}");
    }
    Ok(())
}
