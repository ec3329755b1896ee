#!/usr/bin/env bash
# scripts/bench-flood.sh — issue 14's scenario side by side (root): an internet host SYN-floods a
# function's DNAT'd port with hping3 (one source address, every source port) while another
# internet host downloads from the same function and keeps opening new connections to it.
# Peers: vpcd (DNAT on its NAT gateway's EIP; also `vpcd-tenant2`: a second tenant's download
# through its own gateway while the first tenant is flooded) and kernel-nat (nftables DNAT in a
# router namespace R). For each, a quiet phase and a flood phase of FLOOD_SECONDS each measure the
# client's download rate (curl) and its new connections answered within 1 s (a Python loop);
# prints each figure, the flood/quiet ratios, and vpcd's RSS and NAT sessions after the flood.
#
# Bounded: the flood lasts FLOOD_SECONDS (hping3 under `timeout`; hping3 ignores -c in flood
# mode), every namespace and process is removed on exit. Traffic stays inside the namespaces
# this script makes (addresses from 198.51.100.0/24 and 203.0.113.0/24).
#
# Env: VPCD=path (default: builds target/release/vpcd), FLOOD_SECONDS (default 5), FLOOD_RUNS
# (quiet+flood pairs per peer, default 3; medians reported), FLOOD_PEERS (default "vpcd
# kernel-nat"), FLOOD_METRICS=1 (print vpcd's counters that moved during each flood phase),
# FLOOD_RAND_SOURCE=1 (hping3 --rand-source: every SYN from a random address; vpcd's fabric drops
# them as spoofed at the attacker's port, the kernel NAT has no such check), FLOOD_SYN_PROXY=1
# (vpcd's gateways answer SYNs with cookies: `syn_proxy = true`; the kernel NAT is unchanged).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${FLOOD_SECONDS:-5}
RUNS=${FLOOD_RUNS:-3}
PEERS=${FLOOD_PEERS:-"vpcd kernel-nat"}
P=vf
WORK=$(mktemp -d /tmp/vpcd-flood.XXXXXX)
PIDS=()
ATTACKER=198.51.100.66
CLIENT=198.51.100.10
EIP=203.0.113.44
EIP2=203.0.113.45

die() { echo "bench-flood.sh: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, TUN devices)"
for v in SECS RUNS; do [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v=${!v}: a positive whole number"; done
for t in ip hping3 curl python3 nft timeout; do
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


# A 1 GiB sparse file served by Python's HTTP server on ADDR:8080 in namespace $1.
serve() { # ns addr
    mkdir -p "$WORK/www-$1"
    truncate -s 1G "$WORK/www-$1/big.bin"
    in_ns "$1" python3 -c '
import functools, http.server, socketserver, sys
socketserver.TCPServer.allow_reuse_address = True
h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[2])
class Quiet(h.func):
    def log_message(self, *a): pass
s = socketserver.ThreadingTCPServer((sys.argv[1], 8080), functools.partial(Quiet, directory=sys.argv[2]))
s.serve_forever()
' "$2" "$WORK/www-$1" >/dev/null 2>&1 &
    PIDS+=($!)
    sleep 0.5
}

# One phase from the client namespace $1 against http://$2/: prints "MB/s answered tried". The
# download and the new connections run at the same time, both for SECS seconds (the download of
# 1 GiB is cut at SECS; a faster one is repeated until then, so both overlap the whole flood).
phase() { # client-ns target
    local rate
    in_ns "$1" python3 -c '
import subprocess, sys, time
end = time.monotonic() + float(sys.argv[2]); got = 0
while (left := end - time.monotonic()) > 0.05:
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "--max-time", "%.2f" % left,
                        "-w", "%{size_download}", sys.argv[1]], capture_output=True, text=True)
    got += int(float(r.stdout or 0))
print(got / float(sys.argv[2]))
' "http://$2/big.bin" "$SECS" >"$WORK/rate" 2>/dev/null &
    local dl=$!
    local conns
    conns=$(in_ns "$1" timeout $((SECS + 5)) python3 -c '
import socket, sys, time
end = time.monotonic() + float(sys.argv[2]); ok = tried = 0
while time.monotonic() < end:
    tried += 1
    try:
        c = socket.create_connection((sys.argv[1], 80), timeout=1); c.close(); ok += 1
    except OSError:
        pass
    time.sleep(0.01)
print(ok, tried)
' "$2" "$SECS" 2>/dev/null || echo "- -")
    wait "$dl" || true
    rate=$(cat "$WORK/rate")
    echo "$(python3 -c "import sys; print('%.1f' % (float(sys.argv[1] or 0) / 1e6))" "${rate:-0}") $conns"
}

# vpcd's counters (FLOOD_METRICS=1: what changed during each flood phase is printed).
metrics() { VPCD_RUN_DIR=$WORK/run "$VPCD" ctl metrics 2>/dev/null | grep -v '^#' || true; }
metrics_diff() { # label
    echo "  $1: counters that moved during the flood phase:"
    awk 'NR == FNR { a[$1] = $2; next } ($2 - a[$1]) != 0 && $1 ~ /_total/ { printf "    %s %+d\n", $1, $2 - a[$1] }' \
        "$WORK/m0" "$WORK/m1"
}

# Runs quiet/flood pairs against target $4 from client $2 while the attacker in $3 floods
# $5 (the same target, or another tenant's).
measure() { # label client-ns attacker-ns target flood-target [vpcd-pid]
    local label=$1 c=$2 a=$3 target=$4 victim=$5 pid=${6:-}
    local q_rate=() q_ok=() f_rate=() f_ok=()
    for _ in $(seq "$RUNS"); do
        read -r r ok tried <<<"$(phase "$c" "$target")"
        q_rate+=("$r"); q_ok+=("$(python3 -c "print('%.1f' % (100.0 * $ok / max($tried, 1)))")")
        in_ns "$a" timeout "$((SECS + 1))" hping3 -q -S -p 80 --flood ${FLOOD_RAND_SOURCE:+--rand-source} "$victim" >/dev/null 2>&1 &
        local flood=$!
        sleep 0.5
        [ -n "$pid" ] && [ -n "${FLOOD_METRICS:-}" ] && metrics >"$WORK/m0"
        read -r r ok tried <<<"$(phase "$c" "$target")"
        [ -n "$pid" ] && [ -n "${FLOOD_METRICS:-}" ] && { metrics >"$WORK/m1"; metrics_diff "$label"; }
        [ -n "${FLOOD_METRICS:-}" ] && echo "  $label: run: quiet ${q_rate[-1]} MB/s, flood $r MB/s, $ok of $tried answered"
        f_rate+=("$r"); f_ok+=("$(python3 -c "print('%.1f' % (100.0 * $ok / max($tried, 1)))")")
        wait "$flood" 2>/dev/null || true
        sleep 1
    done
    local qr fr qo fo
    qr=$(median %.1f "${q_rate[@]}"); fr=$(median %.1f "${f_rate[@]}")
    qo=$(median %.1f "${q_ok[@]}"); fo=$(median %.1f "${f_ok[@]}")
    local extra=""
    if [ -n "$pid" ]; then
        extra=$(awk '/^VmRSS:/ {printf "; vpcd VmRSS %.1f MiB", $2 / 1024}' "/proc/$pid/status")
    fi
    echo "  $label: download $qr MB/s quiet, $fr MB/s under the flood ($(python3 -c "print('%.2f' % ($fr / max($qr, 0.001)))")x); new connections answered $qo % quiet, $fo % under the flood$extra (median of $RUNS)"
    echo "$label $qr $fr $qo $fo" >>"$WORK/results"
}

# One tenant's VPC: function $2 (10.67.1.10, HTTP on 8080) behind DNAT tcp:80 of EIP $3 ($4).
tenant() { # vpc instance eip-name eip-address
    cat <<EOF
[[vpc]]
name = "$1"
cidr = "10.67.0.0/16"
subnet = [
  { name = "fn", cidr = "10.67.1.0/24", route_table = "private" },
  { name = "public", cidr = "10.67.9.0/24" },
]
route_table = [ { name = "private", routes = [ { destination = "0.0.0.0/0", target = "nat:egress" } ] } ]
security_group = [ { name = "web", ingress = [ { protocol = "tcp", ports = "8080", peer = "0.0.0.0/0" } ] } ]
instance = [ { name = "$2", subnet = "fn", ip = "10.67.1.10", security_groups = ["web"] } ]
nat_gateway = [ { name = "egress", subnet = "public", eips = ["$3"], snat = [ { source = "10.67.0.0/16" } ],${FLOOD_SYN_PROXY:+ syn_proxy = true,}
  dnat = [ { eip = "$3", protocol = "tcp", port = 80, instance = "$2", instance_port = 8080 } ] } ]

[[eip]]
name = "$3"
address = "$4"

EOF
}

peer_vpcd() {
    export VPCD_NETNS_PREFIX=$P VPCD_RUN_DIR=$WORK/run
    # Two tenants alike, each a function behind DNAT tcp:80 of its own gateway's EIP: the
    # second one's download must not suffer from the first one's flood.
    {
        tenant v f1 gw "$EIP"
        tenant w f2 gw2 "$EIP2"
        cat <<EOF
[internet]
cidr = "198.51.100.0/24"
host = [ { name = "attacker", ip = "$ATTACKER" }, { name = "client", ip = "$CLIENT" } ]
EOF
    } >"$WORK/flood.toml"
    "$VPCD" up "$WORK/flood.toml" --state "$WORK/state" >"$WORK/up.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 100); do grep -q '^ready:' "$WORK/up.log" && break; sleep 0.1; done
    grep -q '^ready:' "$WORK/up.log" || { cat "$WORK/up.log" >&2; die "vpcd did not come up"; }
    serve "$P-v-f1" 10.67.1.10
    serve "$P-w-f2" 10.67.1.10
    measure vpcd "$P-internet-client" "$P-internet-attacker" "$EIP" "$EIP" "$pid"
    measure vpcd-tenant2 "$P-internet-client" "$P-internet-attacker" "$EIP2" "$EIP" "$pid"
    local sessions
    sessions=$(VPCD_RUN_DIR=$WORK/run "$VPCD" ctl metrics 2>/dev/null | awk '/^vpcd_nat_active_connections/ {s += $2} END {print s + 0}')
    local refused
    refused=$(VPCD_RUN_DIR=$WORK/run "$VPCD" ctl metrics 2>/dev/null | awk '/^vpcd_drops_total\{.*reason="nat_source_(rate|half_open)"/ {s += $2} END {print s + 0}')
    echo "  vpcd: after the floods $sessions NAT sessions active, ${refused:-0} SYNs refused per source (rate and half-open budget)"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
}

peer_kernel_nat() {
    for ns in f r a c; do ip netns add "$P-k-$ns"; in_ns "$P-k-$ns" ip link set lo up; done
    ip link add fside netns "$P-k-r" type veth peer name eth0 netns "$P-k-f"
    ip link add aside netns "$P-k-r" type veth peer name eth0 netns "$P-k-a"
    ip link add cside netns "$P-k-r" type veth peer name eth0 netns "$P-k-c"
    in_ns "$P-k-f" ip addr add 10.67.1.10/24 dev eth0
    in_ns "$P-k-r" ip addr add 10.67.1.1/24 dev fside
    in_ns "$P-k-a" ip addr add "$ATTACKER/24" dev eth0
    in_ns "$P-k-c" ip addr add "$CLIENT/24" dev eth0
    for dev in fside aside cside; do in_ns "$P-k-r" ip link set "$dev" up; done
    for ns in f a c; do in_ns "$P-k-$ns" ip link set eth0 up; done
    in_ns "$P-k-r" ip addr add "$EIP/32" dev lo
    in_ns "$P-k-r" ip route add "$ATTACKER/32" dev aside
    in_ns "$P-k-r" ip route add "$CLIENT/32" dev cside
    in_ns "$P-k-f" ip route add default via 10.67.1.1
    in_ns "$P-k-a" ip route add "$EIP/32" dev eth0
    in_ns "$P-k-c" ip route add "$EIP/32" dev eth0
    in_ns "$P-k-r" sysctl -qw net.ipv4.ip_forward=1   # inside R only
    in_ns "$P-k-r" sysctl -qw net.ipv4.conf.all.rp_filter=0
    in_ns "$P-k-r" nft -f - <<EOF
table ip vf {
    chain pre { type nat hook prerouting priority dstnat; ip daddr $EIP tcp dport 80 dnat to 10.67.1.10:8080; }
    chain post { type nat hook postrouting priority srcnat; oifname != "fside" ip saddr 10.67.0.0/16 snat to $EIP; }
}
EOF
    serve "$P-k-f" 10.67.1.10
    measure kernel-nat "$P-k-c" "$P-k-a" "$EIP" "$EIP"
}

echo "bench-flood.sh: $(nproc) cores, kernel $(uname -r), $SECS s phases, median of $RUNS"
: >"$WORK/results"
for peer in $PEERS; do
    case $peer in
        vpcd) peer_vpcd ;;
        kernel-nat) peer_kernel_nat ;;
        *) die "unknown peer $peer (vpcd, kernel-nat)" ;;
    esac
done
