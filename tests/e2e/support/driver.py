"""A scriptable MCP client on the official Python `mcp` SDK, for the queue's black-box tests.

Usage: driver.py [--mode legacy|auto] [--inherit-env] (--url URL | --stdio CMD [ARG...])
(--inherit-env: the stdio server gets the driver's whole environment, not the SDK's safe subset)

Reads one JSON command per line on stdin and prints one JSON line per event on stdout:
  {"op": "call", "id": "c1", "tool": "worker_create", "args": {}, "progress": false}
      starts a tool call in the background; prints
      {"event": "result", "id": "c1", "is_error": bool, "text": "...", "json": {...}, "structured": {...}}
      or {"event": "error", "id": "c1", "message": "..."} for a protocol error,
      {"event": "progress", "id": "c1", "progress": n} for each progress notification.
  {"op": "cancel", "id": "c1"}   cancels a running call; prints {"event": "cancelled", "id": "c1"}
  {"op": "list_tools"}           prints {"event": "tools", "tools": [...]}
  {"op": "quit"}                 closes the session (also on end of input)
Prints {"event": "ready"} once the session is initialised.
"""

import argparse
import json
import os
import sys

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def run_call(client, cmd, scopes):
    call_id = cmd["id"]

    async def on_progress(progress, total, message):
        emit({"event": "progress", "id": call_id, "progress": progress, "total": total, "message": message})

    with anyio.CancelScope() as scope:
        scopes[call_id] = scope
        try:
            result = await client.call_tool(
                cmd["tool"],
                cmd.get("args"),
                progress_callback=on_progress if cmd.get("progress") else None,
            )
        except Exception as err:  # noqa: BLE001 - reported to the test as an event
            emit({"event": "error", "id": call_id, "message": str(err)})
            return
        texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
        text = texts[0] if texts else None
        try:
            parsed = json.loads(text) if text is not None else None
        except ValueError:
            parsed = None
        structured = getattr(result, "structured_content", None)
        if structured is None:
            structured = getattr(result, "structuredContent", None)
        emit({"event": "result", "id": call_id, "is_error": bool(result.is_error), "count": len(result.content),
              "text": text, "json": parsed, "structured": structured})
    if scope.cancelled_caught:
        emit({"event": "cancelled", "id": call_id})


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url")
    parser.add_argument("--mode", default="legacy")
    parser.add_argument("--inherit-env", action="store_true")
    parser.add_argument("--stdio", nargs=argparse.REMAINDER)
    opts = parser.parse_args()
    if opts.url:
        target = opts.url
    else:
        env = dict(os.environ) if opts.inherit_env else None
        target = StdioServerParameters(command=opts.stdio[0], args=opts.stdio[1:], env=env)
    async with Client(target, mode=opts.mode) as client:
        emit({"event": "ready", "protocol": client.protocol_version})
        scopes = {}
        stdin = anyio.wrap_file(sys.stdin)
        async with anyio.create_task_group() as tg:
            async for line in stdin:
                if not line.strip():
                    continue
                cmd = json.loads(line)
                op = cmd["op"]
                if op == "call":
                    tg.start_soon(run_call, client, cmd, scopes)
                elif op == "cancel":
                    scope = scopes.get(cmd["id"])
                    if scope is not None:
                        scope.cancel()
                elif op == "list_tools":
                    tools = await client.list_tools()
                    emit({"event": "tools", "tools": [t.model_dump(by_alias=True, exclude_none=True) for t in tools.tools]})
                elif op == "quit":
                    tg.cancel_scope.cancel()
                    break
            # End of input: let the calls in flight finish.
    emit({"event": "closed"})


if __name__ == "__main__":
    anyio.run(main)
