"use strict";
// Starting helper processes through the helper's zygote mode (see
// native/sbx-helper.c): child_process.spawn forks this whole Node process,
// which costs 5-20 ms of the event loop per exec here; the zygote forks a
// tiny process instead. Its children's stdio are FIFOs in a per-process
// directory that we open from here.
//
// spawn() returns an object shaped like a ChildProcess where the manager and
// the service need it: stdin, stdout, stderr, stdio[3..4], pid, kill(),
// exitCode, signalCode, and the "close" (code, signal) and "error" events.
const fs = require("node:fs");
const net = require("node:net");
const path = require("node:path");
const os = require("node:os");
const { spawn } = require("node:child_process");
const { EventEmitter } = require("node:events");
const { PassThrough } = require("node:stream");

class ZProc extends EventEmitter {
  constructor(zygote, id, dir, stdio) {
    super();
    this.zygote = zygote;
    this.id = id;
    this.dir = dir;
    this.pid = undefined;
    this.exitCode = null;
    this.signalCode = null;
    this.pendingKill = null;
    this.exited = false;
    this.stdin = stdio[0] === "pipe" ? new PassThrough() : null;
    this.stdout = new PassThrough();
    this.stderr = new PassThrough();
    this.stdio = [this.stdin, this.stdout, this.stderr, new PassThrough()];
    if (stdio.length > 4) this.stdio.push(new PassThrough());
    this.sockets = [];
    this.openOutputs = 0;
  }

  // The child exists: open our ends of its FIFOs.
  onStarted(pid) {
    this.pid = pid;
    try {
      const open = (i, flags) => {
        const fd = fs.openSync(path.join(this.dir, String(i)), flags | fs.constants.O_NONBLOCK);
        const reading = flags === fs.constants.O_RDONLY;
        const s = new net.Socket({ fd, readable: reading, writable: !reading });
        s.on("error", () => {});
        this.sockets.push(s);
        return s;
      };
      // The child opens its reading ends (0, 4) before it executes the
      // helper, whose first words on fd 3 therefore tell that it did: our
      // writing ends must stay open until then, or its open() would wait for
      // a writer forever.
      let markReady;
      const childOpened = new Promise((r) => (markReady = r));
      for (const i of [1, 2, 3]) {
        const s = open(i, fs.constants.O_RDONLY);
        this.openOutputs++;
        s.pipe(this.stdio[i]);
        s.on("close", () => this.outputClosed());
        if (i === 3) {
          s.once("data", markReady);
          s.once("end", markReady);
          s.once("close", markReady);
        }
      }
      this.childOpened = childOpened;
      // we hold our reading ends: the zygote may let go of its own
      this.zygote.release(this.id);
      // O_RDWR: opening never waits for the reader, and we stay the only writer.
      // Our end must be closed (not just shut down) for the reader to see
      // end-of-file: we are the FIFO's only writer.
      const feed = (src, s) => {
        src.on("error", () => {});
        src.on("data", (d) => {
          if (!s.write(d)) {
            src.pause();
            s.once("drain", () => src.resume());
          }
        });
        src.on("end", () => {
          // no end(): a FIFO cannot be shut down half-way; close it once
          // flushed and once the child holds its own end
          // (an empty write's callback runs once everything before it is flushed;
          // "drain" would not come if the last write returned true while still queued)
          childOpened.then(() => {
            if (s.writableLength === 0) s.destroy();
            else s.write(Buffer.alloc(0), () => s.destroy());
          });
        });
      };
      if (this.stdin) feed(this.stdin, open(0, fs.constants.O_RDWR));
      if (this.stdio[4]) feed(this.stdio[4], open(4, fs.constants.O_RDWR));
    } catch (e) {
      this.zygote.release(this.id);
      this.kill("SIGKILL");
      this.emit("error", e);
    }
    if (this.pendingKill) this.kill(this.pendingKill);
  }

  outputClosed() {
    if (--this.openOutputs === 0) this.maybeClose();
  }

  onEnded(code, sig) {
    this.exited = true;
    if (code >= 0) this.exitCode = code;
    else this.signalCode = os.constants.signals ? Object.keys(os.constants.signals).find((k) => os.constants.signals[k] === sig) || `SIG${sig}` : `SIG${sig}`;
    // our write ends would keep nothing alive, but close them now
    for (const s of this.sockets) if (!s.readable) s.destroy();
    this.maybeClose();
  }

  maybeClose() {
    if (!this.exited || this.openOutputs > 0 || this.closedEmitted) return;
    this.closedEmitted = true;
    for (const s of this.sockets) s.destroy();
    fs.rm(this.dir, { recursive: true, force: true }, () => {});
    this.emit("exit", this.exitCode, this.signalCode);
    // let the PassThroughs deliver what they hold first
    setImmediate(() => this.emit("close", this.exitCode, this.signalCode));
  }

  kill(sig = "SIGTERM") {
    if (this.exited) return false;
    if (!this.pid) {
      this.pendingKill = sig;
      return true;
    }
    try {
      process.kill(this.pid, sig);
      return true;
    } catch {
      return false;
    }
  }
}

class Spawner {
  constructor(helper, dir, log) {
    this.helper = helper;
    this.dir = dir;
    this.log = log || (() => {});
    this.next = 1;
    this.byId = new Map();
    this.byPid = new Map();
    fs.mkdirSync(dir, { recursive: true });
    this.proc = spawn(helper, ["zygote"], { stdio: ["pipe", "pipe", "inherit"] });
    this.proc.stdin.on("error", () => {});
    this.proc.on("exit", (code, sig) => {
      this.dead = true;
      if (!this.closing) this.log(`zygote exited (${code ?? sig})`);
      for (const p of this.byId.values()) p.emit("error", new Error("zygote exited"));
    });
    let buf = "";
    this.proc.stdout.on("data", (d) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        this.line(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    });
  }

  line(l) {
    if (process.env.CWSB_DEBUG_SPAWN) this.log(`zygote: ${l}`);
    const [kind, a, b, c] = l.split(" ");
    if (kind === "P") {
      const p = this.byId.get(a);
      if (!p) return;
      this.byId.delete(a);
      this.byPid.set(+b, p);
      p.onStarted(+b);
    } else if (kind === "X") {
      const p = this.byPid.get(+a);
      if (!p) return;
      this.byPid.delete(+a);
      p.onEnded(+b, +c);
    } else if (kind === "E") {
      const p = this.byId.get(a);
      if (!p) return;
      this.byId.delete(a);
      fs.rm(p.dir, { recursive: true, force: true }, () => {});
      p.exited = true;
      const err = new Error(l.slice(3 + a.length));
      setImmediate(() => {
        p.emit("error", err);
        p.exitCode = 127;
        p.emit("close", 127, null);
      });
    }
  }

  // stdio: [ "pipe"|"ignore", "pipe", "pipe", "pipe" (, "pipe") ]
  spawn(args, { env, stdio }) {
    if (this.dead) throw new Error("the zygote is gone");
    const id = String(this.next++);
    if (process.env.CWSB_DEBUG_SPAWN) this.log(`spawn ${id}: ${args.join(" ")}`);
    const dir = path.join(this.dir, id);
    fs.mkdirSync(dir);
    const p = new ZProc(this, id, dir, stdio);
    this.byId.set(id, p);
    const fields = [id, dir, stdio[0] === "pipe" ? "pipe" : "null", String(stdio.length), String(args.length + 1), this.helper, ...args];
    const envs = Object.entries(env || {}).map(([k, v]) => `${k}=${v}`);
    fields.push(String(envs.length), ...envs);
    for (const f of fields) if (f.includes("\0")) throw new Error("NUL byte in an argument or the environment");
    this.proc.stdin.write(fields.join("\0") + "\0");
    return p;
  }

  release(id) {
    if (!this.dead) this.proc.stdin.write(`C\0${id}\0`);
  }

  close() {
    this.closing = true;
    try {
      this.proc.stdin.end();
    } catch {}
  }
}

module.exports = { Spawner };
