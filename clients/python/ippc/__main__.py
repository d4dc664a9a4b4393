"""``python -m ippc status|watch``: a small command line over the Python client.

    python -m ippc status [--profile P] [--ippc-dir D] [--url U --token T] [--json]
    python -m ippc watch  [--profile P] ... [--topics engines,tasks,stdout] [--json]

``status`` prints the engines and their queues; ``watch`` prints the event
stream, one line per event, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional

from .client import Client
from .errors import IppcError
from .websocket import Closed, WebSocket, WebSocketError

__all__ = ["main"]


def _client(args: argparse.Namespace) -> Client:
    if args.url:
        if not args.token:
            raise IppcError("--url needs --token")
        return Client(args.url, args.token)
    return Client.from_file(args.file, profile=args.profile, ippc_dir=args.ippc_dir,
                            timeout=args.wait)


def status(client: Client, as_json: bool = False, out: Any = None) -> int:
    """Prints the engines and the queue; returns an exit status."""
    out = out or sys.stdout
    engines = client.engines()
    queue = client.queue_status(verbose=True)
    info = client.info()
    if as_json:
        print(json.dumps({"info": info, "engines": engines,
                          "queue": {str(k): v for k, v in queue.items()}}, indent=2), file=out)
        return 0
    live = [e for e in engines if e.get("state") != "dead"]
    print("controller %s  (profile %s, up %.0f s): %d engine(s) live, %d in all"
          % (info.get("url"), info.get("profile"), info.get("uptime", 0), len(live),
             len(engines)), file=out)
    print("%4s %5s %5s %-8s %-6s %7s %6s %9s %s" % ("id", "rank", "size", "runtime", "state",
                                                    "queued", "done", "heartbeat", "host:pid"),
          file=out)
    for e in engines:
        q = queue.get(e["id"], {})
        print("%4d %5s %5s %-8s %-6s %7s %6s %8.1fs %s:%s"
              % (e["id"], e.get("rank"), e.get("size"), e.get("runtime", "lua"), e.get("state"),
                 q.get("queue", e.get("queue", 0)), e.get("tasks_done", 0),
                 float(e.get("heartbeat_age", 0)), e.get("host"), e.get("pid")), file=out)
    print("unassigned tasks: %s, waiting on dependencies: %s"
          % (queue.get("unassigned", 0), queue.get("waiting", 0)), file=out)
    return 0


def _line(ev: Dict[str, Any]) -> str:
    kind = ev.get("type", "?")
    t = str(ev.get("time", ""))[11:23]
    if kind == "snapshot":
        return "%s snapshot: %d engine(s), %d task(s) in flight" % (
            t, len(ev.get("engines", [])), len(ev.get("tasks", [])))
    if kind == "task.stdout":
        return "%s [stdout:%s] task %s: %s" % (t, ev.get("engine"), ev.get("task"),
                                               str(ev.get("data", "")).rstrip("\n"))
    if kind == "task.completed":
        tail = ("%s: %s" % (ev["error"].get("ename"), ev["error"].get("evalue"))
                if ev.get("error") else json.dumps(ev.get("result"))[:80])
        return "%s task %s %s on engine %s %s" % (t, ev.get("task"), ev.get("state"),
                                                  ev.get("engine"), tail)
    if kind.startswith("task."):
        return "%s task %s %s engine=%s" % (t, ev.get("task"), kind[5:], ev.get("engine"))
    if kind == "engine.status":
        return "%s engine %s %s queue=%s done=%s" % (t, ev.get("engine"), ev.get("state"),
                                                    ev.get("queue"), ev.get("tasks_done"))
    if kind == "engine.registered":
        e = ev.get("engine") or {}
        return "%s engine %s registered (rank %s of %s on %s)" % (
            t, e.get("id"), e.get("rank"), e.get("size"), e.get("host"))
    if kind == "engine.dead":
        return "%s engine %s dead: %s" % (t, ev.get("engine"), ev.get("reason"))
    return "%s %s %s" % (t, kind, json.dumps({k: v for k, v in ev.items()
                                              if k not in ("type", "time", "seq")}))


def watch(client: Client, topics: List[str], as_json: bool = False, out: Any = None,
          count: Optional[int] = None) -> int:
    """Prints events until Ctrl-C (or ``count`` of them); returns an exit status."""
    out = out or sys.stdout
    ws = WebSocket.connect(client.ws_url, headers={"Authorization": "Bearer " + client.token},
                           protocols=("ippc.client.v1",))
    try:
        ws.send_json({"op": "subscribe", "topics": topics})
        n = 0
        while count is None or n < count:
            ev = ws.recv_json()
            if ev.get("type") == "subscribed":
                continue
            print(json.dumps(ev) if as_json else _line(ev), file=out, flush=True)
            n += 1
    except KeyboardInterrupt:
        pass
    except Closed as e:
        print("the controller closed the stream: %s" % e, file=sys.stderr)
        return 1
    finally:
        ws.close(timeout=1)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """The command line; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m ippc",
                                description="Status and live events of an ippc cluster.")
    p.add_argument("command", choices=["status", "watch"])
    p.add_argument("--profile", default=None)
    p.add_argument("--ippc-dir", default=None)
    p.add_argument("--file", default=None, help="a client connection file")
    p.add_argument("--url", default=None)
    p.add_argument("--token", default=None)
    p.add_argument("--wait", type=float, default=0.0,
                   help="seconds to wait for the connection file")
    p.add_argument("--json", action="store_true")
    p.add_argument("--topics", default="engines,tasks,stdout")
    p.add_argument("--count", type=int, default=None, help="watch: stop after N events")
    args = p.parse_args(argv)
    try:
        client = _client(args)
        try:
            if args.command == "status":
                return status(client, args.json)
            return watch(client, [t for t in args.topics.split(",") if t], args.json,
                         count=args.count)
        finally:
            client.close()
    except (IppcError, WebSocketError, OSError) as e:
        print("ippc: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
