#!/usr/bin/env python3
"""depgraph.py - the module dependency graph of cwsfs, from the built objects.

  tests/depgraph.py BUILD_DIR [--check]

A module is one src/*.c file, or the files that share an internal header: rootfs.c
and rootfs_*.c share include/rootfs_int.h and are the module rootfs. Module A depends on module B when A's object uses a
symbol B's object defines (nm: A's undefined symbols against B's defined ones), so the
graph is what the code calls, not what it includes. Prints one line per module,
"a -> b c", then the cycles (strongly connected components of more than one module).
With --check, exits 1 when there is a cycle.
"""
import glob
import os
import subprocess
import sys


def symbols(obj):
    out = subprocess.run(["nm", "-P", obj], capture_output=True, text=True, check=True).stdout
    defined, used = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, kind = parts[0], parts[1]
        if kind == "U":
            used.add(name)
        elif kind in "TDBR":  # global text, data, bss, read-only data
            defined.add(name)
    return defined, used


def module(src, name):
    """A file's module: the prefix before '_' when the files share include/PREFIX_int.h."""
    prefix = name.split("_")[0]
    if os.path.exists(os.path.join(src, "include", prefix + "_int.h")):
        return prefix
    return name


def graph(build):
    objs = sorted(glob.glob(os.path.join(build, "CMakeFiles", "*.dir", "src", "*.c.o")))
    if not objs:
        sys.exit(f"depgraph: no objects under {build}/CMakeFiles/*.dir/src: build first")
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    owner, uses = {}, {}
    for o in objs:
        mod = module(src, os.path.basename(o)[: -len(".c.o")])
        d, u = symbols(o)
        for s in d:
            owner[s] = mod
        uses.setdefault(mod, set()).update(u)
    return {m: sorted({owner[s] for s in u if s in owner and owner[s] != m}) for m, u in uses.items()}


def cycles(g):
    """Tarjan's strongly connected components with more than one node."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    g = graph(sys.argv[1])
    for m in sorted(g):
        print(f"{m} -> {' '.join(g[m])}".rstrip())
    found = cycles(g)
    for c in found:
        print("cycle: " + " ".join(c))
    if not found:
        print("no cycle")
    return 1 if found and "--check" in sys.argv else 0


if __name__ == "__main__":
    sys.exit(main())
