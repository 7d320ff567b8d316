"use strict";
// The image store: references, imports of OCI layouts and docker archives,
// unpacking with the uid mapping, pull failures, and sharing between stores.
// The images are made here from a tarball with umoci; nothing is downloaded.
const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { execFile } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { ImageStore, UID_BASE, parseReference } = require("../lib/images");

const IMAGE_JS = path.join(__dirname, "..", "image.js");
// A registry host that refuses at once, so a pull fails without the internet.
const NOWHERE = "127.0.0.1:1";

let tmp;
let layout;

function run(cmd, args) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, (err, stdout, stderr) => (err ? reject(Object.assign(err, { stdout, stderr })) : resolve({ stdout, stderr })));
  });
}

// One layer: a file, a symbolic link to it, and a file of uid/gid 1000.
async function makeLayout(dir) {
  const src = path.join(dir, "src");
  fs.mkdirSync(path.join(src, "home"), { recursive: true });
  fs.writeFileSync(path.join(src, "hello.txt"), "hello\n");
  fs.symlinkSync("hello.txt", path.join(src, "link"));
  fs.writeFileSync(path.join(src, "home", "mine"), "mine\n");
  fs.chownSync(path.join(src, "home", "mine"), 1000, 1000);
  await run("tar", ["--numeric-owner", "-C", src, "-cf", path.join(dir, "layer.tar"), "."]);
  const l = path.join(dir, "layout");
  await run("umoci", ["init", "--layout", l]);
  await run("umoci", ["new", "--image", `${l}:t`]);
  await run("umoci", ["raw", "add-layer", "--image", `${l}:t`, path.join(dir, "layer.tar")]);
  await run("umoci", ["config", "--image", `${l}:t`, "--config.env", "A=1", "--config.cmd", "/hello", "--config.workingdir", "/home", "--config.user", "1000"]);
  return l;
}

function freshStore(name, extra = {}) {
  return new ImageStore({ dir: path.join(tmp, name), ...extra });
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "cwsb-images-"));
  layout = await makeLayout(tmp);
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test("references are normalized like docker's", () => {
  const cases = {
    "python:3.11": "docker.io/library/python:3.11",
    python: "docker.io/library/python:latest",
    "docker.io/library/python:3.11": "docker.io/library/python:3.11",
    "index.docker.io/library/python": "docker.io/library/python:latest",
    "user/app:v1": "docker.io/user/app:v1",
    "localhost/app": "localhost/app:latest",
    "127.0.0.1:5000/a/b:c": "127.0.0.1:5000/a/b:c",
    "ghcr.io/o/r": "ghcr.io/o/r:latest",
  };
  for (const [i, want] of Object.entries(cases)) assert.equal(parseReference(i).reference, want, i);
  const d = "sha256:" + "a".repeat(64);
  const r = parseReference(`python@${d}`);
  assert.equal(r.reference, `docker.io/library/python@${d}`);
  assert.equal(r.pull, `docker.io/library/python@${d}`);
  assert.equal(parseReference(`python:3@${d}`).pull, `docker.io/library/python@${d}`);
  for (const bad of ["", "Python:3", "python:", "a@sha256:12", "a b"]) assert.throws(() => parseReference(bad), /not a valid image reference/, bad);
});

test("an imported OCI layout resolves to a rootfs owned by the mapped uids", async () => {
  const store = freshStore("s1");
  const imported = await store.import(`oci:${layout}:t`, `${NOWHERE}/tiny:1`);
  const img = await store.resolve(`${NOWHERE}/tiny:1`);
  assert.equal(img.reference, `${NOWHERE}/tiny:1`);
  assert.match(img.digest, /^sha256:[a-f0-9]{64}$/);
  assert.equal(img.digest, imported.digest);
  assert.equal(img.rootfs, path.join(store.dir, "rootfs", img.digest.slice(7)));
  assert.deepEqual(img.config, { env: ["A=1"], entrypoint: [], cmd: ["/hello"], workingDir: "/home", user: "1000" });
  assert.equal(fs.readFileSync(path.join(img.rootfs, "hello.txt"), "utf8"), "hello\n");
  assert.equal(fs.readlinkSync(path.join(img.rootfs, "link")), "hello.txt");
  const st = fs.statSync(path.join(img.rootfs, "hello.txt"));
  assert.equal(st.uid, UID_BASE);
  assert.equal(st.gid, UID_BASE);
  assert.equal(fs.lstatSync(path.join(img.rootfs, "link")).uid, UID_BASE);
  const mine = fs.statSync(path.join(img.rootfs, "home", "mine"));
  assert.equal(mine.uid, UID_BASE + 1000);
  assert.equal(mine.gid, UID_BASE + 1000);
  assert.deepEqual(store.counts, { pulls: 0, imports: 1, unpacks: 1 });
  assert.deepEqual(store.list().map((r) => [r.reference, r.digest]), [[`${NOWHERE}/tiny:1`, img.digest]]);
  // The store's own OCI layout names the image by its reference.
  const index = JSON.parse(fs.readFileSync(path.join(store.dir, "oci", "index.json"), "utf8"));
  assert.equal(index.manifests[0].annotations["org.opencontainers.image.ref.name"], `${NOWHERE}/tiny:1`);
  // A digest reference finds the content whatever name brought it in.
  const byDigest = await store.resolve(`${NOWHERE}/other@${img.digest}`);
  assert.equal(byDigest.rootfs, img.rootfs);
  const manifest = JSON.parse(fs.readFileSync(path.join(store.dir, "oci", "blobs", "sha256", img.digest.slice(7)), "utf8"));
  await assert.rejects(store.resolve(`${NOWHERE}/other@${manifest.layers[0].digest}`), /could not be pulled/);
});

test("a docker-archive tarball and a plain layout directory import too", async () => {
  const store = freshStore("s2");
  const tarball = path.join(tmp, "saved.tar");
  await run("skopeo", ["copy", "--quiet", `oci:${layout}:t`, `docker-archive:${tarball}:saved/img:1`]);
  const a = await store.import(`docker-archive:${tarball}`, `${NOWHERE}/archive:1`);
  const b = await store.import(tarball, `${NOWHERE}/archive:2`);
  const c = await store.import(layout, `${NOWHERE}/dir:1`);
  for (const img of [a, b, c]) {
    assert.equal(fs.readFileSync(path.join(img.rootfs, "hello.txt"), "utf8"), "hello\n");
    assert.equal(fs.statSync(path.join(img.rootfs, "home", "mine")).uid, UID_BASE + 1000);
    assert.deepEqual(img.config.cmd, ["/hello"]);
  }
  assert.equal(a.digest, b.digest);
  assert.equal(store.list().length, 3);
  await assert.rejects(store.import(path.join(tmp, "missing"), "x:1"), /image source ".*missing" does not exist/);
  await assert.rejects(store.import(path.join(tmp, "layer.tar"), `${NOWHERE}/bad:1`), /image source ".*layer\.tar" could not be imported as "127\.0\.0\.1:1\/bad:1": /);
});

test("an image the store lacks and no registry has fails at once, naming it", async () => {
  const store = freshStore("s3");
  const name = `${NOWHERE}/nope:1`;
  const t0 = Date.now();
  const results = await Promise.allSettled([store.resolve(name), store.resolve(name), store.resolve(`${NOWHERE}/nope:1`)]);
  assert.ok(Date.now() - t0 < 20000, "a refused pull is quick");
  for (const r of results) {
    assert.equal(r.status, "rejected");
    assert.match(r.reason.message, /^image "127\.0\.0\.1:1\/nope:1" is not in the image store .* and could not be pulled from 127\.0\.0\.1:1: .*connection refused/);
  }
  assert.equal(store.counts.pulls, 1, "concurrent resolves share one pull");
  assert.deepEqual(fs.readdirSync(path.join(store.dir, "tmp")), [], "the failed pull left nothing");
});

test("with pulling off, a missing image fails without a registry being asked", async () => {
  const store = freshStore("nopull", { pull: false });
  await assert.rejects(store.resolve("debian:13"), /^Error: image "debian:13" is not in the image store .*pulling is off/);
  assert.equal(store.counts.pulls, 0);
});

test("concurrent resolves unpack once; two stores on one directory share the rootfs", async () => {
  const first = freshStore("s4");
  const { digest, rootfs } = await first.import(`oci:${layout}:t`, `${NOWHERE}/tiny:1`);
  fs.rmSync(rootfs, { recursive: true });

  const one = freshStore("s4");
  const many = await Promise.all([1, 2, 3, 4].map(() => one.resolve(`${NOWHERE}/tiny:1`)));
  assert.equal(one.counts.unpacks, 1);
  for (const img of many) assert.equal(img.rootfs, rootfs);
  assert.ok(fs.existsSync(path.join(rootfs, "hello.txt")));

  // Two stores stand for two backend processes: both unpack, one rename wins.
  fs.rmSync(rootfs, { recursive: true });
  const pair = [freshStore("s4"), freshStore("s4")];
  const [a, b] = await Promise.all(pair.map((s) => s.resolve(`${NOWHERE}/tiny:1`)));
  assert.deepEqual(pair.map((s) => s.counts.unpacks), [1, 1]);
  assert.equal(a.digest, digest);
  assert.equal(a.rootfs, b.rootfs);
  assert.equal(fs.readFileSync(path.join(a.rootfs, "hello.txt"), "utf8"), "hello\n");
  assert.deepEqual(fs.readdirSync(path.join(first.dir, "tmp")), []);
});

test("a half-finished unpack of a killed process is never used and is removed", async () => {
  const first = freshStore("s5");
  const { rootfs } = await first.import(`oci:${layout}:t`, `${NOWHERE}/tiny:1`);
  fs.rmSync(rootfs, { recursive: true });
  // PIDs never reach 99999999 (pid_max is at most 2^22); pid 1 is alive.
  const dead = path.join(first.dir, "tmp", "unpack-99999999-abc");
  const alive = path.join(first.dir, "tmp", "unpack-1-abc");
  for (const d of [dead, alive]) {
    fs.mkdirSync(path.join(d, "bundle", "rootfs"), { recursive: true });
    fs.writeFileSync(path.join(d, "bundle", "rootfs", "half"), "");
  }
  const logs = [];
  const img = await freshStore("s5", { log: (m) => logs.push(m) }).resolve(`${NOWHERE}/tiny:1`);
  assert.ok(!fs.existsSync(dead), "the dead process's work is removed");
  assert.ok(fs.existsSync(alive), "a live process's work is kept");
  assert.ok(!fs.existsSync(path.join(img.rootfs, "half")));
  assert.ok(fs.existsSync(path.join(img.rootfs, "hello.txt")));
  assert.ok(logs.some((m) => m.includes("left by a stopped process")));
  fs.rmSync(alive, { recursive: true });
});

test("remove forgets a reference and keeps its rootfs", async () => {
  const store = freshStore("s6");
  const img = await store.import(`oci:${layout}:t`, `${NOWHERE}/tiny:1`);
  await store.import(`oci:${layout}:t`, `${NOWHERE}/tiny:2`);
  assert.equal(await store.remove(`${NOWHERE}/tiny:1`), `${NOWHERE}/tiny:1`);
  assert.deepEqual(store.list().map((r) => r.reference), [`${NOWHERE}/tiny:2`]);
  const index = JSON.parse(fs.readFileSync(path.join(store.dir, "oci", "index.json"), "utf8"));
  assert.deepEqual(index.manifests.map((m) => m.annotations["org.opencontainers.image.ref.name"]), [`${NOWHERE}/tiny:2`]);
  assert.ok(fs.existsSync(img.rootfs));
  await assert.rejects(store.remove(`${NOWHERE}/tiny:1`), /image "127\.0\.0\.1:1\/tiny:1" is not in the image store/);
  await assert.rejects(store.resolve(`${NOWHERE}/tiny:1`), /could not be pulled/);
});

test("image.js imports, lists and removes, with one-line errors", async () => {
  const dir = path.join(tmp, "cli");
  const cli = (...a) => run(process.execPath, [IMAGE_JS, "--store", dir, ...a]);
  const imp = await cli("import", `oci:${layout}:t`, `${NOWHERE}/cli:1`);
  assert.match(imp.stdout, /^127\.0\.0\.1:1\/cli:1 sha256:[a-f0-9]{64} \/.*\/rootfs\/[a-f0-9]{64}\n$/);
  assert.match((await cli("list")).stdout, /^127\.0\.0\.1:1\/cli:1 sha256:[a-f0-9]{64} [0-9.]+MiB\n$/);
  await cli("has", `${NOWHERE}/cli:1`);
  await assert.rejects(cli("has", `${NOWHERE}/cli:1`, "python:3.11"), (e) => e.code === 1 && /missing: python:3.11/.test(e.stdout));
  const pull = await cli("pull", `${NOWHERE}/nope:1`).catch((e) => e);
  assert.equal(pull.code, 1);
  assert.match(pull.stderr, /^image\.js: image "127\.0\.0\.1:1\/nope:1" is not in the image store .*connection refused\n$/);
  assert.equal((await cli("rm", `${NOWHERE}/cli:1`)).stdout, `removed ${NOWHERE}/cli:1\n`);
  assert.equal((await cli("list")).stdout, "");
  const bad = await cli("frobnicate").catch((e) => e);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^image\.js: unknown command "frobnicate"\n/);
});

test("processes importing at once into one store all land in refs and index.json", async () => {
  const dir = path.join(tmp, "procs");
  const names = ["a", "b", "c", "d"].map((n) => `${NOWHERE}/p:${n}`);
  await Promise.all(names.map((n) => run(process.execPath, [IMAGE_JS, "--store", dir, "import", `oci:${layout}:t`, n])));
  const store = new ImageStore({ dir });
  assert.deepEqual(store.list().map((r) => r.reference), names);
  const index = JSON.parse(fs.readFileSync(path.join(dir, "oci", "index.json"), "utf8"));
  assert.deepEqual(index.manifests.map((m) => m.annotations["org.opencontainers.image.ref.name"]).sort(), names);
  assert.equal(fs.readdirSync(path.join(dir, "rootfs")).length, 1);
  assert.deepEqual(fs.readdirSync(path.join(dir, "tmp")), []);
});
