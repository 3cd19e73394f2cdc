'use strict';
/*
 * The JavaScript kernel of one session: Node.js 20, standard library only.
 *
 * Started as `node kernel.js <fd>`, <fd> an inherited, connected AF_UNIX SOCK_STREAM socket. It
 * speaks docs/protocol.md: frames of a 4-byte big-endian length and a UTF-8 JSON header (blobs
 * in requests are read and ignored; the kernel never sends any). It sends {"op":"ready"} once,
 * then serves one request at a time: execute (-> chunk* result), shell (-> shell_result),
 * ping (-> pong), exit (exits), anything else (-> bad-request). EOF on the socket exits. An
 * execute naming a `context` (an IPython namespace) is answered with an error result.
 *
 * execute, like Node's REPL:
 * - Cells run as scripts in this process's global scope (vm.runInThisContext), so top-level
 *   let/const/class/var/function persist across cells. As in the REPL, a let/const/class name
 *   cannot be declared again in a later cell, and one whose declaration threw stays
 *   uninitialised.
 * - The completion value is the result ({"text/plain": util.inspect(value)}, null when
 *   undefined); a thenable is awaited. A cell starting with `{` is tried as an object literal.
 * - Top-level await: the cell is rewritten as Node's REPL does (its own acorn, read from the
 *   node binary): the body runs in an async function and top-level declarations are hoisted
 *   to globals (let/const/class become `let`, so a `const` declared in such a cell can be
 *   reassigned later). Without acorn, such cells are a SyntaxError.
 * - require() resolves from the working directory; import() uses Node's default loader.
 * - process.stdout / process.stderr are replaced by capturing streams (console.* writes
 *   through them). Output of child processes that inherit fds 1 and 2 is not captured.
 *   console never colours. An error thrown by a callback (or a rejection nobody handles)
 *   while a cell runs is written to its stderr as `Uncaught ...`; the cell's status is not
 *   changed. Output and errors of callbacks that run while no cell is running are dropped.
 * - SIGINT interrupts the synchronous part of a cell (vm breakOnSigint) and the wait for its
 *   promise; it cannot stop a busy loop inside a callback or after an `await` (the host's
 *   SIGKILL after its grace period does). Between requests SIGINT is ignored.
 * - `silent` changes nothing (there is no history); `displays` is always [] (no images).
 * - Streaming chunks go out through a worker thread (started by the first streaming cell)
 *   that owns every socket write from then on, so output of a long synchronous cell is sent
 *   while the cell runs, and neighbouring writes are merged into one frame.
 */

const { isMainThread, parentPort, workerData, Worker } = require('worker_threads');

const MAX_HEADER = 64 * 1024 * 1024;
const MAX_REQUEST = 16 * 1024 * 1024;
const MAX_BLOBS = 64;
const DEFAULT_OUTPUT_LIMIT = 1 << 20;
// Node's error for a script stopped by breakOnSigint; the async interrupt reuses it.
const INTERRUPTED_CODE = 'ERR_SCRIPT_EXECUTION_INTERRUPTED';
const INTERRUPTED_MESSAGE = 'Script execution was interrupted by `SIGINT`';

if (isMainThread) {
  main();
} else {
  senderThread();
}

// -- the sender thread ------------------------------------------------------------------------

/** Owns the socket's write side once streaming started: the main thread posts chunks and
 * ready-made replies in order; neighbouring chunks of one stream are merged into a frame. */
function senderThread() {
  const fs = require('fs');
  const { Buffer } = require('buffer');
  const fd = workerData.fd;
  const nap = new Int32Array(new SharedArrayBuffer(4));
  const queue = [];
  let scheduled = false;
  let dead = false;

  function frame(json) {
    const body = Buffer.from(json, 'utf8');
    const head = Buffer.allocUnsafe(4);
    head.writeUInt32BE(body.length, 0);
    return [head, body];
  }

  function writeAll(buf) {
    let off = 0;
    while (off < buf.length && !dead) {
      try {
        off += fs.writeSync(fd, buf, off, buf.length - off);
      } catch (e) {
        if (e.code === 'EAGAIN') {
          Atomics.wait(nap, 0, 0, 2); // the socket is non-blocking (libuv): wait for room
        } else {
          dead = true;
          parentPort.postMessage('dead');
        }
      }
    }
  }

  function flush() {
    scheduled = false;
    const parts = [];
    let chunk = null;
    const push = () => {
      if (chunk !== null) parts.push(...frame(JSON.stringify(chunk)));
      chunk = null;
    };
    for (const m of queue.splice(0)) {
      if (typeof m.json === 'string') {
        push();
        parts.push(...frame(m.json));
      } else if (chunk !== null && chunk.id === m.id && chunk.name === m.name) {
        chunk.text += m.text;
      } else {
        push();
        chunk = { op: 'chunk', id: m.id, name: m.name, text: m.text };
      }
    }
    push();
    if (parts.length) writeAll(Buffer.concat(parts));
  }

  parentPort.on('message', (m) => {
    queue.push(m);
    if (!scheduled) {
      scheduled = true;
      setImmediate(flush); // after every message already queued has arrived: one write
    }
  });
}

// -- the main thread --------------------------------------------------------------------------

function main() {
  const net = require('net');
  const vm = require('vm');
  const util = require('util');
  const path = require('path');
  const os = require('os');
  const { Writable } = require('stream');
  const { spawn } = require('child_process');
  const { createRequire } = require('module');
  const { Buffer } = require('buffer');
  const { StringDecoder } = require('string_decoder');
  const { performance } = require('perf_hooks');
  const { setImmediate } = require('timers');
  // Cells share this global scope: keep our own references to what they might overwrite.
  const stringify = JSON.stringify;
  const parseJSON = JSON.parse;
  const inspect = util.inspect;
  const isNativeError = util.types.isNativeError;
  const NativeError = Error;
  const NativePromise = Promise;
  const ANSI = /\x1b\[[0-9;?]*[ -/]*[@-~]/g;
  const KERNEL_FILE = __filename;

  const fd = Number(process.argv[process.argv.length - 1]);
  const socket = new net.Socket({ fd, readable: true, writable: true });
  const exit = () => process.exit(0);
  socket.on('end', exit);
  socket.on('close', exit);
  socket.on('error', exit);

  let sender = null; // the sender Worker, once a cell streamed
  let current = null; // the CellOutput of the running cell, if any
  let interrupt = null; // stops what the running request awaits (set only while it may)
  let cells = 0;
  let acorn; // undefined: not loaded yet; null: unavailable

  // -- output ---------------------------------------------------------------------------------

  const truncationNote = (dropped, limit) =>
    `\n[output truncated: ${dropped} more bytes were dropped; limit ${limit} bytes]\n`;

  /** Everything one request printed, capped at `limit` bytes of stdout and stderr together.
   * With a sink (streaming) kept output is also passed on, line by line as a terminal does. */
  class CellOutput {
    constructor(limit, sink) {
      this.limit = limit;
      this.sink = sink;
      this.stdout = [];
      this.stderr = [];
      this.used = 0;
      this.dropped = 0;
      this.partial = { stdout: '', stderr: '' };
    }

    write(name, text) {
      if (!text) return;
      text = text.toWellFormed(); // a lone surrogate would not survive UTF-8 on the host
      const size = Buffer.byteLength(text, 'utf8');
      const room = this.limit - this.used;
      if (size <= room) {
        this[name].push(text);
        this.used += size;
        if (this.sink) this.stream(name, text);
        return;
      }
      if (room > 0) {
        const bytes = Buffer.from(text, 'utf8');
        let cut = room;
        while (cut > 0 && (bytes[cut] & 0xc0) === 0x80) cut--; // not inside a character
        const head = bytes.subarray(0, cut).toString('utf8');
        this[name].push(head);
        this.used = this.limit;
        this.dropped += size - cut;
        if (this.sink && head) this.stream(name, head);
        return;
      }
      this.dropped += size;
    }

    stream(name, text) {
      const pending = this.partial[name] + text;
      const cut = pending.lastIndexOf('\n') + 1;
      if (cut) this.sink(name, pending.slice(0, cut));
      this.partial[name] = pending.slice(cut);
    }

    flushStream() {
      for (const name of ['stdout', 'stderr']) {
        if (this.partial[name] && this.sink) this.sink(name, this.partial[name]);
        this.partial[name] = '';
      }
    }

    /** A text result is capped at the output limit too (in characters, as the Python kernel). */
    bound(text) {
      text = text.toWellFormed();
      if (text.length <= this.limit) return text;
      let cut = this.limit;
      if (cut > 0 && /[\ud800-\udbff]/.test(text[cut - 1])) cut--;
      this.dropped += text.length - cut;
      return text.slice(0, cut);
    }

    finish() {
      let stderr = this.stderr.join('');
      if (this.dropped) stderr += truncationNote(this.dropped, this.limit);
      return { stdout: this.stdout.join(''), stderr, truncated: this.dropped > 0 };
    }
  }

  function decodeWrite(chunk, encoding) {
    if (typeof chunk === 'string') {
      if (typeof encoding === 'string' && !/^utf-?8$/i.test(encoding)) {
        return Buffer.from(chunk, encoding).toString('utf8');
      }
      return chunk;
    }
    if (ArrayBuffer.isView(chunk)) {
      return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString('utf8');
    }
    throw new TypeError('The "chunk" argument must be of type string or an instance of Buffer');
  }

  /** process.stdout / process.stderr: writes land in the running cell's output, synchronously
   * (so order is kept), and nowhere when no cell runs. fds 1 and 2 are never touched. */
  function captureStream(name, fdNumber) {
    const stream = new Writable({
      write(chunk, encoding, callback) {
        callback();
      },
    });
    stream.write = function write(chunk, encoding, callback) {
      if (typeof encoding === 'function') {
        callback = encoding;
        encoding = undefined;
      }
      const text = decodeWrite(chunk, encoding);
      if (current !== null) current.write(name, text);
      if (typeof callback === 'function') process.nextTick(callback, null);
      return true;
    };
    stream.fd = fdNumber;
    stream.isTTY = false;
    stream._isStdio = true;
    stream.end = function end(chunk, encoding, callback) {
      if (typeof chunk === 'function') callback = chunk;
      else if (chunk !== undefined && chunk !== null) this.write(chunk, encoding);
      if (typeof callback === 'function') process.nextTick(callback);
      return this; // like the real stdio streams, never closed
    };
    return stream;
  }

  // Before anything touches console: Node's own console (warnings) binds its streams lazily,
  // so it writes through these too.
  for (const [name, fdNumber] of [
    ['stdout', 1],
    ['stderr', 2],
  ]) {
    const stream = captureStream(name, fdNumber);
    Object.defineProperty(process, name, {
      configurable: true,
      enumerable: true,
      get: () => stream,
    });
  }
  // The cells' console never colours (the global one would with FORCE_COLOR set).
  const cellConsole = new console.Console({
    stdout: process.stdout,
    stderr: process.stderr,
    colorMode: false,
  });
  for (const key of Object.keys(console)) {
    if (!(key in cellConsole)) cellConsole[key] = console[key]; // Console, profile, ...
  }
  if (!('Console' in cellConsole)) cellConsole.Console = console.Console;
  globalThis.console = cellConsole;

  // -- sending --------------------------------------------------------------------------------

  function send(header) {
    const json = stringify(header);
    if (sender !== null) {
      sender.postMessage({ json });
      return;
    }
    const body = Buffer.from(json, 'utf8');
    const head = Buffer.allocUnsafe(4);
    head.writeUInt32BE(body.length, 0);
    socket.write(Buffer.concat([head, body]));
  }

  async function startSender() {
    if (sender !== null) return;
    if (socket.writableLength > 0) {
      // replies the main thread queued must be out before the worker writes
      await new NativePromise((resolve) => socket.once('drain', resolve));
    }
    sender = new Worker(KERNEL_FILE, { workerData: { fd }, stdout: true, stderr: true });
    sender.on('message', exit); // the socket is gone
    sender.on('error', () => process.exit(70));
    sender.on('exit', () => process.exit(70));
  }

  // -- errors ---------------------------------------------------------------------------------

  function safeString(value) {
    try {
      return typeof value === 'string' ? value : String(value);
    } catch {
      return '<unprintable>';
    }
  }

  function safeInspect(value) {
    try {
      return inspect(value);
    } catch {
      return '<unprintable>';
    }
  }

  /** The stack without the frames of this kernel and node:vm below the cell's own, and
   * without Node's internal frames (timers, the module loader). */
  function cleanStack(stack) {
    let lines = stack.split('\n');
    const isFrame = (line) => /^\s+at /.test(line);
    const cut = lines.findIndex(
      (line) => isFrame(line) && (line.includes('node:vm:') || line.includes(KERNEL_FILE)),
    );
    if (cut >= 0) lines = lines.slice(0, cut);
    lines = lines.filter((line) => !(isFrame(line) && line.includes('node:internal/')));
    return lines.join('\n').replace(ANSI, '').toWellFormed();
  }

  function isError(value) {
    try {
      return value instanceof NativeError || isNativeError(value);
    } catch {
      return false;
    }
  }

  /** Text for a thrown value: the cleaned stack of an Error, util.inspect of anything else. */
  function formatThrown(value) {
    if (isError(value)) {
      try {
        if (typeof value.stack === 'string') return cleanStack(value.stack);
      } catch {
        // a throwing stack getter: fall through
      }
      return `${safeString(value.name)}: ${safeString(value.message)}`;
    }
    return safeInspect(value).replace(ANSI, '').toWellFormed();
  }

  function describeError(value) {
    if (isError(value)) {
      let ename = 'Error';
      let evalue = '';
      try {
        ename = safeString(value.name) || 'Error';
        evalue = value.message === undefined ? '' : safeString(value.message);
      } catch {
        // getters that throw: keep the defaults
      }
      return { ename, evalue: evalue.toWellFormed(), traceback: formatThrown(value) };
    }
    let ename = value === null ? 'null' : typeof value;
    if (ename === 'object' || ename === 'function') {
      try {
        const ctor = Object.getPrototypeOf(value)?.constructor?.name;
        ename = typeof ctor === 'string' && ctor ? ctor : 'Object';
      } catch {
        ename = 'Object';
      }
    }
    const evalue = typeof value === 'string' ? value : safeInspect(value);
    return {
      ename,
      evalue: evalue.toWellFormed(),
      traceback: `Uncaught ${formatThrown(value)}`,
    };
  }

  const interruptedError = () => {
    const error = new NativeError(INTERRUPTED_MESSAGE);
    error.code = INTERRUPTED_CODE;
    return error;
  };

  const isInterrupt = (value) => {
    try {
      return isError(value) && value.code === INTERRUPTED_CODE;
    } catch {
      return false;
    }
  };

  // Errors of callbacks that outlive their statement (timers, unhandled rejections) must not
  // kill the session: they are reported on the running cell's stderr, dropped when idle.
  process.on('uncaughtException', (error) => {
    if (current !== null) current.write('stderr', `Uncaught ${formatThrown(error)}\n`);
  });
  process.on('unhandledRejection', (reason) => {
    if (current !== null) current.write('stderr', `Uncaught (in promise) ${formatThrown(reason)}\n`);
  });
  // SIGINT outside a script run (which vm handles itself): stop an awaited promise or a shell
  // command; between requests, nothing.
  process.on('SIGINT', () => {
    if (interrupt !== null) interrupt();
  });
  // import() in cells uses Node's default loader, which warns once that this is experimental.
  for (const listener of process.listeners('warning')) {
    process.removeListener('warning', listener);
    process.on('warning', (warning) => {
      const text = safeString(warning && warning.message);
      if (!text.includes('USE_MAIN_CONTEXT_DEFAULT_LOADER')) listener(warning);
    });
  }

  // -- top-level await ------------------------------------------------------------------------

  /** acorn and acorn-walk as bundled in the node binary (the REPL's own), or null. */
  function loadAcorn() {
    if (acorn !== undefined) return acorn;
    acorn = null;
    const quiet = process.noDeprecation;
    try {
      process.noDeprecation = true; // process.binding is deprecated (documentation only)
      const natives = process.binding('natives');
      const load = (id) => {
        const module = { exports: {} };
        vm.compileFunction(natives[id], ['exports', 'module'], { filename: `node:${id}` })(
          module.exports,
          module,
        );
        return module.exports;
      };
      const parser = load('internal/deps/acorn/acorn/dist/acorn').Parser;
      const walk = load('internal/deps/acorn/acorn-walk/dist/walk');
      if (typeof parser === 'function' && typeof walk.recursive === 'function') {
        acorn = { parser, walk };
      }
    } catch {
      acorn = null;
    } finally {
      process.noDeprecation = quiet;
    }
    return acorn;
  }

  /** Node's REPL rewrite for top-level await (lib/internal/repl/await.js, Node v20, MIT):
   * the cell becomes `(async () => { ... })()` returning `{ value: <last expression> }`, and
   * its top-level declarations are hoisted out of the function so they stay global. Returns
   * null when the cell has no top-level await (or has a top-level return). */
  function processTopLevelAwait(src, filename) {
    const { parser, walk } = acorn;
    const wrapPrefix = '(async () => { ';
    const wrapped = `${wrapPrefix}${src} })()`;
    const wrappedArray = wrapped.split('');
    let root;
    try {
      root = parser.parse(wrapped, { ecmaVersion: 'latest' });
    } catch (e) {
      // A parse error before the first "await" is V8's to report; after it, it is real.
      const awaitPos = src.indexOf('await');
      const errPos = e.pos - wrapPrefix.length;
      if (awaitPos > errPos) return null;
      if (errPos === awaitPos + 6 && e.message.includes('Expecting Unicode escape sequence')) {
        return null;
      }
      if (errPos === awaitPos + 7 && e.message.includes('Unexpected token')) return null;
      const line = e.loc.line;
      const column = line === 1 ? e.loc.column - wrapPrefix.length : e.loc.column;
      let message = e.message.replace(/ \([^)]+\)/, '');
      if (message.endsWith('Unexpected token')) {
        message += ` '${src[e.pos - wrapPrefix.length] ?? src[src.length - 1]}'`;
      }
      const error = new SyntaxError(message);
      const srcLine = src.split('\n')[line - 1] ?? '';
      error.stack = `${filename}:${line}\n${srcLine}\n${' '.repeat(column)}^\n\nSyntaxError: ${message}`;
      throw error;
    }
    const body = root.body[0].expression.callee.body;
    const state = {
      body,
      ancestors: [],
      hoisted: [],
      replace(from, to, str) {
        for (let i = from; i < to; i++) wrappedArray[i] = '';
        if (from === to) str += wrappedArray[from];
        wrappedArray[from] = str;
      },
      prepend(node, str) {
        wrappedArray[node.start] = str + wrappedArray[node.start];
      },
      append(node, str) {
        wrappedArray[node.end - 1] += str;
      },
      containsAwait: false,
      containsReturn: false,
    };
    const isTopLevel = (s) => s.ancestors[s.ancestors.length - 2] === s.body;
    const noop = () => {};
    const own = {
      ClassDeclaration(node, s, c) {
        if (isTopLevel(s)) {
          s.prepend(node, `${node.id.name}=`);
          s.hoisted.push(`let ${node.id.name}; `);
        }
        walk.base.ClassDeclaration(node, s, c);
      },
      ForOfStatement(node, s, c) {
        if (node.await === true) s.containsAwait = true;
        walk.base.ForOfStatement(node, s, c);
      },
      FunctionDeclaration(node, s) {
        s.prepend(node, `this.${node.id.name} = ${node.id.name}; `);
        s.hoisted.push(`var ${node.id.name}; `);
      },
      FunctionExpression: noop,
      ArrowFunctionExpression: noop,
      MethodDefinition: noop,
      AwaitExpression(node, s, c) {
        s.containsAwait = true;
        walk.base.AwaitExpression(node, s, c);
      },
      ReturnStatement(node, s, c) {
        s.containsReturn = true;
        walk.base.ReturnStatement(node, s, c);
      },
      VariableDeclaration(node, s, c) {
        const kind = node.kind;
        const parentType = s.ancestors[s.ancestors.length - 2].type;
        const inForHead = parentType === 'ForOfStatement' || parentType === 'ForInStatement';
        if (kind === 'var' || isTopLevel(s)) {
          s.replace(
            node.start,
            node.start + kind.length + (inForHead ? 1 : 0),
            kind === 'var' && inForHead ? '' : `void${node.declarations.length === 1 ? '' : ' ('}`,
          );
          if (!inForHead) {
            for (const decl of node.declarations) {
              s.prepend(decl, '(');
              s.append(decl, decl.init ? ')' : '=undefined)');
            }
            if (node.declarations.length !== 1) {
              s.append(node.declarations[node.declarations.length - 1], ')');
            }
          }
          const names = [];
          const collect = (target) => {
            if (!target) return;
            if (target.type === 'Identifier') names.push(target.name);
            else if (target.type === 'ObjectPattern') {
              for (const p of target.properties) collect(p.value || p.argument);
            } else if (target.type === 'ArrayPattern') {
              for (const el of target.elements) collect(el);
            } else if (target.type === 'AssignmentPattern') collect(target.left);
            else if (target.type === 'RestElement') collect(target.argument);
          };
          for (const decl of node.declarations) collect(decl.id);
          if (names.length) s.hoisted.push(`${kind === 'var' ? 'var' : 'let'} ${names.join(', ')}; `);
        }
        walk.base.VariableDeclaration(node, s, c);
      },
    };
    const visitors = {};
    for (const type of Object.keys(walk.base)) {
      const callback = own[type] || walk.base[type];
      visitors[type] = (node, s, c) => {
        const isNew = node !== s.ancestors[s.ancestors.length - 1];
        if (isNew) s.ancestors.push(node);
        callback(node, s, c);
        if (isNew) s.ancestors.pop();
      };
    }
    walk.recursive(body, state, visitors);
    if (!state.containsAwait || state.containsReturn) return null;
    for (let i = body.body.length - 1; i >= 0; i--) {
      const node = body.body[i];
      if (node.type === 'EmptyStatement') continue;
      if (node.type === 'ExpressionStatement') {
        // `{ value: ... }`: the caller must not mistake an awaited value's own .then for ours
        state.prepend(node.expression, '{ value: (');
        state.prepend(node, 'return ');
        state.append(node.expression, ') }');
      }
      break;
    }
    return state.hoisted.join('') + wrappedArray.join('');
  }

  // -- execute --------------------------------------------------------------------------------

  const scriptOptions = (filename) => ({
    filename,
    importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });

  /** The cell as a vm.Script; `wrapped` when it is the top-level-await rewrite. */
  function compile(code, filename) {
    if (/^\s*\{/.test(code) && !/;\s*$/.test(code)) {
      // `{a: 1}` means an object, not a block, as in the REPL
      try {
        return compileAs(`(${code}\n)`, filename);
      } catch {
        // a block after all
      }
    }
    return compileAs(code, filename);
  }

  function compileAs(code, filename) {
    if (code.includes('await') && loadAcorn() !== null) {
      const rewritten = processTopLevelAwait(code, filename);
      if (rewritten !== null) {
        return { script: new vm.Script(rewritten, scriptOptions(filename)), wrapped: true };
      }
    }
    return { script: new vm.Script(code, scriptOptions(filename)), wrapped: false };
  }

  function isThenable(value) {
    try {
      return (
        value !== null &&
        (typeof value === 'object' || typeof value === 'function') &&
        typeof value.then === 'function'
      );
    } catch {
      return false;
    }
  }

  /** Await a cell's promise; a SIGINT meanwhile rejects with the interrupt error. */
  function awaitInterruptibly(value) {
    return new NativePromise((resolve, reject) => {
      interrupt = () => reject(interruptedError());
      NativePromise.resolve(value).then(resolve, reject);
    }).finally(() => {
      interrupt = null;
    });
  }

  function limitOf(value) {
    const n = Number(value);
    return Number.isFinite(n) ? Math.max(0, Math.floor(n)) : DEFAULT_OUTPUT_LIMIT;
  }

  async function execute(request) {
    const code = request.code;
    if (typeof code !== 'string') return { op: 'bad-request', detail: 'code must be a string' };
    let sink = null;
    if (request.stream) {
      await startSender();
      const rid = Number.isInteger(request.id) ? request.id : -1;
      sink = (name, text) => sender.postMessage({ id: rid, name, text });
    }
    const out = new CellOutput(limitOf(request.output_limit), sink);
    const filename = `<cell${++cells}>`;
    const start = performance.now();
    let value;
    let error = null;
    let interrupted = false;
    current = out;
    try {
      const { script, wrapped } = compile(code, filename);
      value = script.runInThisContext({ displayErrors: true, breakOnSigint: true });
      if (wrapped) {
        const box = await awaitInterruptibly(value);
        value = box === undefined || box === null ? undefined : box.value;
      }
      if (isThenable(value)) value = await awaitInterruptibly(value);
    } catch (e) {
      interrupted = isInterrupt(e);
      error = describeError(e);
      value = undefined;
    }
    // One turn of the event loop: rejections left unhandled and microtask output land here.
    await new NativePromise((resolve) => setImmediate(resolve));
    let result = null;
    if (value !== undefined) {
      try {
        result = { 'text/plain': out.bound(inspect(value)) };
      } catch (e) {
        error = describeError(e);
      }
    }
    current = null;
    out.flushStream();
    const { stdout, stderr, truncated } = out.finish();
    return {
      op: 'result',
      status: error === null ? 'ok' : 'error',
      stdout,
      stderr,
      truncated,
      result,
      displays: [],
      error,
      interrupted,
      duration_ms: Math.round((performance.now() - start) * 1000) / 1000,
    };
  }

  // -- shell ----------------------------------------------------------------------------------

  function runShell(request) {
    const command = request.command;
    if (typeof command !== 'string') {
      return NativePromise.resolve({ op: 'bad-request', detail: 'command must be a string' });
    }
    const out = new CellOutput(limitOf(request.output_limit), null);
    const start = performance.now();
    return new NativePromise((resolve) => {
      let interrupted = false;
      let done = false;
      const finish = (exitCode) => {
        if (done) return;
        done = true;
        interrupt = null;
        const { stdout, stderr, truncated } = out.finish();
        resolve({
          op: 'shell_result',
          exit_code: exitCode,
          stdout,
          stderr,
          truncated,
          interrupted,
          duration_ms: Math.round((performance.now() - start) * 1000) / 1000,
        });
      };
      let child;
      try {
        child = spawn('/bin/sh', ['-c', command], {
          cwd: process.cwd(),
          detached: true, // its own process group: an interrupt kills all of it
          stdio: ['ignore', 'pipe', 'pipe'],
        });
      } catch (e) {
        out.write('stderr', `${formatThrown(e)}\n`);
        finish(127);
        return;
      }
      const killGroup = () => {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      };
      for (const name of ['stdout', 'stderr']) {
        const decoder = new StringDecoder('utf8');
        child[name].on('data', (data) => out.write(name, decoder.write(data)));
        child[name].on('end', () => out.write(name, decoder.end()));
      }
      child.on('error', (e) => {
        out.write('stderr', `${formatThrown(e)}\n`);
        if (child.pid !== undefined) killGroup();
        finish(127);
      });
      child.on('close', (code, signal) => {
        const number = signal ? os.constants.signals[signal] : undefined;
        finish(code !== null ? code : 128 + (number ?? 0));
      });
      interrupt = () => {
        interrupted = true;
        if (child.pid !== undefined) killGroup();
      };
    });
  }

  // -- the loop -------------------------------------------------------------------------------

  const requests = [];
  let serving = false;

  /** Named namespaces (E2B's code contexts) are an IPython kernel feature: refuse, do not
   * silently run the cell in the default namespace. */
  function noContexts() {
    const text = 'named code contexts are not supported by the Node.js kernel';
    return {
      op: 'result', status: 'error', stdout: '', stderr: '', truncated: false, result: null,
      displays: [], error: { ename: 'ContextError', evalue: text, traceback: text },
      interrupted: false, duration_ms: 0,
    };
  }

  async function handle(request) {
    const op = request.op;
    let reply;
    if (op === 'execute' && request.context) reply = noContexts();
    else if (op === 'execute') reply = await execute(request);
    else if (op === 'shell') reply = await runShell(request);
    else if (op === 'ping') reply = { op: 'pong' };
    else if (op === 'exit') process.exit(0);
    else reply = { op: 'bad-request', detail: `unknown op ${safeInspect(op)}` };
    reply.id = request.id === undefined ? null : request.id;
    send(reply);
  }

  /** One request at a time, in order (the host never sends the next before the reply). */
  async function serve() {
    if (serving) return;
    serving = true;
    while (requests.length) {
      const request = requests.shift();
      try {
        await handle(request);
      } catch (e) {
        const detail = `kernel error: ${formatThrown(e)}`;
        send({ op: 'bad-request', id: request.id === undefined ? null : request.id, detail });
      }
    }
    serving = false;
  }

  // Frames in: a list of received chunks, read from only once a whole piece is there.
  const chunks = [];
  let buffered = 0;
  let need = 4;
  let stage = 'length'; // 'length' | 'header' | 'blob-length' | 'blob'
  let blobsLeft = 0;
  let header = null;

  function take(n) {
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = chunks[0];
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (k === c.length) chunks.shift();
      else chunks[0] = c.subarray(k);
    }
    buffered -= n;
    return out;
  }

  function onData(data) {
    chunks.push(data);
    buffered += data.length;
    while (buffered >= need) {
      const piece = take(need);
      if (stage === 'length' || stage === 'blob-length') {
        const size = piece.readUInt32BE(0);
        const max = stage === 'length' ? MAX_HEADER : MAX_REQUEST;
        if (size > max) exit(); // a protocol violation: as the Python kernel, give up
        stage = stage === 'length' ? 'header' : 'blob';
        need = size;
        continue;
      }
      if (stage === 'header') {
        try {
          header = parseJSON(piece.toString('utf8'));
        } catch {
          exit();
        }
        const nblobs = header !== null && typeof header === 'object' ? (header.nblobs ?? 0) : -1;
        if (Array.isArray(header) || !Number.isInteger(nblobs) || nblobs < 0 || nblobs > MAX_BLOBS) {
          exit();
        }
        blobsLeft = nblobs;
      } else {
        blobsLeft--; // requests carry no blobs the kernel uses
      }
      if (blobsLeft > 0) {
        stage = 'blob-length';
        need = 4;
        continue;
      }
      requests.push(header);
      header = null;
      stage = 'length';
      need = 4;
      serve();
    }
  }

  // require() in cells resolves from the working directory, like a script placed there.
  let cwd = '/';
  try {
    cwd = process.cwd();
  } catch {
    // a deleted working directory: resolve from the root
  }
  globalThis.require = createRequire(path.join(cwd, '<cell>'));
  socket.on('data', onData);
  send({ op: 'ready', pid: process.pid, uid: process.getuid() });
}
