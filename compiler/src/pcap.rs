//! Reading packet captures from memory, for `lbp eval`: classic pcap (libpcap's
//! format, either byte order, micro- or nanosecond timestamps) and pcapng
//! (sections of either byte order; interface description, enhanced, simple and
//! the obsolete packet blocks; other blocks skipped). Link types: Ethernet,
//! Linux cooked captures v1 and v2 (`tcpdump -i any`: SLL and SLL2) and raw IP.
//! A cooked or raw frame is given an Ethernet header in place of its own, so that
//! one extractor reads every capture.
//!
//! Never panics: every read is bounds checked, and a truncated or hostile file
//! gives the packets read before the damage, then an error that names the packet
//! and what is wrong.

use std::borrow::Cow;

/// One captured frame, as an Ethernet frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The bytes as captured (possibly cut to the snap length), behind an
    /// Ethernet header: the capture's own (borrowed), or one made from a cooked
    /// header or for a raw IP packet.
    pub data: Cow<'a, [u8]>,
    /// Its length on the wire, counted with the same Ethernet header.
    pub wire_len: u32,
}

impl Frame<'_> {
    /// Whether the capture holds less of the frame than was on the wire (cut by
    /// the snap length).
    pub fn is_cut(&self) -> bool {
        (self.data.len() as u64) < u64::from(self.wire_len)
    }
}

/// How a capture's frames begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Ethernet,
    /// Linux cooked capture v1 (`LINKTYPE_LINUX_SLL`, 113): a 16-byte header.
    Sll,
    /// Linux cooked capture v2 (`LINKTYPE_LINUX_SLL2`, 276): a 20-byte header.
    Sll2,
    /// An IP packet with no link header (`LINKTYPE_RAW`, 101).
    Raw,
    /// Any other link type: its packets are an error.
    Other(u32),
}

impl Link {
    fn of(linktype: u32) -> Link {
        match linktype {
            1 => Link::Ethernet,
            113 => Link::Sll,
            276 => Link::Sll2,
            101 => Link::Raw,
            other => Link::Other(other),
        }
    }

    /// The frame `data` (captured; `wire` bytes on the wire) as an Ethernet
    /// frame and its length on the wire; `None` for a link type lbp cannot read.
    fn ethernet(self, data: &[u8], wire: u32) -> Option<Frame<'_>> {
        let (header, ethertype, src): (usize, [u8; 2], [u8; 6]) = match self {
            Link::Ethernet => {
                return Some(Frame {
                    data: Cow::Borrowed(data),
                    wire_len: wire,
                });
            }
            Link::Other(_) => return None,
            Link::Sll => (16, pair(data, 14), mac(data.get(4..6), data.get(6..14))),
            Link::Sll2 => (20, pair(data, 0), mac(data.get(11..12), data.get(12..20))),
            Link::Raw => {
                let version = data.first().map_or(0, |b| b >> 4);
                let ethertype = match version {
                    6 => [0x86, 0xdd],
                    _ => [0x08, 0x00],
                };
                (0, ethertype, [0; 6])
            }
        };
        // A frame shorter than its cooked header becomes a frame too short for
        // an Ethernet header: malformed, as it is.
        let Some(payload) = data.get(header..) else {
            return Some(Frame {
                data: Cow::Owned(Vec::new()),
                wire_len: 0,
            });
        };
        let mut frame = Vec::with_capacity(14 + payload.len());
        frame.extend_from_slice(&[0; 6]);
        frame.extend_from_slice(&src);
        frame.extend_from_slice(&ethertype);
        frame.extend_from_slice(payload);
        Some(Frame {
            data: Cow::Owned(frame),
            wire_len: (u64::from(wire).saturating_sub(header as u64) + 14).min(u64::from(u32::MAX))
                as u32,
        })
    }
}

/// The two bytes at `at` (big endian on the wire, kept as they are), zeros if
/// the frame is shorter.
fn pair(data: &[u8], at: usize) -> [u8; 2] {
    data.get(at..at + 2)
        .and_then(|b| b.try_into().ok())
        .unwrap_or([0; 2])
}

/// A cooked header's link-layer source address as a MAC: the address when it
/// has six bytes, else zeros.
fn mac(len: Option<&[u8]>, addr: Option<&[u8]>) -> [u8; 6] {
    let len = match len {
        Some([a, b]) => u16::from_be_bytes([*a, *b]),
        Some([a]) => u16::from(*a),
        _ => 0,
    };
    match addr.and_then(|a| a.get(..6)) {
        Some(a) if len == 6 => a.try_into().unwrap_or([0; 6]),
        _ => [0; 6],
    }
}

/// Reads integers of one byte order at bounds-checked offsets.
#[derive(Debug, Clone, Copy)]
struct Bytes<'a> {
    file: &'a [u8],
    le: bool,
}

impl<'a> Bytes<'a> {
    fn u32_at(self, at: usize) -> Option<u32> {
        let b: [u8; 4] = self.file.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    }
    fn u16_at(self, at: usize) -> Option<u16> {
        let b: [u8; 2] = self.file.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(if self.le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    }
    fn slice(self, at: usize, len: usize) -> Option<&'a [u8]> {
        self.file.get(at..at.checked_add(len)?)
    }
}

/// A capture's packets, read one at a time: each item is a frame, or the error
/// that ends the capture (after which the iterator gives nothing).
#[derive(Debug)]
pub struct Packets<'a> {
    file: &'a [u8],
    at: usize,
    /// Packets given so far (the next one's number is `count + 1`).
    count: usize,
    kind: Kind,
    done: bool,
}

#[derive(Debug)]
enum Kind {
    Pcap {
        le: bool,
        link: Link,
    },
    /// pcapng: the current section's byte order and its interfaces (link type,
    /// snap length).
    Ng {
        le: bool,
        interfaces: Vec<(Link, u32)>,
    },
}

const PCAPNG_SHB: u32 = 0x0a0d_0d0a;

/// Open a capture: its header is checked here, its packets are read by the
/// iterator.
pub fn packets(file: &[u8]) -> Result<Packets<'_>, String> {
    let magic = file
        .get(..4)
        .ok_or("not a capture: shorter than a pcap or pcapng header")?;
    let kind = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => pcap_kind(file, true)?,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => pcap_kind(file, false)?,
        [0x0a, 0x0d, 0x0d, 0x0a] => Kind::Ng {
            le: true,
            interfaces: Vec::new(),
        },
        _ => return Err("not a pcap file (nor pcapng): unknown magic number".into()),
    };
    let at = if matches!(kind, Kind::Pcap { .. }) {
        24
    } else {
        0
    };
    Ok(Packets {
        file,
        at,
        count: 0,
        kind,
        done: false,
    })
}

fn pcap_kind(file: &[u8], le: bool) -> Result<Kind, String> {
    let b = Bytes { file, le };
    let linktype = b
        .u32_at(20)
        .ok_or("not a pcap file: shorter than its header")?
        & 0x0fff_ffff;
    let link = Link::of(linktype);
    if let Link::Other(t) = link {
        return Err(unsupported(t));
    }
    Ok(Kind::Pcap { le, link })
}

fn unsupported(linktype: u32) -> String {
    format!(
        "link type {linktype} is not one lbp reads (Ethernet 1, Linux cooked 113 and 276, raw IP 101)"
    )
}

/// Every frame of a capture, or the first error.
pub fn frames(file: &[u8]) -> Result<Vec<Frame<'_>>, String> {
    packets(file)?.collect()
}

impl<'a> Iterator for Packets<'a> {
    type Item = Result<Frame<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match self.kind {
            Kind::Pcap { le, link } => self.next_pcap(le, link),
            Kind::Ng { .. } => self.next_ng(),
        };
        match &item {
            Some(Ok(_)) => self.count += 1,
            Some(Err(_)) | None => self.done = true,
        }
        item
    }
}

impl<'a> Packets<'a> {
    fn next_pcap(&mut self, le: bool, link: Link) -> Option<Result<Frame<'a>, String>> {
        if self.at >= self.file.len() {
            return None;
        }
        let n = self.count + 1;
        let b = Bytes {
            file: self.file,
            le,
        };
        let (Some(incl), Some(orig)) = (b.u32_at(self.at + 8), b.u32_at(self.at + 12)) else {
            return Some(Err(format!(
                "packet {n}: its record header is cut short (the file ends {} bytes into it)",
                self.file.len() - self.at
            )));
        };
        let start = self.at + 16;
        let Some(data) = b.slice(start, incl as usize) else {
            return Some(Err(format!(
                "packet {n}: {incl} bytes announced, the file ends {} bytes into them",
                self.file.len().saturating_sub(start)
            )));
        };
        self.at = start + data.len();
        Some(link.ethernet(data, orig).ok_or_else(|| unreadable(n, link)))
    }

    /// The next packet of a pcapng file, skipping blocks that are not packets.
    fn next_ng(&mut self) -> Option<Result<Frame<'a>, String>> {
        loop {
            if self.at >= self.file.len() {
                return None;
            }
            let n = self.count + 1;
            let at = self.at;
            let Kind::Ng { le, interfaces } = &mut self.kind else {
                return None;
            };
            let head = Bytes {
                file: self.file,
                le: *le,
            };
            let Some(kind) = head.u32_at(at) else {
                return Some(Err(cut_block(n, self.file.len() - at)));
            };
            if kind == PCAPNG_SHB {
                // A new section: its own byte order and interfaces.
                let Some(order) = self.file.get(at + 8..at + 12) else {
                    return Some(Err(cut_block(n, self.file.len() - at)));
                };
                *le = match order {
                    [0x4d, 0x3c, 0x2b, 0x1a] => true,
                    [0x1a, 0x2b, 0x3c, 0x4d] => false,
                    _ => {
                        return Some(Err(format!(
                            "byte {at}: a section header without pcapng's byte-order magic"
                        )));
                    }
                };
                interfaces.clear();
            }
            let b = Bytes {
                file: self.file,
                le: *le,
            };
            let Some(len) = b.u32_at(at + 4) else {
                return Some(Err(cut_block(n, self.file.len() - at)));
            };
            let len = len as usize;
            if len < 12 || !len.is_multiple_of(4) {
                return Some(Err(format!(
                    "byte {at}: a block of length {len} (at least 12, a multiple of 4)"
                )));
            }
            let Some(block) = b.slice(at, len) else {
                return Some(Err(format!(
                    "byte {at}: a block of {len} bytes, the file ends {} bytes into it{}",
                    self.file.len() - at,
                    if matches!(kind, 2 | 3 | 6) {
                        format!(" (packet {n})")
                    } else {
                        String::new()
                    }
                )));
            };
            if b.u32_at(at + len - 4) != Some(len as u32) {
                return Some(Err(format!(
                    "byte {at}: a block whose two lengths differ (damaged file)"
                )));
            }
            self.at = at + len;
            let body = Bytes {
                file: &block[8..len - 4],
                le: *le,
            };
            let bad = |what: &str| Some(Err(format!("packet {n} (byte {at}): {what}")));
            match kind {
                // Interface description: link type and snap length.
                1 => {
                    let (Some(linktype), Some(snaplen)) = (body.u16_at(0), body.u32_at(4)) else {
                        return Some(Err(format!(
                            "byte {at}: an interface description block too short"
                        )));
                    };
                    interfaces.push((Link::of(u32::from(linktype)), snaplen));
                }
                // Enhanced packet (6) and the obsolete packet block (2).
                2 | 6 => {
                    let (iface, fields) = if kind == 6 {
                        (body.u32_at(0), 12)
                    } else {
                        (body.u16_at(0).map(u32::from), 12)
                    };
                    let (Some(iface), Some(captured), Some(orig)) =
                        (iface, body.u32_at(fields), body.u32_at(fields + 4))
                    else {
                        return bad("a packet block too short for its fields");
                    };
                    let Some(&(link, _)) = interfaces.get(iface as usize) else {
                        return bad(&format!("interface {iface} was not described"));
                    };
                    let Some(data) = body.slice(fields + 8, captured as usize) else {
                        return bad(&format!(
                            "{captured} bytes announced, the block holds {}",
                            body.file.len().saturating_sub(fields + 8)
                        ));
                    };
                    return Some(link.ethernet(data, orig).ok_or_else(|| unreadable(n, link)));
                }
                // Simple packet: interface 0, captured up to its snap length.
                3 => {
                    let Some(&(link, snaplen)) = interfaces.first() else {
                        return bad("a simple packet block before any interface");
                    };
                    let Some(orig) = body.u32_at(0) else {
                        return bad("a simple packet block too short for its length");
                    };
                    let room = body.file.len() - 4;
                    let mut captured = (orig as usize).min(room);
                    if snaplen != 0 {
                        captured = captured.min(snaplen as usize);
                    }
                    let data = &body.file[4..4 + captured];
                    return Some(link.ethernet(data, orig).ok_or_else(|| unreadable(n, link)));
                }
                _ => {}
            }
        }
    }
}

fn cut_block(n: usize, left: usize) -> String {
    format!("packet {n}: the file ends inside a block header ({left} bytes left)")
}

fn unreadable(n: usize, link: Link) -> String {
    match link {
        Link::Other(t) => format!("packet {n}: {}", unsupported(t)),
        _ => format!("packet {n}: unreadable"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lbp_lab::pcap::{write, write_cut, write_ng};

    /// The pcapng byte-order magic, for the files written by hand here.
    const PCAPNG_BYTE_ORDER: u32 = 0x1a2b_3c4d;

    fn eth(frame: &Frame) -> Vec<u8> {
        frame.data.to_vec()
    }

    #[test]
    fn round_trip() {
        let a = [1u8, 2, 3];
        let b = [9u8; 60];
        let file = write(&[&a, &b]);
        let f = frames(&file).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(&*f[0].data, &a);
        assert_eq!(&*f[1].data, &b);
        assert_eq!(f[1].wire_len, 60);
        assert!(!f[1].is_cut());
    }

    #[test]
    fn a_cut_capture_keeps_the_wire_length() {
        let file = write_cut(&[&[5u8; 100]], 40);
        let f = frames(&file).unwrap();
        assert_eq!(f[0].data.len(), 40);
        assert_eq!(f[0].wire_len, 100);
        assert!(f[0].is_cut());
    }

    #[test]
    fn big_endian_and_errors() {
        let mut file = write(&[&[7u8; 20]]);
        // The same capture, big endian.
        let mut be = Vec::new();
        be.extend_from_slice(&0xa1b2_c3d4u32.to_be_bytes());
        be.extend_from_slice(&2u16.to_be_bytes());
        be.extend_from_slice(&4u16.to_be_bytes());
        be.extend_from_slice(&[0; 8]);
        be.extend_from_slice(&65535u32.to_be_bytes());
        be.extend_from_slice(&1u32.to_be_bytes());
        be.extend_from_slice(&[0; 8]);
        be.extend_from_slice(&20u32.to_be_bytes());
        be.extend_from_slice(&20u32.to_be_bytes());
        be.extend_from_slice(&[7u8; 20]);
        assert_eq!(&*frames(&be).unwrap()[0].data, &[7u8; 20]);
        // Every truncation is an error or a shorter list, never a panic.
        for n in 0..file.len() {
            let _ = frames(&file[..n]);
        }
        file[20] = 101 + 1;
        assert!(frames(&file).unwrap_err().contains("link type 102"));
        assert!(frames(b"hello world, this is no capture").is_err());
    }

    #[test]
    fn the_packets_before_a_cut_record_are_read() {
        let file = write(&[&[1u8; 30], &[2u8; 30], &[3u8; 30]]);
        let cut = &file[..file.len() - 5];
        let items: Vec<_> = packets(cut).unwrap().collect();
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok() && items[1].is_ok());
        let err = items[2].as_ref().unwrap_err();
        assert!(err.starts_with("packet 3: 30 bytes announced"), "{err}");
    }

    #[test]
    fn pcapng_ethernet() {
        let frames_in: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 40 + i as usize]).collect();
        let refs: Vec<&[u8]> = frames_in.iter().map(|f| f.as_slice()).collect();
        let file = write_ng(&refs, 1);
        let f = frames(&file).unwrap();
        assert_eq!(f.len(), 5);
        for (got, want) in f.iter().zip(&frames_in) {
            assert_eq!(&*got.data, want.as_slice());
            assert_eq!(got.wire_len as usize, want.len());
        }
        // Every truncation and every damaged byte gives frames or an error.
        for n in 0..file.len() {
            let _ = packets(&file[..n]).map(|p| p.count());
        }
        for i in 0..file.len() {
            for x in [0u8, 0xff, 0x7f] {
                let mut bad = file.clone();
                bad[i] = x;
                let _ = packets(&bad).map(|p| p.count());
            }
        }
    }

    #[test]
    fn pcapng_big_endian_section() {
        // A section header in big endian, an interface, one enhanced packet.
        let mut v = Vec::new();
        let mut push = |kind: u32, body: &[u8]| {
            let len = (12 + body.len()) as u32;
            v.extend_from_slice(&kind.to_be_bytes());
            v.extend_from_slice(&len.to_be_bytes());
            v.extend_from_slice(body);
            v.extend_from_slice(&len.to_be_bytes());
        };
        let mut shb = PCAPNG_BYTE_ORDER.to_be_bytes().to_vec();
        shb.extend_from_slice(&[0, 1, 0, 0]);
        shb.extend_from_slice(&[0xff; 8]);
        push(PCAPNG_SHB, &shb);
        push(1, &[0, 1, 0, 0, 0, 0, 0, 0]);
        let mut epb = vec![0; 12];
        epb.extend_from_slice(&8u32.to_be_bytes());
        epb.extend_from_slice(&8u32.to_be_bytes());
        epb.extend_from_slice(&[6; 8]);
        push(6, &epb);
        let f = frames(&v).unwrap();
        assert_eq!(&*f[0].data, &[6; 8]);
    }

    #[test]
    fn linux_cooked_captures_become_ethernet_frames() {
        let ip = [
            0x45u8, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 198, 18, 1, 5, 198, 18, 0, 10,
        ];
        // SLL: packet type, ARPHRD_ETHER, address length 6, the address and two
        // bytes of padding, protocol IPv4.
        let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 7, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(&ip);
        // SLL2: protocol, reserved, interface index, ARPHRD, packet type,
        // address length, address.
        let mut sll2 = vec![
            0x08, 0x00, 0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 2, 0, 0, 0, 0, 7, 0, 0,
        ];
        sll2.extend_from_slice(&ip);
        let mut want = vec![0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 7, 0x08, 0x00];
        want.extend_from_slice(&ip);
        for (linktype, frame) in [(113u16, &sll), (276, &sll2)] {
            let file = write_ng(&[frame], linktype);
            let f = frames(&file).unwrap();
            assert_eq!(eth(&f[0]), want, "link type {linktype}");
            assert_eq!(f[0].wire_len as usize, want.len());
            // A frame shorter than its cooked header is an empty frame.
            let file = write_ng(&[&frame[..5]], linktype);
            assert!(frames(&file).unwrap()[0].data.is_empty());
        }
        let mut pcap = write(&[&sll]);
        pcap[20] = 113;
        assert_eq!(eth(&frames(&pcap).unwrap()[0]), want);
        let mut raw = write(&[&ip]);
        raw[20] = 101;
        let f = frames(&raw).unwrap();
        assert_eq!(&f[0].data[12..14], &[0x08, 0x00]);
        assert_eq!(&f[0].data[14..], &ip);
    }

    #[test]
    fn pcapng_errors_name_the_damage() {
        let file = write_ng(&[&[1u8; 40], &[2u8; 40]], 1);
        let cut = &file[..file.len() - 8];
        let items: Vec<_> = packets(cut).unwrap().collect();
        assert!(items[0].is_ok());
        assert!(
            items[1].as_ref().unwrap_err().contains("(packet 2)"),
            "{items:?}"
        );
        let mut unknown = write_ng(&[&[1u8; 40]], 105);
        assert!(frames(&unknown).unwrap_err().contains("link type 105"));
        // A packet on an interface that was never described.
        let at = unknown.len() - 4 - 40 - 20;
        unknown[at..at + 4].copy_from_slice(&9u32.to_le_bytes());
        assert!(frames(&unknown).unwrap_err().contains("interface 9"));
    }
}
