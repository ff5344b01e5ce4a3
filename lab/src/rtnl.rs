//! Requests on a `NETLINK_ROUTE` socket, each acknowledged by the kernel.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

use crate::{Error, Result};

/// `NLMSGERR_ATTR_MSG`: the kernel's text in an extended acknowledgement.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// A `NETLINK_ROUTE` socket of one network namespace (the one it was opened in).
pub(crate) struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl Rtnl {
    /// A socket in the calling thread's network namespace.
    pub(crate) fn open() -> io::Result<Rtnl> {
        let socket = Socket::new(NETLINK_ROUTE)?;
        // Errors with the kernel's own text, and without the request echoed.
        socket.set_ext_ack(true)?;
        socket.set_cap_ack(true)?;
        Ok(Rtnl { socket, seq: 0 })
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Send `msg` with `flags` (besides request and ack) and wait for the
    /// kernel's acknowledgement; the messages that came before it (the answer to
    /// a get). An error names `what` was asked.
    pub(crate) fn request(
        &mut self,
        what: &dyn Fn() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut packet = NetlinkMessage::from(msg);
        packet.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        packet.header.sequence_number = seq;
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        let kernel = SocketAddr::new(0, 0);
        self.socket
            .send_to(&buf, &kernel, 0)
            .map_err(|e| Error::new(what(), format_args!("netlink send: {e}")))?;
        let mut answers = Vec::new();
        loop {
            let (buf, _) = self
                .socket
                .recv_from_full()
                .map_err(|e| Error::new(what(), format_args!("netlink receive: {e}")))?;
            let mut at = 0;
            while at < buf.len() {
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[at..])
                    .map_err(|e| Error::new(what(), format_args!("netlink answer: {e}")))?;
                let len = (m.header.length as usize).max(16);
                at += len.next_multiple_of(4);
                if m.header.sequence_number != seq {
                    continue;
                }
                let header_flags = m.header.flags;
                match m.payload {
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(answers),
                        Some(code) => {
                            let errno = io::Error::from_raw_os_error(-code.get());
                            return Err(match kernel_text(header_flags, &e.header) {
                                Some(text) => Error::new(what(), format_args!("{errno}: {text}")),
                                None => Error::new(what(), errno),
                            });
                        }
                    },
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                    _ => {}
                }
            }
        }
    }

    /// The index of the interface `name`.
    pub(crate) fn index(&mut self, name: &str) -> Result<u32> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.into()));
        Ok(self
            .link(msg, &|| format!("interface {name}"))?
            .header
            .index)
    }

    /// Whether the interface of index `index` is up with its carrier (an IPv6
    /// address on it becomes usable only then). The carrier's flag, not
    /// `IFF_RUNNING`: the kernel sets that one later, from its link watch.
    pub(crate) fn running(&mut self, index: u32) -> Result<bool> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        let link = self.link(msg, &|| format!("interface {index}"))?;
        Ok(link
            .header
            .flags
            .contains(LinkFlags::Up | LinkFlags::LowerUp))
    }

    /// The kernel's description of the one link `msg` names.
    fn link(&mut self, msg: LinkMessage, what: &dyn Fn() -> String) -> Result<LinkMessage> {
        let answers = self.request(what, RouteNetlinkMessage::GetLink(msg), 0)?;
        answers
            .into_iter()
            .find_map(|a| match a {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })
            .ok_or_else(|| Error::new(what(), "no answer"))
    }
}

/// The kernel's text in an error acknowledgement, if it gave one: after the
/// error code comes the request's header (only the header when the ack is
/// capped), then, with `NLM_F_ACK_TLVS`, attributes.
fn kernel_text(flags: u16, rest: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 || rest.len() < 4 {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        u32::from_ne_bytes(rest[..4].try_into().ok()?) as usize
    };
    let mut tlvs = rest.get(echoed.next_multiple_of(4)..)?;
    while tlvs.len() >= 4 {
        let len = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & 0x3fff;
        if len < 4 || len > tlvs.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &tlvs[4..len];
            let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
            return Some(String::from_utf8_lossy(&text[..end]).into_owned());
        }
        tlvs = tlvs.get(len.next_multiple_of(4)..)?;
    }
    None
}
