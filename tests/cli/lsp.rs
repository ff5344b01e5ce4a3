//! `lbp lsp`: driven over stdio as an editor drives it (a client written here,
//! frame by frame), and through a real editor's client (Neovim headless, its
//! built-in LSP client), compared with what `lbp check --format json` says.

use super::netns::skip;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

/// A broken policy. The line of `fal` holds a character outside the Basic
/// Multilingual Plane before the error: one character, two UTF-16 units, four
/// bytes, so that LSP columns (UTF-16) differ from `lbp check`'s (characters).
const BROKEN: &str = "\
interface lan { address 198.18.0.1/24 }
set webports = { 80, 443 }
pool web {
    backend 198.18.0.2
    health http path \"/\u{1F600}\" rise 2 fal 3
}
service front { vip 198.18.0.10 tcp port 80 pool web }
filter {
    ip.src == 198.18.0.5 && tpc.dport == 22 => drop
    tcp.dport in webprots => balance front
}
";

/// The same policy fixed, and not in the canonical layout (`lbp fmt` changes
/// it).
fn fixed() -> String {
    BROKEN
        .replace(" fal ", " fall ")
        .replace("&& tpc.", "&&   tcp.")
        .replace("webprots", "webports")
}

/// How long a missing answer is waited for before the test fails (a guard
/// against a hang, not a measure of speed).
const PATIENCE: Duration = Duration::from_secs(120);

/// A diagnostic as a test compares it: code, message, and its start and end as
/// 0-based lines and columns.
type Seen = (String, String, (u64, u64), (u64, u64));

/// `lbp check --format json` of `text` (written to a file), the columns turned
/// from characters into UTF-16 units with the line's text.
fn check_json(dir: &std::path::Path, text: &str) -> Vec<Seen> {
    check_json_in(dir, text, |before| before.encode_utf16().count())
}

/// `check_json` with the column counted by `unit` from the line's text before it.
fn check_json_in(dir: &std::path::Path, text: &str, unit: fn(&str) -> usize) -> Vec<Seen> {
    let file = dir.join("policy.lbp");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lbp"))
        .args(["check", "--format", "json"])
        .arg(&file)
        .output()
        .unwrap();
    let lines: Vec<&str> = text.split('\n').collect();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let at = |line: &str, column: &str| {
                let line = v[line].as_u64().unwrap() - 1;
                let chars = v[column].as_u64().unwrap() as usize - 1;
                let before: String = lines[line as usize].chars().take(chars).collect();
                (line, unit(&before) as u64)
            };
            (
                v["code"].as_str().unwrap().to_string(),
                v["message"].as_str().unwrap().to_string(),
                at("line", "column"),
                at("end_line", "end_column"),
            )
        })
        .collect()
}

/// A client of `lbp lsp` over its stdin and stdout.
struct Client {
    child: Child,
    stdin: ChildStdin,
    incoming: Receiver<Value>,
    next_id: i64,
    /// Notifications received while waiting for responses.
    notes: Vec<Value>,
}

impl Client {
    fn start() -> Client {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lbp"))
            .arg("lsp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("lbp lsp starts");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, incoming) = channel();
        std::thread::spawn(move || {
            loop {
                let mut length = None;
                loop {
                    let mut line = String::new();
                    if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(n) = line.strip_prefix("Content-Length: ") {
                        length = Some(n.parse::<usize>().unwrap());
                    }
                }
                let mut body = vec![0; length.expect("a Content-Length header")];
                stdout.read_exact(&mut body).unwrap();
                if tx.send(serde_json::from_slice(&body).unwrap()).is_err() {
                    return;
                }
            }
        });
        Client {
            child,
            stdin,
            incoming,
            next_id: 0,
            notes: Vec::new(),
        }
    }

    fn send_raw(&mut self, body: &str) {
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        self.stdin.flush().unwrap();
    }

    fn notify(&mut self, method: &str, params: Value) {
        let m = json!({"jsonrpc": "2.0", "method": method, "params": params});
        self.send_raw(&m.to_string());
    }

    fn next(&mut self) -> Value {
        self.incoming
            .recv_timeout(PATIENCE)
            .expect("lbp lsp answers")
    }

    /// Send a request and wait for its response (`result` or `error`).
    fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let m = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_raw(&m.to_string());
        self.response(json!(id))
    }

    fn response(&mut self, id: Value) -> Value {
        loop {
            let m = self.next();
            if m.get("method").is_some() {
                self.notes.push(m);
            } else if m["id"] == id {
                return m;
            }
        }
    }

    /// The next diagnostics published for `uri`.
    fn diagnostics(&mut self, uri: &str) -> Value {
        if let Some(i) = self.notes.iter().position(|n| {
            n["method"] == "textDocument/publishDiagnostics" && n["params"]["uri"] == uri
        }) {
            return self.notes.remove(i)["params"].clone();
        }
        loop {
            let m = self.next();
            if m["method"] == "textDocument/publishDiagnostics" && m["params"]["uri"] == uri {
                return m["params"].clone();
            }
        }
    }
}

/// The labels of a completion response.
fn completion_labels(response: &Value) -> Vec<&str> {
    let items = response["result"].as_array().expect("a list of items");
    items.iter().map(|i| i["label"].as_str().unwrap()).collect()
}

/// The (line, UTF-16 column) of the `n`th byte of the `nth` occurrence of
/// `needle` in `text`.
fn pos(text: &str, needle: &str, nth: usize, n: usize) -> Value {
    let at = text
        .match_indices(needle)
        .nth(nth)
        .expect("needle present")
        .0
        + n;
    let line = text[..at].matches('\n').count();
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    json!({"line": line, "character": text[start..at].encode_utf16().count()})
}

fn at(uri: &str, text: &str, needle: &str, nth: usize, n: usize) -> Value {
    json!({"textDocument": {"uri": uri}, "position": pos(text, needle, nth, n)})
}

#[test]
fn lsp_over_stdio() {
    let dir = tempfile::tempdir().unwrap();
    let uri = "file:///policies/front.lbp";
    let fixed = fixed();
    let fixed = fixed.as_str();
    let mut c = Client::start();

    let init = c.request(
        "initialize",
        json!({"processId": null, "rootUri": null, "capabilities": {}}),
    );
    let caps = &init["result"]["capabilities"];
    assert_eq!(caps["textDocumentSync"]["change"], 1, "{init}");
    assert_eq!(
        caps["completionProvider"]["triggerCharacters"],
        json!(["."])
    );
    for p in [
        "hoverProvider",
        "definitionProvider",
        "referencesProvider",
        "documentSymbolProvider",
        "documentFormattingProvider",
    ] {
        assert_eq!(caps[p], true, "{p} in {caps}");
    }
    c.notify("initialized", json!({}));

    // Open: the diagnostics are `lbp check --format json`'s, in UTF-16 columns.
    c.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri, "languageId": "lbp", "version": 1, "text": BROKEN}}),
    );
    let published = c.diagnostics(uri);
    assert_eq!(published["version"], 1);
    let got: Vec<Seen> = published["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["source"], "lbp");
            (
                d["code"].as_str().unwrap().to_string(),
                d["message"].as_str().unwrap().to_string(),
                (
                    d["range"]["start"]["line"].as_u64().unwrap(),
                    d["range"]["start"]["character"].as_u64().unwrap(),
                ),
                (
                    d["range"]["end"]["line"].as_u64().unwrap(),
                    d["range"]["end"]["character"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    let want = check_json(dir.path(), BROKEN);
    assert_eq!(got, want);
    let codes: Vec<&str> = want.iter().map(|w| w.0.as_str()).collect();
    assert!(codes.contains(&"lbp::parse::syntax"), "{want:?}");
    assert!(codes.contains(&"lbp::name::unknown_field"), "{want:?}");
    assert!(codes.contains(&"lbp::name::undefined"), "{want:?}");
    // `fal` stands after the emoji: its UTF-16 column is one more than its
    // character column.
    let fal = pos(BROKEN, "fal ", 0, 0);
    assert!(
        got.iter()
            .any(|g| g.2.0 == fal["line"] && g.2.1 == fal["character"]),
        "{got:?} has no diagnostic at {fal}"
    );

    // A quick fix for each "did you mean": `tpc.dport` -> `tcp.dport`,
    // `webprots` -> `webports` (the help of `fal` lists the options instead).
    let all = json!({"start": {"line": 0, "character": 0}, "end": {"line": 20, "character": 0}});
    let actions = c.request(
        "textDocument/codeAction",
        json!({"textDocument": {"uri": uri}, "range": all, "context": {"diagnostics": []}}),
    );
    let mut fixes: Vec<(String, Value)> = actions["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(a["kind"], "quickfix");
            let edit = &a["edit"]["changes"][uri][0];
            (
                edit["newText"].as_str().unwrap().to_string(),
                edit["range"]["start"].clone(),
            )
        })
        .collect();
    fixes.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        fixes,
        [
            ("tcp.dport".to_string(), pos(BROKEN, "tpc", 0, 0)),
            ("webports".to_string(), pos(BROKEN, "webprots", 0, 0)),
        ]
    );

    // Change to the fixed text: no diagnostics left.
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"text": fixed}]}),
    );
    let published = c.diagnostics(uri);
    assert_eq!(published["version"], 2);
    assert_eq!(published["diagnostics"], json!([]));
    assert!(check_json(dir.path(), fixed).is_empty());

    // Completion after `tcp.`: the TCP fields, `dport` among them.
    let done = c.request(
        "textDocument/completion",
        at(uri, fixed, "tcp.dport in", 0, 4),
    );
    let labels = completion_labels(&done);
    assert!(labels.contains(&"dport"), "{labels:?}");
    assert!(labels.contains(&"syn"), "{labels:?}");
    assert!(!labels.contains(&"src"), "{labels:?}");
    // An item replaces what follows the dot, whatever the client's words are.
    let dport = done["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["label"] == "dport")
        .unwrap();
    let after_dot = pos(fixed, "tcp.dport in", 0, 4);
    assert_eq!(dport["textEdit"]["range"]["start"], after_dot);
    assert_eq!(dport["textEdit"]["range"]["end"], after_dot);
    assert_eq!(dport["textEdit"]["newText"], "dport");
    assert_eq!(dport["detail"], "port (0..65535)");
    // After `=>`: the actions; elsewhere in the filter, declared names too.
    let done = c.request("textDocument/completion", at(uri, fixed, "=> drop", 0, 3));
    let labels = completion_labels(&done);
    assert!(
        labels.contains(&"accept") && labels.contains(&"balance"),
        "{labels:?}"
    );
    let done = c.request("textDocument/completion", at(uri, fixed, "ip.src ==", 0, 0));
    let labels = completion_labels(&done);
    assert!(
        labels.contains(&"webports") && labels.contains(&"tcp.dport"),
        "{labels:?}"
    );

    // Hover: a field's type and meaning; a name's declaration.
    let hover = c.request("textDocument/hover", at(uri, fixed, "tcp.dport ==", 0, 5));
    let text = hover["result"]["contents"]["value"].as_str().unwrap();
    assert!(
        text.contains("tcp.dport") && text.contains("port (0..65535)"),
        "{text}"
    );
    assert!(text.contains("TCP destination port"), "{text}");
    let hover = c.request("textDocument/hover", at(uri, fixed, "webports =>", 0, 2));
    let text = hover["result"]["contents"]["value"].as_str().unwrap();
    assert!(
        text.contains("set `webports`") && text.contains("{ 80, 443 }"),
        "{text}"
    );

    // Definition of the set from its use; references from its declaration.
    let def = c.request(
        "textDocument/definition",
        at(uri, fixed, "webports =>", 0, 3),
    );
    assert_eq!(def["result"]["uri"], uri);
    assert_eq!(
        def["result"]["range"]["start"],
        pos(fixed, "webports", 0, 0)
    );
    assert_eq!(def["result"]["range"]["end"], pos(fixed, "webports", 0, 8));
    let def = c.request(
        "textDocument/definition",
        at(uri, fixed, "pool web }", 0, 6),
    );
    assert_eq!(def["result"]["range"]["start"], pos(fixed, "web {", 0, 0));
    let def = c.request(
        "textDocument/definition",
        at(uri, fixed, "balance front", 0, 9),
    );
    assert_eq!(def["result"]["range"]["start"], pos(fixed, "front {", 0, 0));
    // A field is no name: no definition.
    let def = c.request(
        "textDocument/definition",
        at(uri, fixed, "tcp.dport ==", 0, 2),
    );
    assert_eq!(def["result"], Value::Null, "{def}");
    let refs = c.request(
        "textDocument/references",
        json!({
            "textDocument": {"uri": uri},
            "position": pos(fixed, "webports", 0, 1),
            "context": {"includeDeclaration": true},
        }),
    );
    let starts: Vec<Value> = refs["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["range"]["start"].clone())
        .collect();
    assert_eq!(
        starts,
        [pos(fixed, "webports", 0, 0), pos(fixed, "webports", 1, 0)]
    );

    // The outline.
    let symbols = c.request(
        "textDocument/documentSymbol",
        json!({"textDocument": {"uri": uri}}),
    );
    let names: Vec<(&str, &str)> = symbols["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["detail"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("lan", "interface"),
            ("webports", "set"),
            ("web", "pool"),
            ("front", "service"),
            ("filter", "2 rules"),
        ]
    );

    // Formatting: what `lbp fmt` writes.
    let file = dir.path().join("fmt.lbp");
    std::fs::write(&file, fixed).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lbp"))
        .arg("fmt")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let formatted = std::fs::read_to_string(&file).unwrap();
    assert_ne!(formatted, fixed);
    let edits = c.request(
        "textDocument/formatting",
        json!({"textDocument": {"uri": uri}, "options": {"tabSize": 4, "insertSpaces": true}}),
    );
    let edits = edits["result"].as_array().unwrap();
    assert_eq!(edits.len(), 1);
    assert_eq!(edits[0]["newText"], formatted);
    assert_eq!(
        edits[0]["range"]["start"],
        json!({"line": 0, "character": 0})
    );
    assert_eq!(
        edits[0]["range"]["end"],
        json!({"line": 11, "character": 0})
    );

    // A message that is not JSON: a parse error with a null id; then one
    // that is JSON but not a message, with its id.
    c.send_raw("{\"jsonrpc\": \"2.0\", \"id\": 99, \"method\": ");
    let e = c.response(Value::Null);
    assert_eq!(e["error"]["code"], -32700, "{e}");
    c.send_raw("{\"jsonrpc\": \"2.0\", \"id\": 98}");
    let e = c.response(json!(98));
    assert_eq!(e["error"]["code"], -32600, "{e}");
    // Parameters of the wrong shape, a document not open, an unknown method.
    let e = c.request("textDocument/hover", json!({"textDocument": 5}));
    assert_eq!(e["error"]["code"], -32602, "{e}");
    let e = c.request(
        "textDocument/hover",
        at("file:///not/open.lbp", fixed, "tcp", 0, 0),
    );
    assert_eq!(e["error"]["code"], -32602, "{e}");
    let e = c.request("textDocument/noSuchThing", json!({}));
    assert_eq!(e["error"]["code"], -32601, "{e}");
    // The server still answers.
    let hover = c.request("textDocument/hover", at(uri, fixed, "tcp.dport ==", 0, 1));
    assert!(hover["result"]["contents"]["value"].is_string(), "{hover}");

    // Shutdown, then exit: the server ends with status 0.
    let bye = c.request("shutdown", Value::Null);
    assert_eq!(bye["result"], Value::Null);
    assert!(bye.get("error").is_none(), "{bye}");
    let e = c.request("textDocument/hover", at(uri, fixed, "tcp", 0, 0));
    assert_eq!(e["error"]["code"], -32600, "{e}");
    c.notify("exit", Value::Null);
    let status = c.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// A large document (100 000 filter rules) is checked and its diagnostics
/// published, and an edit to it too; how fast is `benches/lsp.sh`'s business.
#[test]
fn lsp_large_document() {
    let mut text = String::from("set webports = { 80, 443 }\nfilter {\n");
    for i in 0..100_000u32 {
        let (a, b) = (i / 256 % 256, i % 256);
        text.push_str(&format!(
            "    ip.src == 10.{a}.{b}.1 && tcp.dport in webports => drop\n"
        ));
    }
    text.push_str("}\n");
    let uri = "file:///policies/large.lbp";
    let mut c = Client::start();
    c.request("initialize", json!({"capabilities": {}}));
    c.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri, "languageId": "lbp", "version": 1, "text": text}}),
    );
    assert_eq!(c.diagnostics(uri)["diagnostics"], json!([]));
    let broken = text.replacen(
        "tcp.dport in webports => drop\n}",
        "tcp.dport in webport => drop\n}",
        1,
    );
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"text": broken}]}),
    );
    let d = c.diagnostics(uri);
    let d = d["diagnostics"].as_array().unwrap();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["code"], "lbp::name::undefined");
    assert_eq!(d[0]["range"]["start"]["line"], 100_001);
    c.request("shutdown", Value::Null);
    c.notify("exit", Value::Null);
    assert!(c.child.wait().unwrap().success());
}

/// The Lua script Neovim runs: open the policy, attach `lbp lsp` with the
/// built-in client, wait for its diagnostics, ask for completion after `tcp.`,
/// go to the definition of a set from its use, and write what it saw as JSON.
/// It runs on Neovim 0.7 (Debian 12's, `vim.lsp.start_client`) and later
/// (`vim.lsp.start`).
const NVIM_SCRIPT: &str = r#"
local result = {}
local ok, err = pcall(function()
  local file, lbp = vim.env.LBP_FILE, vim.env.LBP_BIN
  vim.cmd('edit ' .. vim.fn.fnameescape(file))
  local buf = vim.api.nvim_get_current_buf()
  local config = { name = 'lbp', cmd = { lbp, 'lsp' }, root_dir = vim.fn.fnamemodify(file, ':h') }
  local id
  if vim.lsp.start then
    id = vim.lsp.start(config)
  else
    id = vim.lsp.start_client(config)
    vim.lsp.buf_attach_client(buf, id)
  end
  result.attached = id ~= nil
  result.waited = vim.wait(60000, function() return #vim.diagnostic.get(buf) > 0 end, 20)
  result.diagnostics = {}
  for _, d in ipairs(vim.diagnostic.get(buf)) do
    local code = d.code
    if code == nil and d.user_data and d.user_data.lsp then code = d.user_data.lsp.code end
    table.insert(result.diagnostics, {
      code = code, message = d.message,
      lnum = d.lnum, col = d.col, end_lnum = d.end_lnum, end_col = d.end_col,
    })
  end
  local lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
  local function find(needle, after)
    for i, l in ipairs(lines) do
      local s = string.find(l, needle, 1, true)
      if s then return i - 1, s - 1 + after end
    end
  end
  local line, col = find('tcp.dport', 4)
  local answers = vim.lsp.buf_request_sync(buf, 'textDocument/completion', {
    textDocument = { uri = vim.uri_from_bufnr(buf) },
    position = { line = line, character = col },
  }, 60000)
  result.completion = {}
  for _, answer in pairs(answers or {}) do
    local items = answer.result or {}
    if items.items then items = items.items end
    for _, item in ipairs(items) do table.insert(result.completion, item.label) end
  end
  local uline, ucol = find('in webports', 5)
  vim.api.nvim_win_set_cursor(0, { uline + 1, ucol })
  vim.lsp.buf.definition()
  vim.wait(60000, function()
    local p = vim.api.nvim_win_get_cursor(0)
    return p[1] ~= uline + 1 or p[2] ~= ucol
  end, 20)
  local p = vim.api.nvim_win_get_cursor(0)
  result.definition = { line = p[1] - 1, col = p[2], text = vim.api.nvim_get_current_line() }
end)
if not ok then result.error = tostring(err) end
local f = io.open(vim.env.LBP_OUT, 'w')
f:write(vim.fn.json_encode(result))
f:close()
vim.cmd('qa!')
"#;

/// The broken policy of `lsp_over_stdio` with its set also used, where
/// the definition is asked for.
fn broken_for_nvim() -> String {
    BROKEN.replace(
        "    tcp.dport in webprots => balance front\n",
        "    tcp.dport in webports => balance front\n    tcp.dport in webprots => drop\n",
    )
}

#[test]
fn lsp_in_neovim() {
    let test = "lsp_in_neovim";
    match Command::new("nvim").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(_) | Err(_) => {
            return skip(
                test,
                "nvim (Debian's neovim package) is not installed; .ci/run installs it",
            );
        }
    }
    let broken = broken_for_nvim();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.lbp");
    std::fs::write(&file, &broken).unwrap();
    let script = dir.path().join("lsp.lua");
    std::fs::write(&script, NVIM_SCRIPT).unwrap();
    let out = dir.path().join("out.json");
    let mut nvim = Command::new("nvim")
        .args(["--headless", "-u", "NONE", "-i", "NONE", "-n", "-c"])
        .arg(format!("luafile {}", script.display()))
        .env("LBP_FILE", &file)
        .env("LBP_BIN", env!("CARGO_BIN_EXE_lbp"))
        .env("LBP_OUT", &out)
        .env("XDG_STATE_HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("nvim starts");
    // A guard against a hang, not a measure of speed.
    let mut waited = Duration::ZERO;
    while nvim.try_wait().unwrap().is_none() {
        if waited > PATIENCE {
            let _ = nvim.kill();
            panic!("nvim did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
        waited += Duration::from_millis(50);
    }
    let text = std::fs::read_to_string(&out).expect("the script wrote its findings");
    let seen: Value = serde_json::from_str(&text).unwrap();
    assert!(seen.get("error").is_none(), "the script failed: {seen}");
    assert_eq!(seen["attached"], true, "{seen}");
    assert_eq!(seen["waited"], true, "no diagnostics came: {seen}");

    // The diagnostics, as Neovim holds them (byte columns, converted by its
    // client from the server's UTF-16 columns), are `lbp check`'s.
    let mut got: Vec<Seen> = seen["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["code"].as_str().unwrap().to_string(),
                d["message"].as_str().unwrap().to_string(),
                (d["lnum"].as_u64().unwrap(), d["col"].as_u64().unwrap()),
                (
                    d["end_lnum"].as_u64().unwrap(),
                    d["end_col"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    got.sort();
    let mut want = check_json_in(dir.path(), &broken, str::len);
    want.sort();
    assert!(want.len() >= 3, "{want:?}");
    assert_eq!(got, want);

    let labels: Vec<&str> = seen["completion"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(labels.contains(&"dport"), "{labels:?}");

    // Go to definition from `in webports` lands on the set's name.
    let decl = broken.find("webports").unwrap();
    let line = broken[..decl].matches('\n').count();
    let col = decl - broken[..decl].rfind('\n').map_or(0, |i| i + 1);
    assert_eq!(
        (
            seen["definition"]["line"].as_u64(),
            seen["definition"]["col"].as_u64()
        ),
        (Some(line as u64), Some(col as u64)),
        "{seen}"
    );
    assert_eq!(seen["definition"]["text"], "set webports = { 80, 443 }");
}
