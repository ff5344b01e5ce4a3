//! `lbp lsp`: a language server for `.lbp` policies over standard input and
//! output (the Language Server Protocol, on the `lsp-server` and `lsp-types`
//! crates).
//!
//! It keeps the text of each open document (full sync), checks it with
//! `lbp_lang::analyze` and publishes its diagnostics as `lbp check --format
//! json` reports them (same codes, messages and places, columns in UTF-16 code
//! units), and answers completion, hover, go to definition, references, the
//! outline, formatting (`lbp fmt`'s formatter) and quick fixes for the
//! diagnostics whose help says "did you mean". Edits arriving faster than a
//! check are coalesced: a document is checked when no message is waiting, or
//! when a request needs it.
//!
//! Nothing a client sends stops the server but `exit`: a message that is not
//! JSON or not JSON-RPC gets the protocol's error (`transport`), a request with
//! bad parameters or an unknown method gets an error response, and a panic in a
//! handler becomes an internal error for that request alone.

mod features;
mod transport;

use super::common::{Columns, place, position};
use lbp_lang::diag::LineIndex;
use lbp_runtime::app::Registry;
use lsp_server::{ErrorCode, Message, Notification, Request, Response, ResponseError};
use lsp_types::notification::{self as notif, Notification as _};
use lsp_types::request::{self as req, Request as _};
use lsp_types::{Position, Range, Uri};
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;

/// Arguments of `lbp lsp`.
#[derive(clap::Args, Debug)]
pub struct LspArgs {
    /// Talk over standard input and output (the only transport; accepted
    /// because editors' clients pass it).
    #[arg(long)]
    stdio: bool,
}

pub fn run(args: LspArgs, apps: &Registry) -> Result<ExitCode, String> {
    let _ = args.stdio;
    let (conn, io) = transport::stdio();
    let server = Server {
        apps: Arc::from(apps.names()),
        ..Server::default()
    };
    let code = server.serve(&conn);
    drop(conn);
    io.join();
    Ok(code)
}

/// One open document: its text and what checking it found.
struct Doc {
    text: String,
    version: i32,
    lines: LineIndex,
    /// What checking found; out of date while `stale`.
    analysis: lbp_lang::Analysis,
    stale: bool,
    /// The applications `app NAME` may name (the server's registry).
    apps: Arc<[&'static str]>,
}

impl Doc {
    fn new(text: String, version: i32) -> Doc {
        Doc {
            lines: LineIndex::new(&text),
            text,
            version,
            analysis: lbp_lang::Analysis {
                policy: Default::default(),
                comments: Vec::new(),
                diagnostics: Vec::new(),
            },
            stale: true,
            apps: Arc::from(lbp_lang::check::APPLICATIONS),
        }
    }

    /// Check the text if it changed since the last check.
    fn refresh(&mut self) {
        if self.stale {
            self.analysis = lbp_lang::analyze_with(&self.text, &self.apps);
            self.stale = false;
        }
    }

    /// The LSP position (0-based line, UTF-16 column) of byte `offset`.
    fn position(&self, offset: usize) -> Position {
        let (line, col) = position(&self.lines, &self.text, offset, Columns::Utf16);
        Position::new(to_u32(line - 1), to_u32(col - 1))
    }

    fn range(&self, span: lbp_lang::ast::Span) -> Range {
        Range::new(self.position(span.start), self.position(span.end))
    }

    /// The byte offset of an LSP position; a line past the end is the end of
    /// the text, a column past the end of its line is the end of the line.
    fn offset(&self, p: Position) -> usize {
        let line = p.line as usize;
        if line >= self.lines.lines() {
            return self.text.len();
        }
        let range = self.lines.line_range(line);
        let mut units = 0;
        for (i, c) in self.text[range.clone()].char_indices() {
            if units >= p.character as usize {
                return range.start + i;
            }
            units += c.len_utf16();
        }
        range.end
    }

    /// Apply one change of `didChange`: the whole text, or a range replaced.
    fn change(&mut self, range: Option<Range>, text: String) {
        match range {
            None => self.text = text,
            Some(r) => {
                let start = self.offset(r.start);
                let end = self.offset(r.end).max(start);
                self.text.replace_range(start..end, &text);
            }
        }
        self.lines = LineIndex::new(&self.text);
        self.stale = true;
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[derive(Default, PartialEq)]
enum State {
    #[default]
    Uninitialized,
    Running,
    ShutDown,
}

struct Server {
    state: State,
    docs: HashMap<String, (Uri, Doc)>,
    /// Documents changed and not yet checked and published.
    dirty: Vec<String>,
    /// The applications the documents' `app NAME` may name.
    apps: Arc<[&'static str]>,
}

impl Default for Server {
    /// A server whose documents may name the built-in applications.
    fn default() -> Server {
        Server {
            state: State::default(),
            docs: HashMap::new(),
            dirty: Vec::new(),
            apps: Arc::from(lbp_lang::check::APPLICATIONS),
        }
    }
}

impl Server {
    /// Serve until `exit` (exit code 0 after `shutdown`, else 1) or the end of
    /// the input.
    fn serve(mut self, conn: &lsp_server::Connection) -> ExitCode {
        loop {
            if !self.dirty.is_empty() && conn.receiver.is_empty() {
                self.publish_dirty(conn);
                continue;
            }
            let Ok(msg) = conn.receiver.recv() else {
                return ExitCode::FAILURE;
            };
            match msg {
                Message::Request(r) => {
                    let response = self.request(r);
                    let _ = conn.sender.send(response.into());
                }
                Message::Notification(n) if n.method == notif::Exit::METHOD => {
                    return if self.state == State::ShutDown {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    };
                }
                Message::Notification(n) => self.notification(n, conn),
                Message::Response(_) => {}
            }
        }
    }

    fn request(&mut self, r: Request) -> Response {
        let id = r.id.clone();
        let method = r.method.clone();
        // A panic in a handler fails its request, not the server.
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.answer(r)));
        match answer {
            Ok(Ok(value)) => Response {
                id,
                response_result: Ok(value),
            },
            Ok(Err(e)) => Response {
                id,
                response_result: Err(e),
            },
            Err(_) => error(
                id,
                ErrorCode::InternalError,
                format!("lbp lsp failed on `{method}`"),
            ),
        }
    }

    fn answer(&mut self, r: Request) -> Result<serde_json::Value, ResponseError> {
        match (&self.state, r.method.as_str()) {
            (State::Uninitialized, req::Initialize::METHOD) => {
                self.state = State::Running;
                return to_value(features::initialize());
            }
            (State::Uninitialized, _) => {
                return Err(fail(
                    ErrorCode::ServerNotInitialized,
                    "the server is not initialized yet".into(),
                ));
            }
            (State::ShutDown, _) => {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    "the server is shut down; only `exit` is expected".into(),
                ));
            }
            (State::Running, req::Initialize::METHOD) => {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    "the server is already initialized".into(),
                ));
            }
            (State::Running, req::Shutdown::METHOD) => {
                self.state = State::ShutDown;
                return Ok(serde_json::Value::Null);
            }
            (State::Running, _) => {}
        }
        let params = r.params;
        match r.method.as_str() {
            req::Completion::METHOD => self.on::<req::Completion>(params, features::completion),
            req::HoverRequest::METHOD => self.on::<req::HoverRequest>(params, features::hover),
            req::GotoDefinition::METHOD => {
                self.on::<req::GotoDefinition>(params, features::definition)
            }
            req::References::METHOD => self.on::<req::References>(params, features::references),
            req::DocumentSymbolRequest::METHOD => {
                self.on::<req::DocumentSymbolRequest>(params, features::symbols)
            }
            req::Formatting::METHOD => self.on::<req::Formatting>(params, features::formatting),
            req::CodeActionRequest::METHOD => {
                self.on::<req::CodeActionRequest>(params, features::code_actions)
            }
            other => Err(fail(
                ErrorCode::MethodNotFound,
                format!("lbp lsp has no method `{other}`"),
            )),
        }
    }

    /// Decode a request's parameters, find its document and answer with `f`.
    fn on<R>(
        &mut self,
        params: serde_json::Value,
        f: Handler<R>,
    ) -> Result<serde_json::Value, ResponseError>
    where
        R: req::Request,
        R::Params: DocParams,
    {
        let params: R::Params = serde_json::from_value(params).map_err(|e| {
            fail(
                ErrorCode::InvalidParams,
                format!("invalid parameters of `{}`: {e}", R::METHOD),
            )
        })?;
        let key = params.uri().as_str().to_string();
        let Some((uri, doc)) = self.docs.get_mut(&key) else {
            return Err(fail(ErrorCode::InvalidParams, format!("{key} is not open")));
        };
        doc.refresh();
        to_value(f(uri, doc, params)?)
    }

    fn notification(&mut self, n: Notification, conn: &lsp_server::Connection) {
        if self.state != State::Running {
            return;
        }
        let method = n.method.clone();
        let done = match method.as_str() {
            notif::DidOpenTextDocument::METHOD => {
                serde_json::from_value(n.params).map(|p: lsp_types::DidOpenTextDocumentParams| {
                    let key = p.text_document.uri.as_str().to_string();
                    let mut doc = Doc::new(p.text_document.text, p.text_document.version);
                    doc.apps = Arc::clone(&self.apps);
                    self.docs.insert(key.clone(), (p.text_document.uri, doc));
                    self.mark(key);
                })
            }
            notif::DidChangeTextDocument::METHOD => {
                serde_json::from_value(n.params).map(|p: lsp_types::DidChangeTextDocumentParams| {
                    let key = p.text_document.uri.as_str().to_string();
                    if let Some((_, doc)) = self.docs.get_mut(&key) {
                        for c in p.content_changes {
                            doc.change(c.range, c.text);
                        }
                        doc.version = p.text_document.version;
                        self.mark(key);
                    }
                })
            }
            notif::DidCloseTextDocument::METHOD => {
                serde_json::from_value(n.params).map(|p: lsp_types::DidCloseTextDocumentParams| {
                    let key = p.text_document.uri.as_str().to_string();
                    self.dirty.retain(|k| *k != key);
                    if self.docs.remove(&key).is_some() {
                        publish(conn, p.text_document.uri, Vec::new(), None);
                    }
                })
            }
            _ => Ok(()),
        };
        if let Err(e) = done {
            let params = lsp_types::LogMessageParams {
                typ: lsp_types::MessageType::ERROR,
                message: format!("lbp lsp: invalid parameters of `{method}`: {e}"),
            };
            let n = Notification::new(notif::LogMessage::METHOD.into(), params);
            let _ = conn.sender.send(n.into());
        }
    }

    fn mark(&mut self, key: String) {
        if !self.dirty.contains(&key) {
            self.dirty.push(key);
        }
    }

    /// Check every changed document and publish its diagnostics.
    fn publish_dirty(&mut self, conn: &lsp_server::Connection) {
        for key in std::mem::take(&mut self.dirty) {
            if let Some((uri, doc)) = self.docs.get_mut(&key) {
                let diags = diagnostics(uri, doc);
                publish(conn, uri.clone(), diags, Some(doc.version));
            }
        }
    }
}

/// What answers request `R` about one document.
type Handler<R> = fn(
    &Uri,
    &Doc,
    <R as req::Request>::Params,
) -> Result<<R as req::Request>::Result, ResponseError>;

/// The parameters of a request about one document.
trait DocParams: serde::de::DeserializeOwned {
    fn uri(&self) -> &Uri;
}

/// `DocParams` for each request type, by the path of its document's URI.
macro_rules! doc_params {
    ($($t:ty => $($field:ident).+;)*) => {$(
        impl DocParams for $t {
            fn uri(&self) -> &Uri {
                &self.$($field).+.uri
            }
        }
    )*};
}

doc_params! {
    lsp_types::CompletionParams => text_document_position.text_document;
    lsp_types::HoverParams => text_document_position_params.text_document;
    lsp_types::GotoDefinitionParams => text_document_position_params.text_document;
    lsp_types::ReferenceParams => text_document_position.text_document;
    lsp_types::DocumentSymbolParams => text_document;
    lsp_types::DocumentFormattingParams => text_document;
    lsp_types::CodeActionParams => text_document;
}

fn publish(
    conn: &lsp_server::Connection,
    uri: Uri,
    diagnostics: Vec<lsp_types::Diagnostic>,
    version: Option<i32>,
) {
    let params = lsp_types::PublishDiagnosticsParams {
        uri,
        diagnostics,
        version,
    };
    let n = Notification::new(notif::PublishDiagnostics::METHOD.into(), params);
    let _ = conn.sender.send(n.into());
}

/// A document's diagnostics as `lbp check --format json` places them
/// (`common::place`), in UTF-16 columns. A label beyond the first is related
/// information; the help is too, at the diagnostic's own place.
fn diagnostics(uri: &Uri, doc: &mut Doc) -> Vec<lsp_types::Diagnostic> {
    doc.refresh();
    doc.analysis
        .diagnostics
        .iter()
        .map(|d| lsp_diagnostic(uri, doc, d))
        .collect()
}

fn lsp_diagnostic(uri: &Uri, doc: &Doc, d: &lbp_lang::Diagnostic) -> lsp_types::Diagnostic {
    let placed = place(&doc.lines, &doc.text, d, Columns::Utf16);
    let lsp = |(line, col): (usize, usize)| Position::new(to_u32(line - 1), to_u32(col - 1));
    let range = Range::new(lsp(placed.start), lsp(placed.end));
    let mut related: Vec<lsp_types::DiagnosticRelatedInformation> = d
        .labels
        .iter()
        .skip(1)
        .map(|l| lsp_types::DiagnosticRelatedInformation {
            location: lsp_types::Location::new(uri.clone(), doc.range(l.span)),
            message: l.message.clone(),
        })
        .collect();
    if let Some(help) = &d.help {
        related.push(lsp_types::DiagnosticRelatedInformation {
            location: lsp_types::Location::new(uri.clone(), range),
            message: format!("help: {help}"),
        });
    }
    lsp_types::Diagnostic {
        range,
        severity: Some(match d.severity {
            lbp_lang::Severity::Error => lsp_types::DiagnosticSeverity::ERROR,
            lbp_lang::Severity::Warning => lsp_types::DiagnosticSeverity::WARNING,
        }),
        code: Some(lsp_types::NumberOrString::String(d.code.to_string())),
        source: Some("lbp".into()),
        message: d.message.clone(),
        related_information: (!related.is_empty()).then_some(related),
        ..Default::default()
    }
}

fn to_value<T: serde::Serialize>(v: T) -> Result<serde_json::Value, ResponseError> {
    serde_json::to_value(v).map_err(|e| fail(ErrorCode::InternalError, e.to_string()))
}

fn fail(code: ErrorCode, message: String) -> ResponseError {
    ResponseError {
        code: code as i32,
        message,
        data: None,
    }
}

fn error(id: lsp_server::RequestId, code: ErrorCode, message: String) -> Response {
    Response {
        id,
        response_result: Err(fail(code, message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A document checks against the server's applications: `app dns` is
    /// unknown with the built-in ones and clean with a registry that has it.
    #[test]
    fn documents_know_the_registered_applications() {
        let text =
            "interface a { address 198.18.0.1/24 }\nfilter {\n    udp.dport == 53 => app dns\n}\n";
        let codes = |apps: &[&'static str]| {
            let mut doc = Doc::new(text.to_string(), 0);
            doc.apps = Arc::from(apps);
            doc.refresh();
            doc.analysis
                .diagnostics
                .iter()
                .map(|d| d.code)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            codes(lbp_lang::check::APPLICATIONS),
            ["lbp::name::unknown_app"]
        );
        assert!(codes(&["echo", "icmp", "dns"]).is_empty());
        assert_eq!(
            &*Server::default().apps,
            lbp_lang::check::APPLICATIONS,
            "the lbp binary's server knows the built-in ones"
        );
    }

    /// Offsets and LSP positions convert both ways on text with characters of
    /// one, two, three and four bytes (the last two UTF-16 units); a position
    /// past a line's end or past the last line is clamped.
    #[test]
    fn positions_are_utf16() {
        let text = "ab\né€\u{1F600}x\n\nlast";
        let doc = Doc::new(text.to_string(), 0);
        for (offset, _) in text.char_indices().chain([(text.len(), ' ')]) {
            let p = doc.position(offset);
            assert_eq!(doc.offset(p), offset, "{offset} at {p:?}");
        }
        let x = text.find('x').unwrap();
        assert_eq!(doc.position(x), Position::new(1, 4));
        assert_eq!(
            doc.offset(Position::new(1, 99)),
            text.find("x\n").unwrap() + 1
        );
        assert_eq!(doc.offset(Position::new(9, 0)), text.len());
        assert_eq!(doc.position(text.len()), Position::new(3, 4));
    }

    /// A ranged change replaces the range, in UTF-16 positions.
    #[test]
    fn ranged_changes_apply() {
        let mut doc = Doc::new("a\u{1F600}b\nc".to_string(), 0);
        doc.change(
            Some(Range::new(Position::new(0, 1), Position::new(0, 3))),
            "-".into(),
        );
        assert_eq!(doc.text, "a-b\nc");
        doc.change(None, "new".into());
        assert_eq!(doc.text, "new");
        assert!(doc.stale);
    }
}

#[cfg(test)]
mod hostile {
    use super::*;
    use serde_json::json;

    fn params<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("well-formed parameters")
    }

    /// Every request at every position of texts written to break things
    /// (unclosed blocks, deep nesting, a long line, CRLF, astral characters,
    /// NUL, a policy cut anywhere) answers without a panic; a panic would
    /// otherwise only show as an internal error of that request.
    #[test]
    fn every_request_anywhere_answers() {
        let stock = include_str!("../../../policies/web.lbp");
        let mut texts: Vec<String> = vec![
            String::new(),
            "filter {".into(),
            "filter { tcp.".into(),
            "set s = { 1, 2\npool p { backend 198.18.0.1 weight\nservice v { pool p balance s"
                .into(),
            format!(
                "filter {{ {}tcp.dport{} => drop }}",
                "(".repeat(60),
                ")".repeat(60)
            ),
            format!(
                "const x = 1\nfilter {{ {} => drop }}",
                "ip.src == x && ".repeat(2000)
            ),
            "interface a { address 198.18.0.1/24 }\r\nfilter {\r\n in.iface == a => drop\r\n}\r\n"
                .into(),
            "const \u{1F600} = \"\u{1F600}\u{0}\"\nfilter { \u{e9}.\u{1F600} => \u{1F600} }".into(),
            "\u{feff}test \"x\" { tcp a -> b => balance }".into(),
        ];
        for cut in (0..stock.len()).step_by(97) {
            if stock.is_char_boundary(cut) {
                texts.push(stock[..cut].to_string());
            }
        }
        let uri: Uri = "file:///x.lbp".parse().unwrap();
        for text in &texts {
            let mut doc = Doc::new(text.clone(), 0);
            doc.refresh();
            let _ = diagnostics(&uri, &mut doc);
            let lines = doc.lines.lines() as u32;
            let mut positions: Vec<Position> = text
                .char_indices()
                .map(|(i, _)| i)
                .chain([text.len()])
                .step_by(1 + text.len() / 400)
                .map(|o| doc.position(o))
                .collect();
            positions.extend([
                Position::new(lines, 0),
                Position::new(lines + 5, 7),
                Position::new(0, u32::MAX),
                Position::new(u32::MAX, u32::MAX),
            ]);
            let id = json!({"uri": uri.as_str()});
            let _ = features::symbols(&uri, &doc, params(json!({"textDocument": id})));
            let _ = features::formatting(
                &uri,
                &doc,
                params(
                    json!({"textDocument": id, "options": {"tabSize": 4, "insertSpaces": true}}),
                ),
            );
            for p in positions {
                let at = json!({"textDocument": id, "position": p});
                let _ = features::completion(&uri, &doc, params(at.clone())).unwrap();
                let _ = features::hover(&uri, &doc, params(at.clone())).unwrap();
                let _ = features::definition(&uri, &doc, params(at.clone())).unwrap();
                let mut refs = at.clone();
                refs["context"] = json!({"includeDeclaration": true});
                let _ = features::references(&uri, &doc, params(refs)).unwrap();
                let range = json!({"start": {"line": 0, "character": 0}, "end": p});
                let actions =
                    json!({"textDocument": id, "range": range, "context": {"diagnostics": []}});
                let _ = features::code_actions(&uri, &doc, params(actions)).unwrap();
            }
            doc.change(
                Some(Range::new(Position::new(lines + 3, 9), Position::new(0, 2))),
                "\u{1F600}".into(),
            );
            doc.refresh();
        }
    }
}
