"""Runs the real `openstack` CLI for the tests, one forked child per command.

Starting the `openstack` console script costs 1.5–3 s of CPU before it sends a byte, nearly all
of it importing openstackclient and openstacksdk; the suite runs several hundred commands. This
server imports them once, then forks a child for each command: the child is the same program
the console script runs (`openstackclient.shell.main(argv)`), in a fresh copy of the process,
with the command's own environment, stdin from /dev/null and stdout/stderr captured to files, so
no state passes from one command to the next. A command that outlives its timeout is killed.

Protocol (one JSON object per line): request on stdin {"argv": [...], "env": {...},
"timeout": s}; answer on stdout {"rc": n, "stdout": "...", "stderr": "..."}.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time

import openstackclient.shell  # noqa: F401  (the expensive import this server exists to share)

# The command modules the suite uses most; importing them here spares each child the work.
for _module in ("openstackclient.compute.v2.server", "openstackclient.compute.v2.flavor",
                "openstackclient.identity.v3.project", "openstackclient.identity.v3.user",
                "openstackclient.identity.v3.role", "openstackclient.network.v2.network",
                "openstackclient.network.v2.port", "openstackclient.network.v2.router",
                "openstackclient.image.v2.image", "openstackclient.volume.v3.volume"):
    try:
        __import__(_module)
    except ImportError:
        pass


def _child(argv: list[str], env: dict, out_path: str, err_path: str) -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(os.open(out_path, os.O_WRONLY), 1)
    os.dup2(os.open(err_path, os.O_WRONLY), 2)
    os.environ.clear()
    os.environ.update(env)
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False)
    sys.argv = ["openstack", *argv]
    rc = 1
    try:
        rc = openstackclient.shell.main(argv)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # a crash of the client is a failed command, reported like the script would
        import traceback

        traceback.print_exc()
        rc = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc if isinstance(rc, int) else 1)


def _run(request: dict) -> dict:
    timeout = float(request.get("timeout", 120))
    with tempfile.NamedTemporaryFile(prefix="osc-out-", delete=False) as out, \
            tempfile.NamedTemporaryFile(prefix="osc-err-", delete=False) as err:
        out_path, err_path = out.name, err.name
    try:
        pid = os.fork()
        if pid == 0:
            _child(request["argv"], request["env"], out_path, err_path)
        deadline = time.monotonic() + timeout
        status = None
        while status is None:
            done, status_word = os.waitpid(pid, os.WNOHANG)
            if done:
                status = status_word
            elif time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                status = -1
            else:
                time.sleep(0.005)
        with open(out_path, encoding="utf-8", errors="replace") as f:
            stdout = f.read()
        with open(err_path, encoding="utf-8", errors="replace") as f:
            stderr = f.read()
        if status == -1:
            return {"rc": -9, "stdout": stdout, "stderr": stderr + f"\n(killed after {timeout:.0f}s)"}
        return {"rc": os.waitstatus_to_exitcode(status), "stdout": stdout, "stderr": stderr}
    finally:
        os.unlink(out_path)
        os.unlink(err_path)


def main() -> None:
    answers = os.fdopen(os.dup(1), "w")
    # Nothing else may write to the answer channel: our own fd 1 goes to stderr from here on.
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    answers.write(json.dumps({"ready": True}) + "\n")
    answers.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        answers.write(json.dumps(_run(json.loads(line))) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()
