#!/usr/bin/env python3
"""Fabric 2 peer for bench/rolling.ts: a rolling run written by hand, as deploy tools built on Fabric
do it (Fabric has no batches): the groups run one after another, each with a ThreadingGroup (one
thread per host), and the first group with a failure stops the run.

    python3 bench/peers/fabric_rolling.py PORT USER KEY KNOWN_HOSTS COMMAND SIZES HOST...

SIZES is the batch sizes already computed, comma-separated ("1,4,11"), so that every contender cuts
the hosts alike. Prints one JSON object on stdout: {"fabric": "<version>", "innerMs": <ms>}, the time
from before the first connection to the end of the last group, without the interpreter's start.
Benchmark only: it refuses host keys not in the throwaway server's known_hosts.
"""
import json
import sys
import time

import fabric
import paramiko


def group(hosts, port, user, key, known_hosts):
    g = fabric.ThreadingGroup(*hosts, user=user, port=port, connect_kwargs={
        "key_filename": key,
        "look_for_keys": False,
        "allow_agent": False,
    })
    for conn in g:
        # Check the host key like the other contenders do, instead of Fabric's accept-anything default.
        conn.client.load_host_keys(known_hosts)
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return g


def main(argv):
    port, user, key, known_hosts, command, sizes = argv[1:7]
    hosts = argv[7:]
    sizes = [int(s) for s in sizes.split(",")]
    start = time.perf_counter()
    at = 0
    for size in sizes:
        g = group(hosts[at:at + size], int(port), user, key, known_hosts)
        at += size
        try:
            g.run(command, hide=True, in_stream=False)
        except fabric.exceptions.GroupException as error:
            raise SystemExit(f"batch failed: {error}")
        finally:
            g.close()
    inner = (time.perf_counter() - start) * 1000
    print(json.dumps({"fabric": fabric.__version__, "innerMs": inner}))


if __name__ == "__main__":
    main(sys.argv)
