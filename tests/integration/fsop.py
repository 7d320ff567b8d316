#!/usr/bin/env python3
"""fsop.py - single system calls the shell cannot make exactly, for the integration tests.

  fsop.py write1 PATH [--append]       stdin's bytes in ONE write(2) (O_TRUNC, or O_APPEND)
  fsop.py savefsync PATH               as an editor saves: O_CREAT|O_TRUNC, stdin in 64 KiB
                                       writes, fsync, close (one descriptor, no dup)
  fsop.py frags PATH DELAY FRAG...     open once, write each FRAG (\\n escapes) with its
                                       own write(2), DELAY s apart; after each, print the
                                       number of entries of PATH's dir's exec/ (no fork)
  fsop.py nbread PATH                  O_NONBLOCK reads until EOF or EAGAIN; prints
                                       "EOF N" or "EAGAIN N" (N bytes read before)
  fsop.py link SRC DST | setxattr PATH | getxattr PATH | listxattr PATH | flock PATH |
          lockf PATH                   the call; prints "ok" or the errno name
  fsop.py readpart PATH N              read until N bytes arrived, print them, exit
                                       (without reading to EOF)

Failures print the errno name (e.g. EINVAL) and exit 1.
"""
import errno
import fcntl
import os
import sys
import time


def ename(e):
    return errno.errorcode.get(e.errno, str(e.errno))


def main():
    op, args = sys.argv[1], sys.argv[2:]
    try:
        if op == "write1":
            data = sys.stdin.buffer.read()
            flags = os.O_WRONLY | (os.O_APPEND if "--append" in args else os.O_TRUNC)
            fd = os.open(args[0], flags)
            try:
                n = os.write(fd, data)
                if n != len(data):
                    print("short write %d of %d" % (n, len(data)))
                    return 1
            finally:
                os.close(fd)
        elif op == "savefsync":
            data = sys.stdin.buffer.read()
            fd = os.open(args[0], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                for i in range(0, len(data), 65536):
                    os.write(fd, data[i:i + 65536])
                os.fsync(fd)
            finally:
                os.close(fd)
        elif op == "frags":
            path, delay, frags = args[0], float(args[1]), args[2:]
            execdir = os.path.join(os.path.dirname(path), "exec")
            fd = os.open(path, os.O_WRONLY)
            try:
                for f in frags:
                    os.write(fd, f.encode().decode("unicode_escape").encode("latin-1"))
                    time.sleep(delay)
                    print(len(os.listdir(execdir)), flush=True)
            finally:
                os.close(fd)
        elif op == "nbread":
            fd = os.open(args[0], os.O_RDONLY | os.O_NONBLOCK)
            total = 0
            try:
                while True:
                    try:
                        b = os.read(fd, 65536)
                    except BlockingIOError:
                        print("EAGAIN", total)
                        break
                    if not b:
                        print("EOF", total)
                        break
                    total += len(b)
            finally:
                os.close(fd)
        elif op == "readpart":
            want = int(args[1])
            fd = os.open(args[0], os.O_RDONLY)
            got = b""
            while len(got) < want:
                b = os.read(fd, want - len(got))
                if not b:
                    break
                got += b
            sys.stdout.buffer.write(got)
            sys.stdout.flush()
            os._exit(0)
        elif op == "link":
            os.link(args[0], args[1])
        elif op == "setxattr":
            os.setxattr(args[0], "user.cwsfs_test", b"v")
        elif op == "getxattr":
            os.getxattr(args[0], "user.cwsfs_test")
        elif op == "listxattr":
            os.listxattr(args[0])
        elif op == "flock":
            fd = os.open(args[0], os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(fd)
        elif op == "lockf":
            fd = os.open(args[0], os.O_RDWR)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(fd)
        else:
            print("unknown op", op)
            return 2
    except OSError as e:
        print(ename(e), e.strerror)
        return 1
    if op in ("write1", "savefsync", "link", "setxattr", "getxattr", "listxattr", "flock", "lockf"):
        print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
