// SPDX-License-Identifier: GPL-2.0
//! debugfs counters, shared by the modules: a folder removed with its files on drop, and
//! read-only u64 files over atomic counters (`debugfs_create_u64`: the reader sees each
//! counter as it is; no snapshot of several). Errors are not reported, as debugfs asks: a
//! kernel without debugfs, or without memory for it, only does not show the counters.

use crate::ffi;
use core::sync::atomic::AtomicU64;

/// A debugfs folder (or the error pointer debugfs returned; every call then does nothing).
pub(crate) struct DebugDir(*mut ffi::dentry);

// SAFETY: the dentry pointer is only handed back to debugfs, which locks for itself.
unsafe impl Send for DebugDir {}
// SAFETY: as above.
unsafe impl Sync for DebugDir {}

impl DebugDir {
    /// Creates folder `name` (NUL-terminated) in `parent`, or at the top of debugfs.
    pub(crate) fn new(name: &'static [u8], parent: Option<&DebugDir>) -> DebugDir {
        let p = parent.map_or(core::ptr::null_mut(), |d| d.0);
        // SAFETY: `nul_terminated` gives a C string; `p` is null or a folder (or error
        // pointer) from debugfs.
        DebugDir(unsafe { ffi::rvsock_debugfs_dir(nul_terminated(name), p) })
    }

    /// Adds a read-only file `name` showing `c`.
    ///
    /// # Safety
    /// `c` stays valid until this folder is dropped (the file reads it until then).
    pub(crate) unsafe fn counter(&self, name: &'static [u8], c: &AtomicU64) {
        // SAFETY: a folder of ours; `c` outlives the file per the contract.
        unsafe { ffi::rvsock_debugfs_u64(nul_terminated(name), self.0, c.as_ptr()) };
    }
}

impl Drop for DebugDir {
    fn drop(&mut self) {
        // SAFETY: a folder `new` created (or an error pointer, which debugfs ignores); its
        // files go with it, and no read of a counter runs after this returns.
        unsafe { ffi::rvsock_debugfs_remove(self.0) };
    }
}

/// `name` as a C string: a literal ending in NUL, or an empty string otherwise.
fn nul_terminated(name: &'static [u8]) -> *const kernel::ffi::c_char {
    if name.last() == Some(&0) { name.as_ptr().cast() } else { b"\0".as_ptr().cast() }
}
