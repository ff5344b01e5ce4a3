#!/usr/bin/env bash
# The data-plane benchmark of issue 4, on one namespace topology and one core
# assignment, with lbp's own traffic generator and counter (the `trafficgen`
# example of lbp-trafficgen: BPF_PROG_RUN in XDP live-frames mode where the kernel
# runs it, else one frame per batch through an AF_PACKET socket cloned by a tcx
# egress program; and an XDP program that counts and drops at the far side).
#
#   cli (c0) ── (a0) app (a1) ── (s0) sw: bridge br0 (s1,s2,s3) ── (b0) be1, be2, be3
#
# cli is the client, app the appliance (only its two interfaces live there), sw
# the back ends' switch (a bridge in a namespace of its own, so the appliance's
# netfilter never sees bridged traffic), be1..be3 the back ends. Addresses are in
# 198.18.0.0/15 only: clients 198.18.0.0/16, servers 198.19.0.0/24, the virtual
# IP 198.19.100.1. Nothing leaves the machine.
#
# Measured, each for $SECONDS_PER_RUN seconds (packets per second counted at the
# back ends, so what arrived, not what was offered):
#   - the generator alone, counted (and dropped) by an XDP program on app's a0:
#     the most it can offer into this topology;
#   - plain kernel forwarding (ip_forward), for reference;
#   - nftables DNAT load balancing in app, as kube-proxy's nftables mode does it
#     (a service map, then `numgen random mod 3 vmap` to per-endpoint chains),
#     one flow (established) and a new flow per packet; one flow again with the
#     kernel's backlog as deep as lbp's receive ring (net.core.netdev_max_backlog
#     16 384 for that run only, put back after it and on exit);
#   - the in-kernel XDP_TX rate of a trivial program on app's client interface,
#     and the in-kernel redirect rate of a trivial program that sends every
#     frame from a0 out of a1 to a back end (the DSR rows' path);
#   - lbp run with one switching core (established and new flows, NAT and
#     DSR, and traffic its filter drops) with every frame decided on the core
#     (`--datapath cores`) and with the policy in XDP first (`--datapath xdp`:
#     the drops never reach the core, DSR and NAT flows are balanced there and
#     redirected out of a1, and DSR flows sent back out of a0 to a back end on
#     the client's link), and lbp's bare forwarder on the same rings (`lbp
#     run --bare`); the XDP_DROP ceiling is the generator-alone row (an XDP
#     program that counts and drops at a0);
#   - wrk requests per second, keep-alive and new connections, through nftables
#     DNAT, straight to one back end, and through lbp when it exists.
#
# A path that delivers nine tenths or more of what was offered is marked
# "generator-bound": it may be faster than the generator, and a ratio with it is
# printed as a bound (>= or <=), not as a figure.
#
# Run as root: `benches/dataplane.sh` from the workspace root. Environment:
#   SECONDS_PER_RUN (5), GEN_METHOD (the generator's method: auto, the default,
#   live-frames or clone), TRAFFICGEN (path of the built example), LBP (path of the
#   lbp binary, default target/release/lbp), GEN_CPU (CPU for the generator, 0),
#   KERNEL_CPU (CPU for app's kernel receive path, 1), LBP_CORES (the `--cores`
#   list for lbp run: control first, then the switching core; GEN_CPU,KERNEL_CPU),
#   ROWS (all, the default; or xdp: only the generator, the in-kernel XDP_TX and
#   redirect references and lbp's XDP fast path rows, for a quick look at it).
# The wrk client and the HTTP servers run on GEN_CPU too, so that the forwarding
# path (the kernel's, through RPS, or lbp's switching core) has KERNEL_CPU to
# itself in every run: the same core assignment for the kernel and for lbp.
# Every namespace and process it makes is removed on exit, also on failure.

set -u
set -o pipefail

if [ "$(id -u)" != 0 ]; then
    echo "SKIPPED: benches/dataplane.sh needs root (network namespaces, XDP)"
    exit 0
fi
for tool in ip; do
    if ! command -v "$tool" >/dev/null; then
        echo "SKIPPED: benches/dataplane.sh needs $tool"
        exit 0
    fi
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
T=${SECONDS_PER_RUN:-5}
ROWS=${ROWS:-all}
case "$ROWS" in
    all|xdp) ;;
    *) echo "benches/dataplane.sh: ROWS is all or xdp, not '$ROWS'" >&2; exit 2 ;;
esac
GEN_CPU=${GEN_CPU:-0}
GEN_METHOD=${GEN_METHOD:-auto}
# The CPU that does the kernel's receive work in app (RPS on a0): the one lbp's
# switching core gets, so the kernel paths and lbp have the same core
# assignment. Without RPS, on veth all of it would run on the generator's CPU.
KERNEL_CPU=${KERNEL_CPU:-1}
LBP=${LBP:-$ROOT/target/release/lbp}
if [ "$(nproc)" -ge 2 ]; then
    LBP_CORES=${LBP_CORES:-$GEN_CPU,$KERNEL_CPU}
else
    LBP_CORES=${LBP_CORES:-0}
fi
P="lbpb$$"                      # namespace prefix, unique per run
WORK=$(mktemp -d /tmp/lbp-dataplane.XXXXXX)
NSES=()
PIDS=()
LBP_PID=

. "$(dirname "$0")/lib.sh"

# The kernel's per-CPU backlog (RPS queues there) is a global setting; the one
# measurement that deepens it puts it back, and so does the exit.
BACKLOG_WAS=$(cat /proc/sys/net/core/netdev_max_backlog 2>/dev/null)
restore_backlog() {
    [ -n "$BACKLOG_WAS" ] && echo "$BACKLOG_WAS" >/proc/sys/net/core/netdev_max_backlog 2>/dev/null
}

cleanup() {
    stop_pids "${PIDS[@]}" "$LBP_PID" "$PASS_PID" "$REDIR_PID"
    restore_backlog
    remove_namespaces
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ the tools

TRAFFICGEN=${TRAFFICGEN:-}
if [ -z "$TRAFFICGEN" ]; then
    TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
    TRAFFICGEN=$TARGET/release/examples/trafficgen
    if ! (cd "$ROOT" && cargo build -q --release -p lbp-trafficgen --example trafficgen) >&2; then
        echo "SKIPPED: could not build the trafficgen example of lbp-trafficgen"
        exit 0
    fi
fi
[ -x "$TRAFFICGEN" ] || { echo "SKIPPED: no trafficgen binary at $TRAFFICGEN"; exit 0; }
need ethtool || { echo "SKIPPED: ethtool is missing and could not be installed"; exit 0; }
HAVE_NFT=1; need nft nftables || HAVE_NFT=0
HAVE_WRK=1; need wrk || HAVE_WRK=0
HAVE_CONNTRACK=1; need conntrack || HAVE_CONNTRACK=0
HAVE_PY=1; command -v python3 >/dev/null || HAVE_PY=0
PIN=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    PIN=(taskset -c "$GEN_CPU")
fi

# ------------------------------------------------------------------ topology

CLI=$P-cli APP=$P-app SW=$P-sw
BES=("$P-be1" "$P-be2" "$P-be3")
C0_MAC=02:00:5e:18:00:02 A0_MAC=02:00:5e:18:00:01 A1_MAC=02:00:5e:19:00:01
BE_MAC=(02:00:5e:19:00:11 02:00:5e:19:00:12 02:00:5e:19:00:13)
BE_IP=(198.19.0.11 198.19.0.12 198.19.0.13)
VIP=198.19.100.1

# mkns NAME: as lib.sh's, without IPv6.
mkns_v4() {
    mkns "$1"
    # No IPv6: its link-local chatter would reach the counters (which count
    # IPv4 and IPv6 frames).
    nsx "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}

# veth NS_A IF_A NS_B IF_B: a pair, both up, transmit checksum offload off (a
# local stack on veth otherwise leaves checksums to an offload that never runs).
mkveth() {
    ip link add "$2" netns "$1" type veth peer name "$4" netns "$3" || exit 1
    ip -n "$1" link set "$2" up
    ip -n "$3" link set "$4" up
    nsx "$1" ethtool -K "$2" tx off >/dev/null 2>&1
    nsx "$3" ethtool -K "$4" tx off >/dev/null 2>&1
}

build_topology() {
    mkns_v4 "$CLI"; mkns_v4 "$APP"; mkns_v4 "$SW"
    local i
    for i in 0 1 2; do mkns_v4 "${BES[$i]}"; done

    mkveth "$CLI" c0 "$APP" a0
    mkveth "$APP" a1 "$SW" s0
    ip -n "$CLI" link set c0 address $C0_MAC
    ip -n "$APP" link set a0 address $A0_MAC
    ip -n "$APP" link set a1 address $A1_MAC
    ip -n "$CLI" addr add 198.18.0.2/16 dev c0
    ip -n "$CLI" route add 198.19.0.0/16 via 198.18.0.1
    ip -n "$CLI" neigh replace 198.18.0.1 lladdr $A0_MAC dev c0 nud permanent
    ip -n "$APP" addr add 198.18.0.1/16 dev a0
    ip -n "$APP" addr add 198.19.0.1/24 dev a1
    nsx "$APP" sysctl -qw net.ipv4.ip_forward=1
    # Frames of a live-frames run reach a veth peer only through its NAPI
    # instance, which GRO (or an XDP program) turns on.
    nsx "$APP" ethtool -K a0 gro on >/dev/null 2>&1
    nsx "$CLI" ethtool -K c0 gro on >/dev/null 2>&1

    ip -n "$SW" link add br0 type bridge
    ip -n "$SW" link set br0 up
    # The back ends' switch is not under test: keep netfilter off its bridged
    # frames (br_netfilter, when loaded, calls the iptables hooks for them, on
    # the appliance's CPU, since veth transmits inline), per namespace.
    for t in iptables ip6tables arptables; do
        nsx "$SW" sh -c "echo 0 > /proc/sys/net/bridge/bridge-nf-call-$t" 2>/dev/null || true
    done
    ip -n "$SW" link set s0 master br0
    for i in 0 1 2; do
        mkveth "$SW" "s$((i + 1))" "${BES[$i]}" b0
        ip -n "$SW" link set "s$((i + 1))" master br0
        # The back ends' counters drop what they receive, so the bridge would
        # never learn where they are and flood every frame to all of them.
        nsx "$SW" bridge fdb replace "${BE_MAC[$i]}" dev "s$((i + 1))" master static
        ip -n "${BES[$i]}" link set b0 address "${BE_MAC[$i]}"
        ip -n "${BES[$i]}" addr add "${BE_IP[$i]}/24" dev b0
        ip -n "${BES[$i]}" route add default via 198.19.0.1
        ip -n "${BES[$i]}" neigh replace 198.19.0.1 lladdr $A1_MAC dev b0 nud permanent
        ip -n "$APP" neigh replace "${BE_IP[$i]}" lladdr "${BE_MAC[$i]}" dev a1 nud permanent
    done
}

# ------------------------------------------------------------------ measuring

# start_bg NAME CMD...: run CMD in the background, output to $WORK/NAME. CMD
# is an external command (`nsx` is turned into `ip netns exec`, which execs
# its command), so $! is the PID of the process itself and stopping it by PID
# stops the program, not a wrapper shell.
start_bg() {
    local name=$1; shift
    if [ "$1" = nsx ]; then
        shift
        set -- ip netns exec "$@"
    fi
    "$@" >"$WORK/$name" 2>&1 &
    PIDS+=("$!")
}

# wait_for FILE TEXT SECONDS: until FILE contains TEXT (bounded).
wait_for() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -qi "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# Stop the background processes started so far (by PID) and forget them.
stop_bg() {
    stop_pids "${PIDS[@]}"
    PIDS=()
}

# pps NAME DST_IP DPORT [--flows]: send for $T s from cli, count at the back
# ends; prints "NAME offered delivered" rates and records RATE[NAME] (and
# BOUND[NAME]=1 when it delivered nine tenths of what was offered, unless the
# row is one where the path paces the generator: PACED=1).
declare -A RATE OFFER BOUND
PACED=0
pps() {
    local name=$1 dst=$2 dport=$3; shift 3
    local i
    for i in 0 1 2; do
        start_bg "count-$name-$i" nsx "${BES[$i]}" "$TRAFFICGEN" count b0 --seconds $((T + 3))
    done
    for i in 0 1 2; do
        if ! wait_for "$WORK/count-$name-$i" ready 10; then
            log "$name: counter $i did not start: $(cat "$WORK/count-$name-$i")"
            stop_bg; return 1
        fi
    done
    measure "$name" "$WORK/count-$name-" 3 "$dst" "$dport" "$@"
}

# measure NAME COUNT_PREFIX N_COUNTERS DST DPORT [--flows]: the generator run and
# the arithmetic, once the counters are attached.
measure() {
    local name=$1 prefix=$2 n=$3 dst=$4 dport=$5; shift 5
    local out
    out=$("${PIN[@]}" timeout $((T + 20)) ip netns exec "$CLI" "$TRAFFICGEN" send c0 --dst-mac $A0_MAC \
        --src 198.18.0.2 --dst "$dst" --dport "$dport" --seconds "$T" --method "$GEN_METHOD" "$@" 2>&1)
    echo "$out" >"$WORK/send-$name"
    local pid
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    PIDS=()
    local sent secs total=0 i c
    sent=$(sed -n 's/^sent \([0-9]*\) frames.* in \([0-9.]*\) s.*/\1/p' <<<"$out")
    secs=$(sed -n 's/^sent \([0-9]*\) frames.* in \([0-9.]*\) s.*/\2/p' <<<"$out")
    if [ -z "$sent" ]; then
        log "$name: the generator failed: $out"
        return 1
    fi
    local per=()
    for ((i = 0; i < n; i++)); do
        c=$(sed -n 's/^counted total \([0-9]*\)/\1/p' "$prefix$i")
        per+=("${c:-0}")
        total=$((total + ${c:-0}))
    done
    OFFER[$name]=$(awk -v s="$sent" -v t="$secs" 'BEGIN { printf "%.0f", s / t }')
    RATE[$name]=$(awk -v s="$total" -v t="$secs" 'BEGIN { printf "%.0f", s / t }')
    local mark=""
    if [ "$PACED" = 0 ] && [ "$((RATE[$name] * 10))" -ge "$((OFFER[$name] * 9))" ]; then
        BOUND[$name]=1
        mark="  generator-bound"
    fi
    printf '%-34s offered %9s pps   delivered %9s pps   (per counter: %s)%s\n' \
        "$name" "${OFFER[$name]}" "${RATE[$name]}" "${per[*]}" "$mark"
    if [ -n "${DATAPLANE_STATS:-}" ]; then
        local ns
        for ns in "$APP" "$SW"; do
            echo "--- $ns"; ip -n "$ns" -s link show; nsx "$ns" nstat -a 2>/dev/null | grep -iv " 0 "
        done >&2
    fi
}

nft_dnat_on() {
    nsx "$APP" nft -f - <<EOF
table ip lbpbench {
    chain services {
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr . meta l4proto . th dport vmap {
            $VIP . udp . 9 : goto svc-udp,
            $VIP . tcp . 80 : goto svc-tcp
        }
    }
    chain svc-udp {
        numgen random mod 3 vmap { 0 : goto ep-udp-1, 1 : goto ep-udp-2, 2 : goto ep-udp-3 }
    }
    chain svc-tcp {
        numgen random mod 3 vmap { 0 : goto ep-tcp-1, 1 : goto ep-tcp-2, 2 : goto ep-tcp-3 }
    }
    chain ep-udp-1 {
        dnat to ${BE_IP[0]}
    }
    chain ep-udp-2 {
        dnat to ${BE_IP[1]}
    }
    chain ep-udp-3 {
        dnat to ${BE_IP[2]}
    }
    chain ep-tcp-1 {
        meta l4proto tcp dnat to ${BE_IP[0]}:8080
    }
    chain ep-tcp-2 {
        meta l4proto tcp dnat to ${BE_IP[1]}:8080
    }
    chain ep-tcp-3 {
        meta l4proto tcp dnat to ${BE_IP[2]}:8080
    }
}
EOF
}
nft_dnat_off() { nsx "$APP" nft delete table ip lbpbench 2>/dev/null; }

# ------------------------------------------------------------------ lbp run

# The policy lbp runs in app: the same service as the nftables rules.
write_policy() {
    cat >"$WORK/bench.lbp" <<EOF
interface client  { address 198.18.0.1/16 }
interface servers { address 198.19.0.1/24 }

pool bench {
    backend ${BE_IP[0]}
    backend ${BE_IP[1]}
    backend ${BE_IP[2]}
}

service udp_sink {
    vip $VIP udp port 9
    pool bench
    balance maglev
    mode nat
}

service http {
    vip $VIP tcp port 80
    pool bench
    balance maglev
    mode nat to port 8080
}

# The DSR rows send here: balanced in XDP with --datapath xdp (a Maglev
# table; the NAT rows' udp_sink is balanced there too, with --xdp-tx on).
service udp_dsr {
    vip $VIP udp port 10
    pool bench
    balance maglev
    mode dsr
}

# The hairpin rows send here: DSR to a back end on the client's link (the
# client itself, where the counter is), so that XDP answers with XDP_TX out
# of a0, the path of the XDP_TX reflect row.
pool hairpin {
    backend 198.18.0.2
}

service udp_hairpin {
    vip $VIP udp port 11
    pool hairpin
    balance maglev
    mode dsr
}

# The filter-dropped rows send here.
filter {
    ip.dst == $VIP && udp.dport == 7 => drop
}
EOF
}

lbp_run_available() {
    [ -x "$LBP" ] && "$LBP" run --help >/dev/null 2>&1
}

# Whether this lbp has the XDP fast path (an older binary, measured for a
# before/after comparison, runs every row on its cores).
lbp_has_datapath() {
    # (not grep -q: it may close the pipe early, and pipefail counts that)
    "$LBP" run --help 2>/dev/null | grep -- --datapath >/dev/null
}

# lbp_start [EXTRA ARGS...]: start `lbp run` in app on a0/a1 with one switching
# core and wait for its ready line; returns 1 if it does not come.
# (Fill in the options `lbp run` ends up with, e.g. a bare-forwarder switch.)
lbp_start() {
    write_policy
    start_bg lbp-run nsx "$APP" "$LBP" run "$WORK/bench.lbp" \
        --iface client=a0 --iface servers=a1 --cores "$LBP_CORES" \
        --control "$WORK/control.sock" "$@"
    if ! wait_for "$WORK/lbp-run" ready 15; then
        log "lbp run did not say it was ready: $(tail -5 "$WORK/lbp-run")"
        stop_bg
        return 1
    fi
}

# lbp_pps NAME [EXTRA LBP ARGS...] -- [GENERATOR ARGS...]
lbp_pps() {
    local name=$1; shift
    local lbp_args=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do lbp_args+=("$1"); shift; done
    [ "${1:-}" = -- ] && shift
    if ! lbp_run_available; then
        printf '%-34s not yet available (no `%s run`)\n' "$name" "$LBP"
        return 0
    fi
    lbp_start "${lbp_args[@]}" || { printf '%-34s failed to start\n' "$name"; return 0; }
    LBP_PID=${PIDS[-1]}
    PIDS=()
    pps "$name" "$VIP" "${LBP_PORT:-9}" "$@"
    stop_pids "$LBP_PID"
    LBP_PID=
}

# lbp_hairpin NAME [EXTRA LBP ARGS...] -- [GENERATOR ARGS...]: DSR to the
# client's own address (UDP port 11), counted at c0 as the XDP_TX reflect
# row counts. (No NAT row of this kind: the client would be a NAT back end,
# whose traffic the fast path always leaves to the cores.)
lbp_hairpin() {
    local name=$1; shift
    local lbp_args=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do lbp_args+=("$1"); shift; done
    [ "${1:-}" = -- ] && shift
    lbp_start "${lbp_args[@]}" || { printf '%-34s failed to start\n' "$name"; return 0; }
    LBP_PID=${PIDS[-1]}
    PIDS=()
    start_bg "count-$name-0" nsx "$CLI" "$TRAFFICGEN" count c0 --seconds $((T + 3))
    if wait_for "$WORK/count-$name-0" ready 10; then
        measure "$name" "$WORK/count-$name-" 1 "$VIP" 11 "$@"
    else
        log "$name: the counter on c0 did not start: $(cat "$WORK/count-$name-0")"
    fi
    stop_bg
    stop_pids "$LBP_PID"
    LBP_PID=
}

# xdp_pass_on / xdp_pass_off: an XDP program that passes every frame, on s0
# (bounded in time): a veth takes the frames its peer's XDP program
# redirects to it (lbp's XDP balancing, out of a1) only when it runs one.
PASS_PID=
xdp_pass_on() {
    ip netns exec "$SW" "$TRAFFICGEN" pass s0 --seconds $((4 * T + 60)) >"$WORK/pass" 2>&1 &
    PASS_PID=$!
    wait_for "$WORK/pass" ready 10 || log "the XDP_PASS program on s0 did not start: $(cat "$WORK/pass")"
}
xdp_pass_off() {
    stop_pids "$PASS_PID"
    PASS_PID=
}

# The kernel's redirect ceiling on the DSR rows' path: the least an XDP
# forwarder does on a0 (set the destination MAC, redirect out of a1), with
# the same XDP_PASS on s0, bridge and counters as lbp's XDP balancing.
REDIR_PID=
xdp_redirect_row() {
    ip netns exec "$APP" "$TRAFFICGEN" redirect a0 --to a1 --dst-mac "${BE_MAC[1]}" \
        --seconds $((T + 30)) >"$WORK/redirect" 2>&1 &
    REDIR_PID=$!
    if wait_for "$WORK/redirect" ready 10; then
        pps "XDP redirect a0 -> a1 (in kernel)" "$VIP" 10
    else
        log "the XDP redirect reference did not start: $(cat "$WORK/redirect")"
    fi
    stop_pids "$REDIR_PID"
    REDIR_PID=
}

# lbp_dropped: the frames lbp's filter has dropped so far, in XDP and on the
# switching cores (from `lbp stats --json`, whose drop reasons count both),
# and the frames the switching cores received: two numbers.
lbp_dropped() {
    "$LBP" stats --json --control "$WORK/control.sock" 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(d["drops"]["filter"], sum(c["rx_packets"] for c in d["cores"]))' 2>/dev/null || echo 0 0
}

# lbp_drops NAME [EXTRA LBP ARGS...] -- [GENERATOR ARGS...]: traffic the policy's
# filter drops (to the virtual IP, UDP port 7), sent for $T s; the rate of
# frames dropped (lbp's counters, before and after), recorded in RATE[NAME].
lbp_drops() {
    local name=$1; shift
    local lbp_args=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do lbp_args+=("$1"); shift; done
    [ "${1:-}" = -- ] && shift
    if ! lbp_run_available || [ "$HAVE_PY" != 1 ]; then
        printf '%-34s not measured (no `%s run` or no python3)\n' "$name" "$LBP"
        return 0
    fi
    lbp_start "${lbp_args[@]}" || { printf '%-34s failed to start\n' "$name"; return 0; }
    LBP_PID=${PIDS[-1]}
    PIDS=()
    local before after core_before core_after
    read -r before core_before <<<"$(lbp_dropped)"

    # No counters at the back ends (nothing reaches them): measure's own
    # arithmetic with none, then the rate from lbp's counters.
    PACED=1 measure "$name (sent)" "$WORK/none-" 0 "$VIP" 7 "$@" >/dev/null
    sleep 0.3
    read -r after core_after <<<"$(lbp_dropped)"

    local secs
    secs=$(sed -n 's/^sent \([0-9]*\) frames.* in \([0-9.]*\) s.*/\2/p' "$WORK/send-$name (sent)")
    RATE[$name]=$(awk -v a="$before" -v b="$after" -v t="${secs:-0}" 'BEGIN { if (t > 0) printf "%.0f", (b - a) / t; else print 0 }')
    OFFER[$name]=${OFFER[$name (sent)]:-0}
    local mark=""
    if [ "$((RATE[$name] * 10))" -ge "$((OFFER[$name] * 9))" ]; then
        BOUND[$name]=1
        mark="  generator-bound"
    fi
    local core
    core=$(awk -v a="$core_before" -v b="$core_after" -v t="${secs:-0}" 'BEGIN { if (t > 0) printf "%.0f", (b - a) / t; else print 0 }')
    printf '%-34s offered %9s pps   dropped   %9s pps   (the switching core received %s pps)%s\n' \
        "$name" "${OFFER[$name]}" "${RATE[$name]}" "$core" "$mark"
    stop_pids "$LBP_PID"
    LBP_PID=
}

# ------------------------------------------------------------------ wrk

start_http() {
    local i
    for i in 0 1 2; do
        start_bg "http-$i" "${PIN[@]}" ip netns exec "${BES[$i]}" python3 -c '
import http.server, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 65536                # one write per response (no Nagle stalls)
    disable_nagle_algorithm = True
    def do_GET(self):
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
print("listening", flush=True)
S((sys.argv[1], 8080), H).serve_forever()
' "${BE_IP[$i]}"
    done
    for i in 0 1 2; do
        wait_for "$WORK/http-$i" listening 10 || { log "http server $i did not start"; return 1; }
    done
}

declare -A RPS
# rps NAME URL [wrk args]: a bounded wrk run from cli.
rps() {
    local name=$1 url=$2; shift 2
    local out r
    out=$("${PIN[@]}" timeout $((T + 15)) ip netns exec "$CLI" wrk -t1 -c16 -d"${T}s" "$@" "$url" 2>&1)
    r=$(sed -n 's/^Requests\/sec: *\([0-9.]*\)/\1/p' <<<"$out")
    local errs
    errs=$(grep -E "Socket errors|Non-2xx" <<<"$out" | tr -s ' ' | tr '\n' ' ')
    RPS[$name]=${r:-0}
    printf '%-36s %10s requests/s %s\n' "$name" "${r:-failed}" "$errs"
}

ratio() {
    awk -v a="${1:-0}" -v b="${2:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'
}

# rowratio NAME_A NAME_B: RATE[A] / RATE[B], as a bound where a row is
# generator-bound (it took all it was offered, so it may be faster than shown).
rowratio() {
    local r
    r=$(ratio "${RATE[$1]:-0}" "${RATE[$2]:-0}")
    case "${BOUND[$1]:-0}${BOUND[$2]:-0}" in
        10) echo ">= $r (generator-bound: $1 took all it was offered)" ;;
        01) echo "<= $r (generator-bound: $2 took all it was offered)" ;;
        11) echo "n/a (both generator-bound: $r)" ;;
        *) echo "$r" ;;
    esac
}

# ------------------------------------------------------------------ the run

build_topology
if [ "$GEN_METHOD" = auto ]; then
    GEN_USED=$(nsx "$CLI" "$TRAFFICGEN" probe c0 2>&1)
else
    GEN_USED="$GEN_METHOD (GEN_METHOD)"
fi
echo "lbp data-plane benchmark: kernel $(uname -r), $(nproc) CPUs, $T s per run"
echo "generator: $GEN_USED"
echo "cores: generator on CPU $GEN_CPU; app's kernel receive path (RPS) and lbp's switching core on CPU $KERNEL_CPU (LBP_CORES=$LBP_CORES)"
echo "topology: cli -> app (a0|a1) -> sw bridge -> 3 back ends; 60-byte UDP frames"
echo
echo "== packets per second (generator in cli, counters at the back ends)"
# The generator's own ceiling: its frames counted and dropped on arrival at a0
# (the interface every path below receives on).
gen_alone() {
    local name=$1; shift
    start_bg "count-$name-0" nsx "$APP" "$TRAFFICGEN" count a0 --seconds $((T + 3))
    if wait_for "$WORK/count-$name-0" ready 10; then
        PACED=1 measure "$name" "$WORK/count-$name-" 1 "$VIP" 9 "$@"
    else
        log "the generator's own counter did not start: $(cat "$WORK/count-$name-0")"
    fi
    stop_bg
}
gen_alone "generator alone (counted at a0)"
gen_alone "generator alone, new flows" --flows
# kernel_paths SUFFIX: forwarding and nftables DNAT (one flow, new flows).
kernel_paths() {
    local sfx=$1
    pps "kernel forwarding$sfx" "${BE_IP[0]}" 9
    if [ "$HAVE_NFT" = 1 ]; then
        nft_dnat_on || log "nft rules failed to load"
        pps "nftables DNAT, one flow$sfx" "$VIP" 9
        pps "nftables DNAT, new flows$sfx" "$VIP" 9 --flows
        # The same queue depth as lbp's receive ring (16 384 frames): bursts
        # overflow the default backlog of 1 000 as they overflowed a 2 048 ring.
        if [ -z "$sfx" ] && [ -n "$BACKLOG_WAS" ]; then
            echo 16384 >/proc/sys/net/core/netdev_max_backlog
            pps "nftables DNAT, one flow, deep backlog" "$VIP" 9
            restore_backlog
        fi
        local ct ctmax
        ct=$(nsx "$APP" cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null)
        ctmax=$(nsx "$APP" cat /proc/sys/net/netfilter/nf_conntrack_max 2>/dev/null)
        echo "  (conntrack entries after the new-flow run: ${ct:-?} of ${ctmax:-?})"
        nft_dnat_off
        [ "$HAVE_CONNTRACK" = 1 ] && nsx "$APP" conntrack -F >/dev/null 2>&1
    else
        echo "nftables DNAT: not measured (nft missing)"
    fi
}

# set_rps CPU|none: where app's kernel receive path runs (both directions).
set_rps() {
    local mask=0 dev
    [ "$1" != none ] && mask=$(printf %x $((1 << $1)))
    for dev in a0 a1; do
        nsx "$APP" sh -c "echo $mask >/sys/class/net/$dev/queues/rx-0/rps_cpus" 2>/dev/null
    done
}

if [ "$ROWS" = xdp ]; then
    set_rps "$KERNEL_CPU"
elif [ "$(nproc)" -ge 2 ]; then
    set_rps "$KERNEL_CPU"
    kernel_paths ""
    echo "-- the same with everything on the generator's CPU (no RPS; veth runs the receive"
    echo "   path on the sending CPU, which also paces the generator: offered = delivered)"
    set_rps none
    PACED=1 kernel_paths ", 1 CPU"
    set_rps "$KERNEL_CPU"
else
    kernel_paths ""
fi

# XDP_TX reference: the reflector on a0 sends every frame back to c0, counted there.
start_bg reflect nsx "$APP" "$TRAFFICGEN" reflect a0 --seconds $((T + 5))
start_bg count-xdptx-0 nsx "$CLI" "$TRAFFICGEN" count c0 --seconds $((T + 3))
if wait_for "$WORK/reflect" ready 10 && wait_for "$WORK/count-xdptx-0" ready 10; then
    # The reflector runs in a0's receive path, on the generator's CPU (veth),
    # and reflects all it is offered: the row is marked generator-bound, a
    # lower bound of what XDP_TX can do (with the clone generator, close to the
    # generator's own rate).
    measure "XDP_TX reflect (in kernel)" "$WORK/count-xdptx-" 1 "$VIP" 9
    echo "  ($(head -1 "$WORK/reflect"))"
else
    log "XDP_TX reference did not start: $(cat "$WORK/reflect" "$WORK/count-xdptx-0")"
fi
stop_bg

# The switching cores decide every frame (--datapath cores), then the policy
# runs in XDP first (--datapath xdp): what it drops never reaches a core.
CORES=()
lbp_has_datapath && CORES=(--datapath cores)
if [ "$ROWS" = all ]; then
lbp_pps "lbp, one flow" "${CORES[@]}"
lbp_pps "lbp, new flows" "${CORES[@]}" -- --flows
lbp_drops "lbp, filter drops" "${CORES[@]}"
# DSR (UDP port 10): on the cores, then balanced in XDP (redirected out of a1,
# which needs --xdp-tx on veth, and an XDP program on its peer s0).
LBP_PORT=10 lbp_pps "lbp, DSR one flow" "${CORES[@]}"
LBP_PORT=10 lbp_pps "lbp, DSR new flows" "${CORES[@]}" -- --flows
lbp_hairpin "lbp, DSR out of a0, one flow" "${CORES[@]}"
lbp_hairpin "lbp, DSR out of a0, new flows" "${CORES[@]}" -- --flows
fi
if lbp_has_datapath; then
    lbp_pps "lbp xdp, one flow" --datapath xdp
    lbp_pps "lbp xdp, new flows" --datapath xdp -- --flows
    lbp_drops "lbp xdp, filter drops" --datapath xdp
    xdp_pass_on
    xdp_redirect_row
    LBP_PORT=10 lbp_pps "lbp xdp, DSR one flow" --datapath xdp --xdp-tx on
    LBP_PORT=10 lbp_pps "lbp xdp, DSR new flows" --datapath xdp --xdp-tx on -- --flows
    lbp_pps "lbp xdp, NAT one flow" --datapath xdp --xdp-tx on
    lbp_pps "lbp xdp, NAT new flows" --datapath xdp --xdp-tx on -- --flows
    xdp_pass_off
    lbp_hairpin "lbp xdp, DSR out of a0, one flow" --datapath xdp --xdp-tx on
    lbp_hairpin "lbp xdp, DSR out of a0, new flows" --datapath xdp --xdp-tx on -- --flows
else
    echo "lbp xdp:                           not available ($LBP has no --datapath)"
fi
# The bare forwarder swaps the MAC addresses and sends out of a1: a source MAC
# of be1 makes the bridge deliver each frame to be1 alone.
[ "$ROWS" = all ] && lbp_pps "lbp bare forwarder" --bare -- --src-mac "${BE_MAC[0]}"
echo

echo "== HTTP requests per second (wrk -t1 -c16 -d${T}s from cli)"
if [ "$ROWS" != all ]; then
    echo "not measured (ROWS=$ROWS)"
elif [ "$HAVE_WRK" = 1 ] && [ "$HAVE_PY" = 1 ] && start_http; then
    rps "straight to one back end, keep-alive" "http://${BE_IP[0]}:8080/"
    rps "straight to one back end, new conns" "http://${BE_IP[0]}:8080/" -H "Connection: close"
    if [ "$HAVE_NFT" = 1 ]; then
        nft_dnat_on
        rps "nftables DNAT, keep-alive" "http://$VIP/"
        rps "nftables DNAT, new conns" "http://$VIP/" -H "Connection: close"
        nft_dnat_off
    fi
    if lbp_run_available && lbp_start; then
        rps "lbp, keep-alive" "http://$VIP/"
        rps "lbp, new conns" "http://$VIP/" -H "Connection: close"
    else
        printf '%-36s not yet available\n' "lbp"
    fi
    stop_bg
else
    echo "not measured (wrk or python3 missing, or the servers did not start)"
fi
echo

echo "== ratios (generator: $GEN_USED)"
gen=${RATE[generator alone (counted at a0)]:-0}
if [ "$ROWS" = all ]; then
    echo "nftables DNAT one flow / kernel forwarding:   $(rowratio "nftables DNAT, one flow" "kernel forwarding")"
    echo "nftables DNAT new flows / kernel forwarding:  $(rowratio "nftables DNAT, new flows" "kernel forwarding")"
    echo "kernel forwarding / XDP_TX reflect:           $(rowratio "kernel forwarding" "XDP_TX reflect (in kernel)")"
fi
if [ -n "${RATE[kernel forwarding, 1 CPU]:-}" ]; then
    echo "nftables DNAT one flow, 1 CPU / RPS:          $(rowratio "nftables DNAT, one flow, 1 CPU" "nftables DNAT, one flow")"
fi
if [ -n "${RATE[lbp, one flow]:-}" ]; then
    echo "lbp one flow / generator alone:               $(ratio "${RATE[lbp, one flow]}" "$gen")   (well below 1: the generator is not the limit)"
    echo "lbp one flow / nftables DNAT one flow:        $(rowratio "lbp, one flow" "nftables DNAT, one flow")   (target >= 1.5)"
    if [ -n "${RATE[nftables DNAT, one flow, deep backlog]:-}" ]; then
        echo "lbp one flow / nftables DNAT, deep backlog:   $(rowratio "lbp, one flow" "nftables DNAT, one flow, deep backlog")   (target >= 1.5)"
    fi
    echo "lbp new flows / nftables DNAT new flows:      $(rowratio "lbp, new flows" "nftables DNAT, new flows")   (target >= 1.5)"
    echo "lbp one flow / lbp bare forwarder:            $(rowratio "lbp, one flow" "lbp bare forwarder")   (target >= 0.8)"
elif [ "$ROWS" = all ]; then
    echo "lbp ratios:                                   not yet available"
fi
if [ -n "${RATE[lbp xdp, one flow]:-}" ]; then
    echo "lbp xdp filter drops / XDP_DROP (gen. alone): $(rowratio "lbp xdp, filter drops" "generator alone (counted at a0)")   (target >= 0.8)"
    echo "lbp xdp filter drops / lbp cores:             $(rowratio "lbp xdp, filter drops" "lbp, filter drops")"
    echo "lbp xdp one flow / XDP_TX reflect:            $(rowratio "lbp xdp, one flow" "XDP_TX reflect (in kernel)")   (target >= 0.8)"
    echo "lbp xdp new flows / XDP_TX reflect:           $(rowratio "lbp xdp, new flows" "XDP_TX reflect (in kernel)")   (target >= 0.8)"
    echo "lbp xdp one flow / lbp cores one flow:        $(rowratio "lbp xdp, one flow" "lbp, one flow")"
fi
if [ -n "${RATE[lbp xdp, DSR one flow]:-}" ]; then
    echo "lbp xdp DSR one flow / XDP_TX reflect:        $(rowratio "lbp xdp, DSR one flow" "XDP_TX reflect (in kernel)")   (target >= 0.8)"
    echo "lbp xdp DSR new flows / XDP_TX reflect:       $(rowratio "lbp xdp, DSR new flows" "XDP_TX reflect (in kernel)")   (target >= 0.8)"
    echo "lbp xdp DSR one flow / XDP redirect:          $(rowratio "lbp xdp, DSR one flow" "XDP redirect a0 -> a1 (in kernel)")   (the same path's ceiling)"
    echo "lbp xdp DSR new flows / XDP redirect:         $(rowratio "lbp xdp, DSR new flows" "XDP redirect a0 -> a1 (in kernel)")"
    echo "lbp xdp DSR out of a0, one flow / XDP_TX:     $(rowratio "lbp xdp, DSR out of a0, one flow" "XDP_TX reflect (in kernel)")   (target >= 0.8)"
    echo "lbp xdp DSR out of a0, new flows / XDP_TX:    $(rowratio "lbp xdp, DSR out of a0, new flows" "XDP_TX reflect (in kernel)")   (target >= 0.8)"
    echo "lbp xdp DSR out of a0 / lbp cores, one flow:  $(rowratio "lbp xdp, DSR out of a0, one flow" "lbp, DSR out of a0, one flow")"
    echo "lbp xdp DSR out of a0 / lbp cores, new flows: $(rowratio "lbp xdp, DSR out of a0, new flows" "lbp, DSR out of a0, new flows")"
    echo "lbp xdp DSR one flow / lbp cores DSR:         $(rowratio "lbp xdp, DSR one flow" "lbp, DSR one flow")"
    echo "lbp xdp DSR new flows / lbp cores DSR:        $(rowratio "lbp xdp, DSR new flows" "lbp, DSR new flows")"
    echo "lbp xdp NAT one flow / XDP redirect:          $(rowratio "lbp xdp, NAT one flow" "XDP redirect a0 -> a1 (in kernel)")"
    echo "lbp xdp NAT new flows / XDP redirect:         $(rowratio "lbp xdp, NAT new flows" "XDP redirect a0 -> a1 (in kernel)")"
    echo "lbp xdp NAT one flow / lbp cores one flow:    $(rowratio "lbp xdp, NAT one flow" "lbp, one flow")"
    echo "lbp xdp NAT new flows / lbp cores new flows:  $(rowratio "lbp xdp, NAT new flows" "lbp, new flows")"
fi
ka=${RPS[straight to one back end, keep-alive]:-0}
if [ "$ROWS" = all ]; then
    echo "wrk nftables DNAT / one back end, keep-alive: $(ratio "${RPS[nftables DNAT, keep-alive]:-0}" "$ka")"
    echo "wrk nftables DNAT / one back end, new conns:  $(ratio "${RPS[nftables DNAT, new conns]:-0}" "${RPS[straight to one back end, new conns]:-0}")"
fi
if [ -n "${RPS[lbp, keep-alive]:-}" ]; then
    echo "wrk lbp / nftables DNAT, keep-alive:          $(ratio "${RPS[lbp, keep-alive]}" "${RPS[nftables DNAT, keep-alive]:-0}")   (target >= 1)"
    echo "wrk lbp / nftables DNAT, new conns:           $(ratio "${RPS[lbp, new conns]:-0}" "${RPS[nftables DNAT, new conns]:-0}")   (target >= 1)"
fi
