use super::*;
use crate::hdr::{HDR_LEN, MAX_PKT_BUF_SIZE};
use std::collections::VecDeque;

/// Buckets holding (flow, payload length) packets, as the vhost device holds `Pkt`s.
struct Q {
    st: Vec<FlowState>,
    q: Vec<VecDeque<(usize, u32)>>,
    sched: FlowSched,
}

impl Flows for Q {
    fn state(&mut self, i: usize) -> Option<&mut FlowState> {
        self.st.get_mut(i)
    }
    fn has_pkts(&self, i: usize) -> bool {
        self.q.get(i).is_some_and(|q| !q.is_empty())
    }
}

impl Q {
    fn new() -> Self {
        Q { st: vec![FlowState::new(); FQ_BUCKETS], q: vec![VecDeque::new(); FQ_BUCKETS], sched: FlowSched::new() }
    }
    /// Flow `flow` uses bucket `flow` (the tests pick buckets, not hashes).
    fn push(&mut self, flow: usize, len: u32) {
        self.q[flow].push_back((flow, len));
        let mut s = self.sched;
        s.activate(self, flow);
        self.sched = s;
    }
    fn pop(&mut self) -> Option<(usize, u32)> {
        let mut s = self.sched;
        let b = s.next(self);
        self.sched = s;
        let b = b?;
        let p = self.q[b].pop_front().expect("next() names a bucket with packets");
        let mut s = self.sched;
        s.charge(self, b, p.1 + HDR_LEN as u32);
        self.sched = s;
        Some(p)
    }
}

#[test]
fn quantum_is_a_full_packet() {
    assert_eq!(FQ_QUANTUM as usize, MAX_PKT_BUF_SIZE as usize + HDR_LEN);
    assert_eq!(1usize << (32 - HASH_SHIFT), FQ_BUCKETS);
}

#[test]
fn empty_gives_none() {
    let mut q = Q::new();
    assert_eq!(q.pop(), None);
    q.push(3, 10);
    assert_eq!(q.pop(), Some((3, 10)));
    assert_eq!(q.pop(), None);
    assert_eq!(q.pop(), None);
}

#[test]
fn one_flow_keeps_its_order() {
    let mut q = Q::new();
    for n in 0..100u32 {
        q.push(7, n);
    }
    for n in 0..100u32 {
        assert_eq!(q.pop(), Some((7, n)));
    }
    assert_eq!(q.pop(), None);
}

#[test]
fn a_new_flow_goes_ahead_of_a_backlog() {
    let mut q = Q::new();
    // Eight bulk flows, 32 full packets each (their 2 MiB of credit).
    for _ in 0..32 {
        for f in 0..8 {
            q.push(f, 65536);
        }
    }
    // Let them run a while: they are old flows now.
    for _ in 0..20 {
        q.pop().unwrap();
    }
    q.push(100, 64);
    // The request is the next packet sent.
    assert_eq!(q.pop(), Some((100, 64)));
    // It comes back a little later: it went through the busy list once (it emptied while
    // new), so it waits for at most one turn of each busy flow.
    q.pop().unwrap();
    q.push(100, 64);
    let mut before = 0;
    while q.pop() != Some((100, 64)) {
        before += 1;
        assert!(before <= 8, "waited behind {before} packets");
    }
    // Gone idle (a full round passed): new again, straight to the front.
    for _ in 0..16 {
        q.pop().unwrap();
    }
    q.push(100, 64);
    assert_eq!(q.pop(), Some((100, 64)));
}

#[test]
fn busy_flows_share_bytes_evenly() {
    let mut q = Q::new();
    // Flow 1 sends 64 KiB packets, flow 2 4 KiB ones, both always backlogged.
    let mut sent = [0u64; 3];
    for _ in 0..64 {
        q.push(1, 65536);
    }
    for _ in 0..1024 {
        q.push(2, 4096);
    }
    for _ in 0..512 {
        let (f, len) = q.pop().unwrap();
        sent[f] += u64::from(len);
        q.push(f, len);
    }
    let (a, b) = (sent[1] as f64, sent[2] as f64);
    assert!((a / b - 1.0).abs() < 0.05, "{a} vs {b}");
}

#[test]
fn returning_flows_cannot_starve_busy_ones() {
    let mut q = Q::new();
    for _ in 0..10 {
        q.push(1, 65536);
    }
    // Sparse flows that come back after every packet sent: each still waits a turn of the
    // busy flow before it is new again.
    let mut bulk = 0;
    for round in 0..200 {
        for f in 10..20 {
            if !q.has_pkts(f) {
                q.push(f, 65536);
            }
        }
        let (f, len) = q.pop().unwrap();
        if f == 1 {
            bulk += 1;
            q.push(1, len);
        }
        assert!(round < 40 || bulk > 0, "the busy flow starved");
    }
    assert!(bulk >= 200 / 11 - 1, "busy flow got {bulk} of 200");
}

#[test]
fn put_back_keeps_the_bucket_first() {
    let mut q = Q::new();
    q.push(1, 100);
    q.push(2, 100);
    let mut s = q.sched;
    let b = s.next(&mut q).unwrap();
    q.sched = s;
    let p = q.q[b].pop_front().unwrap();
    // No receive buffer: back at the front, unsent, uncharged.
    q.q[b].push_front(p);
    let mut s = q.sched;
    s.put_back(&mut q, b);
    q.sched = s;
    assert_eq!(q.pop(), Some((b, 100)));
}

#[test]
fn put_back_into_an_idle_bucket_reactivates_it() {
    let mut q = Q::new();
    q.q[5].push_back((5, 1));
    let mut s = q.sched;
    s.put_back(&mut q, 5);
    q.sched = s;
    assert_eq!(q.pop(), Some((5, 1)));
    assert_eq!(q.pop(), None);
}

#[test]
fn clear_forgets_everything() {
    let mut q = Q::new();
    for f in 0..50 {
        q.push(f, 10);
    }
    for b in q.q.iter_mut() {
        b.clear();
    }
    let mut s = q.sched;
    s.clear(&mut q);
    q.sched = s;
    assert_eq!(q.pop(), None);
    q.push(4, 1);
    assert_eq!(q.pop(), Some((4, 1)));
}

#[test]
fn randomised_never_loses_or_reorders() {
    // A small xorshift: every packet queued comes out once, each flow in order, and next()
    // never gives up while packets wait.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut q = Q::new();
    let mut next_seq = vec![0u32; FQ_BUCKETS];
    let mut want = vec![0u32; FQ_BUCKETS];
    let mut queued = 0usize;
    for _ in 0..200_000 {
        if rnd(3) != 0 {
            let f = rnd(12) as usize * 17 % FQ_BUCKETS;
            q.push(f, next_seq[f]);
            next_seq[f] += 1;
            queued += 1;
        } else {
            match q.pop() {
                Some((f, seq)) => {
                    assert_eq!(seq, want[f]);
                    want[f] += 1;
                    queued -= 1;
                }
                None => assert_eq!(queued, 0),
            }
        }
    }
    while let Some((f, seq)) = q.pop() {
        assert_eq!(seq, want[f]);
        want[f] += 1;
        queued -= 1;
    }
    assert_eq!(queued, 0);
}

#[test]
fn the_hash_spreads_ports() {
    let s = FlowHash::new(42);
    let mut used = vec![0u32; FQ_BUCKETS];
    for p in 0..4096u32 {
        let h = Hdr { src_cid: 2, dst_cid: 3, src_port: 1024 + p, dst_port: 5000, ..Hdr::default() };
        used[s.bucket(&h)] += 1;
    }
    assert!(used.iter().all(|&n| n > 0 && n < 40), "{used:?}");
}
