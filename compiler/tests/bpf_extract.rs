//! The eBPF header extraction (`lbp_compiler::bpf::extract::emit_extract`)
//! against its specification, `lbp_abi::wire::extract`: a program that
//! extracts and copies the `Fields` into an array map runs in the kernel
//! (`BPF_PROG_TEST_RUN`) on frames built by `packet::build` and varied (VLAN
//! tags, IPv4 options and fragments, IPv6 extension headers, TCP options,
//! Ethernet padding, other EtherTypes), on every truncation of them, on random
//! mutations of them and on random bytes; every field must be equal. Needs
//! root; skipped with a message otherwise.

use std::mem::{offset_of, size_of};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use lbp_abi::bpf::{Asm, MapKind, MapSpec, helper, op, reg::*, xdp};
use lbp_abi::wire::layout::ipv6 as ip6;
use lbp_abi::{Fields, tcp_flag};
use lbp_compiler::bpf::extract::emit_extract;
use lbp_compiler::packet::{PacketSpec, Proto, build};
use lbp_compiler::wire;
use lbp_lab::require_netns;
use lbp_runtime::ring::bpf::{self, Loaded};
use proptest::prelude::Rng as _;
use proptest::test_runner::{RngAlgorithm, TestRng};

/// Where the program keeps its `Fields`; the map key is above it.
const FIELDS_AT: i16 = -80;

/// The most `BPF_PROG_TEST_RUN` takes for a program without fragments: a page
/// less the headroom (256) and the room for `skb_shared_info` (320).
const MAX_TEST_FRAME: usize = 4096 - 256 - 320;

/// The extraction program, loaded: its map, and the size of the extract code.
struct Extractor {
    loaded: Loaded,
    extract_insns: usize,
}

impl Extractor {
    fn load() -> Extractor {
        let mut a = Asm::new();
        a.mov(R6, R1);
        let start = a.len();
        emit_extract(&mut a, FIELDS_AT);
        let extract_insns = a.len() - start;
        a.st_imm(op::W, FP, -4, 0);
        a.ld_map(R1, 0);
        a.mov(R2, FP);
        a.alu_imm(op::ADD, R2, -4);
        a.mov(R3, FP);
        a.alu_imm(op::ADD, R3, i32::from(FIELDS_AT));
        a.mov_imm(R4, 0);
        a.call(helper::MAP_UPDATE_ELEM);
        a.ret(xdp::PASS);
        let prog = a.finish().expect("the extraction program assembles");
        let maps = [MapSpec {
            name: "lbp_fields".into(),
            kind: MapKind::Array,
            key_size: 4,
            value_size: size_of::<Fields>() as u32,
            max_entries: 1,
            entries: vec![],
        }];
        let loaded = Loaded::xdp("lbp_extract", &prog, &maps)
            .unwrap_or_else(|e| panic!("the extraction program loads: {e}"));
        Extractor {
            loaded,
            extract_insns,
        }
    }

    /// The fields the program extracted from `frame`, or the kernel's refusal
    /// to run it (a frame shorter than Ethernet or longer than a page).
    fn run(&self, frame: &[u8]) -> std::io::Result<Fields> {
        let run = bpf::xdp_test_run(self.loaded.prog.as_fd(), frame)?;
        assert_eq!(run.action, xdp::PASS as u32, "{}", hex(frame));
        assert_eq!(run.frame, frame, "the program left the frame alone");
        let bytes = bpf::map_lookup_bytes(&self.loaded.maps[0], &0u32.to_ne_bytes())?
            .expect("an array map has its entry");
        Ok(fields_from(&bytes))
    }

    /// Runs `frame` and compares with `wire::extract`; a mismatch panics with
    /// the frame and both `Fields`.
    fn check(&self, frame: &[u8]) {
        let got = self
            .run(frame)
            .unwrap_or_else(|e| panic!("test run of {} bytes: {e}\n{}", frame.len(), hex(frame)));
        let want = wire::extract(frame, 0);
        if got != want {
            panic!(
                "eBPF extraction differs from wire::extract on the frame\n{}\n\
                 eBPF: {got:#?}\nwire: {want:#?}",
                hex(frame)
            );
        }
    }
}

/// `Fields` from the bytes of its `repr(C)` layout (native byte order).
fn fields_from(b: &[u8]) -> Fields {
    assert_eq!(b.len(), size_of::<Fields>());
    let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let u16_at = |o: usize| u16::from_ne_bytes([b[o], b[o + 1]]);
    let arr = |o: usize| -> [u8; 16] { b[o..o + 16].try_into().unwrap() };
    let mac = |o: usize| -> [u8; 6] { b[o..o + 6].try_into().unwrap() };
    Fields {
        present: u32_at(offset_of!(Fields, present)),
        pkt_len: u32_at(offset_of!(Fields, pkt_len)),
        in_iface: u32_at(offset_of!(Fields, in_iface)),
        ip_len: u32_at(offset_of!(Fields, ip_len)),
        eth_type: u16_at(offset_of!(Fields, eth_type)),
        sport: u16_at(offset_of!(Fields, sport)),
        dport: u16_at(offset_of!(Fields, dport)),
        l3_offset: u16_at(offset_of!(Fields, l3_offset)),
        l4_offset: u16_at(offset_of!(Fields, l4_offset)),
        ip_version: b[offset_of!(Fields, ip_version)],
        ip_proto: b[offset_of!(Fields, ip_proto)],
        ip_ttl: b[offset_of!(Fields, ip_ttl)],
        tcp_flags: b[offset_of!(Fields, tcp_flags)],
        icmp_type: b[offset_of!(Fields, icmp_type)],
        icmp_code: b[offset_of!(Fields, icmp_code)],
        eth_src: mac(offset_of!(Fields, eth_src)),
        eth_dst: mac(offset_of!(Fields, eth_dst)),
        ip_src: arr(offset_of!(Fields, ip_src)),
        ip_dst: arr(offset_of!(Fields, ip_dst)),
    }
}

fn hex(frame: &[u8]) -> String {
    let mut s = format!("{} bytes:", frame.len());
    for (i, b) in frame.iter().enumerate() {
        if i % 16 == 0 {
            s.push_str(&format!("\n{i:04x} "));
        }
        s.push_str(&format!(" {b:02x}"));
    }
    s
}

/// `BPF_OBJ_GET_INFO_BY_FD`'s `verified_insns`: how many instructions the
/// verifier processed to accept the program.
fn verified_insns(prog: BorrowedFd<'_>) -> u32 {
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    /// Byte offset of `verified_insns` in `struct bpf_prog_info`.
    const VERIFIED_INSNS: usize = 216;
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut info = [0u64; 29];
    let mut attr = InfoAttr {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: size_of::<[u64; 29]>() as u32,
        info: info.as_mut_ptr() as u64,
    };
    bpf::sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).expect("BPF_OBJ_GET_INFO_BY_FD");
    let word = info[VERIFIED_INSNS / 8];
    word as u32
}

// ---- Frames -------------------------------------------------------------

const MAC_A: [u8; 6] = [0x02, 0x5e, 0x00, 0x00, 0x00, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0x5e, 0x00, 0x00, 0x00, 0x0b];

fn spec(proto: Proto, v6: bool) -> PacketSpec {
    let (src, dst): (IpAddr, IpAddr) = if v6 {
        (
            "2001:db8::1".parse().unwrap(),
            "2001:db8:2::10".parse().unwrap(),
        )
    } else {
        (
            "198.18.0.7".parse().unwrap(),
            "203.0.113.9".parse().unwrap(),
        )
    };
    let mut s = PacketSpec::new(proto, src, dst);
    s.eth_src = MAC_A;
    s.eth_dst = MAC_B;
    s.sport = 40_000;
    s.dport = 443;
    s
}

/// What `packet::build` makes: every transport over both families, flags,
/// ports, TTLs, ICMP types, padded and exact lengths.
fn built() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for v6 in [false, true] {
        for proto in [Proto::Tcp, Proto::Udp, Proto::Icmp, Proto::Icmpv6] {
            let base = spec(proto, v6);
            out.push(build(&base));
            let mut s = base.clone();
            s.tcp_flags = tcp_flag::SYN | tcp_flag::ACK | 0xc0;
            s.ttl = 1;
            s.sport = 1;
            s.dport = 65_535;
            s.icmp_type = Some(3);
            s.icmp_code = 4;
            out.push(build(&s));
            let mut s = base.clone();
            s.tcp_flags = tcp_flag::FIN | tcp_flag::PSH | tcp_flag::URG | tcp_flag::RST;
            s.ttl = 255;
            s.len = Some(60);
            out.push(build(&s));
            let mut s = base;
            s.len = Some(1500);
            out.push(build(&s));
        }
    }
    out
}

fn set_be16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

/// Adds `n` to the IP length field of the untagged frame `f` (IPv4 total
/// length or IPv6 payload length).
fn grow_ip(f: &mut [u8], n: usize) {
    let at = if be16(f, 12) == 0x0800 { 16 } else { 18 };
    let len = usize::from(be16(f, at)) + n;
    set_be16(f, at, len as u16);
}

/// `words` 4-byte words of IPv4 options (NOPs, then an end of options).
fn ipv4_options(mut f: Vec<u8>, words: usize) -> Vec<u8> {
    let mut opts = vec![1u8; words * 4];
    if let Some(last) = opts.last_mut() {
        *last = 0;
    }
    f.splice(34..34, opts);
    f[14] = 0x40 | (5 + words as u8);
    grow_ip(&mut f, words * 4);
    f
}

fn ipv4_fragment(mut f: Vec<u8>, flags_frag: u16) -> Vec<u8> {
    set_be16(&mut f, 20, flags_frag);
    f
}

/// IPv6 extension headers in order, each `(type, length byte)`; a fragment
/// header's length byte is its offset field's low byte instead (`0x01`: M
/// set, offset 0; `0x08`: offset 1).
fn ipv6_ext(mut f: Vec<u8>, headers: &[(u8, u8)]) -> Vec<u8> {
    let upper = f[20];
    let mut bytes = Vec::new();
    for (i, &(kind, len)) in headers.iter().enumerate() {
        let next = headers.get(i + 1).map_or(upper, |h| h.0);
        let mut h = match kind {
            ip6::FRAGMENT => vec![next, 0, 0, len, 0x12, 0x34, 0x56, 0x78],
            ip6::AH => {
                let mut h = vec![0xa5; (usize::from(len) + 2) * 4];
                h[1] = len;
                h
            }
            _ => {
                let mut h = vec![0; (usize::from(len) + 1) * 8];
                h[1] = len;
                h
            }
        };
        h[0] = next;
        bytes.extend_from_slice(&h);
    }
    if let Some(first) = headers.first() {
        f[20] = first.0;
    }
    let n = bytes.len();
    f.splice(54..54, bytes);
    grow_ip(&mut f, n);
    f
}

/// `words` 4-byte words of TCP options (NOPs) after the 20-byte header that
/// starts at `l4`.
fn tcp_options(mut f: Vec<u8>, l4: usize, words: usize) -> Vec<u8> {
    f.splice(l4 + 20..l4 + 20, vec![1u8; words * 4]);
    f[l4 + 12] = ((5 + words) as u8) << 4;
    grow_ip(&mut f, words * 4);
    f
}

fn vlan(mut f: Vec<u8>, tpids: &[u16]) -> Vec<u8> {
    let mut tags = Vec::new();
    for (i, &t) in tpids.iter().enumerate() {
        tags.extend_from_slice(&t.to_be_bytes());
        tags.extend_from_slice(&(100 + i as u16).to_be_bytes());
    }
    // Each tag goes before the EtherType: TPID, TCI, then the next type.
    let ty: Vec<u8> = f[12..14].to_vec();
    f.splice(12..14, tags.into_iter().chain(ty));
    f
}

fn padded(mut f: Vec<u8>, n: usize) -> Vec<u8> {
    f.extend(std::iter::repeat_n(0xee, n));
    f
}

/// Hand-varied frames over what `build` makes: the headers `wire` skips or
/// walks, at and past its limits, and some it must refuse.
fn varied() -> Vec<Vec<u8>> {
    use ip6::{AH, DEST_OPTS, FRAGMENT, HOP_BY_HOP, ROUTING};
    let mut out = built();
    let tcp4 = build(&spec(Proto::Tcp, false));
    let udp4 = build(&spec(Proto::Udp, false));
    let icmp4 = build(&spec(Proto::Icmp, false));
    let tcp6 = build(&spec(Proto::Tcp, true));
    let udp6 = build(&spec(Proto::Udp, true));
    let icmp6 = build(&spec(Proto::Icmpv6, true));
    // IPv4 options, fragments.
    for words in [1, 2, 10] {
        out.push(ipv4_options(tcp4.clone(), words));
        out.push(ipv4_options(udp4.clone(), words));
    }
    for ff in [0x2000, 0x2001, 0x0001, 0x4000, 0x1fff, 0x6000, 0xa000] {
        out.push(ipv4_fragment(udp4.clone(), ff));
        out.push(ipv4_fragment(tcp4.clone(), ff));
    }
    // TCP options.
    out.push(tcp_options(tcp4.clone(), 34, 3));
    out.push(tcp_options(tcp4.clone(), 34, 10));
    out.push(tcp_options(tcp6.clone(), 54, 1));
    // IPv6 extension headers: each kind, chains, fragments, the limit.
    let chains: Vec<Vec<(u8, u8)>> = vec![
        vec![(HOP_BY_HOP, 0)],
        vec![(HOP_BY_HOP, 3)],
        vec![(ROUTING, 1)],
        vec![(DEST_OPTS, 0)],
        vec![(AH, 1)],
        vec![(AH, 4)],
        vec![(FRAGMENT, 0x00)],
        vec![(FRAGMENT, 0x01)],
        vec![(FRAGMENT, 0x08)],
        vec![(HOP_BY_HOP, 0), (FRAGMENT, 0x01)],
        vec![(HOP_BY_HOP, 0), (FRAGMENT, 0xf8), (DEST_OPTS, 0)],
        vec![(HOP_BY_HOP, 0), (ROUTING, 2), (AH, 3), (DEST_OPTS, 1)],
        vec![(FRAGMENT, 0x01), (AH, 1), (FRAGMENT, 0x10)],
        vec![(DEST_OPTS, 0); 7],
        vec![(DEST_OPTS, 0); 8],
        vec![(DEST_OPTS, 0); 9],
        [vec![(AH, 1); 7], vec![(FRAGMENT, 0x01)]].concat(),
        [vec![(FRAGMENT, 0x00); 8], vec![(FRAGMENT, 0x08)]].concat(),
        [vec![(HOP_BY_HOP, 0); 7], vec![(FRAGMENT, 0x08)]].concat(),
        vec![(HOP_BY_HOP, 40), (ROUTING, 30), (DEST_OPTS, 60)],
    ];
    for chain in &chains {
        for base in [&tcp6, &udp6, &icmp6] {
            out.push(ipv6_ext(base.clone(), chain));
        }
    }
    // No next header; ICMP over IPv6 and ICMPv6 over IPv4 are not ICMP.
    let mut none = udp6.clone();
    none[20] = ip6::NO_NEXT;
    out.push(none.clone());
    out.push(ipv6_ext(none, &[(HOP_BY_HOP, 0)]));
    out.push(build(&spec(Proto::Icmp, true)));
    out.push(build(&spec(Proto::Icmpv6, false)));
    // An unknown protocol.
    let mut gre = udp4.clone();
    gre[23] = 47;
    out.push(gre);
    // Ethernet padding after the IP packet.
    for f in [&tcp4, &icmp4, &udp6, &icmp6] {
        out.push(padded(f.clone(), 18));
    }
    // VLAN tags: one, two, a third (an unknown type), over each family.
    for f in [&tcp4, &udp6, &ipv6_ext(tcp6.clone(), &[(HOP_BY_HOP, 0)])] {
        out.push(vlan(f.clone(), &[0x8100]));
        out.push(vlan(f.clone(), &[0x88a8]));
        out.push(vlan(f.clone(), &[0x88a8, 0x8100]));
        out.push(vlan(f.clone(), &[0x8100, 0x8100, 0x8100]));
        out.push(vlan(ipv4_options(tcp4.clone(), 2), &[0x8100, 0x88a8]));
    }
    // Lengths and versions `wire` refuses (and one it takes, IHL 15 with its
    // options present).
    let poke = |f: &[u8], at: usize, v: &[u8]| {
        let mut f = f.to_vec();
        f[at..at + v.len()].copy_from_slice(v);
        f
    };
    out.push(poke(&tcp4, 46, &[0xf0])); // data offset past the segment
    out.push(poke(&tcp4, 46, &[0x40])); // data offset below 5
    out.push(poke(&tcp6, 66, &[0x60])); // data offset 6 in a 20-byte segment
    out.push(poke(&tcp4, 14, &[0x44])); // IHL 4
    out.push(poke(&tcp4, 14, &[0x4f])); // IHL 15 past the frame
    out.push(ipv4_options(udp4.clone(), 10));
    out.push(poke(&tcp4, 14, &[0x55])); // version 5
    out.push(poke(&tcp4, 16, &[0x00, 0x13])); // total length below IHL
    out.push(poke(&tcp4, 16, &[0x00, 0x29])); // total length past the frame
    out.push(poke(&tcp4, 16, &[0x00, 0x27])); // segment one byte short
    out.push(poke(&udp6, 14, &[0x40])); // version 4 under the IPv6 type
    out.push(poke(&udp6, 18, &[0x00, 0x09])); // payload past the frame
    out.push(poke(&udp6, 18, &[0x00, 0x07])); // UDP header one byte short
    out.push(poke(&icmp4, 16, &[0x00, 0x17])); // ICMP: 3 of its 4 bytes
    let hbh = ipv6_ext(udp6.clone(), &[(HOP_BY_HOP, 3)]);
    out.push(poke(&hbh, 18, &[0x00, 0x10])); // hop-by-hop past the payload
    out.push(poke(&hbh, 18, &[0x00, 0x01])); // no room for its length byte
    out.push(poke(&hbh, 18, &[0x00, 0x20])); // no room for UDP after it
    // Other EtherTypes: ARP, and a bare Ethernet header.
    let mut arp = udp4.clone();
    set_be16(&mut arp, 12, 0x0806);
    out.push(arp);
    out.push(udp4[..14].to_vec());
    out
}

/// A deterministic generator, so that a failure reproduces.
fn rng() -> TestRng {
    TestRng::from_seed(RngAlgorithm::ChaCha, &[0x1b; 32])
}

/// A number below `n` (0 for `n` 0).
fn below(rng: &mut TestRng, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

/// Bytes that steer `wire` down its branches when written into headers.
const INTERESTING: [u8; 24] = [
    0x00, 0x01, 0x02, 0x05, 0x06, 0x08, 0x11, 0x2b, 0x2c, 0x33, 0x3a, 0x3b, 0x3c, 0x40, 0x45, 0x46,
    0x4f, 0x50, 0x60, 0x81, 0x86, 0x88, 0xdd, 0xff,
];

/// `f` with a few random changes: bytes in the headers overwritten, a length
/// field changed, the frame cut or grown.
fn mutate(rng: &mut TestRng, mut f: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + below(rng, 4) {
        let span = f.len().min(120);
        match below(rng, 6) {
            0 | 1 => {
                let at = below(rng, span);
                f[at] = INTERESTING[below(rng, INTERESTING.len())];
            }
            2 => {
                let at = below(rng, span);
                f[at] = rng.next_u64() as u8;
            }
            3 => {
                let at = below(rng, span.saturating_sub(1));
                let v = match below(rng, 3) {
                    0 => rng.next_u64() as u16,
                    1 => (f.len() as u16).wrapping_sub(below(rng, 80) as u16),
                    _ => below(rng, 64) as u16,
                };
                set_be16(&mut f, at, v);
            }
            4 => {
                let keep = 14 + below(rng, f.len() - 13);
                f.truncate(keep);
            }
            _ => {
                let n = below(rng, 64);
                for _ in 0..n {
                    f.push(rng.next_u64() as u8);
                }
            }
        }
    }
    f
}

/// Random bytes after an Ethernet header whose type is usually IPv4, IPv6 or
/// a VLAN tag, with a plausible version nibble.
fn random_frame(rng: &mut TestRng) -> Vec<u8> {
    let len = 14 + below(rng, 160);
    let mut f: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    let ty = [0x0800, 0x86dd, 0x8100, 0x88a8, 0x0806][below(rng, 5)];
    set_be16(&mut f, 12, ty);
    if len > 14 && below(rng, 2) == 0 {
        f[14] = if ty == 0x86dd { 0x60 } else { 0x45 } | (f[14] & 0x0f);
    }
    f
}

#[test]
fn extraction_matches_wire_on_built_and_varied_frames() {
    require_netns!();
    let x = Extractor::load();
    let frames = varied();
    for f in &frames {
        assert!(f.len() <= MAX_TEST_FRAME, "{} bytes", f.len());
        x.check(f);
    }
    eprintln!("bpf extract: {} frames compared", frames.len());
}

#[test]
fn extraction_matches_wire_on_every_truncation() {
    require_netns!();
    let x = Extractor::load();
    let mut n = 0;
    for f in varied() {
        // Truncations past the first 200 bytes only cut payload.
        for len in 14..=f.len().min(200) {
            x.check(&f[..len]);
            n += 1;
        }
    }
    eprintln!("bpf extract: {n} truncations compared");
    assert!(n > 10_000, "{n}");
}

#[test]
fn extraction_matches_wire_on_random_mutations_and_bytes() {
    require_netns!();
    let x = Extractor::load();
    let corpus = varied();
    let mut rng = rng();
    let mut n = 0;
    for _ in 0..30_000 {
        let f = if below(&mut rng, 4) == 0 {
            random_frame(&mut rng)
        } else {
            let pick = below(&mut rng, corpus.len());
            mutate(&mut rng, corpus[pick].clone())
        };
        x.check(&f);
        n += 1;
    }
    eprintln!("bpf extract: {n} random frames compared");
}

/// Proptest: any bytes after an Ethernet header of any of the types `wire`
/// reads, the program loaded once for all cases.
#[test]
fn extraction_matches_wire_on_arbitrary_bytes() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    require_netns!();
    let x = Extractor::load();
    let types = prop::sample::select(vec![0x0800u16, 0x86dd, 0x8100, 0x88a8, 0x0806]);
    let strategy = (
        types,
        prop::collection::vec(any::<u8>(), 0..200),
        prop::collection::vec((0usize..120, any::<u8>()), 0..4),
    );
    let mut runner = TestRunner::new(Config::with_cases(3_000));
    runner
        .run(&strategy, |(ty, body, pokes)| {
            let mut f = vec![0u8; 14];
            set_be16(&mut f, 12, ty);
            f.extend_from_slice(&body);
            // A version nibble that matches the type more often than not.
            if let Some(b) = f.get_mut(14) {
                *b = if ty == 0x86dd { 0x60 } else { 0x45 } | (*b & 0x0f);
            }
            for (at, v) in pokes {
                if let Some(b) = f.get_mut(at) {
                    *b = v;
                }
            }
            let got = x.run(&f).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(got, wire::extract(&f, 0), "{}", hex(&f));
            Ok(())
        })
        .unwrap();
}

/// The verifier's work on the extraction stays small (the decision code
/// follows it in the same program, under the same 1 000 000 limit), and its
/// paths meet: the code after it is verified a few times, not once per path.
#[test]
fn the_verifier_processes_few_instructions() {
    require_netns!();
    let x = Extractor::load();
    let verified = verified_insns(x.loaded.prog.as_fd());
    eprintln!(
        "bpf extract: {} instructions, {verified} processed by the verifier",
        x.extract_insns
    );
    assert!(x.extract_insns < 700, "{} instructions", x.extract_insns);
    assert!(
        verified < 5 * x.extract_insns as u32,
        "{verified} processed"
    );
}

/// Frames from 14 bytes to the largest `BPF_PROG_TEST_RUN` keeps in one piece
/// compare equal (a page less the headroom and `skb_shared_info`); a frame
/// beyond that is refused (older kernels) or run with its tail in fragments,
/// which a program without `BPF_F_XDP_HAS_FRAGS` cannot read (a live
/// interface never hands it such a frame): then the program sees the frame
/// cut at that size, and `pkt_len` is the whole frame's. Below 14 bytes the
/// kernel refuses the run.
#[test]
fn frames_at_the_test_runs_bounds() {
    require_netns!();
    let x = Extractor::load();
    for v6 in [false, true] {
        let mut s = spec(Proto::Udp, v6);
        s.len = Some(MAX_TEST_FRAME);
        let f = build(&s);
        x.check(&f);
        for len in [MAX_TEST_FRAME + 1, 5_000, 20_000] {
            let mut s = spec(Proto::Tcp, v6);
            s.len = Some(len);
            let f = build(&s);
            match x.run(&f) {
                Ok(got) => {
                    let mut want = wire::extract(&f[..MAX_TEST_FRAME], 0);
                    want.pkt_len = len as u32;
                    assert_eq!(got, want, "{len} bytes");
                }
                Err(e) => eprintln!("bpf extract: a frame of {len} bytes refused: {e}"),
            }
        }
    }
    assert!(x.run(&[0u8; 13]).is_err());
}
