#!/usr/bin/env bash
# scripts/api-load.sh — the control API under load as the topology grows (issue 20), root.
#
# Runs `cargo bench --bench api` (the load matrix of benches/api.rs) BENCH_RUNS times and prints,
# for each topology size, client count and scenario, the median over the runs of: operations per
# second, p50 and p99 latency of one request (ms). Also the daemon's resident memory after
# preloading each size, and from it the memory per instance. Every run starts a fresh
# `vpcd up --state` per size in a temporary directory and stops it (benches/api.rs's `Up` drop:
# SIGTERM, `vpcd down`), so nothing is left behind; the netns scenario makes namespaces with the
# prefix `vbapi` only, and removes them.
#
# Scenarios (each request is one HTTP exchange on a new Unix-socket connection, as `vpcd ctl`
# makes; every change is durable before its answer):
#   sim_attach_detach           add_instance + remove_instance of an in-process instance
#   netns_attach_detach         the same with a namespace and a TUN device
#   netns_attach                add_instance (netns) only; the instances are removed after the
#                               measured time (vpcd up runs with --warm-pool API_WARM_POOL, default
#                               256, and each netns scenario starts with the pool full)
#   eip_associate_disassociate  associate_eip (1:1 to the client's own instance) + disassociate_eip
#   sg_rule_add_remove          add_sg_rule + remove_sg_rule on the client's own security group
#   sim_attach_detach_batch20   one POST /v1/batch of 20 add_instance, then one of 20
#                               remove_instance (ops/s counts changes; latency is per request)
#
# Env: BENCH_RUNS (default 3), API_SIZES (default "1 1000 10000"), API_CLIENTS (default "1 16"),
# API_SECONDS (per scenario and client count, default 3), API_SCENARIOS (default: all of them),
# API_WARM_POOL (vpcd up --warm-pool for the run, default 256).
# Output: the median table on stdout; the raw lines of every run in $WORK/run-N.txt (printed).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${BENCH_RUNS:-3}
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "api-load.sh: BENCH_RUNS=$RUNS: a positive whole number" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "api-load.sh: needs root (vpcd up, namespaces)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "api-load.sh: needs python3" >&2; exit 2; }
WORK=$(mktemp -d /tmp/vpcd-api-load.XXXXXX)

export VPCD_API_BASIC=0
export VPCD_API_SIZES=${API_SIZES:-"1 1000 10000"}
export VPCD_API_CLIENTS=${API_CLIENTS:-"1 16"}
export VPCD_API_SECONDS=${API_SECONDS:-3}
export VPCD_API_WARM_POOL=${API_WARM_POOL:-256}
export VPCD_API_SCENARIOS=${API_SCENARIOS:-"sim_attach_detach eip_associate_disassociate sg_rule_add_remove netns_attach_detach netns_attach sim_attach_detach_batch20"}

cargo bench --bench api --no-run >/dev/null 2>&1 || cargo bench --bench api --no-run
for r in $(seq 1 "$RUNS"); do
    echo "api-load.sh: run $r of $RUNS" >&2
    cargo bench --bench api 2>/dev/null | tee "$WORK/run-$r.txt" >&2
done
echo "raw output: $WORK" >&2

python3 - "$WORK" "$RUNS" <<'EOF'
import re, statistics, sys
work, runs = sys.argv[1], int(sys.argv[2])
figs, rss = {}, {}
for r in range(1, runs + 1):
    for line in open(f"{work}/run-{r}.txt"):
        kv = dict(re.findall(r"(\w+)=([\d.]+)", line))
        words = line.split()
        if "clients" in kv and len(words) > 3:
            key = (int(kv["size"]), int(kv["clients"]), words[3])
            for f in ("ops_per_s", "p50_ms", "p99_ms"):
                figs.setdefault(key, {}).setdefault(f, []).append(float(kv[f]))
        elif "rss_kib" in kv:
            rss.setdefault(int(kv["size"]), []).append(float(kv["rss_kib"]))
med = statistics.median
print(f"| instances | clients | scenario | changes/s | p50 ms | p99 ms |  (median of {runs} runs; latency per request)")
print("|---:|---:|---|---:|---:|---:|")
for (size, clients, name), f in sorted(figs.items()):
    print(f"| {size} | {clients} | {name} | {med(f['ops_per_s']):.0f} | {med(f['p50_ms']):.2f} | {med(f['p99_ms']):.2f} |")
sizes = sorted(rss)
for s in sizes:
    print(f"rss after preloading {s} instances: {med(rss[s]) / 1024:.1f} MiB")
if len(sizes) > 1 and sizes[-1] > sizes[0]:
    lo, hi = sizes[0], sizes[-1]
    per = (med(rss[hi]) - med(rss[lo])) * 1024 / (hi - lo)
    print(f"memory per sim instance: {per / 1024:.1f} KiB ((rss at {hi} - rss at {lo}) / {hi - lo})")
EOF
