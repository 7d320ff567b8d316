"use strict";
// Node 18 and 20 have no native Uint8Array base64, and @bufbuild/protobuf then encodes
// and decodes `bytes` fields of JSON messages in JavaScript loops: a 32 MiB
// ReadFile took ~20 s. Swap in Buffer's native codec, with the same
// acceptance rules (standard or URL alphabet, optional padding, white space);
// anything unusual (inner padding, invalid characters) falls back to the
// library's own code, which also produces its error.
const path = require("node:path");

const mod = require(path.join(path.dirname(require.resolve("@bufbuild/protobuf")), "wire", "base64-encoding.js"));
const origDecode = mod.base64Decode;
const origEncode = mod.base64Encode;
const OK = /^[A-Za-z0-9+/\-_\r\n\t ]*={0,2}[\r\n\t ]*$/;

if (typeof Uint8Array.prototype.toBase64 !== "function" && !mod.__cwsbFast) {
  mod.base64Decode = function base64Decode(s) {
    if (s.length < 1024 || !OK.test(s)) return origDecode(s);
    const b = Buffer.from(s, "base64");
    return new Uint8Array(b.buffer, b.byteOffset, b.length);
  };
  mod.base64Encode = function base64Encode(bytes, encoding = "std") {
    if (bytes.length < 768) return origEncode(bytes, encoding);
    const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
    if (encoding === "std") return b.toString("base64");
    if (encoding === "url") return b.toString("base64url");
    return b.toString("base64").replace(/=+$/, "");
  };
  mod.__cwsbFast = true;
}
