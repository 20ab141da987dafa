/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Kernel headers rvsock's binding layer is generated from (bindgen runs over this file at
 * build time, filtered by bindgen_allowlist). Declarations only: no logic.
 */
#include <linux/module.h>
#include <linux/net.h>
#include <linux/socket.h>
#include <linux/poll.h>
#include <linux/uio.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>
#include <linux/wait.h>
#include <linux/sched/signal.h>
#include <linux/workqueue.h>
#include <linux/capability.h>
#include <linux/cred.h>
#include <linux/errqueue.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/vhost.h>
#include <net/sock.h>
#include <linux/sysctl.h>
#include <net/net_namespace.h>
#include <uapi/linux/vm_sockets.h>
#include <uapi/linux/virtio_vsock.h>
#include <uapi/linux/virtio_ids.h>
#include <uapi/linux/sockios.h>
#include <uapi/asm-generic/ioctls.h>
#include <linux/sock_diag.h>
#include <uapi/linux/vm_sockets_diag.h>
#include <net/netlink.h>
#include "rvsock_shim.h"
/* vhost_vsock */
#include <linux/eventfd.h>
#include <uapi/linux/virtio_ring.h>
#include "vhost.h"
