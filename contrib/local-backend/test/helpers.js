"use strict";
// Shared by the tests and the bench: start a server, make clients.
const { spawn } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { createClient } = require("@connectrpc/connect");
const { createConnectTransport, createGrpcTransport, createGrpcWebTransport } = require("@connectrpc/connect-node");
const { SandboxService, msg } = require("../lib/schema");

const SERVER = path.join(__dirname, "..", "server.js");

// listen: null starts it without --listen (the well-known socket of env); env: added
// to the server's environment.
async function startServer(extraArgs = [], { listen = "127.0.0.1:0", env = {} } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cwsb-test-"));
  fs.chmodSync(dir, 0o711);
  const stateDir = path.join(dir, "state");
  const addrFile = path.join(dir, "addr");
  const args = [SERVER, ...(listen ? ["--listen", listen] : []), "--state-dir", stateDir, "--address-file", addrFile];
  const proc = spawn(process.execPath, [...args, ...(process.env.CWSB_VERBOSE ? [] : ["--quiet"]), ...extraArgs], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, CWSB_NO_PULL: "1", ...env }, // only loopback, ever
  });
  let stderr = "";
  proc.stderr.on("data", (d) => (stderr += d));
  if (process.env.CWSB_SERVER_LOG) proc.stderr.pipe(fs.createWriteStream(process.env.CWSB_SERVER_LOG, { flags: "a" }));
  let stdout = "";
  const url = await new Promise((resolve, reject) => {
    proc.stdout.on("data", (d) => {
      stdout += d;
      const m = /cwsandbox-local listening on (\S+)\n/.exec(stdout);
      if (m) resolve(m[1]);
    });
    proc.on("exit", (code) => reject(new Error(`server exited with ${code}: ${stderr}`)));
  });
  const srv = {
    proc,
    url,
    dir,
    stateDir,
    addrFile,
    get stderr() {
      return stderr;
    },
    async stop() {
      if (proc.exitCode !== null) return proc.exitCode;
      const done = new Promise((r) => proc.once("exit", (code) => r(code)));
      proc.kill("SIGTERM");
      const code = await done;
      // what the server left behind, for the tests to look at
      srv.stateLeft = fs.existsSync(stateDir);
      srv.addrFileLeft = fs.existsSync(addrFile);
      fs.rmSync(dir, { recursive: true, force: true });
      return code;
    },
  };
  return srv;
}

// Clients of every flavour. kind: connect-json | connect-binary | grpc | grpc-web | connect-json-h1
function client(url, kind = "connect-json", headers = {}) {
  const interceptors = [
    (next) => async (req) => {
      for (const [k, v] of Object.entries(headers)) req.header.set(k, v);
      return next(req);
    },
  ];
  let baseUrl = url;
  const nodeOptions = {};
  if (url.startsWith("unix:")) {
    const socketPath = url.slice(5);
    baseUrl = "http://localhost";
    nodeOptions.createConnection = () => require("node:net").connect(socketPath);
    nodeOptions.socketPath = socketPath;
  }
  const common = { baseUrl, interceptors, nodeOptions };
  let transport;
  switch (kind) {
    case "connect-json":
      transport = createConnectTransport({ ...common, httpVersion: "2", useBinaryFormat: false });
      break;
    case "connect-json-h1":
      transport = createConnectTransport({ ...common, httpVersion: "1.1", useBinaryFormat: false });
      break;
    case "connect-binary":
      transport = createConnectTransport({ ...common, httpVersion: "2", useBinaryFormat: true });
      break;
    case "grpc":
      transport = createGrpcTransport({ ...common, httpVersion: "2" });
      break;
    case "grpc-web":
      transport = createGrpcWebTransport({ ...common, httpVersion: "1.1" });
      break;
    default:
      throw new Error(kind);
  }
  return createClient(SandboxService, transport);
}

const KINDS = ["connect-json", "connect-binary", "grpc"];

async function waitState(c, id, states, timeoutMs = 10000) {
  const want = new Set([].concat(states));
  const t0 = Date.now();
  for (;;) {
    const sb = await c.getSandbox({ sandboxId: id });
    if (want.has(sb.status.state)) return sb;
    if (Date.now() - t0 > timeoutMs) throw new Error(`sandbox ${id} still in state ${sb.status.state}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function spec(extra = {}, container = {}) {
  return {
    containers: [{ name: "main", image: "python:3.11", ...container }],
    primaryContainer: "main",
    ...extra,
  };
}

async function newSandbox(c, extra, container) {
  const { State } = require("../lib/schema");
  const sb = await c.createSandbox({ sandbox: { spec: spec(extra, container) } });
  return waitState(c, sb.sandboxId, [State.RUNNING, State.FAILED, State.COMPLETED]);
}

async function collectExec(c, init, stdinChunks = [], opts = {}) {
  async function* reqs() {
    yield { message: { case: "init", value: init } };
    for (const ch of stdinChunks) yield { message: { case: "stdin", value: ch } };
    yield { message: { case: "close", value: {} } };
  }
  const out = { stdout: [], stderr: [], events: [], exitCode: null };
  for await (const r of c.streamExec(reqs(), opts)) {
    const m = r.message;
    out.events.push(m.case);
    if (m.case === "output") (m.value.stream === 1 ? out.stdout : out.stderr).push(Buffer.from(m.value.data));
    if (m.case === "exit") out.exitCode = m.value.exitCode;
    if (m.case === "error") out.error = m.value;
  }
  out.stdout = Buffer.concat(out.stdout);
  out.stderr = Buffer.concat(out.stderr);
  return out;
}

function errorInfo(err) {
  const { ConnectError } = require("@connectrpc/connect");
  const ce = ConnectError.from(err);
  const d = ce.findDetails(msg("google.rpc.ErrorInfo"));
  return { code: ce.code, reason: d[0] && d[0].reason, domain: d[0] && d[0].domain, message: ce.rawMessage };
}

module.exports = { startServer, client, KINDS, waitState, spec, newSandbox, collectExec, errorInfo };
