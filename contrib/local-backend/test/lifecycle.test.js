"use strict";
// Lifecycle, the main command, spec features, images.
const { test, describe, before, after } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const os = require("node:os");
const { execFileSync } = require("node:child_process");
const { State } = require("../lib/schema");
const h = require("./helpers");

const out = (r) => Buffer.from(r.stdout).toString();

async function logText(c, id) {
  const parts = [];
  for await (const e of c.streamLogs({ sandboxId: id })) parts.push(Buffer.from(e.data));
  return Buffer.concat(parts).toString();
}

describe("lifecycle", () => {
  let srv, c;
  before(async () => {
    srv = await h.startServer();
    c = h.client(srv.url, "connect-json");
  });
  after(async () => {
    await srv.stop();
  });

  test("PENDING, then RUNNING; times in order", async () => {
    const sb = await c.createSandbox({ sandbox: { spec: h.spec() } });
    assert.equal(sb.status.state, State.PENDING);
    const seen = [State.PENDING];
    for (;;) {
      const g = await c.getSandbox({ sandboxId: sb.sandboxId });
      if (seen.at(-1) !== g.status.state) seen.push(g.status.state);
      if (g.status.state === State.RUNNING) {
        const ct = Number(g.status.createTime.seconds) * 1e3 + g.status.createTime.nanos / 1e6;
        const st = Number(g.status.startTime.seconds) * 1e3 + g.status.startTime.nanos / 1e6;
        assert.ok(st >= ct);
        break;
      }
      assert.ok([State.PENDING, State.CREATING].includes(g.status.state));
      await new Promise((r) => setTimeout(r, 2));
    }
    assert.deepEqual(seen.filter((s) => s !== State.CREATING), [State.PENDING, State.RUNNING]);
    await c.deleteSandbox({ sandboxId: sb.sandboxId });
  });

  test("30 sandboxes created at once all reach RUNNING, with their output", async () => {
    const made = await Promise.all(
      Array.from({ length: 30 }, (_, i) => c.createSandbox({ sandbox: { spec: h.spec({ tags: ["burst"] }, { command: "/bin/sh", args: ["-c", `echo hello ${i}; trap "exit 0" TERM; sleep 1000 & wait`] }) } })),
    );
    const running = await Promise.all(made.map((sb) => h.waitState(c, sb.sandboxId, State.RUNNING, 20000)));
    assert.equal(running.length, 30);
    for (let i = 0; i < 30; i++) {
      let t = "";
      for (let k = 0; k < 100 && !t; k++) {
        t = await logText(c, made[i].sandboxId);
        if (!t) await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(t, `hello ${i}\n`);
    }
    const p = await c.purgeSandboxes({ tags: ["burst"] });
    assert.equal(p.purgeCount, 30);
  });

  test("main process exit: COMPLETED with 0, FAILED with its code", async () => {
    const ok = await c.createSandbox({ sandbox: { spec: h.spec({}, { command: "/bin/sh", args: ["-c", "echo done"] }) } });
    const bad = await c.createSandbox({ sandbox: { spec: h.spec({}, { command: "/bin/sh", args: ["-c", "exit 3"] }) } });
    const okEnd = await h.waitState(c, ok.sandboxId, [State.COMPLETED, State.FAILED]);
    assert.equal(okEnd.status.state, State.COMPLETED);
    assert.equal(okEnd.status.exitCode, 0);
    assert.ok(okEnd.status.endTime);
    const badEnd = await h.waitState(c, bad.sandboxId, [State.COMPLETED, State.FAILED]);
    assert.equal(badEnd.status.state, State.FAILED);
    assert.equal(badEnd.status.exitCode, 3);
    assert.equal(await logText(c, ok.sandboxId), "done\n");
    // an ended sandbox is terminal: hidden from the default list
    const l = await c.listSandboxes({});
    assert.ok(!l.sandboxes.some((s) => s.sandboxId === ok.sandboxId));
    const m = await c.createSandbox({ sandbox: { spec: h.spec({}, { command: "/no/such/cmd" }) } });
    const mEnd = await h.waitState(c, m.sandboxId, [State.FAILED, State.COMPLETED]);
    assert.equal(mEnd.status.state, State.FAILED);
    assert.match(mEnd.status.stateReason, /no\/such\/cmd/);
  });

  test("main command gets env and workingDir; args alone are the command", async () => {
    const sb = await c.createSandbox({
      sandbox: { spec: h.spec({}, { args: ["/bin/sh", "-c", 'echo "$GREETING from $(pwd)"; echo err >&2'], environmentVariables: { GREETING: "hi" }, workingDir: "/work/dir" }) },
    });
    await h.waitState(c, sb.sandboxId, State.COMPLETED);
    const t = await logText(c, sb.sandboxId);
    assert.match(t, /hi from \/work\/dir\n/);
    assert.match(t, /err\n/);
  });

  test("maxLifetimeSeconds is enforced", async () => {
    const sb = await c.createSandbox({ sandbox: { spec: h.spec({ maxLifetimeSeconds: 1 }) } });
    const r = await h.waitState(c, sb.sandboxId, State.RUNNING);
    assert.equal(r.status.effectiveMaxLifetimeSeconds, 1);
    const t = await h.waitState(c, sb.sandboxId, State.TERMINATED, 5000);
    assert.equal(t.status.stateReason, "max lifetime exceeded");
    const life = Number(t.status.endTime.seconds - t.status.createTime.seconds);
    assert.ok(life >= 0 && life <= 3, `lived ${life}s`);
  });

  test("delete: SIGTERM, then SIGKILL after the grace period", async () => {
    // pid 1 without a SIGTERM handler ignores SIGTERM, as in any container
    const sb = await h.newSandbox(c, {}, { command: "sleep", args: ["1000"] });
    const t0 = Date.now();
    const d = await c.deleteSandbox({ sandboxId: sb.sandboxId, gracePeriodSeconds: 1 });
    assert.equal(d.sandbox.status.state, State.TERMINATING);
    const t = await h.waitState(c, sb.sandboxId, State.TERMINATED, 15000);
    const ms = Date.now() - t0;
    assert.ok(ms >= 900, `stopped after ${ms} ms, before the grace period ended`);
    assert.equal(t.status.exitCode, 137);
    // the keep-alive handles SIGTERM and stops long before the 30 s grace period ends;
    // exit code 0, not 137, says SIGTERM (not SIGKILL) ended it
    const k = await h.newSandbox(c);
    await c.deleteSandbox({ sandboxId: k.sandboxId, gracePeriodSeconds: 30 });
    const kt = await h.waitState(c, k.sandboxId, State.TERMINATED, 15000);
    assert.equal(kt.status.exitCode, 0);
  });

  test("container files are mounted read-only", async () => {
    const sb = await h.newSandbox(c, {}, { files: [{ path: "/etc/app/config.json", content: Buffer.from('{"a":1}') }, { path: "/opt/x/run.sh", content: Buffer.from("echo ran") }] });
    const r = await c.exec({ sandboxId: sb.sandboxId, command: ["sh", "-c", "cat /etc/app/config.json; echo; sh /opt/x/run.sh; echo x > /etc/app/config.json 2>/dev/null || echo read-only"] });
    assert.equal(out(r), '{"a":1}\nran\nread-only\n');
    const f = await c.readFile({ sandboxId: sb.sandboxId, path: "/etc/app/config.json" });
    assert.equal(Buffer.from(f.content).toString(), '{"a":1}');
    await assert.rejects(c.writeFile({ sandboxId: sb.sandboxId, path: "/etc/app/config.json", content: Buffer.from("x") }), (e) => h.errorInfo(e).reason === "CWSANDBOX_FILE_PERMISSION_DENIED");
    await c.deleteSandbox({ sandboxId: sb.sandboxId });
  });

  test("scratch volumes: shared between mounts, subPath, readOnly", async () => {
    const sb = await h.newSandbox(
      c,
      { volumes: [{ name: "v", source: { case: "scratch", value: {} } }] },
      {
        volumeMounts: [
          { volume: "v", mountPath: "/data" },
          { volume: "v", mountPath: "/sub", subPath: "inner" },
          { volume: "v", mountPath: "/ro", readOnly: true },
        ],
      },
    );
    const r = await c.exec({ sandboxId: sb.sandboxId, command: ["sh", "-c", "echo hi > /sub/f; cat /data/inner/f /ro/inner/f; touch /ro/x 2>/dev/null || echo ro"] });
    assert.equal(out(r), "hi\nhi\nro\n");
    await c.deleteSandbox({ sandboxId: sb.sandboxId });
  });

  test("unsupported spec parts are refused", async () => {
    const bad = [
      [h.spec({ volumes: [{ name: "p", source: { case: "volumeId", value: "vol-1" } }] }), "CWSANDBOX_NOT_IMPLEMENTED"],
      [{ containers: [{ name: "a", image: "i" }, { name: "b", image: "i" }] }, "CWSANDBOX_NOT_IMPLEMENTED"],
      [h.spec({}, { volumeMounts: [{ volume: "nope", mountPath: "/x" }] }), "CWSANDBOX_INVALID_REQUEST"],
      [h.spec({}, { files: [{ path: "relative", content: Buffer.from("") }] }), "CWSANDBOX_INVALID_REQUEST"],
      [{ containers: [{ name: "main" }] }, "CWSANDBOX_INVALID_REQUEST"],
    ];
    for (const [spec, reason] of bad) {
      await assert.rejects(c.createSandbox({ sandbox: { spec } }), (e) => h.errorInfo(e).reason === reason);
    }
  });
});

describe("images from an OCI layout", () => {
  let srv, c, work, store;
  before(async () => {
    // A tiny image made here: dash, sleep and the C library, packed by umoci as an
    // OCI layout, imported into a store of its own.
    work = fs.mkdtempSync(path.join(os.tmpdir(), "cwsb-images-"));
    store = path.join(work, "store");
    const root = path.join(work, "rootfs");
    const sh = fs.realpathSync("/bin/sh");
    const sleep = fs.realpathSync("/bin/sleep");
    const libs = [...execFileSync("ldd", [sh, sleep]).toString().matchAll(/(\/[^\s:]+) \(0x/g)].map((m) => m[1]);
    for (const f of [sh, sleep, ...libs]) {
      const real = fs.realpathSync(f);
      for (const dst of new Set([f, real])) {
        fs.mkdirSync(path.join(root, path.dirname(dst)), { recursive: true });
        fs.copyFileSync(real, path.join(root, dst));
        fs.chmodSync(path.join(root, dst), 0o755);
      }
    }
    fs.mkdirSync(path.join(root, "bin"), { recursive: true });
    for (const [src, name] of [[sh, "sh"], [sleep, "sleep"]]) {
      if (!fs.existsSync(path.join(root, "bin", name))) fs.copyFileSync(src, path.join(root, "bin", name));
      fs.chmodSync(path.join(root, "bin", name), 0o755);
    }
    fs.writeFileSync(path.join(root, "marker"), "tiny image\n");
    execFileSync("tar", ["-C", root, "-cf", path.join(work, "layer.tar"), "."]);
    const layout = path.join(work, "layout");
    execFileSync("umoci", ["init", "--layout", layout]);
    execFileSync("umoci", ["new", "--image", `${layout}:tiny`]);
    execFileSync("umoci", ["raw", "add-layer", "--image", `${layout}:tiny`, path.join(work, "layer.tar")]);
    execFileSync(process.execPath, [path.join(__dirname, "..", "image.js"), "--store", store, "import", `oci:${layout}:tiny`, "local/tiny:1"]);
    srv = await h.startServer(["--image-store", store]);
    c = h.client(srv.url, "connect-binary");
  });
  after(async () => {
    await srv.stop();
    fs.rmSync(work, { recursive: true, force: true });
  });

  test("an imported image runs, read-only underneath; an image the store lacks fails the sandbox, naming it", async () => {
    const tiny = await h.newSandbox(c, {}, { image: "local/tiny:1" });
    assert.equal(tiny.status.state, State.RUNNING);
    const r = await c.exec({ sandboxId: tiny.sandboxId, command: ["/bin/sh", "-c", "read l < /marker; echo $l; [ -e /usr/bin/python3 ] && echo python || echo no-python"] });
    assert.equal(out(r), "tiny image\nno-python\n");
    await c.writeFile({ sandboxId: tiny.sandboxId, path: "/new.txt", content: Buffer.from("n") });
    const rootfs = fs.readdirSync(path.join(store, "rootfs"));
    assert.equal(rootfs.length, 1);
    assert.equal(fs.existsSync(path.join(store, "rootfs", rootfs[0], "new.txt")), false, "the image stays read-only");
    // never the host's root: an image that is nowhere is a failed sandbox
    const missing = await h.newSandbox(c, {}, { image: "127.0.0.1:1/nowhere:1" });
    assert.equal(missing.status.state, State.FAILED);
    assert.match(missing.status.stateReason, /127\.0\.0\.1:1\/nowhere:1/);
  });
});
