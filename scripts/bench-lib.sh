# scripts/bench-lib.sh — what the side-by-side benchmark scripts share; sourced, not run.
# The caller sets P (its namespace prefix), WORK (its temporary directory), PIDS (processes it
# started) and VPCD (the binary, once known) before the EXIT trap can fire.

# Stops every process the script started and every namespace with its prefix (their processes
# by PID), lets vpcd remove what a crashed run left, and deletes the temporary directory.
cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    sleep 0.3
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
    for ns in $(ip netns list | awk '{print $1}' | grep "^$P-"); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
        ip netns delete "$ns" 2>/dev/null
    done
    [ -n "${VPCD:-}" ] && VPCD_NETNS_PREFIX=$P VPCD_RUN_DIR=$WORK/run "$VPCD" down >/dev/null 2>&1
    rm -rf "$WORK"
}

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# The median of the figures given ("-" = a failed run, left out), printed with format $1.
median() {
    python3 -c '
import statistics, sys
v = [float(x) for x in sys.argv[2:] if x != "-"]
print(sys.argv[1] % statistics.median(v) if v else "-")
' "$@"
}
