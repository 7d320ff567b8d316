"use strict";
// Every rpc through Connect JSON, Connect binary and gRPC clients.
const { test, describe, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { Code } = require("@connectrpc/connect");
const { State, SnapshotState } = require("../lib/schema");
const h = require("./helpers");

let srv;
before(async () => {
  srv = await h.startServer();
});
after(async () => {
  assert.equal(await srv.stop(), 0);
});

async function rejects(p, code, reason) {
  try {
    await p;
  } catch (e) {
    const info = h.errorInfo(e);
    assert.equal(Code[info.code], code, `code of ${info.message}`);
    if (reason !== undefined) {
      assert.equal(info.reason, reason, `reason of ${info.message}`);
      if (reason) assert.equal(info.domain, "cwsandbox.com");
    }
    return info;
  }
  assert.fail("expected an error");
}

for (const kind of h.KINDS) {
  describe(`api over ${kind}`, () => {
    let c;
    let sb;
    before(async () => {
      c = h.client(srv.url, kind);
      sb = await h.newSandbox(c, { tags: [`k-${kind}`, "api"], services: [{ port: 8080, name: "web" }] }, { environmentVariables: { FOO: "bar" }, workingDir: "/srv/work" });
    });

    after(async () => {
      await c.deleteSandbox({ sandboxId: sb.sandboxId, allowMissing: true });
    });

    test("create reaches RUNNING with status filled", async () => {
      assert.equal(sb.status.state, State.RUNNING);
      assert.ok(sb.status.createTime && sb.status.startTime);
      assert.equal(sb.status.endTime, undefined);
      assert.match(sb.status.runnerId, /^local-/);
      assert.equal(sb.status.runnerGroupId, "local");
      // a listen-only service is accepted and reported, with no URL (no ingress here)
      assert.equal(sb.status.services.length, 1);
      assert.equal(sb.status.services[0].port, 8080);
      assert.equal(sb.status.services[0].name, "web");
      assert.equal(sb.status.services[0].url, "");
      assert.equal(sb.status.effectiveResources.memory, "4Gi");
      assert.equal(sb.status.effectiveMaxLifetimeSeconds, 3600);
      assert.deepEqual(sb.spec.tags, [`k-${kind}`, "api"]);
    });

    test("requestId makes create idempotent", async () => {
      const rid = `req-${kind}-${Date.now()}`;
      const a = await c.createSandbox({ sandbox: { spec: h.spec() }, requestId: rid });
      const b = await c.createSandbox({ sandbox: { spec: h.spec() }, requestId: rid });
      assert.equal(a.sandboxId, b.sandboxId);
      assert.equal(a.status.state, State.PENDING);
      await h.waitState(c, a.sandboxId, State.RUNNING);
      await c.deleteSandbox({ sandboxId: a.sandboxId, gracePeriodSeconds: 1 });
    });

    test("exec: output, exit code, env, working dir", async () => {
      const r = await c.exec({ sandboxId: sb.sandboxId, command: ["sh", "-c", 'echo "$FOO $BAZ $(pwd)"; echo oops >&2; exit 4'], env: { BAZ: "qux" } });
      assert.equal(Buffer.from(r.stdout).toString(), "bar qux /srv/work\n");
      assert.equal(Buffer.from(r.stderr).toString(), "oops\n");
      assert.equal(r.exitCode, 4);
      assert.equal(r.stdoutTruncated, false);
      assert.equal(r.stdoutBytesProduced, 18n);
    });

    test("the default image has python and python3 on the PATH", async () => {
      const r = await c.exec({ sandboxId: sb.sandboxId, command: ["sh", "-c", "python -c 'import sys; print(sys.version_info[:2])'; python3 --version"] });
      assert.equal(r.exitCode, 0, Buffer.from(r.stderr).toString());
      assert.match(Buffer.from(r.stdout).toString(), /^\(3, 11\)\nPython 3\.11\./);
    });

    test("exec: maxOutputBytes truncates and counts", async () => {
      const r = await c.exec({ sandboxId: sb.sandboxId, command: ["sh", "-c", "head -c 10000 /dev/zero; head -c 50 /dev/zero >&2"], maxOutputBytes: 100 });
      assert.equal(r.stdout.length, 100);
      assert.equal(r.stdoutTruncated, true);
      assert.equal(r.stdoutBytesProduced, 10000n);
      assert.equal(r.stderr.length, 50);
      assert.equal(r.stderrTruncated, false);
      assert.equal(r.stderrBytesProduced, 50n);
    });

    test("exec: missing command binary exits 127", async () => {
      const r = await c.exec({ sandboxId: sb.sandboxId, command: ["/no/such/binary"] });
      assert.equal(r.exitCode, 127);
      assert.match(Buffer.from(r.stderr).toString(), /no such file/i);
    });

    test("exec: errors", async () => {
      await rejects(c.exec({ sandboxId: "nope", command: ["true"] }), "NotFound", "CWSANDBOX_SANDBOX_NOT_FOUND");
      await rejects(c.exec({ sandboxId: sb.sandboxId, command: [] }), "InvalidArgument", "CWSANDBOX_INVALID_REQUEST");
      await rejects(c.exec({ sandboxId: sb.sandboxId, command: ["true"], container: "other" }), "InvalidArgument", "CWSANDBOX_INVALID_REQUEST");
    });

    test("exec: deadline kills the command", async () => {
      const t0 = Date.now();
      await rejects(c.exec({ sandboxId: sb.sandboxId, command: ["sleep", "30"] }, { timeoutMs: 300 }), "DeadlineExceeded");
      assert.ok(Date.now() - t0 < 25000, "killed before sleep 30 ended");
      const ps = await c.exec({ sandboxId: sb.sandboxId, command: ["sh", "-c", "sleep 0.2; ps -eo args"] });
      assert.doesNotMatch(Buffer.from(ps.stdout).toString(), /sleep 30/);
    });

    test("stream exec: ready, interleaved output, exit", async () => {
      const r = await h.collectExec(c, {
        sandboxId: sb.sandboxId,
        command: ["sh", "-c", "for i in 1 2 3; do echo o$i; sleep 0.05; echo e$i >&2; sleep 0.05; done; exit 9"],
      });
      assert.equal(r.events[0], "ready");
      assert.equal(r.events.at(-1), "exit");
      assert.equal(r.exitCode, 9);
      assert.equal(r.stdout.toString(), "o1\no2\no3\n");
      assert.equal(r.stderr.toString(), "e1\ne2\ne3\n");
      assert.ok(r.events.filter((e) => e === "output").length >= 6);
    });

    test("stream exec: stdin and close", async () => {
      const chunks = [];
      for (let i = 0; i < 50; i++) chunks.push(Buffer.from(`line ${i}\n`));
      const r = await h.collectExec(c, { sandboxId: sb.sandboxId, command: ["sh", "-c", "wc -l; cat >/dev/null; echo done"] }, chunks);
      assert.equal(r.stdout.toString(), "50\ndone\n");
      assert.equal(r.exitCode, 0);
    });

    if (kind !== "connect-json") return; // the rest is protocol-independent enough
    test("files: write, exec sees it, exec writes, read sees it", async () => {
      await c.writeFile({ sandboxId: sb.sandboxId, path: "/data/new/dir/f.txt", content: Buffer.from("hello\n") });
      const r = await c.exec({ sandboxId: sb.sandboxId, command: ["sh", "-c", "cat /data/new/dir/f.txt; stat -c %a /data/new/dir/f.txt; echo from-exec > /data/g.txt"] });
      assert.equal(Buffer.from(r.stdout).toString(), "hello\n644\n");
      const g = await c.readFile({ sandboxId: sb.sandboxId, path: "/data/g.txt" });
      assert.equal(Buffer.from(g.content).toString(), "from-exec\n");
      // overwrite keeps the mode
      await c.exec({ sandboxId: sb.sandboxId, command: ["chmod", "755", "/data/g.txt"] });
      await c.writeFile({ sandboxId: sb.sandboxId, path: "/data/g.txt", content: Buffer.from("x") });
      const m = await c.exec({ sandboxId: sb.sandboxId, command: ["stat", "-c", "%a %s", "/data/g.txt"] });
      assert.equal(Buffer.from(m.stdout).toString(), "755 1\n");
      // empty file
      await c.writeFile({ sandboxId: sb.sandboxId, path: "/data/empty", content: new Uint8Array() });
      assert.equal((await c.readFile({ sandboxId: sb.sandboxId, path: "/data/empty" })).content.length, 0);
      // relative path is taken from the working directory
      await c.writeFile({ sandboxId: sb.sandboxId, path: "rel.txt", content: Buffer.from("r") });
      assert.equal(Buffer.from((await c.readFile({ sandboxId: sb.sandboxId, path: "/srv/work/rel.txt" })).content).toString(), "r");
    });

    test("files: errors with reasons", async () => {
      await rejects(c.readFile({ sandboxId: sb.sandboxId, path: "/no/such/file" }), "NotFound", "CWSANDBOX_FILE_NOT_FOUND");
      await rejects(c.readFile({ sandboxId: sb.sandboxId, path: "/etc" }), "InvalidArgument", "CWSANDBOX_FILE_IS_DIRECTORY");
      await rejects(c.writeFile({ sandboxId: sb.sandboxId, path: "/etc", content: Buffer.from("x") }), "InvalidArgument", "CWSANDBOX_FILE_IS_DIRECTORY");
      await rejects(c.readFile({ sandboxId: "nope", path: "/etc/hostname" }), "NotFound", "CWSANDBOX_SANDBOX_NOT_FOUND");
      await rejects(c.writeFile({ sandboxId: sb.sandboxId, path: "/sys/kernel/cwsb-test", content: Buffer.from("x") }), "PermissionDenied", "CWSANDBOX_FILE_PERMISSION_DENIED");
      const big = Buffer.alloc(32 * 1024 * 1024 + 1, 97);
      await rejects(c.writeFile({ sandboxId: sb.sandboxId, path: "/tmp/big", content: big }), "ResourceExhausted", "CWSANDBOX_FILE_TOO_LARGE");
      await c.exec({ sandboxId: sb.sandboxId, command: ["sh", "-c", "head -c 33554433 /dev/zero > /tmp/big2; head -c 33554432 /dev/zero > /tmp/ok"] });
      await rejects(c.readFile({ sandboxId: sb.sandboxId, path: "/tmp/big2" }), "ResourceExhausted", "CWSANDBOX_FILE_TOO_LARGE");
      const ok = await c.readFile({ sandboxId: sb.sandboxId, path: "/tmp/ok" });
      assert.equal(ok.content.length, 32 * 1024 * 1024);
      await c.writeFile({ sandboxId: sb.sandboxId, path: "/tmp/ok2", content: ok.content });
    });

    test("files: symbolic links resolve inside the sandbox", async () => {
      await c.exec({ sandboxId: sb.sandboxId, command: ["sh", "-c", "echo inside > /etc/marker-cwsb; ln -sf /etc/marker-cwsb /tmp/link; ln -sfn / /tmp/rootlink"] });
      assert.equal(Buffer.from((await c.readFile({ sandboxId: sb.sandboxId, path: "/tmp/link" })).content).toString(), "inside\n");
      await c.writeFile({ sandboxId: sb.sandboxId, path: "/tmp/rootlink/etc/via-link", content: Buffer.from("v") });
      const r = await c.exec({ sandboxId: sb.sandboxId, command: ["cat", "/etc/via-link"] });
      assert.equal(Buffer.from(r.stdout).toString(), "v");
      assert.equal(require("node:fs").existsSync("/etc/via-link"), false);
      assert.equal(require("node:fs").existsSync("/etc/marker-cwsb"), false);
    });

    test("get, list: tags, state, paging, showTerminated", async () => {
      const tag = `lst-${Date.now()}`;
      const ids = [];
      for (let i = 0; i < 5; i++) {
        const s = await c.createSandbox({ sandbox: { spec: h.spec({ tags: [tag, i % 2 ? "odd" : "even"] }) } });
        ids.push(s.sandboxId);
      }
      for (const id of ids) await h.waitState(c, id, State.RUNNING);
      let l = await c.listSandboxes({ tags: [tag] });
      assert.deepEqual(l.sandboxes.map((s) => s.sandboxId), ids);
      l = await c.listSandboxes({ tags: [tag, "odd"] });
      assert.deepEqual(l.sandboxes.map((s) => s.sandboxId), [ids[1], ids[3]]);
      // paging
      const seen = [];
      let token = "";
      let pages = 0;
      do {
        const p = await c.listSandboxes({ tags: [tag], pageSize: 2, pageToken: token });
        assert.ok(p.sandboxes.length <= 2);
        seen.push(...p.sandboxes.map((s) => s.sandboxId));
        token = p.nextPageToken;
        pages++;
      } while (token);
      assert.equal(pages, 3);
      assert.deepEqual(seen, ids);
      await rejects(c.listSandboxes({ pageToken: "garbage!" }), "InvalidArgument");
      // terminated ones are hidden unless asked for
      await c.deleteSandbox({ sandboxId: ids[0] });
      await h.waitState(c, ids[0], State.TERMINATED);
      l = await c.listSandboxes({ tags: [tag] });
      assert.deepEqual(l.sandboxes.map((s) => s.sandboxId), ids.slice(1));
      l = await c.listSandboxes({ tags: [tag], showTerminated: true });
      assert.deepEqual(l.sandboxes.map((s) => s.sandboxId), ids);
      l = await c.listSandboxes({ tags: [tag], state: State.TERMINATED });
      assert.deepEqual(l.sandboxes.map((s) => s.sandboxId), [ids[0]]);
      l = await c.listSandboxes({ tags: [tag], state: State.RUNNING });
      assert.equal(l.sandboxes.length, 4);
      // purge: dry run counts, then deletes
      const dry = await c.purgeSandboxes({ tags: [tag], dryRun: true });
      assert.equal(dry.purgeCount, 4);
      assert.equal((await c.listSandboxes({ tags: [tag] })).sandboxes.length, 4);
      const p = await c.purgeSandboxes({ tags: [tag, "even"] });
      assert.equal(p.purgeCount, 2);
      await rejects(c.purgeSandboxes({}), "InvalidArgument", "CWSANDBOX_INVALID_REQUEST");
      for (const id of [ids[2], ids[4]]) await h.waitState(c, id, State.TERMINATED);
      await c.purgeSandboxes({ tags: [tag] });
    });

    test("delete: not found, allowMissing, repeated", async () => {
      await rejects(c.deleteSandbox({ sandboxId: "nope" }), "NotFound", "CWSANDBOX_SANDBOX_NOT_FOUND");
      const r = await c.deleteSandbox({ sandboxId: "nope", allowMissing: true });
      assert.equal(r.sandbox, undefined);
      const s = await h.newSandbox(c);
      const d = await c.deleteSandbox({ sandboxId: s.sandboxId });
      assert.ok([State.TERMINATING, State.TERMINATED].includes(d.sandbox.status.state));
      const t = await h.waitState(c, s.sandboxId, State.TERMINATED);
      assert.equal(t.status.exitCode, 0); // the keep-alive exits 0 on SIGTERM
      assert.ok(t.status.endTime);
      await rejects(c.deleteSandbox({ sandboxId: s.sandboxId }), "NotFound", "CWSANDBOX_SANDBOX_NOT_FOUND");
      const again = await c.deleteSandbox({ sandboxId: s.sandboxId, allowMissing: true });
      assert.equal(again.sandbox.sandboxId, s.sandboxId);
      await rejects(c.exec({ sandboxId: s.sandboxId, command: ["true"] }), "FailedPrecondition", "CWSANDBOX_SANDBOX_NOT_RUNNING");
      await rejects(c.readFile({ sandboxId: s.sandboxId, path: "/etc/hostname" }), "FailedPrecondition", "CWSANDBOX_SANDBOX_NOT_RUNNING");
    });

    test("create: invalid specs and unimplemented calls", async () => {
      await rejects(c.createSandbox({}), "InvalidArgument", "CWSANDBOX_INVALID_REQUEST");
      await rejects(c.createSandbox({ sandbox: { spec: { containers: [] } } }), "InvalidArgument", "CWSANDBOX_INVALID_REQUEST");
      await rejects(c.createSandbox({ sandbox: { spec: h.spec({ tags: ["bad tag!"] }) } }), "InvalidArgument", "CWSANDBOX_INVALID_REQUEST");
      await rejects(c.createSandbox({ sandbox: { spec: h.spec({ tags: ["ends-with-dash-"] }) } }), "InvalidArgument", "CWSANDBOX_INVALID_REQUEST");
      await rejects(c.createSandbox({ sandbox: { spec: h.spec({ tags: ["a".repeat(60)] }) } }), "InvalidArgument", "CWSANDBOX_INVALID_REQUEST");
      await rejects(c.createSandbox({ sandbox: { spec: h.spec({}, { resources: { memory: "lots" } }) } }), "InvalidArgument", "CWSANDBOX_INVALID_REQUEST");
      await rejects(c.createSandboxFromTemplate({ templateId: "t" }), "Unimplemented", "CWSANDBOX_NOT_IMPLEMENTED");
      await rejects(c.getSandbox({ sandboxId: "does-not-exist" }), "NotFound", "CWSANDBOX_SANDBOX_NOT_FOUND");
    });

    test("snapshots: root layer and scratch volume, restore", async () => {
      const s = await h.newSandbox(
        c,
        { volumes: [{ name: "work", source: { case: "scratch", value: { size: "1Gi" } } }] },
        { volumeMounts: [{ volume: "work", mountPath: "/mnt/work" }] },
      );
      await c.exec({ sandboxId: s.sandboxId, command: ["sh", "-c", "echo vol > /mnt/work/v.txt; mkdir -p /mnt/work/d; echo deep > /mnt/work/d/e"] });
      const volSnap = await c.createFileSystemSnapshot({ sandboxId: s.sandboxId, scratchVolumeName: "work", requestId: `snap-1-${kind}` });
      const again = await c.createFileSystemSnapshot({ sandboxId: s.sandboxId, scratchVolumeName: "work", requestId: `snap-1-${kind}` });
      assert.equal(again.fileSystemSnapshotId, volSnap.fileSystemSnapshotId);
      // no name, one scratch volume: that volume (what the official clients send)
      const single = await c.createFileSystemSnapshot({ sandboxId: s.sandboxId });
      // no name, no volume: the root layer
      const plain = await h.newSandbox(c);
      await c.exec({ sandboxId: plain.sandboxId, command: ["sh", "-c", "echo root > /opt/r.txt"] });
      const rootSnap = await c.createFileSystemSnapshot({ sandboxId: plain.sandboxId });
      const ready = async (id) => {
        for (let i = 0; i < 200; i++) {
          const g = await c.getFileSystemSnapshot({ fileSystemSnapshotId: id });
          if (g.state === SnapshotState.READY) return g;
          await new Promise((r) => setTimeout(r, 20));
        }
        throw new Error("snapshot not ready");
      };
      const v = await ready(volSnap.fileSystemSnapshotId);
      assert.ok(v.sizeBytes > 0n);
      assert.equal(v.sourceSandboxId, s.sandboxId);
      assert.equal(v.sourceVolumeName, "work");
      assert.ok(v.completeTime);
      await ready(rootSnap.fileSystemSnapshotId);
      assert.equal((await ready(single.fileSystemSnapshotId)).sourceVolumeName, "work");
      const l = await c.listFileSystemSnapshots({ sourceSandboxId: s.sandboxId });
      assert.equal(l.fileSystemSnapshots.length, 2);
      await c.deleteSandbox({ sandboxId: plain.sandboxId });
      await rejects(c.createFileSystemSnapshot({ sandboxId: s.sandboxId, scratchVolumeName: "none" }), "InvalidArgument");

      // restore both into fresh volumes of a new sandbox
      const r = await h.newSandbox(
        c,
        {
          volumes: [
            { name: "a", source: { case: "scratch", value: { restoreFromSnapshotId: volSnap.fileSystemSnapshotId } } },
            { name: "b", source: { case: "scratch", value: { restoreFromSnapshotId: rootSnap.fileSystemSnapshotId } } },
            { name: "c", source: { case: "scratch", value: { restoreFromSnapshotId: single.fileSystemSnapshotId } } },
          ],
        },
        { volumeMounts: [{ volume: "a", mountPath: "/restored" }, { volume: "b", mountPath: "/rootcopy", readOnly: true }, { volume: "c", mountPath: "/single" }] },
      );
      const out = await c.exec({ sandboxId: r.sandboxId, command: ["sh", "-c", "cat /restored/v.txt /restored/d/e /rootcopy/opt/r.txt /single/v.txt; touch /rootcopy/x 2>/dev/null || echo ro"] });
      assert.equal(Buffer.from(out.stdout).toString(), "vol\ndeep\nroot\nvol\nro\n");

      // snapshot on delete
      const d = await c.deleteSandbox({ sandboxId: s.sandboxId, snapshotVolumes: ["work"] });
      assert.equal(d.fileSystemSnapshotIds.length, 1);
      const od = await ready(d.fileSystemSnapshotIds[0]);
      assert.equal(od.trigger, 2); // SNAPSHOT_TRIGGER_ON_DELETE

      const del = await c.deleteFileSystemSnapshot({ fileSystemSnapshotId: volSnap.fileSystemSnapshotId });
      assert.equal(del.state, SnapshotState.DELETING);
      await rejects(c.getFileSystemSnapshot({ fileSystemSnapshotId: volSnap.fileSystemSnapshotId }), "NotFound");
      await rejects(c.deleteFileSystemSnapshot({ fileSystemSnapshotId: volSnap.fileSystemSnapshotId }), "NotFound");
      await c.deleteFileSystemSnapshot({ fileSystemSnapshotId: volSnap.fileSystemSnapshotId, allowMissing: true });
      await rejects(
        c.createSandbox({ sandbox: { spec: h.spec({ volumes: [{ name: "a", source: { case: "scratch", value: { restoreFromSnapshotId: "gone" } } }] }) } }),
        "NotFound",
      );
      await c.deleteSandbox({ sandboxId: r.sandboxId });
    });
  });
}
