"use strict";
// TEMPORARY stub until the image store lands: every image is CWSB_STUB_ROOTFS.
const UID_BASE = 200000000;
const UID_COUNT = 65536;
class ImageStore {
  constructor() {}
  async resolve(ref) {
    if (!process.env.CWSB_STUB_ROOTFS) throw new Error(`image ${JSON.stringify(ref)} is not in the image store`);
    return { reference: ref, digest: "sha256:stub", rootfs: process.env.CWSB_STUB_ROOTFS, config: { env: [], entrypoint: [], cmd: [], workingDir: "", user: "" } };
  }
}
module.exports = { ImageStore, UID_BASE, UID_COUNT };
