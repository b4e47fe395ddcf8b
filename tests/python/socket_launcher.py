#!/usr/bin/env python3
"""A supervisor that passes listening sockets to the command it starts, as systemd socket activation does
(LISTEN_FDS=2: fd 3 the webhook listener, fd 4 the admin listener; LISTEN_PID unset). It binds both on
127.0.0.1:0 once, prints "ports <webhook> <admin>", and then obeys one command per line on stdin:
  start  starts the command (the arguments after --) and prints its first line of stdout
  kill   SIGKILLs it, waits for it, prints "killed"
The sockets stay open (and keep queueing connections) while the command is down: its restarts never need
to bind a port again. Used by crates/paystate/tests/serve.rs's SIGKILL test."""
import os, socket, subprocess, sys, threading

def listener():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(1024)
    return s

def main():
    cmd = sys.argv[sys.argv.index("--") + 1:]
    webhook, admin = listener(), listener()
    # At fds 3 and 4, inheritable (dup first: the sockets may already sit there).
    high = [os.dup(webhook.fileno()), os.dup(admin.fileno())]
    for fd, want in zip(high, (3, 4)):
        os.dup2(fd, want, inheritable=True)
    env = dict(os.environ, LISTEN_FDS="2")
    env.pop("LISTEN_PID", None)
    print(f"ports {webhook.getsockname()[1]} {admin.getsockname()[1]}", flush=True)
    child = None
    for line in sys.stdin:
        what = line.strip()
        if what == "start":
            child = subprocess.Popen(cmd, env=env, pass_fds=(3, 4), stdout=subprocess.PIPE, text=True)
            print(child.stdout.readline().rstrip("\n"), flush=True)
            # Drain the rest so that the child never blocks on a full pipe.
            threading.Thread(target=lambda out=child.stdout: [None for _ in out], daemon=True).start()
        elif what == "kill" and child is not None:
            child.kill()
            child.wait()
            print("killed", flush=True)
    if child is not None and child.poll() is None:
        child.kill()
        child.wait()

if __name__ == "__main__":
    main()
