"use strict";
// Connect errors carrying a google.rpc.ErrorInfo detail, as the service sends them.
const { ConnectError, Code } = require("@connectrpc/connect");
const { ErrorInfo } = require("./schema");

const DOMAIN = "cwsandbox.com";

function apiError(code, reason, message, metadata) {
  const details = [];
  if (reason) {
    details.push({ desc: ErrorInfo, value: { reason, domain: DOMAIN, metadata: metadata || {} } });
  }
  return new ConnectError(message, code, undefined, details);
}

const E = {
  invalid: (message, metadata) => apiError(Code.InvalidArgument, "CWSANDBOX_INVALID_REQUEST", message, metadata),
  sandboxNotFound: (id) =>
    apiError(Code.NotFound, "CWSANDBOX_SANDBOX_NOT_FOUND", `sandbox ${JSON.stringify(id)} not found`, { sandbox_id: String(id) }),
  notRunning: (sb, stateName) =>
    apiError(Code.FailedPrecondition, "CWSANDBOX_SANDBOX_NOT_RUNNING", `sandbox ${sb} is not running (state ${stateName})`, {
      sandbox_id: sb,
      state: stateName,
    }),
  fileNotFound: (p) => apiError(Code.NotFound, "CWSANDBOX_FILE_NOT_FOUND", `file ${p} not found`, { path: p }),
  isDirectory: (p) => apiError(Code.InvalidArgument, "CWSANDBOX_FILE_IS_DIRECTORY", `${p} is a directory`, { path: p }),
  permissionDenied: (p) => apiError(Code.PermissionDenied, "CWSANDBOX_FILE_PERMISSION_DENIED", `permission denied: ${p}`, { path: p }),
  tooLarge: (p, size, limit) =>
    apiError(Code.ResourceExhausted, "CWSANDBOX_FILE_TOO_LARGE", `file ${p} is ${size} bytes, over the ${limit} byte limit`, {
      path: p,
      size_bytes: String(size),
      limit_bytes: String(limit),
    }),
  io: (p, e) => apiError(Code.Internal, "CWSANDBOX_FILE_IO_FAILED", `${p}: ${e.message || e}`, { path: p }),
  notImplemented: (what) => apiError(Code.Unimplemented, "CWSANDBOX_NOT_IMPLEMENTED", `${what} is not implemented`),
  timeout: (what) => apiError(Code.DeadlineExceeded, "CWSANDBOX_COMMAND_TIMEOUT", `${what} timed out`),
  snapshotNotFound: (id) =>
    apiError(Code.NotFound, "CWSANDBOX_SNAPSHOT_NOT_FOUND", `file system snapshot ${JSON.stringify(id)} not found`, {
      file_system_snapshot_id: String(id),
    }),
  unavailable: (message) => apiError(Code.Unavailable, "CWSANDBOX_BACKEND_UNAVAILABLE", message),
  capacity: (message) => apiError(Code.ResourceExhausted, "CWSANDBOX_RUNNER_CAPACITY_EXHAUSTED", message),
  unauthenticated: (message) => apiError(Code.Unauthenticated, undefined, message),
};

// Map a Node fs error on a sandbox path to the service's file errors.
function fileError(p, e) {
  switch (e && e.code) {
    case "ENOENT":
    case "ENOTDIR":
      return E.fileNotFound(p);
    case "EISDIR":
      return E.isDirectory(p);
    case "EACCES":
    case "EPERM":
    case "EROFS":
      return E.permissionDenied(p);
    default:
      return e instanceof ConnectError ? e : E.io(p, e);
  }
}

module.exports = { E, fileError, DOMAIN, Code, ConnectError };
