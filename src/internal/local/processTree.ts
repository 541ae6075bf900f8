/**
 * Stopping a process from outside with everything it started, however it started it (in process
 * groups or sessions of their own): an `Execute` worker, even when none of its JavaScript runs (a
 * task looping on the CPU never lets its event loop turn), and an interrupted local command.
 *
 * Both halves are one small POSIX shell script, so they need no JavaScript of the worker and
 * none of the parent once it is started:
 *
 * - `watch`: started by the parent beside each worker, in a session of its own, reading a pipe
 *   from the parent that the parent never writes to. The kernel closes the parent's end when the
 *   parent dies, however it dies (SIGKILL too): the read then ends, and the watchdog stops the
 *   worker as `stop` does, then exits. Nothing polls. The parent ends the watchdog (SIGTERM) as
 *   soon as its worker exits. Node opens every descriptor close-on-exec, so the pipe's end stays
 *   in the parent: no worker or command holds it open.
 * - `stop`: takes the worker's process tree first (from `/proc`, else `ps`): its local commands
 *   run in process groups of their own, which nobody signals once the worker is dead, and which
 *   leave its tree when it dies. Then it sends SIGTERM to the worker and to the groups of its
 *   descendants (those sharing the worker's group, which is its parent's, one by one), SIGKILL
 *   after {@link killGraceMillis} to whatever is left, and waits until they are gone (zombies
 *   count as gone).
 */
import * as Effect from "effect/Effect"
import * as ChildProcess from "node:child_process"
import type * as Net from "node:net"

/** Between SIGTERM and SIGKILL, for the worker and its descendants. */
export const killGraceMillis = 1_000

/** How long `stop` waits for processes to disappear after SIGKILL. */
const afterKillMillis = 2_000

// $1: watch | stop; $2: the worker's pid; $3: the grace in tenths of a second.
const script = `w=$2 grace=$3 proc=
[ -r /proc/$$/stat ] && proc=1
look() {
  S=
  if [ -n "$proc" ]; then
    l=; { read -r l < /proc/$w/stat; } 2>/dev/null
    [ -n "$l" ] || return 0
    set -- \${l##*") "}
  else
    set -- $(ps -o stat= -p "$w" 2>/dev/null)
  fi
  S=\${1-}
}
gone() { look; case $S in ''|Z*) return 0;; esac; return 1; }
table() {
  if [ -z "$proc" ]; then ps -e -o pid= -o ppid= -o pgid= -o stat= 2>/dev/null; return; fi
  for f in /proc/[0-9]*/stat; do
    l=; { read -r l < "$f"; } 2>/dev/null
    [ -n "$l" ] || continue
    p=\${f#/proc/}
    set -- \${l##*") "}
    echo "\${p%/stat} $2 $3 $1"
  done
}
tree() {
  table | awk -v w="$w" '
    { pp[$1] = $2; pg[$1] = $3; st[$1] = $4 }
    END {
      d[w] = 1
      do { n = 0; for (p in pp) if (!(p in d) && (pp[p] in d)) { d[p] = 1; n = 1 } } while (n)
      for (p in d) if (p != w && st[p] !~ /^Z/) { if (pg[p] == pg[w]) print p; else g[pg[p]] = 1 }
      for (x in g) print "-" x
    }'
}
left() {
  [ -n "$T" ] || return 1
  table | awk -v t="$T" '
    BEGIN { n = split(t, a, " "); for (i = 1; i <= n; i++) want[a[i]] = 1 }
    $4 !~ /^Z/ && (($1 in want) || (("-" $3) in want)) { found = 1 }
    END { exit !found }'
}
settle() {
  i=0
  while [ "$i" -lt "$1" ] && { ! gone || left; }; do sleep 0.1; i=$((i + 1)); done
}
stop() {
  T=$(tree)
  T=$(echo $T)
  kill -s TERM -- "$w" $T 2>/dev/null
  settle "$grace"
  gone || T=$(echo $T $(tree))
  kill -s KILL -- "$w" $T 2>/dev/null
  settle ${Math.ceil(afterKillMillis / 100)}
}
case $1 in
stop) stop ;;
watch)
  while read -r _; do :; done
  gone || stop ;;
esac`

const shell = (args: ReadonlyArray<string>, input: "pipe" | "ignore"): ChildProcess.ChildProcess => {
  const child = ChildProcess.spawn("/bin/sh", ["-c", script, "threadbare-watchdog", ...args], {
    // A session of its own: the terminal's Ctrl-C and hang-up do not reach it, and it outlives
    // the parent's process group.
    detached: true,
    stdio: [input, "ignore", "ignore"]
  })
  // A shell that cannot start only loses the watch; the parent still stops its workers itself.
  child.on("error", () => {})
  return child
}

const grace = String(Math.ceil(killGraceMillis / 100))

/**
 * Starts the watchdog of `worker`, a child of this process: once this process is gone, it
 * stops the worker as {@link stop} does. It does not keep this process alive; kill it
 * (SIGTERM) once the worker has exited.
 */
export const watch = (worker: number): ChildProcess.ChildProcess => {
  const watchdog = shell(["watch", String(worker), grace], "pipe")
  watchdog.unref()
  // Never written to, never closed by us: only our death (or the watchdog's) closes it.
  const pipe = watchdog.stdin as Net.Socket | null
  pipe?.on("error", () => {})
  pipe?.unref()
  return watchdog
}

/**
 * Stops `worker` and every process it started, SIGTERM then SIGKILL after
 * {@link killGraceMillis}; ends once they are gone, at most about `killGraceMillis` + 2 s after.
 */
export const stop = (worker: number): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    const stopper = shell(["stop", String(worker), grace], "ignore")
    const done = () => resume(Effect.void)
    stopper.once("exit", done)
    stopper.once("error", done)
    return Effect.sync(() => {
      stopper.off("exit", done)
      stopper.kill("SIGKILL")
    })
  })
