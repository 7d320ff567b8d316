#!/usr/bin/env node
// cwsandbox-local: the CoreWeave Sandbox API served on this machine.
// See README.md for the options and the semantics.
"use strict";
const fs = require("node:fs");
const fsp = require("node:fs/promises");
const net = require("node:net");
const http = require("node:http");
const http2 = require("node:http2");
const path = require("node:path");
const { connectNodeAdapter } = require("@connectrpc/connect-node");

const USAGE = `usage: server.js [--listen HOST:PORT|unix:PATH] [--state-dir DIR] [options]
  --listen ADDR          HOST:PORT (port 0 picks a free one) or unix:PATH; default the
                         private socket $CWSB_SOCKET, else /run/cwsandbox-local/api.sock
                         (root) or $XDG_RUNTIME_DIR/cwsandbox-local/api.sock
  --state-dir DIR        where sandbox layers, volumes and snapshots live; default
                         $CWSB_STATE_DIR, else /var/lib/cwsandbox-local/state (root) or
                         $XDG_STATE_HOME/cwsandbox-local
  --api-key-file FILE    require the key in FILE (mode 0600; else $CWSB_API_KEY) as
                         "Authorization: Bearer KEY" or "x-wandb-api-key: KEY"
  --idle-exit S          exit after S seconds with no live sandbox and no client
                         connection (default 0: never)
  --image-store DIR      the OCI image store (default $CWSB_IMAGE_STORE or
                         /var/lib/cwsandbox-local/images)
  --address-file FILE    write the URL there (atomically) once listening
  --default-lifetime S   maxLifetimeSeconds when a spec sets none (3600)
  --max-lifetime S       upper bound of maxLifetimeSeconds (86400)
  --default-memory Q     memory limit when a spec sets none (4Gi)
  --default-cpu Q        cpu limit when a spec sets none (1)
  --pids-limit N         pids.max of every sandbox (4096)
  --max-sandboxes N      sandboxes running at once (1000)
  --quiet                no per-call log lines`;

function parseArgs(argv) {
  const o = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const eq = a.indexOf("=");
    let key = a,
      val;
    if (a.startsWith("--") && eq > 0) {
      key = a.slice(0, eq);
      val = a.slice(eq + 1);
    }
    const need = () => {
      if (val !== undefined) return val;
      if (i + 1 >= argv.length) die(`${key} needs a value`);
      return argv[++i];
    };
    switch (key) {
      case "--listen":
        o.listen = need();
        break;
      case "--state-dir":
        o.stateDir = need();
        break;
      case "--api-key":
        die("--api-key is refused: a key on the command line is visible to every user (ps); put it in a file only you can read and give --api-key-file FILE, or set CWSB_API_KEY");
        break;
      case "--api-key-file":
        o.apiKeyFile = need();
        break;
      case "--idle-exit":
        o.idleExit = Number(need());
        if (!Number.isInteger(o.idleExit) || o.idleExit < 0) die(`--idle-exit takes whole seconds (got ${val ?? argv[i]})`);
        break;
      case "--image-store":
        o.imageStore = need();
        break;
      case "--address-file":
        o.addressFile = need();
        break;
      case "--default-lifetime":
        o.defaultLifetime = +need();
        break;
      case "--max-lifetime":
        o.maxLifetime = +need();
        break;
      case "--default-memory":
        o.defaultMemory = need();
        break;
      case "--default-cpu":
        o.defaultCpu = need();
        break;
      case "--pids-limit":
        o.pidsLimit = +need();
        break;
      case "--max-sandboxes":
        o.maxSandboxes = +need();
        break;
      case "--quiet":
        o.quiet = true;
        break;
      case "-h":
      case "--help":
        process.stdout.write(USAGE + "\n");
        process.exit(0);
        break;
      default:
        die(`unknown argument ${a}\n${USAGE}`);
    }
  }
  return o;
}

function die(msg) {
  process.stderr.write(`cwsandbox-local: ${msg}\n`);
  process.exit(2);
}

function logLine(s) {
  process.stderr.write(`cwsandbox-local: ${s}\n`);
}

// gen/ holds the compiled schema and helper. Build it when it is missing (a
// fresh checkout), and restore the helper's execute bit, which a plain file
// copy (such as an install step) may drop.
function ensureBuilt() {
  const gen = path.join(__dirname, "gen");
  const helper = path.join(gen, "sbx-helper");
  if (!fs.existsSync(path.join(gen, "sandbox.binpb")) || !fs.existsSync(helper)) {
    logLine("gen/ is missing: building it (protoc and cc)");
    try {
      require("node:child_process").execFileSync(process.execPath, [path.join(__dirname, "scripts", "build.js")], { stdio: ["ignore", 2, 2] });
    } catch (e) {
      logLine(`build failed: ${e.message}; run "npm run build" in ${__dirname}`);
      process.exit(1);
    }
  }
  try {
    fs.accessSync(helper, fs.constants.X_OK);
  } catch {
    fs.chmodSync(helper, 0o755);
  }
}

const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

async function main() {
  // A reader of our output that went away must not kill the server (and leave
  // its sandboxes' files behind): ignore EPIPE on stdout and stderr.
  process.stdout.on("error", () => {});
  process.stderr.on("error", () => {});
  const opts = parseArgs(process.argv.slice(2));
  const L = require("./lib/listen");
  const { makeGate, dropUnreadAfterAnswer, BODY_MAX } = require("./lib/gate");
  let apiKey;
  try {
    apiKey = L.readApiKey(opts.apiKeyFile);
  } catch (e) {
    die(e.message);
  }
  // Without --listen: the well-known private socket, in a 0700 directory, with a pid
  // file beside it (cwsfs finds the backend there and starts it when absent).
  let sockPath = null,
    pidFile = null;
  try {
    if (!opts.listen) {
      sockPath = L.defaultSocket();
      L.checkSocketPath(sockPath);
      L.privateDir(path.dirname(sockPath));
      pidFile = path.join(path.dirname(sockPath), "backend.pid");
    } else if (opts.listen.startsWith("unix:")) {
      sockPath = path.resolve(opts.listen.slice(5));
      L.checkSocketPath(sockPath);
    }
  } catch (e) {
    die(e.message);
  }
  ensureBuilt();
  // Loaded here so that --help works without a build.
  const { SandboxService } = require("./lib/schema");
  const { Manager, TERMINAL } = require("./lib/manager");
  const { makeService } = require("./lib/service");
  const { ConnectError } = require("./lib/errors");
  const { Code } = require("@connectrpc/connect");

  // Calls per rpc since start.
  const calls = {};
  for (const mth of SandboxService.methods) calls[mth.name] = 0;

  const codeName = (c) => (c === undefined ? "ok" : Code[c].replace(/[A-Z]/g, (x, i) => (i ? "_" : "") + x.toLowerCase()));

  const { createContextKey, createContextValues } = require("@connectrpc/connect");
  const kCall = createContextKey(null);
  const interceptor = (next) => async (req) => {
    const name = req.method.name;
    const rec = req.contextValues.get(kCall) || {};
    rec.logged = true;
    const t0 = process.hrtime.bigint();
    const done = (err) => {
      if (opts.quiet) return;
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      const ce = err ? ConnectError.from(err) : null;
      logLine(`call ${name} ${ce ? codeName(ce.code) : "ok"} ${ms.toFixed(1)}ms${ce ? " " + JSON.stringify(ce.rawMessage) : ""}`);
    };
    try {
      const res = await next(req);
      if (!res.stream) {
        done();
        return res;
      }
      const inner = res.message;
      return {
        ...res,
        message: (async function* () {
          try {
            yield* inner;
            done();
          } catch (e) {
            done(e);
            throw e;
          }
        })(),
      };
    } catch (e) {
      done(e);
      throw e;
    }
  };

  // The manager exists once the listener holds the address (see below); calls that
  // arrive before wait in `pending`.
  let manager = null;
  const shutdown = new AbortController();
  // every call's signal listens to this one
  require("node:events").setMaxListeners(0, shutdown.signal);
  let rpc = null;
  const gate = makeGate({ apiKey });

  const handler = (req, res) => {
    const url = req.url || "";
    if (url === "/_local/calls" || url.startsWith("/_local/calls?")) {
      if (req.method === "DELETE" || req.method === "POST") {
        for (const k of Object.keys(calls)) calls[k] = 0;
      }
      const body = JSON.stringify(calls) + "\n";
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    if (url === "/_local/health") {
      res.writeHead(200, { "content-type": "text/plain" });
      res.end("ok\n");
      return;
    }
    // Count every call, also those refused before they reach the service
    // (malformed requests, no key); log those here with their HTTP status.
    const m = /^\/coreweave\.sandbox\.v1\.SandboxService\/([A-Za-z]+)(\?|$)/.exec(url);
    if (m && m[1] in calls) {
      calls[m[1]]++;
      const rec = { logged: false };
      req.__cwCall = rec;
      const t0 = process.hrtime.bigint();
      res.once("close", () => {
        if (rec.logged || opts.quiet) return;
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        logLine(`call ${m[1]} refused http=${res.statusCode} ${ms.toFixed(1)}ms`);
      });
    }
    if (gate(req, res)) return;
    dropUnreadAfterAnswer(req, res);
    rpc(req, res);
  };

  const h1 = http.createServer({ keepAliveTimeout: 60000, requestTimeout: 0 }, handler);
  // Large windows: a 32 MiB WriteFile should not wait for hundreds of
  // WINDOW_UPDATE round trips.
  const h2 = http2.createServer({ settings: { maxConcurrentStreams: 1000, initialWindowSize: 16 * 1024 * 1024 } }, handler);
  h2.on("session", (s) => {
    s.on("localSettings", () => {});
    try {
      s.setLocalWindowSize(64 * 1024 * 1024);
    } catch {}
  });
  h2.on("sessionError", () => {});
  const sockets = new Set();
  // One listener for HTTP/1.1 and h2c with prior knowledge: peek at the preface.
  // noDelay: streamed output is many small writes; Nagle would hold each one back
  // until the client's delayed ACK (tens of ms).
  const serve = (sock) => {
    let buf = Buffer.alloc(0);
    const onData = (d) => {
      buf = Buffer.concat([buf, d]);
      const n = Math.min(buf.length, H2_PREFACE.length);
      const isH2 = buf.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
      if (isH2 && buf.length < H2_PREFACE.length) return;
      sock.removeListener("data", onData);
      sock.pause();
      sock.unshift(buf);
      (isH2 ? h2 : h1).emit("connection", sock);
      process.nextTick(() => sock.resume());
    };
    sock.on("data", onData);
  };
  // Connections accepted while the manager starts wait unread.
  let pending = [];
  const server = net.createServer({ noDelay: true, pauseOnConnect: true }, (sock) => {
    sockets.add(sock);
    lastBusy = Date.now();
    sock.on("close", () => {
      sockets.delete(sock);
      lastBusy = Date.now();
    });
    sock.on("error", () => {});
    if (pending) pending.push(sock);
    else {
      serve(sock);
      sock.resume();
    }
  });

  // A signal before stop() below exists (the socket may already be bound) is kept and
  // acted on once it does: never the default action, which would leave the socket.
  let earlySignal = null;
  const early = (sig) => (earlySignal = earlySignal || sig);
  for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"]) process.on(sig, early);

  // Claim the address first: a second backend on the same socket must refuse before
  // it touches a state directory the first one uses.
  let address, sockIno;
  try {
    if (sockPath) {
      sockIno = await L.listenUnix(server, sockPath);
      address = `unix:${sockPath}`;
    } else {
      const m = /^(.*):([0-9]+)$/.exec(opts.listen);
      if (!m) die(`bad --listen ${opts.listen}`);
      const host = m[1].replace(/^\[|\]$/g, "") || "127.0.0.1";
      await new Promise((resolve, reject) => server.once("error", reject).listen(+m[2], host, resolve));
      const a = server.address();
      address = `http://${a.family === "IPv6" ? `[${a.address}]` : a.address}:${a.port}`;
      if (!apiKey) logLine(`warning: listening on TCP ${address} without an API key: every local user, and every sandbox (they share the host's network), can create sandboxes here; prefer a unix socket or give --api-key-file`);
    }
  } catch (e) {
    die(e.message);
  }
  const removeSocket = () => {
    if (!sockPath) return;
    try {
      if (fs.statSync(sockPath).ino === sockIno) fs.rmSync(sockPath, { force: true });
    } catch {}
  };
  if (pidFile) fs.writeFileSync(pidFile, `${process.pid}\n`, { mode: 0o600 });
  const removePidFile = () => {
    if (!pidFile) return;
    try {
      if (fs.readFileSync(pidFile, "utf8").trim() === String(process.pid)) fs.rmSync(pidFile, { force: true });
    } catch {}
  };
  // From here a signal stops cleanly, also while the manager is still starting.
  let stateDir = null,
    createdStateDir = false;
  let stopping = false;
  let initDone = null;
  const stop = async (why) => {
    if (stopping) return;
    stopping = true;
    logLine(`${why}: stopping every sandbox`);
    server.close();
    shutdown.abort(new ConnectError("server shutting down", Code.Unavailable));
    // A start in progress finishes first: a shutdown racing it would remove the state
    // directory under it (and its failure would then exit 1 on a clean stop).
    if (initDone) await initDone.catch(() => {});
    if (manager) await manager.shutdown().catch((e) => logLine(`shutdown: ${e.message}`));
    for (const s of sockets) s.destroy();
    removeSocket();
    removePidFile();
    // (only if it is still ours: a new server may have taken the name)
    if (opts.addressFile) {
      const cur = await fsp.readFile(opts.addressFile, "utf8").catch(() => "");
      if (cur.trim() === address) await fsp.rm(opts.addressFile, { force: true });
    }
    if (createdStateDir && stateDir)
      await fsp
        .rm(stateDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 })
        .catch((e) => logLine(`could not remove the state directory: ${e.message}`));
    process.exit(0);
  };
  process.on("uncaughtException", (e) => {
    logLine(`internal error: ${e.stack || e}`);
    stop("internal error");
  });
  process.on("SIGPIPE", () => {});
  for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"]) {
    process.removeListener(sig, early);
    process.on(sig, () => stop(sig));
  }
  if (earlySignal) stop(earlySignal);

  const failStart = async (msg, stateDir, created) => {
    logLine(msg);
    server.close();
    for (const s of sockets) s.destroy();
    removeSocket();
    removePidFile();
    if (created) await fsp.rm(stateDir, { recursive: true, force: true });
    process.exit(1);
  };

  stateDir = path.resolve(opts.stateDir || L.defaultStateDir());
  createdStateDir = !fs.existsSync(stateDir);
  try {
    await fsp.mkdir(stateDir, { recursive: true, mode: 0o700 });
  } catch (e) {
    await failStart(`cannot make the state directory: ${e.message}`, stateDir, false);
  }

  manager = new Manager({
    stateDir,
    imageStore: opts.imageStore ? path.resolve(opts.imageStore) : undefined,
    log: logLine,
    defaultLifetime: opts.defaultLifetime,
    maxLifetime: opts.maxLifetime,
    defaultMemory: opts.defaultMemory,
    defaultCpu: opts.defaultCpu,
    pidsLimit: opts.pidsLimit,
    maxSandboxes: opts.maxSandboxes,
  });
  try {
    await (initDone = manager.init());
  } catch (e) {
    if (stopping) return; // stop() finishes the exit
    await failStart(e.message, stateDir, createdStateDir);
  }
  if (stopping) return; // a signal came during the start: stop() finishes the exit
  rpc = connectNodeAdapter({
    routes: (router) => router.service(SandboxService, makeService(manager)),
    interceptors: [interceptor],
    jsonOptions: { ignoreUnknownFields: false },
    contextValues: (req) => createContextValues().set(kCall, req.__cwCall),
    // per message; the gate refuses a larger declared body before reading it
    readMaxBytes: BODY_MAX,
    shutdownSignal: shutdown.signal,
  });
  for (const sock of pending) {
    serve(sock);
    sock.resume();
  }
  pending = null;

  if (opts.addressFile) {
    const tmp = `${opts.addressFile}.tmp.${process.pid}`;
    await fsp.writeFile(tmp, address + "\n");
    await fsp.rename(tmp, opts.addressFile);
  }
  process.stdout.write(`cwsandbox-local listening on ${address}\n`);
  if (pidFile) logLine(`pid ${process.pid} (${pidFile}), state in ${stateDir}${opts.idleExit ? `, exits after ${opts.idleExit} s idle` : ""}`);

  // --idle-exit: a backend cwsfs started goes away once nothing uses it. Busy = a
  // sandbox that has not ended, or any open client connection (a mount holds one).
  if (opts.idleExit > 0) {
    const tick = Math.min(1000, opts.idleExit * 250);
    setInterval(() => {
      let live = sockets.size > 0;
      if (!live) for (const sb of manager.sandboxes.values()) if (!TERMINAL.has(sb.state)) live = true;
      if (live) lastBusy = Date.now();
      else if (Date.now() - lastBusy >= opts.idleExit * 1000) stop(`idle for ${opts.idleExit} s (no live sandbox, no client)`);
    }, tick).unref();
  }
}

let lastBusy = Date.now();

main().catch((e) => {
  logLine(e.stack || String(e));
  process.exit(1);
});
