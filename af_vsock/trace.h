/* SPDX-License-Identifier: GPL-2.0 */
/*
 * rvsock's own trace events (definitions only): connection state changes, which the in-tree
 * stack does not trace. tracefs: events/rvsock/. The in-tree packet events
 * (vsock:virtio_transport_alloc_pkt, vsock:virtio_transport_recv_pkt) come from the kernel's
 * own header, instantiated in shim.c.
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM rvsock

#if !defined(_RVSOCK_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define _RVSOCK_TRACE_H

#include <linux/tracepoint.h>

/* A socket's sk_state changed (TCP numbering: 1 ESTABLISHED, 2 SYN_SENT, 7 CLOSE, 10 LISTEN,
 * 11 CLOSING). */
TRACE_EVENT(rvsock_sk_state,
	TP_PROTO(__u32 src_cid, __u32 src_port, __u32 dst_cid, __u32 dst_port, __u16 type,
		 __u8 old_state, __u8 new_state, __u8 shutdown),
	TP_ARGS(src_cid, src_port, dst_cid, dst_port, type, old_state, new_state, shutdown),
	TP_STRUCT__entry(
		__field(__u32, src_cid)
		__field(__u32, src_port)
		__field(__u32, dst_cid)
		__field(__u32, dst_port)
		__field(__u16, type)
		__field(__u8, old_state)
		__field(__u8, new_state)
		__field(__u8, shutdown)
	),
	TP_fast_assign(
		__entry->src_cid = src_cid;
		__entry->src_port = src_port;
		__entry->dst_cid = dst_cid;
		__entry->dst_port = dst_port;
		__entry->type = type;
		__entry->old_state = old_state;
		__entry->new_state = new_state;
		__entry->shutdown = shutdown;
	),
	TP_printk("%u:%u -> %u:%u type=%u state %u -> %u shutdown=%#x",
		  __entry->src_cid, __entry->src_port, __entry->dst_cid, __entry->dst_port,
		  __entry->type, __entry->old_state, __entry->new_state, __entry->shutdown)
);

#endif /* _RVSOCK_TRACE_H */

#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE trace
#include <trace/define_trace.h>
