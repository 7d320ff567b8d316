"use strict";
// Wire-level behaviour: strict JSON, errors on the wire, HTTP/1.1 and h2c on
// one port, gRPC-Web, unix sockets, auth, call counts, the address file.
const { test, describe, before, after } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const http = require("node:http");
const http2 = require("node:http2");
const { Code } = require("@connectrpc/connect");
const { State } = require("../lib/schema");
const h = require("./helpers");

const SVC = "/coreweave.sandbox.v1.SandboxService/";

// A raw HTTP/1.1 Connect unary call.
function post1(url, rpc, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const data = typeof body === "string" ? body : JSON.stringify(body);
    const req = http.request(
      { host: u.hostname, port: u.port, path: SVC + rpc, method: "POST", headers: { "content-type": "application/json", "connect-protocol-version": "1", ...headers } },
      (res) => {
        let b = "";
        res.on("data", (d) => (b += d));
        res.on("end", () => resolve({ status: res.statusCode, body: b ? JSON.parse(b) : null, headers: res.headers }));
      },
    );
    req.on("error", reject);
    req.end(data);
  });
}

// A raw h2c (prior knowledge) Connect unary call.
function post2(url, rpc, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const s = http2.connect(url);
    s.on("error", reject);
    const req = s.request({ ":method": "POST", ":path": SVC + rpc, "content-type": "application/json", ...headers });
    let b = "";
    let status;
    req.on("response", (hd) => (status = hd[":status"]));
    req.on("data", (d) => (b += d));
    req.on("end", () => {
      s.close();
      resolve({ status, body: b ? JSON.parse(b) : null });
    });
    req.end(JSON.stringify(body));
  });
}

function getCalls(url) {
  return new Promise((resolve, reject) => {
    http.get(url + "/_local/calls", (res) => {
      let b = "";
      res.on("data", (d) => (b += d));
      res.on("end", () => resolve(JSON.parse(b)));
    }).on("error", reject);
  });
}

describe("open server", () => {
  let srv;
  before(async () => {
    srv = await h.startServer();
  });
  after(async () => {
    await srv.stop();
  });

  test("prints its URL and writes the address file", async () => {
    assert.match(srv.url, /^http:\/\/127\.0\.0\.1:[0-9]+$/);
    assert.equal(fs.readFileSync(srv.addrFile, "utf8").trim(), srv.url);
  });

  test("strict JSON: unknown fields are invalid_argument, on both HTTP versions", async () => {
    for (const post of [post1, post2]) {
      const r = await post(srv.url, "GetSandbox", { sandboxId: "x", sandboxID: "y" });
      assert.equal(r.status, 400);
      assert.equal(r.body.code, "invalid_argument");
      const nested = await post(srv.url, "CreateSandbox", { sandbox: { spec: { containers: [{ name: "main", image: "i", cmd: "x" }] } } });
      assert.equal(nested.body.code, "invalid_argument");
      const bad = await post(srv.url, "GetSandbox", "{not json");
      assert.equal(bad.body.code, "invalid_argument");
    }
  });

  test("JSON mapping: int64 as strings out, numbers or strings in, enums by name or number", async () => {
    const c = await post1(srv.url, "CreateSandbox", { sandbox: { spec: { containers: [{ name: "main", image: "python:3.11" }], maxLifetimeSeconds: "120" } } });
    assert.equal(c.status, 200);
    assert.equal(c.body.status.state, "STATE_PENDING");
    assert.equal(c.body.status.effectiveMaxLifetimeSeconds, 120);
    const id = c.body.sandboxId;
    for (let i = 0; i < 200; i++) {
      const g = await post1(srv.url, "GetSandbox", { sandboxId: id });
      if (g.body.status.state === "STATE_RUNNING") break;
      await new Promise((r) => setTimeout(r, 10));
    }
    const l = await post1(srv.url, "ListSandboxes", { state: 2 });
    assert.ok(l.body.sandboxes.some((s) => s.sandboxId === id));
    const l2 = await post1(srv.url, "ListSandboxes", { state: "STATE_RUNNING" });
    assert.ok(l2.body.sandboxes.some((s) => s.sandboxId === id));
    const e = await post1(srv.url, "Exec", { sandboxId: id, command: ["sh", "-c", "printf abc; printf d >&2"] });
    assert.equal(e.body.stdout, "YWJj");
    assert.equal(e.body.stdoutBytesProduced, "3");
    assert.equal(e.body.exitCode, undefined); // default values are omitted
    // URL-safe, unpadded base64 accepted
    const w = await post1(srv.url, "WriteFile", { sandboxId: id, path: "/tmp/u", content: "-_8" });
    assert.equal(w.status, 200);
    const r = await post1(srv.url, "ReadFile", { sandboxId: id, path: "/tmp/u" });
    assert.equal(r.body.content, "+/8=");
    await post1(srv.url, "DeleteSandbox", { sandboxId: id });
  });

  test("errors on the wire: status, code, ErrorInfo detail", async () => {
    const r = await post1(srv.url, "GetSandbox", { sandboxId: "missing" });
    assert.equal(r.status, 404);
    assert.equal(r.body.code, "not_found");
    assert.equal(r.body.details[0].type, "google.rpc.ErrorInfo");
    // the detail is binary google.rpc.ErrorInfo: field 1 reason, field 2 domain
    const { fromBinary } = require("@bufbuild/protobuf");
    const { ErrorInfo } = require("../lib/schema");
    const info = fromBinary(ErrorInfo, Buffer.from(r.body.details[0].value, "base64"));
    assert.equal(info.reason, "CWSANDBOX_SANDBOX_NOT_FOUND");
    assert.equal(info.domain, "cwsandbox.com");
    const t = await post1(srv.url, "CreateSandboxFromTemplate", { templateId: "x" });
    assert.equal(t.status, 501);
    assert.equal(t.body.code, "unimplemented");
  });

  test("gRPC-Web and Connect over HTTP/1.1 work too", async () => {
    for (const kind of ["grpc-web", "connect-json-h1"]) {
      const c = h.client(srv.url, kind);
      const sb = await h.newSandbox(c);
      assert.equal(sb.status.state, State.RUNNING);
      const r = await c.exec({ sandboxId: sb.sandboxId, command: ["echo", kind] });
      assert.equal(Buffer.from(r.stdout).toString(), kind + "\n");
      const logs = [];
      for await (const e of c.streamLogs({ sandboxId: sb.sandboxId })) logs.push(e);
      assert.equal(logs.length, 0);
      await c.deleteSandbox({ sandboxId: sb.sandboxId });
    }
  });

  test("call counts per rpc", async () => {
    await fetch(srv.url + "/_local/calls", { method: "DELETE" });
    const c = h.client(srv.url, "connect-json");
    const sb = await h.newSandbox(c);
    const before = await getCalls(srv.url);
    assert.equal(before.CreateSandbox, 1);
    for (let i = 0; i < 3; i++) await c.exec({ sandboxId: sb.sandboxId, command: ["true"] });
    await h.collectExec(c, { sandboxId: sb.sandboxId, command: ["true"] });
    await post1(srv.url, "Exec", { bogus: 1 }); // refused, still a call
    const after = await getCalls(srv.url);
    assert.equal(after.Exec, 4);
    assert.equal(after.StreamExec, 1);
    assert.equal(after.CreateSandbox, 1);
    assert.equal(after.GetSandbox, before.GetSandbox);
    assert.equal(after.ReadFile, 0);
    await c.deleteSandbox({ sandboxId: sb.sandboxId });
  });
});

describe("api key", () => {
  let srv;
  before(async () => {
    srv = await h.startServer([], { env: { CWSB_API_KEY: "s3cret" } });
  });
  after(async () => {
    await srv.stop();
  });

  for (const kind of h.KINDS) {
    test(`unauthenticated without the key (${kind})`, async () => {
      for (const headers of [{}, { authorization: "Bearer wrong" }, { "x-wandb-api-key": "wrong" }, { authorization: "s3cret" }]) {
        const c = h.client(srv.url, kind, headers);
        try {
          await c.listSandboxes({});
          assert.fail("expected unauthenticated");
        } catch (e) {
          assert.equal(h.errorInfo(e).code, Code.Unauthenticated);
        }
      }
      // streams too
      const c = h.client(srv.url, kind);
      await assert.rejects(async () => {
        for await (const _ of c.streamLogs({ sandboxId: "x" }));
      }, (e) => h.errorInfo(e).code === Code.Unauthenticated);
    });

    test(`accepted with Bearer or x-wandb-api-key (${kind})`, async () => {
      for (const headers of [{ authorization: "Bearer s3cret" }, { "x-wandb-api-key": "s3cret", "x-entity-id": "e", "x-project-name": "p" }]) {
        const c = h.client(srv.url, kind, headers);
        const l = await c.listSandboxes({});
        assert.ok(Array.isArray(l.sandboxes));
      }
    });
  }

  test("raw HTTP status 401", async () => {
    const r = await post1(srv.url, "ListSandboxes", {});
    assert.equal(r.status, 401);
    assert.equal(r.body.code, "unauthenticated");
  });
});

describe("unix socket", () => {
  let srv;
  const sock = `/tmp/cwsb-test-${process.pid}.sock`;
  before(async () => {
    srv = await h.startServer([], { listen: `unix:${sock}` });
  });
  after(async () => {
    await srv.stop();
    assert.equal(fs.existsSync(sock), false, "socket removed at exit");
  });

  test("serves HTTP/1.1 and h2c on the socket", async () => {
    assert.equal(srv.url, `unix:${sock}`);
    assert.equal(fs.readFileSync(srv.addrFile, "utf8").trim(), `unix:${sock}`);
    for (const kind of ["connect-json-h1", "connect-json", "grpc"]) {
      const c = h.client(srv.url, kind);
      const sb = await h.newSandbox(c);
      if (kind === "connect-json-h1") {
        // bidirectional streams need HTTP/2: the Connect handler answers 505
        const r = await c.exec({ sandboxId: sb.sandboxId, command: ["echo", "via unix"] });
        assert.equal(Buffer.from(r.stdout).toString(), "via unix\n");
        await assert.rejects(h.collectExec(c, { sandboxId: sb.sandboxId, command: ["true"] }), /505|EPIPE|ECONNRESET/);
      } else {
        const r = await h.collectExec(c, { sandboxId: sb.sandboxId, command: ["sh", "-c", "cat"] }, [Buffer.from("via unix")]);
        assert.equal(r.stdout.toString(), "via unix");
      }
      await c.deleteSandbox({ sandboxId: sb.sandboxId });
    }
  });
});
