//! Applications that run inside a switching core's loop, on the core's own
//! frames: no copy, no system call, no kernel stack.
//!
//! A filter rule's `app NAME` decides [`lbp_abi::Action::App`] with the
//! application's number (its place in the [`Registry`], built-in ones first at
//! [`lbp_abi::app::BUILTIN`]'s numbers); the core hands the frame
//! to that application ([`App::frame`]) and the application owns it from
//! there, as the ring design's ownership rules say (see [`crate::ring`]):
//!
//! - A [`Frame`] is a handle to one frame of the core's [`Frames`]. It is
//!   neither `Copy` nor `Clone`, and its fields are private: the only ways to
//!   end it are [`Ctx::reply`] (send it back out of the interface it came in
//!   by, rewritten in place into an answer), [`Ctx::send`] (route it by its IP
//!   destination, for packets of the application's own) and [`Ctx::free`] (back
//!   to the free list). Each takes the handle by value, so a frame sent twice,
//!   or freed and then sent, does not compile.
//! - A handle dropped without any of them would leak its frame. Rust cannot
//!   refuse that at compile time; the core's per-burst frame accounting
//!   ([`crate::switch::CoreState::balanced`]: every frame in is in exactly one
//!   place out) catches it: debug builds assert it after every burst, and every
//!   test checks it.
//! - [`Ctx::alloc`] takes a free frame for a packet of the application's own,
//!   within a per-burst budget ([`ALLOC_BUDGET`]); past it, or with the free
//!   list empty, it says no and the application goes on without.
//! - Nothing blocks: an application's methods run to completion on the core,
//!   with no I/O; what it sends is queued and leaves with the burst. Its queue
//!   of outgoing frames is bounded ([`OUT_CAPACITY`]); a frame that finds it
//!   full is freed and counted ([`AppCounters::queue_full`]), never lost.
//!
//! The built-in applications: [`echo`], a UDP echo responder (RFC 862), and
//! [`icmp`], ICMP and ICMPv6 echo replies. Both answer only for the
//! appliance's own addresses and its virtual IPs, never to a source that is
//! not one host, and free anything they do not answer (bad checksums,
//! fragments, truncated or inconsistent headers) without touching it.

pub(crate) mod echo;
pub(crate) mod icmp;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use lbp_abi::Fields;

use crate::config::Appliance;
use crate::ring::{Desc, FRAME_SIZE, Frames};

/// Frames an application may allocate per burst.
pub const ALLOC_BUDGET: usize = 32;

/// Frames the applications may queue for sending per burst (all of them
/// together); a burst's frames plus their budget.
pub const OUT_CAPACITY: usize = 256;

/// A frame lent to an application: moved, never copied. See the module
/// documentation for how it ends.
#[derive(Debug)]
pub struct Frame {
    desc: Desc,
    in_iface: u32,
}

impl Frame {
    /// The packet's length in bytes.
    pub fn len(&self) -> usize {
        self.desc.len as usize
    }

    /// Whether the packet is empty (a frame fresh from [`Ctx::alloc`]).
    pub fn is_empty(&self) -> bool {
        self.desc.len == 0
    }

    /// The interface the frame came in by (its index in the configuration);
    /// for a frame from [`Ctx::alloc`], `u32::MAX`.
    pub fn in_iface(&self) -> u32 {
        self.in_iface
    }

    /// Set the packet's length (clipped to the frame's slot).
    pub fn set_len(&mut self, len: usize) {
        let room = FRAME_SIZE - (self.desc.addr as usize % FRAME_SIZE);
        self.desc.len = len.min(room) as u32;
    }
}

/// Where a frame an application gave back goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Out of interface `dev`, its Ethernet addresses already set.
    Tx(u32),
    /// Routed to this destination by the core (neighbour resolution included).
    Route(IpAddr),
}

/// An application's counters (per core).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppCounters {
    /// Frames the policy handed to the application.
    pub frames: u64,
    /// Frames sent back out of their interface ([`Ctx::reply`]).
    pub replies: u64,
    /// Frames routed ([`Ctx::send`]).
    pub sent: u64,
    /// Frames returned to the free list ([`Ctx::free`]).
    pub freed: u64,
    /// Frames allocated ([`Ctx::alloc`]).
    pub made: u64,
    /// Allocations refused by the budget or an empty free list.
    pub alloc_refused: u64,
    /// Frames freed because the outgoing queue was full.
    pub queue_full: u64,
}

/// What an application may do with frames during one call: lent to it by the
/// core for the length of [`App::frame`] or [`App::poll`].
pub struct Ctx<'a> {
    frames: &'a mut Frames,
    appliance: &'a Appliance,
    out: &'a mut Vec<(Desc, Fate)>,
    counters: &'a mut AppCounters,
    budget: &'a mut usize,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("queued", &self.out.len())
            .field("budget", &self.budget)
            .finish()
    }
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(
        frames: &'a mut Frames,
        appliance: &'a Appliance,
        out: &'a mut Vec<(Desc, Fate)>,
        counters: &'a mut AppCounters,
        budget: &'a mut usize,
    ) -> Ctx<'a> {
        Ctx {
            frames,
            appliance,
            out,
            counters,
            budget,
        }
    }

    /// The appliance's interfaces, services and routes.
    pub fn appliance(&self) -> &Appliance {
        self.appliance
    }

    /// Whether `a` is one of the appliance's interface addresses or a virtual
    /// IP: the addresses an application answers for.
    pub fn is_ours(&self, a: IpAddr) -> bool {
        let g = self.appliance;
        g.interfaces
            .iter()
            .any(|i| i.addrs.iter().any(|(x, _)| *x == a))
            || g.services.iter().any(|s| s.vips.contains(&a))
    }

    /// Whether `a` may be answered: one host, not a martian source
    /// (unspecified, loopback, multicast, broadcast, link-local).
    pub fn is_unicast_host(&self, a: IpAddr) -> bool {
        let connected = self
            .appliance
            .interfaces
            .iter()
            .flat_map(|i| i.addrs.iter().copied());
        lbp_abi::martian::martian(a, connected).is_none()
    }

    /// The packet in `frame`.
    pub fn packet(&self, frame: &Frame) -> &[u8] {
        self.frames.packet(frame.desc)
    }

    /// The packet in `frame`, writable.
    pub fn packet_mut(&mut self, frame: &mut Frame) -> &mut [u8] {
        self.frames.packet_mut(frame.desc)
    }

    /// The whole slot of `frame` (a packet may grow up to its end with
    /// [`Frame::set_len`]).
    pub fn slot_mut(&mut self, frame: &mut Frame) -> &mut [u8] {
        self.frames.slot_mut(frame.desc)
    }

    /// A free frame for a packet of the application's own (length 0), within
    /// the per-burst budget; `None` past it or when no frame is free.
    pub fn alloc(&mut self) -> Option<Frame> {
        if *self.budget == 0 {
            self.counters.alloc_refused += 1;
            return None;
        }
        let Some(desc) = self.frames.alloc() else {
            self.counters.alloc_refused += 1;
            return None;
        };
        *self.budget -= 1;
        self.counters.made += 1;
        Some(Frame {
            desc,
            in_iface: u32::MAX,
        })
    }

    /// Send `frame` back out of the interface it came in by, to the Ethernet
    /// address it came from, from that interface's (the application has
    /// rewritten the rest into its answer). A frame of [`Ctx::alloc`] has no
    /// such interface: it is freed.
    pub fn reply(&mut self, mut frame: Frame) {
        let Some(iface) = self.appliance.interfaces.get(frame.in_iface as usize) else {
            return self.free(frame);
        };
        let mac = iface.mac;
        let p = self.frames.packet_mut(frame.desc);
        if p.len() < 14 {
            return self.free(frame);
        }
        p.copy_within(6..12, 0);
        p[6..12].copy_from_slice(&mac);
        let dev = frame.in_iface;
        frame.in_iface = u32::MAX;
        self.counters.replies += 1;
        self.queue(frame, Fate::Tx(dev));
    }

    /// Route `frame` by its IP destination, as the core routes what it sends
    /// itself: a martian destination or one without a route is dropped, the
    /// next hop's MAC is found (or the frame waits for it), the TTL is not
    /// touched. The frame must hold an Ethernet header (its addresses are
    /// written by the core) and an IP packet to `dst`.
    pub fn send(&mut self, frame: Frame, dst: IpAddr) {
        self.counters.sent += 1;
        self.queue(frame, Fate::Route(dst));
    }

    /// Return `frame` to the free list.
    pub fn free(&mut self, frame: Frame) {
        self.counters.freed += 1;
        self.frames.free(frame.desc);
    }

    fn queue(&mut self, frame: Frame, fate: Fate) {
        if self.out.len() < self.out.capacity() {
            self.out.push((frame.desc, fate));
        } else {
            self.counters.queue_full += 1;
            self.free(frame);
        }
    }
}

/// An application on a switching core. Each core has its own instance of
/// every application (no locks: a core's applications run on that core only).
pub trait App: Send {
    /// Its name in the policy (`app NAME`).
    fn name(&self) -> &'static str;

    /// One frame the policy handed to the application, with the fields the
    /// policy decided on. The application owns `frame` and must end it with
    /// [`Ctx::reply`], [`Ctx::send`] or [`Ctx::free`] before it returns.
    fn frame(&mut self, frame: Frame, f: &Fields, ctx: &mut Ctx<'_>);

    /// Called once per burst, after the burst's frames: for packets of the
    /// application's own (timers use the burst's `now`). Does nothing by
    /// default.
    fn poll(&mut self, now: u64, ctx: &mut Ctx<'_>) {
        let _ = (now, ctx);
    }
}

/// A core's applications, by number (a [`Registry`]'s order), with
/// their counters and the queue of frames they send.
pub struct Apps {
    apps: Vec<Box<dyn App>>,
    counters: Vec<AppCounters>,
    pub(crate) out: Vec<(Desc, Fate)>,
}

impl std::fmt::Debug for Apps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apps")
            .field(
                "apps",
                &self.apps.iter().map(|a| a.name()).collect::<Vec<_>>(),
            )
            .field("counters", &self.counters)
            .finish()
    }
}

impl Default for Apps {
    fn default() -> Apps {
        Apps::builtin()
    }
}

impl Apps {
    /// The built-in applications, numbered as the policy language numbers
    /// them.
    pub fn builtin() -> Apps {
        Registry::builtin().instances()
    }

    /// These applications, numbered in this order (a core's applications are
    /// usually a [`Registry`]'s [`Registry::instances`], whose order is the
    /// policy's numbers).
    pub fn new(apps: Vec<Box<dyn App>>) -> Apps {
        Apps {
            counters: vec![AppCounters::default(); apps.len()],
            apps,
            out: Vec::with_capacity(OUT_CAPACITY),
        }
    }

    /// How many applications there are.
    pub fn len(&self) -> usize {
        self.apps.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    /// The name of application `n`.
    pub fn name(&self, n: usize) -> Option<&'static str> {
        self.apps.get(n).map(|a| a.name())
    }

    /// The counters of application `n`.
    pub fn counters(&self, n: usize) -> Option<&AppCounters> {
        self.counters.get(n)
    }

    /// Hand `desc` (received on `in_iface`, decided with `f`) to application
    /// `n`. `None` (no such application) gives the descriptor back.
    pub(crate) fn deliver(
        &mut self,
        n: usize,
        desc: Desc,
        in_iface: u32,
        f: &Fields,
        frames: &mut Frames,
        appliance: &Appliance,
    ) -> Result<(), Desc> {
        let (Some(app), Some(counters)) = (self.apps.get_mut(n), self.counters.get_mut(n)) else {
            return Err(desc);
        };
        counters.frames += 1;
        let mut budget = ALLOC_BUDGET;
        let mut ctx = Ctx::new(frames, appliance, &mut self.out, counters, &mut budget);
        app.frame(Frame { desc, in_iface }, f, &mut ctx);
        Ok(())
    }

    /// Every application's [`App::poll`], each with its per-burst budget.
    pub(crate) fn poll(&mut self, now: u64, frames: &mut Frames, appliance: &Appliance) {
        for (app, counters) in self.apps.iter_mut().zip(self.counters.iter_mut()) {
            let mut budget = ALLOC_BUDGET;
            let mut ctx = Ctx::new(frames, appliance, &mut self.out, counters, &mut budget);
            app.poll(now, &mut ctx);
        }
    }

    /// Frames made and freed by the applications so far, all together (for
    /// the core's books).
    pub(crate) fn made_and_freed(&self) -> (u64, u64) {
        self.counters
            .iter()
            .fold((0, 0), |(m, f), c| (m + c.made, f + c.freed))
    }
}

// ---- The registry ---------------------------------------------------------------

/// How a core gets its own instance of an application.
type Make = dyn Fn() -> Box<dyn App> + Send + Sync;

/// The applications an appliance offers, by name and number: what the policy
/// checker accepts after `app`, the numbers the compiler gives them (their
/// order here), and what every switching core runs (each core its own
/// instances, [`Registry::instances`]). The built-in applications come first,
/// at the numbers of [`lbp_abi::app::BUILTIN`]; [`Registry::with`] adds one
/// after them.
///
/// ```
/// use lbp_runtime::app::{App, Ctx, Frame, Registry};
/// use lbp_abi::Fields;
///
/// /// Frees every frame it gets.
/// struct Sink;
/// impl App for Sink {
///     fn name(&self) -> &'static str {
///         "sink"
///     }
///     fn frame(&mut self, frame: Frame, _: &Fields, ctx: &mut Ctx<'_>) {
///         ctx.free(frame);
///     }
/// }
///
/// let apps = Registry::builtin().with(|| Box::new(Sink));
/// assert_eq!(apps.names(), ["echo", "icmp", "sink"]);
/// assert_eq!(apps.index("sink"), Some(2));
/// ```
#[derive(Clone)]
pub struct Registry {
    apps: Vec<(&'static str, Arc<Make>)>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Default for Registry {
    fn default() -> Registry {
        Registry::builtin()
    }
}

impl Registry {
    /// The built-in applications ([`echo`] and [`icmp`]), numbered as
    /// [`lbp_abi::app::BUILTIN`] numbers them.
    pub fn builtin() -> Registry {
        let r = Registry { apps: Vec::new() }
            .with(|| Box::new(echo::Echo))
            .with(|| Box::new(icmp::Icmp));
        debug_assert_eq!(r.names(), lbp_abi::app::BUILTIN);
        r
    }

    /// These applications and one more, numbered after them. `make` gives a
    /// new instance (one per switching core, and one more here, once, to learn
    /// the application's [`App::name`]).
    ///
    /// # Panics
    ///
    /// When the name is not a name the policy language can write after `app`
    /// (a letter or `_`, then letters, digits and `_`), or is taken already.
    pub fn with(mut self, make: impl Fn() -> Box<dyn App> + Send + Sync + 'static) -> Registry {
        let name = make().name();
        assert!(
            is_name(name),
            "an application's name must be a letter or `_` followed by letters, digits and `_`: `{name}`"
        );
        assert!(
            self.index(name).is_none(),
            "an application called `{name}` is registered already"
        );
        self.apps.push((name, Arc::new(make)));
        self
    }

    /// The applications' names, in number order.
    pub fn names(&self) -> Vec<&'static str> {
        self.apps.iter().map(|(n, _)| *n).collect()
    }

    /// The number of the application called `name`.
    pub fn index(&self, name: &str) -> Option<u32> {
        self.apps
            .iter()
            .position(|(n, _)| *n == name)
            .map(|i| i as u32)
    }

    /// A new instance of every application, for one switching core.
    pub fn instances(&self) -> Apps {
        Apps::new(self.apps.iter().map(|(_, make)| make()).collect())
    }
}

/// Whether `s` is an identifier of the policy language.
fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

// ---- What applications share ------------------------------------------------------

/// Send `frame` back when it is a whole IP packet ([`layout`]) and `answer`
/// turned it into an answer (true), else free it (`answer` leaves it
/// untouched then).
pub fn reply_or_free(
    ctx: &mut Ctx<'_>,
    mut frame: Frame,
    f: &Fields,
    answer: fn(&mut Ctx<'_>, &mut Frame, &Layout) -> bool,
) {
    let l = layout(ctx.packet(&frame), usize::from(f.l3_offset));
    if l.is_some_and(|l| answer(ctx, &mut frame, &l)) {
        ctx.reply(frame);
    } else {
        ctx.free(frame);
    }
}

/// An IP packet's layout in a frame, checked: the IP header at `l3`, the
/// transport header at `l4`, the IP packet ending at `end` (Ethernet padding
/// after it). Only packets without IPv6 extension headers or fragmentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub l3: usize,
    pub l4: usize,
    pub end: usize,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
}

/// The length of the IPv6 header.
pub const IPV6_HEADER: usize = 40;
/// The TTL (hop limit) of the applications' answers (Linux's default).
pub const ANSWER_TTL: u8 = 64;

/// The layout of `p` at `l3`, or `None` for anything not a whole, unfragmented
/// IPv4 or IPv6 packet with consistent lengths (and, for IPv4, a right header
/// checksum).
pub fn layout(p: &[u8], l3: usize) -> Option<Layout> {
    let v = *p.get(l3)? >> 4;
    if v == 4 {
        let h = p.get(l3..l3 + 20)?;
        let ihl = usize::from(h[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
        let frag = u16::from_be_bytes([h[6], h[7]]) & 0x3fff;
        if ihl < 20 || total < ihl || frag != 0 {
            return None;
        }
        let end = l3.checked_add(total)?;
        if end > p.len() || crate::wire::checksum::checksum(p.get(l3..l3 + ihl)?) != 0 {
            return None;
        }
        let a = |o: usize| IpAddr::V4(Ipv4Addr::new(h[o], h[o + 1], h[o + 2], h[o + 3]));
        Some(Layout {
            l3,
            l4: l3 + ihl,
            end,
            src: a(12),
            dst: a(16),
            proto: h[9],
        })
    } else if v == 6 {
        let h = p.get(l3..l3 + IPV6_HEADER)?;
        let payload = usize::from(u16::from_be_bytes([h[4], h[5]]));
        let end = l3 + IPV6_HEADER + payload;
        if end > p.len() {
            return None;
        }
        let a = |o: usize| {
            let mut b = [0u8; 16];
            b.copy_from_slice(&h[o..o + 16]);
            IpAddr::V6(Ipv6Addr::from(b))
        };
        Some(Layout {
            l3,
            l4: l3 + IPV6_HEADER,
            end,
            src: a(8),
            dst: a(24),
            proto: h[6],
        })
    } else {
        None
    }
}

/// The partial checksum sum of the pseudo-header of `l` for its transport
/// segment (`l4..end`).
pub fn pseudo(l: &Layout) -> u64 {
    use crate::wire::checksum::{pseudo_v4, pseudo_v6};
    let len = l.end - l.l4;
    match (l.src, l.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => pseudo_v4(s, d, l.proto, len as u16),
        (IpAddr::V6(s), IpAddr::V6(d)) => pseudo_v6(&s, &d, l.proto, len as u32),
        _ => 0,
    }
}

/// Turn the IP header of `l` around: source and destination swapped, a fresh
/// TTL (hop limit), and for IPv4 the header checksum computed anew. The
/// transport checksum is the caller's.
pub fn turn_ip_around(p: &mut [u8], l: &Layout) {
    let h = &mut p[l.l3..l.l4];
    if l.src.is_ipv4() {
        let (s, d) = h[12..20].split_at_mut(4);
        s.swap_with_slice(d);
        h[8] = ANSWER_TTL;
        h[10..12].copy_from_slice(&[0, 0]);
        let c = crate::wire::checksum::checksum(h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        let (s, d) = h[8..40].split_at_mut(16);
        s.swap_with_slice(d);
        h[7] = ANSWER_TTL;
    }
}

#[cfg(test)]
pub(crate) mod tests;
