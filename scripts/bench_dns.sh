#!/usr/bin/env bash
# scripts/bench_dns.sh — the VPC resolver against dnsmasq with dnsperf, in one run (root).
#
# One `vpcd up` (run inside a namespace "vd-host" that stands for the host) of a VPC with two
# netns instances: `client` runs dnsperf, `dm` runs a dnsmasq serving the same 100 names the
# VPC's private zone holds. Another dnsmasq in vd-host is the VPC resolver's upstream
# (`[internet] resolvers`), serving 100 more names. Peers, all asked from `client`:
#   vpcd-auth      the VPC resolver (10.40.0.2), names of its private zone
#   vpcd-cached    the VPC resolver, names forwarded to the upstream once (a warm-up pass), then
#                  answered from its cache
#   dnsmasq-vpc    dnsmasq in `dm` (10.40.1.20): the same names, the same path through vpcd's
#                  fabric, answered by dnsmasq instead of the in-process resolver
#   dnsmasq-lo     dnsmasq on `client`'s own loopback: no fabric at all (the floor of the path)
# Metrics: dnsperf's queries per second (UDP, 100 queries outstanding, BENCH_SECONDS long) and
# the latency of each answer from dnsperf -v: median, p99 and max; and the queries dnsperf
# counted lost (no answer within its 5 s timeout) over all runs. Each figure is the median of
# BENCH_RUNS runs. Every namespace and process is removed on exit (trap); nothing leaves the
# namespaces this script makes (the upstream is on vd-host's loopback).
#
# Env: VPCD=path (default: builds target/release/vpcd), BENCH_SECONDS (default 5), BENCH_RUNS
# (default 3), BENCH_NO_APPEND=1 (do not touch BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${BENCH_SECONDS:-5}
RUNS=${BENCH_RUNS:-3}
P=vd
HOST=$P-host
UPSTREAM=192.0.2.53
WORK=$(mktemp -d /tmp/vpcd-bench-dns.XXXXXX)
PIDS=()

die() { echo "bench_dns.sh: $*" >&2; exit 2; }
for v in SECS RUNS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_${v/SECS/SECONDS}=${!v}: a positive whole number, please"
done
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, TUN devices)"
[ -e /dev/net/tun ] || die "/dev/net/tun is missing (modprobe tun)"
for t in ip dnsperf dnsmasq dig nsenter; do
    command -v "$t" >/dev/null || die "needs $t (Debian: see .ci/run)"
done

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ -n "${VPCD:-}" ] && [ -f "$WORK/topology.toml" ]; then
        VPCD_NETNS_PREFIX=$P VPCD_RUN_DIR=$WORK/run "$VPCD" down "$WORK/topology.toml" >/dev/null 2>&1 || true
    fi
    ip netns pids "$HOST" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns delete "$HOST" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

if [ -z "${VPCD:-}" ]; then
    cargo build --release --locked --bin vpcd >&2
    VPCD=$PWD/target/release/vpcd
fi

# 100 names in the private zone (and in dnsmasq-vpc, dnsmasq-lo), 100 behind the upstream.
records=""
DM_ARGS=()
UP_ARGS=()
: >"$WORK/auth.txt"
: >"$WORK/cached.txt"
for i in $(seq 0 99); do
    records+="  { name = \"a$i\", type = \"A\", value = \"10.40.2.$i\" },"$'\n'
    DM_ARGS+=("--host-record=a$i.bench.example,10.40.2.$i")
    UP_ARGS+=("--host-record=c$i.example.org,198.51.100.$((i + 100))")
    echo "a$i.bench.example A" >>"$WORK/auth.txt"
    echo "c$i.example.org A" >>"$WORK/cached.txt"
done
cat >"$WORK/topology.toml" <<EOF
[[vpc]]
name = "bench"
cidr = "10.40.0.0/16"
subnet = [{ name = "app", cidr = "10.40.1.0/24" }]
instance = [
  { name = "client", subnet = "app", ip = "10.40.1.10" },
  { name = "dm", subnet = "app", ip = "10.40.1.20" },
]

[[zone]]
name = "bench.example"
vpcs = ["bench"]
record = [
$records]

[internet]
uplink = "host"
resolvers = ["$UPSTREAM"]
EOF

dnsmasq_args() { # LISTEN PORT ARGS...: a foreground dnsmasq answering only what it is given
    local listen=$1 port=$2
    shift 2
    echo --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
        "--listen-address=$listen" "--port=$port" --pid-file= --local-ttl=300 \
        --cache-size=10000 --dns-forward-max=1000 "$@"
}

ip netns add "$HOST"
ip -n "$HOST" link set lo up
ip -n "$HOST" addr add "$UPSTREAM/32" dev lo
# shellcheck disable=SC2046
ip netns exec "$HOST" dnsmasq $(dnsmasq_args "$UPSTREAM" 53 "${UP_ARGS[@]}") 2>"$WORK/upstream.log" &
PIDS+=($!)

export VPCD_NETNS_PREFIX=$P VPCD_RUN_DIR=$WORK/run
nsenter --net=/run/netns/"$HOST" "$VPCD" up "$WORK/topology.toml" >"$WORK/up.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 300); do
    grep -q "ready: serving" "$WORK/up.log" && break
    sleep 0.1
done
grep -q "ready: serving" "$WORK/up.log" || die "vpcd up did not start: $(cat "$WORK/up.log")"
VPCD_PID=${PIDS[-1]}

ex() { "$VPCD" exec "bench/$1" -- "${@:2}"; }
# shellcheck disable=SC2046
ex dm dnsmasq $(dnsmasq_args 10.40.1.20 53 "${DM_ARGS[@]}") 2>"$WORK/dm.log" &
PIDS+=($!)
# shellcheck disable=SC2046
ex client dnsmasq $(dnsmasq_args 127.0.0.1 5300 "${DM_ARGS[@]}") 2>"$WORK/lo.log" &
PIDS+=($!)
for target in "10.40.1.20 53 a1.bench.example" "127.0.0.1 5300 a1.bench.example" \
    "10.40.0.2 53 a1.bench.example" "10.40.0.2 53 c1.example.org"; do
    read -r s port name <<<"$target"
    for _ in $(seq 1 50); do
        [ -n "$(ex client dig +short +time=1 +tries=1 -p "$port" "@$s" "$name" 2>/dev/null)" ] && break
        sleep 0.1
    done
done

# One dnsperf run: "QPS P50_MS P99_MS MAX_MS". dnsperf -v prints one "> RCODE NAME TYPE
# LATENCY" line per answer.
perf() { # SERVER PORT FILE
    ex client dnsperf -s "$1" -p "$2" -d "$3" -l "$SECS" -q 100 -v 2>/dev/null |
        awk -v lat="$WORK/lat" '/^> / { print $NF * 1000 > lat }
                                /Queries per second:/ { qps = $4 }
                                /Queries lost:/ { lost = $3 }
                                END { print qps + 0; print lost + 0 > "/dev/stderr" }' \
            >"$WORK/qps" 2>>"$WORK/lost"
    sort -g "$WORK/lat" >"$WORK/lat.sorted"
    local n qps p50 p99 max
    n=$(wc -l <"$WORK/lat.sorted")
    qps=$(cat "$WORK/qps")
    p50=$(sed -n "$(( (n + 1) / 2 ))p" "$WORK/lat.sorted")
    p99=$(sed -n "$(( (n * 99 + 99) / 100 ))p" "$WORK/lat.sorted")
    max=$(tail -1 "$WORK/lat.sorted")
    rm -f "$WORK/lat"
    printf '%.0f %.3f %.3f %.3f\n' "$qps" "${p50:-0}" "${p99:-0}" "${max:-0}"
}

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

declare -A RESULT LOST
for peer in vpcd-auth vpcd-cached dnsmasq-vpc dnsmasq-lo; do
    case $peer in
        vpcd-auth) args=(10.40.0.2 53 "$WORK/auth.txt") ;;
        vpcd-cached) args=(10.40.0.2 53 "$WORK/cached.txt")
            # The warm-up pass: every name forwarded once.
            ex client dnsperf -s 10.40.0.2 -d "$WORK/cached.txt" -n 1 >/dev/null 2>&1 ;;
        dnsmasq-vpc) args=(10.40.1.20 53 "$WORK/auth.txt") ;;
        dnsmasq-lo) args=(127.0.0.1 5300 "$WORK/auth.txt") ;;
    esac
    : >"$WORK/runs"
    : >"$WORK/lost"
    for _ in $(seq 1 "$RUNS"); do perf "${args[@]}" >>"$WORK/runs"; done
    LOST[$peer]=$(awk '{ s += $1 } END { print s + 0 }' "$WORK/lost")
    RESULT[$peer]="$(awk '{print $1}' "$WORK/runs" | median) $(awk '{print $2}' "$WORK/runs" | median) $(awk '{print $3}' "$WORK/runs" | median) $(awk '{print $4}' "$WORK/runs" | median)"
done
HWM=$(awk '/VmHWM/ {print $2 / 1024}' /proc/"$VPCD_PID"/status 2>/dev/null || echo "?")

table() {
    echo "| peer | queries/s | vs dnsmasq-vpc | p50 ms | p99 ms | max ms | lost (all runs) |"
    echo "|---|---|---|---|---|---|---|"
    local base
    base=$(echo "${RESULT[dnsmasq-vpc]}" | awk '{print $1}')
    for peer in vpcd-auth vpcd-cached dnsmasq-vpc dnsmasq-lo; do
        read -r qps p50 p99 max <<<"${RESULT[$peer]}"
        ratio=$(awk -v a="$qps" -v b="$base" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')
        echo "| $peer | $qps | $ratio | $p50 | $p99 | $max | ${LOST[$peer]} |"
    done
}
OUT=$(table)
echo "$OUT"
echo "vpcd VmHWM after the runs: ${HWM} MiB"
if [ -z "${BENCH_NO_APPEND:-}" ]; then
    {
        echo
        echo "### $(date -u +%Y-%m-%d) DNS (scripts/bench_dns.sh) — $(nproc) cores, kernel $(uname -r), ${SECS} s per dnsperf run, median of ${RUNS}"
        echo
        echo "$OUT"
        echo
        echo "vpcd VmHWM after the runs: ${HWM} MiB. Load average when the runs ended (other work on"
        echo "the machine shows here): $(cut -d' ' -f1-3 /proc/loadavg)."
    } >>BENCHMARKS.md
fi
