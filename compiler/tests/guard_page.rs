//! Packets of every truncation length are placed so that their last byte is the
//! last byte before an inaccessible page; field extraction and the JIT-compiled
//! policy run on each, and nothing reads past the packet (a read would fault and
//! kill this test).

use lbp_compiler::interp::Engine;
use lbp_compiler::packet::{PacketSpec, Proto, build};

/// Two pages, the second made inaccessible. Unmapped on drop.
struct Guarded {
    base: *mut u8,
    page: usize,
}

impl Guarded {
    fn new() -> Guarded {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        // SAFETY: an anonymous private mapping of two pages, no address hint.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap failed");
        let base = base.cast::<u8>();
        // SAFETY: the second page lies inside the mapping just made.
        let r = unsafe { libc::mprotect(base.add(page).cast(), page, libc::PROT_NONE) };
        assert_eq!(r, 0, "mprotect failed");
        Guarded { base, page }
    }

    /// `bytes` copied to end exactly at the guard page; the slice is of the mapping.
    fn place(&mut self, bytes: &[u8]) -> &[u8] {
        assert!(bytes.len() <= self.page);
        // SAFETY: the first page is readable and writable and `bytes` fits in it;
        // the returned slice covers only bytes just written, inside that page.
        unsafe {
            let start = self.base.add(self.page - bytes.len());
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), start, bytes.len());
            std::slice::from_raw_parts(start, bytes.len())
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe { libc::munmap(self.base.cast(), 2 * self.page) };
    }
}

#[test]
fn no_read_past_any_truncated_packet() {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/web.lbp"))
        .unwrap();
    let a = lbp_lang::analyze(&src);
    let prog = lbp_compiler::lower::lower(&a.policy).unwrap();
    let jit = lbp_compiler::jit::compile(&prog).unwrap();
    let mut frames = Vec::new();
    for (proto, src, dst) in [
        (Proto::Tcp, "198.18.1.5", "198.18.0.10"),
        (Proto::Udp, "198.18.1.5", "198.18.0.10"),
        (Proto::Icmp, "198.18.1.5", "198.18.0.10"),
        (Proto::Tcp, "2001:db8:1::5", "2001:db8:2::10"),
        (Proto::Icmpv6, "2001:db8:1::5", "2001:db8:2::10"),
    ] {
        let mut p = PacketSpec::new(proto, src.parse().unwrap(), dst.parse().unwrap());
        p.sport = 40000;
        p.dport = 80;
        p.len = Some(120);
        frames.push(build(&p));
    }
    let mut g = Guarded::new();
    let mut decided = 0;
    for frame in &frames {
        for len in 0..=frame.len() {
            let placed = g.place(&frame[..len]);
            let fields = lbp_compiler::wire::extract(placed, 0);
            let d = jit.decide(&fields);
            assert_eq!(d, lbp_compiler::interp::decide(&prog, &fields));
            decided += 1;
        }
    }
    assert_eq!(decided, frames.iter().map(|f| f.len() + 1).sum::<usize>());
}
