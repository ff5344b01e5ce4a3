#!/usr/bin/env bash
# `lbp eval` on a large policy: P packets (200 000) decided by a policy of R
# filter rules (100 000), beside `lbp check` of the same policy. Prints the best
# of RUNS runs of:
#   - lbp check POLICY (wall time);
#   - lbp eval POLICY --pcap CAPTURE, text output to /dev/null (wall time), and
#     the time eval itself reports (`--timing`) for deciding and printing the
#     P packets, per packet: the figure the goal is about, under 1 us/packet;
#     reading, checking and compiling the policy are paid once and shown apart;
#   - the same with `--format json`.
# The machine may be shared: the best of several runs is the one least
# disturbed.
#
# The rules are of four shapes, a quarter each (exact source and port; a
# destination and a port set; a /24 and a port range; an interface, ICMP type
# and TTL bound), so that the JIT's merged rule tables are what decides. The
# packets: half new connections to the service (every rule tried, then the
# service entry), a quarter that match an exact rule, the rest UDP and ICMP.
# Addresses are in 198.18.0.0/15; nothing is sent anywhere.
#
#   benches/eval.sh                      # R=100000 P=200000, release binary
#   R=10000 P=50000 RUNS=1 LBP=target/debug/lbp benches/eval.sh
#
# Needs python3 (to write the capture).
set -euo pipefail
cd "$(dirname "$0")/.."

R=${R:-100000}
P=${P:-200000}
RUNS=${RUNS:-3}
command -v python3 >/dev/null || { echo "benches/eval.sh needs python3" >&2; exit 2; }
if [[ -z ${LBP:-} ]]; then
    cargo build --release -p lbp --quiet
    LBP=target/release/lbp
fi

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

python3 - "$R" "$P" "$dir" <<'EOF'
import random, struct, sys

rules, packets, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
random.seed(7)

with open(f"{out}/policy.lbp", "w") as p:
    p.write("interface client { address 198.18.0.1/24 }\n")
    p.write("interface servers { address 198.18.2.1/24 }\n\n")
    p.write("pool web {\n    backend 198.18.2.11 weight 3\n    backend 198.18.2.12\n}\n\n")
    p.write("service http {\n    vip 198.18.0.10 tcp port 80, 443\n    pool web\n"
            "    balance maglev\n    mode nat to port 8080\n}\n\nfilter {\n")
    for i in range(rules):
        a, b = (i >> 8) & 255, i & 255
        shape = i % 4
        if shape == 0:
            p.write(f"    ip.src == 198.19.{a}.{b} && tcp.dport == {1 + i % 65535} => drop\n")
        elif shape == 1:
            p.write(f"    ip.dst == 198.18.{a}.{b} && tcp.dport in {{ 22, 8022, {1024 + i % 60000} }} => reset\n")
        elif shape == 2:
            p.write(f"    ip.src in 198.19.{a}.0/24 && udp.dport in {i % 60000}..{i % 60000 + 15} => drop\n")
        else:
            p.write(f"    in.iface == client && icmp.type == 8 && ip.ttl < {1 + i % 255} => local\n")
    p.write("}\n\nroute 198.18.2.0/24 dev servers\nroute 0.0.0.0/0 via 198.18.0.254 dev client\n")


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def frame(src, dst, proto, l4):
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, proto, 0, bytes(src), bytes(dst))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02\x08\x00" + ip + l4


def write(name, frames):
    with open(f"{out}/{name}", "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, fr in enumerate(frames):
            f.write(struct.pack("<IIII", i, 0, len(fr), len(fr)))
            f.write(fr)


frames = []
for i in range(packets):
    kind = i % 8
    if kind < 4:  # a new connection to the service
        src, l4 = [198, 18, 1, random.randrange(1, 255)], struct.pack(
            "!HHIIBBHHH", random.randrange(1024, 65535), 80, i, 0, 0x50, 0x02, 65535, 0, 0)
        frames.append(frame(src, [198, 18, 0, 10], 6, l4))
    elif kind < 6:  # matches an exact rule
        r = random.randrange(0, rules, 4)
        src = [198, 19, (r >> 8) & 255, r & 255]
        l4 = struct.pack("!HHIIBBHHH", 40000, 1 + r % 65535, i, 0, 0x50, 0x02, 65535, 0, 0)
        frames.append(frame(src, [198, 18, 0, 10], 6, l4))
    elif kind == 6:  # UDP through the range rules
        src = [198, 19, random.randrange(0, 256), random.randrange(1, 255)]
        l4 = struct.pack("!HHHH", 5353, random.randrange(1, 65535), 8, 0)
        frames.append(frame(src, [198, 18, 2, 11], 17, l4))
    else:  # ICMP echo to the virtual IP
        l4 = struct.pack("!BBHHH", 8, 0, 0, 1, i & 0xFFFF)
        frames.append(frame([198, 18, 1, 7], [198, 18, 0, 10], 1, l4))
write("packets.pcap", frames)
EOF

# Best wall time in microseconds of RUNS runs of "$@" (output discarded).
best() {
    local best="" t0 t1 t
    for ((r = 0; r < RUNS; r++)); do
        t0=$(date +%s%N)
        "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
        t1=$(date +%s%N)
        t=$(((t1 - t0) / 1000))
        if [[ -z $best || $t -lt $best ]]; then best=$t; fi
    done
    echo "$best"
}

# The line `lbp eval --timing` prints with the lowest per-packet time of RUNS
# runs of "$@".
timing() {
    local best="" line us
    for ((r = 0; r < RUNS; r++)); do
        line=$("$@" --timing 2>&1 >/dev/null | grep 'us/packet') || { echo "failed: $*" >&2; exit 1; }
        us=$(sed -E 's|.* ([0-9.]+) us/packet.*|\1|' <<<"$line")
        if [[ -z $best ]] || awk -v a="$us" -v b="$best" 'BEGIN { exit !(a < b) }'; then
            best=$us
            kept=$line
        fi
    done
    echo "$kept"
}

lines=$("$LBP" eval "$dir/policy.lbp" --pcap "$dir/packets.pcap" | wc -l)
[[ $lines -eq $P ]] || { echo "expected $P lines, got $lines" >&2; exit 1; }

check=$(best "$LBP" check "$dir/policy.lbp")
all=$(best "$LBP" eval "$dir/policy.lbp" --pcap "$dir/packets.pcap")
text=$(timing "$LBP" eval "$dir/policy.lbp" --pcap "$dir/packets.pcap")
json=$(timing "$LBP" eval "$dir/policy.lbp" --pcap "$dir/packets.pcap" --format json)

s() { awk -v us="$1" 'BEGIN { printf "%8.3f s", us / 1e6 }'; }
echo "eval: $P packets, $R filter rules, best of $RUNS runs ($LBP)"
echo "  lbp check POLICY                  $(s "$check")"
echo "  lbp eval POLICY, text             $(s "$all")  (all of it)"
echo "  text: ${text#lbp: eval: }"
echo "  JSON: ${json#lbp: eval: }"
echo "  goal: under 1 us/packet"
