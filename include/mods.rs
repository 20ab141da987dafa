// SPDX-License-Identifier: GPL-2.0
// The shared sources every module with packet queues compiles in, by
// `include!("../include/mods.rs")` from its crate root (each `#[path]` names include/ from
// either folder): the generated binding layer, the core-transport ABI and the packet
// handle, debugfs counters. Each module uses a different subset of them, hence the allowances.

#[allow(unreachable_pub)]
#[path = "../include/ffi.rs"]
mod ffi;
#[allow(dead_code, unreachable_pub)]
#[path = "../include/abi.rs"]
mod abi;
#[allow(dead_code, unreachable_pub)]
#[path = "../include/pkt.rs"]
mod pkt;
#[allow(dead_code, unreachable_pub)]
#[path = "../include/debugfs.rs"]
mod debugfs;
