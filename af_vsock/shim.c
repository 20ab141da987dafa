// SPDX-License-Identifier: GPL-2.0
/* C shims for rvsock.ko: the shared wrappers plus the exports of the transport API. */
#include "../include/rvsock_shim.c"

struct rvsock_transport;
struct rvsock_pkt;
int rvsock_transport_register(const struct rvsock_transport *t);
void rvsock_transport_unregister(const struct rvsock_transport *t);
void rvsock_recv_pkt(const struct rvsock_transport *t, struct rvsock_pkt *pkt);
void rvsock_transport_reset(const struct rvsock_transport *t, u32 cid, u64 ns);
u64 rvsock_current_ns(void);
struct rvsock_pkt *rvsock_pkt_alloc(u32 cap, gfp_t gfp);
void rvsock_pkt_free(struct rvsock_pkt *pkt);
size_t rvsock_pkt_copy_to_iter(struct rvsock_pkt *pkt, u32 skip, size_t n, struct iov_iter *iter);

EXPORT_SYMBOL_GPL(rvsock_transport_register);
EXPORT_SYMBOL_GPL(rvsock_transport_unregister);
EXPORT_SYMBOL_GPL(rvsock_recv_pkt);
EXPORT_SYMBOL_GPL(rvsock_transport_reset);
EXPORT_SYMBOL_GPL(rvsock_pkt_alloc);
EXPORT_SYMBOL_GPL(rvsock_pkt_free);
EXPORT_SYMBOL_GPL(rvsock_pkt_copy_to_iter);
EXPORT_SYMBOL_GPL(rvsock_current_ns);
/* virtio_transport: the pages of a page payload, for the device to read them, and whether a
 * MSG_ZEROCOPY completion waits for the packet */
struct page;
bool rvsock_pkt_ext_frag(const struct rvsock_pkt *pkt, u32 i, struct page **page, u32 *off, u32 *len);
EXPORT_SYMBOL_GPL(rvsock_pkt_ext_frag);
bool rvsock_pkt_notifies(const struct rvsock_pkt *pkt);
EXPORT_SYMBOL_GPL(rvsock_pkt_notifies);
/* vhost_vsock: a guest's full-size packet into pages */
struct rvsock_pkt *rvsock_pkt_alloc_from_iter(u32 len, struct iov_iter *iter);
EXPORT_SYMBOL_GPL(rvsock_pkt_alloc_from_iter);
/* vhost_vsock: a guest's large payload by reference (a hold of its pages) */
struct rvsock_hold;
struct rvsock_hold *rvsock_hold_new(u32 cap, void (*notify)(void *, u32), void *ctx);
void rvsock_hold_free(struct rvsock_hold *hold);
u32 rvsock_hold_detach(struct rvsock_hold *hold);
struct rvsock_pkt *rvsock_pkt_alloc_held(struct rvsock_hold *hold, u32 len, struct iov_iter *iter, u32 cookie);
EXPORT_SYMBOL_GPL(rvsock_hold_new);
EXPORT_SYMBOL_GPL(rvsock_hold_free);
EXPORT_SYMBOL_GPL(rvsock_hold_detach);
EXPORT_SYMBOL_GPL(rvsock_pkt_alloc_held);
/* vsockmon (drivers/net/vsockmon.c) registers its capture devices here, as with in-tree vsock */
#include <net/af_vsock.h>
EXPORT_SYMBOL_GPL(vsock_add_tap);
EXPORT_SYMBOL_GPL(vsock_remove_tap);
/* the transports capture where their packets go on or come off the wire */
bool rvsock_tap_active(void);
void *rvsock_tap_copy(const struct rvsock_pkt *pkt);
void *rvsock_tap_start(const u8 *hdr, u32 len);
bool rvsock_tap_append(void *copy, const struct rvsock_pkt *pkt, u32 n);
void rvsock_tap_deliver(void *copy);
void rvsock_tap_drop(void *copy);
EXPORT_SYMBOL_GPL(rvsock_tap_active);
EXPORT_SYMBOL_GPL(rvsock_tap_copy);
EXPORT_SYMBOL_GPL(rvsock_tap_start);
EXPORT_SYMBOL_GPL(rvsock_tap_append);
EXPORT_SYMBOL_GPL(rvsock_tap_deliver);
EXPORT_SYMBOL_GPL(rvsock_tap_drop);
/* Trace events: the in-tree packet events from the kernel's own header, and rvsock's own
 * (trace.h). One-call wrappers for the Rust code. */
#include <uapi/linux/virtio_vsock.h>
#define CREATE_TRACE_POINTS
#include <trace/events/vsock_virtio_transport_common.h>
#include "trace.h"
void rvsock_trace_alloc_pkt(u32 src_cid, u32 src_port, u32 dst_cid, u32 dst_port, u32 len, u16 type, u16 op, u32 flags, bool zcopy)
{
	trace_virtio_transport_alloc_pkt(src_cid, src_port, dst_cid, dst_port, len, type, op, flags, zcopy);
}
void rvsock_trace_recv_pkt(u32 src_cid, u32 src_port, u32 dst_cid, u32 dst_port, u32 len, u16 type, u16 op, u32 flags, u32 buf_alloc, u32 fwd_cnt)
{
	trace_virtio_transport_recv_pkt(src_cid, src_port, dst_cid, dst_port, len, type, op, flags, buf_alloc, fwd_cnt);
}
void rvsock_trace_sk_state(u32 src_cid, u32 src_port, u32 dst_cid, u32 dst_port, u16 type, u8 old_state, u8 new_state, u8 shutdown)
{
	trace_rvsock_sk_state(src_cid, src_port, dst_cid, dst_port, type, old_state, new_state, shutdown);
}
