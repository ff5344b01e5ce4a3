//! The answers of `lbp lsp` to requests about one document: completion,
//! hover, definition, references, the outline, formatting and quick fixes.
//! Names and fields are found with `lbp_lang::query`.

use super::{Doc, ErrorCode, ResponseError, fail, lsp_diagnostic};
use lbp_lang::ast::{Item, Span};
use lbp_lang::query::{self, DeclKind, Namespace, Use};
use lbp_lang::vocab::{
    ACTIONS, ALGORITHMS, FIELDS, HEALTH_KINDS, HEALTH_OPTIONS, ITEM_KEYWORDS, MODES,
    PACKET_OPTIONS, STATEMENT_KEYWORDS, TCP_FLAGS, UNKNOWN_POLICIES, VERDICTS,
};
use lsp_types::*;
use std::collections::HashMap;

pub fn initialize() -> InitializeResult {
    InitializeResult {
        capabilities: ServerCapabilities {
            position_encoding: Some(PositionEncodingKind::UTF16),
            text_document_sync: Some(TextDocumentSyncCapability::Options(
                TextDocumentSyncOptions {
                    open_close: Some(true),
                    change: Some(TextDocumentSyncKind::FULL),
                    ..Default::default()
                },
            )),
            completion_provider: Some(CompletionOptions {
                trigger_characters: Some(vec![".".into()]),
                ..Default::default()
            }),
            hover_provider: Some(HoverProviderCapability::Simple(true)),
            definition_provider: Some(OneOf::Left(true)),
            references_provider: Some(OneOf::Left(true)),
            document_symbol_provider: Some(OneOf::Left(true)),
            document_formatting_provider: Some(OneOf::Left(true)),
            code_action_provider: Some(CodeActionProviderCapability::Options(CodeActionOptions {
                code_action_kinds: Some(vec![CodeActionKind::QUICKFIX]),
                ..Default::default()
            })),
            ..Default::default()
        },
        server_info: Some(ServerInfo {
            name: "lbp".into(),
            version: Some(env!("CARGO_PKG_VERSION").into()),
        }),
    }
}

/// Completion: after `tcp.` (any field's first word and a dot) the fields of
/// that header; after `=>` the actions (verdicts in a test); after
/// `balance`, `pool`, `mode`, `unknown`, `dev`, `on` and `health` what may
/// follow them; else the keywords of the block the cursor is in, the declared
/// names and, in the filter, the fields and actions.
pub fn completion(
    _: &Uri,
    doc: &Doc,
    p: CompletionParams,
) -> Result<Option<CompletionResponse>, ResponseError> {
    let offset = doc.offset(p.text_document_position.position);
    let line = doc.lines.line_of(offset);
    let line_start = doc.lines.line_range(line).start;
    let before = &doc.text[line_start..offset];
    let word_start = before
        .char_indices()
        .rfind(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let word = &before[word_start..];
    let mut items = Vec::new();
    if let Some((group, _)) = word.split_once('.') {
        // The part after the dot is what an item replaces, whatever the
        // client takes for a word.
        let prefix = format!("{group}.");
        let after_dot = doc.range(Span::new(line_start + word_start + prefix.len(), offset));
        for f in FIELDS.iter().filter(|f| f.name.starts_with(&prefix)) {
            let mut item = field_item(f, &f.name[prefix.len()..]);
            item.text_edit = Some(CompletionTextEdit::Edit(TextEdit {
                range: after_dot,
                new_text: item.label.clone(),
            }));
            items.push(item);
        }
        return Ok(Some(CompletionResponse::Array(items)));
    }
    let block = enclosing_block(doc, line, word_start == 0 && before.len() == word.len());
    let previous = before[..word_start].split_whitespace().next_back();
    let analysis = &doc.analysis;
    let decls = query::declarations(&analysis.policy);
    let names = |ns: Namespace, items: &mut Vec<CompletionItem>| {
        for d in decls.iter().filter(|d| d.kind.namespace() == ns) {
            items.push(CompletionItem {
                label: d.name.to_string(),
                kind: Some(symbol_completion_kind(d.kind)),
                detail: Some(d.kind.keyword().into()),
                ..Default::default()
            });
        }
    };
    let words = |list: &[&str], kind: CompletionItemKind, items: &mut Vec<CompletionItem>| {
        for w in list {
            items.push(CompletionItem {
                label: (*w).into(),
                kind: Some(kind),
                ..Default::default()
            });
        }
    };
    match (previous, block) {
        (Some("=>"), Some("test")) => words(VERDICTS, CompletionItemKind::KEYWORD, &mut items),
        (Some("=>"), _) => words(ACTIONS, CompletionItemKind::KEYWORD, &mut items),
        (Some("balance"), Some("service")) => {
            words(ALGORITHMS, CompletionItemKind::ENUM_MEMBER, &mut items)
        }
        (Some("balance"), _) => names(Namespace::Service, &mut items),
        (Some("mode"), Some("service")) => {
            words(MODES, CompletionItemKind::ENUM_MEMBER, &mut items)
        }
        (Some("unknown"), Some("service")) => words(
            UNKNOWN_POLICIES,
            CompletionItemKind::ENUM_MEMBER,
            &mut items,
        ),
        (Some("pool"), Some("service")) => names(Namespace::Pool, &mut items),
        (Some("health"), Some("pool")) => {
            words(HEALTH_KINDS, CompletionItemKind::ENUM_MEMBER, &mut items)
        }
        (Some("dev" | "on"), _) => {
            for d in decls.iter().filter(|d| d.kind == DeclKind::Interface) {
                items.push(CompletionItem {
                    label: d.name.to_string(),
                    kind: Some(CompletionItemKind::INTERFACE),
                    detail: Some("interface".into()),
                    ..Default::default()
                });
            }
        }
        (None, None) => words(ITEM_KEYWORDS, CompletionItemKind::KEYWORD, &mut items),
        _ => {
            if block.is_some() {
                words(STATEMENT_KEYWORDS, CompletionItemKind::KEYWORD, &mut items);
            }
            match block {
                Some("pool") => words(HEALTH_OPTIONS, CompletionItemKind::KEYWORD, &mut items),
                Some("test") => {
                    words(PACKET_OPTIONS, CompletionItemKind::KEYWORD, &mut items);
                    words(TCP_FLAGS, CompletionItemKind::KEYWORD, &mut items);
                }
                _ => {}
            }
            if previous.is_none() && block.is_some() {
                words(ITEM_KEYWORDS, CompletionItemKind::KEYWORD, &mut items);
            }
            names(Namespace::Value, &mut items);
            if block == Some("filter") {
                for f in FIELDS {
                    items.push(field_item(f, f.name));
                }
                words(ACTIONS, CompletionItemKind::KEYWORD, &mut items);
            }
        }
    }
    Ok(Some(CompletionResponse::Array(items)))
}

fn field_item(f: &lbp_lang::check::FieldInfo, label: &str) -> CompletionItem {
    CompletionItem {
        label: label.into(),
        kind: Some(CompletionItemKind::FIELD),
        detail: Some(query::field_type(f)),
        documentation: query::field_meaning(f.name).map(|m| Documentation::String(m.into())),
        filter_text: Some(label.into()),
        ..Default::default()
    }
}

fn symbol_completion_kind(kind: DeclKind) -> CompletionItemKind {
    match kind {
        DeclKind::Interface => CompletionItemKind::INTERFACE,
        DeclKind::Const => CompletionItemKind::CONSTANT,
        DeclKind::Set => CompletionItemKind::VARIABLE,
        DeclKind::Pool => CompletionItemKind::STRUCT,
        DeclKind::Service => CompletionItemKind::MODULE,
    }
}

/// The item keyword of the block holding line `line`: the nearest line at or
/// above it that starts, in column 0, with an item keyword (the line itself
/// only when the cursor is past its first word). `None` at the top level.
fn enclosing_block(doc: &Doc, line: usize, at_first_word: bool) -> Option<&'static str> {
    let first = if at_first_word {
        line.checked_sub(1)?
    } else {
        line
    };
    for l in (0..=first).rev() {
        let text = &doc.text[doc.lines.line_range(l)];
        let word = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .next()
            .unwrap_or("");
        if let Some(k) = ITEM_KEYWORDS.iter().find(|k| **k == word) {
            // A one-line item (`const`, `set`, `route`) ends on its line.
            let block = text.contains('{') && !text.contains('}');
            return (block || l == line).then_some(*k);
        }
        if text.starts_with('}') {
            return None;
        }
    }
    None
}

/// Hover: a field's type and meaning; a declared name's kind and declaration.
pub fn hover(_: &Uri, doc: &Doc, p: HoverParams) -> Result<Option<Hover>, ResponseError> {
    let offset = doc.offset(p.text_document_position_params.position);
    let Names { decls, uses } = Names::of(doc);
    let Some(found) = query::at(&decls, &uses, offset) else {
        return Ok(None);
    };
    let span = span_at(&decls, &uses, offset);
    let text = match found {
        Use::Field(name) => {
            let Some(f) = lbp_lang::check::field(name) else {
                return Ok(None);
            };
            format!(
                "`{name}`: {}\n\n{}",
                query::field_type(f),
                query::field_meaning(name).unwrap_or("")
            )
        }
        Use::Name(ns, name) => match query::resolve(&decls, ns, name) {
            Some(d) => format!(
                "{} `{name}`\n\n```lbp\n{}\n```",
                d.kind.keyword(),
                excerpt(&doc.text, d.span)
            ),
            None => format!("`{name}` is not defined"),
        },
    };
    Ok(Some(Hover {
        contents: HoverContents::Markup(MarkupContent {
            kind: MarkupKind::Markdown,
            value: text,
        }),
        range: span.map(|s| doc.range(s)),
    }))
}

/// The span of the name or field at `offset`.
fn span_at(decls: &[query::Decl], uses: &[(Use, Span)], offset: usize) -> Option<Span> {
    let inside = |s: Span| s.start <= offset && offset <= s.end;
    decls
        .iter()
        .map(|d| d.name_span)
        .find(|s| inside(*s))
        .or_else(|| uses.iter().map(|u| u.1).find(|s| inside(*s)))
}

/// A declaration's text, at most 12 lines and 1 000 bytes of it.
fn excerpt(text: &str, span: Span) -> String {
    let item = text.get(span.start..span.end).unwrap_or("");
    let mut end = item.len().min(1000);
    while !item.is_char_boundary(end) {
        end -= 1;
    }
    let mut shown: Vec<&str> = item[..end].lines().take(12).collect();
    if shown.iter().map(|l| l.len() + 1).sum::<usize>() < item.len() {
        shown.push("...");
    }
    shown.join("\n")
}

/// The declarations and uses of a document's names.
struct Names<'a> {
    decls: Vec<query::Decl<'a>>,
    uses: Vec<(Use<'a>, Span)>,
}

impl<'a> Names<'a> {
    fn of(doc: &'a Doc) -> Names<'a> {
        Names {
            decls: query::declarations(&doc.analysis.policy),
            uses: query::uses(&doc.analysis.policy),
        }
    }
}

/// Definition: the declaration of the set, const, interface, pool or service
/// named at the position.
pub fn definition(
    uri: &Uri,
    doc: &Doc,
    p: GotoDefinitionParams,
) -> Result<Option<GotoDefinitionResponse>, ResponseError> {
    let offset = doc.offset(p.text_document_position_params.position);
    let Names { decls, uses } = Names::of(doc);
    let Some(Use::Name(ns, name)) = query::at(&decls, &uses, offset) else {
        return Ok(None);
    };
    let Some(d) = query::resolve(&decls, ns, name) else {
        return Ok(None);
    };
    let range = doc.range(d.name_span);
    Ok(Some(GotoDefinitionResponse::Scalar(Location::new(
        uri.clone(),
        range,
    ))))
}

/// References: every use of the name at the position, and its declaration when
/// asked for.
pub fn references(
    uri: &Uri,
    doc: &Doc,
    p: ReferenceParams,
) -> Result<Option<Vec<Location>>, ResponseError> {
    let offset = doc.offset(p.text_document_position.position);
    let Names { decls, uses } = Names::of(doc);
    let Some(Use::Name(ns, name)) = query::at(&decls, &uses, offset) else {
        return Ok(None);
    };
    let mut spans: Vec<Span> = Vec::new();
    if p.context.include_declaration {
        spans.extend(
            decls
                .iter()
                .filter(|d| d.kind.namespace() == ns && d.name == name)
                .map(|d| d.name_span),
        );
    }
    spans.extend(
        uses.iter()
            .filter(|(u, _)| *u == Use::Name(ns, name))
            .map(|(_, s)| *s),
    );
    spans.sort_unstable();
    Ok(Some(
        spans
            .into_iter()
            .map(|s| Location::new(uri.clone(), doc.range(s)))
            .collect(),
    ))
}

/// The outline: one symbol per item.
pub fn symbols(
    _: &Uri,
    doc: &Doc,
    _: DocumentSymbolParams,
) -> Result<Option<DocumentSymbolResponse>, ResponseError> {
    let analysis = &doc.analysis;
    let mut out = Vec::new();
    for item in &analysis.policy.items {
        let span = item.span();
        let keyword = |n: usize| Span::new(span.start, (span.start + n).min(span.end));
        let (name, detail, kind, selection) = match item {
            Item::Interface(x) => (
                &*x.name.name,
                "interface",
                SymbolKind::INTERFACE,
                x.name.span,
            ),
            Item::Const(x) => (&*x.name.name, "const", SymbolKind::CONSTANT, x.name.span),
            Item::Set(x) => (&*x.name.name, "set", SymbolKind::ARRAY, x.name.span),
            Item::Pool(x) => (&*x.name.name, "pool", SymbolKind::STRUCT, x.name.span),
            Item::Service(x) => (&*x.name.name, "service", SymbolKind::MODULE, x.name.span),
            Item::Filter(_) => ("filter", "filter", SymbolKind::NAMESPACE, keyword(6)),
            Item::Route(r) => (
                doc.text
                    .get(r.prefix.span.start..r.prefix.span.end)
                    .unwrap_or("route"),
                "route",
                SymbolKind::KEY,
                r.prefix.span,
            ),
            Item::Test(t) => (&*t.name, "test", SymbolKind::METHOD, t.name_span),
        };
        let detail = match item {
            Item::Filter(f) => format!("{} rules", f.rules.len()),
            _ => detail.to_string(),
        };
        #[allow(deprecated)] // `deprecated` is a field the struct still has
        out.push(DocumentSymbol {
            name: if name.is_empty() {
                detail.clone()
            } else {
                name.to_string()
            },
            detail: Some(detail),
            kind,
            tags: None,
            deprecated: None,
            range: doc.range(span),
            selection_range: doc.range(selection),
            children: None,
        });
    }
    Ok(Some(DocumentSymbolResponse::Nested(out)))
}

/// Formatting: the whole document as `lbp fmt` writes it, as one edit (none
/// when it is formatted); a policy with syntax errors is not formatted.
pub fn formatting(
    _: &Uri,
    doc: &Doc,
    _: DocumentFormattingParams,
) -> Result<Option<Vec<TextEdit>>, ResponseError> {
    match lbp_lang::fmt::format_source(&doc.text) {
        Ok(text) if text == doc.text => Ok(Some(Vec::new())),
        Ok(text) => Ok(Some(vec![TextEdit {
            range: Range::new(Position::new(0, 0), doc.position(doc.text.len())),
            new_text: text,
        }])),
        Err(diags) => Err(fail(
            ErrorCode::RequestFailed,
            match diags.first() {
                Some(d) => format!("not formatted: the policy has errors ({})", d.message),
                None => "not formatted: the policy has errors".into(),
            },
        )),
    }
}

/// Quick fixes: for each diagnostic in the range whose help is "did you mean
/// `X`?", replace what it points at with `X`.
pub fn code_actions(
    uri: &Uri,
    doc: &Doc,
    p: CodeActionParams,
) -> Result<Option<CodeActionResponse>, ResponseError> {
    let (from, to) = (doc.offset(p.range.start), doc.offset(p.range.end));
    let analysis = &doc.analysis;
    let mut out = Vec::new();
    for d in &analysis.diagnostics {
        let span = d.span();
        if span.end < from || span.start > to || span.is_empty() {
            continue;
        }
        let Some(fix) = d.help.as_deref().and_then(suggestion) else {
            continue;
        };
        let written = doc.text.get(span.start..span.end).unwrap_or("");
        if written.contains('\n') || written == fix {
            continue;
        }
        let edit = TextEdit {
            range: doc.range(span),
            new_text: fix.to_string(),
        };
        out.push(CodeActionOrCommand::CodeAction(CodeAction {
            title: format!("Replace `{written}` with `{fix}`"),
            kind: Some(CodeActionKind::QUICKFIX),
            diagnostics: Some(vec![lsp_diagnostic(uri, doc, d)]),
            edit: Some(WorkspaceEdit {
                changes: Some(HashMap::from([(uri.clone(), vec![edit])])),
                ..Default::default()
            }),
            is_preferred: Some(true),
            ..Default::default()
        }));
    }
    Ok(Some(out))
}

/// `X` of a help text "did you mean `X`?".
fn suggestion(help: &str) -> Option<&str> {
    let rest = help.strip_prefix("did you mean `")?;
    let (fix, _) = rest.split_once('`')?;
    (!fix.is_empty()).then_some(fix)
}
