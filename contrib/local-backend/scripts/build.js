#!/usr/bin/env node
// Build step: compile the schema to a descriptor set and the native helper.
"use strict";
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

const root = path.resolve(__dirname, "..");
const gen = path.join(root, "gen");
fs.mkdirSync(gen, { recursive: true });

function newer(out, inputs) {
  if (!fs.existsSync(out)) return false;
  const t = fs.statSync(out).mtimeMs;
  return inputs.every((f) => fs.statSync(f).mtimeMs <= t);
}

const protoInclude = process.env.PROTOC_INCLUDE || "/usr/include";
const protos = [
  "coreweave/sandbox/v1/sandbox.proto",
  "google/rpc/error_details.proto",
];
const desc = path.join(gen, "sandbox.binpb");
if (!newer(desc, protos.map((p) => path.join(root, "proto", p)))) {
  execFileSync(
    process.env.PROTOC || "protoc",
    ["--include_imports", `--descriptor_set_out=${desc}.tmp`, "-I", path.join(root, "proto"), "-I", protoInclude, ...protos],
    { stdio: "inherit" },
  );
  fs.renameSync(`${desc}.tmp`, desc);
}

const srcs = ["sbx-helper.c", "zygote.c", "runc.c", "fileops.c", "agent.c", "reap.c"].map((f) => path.join(root, "native", f));
const bin = path.join(gen, "sbx-helper");
if (!newer(bin, [...srcs, path.join(root, "native", "helper.h")])) {
  execFileSync(
    process.env.CC || "cc",
    // static: the same binary is the exec agent inside sandboxes, whatever their libc
    ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-static", "-o", `${bin}.tmp`, ...srcs],
    { stdio: "inherit" },
  );
  fs.renameSync(`${bin}.tmp`, bin);
}
