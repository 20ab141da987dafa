// SPDX-License-Identifier: GPL-2.0
/* C shims for rvsock.ko: the shared wrappers plus the exports of the transport API. */
#include "../include/rvsock_shim.c"

struct rvsock_transport;
struct rvsock_pkt;
int rvsock_transport_register(const struct rvsock_transport *t);
void rvsock_transport_unregister(const struct rvsock_transport *t);
void rvsock_recv_pkt(const struct rvsock_transport *t, struct rvsock_pkt *pkt);
void rvsock_transport_reset(const struct rvsock_transport *t, u32 cid);
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
/* virtio_transport: the pages of a MSG_ZEROCOPY packet, for the device to read them */
struct page;
bool rvsock_pkt_ext_frag(const struct rvsock_pkt *pkt, u32 i, struct page **page, u32 *off, u32 *len);
EXPORT_SYMBOL_GPL(rvsock_pkt_ext_frag);
