/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Thin C wrappers of static inline functions and macros the Rust code cannot call directly.
 * Implemented in rvsock_shim.c (compiled into each module that needs them). No logic here.
 */
#ifndef RVSOCK_SHIM_H
#define RVSOCK_SHIM_H
#include <net/sock.h>
#include <linux/uio.h>
#include <linux/workqueue.h>

void rvsock_lock_sock(struct sock *sk);
void rvsock_sock_hold(struct sock *sk);
void rvsock_sock_put(struct sock *sk);
wait_queue_head_t *rvsock_sk_sleep(struct sock *sk);
void rvsock_sock_orphan(struct sock *sk);
void rvsock_sock_graft(struct sock *sk, struct socket *parent);
bool rvsock_sock_flag(const struct sock *sk, enum sock_flags flag);
void rvsock_sock_set_flag(struct sock *sk, enum sock_flags flag);
long rvsock_sock_rcvtimeo(const struct sock *sk, bool noblock);
long rvsock_sock_sndtimeo(const struct sock *sk, bool noblock);
int rvsock_sock_intr_errno(long timeo);
int rvsock_sock_rcvlowat(const struct sock *sk, int waitall, int len);
void rvsock_sock_poll_wait(struct file *filp, struct socket *sock, poll_table *p);
bool rvsock_signal_pending(void);
bool rvsock_fatal_signal_pending(void);
bool rvsock_current_exiting(void);
void rvsock_security_sk_clone(const struct sock *sk, struct sock *newsk);
u32 rvsock_jhash_3words(u32 a, u32 b, u32 c, u32 initval);
size_t rvsock_copy_from_iter(void *addr, size_t bytes, struct iov_iter *i);
size_t rvsock_copy_to_iter(const void *addr, size_t bytes, struct iov_iter *i);
size_t rvsock_iov_iter_count(const struct iov_iter *i);
void rvsock_init_delayed_work(struct delayed_work *w, work_func_t fn);
void rvsock_init_work(struct work_struct *w, work_func_t fn);
void rvsock_spin_lock_bh(spinlock_t *l);
void rvsock_spin_unlock_bh(spinlock_t *l);
void rvsock_wake_up_interruptible(struct wait_queue_head *wq);
bool rvsock_capable_net_bind(void);
bool rvsock_try_module_get(struct module *m);
void rvsock_module_put(struct module *m);
struct module *rvsock_this_module(void);
void rvsock_sk_acceptq_added(struct sock *sk);
void rvsock_sk_acceptq_removed(struct sock *sk);
bool rvsock_sk_acceptq_is_full(const struct sock *sk);
struct net *rvsock_sock_net(const struct sock *sk);
void *rvsock_net_generic(const struct net *net, unsigned int id);
struct net *rvsock_current_net(void);
bool rvsock_net_is_init(const struct net *net);
bool rvsock_net_eq_init(const struct sock *sk);

void *rvsock_kmalloc(size_t size, gfp_t gfp);
struct kmem_cache *rvsock_kmem_cache_create(const char *name, unsigned int size);
void *rvsock_kmem_cache_alloc(struct kmem_cache *c, gfp_t gfp);
void rvsock_kmem_cache_destroy(struct kmem_cache *c);
void rvsock_sock_reset_flag(struct sock *sk, enum sock_flags flag);
bool rvsock_schedule_delayed_work(struct delayed_work *w, unsigned long delay);
bool rvsock_schedule_work(struct work_struct *w);
void rvsock_wmem_charge(struct sock *sk, unsigned int n);
int rvsock_wmem_sub_return(struct sock *sk, unsigned int n);
unsigned int rvsock_wmem_get(const struct sock *sk);
void rvsock_write_space(struct sock *sk);
struct ubuf_info;
void rvsock_zcopy_get(struct ubuf_info *uarg);
void rvsock_zcopy_complete(struct ubuf_info *uarg, bool success);
void rvsock_zcopy_put_abort(struct ubuf_info *uarg);
void rvsock_zcopy_set_copied(struct ubuf_info *uarg);
size_t rvsock_iov_iter_offset(const struct iov_iter *i);
void rvsock_put_page(struct page *page);
struct page *rvsock_alloc_page(gfp_t gfp);
struct page *rvsock_alloc_compound(gfp_t gfp, unsigned int order);
void rvsock_get_page(struct page *page);
void rvsock_memcpy_page(struct page *dst, struct page *src, size_t off, size_t len);
size_t rvsock_copy_page_to_iter_nofault(struct page *page, size_t off, size_t len, struct iov_iter *i);
bool rvsock_iter_user_backed(const struct iov_iter *i);
bool rvsock_iter_is_bvec(const struct iov_iter *i);
bool rvsock_sendpage_ok(struct page *page);
bool rvsock_errqueue_empty(const struct sock *sk);
void rvsock_errqueue_purge(struct sock *sk);
struct dentry;
struct dentry *rvsock_debugfs_dir(const char *name, struct dentry *parent);
void rvsock_debugfs_u64(const char *name, struct dentry *dir, u64 *val);
void rvsock_debugfs_remove(struct dentry *d);
void rvsock_trace_alloc_pkt(u32 src_cid, u32 src_port, u32 dst_cid, u32 dst_port, u32 len, u16 type, u16 op, u32 flags, bool zcopy);
void rvsock_trace_recv_pkt(u32 src_cid, u32 src_port, u32 dst_cid, u32 dst_port, u32 len, u16 type, u16 op, u32 flags, u32 buf_alloc, u32 fwd_cnt);
void rvsock_trace_sk_state(u32 src_cid, u32 src_port, u32 dst_cid, u32 dst_port, u16 type, u8 old_state, u8 new_state, u8 shutdown);
struct vsock_tap;
struct net_device;
struct page;
struct net_device *rvsock_tap_dev(const struct vsock_tap *vt);
struct module *rvsock_tap_module(const struct vsock_tap *vt);
unsigned short rvsock_netdev_type(const struct net_device *dev);
void rvsock_module_get(struct module *m);
void rvsock_dev_hold(struct net_device *dev);
void rvsock_dev_put(struct net_device *dev);
struct sk_buff *rvsock_alloc_skb(unsigned int size, gfp_t gfp);
void rvsock_skb_put_data(struct sk_buff *skb, const void *data, unsigned int len);
void *rvsock_skb_put(struct sk_buff *skb, unsigned int len);
unsigned int rvsock_skb_tailroom(const struct sk_buff *skb);
int rvsock_dev_queue_xmit(struct sk_buff *skb, struct net_device *dev);
void rvsock_consume_skb(struct sk_buff *skb);
void rvsock_memcpy_from_page(void *to, struct page *page, size_t off, size_t len);
struct sk_buff *rvsock_alloc_skb_frags(unsigned long len, gfp_t gfp);
int rvsock_skb_store_page(struct sk_buff *skb, int offset, struct page *page, size_t off, int len);
struct nlmsghdr;
struct netlink_callback;
u64 rvsock_sock_i_ino(struct sock *sk);
int rvsock_diag_dump_start(struct sk_buff *skb, struct nlmsghdr *nlh, int (*dump)(struct sk_buff *, struct netlink_callback *));
void *rvsock_nlmsg_data(const struct nlmsghdr *nlh);
int rvsock_nlmsg_len(const struct nlmsghdr *nlh);
struct nlmsghdr *rvsock_nlmsg_put(struct sk_buff *skb, u32 portid, u32 seq, int type, int payload, int flags);
void rvsock_nlmsg_end(struct sk_buff *skb, struct nlmsghdr *nlh);
void rvsock_nlmsg_cancel(struct sk_buff *skb, struct nlmsghdr *nlh);
u32 rvsock_netlink_portid(const struct sk_buff *skb);
struct net *rvsock_skb_net(const struct sk_buff *skb);
unsigned int rvsock_skb_len(const struct sk_buff *skb);
long *rvsock_nl_cb_args(struct netlink_callback *cb);
#endif
/* vhost_vsock */
#ifndef RVSOCK_SHIM_VHOST_H
#define RVSOCK_SHIM_VHOST_H
struct mutex;
struct eventfd_ctx;
struct task_struct;
void rvsock_mutex_lock(struct mutex *m);
void rvsock_eventfd_signal(struct eventfd_ctx *ctx);
void *rvsock_kvzalloc(size_t size, gfp_t gfp);
struct task_struct *rvsock_current(void);
struct vhost_virtqueue;
void rvsock_vq_set_acked_features(struct vhost_virtqueue *vq, u64 features);
bool rvsock_vhost_has_feature(struct vhost_virtqueue *vq, int bit);
struct file;
typedef long (*rvsock_ioctl_fn)(struct file *, unsigned int, unsigned long);
rvsock_ioctl_fn rvsock_compat_ptr_ioctl(void);
#endif
/* virtio_transport */
#ifndef RVSOCK_SHIM_VIRTIO_H
#define RVSOCK_SHIM_VIRTIO_H
struct virtio_device;
struct virtqueue;
struct virtqueue_info;
struct workqueue_struct;
struct work_struct;
int rvsock_virtio_find_vqs(struct virtio_device *vdev, unsigned int nvqs, struct virtqueue **vqs, struct virtqueue_info *vqs_info);
void rvsock_virtio_del_vqs(struct virtio_device *vdev);
bool rvsock_virtio_has_feature(const struct virtio_device *vdev, unsigned int fbit);
void rvsock_virtio_device_ready(struct virtio_device *vdev);
u64 rvsock_virtio_cread64(struct virtio_device *vdev, unsigned int offset);
bool rvsock_virtio_queue_work(struct workqueue_struct *wq, struct work_struct *w);
struct workqueue_struct *rvsock_alloc_workqueue(const char *name, unsigned int flags, int max_active);
struct scatterlist;
struct page;
void rvsock_virtio_sg_set_buf(struct scatterlist *sg, const void *buf, unsigned int len);
void rvsock_virtio_sg_set_page(struct scatterlist *sg, struct page *page, unsigned int len, unsigned int offset);
#endif
/* kernel-socket users (tools/testing/vsock/ktest): sk_callback_lock */
#ifndef RVSOCK_SHIM_KSOCK_H
#define RVSOCK_SHIM_KSOCK_H
void rvsock_sk_callback_read_lock(struct sock *sk);
void rvsock_sk_callback_read_unlock(struct sock *sk);
void rvsock_sk_callback_write_lock(struct sock *sk);
void rvsock_sk_callback_write_unlock(struct sock *sk);
#endif
