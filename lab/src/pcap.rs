//! Writing packet captures, for tests: classic pcap and pcapng files of given
//! Ethernet frames, which `lbp eval` (and `lbp_compiler::pcap`, which reads
//! them) are tested on. The reader is the product's; the writers are the tests'.

/// The pcapng section header block's type.
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
/// The pcapng byte-order magic.
const PCAPNG_BYTE_ORDER: u32 = 0x1a2b_3c4d;

/// A capture of `frames` (little endian, microseconds, Ethernet), for tests.
pub fn write(frames: &[&[u8]]) -> Vec<u8> {
    write_cut(frames, usize::MAX)
}

/// A capture of `frames`, each cut to `snaplen` bytes as a capture with that
/// snap length holds it.
pub fn write_cut(frames: &[&[u8]], snaplen: usize) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&4u16.to_le_bytes());
    v.extend_from_slice(&0i32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&(snaplen.min(262_144) as u32).to_le_bytes());
    v.extend_from_slice(&1u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        let kept = &f[..f.len().min(snaplen)];
        v.extend_from_slice(&(i as u32).to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&(kept.len() as u32).to_le_bytes());
        v.extend_from_slice(&(f.len() as u32).to_le_bytes());
        v.extend_from_slice(kept);
    }
    v
}

/// A pcapng capture of `frames` on one interface of link type `linktype`
/// (little endian; enhanced packet blocks, and a simple packet block for every
/// third frame), for tests.
pub fn write_ng(frames: &[&[u8]], linktype: u16) -> Vec<u8> {
    fn block(v: &mut Vec<u8>, kind: u32, body: &[u8]) {
        let padded = body.len().div_ceil(4) * 4;
        let len = (12 + padded) as u32;
        v.extend_from_slice(&kind.to_le_bytes());
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(body);
        v.resize(v.len() + padded - body.len(), 0);
        v.extend_from_slice(&len.to_le_bytes());
    }
    let mut v = Vec::new();
    let mut shb = PCAPNG_BYTE_ORDER.to_le_bytes().to_vec();
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&u64::MAX.to_le_bytes());
    block(&mut v, PCAPNG_SHB, &shb);
    let mut idb = linktype.to_le_bytes().to_vec();
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&0u32.to_le_bytes());
    block(&mut v, 1, &idb);
    // A name resolution block, which readers skip.
    block(&mut v, 4, &[0; 4]);
    for (i, f) in frames.iter().enumerate() {
        let len = (f.len() as u32).to_le_bytes();
        let mut body = Vec::new();
        if i % 3 == 2 {
            body.extend_from_slice(&len);
            body.extend_from_slice(f);
            block(&mut v, 3, &body);
        } else {
            body.extend_from_slice(&0u32.to_le_bytes());
            body.extend_from_slice(&[0; 8]);
            body.extend_from_slice(&len);
            body.extend_from_slice(&len);
            body.extend_from_slice(f);
            block(&mut v, 6, &body);
        }
    }
    v
}
