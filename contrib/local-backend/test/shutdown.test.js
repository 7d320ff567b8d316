"use strict";
// SIGTERM stops every sandbox and leaves no process, mount or directory behind.
const { test } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const { State } = require("../lib/schema");
const h = require("./helpers");

function processesMentioning(s) {
  const found = [];
  for (const p of fs.readdirSync("/proc")) {
    if (!/^[0-9]+$/.test(p)) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${p}/cmdline`, "utf8").replace(/\0/g, " ");
      if (cmd.includes(s)) found.push(`${p}: ${cmd}`);
    } catch {}
  }
  return found;
}

test("SIGTERM: every sandbox stopped, nothing left behind", async () => {
  const srv = await h.startServer();
  const pid = srv.proc.pid;
  const c = h.client(srv.url, "connect-json");
  const marker = `marker-${process.pid}-${Date.now()}`;
  const sbs = await Promise.all([
    h.newSandbox(c),
    h.newSandbox(c, {}, { command: "sleep", args: ["1000"] }), // ignores SIGTERM: needs the SIGKILL
    h.newSandbox(c, { volumes: [{ name: "v", source: { case: "scratch", value: {} } }], network: { denyEgress: true } }, { volumeMounts: [{ volume: "v", mountPath: "/v" }] }),
  ]);
  for (const sb of sbs) assert.equal(sb.status.state, State.RUNNING);
  // a long exec, a follower and a snapshot are in flight
  const pending = c.exec({ sandboxId: sbs[0].sandboxId, command: ["sh", "-c", `sleep 1000 # ${marker}`] }).catch((e) => e);
  const follow = (async () => {
    try {
      for await (const _ of c.streamLogs({ sandboxId: sbs[0].sandboxId, follow: true }));
    } catch (e) {
      return e;
    }
  })();
  await c.createFileSystemSnapshot({ sandboxId: sbs[2].sandboxId, scratchVolumeName: "v" });
  await new Promise((r) => setTimeout(r, 200));
  assert.ok(processesMentioning(marker).length > 0);
  const cgroups = fs.readdirSync("/sys/fs/cgroup/pids").filter((d) => d === `cwsandbox-local-${pid}`);
  assert.equal(cgroups.length, 1);

  const t0 = Date.now();
  const code = await srv.stop();
  const ms = Date.now() - t0;
  assert.equal(code, 0);
  assert.ok(ms < 30000, `stopped in ${ms} ms`);
  await pending;
  await follow;
  assert.deepEqual(processesMentioning(marker), []);
  assert.deepEqual(processesMentioning(srv.stateDir), []);
  assert.deepEqual(processesMentioning(`cwsandbox-local-${pid}/`), []);
  assert.equal(srv.stateLeft, false, "state directory removed");
  assert.equal(srv.addrFileLeft, false, "address file removed");
  for (const ctl of ["memory", "pids", "cpu"]) assert.equal(fs.existsSync(`/sys/fs/cgroup/${ctl}/cwsandbox-local-${pid}`), false, `${ctl} cgroup removed`);
  assert.doesNotMatch(fs.readFileSync("/proc/self/mountinfo", "utf8"), new RegExp(srv.dir));
});

// What a killed server left: nothing of it runs, is mounted or has a cgroup.
async function assertServerGone(pid, markers) {
  const gone = () =>
    markers.every((m) => processesMentioning(m).length === 0) &&
    !fs.readFileSync("/proc/self/mountinfo", "utf8").includes(` cwsandbox-local-${pid} `) &&
    !fs.existsSync(`/sys/fs/cgroup/pids/cwsandbox-local-${pid}`);
  for (let i = 0; i < 100 && !gone(); i++) await new Promise((r) => setTimeout(r, 100));
  for (const m of markers) assert.deepEqual(processesMentioning(m), [], "sandbox processes of the killed server");
  assert.doesNotMatch(fs.readFileSync("/proc/self/mountinfo", "utf8"), new RegExp(` cwsandbox-local-${pid} `), "roots of the killed server");
  assert.equal(fs.existsSync(`/sys/fs/cgroup/pids/cwsandbox-local-${pid}`), false, "cgroup of the killed server");
}

async function serverWithWork(tag) {
  const srv = await h.startServer();
  const c = h.client(srv.url, "connect-json");
  const markers = [`${tag}-main-${process.pid}-${Date.now()}`, `${tag}-exec-${process.pid}-${Date.now()}`];
  const sb = await h.newSandbox(c, {}, { command: "sh", args: ["-c", `trap '' TERM; sleep 1000; : ${markers[0]}`] });
  assert.equal(sb.status.state, State.RUNNING);
  c.exec({ sandboxId: sb.sandboxId, command: ["sh", "-c", `sleep 1000; : ${markers[1]}`] }).catch(() => {});
  for (let i = 0; i < 50 && processesMentioning(markers[1]).length === 0; i++) await new Promise((r) => setTimeout(r, 100));
  for (const m of markers) assert.ok(processesMentioning(m).length > 0, m);
  return { srv, markers };
}

function killHard(proc) {
  const exited = new Promise((r) => proc.once("exit", r));
  proc.kill("SIGKILL");
  return exited;
}

test("SIGKILL of the server: its zygote ends the sandboxes, detaches their roots, removes their cgroups", async () => {
  const { srv, markers } = await serverWithWork("killed");
  await killHard(srv.proc);
  await assertServerGone(srv.proc.pid, markers);
  fs.rmSync(srv.dir, { recursive: true, force: true });
});

test("a server killed with its zygote: the next server ends what it left", async () => {
  const { srv, markers } = await serverWithWork("orphaned");
  const zygotes = fs
    .readdirSync("/proc")
    .filter((p) => /^[0-9]+$/.test(p))
    .filter((p) => {
      try {
        return fs.readFileSync(`/proc/${p}/stat`, "utf8").split(") ")[1].split(" ")[1] === String(srv.proc.pid);
      } catch {
        return false;
      }
    })
    .filter((p) => fs.readFileSync(`/proc/${p}/cmdline`, "utf8").includes("zygote"));
  assert.equal(zygotes.length, 1, "the server's zygote");
  process.kill(Number(zygotes[0]), "SIGKILL");
  await killHard(srv.proc);
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(processesMentioning(markers[0]).length > 0, "the sandbox outlived both");
  const next = await h.startServer();
  try {
    await assertServerGone(srv.proc.pid, markers);
  } finally {
    await next.stop();
    fs.rmSync(srv.dir, { recursive: true, force: true });
  }
});

test("refuses to start without the privileges isolation needs, saying why", async () => {
  // Drop to an unprivileged user: the server must refuse rather than run unisolated.
  const { spawnSync } = require("node:child_process");
  const path = require("node:path");
  const os = require("node:os");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cwsb-nopriv-"));
  fs.chmodSync(dir, 0o777);
  const r = spawnSync("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, path.join(__dirname, "..", "server.js"), "--listen", "127.0.0.1:0", "--state-dir", path.join(dir, "s")], {
    encoding: "utf8",
    timeout: 20000,
  });
  fs.rmSync(dir, { recursive: true, force: true });
  assert.notEqual(r.status, 0);
  assert.equal(r.stdout, "");
  assert.match(r.stderr, /refusing to start/);
  assert.match(r.stderr, /isolation|namespaces/);
});

test("a reader of its output that went away does not stop the cleanup", async () => {
  process.env.CWSB_VERBOSE = "1";
  const srv = await h.startServer([], {});
  delete process.env.CWSB_VERBOSE;
  // verbose logging to a closed pipe
  srv.proc.stdout.destroy();
  srv.proc.stderr.destroy();
  const c = h.client(srv.url, "connect-binary");
  const sb = await h.newSandbox(c);
  for (let i = 0; i < 5; i++) await c.getSandbox({ sandboxId: sb.sandboxId });
  const code = await srv.stop();
  assert.equal(code, 0);
  assert.equal(srv.stateLeft, false);
  assert.equal(fs.existsSync(`/sys/fs/cgroup/pids/cwsandbox-local-${srv.proc.pid}`), false);
});
