# Shell functions the benchmark scripts share (sourced by dataplane.sh and
# reload.sh): a log line, stopping processes by PID, installing a missing tool,
# running in and making namespaces the script removes at its exit
# (`remove_namespaces`, from the script's own `cleanup`). The caller declares
# `NSES=()` before `mkns`.

log() { echo "# $*" >&2; }

# stop_pids PID...: SIGTERM, up to 5 s to exit, then SIGKILL; reaped. Empty
# arguments are skipped.
stop_pids() {
    local pid i pids=()
    for pid in "$@"; do [ -n "$pid" ] && pids+=("$pid"); done
    [ ${#pids[@]} -gt 0 ] || return 0
    kill "${pids[@]}" 2>/dev/null
    for ((i = 0; i < 50; i++)); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    kill -KILL "${pids[@]}" 2>/dev/null
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
}

# Install a missing tool with apt-get (quietly), or return 1.
need() {
    local tool=$1 pkg=${2:-$1}
    command -v "$tool" >/dev/null && return 0
    log "installing $pkg"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null 2>&1
    command -v "$tool" >/dev/null
}

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# mkns NAME: a namespace with loopback up, removed by `remove_namespaces`.
mkns() {
    ip netns add "$1" || exit 1
    NSES+=("$1")
    ip -n "$1" link set lo up
}

remove_namespaces() {
    local ns
    for ns in "${NSES[@]}"; do
        ip netns del "$ns" 2>/dev/null
    done
}
