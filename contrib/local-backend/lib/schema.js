"use strict";
// The schema, loaded from the descriptor set that `npm run build` compiles
// from proto/ with protoc. No message type is written by hand.
const fs = require("node:fs");
const path = require("node:path");
require("./fastbase64");
const { fromBinary, createFileRegistry } = require("@bufbuild/protobuf");
const { FileDescriptorSetSchema } = require("@bufbuild/protobuf/wkt");

const DESCRIPTOR = path.join(__dirname, "..", "gen", "sandbox.binpb");

function load() {
  let bytes;
  try {
    bytes = fs.readFileSync(DESCRIPTOR);
  } catch (e) {
    throw new Error(`${DESCRIPTOR} is missing: run "npm run build" in ${path.dirname(__dirname)} first (${e.code})`);
  }
  const set = fromBinary(FileDescriptorSetSchema, bytes);
  return createFileRegistry(set);
}

const registry = load();
const PKG = "coreweave.sandbox.v1.";

function msg(name) {
  const d = registry.getMessage(name.includes(".") ? name : PKG + name);
  if (!d) throw new Error(`schema has no message ${name}`);
  return d;
}
function enumOf(name) {
  const d = registry.getEnum(name.includes(".") ? name : PKG + name);
  if (!d) throw new Error(`schema has no enum ${name}`);
  return d;
}

const SandboxService = registry.getService(PKG + "SandboxService");

// State numbers by name, e.g. State.RUNNING === 2
function enumValues(desc, prefix) {
  const out = {};
  for (const v of desc.values) out[v.name.slice(prefix.length)] = v.number;
  return out;
}

module.exports = {
  registry,
  msg,
  SandboxService,
  State: enumValues(enumOf("State"), "STATE_"),
  SnapshotState: enumValues(enumOf("SnapshotState"), "SNAPSHOT_STATE_"),
  SnapshotTrigger: enumValues(enumOf("SnapshotTrigger"), "SNAPSHOT_TRIGGER_"),
  StorageMedium: enumValues(enumOf("StorageMedium"), "STORAGE_MEDIUM_"),
  Stream: enumValues(enumOf(PKG + "ExecStreamOutput.Stream"), "STREAM_"),
  ErrorInfo: msg("google.rpc.ErrorInfo"),
};
