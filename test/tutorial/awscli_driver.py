"""Runs AWS CLI commands for Go tests, many per process.

Each command goes through awscli.clidriver's main(), the same entry point
as the `aws` program, so what it sends and prints is what `aws` would. One
Python start and one driver per set of credentials save about half a second
per command.

Protocol: one JSON object per line on stdin,
    {"argv": ["appmesh", "create-mesh", ...], "cwd": "...", "env": {...}}
and one per line on the original stdout,
    {"rc": 0, "stdout": "...", "stderr": "..."}.
"""

import contextlib
import io
import json
import os
import sys


def main():
    # Keep the real stdout for replies; anything else printing to fd 1
    # lands on stderr instead of corrupting the protocol.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    from awscli.clidriver import create_clidriver

    drivers = {}
    base_env = dict(os.environ)
    for line in sys.stdin:
        req = json.loads(line)
        env = dict(base_env)
        env.update(req.get("env") or {})
        os.environ.clear()
        os.environ.update(env)
        os.chdir(req.get("cwd") or ".")
        key = json.dumps(req.get("env") or {}, sort_keys=True)
        if key not in drivers:
            # A driver's session reads credentials from the environment
            # once, so each set of credentials gets its own driver.
            drivers[key] = create_clidriver()
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = drivers[key].main(req["argv"])
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else 1
        replies.write(json.dumps({"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()}) + "\n")
        replies.flush()


if __name__ == "__main__":
    main()
