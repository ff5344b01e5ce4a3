//! Editor support (issue 11). The generated files under `editors/` are what
//! `lbp editors generate` gives; the VS Code grammar, run by vscode-textmate as
//! VS Code runs it, scopes every token that lbp's parser finds in the stock
//! policies as its kind; Vim's syntax file, run by Vim headless, gives every such
//! token the highlight group of its kind, and its ftdetect and ftplugin give the
//! file type, comment string and the policies' own indentation, in Vim and in
//! Neovim; Emacs, in batch
//! mode with `lbp-mode.el`, does the same with its faces; `vsce` accepts the VS
//! Code extension.
//!
//! The expected kind of each token comes from the parser's tree (literals,
//! fields, names, actions...) and, for the words the tree does not keep
//! (keywords), from the vocabulary tables: no regular expression of the editor
//! files is its own oracle.
//!
//! Node, Vim and Emacs are external programs: when one is missing the test says
//! SKIPPED and why, and under CI (`LBP_CI`) it fails instead.

use crate::netns::skip;
use crate::{files, lbp, root};
use lbp_lang::ast::*;
use lbp_lang::vocab;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// A token of a policy, found by the parser: its byte range and kind.
#[derive(Debug)]
struct Tok {
    start: usize,
    end: usize,
    kind: String,
}

struct Walk<'a> {
    src: &'a str,
    toks: Vec<Tok>,
    /// Byte ranges that are no keyword (test names with their quotes).
    covered: Vec<(usize, usize)>,
}

impl Walk<'_> {
    fn tok(&mut self, span: Span, kind: &str) {
        self.toks.push(Tok {
            start: span.start,
            end: span.end,
            kind: kind.to_string(),
        });
    }

    fn expr(&mut self, e: &Expr, formula: bool) {
        match &e.kind {
            ExprKind::Lit(l) => {
                let kind = match l {
                    Lit::Int { .. } => "integer",
                    Lit::Float(_) => "float",
                    Lit::Addr(a) if a.is_ipv4() => "ipv4",
                    Lit::Addr(_) => "ipv6",
                    Lit::Prefix { addr, .. } if addr.is_ipv4() => "prefix4",
                    Lit::Prefix { .. } => "prefix6",
                    Lit::Mac(_) => "mac",
                    Lit::Range(..) => "range",
                    Lit::Duration { .. } => "duration",
                    Lit::Str(_) => "string",
                    Lit::Bool(_) => "boolean",
                };
                self.tok(e.span, kind);
            }
            ExprKind::Name(n) => {
                let kind = if formula && vocab::WEIGHT_INPUTS.contains(&n.as_str()) {
                    "input"
                } else if !formula && vocab::protocol_names().any(|p| p == n) {
                    "protocol"
                } else {
                    "name"
                };
                self.tok(e.span, kind);
            }
            ExprKind::Field(_) => self.tok(e.span, "field"),
            ExprKind::Set(v) | ExprKind::And(v) | ExprKind::Or(v) => {
                for x in v {
                    self.expr(x, formula);
                }
            }
            ExprKind::Paren(x) | ExprKind::Not(x) | ExprKind::Neg(x) => self.expr(x, formula),
            ExprKind::Cmp(a, _, b) | ExprKind::In(a, b) => {
                self.expr(a, formula);
                self.expr(b, formula);
            }
            ExprKind::Arith(first, rest) => {
                self.expr(first, formula);
                for (_, x) in rest {
                    self.expr(x, formula);
                }
            }
            ExprKind::Error => {}
        }
    }

    fn opts(&mut self, opts: &[Opt]) {
        for o in opts {
            self.tok(o.key.span, "keyword");
            self.expr(&o.value, false);
        }
    }

    fn item(&mut self, item: &Item) {
        match item {
            Item::Interface(i) => {
                self.tok(i.name.span, "decl:interface");
                for st in &i.stmts {
                    match &st.kind {
                        IfaceStmtKind::Address(v) => v.iter().for_each(|e| self.expr(e, false)),
                        IfaceStmtKind::Mac(e) | IfaceStmtKind::Mtu(e) => self.expr(e, false),
                    }
                }
            }
            Item::Const(c) => {
                self.tok(c.name.span, "decl:const");
                self.expr(&c.value, false);
            }
            Item::Set(s) => {
                self.tok(s.name.span, "decl:set");
                if let Some(t) = &s.ty {
                    self.tok(t.span, "settype");
                }
                s.elems.iter().for_each(|e| self.expr(e, false));
            }
            Item::Pool(p) => {
                self.tok(p.name.span, "decl:pool");
                for st in &p.stmts {
                    match &st.kind {
                        PoolStmtKind::Backend(b) => {
                            self.expr(&b.addr, false);
                            self.opts(&b.opts);
                        }
                        PoolStmtKind::Health(h) => {
                            self.tok(h.kind.span, "health");
                            self.opts(&h.opts);
                        }
                        PoolStmtKind::Weight(e) => self.expr(e, true),
                    }
                }
            }
            Item::Service(s) => {
                self.tok(s.name.span, "decl:service");
                for st in &s.stmts {
                    match &st.kind {
                        ServiceStmtKind::Vip { addr, proto, ports } => {
                            self.expr(addr, false);
                            self.tok(proto.span, "protocol");
                            ports.iter().for_each(|e| self.expr(e, false));
                        }
                        ServiceStmtKind::Pool(p) => self.tok(p.span, "name"),
                        ServiceStmtKind::Balance(Balance::Named(a)) => {
                            self.tok(a.span, "algorithm")
                        }
                        ServiceStmtKind::Balance(Balance::Hash { fields, span }) => {
                            let at = self.src[span.start..].find("hash").expect("`hash`");
                            let start = span.start + at;
                            self.tok(Span::new(start, start + 4), "algorithm");
                            fields.iter().for_each(|f| self.tok(f.span, "field"));
                        }
                        ServiceStmtKind::Mode { kind, to_port } => {
                            self.tok(kind.span, "mode");
                            to_port.iter().for_each(|e| self.expr(e, false));
                        }
                        ServiceStmtKind::Unknown(u) => self.tok(u.span, "policy"),
                    }
                }
            }
            Item::Filter(f) => {
                for r in &f.rules {
                    self.expr(&r.cond, false);
                    self.tok(r.action.kind.span, "action");
                    if let Some(s) = &r.action.service {
                        self.tok(s.span, "name");
                    }
                }
            }
            Item::Route(r) => {
                self.expr(&r.prefix, false);
                r.via.iter().for_each(|e| self.expr(e, false));
                if let Some(d) = &r.dev {
                    self.tok(d.span, "name");
                }
            }
            Item::Test(t) => {
                let s = t.name_span;
                self.covered.push((s.start, s.end));
                // The name without its quotes.
                self.tok(Span::new(s.start + 1, s.end - 1), "decl:test");
                for p in &t.packets {
                    self.tok(p.proto.span, "protocol");
                    for e in [&p.src, &p.dst] {
                        self.expr(&e.addr, false);
                        e.port.iter().for_each(|x| self.expr(x, false));
                    }
                    for o in &p.opts {
                        match o {
                            PacketOpt::Flag(f) => self.tok(f.span, "flag"),
                            PacketOpt::On(i) => self.tok(i.span, "name"),
                            PacketOpt::Type(e)
                            | PacketOpt::Code(e)
                            | PacketOpt::Ttl(e)
                            | PacketOpt::Len(e) => self.expr(e, false),
                        }
                    }
                    self.tok(p.verdict.kind.span, "verdict");
                    if let Some(a) = &p.verdict.arg {
                        self.tok(a.span, "name");
                    }
                }
            }
        }
    }
}

/// Every token of a policy with its kind: the parser's tokens, the comments, and
/// the words left over, which must be keywords.
fn tokens(path: &str) -> (String, Vec<Tok>) {
    let src = std::fs::read_to_string(root().join(path)).expect("the policy reads");
    let a = lbp_lang::analyze(&src);
    assert!(!a.has_errors(), "{path} does not check clean");
    let mut w = Walk {
        src: &src,
        toks: Vec::new(),
        covered: Vec::new(),
    };
    for item in &a.policy.items {
        w.item(item);
    }
    for c in &a.comments {
        w.tok(*c, "comment");
    }
    let mut covered: Vec<(usize, usize)> = w.toks.iter().map(|t| (t.start, t.end)).collect();
    covered.extend(w.covered.iter().copied());
    let keywords: BTreeSet<&str> = vocab::ITEM_KEYWORDS
        .iter()
        .chain(vocab::STATEMENT_KEYWORDS)
        .chain(vocab::BACKEND_OPTIONS)
        .chain(vocab::HEALTH_OPTIONS)
        .chain(vocab::PACKET_OPTIONS)
        .copied()
        .collect();
    let bytes = src.as_bytes();
    let mut i = 0;
    let mut leftover = Vec::new();
    while i < bytes.len() {
        if let Some(&(_, end)) = covered.iter().find(|(s, e)| *s <= i && i < *e) {
            i = end;
            continue;
        }
        let c = bytes[i];
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let word = &src[start..i];
            assert!(
                keywords.contains(word),
                "{path}: `{word}` at byte {start} is neither a keyword nor in the tree"
            );
            leftover.push(Tok {
                start,
                end: i,
                kind: "keyword".into(),
            });
        } else {
            i += 1;
        }
    }
    let mut toks = w.toks;
    toks.extend(leftover);
    toks.sort_by_key(|t| t.start);
    (src, toks)
}

/// The files the editor tests check: the stock policies, and a file with the
/// kinds of token they lack (MACs, hexadecimal numbers, booleans, set types...).
fn checked_files() -> Vec<String> {
    let mut v = files("policies", "lbp");
    v.push("editors/test/every-token.lbp".into());
    v
}

/// (line, column) of a byte offset, both from 0, the column in UTF-16 units (for
/// JavaScript) and in bytes (for Vim).
fn position(src: &str, at: usize) -> (usize, usize, usize) {
    let line_start = src[..at].rfind('\n').map_or(0, |n| n + 1);
    let line = src[..at].matches('\n').count();
    let utf16 = src[line_start..at].encode_utf16().count();
    (line, utf16, at - line_start)
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The checked-in generated files are what `lbp editors generate` writes.
#[test]
fn generated_files_are_in_sync() {
    let dir = tempfile::tempdir().unwrap();
    let out = lbp(&["editors", "generate", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let mut compared = 0;
    for rel in walk(dir.path()) {
        let generated = std::fs::read_to_string(dir.path().join(&rel)).unwrap();
        let path = Path::new("editors").join(&rel);
        let checked_in = std::fs::read_to_string(root().join(&path)).unwrap_or_default();
        if generated != checked_in {
            let (n, (a, b)) = checked_in
                .lines()
                .chain(std::iter::repeat(""))
                .zip(generated.lines().chain(std::iter::repeat("")))
                .enumerate()
                .find(|(_, (a, b))| a != b)
                .expect("two different texts differ on some line");
            panic!(
                "{} is not what `lbp editors generate` gives (the language's tables changed, or \
                 the file was edited by hand): line {}\n  checked in: {a}\n  generated:  {b}\n\
                 run `cargo run -- editors generate` and commit the result",
                path.display(),
                n + 1
            );
        }
        compared += 1;
    }
    assert_eq!(compared, 3, "the generated files");
    let check = lbp(&["editors", "generate", "--check"]);
    assert!(check.status.success(), "{check:?}");
    // `--check` finds a file edited by hand, and writes nothing.
    let vim = dir.path().join("vim/syntax/lbp.vim");
    let edited = std::fs::read_to_string(&vim)
        .unwrap()
        .replace("maglev|", "");
    std::fs::write(&vim, &edited).unwrap();
    let tmp = dir.path().to_str().unwrap();
    let check = lbp(&["editors", "generate", "--check", tmp]);
    assert_eq!(check.status.code(), Some(1), "{check:?}");
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(stdout.contains("vim/syntax/lbp.vim: differs"), "{stdout}");
    assert_eq!(std::fs::read_to_string(&vim).unwrap(), edited);
}

/// The files under `dir`, as paths relative to it, sorted.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = std::path::PathBuf::from(p.file_name().unwrap());
        if p.is_dir() {
            v.extend(walk(&p).into_iter().map(|q| name.join(q)));
        } else {
            v.push(name);
        }
    }
    v.sort();
    v
}

/// The TextMate grammar scopes every token of every stock policy as its kind
/// (`editors/vscode/test/tokenize.js`, on vscode-textmate and vscode-oniguruma
/// as VS Code uses them).
#[test]
fn textmate_grammar_scopes_every_token() {
    let vscode = root().join("editors/vscode");
    if !have("node") {
        return skip(
            "textmate_grammar_scopes_every_token",
            "node is not installed",
        );
    }
    if !vscode.join("node_modules/vscode-textmate").is_dir() {
        return skip(
            "textmate_grammar_scopes_every_token",
            "the npm packages are not installed: run `npm ci` in editors/vscode",
        );
    }
    let mut files_json = Vec::new();
    let policies = checked_files();
    for path in &policies {
        let (src, toks) = tokens(path);
        let toks: Vec<serde_json::Value> = toks
            .iter()
            .map(|t| {
                let (line, start, _) = position(&src, t.start);
                let (end_line, end, _) = position(&src, t.end);
                assert_eq!(line, end_line, "{path}: a token on two lines: {t:?}");
                serde_json::json!({
                    "line": line, "start": start, "end": end,
                    "kind": t.kind, "text": &src[t.start..t.end],
                })
            })
            .collect();
        files_json.push(serde_json::json!({
            "path": root().join(path), "tokens": toks,
        }));
    }
    let dir = tempfile::tempdir().unwrap();
    let expect = dir.path().join("expect.json");
    std::fs::write(
        &expect,
        serde_json::json!({ "files": files_json }).to_string(),
    )
    .unwrap();
    let out = Command::new("node")
        .arg("test/tokenize.js")
        .arg(&expect)
        .current_dir(&vscode)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the TextMate grammar test failed");
    let summary = format!("{} files,", policies.len());
    assert!(stdout.contains(&summary), "{stdout}");
}

/// `vsce package` accepts the extension, and packs the grammar, the language
/// configuration, the client and its run-time dependency, not the tests.
#[test]
fn vsce_packages_the_extension() {
    let vscode = root().join("editors/vscode");
    if !have("node") {
        return skip("vsce_packages_the_extension", "node is not installed");
    }
    let vsce = vscode.join("node_modules/.bin/vsce");
    if !vsce.exists() {
        return skip(
            "vsce_packages_the_extension",
            "the npm packages are not installed: run `npm ci` in editors/vscode",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let vsix = dir.path().join("lbp.vsix");
    let out = Command::new(&vsce)
        .args([
            "package",
            "--skip-license",
            "--allow-missing-repository",
            "--out",
        ])
        .arg(&vsix)
        .current_dir(&vscode)
        .output()
        .expect("vsce runs");
    assert!(out.status.success(), "vsce package failed: {out:?}");
    assert!(vsix.metadata().unwrap().len() > 0);
    let ls = Command::new(&vsce)
        .arg("ls")
        .current_dir(&vscode)
        .output()
        .expect("vsce runs");
    assert!(ls.status.success(), "vsce ls failed: {ls:?}");
    let listed = String::from_utf8_lossy(&ls.stdout);
    for f in [
        "package.json",
        "extension.js",
        "language-configuration.json",
        "syntaxes/lbp.tmLanguage.json",
        "node_modules/vscode-languageclient/package.json",
    ] {
        assert!(listed.lines().any(|l| l == f), "{f} not packed:\n{listed}");
    }
    assert!(
        !listed
            .lines()
            .any(|l| l.starts_with("test/") || l.contains("vscode-textmate")),
        "test files packed:\n{listed}"
    );
}

/// The Vim group each kind of token must have.
fn vim_groups(kind: &str) -> &'static [&'static str] {
    match kind {
        "comment" => &["lbpComment"],
        "string" => &["lbpString"],
        "field" => &["lbpField"],
        "ipv4" | "ipv6" => &["lbpAddress"],
        "prefix4" | "prefix6" => &["lbpPrefix"],
        "mac" => &["lbpMac"],
        "integer" | "float" => &["lbpNumber"],
        "duration" => &["lbpDuration"],
        "range" => &["lbpRange"],
        "boolean" => &["lbpBoolean"],
        "action" | "verdict" => &["lbpAction"],
        "algorithm" => &["lbpAlgorithm"],
        "mode" => &["lbpMode"],
        "policy" => &["lbpPolicy"],
        "protocol" => &["lbpProtocol"],
        "health" => &["lbpHealth"],
        "flag" => &["lbpFlag"],
        "input" => &["lbpInput"],
        "keyword" => &["lbpItem", "lbpKeyword", "lbpOperator"],
        "decl:test" => &["lbpTestName"],
        "settype" => &["lbpSetType"],
        k if k.starts_with("decl:") => &["lbpDecl"],
        // A reference to a name: anything but a word of the language (checked
        // with the list below).
        _ => &[],
    }
}

/// Groups that a name must not have.
const VIM_WORD_GROUPS: &[&str] = &[
    "lbpItem",
    "lbpKeyword",
    "lbpAction",
    "lbpAlgorithm",
    "lbpMode",
    "lbpPolicy",
    "lbpProtocol",
    "lbpHealth",
    "lbpFlag",
    "lbpBoolean",
];

/// Vim, headless, with `editors/vim` on its runtime path: every stock policy is
/// detected as `lbp`, gets `# %s` as its comment string, keeps its indentation
/// when re-indented (`gg=G`), and the first and last character of every token
/// has its kind's highlight group.
#[test]
fn vim_highlights_every_token() {
    if !have("vim") {
        return skip("vim_highlights_every_token", "vim is not installed");
    }
    vim_check("vim", &["--not-a-term"]);
}

/// The same in Neovim (Debian's, headless): the Vim files are Neovim's too.
#[test]
fn neovim_highlights_every_token() {
    if !have("nvim") {
        return skip("neovim_highlights_every_token", "nvim is not installed");
    }
    vim_check("nvim", &[]);
}

/// Run the checks of `vim_highlights_every_token` in `program` (vim or nvim).
fn vim_check(program: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let result = dir.path().join("result");
    let mut script = String::from(
        "let s:fails = []\n\
         let s:checked = 0\n\
         function! s:Check(l, c, kind, groups, text) abort\n\
         \x20 let g = synIDattr(synID(a:l, a:c, 1), 'name')\n\
         \x20 let s:checked += 1\n\
         \x20 let bad = a:kind ==# 'name' ? index(a:groups, g) >= 0 : index(a:groups, g) < 0\n\
         \x20 if bad\n\
         \x20   call add(s:fails, printf('%s:%d:%d: `%s` (%s) is highlighted %s', expand('%'), a:l, a:c, a:text, a:kind, empty(g) ? '(nothing)' : g))\n\
         \x20 endif\n\
         endfunction\n",
    );
    let mut tokens_checked = 0;
    for path in checked_files() {
        let (src, toks) = tokens(&path);
        script.push_str(&format!("edit {path}\n"));
        script.push_str(
            "if &filetype !=# 'lbp' | call add(s:fails, expand('%') . ': filetype ' . &filetype) | endif\n\
             if &commentstring !=# '# %s' | call add(s:fails, expand('%') . ': commentstring ' . &commentstring) | endif\n\
             let s:before = getline(1, '$')\n\
             normal! gg=G\n\
             let s:after = getline(1, '$')\n\
             for s:i in range(len(s:before))\n\
             \x20 if s:before[s:i] !=# s:after[s:i]\n\
             \x20   call add(s:fails, printf('%s:%d: re-indented to `%s`', expand('%'), s:i + 1, s:after[s:i]))\n\
             \x20 endif\n\
             endfor\n\
             edit!\n",
        );
        for t in &toks {
            let groups = match t.kind.as_str() {
                "name" => VIM_WORD_GROUPS,
                k => vim_groups(k),
            };
            let list = groups
                .iter()
                .map(|g| format!("'{g}'"))
                .collect::<Vec<_>>()
                .join(",");
            let text = src[t.start..t.end].replace('\'', "''");
            let text: String = text.chars().take(40).collect();
            // The first and the last byte of the token (Vim's columns count bytes,
            // from 1).
            for at in [t.start, t.end - 1] {
                let (line, _, col) = position(&src, at);
                script.push_str(&format!(
                    "call s:Check({}, {}, '{}', [{list}], '{text}')\n",
                    line + 1,
                    col + 1,
                    t.kind
                ));
            }
            tokens_checked += 1;
        }
    }
    script.push_str(&format!(
        "call writefile(s:fails + ['checked ' . s:checked], '{}')\nqa!\n",
        result.display()
    ));
    let script_path = dir.path().join("check.vim");
    std::fs::write(&script_path, script).unwrap();
    let rtp = root().join("editors/vim");
    let out = Command::new(program)
        .args(["-Es", "-N", "-u", "NONE", "-i", "NONE"])
        .args(extra)
        .arg("--cmd")
        .arg(format!("set rtp^={}", rtp.display()))
        .args(["--cmd", "filetype plugin indent on", "--cmd", "syntax on"])
        .arg("-S")
        .arg(&script_path)
        .current_dir(root())
        .output()
        .expect("vim runs");
    let report = std::fs::read_to_string(&result).unwrap_or_else(|_| {
        panic!(
            "{program} wrote no result: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let lines: Vec<&str> = report.lines().collect();
    let (summary, fails) = lines.split_last().expect("a summary line");
    eprintln!("{program}: {tokens_checked} tokens, {summary} positions");
    assert!(
        fails.is_empty(),
        "{} failures:\n{}",
        fails.len(),
        fails.join("\n")
    );
    assert_eq!(*summary, format!("checked {}", 2 * tokens_checked));
}

/// The Emacs faces each kind of token may have.
fn emacs_faces(kind: &str) -> &'static str {
    match kind {
        "comment" => "font-lock-comment-face font-lock-comment-delimiter-face",
        "string" => "font-lock-string-face",
        "field" | "input" => "font-lock-variable-name-face",
        "ipv4" | "ipv6" | "prefix4" | "prefix6" | "mac" | "integer" | "float" | "duration"
        | "range" | "boolean" => "font-lock-constant-face",
        "action" | "verdict" | "algorithm" | "mode" | "policy" | "health" => {
            "font-lock-builtin-face"
        }
        "protocol" | "settype" => "font-lock-type-face",
        "flag" => "font-lock-preprocessor-face",
        "keyword" => "font-lock-keyword-face",
        k if k.starts_with("decl:") => "font-lock-function-name-face",
        // A reference to a name: none of the faces of the language's words.
        _ => {
            "font-lock-keyword-face font-lock-builtin-face font-lock-type-face \
             font-lock-preprocessor-face font-lock-constant-face"
        }
    }
}

/// An Emacs Lisp string literal.
fn elisp_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Emacs in batch mode, with `lbp-mode.el` loaded: every stock policy opens in
/// `lbp-mode` with `#` comments, keeps its indentation when re-indented, and the
/// first and last character of every token has its kind's face.
#[test]
fn emacs_fontifies_every_token() {
    if !have("emacs") {
        return skip("emacs_fontifies_every_token", "emacs is not installed");
    }
    let dir = tempfile::tempdir().unwrap();
    let result = dir.path().join("result");
    let mut script = String::from(
        "(require 'seq)\n\
         (defvar lbp-test-fails nil)\n\
         (defvar lbp-test-checked 0)\n\
         (defun lbp-test-check (pos kind faces text)\n\
         \x20 (let* ((f (get-text-property pos 'face))\n\
         \x20        (hit (seq-some (lambda (x) (memq x faces)) (if (listp f) f (list f))))\n\
         \x20        (name (equal kind \"name\")))\n\
         \x20   (setq lbp-test-checked (1+ lbp-test-checked))\n\
         \x20   (when (if name hit (not hit))\n\
         \x20     (push (format \"%s:%d: `%s' (%s) has face %S\" (buffer-file-name)\n\
         \x20                   (line-number-at-pos pos) text kind f)\n\
         \x20           lbp-test-fails))))\n",
    );
    let mut tokens_checked = 0;
    for path in checked_files() {
        let (src, toks) = tokens(&path);
        script.push_str(&format!(
            "(find-file {})\n\
             (unless (eq major-mode 'lbp-mode) (push (format \"%s: %s\" (buffer-file-name) major-mode) lbp-test-fails))\n\
             (unless (equal comment-start \"# \") (push (format \"%s: comment-start %S\" (buffer-file-name) comment-start) lbp-test-fails))\n\
             (font-lock-mode 1)\n\
             (font-lock-ensure)\n",
            elisp_string(&root().join(&path).to_string_lossy())
        ));
        for t in &toks {
            let text: String = src[t.start..t.end].chars().take(40).collect();
            for at in [t.start, t.end - 1] {
                let pos = src[..at].chars().count() + 1;
                script.push_str(&format!(
                    "(lbp-test-check {pos} {} '({}) {})\n",
                    elisp_string(&t.kind),
                    emacs_faces(&t.kind),
                    elisp_string(&text)
                ));
            }
            tokens_checked += 1;
        }
        script.push_str(
            "(let ((before (buffer-string)))\n\
             \x20 (indent-region (point-min) (point-max))\n\
             \x20 (unless (equal before (buffer-string))\n\
             \x20   (push (format \"%s: re-indenting changes it\" (buffer-file-name)) lbp-test-fails)))\n\
             (set-buffer-modified-p nil)\n\
             (kill-buffer)\n",
        );
    }
    script.push_str(&format!(
        "(with-temp-file {}\n\
         \x20 (dolist (f (reverse lbp-test-fails)) (insert f \"\\n\"))\n\
         \x20 (insert (format \"checked %d\\n\" lbp-test-checked)))\n",
        elisp_string(&result.to_string_lossy())
    ));
    let script_path = dir.path().join("check.el");
    std::fs::write(&script_path, script).unwrap();
    let out = Command::new("emacs")
        .args(["--batch", "-Q", "-l"])
        .arg(root().join("editors/emacs/lbp-mode.el"))
        .arg("-l")
        .arg(&script_path)
        .current_dir(root())
        .output()
        .expect("emacs runs");
    let report = std::fs::read_to_string(&result).unwrap_or_else(|_| {
        panic!(
            "emacs wrote no result: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let lines: Vec<&str> = report.lines().collect();
    let (summary, fails) = lines.split_last().expect("a summary line");
    eprintln!("emacs: {tokens_checked} tokens, {summary} positions");
    assert!(
        fails.is_empty(),
        "{} failures:\n{}",
        fails.len(),
        fails.join("\n")
    );
    assert_eq!(*summary, format!("checked {}", 2 * tokens_checked));
}
