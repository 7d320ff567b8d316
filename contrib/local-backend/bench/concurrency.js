#!/usr/bin/env node
// Figures for the local backend:
//  1. create → RUNNING latency (sequential creates, client-observed and the
//     server's own startTime - createTime);
//  2. N sandboxes at once (default 100), each streaming output two ways at the
//     same time: a StreamExec writing numbered lines to stdout and stderr, and
//     StreamLogs following its main process, which prints numbered lines too.
//     Every byte is checked.
//  1b. Exec latency (sequential Exec of `true` in one sandbox);
// Usage: node bench/concurrency.js [--url URL] [--sandboxes 100] [--lines 2000] [--latency-runs 30]
"use strict";
const { performance } = require("node:perf_hooks");
const h = require("../test/helpers");
const { State } = require("../lib/schema");

function arg(name, def) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
}
const N = +arg("sandboxes", 100);
const LINES = +arg("lines", 2000);
const LAT_RUNS = +arg("latency-runs", 30);

const ms = (t) => Number(t.seconds) * 1e3 + t.nanos / 1e6;
function stats(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return `p50 ${q(0.5).toFixed(1)} ms, p95 ${q(0.95).toFixed(1)} ms, max ${s.at(-1).toFixed(1)} ms (n=${s.length})`;
}

async function waitRunning(c, id, pollMs) {
  for (;;) {
    const g = await c.getSandbox({ sandboxId: id });
    if (g.status.state === State.RUNNING) return g;
    if (g.status.state !== State.PENDING && g.status.state !== State.CREATING) throw new Error(`sandbox ${id} is ${g.status.state}: ${g.status.stateReason}`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

function expectLines(prefix, n) {
  let s = "";
  for (let i = 1; i <= n; i++) s += `${prefix} ${i}\n`;
  return s;
}

async function main() {
  let srv = null;
  let url = arg("url");
  if (!url) {
    srv = await h.startServer(["--max-sandboxes", String(N + 50)]);
    url = srv.url;
  }
  const clients = Array.from({ length: 4 }, () => h.client(url, "connect-binary"));
  const c = clients[0];
  console.log(`server ${url}`);

  // 1. latency
  const client = [];
  const server = [];
  for (let i = 0; i < LAT_RUNS; i++) {
    const t0 = performance.now();
    const sb = await c.createSandbox({ sandbox: { spec: h.spec({ tags: ["bench-latency"] }) } });
    const g = await waitRunning(c, sb.sandboxId, 2);
    client.push(performance.now() - t0);
    server.push(ms(g.status.startTime) - ms(g.status.createTime));
    await c.deleteSandbox({ sandboxId: sb.sandboxId });
  }
  console.log(`create→RUNNING, client-observed (polling every 2 ms): ${stats(client)}`);
  console.log(`create→RUNNING, server (startTime - createTime):      ${stats(server)}`);

  // 1b. exec latency: Exec of `true` in one running sandbox, one after the other
  {
    const sb = await c.createSandbox({ sandbox: { spec: h.spec({ tags: ["bench-latency"] }) } });
    await waitRunning(c, sb.sandboxId, 2);
    const execs = [];
    for (let i = 0; i < LAT_RUNS; i++) {
      const t0 = performance.now();
      const r = await c.exec({ sandboxId: sb.sandboxId, command: ["true"] });
      if (r.exitCode !== 0) throw new Error(`exec true exited ${r.exitCode}`);
      execs.push(performance.now() - t0);
    }
    await c.deleteSandbox({ sandboxId: sb.sandboxId });
    console.log(`Exec of true, client-observed:                      ${stats(execs)}`);
  }

  // 2. N at once
  const mainScript = `i=1; while [ $i -le ${LINES} ]; do echo "log $i"; i=$((i+1)); done; trap "exit 0" TERM; sleep 1000 & wait`;
  const execScript = `i=1; while [ $i -le ${LINES} ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done; exit 7`;
  const t0 = performance.now();
  const created = await Promise.all(
    Array.from({ length: N }, (_, i) =>
      clients[i % clients.length].createSandbox({ sandbox: { spec: h.spec({ tags: ["bench-concurrency"] }, { command: "/bin/sh", args: ["-c", mainScript] }) } }),
    ),
  );
  const running = await Promise.all(created.map((sb, i) => waitRunning(clients[i % clients.length], sb.sandboxId, 10)));
  const allRunning = performance.now() - t0;
  console.log(`${N} sandboxes created at once: all RUNNING after ${allRunning.toFixed(0)} ms (server-side create→RUNNING ${stats(running.map((g) => ms(g.status.startTime) - ms(g.status.createTime)))})`);

  const wantOut = expectLines("out", LINES);
  const wantErr = expectLines("err", LINES);
  const wantLog = expectLines("log", LINES);
  let failures = 0;
  let bytes = 0;
  const firstOutput = [];
  const t1 = performance.now();
  await Promise.all(
    running.map(async (sb, i) => {
      const cl = clients[i % clients.length];
      const started = performance.now();
      const execP = (async () => {
        let out = "";
        let err = "";
        let exit = null;
        let first = 0;
        for await (const r of cl.streamExec(
          (async function* () {
            yield { message: { case: "init", value: { sandboxId: sb.sandboxId, command: ["sh", "-c", execScript] } } };
            yield { message: { case: "close", value: {} } };
          })(),
        )) {
          if (r.message.case === "output") {
            if (!first) first = performance.now() - started;
            const s = Buffer.from(r.message.value.data).toString();
            bytes += r.message.value.data.length;
            if (r.message.value.stream === 1) out += s;
            else err += s;
          } else if (r.message.case === "exit") exit = r.message.value.exitCode;
        }
        firstOutput.push(first);
        if (out !== wantOut || err !== wantErr || exit !== 7) {
          failures++;
          console.error(`sandbox ${sb.sandboxId}: exec output mismatch (stdout ${out.length}/${wantOut.length}, stderr ${err.length}/${wantErr.length}, exit ${exit})`);
        }
      })();
      const logsP = (async () => {
        let log = "";
        const ac = new AbortController();
        try {
          for await (const e of cl.streamLogs({ sandboxId: sb.sandboxId, follow: true }, { signal: ac.signal })) {
            log += Buffer.from(e.data).toString();
            bytes += e.data.length;
            if (log.length >= wantLog.length) ac.abort();
          }
        } catch (e) {
          if (!ac.signal.aborted) throw e;
        }
        if (log !== wantLog) {
          failures++;
          console.error(`sandbox ${sb.sandboxId}: log mismatch (${log.length}/${wantLog.length})`);
        }
      })();
      await Promise.all([execP, logsP]);
    }),
  );
  const streamMs = performance.now() - t1;
  console.log(
    `${N} sandboxes × (StreamExec of ${LINES} stdout + ${LINES} stderr lines, StreamLogs follow of ${LINES} lines): ${streamMs.toFixed(0)} ms, ` +
      `${(bytes / 1e6).toFixed(1)} MB, ${((bytes / 1e6) / (streamMs / 1e3)).toFixed(1)} MB/s; first output ${stats(firstOutput)}; ` +
      (failures ? `${failures} MISMATCHES` : "all output correct"),
  );

  const t2 = performance.now();
  await Promise.all(running.map((sb, i) => clients[i % clients.length].deleteSandbox({ sandboxId: sb.sandboxId })));
  await Promise.all(running.map((sb, i) => h.waitState(clients[i % clients.length], sb.sandboxId, State.TERMINATED, 30000)));
  console.log(`${N} sandboxes deleted: all TERMINATED after ${(performance.now() - t2).toFixed(0)} ms`);
  if (srv) await srv.stop();
  process.exit(failures ? 1 : 0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
