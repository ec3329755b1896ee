#!/usr/bin/env bash
# scripts/bench.sh — vpcd against its peers, side by side, in one run (root).
#
# The same shape is built several ways: one private "function" namespace F, a router, one
# "internet host" namespace H (198.51.100.10). Peers:
#   vpcd         vpcd up: F is a netns instance; SNAT through the NAT gateway when the fabric has
#                it, otherwise (said clearly) the in-VPC path F -> another subnet
#   tun-copy     the bare TUN copy loop (examples/tun_copy.rs): F's TUN <-> a TUN in H, one thread
#                per direction, one packet per read()/write(), no NAT — the floor vpcd is held to
#   vpcd-vpc     vpcd's in-VPC path: F -> an instance in another subnet of the same VPC (routing,
#                security groups, no NAT), to compare with kernel forwarding (peer kernel)
#   vpcd-base    (only with VPCD_BASELINE=path) another vpcd binary, e.g. the previous commit's, in
#                the same run, for before/after comparisons
#   kernel       kernel forwarding in a router namespace R, no NAT (veth F-R, R-H)
#   kernel-nat   the same plus nftables SNAT (masquerade to 198.51.100.1) and a DNAT rule in R
#   uplink       vpcd's public uplink: `vpcd up` run inside R (like pasta), F a netns instance behind
#                a NAT gateway, `[internet] uplink = "host"`: SNAT in the fabric, then host sockets
#   pasta        pasta (passt) run inside R, F attached to it; R's default route points at H
#   slirp4netns  slirp4netns run inside R, F attached to it
# uplink, pasta and slirp4netns open their host-side sockets in R, which only reaches H: nothing
# leaves the namespaces this script makes. Forwarding is switched on only inside R namespaces.
#
# Metrics (F is the client, H the server): iperf3 TCP Gbit/s out (F->H) and in (-R, H->F) with
# BENCH_STREAMS parallel streams (-P); iperf3 UDP 64-byte payload packets/s received and loss;
# ping RTT; new TCP connections per second (examples/conn_rate.rs: BENCH_CONN_THREADS connect
# loops, default 4, for 2 s, each waiting for the server's close). Every peer at MTU
# 1500. For the peers that are vpcd (vpcd, vpcd-base, uplink) also its CPU per TCP run:
# utime+stime of the vpcd process (/proc/PID/stat: the whole thread group, every thread) over the
# run divided by the Gbit received ("CPU s/Gbit" = CPU-seconds per Gbit = cores busy per Gbit/s),
# and its memory after the runs (VmHWM, the peak RSS, and VmRSS from /proc/PID/status). Each
# figure is the median of BENCH_RUNS runs (default 3) of that metric.
#
# Prints a table with each peer's figure and vpcd's ratio to it, and appends the run to
# BENCHMARKS.md with the machine (nproc, kernel). Bounded: BENCH_SECONDS per iperf3 run (default
# 3); all namespaces and processes are removed on exit (trap), also on Ctrl-C.
#
# Env: VPCD=path (default: builds target/release/vpcd), TUN_COPY=path (default: builds the
# tun_copy example), VPCD_BASELINE=path (adds the vpcd-base peer), BENCH_SECONDS, BENCH_STREAMS
# (iperf3 -P for the TCP runs, default 1), BENCH_RUNS (runs per metric, default 3; the median is
# reported), BENCH_PEERS (space separated subset), BENCH_NO_APPEND=1 (do not touch BENCHMARKS.md),
# BENCH_UDP_RATE (iperf3 -b for the UDP run, default 0 = as fast as the client can send; a fixed
# rate such as 30M shows loss at a load every peer is offered alike), CONN_RATE=path (default:
# builds the conn_rate example), BENCH_CONN_THREADS (its connect loops, default 4).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${BENCH_SECONDS:-3}
STREAMS=${BENCH_STREAMS:-1}
RUNS=${BENCH_RUNS:-3}
UDP_RATE=${BENCH_UDP_RATE:-0}
[[ $UDP_RATE =~ ^[0-9]+[KMG]?$ ]] || { echo "bench.sh: BENCH_UDP_RATE=$UDP_RATE: a number with an optional K, M or G" >&2; exit 2; }
PEERS=${BENCH_PEERS:-"vpcd vpcd-vpc ${VPCD_BASELINE:+vpcd-base }tun-copy kernel kernel-nat uplink pasta slirp4netns"}
P=vb  # every namespace here starts with "vb-"
WORK=$(mktemp -d /tmp/vpcd-bench.XXXXXX)
PIDS=()
H_IP=198.51.100.10

die() { echo "bench.sh: $*" >&2; exit 2; }
for v in SECS STREAMS RUNS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_${v/SECS/SECONDS}=${!v}: a positive whole number, please"
done
[ "$STREAMS" -le 128 ] || die "BENCH_STREAMS=$STREAMS: iperf3 takes at most 128"
CLK_TCK=$(getconf CLK_TCK)
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, TUN devices)"
[ -e /dev/net/tun ] || die "/dev/net/tun is missing (modprobe tun)"
for t in ip iperf3 ping python3 nft nsenter; do
    command -v "$t" >/dev/null || die "needs $t (Debian: see .ci/run)"
done

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${VPCD:-}" ]; then
    cargo build --release --locked --quiet
    VPCD=$PWD/target/release/vpcd
fi
if [ -z "${CONN_RATE:-}" ]; then
    cargo build --release --locked --quiet --example conn_rate
    CONN_RATE=$PWD/target/release/examples/conn_rate
fi
CONN_THREADS=${BENCH_CONN_THREADS:-4}
[[ $CONN_THREADS =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: BENCH_CONN_THREADS=$CONN_THREADS: a positive whole number" >&2; exit 2; }
if [ -z "${TUN_COPY:-}" ] && [[ " $PEERS " == *" tun-copy "* ]]; then
    cargo build --release --locked --quiet --example tun_copy
    TUN_COPY=$PWD/target/release/examples/tun_copy
fi

# --- measurements: run from F ($1) against H ($2) at address $3 ------------------------------

start_servers() { # ns addr
    in_ns "$1" iperf3 -s -D -B "$2" -p 5201 --pidfile "$WORK/iperf3-$1.pid" >/dev/null
    in_ns "$1" "$CONN_RATE" serve "$2:5300" >/dev/null 2>&1 &
    PIDS+=($!)
    sleep 0.3
    PIDS+=("$(cat "$WORK/iperf3-$1.pid")")
}

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)" 2>/dev/null || echo "-"; }


# utime + stime of process $1 in clock ticks: /proc/PID/stat of a process counts every thread
# of its thread group (proc(5)). Fields after the command name, which may hold spaces.
cpu_ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null || echo "-"; }

# CPU-seconds per Gbit received: ticks $1 -> $2 over iperf3's JSON $3 (or "-").
cpu_per_gbit() {
    [ "$1" = - ] || [ "$2" = - ] && { echo "-"; return; }
    echo "$3" | json "'%.3f' % (($2 - $1) / $CLK_TCK / (d['end']['sum_received']['bytes'] * 8 / 1e9))"
}

# VmHWM and VmRSS of process $1 in MiB.
memory() { awk '/^VmHWM:/ {h = $2} /^VmRSS:/ {r = $2} END {printf "%.1f %.1f", h / 1024, r / 1024}' "/proc/$1/status" 2>/dev/null || echo "- -"; }

tcp_run() { # fns addr [iperf3 args]: the JSON of one TCP run
    local f=$1 addr=$2; shift 2
    in_ns "$f" timeout $((SECS + 10)) iperf3 -c "$addr" -p 5201 -t "$SECS" -P "$STREAMS" "$@" -J --connect-timeout 2000 2>/dev/null || true
}

measure() { # label fns hns addr [vpcd pid]
    local label=$1 f=$2 h=$3 addr=$4 pid=${5:-} out t0
    start_servers "$h" "$addr"
    local tcp_out=() tcp_in=() udp_pps=() udp_loss=() rtt=() cps=() cpu_out=() cpu_in=()
    for _ in $(seq "$RUNS"); do
        t0=$([ -n "$pid" ] && cpu_ticks "$pid" || echo -)
        out=$(tcp_run "$f" "$addr")
        tcp_out+=("$(echo "$out" | json "'%.2f' % (d['end']['sum_received']['bits_per_second']/1e9)")")
        cpu_out+=("$(cpu_per_gbit "$t0" "$([ -n "$pid" ] && cpu_ticks "$pid" || echo -)" "$out")")
        t0=$([ -n "$pid" ] && cpu_ticks "$pid" || echo -)
        out=$(tcp_run "$f" "$addr" -R)
        tcp_in+=("$(echo "$out" | json "'%.2f' % (d['end']['sum_received']['bits_per_second']/1e9)")")
        cpu_in+=("$(cpu_per_gbit "$t0" "$([ -n "$pid" ] && cpu_ticks "$pid" || echo -)" "$out")")
        out=$(in_ns "$f" timeout $((SECS + 10)) iperf3 -c "$addr" -p 5201 -t "$SECS" -u -l 64 -b "$UDP_RATE" -J --connect-timeout 2000 2>/dev/null || true)
        udp_pps+=("$(echo "$out" | json "'%.0f' % ((d['end']['sum']['packets']-d['end']['sum']['lost_packets'])/d['end']['sum']['seconds'])")")
        udp_loss+=("$(echo "$out" | json "'%.1f' % d['end']['sum']['lost_percent']")")
        out=$(in_ns "$f" ping -q -c 50 -i 0.01 -W 1 "$addr" 2>/dev/null | awk -F'/' '/^rtt/ {printf "%.0f", $5*1000}' || true)
        rtt+=("${out:--}")
        cps+=("$(in_ns "$f" timeout 10 "$CONN_RATE" connect "$addr:5300" 2 "$CONN_THREADS" 2>/dev/null || echo "-")")
    done
    local mem="- -"
    [ -n "$pid" ] && mem=$(memory "$pid")
    local row
    row="$(median %.2f "${tcp_out[@]}") $(median %.2f "${tcp_in[@]}") $(median %.0f "${udp_pps[@]}")"
    row+=" $(median %.1f "${udp_loss[@]}") $(median %.0f "${rtt[@]}") $(median %.0f "${cps[@]}")"
    row+=" $(median %.3f "${cpu_out[@]}") $(median %.3f "${cpu_in[@]}") $mem"
    echo "$label $row" >>"$WORK/results"
    read -r a b c d e g co ci hwm rss <<<"$row"
    printf '  %-12s tcp out %s Gbit/s, in %s Gbit/s; udp %s pps (loss %s%%); rtt %s us; %s conn/s' \
        "$label" "$a" "$b" "$c" "$d" "$e" "$g"
    [ -n "$pid" ] && printf '; CPU %s / %s s per Gbit out / in; VmHWM %s MiB, VmRSS %s MiB' "$co" "$ci" "$hwm" "$rss"
    printf ' (median of %s)\n' "$RUNS"
}

# --- the peers ------------------------------------------------------------------------------

veth() { # nsA ifA addrA nsB ifB addrB
    ip link add "$2" netns "$1" type veth peer name "$5" netns "$4"
    in_ns "$1" ip addr add "$3" dev "$2"; in_ns "$1" ip link set "$2" mtu 1500 up
    in_ns "$4" ip addr add "$6" dev "$5"; in_ns "$4" ip link set "$5" mtu 1500 up
}

mkns() { for ns in "$@"; do ip netns add "$ns"; in_ns "$ns" ip link set lo up; done; }

kernel_shape() { # tag  -> namespaces $P-$tag-{f,r,h}: F 10.99.1.10, R 10.99.1.1 | 198.51.100.1, H
    local t=$1
    mkns "$P-$t-f" "$P-$t-r" "$P-$t-h"
    veth "$P-$t-f" eth0 10.99.1.10/24 "$P-$t-r" fside 10.99.1.1/24
    veth "$P-$t-r" hside 198.51.100.1/24 "$P-$t-h" eth0 "$H_IP/24"
    in_ns "$P-$t-f" ip route add default via 10.99.1.1
    in_ns "$P-$t-r" sysctl -qw net.ipv4.ip_forward=1   # inside R only
}

peer_kernel() {
    kernel_shape k
    in_ns "$P-k-h" ip route add 10.99.0.0/16 via 198.51.100.1   # no NAT: H routes back
    measure kernel "$P-k-f" "$P-k-h" "$H_IP"
}

peer_kernel_nat() {
    kernel_shape kn
    in_ns "$P-kn-r" nft -f - <<'EOF'
table ip vb {
    chain pre { type nat hook prerouting priority dstnat; iifname "hside" tcp dport 8080 dnat to 10.99.1.10:8080; }
    chain post { type nat hook postrouting priority srcnat; oifname "hside" ip saddr 10.99.0.0/16 snat to 198.51.100.1; }
}
EOF
    measure kernel-nat "$P-kn-f" "$P-kn-h" "$H_IP"
}

router_for_userspace() { # tag -> R ($P-$tag-r) with a veth to H and a default route towards H
    local t=$1
    mkns "$P-$t-f" "$P-$t-r" "$P-$t-h"
    veth "$P-$t-r" hside 198.51.100.1/24 "$P-$t-h" eth0 "$H_IP/24"
    in_ns "$P-$t-r" ip route add default via "$H_IP"
    # Both relay ICMP echo through unprivileged ping sockets, which this allows (in R only).
    in_ns "$P-$t-r" sysctl -qw net.ipv4.ping_group_range="0 2147483647"
}

peer_pasta() {
    command -v pasta >/dev/null || { echo "  pasta: not installed (Debian passt), skipped"; return; }
    router_for_userspace pa
    in_ns "$P-pa-r" pasta --runas 0 --no-map-gw --config-net -m 1500 -4 -f \
        -t none -u none -T none -U none --netns "/run/netns/$P-pa-f" \
        >"$WORK/pasta.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 50); do in_ns "$P-pa-f" ip -4 route show default | grep -q . && break; sleep 0.1; done
    measure pasta "$P-pa-f" "$P-pa-h" "$H_IP"
}

peer_slirp() {
    command -v slirp4netns >/dev/null || { echo "  slirp4netns: not installed, skipped"; return; }
    router_for_userspace sl
    in_ns "$P-sl-r" slirp4netns --configure --mtu=1500 --disable-host-loopback \
        --netns-type=path "/run/netns/$P-sl-f" tap0 >"$WORK/slirp.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 50); do in_ns "$P-sl-f" ip -4 route show default | grep -q . && break; sleep 0.1; done
    measure slirp4netns "$P-sl-f" "$P-sl-h" "$H_IP"
}

peer_uplink() { # vpcd up inside R (nsenter --net keeps /run/netns shared), F behind SNAT
    router_for_userspace ul
    cat >"$WORK/uplink.toml" <<'EOF'
[[vpc]]
name = "ubench"
cidr = "10.98.0.0/16"
subnet = [
  { name = "fn", cidr = "10.98.1.0/24" },
  { name = "public", cidr = "10.98.9.0/24" },
]
route_table = [ { name = "main", routes = [ { destination = "0.0.0.0/0", target = "nat:egress" } ] } ]
instance = [ { name = "f", subnet = "fn", ip = "10.98.1.10" } ]
nat_gateway = [ { name = "egress", subnet = "public", eips = ["gw"], snat = [ { source = "10.98.0.0/16" } ] } ]

[[eip]]
name = "gw"
address = "203.0.113.10"

[internet]
uplink = "host"
EOF
    VPCD_NETNS_PREFIX=$P VPCD_RUN_DIR=$WORK/run \
        nsenter --net="/run/netns/$P-ul-r" "$VPCD" up "$WORK/uplink.toml" >"$WORK/uplink.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 100); do grep -q '^ready:' "$WORK/uplink.log" && break; sleep 0.1; done
    grep -q '^ready:' "$WORK/uplink.log" || { cat "$WORK/uplink.log" >&2; return 1; }
    measure uplink "$P-ubench-f" "$P-ul-h" "$H_IP" "$pid"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    tail -2 "$WORK/uplink.log" | sed "s/^/  uplink: /"
}

peer_tun_copy() {
    "$TUN_COPY" "$P-copy-f" "$P-copy-h" >"$WORK/copy.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 100); do grep -q '^ready' "$WORK/copy.log" && break; sleep 0.1; done
    grep -q '^ready' "$WORK/copy.log" || { cat "$WORK/copy.log" >&2; return 1; }
    measure tun-copy "$P-copy-f" "$P-copy-h" "$H_IP"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
}

VPCD_MODE=""
peer_vpcd() { # binary label [vpc: the in-VPC path only]
    local bin=$1 label=$2 only=${3:-}
    export VPCD_NETNS_PREFIX=$P VPCD_RUN_DIR=$WORK/run
    cat >"$WORK/nat.toml" <<EOF
[[vpc]]
name = "bench"
cidr = "10.99.0.0/16"
subnet = [
  { name = "fn", cidr = "10.99.1.0/24" },
  { name = "public", cidr = "10.99.9.0/24", route_table = "public" },
]
route_table = [
  { name = "main", routes = [ { destination = "0.0.0.0/0", target = "nat:egress" } ] },
  { name = "public", routes = [ { destination = "0.0.0.0/0", target = "internet" } ] },
]
instance = [ { name = "f", subnet = "fn", ip = "10.99.1.10" } ]
nat_gateway = [ { name = "egress", subnet = "public", eips = ["gw"], snat = [ { source = "10.99.0.0/16" } ] } ]

[[eip]]
name = "gw"
address = "203.0.113.10"

[internet]
cidr = "198.51.100.0/24"
host = [ { name = "h", ip = "$H_IP" } ]
EOF
    cat >"$WORK/vpc.toml" <<'EOF'
[[vpc]]
name = "bench"
cidr = "10.99.0.0/16"
subnet = [
  { name = "fn", cidr = "10.99.1.0/24" },
  { name = "srv", cidr = "10.99.2.0/24" },
]
instance = [
  { name = "f", subnet = "fn", ip = "10.99.1.10" },
  { name = "h", subnet = "srv", ip = "10.99.2.10" },
]
EOF
    vpcd_up() { # file
        "$bin" up "$1" >"$WORK/up.log" 2>&1 &
        VPCD_PID=$!
        PIDS+=("$VPCD_PID")
        for _ in $(seq 100); do grep -q '^ready:' "$WORK/up.log" && return 0; sleep 0.1; done
        cat "$WORK/up.log" >&2; return 1
    }
    vpcd_down() { kill -TERM "$VPCD_PID"; wait "$VPCD_PID" 2>/dev/null || true; }
    if [ "$only" = vpc ]; then
        vpcd_up "$WORK/vpc.toml"
        measure "$label" "$P-bench-f" "$P-bench-h" 10.99.2.10 "$VPCD_PID"
        vpcd_down
        tail -1 "$WORK/up.log" | sed "s/^/  $label: /"
        return
    fi
    vpcd_up "$WORK/nat.toml"
    if in_ns "$P-bench-f" ping -c 1 -W 1 "$H_IP" >/dev/null 2>&1; then
        VPCD_MODE="SNAT through the NAT gateway (F -> EIP -> H)"
        measure "$label" "$P-bench-f" "$P-internet-h" "$H_IP" "$VPCD_PID"
        vpcd_down
    else
        vpcd_down
        VPCD_MODE="in-VPC path F -> another subnet (NAT not in the fabric yet: SNAT figures pending)"
        echo "  vpcd: the NAT gateway does not forward yet; measuring the $VPCD_MODE"
        vpcd_up "$WORK/vpc.toml"
        measure "$label" "$P-bench-f" "$P-bench-h" 10.99.2.10 "$VPCD_PID"
        vpcd_down
    fi
    tail -1 "$WORK/up.log" | sed "s/^/  $label: /"
}

RUN_DESC="${SECS} s per iperf3 run, TCP with $STREAMS stream(s) (iperf3 -P $STREAMS), UDP at -b $UDP_RATE, median of $RUNS run(s) per figure"
echo "bench.sh: $(nproc) cores, kernel $(uname -r), $RUN_DESC, MTU 1500"
: >"$WORK/results"
for peer in $PEERS; do
    case $peer in
        vpcd) peer_vpcd "$VPCD" vpcd ;;
        vpcd-vpc) peer_vpcd "$VPCD" vpcd-vpc vpc ;;
        vpcd-base) peer_vpcd "${VPCD_BASELINE:?VPCD_BASELINE=path needed}" vpcd-base ;;
        tun-copy) peer_tun_copy ;;
        kernel) peer_kernel ;;
        kernel-nat) peer_kernel_nat ;;
        uplink) peer_uplink ;;
        pasta) peer_pasta ;;
        slirp4netns) peer_slirp ;;
        *) die "unknown peer $peer" ;;
    esac
done

# --- the table ------------------------------------------------------------------------------

TABLE=$(python3 - "$WORK/results" "$STREAMS" <<'EOF'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
streams = sys.argv[2]
cols = ["TCP out Gbit/s (-P %s)" % streams, "TCP in Gbit/s (-P %s)" % streams, "UDP 64 B pps",
        "UDP loss %", "ping RTT us", "TCP conn/s", "vpcd CPU s/Gbit out", "vpcd CPU s/Gbit in",
        "vpcd VmHWM MiB", "vpcd VmRSS MiB"]
# Compared with vpcd: the throughput, RTT and connection figures (not the loss, not vpcd's own).
compared = (0, 1, 2, 4, 5)
vpcd = next((r for r in rows if r[0] == "vpcd"), None)
def ratio(v, p, lower_better):
    try:
        v, p = float(v), float(p)
        if lower_better:
            v, p = p, v
        return "%.2fx" % (v / p) if p > 0 else "-"
    except ValueError:
        return "-"
print("| peer | " + " | ".join(cols) + " |")
print("|---|" + "---|" * len(cols))
for r in rows:
    cells = []
    for i, c in enumerate(r[1:]):
        if vpcd is not None and r[0] != "vpcd" and i in compared:
            cells.append("%s (vpcd %s)" % (c, ratio(vpcd[i + 1], c, i == 4)))
        else:
            cells.append(c)
    print("| %s | %s |" % (r[0], " | ".join(cells)))
up = next((r for r in rows if r[0] == "uplink"), None)
for peer in ("pasta", "slirp4netns"):
    p = next((r for r in rows if r[0] == peer), None)
    if up is not None and p is not None:
        print()
        print("uplink / %s: TCP out %s, TCP in %s, UDP pps %s, ping RTT %s, TCP conn/s %s" % (
            peer, ratio(up[1], p[1], False), ratio(up[2], p[2], False),
            ratio(up[3], p[3], False), ratio(up[5], p[5], True), ratio(up[6], p[6], False)))
EOF
)
echo
echo "$TABLE"
echo "(vpcd NX = vpcd's figure relative to that peer; for RTT, above 1 means vpcd is faster)"
echo "vpcd measured: ${VPCD_MODE:-not run}"

if [ "${BENCH_NO_APPEND:-}" != 1 ] && [ -f BENCHMARKS.md ]; then
    {
        echo
        echo "### $(date -u +%Y-%m-%d) — $(nproc) cores, kernel $(uname -r), $RUN_DESC"
        echo
        echo "vpcd: ${VPCD_MODE:-not run}. MTU 1500 everywhere; UDP payload 64 bytes; ratio = vpcd / peer (RTT: peer / vpcd); vpcd's CPU s/Gbit = utime+stime of its process per Gbit received (cores per Gbit/s), VmHWM/VmRSS after the runs."
        echo
        echo "$TABLE"
    } >>BENCHMARKS.md
    echo "appended to BENCHMARKS.md"
fi
