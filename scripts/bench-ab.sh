#!/usr/bin/env bash
# scripts/bench-ab.sh — two builds of the in-process benchmarks side by side, in one run.
#
#   scripts/bench-ab.sh OLD_DIR [RUNS]
#
# OLD_DIR holds criterion bench binaries of an older build, named after their bench (`fabric`,
# `conntrack`, ...; copy them from target/release/deps/ after `cargo bench --no-run` on the old
# commit). The new ones are built from this tree. Each bench runs RUNS times (default 3), old and
# new alternately, so that load on the machine hits both alike; the table gives, per case, the
# median over the runs of criterion's estimate for each build and new/old (above 1 = slower).
# Env: BENCHES (default "fabric conntrack"), BENCH_ARGS (default
# "--warm-up-time 1 --measurement-time 3").
set -euo pipefail
cd "$(dirname "$0")/.."

OLD=${1:?usage: scripts/bench-ab.sh OLD_DIR [RUNS]}
RUNS=${2:-3}
BENCHES=${BENCHES:-"fabric conntrack"}
ARGS=${BENCH_ARGS:-"--warm-up-time 1 --measurement-time 3"}
WORK=$(mktemp -d /tmp/vpcd-bench-ab.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

declare -A NEW
for b in $BENCHES; do
    [ -x "$OLD/$b" ] || { echo "bench-ab.sh: no old binary $OLD/$b" >&2; exit 2; }
    args=()
    for x in $BENCHES; do args+=(--bench "$x"); done
done
# The new binaries: cargo prints each executable it built.
while read -r name path; do NEW[$name]=$path; done < <(
    cargo bench --no-run "${args[@]}" 2>&1 |
        sed -n 's|.*Executable benches/\([a-z_]*\)\.rs (\(.*\))|\1 \2|p')

# criterion prints "case\n    time:   [low est high]" (or "case  time: [...]" on one line).
parse() {
    awk '
        /time:/ {
            line = $0; sub(/^[ \t]+/, "", line)
            if (line ~ /^time:/) { name = prev } else { name = line; sub(/[ \t]+time:.*/, "", name) }
            sub(/.*time:[ \t]*\[/, "", line); split(line, f, " ")
            v = f[3]; u = f[4]
            if (u == "ps") v /= 1000; else if (u == "µs" || u == "us") v *= 1000; else if (u == "ms") v *= 1e6
            gsub(/^[ \t]+|[ \t]+$/, "", name)
            if (name !~ /:$/) print name "\t" v   # skip the "change:" block criterion prints
        }
        { if ($0 !~ /^[ \t]*$/) prev = $0 }'
}

for b in $BENCHES; do
    [ -n "${NEW[$b]:-}" ] || { echo "bench-ab.sh: cargo built no $b bench" >&2; exit 2; }
    for r in $(seq "$RUNS"); do
        for side in old new; do
            bin=$OLD/$b
            [ "$side" = new ] && bin=${NEW[$b]}
            # shellcheck disable=SC2086
            "$bin" --bench $ARGS 2>/dev/null | parse >>"$WORK/$side"
            echo "bench-ab.sh: $b run $r ($side) done" >&2
        done
    done
done

median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
printf '| case | old ns | new ns | new/old |\n|---|---|---|---|\n'
cut -f1 "$WORK/old" | awk '!seen[$0]++' | while read -r c; do
    o=$(awk -F'\t' -v c="$c" '$1 == c {print $2}' "$WORK/old" | median)
    n=$(awk -F'\t' -v c="$c" '$1 == c {print $2}' "$WORK/new" | median)
    [ -n "$n" ] || continue
    awk -v c="$c" -v o="$o" -v n="$n" 'BEGIN { printf "| %s | %.1f | %.1f | %.3f |\n", c, o, n, n / o }'
done
