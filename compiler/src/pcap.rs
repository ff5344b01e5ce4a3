//! Reading classic pcap captures (the libpcap file format) from memory, for
//! `lbp eval`. Ethernet link type only. Never panics: a truncated or hostile file
//! gives an error or the packets read before the damage.

/// One captured frame: its bytes as captured (possibly cut to the snap length) and
/// its length on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub data: &'a [u8],
    pub wire_len: u32,
}

/// The frames of a capture, in order, or why the file is not one lbp can read.
pub fn frames(file: &[u8]) -> Result<Vec<Frame<'_>>, String> {
    let magic = file
        .get(..4)
        .ok_or("not a pcap file: shorter than its header")?;
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        [0x0a, 0x0d, 0x0d, 0x0a] => {
            return Err(
                "a pcapng file: save the capture as pcap (for example `tshark -F pcap`)".into(),
            );
        }
        _ => return Err("not a pcap file (unknown magic number)".into()),
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = file.get(at..at + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let linktype = u32_at(20).ok_or("not a pcap file: shorter than its header")? & 0x0fff_ffff;
    if linktype != 1 {
        return Err(format!(
            "link type {linktype} is not Ethernet (1); lbp reads Ethernet captures"
        ));
    }
    let mut out = Vec::new();
    let mut at = 24usize;
    while at < file.len() {
        let (Some(incl), Some(orig)) = (u32_at(at + 8), u32_at(at + 12)) else {
            return Err(format!("packet {}: record header cut short", out.len() + 1));
        };
        let start = at + 16;
        let Some(data) = usize::try_from(incl)
            .ok()
            .and_then(|n| file.get(start..start.checked_add(n)?))
        else {
            return Err(format!(
                "packet {}: {incl} bytes announced, the file ends first",
                out.len() + 1
            ));
        };
        out.push(Frame {
            data,
            wire_len: orig,
        });
        at = start + data.len();
    }
    Ok(out)
}

/// A capture of `frames` (little endian, microseconds, Ethernet), for tests and
/// tools.
pub fn write(frames: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&4u16.to_le_bytes());
    v.extend_from_slice(&0i32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&65535u32.to_le_bytes());
    v.extend_from_slice(&1u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        v.extend_from_slice(&(i as u32).to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&(f.len() as u32).to_le_bytes());
        v.extend_from_slice(&(f.len() as u32).to_le_bytes());
        v.extend_from_slice(f);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let a = [1u8, 2, 3];
        let b = [9u8; 60];
        let file = write(&[&a, &b]);
        let f = frames(&file).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].data, &a);
        assert_eq!(f[1].data, &b);
        assert_eq!(f[1].wire_len, 60);
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
        assert_eq!(frames(&be).unwrap()[0].data, &[7u8; 20]);
        // Every truncation is an error or a shorter list, never a panic.
        for n in 0..file.len() {
            let _ = frames(&file[..n]);
        }
        file[20] = 101;
        assert!(frames(&file).unwrap_err().contains("link type 101"));
        assert!(
            frames(b"\x0a\x0d\x0d\x0a....")
                .unwrap_err()
                .contains("pcapng")
        );
        assert!(frames(b"hello world, this is no capture").is_err());
    }
}
