#!/usr/bin/env bash
# The benchmark's table from a bench log (scripts/bench.sh writes build/logs*/bench.log):
# `RVSOCK-BENCH <stack> <round> <transport> <metric> <value> <unit> <better>` lines.
# Usage: scripts/bench-table.sh LOG   (also to tabulate an earlier run's log again)
set -euo pipefail
LOG=$1
grep -a '^RVSOCK-BENCH ' "$LOG" | tr -d '\r' | awk '
    # $2 stack, $3 round, $4 transport, $5 metric, $6 value, $7 unit, $8 better
    { key = $4 "|" $5; v[$2, key, ++n[$2, key]] = $6; unit[key] = $7; better[key] = $8; keys[key] = 1
      byround[$2, key, $3] = $6; if ($3 > rounds) rounds = $3 }
    function sort_(a, c,   i, j, t) {
        for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    }
    function median(a, c) { sort_(a, c); return c % 2 ? a[(c + 1) / 2] : (a[c / 2] + a[c / 2 + 1]) / 2 }
    function med(s, k,   i, c, a) { c = n[s, k]; for (i = 1; i <= c; i++) a[i] = v[s, k, i]; return median(a, c) }
    function spread(s, k,   i, lo, hi, m) {
        lo = hi = v[s, k, 1]; for (i = 2; i <= n[s, k]; i++) { if (v[s, k, i] < lo) lo = v[s, k, i]; if (v[s, k, i] > hi) hi = v[s, k, i] }
        m = med(s, k); return m ? 100 * (hi - lo) / m : 0
    }
    # The ratio of each round (both stacks measured minutes apart, in one VM for loopback),
    # then their median and spread: drift of the machine over the run cancels out.
    function paired(k,   r, c, x, q, m) {
        m = 0
        for (r = 1; r <= rounds; r++) {
            c = byround["c", k, r]; x = byround["rvsock", k, r]
            if (c > 0 && x > 0) q[++m] = (better[k] == "lower") ? c / x : x / c
        }
        if (!m) { plo = phi = tlo = thi = 0; return 0 }
        sort_(q, m); plo = q[1]; phi = q[m]
        # Without the best and the worst round (5 rounds or more): one disturbed round (the
        # host busy elsewhere for a few seconds) is what makes most of the full spread.
        tlo = m >= 5 ? q[2] : q[1]; thi = m >= 5 ? q[m - 1] : q[m]
        return median(q, m)
    }
    END {
        printf "%-10s %-22s %12s %12s %6s %8s %7s %6s %6s  %s\n", "transport", "metric", "C", "rvsock", "ratio", "ratio+-%", "trim+-%", "C+-%", "rv+-%", "unit (better)"
        for (k in keys) {
            split(k, p, "|"); c = med("c", k); r = med("rvsock", k)
            ratio = paired(k); rs = ratio ? 100 * (phi - plo) / ratio : 0; ts = ratio ? 100 * (thi - tlo) / ratio : 0
            printf "%-10s %-22s %12.2f %12.2f %6.2f %8.1f %7.1f %6.1f %6.1f  %s (%s)\n", p[1], p[2], c, r, ratio, rs, ts, spread("c", k), spread("rvsock", k), unit[k], better[k]
        }
    }' | (read -r h; echo "$h"; sort)
echo "ratio: the median over rounds of each round's rvsock/C (C/rvsock for 'lower' metrics), > 1 means"
echo "rvsock is better; ratio+-%: the spread of those per-round ratios (max - min, in % of their median),"
echo "trim+-% the same without the best and the worst round (5 rounds or more); C, rvsock: each stack's"
echo "median, C+-% and rv+-% their spreads."
