// SPDX-License-Identifier: GPL-2.0
//! The part of the kernel-independent protocol crate this module needs: the header codec
//! (the transport only reads a received header's length; the core validates the rest).

#[path = "../virtio_transport_common/src/hdr.rs"]
pub(crate) mod hdr;
