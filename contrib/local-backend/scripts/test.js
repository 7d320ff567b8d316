"use strict";
// npm test: each test file in its own `node --test`, one at a time (they share the
// machine's image store and runc), each given at most TEST_FILE_TIMEOUT_MS. Written
// out here because Debian 12's Node 18 lacks --test-concurrency and --test-timeout.
const { spawnSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

const TEST_FILE_TIMEOUT_MS = 20 * 60 * 1000;
const dir = path.join(__dirname, "..", "test");
const files = fs.readdirSync(dir).filter((f) => f.endsWith(".test.js")).sort();
const only = process.argv.slice(2);
let failed = 0;
for (const f of files) {
  if (only.length && !only.includes(f)) continue;
  const r = spawnSync(process.execPath, ["--test", path.join(dir, f)], {
    stdio: "inherit",
    timeout: TEST_FILE_TIMEOUT_MS,
    killSignal: "SIGKILL",
  });
  if (r.status !== 0) {
    failed++;
    console.error(`# ${f}: ${r.error ? r.error.message : r.signal ? `killed by ${r.signal}` : `exit ${r.status}`}`);
  }
}
if (failed) {
  console.error(`# ${failed} test file(s) failed`);
  process.exit(1);
}
