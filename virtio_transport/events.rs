// SPDX-License-Identifier: GPL-2.0
//! The event virtqueue of the guest driver (a child of `dev`, whose private state it uses):
//! posting the event buffers, and the event work that takes TRANSPORT_RESET (re-read the CID,
//! reset every connection). Ordering against the rx work: see `dev`'s module doc.

use super::{inc, valid_cid, Ev, Shared, EV_RUNNING};
use crate::abi;
use crate::ffi;
use crate::virtio::{event_id, EventBuf};
use core::sync::atomic::Ordering;
use kernel::prelude::*;

impl Shared {
    /// Posts every event buffer (probe).
    pub(super) fn ev_fill(&self) {
        let mut g = self.ev.lock();
        let Some(vq) = g.vq.as_mut() else { return };
        for e in self.events.iter() {
            // SAFETY: the buffers live in this structure, which outlives the device binding
            // (teardown resets the device before the state can go); the CPU reads a buffer
            // only after the ring returns it.
            if unsafe { vq.post(e) }.is_err() {
                inc(&self.stats.ev_bad);
            }
        }
        vq.0.kick();
    }

    /// Index of the event buffer at `p`, if it is one of ours.
    fn event_index(&self, p: *const EventBuf) -> Option<usize> {
        self.events.iter().position(|e| core::ptr::eq(e, p))
    }

    /// The event work (also run by the rx work, see the module doc).
    pub(crate) fn ev_work(&self) {
        let _order = self.ev_order.lock();
        // RUNNING replaces PENDING: an event that arrives from here on sets PENDING again.
        self.ev_state.store(EV_RUNNING, Ordering::SeqCst);
        self.take_events();
        self.ev_state.fetch_and(!EV_RUNNING, Ordering::SeqCst);
    }

    /// Takes the returned event buffers, posts them again, and on TRANSPORT_RESET re-reads
    /// the CID and resets every connection (`ev_order` held).
    fn take_events(&self) {
        let mut reset = false;
        {
            let mut g = self.ev.lock();
            let Ev { vq, vdev } = &mut *g;
            let Some(vq) = vq.as_mut() else { return };
            loop {
                vq.0.disable_cb();
                while let Some((p, len)) = vq.get() {
                    let Some(i) = self.event_index(p) else {
                        // Not a buffer of ours (cannot happen: the virtio core checks ids).
                        inc(&self.stats.ev_bad);
                        continue;
                    };
                    let Some(e) = self.events.get(i) else { continue };
                    if len as usize == core::mem::size_of::<ffi::virtio_vsock_event>() {
                        // SAFETY: the ring returned `e` and it is not posted again yet.
                        let id = unsafe { event_id(e) };
                        if id == ffi::virtio_vsock_event_id_VIRTIO_VSOCK_EVENT_TRANSPORT_RESET {
                            reset = true;
                        } else {
                            inc(&self.stats.ev_bad);
                        }
                    } else {
                        inc(&self.stats.ev_bad);
                    }
                    // SAFETY: as in `ev_fill`.
                    if unsafe { vq.post(e) }.is_err() {
                        inc(&self.stats.ev_bad);
                    }
                }
                if vq.0.enable_cb() {
                    break;
                }
            }
            vq.0.kick();
            if reset {
                // Re-read the CID while the device is surely bound (`vq` is present).
                inc(&self.stats.ev_reset);
                if let Some(d) = vdev.as_ref() {
                    let raw = d.read_config_u64(0);
                    match valid_cid(raw) {
                        Some(c) => self.guest_cid.store(c, Ordering::Relaxed),
                        None => pr_warn!("transport reset: invalid guest CID {}; keeping {}\n", raw, self.local_cid()),
                    }
                }
            }
        }
        if reset {
            let t = self.transport.load(Ordering::Acquire);
            if !t.is_null() {
                // SAFETY: our registered transport (teardown cancels this work before it
                // unregisters); no lock held.
                unsafe { abi::rvsock_transport_reset(t, u32::MAX, abi::NS_ANY) };
            }
        }
    }
}
