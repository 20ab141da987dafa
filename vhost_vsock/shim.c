// SPDX-License-Identifier: GPL-2.0
/* C shims for rvsock_vhost.ko. */
#define RVSOCK_SHIM_VHOST
#include "../include/rvsock_shim.c"
