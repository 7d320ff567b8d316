"use strict";
// Where the backend listens when started without --listen: a unix socket private to
// the user, at a well-known path that cwsfs computes the same way (src/backend.c).
// Also: the state directory's default, the key's sources, and claiming a socket
// path without ever stealing one a live server holds.
const fs = require("node:fs");
const net = require("node:net");
const os = require("node:os");
const path = require("node:path");

const SUN_PATH_MAX = 107; // sizeof(sockaddr_un.sun_path) - 1 on Linux

// The well-known socket: $CWSB_SOCKET, else /run/cwsandbox-local/api.sock for root,
// else $XDG_RUNTIME_DIR/cwsandbox-local/api.sock. Throws with a sentence otherwise.
function defaultSocket(env = process.env, uid = process.getuid()) {
  if (env.CWSB_SOCKET) return path.resolve(env.CWSB_SOCKET);
  if (uid === 0) return "/run/cwsandbox-local/api.sock";
  const xdg = env.XDG_RUNTIME_DIR;
  if (!xdg || !path.isAbsolute(xdg)) {
    throw new Error("XDG_RUNTIME_DIR is not set, so there is no private place for the socket: set CWSB_SOCKET=PATH or give --listen");
  }
  return path.join(xdg, "cwsandbox-local", "api.sock");
}

// The state directory's default: $CWSB_STATE_DIR, else /var/lib/cwsandbox-local/state
// for root, else $XDG_STATE_HOME/cwsandbox-local (~/.local/state/cwsandbox-local).
function defaultStateDir(env = process.env, uid = process.getuid()) {
  if (env.CWSB_STATE_DIR) return path.resolve(env.CWSB_STATE_DIR);
  if (uid === 0) return "/var/lib/cwsandbox-local/state";
  const base = env.XDG_STATE_HOME && path.isAbsolute(env.XDG_STATE_HOME) ? env.XDG_STATE_HOME : path.join(env.HOME || os.homedir(), ".local", "state");
  return path.join(base, "cwsandbox-local");
}

// A unix path the kernel can bind, or a clear error: never a fallback to TCP.
function checkSocketPath(p) {
  const n = Buffer.byteLength(p);
  if (n > SUN_PATH_MAX) {
    throw new Error(`socket path ${p} is ${n} bytes, more than a unix socket can have (${SUN_PATH_MAX}): choose a shorter one (CWSB_SOCKET or --listen unix:PATH)`);
  }
}

// The socket's directory: made 0700 when missing; an existing one must be ours and
// closed to group and others, since the socket in it is the only access control.
function privateDir(dir) {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = fs.lstatSync(dir);
  if (!st.isDirectory()) throw new Error(`${dir} is not a directory`);
  if (st.uid !== process.getuid()) throw new Error(`${dir} belongs to uid ${st.uid}, not to this user (${process.getuid()}): refusing to put the socket there`);
  if (st.mode & 0o077) throw new Error(`${dir} is open to group or others (mode ${(st.mode & 0o777).toString(8)}): refusing to put the socket there; chmod 700 it`);
}

// Does a server answer on this unix socket? true / false (refused, missing, not a socket).
function isLive(p, timeoutMs = 2000) {
  return new Promise((resolve) => {
    const s = net.connect(p);
    const done = (v) => {
      clearTimeout(t);
      s.destroy();
      resolve(v);
    };
    const t = setTimeout(() => done(true), timeoutMs); // a server too busy to accept is alive
    s.once("connect", () => done(true));
    s.once("error", (e) => done(e.code === "EAGAIN"));
  });
}

// Bind the server to unix socket p, mode 0600 before it accepts anything. A live
// server on p is an error (never replaced); a stale socket file is replaced.
// Returns the socket file's inode, so the exit removes only our own.
async function listenUnix(server, p) {
  checkSocketPath(p);
  for (let attempt = 0; ; attempt++) {
    if (await isLive(p)) {
      let pid = "";
      try {
        pid = ` (pid ${fs.readFileSync(path.join(path.dirname(p), "backend.pid"), "utf8").trim()})`;
      } catch {}
      const e = new Error(`another server already listens on ${p}${pid}: not starting a second one`);
      e.code = "CWSB_LIVE";
      throw e;
    }
    try {
      const st = fs.lstatSync(p);
      if (!st.isSocket()) throw new Error(`${p} exists and is not a socket: refusing to replace it`);
      fs.rmSync(p, { force: true });
    } catch (e) {
      if (e.code !== "ENOENT") throw e;
    }
    const old = process.umask(0o177); // the socket is born 0600
    try {
      await new Promise((resolve, reject) => {
        const onErr = (e) => reject(e);
        server.once("error", onErr).listen(p, () => {
          server.removeListener("error", onErr);
          resolve();
        });
      });
    } catch (e) {
      // someone bound it between our test and our bind: test again (once)
      if (e.code === "EADDRINUSE" && attempt === 0) continue;
      throw e;
    } finally {
      process.umask(old);
    }
    fs.chmodSync(p, 0o600);
    return fs.statSync(p).ino;
  }
}

// The API key: --api-key-file F (not readable by group or others; one trailing
// newline stripped), else $CWSB_API_KEY, else none.
function readApiKey(file, env = process.env) {
  if (file) {
    const fd = fs.openSync(file, "r");
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) throw new Error(`--api-key-file ${file} is not a regular file`);
      if (st.mode & 0o044) throw new Error(`--api-key-file ${file} is readable by group or others (mode ${(st.mode & 0o777).toString(8)}): chmod 600 it`);
      const key = fs.readFileSync(fd, "utf8").replace(/\r?\n$/, "");
      if (!key) throw new Error(`--api-key-file ${file} is empty`);
      if (/[\r\n]/.test(key)) throw new Error(`--api-key-file ${file} holds more than one line`);
      return key;
    } finally {
      fs.closeSync(fd);
    }
  }
  return env.CWSB_API_KEY || null;
}

module.exports = { defaultSocket, defaultStateDir, checkSocketPath, privateDir, listenUnix, readApiKey };
