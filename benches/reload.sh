#!/usr/bin/env bash
# The reload benchmark: how long a new policy takes from `lbp reload` to active
# on every switching core, for 10, 1 000 and 100 000 filter rules, beside `nft
# -f` of an equivalent ruleset in the same run; then Maglev's disruption when one
# of N back ends leaves.
#
#   cli (c0) ── (a0) app (a1) ── (s0) srv
#
# app runs `lbp run` on a0/a1 with a control socket; nothing is sent through it
# (a reload's cost does not depend on traffic). nft loads its rulesets in a
# namespace of its own, nft, so that the host's ruleset is untouched. Addresses
# are in 198.18.0.0/15 only; nothing leaves the machine.
#
# Two shapes of rules, each with a NAT service (virtual IP 198.19.100.1 port 80,
# three back ends, Maglev in lbp; numgen to three DNAT chains in nft, as
# benches/dataplane.sh does it):
#   exact:  ip.src == A && tcp.dport == P => drop          (distinct A and P)
#           nft: ip saddr A tcp dport P drop
#           lbp merges these into one hash lookup on (source, port).
#   range:  ip.src in A/26 && tcp.dport in LO..LO+31 => drop  (2 044 blocks, port
#           ranges per block)
#           nft: ip saddr A/26 tcp dport LO-HI drop
#           nothing to hash: lbp indexes them by the source's intervals.
# nft gets one chain of N rules, as written (the rule-for-rule equivalent; a set
# would be nft's fast form for the exact shape, and is not what is measured).
#
# Each measurement alternates between two variants of the ruleset (ports shifted
# by one), so that every reload and every `nft -f` replaces all N rules:
#   - lbp reload, wall: `lbp reload FILE` from start to exit (request, read,
#     parse, check, lower, JIT, tables, publish, every core past the old
#     generation, reply);
#   - lbp reload, reported: the `active on all cores in T ms` of its reply, and
#     the compile time it reports;
#   - nft -f: wall time of `nft -f FILE`, the file replacing the whole table
#     atomically (`table ip lbpbench; delete table ip lbpbench; table ip lbpbench
#     { ... }`).
# RUNS runs each (5; 3 for 100 000 rules), the median printed, and nft/lbp.
# The goal: 100 000 rules active in under one second, and faster than nft.
#
# Then where lbp's compile time goes (parse, check, lower, JIT for the 100 000
# rule files: the `compile_time` example of lbp-compiler), and the Maglev lines
# (the `maglev_disruption` example of lbp-runtime: for N = 2, 3, 10, 100 back
# ends, the share of the table that moves when one leaves; ideal 1/N, all of it
# the leaving one's).
#
# Run as root: `benches/reload.sh` from the workspace root. Environment: RUNS
# (5), SIZES ("10 1000 100000"), SHAPES ("exact range"), LBP (the lbp binary,
# default target/release/lbp, built if it is missing), LBP_CORES (`--cores` for
# lbp run: control first, then switching cores; default 0,1 on two or more
# CPUs). Every namespace and process it makes is removed on exit, also on
# failure; each step is bounded by a timeout.

set -u
set -o pipefail

if [ "$(id -u)" != 0 ]; then
    echo "benches/reload.sh needs root (network namespaces, lbp run, nft): run it with sudo" >&2
    exit 2
fi
for tool in ip timeout awk; do
    if ! command -v "$tool" >/dev/null; then
        echo "benches/reload.sh needs $tool" >&2
        exit 2
    fi
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
LBP=${LBP:-$TARGET/release/lbp}
RUNS=${RUNS:-5}
SIZES=${SIZES:-10 1000 100000}
SHAPES=${SHAPES:-exact range}
if [ "$(nproc)" -ge 2 ]; then
    LBP_CORES=${LBP_CORES:-0,1}
else
    LBP_CORES=${LBP_CORES:-0}
fi
P="lbpr$$"                      # namespace prefix, unique per run
WORK=$(mktemp -d /tmp/lbp-reload.XXXXXX)
SOCK=$WORK/control.sock
NSES=()
LBP_PID=

. "$(dirname "$0")/lib.sh"

cleanup() {
    stop_pids "$LBP_PID"
    remove_namespaces
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ the tools

if ! (cd "$ROOT" && timeout 1800 cargo build -q --release --bin lbp \
    && timeout 1800 cargo build -q --release -p lbp-runtime --example maglev_disruption \
    && timeout 1800 cargo build -q --release -p lbp-compiler --example compile_time) >&2; then
    echo "benches/reload.sh: the build failed" >&2
    exit 1
fi
MAGLEV=$TARGET/release/examples/maglev_disruption
COMPILE_TIME=$TARGET/release/examples/compile_time
HAVE_RELOAD=1
"$LBP" reload --help >/dev/null 2>&1 || HAVE_RELOAD=0
HAVE_NFT=1
need nft nftables || HAVE_NFT=0

# ------------------------------------------------------------------ rulesets

# rules N SHAPE VARIANT lbp|nft: the N filter rules, one a line.
rules() {
    awk -v n="$1" -v shape="$2" -v var="$3" -v fl="$4" 'BEGIN {
        for (i = 0; i < n; i++) {
            if (shape == "exact") {
                o = i + 256                  # in 198.18.0.0/15, past 198.18.0.x
                a = sprintf("198.%d.%d.%d", 18 + int(o / 65536) % 2, int(o / 256) % 256, o % 256)
                p = 1024 + (i * 7 + var) % 60000
                if (fl == "lbp") printf "    ip.src == %s && tcp.dport == %d => drop\n", a, p
                else printf "\t\tip saddr %s tcp dport %d drop\n", a, p
            } else {
                b = 4 + i % 2044             # /26 blocks of 198.18.0.0/15, past 198.18.0.x
                o = b * 64
                a = sprintf("198.%d.%d.%d/26", 18 + int(o / 65536) % 2, int(o / 256) % 256, o % 256)
                lo = 1024 + int(i / 2044) * 32 + var
                if (fl == "lbp") printf "    ip.src in %s && tcp.dport in %d..%d => drop\n", a, lo, lo + 31
                else printf "\t\tip saddr %s tcp dport %d-%d drop\n", a, lo, lo + 31
            }
        }
    }'
}

# lbp_policy N SHAPE VARIANT
lbp_policy() {
    cat <<EOF
interface client  { address 198.18.0.1/24 }
interface servers { address 198.19.0.1/24 }

pool web {
    backend 198.19.0.11
    backend 198.19.0.12
    backend 198.19.0.13
}

service http {
    vip 198.19.100.1 tcp port 80
    pool web
    balance maglev
    mode nat to port 8080
}

filter {
EOF
    rules "$1" "$2" "$3" lbp
    echo "}"
}

# nft_ruleset N SHAPE VARIANT
nft_ruleset() {
    cat <<EOF
table ip lbpbench
delete table ip lbpbench
table ip lbpbench {
	chain filter {
		type filter hook prerouting priority raw; policy accept;
EOF
    rules "$1" "$2" "$3" nft
    cat <<EOF
	}
	chain services {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr 198.19.100.1 tcp dport 80 numgen random mod 3 vmap { 0 : goto ep1, 1 : goto ep2, 2 : goto ep3 }
	}
	chain ep1 {
		meta l4proto tcp dnat to 198.19.0.11:8080
	}
	chain ep2 {
		meta l4proto tcp dnat to 198.19.0.12:8080
	}
	chain ep3 {
		meta l4proto tcp dnat to 198.19.0.13:8080
	}
}
EOF
}

# ------------------------------------------------------------------ topology

APP=$P-app CLI=$P-cli SRV=$P-srv NFT=$P-nft

build_topology() {
    mkns "$CLI"; mkns "$APP"; mkns "$SRV"; mkns "$NFT"
    ip link add c0 netns "$CLI" type veth peer name a0 netns "$APP" || exit 1
    ip link add a1 netns "$APP" type veth peer name s0 netns "$SRV" || exit 1
    ip -n "$CLI" link set c0 up
    ip -n "$APP" link set a0 up
    ip -n "$APP" link set a1 up
    ip -n "$SRV" link set s0 up
    ip -n "$CLI" addr add 198.18.0.2/24 dev c0
    ip -n "$SRV" addr add 198.19.0.11/24 dev s0
}

# ------------------------------------------------------------------ measuring

now_ns() { date +%s%N; }

# median V...: the middle value (the lower of the two middle ones).
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "" }'
}

ratio() {
    awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a != "" && b != "" && b > 0) printf "%.1f", a / b; else printf "n/a" }'
}

# lbp_start: start `lbp run` in app on the 10-rule exact policy, wait (bounded)
# for its ready line and its control socket.
lbp_start() {
    lbp_policy 10 exact 0 >"$WORK/start.lbp"
    ip netns exec "$APP" "$LBP" run "$WORK/start.lbp" --iface client=a0 --iface servers=a1 \
        --cores "$LBP_CORES" --control "$SOCK" >"$WORK/lbp-run" 2>&1 &
    LBP_PID=$!
    local i
    for ((i = 0; i < 150; i++)); do
        if grep -q "ready" "$WORK/lbp-run" 2>/dev/null && [ -S "$SOCK" ]; then
            return 0
        fi
        kill -0 "$LBP_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "lbp run did not say it was ready: $(tail -5 "$WORK/lbp-run")"
    return 1
}

# lbp_reload FILE: one reload; sets R_WALL, R_ACTIVE, R_COMPILE (ms) or returns 1.
lbp_reload() {
    local t0 t1 out first
    t0=$(now_ns)
    out=$(timeout 60 "$LBP" reload "$1" --control "$SOCK" 2>&1)
    local rc=$?
    t1=$(now_ns)
    first=$(head -1 <<<"$out")
    if [ $rc != 0 ] || ! grep -q "^lbp: reloaded:" <<<"$first"; then
        log "lbp reload $1 failed (exit $rc): $(head -5 <<<"$out")"
        return 1
    fi
    R_WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')
    R_ACTIVE=$(sed -n 's/.*active on all cores in \([0-9.]*\) ms.*/\1/p' <<<"$first")
    R_COMPILE=$(sed -n 's/.*(compile \([0-9.]*\) ms).*/\1/p' <<<"$first")
}

# nft_load FILE: one `nft -f` in the nft namespace; sets N_WALL (ms) or returns 1.
nft_load() {
    local t0 t1 out
    t0=$(now_ns)
    out=$(timeout 120 ip netns exec "$NFT" nft -f "$1" 2>&1)
    local rc=$?
    t1=$(now_ns)
    if [ $rc != 0 ]; then
        log "nft -f $1 failed (exit $rc): $(head -3 <<<"$out")"
        return 1
    fi
    N_WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')
}

# ------------------------------------------------------------------ the run

echo "lbp reload benchmark: kernel $(uname -r), $(nproc) CPUs, lbp run --cores $LBP_CORES"
echo "shapes: exact = 'ip.src == A && tcp.dport == P => drop' (lbp: one hash lookup);"
echo "        range = 'ip.src in A/26 && tcp.dport in LO..LO+31 => drop' (lbp: indexed by source intervals)"
echo "        nft: one chain of N rules 'ip saddr A tcp dport P drop' / 'ip saddr A/26 tcp dport LO-HI drop'"
echo "each: + a NAT service (VIP, three back ends); every run replaces all N rules (two variants alternate)"
echo

build_topology
LBP_UP=0
if [ "$HAVE_RELOAD" = 1 ]; then
    lbp_start && LBP_UP=1
else
    log "no \`$LBP reload\`: lbp columns not yet available"
fi
[ "$HAVE_NFT" = 1 ] || log "nft is missing and could not be installed: nft columns not measured"

printf '%-6s %7s | %14s %16s %11s | %11s | %7s %7s\n' \
    shape rules "lbp wall ms" "lbp active ms" "compile ms" "nft -f ms" "nft/lbp" "(act.)"
declare -A WALL_AT
for shape in $SHAPES; do
    for n in $SIZES; do
        for v in 0 1; do
            lbp_policy "$n" "$shape" "$v" >"$WORK/$shape-$n-$v.lbp"
            nft_ruleset "$n" "$shape" "$v" >"$WORK/$shape-$n-$v.nft"
        done
        runs=$RUNS
        [ "$n" -ge 100000 ] && [ "$runs" -gt 3 ] && runs=3
        walls=() actives=() compiles=() nfts=()
        for ((r = 0; r < runs; r++)); do
            # The first run of a size loads variant 1, the appliance and nft
            # having variant 0 of the previous size or start: all N replaced.
            v=$(((r + 1) % 2))
            if [ "$LBP_UP" = 1 ] && lbp_reload "$WORK/$shape-$n-$v.lbp"; then
                walls+=("$R_WALL")
                [ -n "$R_ACTIVE" ] && actives+=("$R_ACTIVE")
                [ -n "$R_COMPILE" ] && compiles+=("$R_COMPILE")
            fi
            if [ "$HAVE_NFT" = 1 ] && nft_load "$WORK/$shape-$n-$v.nft"; then
                nfts+=("$N_WALL")
            fi
        done
        # Both end on variant 0 for the next size.
        if [ $((runs % 2)) = 1 ]; then
            [ "$LBP_UP" = 1 ] && lbp_reload "$WORK/$shape-$n-0.lbp" >/dev/null
            [ "$HAVE_NFT" = 1 ] && nft_load "$WORK/$shape-$n-0.nft"
        fi
        wall=$(median "${walls[@]}") active=$(median "${actives[@]}")
        compile=$(median "${compiles[@]}") nftms=$(median "${nfts[@]}")
        WALL_AT[$shape-$n]=${wall:-}
        printf '%-6s %7s | %14s %16s %11s | %11s | %7s %7s\n' "$shape" "$n" \
            "${wall:-n/a}" "${active:-n/a}" "${compile:-n/a}" "${nftms:-n/a}" \
            "$(ratio "$nftms" "$wall")" "$(ratio "$nftms" "$active")"
        rm -f "$WORK/$shape-$n-"*
    done
done
echo "(medians of $RUNS runs, 3 for 100 000 rules; wall: lbp reload from start to exit;"
echo " active: what the appliance reports, request to every core on the new generation;"
echo " nft/lbp: nft -f over lbp wall, and over lbp active)"
if [ "$LBP_UP" = 1 ] && ! kill -0 "$LBP_PID" 2>/dev/null; then
    log "lbp run exited during the benchmark: $(tail -5 "$WORK/lbp-run")"
fi
for shape in $SHAPES; do
    w=${WALL_AT[$shape-100000]:-}
    [ -n "$w" ] || continue
    verdict=$(awk -v w="$w" 'BEGIN { print (w < 1000) ? "met" : "NOT met" }')
    echo "goal: 100 000 $shape rules active in under 1 s (wall $w ms): $verdict"
done
echo

echo "== where lbp's compile time goes (best of 3, ms; compile_time example, this process)"
for shape in $SHAPES; do
    lbp_policy 100000 "$shape" 0 >"$WORK/$shape-100000.lbp"
done
(cd "$WORK" && timeout 300 "$COMPILE_TIME" $(for s in $SHAPES; do echo "$s-100000.lbp"; done)) \
    || log "compile_time failed"
echo

echo "== Maglev: one of N back ends leaves (weight 1 each, default table size; % of the table,"
echo "   averaged over which one leaves; ideal: moved = 1/N = its own share, none needlessly)"
timeout 120 "$MAGLEV" 2 3 10 100 || log "maglev_disruption failed"
