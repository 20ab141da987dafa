//! The raw binding layer shared by every rvsock module: the bindgen output generated at build
//! time from `include/rvsock_helper.h` (see `include/bindgen.mk`). Only the safe wrapper
//! modules (`net.rs` and friends) use these items directly.
#![allow(
    unsafe_op_in_unsafe_fn,
    unreachable_pub,
    missing_docs,
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    improper_ctypes,
    clippy::all
)]

use kernel::ffi;
type __kernel_size_t = usize;
type __kernel_ssize_t = isize;
type __kernel_ptrdiff_t = isize;

// Each module's Kbuild exports RVSOCK_BINDINGS: the bindgen output in its object folder.
include!(env!("RVSOCK_BINDINGS"));

// The kernel-version compatibility layer (the only code that knows kernel lines).
include!("compat.rs");

/// `modinfo`'s author line of every rvsock module (the module! macro spells that key
/// differently on 6.12 and 7.x, so it is written here).
#[used(compiler)]
#[link_section = ".modinfo"]
static MODINFO_AUTHOR: [u8; 25] = *b"author=rvsock developers\0";
