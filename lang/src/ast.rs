//! The syntax tree of a policy. Every node carries the byte span of its source text.
//!
//! The tree is what was written, not what it means: names are unresolved, literals
//! are not yet typed, and parentheses are kept so that `lbp fmt` gives back the
//! author's grouping. `check` gives it meaning.

use std::fmt;
use std::net::IpAddr;

/// A byte range `start..end` in the policy source.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }
    pub fn len(&self) -> usize {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

// Spans print as `@start..end` so that tests can strip them from a `{:?}` rendering
// and compare trees by shape alone.
impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}..{}", self.start, self.end)
    }
}

/// A name as written, with its span.
#[derive(Clone, PartialEq, Debug)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A whole `.lbp` file: its items in source order.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct Policy {
    pub items: Vec<Item>,
}

#[derive(Clone, PartialEq, Debug)]
pub enum Item {
    Interface(Interface),
    Const(Const),
    Set(SetDef),
    Pool(Pool),
    Service(Service),
    Filter(Filter),
    Route(Route),
    Test(Test),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Interface(x) => x.span,
            Item::Const(x) => x.span,
            Item::Set(x) => x.span,
            Item::Pool(x) => x.span,
            Item::Service(x) => x.span,
            Item::Filter(x) => x.span,
            Item::Route(x) => x.span,
            Item::Test(x) => x.span,
        }
    }
}

/// `interface NAME { address A/L, ... ; mac M ; mtu N }`
#[derive(Clone, PartialEq, Debug)]
pub struct Interface {
    pub name: Ident,
    pub stmts: Vec<IfaceStmt>,
    pub span: Span,
}

#[derive(Clone, PartialEq, Debug)]
pub enum IfaceStmtKind {
    Address(Vec<Expr>),
    Mac(Expr),
    Mtu(Expr),
}

#[derive(Clone, PartialEq, Debug)]
pub struct IfaceStmt {
    pub kind: IfaceStmtKind,
    pub span: Span,
}

/// `const NAME = VALUE`
#[derive(Clone, PartialEq, Debug)]
pub struct Const {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

/// `set NAME [: TYPE] = { ELEM, ... }`
#[derive(Clone, PartialEq, Debug)]
pub struct SetDef {
    pub name: Ident,
    pub ty: Option<Ident>,
    pub elems: Vec<Expr>,
    /// Span of the `{ ... }`.
    pub body: Span,
    pub span: Span,
}

/// `pool NAME { backend ...; health ...; weight = EXPR }`
#[derive(Clone, PartialEq, Debug)]
pub struct Pool {
    pub name: Ident,
    pub stmts: Vec<PoolStmt>,
    pub span: Span,
}

#[derive(Clone, PartialEq, Debug)]
pub enum PoolStmtKind {
    Backend(Backend),
    Health(Health),
    /// `weight = EXPR`, evaluated by the control module on each load report.
    Weight(Expr),
}

#[derive(Clone, PartialEq, Debug)]
pub struct PoolStmt {
    pub kind: PoolStmtKind,
    pub span: Span,
}

/// `backend ADDR [weight N] [port N] [agent N]`
#[derive(Clone, PartialEq, Debug)]
pub struct Backend {
    pub addr: Expr,
    pub opts: Vec<Opt>,
}

/// `health KIND [port N] [interval D] [timeout D] [path "S"] [rise N] [fall N] [expect N]`
#[derive(Clone, PartialEq, Debug)]
pub struct Health {
    pub kind: Ident,
    pub opts: Vec<Opt>,
}

/// A `key value` option of a backend or a health check.
#[derive(Clone, PartialEq, Debug)]
pub struct Opt {
    pub key: Ident,
    pub value: Expr,
}

/// `service NAME { vip ...; pool P; balance B; mode M; unknown U }`
#[derive(Clone, PartialEq, Debug)]
pub struct Service {
    pub name: Ident,
    pub stmts: Vec<ServiceStmt>,
    pub span: Span,
}

#[derive(Clone, PartialEq, Debug)]
pub enum ServiceStmtKind {
    /// `vip ADDR PROTO [port P, ...]`
    Vip {
        addr: Expr,
        proto: Ident,
        ports: Vec<Expr>,
    },
    /// `pool NAME`
    Pool(Ident),
    /// `balance ALG` or `balance hash(FIELD, ...)`
    Balance(Balance),
    /// `mode KIND [to port N]`
    Mode { kind: Ident, to_port: Option<Expr> },
    /// `unknown reset|balance`
    Unknown(Ident),
}

#[derive(Clone, PartialEq, Debug)]
pub struct ServiceStmt {
    pub kind: ServiceStmtKind,
    pub span: Span,
}

#[derive(Clone, PartialEq, Debug)]
pub enum Balance {
    Named(Ident),
    Hash { fields: Vec<Ident>, span: Span },
}

/// `filter { COND => ACTION ... }`
#[derive(Clone, PartialEq, Debug)]
pub struct Filter {
    pub rules: Vec<FilterRule>,
    pub span: Span,
}

#[derive(Clone, PartialEq, Debug)]
pub struct FilterRule {
    pub cond: Expr,
    pub action: Action,
    pub span: Span,
}

/// `accept`, `drop`, ..., or `balance SERVICE`.
#[derive(Clone, PartialEq, Debug)]
pub struct Action {
    pub kind: Ident,
    pub service: Option<Ident>,
    pub span: Span,
}

/// `route PREFIX [via ADDR] [dev IFACE]`
#[derive(Clone, PartialEq, Debug)]
pub struct Route {
    pub prefix: Expr,
    pub via: Option<Expr>,
    pub dev: Option<Ident>,
    pub span: Span,
}

/// `test "NAME" { PACKET => VERDICT ... }`
#[derive(Clone, PartialEq, Debug)]
pub struct Test {
    pub name: String,
    pub name_span: Span,
    pub packets: Vec<Packet>,
    pub span: Span,
}

/// `PROTO SRC[:PORT] -> DST[:PORT] [OPT...] => VERDICT`
#[derive(Clone, PartialEq, Debug)]
pub struct Packet {
    pub proto: Ident,
    pub src: Endpoint,
    pub dst: Endpoint,
    pub opts: Vec<PacketOpt>,
    pub verdict: Verdict,
    pub span: Span,
}

#[derive(Clone, PartialEq, Debug)]
pub struct Endpoint {
    pub addr: Expr,
    pub port: Option<Expr>,
    pub span: Span,
}

#[derive(Clone, PartialEq, Debug)]
pub enum PacketOpt {
    /// A TCP flag: `syn`, `ack`, ...
    Flag(Ident),
    Type(Expr),
    Code(Expr),
    Ttl(Expr),
    Len(Expr),
    On(Ident),
}

/// `drop`, `reset`, `local`, `balance SERVICE`, `forward dev IFACE`.
#[derive(Clone, PartialEq, Debug)]
pub struct Verdict {
    pub kind: Ident,
    pub arg: Option<Ident>,
    pub span: Span,
}

/// An expression: a condition of a filter rule, a weight formula, or a value.
#[derive(Clone, PartialEq, Debug)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, PartialEq, Debug)]
pub enum ExprKind {
    Lit(Lit),
    /// A bare name: a const, a set, an interface, a weight input or a built-in.
    Name(String),
    /// A packet field such as `ip.src`.
    Field(String),
    /// An inline set `{ a, b, c }`.
    Set(Vec<Expr>),
    Paren(Box<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    /// `a && b && ...`, flattened so long chains do not nest.
    And(Vec<Expr>),
    /// `a || b || ...`, flattened.
    Or(Vec<Expr>),
    Cmp(Box<Expr>, CmpOp, Box<Expr>),
    In(Box<Expr>, Box<Expr>),
    /// `first op e op e ...` at one precedence level (`+ -` or `* /`).
    Arith(Box<Expr>, Vec<(ArithOp, Expr)>),
    /// A literal that could not be decoded; its diagnostic is already reported.
    Error,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl ArithOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
            ArithOp::Div => "/",
        }
    }
}

/// A literal value, already decoded.
#[derive(Clone, PartialEq, Debug)]
pub enum Lit {
    /// `42` or `0x2a`; `hex_digits` is 0 for decimal, else the digits written.
    Int {
        value: u64,
        hex_digits: u8,
    },
    Float(f64),
    Addr(IpAddr),
    /// An address with a length as written; the length is checked later.
    Prefix {
        addr: IpAddr,
        len: u32,
    },
    Mac([u8; 6]),
    Range(u64, u64),
    Duration {
        amount: u64,
        unit: TimeUnit,
    },
    Str(String),
    Bool(bool),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TimeUnit {
    Us,
    Ms,
    S,
    M,
    H,
}

impl TimeUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeUnit::Us => "us",
            TimeUnit::Ms => "ms",
            TimeUnit::S => "s",
            TimeUnit::M => "m",
            TimeUnit::H => "h",
        }
    }
    /// Microseconds in one unit.
    pub fn micros(self) -> u64 {
        match self {
            TimeUnit::Us => 1,
            TimeUnit::Ms => 1_000,
            TimeUnit::S => 1_000_000,
            TimeUnit::M => 60_000_000,
            TimeUnit::H => 3_600_000_000,
        }
    }
}
