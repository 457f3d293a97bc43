#!/usr/bin/env python3
"""The built-in stdio servers under `valgrind --tool=callgrind`: instructions counted, not time, so
the figures do not move with the machine's load (BENCHMARKS.md, issue 13).

  scripts/callgrind_stdio.py count BIN [BIN...]   user-space instructions per call of `mcp queue`
                                                   (`worker_create`) and `mcp telegram`
                                                   (`tg_get_chat`, no token), 2,000 calls in one
                                                   burst and 500 one at a time; each run minus a
                                                   run with no calls. BINs side by side.
  scripts/callgrind_stdio.py record BIN DIR        the sessions scripts/hot-functions.sh records:
                                                   prints one callgrind profile path per server
"""
import json
import os
import re
import subprocess
import sys
import tempfile


class Session:
    """One server under callgrind, driven over its stdin and stdout by raw JSON-RPC lines."""

    def __init__(self, binary, args, work, extra=()):
        self.data = tempfile.mkdtemp(dir=work)
        self.profile = os.path.join(self.data, "callgrind.out")
        env = dict(os.environ, MCP_WORKERS_DATA_DIR=self.data, RUST_LOG="warn")
        env.pop("TELEGRAM_BOT_TOKEN", None)
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.profile}", *extra, binary, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.next_id = 0
        self.call("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                 "clientInfo": {"name": "callgrind_stdio", "version": "1"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        self.call("tools/list")

    def send(self, message):
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        self.proc.stdin.flush()

    def request(self, method, params=None):
        self.next_id += 1
        message = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            message["params"] = params
        return message

    def call(self, method, params=None):
        self.send(self.request(method, params))
        reply = json.loads(self.proc.stdout.readline())
        assert "result" in reply, reply
        return reply["result"]

    def tool(self, name, **arguments):
        text = self.call("tools/call", {"name": name, "arguments": arguments})["content"][0]["text"]
        try:
            return json.loads(text)
        except ValueError:
            return {"text": text}

    def burst(self, name, n):
        """n calls written at once, then their n replies read."""
        lines = b"".join((json.dumps(self.request("tools/call", {"name": name, "arguments": {}})) + "\n").encode()
                         for _ in range(n))
        self.proc.stdin.write(lines)
        self.proc.stdin.flush()
        for _ in range(n):
            assert self.proc.stdout.readline()

    def close(self):
        """Ends the session; the instructions the whole run took."""
        self.proc.stdin.close()
        self.proc.wait()
        err = self.proc.stderr.read().decode()
        found = re.search(r"Collected : (\d+)", err)
        if not found:
            sys.exit(f"callgrind_stdio: no count from valgrind:\n{err}")
        return int(found.group(1))


SERVERS = (("mcp queue", ["mcp", "queue"], "worker_create"), ("mcp telegram", ["mcp", "telegram"], "tg_get_chat"))


def count(binaries):
    work = tempfile.mkdtemp()
    print("| server, calls | " + " | ".join(binaries) + " |")
    print("|---|" + "---|" * len(binaries))
    for label, args, tool in SERVERS:
        for mode, n in (("burst of", 2000), ("one at a time,", 500)):
            cells = []
            for binary in binaries:
                idle = Session(binary, args, work).close()
                session = Session(binary, args, work)
                if mode == "burst of":
                    session.burst(tool, n)
                else:
                    for _ in range(n):
                        session.tool(tool)
                cells.append(f"{(session.close() - idle) / n / 1000:.1f} k")
            print(f"| {label} `{tool}`, {mode} {n} | " + " | ".join(cells) + " |")


def record(binary, work):
    queue = Session(binary, ["mcp", "queue", "--demo-tasks", "--demo-interval", "50ms", "--timeout", "5"], work,
                    ["--demangle=no"])
    for _ in range(20):
        worker = queue.tool("worker_create")["worker_id"]
    for _ in range(10):
        task = queue.tool("worker_poll", worker_id=worker)
        if "task_id" in task:
            queue.tool("worker_submit", worker_id=worker, task_id=task["task_id"], response="done")
    queue.close()
    telegram = Session(binary, ["mcp", "telegram"], work, ["--demangle=no"])
    for _ in range(20):
        telegram.tool("tg_get_chat", chat_id="@example")
    telegram.close()
    print(queue.profile)
    print(telegram.profile)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "count":
        count(sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "record":
        record(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
