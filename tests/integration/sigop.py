#!/usr/bin/env python3
"""sigop.py - one read(2) or write(2) on a file of the mount while a signal arrives.

  sigop.py SIG DELAY read PATH           open PATH, one read(2); prints "ok TEXT"
  sigop.py SIG DELAY update PATH          the same, opened O_RDWR (a sandbox's file is
                                         then fetched whole at open)
  sigop.py SIG DELAY write PATH TEXT     open PATH (O_WRONLY|O_TRUNC), one write(2) of
                                         TEXT; prints "ok N"
  SIG: CHLD (a child that exits after DELAY s), or a name such as WINCH, INT, TERM:
       a child sends it to this process after DELAY s. A handler that returns is
       installed for it, as shells install theirs; with a leading "-" (-TERM) the
       signal keeps its default action. A list (CHLD,INT) delivers the Nth signal
       after N * DELAY s.

The calls are made through libc, so an EINTR is seen as it is (Python's own os.read
would retry it, PEP 475). Failures print "error ERRNO-NAME" and exit 1. The time the
call took, in ms, is printed on stderr.
"""
import ctypes
import errno
import os
import signal
import sys
import time


def main():
    sig, delay, mode, path = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
    libc = ctypes.CDLL(None, use_errno=True)
    for i, name in enumerate(sig.split(",")):
        signum = getattr(signal, "SIG" + name.lstrip("-"))
        if not name.startswith("-"):
            signal.signal(signum, lambda *_: None)  # caught, returns (no SA_RESTART)
        if os.fork() == 0:
            time.sleep(delay * (i + 1))
            if signum != signal.SIGCHLD:
                os.kill(os.getppid(), signum)
            os._exit(0)
    t0 = time.monotonic()
    flags = {"read": os.O_RDONLY, "update": os.O_RDWR}.get(mode, os.O_WRONLY | os.O_TRUNC)
    fd = libc.open(path.encode(), flags)
    if fd < 0:
        e = ctypes.get_errno()
        print("error", errno.errorcode.get(e, str(e)))
        return 1
    if mode in ("read", "update"):
        buf = ctypes.create_string_buffer(4096)
        n = libc.read(fd, buf, 4096)
        data = buf.raw[: max(n, 0)].decode(errors="replace").strip()
    else:
        text = (sys.argv[5] + "\n").encode()
        n = libc.write(fd, text, len(text))
        data = str(n)
    e = ctypes.get_errno()
    print("%d ms" % ((time.monotonic() - t0) * 1000), file=sys.stderr)
    if n < 0:
        print("error", errno.errorcode.get(e, str(e)))
        return 1
    print("ok", data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
