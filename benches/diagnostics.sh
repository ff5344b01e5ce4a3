#!/usr/bin/env bash
# Rendering diagnostics, beside checking: `lbp check` of a policy of N filter
# rules that all have an error (N diagnostics, printed for people and as JSON)
# against `lbp check` of a policy of the same size (same rules, same bytes)
# without errors. Prints the best of RUNS runs of each and the ratios; the goal
# is rendering within 3x of checking.
#
#   benches/diagnostics.sh            # N=20000, the release binary (built first)
#   N=5000 RUNS=5 LBP=target/debug/lbp benches/diagnostics.sh
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-20000}
RUNS=${RUNS:-3}
if [[ -z ${LBP:-} ]]; then
    cargo build --release -p lbp --quiet
    LBP=target/release/lbp
fi

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# The same rule N times over, one with a port above 65535 (an error) and one
# without: both files have the same size, line for line.
gen() { # $1: first digit of the port (7: an error, 1: none)
    echo 'interface client { address 198.18.0.1/24 }'
    echo 'filter {'
    for ((i = 0; i < N; i++)); do
        printf '    ip.src == 198.18.%d.%d && tcp.dport == %d%04d => drop\n' \
            $(((i >> 8) & 255)) $((i & 255)) "$1" $((i % 10000))
    done
    echo '}'
}
gen 1 >"$dir/clean.lbp"
gen 7 >"$dir/errors.lbp"

# Best wall time in seconds of RUNS runs of "$@" (output discarded).
best() {
    local best="" t0 t1 t
    for ((r = 0; r < RUNS; r++)); do
        t0=$(date +%s%N)
        "$@" >/dev/null 2>&1 || true
        t1=$(date +%s%N)
        t=$(((t1 - t0) / 1000))
        if [[ -z $best || $t -lt $best ]]; then best=$t; fi
    done
    echo "$best"
}

clean=$(best "$LBP" check "$dir/clean.lbp")
human=$(best "$LBP" check --color never "$dir/errors.lbp")
fancy=$(best "$LBP" check --color always "$dir/errors.lbp")
json=$(best "$LBP" check --format json "$dir/errors.lbp")

# The error file must give exactly N diagnostics, the clean one none.
"$LBP" check "$dir/clean.lbp" >/dev/null 2>&1 || { echo "the clean policy has errors" >&2; exit 1; }
count=$({ "$LBP" check --format json "$dir/errors.lbp" 2>/dev/null || true; } | wc -l)
[[ $count -eq $N ]] || { echo "expected $N diagnostics, got $count" >&2; exit 1; }

size=$(stat -c %s "$dir/errors.lbp")
s() { awk -v us="$1" 'BEGIN { printf "%8.3f s", us / 1e6 }'; }
x() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%5.2fx", a / b }'; }
echo "diagnostics: $N filter rules, $((size / 1024)) KiB, best of $RUNS runs ($LBP)"
echo "  lbp check, no errors                    $(s "$clean")"
echo "  lbp check, $N errors, plain            $(s "$human")   $(x "$human" "$clean") of checking"
echo "  lbp check, $N errors, colour           $(s "$fancy")   $(x "$fancy" "$clean") of checking"
echo "  lbp check, $N errors, JSON             $(s "$json")   $(x "$json" "$clean") of checking"
echo "  goal: within 3x of checking"
