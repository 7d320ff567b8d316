"use strict";
// Escapes tried from inside a sandbox, each asserted to fail; and what a sandbox's
// process is allowed (capabilities, uid map, seccomp) read from /proc/self/status.
const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const h = require("./helpers");

let srv, c, sb, canaryDir;
const out = (r) => Buffer.from(r.stdout).toString();
const err = (r) => Buffer.from(r.stderr).toString();
const run = (script) => c.exec({ sandboxId: sb.sandboxId, command: ["sh", "-c", script] });

before(async () => {
  srv = await h.startServer();
  c = h.client(srv.url, "connect-binary");
  sb = await h.newSandbox(c);
  canaryDir = fs.mkdtempSync(path.join(os.tmpdir(), "cwsb-canary-"));
  fs.writeFileSync(path.join(canaryDir, "canary"), "host canary\n");
});
after(async () => {
  await srv.stop();
  fs.rmSync(canaryDir, { recursive: true, force: true });
});

test("a sandbox's root is an unprivileged host uid with the engines' default capabilities and seccomp", async () => {
  const st = out(await run("cat /proc/self/status; cat /proc/self/uid_map /proc/self/gid_map"));
  const field = (k) => new RegExp(`^${k}:\\s*(\\S+)`, "m").exec(st)[1];
  // container root is host uid 200000000, never host root
  assert.match(st, /^\s*0\s+200000000\s+65536$/m);
  const caps = BigInt("0x" + field("CapEff"));
  const CAP_SYS_ADMIN = 21n, CAP_SYS_MODULE = 16n, CAP_SYS_PTRACE = 19n, CAP_NET_ADMIN = 12n, CAP_SYS_RAWIO = 17n, CAP_DAC_READ_SEARCH = 2n;
  for (const bit of [CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_SYS_PTRACE, CAP_NET_ADMIN, CAP_SYS_RAWIO, CAP_DAC_READ_SEARCH]) assert.equal((caps >> bit) & 1n, 0n, `capability ${bit} is not held`);
  assert.equal(caps, 0xa80425fbn); // CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP
  assert.equal(field("CapBnd"), field("CapEff"));
  assert.equal(field("Seccomp"), "2"); // filter mode
  assert.equal(field("NoNewPrivs"), "1");
});

// A 64-bit program that makes the 32-bit getpid (int 0x80, eax 20) and exits
// with its result: the pid when the 32-bit entry is open.
function int80Program() {
  const code = Buffer.from([0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0x89, 0xc7, 0xb8, 60, 0, 0, 0, 0x0f, 0x05]);
  const base = 0x400000n;
  const ehdr = Buffer.alloc(64);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]).copy(ehdr);
  ehdr.writeUInt16LE(2, 16); // executable
  ehdr.writeUInt16LE(0x3e, 18); // x86-64
  ehdr.writeUInt32LE(1, 20);
  ehdr.writeBigUInt64LE(base + 120n, 24); // entry: after the headers
  ehdr.writeBigUInt64LE(64n, 32); // program headers
  ehdr.writeUInt16LE(64, 52);
  ehdr.writeUInt16LE(56, 54);
  ehdr.writeUInt16LE(1, 56);
  const phdr = Buffer.alloc(56);
  phdr.writeUInt32LE(1, 0); // PT_LOAD
  phdr.writeUInt32LE(5, 4); // r-x
  phdr.writeBigUInt64LE(base, 16);
  phdr.writeBigUInt64LE(base, 24);
  phdr.writeBigUInt64LE(BigInt(120 + code.length), 32);
  phdr.writeBigUInt64LE(BigInt(120 + code.length), 40);
  phdr.writeBigUInt64LE(0x1000n, 48);
  return Buffer.concat([ehdr, phdr, code]);
}

test("32-bit system calls are refused", { skip: process.arch !== "x64" && "x86-64 only" }, async () => {
  await c.writeFile({ sandboxId: sb.sandboxId, path: "/tmp/int80", content: int80Program() });
  const r = await run("chmod +x /tmp/int80; /tmp/int80; echo $?");
  // refused: killed by SIGSYS (159), or an error (-EPERM 255, -ENOSYS 218); open: a small pid
  assert.match(out(r).trim().split("\n").pop(), /^(159|255|218)$/, out(r) + err(r));
});

test("cgroup release_agent: mounting a cgroup hierarchy is refused", async () => {
  const r = await run(
    "mkdir -p /tmp/cg && mount -t cgroup -o memory cgroup /tmp/cg 2>&1 && echo MOUNTED; " +
      "mkdir -p /tmp/cg2 && mount -t cgroup -o rdma cgroup /tmp/cg2 2>&1 && echo MOUNTED; " +
      "echo /x > /sys/fs/cgroup/memory/release_agent 2>&1 || true; cat /sys/fs/cgroup/memory/release_agent 2>/dev/null; echo done",
  );
  assert.doesNotMatch(out(r), /MOUNTED/);
  assert.doesNotMatch(out(r), /^\/x$/m);
  assert.match(out(r), /done/);
});

test("/proc/sys and /proc/sysrq-trigger are read-only; proc and sysfs cannot be mounted again", async () => {
  const hostPattern = fs.readFileSync("/proc/sys/kernel/core_pattern", "utf8");
  const r = await run(
    "cat /proc/sys/kernel/core_pattern > /proc/sys/kernel/core_pattern 2>&1 && echo WROTE; " +
      "echo '|/tmp/x' > /proc/sys/kernel/core_pattern 2>&1 && echo WROTE; " +
      "echo h > /proc/sysrq-trigger 2>&1 && echo WROTE; " +
      "mkdir -p /tmp/p && mount -t proc proc /tmp/p 2>&1 && echo MOUNTED; " +
      "mkdir -p /tmp/s && mount -t sysfs sysfs /tmp/s 2>&1 && echo MOUNTED; " +
      "mount -o remount,rw /proc/sys 2>&1 && echo MOUNTED; true",
  );
  assert.doesNotMatch(out(r), /WROTE|MOUNTED/);
  assert.equal(fs.readFileSync("/proc/sys/kernel/core_pattern", "utf8"), hostPattern);
});

test("a device node of a host disk cannot be made or opened", async () => {
  const disk = fs.readFileSync("/proc/partitions", "utf8").split("\n").slice(2).map((l) => l.trim().split(/\s+/)).find((f) => f.length === 4);
  const [major, minor] = disk ? [disk[0], disk[1]] : ["8", "0"];
  const r = await run(`mknod /tmp/disk b ${major} ${minor} 2>&1 && echo MADE; head -c 512 /tmp/disk >/dev/null 2>&1 && echo READ; ls /dev; true`);
  assert.doesNotMatch(out(r), /READ/);
  assert.doesNotMatch(out(r), /^(sd|vd|nvme|xvd)/m); // no disks in /dev
});

test("host files stay out of reach: a canary outside the image cannot be read from inside, by path or by link", async () => {
  const canary = path.join(canaryDir, "canary");
  const r = await run(`cat ${canary} 2>&1; cat /etc/shadow 2>/dev/null | grep -c '^root:' ; ls ${srv.stateDir} 2>&1; true`);
  assert.doesNotMatch(out(r), /host canary/);
  // the sandbox has a directory of the same path as the host's: links must reach that one
  await run(`mkdir -p /work ${canaryDir} && ln -sfn ${canary} /work/to-canary && ln -sfn ${canaryDir} /work/to-dir && ln -sfn ../../../../../../../../${canaryDir} /work/climb`);
  for (const p of ["/work/to-canary", "/work/to-dir/canary", "/work/climb/canary"]) {
    await assert.rejects(c.readFile({ sandboxId: sb.sandboxId, path: p }), (e) => h.errorInfo(e).reason === "CWSANDBOX_FILE_NOT_FOUND", p);
  }
  // writes through the same links land inside the sandbox
  await c.writeFile({ sandboxId: sb.sandboxId, path: "/work/to-dir/canary", content: Buffer.from("inside\n") });
  await c.writeFile({ sandboxId: sb.sandboxId, path: "/work/climb/new", content: Buffer.from("inside\n") });
  assert.equal(fs.readFileSync(canary, "utf8"), "host canary\n");
  assert.equal(fs.existsSync(path.join(canaryDir, "new")), false);
  assert.equal(out(await run(`cat ${canaryDir}/canary ${canaryDir}/new`)), "inside\ninside\n");
});

test("a directory swapped with a link while ReadFile and WriteFile run never reaches the host", async () => {
  // Inside: /work/race/d is a directory holding "f"; a loop exchanges it with a link to
  // the host's canary directory as fast as it can (renameat2 RENAME_EXCHANGE).
  const swapper = `
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
os.makedirs("/work/race/d", exist_ok=True)
open("/work/race/d/f", "w").write("sandbox\\n")
try: os.unlink("/work/race/l")
except FileNotFoundError: pass
os.symlink(${JSON.stringify(canaryDir)}, "/work/race/l")
AT_FDCWD = -100
while True:
    libc.renameat2(AT_FDCWD, b"/work/race/d", AT_FDCWD, b"/work/race/l", 2)
`;
  await c.writeFile({ sandboxId: sb.sandboxId, path: "/work/swap.py", content: Buffer.from(swapper) });
  await run("nohup python3 /work/swap.py >/dev/null 2>&1 &");
  fs.writeFileSync(path.join(canaryDir, "f"), "host\n");
  const deadline = Date.now() + 8000;
  let reads = 0;
  while (Date.now() < deadline) {
    try {
      const r = await c.readFile({ sandboxId: sb.sandboxId, path: "/work/race/d/f" });
      assert.notEqual(Buffer.from(r.content).toString(), "host\n", "ReadFile read a host file");
      reads++;
    } catch (e) {
      if (e.code === "ERR_ASSERTION") throw e;
    }
    await c.writeFile({ sandboxId: sb.sandboxId, path: "/work/race/d/f", content: Buffer.from("written\n") }).catch(() => {});
    assert.equal(fs.readFileSync(path.join(canaryDir, "f"), "utf8"), "host\n", "WriteFile wrote a host file");
  }
  await run("pkill -f swap.py; true");
  assert.ok(reads > 0, "some reads went through");
});

test("host processes are not visible: the sandbox's /proc holds only its own", async () => {
  const r = await run(`ls /proc | grep -cE '^[0-9]+$'; kill -0 ${process.pid} 2>/dev/null && echo VISIBLE; true`);
  assert.ok(+out(r).split("\n")[0] < 10, out(r));
  assert.doesNotMatch(out(r), /VISIBLE/);
  assert.equal(err(r), "");
});

test("a sandbox reads its own limits in its cgroup", async () => {
  const s = await h.newSandbox(c, {}, { resources: { memory: "256Mi", cpu: "500m" } });
  const r = await c.exec({ sandboxId: s.sandboxId, command: ["sh", "-c", "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max"] });
  assert.match(out(r), /^268435456$/m);
  assert.match(out(r), /^4096$/m);
  await c.deleteSandbox({ sandboxId: s.sandboxId });
});

test("securityContext is honoured: runAsUser, capabilitiesDrop, readOnlyRootFilesystem; privileged is refused", async () => {
  const s = await h.newSandbox(c, {}, { securityContext: { runAsUser: 1000, runAsGroup: 1000, capabilitiesDrop: ["NET_RAW"], readOnlyRootFilesystem: true } });
  const r = await c.exec({ sandboxId: s.sandboxId, command: ["sh", "-c", "id -u; id -g; grep CapBnd /proc/self/status; touch /x 2>&1; touch /tmp/y 2>&1; true"] });
  const o = out(r);
  assert.match(o, /^1000\n1000\n/);
  assert.equal((BigInt("0x" + /CapBnd:\s*(\S+)/.exec(o)[1]) >> 13n) & 1n, 0n); // CAP_NET_RAW dropped
  assert.match(o, /Read-only file system/);
  await c.deleteSandbox({ sandboxId: s.sandboxId });
  await assert.rejects(c.createSandbox({ sandbox: { spec: h.spec({}, { securityContext: { privileged: true } }) } }), (e) => h.errorInfo(e).reason === "CWSANDBOX_NOT_IMPLEMENTED");
});
