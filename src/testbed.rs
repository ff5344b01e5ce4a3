//! The switching core as a back end of policy tests: a policy's appliance
//! (`appliance::appliance` of the lowered program) running its compiled policy
//! on the runtime's [`Testbed`], one core on in-memory rings. Each packet line's
//! frame goes into the receive ring of the interface it arrives on, and the
//! verdict is read from what the core did with it ([`Outcome::verdict`]).

use crate::appliance::appliance;
use lbp_abi::Fields;
use lbp_compiler::Program;
use lbp_compiler::testing::{Tester, Verdict};
use lbp_runtime::app::Registry;
use lbp_runtime::generation::Decide;
pub use lbp_runtime::testbed::{Fate, Outcome, Testbed};
use std::sync::Arc;

/// A compiled policy's appliance as a [`Tester`].
#[derive(Debug)]
pub struct CoreTester {
    bed: Testbed,
    /// The last packet line's outcome (for callers that check more than the
    /// verdict).
    pub last: Option<Outcome>,
}

impl CoreTester {
    /// The appliance of `prog` (whose source is `src`, for the rules' lines),
    /// deciding with `policy` (its JIT, usually).
    pub fn new(
        prog: &Program,
        src: &str,
        policy: Arc<dyn Decide + Send + Sync>,
    ) -> std::io::Result<CoreTester> {
        CoreTester::with_apps(prog, src, policy, &Registry::builtin())
    }

    /// [`CoreTester::new`] whose core runs the applications `apps` (those
    /// the policy was checked and lowered with) instead of the built-in ones.
    pub fn with_apps(
        prog: &Program,
        src: &str,
        policy: Arc<dyn Decide + Send + Sync>,
        apps: &Registry,
    ) -> std::io::Result<CoreTester> {
        Ok(CoreTester {
            bed: Testbed::with_apps(policy, appliance(prog, src), apps.clone())?,
            last: None,
        })
    }

    /// The appliance of the policy `src`, checked, lowered and compiled here
    /// (its JIT deciding), whose core runs the applications `apps`: how a
    /// program tests its own application on crafted frames
    /// ([`CoreTester::testbed`]'s `send`). A policy with errors gives the
    /// first error's message.
    pub fn compile(src: &str, apps: &Registry) -> Result<CoreTester, String> {
        let names = apps.names();
        let analysis = lbp_lang::analyze_with(src, &names);
        if let Some(d) = analysis.diagnostics.iter().find(|d| d.is_error()) {
            return Err(format!("{}: {}", d.code, d.message));
        }
        let prog =
            lbp_compiler::lower::lower_with(&analysis.policy, &names).map_err(|e| e.to_string())?;
        let jit = lbp_compiler::jit::compile(&prog).map_err(|e| e.to_string())?;
        CoreTester::with_apps(&prog, src, Arc::new(Shared(Arc::new(jit))), apps)
            .map_err(|e| e.to_string())
    }

    /// The testbed, to send frames other than packet lines.
    pub fn testbed(&mut self) -> &mut Testbed {
        &mut self.bed
    }
}

impl Tester for CoreTester {
    fn begin(&mut self) {
        self.bed.restart();
    }

    fn verdict(&mut self, frame: &[u8], in_iface: u32, _fields: &Fields) -> Verdict {
        let o = self.bed.send(frame, in_iface);
        let v = Verdict {
            text: o.verdict(self.bed.appliance()),
            rule: o.rule,
            detail: Some(o.detail(self.bed.appliance())),
        };
        self.last = Some(o);
        v
    }
}

/// The frame a back end answers `sent` with (a frame the core sent it): from
/// its destination back to its source, ports swapped, a SYN-ACK for TCP;
/// `None` for what is neither TCP nor UDP. For tests that follow a balanced
/// frame back through the core (NAT return traffic).
pub fn backend_answer(sent: &[u8]) -> Option<Vec<u8>> {
    use lbp_compiler::packet::{PacketSpec, Proto, build};
    let f = lbp_abi::wire::extract(sent, 0);
    let ip = lbp_runtime::switch::ip_from_bytes;
    let proto = match f.ip_proto {
        6 => Proto::Tcp,
        17 => Proto::Udp,
        _ => return None,
    };
    let mut s = PacketSpec::new(proto, ip(&f.ip_dst), ip(&f.ip_src));
    s.sport = f.dport;
    s.dport = f.sport;
    s.tcp_flags = lbp_abi::tcp_flag::SYN | lbp_abi::tcp_flag::ACK;
    Some(build(&s))
}

/// A compiled policy shared between the JIT back end of a test and the core's
/// generation.
#[derive(Debug)]
pub struct Shared<B>(pub Arc<B>);

impl<B: lbp_compiler::Engine + Send + Sync> Decide for Shared<B> {
    fn decide(&self, f: &Fields) -> lbp_abi::Decision {
        self.0.decide(f)
    }
}
