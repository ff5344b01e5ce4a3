//! The live-frames method: `BPF_PROG_RUN` of an XDP program with
//! `BPF_F_TEST_XDP_LIVE_FRAMES` (see the module documentation of
//! [`super`]).

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use super::{FlowFields, array_map, flow_program, read_words, tx_program};
use lbp_runtime::ring::bpf::{
    BPF_PROG_TEST_RUN, TestRunAttr, XdpMd, load_xdp, map_update, sys_bpf,
};

/// `BPF_F_TEST_XDP_LIVE_FRAMES`: transmit the frames the program returns.
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// One live-frames test run of `prog` on copies of `frame`, `repeat` times, as
/// received on `ifindex`.
pub(super) fn test_run(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    frame: &[u8],
    repeat: u32,
    batch: u32,
) -> io::Result<()> {
    let mut ctx = XdpMd {
        data_end: frame.len() as u32,
        ingress_ifindex: ifindex,
        ..XdpMd::default()
    };
    let mut a = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ctx_size_in: size_of::<XdpMd>() as u32,
        ctx_in: &mut ctx as *mut XdpMd as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size: batch,
        ..TestRunAttr::default()
    };
    sys_bpf(BPF_PROG_TEST_RUN, &mut a)
        .map(drop)
        .map_err(|e| io::Error::new(e.kind(), format!("BPF_PROG_RUN in live-frames mode: {e}")))
}

/// A loaded live-frames generator program.
#[derive(Debug)]
pub(super) struct Live {
    prog: OwnedFd,
    /// The flow variant's counter (entry 0: the next flow number).
    flows: Option<OwnedFd>,
    ifindex: u32,
    frame: Vec<u8>,
}

impl Live {
    pub(super) fn new(ifindex: u32, frame: &[u8], flows: Option<FlowFields>) -> io::Result<Live> {
        let (prog, map) = match flows {
            None => (load_xdp("lbp_gen", &tx_program(frame)?)?, None),
            Some(f) => {
                let map = array_map(8)?;
                let prog = load_xdp("lbp_gen_flows", &flow_program(map.as_raw_fd(), frame, f)?)?;
                (prog, Some(map))
            }
        };
        Ok(Live {
            prog,
            flows: map,
            ifindex,
            frame: frame.to_vec(),
        })
    }

    /// Send `count` frames, `batch` per kernel batch; returns `count` (the
    /// kernel does not say how many left).
    pub(super) fn run(&self, count: u64, batch: u32) -> io::Result<u64> {
        let mut sent = 0u64;
        while sent < count {
            let n = (count - sent).min(u64::from(u32::MAX)) as u32;
            test_run(self.prog.as_fd(), self.ifindex, &self.frame, n, batch)?;
            sent += u64::from(n);
        }
        Ok(sent)
    }

    pub(super) fn set_next_flow(&self, n: u64) -> io::Result<()> {
        match &self.flows {
            Some(m) => map_update(m.as_fd(), &0u32, &n),
            None => Ok(()),
        }
    }

    pub(super) fn next_flow(&self) -> io::Result<u64> {
        match &self.flows {
            Some(m) => Ok(read_words::<1>(m.as_fd())?[0]),
            None => Ok(0),
        }
    }

    pub(super) fn prog(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }
}
