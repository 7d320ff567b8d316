#!/usr/bin/env node
// faultproxy.js - an h2c proxy on loopback in front of the local backend that breaks
// streams the way networks and libcurl do, for the integration tests.
//
//   node faultproxy.js UPSTREAM_URL ADDRESS_FILE MODE ARG
//
// Listens on 127.0.0.1:0, writes http://127.0.0.1:PORT to ADDRESS_FILE and forwards every
// request to UPSTREAM_URL, except:
//   stall-upload BYTES  the first request body to pass BYTES stops being read there:
//                       HTTP/2 flow control then stops the sender, as a stalled upload
//                       looks to it
//   cut-logs TIMES      the first TIMES StreamLogs answers are reset right after their
//                       first bytes of output, as a dropped connection looks
//   hold-exec TIMES     the first TIMES StreamExec calls reach the backend (the command
//                       runs) but their answers are held back for good: nothing comes
//   black-hole FILE     while FILE exists, new requests go nowhere and nothing answers
//                       them, as a service that stopped answering looks
// A stream the client resets cancels its upstream call. One line per event on stderr.
"use strict";
const fs = require("node:fs");
const http2 = require("node:http2");

const [upstreamUrl, addressFile, mode, arg] = process.argv.slice(2);
const counted = ["stall-upload", "cut-logs", "hold-exec"].includes(mode) && Number(arg) > 0;
if (!counted && !(mode === "black-hole" && arg)) {
  console.error("usage: faultproxy.js UPSTREAM_URL ADDRESS_FILE stall-upload BYTES|cut-logs TIMES|hold-exec TIMES|black-hole FILE");
  process.exit(2);
}
const limit = Number(arg);
let stalls = 0;
let cuts = 0;
let holds = 0;
const upstream = http2.connect(upstreamUrl);
upstream.on("error", (e) => console.error(`upstream: ${e.message}`));

// Headers to pass on: the method, the path and the ordinary ones.
function passOn(headers, keep) {
  const out = {};
  for (const [k, v] of Object.entries(headers)) {
    if (keep.includes(k) || !k.startsWith(":")) out[k] = v;
  }
  return out;
}

const server = http2.createServer();
server.on("stream", (stream, headers) => {
  const path = headers[":path"];
  if (mode === "black-hole" && fs.existsSync(arg)) {
    console.error(`${path}: swallowed`);
    stream.on("data", () => {});
    stream.on("error", () => {});
    return;
  }
  const up = upstream.request(passOn(headers, [":method", ":path"]));
  let sent = 0;
  stream.on("data", (chunk) => {
    sent += chunk.length;
    if (mode === "stall-upload" && stalls === 0 && sent > limit) {
      stalls++;
      console.error(`${path}: stalled after ${sent} bytes`);
      stream.pause(); // never resumed: the window fills and the sender stops
      return;
    }
    up.write(chunk);
  });
  stream.on("end", () => up.end());
  stream.on("close", () => up.closed || up.close(http2.constants.NGHTTP2_CANCEL));
  stream.on("error", () => {});
  up.on("error", () => stream.destroyed || stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR));
  const hold = mode === "hold-exec" && path.endsWith("/StreamExec") && holds < limit;
  if (hold) {
    holds++;
    console.error(`${path}: answer held back (${holds})`);
    up.on("data", () => {});
    return;
  }
  up.on("response", (h) => stream.destroyed || stream.respond(passOn(h, [":status"])));
  let cutHere = mode === "cut-logs" && path.endsWith("/StreamLogs") && cuts < limit;
  up.on("data", (chunk) => {
    if (stream.destroyed || stream.closed) return;
    // Cut once output went through (a message with "data"), after it is flushed.
    const cut = cutHere && chunk.includes('"data"');
    stream.write(chunk, () => {
      if (!cut) return;
      console.error(`${path}: cut ${cuts} after ${chunk.length} bytes`);
      stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    });
    if (cut) {
      cutHere = false;
      cuts++;
    }
  });
  up.on("end", () => stream.destroyed || stream.end());
});
server.listen(0, "127.0.0.1", () => {
  fs.writeFileSync(addressFile, `http://127.0.0.1:${server.address().port}`);
});
