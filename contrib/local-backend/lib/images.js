"use strict";
// The machine-wide image store: OCI images imported or pulled once, each
// manifest unpacked once with the sandboxes' uid mapping, and the unpacked
// root shared read-only (as an overlay lower layer) by every sandbox of every
// backend process on the machine.
//
// Layout of the store directory DIR:
//   oci/              one OCI image layout holding every image (oci-layout,
//                     index.json, blobs/sha256/*); index.json is derived from
//                     refs/ and names each manifest by its full reference, so
//                     `skopeo inspect oci:DIR/oci:docker.io/library/python:3.11` works
//   refs/<ref>        one JSON file per reference (file name: the reference,
//                     URI-encoded): { reference, digest, size, mediaType, manifestSize };
//                     the source of truth for what the store holds
//   rootfs/<hex>/     the root filesystem of manifest sha256:<hex>, files owned
//                     by UID_BASE + their uid in the image
//   tmp/KIND-PID-N    work directories; those of a dead PID are removed
// Several processes share the store without locks: every blob, ref file and
// rootfs appears by rename(2) of a finished file or directory, so a reader sees
// all of it or nothing, and a process killed half-way leaves only tmp/ behind.

const { execFile } = require("node:child_process");
const crypto = require("node:crypto");
const fs = require("node:fs");
const fsp = require("node:fs/promises");
const path = require("node:path");
const { parseReference } = require("./imageref");

const UID_BASE = 200000000;
const UID_COUNT = 65536;
const DEFAULT_DIR = "/var/lib/cwsandbox-local/images";
const PULL_TIMEOUT_S = 120;
const HOST_POLICY = "/etc/containers/policy.json";
const MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json";
const REF_ANNOTATION = "org.opencontainers.image.ref.name";
// The tag every work layout uses for its single image.
const WORK_TAG = "img";

// Run a program (never through a shell); the error carries the program's own
// last words, which the callers put into their messages.
function run(cmd, args, { timeoutMs = 0 } = {}) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, killSignal: "SIGKILL", maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (!err) return resolve({ stdout, stderr });
      let words = lastWords(stderr) || err.message;
      if (err.killed && timeoutMs) words = `${cmd} was stopped after ${timeoutMs / 1000}s`;
      else if (err.code === "ENOENT") words = `${cmd} is not installed`;
      const e = new Error(words);
      e.words = words;
      reject(e);
    });
  });
}

// skopeo and umoci log through logrus: keep the msg="..." of the last line.
function lastWords(stderr) {
  const lines = String(stderr || "").trim().split("\n").filter((l) => l.trim());
  if (!lines.length) return "";
  const last = lines[lines.length - 1].trim();
  const m = /msg="((?:[^"\\]|\\.)*)"/.exec(last);
  if (m) return m[1].replace(/\\(.)/g, "$1");
  return last.replace(/^[A-Z]{4}\[\d+\]\s*/, "");
}

function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === "EPERM";
  }
}

function hexOf(digest) {
  const m = /^sha256:([a-f0-9]{64})$/.exec(digest || "");
  if (!m) throw new Error(`"${digest}" is not a sha256 digest`);
  return m[1];
}

// What a runtime needs from an image's config, with docker's defaults.
function runConfig(c) {
  c = c || {};
  return {
    env: c.Env || [],
    entrypoint: c.Entrypoint || [],
    cmd: c.Cmd || [],
    workingDir: c.WorkingDir || "",
    user: c.User || "",
  };
}

// import() sources: a transport skopeo knows, or a plain path whose kind says
// which (a directory is an OCI layout, a file a `docker save` tarball).
function sourceTransport(source) {
  const s = String(source || "");
  if (/^(oci|oci-archive|docker-archive|dir):/.test(s)) return s;
  const abs = path.resolve(s);
  let st;
  try {
    st = fs.statSync(abs);
  } catch {
    throw new Error(`image source "${s}" does not exist`);
  }
  // skopeo splits "TRANSPORT:PATH:TAG" at colons.
  if (abs.includes(":")) throw new Error(`image source "${s}": a plain path may not contain ':' (write oci:PATH or docker-archive:PATH)`);
  return (st.isDirectory() ? "oci:" : "docker-archive:") + abs;
}

class ImageStore {
  // pull: false (or CWSB_NO_PULL=1) never reaches a registry: an image the store
  // lacks is an error at once (tests run so, with no network beyond loopback).
  constructor({ dir, log, pullTimeoutSeconds, pull = !process.env.CWSB_NO_PULL } = {}) {
    this.dir = path.resolve(dir || process.env.CWSB_IMAGE_STORE || DEFAULT_DIR);
    this.pullAllowed = pull;
    if (this.dir.includes(":")) throw new Error(`image store ${this.dir}: the path may not contain ':'`);
    this.log = log || (() => {});
    this.pullTimeoutSeconds = pullTimeoutSeconds || PULL_TIMEOUT_S;
    this.blobs = path.join(this.dir, "oci", "blobs", "sha256");
    this.refs = path.join(this.dir, "refs");
    this.roots = path.join(this.dir, "rootfs");
    this.tmp = path.join(this.dir, "tmp");
    // Work started by this process, by key, so concurrent callers share it.
    this.pending = new Map();
    // How often this process ran each step (tests check the dedupe with it).
    this.counts = { pulls: 0, imports: 0, unpacks: 0 };
    this.ready = null;
  }

  // The image `name` as the runtime needs it; pulled and unpacked if absent.
  async resolve(name) {
    const ref = parseReference(name);
    return this._once(`ref:${ref.reference}`, async () => {
      await this._prepare();
      const digest = (await this._lookup(ref)) || (await this._pull(name, ref));
      return this._image(ref.reference, digest);
    });
  }

  // Pull `name` from its registry even if the store has it (a tag may have moved).
  async pull(name) {
    const ref = parseReference(name);
    return this._once(`ref:${ref.reference}`, async () => {
      await this._prepare();
      return this._image(ref.reference, await this._pull(name, ref));
    });
  }

  // Copy an image from `source` into the store under `name`, and unpack it so
  // the first sandbox does not wait for that.
  async import(source, name) {
    const ref = parseReference(name);
    const from = sourceTransport(source);
    await this._prepare();
    const work = await this._work("import");
    try {
      this.counts.imports++;
      try {
        await this._skopeoCopy(from, work, 0);
      } catch (e) {
        throw new Error(`image source "${source}" could not be imported as "${name}": ${e.words || e.message}`);
      }
      const digest = await this._adopt(work, ref.reference);
      this.log(`image ${ref.reference} imported from ${source} as ${digest}`);
      return this._image(ref.reference, digest);
    } finally {
      await fsp.rm(work, { recursive: true, force: true });
    }
  }

  // Every reference the store holds: [{ reference, digest, size }].
  list() {
    let names;
    try {
      names = fs.readdirSync(this.refs);
    } catch (e) {
      if (e.code === "ENOENT") return [];
      throw e;
    }
    const out = [];
    for (const n of names) {
      try {
        const r = JSON.parse(fs.readFileSync(path.join(this.refs, n), "utf8"));
        out.push({ reference: r.reference, digest: r.digest, size: r.size, mediaType: r.mediaType, manifestSize: r.manifestSize });
      } catch {
        // A ref file removed meanwhile; never a half-written one (rename).
      }
    }
    return out.sort((a, b) => (a.reference < b.reference ? -1 : 1));
  }

  // Forget the reference `name`. Its blobs and rootfs stay: a running sandbox
  // of any backend may have the rootfs as its lower layer.
  async remove(name) {
    const ref = parseReference(name);
    await this._prepare();
    try {
      await fsp.unlink(this._refFile(ref.reference));
    } catch (e) {
      if (e.code === "ENOENT") throw new Error(`image "${name}" is not in the image store ${this.dir}`);
      throw e;
    }
    await this._syncIndex();
    return ref.reference;
  }

  _once(key, fn) {
    let p = this.pending.get(key);
    if (!p) {
      p = fn().finally(() => this.pending.delete(key));
      this.pending.set(key, p);
    }
    return p;
  }

  _prepare() {
    if (!this.ready) this.ready = this._makeDirs().then(() => this._cleanStale());
    return this.ready;
  }

  async _makeDirs() {
    for (const d of [this.blobs, this.refs, this.roots, this.tmp]) await fsp.mkdir(d, { recursive: true });
    const layoutFile = path.join(this.dir, "oci", "oci-layout");
    if (!fs.existsSync(layoutFile)) await this._writeAtomic(layoutFile, '{"imageLayoutVersion":"1.0.0"}');
  }

  // Work directories of processes that died (killed mid-pull or mid-unpack).
  async _cleanStale() {
    for (const n of await fsp.readdir(this.tmp)) {
      const m = /^[a-z]+-(\d+)-/.exec(n);
      if (m && pidAlive(Number(m[1]))) continue;
      this.log(`image store: removing ${path.join(this.tmp, n)} left by a stopped process`);
      await fsp.rm(path.join(this.tmp, n), { recursive: true, force: true });
    }
  }

  async _work(kind) {
    const d = path.join(this.tmp, `${kind}-${process.pid}-${crypto.randomBytes(6).toString("hex")}`);
    await fsp.mkdir(d);
    return d;
  }

  async _writeAtomic(file, text) {
    const t = path.join(this.tmp, `file-${process.pid}-${crypto.randomBytes(6).toString("hex")}`);
    await fsp.writeFile(t, text);
    await fsp.rename(t, file);
  }

  _refFile(reference) {
    return path.join(this.refs, encodeURIComponent(reference));
  }

  // The manifest digest the store has for `ref`, or "".
  async _lookup(ref) {
    try {
      return JSON.parse(await fsp.readFile(this._refFile(ref.reference), "utf8")).digest;
    } catch (e) {
      if (e.code !== "ENOENT") throw e;
    }
    // A digest names content, whichever reference brought it in; but only a
    // manifest's digest names an image (a layer's blob is not one).
    if (!ref.digest) return "";
    const manifest = await this._blobJSON(ref.digest).catch(() => null);
    return manifest && manifest.config && manifest.layers ? ref.digest : "";
  }

  async _policyArgs() {
    if (fs.existsSync(HOST_POLICY)) return [];
    // Without the host's policy skopeo refuses to copy; images are addressed by digest.
    const p = path.join(this.dir, "policy.json");
    if (!fs.existsSync(p)) await this._writeAtomic(p, '{"default":[{"type":"insecureAcceptAnything"}]}\n');
    return ["--policy", p];
  }

  async _skopeoCopy(from, work, timeoutS) {
    const args = [...(await this._policyArgs())];
    if (timeoutS) args.push("--command-timeout", `${timeoutS}s`);
    args.push("copy", "--quiet", from, `oci:${path.join(work, "layout")}:${WORK_TAG}`);
    await run("skopeo", args, { timeoutMs: timeoutS ? (timeoutS + 10) * 1000 : 0 });
  }

  async _pull(name, ref) {
    if (!this.pullAllowed) throw new Error(`image "${name}" is not in the image store ${this.dir}, and pulling is off (CWSB_NO_PULL): import it with image.js`);
    const work = await this._work("pull");
    try {
      this.counts.pulls++;
      const t0 = Date.now();
      try {
        await this._skopeoCopy(`docker://${ref.pull}`, work, this.pullTimeoutSeconds);
      } catch (e) {
        throw new Error(`image "${name}" is not in the image store ${this.dir} and could not be pulled from ${ref.domain}: ${e.words || e.message}`);
      }
      const digest = await this._adopt(work, ref.reference);
      this.log(`image ${ref.reference} pulled as ${digest} in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
      return digest;
    } finally {
      await fsp.rm(work, { recursive: true, force: true });
    }
  }

  // Move the blobs of the work layout into the store and point `reference` at
  // its image. Blobs are named by their content, so a blob another process
  // moved in meanwhile is the same file.
  async _adopt(work, reference) {
    const layout = path.join(work, "layout");
    const index = JSON.parse(await fsp.readFile(path.join(layout, "index.json"), "utf8"));
    const desc = (index.manifests || []).find((m) => (m.annotations || {})[REF_ANNOTATION] === WORK_TAG);
    if (!desc) throw new Error(`image "${reference}": skopeo wrote no manifest`);
    const src = path.join(layout, "blobs", "sha256");
    for (const b of await fsp.readdir(src)) await fsp.rename(path.join(src, b), path.join(this.blobs, b));
    const manifest = await this._blobJSON(desc.digest);
    const size = desc.size + manifest.config.size + manifest.layers.reduce((n, l) => n + l.size, 0);
    const rec = { reference, digest: desc.digest, size, mediaType: desc.mediaType || MANIFEST_TYPE, manifestSize: desc.size };
    await this._writeAtomic(this._refFile(reference), JSON.stringify(rec) + "\n");
    await this._syncIndex();
    return desc.digest;
  }

  async _blobJSON(digest) {
    return JSON.parse(await fsp.readFile(path.join(this.blobs, hexOf(digest)), "utf8"));
  }

  // Rewrite oci/index.json from refs/. Two processes may each write a list
  // read before the other's ref appeared; whoever wrote last then sees the
  // difference on its next round and writes again, so the file converges.
  async _syncIndex() {
    const file = path.join(this.dir, "oci", "index.json");
    for (let round = 0; round < 20; round++) {
      const manifests = this.list().map((r) => ({
        mediaType: r.mediaType || MANIFEST_TYPE,
        digest: r.digest,
        size: r.manifestSize,
        annotations: { [REF_ANNOTATION]: r.reference },
      }));
      const want = JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests }) + "\n";
      const have = await fsp.readFile(file, "utf8").catch(() => "");
      if (have === want) return;
      await this._writeAtomic(file, want);
    }
  }

  async _image(reference, digest) {
    const manifest = await this._blobJSON(digest);
    const config = await this._blobJSON(manifest.config.digest);
    const rootfs = await this._once(`unpack:${digest}`, () => this._unpack(digest, manifest));
    return { reference, digest, rootfs, config: runConfig(config.config) };
  }

  // rootfs/<hex>, unpacked by umoci from a one-image layout whose blobs are the
  // store's, then renamed into place: it exists only when complete.
  async _unpack(digest, manifest) {
    const target = path.join(this.roots, hexOf(digest));
    if (fs.existsSync(target)) return target;
    const work = await this._work("unpack");
    try {
      this.counts.unpacks++;
      const t0 = Date.now();
      const layout = path.join(work, "layout");
      await fsp.mkdir(path.join(layout, "blobs"), { recursive: true });
      await fsp.symlink(this.blobs, path.join(layout, "blobs", "sha256"));
      await fsp.writeFile(path.join(layout, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}');
      const size = (await fsp.stat(path.join(this.blobs, hexOf(digest)))).size;
      const desc = { mediaType: manifest.mediaType || MANIFEST_TYPE, digest, size, annotations: { [REF_ANNOTATION]: WORK_TAG } };
      await fsp.writeFile(path.join(layout, "index.json"), JSON.stringify({ schemaVersion: 2, manifests: [desc] }));
      const map = `0:${UID_BASE}:${UID_COUNT}`;
      const bundle = path.join(work, "bundle");
      try {
        await run("umoci", ["unpack", "--uid-map", map, "--gid-map", map, "--image", `${layout}:${WORK_TAG}`, bundle]);
      } catch (e) {
        throw new Error(`image ${digest} could not be unpacked: ${e.words || e.message}`);
      }
      try {
        await fsp.rename(path.join(bundle, "rootfs"), target);
      } catch (e) {
        // Another process unpacked the same manifest first: use its copy.
        if (e.code !== "ENOTEMPTY" && e.code !== "EEXIST") throw e;
      }
      this.log(`image ${digest} unpacked in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
      return target;
    } finally {
      await fsp.rm(work, { recursive: true, force: true });
    }
  }
}

module.exports = { ImageStore, UID_BASE, UID_COUNT, DEFAULT_DIR, parseReference };
