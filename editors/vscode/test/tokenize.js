// Tokenises lbp policies with the extension's TextMate grammar, as VS Code does
// (vscode-textmate on the Oniguruma WebAssembly build), and checks the scope of
// every token that the lbp parser found.
//
//   node test/tokenize.js EXPECT.json
//
// EXPECT.json comes from the Rust test tests/cli/editors.rs, which parses each
// policy with lbp's own parser: for each file, its path and tokens, each with a
// line, a start and end column (UTF-16, as JavaScript strings count), the text
// and a kind (keyword, field, action, ipv4, prefix6, integer, comment, decl, ...).
// Every character of such a token must carry a scope of its kind. The script
// also checks the language configuration's indentation rules against the
// policies' canonical layout (`lbp fmt`), and that the client finds `lbp` on the
// PATH. It prints a summary and exits 1 on any failure.
'use strict';

const fs = require('fs');
const path = require('path');
const Module = require('module');
const vsctm = require('vscode-textmate');
const oniguruma = require('vscode-oniguruma');

const root = path.join(__dirname, '..');
const has = (scope) => (scopes) => scopes.includes(scope);
const startsWith = (prefix) => (scopes) => scopes.some((s) => s.startsWith(prefix));

// What each kind of token must be scoped as.
const KINDS = {
  comment: has('comment.line.number-sign.lbp'),
  string: has('string.quoted.double.lbp'),
  field: has('support.variable.field.lbp'),
  ipv4: has('constant.numeric.address.ipv4.lbp'),
  ipv6: has('constant.numeric.address.ipv6.lbp'),
  prefix4: has('constant.numeric.prefix.ipv4.lbp'),
  prefix6: has('constant.numeric.prefix.ipv6.lbp'),
  mac: has('constant.numeric.mac.lbp'),
  integer: startsWith('constant.numeric.integer.'),
  float: has('constant.numeric.float.lbp'),
  duration: has('constant.numeric.duration.lbp'),
  range: has('constant.numeric.range.lbp'),
  boolean: has('constant.language.boolean.lbp'),
  action: has('keyword.control.action.lbp'),
  verdict: has('keyword.control.verdict.lbp'),
  algorithm: has('support.constant.algorithm.lbp'),
  mode: has('support.constant.mode.lbp'),
  policy: has('support.constant.unknown-policy.lbp'),
  protocol: has('support.constant.protocol.lbp'),
  health: has('support.constant.health.lbp'),
  flag: has('support.constant.flag.lbp'),
  input: has('variable.language.input.lbp'),
  settype: has('support.type.set.lbp'),
  keyword: (scopes) =>
    scopes.some((s) => s.startsWith('keyword.') || s.startsWith('storage.type.')),
  // A reference to a declared name: not coloured as a word of the language.
  name: (scopes) => !scopes.some((s) => /^(keyword|storage|support|constant)\./.test(s)),
};
// Declarations: `decl:interface` must be `entity.name.*.interface.lbp`.
function predicate(kind) {
  if (kind.startsWith('decl:')) {
    const what = kind.slice(5);
    return (scopes) => scopes.some((s) => s.startsWith('entity.name.') && s.endsWith(`.${what}.lbp`));
  }
  const p = KINDS[kind];
  if (!p) throw new Error(`unknown kind ${kind}`);
  return p;
}

async function loadGrammar() {
  const wasm = fs.readFileSync(require.resolve('vscode-oniguruma/release/onig.wasm'));
  await oniguruma.loadWASM(wasm.buffer.slice(wasm.byteOffset, wasm.byteOffset + wasm.byteLength));
  const grammarPath = path.join(root, 'syntaxes', 'lbp.tmLanguage.json');
  const registry = new vsctm.Registry({
    onigLib: Promise.resolve({
      createOnigScanner: (patterns) => new oniguruma.OnigScanner(patterns),
      createOnigString: (s) => new oniguruma.OnigString(s),
    }),
    loadGrammar: async (scope) =>
      scope === 'source.lbp'
        ? vsctm.parseRawGrammar(fs.readFileSync(grammarPath, 'utf8'), grammarPath)
        : null,
  });
  return registry.loadGrammar('source.lbp');
}

function tokenize(grammar, text) {
  let stack = vsctm.INITIAL;
  return text.split(/\r?\n/).map((line) => {
    const r = grammar.tokenizeLine(line, stack);
    stack = r.ruleStack;
    return r.tokens;
  });
}

// The indentation VS Code's rules give each line of a canonically formatted
// file, compared with the file's own.
function checkIndentation(text, file, failures) {
  const conf = JSON.parse(fs.readFileSync(path.join(root, 'language-configuration.json'), 'utf8'));
  const inc = new RegExp(conf.indentationRules.increaseIndentPattern);
  const dec = new RegExp(conf.indentationRules.decreaseIndentPattern);
  let level = 0;
  let lines = 0;
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    if (dec.test(line)) level -= 1;
    const actual = line.length - line.trimStart().length;
    if (actual !== 4 * level) {
      failures.push(`${file}:${i + 1}: indentation rules give ${4 * level} columns, the file has ${actual}: ${line}`);
    }
    if (inc.test(line)) level += 1;
    lines += 1;
  });
  return lines;
}

// The client finds `lbp` on the PATH and starts `lbp lsp`, or stays quiet.
async function checkClient(failures) {
  const started = [];
  const stubs = {
    vscode: {
      workspace: { getConfiguration: () => ({ get: () => undefined }) },
      window: { createOutputChannel: () => ({ appendLine: () => {}, dispose: () => {} }) },
    },
    'vscode-languageclient/node': {
      LanguageClient: class {
        constructor(id, name, server, client) {
          started.push({ id, server, client });
        }
        start() {
          return Promise.resolve();
        }
        stop() {}
        dispose() {}
      },
    },
  };
  const load = Module._load;
  Module._load = function (request, ...rest) {
    return request in stubs ? stubs[request] : load.call(this, request, ...rest);
  };
  try {
    const ext = require(path.join(root, 'extension.js'));
    const dir = fs.mkdtempSync(path.join(require('os').tmpdir(), 'lbp-client-'));
    const lbp = path.join(dir, 'lbp');
    fs.writeFileSync(lbp, '#!/bin/sh\n', { mode: 0o755 });
    const savedPath = process.env.PATH;
    try {
      process.env.PATH = path.join(dir, 'none');
      await ext.activate({ subscriptions: [] });
      if (started.length !== 0) failures.push('client: started a server without lbp on the PATH');
      process.env.PATH = [path.join(dir, 'none'), dir].join(path.delimiter);
      await ext.activate({ subscriptions: [] });
      const s = started[0];
      if (!s || s.server.run.command !== lbp || s.server.run.args.join(' ') !== 'lsp') {
        failures.push(`client: expected \`${lbp} lsp\`, got ${JSON.stringify(s && s.server)}`);
      } else if (!s.client.documentSelector.some((d) => d.language === 'lbp')) {
        failures.push('client: the document selector does not name the lbp language');
      }
    } finally {
      process.env.PATH = savedPath;
      fs.rmSync(dir, { recursive: true, force: true });
    }
  } finally {
    Module._load = load;
  }
}

async function main() {
  const expect = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const grammar = await loadGrammar();
  const failures = [];
  const counts = {};
  let indented = 0;
  for (const file of expect.files) {
    const text = fs.readFileSync(file.path, 'utf8');
    const lines = tokenize(grammar, text);
    for (const t of file.tokens) {
      const ok = predicate(t.kind);
      const line = lines[t.line];
      const covering = line.filter((k) => k.startIndex < t.end && k.endIndex > t.start);
      const bad = covering.filter((k) => !ok(k.scopes));
      counts[t.kind] = (counts[t.kind] || 0) + 1;
      if (covering.length === 0 || bad.length > 0) {
        const k = bad[0] || { scopes: [] };
        failures.push(
          `${file.path}:${t.line + 1}:${t.start + 1}: \`${t.text}\` (${t.kind}) is scoped ${k.scopes.join(' ')}`,
        );
      }
    }
    indented += checkIndentation(text, file.path, failures);
  }
  await checkClient(failures);
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  const summary = Object.keys(counts)
    .sort()
    .map((k) => `${k} ${counts[k]}`)
    .join(', ');
  console.log(`${expect.files.length} files, ${total} tokens checked (${summary}); ${indented} lines indented`);
  if (failures.length > 0) {
    for (const f of failures.slice(0, 60)) console.log(f);
    if (failures.length > 60) console.log(`... and ${failures.length - 60} more`);
    console.log(`${failures.length} failures`);
    process.exit(1);
  }
  console.log('ok');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
