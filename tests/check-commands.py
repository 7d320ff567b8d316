#!/usr/bin/env python3
"""Fails when a script of the suite uses a command tests/setup.sh does not install.

Every shell file of tests/, tests/integration/, examples/ and bench/ is parsed with
shfmt (its syntax tree, so quoting, pipelines, $(...) and `bash -c '...'` bodies are
read as bash reads them), and the first word of each simple command is taken, looking
through wrappers that run another command (timeout, sudo, env, xargs, must, ...).
A word must be a bash builtin or keyword, a function the scripts define, a path into
this repository, a command the scripts only probe for (`command -v X && X ...`), or in
COMMANDS below. Each of COMMANDS must then be on this machine
(run after tests/setup.sh) and come from a package setup.sh installs
(`tests/setup.sh --list-packages`) or one every Debian system has (Priority:
required, what debootstrap --variant=minbase installs).

Usage: SETUP_EXTRA_PACKAGES="clang-format shellcheck" tests/check-commands.py [-v]
(run-all.sh's linters come from those extra packages, as when it runs setup.sh)
"""
import glob
import json
import os
import shutil
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLOBS = ["tests/*.sh", "tests/integration/*.sh", "examples/*.sh", "bench/*.sh", ".ci/run"]

# The external commands the scripts use. Add one here when a script starts using it,
# and its package to setup.sh's list unless Debian always has it.
COMMANDS = """
    apt-get awk basename bash bc cat chmod chown clang-format cmake cmp col cp ctest curl cut
    date dd dirname dpkg-query du env find fusermount3 grep head id ln ls md5sum mkdir
    man mktemp mount mountpoint mv nm node npm nproc od paste pgrep prlimit ps python3
    readlink rm rmdir sed seq sh shellcheck sleep sort stat strings sync tail tar tee
    timeout touch tr
    truncate umount valgrind wc xargs
""".split()
# Not checked: sudo (setup.sh runs it only when not root, where it must exist anyway);
# _cwsfs, the completion function test_install.sh sources from contrib/completion.
NOT_CHECKED = {"sudo", "_cwsfs"}

# Wrappers: name -> (positional arguments before the command, options taking a value).
WRAPPERS = {
    "timeout": (1, {"-k", "-s", "--kill-after", "--signal"}),
    "sudo": (0, {"-u", "-g", "-C", "-D"}),
    "env": (0, {"-u", "-C"}),
    "xargs": (0, {"-n", "-I", "-P", "-d", "-a", "-L", "-s", "-E"}),
    "exec": (0, {"-a"}),
    "nice": (0, {"-n"}),
    "nohup": (0, set()),
    "setsid": (0, set()),
    "command": (0, set()),
    "prlimit": (0, {"-p"}),
    "valgrind": (0, set()),
    "unshare": (0, set()),
    # the integration library's
    "must": (0, set()),
    "must_fail": (1, set()),
    "sigint_ends": (1, set()),
    "wait_for": (1, set()),
}
SHELLS = {"bash", "sh"}


def word(w):
    """A word's text when it is literal (no expansion), else None."""
    out = ""
    for p in w.get("Parts", []):
        t = p.get("Type")
        if t in ("Lit", "SglQuoted"):
            out += p["Value"]
        elif t == "DblQuoted":
            for q in p.get("Parts", []):
                if q.get("Type") != "Lit":
                    return None
                out += q["Value"]
        else:
            return None
    return out


def param_only(w):
    """$var or "${arr[@]}" alone: the optional-prefix idiom ($WRAPPER prog,
    "${sudo_cmd[@]}" apt-get), looked through to the command after it."""
    parts = w.get("Parts", [])
    if len(parts) == 1 and parts[0].get("Type") == "DblQuoted":
        parts = parts[0].get("Parts", [])
    return len(parts) == 1 and parts[0].get("Type") == "ParamExp"


def parse(text, where):
    if not shutil.which("shfmt"):
        sys.exit("check-commands: needs shfmt (tests/setup.sh installs it)")
    r = subprocess.run(["shfmt", "--tojson"], input=text, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"check-commands: shfmt cannot parse {where}: {r.stderr.strip()}")
    return json.loads(r.stdout)


class Scan:
    def __init__(self):
        self.uses = {}  # command -> set of "file:line"
        self.funcs = set()
        self.probed = set()  # named by `command -v`

    def use(self, cmd, where):
        self.uses.setdefault(cmd, set()).add(where)

    def call(self, args, path, line):
        where = f"{path}:{line}"
        i = 0
        while i < len(args) and param_only(args[i]):
            i += 1
        while i < len(args):
            cmd = word(args[i])
            if cmd is None or cmd.startswith("-") or not cmd:
                return
            rest = args[i + 1:]
            if cmd == "command" and rest and word(rest[0]) in ("-v", "-V"):
                self.probed.update(w for w in map(word, rest[1:]) if w)
                return
            self.use(cmd, where)
            if os.path.basename(cmd) in SHELLS:
                for k, a in enumerate(rest[:-1]):
                    if word(a) == "-c" and word(rest[k + 1]) is not None:
                        self.walk(parse(word(rest[k + 1]), where), path, line)
                        break
                return
            if cmd not in WRAPPERS:
                return
            skip, valued = WRAPPERS[cmd]
            j = i + 1
            while j < len(args):
                a = word(args[j])
                if a is not None and a.startswith("-") and a != "-":
                    j += 2 if a in valued else 1
                elif a is not None and cmd == "env" and "=" in a:
                    j += 1
                elif skip > 0:
                    skip -= 1
                    j += 1
                else:
                    break
            i = j

    def walk(self, n, path, line=0):
        if isinstance(n, dict):
            pos = n.get("Pos")
            if isinstance(pos, dict) and pos.get("Line") and line == 0:
                here = pos["Line"]
            else:
                here = line
            if n.get("Type") == "CallExpr" and n.get("Args"):
                self.call(n["Args"], path, here)
            if n.get("Type") == "FuncDecl":
                self.funcs.add(n["Name"]["Value"])
            for v in n.values():
                self.walk(v, path, line)
        elif isinstance(n, list):
            for v in n:
                self.walk(v, path, line)


def setup_packages():
    r = subprocess.run([os.path.join(TOP, "tests/setup.sh"), "--list-packages"],
                       capture_output=True, text=True, check=True)
    return set(r.stdout.split())


def with_dependencies(pkgs):
    """pkgs and what they depend on directly (python3 brings python3-minimal's
    /usr/bin/python3)."""
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Depends}, ${Pre-Depends}\\n", *sorted(pkgs)],
                       capture_output=True, text=True)
    out = set(pkgs)
    for alt in r.stdout.replace("\n", ",").split(","):
        for dep in alt.split("|"):
            name = dep.strip().split(" ")[0].split(":")[0]
            if name:
                out.add(name)
    return out


def package_of(path):
    """The package that ships path (through links, and /bin vs /usr/bin), or None."""
    tries = [path, os.path.realpath(path)]
    for p in list(tries):
        for a, b in (("/usr/bin/", "/bin/"), ("/usr/sbin/", "/sbin/")):
            if p.startswith(a):
                tries.append(b + p[len(a):])
            elif p.startswith(b):
                tries.append(a + p[len(b):])
    for p in tries:
        r = subprocess.run(["dpkg-query", "-S", p], capture_output=True, text=True)
        if r.returncode == 0:
            # "pkg[:arch][, pkg2]: /path"; diversions print other lines first
            for ln in r.stdout.splitlines():
                if ln.startswith("diversion "):
                    continue
                return ln.rsplit(": ", 1)[0].split(",")[0].split(":")[0].strip()
    return None


def required(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Priority} ${Essential}", pkg],
                       capture_output=True, text=True)
    return r.returncode == 0 and (r.stdout.startswith("required") or r.stdout.endswith("yes"))


def main():
    verbose = "-v" in sys.argv[1:]
    os.chdir(TOP)
    files = sorted({f for g in GLOBS for f in glob.glob(g)})
    scan = Scan()
    for f in files:
        with open(f) as fh:
            scan.walk(parse(fh.read(), f), f)
    builtins = set(subprocess.run(["bash", "-c", "compgen -b; compgen -k"], capture_output=True,
                                  text=True, check=True).stdout.split())
    problems = []
    known = set(COMMANDS) | NOT_CHECKED
    for cmd, where in sorted(scan.uses.items()):
        if cmd in builtins or cmd in scan.funcs or cmd in known or cmd in scan.probed:
            continue
        if "/" in cmd and not cmd.startswith("/"):
            continue  # a script of this repository, run by its path
        if cmd.startswith("/") and os.path.exists(cmd):
            if not package_of(cmd):
                problems.append(f"{cmd}: no package ships it (used at {min(where)})")
            continue
        problems.append(f"{cmd}: used at {', '.join(sorted(where)[:3])} but not in "
                        "tests/check-commands.py's COMMANDS (add it, and its package to setup.sh)")
    unused = sorted(set(COMMANDS) - set(scan.uses))
    if unused:
        problems.append(f"in COMMANDS but used by no script (drop them): {' '.join(unused)}")

    pkgs = with_dependencies(setup_packages())
    used_pkgs = set()
    for cmd in sorted(set(COMMANDS) & set(scan.uses)):
        # Debian's own copy when PATH puts another first (a virtualenv's python3)
        path = shutil.which(cmd, path="/usr/sbin:/usr/bin:/sbin:/bin") or shutil.which(cmd)
        if not path:
            problems.append(f"{cmd}: not installed (used at {min(scan.uses[cmd])})")
            continue
        pkg = package_of(path)
        if pkg is None:
            problems.append(f"{cmd}: {path} belongs to no package")
        elif pkg in pkgs:
            used_pkgs.add(pkg)
        elif not required(pkg):
            problems.append(f"{cmd}: from package {pkg}, which tests/setup.sh does not install "
                            "(nor a package it lists depends on it)")
        if verbose:
            print(f"{cmd:14} {path:28} {pkg}")
    for p in problems:
        print(f"check-commands: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"check-commands: {len(scan.uses)} command words in {len(files)} files, all provided")
    return 0


if __name__ == "__main__":
    sys.exit(main())
