//! Kernel-independent core of the virtio-vsock transport ("virtio_transport_common").
//!
//! This crate owns the parts of `net/vmw_vsock/virtio_transport_common.c` that are pure
//! protocol logic, re-designed as plain data types and pure functions that are driven by
//! events and return actions (no callbacks, no allocation, no locks, no panics):
//!
//! * [`hdr`] — the 44-byte `struct virtio_vsock_hdr` codec, op/type enums, flag and size
//!   constants, and [`hdr::validate`] which turns a raw header into a checked [`hdr::Valid`].
//! * [`credit`] — credit-based flow control: [`credit::TxCredit`] (our view of the peer's
//!   receive buffer) and [`credit::RxCredit`] (what we advertise, and when to advertise it).
//! * [`conn`] — the per-socket transport state machine ([`conn::Conn`]): packet and local
//!   events in, [`conn::Actions`] out.
//! * [`fq`] — flow queueing for a device's shared send queue ([`fq::FlowSched`]).
//! * [`seqpacket`] — SEQPACKET message boundaries: message counting, receive reporting
//!   (`MSG_TRUNC`/`MSG_EOR`) and splitting a message into packets.
//!
//! The library is `no_std`, uses no `alloc` and has no dependencies, so the kernel modules
//! can compile it straight into themselves:
//!
//! ```text
//! #[path = "../virtio_transport_common/src/lib.rs"]
//! mod proto;
//! ```
//!
//! Sub-modules refer to each other through `super::`, never `crate::`, so this file may be
//! mounted as a module of any name.
#![cfg_attr(not(test), no_std)]
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::cast_possible_truncation
    )
)]
#![warn(missing_docs)]

pub mod conn;
pub mod credit;
pub mod fq;
pub mod hdr;
pub mod seqpacket;

pub use self::conn::{Actions, Conn, Ctl, Release, SockError, State};
pub use self::credit::{CreditAction, Reader, RxCredit, TxCredit};
pub use self::hdr::{validate, Addr, Hdr, HdrError, Op, SockType, Valid, ValidateCtx, HDR_LEN};
pub use self::seqpacket::{Chunk, MsgTooBig, RecvReport, SeqReader, SeqRx, SeqTx};
