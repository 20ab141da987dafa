//! What `bench` reads of the machine besides its own measurements: busy CPU ticks, slab
//! memory (meminfo `Slab:`, per cache, objects in use) and the scheduler's counters of a
//! thread and of the vhost workers; and the `RVSOCK-BENCH-SLAB`, `RVSOCK-BENCH-SCHED` and
//! `# flood slab` lines made from them.

/// Busy CPU time of the whole machine (all CPUs), from /proc/stat, in clock ticks: user,
/// nice, system, irq and softirq. Not idle and iowait; not steal (time the hypervisor gave
/// elsewhere); and not guest and guest_nice, which the kernel counts in user and nice already
/// (a nested L1 host's QEMU running an L2 guest under KVM: summing every field counted the
/// guest's vCPU time twice, until 2026-12-05).
pub(crate) fn busy_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> =
        s.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    [0, 1, 2, 5, 6].iter().map(|&i| f.get(i).copied().unwrap_or(0)).sum()
}

/// Kernel slab memory in bytes (/proc/meminfo `Slab:`).
pub(crate) fn slab_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("Slab:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Memory of each slab cache (`/proc/slabinfo`: slabs x pages per slab x 4 KiB), by name;
/// empty when unreadable. Shows where `idle_mem_per_conn` goes.
pub(crate) fn slab_caches() -> Vec<(String, u64)> {
    let s = std::fs::read_to_string("/proc/slabinfo").unwrap_or_default();
    s.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("slabinfo"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // name active num objsize perslab pagesperslab : tunables a b c : slabdata act num shared
            let pages: u64 = f.get(5)?.parse().ok()?;
            let slabs: u64 = f.get(14)?.parse().ok()?;
            Some((f.first()?.to_string(), slabs * pages * 4096))
        })
        .collect()
}

/// Objects in use of each slab cache (`/proc/slabinfo` active_objs) and their size, by name:
/// a cache's memory moves a whole slab at a time, its objects one by one.
pub(crate) fn slab_objs() -> Vec<(String, u64, u64)> {
    let s = std::fs::read_to_string("/proc/slabinfo").unwrap_or_default();
    s.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("slabinfo"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.to_string(), f.get(1)?.parse().ok()?, f.get(3)?.parse().ok()?))
        })
        .collect()
}

/// A machine's slab memory: every cache's, and meminfo's `Slab:` (which also counts kmalloc
/// allocations past 8 KiB, served by the page allocator and in no cache).
pub(crate) struct SlabSnap {
    pub(crate) caches: Vec<(String, u64)>,
    /// (name, objects in use, object size) of every cache.
    pub(crate) objs: Vec<(String, u64, u64)>,
    pub(crate) total: u64,
}

/// Has every slab cache give its CPUs' cached free objects back to its slabs (sysfs
/// `/sys/kernel/slab/<cache>/shrink`, kmem_cache_shrink): slabinfo counts an object freed into
/// a CPU's slab, partial list or sheaf as in use until then.
fn slab_flush() {
    for e in std::fs::read_dir("/sys/kernel/slab").into_iter().flatten().flatten() {
        if !e.file_type().is_ok_and(|t| t.is_symlink()) {
            let _ = std::fs::write(e.path().join("shrink"), b"1");
        }
    }
}

pub(crate) fn slab_snap() -> SlabSnap {
    slab_flush();
    let caches = slab_caches();
    SlabSnap { total: slab_bytes(), objs: slab_objs(), caches }
}

impl SlabSnap {
    /// The large kmalloc allocations (`Slab:` beyond the caches).
    pub(crate) fn large(&self) -> u64 {
        self.total.saturating_sub(self.caches.iter().map(|c| c.1).sum())
    }

    /// Kernel memory allocated through kmalloc and the slab caches: the objects in use, and
    /// the large kmallocs. Between two snapshots a cache's pages moved by 50-280 KB where
    /// its objects in use did not move at all (SLUB freeing empty slabs of its partial lists),
    /// which made a flood's figure of `Slab:` swing by a byte per byte of it.
    pub(crate) fn live(&self) -> u64 {
        self.objs.iter().map(|o| o.1 * o.2).sum::<u64>() + self.large()
    }

    /// A cache's objects in use and their bytes (0 for a cache not in the snapshot).
    fn in_use(&self, name: &str) -> (i64, i64) {
        self.objs.iter().find(|o| o.0 == name).map_or((0, 0), |o| (o.1 as i64, (o.1 * o.2) as i64))
    }
}

/// A number field of a task's `/proc/.../status` (`task`: its directory, e.g.
/// `/proc/thread-self`), such as `voluntary_ctxt_switches`.
pub(crate) fn status_field(task: &str, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("{task}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().parse().ok())
}

/// A thread's scheduler counters: CPU time and time spent runnable but waiting for a CPU
/// (`/proc/<task>/schedstat`, ns), and how often it was switched out while runnable
/// (`nonvoluntary_ctxt_switches`: preempted).
#[derive(Clone, Copy, Default)]
pub(crate) struct SchedCounts {
    run_ns: u64,
    wait_ns: u64,
    preempted: u64,
}

impl SchedCounts {
    pub(crate) fn of(task: &str) -> Option<Self> {
        let st = std::fs::read_to_string(format!("{task}/schedstat")).ok()?;
        let mut f = st.split_whitespace().map(|x| x.parse::<u64>().ok());
        let (run_ns, wait_ns) = (f.next()??, f.next()??);
        let preempted = status_field(task, "nonvoluntary_ctxt_switches").unwrap_or(0);
        Some(Self { run_ns, wait_ns, preempted })
    }

    pub(crate) fn add(self, o: Self) -> Self {
        Self { run_ns: self.run_ns + o.run_ns, wait_ns: self.wait_ns + o.wait_ns, preempted: self.preempted + o.preempted }
    }
}

/// This thread's scheduler counters and the sum over the machine's vhost workers (threads
/// named `vhost-<pid>`, the in-tree and the rvsock host drivers alike).
pub(crate) fn sched_snap() -> (SchedCounts, SchedCounts) {
    let me = SchedCounts::of("/proc/thread-self").unwrap_or_default();
    let mut vhost = SchedCounts::default();
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        for t in std::fs::read_dir(p.path().join("task")).into_iter().flatten().flatten() {
            let task = t.path();
            let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
            if comm.starts_with("vhost-") {
                if let Some(c) = SchedCounts::of(&task.to_string_lossy()) {
                    vhost = vhost.add(c);
                }
            }
        }
    }
    (me, vhost)
}

/// Prints `RVSOCK-BENCH-SCHED <metric> <thread> <run us> <wait us> <preemptions>` per
/// operation for this thread (`client`) and the vhost workers (when there are any) between
/// two `sched_snap`s.
pub(crate) fn report_sched(metric: &str, before: (SchedCounts, SchedCounts), after: (SchedCounts, SchedCounts), n: u64) {
    let n = n.max(1) as f64;
    let per = |b: SchedCounts, a: SchedCounts, who: &str| {
        println!(
            "RVSOCK-BENCH-SCHED {metric} {who} {:.1} {:.1} {:.3}",
            a.run_ns.saturating_sub(b.run_ns) as f64 / n / 1e3,
            a.wait_ns.saturating_sub(b.wait_ns) as f64 / n / 1e3,
            a.preempted.saturating_sub(b.preempted) as f64 / n
        )
    };
    per(before.0, after.0, "client");
    if after.1.run_ns > 0 {
        per(before.1, after.1, "vhost");
    }
}

/// Prints `RVSOCK-BENCH-SLAB <cache> <bytes per connection>` for every cache that grew by at
/// least 4 bytes per connection between `before` and `after`.
pub(crate) fn report_slab_growth(before: &[(String, u64)], after: &[(String, u64)], n: usize) {
    for (name, a) in after {
        let b = before.iter().find(|(m, _)| m == name).map_or(0, |x| x.1);
        let per = a.saturating_sub(b) as f64 / n as f64;
        if per >= 4.0 {
            println!("RVSOCK-BENCH-SLAB {name} {per:.1}");
        }
    }
}

/// Prints `# flood slab <side> <cache> <+-bytes> objects <+-n> in use <+-bytes>` for every
/// cache whose memory or whose objects in use moved by at least 16 KiB between `before` and
/// `after`: where `flood_mem_per_byte` goes.
fn report_slab_moves(side: &str, before: &SlabSnap, after: &SlabSnap) {
    let get = |v: &[(String, u64)], name: &str| v.iter().find(|(m, _)| m == name).map_or(0, |x| x.1) as i64;
    for (name, a) in &after.caches {
        let d = *a as i64 - get(&before.caches, name);
        let (o1, b1) = after.in_use(name);
        let (o0, b0) = before.in_use(name);
        if d.abs() >= 16 << 10 || (b1 - b0).abs() >= 16 << 10 {
            println!("# flood slab {side} {name} {d:+} objects {:+} in use {:+}", o1 - o0, b1 - b0);
        }
    }
}

/// Prints `# flood slab <side>-base <cache> <bytes>` for the caches of at least 64 KiB, and
/// their sum over all caches: what the stacks' Slab baselines are made of.
fn report_slab_top(side: &str, caches: &[(String, u64)]) {
    let mut v: Vec<&(String, u64)> = caches.iter().collect();
    v.sort_unstable_by_key(|c| std::cmp::Reverse(c.1));
    for (name, n) in v.into_iter().filter(|c| c.1 >= 64 << 10) {
        println!("# flood slab {side}-base {name} {n}");
    }
    println!("# flood slab {side}-base all-caches {}", caches.iter().map(|c| c.1).sum::<u64>());
}

/// The flood's slab lines of one machine (`side`) at its `n`th snapshot: 0 before the flood
/// (the baseline), 1 after its warm-up (what that changed), 2 at its end (what it took).
pub(crate) fn report_flood_slab(side: &str, n: u32, last: Option<&SlabSnap>, now: &SlabSnap) {
    match (n, last) {
        (0, _) | (_, None) => {
            report_slab_top(side, &now.caches);
            println!("# flood slab {side}-base large-kmalloc {}", now.large());
        }
        (_, Some(l)) => {
            let side = if n == 1 { format!("{side}-warmup") } else { side.to_string() };
            report_slab_moves(&side, l, now);
            println!("# flood slab {side} large-kmalloc {:+}", now.large() as i64 - l.large() as i64);
        }
    }
}

/// Where a machine's CPU time goes, by thread class (`/proc/<pid>/task/<tid>/schedstat`, ns):
/// this process (`bench`), the vhost workers, an L2 guest's QEMU (all its threads: in a nested
/// L1 host, the guest's whole vCPU time), kworkers, ksoftirqd, every other thread; and the
/// machine's busy time (/proc/stat) beside it, so that what no thread was charged (interrupt
/// time, with IRQ_TIME_ACCOUNTING) shows as `unattributed`.
/// On a nested L1 host it also holds KVM's counters of its guests' vCPUs (`KVM_STATS`, from
/// /sys/kernel/debug/kvm): the L2 guest's exits (its notifications, interrupt completions,
/// halts), the interrupts injected into it and its halts, which cost the L1 more than most
/// of what the L2 runs.
pub(crate) struct CpuSplit {
    classes: [u64; CPU_CLASSES.len()],
    /// How many times this process's threads got a CPU (schedstat's third field): mostly
    /// wakeups from a wait, what a stack that wakes its reader or writer less often saves.
    bench_runs: u64,
    busy_ticks: u64,
    kvm: Option<[u64; KVM_STATS.len()]>,
    /// rvsock's counters (`STACK_COUNTERS`); zero on the in-tree stack.
    counters: [u64; STACK_COUNTERS.len()],
}

/// rvsock's counters the CPU lines give per unit: the core's sync-send counters summed over
/// its transports (chunks sent as pinned pages, and those the sender copied itself), and its
/// guest driver's packets sent and, of them, those that waited for the tx work to post them
/// (`tx_queued`: the ring had packets in flight).
const STACK_COUNTERS: [(&str, &str); 4] = [
    ("pinned", "tx_pinned"),
    ("pinned-copied", "tx_pinned_copied"),
    ("virtio-tx-packets", "rvsock_virtio/tx_packets"),
    ("virtio-tx-queued", "rvsock_virtio/tx_queued"),
];

/// The value of a `STACK_COUNTERS` file: a driver's own (`<folder>/<name>`) or the core's summed
/// over its transports; 0 where absent.
fn stack_counter(file: &str) -> u64 {
    if file.contains('/') {
        return crate::sys::read_counter(&format!("/sys/kernel/debug/{file}")).unwrap_or(0);
    }
    ["loopback", "virtio", "vhost"].iter().filter_map(|t| crate::sys::rvsock_counter(t, file).ok()).sum()
}

/// KVM counters read for a `CpuSplit` (file names under /sys/kernel/debug/kvm), in print
/// order, each printed as the class `l2-<name>`.
const KVM_STATS: [&str; 3] = ["exits", "irq_injections", "halt_exits"];

/// KVM's counters (`KVM_STATS`), when this machine runs KVM guests and debugfs shows them.
fn kvm_counts() -> Option<[u64; KVM_STATS.len()]> {
    let mut v = [0u64; KVM_STATS.len()];
    for (i, name) in KVM_STATS.iter().enumerate() {
        v[i] = std::fs::read_to_string(format!("/sys/kernel/debug/kvm/{name}")).ok()?.trim().parse().ok()?;
    }
    Some(v)
}

/// `CpuSplit` classes, in print order.
const CPU_CLASSES: [&str; 6] = ["bench", "vhost", "qemu", "kworker", "ksoftirqd", "other"];

fn cpu_class(me: bool, proc_comm: &str, comm: &str) -> usize {
    if me {
        0
    } else if comm.starts_with("vhost-") {
        1
    } else if proc_comm.starts_with("qemu") {
        2
    } else if comm.starts_with("kworker") {
        3
    } else if comm.starts_with("ksoftirqd") {
        4
    } else {
        5
    }
}

pub(crate) fn cpu_split() -> CpuSplit {
    let me = std::process::id().to_string();
    let mut classes = [0u64; CPU_CLASSES.len()];
    let mut bench_runs = 0;
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = p.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let proc_comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
        for t in std::fs::read_dir(p.path().join("task")).into_iter().flatten().flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            let st = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            let mut f = st.split_whitespace().map(|x| x.parse::<u64>().unwrap_or(0));
            let class = cpu_class(name == me, &proc_comm, &comm);
            classes[class] += f.next().unwrap_or(0);
            if class == 0 {
                bench_runs += f.nth(1).unwrap_or(0);
            }
        }
    }
    let counters = STACK_COUNTERS.map(|(_, file)| stack_counter(file));
    CpuSplit { classes, bench_runs, busy_ticks: busy_ticks(), kvm: kvm_counts(), counters }
}

/// Prints `RVSOCK-BENCH-CPU <metric> <side> <class> <us per unit>` for each class (and
/// `unattributed`) between two `cpu_split`s over `units` moved (MiB for a stream, thousands of
/// messages for SEQPACKET): where the CPU time of a metric goes on this machine (`side`:
/// client or sink). On a nested L1 host, also `l2-<counter>` lines: KVM's counters per unit
/// (counts, not microseconds).
pub(crate) fn report_cpu_split(metric: &str, side: &str, before: &CpuSplit, after: &CpuSplit, units: f64) {
    if units <= 0.0 {
        return;
    }
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let busy_ns = after.busy_ticks.saturating_sub(before.busy_ticks) as f64 * 1e9 / hz;
    let mut sum = 0.0;
    for (i, class) in CPU_CLASSES.iter().enumerate() {
        let ns = after.classes[i].saturating_sub(before.classes[i]) as f64;
        sum += ns;
        println!("RVSOCK-BENCH-CPU {metric} {side} {class} {:.1}", ns / 1e3 / units);
    }
    println!("RVSOCK-BENCH-CPU {metric} {side} unattributed {:.1}", (busy_ns - sum) / 1e3 / units);
    println!("RVSOCK-BENCH-CPU {metric} {side} bench-runs {:.1}", after.bench_runs.saturating_sub(before.bench_runs) as f64 / units);
    for (i, (name, _)) in STACK_COUNTERS.iter().enumerate() {
        let n = after.counters[i].saturating_sub(before.counters[i]);
        println!("RVSOCK-BENCH-CPU {metric} {side} {name} {:.1}", n as f64 / units);
    }
    if let (Some(b), Some(a)) = (before.kvm, after.kvm) {
        for (i, name) in KVM_STATS.iter().enumerate() {
            println!("RVSOCK-BENCH-CPU {metric} {side} l2-{name} {:.1}", a[i].saturating_sub(b[i]) as f64 / units);
        }
    }
}

/// `report_cpu_split`'s unit for a stream: MiB in `bytes`.
pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}
