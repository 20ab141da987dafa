// SPDX-License-Identifier: GPL-2.0
/*
 * Wrappers of static inline kernel functions and macros for rvsock's Rust code. Each body is
 * one call: no logic lives here. Compiled into every module through its shim.c.
 */
#include <linux/module.h>
#include <linux/sched/signal.h>
#include <linux/capability.h>
#include <linux/security.h>
#include <linux/jhash.h>
#include <net/sock.h>
#include <linux/skbuff.h>
#include <linux/nsproxy.h>
#include <net/netns/generic.h>
#include "rvsock_shim.h"

void rvsock_lock_sock(struct sock *sk) { lock_sock(sk); }
void rvsock_sock_hold(struct sock *sk) { sock_hold(sk); }
void rvsock_sock_put(struct sock *sk) { sock_put(sk); }
wait_queue_head_t *rvsock_sk_sleep(struct sock *sk) { return sk_sleep(sk); }
void rvsock_sock_orphan(struct sock *sk) { sock_orphan(sk); }
void rvsock_sock_graft(struct sock *sk, struct socket *parent) { sock_graft(sk, parent); }
bool rvsock_sock_flag(const struct sock *sk, enum sock_flags flag) { return sock_flag(sk, flag); }
/* Atomic, unlike sock_set_flag(): rvsock's receive path sets SOCK_DONE without the socket lock. */
void rvsock_sock_set_flag(struct sock *sk, enum sock_flags flag) { set_bit(flag, &sk->sk_flags); }
long rvsock_sock_rcvtimeo(const struct sock *sk, bool noblock) { return sock_rcvtimeo(sk, noblock); }
long rvsock_sock_sndtimeo(const struct sock *sk, bool noblock) { return sock_sndtimeo(sk, noblock); }
int rvsock_sock_intr_errno(long timeo) { return sock_intr_errno(timeo); }
int rvsock_sock_rcvlowat(const struct sock *sk, int waitall, int len) { return sock_rcvlowat(sk, waitall, len); }
void rvsock_sock_poll_wait(struct file *filp, struct socket *sock, poll_table *p) { sock_poll_wait(filp, sock, p); }
bool rvsock_signal_pending(void) { return signal_pending(current); }
bool rvsock_fatal_signal_pending(void) { return fatal_signal_pending(current); }
bool rvsock_current_exiting(void) { return current->flags & PF_EXITING; }
/* An exported function with CONFIG_SECURITY_NETWORK, a static inline without. */
void rvsock_security_sk_clone(const struct sock *sk, struct sock *newsk) { security_sk_clone(sk, newsk); }
u32 rvsock_jhash_3words(u32 a, u32 b, u32 c, u32 initval) { return jhash_3words(a, b, c, initval); }
size_t rvsock_copy_from_iter(void *addr, size_t bytes, struct iov_iter *i) { return copy_from_iter(addr, bytes, i); }
size_t rvsock_copy_to_iter(const void *addr, size_t bytes, struct iov_iter *i) { return copy_to_iter(addr, bytes, i); }
size_t rvsock_iov_iter_count(const struct iov_iter *i) { return iov_iter_count(i); }
void rvsock_init_delayed_work(struct delayed_work *w, work_func_t fn) { INIT_DELAYED_WORK(w, fn); }
void rvsock_init_work(struct work_struct *w, work_func_t fn) { INIT_WORK(w, fn); }
void rvsock_spin_lock_bh(spinlock_t *l) { spin_lock_bh(l); }
void rvsock_spin_unlock_bh(spinlock_t *l) { spin_unlock_bh(l); }
void rvsock_wake_up_interruptible(struct wait_queue_head *wq) { wake_up_interruptible(wq); }
bool rvsock_capable_net_bind(void) { return capable(CAP_NET_BIND_SERVICE); }
bool rvsock_try_module_get(struct module *m) { return try_module_get(m); }
void rvsock_module_put(struct module *m) { module_put(m); }
struct module *rvsock_this_module(void) { return THIS_MODULE; }
void rvsock_sk_acceptq_added(struct sock *sk) { sk_acceptq_added(sk); }
void rvsock_sk_acceptq_removed(struct sock *sk) { sk_acceptq_removed(sk); }
bool rvsock_sk_acceptq_is_full(const struct sock *sk) { return sk_acceptq_is_full(sk); }
struct net *rvsock_sock_net(const struct sock *sk) { return sock_net(sk); }
void *rvsock_net_generic(const struct net *net, unsigned int id) { return net_generic(net, id); }
struct net *rvsock_current_net(void) { return current->nsproxy ? current->nsproxy->net_ns : NULL; }
bool rvsock_net_is_init(const struct net *net) { return net_eq(net, &init_net); }
bool rvsock_net_eq_init(const struct sock *sk) { return net_eq(sock_net(sk), &init_net); }
void *rvsock_kmalloc(size_t size, gfp_t gfp) { return kmalloc(size, gfp); }
/* A cache of its own (SLAB_NO_MERGE: not aliased to kmalloc-<size>); its objects may be
 * freed with kfree(). */
struct kmem_cache *rvsock_kmem_cache_create(const char *name, unsigned int size) { return kmem_cache_create(name, size, 0, SLAB_NO_MERGE, NULL); }
void *rvsock_kmem_cache_alloc(struct kmem_cache *c, gfp_t gfp) { return kmem_cache_alloc(c, gfp); }
void rvsock_kmem_cache_destroy(struct kmem_cache *c) { kmem_cache_destroy(c); }
void rvsock_sock_reset_flag(struct sock *sk, enum sock_flags flag) { clear_bit(flag, &sk->sk_flags); }
bool rvsock_schedule_delayed_work(struct delayed_work *w, unsigned long delay) { return schedule_delayed_work(w, delay); }
bool rvsock_schedule_work(struct work_struct *w) { return schedule_work(w); }
void rvsock_wmem_charge(struct sock *sk, unsigned int n) { refcount_add(n, &sk->sk_wmem_alloc); }
int rvsock_wmem_sub_return(struct sock *sk, unsigned int n) { return atomic_sub_return(n, &sk->sk_wmem_alloc.refs); }
unsigned int rvsock_wmem_get(const struct sock *sk) { return sk_wmem_alloc_get(sk); }
/* sock_def_write_space without its sock_writeable() gate: rvsock wakes when credit or
 * transport memory frees up, and its writers re-check both. Safe on an orphaned socket. */
void rvsock_write_space(struct sock *sk)
{
	struct socket_wq *wq;

	rcu_read_lock();
	wq = rcu_dereference(sk->sk_wq);
	if (skwq_has_sleeper(wq))
		wake_up_interruptible_sync_poll(&wq->wait, EPOLLOUT | EPOLLWRNORM | EPOLLWRBAND);
	sk_wake_async_rcu(sk, SOCK_WAKE_SPACE, POLL_OUT);
	rcu_read_unlock();
}
void rvsock_zcopy_get(struct ubuf_info *uarg) { net_zcopy_get(uarg); }
void rvsock_zcopy_complete(struct ubuf_info *uarg, bool success) { uarg->ops->complete(NULL, uarg, success); }
void rvsock_zcopy_put_abort(struct ubuf_info *uarg) { net_zcopy_put_abort(uarg, true); }
void rvsock_zcopy_set_copied(struct ubuf_info *uarg) { uarg_to_msgzc(uarg)->zerocopy = 0; }
size_t rvsock_iov_iter_offset(const struct iov_iter *i) { return i->iov_offset; }
void rvsock_put_page(struct page *page) { put_page(page); }
struct page *rvsock_alloc_page(gfp_t gfp) { return alloc_page(gfp); }
/*
 * A compound page of 2^order pages, without reclaim or compaction and quietly: callers fall
 * back to order 0 (skb_page_frag_refill's flags; alloc_skb_with_frags leaves out NORETRY).
 */
struct page *rvsock_alloc_compound(gfp_t gfp, unsigned int order)
{
	return alloc_pages((gfp & ~__GFP_DIRECT_RECLAIM) | __GFP_COMP | __GFP_NOWARN | __GFP_NORETRY, order);
}
void rvsock_get_page(struct page *page) { get_page(page); }
void rvsock_memcpy_page(struct page *dst, struct page *src, size_t off, size_t len) { memcpy_page(dst, 0, src, off, len); }
/* copy_page_to_iter that fails (copies short) instead of taking a page fault. */
size_t rvsock_copy_page_to_iter_nofault(struct page *page, size_t off, size_t len, struct iov_iter *i)
{
	size_t n;

	pagefault_disable();
	n = copy_page_to_iter(page, off, len, i);
	pagefault_enable();
	return n;
}
bool rvsock_iter_user_backed(const struct iov_iter *i) { return user_backed_iter(i); }
bool rvsock_iter_is_bvec(const struct iov_iter *i) { return iov_iter_is_bvec(i); }
bool rvsock_sendpage_ok(struct page *page) { return sendpage_ok(page); }
bool rvsock_errqueue_empty(const struct sock *sk) { return skb_queue_empty_lockless(&sk->sk_error_queue); }
void rvsock_errqueue_purge(struct sock *sk) { skb_queue_purge(&sk->sk_error_queue); }
/* debugfs counters (static inline stubs without CONFIG_DEBUG_FS: C calls them alike) */
#include <linux/debugfs.h>
struct dentry *rvsock_debugfs_dir(const char *name, struct dentry *parent) { return debugfs_create_dir(name, parent); }
void rvsock_debugfs_u64(const char *name, struct dentry *dir, u64 *val) { debugfs_create_u64(name, 0444, dir, val); }
void rvsock_debugfs_remove(struct dentry *d) { debugfs_remove(d); }
/* sock_diag (af_vsock/diag.rs) */
#include <linux/sock_diag.h>
#include <net/netlink.h>
/* A function on 6.12, a static inline reading sk_ino on 7.x: C calls it alike. */
u64 rvsock_sock_i_ino(struct sock *sk) { return sock_i_ino(sk); }
int rvsock_diag_dump_start(struct sk_buff *skb, struct nlmsghdr *nlh, int (*dump)(struct sk_buff *, struct netlink_callback *))
{
	struct netlink_dump_control c = { .dump = dump };
	return netlink_dump_start(sock_net(skb->sk)->diag_nlsk, skb, nlh, &c);
}
void *rvsock_nlmsg_data(const struct nlmsghdr *nlh) { return nlmsg_data(nlh); }
int rvsock_nlmsg_len(const struct nlmsghdr *nlh) { return nlmsg_len(nlh); }
struct nlmsghdr *rvsock_nlmsg_put(struct sk_buff *skb, u32 portid, u32 seq, int type, int payload, int flags) { return nlmsg_put(skb, portid, seq, type, payload, flags); }
void rvsock_nlmsg_end(struct sk_buff *skb, struct nlmsghdr *nlh) { nlmsg_end(skb, nlh); }
void rvsock_nlmsg_cancel(struct sk_buff *skb, struct nlmsghdr *nlh) { nlmsg_cancel(skb, nlh); }
u32 rvsock_netlink_portid(const struct sk_buff *skb) { return NETLINK_CB(skb).portid; }
struct net *rvsock_skb_net(const struct sk_buff *skb) { return sock_net(skb->sk); }
unsigned int rvsock_skb_len(const struct sk_buff *skb) { return skb->len; }
long *rvsock_nl_cb_args(struct netlink_callback *cb) { return cb->args; }
/* vsockmon taps (af_vsock/tap.rs) */
#include <linux/netdevice.h>
#include <linux/highmem.h>
#include <net/af_vsock.h>
struct net_device *rvsock_tap_dev(const struct vsock_tap *vt) { return vt->dev; }
struct module *rvsock_tap_module(const struct vsock_tap *vt) { return vt->module; }
unsigned short rvsock_netdev_type(const struct net_device *dev) { return dev->type; }
void rvsock_module_get(struct module *m) { __module_get(m); }
void rvsock_dev_hold(struct net_device *dev) { dev_hold(dev); }
void rvsock_dev_put(struct net_device *dev) { dev_put(dev); }
struct sk_buff *rvsock_alloc_skb(unsigned int size, gfp_t gfp) { return alloc_skb(size, gfp); }
void rvsock_skb_put_data(struct sk_buff *skb, const void *data, unsigned int len) { skb_put_data(skb, data, len); }
void *rvsock_skb_put(struct sk_buff *skb, unsigned int len) { return skb_put(skb, len); }
unsigned int rvsock_skb_tailroom(const struct sk_buff *skb) { return skb_tailroom(skb); }
int rvsock_dev_queue_xmit(struct sk_buff *skb, struct net_device *dev) { skb->dev = dev; return dev_queue_xmit(skb); }
/* An inline kfree_skb without CONFIG_TRACEPOINTS, a function with it. */
void rvsock_consume_skb(struct sk_buff *skb) { consume_skb(skb); }
void rvsock_memcpy_from_page(void *to, struct page *page, size_t off, size_t len) { memcpy_from_page(to, page, off, len); }
/* alloc_skb_with_frags leaves the length to its caller (as sock_alloc_send_pskb's do). */
struct sk_buff *rvsock_alloc_skb_frags(unsigned long len, gfp_t gfp)
{
	int err;
	struct sk_buff *skb = alloc_skb_with_frags(0, len, 0, &err, gfp);

	if (skb) {
		skb->len = len;
		skb->data_len = len;
	}
	return skb;
}
int rvsock_skb_store_page(struct sk_buff *skb, int offset, struct page *page, size_t off, int len)
{
	void *v = kmap_local_page(page);
	int r = skb_store_bits(skb, offset, v + off, len);

	kunmap_local(v);
	return r;
}
/* vhost_vsock */
#include <linux/fs.h>
#include <linux/mutex.h>
#include <linux/eventfd.h>
#include <linux/slab.h>
void rvsock_mutex_lock(struct mutex *m) { mutex_lock(m); }
void rvsock_eventfd_signal(struct eventfd_ctx *ctx) { eventfd_signal(ctx); }
void *rvsock_kvzalloc(size_t size, gfp_t gfp) { return kvzalloc(size, gfp); }
struct task_struct *rvsock_current(void) { return current; }
/* compat_ptr_ioctl, or NULL on a kernel without CONFIG_COMPAT (linux/fs.h defines it so). */
rvsock_ioctl_fn rvsock_compat_ptr_ioctl(void) { return compat_ptr_ioctl; }
#ifdef RVSOCK_SHIM_VHOST
#include "vhost.h"
/* acked_features is a union member (with acked_features_array) since 7.x: C names it alike. */
void rvsock_vq_set_acked_features(struct vhost_virtqueue *vq, u64 features) { vq->acked_features = features; }
bool rvsock_vhost_has_feature(struct vhost_virtqueue *vq, int bit) { return vhost_has_feature(vq, bit); }
#endif
/* virtio_transport */
#include <linux/virtio.h>
#include <linux/virtio_config.h>
int rvsock_virtio_find_vqs(struct virtio_device *vdev, unsigned int nvqs, struct virtqueue **vqs, struct virtqueue_info *vqs_info) { return virtio_find_vqs(vdev, nvqs, vqs, vqs_info, NULL); }
void rvsock_virtio_del_vqs(struct virtio_device *vdev) { vdev->config->del_vqs(vdev); }
bool rvsock_virtio_has_feature(const struct virtio_device *vdev, unsigned int fbit) { return virtio_has_feature(vdev, fbit); }
void rvsock_virtio_device_ready(struct virtio_device *vdev) { virtio_device_ready(vdev); }
u64 rvsock_virtio_cread64(struct virtio_device *vdev, unsigned int offset) { return virtio_cread64(vdev, offset); }
bool rvsock_virtio_queue_work(struct workqueue_struct *wq, struct work_struct *w) { return queue_work(wq, w); }
/* A macro (allocation profiling hooks) since 6.13, a function before: C calls it alike. */
struct workqueue_struct *rvsock_alloc_workqueue(const char *name, unsigned int flags, int max_active) { return alloc_workqueue("%s", flags, max_active, name); }
void rvsock_virtio_sg_set_buf(struct scatterlist *sg, const void *buf, unsigned int len) { sg_set_buf(sg, buf, len); }
void rvsock_virtio_sg_set_page(struct scatterlist *sg, struct page *page, unsigned int len, unsigned int offset) { sg_set_page(sg, page, len, offset); }
/* kernel-socket users (tools/testing/vsock/ktest) */
void rvsock_sk_callback_read_lock(struct sock *sk) { read_lock_bh(&sk->sk_callback_lock); }
void rvsock_sk_callback_read_unlock(struct sock *sk) { read_unlock_bh(&sk->sk_callback_lock); }
void rvsock_sk_callback_write_lock(struct sock *sk) { write_lock_bh(&sk->sk_callback_lock); }
void rvsock_sk_callback_write_unlock(struct sock *sk) { write_unlock_bh(&sk->sk_callback_lock); }
