#!/usr/bin/env node
// stallproxy.js - an h2c proxy on loopback in front of the local backend, for test_errors.sh.
//
//   node stallproxy.js UPSTREAM_URL ADDRESS_FILE STALL_AFTER_BYTES
//
// Listens on 127.0.0.1:0, writes http://127.0.0.1:PORT to ADDRESS_FILE and forwards every
// request to UPSTREAM_URL, except that the first request body to pass STALL_AFTER_BYTES
// stops being read there: HTTP/2 flow control then stops the sender, as a stalled upload
// looks to it. When the sender gives up (resets the stream), the upstream call is
// cancelled. Every stream is logged on stderr, one line each.
"use strict";
const fs = require("node:fs");
const http2 = require("node:http2");

const [upstreamUrl, addressFile, stallAfterArg] = process.argv.slice(2);
const stallAfter = Number(stallAfterArg);
let stalled = false;
const upstream = http2.connect(upstreamUrl);
upstream.on("error", (e) => console.error(`upstream: ${e.message}`));

const server = http2.createServer();
server.on("stream", (stream, headers) => {
  const out = {};
  for (const [k, v] of Object.entries(headers)) {
    if (k === ":method" || k === ":path" || !k.startsWith(":")) out[k] = v;
  }
  const up = upstream.request(out);
  let bodyBytes = 0;
  let stalling = false;
  stream.on("data", (chunk) => {
    bodyBytes += chunk.length;
    if (!stalled && bodyBytes > stallAfter) {
      stalled = stalling = true;
      console.error(`${headers[":path"]}: stalled after ${bodyBytes} bytes`);
      stream.pause(); // never resumed: the window fills and the sender stops
      return;
    }
    up.write(chunk);
  });
  stream.on("end", () => up.end());
  stream.on("close", () => {
    console.error(`${headers[":path"]}: closed after ${bodyBytes} bytes${stalling ? " (stalled)" : ""}`);
    if (!up.closed) up.close(http2.constants.NGHTTP2_CANCEL);
  });
  stream.on("error", () => {});
  up.on("error", () => stream.destroyed || stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR));
  up.on("response", (h) => {
    const back = {};
    for (const [k, v] of Object.entries(h)) {
      if (k === ":status" || !k.startsWith(":")) back[k] = v;
    }
    if (!stream.destroyed) stream.respond(back);
  });
  up.on("data", (chunk) => stream.destroyed || stream.write(chunk));
  up.on("end", () => stream.destroyed || stream.end());
});
server.listen(0, "127.0.0.1", () => {
  fs.writeFileSync(addressFile, `http://127.0.0.1:${server.address().port}`);
});
