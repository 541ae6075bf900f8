#!/usr/bin/env python3
"""Fabric 2 peer for bench/remote.ts: times `Connection.run("true", hide=True)`.

    python3 bench/peers/fabric_run.py warm  HOST PORT USER KEY KNOWN_HOSTS N WARMUP
    python3 bench/peers/fabric_run.py fresh HOST PORT USER KEY KNOWN_HOSTS N

warm:  connect once, run WARMUP unmeasured commands, then time N runs on that connection.
fresh: N times, open a new Connection, run one command (timed from before the connect) and close it.

Prints one JSON object on stdout: {"fabric": "<version>", "samplesMs": [...]}.
Benchmark only: it relies on the throwaway server's known_hosts and refuses unknown host keys.
"""
import json
import sys
import time

import fabric
import paramiko


def connection(host, port, user, key, known_hosts):
    conn = fabric.Connection(host, user=user, port=port, connect_kwargs={
        "key_filename": key,
        "look_for_keys": False,
        "allow_agent": False,
    })
    # Check the host key like the other contenders do, instead of Fabric's accept-anything default.
    conn.client.load_host_keys(known_hosts)
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return conn


def run_true(conn):
    result = conn.run("true", hide=True, warn=True, in_stream=False)
    if result.exited != 0:
        raise SystemExit(f"`true` exited {result.exited}")


def main(argv):
    mode, host, port, user, key, known_hosts, n = argv[1:8]
    port, n = int(port), int(n)
    samples = []
    if mode == "warm":
        warmup = int(argv[8])
        conn = connection(host, port, user, key, known_hosts)
        conn.open()
        for _ in range(warmup):
            run_true(conn)
        for _ in range(n):
            start = time.perf_counter()
            run_true(conn)
            samples.append((time.perf_counter() - start) * 1000)
        conn.close()
    elif mode == "fresh":
        for _ in range(n):
            start = time.perf_counter()
            conn = connection(host, port, user, key, known_hosts)
            run_true(conn)
            samples.append((time.perf_counter() - start) * 1000)
            conn.close()
    else:
        raise SystemExit(f"unknown mode {mode!r} (warm | fresh)")
    print(json.dumps({"fabric": fabric.__version__, "samplesMs": samples}))


if __name__ == "__main__":
    main(sys.argv)
