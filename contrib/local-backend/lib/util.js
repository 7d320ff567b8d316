"use strict";

// Kubernetes quantities, as the service takes them: a decimal number ("2", "0.5", ".5",
// "1.") with an optional decimal (m k M G T P E) or binary (Ki Mi Gi Ti Pi Ei) suffix or
// an exponent ("1e9"). cwsfs's ctl grammar (src/ctl.c) accepts a subset of these, so
// every value it sends is taken here. NaN for anything else.
const QUANTITY = /^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E))?$/;
const SUFFIX = { "": 1, m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60 };

function quantity(q) {
  const m = QUANTITY.exec(String(q).trim());
  if (!m) return NaN;
  return parseFloat(m[1]) * (m[2] ? 10 ** Number(m[2].slice(1)) : SUFFIX[m[3] || ""]);
}

// Bytes, rounded up as Kubernetes does; 0 when unset.
function parseBytes(q) {
  if (!q) return 0;
  return Math.ceil(quantity(q));
}

// Millicores, rounded up to whole ones as Kubernetes does; 0 when unset.
function parseCpuMillis(q) {
  if (!q) return 0;
  return Math.ceil(Math.round(quantity(q) * 1e6) / 1e3);
}

// A small async queue with a byte budget: producers push, one consumer pulls.
class ByteQueue {
  constructor(highWater, onDrainNeeded) {
    this.items = [];
    this.bytes = 0;
    this.highWater = highWater;
    this.waiter = null;
    this.closed = false;
    this.onPressure = onDrainNeeded; // (paused:boolean) => void
    this.paused = false;
  }
  push(item, size = 0) {
    this.items.push(item);
    this.bytes += size;
    item.__size = size;
    if (!this.paused && this.bytes > this.highWater) {
      this.paused = true;
      this.onPressure && this.onPressure(true);
    }
    this._wake();
  }
  close() {
    this.closed = true;
    this._wake();
  }
  _wake() {
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w();
    }
  }
  // Take the next item, merged with the output items right behind it that
  // belong to the same stream (up to maxBytes): a reader that fell behind gets
  // fewer, larger messages instead of thousands of tiny ones.
  async nextMerged(maxBytes) {
    const first = await this.next();
    if (!first || first.kind !== "out") return first;
    let n = first.data.length;
    const parts = [first.data];
    while (this.items.length) {
      const it = this.items[0];
      if (it.kind !== "out" || it.stream !== first.stream || n + it.data.length > maxBytes) break;
      this.items.shift();
      this.bytes -= it.__size;
      parts.push(it.data);
      n += it.data.length;
    }
    if (this.paused && this.bytes <= this.highWater / 2) {
      this.paused = false;
      this.onPressure && this.onPressure(false);
    }
    return parts.length === 1 ? first : { kind: "out", stream: first.stream, data: Buffer.concat(parts, n) };
  }

  async next() {
    for (;;) {
      if (this.items.length) {
        const it = this.items.shift();
        this.bytes -= it.__size;
        if (this.paused && this.bytes <= this.highWater / 2) {
          this.paused = false;
          this.onPressure && this.onPressure(false);
        }
        return it;
      }
      if (this.closed) return null;
      await new Promise((r) => (this.waiter = r));
    }
  }
}

module.exports = { parseBytes, parseCpuMillis, ByteQueue };
