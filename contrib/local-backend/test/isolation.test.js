"use strict";
// Real isolation: processes, files, host files, network, limits.
const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const net = require("node:net");
const { State } = require("../lib/schema");
const h = require("./helpers");

let srv, c, a, b;
const out = (r) => Buffer.from(r.stdout).toString();
const run = (sb, script, extra = {}) => c.exec({ sandboxId: sb.sandboxId, command: ["sh", "-c", script], ...extra });

before(async () => {
  srv = await h.startServer(["--pids-limit", "40"]);
  c = h.client(srv.url, "connect-binary");
  [a, b] = await Promise.all([h.newSandbox(c), h.newSandbox(c)]);
});
after(async () => {
  await srv.stop();
});

test("each sandbox is its own pid namespace: B cannot see A's processes", async () => {
  await c.exec({ sandboxId: a.sandboxId, command: ["sh", "-c", "sleep 12345 >/dev/null 2>&1 & echo started"] });
  const psA = out(await run(a, "ps -eo pid,args"));
  assert.match(psA, /sleep 12345/);
  assert.match(psA, /^\s*1 \/bin\/sh -c trap/m); // the main command is pid 1
  const psB = out(await run(b, "ps -eo pid,args"));
  assert.doesNotMatch(psB, /sleep 12345/);
  assert.ok(psB.trim().split("\n").length < 10, `B sees only its own processes:\n${psB}`);
  // kill -0 of a host pid fails inside
  const k = await run(b, `kill -0 ${process.pid} 2>/dev/null && echo visible || echo invisible`);
  assert.equal(out(k), "invisible\n");
});

test("each sandbox has its own root: B cannot read or change A's files", async () => {
  await c.writeFile({ sandboxId: a.sandboxId, path: "/tmp/secret-a", content: Buffer.from("A") });
  await run(a, "echo a > /root/only-in-a");
  const r = await run(b, "ls -A /tmp; cat /tmp/secret-a /root/only-in-a 2>&1; true");
  assert.doesNotMatch(out(r), /^A$|^a$/m);
  await assert.rejects(c.readFile({ sandboxId: b.sandboxId, path: "/tmp/secret-a" }), (e) => h.errorInfo(e).reason === "CWSANDBOX_FILE_NOT_FOUND");
  // the backend's state directory (holding every sandbox's layer) is hidden
  const s = await run(b, `ls -A ${srv.stateDir} 2>/dev/null | wc -l`);
  assert.equal(out(s).trim(), "0");
  // nothing written inside reaches the host
  assert.equal(fs.existsSync("/root/only-in-a"), false);
});

test("writing /etc/hosts inside leaves the host's unchanged", async () => {
  const before = fs.readFileSync("/etc/hosts");
  await run(a, "echo '10.9.8.7 sandbox-only' >> /etc/hosts; rm -f /etc/hostname");
  await c.writeFile({ sandboxId: b.sandboxId, path: "/etc/hosts", content: Buffer.from("1.2.3.4 other\n") });
  assert.match(out(await run(a, "cat /etc/hosts")), /sandbox-only/);
  assert.equal(out(await run(b, "cat /etc/hosts")), "1.2.3.4 other\n");
  assert.deepEqual(fs.readFileSync("/etc/hosts"), before);
  assert.ok(fs.existsSync("/etc/hostname"));
});

test("uts and mount namespaces: hostname is the sandbox id, mounts stay inside", async () => {
  assert.equal(out(await run(a, "hostname")), a.sandboxId + "\n");
  await run(a, "mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && echo ok");
  // the host holds the sandbox's root mount, and nothing mounted below it
  const below = `${srv.stateDir}/sandboxes/${a.sandboxId}/rootfs/`;
  const hostTargets = fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").map((l) => l.split(" ")[4]);
  assert.deepEqual(hostTargets.filter((t) => t && t.startsWith(below)), []);
  assert.doesNotMatch(out(await run(b, "cat /proc/mounts")), /\/mnt\/t/);
  // /dev holds no disk
  assert.doesNotMatch(out(await run(a, "ls /dev")), /vda|sda|nvme|loop/);
});

test("denyEgress: no route out, host listener unreachable; default: reachable", async () => {
  const listener = net.createServer((s) => s.end("hello from host\n"));
  await new Promise((r) => listener.listen(0, "127.0.0.1", r));
  const port = listener.address().port;
  try {
    const probe = `python3 -c "
import socket
try:
    s = socket.create_connection(('127.0.0.1', ${port}), timeout=2)
    print('connected', s.recv(100).decode().strip())
except OSError as e:
    print('refused', type(e).__name__)
"`;
    const open = await run(a, probe);
    assert.equal(out(open), "connected hello from host\n");
    const d = await h.newSandbox(c, { network: { denyEgress: true } });
    const closed = await run(d, probe);
    assert.match(out(closed), /^refused/);
    // only loopback, and no route at all
    const routes = out(await run(d, "cat /proc/net/route | tail -n +2 | wc -l; cat /proc/net/ipv6_route | grep -v ' lo$' | wc -l; ls /sys/class/net"));
    assert.equal(routes, "0\n0\nlo\n");
    await c.deleteSandbox({ sandboxId: d.sandboxId });
  } finally {
    listener.close();
  }
});

test("memory limit: exceeding it kills the process", async () => {
  const m = await h.newSandbox(c, {}, { resources: { memory: "64Mi", cpu: "500m" } });
  assert.equal(m.status.effectiveResources.memory, "64Mi");
  const small = await run(m, "python3 -c 'x = bytearray(16 << 20); print(len(x))'");
  assert.equal(small.exitCode, 0);
  const big = await run(m, "python3 -c 'x = bytearray(256 << 20); print(len(x))'");
  assert.equal(big.exitCode, 137, `stdout ${out(big)} stderr ${Buffer.from(big.stderr)}`);
  await c.deleteSandbox({ sandboxId: m.sandboxId });
});

test("pids limit: a fork bomb stops at the limit", async () => {
  const script = `
import os, signal, time
kids = []
for i in range(60):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    kids.append(pid)
print(len(kids))
for k in kids:
    os.kill(k, signal.SIGKILL)
    os.waitpid(k, 0)
`;
  const r = await c.exec({ sandboxId: a.sandboxId, command: ["python3", "-c", script] });
  const n = parseInt(out(r), 10);
  assert.ok(n < 40, `fewer than 40 forks succeed, saw ${n}`);
  assert.ok(n >= 10, `saw ${n}`);
});

test("a sandbox that ended frees its layer and cgroups", async () => {
  const e = await h.newSandbox(c, {}, { command: "/bin/sh", args: ["-c", "echo bye"] });
  const done = await h.waitState(c, e.sandboxId, [State.COMPLETED]);
  assert.equal(done.status.exitCode, 0);
  for (let i = 0; i < 100 && fs.existsSync(`${srv.stateDir}/sandboxes/${e.sandboxId}`); i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(fs.existsSync(`${srv.stateDir}/sandboxes/${e.sandboxId}`), false);
  const cgs = fs.readdirSync("/sys/fs/cgroup/pids").filter((d) => d.startsWith("cwsandbox-local-"));
  for (const d of cgs) assert.equal(fs.existsSync(`/sys/fs/cgroup/pids/${d}/${e.sandboxId}`), false);
});
