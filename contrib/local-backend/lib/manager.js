"use strict";
// The sandboxes: their lifecycle, processes, logs, files and snapshots.
const fs = require("node:fs");
const fsp = require("node:fs/promises");
const path = require("node:path");
const os = require("node:os");
const { execFile } = require("node:child_process");
const { EventEmitter } = require("node:events");
const { randomUUID } = require("node:crypto");
const { State, SnapshotState, SnapshotTrigger } = require("./schema");
const { E, fileError } = require("./errors");
const { parseBytes, parseCpuMillis } = require("./util");
const { Spawner } = require("./spawner");
const { ImageStore } = require("./images");
const oci = require("./oci");

const HELPER = path.join(__dirname, "..", "gen", "sbx-helper");
const RUNC = process.env.CWSB_RUNC || "/usr/bin/runc";
const FILE_LIMIT = 32 * 1024 * 1024;
const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const LOG_CAP = 16 * 1024 * 1024;
const TAG_RE = /^[A-Za-z0-9._-]{0,58}[A-Za-z0-9]$/;

const STATE_NAME = {};
for (const [k, v] of Object.entries(State)) STATE_NAME[v] = "STATE_" + k;
const TERMINAL = new Set([State.COMPLETED, State.FAILED, State.TERMINATED]);

// The main process's output: byte offsets from the start of the session.
class LogStore extends EventEmitter {
  constructor() {
    super();
    this.sessionId = randomUUID();
    this.chunks = []; // { off, time, data }
    this.base = 0; // offset of chunks[0]
    this.end = 0; // offset after the last byte
    this.size = 0;
    this.closed = false;
    this.setMaxListeners(0);
  }
  append(data) {
    if (!data.length) return;
    this.chunks.push({ off: this.end, time: new Date(), data });
    this.end += data.length;
    this.size += data.length;
    while (this.size > LOG_CAP && this.chunks.length > 1) {
      const c = this.chunks.shift();
      this.size -= c.data.length;
      this.base = this.chunks[0].off;
    }
    this.emit("data");
  }
  close() {
    this.closed = true;
    this.emit("data");
  }
  // Offset where the last n lines start.
  tailOffset(n) {
    let lines = 0;
    for (let i = this.chunks.length - 1; i >= 0; i--) {
      const c = this.chunks[i];
      for (let j = c.data.length - 1; j >= 0; j--) {
        if (c.data[j] === 10) {
          // a newline that ends the log does not start a line
          if (c.off + j + 1 === this.end) continue;
          if (++lines === n) return c.off + j + 1;
        }
      }
    }
    return this.base;
  }
  // Chunks covering [from, end), the first one sliced.
  from(off) {
    const out = [];
    for (const c of this.chunks) {
      const cend = c.off + c.data.length;
      if (cend <= off) continue;
      if (c.off >= off) out.push(c);
      else out.push({ off, time: c.time, data: c.data.subarray(off - c.off) });
    }
    return out;
  }
}

class Sandbox {
  constructor(id, spec, requestId) {
    this.id = id;
    this.spec = spec;
    this.requestId = requestId;
    this.state = State.PENDING;
    this.stateReason = "";
    this.createTime = new Date();
    this.startTime = null;
    this.endTime = null;
    this.exitCode = undefined;
    this.pid = 0; // host pid of the sandbox's first process
    this.proc = null;
    this.dir = null;
    this.logs = new LogStore();
    this.events = new EventEmitter();
    this.events.setMaxListeners(0);
    this.execs = new Set();
    this.deleted = false;
    this.timers = [];
    this.freed = false;
    this.exited = null; // promise resolved when the main process is gone and resources are freed
    this.volumes = new Map(); // name -> host dir
  }
  get container() {
    const cs = this.spec.containers || [];
    return cs.find((c) => c.name === this.spec.primaryContainer) || cs[0];
  }
  setState(s, reason) {
    this.state = s;
    if (reason !== undefined) this.stateReason = reason;
    this.events.emit("state", s);
  }
}

// Each line the helper reports on fd 3 ("PID n", "READY", "ERROR text"), to fn.
function onStatusLines(child, fn) {
  let buf = "";
  child.stdio[3].on("error", () => {});
  child.stdio[3].on("data", (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      fn(line);
    }
  });
}

// The cgroup hierarchies: the unified one, or each v1 controller's.
function cgroupRoots() {
  const base = "/sys/fs/cgroup";
  return fs.existsSync(path.join(base, "cgroup.controllers")) ? [base] : listDirs(base).map((d) => path.join(base, d));
}

// runc mounts each sandbox's root from inside its user namespace, as a uid
// with no rights on the host: every directory above the roots must let it
// through, or the start fails with a bare "permission denied". Ours let only
// the host's root and the sandboxes' root group (host gid UID_BASE) through.
async function passSandboxesThrough(dir) {
  await fsp.chown(dir, 0, oci.UID_BASE);
  await fsp.chmod(dir, 0o710);
}

function checkSearchable(dir) {
  for (let d = dir; ; d = path.dirname(d)) {
    const mode = fs.statSync(d).mode;
    if (!(mode & 0o001)) {
      throw new Error(`state directory: ${d} is not searchable by others (mode ${(mode & 0o777).toString(8)}); the sandboxes' user namespace mounts their roots below it, so choose a state directory whose parents are (chmod o+x; listing may stay closed)`);
    }
    if (d === path.dirname(d)) return;
  }
}

class Manager {
  constructor(opts) {
    this.stateDir = opts.stateDir;
    this.images = opts.images || new ImageStore({ dir: opts.imageStore, log: opts.log });
    this.log = opts.log || (() => {});
    this.defaultLifetime = opts.defaultLifetime || 3600;
    this.maxLifetime = opts.maxLifetime || 86400;
    this.defaultCpu = opts.defaultCpu || "1";
    this.defaultMemory = opts.defaultMemory || "4Gi";
    this.pidsLimit = opts.pidsLimit || 4096;
    this.defaultGrace = opts.defaultGrace ?? 10;
    this.maxSandboxes = opts.maxSandboxes || 1000;
    this.runnerId = opts.runnerId || `local-${os.hostname()}`;
    this.runnerGroupId = "local"; // one runner, in a group of its own
    this.sandboxes = new Map();
    this.byRequest = new Map();
    this.snapshots = new Map();
    this.snapByRequest = new Map();
    this.order = []; // creation order of sandbox ids
    this.endedWithLogs = [];
    this.execSeq = 0;
    this.shuttingDown = false;
    this.sbRoot = path.join(this.stateDir, "sandboxes");
    this.snapRoot = path.join(this.stateDir, "snapshots");
    this.runcRoot = path.join(this.stateDir, "runc");
    // one cgroup parent per server, under every hierarchy runc uses
    this.cgroupParent = `cwsandbox-local-${process.pid}`;
  }

  // ---------------------------------------------------------------- startup
  async init() {
    if (process.getuid && process.getuid() !== 0) {
      throw new Error(
        "refusing to start: the local backend needs root to mount each sandbox's root and to map its user namespace onto an unprivileged uid range; it does not run sandboxes without isolation",
      );
    }
    if (!fs.existsSync(HELPER)) throw new Error(`${HELPER} is missing: run "npm run build" first`);
    await checkIsolation();
    await fsp.mkdir(this.sbRoot, { recursive: true });
    await fsp.mkdir(this.snapRoot, { recursive: true });
    await fsp.mkdir(this.runcRoot, { recursive: true, mode: 0o700 });
    checkSearchable(path.dirname(this.stateDir));
    for (const d of [this.stateDir, this.sbRoot]) await passSandboxesThrough(d);
    await fsp.rm(path.join(this.stateDir, "spawn"), { recursive: true, force: true });
    this.spawner = new Spawner(HELPER, path.join(this.stateDir, "spawn"), this.log);
    await this.reapDeadServers();
    await this.reapStaleSandboxes();
  }

  // Servers of ours that died with their zygote (which otherwise ends what its
  // server left, native/reap.c): their sandboxes are killed, their roots
  // detached and their cgroups removed. Found by name in the cgroup trees and
  // as the source of overlay mounts.
  async reapDeadServers() {
    const names = new Set(cgroupRoots().flatMap((r) => listDirs(r)));
    for (const line of fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
      const m = / - overlay (cwsandbox-local-[0-9]+) /.exec(line);
      if (m) names.add(m[1]);
    }
    for (const n of names) {
      if (!/^cwsandbox-local-[0-9]+$/.test(n)) continue;
      const pid = parseInt(n.slice(16), 10);
      if (pid === process.pid || fs.existsSync(`/proc/${pid}`)) continue;
      const r = await this.runHelper(["reap", String(pid)]);
      this.log(`ended what server ${pid} left (sandboxes, roots, cgroups)${r.code ? `: ${r.stderr}` : ""}`);
    }
  }

  // Our own cgroup parents, at shutdown.
  removeOwnCgroups() {
    for (const root of cgroupRoots()) {
      const dir = path.join(root, this.cgroupParent);
      try {
        for (const sub of listDirs(dir)) fs.rmdirSync(path.join(dir, sub));
        fs.rmdirSync(dir);
      } catch {}
    }
  }

  // Sandboxes a server that was killed left in this state directory: their
  // containers are killed and their roots unmounted before anything starts here.
  async reapStaleSandboxes() {
    let ids = [];
    try {
      ids = await fsp.readdir(this.runcRoot);
    } catch {}
    for (const id of ids) {
      await this.runHelperRunc(["kill", "--all", id, "KILL"]).catch(() => {});
      await this.runHelperRunc(["delete", "--force", id]).catch(() => {});
      this.log(`stopped container ${id}, left by an earlier server`);
    }
    for (const id of listDirs(this.sbRoot)) {
      await this.runHelper(["umount", path.join(this.sbRoot, id, "rootfs")]);
      await fsp.rm(path.join(this.sbRoot, id), { recursive: true, force: true });
    }
  }

  // Run a helper mode to its end: { code, stdout, stderr, status }.
  runHelper(args, input) {
    return new Promise((resolve) => {
      const child = this.spawner.spawn(args, { env: { PATH: DEFAULT_PATH }, stdio: [input ? "pipe" : "ignore", "pipe", "pipe", "pipe"] });
      const out = [];
      const err = [];
      let status = "";
      child.stdout.on("data", (d) => out.push(d));
      child.stderr.on("data", (d) => err.push(d));
      child.stdio[3].on("data", (d) => (status += d));
      child.on("error", (e) => err.push(Buffer.from(e.message)));
      child.on("close", (code) => resolve({ code, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString().trim(), status }));
      if (input) {
        child.stdin.on("error", () => {});
        child.stdin.end(input);
      }
    });
  }

  async runHelperRunc(args) {
    const r = await new Promise((resolve) => execFile(RUNC, ["--root", this.runcRoot, ...args], (err, _o, stderr) => resolve({ err, stderr })));
    if (r.err) throw new Error(String(r.stderr).trim() || r.err.message);
  }

  // --------------------------------------------------------------- validation
  validateSpec(spec) {
    if (!spec) throw E.invalid("sandbox.spec is required");
    const cs = spec.containers || [];
    if (cs.length === 0) throw E.invalid("sandbox.spec.containers must name at least one container");
    if (spec.initContainers && spec.initContainers.length) throw E.notImplemented("init containers");
    const names = new Set();
    for (const c of cs) {
      if (!c.name) throw E.invalid("every container needs a name");
      if (names.has(c.name)) throw E.invalid(`container name ${c.name} is used twice`);
      names.add(c.name);
      if (!c.image) throw E.invalid(`container ${c.name} needs an image`);
      for (const f of c.files || []) {
        if (!f.path || !f.path.startsWith("/")) throw E.invalid(`file mount path ${JSON.stringify(f.path)} must be absolute`);
        if (f.content.length > FILE_LIMIT) throw E.tooLarge(f.path, f.content.length, FILE_LIMIT);
      }
      for (const vm of c.volumeMounts || []) {
        if (!(spec.volumes || []).some((v) => v.name === vm.volume)) throw E.invalid(`volume mount refers to unknown volume ${JSON.stringify(vm.volume)}`);
        if (!vm.mountPath || !vm.mountPath.startsWith("/")) throw E.invalid(`volume mount path ${JSON.stringify(vm.mountPath)} must be absolute`);
        if (vm.subPath && (vm.subPath.startsWith("/") || vm.subPath.split("/").includes(".."))) throw E.invalid(`bad subPath ${JSON.stringify(vm.subPath)}`);
      }
      const mem = (c.resources && c.resources.memory) || (c.resourceRequirements && c.resourceRequirements.limits && c.resourceRequirements.limits.memory);
      if (mem && !(parseBytes(mem) > 0)) throw E.invalid(`bad memory quantity ${JSON.stringify(mem)}`);
      const cpu = (c.resources && c.resources.cpu) || (c.resourceRequirements && c.resourceRequirements.limits && c.resourceRequirements.limits.cpu);
      if (cpu && !(parseCpuMillis(cpu) > 0)) throw E.invalid(`bad cpu quantity ${JSON.stringify(cpu)}`);
      if (c.resources && c.resources.gpu && c.resources.gpu.count > 0n) throw E.capacity("no GPU on this runner");
      securityOf(c);
    }
    if (cs.length > 1) throw E.notImplemented("more than one container per sandbox");
    if (spec.primaryContainer && !names.has(spec.primaryContainer)) throw E.invalid(`primary container ${spec.primaryContainer} is not among the containers`);
    for (const t of spec.tags || []) {
      if (!TAG_RE.test(t)) throw E.invalid(`bad tag ${JSON.stringify(t)}: letters, digits, '.', '_' and '-', ending with a letter or digit, at most 59 characters`);
    }
    const vnames = new Set();
    for (const v of spec.volumes || []) {
      if (!v.name) throw E.invalid("every volume needs a name");
      if (vnames.has(v.name)) throw E.invalid(`volume name ${v.name} is used twice`);
      vnames.add(v.name);
      if (v.source.case === "volumeId") throw E.notImplemented("persistent volumes (volumeId)");
      if (v.source.case !== "scratch") throw E.invalid(`volume ${v.name} has no source`);
      const r = v.source.value.restoreFromSnapshotId;
      if (r) {
        const snap = this.snapshots.get(r);
        if (!snap || snap.deleted) throw E.snapshotNotFound(r);
        if (snap.state !== SnapshotState.READY) throw E.invalid(`snapshot ${r} is not ready`);
      }
    }
    if (spec.maxLifetimeSeconds < 0) throw E.invalid("maxLifetimeSeconds must not be negative");
    for (const svc of spec.services || []) {
      if (!(svc.port > 0 && svc.port < 65536)) throw E.invalid(`service port ${svc.port} is out of range`);
      // listen-only services need nothing of us; a public endpoint needs an ingress this runner has not
      if (svc.endpoint) throw E.notImplemented("service endpoints (this runner has no ingress; listen-only services work)");
    }
    if (spec.networkIds && spec.networkIds.length) throw E.notImplemented("networks");
    if (spec.runnerIds && spec.runnerIds.length && !spec.runnerIds.includes(this.runnerId)) {
      throw E.capacity(`runner(s) ${spec.runnerIds.join(", ")} not available; this runner is ${this.runnerId}`);
    }
    if (spec.network && spec.network.egress && spec.network.egress.length) throw E.notImplemented("egress rules");
  }

  // ------------------------------------------------------------------ create
  create(spec, requestId) {
    if (this.shuttingDown) throw E.unavailable("the server is shutting down");
    if (requestId && this.byRequest.has(requestId)) return this.sandboxes.get(this.byRequest.get(requestId));
    this.validateSpec(spec);
    const live = [...this.sandboxes.values()].filter((s) => !TERMINAL.has(s.state)).length;
    if (live >= this.maxSandboxes) throw E.capacity(`this runner already runs ${live} sandboxes`);
    const sb = new Sandbox(randomUUID(), spec, requestId);
    const c = sb.container;
    const memStr = (c.resources && c.resources.memory) || (c.resourceRequirements && c.resourceRequirements.limits && c.resourceRequirements.limits.memory) || this.defaultMemory;
    const cpuStr = (c.resources && c.resources.cpu) || (c.resourceRequirements && c.resourceRequirements.limits && c.resourceRequirements.limits.cpu) || this.defaultCpu;
    sb.effectiveResources = { cpu: cpuStr, memory: memStr };
    let life = spec.maxLifetimeSeconds || this.defaultLifetime;
    if (life > this.maxLifetime) life = this.maxLifetime;
    sb.effectiveLifetime = life;
    this.sandboxes.set(sb.id, sb);
    this.order.push(sb.id);
    if (requestId) this.byRequest.set(requestId, sb.id);
    this.prune();
    setImmediate(() => this.start(sb).catch((e) => this.fail(sb, e)));
    return sb;
  }

  // Forget the oldest finished sandboxes beyond a bound.
  prune() {
    const KEEP = 10000;
    if (this.order.length <= KEEP) return;
    const kept = [];
    let excess = this.order.length - KEEP;
    for (const id of this.order) {
      const sb = this.sandboxes.get(id);
      if (excess > 0 && sb && TERMINAL.has(sb.state) && sb.freed) {
        this.sandboxes.delete(id);
        if (sb.requestId) this.byRequest.delete(sb.requestId);
        excess--;
      } else kept.push(id);
    }
    this.order = kept;
  }

  fail(sb, e) {
    this.log(`sandbox ${sb.id} failed to start: ${e.message}`);
    if (!TERMINAL.has(sb.state) && sb.state !== State.TERMINATING) {
      sb.endTime = new Date();
      sb.setState(State.FAILED, e.message);
    }
    this.free(sb);
  }

  async start(sb) {
    if (sb.deleted || sb.state !== State.PENDING) return;
    sb.setState(State.CREATING);
    const c = sb.container;
    const spec = sb.spec;
    const dir = path.join(this.sbRoot, sb.id);
    sb.dir = dir;
    const image = await this.images.resolve(c.image);
    sb.image = image;
    for (const d of ["upper", "work", "rootfs", "files", "volumes", "etc", "x"]) await fsp.mkdir(path.join(dir, d), { recursive: true });
    await passSandboxesThrough(dir);
    // the sandbox's root user owns its writable layer and volumes; the host's root owns the rest
    await fsp.chown(path.join(dir, "upper"), oci.UID_BASE, oci.UID_BASE);
    const binds = [];
    for (const v of spec.volumes || []) {
      const vd = path.join(dir, "volumes", v.name);
      await fsp.mkdir(vd, { recursive: true });
      await fsp.chown(vd, oci.UID_BASE, oci.UID_BASE);
      sb.volumes.set(v.name, vd);
      const r = v.source.value.restoreFromSnapshotId;
      if (r) await this.extractSnapshot(r, vd);
    }
    for (const vm of c.volumeMounts || []) {
      let src = sb.volumes.get(vm.volume);
      if (vm.subPath) {
        src = path.join(src, vm.subPath);
        await fsp.mkdir(src, { recursive: true });
        await fsp.chown(src, oci.UID_BASE, oci.UID_BASE);
      }
      binds.push({ src, dst: vm.mountPath, ro: !!vm.readOnly });
    }
    // file mounts: read-only, like a config map
    let i = 0;
    for (const f of c.files || []) {
      const fp = path.join(dir, "files", String(i++));
      await fsp.writeFile(fp, f.content, { mode: 0o644 });
      binds.push({ src: fp, dst: f.path, ro: true });
    }
    const netNone = !!(spec.network && spec.network.denyEgress);
    const etcFiles = await this.writeEtcFiles(sb, path.join(dir, "etc"), netNone);
    if (sb.deleted || sb.freed) return this.free(sb);
    const mounted = await this.runHelper(["overlay", this.cgroupParent, image.rootfs, path.join(dir, "upper"), path.join(dir, "work"), path.join(dir, "rootfs")]);
    if (mounted.code !== 0) throw new Error(`cannot mount the sandbox's root: ${mounted.stderr}`);
    sb.mounted = true;
    const sec = securityOf(c);
    const config = oci.sandboxConfig({
      rootfs: path.join(dir, "rootfs"),
      readonlyRoot: sec.readOnlyRoot,
      hostname: sb.id.slice(0, 63),
      process: oci.processSpec({ args: this.mainCommand(sb), env: this.envList(sb, {}), cwd: this.workingDir(sb), uid: sec.uid, gid: sec.gid, caps: sec.caps }),
      netNone,
      binds,
      etcFiles,
      cgroupsPath: `/${this.cgroupParent}/${sb.id}`,
      memoryBytes: parseBytes(sb.effectiveResources.memory),
      cpuMillis: parseCpuMillis(sb.effectiveResources.cpu),
      pidsLimit: this.pidsLimit,
    });
    await fsp.writeFile(path.join(dir, "config.json"), JSON.stringify(config));
    if (sb.deleted || sb.freed) return this.free(sb);

    const proc = this.spawner.spawn(this.runcArgs(dir, ["run", "--detach", "--bundle", dir, "--pid-file", path.join(dir, "pid"), sb.id], { pidFile: path.join(dir, "pid") }), {
      env: { PATH: DEFAULT_PATH },
      stdio: ["ignore", "pipe", "pipe", "pipe"],
    });
    sb.proc = proc;
    proc.stdout.on("data", (d) => sb.logs.append(d));
    proc.stderr.on("data", (d) => sb.logs.append(d));
    let setupError = null;
    onStatusLines(proc, (line) => {
      if (line.startsWith("PID ")) sb.pid = parseInt(line.slice(4), 10);
      else if (line === "READY") this.running(sb);
      else if (line.startsWith("ERROR ")) setupError = line.slice(6);
    });
    sb.exited = new Promise((resolve) => {
      proc.on("close", (code, signal) => {
        const exitCode = code ?? 128 + (os.constants.signals[signal] || 0);
        this.mainExited(sb, exitCode, setupError).finally(resolve);
      });
    });
    proc.on("error", (e) => this.log(`sandbox ${sb.id}: ${e.message}`));
  }

  // The helper's arguments to run runc with ARGS for the bundle in DIR.
  runcArgs(dir, args, { pidFile, log = path.join(dir, "runc.log"), exec = false, console = null } = {}) {
    const h = ["runc", "--pid-file", pidFile, "--log", log];
    if (exec) h.push("--exec");
    if (console) h.push("--console", console.path, `${console.width || 80}x${console.height || 24}`);
    return [...h, "--", RUNC, "--root", this.runcRoot, "--log", log, "--log-format", "json", ...args];
  }

  mainCommand(sb) {
    const c = sb.container;
    if (c.command) return [c.command, ...(c.args || [])];
    if (c.args && c.args.length) return [...c.args];
    return ["/bin/sh", "-c", 'trap "exit 0" TERM INT; sleep infinity & wait'];
  }

  workingDir(sb) {
    return sb.container.workingDir || (sb.image && sb.image.config.workingDir) || "/";
  }

  // /etc/hostname, /etc/hosts and (sharing the host's network) /etc/resolv.conf
  async writeEtcFiles(sb, dir, netNone) {
    const files = {
      hostname: `${sb.id.slice(0, 63)}\n`,
      hosts: `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t${sb.id.slice(0, 63)}\n`,
    };
    if (!netNone) files["resolv.conf"] = await fsp.readFile("/etc/resolv.conf", "utf8").catch(() => "");
    const out = {};
    for (const [name, text] of Object.entries(files)) {
      out[name] = path.join(dir, name);
      await fsp.writeFile(out[name], text, { mode: 0o644 });
      await fsp.chown(out[name], oci.UID_BASE, oci.UID_BASE); // the sandbox's root may edit its copy
    }
    return out;
  }

  // The environment of a process: the image's, then ours, then the spec's, then the call's.
  envList(sb, extra) {
    const c = sb.container;
    const env = { PATH: DEFAULT_PATH };
    for (const kv of (sb.image && sb.image.config.env) || []) {
      const eq = kv.indexOf("=");
      if (eq > 0) env[kv.slice(0, eq)] = kv.slice(eq + 1);
    }
    Object.assign(env, { HOSTNAME: sb.id.slice(0, 63), HOME: "/root", TERM: "xterm" }, c.environmentVariables || {}, extra || {});
    return Object.entries(env).map(([k, v]) => `${k}=${v}`);
  }

  running(sb) {
    sb.startTime = new Date();
    if (sb.state === State.CREATING) sb.setState(State.RUNNING, "");
    this.startAgent(sb);
    const life = sb.effectiveLifetime;
    const elapsed = (Date.now() - sb.createTime.getTime()) / 1000;
    const t = setTimeout(() => {
      if (sb.state === State.RUNNING) {
        this.log(`sandbox ${sb.id} reached its maximum lifetime of ${life} s`);
        this.stop(sb, this.defaultGrace, "max lifetime exceeded");
      }
    }, Math.max(0, life - elapsed) * 1000);
    t.unref();
    sb.timers.push(t);
  }

  async mainExited(sb, exitCode, setupError) {
    sb.exitCode = exitCode;
    sb.endTime = new Date();
    sb.logs.close();
    if (sb.state === State.TERMINATING) sb.setState(State.TERMINATED, sb.stateReason || "deleted");
    else if (setupError) {
      if (!sb.startTime) sb.exitCode = undefined;
      sb.setState(State.FAILED, setupError);
    } else if (!TERMINAL.has(sb.state)) {
      sb.setState(exitCode === 0 ? State.COMPLETED : State.FAILED, exitCode === 0 ? "" : `main process exited with code ${exitCode}`);
    }
    await this.free(sb);
  }

  // Free everything a finished sandbox holds (after optional snapshots).
  async free(sb) {
    sb.freed = true;
    sb.agentSock = null;
    for (const t of sb.timers) clearTimeout(t), clearInterval(t);
    for (const x of sb.execs) x.killCommand();
    const jobs = sb.snapshotOnStop || [];
    sb.snapshotOnStop = null;
    for (const job of jobs) await job().catch((e) => this.log(`snapshot on delete of ${sb.id}: ${e.message}`));
    // runc run --detach leaves the container's state and cgroups to `runc delete`
    if (sb.proc) {
      await this.runHelperRunc(["delete", "--force", sb.id]).catch((e) => {
        if (!/does not exist/.test(e.message)) this.log(`runc delete ${sb.id}: ${e.message}`);
      });
    }
    if (sb.dir && sb.mounted) {
      const r = await this.runHelper(["umount", path.join(sb.dir, "rootfs")]);
      if (r.code !== 0) this.log(`cannot unmount the root of ${sb.id}: ${r.stderr}`);
      else sb.mounted = false;
    }
    if (sb.dir && !sb.mounted) await fsp.rm(sb.dir, { recursive: true, force: true }).catch((e) => this.log(`cannot remove ${sb.dir}: ${e.message}`));
    sb.pid = 0;
    // Logs of ended sandboxes stay readable, but only for the most recent ones.
    if (!sb.logsKept) {
      sb.logsKept = true;
      this.endedWithLogs.push(sb);
      while (this.endedWithLogs.length > 200) {
        const old = this.endedWithLogs.shift();
        old.logs.chunks = [];
        old.logs.size = 0;
        old.logs.base = old.logs.end;
      }
    }
    sb.events.emit("freed");
  }

  // --------------------------------------------------------------- lookups
  get(id) {
    if (!id) throw E.invalid("sandboxId is required");
    const sb = this.sandboxes.get(id);
    if (!sb) throw E.sandboxNotFound(id);
    return sb;
  }

  list({ tags, state, showTerminated }) {
    const out = [];
    for (const id of this.order) {
      const sb = this.sandboxes.get(id);
      if (!sb) continue;
      if (state) {
        if (sb.state !== state) continue;
      } else if (!showTerminated && TERMINAL.has(sb.state)) continue;
      const st = sb.spec.tags || [];
      if (tags && tags.length && !tags.every((t) => st.includes(t))) continue;
      out.push(sb);
    }
    return out;
  }

  // ------------------------------------------------------------------ stop
  stop(sb, graceSeconds, reason) {
    if (TERMINAL.has(sb.state) || sb.state === State.TERMINATING) return;
    const wasPending = sb.state === State.PENDING || (sb.state === State.CREATING && !sb.proc);
    sb.setState(State.TERMINATING, reason);
    if (wasPending || !sb.proc) {
      // never started (or still preparing): nothing runs yet
      sb.endTime = new Date();
      sb.deleted = true;
      sb.setState(State.TERMINATED, reason);
      sb.logs.close();
      this.free(sb);
      return;
    }
    const kill = (sig) => {
      try {
        if (sb.pid) process.kill(sb.pid, sig);
        else sb.proc.kill(sig);
      } catch {}
    };
    // The first process of a pid namespace never gets a signal it does not
    // catch. A main command that installs its SIGTERM handler just after
    // start (the SDK keep-alive's trap) would miss a delete that comes right
    // away and wait out the whole grace period: so while it does not catch
    // SIGTERM, watch, and send it again once it does.
    const catchesTerm = () => {
      try {
        const st = fs.readFileSync(`/proc/${sb.pid}/status`, "utf8");
        const m = /^SigCgt:\s*([0-9a-f]+)$/m.exec(st);
        return m ? (BigInt("0x" + m[1]) >> 14n) & 1n ? true : false : null;
      } catch {
        return null; // gone
      }
    };
    const caughtAtFirst = sb.pid ? catchesTerm() : true;
    kill("SIGTERM");
    if (caughtAtFirst === false) {
      const w = setInterval(() => {
        const c = catchesTerm();
        if (c === null || sb.state !== State.TERMINATING) clearInterval(w);
        else if (c) {
          clearInterval(w);
          kill("SIGTERM");
        }
      }, 25);
      w.unref();
      sb.timers.push(w);
    }
    const t = setTimeout(() => {
      kill("SIGKILL");
      try {
        sb.proc.kill("SIGKILL");
      } catch {}
    }, Math.max(0, graceSeconds) * 1000);
    t.unref();
    sb.timers.push(t);
  }

  delete(id, { gracePeriodSeconds, allowMissing, snapshotVolumes }) {
    const sb = this.sandboxes.get(id);
    if (!id) throw E.invalid("sandboxId is required");
    if (!sb || (sb.deleted && !allowMissing && TERMINAL.has(sb.state))) {
      if (allowMissing) return { sb: sb || null, snaps: [] };
      throw E.sandboxNotFound(id);
    }
    const snaps = [];
    for (const name of snapshotVolumes || []) {
      if (!sb.volumes.has(name) && !(sb.spec.volumes || []).some((v) => v.name === name)) throw E.invalid(`sandbox has no scratch volume ${JSON.stringify(name)}`);
    }
    if (!sb.deleted && !sb.freed) {
      for (const name of snapshotVolumes || []) {
        const snap = this.newSnapshot(sb, name, SnapshotTrigger.ON_DELETE, "");
        snaps.push(snap);
        (sb.snapshotOnStop ||= []).push(() => this.runSnapshot(snap, sb.volumes.get(name)));
      }
    }
    sb.deleted = true;
    const grace = gracePeriodSeconds > 0 ? gracePeriodSeconds : this.defaultGrace;
    if (TERMINAL.has(sb.state)) {
      if (sb.state !== State.TERMINATED) sb.setState(State.TERMINATED);
    } else this.stop(sb, grace, "deleted");
    return { sb, snaps };
  }

  purge({ tags, dryRun, purgeAll }) {
    if (!purgeAll && !(tags && tags.length)) throw E.invalid("PurgeSandboxes needs tags or purgeAll");
    const victims = [];
    for (const sb of this.sandboxes.values()) {
      if (sb.deleted) continue;
      const st = sb.spec.tags || [];
      if (!purgeAll && !tags.every((t) => st.includes(t))) continue;
      victims.push(sb);
    }
    if (!dryRun) for (const sb of victims) this.delete(sb.id, {});
    return victims.length;
  }

  // --------------------------------------------------------------- exec
  requireRunning(sb) {
    if (sb.state !== State.RUNNING || !sb.pid) throw E.notRunning(sb.id, STATE_NAME[sb.state]);
  }

  checkContainer(sb, name) {
    if (name && !(sb.spec.containers || []).some((c) => c.name === name)) throw E.invalid(`sandbox has no container ${JSON.stringify(name)}`);
  }

  // The sandbox's exec agent (native/agent.c): started once with `runc exec`,
  // so it holds what any command would; commands are then forks of it. Until
  // it is there, or when code in the sandbox ended it, commands use runc exec.
  startAgent(sb) {
    const dir = path.join(sb.dir, "agent");
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const sec = securityOf(sb.container);
    const proc = oci.processSpec({ args: ["/proc/self/fd/4", "agent"], env: [`PATH=${DEFAULT_PATH}`], cwd: "/", uid: sec.uid, gid: sec.gid, caps: sec.caps });
    fs.writeFileSync(path.join(dir, "process.json"), JSON.stringify(proc));
    const sock = path.join(dir, "sock");
    const args = ["exec", "--detach", "--preserve-fds", "2", "--process", path.join(dir, "process.json"), "--pid-file", path.join(dir, "pid"), sb.id];
    const h = this.runcArgs(sb.dir, args, { pidFile: path.join(dir, "pid"), log: path.join(dir, "runc.log") });
    h.splice(1, 0, "--agent-listen", sock);
    const child = this.spawner.spawn(h, { env: { PATH: DEFAULT_PATH }, stdio: ["ignore", "ignore", "pipe", "pipe"] });
    let err = "";
    child.stderr.on("data", (d) => (err += d));
    onStatusLines(child, (line) => {
      if (line === "READY" && !sb.freed) sb.agentSock = sock;
    });
    child.on("close", (code) => {
      sb.agentSock = null;
      if (!sb.freed && sb.state === State.RUNNING) this.log(`the exec agent of ${sb.id} ended (${code}); commands use runc exec ${err.trim()}`);
    });
    child.on("error", () => {});
  }

  // Spawn a command inside a running sandbox with `runc exec`: it joins the
  // sandbox's namespaces and cgroup with the same user, capabilities, seccomp
  // filter and no-new-privileges as the main process. Returns the child process.
  // tty: null, or { width, height } for a terminal (stdin and output through it).
  spawnExec(sb, command, env, withStdin, tty = null) {
    this.requireRunning(sb);
    if (!command || !command.length || !command[0]) throw E.invalid("command is required");
    const n = String(++this.execSeq);
    const xdir = path.join(sb.dir, "x", n);
    fs.mkdirSync(xdir);
    const sec = securityOf(sb.container);
    const proc = oci.processSpec({ args: command, env: this.envList(sb, env), cwd: this.workingDir(sb), uid: sec.uid, gid: sec.gid, caps: sec.caps, terminal: !!tty, size: tty });
    fs.writeFileSync(path.join(xdir, "process.json"), JSON.stringify(proc));
    const pidFile = path.join(xdir, "pid");
    const args = ["exec", "--process", path.join(xdir, "process.json"), "--pid-file", pidFile];
    const consoleSock = tty ? { path: path.join(xdir, "console.sock"), width: tty.width, height: tty.height } : null;
    if (consoleSock) args.push("--detach", "--console-socket", consoleSock.path);
    args.push(sb.id);
    const stdio = [withStdin ? "pipe" : "ignore", "pipe", "pipe", "pipe"];
    if (tty) stdio.push("pipe"); // fd 4: "COLSxROWS" lines
    const h = this.runcArgs(sb.dir, args, { pidFile, log: path.join(xdir, "runc.log"), exec: true, console: consoleSock });
    if (sb.agentSock) {
      // the same command for the agent (helper.h, agent_request)
      const strs = [tty ? "tty" : "pipe", String(tty ? tty.width || 80 : 0), String(tty ? tty.height || 24 : 0), proc.cwd, String(command.length), ...command, String(proc.env.length), ...proc.env];
      if (strs.some((x) => x.includes("\0"))) throw E.invalid("the command or its environment contains a NUL byte");
      fs.writeFileSync(path.join(xdir, "agent.req"), Buffer.from(strs.join("\0") + "\0"));
      h.splice(1, 0, "--agent", sb.agentSock, "--agent-request", path.join(xdir, "agent.req"));
    }
    const child = this.spawner.spawn(h, {
      env: { PATH: DEFAULT_PATH },
      stdio,
    });
    if (tty) child.stdio[4].on("error", () => {});
    sb.execs.add(child);
    child.setupError = null;
    onStatusLines(child, (line) => {
      // a host pid comes from runc; through the agent there is none
      if (line.startsWith("PID ")) child.containerPid = parseInt(line.slice(4), 10);
      else if (line === "READY") {
        child.ready = true;
        child.emit("ready");
      } else if (line.startsWith("ERROR ") && !child.ready) child.setupError = line.slice(6);
    });
    child.on("close", () => {
      sb.execs.delete(child);
      fs.rm(xdir, { recursive: true, force: true }, () => {});
    });
    child.on("error", (e) => {
      child.setupError = e.message;
    });
    // A deadline or a gone caller ends the command itself: SIGKILL cannot be
    // forwarded by the helper, so it goes to the process in the sandbox too.
    child.killCommand = () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      try {
        if (child.containerPid > 0) process.kill(child.containerPid, "SIGKILL");
      } catch {}
      child.kill("SIGKILL");
    };
    return child;
  }

  // ------------------------------------------------------------------ files
  resolvePath(sb, p) {
    if (!p) throw E.invalid("path is required");
    if (p.includes("\0")) throw E.invalid("path contains a NUL byte");
    if (!p.startsWith("/")) p = path.posix.join(this.workingDir(sb), p);
    return p;
  }

  // One file operation by the helper, inside the sandbox (native/fileops.c).
  async fileOp(sb, op, p, input) {
    this.requireRunning(sb);
    const ip = this.resolvePath(sb, p);
    const r = await this.runHelper(["file", op, "--pid", String(sb.pid), "--path", ip, "--max", String(FILE_LIMIT)], input);
    const line = r.status.split("\n").find((l) => l.startsWith("ERROR ") || l.startsWith("OK")) || "";
    if (line.startsWith("ERROR ")) {
      const [, code, ...words] = line.split(" ");
      if (code === "EFBIG") throw E.tooLarge(p, op === "write" ? input.length : FILE_LIMIT + 1, FILE_LIMIT);
      if (code === "EINVAL" && op === "write") throw E.invalid(`${p} is not a regular file`);
      if (code === "ENOTDIR") throw E.io(p, new Error("a parent of the path is not a directory"));
      throw fileError(p, Object.assign(new Error(words.join(" ")), { code }));
    }
    if (!line.startsWith("OK") || r.code !== 0) {
      if (sb.state !== State.RUNNING) throw E.notRunning(sb.id, STATE_NAME[sb.state]);
      if (op === "read" && r.stdout.length > FILE_LIMIT) throw E.tooLarge(p, r.stdout.length, FILE_LIMIT);
      throw E.io(p, new Error(r.stderr || `the file helper ended with ${r.code}`));
    }
    return r.stdout;
  }

  async readFile(sb, p) {
    return this.fileOp(sb, "read", p, null);
  }

  async writeFile(sb, p, content) {
    if (content.length > FILE_LIMIT) throw E.tooLarge(p, content.length, FILE_LIMIT);
    const ip = this.resolvePath(sb, p);
    if (ip === "/" || ip.endsWith("/")) throw E.isDirectory(p);
    await this.fileOp(sb, "write", p, content); // a Buffer, empty or not: always a pipe
  }

  // ------------------------------------------------------------- snapshots
  newSnapshot(sb, volumeName, trigger, requestId) {
    const snap = {
      id: randomUUID(),
      state: SnapshotState.CREATING,
      stateReason: "",
      sizeBytes: 0,
      sourceSandboxId: sb.id,
      trigger,
      createTime: new Date(),
      completeTime: null,
      updatedAt: new Date(),
      sourceVolumeName: volumeName || "",
      requestId: requestId || "",
      file: null,
      deleted: false,
    };
    snap.file = path.join(this.snapRoot, snap.id + ".tar");
    this.snapshots.set(snap.id, snap);
    if (requestId) this.snapByRequest.set(requestId, snap.id);
    return snap;
  }

  createSnapshot(sb, volumeName, requestId) {
    if (requestId && this.snapByRequest.has(requestId)) return this.snapshots.get(this.snapByRequest.get(requestId));
    let src;
    if (volumeName) {
      if (!(sb.spec.volumes || []).some((v) => v.name === volumeName)) throw E.invalid(`sandbox has no scratch volume ${JSON.stringify(volumeName)}`);
      if (sb.freed || !sb.volumes.has(volumeName)) throw E.notRunning(sb.id, STATE_NAME[sb.state]);
      src = sb.volumes.get(volumeName);
    } else {
      // The SDKs send no name for a sandbox's single scratch volume.
      const vols = sb.spec.volumes || [];
      if (vols.length > 1) throw E.invalid(`sandbox has ${vols.length} scratch volumes: name one in scratchVolumeName`);
      if (vols.length === 1) return this.createSnapshot(sb, vols[0].name, requestId);
      // no volume at all: the sandbox's own writable layer
      if (sb.freed || !sb.dir || sb.state === State.PENDING) throw E.notRunning(sb.id, STATE_NAME[sb.state]);
      src = path.join(sb.dir, "upper");
    }
    const snap = this.newSnapshot(sb, volumeName, SnapshotTrigger.MANUAL, requestId);
    this.runSnapshot(snap, src).catch(() => {});
    return snap;
  }

  runSnapshot(snap, src) {
    return new Promise((resolve, reject) => {
      execFile("tar", ["--numeric-owner", "-C", src, "-cf", snap.file, "."], { maxBuffer: 1 << 20 }, (err, _o, stderr) => {
        snap.updatedAt = new Date();
        if (snap.deleted) {
          fsp.rm(snap.file, { force: true }).finally(resolve);
          return;
        }
        // tar exits 1 when files changed while it read them; the archive is still usable
        if (err && err.code !== 1) {
          snap.state = SnapshotState.FAILED;
          snap.stateReason = String(stderr).trim() || err.message;
          reject(err);
          return;
        }
        try {
          snap.sizeBytes = fs.statSync(snap.file).size;
        } catch {}
        snap.state = SnapshotState.READY;
        snap.completeTime = new Date();
        resolve();
      });
    });
  }

  async extractSnapshot(id, dest) {
    const snap = this.snapshots.get(id);
    if (!snap || snap.deleted || snap.state !== SnapshotState.READY) throw E.snapshotNotFound(id);
    await new Promise((resolve, reject) => {
      execFile("tar", ["--numeric-owner", "-C", dest, "-xpf", snap.file], (err, _o, stderr) => (err ? reject(new Error(`restore of ${id}: ${String(stderr).trim() || err.message}`)) : resolve()));
    });
    await removeWhiteouts(dest);
  }

  deleteSnapshot(id, allowMissing) {
    if (!id) throw E.invalid("fileSystemSnapshotId is required");
    const snap = this.snapshots.get(id);
    if (!snap || snap.deleted) {
      if (allowMissing) return null;
      throw E.snapshotNotFound(id);
    }
    snap.deleted = true;
    snap.state = SnapshotState.DELETING;
    snap.updatedAt = new Date();
    this.snapshots.delete(id);
    if (snap.requestId) this.snapByRequest.delete(snap.requestId);
    fsp.rm(snap.file, { force: true }).catch(() => {});
    return snap;
  }

  // ------------------------------------------------------------- shutdown
  async shutdown() {
    this.shuttingDown = true;
    const live = [...this.sandboxes.values()].filter((sb) => !sb.freed);
    for (const sb of live) {
      sb.deleted = true;
      if (!TERMINAL.has(sb.state)) this.stop(sb, 3, "server shut down");
    }
    const all = live.map(
      (sb) =>
        new Promise((resolve) => {
          if (sb.freed) return resolve();
          sb.events.once("freed", resolve);
          if (!sb.proc) this.free(sb);
        }),
    );
    const deadline = new Promise((r) => setTimeout(r, 8000).unref());
    await Promise.race([Promise.all(all), deadline]);
    for (const sb of live) {
      if (sb.proc && sb.proc.exitCode === null) {
        try {
          sb.proc.kill("SIGKILL");
        } catch {}
      }
      await this.free(sb);
    }
    const left = [...this.sandboxes.values()].filter((sb) => sb.mounted || (sb.proc && sb.proc.exitCode === null && sb.proc.signalCode === null));
    this.removeOwnCgroups();
    if (left.length) this.log(`warning: left behind: ${left.map((sb) => `${sb.id} (${sb.mounted ? "root still mounted" : "process still running"})`).join(", ")}`);
    else await fsp.rm(this.sbRoot, { recursive: true, force: true });
    await fsp.rm(this.runcRoot, { recursive: true, force: true }).catch(() => {});
    await fsp.rm(this.snapRoot, { recursive: true, force: true });
    if (this.spawner) {
      this.spawner.close();
      await fsp.rm(path.join(this.stateDir, "spawn"), { recursive: true, force: true });
    }
  }
}

// Overlay whiteouts (0:0 character devices) mean nothing outside an overlay.
async function removeWhiteouts(dir) {
  let entries;
  try {
    entries = await fsp.readdir(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isCharacterDevice()) {
      const st = await fsp.lstat(p);
      if (st.rdev === 0) await fsp.rm(p, { force: true });
    } else if (e.isDirectory()) await removeWhiteouts(p);
  }
}

function listDirs(d) {
  try {
    return fs
      .readdirSync(d, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => e.name);
  } catch {
    return [];
  }
}

// The process identity a container's securityContext asks for. What cannot be
// honoured here is refused, never ignored.
function securityOf(c) {
  const sc = c.securityContext || {};
  if (sc.privileged) throw E.notImplemented("privileged containers");
  if (sc.allowPrivilegeEscalation) throw E.notImplemented("allowPrivilegeEscalation (every process runs with no new privileges)");
  if (sc.capabilitiesAdd && sc.capabilitiesAdd.length) throw E.notImplemented("capabilitiesAdd");
  if (sc.seccompProfile && !["RuntimeDefault", "runtime/default"].includes(sc.seccompProfile)) throw E.notImplemented(`seccomp profile ${JSON.stringify(sc.seccompProfile)}`);
  const drop = new Set((sc.capabilitiesDrop || []).map((n) => (n.toUpperCase().startsWith("CAP_") ? n.toUpperCase() : `CAP_${n.toUpperCase()}`)));
  const caps = drop.has("CAP_ALL") ? [] : oci.DEFAULT_CAPS.filter((k) => !drop.has(k));
  const uid = sc.runAsUser ?? 0;
  const gid = sc.runAsGroup ?? (sc.runAsUser !== undefined ? sc.runAsUser : 0);
  if (uid >= oci.UID_COUNT || gid >= oci.UID_COUNT) throw E.invalid(`runAsUser/runAsGroup must be below ${oci.UID_COUNT}`);
  return { uid, gid, caps, readOnlyRoot: !!sc.readOnlyRootFilesystem };
}

// The kernel features a sandbox is made of; without them the server does not start.
async function checkIsolation() {
  const need = [];
  if (!fs.existsSync(RUNC)) need.push(`the OCI runtime ${RUNC} (apt-get install runc)`);
  if (!/\toverlay$/m.test(fs.readFileSync("/proc/filesystems", "utf8"))) need.push("overlayfs (modprobe overlay)");
  try {
    if (+fs.readFileSync("/proc/sys/user/max_user_namespaces", "utf8") < 1) need.push("user namespaces (sysctl user.max_user_namespaces)");
  } catch {}
  try {
    oci.seccompFor(oci.DEFAULT_CAPS);
  } catch (e) {
    need.push(`the default seccomp profile (apt-get install golang-github-containers-common): ${e.message}`);
  }
  if (need.length) throw new Error(`refusing to start: this machine lacks ${need.join("; ")}`);
}

module.exports = { Manager, STATE_NAME, TERMINAL };
