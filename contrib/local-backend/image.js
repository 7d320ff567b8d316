#!/usr/bin/env node
"use strict";
// The image store from the command line (see README.md, "Images").
//   image.js [--store DIR] import SOURCE NAME | pull REF | list | rm NAME... | has NAME...
const { ImageStore, DEFAULT_DIR, parseReference } = require("./lib/images");

const USAGE = `usage: image.js [--store DIR] COMMAND
  import SOURCE NAME   copy an image into the store (SOURCE: oci:DIR[:TAG], docker-archive:FILE,
                       a directory holding an OCI layout or a docker save tarball)
  pull REF             copy REF from its registry
  list                 every reference: REFERENCE DIGEST SIZE
  rm NAME...           forget references (their files stay for running sandboxes)
  has NAME...          exit 0 if the store has every NAME, 1 otherwise
--store DIR defaults to $CWSB_IMAGE_STORE or ${DEFAULT_DIR}`;

class UsageError extends Error {}

function parseArgs(argv) {
  let dir;
  const rest = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--store") {
      dir = argv[++i];
      if (!dir) throw new UsageError("--store needs a directory");
    } else if (argv[i].startsWith("--store=")) dir = argv[i].slice(8);
    else if (argv[i] === "-h" || argv[i] === "--help") return { help: true };
    else rest.push(argv[i]);
  }
  return { dir, cmd: rest[0], args: rest.slice(1) };
}

function wantArgs(cmd, args, n, names) {
  const ok = n < 0 ? args.length >= 1 : args.length === n;
  if (!ok) throw new UsageError(`${cmd} takes ${names}`);
}

function mib(n) {
  return n === undefined ? "-" : `${(n / 1048576).toFixed(1)}MiB`;
}

function printImage(img) {
  console.log(`${img.reference} ${img.digest} ${img.rootfs}`);
}

const COMMANDS = {
  async import(store, args) {
    wantArgs("import", args, 2, "SOURCE NAME");
    printImage(await store.import(args[0], args[1]));
  },
  async pull(store, args) {
    wantArgs("pull", args, 1, "REF");
    printImage(await store.pull(args[0]));
  },
  async list(store, args) {
    wantArgs("list", args, 0, "no arguments");
    for (const r of store.list()) console.log(`${r.reference} ${r.digest} ${mib(r.size)}`);
  },
  async rm(store, args) {
    wantArgs("rm", args, -1, "one or more NAMEs");
    for (const a of args) console.log(`removed ${await store.remove(a)}`);
  },
  async has(store, args) {
    wantArgs("has", args, -1, "one or more NAMEs");
    const held = new Set(store.list().map((r) => r.reference));
    const missing = args.filter((a) => !held.has(parseReference(a).reference));
    if (missing.length) {
      console.log(`missing: ${missing.join(" ")}`);
      process.exitCode = 1;
    }
  },
};

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
    if (opts.help) return console.log(USAGE);
    if (!opts.cmd) throw new UsageError("");
    if (!COMMANDS[opts.cmd]) throw new UsageError(`unknown command "${opts.cmd}"`);
    const log = (m) => process.stderr.write(`${m}\n`);
    await COMMANDS[opts.cmd](new ImageStore({ dir: opts.dir, log }), opts.args);
  } catch (e) {
    if (e instanceof UsageError && !e.message) {
      console.error(USAGE);
    } else {
      console.error(`image.js: ${e.message.split("\n")[0]}`);
      if (e instanceof UsageError) console.error("(image.js --help tells the commands)");
    }
    process.exitCode = 1;
  }
}

main();
