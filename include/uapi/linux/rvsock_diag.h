/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * rvsock's extension of AF_VSOCK sock_diag (linux/vm_sockets_diag.h): the credit state of each
 * socket. Set RVSOCK_DIAG_SHOW_CREDIT in vsock_diag_req.vdiag_show (a field the in-tree
 * vsock_diag ignores) and every struct vsock_diag_msg of the reply is followed by one netlink
 * attribute RVSOCK_DIAG_CREDIT holding a struct rvsock_diag_credit. The in-tree stack answers
 * the same request without the attribute. Counters of the virtio-vsock credit scheme wrap at
 * 2^32. Reader: `rvsock-tests ss` (tools/testing/vsock/rvsock-tests/src/diag.rs).
 */
#ifndef _UAPI_LINUX_RVSOCK_DIAG_H
#define _UAPI_LINUX_RVSOCK_DIAG_H

#include <linux/types.h>

#define RVSOCK_DIAG_SHOW_CREDIT		(1U << 0)	/* vdiag_show bit */
#define RVSOCK_DIAG_CREDIT		1		/* attribute type */

/* rvsock_diag_credit.flags */
#define RVSOCK_DIAG_F_CLOSE_TIMER	(1U << 0)	/* closed, waiting for the peer's RST */
#define RVSOCK_DIAG_F_CONNECT_TIMER	(1U << 1)	/* connect() waiting for the RESPONSE */
#define RVSOCK_DIAG_F_ORPHAN		(1U << 2)	/* file closed (SOCK_DEAD) */
#define RVSOCK_DIAG_F_PEER_SHUT_SEND	(1U << 3)	/* the peer will send no more */
#define RVSOCK_DIAG_F_PEER_SHUT_RCV	(1U << 4)	/* the peer will read no more */
#define RVSOCK_DIAG_F_DONE		(1U << 5)	/* the connection is over (RST) */

struct rvsock_diag_credit {
	__u32	peer_buf_alloc;	/* the peer's receive buffer, as it last said */
	__u32	peer_fwd_cnt;	/* bytes the peer's reader consumed, as it last said */
	__u32	tx_cnt;		/* bytes sent (or reserved for sending) */
	__u32	in_flight;	/* tx_cnt - peer_fwd_cnt: not yet read by the peer */
	__u32	unsent;		/* reserved, not yet handed to the transport (SIOCOUTQ) */
	__u32	buf_alloc;	/* our receive buffer (advertised) */
	__u32	fwd_cnt;	/* bytes our reader consumed */
	__u32	last_fwd_cnt;	/* the fwd_cnt the peer last heard from us */
	__u32	rx_bytes;	/* bytes queued for our reader (SIOCINQ) */
	__u32	rx_pkts;	/* packets queued for our reader */
	__u32	rx_mem;		/* kernel memory charged for them */
	__u32	rx_mem_budget;	/* the queue's memory limit (over it: reset) */
	__u32	accept_q;	/* listener: children waiting for accept() */
	__u32	flags;		/* RVSOCK_DIAG_F_* */
};

#endif /* _UAPI_LINUX_RVSOCK_DIAG_H */
