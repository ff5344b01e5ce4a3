//! A DNS responder for one name, as an application on lbp's switching cores:
//! `=> app dns` in a policy hands it UDP datagrams, and it answers them on the
//! core, in the frame they came in, with no system call and no kernel.
//!
//! It is authoritative for exactly one name ([`Config::name`]): a query of
//! class IN for that name is answered with its A records (type A), its AAAA
//! records (type AAAA), both (ANY), or no records (any other type: NOERROR,
//! "no data"). A name below it is NXDOMAIN; any other name is REFUSED (not our
//! zone). Every answer is authoritative (AA), copies the query's ID, RD bit
//! and question, and carries no additional records (a query's EDNS OPT record
//! is ignored, which RFC 6891 allows); an answer that would be longer than 512
//! bytes keeps the records that fit and sets TC.
//!
//! Hostile input has one defined outcome, and never a panic: what cannot be a
//! query to answer is freed without an answer (not a whole UDP datagram, a
//! wrong or, over IPv6, missing UDP checksum, IPv4 options, a destination that
//! is not the appliance's, a source that is not one host, source port 0, a DNS
//! header cut short, a response (QR set)); a query whose header is whole but
//! whose body is wrong is answered FORMERR without a question (question count
//! other than 1, answer or authority records, a name cut short, a label of
//! the reserved kinds, a name longer than 255 bytes, a compression pointer
//! that does not point strictly before every place the name was read from,
//! which is how a pointer loop ends); an opcode other than QUERY is answered
//! NOTIMP.
//!
//! The answer is the request turned around: the IP addresses and UDP ports
//! swapped, a fresh TTL, the IP length, the UDP length and both checksums
//! computed anew (RFC 768 and 8200: a computed UDP checksum of 0 is sent as
//! 0xffff).

use std::net::{Ipv4Addr, Ipv6Addr};

use lbp::app::checksum::{fold, sum};
use lbp::app::{App, Ctx, Fields, Frame, Layout, layout, pseudo, turn_ip_around};

/// The application's name in a policy (`=> app dns`).
pub const NAME: &str = "dns";

const PROTO_UDP: u8 = 17;
const UDP_HEADER: usize = 8;
const DNS_HEADER: usize = 12;
/// The largest answer over UDP without EDNS (RFC 1035 4.2.1).
pub const MAX_ANSWER: usize = 512;
/// The longest name in wire form (RFC 1035 3.1).
const MAX_NAME: usize = 255;

/// DNS header flags and codes.
const QR: u8 = 0x80;
const AA: u8 = 0x04;
const TC: u8 = 0x02;
const RD: u8 = 0x01;

/// Response codes.
pub mod rcode {
    pub const NOERROR: u8 = 0;
    pub const FORMERR: u8 = 1;
    pub const NXDOMAIN: u8 = 3;
    pub const NOTIMP: u8 = 4;
    pub const REFUSED: u8 = 5;
}

/// Record types and the class this responder knows.
pub mod rtype {
    pub const A: u16 = 1;
    pub const AAAA: u16 = 28;
    pub const ANY: u16 = 255;
    pub const CLASS_IN: u16 = 1;
}

/// What the responder answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The name, in wire form (length-prefixed labels, ending with the root's
    /// empty label), as [`Config::new`] encodes it.
    name: Vec<u8>,
    pub a: Vec<Ipv4Addr>,
    pub aaaa: Vec<Ipv6Addr>,
    /// The records' TTL, in seconds.
    pub ttl: u32,
}

impl Config {
    /// A configuration for `name` (dotted, a trailing dot optional; labels of
    /// 1 to 63 bytes, 255 bytes in wire form at most).
    pub fn new(
        name: &str,
        a: Vec<Ipv4Addr>,
        aaaa: Vec<Ipv6Addr>,
        ttl: u32,
    ) -> Result<Config, String> {
        let trimmed = name.strip_suffix('.').unwrap_or(name);
        if trimmed.is_empty() {
            return Err("the name is empty".into());
        }
        let mut wire = Vec::new();
        for label in trimmed.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(format!("`{name}`: a label must be 1 to 63 bytes long"));
            }
            wire.push(label.len() as u8);
            wire.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
        wire.push(0);
        if wire.len() > MAX_NAME {
            return Err(format!("`{name}` is longer than 255 bytes in wire form"));
        }
        Ok(Config {
            name: wire,
            a,
            aaaa,
            ttl,
        })
    }

    /// The name in wire form.
    pub fn wire_name(&self) -> &[u8] {
        &self.name
    }
}

/// The DNS responder: one instance per switching core.
#[derive(Clone, Debug)]
pub struct Dns {
    config: Config,
}

impl Dns {
    pub fn new(config: Config) -> Dns {
        Dns { config }
    }
}

impl App for Dns {
    fn name(&self) -> &'static str {
        NAME
    }

    fn frame(&mut self, mut frame: Frame, f: &Fields, ctx: &mut Ctx<'_>) {
        let l = layout(ctx.packet(&frame), usize::from(f.l3_offset));
        match l.and_then(|l| self.answer(ctx, &mut frame, &l)) {
            Some(()) => ctx.reply(frame),
            None => ctx.free(frame),
        }
    }
}

impl Dns {
    /// Turn the query in `frame` into its answer; `None` (the frame left as
    /// it was) when it is not to be answered.
    fn answer(&self, ctx: &mut Ctx<'_>, frame: &mut Frame, l: &Layout) -> Option<()> {
        let p = ctx.packet(frame);
        if l.proto != PROTO_UDP || (l.src.is_ipv4() && l.l4 - l.l3 != 20) {
            return None;
        }
        let u = p.get(l.l4..l.end)?;
        if u.len() < UDP_HEADER {
            return None;
        }
        let sport = u16::from_be_bytes([u[0], u[1]]);
        let ulen = usize::from(u16::from_be_bytes([u[4], u[5]]));
        let stored = u16::from_be_bytes([u[6], u[7]]);
        if ulen != u.len() || sport == 0 {
            return None;
        }
        // Over IPv4 a checksum of 0 is "none"; IPv6 requires one.
        if (stored != 0 || l.src.is_ipv6()) && fold(sum(pseudo(l), u)) != 0xffff {
            return None;
        }
        if !ctx.is_ours(l.dst) || !ctx.is_unicast_host(l.src) {
            return None;
        }
        let mut out = [0u8; MAX_ANSWER];
        let n = respond(&self.config, &u[UDP_HEADER..], &mut out)?;
        // Write the answer: IP and UDP headers turned around, lengths and
        // checksums anew.
        let end = l.l4 + UDP_HEADER + n;
        let slot = ctx.slot_mut(frame);
        if slot.len() < end {
            return None;
        }
        let ip_len = end - l.l3;
        if l.src.is_ipv4() {
            slot[l.l3 + 2..l.l3 + 4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        } else {
            let payload = (end - l.l4) as u16;
            slot[l.l3 + 4..l.l3 + 6].copy_from_slice(&payload.to_be_bytes());
        }
        turn_ip_around(slot, l);
        let u = &mut slot[l.l4..end];
        let (s, d) = u[0..4].split_at_mut(2);
        s.swap_with_slice(d);
        u[4..6].copy_from_slice(&((UDP_HEADER + n) as u16).to_be_bytes());
        u[6..8].copy_from_slice(&[0, 0]);
        u[UDP_HEADER..].copy_from_slice(&out[..n]);
        let answer = Layout {
            src: l.dst,
            dst: l.src,
            end,
            ..*l
        };
        let c = !fold(sum(pseudo(&answer), u));
        let c = if c == 0 { 0xffff } else { c };
        u[6..8].copy_from_slice(&c.to_be_bytes());
        frame.set_len(end);
        Some(())
    }
}

/// Why a query's body cannot be read (answered FORMERR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FormErr;

/// The answer to the DNS message `q` (a UDP payload), written into `out`;
/// its length, or `None` when `q` is to be dropped unanswered (shorter than a
/// header, or not a query).
pub fn respond(config: &Config, q: &[u8], out: &mut [u8; MAX_ANSWER]) -> Option<usize> {
    let h = q.get(..DNS_HEADER)?;
    if h[2] & QR != 0 {
        return None;
    }
    let opcode = (h[2] >> 3) & 0x0f;
    // The header of every answer: the ID, QR and AA, the query's RD.
    out[..DNS_HEADER].fill(0);
    out[0..2].copy_from_slice(&h[0..2]);
    out[2] = QR | AA | (h[2] & RD);
    if opcode != 0 {
        out[3] = rcode::NOTIMP;
        return Some(DNS_HEADER);
    }
    let count = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    let question = if count(4) != 1 || count(6) != 0 || count(8) != 0 {
        Err(FormErr)
    } else {
        question(q)
    };
    let Ok((name, len, qtype, qclass)) = question else {
        out[3] = rcode::FORMERR;
        return Some(DNS_HEADER);
    };
    // The question, as asked (the name uncompressed, its case kept).
    out[5] = 1;
    let mut n = DNS_HEADER;
    out[n..n + len].copy_from_slice(&name[..len]);
    n += len;
    out[n..n + 2].copy_from_slice(&qtype.to_be_bytes());
    out[n + 2..n + 4].copy_from_slice(&qclass.to_be_bytes());
    n += 4;
    let ours = config.wire_name();
    let asked = &name[..len];
    if qclass != rtype::CLASS_IN || !is_within(asked, ours) {
        out[3] = rcode::REFUSED;
        return Some(n);
    }
    if !eq_ignore_case(asked, ours) {
        out[3] = rcode::NXDOMAIN;
        return Some(n);
    }
    out[3] = rcode::NOERROR;
    let a = config.a.iter().map(|a| Record::new(rtype::A, &a.octets()));
    let aaaa = config
        .aaaa
        .iter()
        .map(|a| Record::new(rtype::AAAA, &a.octets()));
    let (want_a, want_aaaa) = match qtype {
        rtype::A => (true, false),
        rtype::AAAA => (false, true),
        rtype::ANY => (true, true),
        _ => (false, false),
    };
    let records = a.filter(|_| want_a).chain(aaaa.filter(|_| want_aaaa));
    let mut answers: u16 = 0;
    for r in records {
        let rr = 12 + r.len;
        if n + rr > MAX_ANSWER {
            out[2] |= TC;
            break;
        }
        // The owner is the question's name, by a pointer to it (offset 12).
        out[n..n + 2].copy_from_slice(&[0xc0, DNS_HEADER as u8]);
        out[n + 2..n + 4].copy_from_slice(&r.rtype.to_be_bytes());
        out[n + 4..n + 6].copy_from_slice(&rtype::CLASS_IN.to_be_bytes());
        out[n + 6..n + 10].copy_from_slice(&config.ttl.to_be_bytes());
        out[n + 10..n + 12].copy_from_slice(&(r.len as u16).to_be_bytes());
        out[n + 12..n + rr].copy_from_slice(&r.data[..r.len]);
        n += rr;
        answers += 1;
    }
    out[6..8].copy_from_slice(&answers.to_be_bytes());
    Some(n)
}

/// One record's type and data (an address: at most 16 bytes), on the stack:
/// nothing is allocated per query.
struct Record {
    rtype: u16,
    data: [u8; 16],
    len: usize,
}

impl Record {
    fn new(rtype: u16, bytes: &[u8]) -> Record {
        let mut data = [0u8; 16];
        let len = bytes.len().min(16);
        data[..len].copy_from_slice(&bytes[..len]);
        Record { rtype, data, len }
    }
}

/// The question of query `q` (its header whole): the name in wire form
/// (uncompressed, case kept) and its length, the type and the class.
pub fn question(q: &[u8]) -> Result<([u8; MAX_NAME], usize, u16, u16), FormErr> {
    let mut name = [0u8; MAX_NAME];
    let (len, after) = read_name(q, DNS_HEADER, &mut name)?;
    let t = q.get(after..after + 4).ok_or(FormErr)?;
    let qtype = u16::from_be_bytes([t[0], t[1]]);
    let qclass = u16::from_be_bytes([t[2], t[3]]);
    Ok((name, len, qtype, qclass))
}

/// Read the name at `pos` of message `m` into `out` in wire form, following
/// compression pointers (RFC 1035 4.1.4); its length in `out`, and where the
/// name ends in `m` (after its first pointer, if it has one). A pointer must
/// point strictly before every place this name was read from so far, so that
/// each pointer moves backwards past all of them and a loop cannot form: the
/// walk ends within `m.len()` pointers.
pub fn read_name(
    m: &[u8],
    mut pos: usize,
    out: &mut [u8; MAX_NAME],
) -> Result<(usize, usize), FormErr> {
    let mut n = 0;
    let mut after = None;
    let mut limit = pos;
    loop {
        let len = *m.get(pos).ok_or(FormErr)?;
        match len & 0xc0 {
            0x00 if len == 0 => {
                if n + 1 > MAX_NAME {
                    return Err(FormErr);
                }
                out[n] = 0;
                return Ok((n + 1, after.unwrap_or(pos + 1)));
            }
            0x00 => {
                let l = usize::from(len);
                let label = m.get(pos + 1..pos + 1 + l).ok_or(FormErr)?;
                // The label, and at least the root label after it.
                if n + 1 + l + 1 > MAX_NAME {
                    return Err(FormErr);
                }
                out[n] = len;
                out[n + 1..n + 1 + l].copy_from_slice(label);
                n += 1 + l;
                pos += 1 + l;
            }
            0xc0 => {
                let low = *m.get(pos + 1).ok_or(FormErr)?;
                let target = usize::from(len & 0x3f) << 8 | usize::from(low);
                if target >= limit {
                    return Err(FormErr);
                }
                after.get_or_insert(pos + 2);
                limit = target;
                pos = target;
            }
            // 0x40 and 0x80: extended and reserved label types.
            _ => return Err(FormErr),
        }
    }
}

/// Whether two names in wire form are equal, ASCII case ignored.
fn eq_ignore_case(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Whether `name` is `zone` or below it (label by label, case ignored); both
/// in wire form.
fn is_within(name: &[u8], zone: &[u8]) -> bool {
    let mut at = 0;
    while at < name.len() {
        if eq_ignore_case(&name[at..], zone) {
            return true;
        }
        let l = usize::from(name[at]);
        if l == 0 {
            return false;
        }
        at += 1 + l;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::new(
            "www.example.test",
            vec!["198.18.0.10".parse().unwrap()],
            vec!["2001:db8::10".parse().unwrap()],
            60,
        )
        .unwrap()
    }

    /// A query for `name` of type `qtype`, ID 0x1234, RD set.
    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    fn ask(q: &[u8]) -> Option<Vec<u8>> {
        let mut out = [0u8; MAX_ANSWER];
        respond(&config(), q, &mut out).map(|n| out[..n].to_vec())
    }

    fn counts(a: &[u8]) -> [u16; 4] {
        [4, 6, 8, 10].map(|i| u16::from_be_bytes([a[i], a[i + 1]]))
    }

    #[test]
    fn names_are_encoded_and_checked() {
        assert_eq!(config().wire_name(), b"\x03www\x07example\x04test\x00");
        assert_eq!(
            Config::new("WWW.Example.Test.", vec![], vec![], 1).unwrap(),
            Config::new("www.example.test", vec![], vec![], 1).unwrap()
        );
        for bad in ["", ".", "a..b", &"x".repeat(64), &["abc"; 80].join(".")] {
            assert!(Config::new(bad, vec![], vec![], 1).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn answers_a_aaaa_any_and_no_data() {
        let a = ask(&query("www.example.test", rtype::A)).unwrap();
        assert_eq!(&a[0..2], &[0x12, 0x34]);
        assert_eq!(a[2], QR | AA | RD);
        assert_eq!(a[3], rcode::NOERROR);
        assert_eq!(counts(&a), [1, 1, 0, 0]);
        assert_eq!(&a[a.len() - 4..], &[198, 18, 0, 10]);
        // Owner pointer, type A, class IN, TTL 60, length 4.
        let rr = &a[a.len() - 16..];
        assert_eq!(&rr[..12], &[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        let q = query("www.example.test", rtype::AAAA);
        let a = ask(&q).unwrap();
        assert_eq!(counts(&a), [1, 1, 0, 0]);
        assert_eq!(
            &a[a.len() - 16..],
            &"2001:db8::10".parse::<Ipv6Addr>().unwrap().octets()
        );
        // The question is echoed as asked.
        assert_eq!(&a[12..q.len()], &q[12..]);
        let a = ask(&query("www.example.test", rtype::ANY)).unwrap();
        assert_eq!(counts(&a), [1, 2, 0, 0]);
        let a = ask(&query("www.example.test", 15)).unwrap();
        assert_eq!((a[3], counts(&a)), (rcode::NOERROR, [1, 0, 0, 0]));
    }

    #[test]
    fn case_is_ignored_and_kept() {
        let q = query("WwW.EXAMPLE.test", rtype::A);
        let a = ask(&q).unwrap();
        assert_eq!((a[3], counts(&a)[1]), (rcode::NOERROR, 1));
        assert_eq!(&a[12..q.len()], &q[12..], "0x20 case kept");
    }

    #[test]
    fn other_names_are_nxdomain_below_and_refused_outside() {
        let a = ask(&query("mail.www.example.test", rtype::A)).unwrap();
        assert_eq!((a[3], counts(&a)), (rcode::NXDOMAIN, [1, 0, 0, 0]));
        for other in ["example.test", "www.example.org", "xwww.example.test"] {
            let a = ask(&query(other, rtype::A)).unwrap();
            assert_eq!(
                (a[3], counts(&a)),
                (rcode::REFUSED, [1, 0, 0, 0]),
                "{other}"
            );
        }
        // Class CH is not ours either.
        let mut q = query("www.example.test", rtype::A);
        let n = q.len();
        q[n - 1] = 3;
        assert_eq!(ask(&q).unwrap()[3], rcode::REFUSED);
    }

    #[test]
    fn too_many_records_set_tc() {
        let mut c = config();
        c.aaaa = (0..40u16)
            .map(|i| Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i))
            .collect();
        let mut out = [0u8; MAX_ANSWER];
        let n = respond(&c, &query("www.example.test", rtype::AAAA), &mut out).unwrap();
        assert!(n <= MAX_ANSWER);
        assert_eq!(out[2] & TC, TC);
        let q_len = query("www.example.test", rtype::AAAA).len();
        assert_eq!(usize::from(counts(&out)[1]), (MAX_ANSWER - q_len) / 28);
    }

    #[test]
    fn responses_and_short_headers_are_dropped() {
        let mut q = query("www.example.test", rtype::A);
        q[2] |= QR;
        assert_eq!(ask(&q), None);
        for cut in 0..DNS_HEADER {
            assert_eq!(ask(&query("www.example.test", 1)[..cut]), None, "{cut}");
        }
    }

    #[test]
    fn malformed_bodies_are_formerr_without_a_question() {
        let good = query("www.example.test", rtype::A);
        let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
        // Cut anywhere in the question.
        for cut in DNS_HEADER..good.len() {
            cases.push((format!("cut at {cut}"), good[..cut].to_vec()));
        }
        // Wrong counts.
        for (at, v) in [(5, 0), (5, 2), (7, 1), (9, 1)] {
            let mut q = good.clone();
            q[at] = v;
            cases.push((format!("count byte {at} = {v}"), q));
        }
        // A label of the reserved kinds.
        for kind in [0x40, 0x80] {
            let mut q = good.clone();
            q[12] = kind | 3;
            cases.push((format!("label kind {kind:#x}"), q));
        }
        // A pointer to itself, forward, and a loop between two pointers.
        let head = &good[..12];
        let tail = [0, 1, 0, 1];
        let mut own = head.to_vec();
        own.extend_from_slice(&[0xc0, 12]);
        own.extend_from_slice(&tail);
        cases.push(("pointer to itself".into(), own));
        let mut fwd = head.to_vec();
        fwd.extend_from_slice(&[0xc0, 14, 0]);
        fwd.extend_from_slice(&tail);
        cases.push(("pointer forward".into(), fwd));
        // At 12: a label "a", then a pointer to 16; at 16: a pointer to 12.
        let mut pair = head.to_vec();
        pair.extend_from_slice(&[1, b'a', 0xc0, 16, 0xc0, 12]);
        pair.extend_from_slice(&tail);
        cases.push(("pointer loop".into(), pair));
        // A name longer than 255 bytes (five labels of 63).
        let mut long = head.to_vec();
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'x'; 63]);
        }
        long.push(0);
        long.extend_from_slice(&tail);
        cases.push(("name too long".into(), long));
        for (what, q) in cases {
            let a = ask(&q).unwrap_or_else(|| panic!("{what}: no answer"));
            assert_eq!(a.len(), DNS_HEADER, "{what}");
            assert_eq!((a[3], counts(&a)), (rcode::FORMERR, [0; 4]), "{what}");
            assert_eq!(&a[0..2], &[0x12, 0x34], "{what}");
        }
    }

    #[test]
    fn a_backward_pointer_is_followed() {
        // The question's name at 12, then names that point back to it.
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        let name: &[u8] = b"\x07example\x04test\x00";
        q.extend_from_slice(name);
        q.extend_from_slice(&[0, 1, 0, 1]);
        let mut out = [0u8; MAX_NAME];
        // A second name after it: "www" + pointer to 12.
        let at = q.len();
        q.extend_from_slice(&[3, b'w', b'w', b'w', 0xc0, 12]);
        let (len, after) = read_name(&q, at, &mut out).unwrap();
        assert_eq!(&out[..len], b"\x03www\x07example\x04test\x00");
        assert_eq!(after, at + 6);
        // A pointer chain that moves backwards each time is followed too.
        let at2 = q.len();
        q.extend_from_slice(&[0xc0, at as u8]);
        let (len, after) = read_name(&q, at2, &mut out).unwrap();
        assert_eq!(&out[..len], b"\x03www\x07example\x04test\x00");
        assert_eq!(after, at2 + 2);
    }

    #[test]
    fn other_opcodes_are_notimp() {
        let mut q = query("www.example.test", rtype::A);
        q[2] = 2 << 3; // STATUS
        let a = ask(&q).unwrap();
        assert_eq!((a.len(), a[3]), (DNS_HEADER, rcode::NOTIMP));
    }

    #[test]
    fn random_messages_never_panic() {
        // A fixed xorshift: every message of random bytes and random cuts and
        // flips of a good query gets an answer of at most 512 bytes or none.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let good = query("www.example.test", rtype::A);
        for i in 0..20_000 {
            let mut q = if i % 2 == 0 {
                good.clone()
            } else {
                (0..next() % 80).map(|_| next() as u8).collect()
            };
            for _ in 0..next() % 4 {
                if !q.is_empty() {
                    let at = (next() as usize) % q.len();
                    q[at] = next() as u8;
                }
            }
            q.truncate((next() as usize) % (q.len() + 1).max(1) + q.len() / 2);
            let mut out = [0u8; MAX_ANSWER];
            if let Some(n) = respond(&config(), &q, &mut out) {
                assert!((DNS_HEADER..=MAX_ANSWER).contains(&n));
            }
        }
    }
}
