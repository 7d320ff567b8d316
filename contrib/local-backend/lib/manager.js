"use strict";
// The sandboxes: their lifecycle, processes, logs, files and snapshots.
const fs = require("node:fs");
const fsp = require("node:fs/promises");
const path = require("node:path");
const os = require("node:os");
const { spawn, execFile } = require("node:child_process");
const { EventEmitter } = require("node:events");
const { randomUUID } = require("node:crypto");
const { State, SnapshotState, SnapshotTrigger } = require("./schema");
const { E } = require("./errors");
const { resolveInRoot, parseBytes, parseCpuMillis } = require("./util");
const { Spawner } = require("./spawner");

const HELPER = path.join(__dirname, "..", "gen", "sbx-helper");
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
    this.cgroups = [];
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

// Start the helper: through the zygote when there is one.
function helperSpawn(m, args, opts) {
  if (m.spawner && !m.spawner.dead) return m.spawner.spawn(args, opts);
  return spawn(HELPER, args, opts);
}

class Manager {
  constructor(opts) {
    this.stateDir = opts.stateDir;
    this.imagesDir = opts.imagesDir || null;
    this.log = opts.log || (() => {});
    this.defaultLifetime = opts.defaultLifetime || 3600;
    this.maxLifetime = opts.maxLifetime || 86400;
    this.defaultCpu = opts.defaultCpu || "1";
    this.defaultMemory = opts.defaultMemory || "4Gi";
    this.pidsLimit = opts.pidsLimit || 4096;
    this.defaultGrace = opts.defaultGrace ?? 10;
    this.maxSandboxes = opts.maxSandboxes || 1000;
    this.runnerId = opts.runnerId || `local-${os.hostname()}`;
    this.sandboxes = new Map();
    this.byRequest = new Map();
    this.snapshots = new Map();
    this.snapByRequest = new Map();
    this.order = []; // creation order of sandbox ids
    this.endedWithLogs = [];
    this.cg = null; // { memory, pids, cpu } parent cgroup dirs
    this.shuttingDown = false;
    this.sbRoot = path.join(this.stateDir, "sandboxes");
    this.snapRoot = path.join(this.stateDir, "snapshots");
  }

  // ---------------------------------------------------------------- startup
  async init() {
    if (process.getuid && process.getuid() !== 0) {
      throw new Error(
        "refusing to start: the local backend needs root (CAP_SYS_ADMIN) to give every sandbox its own pid, mount, uts and ipc namespaces and an overlay root; it does not run sandboxes without isolation",
      );
    }
    if (!fs.existsSync(HELPER)) throw new Error(`${HELPER} is missing: run "npm run build" first`);
    await fsp.mkdir(this.sbRoot, { recursive: true });
    await fsp.mkdir(this.snapRoot, { recursive: true });
    this.setupCgroups();
    if (!process.env.CWSB_NO_ZYGOTE) {
      await fsp.rm(path.join(this.stateDir, "spawn"), { recursive: true, force: true });
      this.spawner = new Spawner(HELPER, path.join(this.stateDir, "spawn"), this.log);
    }
    // Prove that isolation works here before accepting any call.
    const probe = path.join(this.stateDir, "probe");
    await fsp.rm(probe, { recursive: true, force: true });
    for (const d of ["upper", "work", "root"]) await fsp.mkdir(path.join(probe, d), { recursive: true });
    try {
      await new Promise((resolve, reject) => {
        execFile(
          HELPER,
          ["init", "--base", "/", "--upper", path.join(probe, "upper"), "--work", path.join(probe, "work"), "--merged", path.join(probe, "root"), "--net-none", "--hostname", "probe", "--", "/bin/true"],
          { timeout: 20000 },
          (err, stdout, stderr) => {
            if (err) reject(new Error(`refusing to start: cannot isolate a sandbox on this machine: ${String(stderr).trim() || err.message}`));
            else resolve();
          },
        );
      });
    } finally {
      await fsp.rm(probe, { recursive: true, force: true });
    }
  }

  // Remove the cgroups of servers of ours that died without cleaning up.
  reapStaleCgroups(base) {
    const roots = fs.existsSync(path.join(base, "cgroup.controllers")) ? [base] : ["memory", "pids", "cpu"].map((c) => path.join(base, c));
    for (const root of roots) {
      let names = [];
      try {
        names = fs.readdirSync(root).filter((n) => /^cwsandbox-local-[0-9]+$/.test(n));
      } catch {}
      for (const n of names) {
        const pid = parseInt(n.slice(16), 10);
        if (fs.existsSync(`/proc/${pid}`)) continue;
        const dir = path.join(root, n);
        try {
          for (const sub of fs.readdirSync(dir, { withFileTypes: true })) if (sub.isDirectory()) fs.rmdirSync(path.join(dir, sub.name));
          fs.rmdirSync(dir);
          this.log(`removed stale cgroup ${dir}`);
        } catch {}
      }
    }
  }

  setupCgroups() {
    const base = "/sys/fs/cgroup";
    const name = `cwsandbox-local-${process.pid}`;
    this.reapStaleCgroups(base);
    const cg = {};
    const v2 = fs.existsSync(path.join(base, "cgroup.controllers"));
    try {
      if (v2) {
        const dir = path.join(base, name);
        fs.mkdirSync(dir);
        try {
          fs.writeFileSync(path.join(dir, "cgroup.subtree_control"), "+memory +pids +cpu");
        } catch {
          fs.writeFileSync(path.join(dir, "cgroup.subtree_control"), "+memory +pids");
        }
        cg.v2 = dir;
      } else {
        for (const ctl of ["memory", "pids", "cpu"]) {
          const root = path.join(base, ctl);
          if (!fs.existsSync(path.join(root, "cgroup.procs"))) continue;
          const dir = path.join(root, name);
          try {
            fs.mkdirSync(dir);
            cg[ctl] = dir;
          } catch (e) {
            this.log(`warning: no ${ctl} cgroup (${e.message}); ${ctl} limits are not applied`);
          }
        }
      }
    } catch (e) {
      this.log(`warning: cgroups unavailable (${e.message}); memory and pid limits are not applied`);
    }
    if (!cg.v2 && !cg.memory) this.log("warning: no memory cgroup: memory limits are not applied");
    if (!cg.v2 && !cg.pids) this.log("warning: no pids cgroup: pid limits are not applied");
    this.cg = cg;
  }

  makeCgroups(sb, memBytes, cpuMillis) {
    const dirs = [];
    const w = (d, f, v) => {
      try {
        fs.writeFileSync(path.join(d, f), String(v));
      } catch (e) {
        this.log(`warning: ${sb.id}: cannot set ${f}=${v}: ${e.message}`);
      }
    };
    if (this.cg.v2) {
      const d = path.join(this.cg.v2, sb.id);
      fs.mkdirSync(d);
      if (memBytes) w(d, "memory.max", memBytes);
      w(d, "memory.swap.max", 0);
      w(d, "pids.max", this.pidsLimit);
      if (cpuMillis) w(d, "cpu.max", `${cpuMillis * 100} 100000`);
      dirs.push(d);
    } else {
      if (this.cg.memory) {
        const d = path.join(this.cg.memory, sb.id);
        fs.mkdirSync(d);
        if (memBytes) w(d, "memory.limit_in_bytes", memBytes);
        dirs.push(d);
      }
      if (this.cg.pids) {
        const d = path.join(this.cg.pids, sb.id);
        fs.mkdirSync(d);
        w(d, "pids.max", this.pidsLimit);
        dirs.push(d);
      }
      if (this.cg.cpu) {
        const d = path.join(this.cg.cpu, sb.id);
        fs.mkdirSync(d);
        if (cpuMillis) {
          w(d, "cpu.cfs_period_us", 100000);
          w(d, "cpu.cfs_quota_us", cpuMillis * 100);
        }
        dirs.push(d);
      }
    }
    sb.cgroups = dirs;
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
    if (spec.services && spec.services.length) throw E.notImplemented("services");
    if (spec.networkIds && spec.networkIds.length) throw E.notImplemented("networks");
    if (spec.runnerIds && spec.runnerIds.length && !spec.runnerIds.includes(this.runnerId)) {
      throw E.capacity(`runner(s) ${spec.runnerIds.join(", ")} not available; this runner is ${this.runnerId}`);
    }
    if (spec.network && spec.network.egress && spec.network.egress.length) throw E.notImplemented("egress rules");
  }

  imageBase(image) {
    if (this.imagesDir) {
      const d = path.join(this.imagesDir, image.replace(/[/:]/g, "_"));
      try {
        if (fs.statSync(d).isDirectory()) return d;
      } catch {}
    }
    return "/";
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
    for (const d of ["upper", "work", "root", "files", "volumes"]) await fsp.mkdir(path.join(dir, d), { recursive: true });
    const base = this.imageBase(c.image);
    const args = ["init", "--base", base, "--upper", path.join(dir, "upper"), "--work", path.join(dir, "work"), "--merged", path.join(dir, "root"), "--hostname", sb.id];
    if (base === "/") {
      // The host's own scratch and runtime areas and the backend's state are not part of the image.
      const hide = new Set(["/tmp", "/var/tmp", "/run"]);
      for (const p of [this.stateDir, this.imagesDir]) {
        if (p && ![...hide].some((h) => p === h || p.startsWith(h + "/"))) hide.add(p);
      }
      for (const h of hide) args.push("--opaque", h);
    }
    if (spec.network && spec.network.denyEgress) args.push("--net-none");
    // scratch volumes
    for (const v of spec.volumes || []) {
      const vd = path.join(dir, "volumes", v.name);
      await fsp.mkdir(vd, { recursive: true });
      sb.volumes.set(v.name, vd);
      const r = v.source.value.restoreFromSnapshotId;
      if (r) await this.extractSnapshot(r, vd);
    }
    for (const vm of c.volumeMounts || []) {
      let src = sb.volumes.get(vm.volume);
      if (vm.subPath) {
        src = path.join(src, vm.subPath);
        await fsp.mkdir(src, { recursive: true });
      }
      args.push("--bind", `${src}:${vm.mountPath}${vm.readOnly ? ":ro" : ""}`);
    }
    // file mounts: read-only, like a config map
    let i = 0;
    for (const f of c.files || []) {
      const fp = path.join(dir, "files", String(i++));
      await fsp.writeFile(fp, f.content, { mode: 0o644 });
      args.push("--bind", `${fp}:${f.path}:ro`);
    }
    if (sb.deleted || sb.freed) {
      await this.free(sb);
      return;
    }
    // limits
    this.makeCgroups(sb, parseBytes(sb.effectiveResources.memory), parseCpuMillis(sb.effectiveResources.cpu));
    for (const d of sb.cgroups) args.push("--cgroup", d);
    if (c.workingDir) args.push("--wd", c.workingDir);
    let cmd;
    if (c.command) cmd = [c.command, ...(c.args || [])];
    else if (c.args && c.args.length) cmd = [...c.args];
    else cmd = ["/bin/sh", "-c", 'trap "exit 0" TERM INT; sleep infinity & wait'];
    args.push("--", ...cmd);
    if (sb.deleted || sb.freed) {
      await this.free(sb);
      return;
    }

    const proc = helperSpawn(this, args, {
      env: this.containerEnv(sb, {}),
      stdio: ["ignore", "pipe", "pipe", "pipe"],
    });
    sb.proc = proc;
    proc.stdout.on("data", (d) => sb.logs.append(d));
    proc.stderr.on("data", (d) => sb.logs.append(d));
    let status = "";
    let setupError = null;
    proc.stdio[3].on("data", (d) => {
      status += d.toString();
      let nl;
      while ((nl = status.indexOf("\n")) >= 0) {
        const line = status.slice(0, nl);
        status = status.slice(nl + 1);
        if (line.startsWith("PID ")) sb.pid = parseInt(line.slice(4), 10);
        else if (line === "READY") this.running(sb);
        else if (line.startsWith("ERROR ")) setupError = line.slice(6);
      }
    });
    sb.exited = new Promise((resolve) => {
      proc.on("close", (code, signal) => {
        const exitCode = code ?? 128 + (os.constants.signals[signal] || 0);
        this.mainExited(sb, exitCode, setupError).finally(resolve);
      });
    });
    proc.on("error", (e) => this.log(`sandbox ${sb.id}: ${e.message}`));
  }

  containerEnv(sb, extra) {
    const c = sb.container;
    const env = { PATH: DEFAULT_PATH, HOSTNAME: sb.id, HOME: "/root", TERM: "xterm" };
    Object.assign(env, c.environmentVariables || {}, extra || {});
    return env;
  }

  running(sb) {
    sb.startTime = new Date();
    if (sb.state === State.CREATING) sb.setState(State.RUNNING, "");
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
    for (const t of sb.timers) clearTimeout(t), clearInterval(t);
    for (const x of sb.execs) {
      try {
        x.kill("SIGKILL");
      } catch {}
    }
    const jobs = sb.snapshotOnStop || [];
    sb.snapshotOnStop = null;
    for (const job of jobs) await job().catch((e) => this.log(`snapshot on delete of ${sb.id}: ${e.message}`));
    const cgs = sb.cgroups;
    sb.cgroups = [];
    for (const d of cgs) await rmdirRetry(d);
    if (sb.dir) await fsp.rm(sb.dir, { recursive: true, force: true }).catch((e) => this.log(`cannot remove ${sb.dir}: ${e.message}`));
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

  // Spawn a command inside a running sandbox. Returns the child process.
  // tty: null, or { width, height } for a terminal (stdin and output through it).
  spawnExec(sb, command, env, withStdin, tty = null) {
    this.requireRunning(sb);
    if (!command || !command.length || !command[0]) throw E.invalid("command is required");
    const args = ["exec", "--pid", String(sb.pid)];
    for (const d of sb.cgroups) args.push("--cgroup", d);
    const wd = sb.container.workingDir;
    if (wd) args.push("--wd", wd);
    if (tty) args.push("--tty", `${tty.width || 80}x${tty.height || 24}`);
    args.push("--", ...command);
    const stdio = [withStdin ? "pipe" : "ignore", "pipe", "pipe", "pipe"];
    if (tty) stdio.push("pipe"); // fd 4: "COLSxROWS" lines
    const child = helperSpawn(this, args, {
      env: this.containerEnv(sb, env),
      stdio,
    });
    if (tty) child.stdio[4].on("error", () => {});
    sb.execs.add(child);
    child.setupError = null;
    child.started = false;
    let status = "";
    child.stdio[3].on("data", (d) => {
      status += d.toString();
      let nl;
      while ((nl = status.indexOf("\n")) >= 0) {
        const line = status.slice(0, nl);
        status = status.slice(nl + 1);
        if (line.startsWith("PID ")) child.started = true;
        else if (line === "READY") child.ready = true;
        else if (line.startsWith("ERROR ") && !child.ready) child.setupError = line.slice(6);
      }
    });
    child.stdio[3].on("error", () => {});
    child.on("close", () => sb.execs.delete(child));
    child.on("error", (e) => {
      child.setupError = e.message;
    });
    return child;
  }

  // ------------------------------------------------------------------ files
  rootOf(sb) {
    this.requireRunning(sb);
    return `/proc/${sb.pid}/root`;
  }

  resolvePath(sb, p) {
    if (!p) throw E.invalid("path is required");
    if (p.includes("\0")) throw E.invalid("path contains a NUL byte");
    if (!p.startsWith("/")) p = path.posix.join(sb.container.workingDir || "/", p);
    return p;
  }

  async readFile(sb, p) {
    const root = this.rootOf(sb);
    const ip = this.resolvePath(sb, p);
    let fh;
    try {
      const r = await resolveInRoot(root, ip);
      if (r.missing) throw Object.assign(new Error("no such file"), { code: "ENOENT" });
      fh = await fsp.open(r.host, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
      const st = await fh.stat();
      if (st.isDirectory()) throw Object.assign(new Error("is a directory"), { code: "EISDIR" });
      if (st.size > FILE_LIMIT) throw E.tooLarge(p, st.size, FILE_LIMIT);
      // read to end-of-file (sizes of special files are not to be trusted)
      const bufs = [];
      let total = 0;
      for (;;) {
        const b = Buffer.allocUnsafe(Math.max(65536, Math.min(st.size + 1 - total, FILE_LIMIT + 1 - total)));
        const { bytesRead } = await fh.read(b, 0, b.length, null);
        if (bytesRead === 0) break;
        bufs.push(b.subarray(0, bytesRead));
        total += bytesRead;
        if (total > FILE_LIMIT) throw E.tooLarge(p, total, FILE_LIMIT);
      }
      return bufs.length === 1 ? bufs[0] : Buffer.concat(bufs, total);
    } catch (e) {
      throw require("./errors").fileError(p, e);
    } finally {
      if (fh) await fh.close().catch(() => {});
    }
  }

  async writeFile(sb, p, content) {
    const root = this.rootOf(sb);
    const ip = this.resolvePath(sb, p);
    if (content.length > FILE_LIMIT) throw E.tooLarge(p, content.length, FILE_LIMIT);
    if (ip === "/" || ip.endsWith("/")) throw E.isDirectory(p);
    let fh;
    try {
      const parent = await resolveInRoot(root, path.posix.dirname(ip));
      if (parent.missing) await mkdirInRoot(root, parent);
      else {
        const st = await fsp.stat(parent.host);
        if (!st.isDirectory()) throw Object.assign(new Error("not a directory"), { code: "ENOTDIR" });
      }
      const target = await resolveInRoot(root, path.posix.join(parent.inside, path.posix.basename(ip)));
      if (target.missing > 1) throw Object.assign(new Error("no such directory"), { code: "ENOENT" });
      try {
        const st = await fsp.stat(target.host);
        if (st.isDirectory()) throw Object.assign(new Error("is a directory"), { code: "EISDIR" });
      } catch (e) {
        if (e.code !== "ENOENT") throw e;
      }
      fh = await fsp.open(target.host, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW, 0o644);
      await fh.writeFile(content);
    } catch (e) {
      if (e.code === "ENOTDIR") throw E.io(p, new Error("a parent of the path is not a directory"));
      throw require("./errors").fileError(p, e);
    } finally {
      if (fh) await fh.close().catch(() => {});
    }
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
    for (const ctl of Object.values(this.cg || {})) await rmdirRetry(ctl);
    await fsp.rm(this.sbRoot, { recursive: true, force: true });
    await fsp.rm(this.snapRoot, { recursive: true, force: true });
    if (this.spawner) {
      this.spawner.close();
      await fsp.rm(path.join(this.stateDir, "spawn"), { recursive: true, force: true });
    }
  }
}

async function rmdirRetry(d) {
  for (let i = 0; i < 50; i++) {
    try {
      await fsp.rmdir(d);
      return;
    } catch (e) {
      if (e.code === "ENOENT") return;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

async function mkdirInRoot(root, r) {
  // r.host is root + existing prefix + missing components (no links among them)
  const parts = r.inside.split("/").filter(Boolean);
  const existing = parts.length - r.missing;
  let cur = path.join(root, ...parts.slice(0, existing));
  for (const c of parts.slice(existing)) {
    cur = path.join(cur, c);
    try {
      await fsp.mkdir(cur, { mode: 0o755 });
    } catch (e) {
      if (e.code !== "EEXIST") throw e;
      const st = await fsp.lstat(cur);
      if (!st.isDirectory()) throw Object.assign(new Error("not a directory"), { code: "ENOTDIR" });
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

module.exports = { Manager, STATE_NAME, TERMINAL, FILE_LIMIT };
