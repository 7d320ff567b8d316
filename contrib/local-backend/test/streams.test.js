"use strict";
// StreamLogs and StreamExec in depth: follow, tail, since, timestamps,
// resume; duplex and half-duplex exec; 100 MiB through StreamExec.
const { test, describe, before, after } = require("node:test");
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const http2 = require("node:http2");
const { State } = require("../lib/schema");
const h = require("./helpers");

let srv;
before(async () => {
  srv = await h.startServer();
});
after(async () => {
  await srv.stop();
});

const text = (entries) => Buffer.concat(entries.map((e) => Buffer.from(e.data))).toString();

describe("StreamLogs", () => {
  let c, sb;
  before(async () => {
    c = h.client(srv.url, "connect-json");
    sb = await h.newSandbox(c, {}, { command: "/bin/sh", args: ["-c", 'for i in 1 2 3 4 5; do echo line$i; echo warn$i >&2; sleep 0.05; done; trap "exit 0" TERM; sleep 1000 & wait'] });
    // wait until all ten lines are there
    for (let i = 0; i < 200; i++) {
      const all = [];
      for await (const e of c.streamLogs({ sandboxId: sb.sandboxId })) all.push(e);
      if ((text(all).match(/\n/g) || []).length >= 10) break;
      await new Promise((r) => setTimeout(r, 20));
    }
  });
  after(async () => {
    await c.deleteSandbox({ sandboxId: sb.sandboxId });
  });

  test("without follow: the output so far, stdout and stderr, then the end", async () => {
    const all = [];
    for await (const e of c.streamLogs({ sandboxId: sb.sandboxId })) all.push(e);
    const t = text(all);
    for (let i = 1; i <= 5; i++) {
      assert.match(t, new RegExp(`line${i}\n`));
      assert.match(t, new RegExp(`warn${i}\n`));
    }
    assert.ok(all.every((e) => e.logSessionId === all[0].logSessionId && e.logSessionId));
    assert.equal(Number(all.at(-1).nextLogOffset), Buffer.byteLength(t));
    assert.ok(all.every((e) => e.timestamp === undefined));
  });

  test("an exec's output never reaches the logs", async () => {
    await c.exec({ sandboxId: sb.sandboxId, command: ["echo", "from-exec"] });
    const all = [];
    for await (const e of c.streamLogs({ sandboxId: sb.sandboxId })) all.push(e);
    assert.doesNotMatch(text(all), /from-exec/);
  });

  test("tailLines", async () => {
    const all = [];
    for await (const e of c.streamLogs({ sandboxId: sb.sandboxId, tailLines: 2 })) all.push(e);
    // stdout and stderr are two pipes: lines written together may arrive in either order
    assert.deepEqual(text(all).split("\n").sort(), ["", "line5", "warn5"]);
    const many = [];
    for await (const e of c.streamLogs({ sandboxId: sb.sandboxId, tailLines: 1000 })) many.push(e);
    assert.equal((text(many).match(/\n/g) || []).length, 10);
  });

  test("timestamps and sinceTime", async () => {
    const all = [];
    for await (const e of c.streamLogs({ sandboxId: sb.sandboxId, timestamps: true })) all.push(e);
    assert.ok(all.every((e) => e.timestamp));
    const mid = all[Math.floor(all.length / 2)];
    const since = [];
    for await (const e of c.streamLogs({ sandboxId: sb.sandboxId, sinceTime: mid.timestamp, timestamps: true })) since.push(e);
    assert.ok(since.length > 0 && since.length < all.length);
    const ms = (t) => Number(t.seconds) * 1e3 + t.nanos / 1e6;
    assert.ok(since.every((e) => ms(e.timestamp) >= ms(mid.timestamp)));
    assert.ok(text(all).endsWith(text(since)));
  });

  test("resume by session and offset", async () => {
    const full = [];
    for await (const e of c.streamLogs({ sandboxId: sb.sandboxId })) full.push(e);
    const first = [];
    // (with timestamps every chunk is its own entry; without, chunks that are
    // already there come merged)
    for await (const e of c.streamLogs({ sandboxId: sb.sandboxId, timestamps: true })) {
      first.push(e);
      if (first.length === 3) break; // the stream drops
    }
    assert.equal(first.length, 3);
    const rest = [];
    for await (const e of c.streamLogs({ sandboxId: sb.sandboxId, resumeLogSessionId: first[2].logSessionId, resumeLogOffset: first[2].nextLogOffset })) rest.push(e);
    assert.equal(text(first) + text(rest), text(full));
    // any byte offset of the session
    const mid = [];
    for await (const e of c.streamLogs({ sandboxId: sb.sandboxId, resumeLogSessionId: full[0].logSessionId, resumeLogOffset: 7n })) mid.push(e);
    assert.equal(text(mid), text(full).slice(7));
    assert.equal(mid.at(-1).nextLogOffset, full.at(-1).nextLogOffset);
    await assert.rejects(
      (async () => {
        for await (const _ of c.streamLogs({ sandboxId: sb.sandboxId, resumeLogSessionId: "other", resumeLogOffset: 1n }));
      })(),
      (e) => h.errorInfo(e).code === 3,
    );
    await assert.rejects(
      (async () => {
        for await (const _ of c.streamLogs({ sandboxId: "nope" }));
      })(),
      (e) => h.errorInfo(e).reason === "CWSANDBOX_SANDBOX_NOT_FOUND",
    );
  });
});

describe("StreamLogs follow", () => {
  for (const kind of h.KINDS) {
    test(`follows new output and ends when the sandbox ends (${kind})`, async () => {
      const c = h.client(srv.url, kind);
      const sb = await c.createSandbox({ sandbox: { spec: h.spec({}, { command: "/bin/sh", args: ["-c", "echo a; sleep 0.3; echo b; sleep 0.3; echo c"] }) } });
      const got = [];
      const t0 = Date.now();
      // starts while the sandbox is still PENDING
      for await (const e of c.streamLogs({ sandboxId: sb.sandboxId, follow: true })) got.push({ t: Date.now() - t0, s: Buffer.from(e.data).toString() });
      assert.equal(got.map((g) => g.s).join(""), "a\nb\nc\n");
      assert.ok(got.at(-1).t - got[0].t >= 500, "lines arrive as they are written");
      const end = await c.getSandbox({ sandboxId: sb.sandboxId });
      assert.equal(end.status.state, State.COMPLETED);
    });
  }

  test("a slow follower gets output that arrived while it was busy", async () => {
    const c = h.client(srv.url, "connect-binary");
    const sb = await c.createSandbox({
      sandbox: { spec: h.spec({}, { command: "/bin/sh", args: ["-c", 'i=1; while [ $i -le 3000 ]; do echo "l $i"; i=$((i+1)); done; trap "exit 0" TERM; sleep 1000 & wait'] }) },
    });
    let want = "";
    for (let i = 1; i <= 3000; i++) want += `l ${i}\n`;
    let got = "";
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), 10000);
    try {
      for await (const e of c.streamLogs({ sandboxId: sb.sandboxId, follow: true }, { signal: ac.signal })) {
        got += Buffer.from(e.data).toString();
        await new Promise((r) => setTimeout(r, 2)); // a slow reader
        if (got.length >= want.length) break;
      }
    } catch (e) {
      if (!ac.signal.aborted) throw e;
    }
    clearTimeout(timer);
    assert.equal(got, want);
    await c.deleteSandbox({ sandboxId: sb.sandboxId });
  });

  test("a follower can leave early", async () => {
    const c = h.client(srv.url, "connect-binary");
    const sb = await h.newSandbox(c, {}, { command: "/bin/sh", args: ["-c", "while true; do echo tick; sleep 0.05; done"] });
    const ac = new AbortController();
    let n = 0;
    await assert.rejects(async () => {
      for await (const _ of c.streamLogs({ sandboxId: sb.sandboxId, follow: true }, { signal: ac.signal })) if (++n === 3) ac.abort();
    });
    assert.equal(n, 3);
    await c.deleteSandbox({ sandboxId: sb.sandboxId, gracePeriodSeconds: 1 });
  });
});

describe("StreamExec", () => {
  let sbs = {};
  before(async () => {
    for (const kind of h.KINDS) sbs[kind] = await h.newSandbox(h.client(srv.url, kind));
  });

  for (const kind of h.KINDS) {
    test(`full duplex: each stdin line answered before the next is sent (${kind})`, async () => {
      const c = h.client(srv.url, kind);
      const id = sbs[kind].sandboxId;
      let wake;
      let answered = Promise.resolve();
      const replies = [];
      async function* reqs() {
        yield { message: { case: "init", value: { sandboxId: id, command: ["sh", "-c", 'while read l; do echo "got $l"; done; echo eof; exit 2'] } } };
        for (let i = 0; i < 5; i++) {
          answered = new Promise((r) => (wake = r));
          yield { message: { case: "stdin", value: Buffer.from(`m${i}\n`) } };
          await answered; // needs the reply before going on: true duplex
        }
        yield { message: { case: "close", value: {} } };
      }
      let exit = null;
      let buf = "";
      for await (const r of c.streamExec(reqs())) {
        if (r.message.case === "output") {
          buf += Buffer.from(r.message.value.data).toString();
          let nl;
          while ((nl = buf.indexOf("\n")) >= 0) {
            replies.push(buf.slice(0, nl));
            buf = buf.slice(nl + 1);
            if (wake) wake();
          }
        }
        if (r.message.case === "exit") exit = r.message.value.exitCode;
      }
      assert.deepEqual(replies, ["got m0", "got m1", "got m2", "got m3", "got m4", "eof"]);
      assert.equal(exit, 2);
    });

    // A last stdin chunk small enough to be queued without back-pressure once the
    // child's pipe is full: the pipe must still close after it is flushed (it once
    // stayed open, and `cat >` never ended).
    test(`stdin ending in a 1-byte chunk after 4 MiB always reaches EOF (${kind})`, async () => {
      const c = h.client(srv.url, kind);
      const id = sbs[kind].sandboxId;
      const big = crypto.randomBytes(4 << 20);
      for (let i = 0; i < 8; i++) {
        const w = await h.collectExec(c, { sandboxId: id, command: ["sh", "-c", "sleep 0.05; wc -c"] }, [big, Buffer.from("z")]);
        assert.equal(w.exitCode, 0);
        assert.equal(w.stdout.toString().trim(), String((4 << 20) + 1));
      }
    });

    test(`100 MiB in through stdin and out through stdout (${kind})`, async () => {
      const c = h.client(srv.url, kind);
      const id = sbs[kind].sandboxId;
      const chunk = crypto.randomBytes(1 << 20);
      const chunks = [];
      const hash = crypto.createHash("sha256");
      for (let i = 0; i < 100; i++) {
        const b = Buffer.from(chunk);
        b.writeUInt32BE(i, 0);
        chunks.push(b);
        hash.update(b);
      }
      const want = hash.digest("hex");
      const w = await h.collectExec(c, { sandboxId: id, command: ["sh", "-c", "cat > /tmp/big && sha256sum /tmp/big && stat -c %s /tmp/big"] }, chunks);
      assert.equal(w.exitCode, 0);
      assert.equal(w.stdout.toString(), `${want}  /tmp/big\n${100 << 20}\n`);
      const got = crypto.createHash("sha256");
      let bytes = 0;
      for await (const r of c.streamExec(
        (async function* () {
          yield { message: { case: "init", value: { sandboxId: id, command: ["cat", "/tmp/big"] } } };
          yield { message: { case: "close", value: {} } };
        })(),
      )) {
        if (r.message.case === "output") {
          got.update(r.message.value.data);
          bytes += r.message.value.data.length;
        }
      }
      assert.equal(bytes, 100 << 20);
      assert.equal(got.digest("hex"), want);
      await c.exec({ sandboxId: id, command: ["rm", "/tmp/big"] });
    });
  }

  test("half duplex: the whole request body first, then the response (as Debian 12's libcurl does)", async () => {
    const id = sbs["connect-json"].sandboxId;
    const env = (o) => {
      const b = Buffer.from(JSON.stringify(o));
      const hd = Buffer.alloc(5);
      hd.writeUInt32BE(b.length, 1);
      return Buffer.concat([hd, b]);
    };
    const payload = crypto.randomBytes(3 << 20);
    const parts = [env({ init: { sandboxId: id, command: ["sh", "-c", "sha256sum; echo to-stderr >&2; exit 4"] } })];
    for (let o = 0; o < payload.length; o += 256 * 1024) parts.push(env({ stdin: payload.subarray(o, o + 256 * 1024).toString("base64") }));
    parts.push(env({ close: {} }));
    const body = Buffer.concat(parts);
    const session = http2.connect(srv.url);
    const req = session.request({ ":method": "POST", ":path": "/coreweave.sandbox.v1.SandboxService/StreamExec", "content-type": "application/connect+json", "connect-protocol-version": "1" });
    // write everything and end before even looking at the response
    req.end(body);
    const chunks = [];
    let status;
    req.on("response", (hd) => (status = hd[":status"]));
    for await (const d of req) chunks.push(d);
    session.close();
    assert.equal(status, 200);
    const data = Buffer.concat(chunks);
    const msgs = [];
    for (let i = 0; i < data.length; ) {
      const flags = data[i];
      const n = data.readUInt32BE(i + 1);
      msgs.push({ flags, json: JSON.parse(data.subarray(i + 5, i + 5 + n).toString()) });
      i += 5 + n;
    }
    assert.ok(msgs[0].json.ready);
    const end = msgs.at(-1);
    assert.equal(end.flags, 2);
    assert.deepEqual(end.json, {});
    const exit = msgs.at(-2).json.exit;
    assert.equal(exit.exitCode, 4);
    const out = msgs.filter((m) => m.json.output && m.json.output.stream === "STREAM_STDOUT").map((m) => Buffer.from(m.json.output.data, "base64"));
    const err = msgs.filter((m) => m.json.output && m.json.output.stream === "STREAM_STDERR").map((m) => Buffer.from(m.json.output.data, "base64"));
    assert.equal(Buffer.concat(out).toString(), crypto.createHash("sha256").update(payload).digest("hex") + "  -\n");
    assert.equal(Buffer.concat(err).toString(), "to-stderr\n");
  });

  test("tty: a terminal of the sandbox, its size, resize, close as end-of-file", async () => {
    const c = h.client(srv.url, "connect-json");
    const id = sbs["connect-json"].sandboxId;
    let out = "";
    let exit = null;
    let wake = null;
    const seen = (s) =>
      new Promise((resolve) => {
        const check = () => (out.includes(s) ? resolve() : (wake = check));
        check();
      });
    async function* reqs() {
      yield { message: { case: "init", value: { sandboxId: id, command: ["sh", "-c", "tty; stty size; read x; echo got $x; stty size; cat; echo bye"], tty: true, ttyWidth: 100, ttyHeight: 30 } } };
      await seen("30 100");
      yield { message: { case: "resize", value: { width: 120, height: 40 } } };
      yield { message: { case: "stdin", value: Buffer.from("hello\n") } };
      await seen("40 120");
      yield { message: { case: "close", value: {} } };
    }
    for await (const r of c.streamExec(reqs())) {
      if (r.message.case === "output") {
        assert.equal(r.message.value.stream, 1);
        out += Buffer.from(r.message.value.data).toString();
        if (wake) {
          const w = wake;
          wake = null;
          w();
        }
      }
      if (r.message.case === "exit") exit = r.message.value.exitCode;
    }
    assert.equal(out, "/dev/pts/0\r\n30 100\r\nhello\r\ngot hello\r\n40 120\r\nbye\r\n");
    assert.equal(exit, 0);
  });

  test("many short calls, in a row and at once (stdin closed at once or after data)", async () => {
    const c = h.client(srv.url, "connect-binary");
    const id = sbs["connect-binary"].sandboxId;
    for (let i = 0; i < 40; i++) {
      const r = await h.collectExec(c, { sandboxId: id, command: ["cat"] }, i % 2 ? [Buffer.from(`x${i}`)] : []);
      assert.equal(r.stdout.toString(), i % 2 ? `x${i}` : "");
      assert.equal(r.exitCode, 0);
    }
    const all = await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        i % 3 ? h.collectExec(c, { sandboxId: id, command: ["sh", "-c", `cat; echo ${i}`] }, [Buffer.from("in ")]) : c.exec({ sandboxId: id, command: ["echo", String(i)] }),
      ),
    );
    all.forEach((r, i) => assert.equal(Buffer.from(r.stdout).toString(), i % 3 ? `in ${i}\n` : `${i}\n`));
  });

  test("errors: no init, unknown sandbox, cancel kills the command", async () => {
    const c = h.client(srv.url, "connect-binary");
    await assert.rejects(
      (async () => {
        for await (const _ of c.streamExec(
          (async function* () {
            yield { message: { case: "stdin", value: Buffer.from("x") } };
          })(),
        ));
      })(),
      (e) => h.errorInfo(e).code === 3,
    );
    await assert.rejects(h.collectExec(c, { sandboxId: "nope", command: ["true"] }), (e) => h.errorInfo(e).reason === "CWSANDBOX_SANDBOX_NOT_FOUND");
    const id = sbs["connect-binary"].sandboxId;
    const ac = new AbortController();
    await assert.rejects(async () => {
      for await (const r of c.streamExec(
        (async function* () {
          yield { message: { case: "init", value: { sandboxId: id, command: ["sh", "-c", "echo started; exec sleep 777"] } } };
          await new Promise(() => {}); // never closes stdin
        })(),
        { signal: ac.signal },
      ))
        if (r.message.case === "output") ac.abort();
    });
    await new Promise((r) => setTimeout(r, 200));
    const ps = await c.exec({ sandboxId: id, command: ["ps", "-eo", "args"] });
    assert.doesNotMatch(Buffer.from(ps.stdout).toString(), /sleep 777/);
  });
});
