// The lbp extension's client: when the `lbp` binary is found (the setting
// `lbp.path`, by default `lbp` looked up on the PATH), start `lbp lsp` over
// standard input and output for .lbp files. Without it the extension still
// highlights (the grammar and language configuration need no code).
'use strict';

const fs = require('fs');
const path = require('path');
const vscode = require('vscode');
const { LanguageClient } = require('vscode-languageclient/node');

/** The executable `command` names: itself if it holds a path separator, else
 * the first match on PATH (with PATHEXT on Windows); null if there is none. */
function findExecutable(command, env = process.env) {
  const isFile = (p) => {
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return fs.statSync(p).isFile();
    } catch {
      return false;
    }
  };
  if (command.includes('/') || command.includes(path.sep)) {
    return isFile(command) ? command : null;
  }
  const exts = process.platform === 'win32' ? (env.PATHEXT || '.EXE').split(';') : [''];
  for (const dir of (env.PATH || '').split(path.delimiter)) {
    if (!dir) continue;
    for (const ext of exts) {
      const candidate = path.join(dir, command + ext);
      if (isFile(candidate)) return candidate;
    }
  }
  return null;
}

let client = null;

async function activate(context) {
  const configured = vscode.workspace.getConfiguration('lbp').get('path') || 'lbp';
  const command = findExecutable(configured);
  if (!command) {
    const out = vscode.window.createOutputChannel('lbp');
    out.appendLine(`\`${configured}\` was not found on the PATH: highlighting only, no \`lbp lsp\`.`);
    context.subscriptions.push(out);
    return;
  }
  const server = { command, args: ['lsp'] };
  client = new LanguageClient(
    'lbp',
    'lbp language server',
    { run: server, debug: server },
    {
      documentSelector: [
        { scheme: 'file', language: 'lbp' },
        { scheme: 'untitled', language: 'lbp' },
      ],
    },
  );
  context.subscriptions.push(client);
  await client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate, findExecutable };
