// SPDX-License-Identifier: GPL-2.0
/* C shims for rvsock_virtio.ko. */
#include "../include/rvsock_shim.c"
