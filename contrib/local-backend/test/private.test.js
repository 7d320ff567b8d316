"use strict";
// The long-lived private backend: the well-known socket (mode, directory, one server
// per socket, no TCP fallback), the key from a file or the environment (never argv),
// authentication and the body bound judged before a body is read, --idle-exit.
const { test, describe, before, after } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const http = require("node:http");
const http2 = require("node:http2");
const net = require("node:net");
const os = require("node:os");
const path = require("node:path");
const { spawn, spawnSync } = require("node:child_process");
const { Code } = require("@connectrpc/connect");
const h = require("./helpers");
const L = require("../lib/listen");

const SERVER = path.join(__dirname, "..", "server.js");
const SVC = "/coreweave.sandbox.v1.SandboxService/";
const MiB = 1024 * 1024;

function rssKiB(pid, field = "VmRSS") {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return +m[1];
}

// POST `size` bytes of zeros (declared in content-length unless chunked) over
// HTTP/1.1; resolves with the status, or the error once the server dropped it.
function bigPost1(url, rpc, size, headers = {}, { chunked = false } = {}) {
  return new Promise((resolve) => {
    const u = new URL(url);
    const hd = { "content-type": "application/json", ...headers };
    if (!chunked) hd["content-length"] = size;
    const req = http.request({ host: u.hostname, port: u.port, path: SVC + rpc, method: "POST", headers: hd });
    let status = null,
      body = "";
    req.on("response", (res) => {
      status = res.statusCode;
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status, body }));
      res.on("error", () => resolve({ status, body }));
    });
    req.on("error", (e) => resolve({ status, body, error: e.code }));
    const chunk = Buffer.alloc(MiB);
    let sent = 0;
    const pump = () => {
      while (sent < size) {
        const n = Math.min(MiB, size - sent);
        sent += n;
        if (!req.write(n === MiB ? chunk : chunk.subarray(0, n))) return req.once("drain", pump);
      }
      req.end();
    };
    pump();
  });
}

// The same over h2c with prior knowledge.
function bigPost2(url, rpc, size, headers = {}, { noLength = false } = {}) {
  return new Promise((resolve) => {
    const s = http2.connect(url);
    s.on("error", () => {});
    const req = s.request({ ":method": "POST", ":path": SVC + rpc, "content-type": "application/json", ...(noLength ? {} : { "content-length": size }), ...headers });
    let status = null;
    req.on("response", (hd) => (status = hd[":status"]));
    req.on("data", () => {});
    const fin = (error) => {
      s.destroy();
      resolve({ status, error });
    };
    req.on("close", () => fin());
    req.on("error", (e) => fin(e.code));
    const chunk = Buffer.alloc(MiB);
    let sent = 0;
    const pump = () => {
      while (sent < size && !req.destroyed) {
        sent += MiB;
        if (!req.write(chunk)) return req.once("drain", pump);
      }
      if (!req.destroyed) req.end();
    };
    pump();
  });
}

function run(args, env = {}, timeout = 20000) {
  return spawnSync(process.execPath, [SERVER, ...args], { encoding: "utf8", timeout, env: { ...process.env, ...env } });
}

// others may pass through: sandboxes' roots are mounted below state dirs in here
function tmpdir() {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "cwsb-priv-"));
  fs.chmodSync(d, 0o711);
  return d;
}

describe("the key never on argv", () => {
  test("--api-key is refused, naming the replacements", () => {
    for (const args of [["--api-key", "k"], ["--api-key=k"]]) {
      const r = run([...args, "--listen", "127.0.0.1:0"]);
      assert.equal(r.status, 2);
      assert.match(r.stderr, /--api-key-file/);
      assert.match(r.stderr, /CWSB_API_KEY/);
      assert.equal(r.stdout, "");
    }
  });

  test("--api-key-file readable by others is refused", () => {
    const d = tmpdir();
    const f = path.join(d, "key");
    fs.writeFileSync(f, "k\n", { mode: 0o644 });
    fs.chmodSync(f, 0o644);
    const r = run(["--api-key-file", f, "--listen", "127.0.0.1:0"]);
    fs.rmSync(d, { recursive: true });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /readable by group or others/);
  });

  test("--api-key-file (0600, trailing newline stripped) is the key", async () => {
    const d = tmpdir();
    const f = path.join(d, "key");
    fs.writeFileSync(f, "filekey\n", { mode: 0o600 });
    const srv = await h.startServer(["--api-key-file", f]);
    try {
      await assert.rejects(h.client(srv.url, "connect-json", { authorization: "Bearer wrong" }).listSandboxes({}), (e) => h.errorInfo(e).code === Code.Unauthenticated);
      const l = await h.client(srv.url, "connect-json", { authorization: "Bearer filekey" }).listSandboxes({});
      assert.ok(Array.isArray(l.sandboxes));
    } finally {
      await srv.stop();
      fs.rmSync(d, { recursive: true });
    }
  });

  test("TCP without a key warns on stderr", async () => {
    const srv = await h.startServer();
    try {
      assert.match(srv.stderr, /warning: listening on TCP .* without an API key/);
    } finally {
      await srv.stop();
    }
  });
});

describe("refused before the body is read", () => {
  let srv;
  before(async () => {
    srv = await h.startServer([], { env: { CWSB_API_KEY: "s3cret" } });
  });
  after(async () => {
    await srv.stop();
  });

  test("six unauthenticated 99 MiB posts (HTTP/1.1 and h2c) do not grow the server", async () => {
    const pid = srv.proc.pid;
    const rss0 = rssKiB(pid);
    const hwm0 = rssKiB(pid, "VmHWM");
    const t0 = Date.now();
    const rs = await Promise.all([0, 1, 2].map(() => bigPost1(srv.url, "WriteFile", 99 * MiB)).concat([0, 1, 2].map(() => bigPost2(srv.url, "WriteFile", 99 * MiB))));
    const ms = Date.now() - t0;
    for (const r of rs) assert.ok(r.status === 401 || r.status === "401" || r.status === 200 || r.error, JSON.stringify(r));
    assert.ok(rs.some((r) => r.status === 401), "at least one 401 came back: " + JSON.stringify(rs));
    const rss1 = rssKiB(pid);
    const hwm1 = rssKiB(pid, "VmHWM");
    console.log(`# RSS ${rss0} -> ${rss1} KiB, peak ${hwm0} -> ${hwm1} KiB, 6 x 99 MiB refused in ${ms} ms`);
    assert.ok(hwm1 - hwm0 < 48 * 1024, `peak RSS grew by ${hwm1 - hwm0} KiB`);
    // still serving
    const l = await h.client(srv.url, "connect-json", { authorization: "Bearer s3cret" }).listSandboxes({});
    assert.ok(Array.isArray(l.sandboxes));
  });

  test("an authenticated body over the bound is resource_exhausted, before it is read", async () => {
    const auth = { authorization: "Bearer s3cret" };
    // h2: the answer arrives whole, then the stream is cancelled
    const r2 = await bigPost2(srv.url, "WriteFile", 70 * MiB, auth);
    assert.equal(r2.status, 413, JSON.stringify(r2));
    // HTTP/1.1: the answer, or a reset when the connection is torn down under it
    const r1 = await bigPost1(srv.url, "WriteFile", 70 * MiB, auth);
    assert.ok(r1.status === 413 || ["ECONNRESET", "EPIPE"].includes(r1.error), JSON.stringify(r1));
    if (r1.status === 413) assert.equal(JSON.parse(r1.body).code, "resource_exhausted");
    // no content-length: the adapter's per-message bound
    const c = await bigPost1(srv.url, "WriteFile", 70 * MiB, auth, { chunked: true });
    assert.ok(c.status >= 400 || c.error, JSON.stringify(c));
    if (c.body) assert.equal(JSON.parse(c.body).code, "resource_exhausted");
    // h2 without content-length: the adapter's per-message bound, answered whole
    const r3 = await bigPost2(srv.url, "WriteFile", 70 * MiB, auth, { noLength: true });
    assert.equal(r3.status, 429, JSON.stringify(r3));
    // a WriteFile of the 32 MiB file cap still fits (as base64 in JSON)
    const cl = h.client(srv.url, "connect-json", auth);
    await assert.rejects(cl.writeFile({ sandboxId: "x", path: "/f", content: Buffer.alloc(32 * MiB) }), (e) => h.errorInfo(e).code === Code.NotFound);
    // gRPC: trailers-only with grpc-status 16 without the key
    await assert.rejects(h.client(srv.url, "grpc").listSandboxes({}), (e) => h.errorInfo(e).code === Code.Unauthenticated);
  });
});

describe("the well-known socket", () => {
  test("CWSB_SOCKET: socket 0600 in a 0700 directory, pid file; a second server refuses; SIGTERM removes both", async () => {
    const d = tmpdir();
    const sock = path.join(d, "run", "api.sock");
    const env = { CWSB_SOCKET: sock };
    const srv = await h.startServer([], { listen: null, env });
    try {
      assert.equal(srv.url, `unix:${sock}`);
      assert.equal(fs.statSync(sock).mode & 0o777, 0o600);
      assert.equal(fs.statSync(path.dirname(sock)).mode & 0o777, 0o700);
      assert.equal(fs.readFileSync(path.join(d, "run", "backend.pid"), "utf8").trim(), String(srv.proc.pid));
      const r = run(["--state-dir", path.join(d, "state2")], env);
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /already listens on/);
      assert.equal(fs.existsSync(path.join(d, "state2")), false, "the second server made no state");
      const l = await h.client(srv.url, "connect-json").listSandboxes({});
      assert.ok(Array.isArray(l.sandboxes), "the first still serves");
    } finally {
      assert.equal(await srv.stop(), 0);
    }
    assert.equal(fs.existsSync(sock), false, "socket removed");
    assert.equal(fs.existsSync(path.join(d, "run", "backend.pid")), false, "pid file removed");
    fs.rmSync(d, { recursive: true });
  });

  test("a stale socket file is replaced", async () => {
    const d = tmpdir();
    fs.chmodSync(d, 0o700);
    const sock = path.join(d, "api.sock");
    // a dead server's socket: the file stays, nobody accepts
    spawnSync("python3", ["-c", `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(sock)})`]);
    assert.ok(fs.lstatSync(sock).isSocket());
    const srv = await h.startServer([], { listen: null, env: { CWSB_SOCKET: sock } });
    assert.equal(srv.url, `unix:${sock}`);
    await srv.stop();
    fs.rmSync(d, { recursive: true });
  });

  test("a path too long for a unix socket is an error, never TCP", () => {
    const d = tmpdir();
    const sock = path.join(d, "x".repeat(120), "api.sock");
    for (const r of [run([], { CWSB_SOCKET: sock }), run(["--listen", `unix:${sock}`, "--state-dir", path.join(d, "s")])]) {
      assert.equal(r.status, 2);
      assert.match(r.stderr, /more than a unix socket can have/);
      assert.doesNotMatch(r.stdout + r.stderr, /listening on http/);
    }
    fs.rmSync(d, { recursive: true });
  });

  test("a directory open to others is refused", () => {
    const d = tmpdir();
    fs.chmodSync(d, 0o755);
    const r = run([], { CWSB_SOCKET: path.join(d, "api.sock") });
    fs.rmSync(d, { recursive: true });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /open to group or others/);
  });

  test("defaults: root's paths, XDG for others, an error without XDG_RUNTIME_DIR", () => {
    assert.equal(L.defaultSocket({}, 0), "/run/cwsandbox-local/api.sock");
    assert.equal(L.defaultSocket({ XDG_RUNTIME_DIR: "/run/user/1000" }, 1000), "/run/user/1000/cwsandbox-local/api.sock");
    assert.throws(() => L.defaultSocket({}, 1000), /XDG_RUNTIME_DIR is not set/);
    assert.equal(L.defaultStateDir({}, 0), "/var/lib/cwsandbox-local/state");
    assert.equal(L.defaultStateDir({ HOME: "/home/u" }, 1000), "/home/u/.local/state/cwsandbox-local");
    assert.equal(L.defaultStateDir({ XDG_STATE_HOME: "/s" }, 1000), "/s/cwsandbox-local");
  });
});

describe("--idle-exit", () => {
  test("stays while a client is connected, exits 0 by itself once idle", async () => {
    const d = tmpdir();
    const sock = path.join(d, "r", "api.sock");
    const proc = spawn(process.execPath, [SERVER, "--idle-exit", "2", "--state-dir", path.join(d, "state"), "--quiet"], { env: { ...process.env, CWSB_SOCKET: sock }, stdio: ["ignore", "pipe", "pipe"] });
    let err = "";
    proc.stderr.on("data", (b) => (err += b));
    const exited = new Promise((r) => proc.once("exit", (code) => r(code)));
    await new Promise((r) => proc.stdout.once("data", r));
    const held = net.connect(sock);
    await new Promise((r) => held.once("connect", r));
    await new Promise((r) => setTimeout(r, 3500));
    assert.equal(proc.exitCode, null, "exited while a client was connected");
    const t0 = Date.now();
    held.destroy();
    const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r("still running"), 8000))]);
    if (code === "still running") proc.kill("SIGKILL");
    assert.equal(code, 0, err);
    const ms = Date.now() - t0;
    assert.ok(ms >= 1500, `exited ${ms} ms after the client left, before the idle time`);
    assert.match(err, /idle for 2 s/);
    assert.equal(fs.existsSync(sock), false, "socket removed");
    fs.rmSync(d, { recursive: true });
  });
});
