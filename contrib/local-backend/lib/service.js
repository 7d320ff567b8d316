"use strict";
// SandboxService: each rpc, on top of the Manager.
const { create } = require("@bufbuild/protobuf");
const { timestampFromDate, timestampDate } = require("@bufbuild/protobuf/wkt");
const { msg, State, Stream } = require("./schema");
const { E, ConnectError, Code } = require("./errors");
const { TERMINAL, STATE_NAME } = require("./manager");
const { ByteQueue } = require("./util");

const SandboxSchema = msg("Sandbox");
const ts = (d) => (d ? timestampFromDate(d) : undefined);
const EXEC_DEFAULT_MAX = 16 * 1024 * 1024;

function sandboxMessage(m, sb) {
  const status = {
    state: sb.state,
    stateReason: sb.stateReason,
    createTime: ts(sb.createTime),
    startTime: ts(sb.startTime),
    endTime: ts(sb.endTime),
    effectiveResources: sb.effectiveResources,
    effectiveMaxLifetimeSeconds: sb.effectiveLifetime,
    runnerId: m.runnerId,
    runnerGroupId: m.runnerGroupId,
    // listen-only services: reachable inside the runner's network, so no URL
    services: (sb.spec.services || []).map((v) => ({ port: v.port, name: v.name, protocol: v.protocol, visibility: v.visibility })),
    containerStatuses: (sb.spec.containers || []).map((c) => ({
      name: c.name,
      state: sb.state,
      exitCode: sb.exitCode ?? 0,
      restartCount: 0,
    })),
    attachedVolumeIds: [],
    effectiveRuntimeClass: sb.spec.runtimeClass || "",
  };
  if (sb.exitCode !== undefined) status.exitCode = sb.exitCode;
  if (sb.spec.network && sb.spec.network.denyEgress) status.effectiveEgress = [];
  return create(SandboxSchema, { sandboxId: sb.id, spec: sb.spec, status });
}

function snapshotMessage(s) {
  return {
    fileSystemSnapshotId: s.id,
    state: s.state,
    stateReason: s.stateReason,
    sizeBytes: BigInt(s.sizeBytes),
    sourceSandboxId: s.sourceSandboxId,
    trigger: s.trigger,
    createTime: ts(s.createTime),
    completeTime: ts(s.completeTime),
    sourceVolumeName: s.sourceVolumeName,
    updatedAt: ts(s.updatedAt),
    requestId: s.requestId,
  };
}

// Opaque page tokens: base64 of the index to continue at.
function page(items, pageSize, pageToken, max = 1000) {
  let start = 0;
  if (pageToken) {
    const s = Buffer.from(pageToken, "base64url").toString();
    if (!/^o[0-9]+$/.test(s)) throw E.invalid("bad pageToken");
    start = parseInt(s.slice(1), 10);
  }
  if (pageSize < 0) throw E.invalid("pageSize must not be negative");
  const size = pageSize > 0 ? Math.min(pageSize, max) : max;
  const out = items.slice(start, start + size);
  const next = start + size < items.length ? Buffer.from("o" + (start + size)).toString("base64url") : "";
  return { out, next };
}

function waitClose(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null && child.stdout === null) return resolve();
    child.once("close", (code, signal) => resolve({ code, signal }));
  });
}

function exitCodeOf(r) {
  if (!r) return 0;
  if (r.code !== null && r.code !== undefined) return r.code;
  return 128 + (require("node:os").constants.signals[r.signal] || 9);
}

// Consecutive log chunks as fewer, larger entries (each keeps the first's time).
function mergeChunks(chunks, maxBytes) {
  const out = [];
  for (const c of chunks) {
    const last = out[out.length - 1];
    if (last && last.size + c.data.length <= maxBytes) {
      last.parts.push(c.data);
      last.size += c.data.length;
    } else out.push({ off: c.off, time: c.time, parts: [c.data], size: c.data.length });
  }
  return out.map((m) => ({ off: m.off, time: m.time, data: m.parts.length === 1 ? m.parts[0] : Buffer.concat(m.parts, m.size) }));
}

function makeService(m) {
  return {
    async createSandbox(req) {
      if (!req.sandbox) throw E.invalid("sandbox is required");
      const sb = m.create(req.sandbox.spec, req.requestId);
      return sandboxMessage(m, sb);
    },

    async createSandboxFromTemplate() {
      throw E.notImplemented("CreateSandboxFromTemplate");
    },

    async getSandbox(req) {
      return sandboxMessage(m, m.get(req.sandboxId));
    },

    async listSandboxes(req) {
      if (req.runnerIds.length && !req.runnerIds.includes(m.runnerId)) return { sandboxes: [] };
      if (req.volumeIds.length) return { sandboxes: [] };
      const all = m.list({ tags: req.tags, state: req.state, showTerminated: req.showTerminated });
      const { out, next } = page(all, req.pageSize, req.pageToken);
      return { sandboxes: out.map((sb) => sandboxMessage(m, sb)), nextPageToken: next };
    },

    async deleteSandbox(req) {
      const { sb, snaps } = m.delete(req.sandboxId, {
        gracePeriodSeconds: req.gracePeriodSeconds,
        allowMissing: req.allowMissing,
        snapshotVolumes: req.snapshotVolumes,
      });
      return { sandbox: sb ? sandboxMessage(m, sb) : undefined, fileSystemSnapshotIds: snaps.map((s) => s.id) };
    },

    async purgeSandboxes(req) {
      const n = m.purge({ tags: req.tags, dryRun: req.dryRun, purgeAll: req.purgeAll });
      return { purgeCount: n };
    },

    async exec(req, ctx) {
      const sb = m.get(req.sandboxId);
      m.checkContainer(sb, req.container);
      if (req.maxOutputBytes < 0) throw E.invalid("maxOutputBytes must not be negative");
      const max = req.maxOutputBytes > 0 ? req.maxOutputBytes : EXEC_DEFAULT_MAX;
      const child = m.spawnExec(sb, req.command, req.env, false);
      const acc = (stream) => {
        const o = { bufs: [], kept: 0, produced: 0 };
        stream.on("data", (d) => {
          o.produced += d.length;
          if (o.kept < max) {
            const part = d.subarray(0, max - o.kept);
            o.bufs.push(part);
            o.kept += part.length;
          }
        });
        return o;
      };
      const out = acc(child.stdout);
      const err = acc(child.stderr);
      const onAbort = () => child.killCommand();
      ctx.signal.addEventListener("abort", onAbort);
      let r;
      try {
        r = await waitClose(child);
      } finally {
        ctx.signal.removeEventListener("abort", onAbort);
      }
      if (ctx.signal.aborted) throw ctx.signal.reason instanceof ConnectError ? ctx.signal.reason : E.timeout("command");
      if (child.setupError) {
        if (sb.state !== State.RUNNING) throw E.notRunning(sb.id, STATE_NAME[sb.state]);
        throw new ConnectError(`exec: ${child.setupError}`, Code.Internal);
      }
      return {
        stdout: Buffer.concat(out.bufs),
        stderr: Buffer.concat(err.bufs),
        exitCode: exitCodeOf(r),
        stdoutTruncated: out.produced > out.kept,
        stderrTruncated: err.produced > err.kept,
        stdoutBytesProduced: BigInt(out.produced),
        stderrBytesProduced: BigInt(err.produced),
      };
    },

    async *streamExec(reqs, ctx) {
      const it = reqs[Symbol.asyncIterator]();
      const first = await it.next();
      if (first.done) throw E.invalid("StreamExec needs an init message first");
      if (first.value.message.case !== "init") throw E.invalid("the first StreamExec message must be init");
      const init = first.value.message.value;
      const sb = m.get(init.sandboxId);
      m.checkContainer(sb, init.container);
      const tty = init.tty ? { width: init.ttyWidth, height: init.ttyHeight } : null;
      const child = m.spawnExec(sb, init.command, init.env, true, tty);
      child.stdin.on("error", () => {});
      const q = new ByteQueue(4 * 1024 * 1024, (pause) => {
        for (const s of [child.stdout, child.stderr]) (pause ? s.pause() : s.resume());
      });
      child.stdout.on("data", (d) => q.push({ kind: "out", stream: Stream.STDOUT, data: d }, d.length));
      child.stderr.on("data", (d) => q.push({ kind: "out", stream: Stream.STDERR, data: d }, d.length));
      const closed = waitClose(child).then((r) => {
        q.push({ kind: "exit", r });
        q.close();
      });
      const onAbort = () => child.killCommand();
      ctx.signal.addEventListener("abort", onAbort);
      // Requests after init: stdin, resize, close. Read them alongside the output.
      let inputError = null;
      const pump = (async () => {
        try {
          for (;;) {
            const n = await it.next();
            if (n.done) break;
            const mm = n.value.message;
            if (mm.case === "stdin") {
              if (!child.stdin.destroyed && !child.stdin.writableEnded) {
                if (!child.stdin.write(mm.value)) {
                  await new Promise((r) => {
                    const done = () => {
                      child.stdin.off("drain", done);
                      child.off("close", done);
                      r();
                    };
                    child.stdin.once("drain", done);
                    child.once("close", done);
                  });
                }
              }
            } else if (mm.case === "resize") {
              if (tty && mm.value.width && mm.value.height && child.stdio[4] && !child.stdio[4].destroyed) {
                child.stdio[4].write(`${mm.value.width}x${mm.value.height}\n`);
              }
            } else if (mm.case === "close") {
              child.stdin.end();
            } else if (mm.case === "init") {
              throw E.invalid("init may only be sent once");
            }
          }
        } catch (e) {
          if (!ctx.signal.aborted) inputError = e;
        } finally {
          if (!child.stdin.writableEnded) child.stdin.end();
        }
      })();
      try {
        // ready means the command runs (or ran: a missing binary still exits 127)
        await new Promise((r) => {
          if (child.ready || child.exitCode !== null || child.signalCode !== null) return r();
          child.once("ready", r);
          child.once("close", r);
        });
        if (child.setupError && !child.ready) {
          if (sb.state !== State.RUNNING) throw E.notRunning(sb.id, STATE_NAME[sb.state]);
          throw new ConnectError(`exec: ${child.setupError}`, Code.Internal);
        }
        yield { message: { case: "ready", value: { readyTime: timestampFromDate(new Date()) } } };
        for (;;) {
          const item = await q.nextMerged(256 * 1024);
          if (!item) break;
          if (item.kind === "out") {
            yield { message: { case: "output", value: { stream: item.stream, data: item.data } } };
          } else {
            if (inputError) throw inputError;
            if (child.setupError) {
              yield { message: { case: "error", value: { message: child.setupError, code: "internal" } } };
              return;
            }
            yield {
              message: { case: "exit", value: { exitCode: exitCodeOf(item.r), completedTime: timestampFromDate(new Date()) } },
            };
          }
        }
      } finally {
        ctx.signal.removeEventListener("abort", onAbort);
        child.killCommand();
        await closed;
        pump.catch(() => {});
      }
    },

    async *streamLogs(req, ctx) {
      const sb = m.get(req.sandboxId);
      m.checkContainer(sb, req.container);
      const logs = sb.logs;
      if (req.tailLines < 0) throw E.invalid("tailLines must not be negative");
      let off;
      if (req.resumeLogSessionId) {
        if (req.resumeLogSessionId !== logs.sessionId) throw E.invalid(`unknown log session ${req.resumeLogSessionId}`);
        off = Number(req.resumeLogOffset);
        if (off > logs.end) throw E.invalid(`log offset ${off} is past the end of the log (${logs.end})`);
        if (off < logs.base) off = logs.base;
      } else if (req.tailLines > 0) off = logs.tailOffset(req.tailLines);
      else off = logs.base;
      const since = req.sinceTime ? timestampDate(req.sinceTime) : null;
      for (;;) {
        let chunks = logs.from(off);
        if (!req.timestamps && !since) chunks = mergeChunks(chunks, 256 * 1024);
        for (const c of chunks) {
          off = c.off + c.data.length;
          if (since && c.time < since) continue;
          yield {
            data: c.data,
            timestamp: req.timestamps ? timestampFromDate(c.time) : undefined,
            logSessionId: logs.sessionId,
            nextLogOffset: BigInt(off),
          };
        }
        // output that arrived while we were yielding
        if (logs.end > off && logs.from(off).length) continue;
        if (!req.follow || logs.closed || TERMINAL.has(sb.state) || ctx.signal.aborted) break;
        await new Promise((resolve) => {
          const done = () => {
            logs.off("data", done);
            sb.events.off("state", done);
            ctx.signal.removeEventListener("abort", done);
            resolve();
          };
          logs.on("data", done);
          sb.events.on("state", done);
          ctx.signal.addEventListener("abort", done);
        });
        if (ctx.signal.aborted) break;
      }
    },

    async writeFile(req) {
      const sb = m.get(req.sandboxId);
      m.checkContainer(sb, req.container);
      await m.writeFile(sb, req.path, req.content);
      return {};
    },

    async readFile(req) {
      const sb = m.get(req.sandboxId);
      m.checkContainer(sb, req.container);
      return { content: await m.readFile(sb, req.path) };
    },

    async createFileSystemSnapshot(req) {
      const sb = m.get(req.sandboxId);
      return snapshotMessage(m.createSnapshot(sb, req.scratchVolumeName, req.requestId));
    },

    async getFileSystemSnapshot(req) {
      if (!req.fileSystemSnapshotId) throw E.invalid("fileSystemSnapshotId is required");
      const s = m.snapshots.get(req.fileSystemSnapshotId);
      if (!s) throw E.snapshotNotFound(req.fileSystemSnapshotId);
      return snapshotMessage(s);
    },

    async listFileSystemSnapshots(req) {
      const all = [...m.snapshots.values()].filter((s) => !req.sourceSandboxId || s.sourceSandboxId === req.sourceSandboxId);
      const { out, next } = page(all, req.pageSize, req.pageToken);
      return { fileSystemSnapshots: out.map(snapshotMessage), nextPageToken: next };
    },

    async deleteFileSystemSnapshot(req) {
      const s = m.deleteSnapshot(req.fileSystemSnapshotId, req.allowMissing);
      return s ? snapshotMessage(s) : {};
    },
  };
}

module.exports = { makeService };
