"use strict";
// The request gate in front of the Connect adapter: the API key and the size of a
// request are judged from the headers alone, so a refused request costs its headers
// and never its body (the adapter would read a whole unary body before any
// interceptor runs). A refused request is answered, and torn down if it goes on
// sending.
const http2 = require("node:http2");

// The largest request body: a 32 MiB WriteFile (the file cap) is about 43 MiB as
// base64 in JSON; 64 MiB leaves room for that, a spec's files and the framing.
const BODY_MAX = 64 * 1024 * 1024 + 64 * 1024;

function isGrpc(req) {
  return /^application\/grpc/.test(req.headers["content-type"] || "");
}

// What a refused request may still send before it is cut: a small body's rest (so
// its client reads the answer whole), never a large one's.
const DISCARD_MAX = 64 * 1024;
const DISCARD_MS = 5000;

// Read and drop what is left of a refused request, up to DISCARD_MAX bytes or
// DISCARD_MS; past either, tear the stream (h2) or the connection (HTTP/1.1) down.
function drain(req) {
  let n = 0;
  const cut = () => {
    clearTimeout(timer);
    if (req.stream) req.stream.close(http2.constants.NGHTTP2_CANCEL);
    else req.socket.destroy();
  };
  const timer = setTimeout(cut, DISCARD_MS);
  timer.unref();
  req.on("data", (d) => {
    n += d.length;
    if (n > DISCARD_MAX) cut();
  });
  req.on("end", () => clearTimeout(timer));
  req.on("error", () => clearTimeout(timer));
  req.resume();
}

// Answer with a Connect (or gRPC) error; the body is never parsed.
function refuse(req, res, httpStatus, code, grpcStatus, message) {
  if (isGrpc(req)) {
    // trailers-only: the status travels in the headers
    res.writeHead(200, { "content-type": req.headers["content-type"], "grpc-status": String(grpcStatus), "grpc-message": encodeURIComponent(message) });
    res.end();
  } else {
    const body = JSON.stringify({ code, message });
    const headers = { "content-type": "application/json", "content-length": Buffer.byteLength(body) };
    if (!req.stream) headers.connection = "close";
    res.writeHead(httpStatus, headers);
    res.end(body);
  }
  drain(req);
}

// makeGate({ apiKey }) -> (req, res) => true when it answered the request itself.
function makeGate({ apiKey, bodyMax = BODY_MAX }) {
  return (req, res) => {
    if (apiKey) {
      const auth = req.headers["authorization"] || "";
      const wandb = req.headers["x-wandb-api-key"] || "";
      if (auth !== `Bearer ${apiKey}` && wandb !== apiKey) {
        refuse(req, res, 401, "unauthenticated", 16, auth || wandb ? "invalid API key" : "missing API key: send Authorization: Bearer <key> or x-wandb-api-key");
        return true;
      }
    }
    const len = Number(req.headers["content-length"]);
    if (Number.isFinite(len) && len > bodyMax) {
      refuse(req, res, 413, "resource_exhausted", 8, `request body of ${len} bytes is larger than the limit of ${bodyMax} bytes`);
      return true;
    }
    return false;
  };
}

// An h2 request whose answer is complete but whose body the adapter stopped reading
// (a message over BODY_MAX): its unread data would pile up in the session until
// node ends the whole connection (ENHANCE_YOUR_CALM), so drop it as a refused one.
// (HTTP/1.1: node itself reads and discards what is left.)
function dropUnreadAfterAnswer(req, res) {
  if (!req.stream) return;
  res.once("finish", () => {
    if (!req.complete) drain(req);
  });
}

module.exports = { makeGate, dropUnreadAfterAnswer, BODY_MAX };
