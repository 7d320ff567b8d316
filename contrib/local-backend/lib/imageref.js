"use strict";
// Image references, normalized the way docker does, so that "python:3.11" and
// "docker.io/library/python:3.11" name the same image in the store.

const DEFAULT_DOMAIN = "docker.io";
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?$|^\[[0-9a-fA-F:]+\](?::[0-9]+)?$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;

function refError(input, why) {
  return new Error(`image "${input}" is not a valid image reference: ${why}`);
}

// The first path component is a registry host only if it looks like one
// (a dot, a port or "localhost"), as docker decides.
function splitDomain(name) {
  const i = name.indexOf("/");
  const first = i < 0 ? "" : name.slice(0, i);
  if (i < 0 || !(first.includes(".") || first.includes(":") || first === "localhost" || first !== first.toLowerCase())) {
    return { domain: DEFAULT_DOMAIN, path: name };
  }
  return { domain: first === "index.docker.io" ? DEFAULT_DOMAIN : first, path: name.slice(i + 1) };
}

// parseReference("python:3.11") → { reference: "docker.io/library/python:3.11",
//   domain: "docker.io", repository: "docker.io/library/python", tag: "3.11",
//   digest: "", pull: "docker.io/library/python:3.11" (what skopeo's docker:// takes) }
function parseReference(input) {
  const s = String(input ?? "").trim();
  if (!s) throw refError(input, "it is empty");
  let name = s;
  let digest = "";
  const at = s.indexOf("@");
  if (at >= 0) {
    name = s.slice(0, at);
    digest = s.slice(at + 1);
    if (!DIGEST.test(digest)) throw refError(s, `"${digest}" is not a sha256 digest`);
  }
  let tag = "";
  const colon = name.lastIndexOf(":");
  if (colon > name.lastIndexOf("/")) {
    tag = name.slice(colon + 1);
    name = name.slice(0, colon);
    if (!TAG.test(tag)) throw refError(s, `"${tag}" is not a valid tag`);
  }
  const { domain, path } = splitDomain(name);
  if (!DOMAIN.test(domain)) throw refError(s, `"${domain}" is not a registry host`);
  const parts = path.split("/");
  if (!parts.every((c) => COMPONENT.test(c))) throw refError(s, "a repository name has only lowercase letters, digits and separators");
  if (domain === DEFAULT_DOMAIN && parts.length === 1) parts.unshift("library");
  if (!tag && !digest) tag = "latest";
  const repository = `${domain}/${parts.join("/")}`;
  const reference = repository + (tag ? `:${tag}` : "") + (digest ? `@${digest}` : "");
  // A digest pins the content; the tag beside it is only a label.
  const pull = digest ? `${repository}@${digest}` : `${repository}:${tag}`;
  return { reference, domain, repository, tag, digest, pull };
}

module.exports = { parseReference };
