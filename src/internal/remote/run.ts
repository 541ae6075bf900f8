/**
 * The SSH transport of remote commands: starts a built command on a channel of the shared
 * connection and reads it to its end, for the envelope (`../command/envelope.ts`) that prints
 * and keeps its lines. `operations.ts` builds the commands and holds the operations.
 *
 * The login shell first reports its process id (which OpenSSH makes a process group and session
 * leader) on a line that is stripped from the output; when the command is interrupted or times
 * out, a second, short command on the same connection sends that process group SIGTERM and then
 * SIGKILL, since closing a channel leaves the remote process running. A watcher (`guard`) does the
 * same when the channel goes without either.
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Pull from "effect/Pull"
import * as Redacted from "effect/Redacted"
import * as Ref from "effect/Ref"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { randomBytes } from "node:crypto"
import { TextDecoder } from "node:util"
import { ConnectionError, SettingsError } from "../../Errors.ts"
import { Settings } from "../../Settings.ts"
import { type CommandHandle, type Connection, type OutputChunk, SshConnections } from "../../Ssh.ts"
import type { Sink } from "../command/envelope.ts"
import type { LineBuffer } from "../command/lines.ts"
import { build, fallbackCheck, fallsBackToSh, quote, splitShell } from "../command/shell.ts"
import type { RemoteRequest, RemoteTransportShape } from "./transport.ts"

// A marker need not be secret: only the first one of a command counts, and the login shell
// prints it before the command starts. It must only never occur in real output: 64 random bits
// per command do (about 2.5 µs, nothing beside a command's 3 ms).
export const newMarker = (kind: "pid" | "start"): Effect.Effect<string> =>
  Effect.sync(() => `__threadbare_${kind}_${randomBytes(8).toString("hex")}=`)

// -- output scanning ------------------------------------------------------------------------------

/**
 * One output stream of a command. Text passes through a scanner that removes our own markers
 * (the process id line, the sudo prompt) before it reaches the line buffer, holding back a tail
 * that might be the start of a marker split across chunks.
 */
interface Stream {
  readonly pipe: "out" | "err"
  readonly decoder: TextDecoder
  readonly lines: LineBuffer
  pending: string
  /** After a sudo prompt, the newline sudo prints once it has read the password. */
  skipNewline: boolean
}

/** What stopping a command needs to know of it. */
interface Stoppable {
  readonly pidMarker: string
  /** The process id of its login shell, once it has arrived. */
  readonly pid: string | undefined
  readonly pty: boolean
  readonly password: string | undefined
}

interface Run extends Stoppable {
  readonly prompt: string | undefined
  /**
   * Printed under sudo once it has switched users, before the command starts (when sudo may
   * prompt). Sudo's prompt counts only before it: whatever comes after is the command's output,
   * and a command can print any text, the prompt included (it stands in sudo's command line).
   */
  readonly startMarker: string | undefined
  /** The stream sudo's prompt and the start marker arrive on. */
  readonly authPipe: "out" | "err"
  /** Whether the command has started (the start marker was seen, or there is none to wait for). */
  started: boolean
  /**
   * Whether the password was written (to sudo, on its prompt). Only then is output masked:
   * masking rewrites real output (`deploy-2024` for the password `deploy`), so it is kept for the
   * one case where an echo of the password is conceivable.
   */
  answered: boolean
  /** Where output goes: the envelope prints and keeps it. */
  readonly sink: Sink
  readonly channel: CommandHandle
  /** The channel's output, pulled as the command's lines are wanted. */
  readonly output: Pull.Pull<ReadonlyArray<OutputChunk>>
  readonly out: Stream
  readonly err: Stream
  /** Set once the login shell has reported it. */
  pid: string | undefined
  /** Whether the login shell is the bash of the `shell` setting (`"1"`), as reported with the pid. */
  loginBash: string | undefined
  prompts: number
}

const makeStream = (pipe: "out" | "err", lines: LineBuffer): Stream => ({
  pipe,
  // ignoreBOM: a U+FEFF that a command prints first is part of its output, not a marker to drop.
  decoder: new TextDecoder("utf-8", { ignoreBOM: true }),
  lines,
  pending: "",
  skipNewline: false
})

/** Replaces the sudo password wherever it might show up, should anything ever echo it. */
const mask = (run: Run, text: string): string =>
  !run.answered || run.password === undefined || run.password === "" ?
    text :
    text.replaceAll(run.password, "********")

/** What one chunk of output comes to: lines completed by it, and sudo prompts found in it. */
interface Scanned {
  readonly lines: Array<string>
  prompts: number
}

/** Passes scanned text on to the line buffer, collecting the lines it completes. */
const release = (stream: Stream, text: string, into: Scanned): void => {
  let rest = text
  if (stream.skipNewline && rest !== "") {
    stream.skipNewline = false
    if (rest.startsWith("\r\n")) rest = rest.slice(2)
    else if (rest.startsWith("\n")) rest = rest.slice(1)
  }
  if (rest === "") return
  for (const line of stream.lines.push(rest)) into.lines.push(line)
}

/**
 * Whether `stream` may still carry the process id report: only until it has been seen, and only
 * on standard error, where it is written before anything else (on a pty all is one stream). So a
 * command that prints its own command line (`ps`, `$BASH_EXECUTION_STRING`) is never mistaken
 * for the report.
 */
const awaitsPid = (run: Run, stream: Stream): boolean =>
  run.pid === undefined && (run.pty || stream.pipe === "err")

/** Whether `stream` may still carry sudo's prompt or the start marker. */
const awaitsStart = (run: Run, stream: Stream): boolean => !run.started && stream.pipe === run.authPipe

/** The markers still looked for on `stream`. */
const markers = (run: Run, stream: Stream): ReadonlyArray<string> => {
  const found: Array<string> = awaitsPid(run, stream) ? [run.pidMarker] : []
  if (awaitsStart(run, stream)) {
    if (run.prompt !== undefined) found.push(run.prompt)
    if (run.startMarker !== undefined) found.push(run.startMarker)
  }
  return found
}

/** How much of the end of `pending` could be the beginning of a marker. */
const holdBack = (run: Run, stream: Stream, pending: string): number => {
  let hold = 0
  // A marker line seen whole but not yet its end: keep all of it until the newline comes.
  const lineMarkers = [
    awaitsPid(run, stream) ? run.pidMarker : undefined,
    awaitsStart(run, stream) ? run.startMarker : undefined
  ]
  for (const marker of lineMarkers) {
    const at = marker === undefined ? -1 : pending.indexOf(marker)
    if (at !== -1) hold = Math.max(hold, pending.length - at)
  }
  for (const marker of markers(run, stream)) {
    for (let k = Math.min(marker.length - 1, pending.length); k > hold; k--) {
      if (pending.endsWith(marker.slice(0, k))) {
        hold = k
        break
      }
    }
  }
  return hold
}

/**
 * Scans a chunk of output, synchronously: the common chunk holds neither marker, and a
 * command that prints a lot should not pay for an effect per line when nothing is printed.
 */
const scan = (run: Run, stream: Stream, text: string): Scanned => {
  const scanned: Scanned = { lines: [], prompts: 0 }
  stream.pending += text
  for (;;) {
    const pending = stream.pending
    const auth = awaitsStart(run, stream)
    const promptAt = auth && run.prompt !== undefined ? pending.indexOf(run.prompt) : -1
    const startAt = auth && run.startMarker !== undefined ? pending.indexOf(run.startMarker) : -1
    const startEnd = startAt === -1 ? -1 : pending.indexOf("\n", startAt)
    const pidAt = awaitsPid(run, stream) ? pending.indexOf(run.pidMarker) : -1
    const pidEnd = pidAt === -1 ? -1 : pending.indexOf("\n", pidAt)
    if (pidEnd !== -1 && (promptAt === -1 || pidAt < promptAt) && (startAt === -1 || pidAt < startAt)) {
      const report = /^(\d+):(.*)$/.exec(
        pending.slice(pidAt + run.pidMarker.length, pidEnd).replace(/\r$/, "")
      )
      if (report !== null) {
        run.pid = report[1]
        run.loginBash = report[2]
      }
      release(stream, pending.slice(0, pidAt), scanned)
      stream.pending = pending.slice(pidEnd + 1)
    } else if (promptAt !== -1 && (startAt === -1 || promptAt < startAt)) {
      release(stream, pending.slice(0, promptAt), scanned)
      stream.pending = pending.slice(promptAt + (run.prompt?.length ?? 0))
      stream.skipNewline = true
      scanned.prompts++
    } else if (startEnd !== -1) {
      // The command runs now: from here on, nothing it prints is taken for sudo's prompt.
      run.started = true
      release(stream, pending.slice(0, startAt), scanned)
      stream.pending = pending.slice(startEnd + 1)
    } else {
      break
    }
  }
  const hold = holdBack(run, stream, stream.pending)
  if (hold === 0) {
    release(stream, stream.pending, scanned)
    stream.pending = ""
  } else {
    const ready = stream.pending.slice(0, stream.pending.length - hold)
    stream.pending = stream.pending.slice(stream.pending.length - hold)
    release(stream, ready, scanned)
  }
  return scanned
}

// The envelope masks printed lines (see `mask`) and prints them unless `quiet`.
const print = (run: Run, stream: Stream, lines: ReadonlyArray<string>): Effect.Effect<void> =>
  run.sink.print(stream.pipe, lines)

const answerSudo = (run: Run): Effect.Effect<void> => {
  run.prompts++
  if (run.prompts === 1 && run.password !== undefined) {
    // Only sudo reads it: the command's own input is /dev/null (see `guard`), and the channel's
    // input stays open for the guard to watch.
    run.answered = true
    return run.channel.write(`${run.password}\n`)
  }
  // sudo asks again after a wrong password: end its input so it gives up instead of waiting.
  return Effect.andThen(run.pty ? run.channel.write("\x04") : Effect.void, run.channel.endInput)
}

const flush = (run: Run, stream: Stream): Effect.Effect<void> => {
  const scanned: Scanned = { lines: [], prompts: 0 }
  release(stream, stream.pending + stream.decoder.decode(), scanned)
  stream.pending = ""
  for (const line of stream.lines.end()) scanned.lines.push(line)
  return print(run, stream, scanned.lines)
}

interface Ending {
  readonly exitCode: number | null
  readonly signal: string | null
}

const ended = Effect.succeed(undefined)

/**
 * Reads the channel until the command ends, printing its lines as they complete. Nothing is
 * pulled while a line is printed, so a slow printer slows the command rather than filling memory.
 */
const consume = (run: Run, untilPid = false): Effect.Effect<Ending, ConnectionError> =>
  Effect.gen(function*() {
    for (;;) {
      if (untilPid && run.pid !== undefined) return { exitCode: null, signal: null }
      const chunks = yield* Pull.catchDone(run.output, () => ended)
      if (chunks === undefined) {
        yield* flush(run, run.out)
        yield* flush(run, run.err)
        return yield* run.channel.exit
      }
      for (const chunk of chunks) {
        const stream = chunk._tag === "Stdout" ? run.out : run.err
        const { lines, prompts } = scan(run, stream, stream.decoder.decode(chunk.data, { stream: true }))
        yield* print(run, stream, lines)
        for (let i = 0; i < prompts; i++) yield* answerSudo(run)
      }
    }
  })

// -- stopping a remote command --------------------------------------------------------------------

/**
 * Shell text that stops the processes of group `group` and every descendant of `root`, all but
 * `me`: TERM first so they can clean up, KILL for whatever is left after 3 seconds. Descendants
 * are taken before anything is signalled: `sudo` with `use_pty` (and anything calling setsid)
 * moves the command into a session of its own, outside the group, and once its parent dies it
 * can no longer be found by ancestry. A zombie counts as gone: it has ended, and an init that
 * reaps late (as in some containers) must not hold the stop up. No `--` before a negative id:
 * dash's kill reads it as a process id.
 */
const stopProcesses = (root: string, group: string, me: string): string =>
  `t=$(ps -e -o pid= -o ppid= -o pgid= -o stat= 2>/dev/null | awk -v r="${root}" -v g="${group}" -v me="${me}" ` +
  `'$1 != me && $4 !~ /^Z/ { p[$1] = $2; if ($3 == g) k[$1] = 1 } END { k[r] = 1; ` +
  `do { c = 0; for (x in p) if (!(x in k) && (p[x] in k)) { k[x] = 1; c = 1 } } while (c); ` +
  `for (x in k) printf "%s ", x }'); ` +
  `kill -TERM $t 2>/dev/null; kill -TERM -${group} 2>/dev/null; i=0; while [ $i -lt 30 ]; do sleep 0.1; ` +
  `ps -e -o pid= -o stat= 2>/dev/null | awk -v t=" $t " 'index(t, " " $1 " ") && $2 !~ /^Z/ { f = 1 } ` +
  `END { exit !f }' || exit 0; i=$((i+1)); done; kill -KILL $t 2>/dev/null; kill -KILL -${group} 2>/dev/null; exit 0`

/** Stops the command whose login shell, its process group leader, is `pgid`. */
const killScript = (pgid: string): string => stopProcesses(pgid, pgid, "0")

/**
 * Stops the command whose process id never reached us (its connection dropped first), found by
 * the marker of its line: the watcher, forked from the login shell, keeps that line as its own
 * arguments, in the command's process group; under sudo, sudo (the login shell once it `exec`ed)
 * and the watcher inside it carry it in sudo's command line. The marker is written here in two
 * halves, so that no process of this script (nor the login shell and sudo that run it) carries
 * it whole: whatever the process groups of those, only the command's own processes match.
 */
export const killMarkedScript = (marker: string, sharedGroup = false): string => {
  const half = marker.length >> 1
  const find = (print: string) =>
    `ps -e -o pid= -o ppid= -o pgid= -o args= 2>/dev/null | awk -v a='${marker.slice(0, half)}' -v b='${
      marker.slice(half)
    }' 'index($0, a b) { ${print}; exit }'`
  // Dropbear starts every command of a connection in the group of its process for that
  // connection: there the group is left alone, and the command's shell is the marked process
  // itself when the connection's process is its parent (the shell before its `exec`, or sudo),
  // else the marked process's parent (the watcher's, the shell that `exec`ed the command).
  if (sharedGroup) {
    return `r=$(${find("print ($2 == $3 ? $1 : $2)")}); [ -n "$r" ] || exit 0; ` +
      stopProcesses("$r", "", "0")
  }
  return `g=$(${find("print $3")}); [ -n "$g" ] || exit 0; ` + stopProcesses("$g", "$g", "0")
}

// What keeps a command from outliving its channel. sshd leaves a command without a pty running
// when its session goes away (the controller killed, the network cut), so the command never
// reads the channel: its input is /dev/null, and a watcher in the background holds the channel's
// input instead. The library never ends that input, so the watcher reads end of file only once
// the channel has closed; if the command (this shell's process id, which it `exec`s into) is
// still running then, its controller is gone, and the watcher stops the command's process group
// and every descendant, sparing only itself (it ignores the TERM it sends its own group). A
// command that has ended leaves what it started in the background alone. The watcher finds its
// own process id without bash's BASHPID: the parent of a `sh` it starts, and the group from the
// whole table, since busybox's `ps` (Alpine's) knows no `-p`. The group counts only when it is
// the command's own, led by the shell or (under sudo) by sudo: Dropbear starts every command of a
// connection in the group of its own process for that connection, and stopping that group would
// stop whatever other commands of the connection left running in the background.
const watcher = (underSudo: boolean) =>
  `while read -r _; do :; done; kill -0 $$ 2>/dev/null || exit 0; trap '' TERM; ` +
  `me=$(exec sh -c 'echo $PPID'); ` +
  `g=$(ps -e -o pid= -o ppid= -o pgid= 2>/dev/null | awk -v p=$$ '$1 == p && ($3 == p${
    underSudo ? " || $3 == $2" : ""
  }) { print $3 }'); ` +
  stopProcesses("$$", "$g", "$me")

/**
 * Shell text that starts the watcher (with the channel's input) and leaves the shell's own input
 * at /dev/null, for the command that follows. An explicit redirection: a background job's input
 * would otherwise be /dev/null too. The watcher must be no job of the shell that runs the command
 * (`a & b & wait`, `kill $(jobs -p)` must never wait for it or stop it):
 * - `exec`: the shell `exec`s the command next; a new program knows no jobs of the old one;
 * - `shared`: the command runs in this very shell: the watcher is started from a subshell that
 *   exits at once (a fork more, about 0.2 ms; bash's `disown` costs as much).
 */
export const guard = (where: "exec" | "shared", underSudo = false): string => {
  const start = `(${watcher(underSudo)}) <&3 >/dev/null 2>&1 &`
  const started = where === "shared" ? `( ${start} );` : start
  return `exec 3<&0 </dev/null; ${started} exec 3<&-`
}

/**
 * Stops the process group of an interrupted or timed-out command. Under sudo the kill runs
 * through sudo as well, since the user cannot signal root's processes. Never fails: it is
 * cleanup, and the channel is closed afterwards in any case.
 */
const stopRemote = (
  connection: Connection,
  command: Stoppable,
  settings: Settings,
  awaitPid: Effect.Effect<void> = Effect.void
): Effect.Effect<void> =>
  Effect.flatMap(
    // On a server that stopped answering, the kill's channel may never open, and an open given up
    // still waits for a late answer before its slot is free. The caller waits for the kill only
    // so long; the kill goes on in the background within its own bound, and the command's guard
    // stops the command in any case once its channel closes.
    Effect.forkDetach(kill(connection, command, settings, awaitPid)),
    (fiber) => Fiber.await(fiber).pipe(Effect.timeoutOption(stopWait), Effect.asVoid)
  )

// How long an interruption waits for the kill of its command (see `stopRemote`).
const stopWait = Duration.seconds(5)

/** Interrupted right after starting: the process id may still be on its way (bounded). */
const awaitPid = (run: Run): Effect.Effect<void> =>
  Effect.suspend(() =>
    run.pid === undefined
      ? consume(run, true).pipe(Effect.timeoutOption(Duration.seconds(2)), Effect.ignore)
      : Effect.void
  )

/**
 * Whether a command can be stopped: by its process id, or else by its marker, which shows in the
 * process table where our watcher runs: without a pty (in the login shell, or inside sudo). On a
 * pty the command is left to sshd's hang-up, once the server sees its connection gone.
 */
const canStop = (command: Stoppable): boolean => command.pid !== undefined || !command.pty

const kill = (
  connection: Connection,
  command: Stoppable,
  settings: Settings,
  before: Effect.Effect<void>
): Effect.Effect<void> =>
  Effect.gen(function*() {
    yield* before
    const pid = command.pid
    if (!canStop(command)) return
    const built = build({
      command: pid === undefined
        ? killMarkedScript(command.pidMarker, /^dropbear/i.test(connection.serverSoftware ?? ""))
        : killScript(pid),
      useShell: true,
      shell: "/bin/sh -c",
      useSudo: settings.useSudo,
      sudoUser: undefined,
      sudoPrompt: settings.useSudo && command.password !== undefined ? "" : undefined,
      cwd: undefined,
      env: {}
    })
    if (Result.isFailure(built)) return
    yield* Effect.scoped(Effect.gen(function*() {
      const killer = yield* connection.exec(built.success.line, { reserved: true })
      if (settings.useSudo && command.password !== undefined) yield* killer.write(`${command.password}\n`)
      yield* killer.endInput
      yield* Stream.runDrain(killer.output)
      yield* Effect.ignore(killer.exit)
    }))
  }).pipe(
    Effect.timeoutOption(Duration.seconds(15)),
    Effect.ignore,
    Effect.withSpan("Operations.remote.stop")
  )

/**
 * Stops a command whose connection dropped while it ran, over a fresh connection. Best effort
 * and bounded: the host may be unreachable, and the command's outcome is already decided.
 */
const stopAfterDrop = (
  reconnect: Effect.Effect<Connection, ConnectionError | SettingsError, Scope.Scope>,
  command: Stoppable,
  settings: Settings
): Effect.Effect<void> =>
  !canStop(command)
    ? Effect.void
    : Effect.scoped(Effect.flatMap(reconnect, (connection) => stopRemote(connection, command, settings)))
      .pipe(
        Effect.timeoutOption(Duration.seconds(15)),
        Effect.ignore,
        Effect.withSpan("Operations.remote.stopAfterDrop")
      )

/** Runs a command over SSH: starts it on a channel of the shared connection and reads it to its end. */
const runOverSsh = Effect.fnUntraced(function*(
  request: RemoteRequest,
  sink: Sink,
  setRedact: (redact: (text: string) => string) => void
) {
  const { pidMarker, prompt, sent, settings, startMarker } = request
  const ssh = yield* SshConnections
  // `exec` keeps the login shell's process id for the command itself, so that a signal that
  // kills the command is reported as such; without our shell the line may be a list (`cd && ...`).
  // Without a pty, streams are merged on the server with `2>&1`: a pty costs a round trip per
  // command and tens of milliseconds on a connection's first one.
  const merge = settings.combineStderr && !settings.pty ? "exec 2>&1; " : ""
  // The login shell reports its pid and whether it is the bash of `shell`. A command meant for that
  // very bash (`shell: "/bin/bash -c"`, no sudo) then runs in it directly on later commands of
  // the connection, sparing the start of a second bash (about 1 ms a command). Bash runs the
  // last command of `-c` in place of itself, as the `exec` of our second shell would.
  const shellWords = splitShell(settings.shell)
  // Under sudo the guard runs inside sudo (see `buildFor`), and the login shell keeps the
  // channel on fd 4 for sudo alone; on a pty sshd hangs the command up itself when the channel
  // goes, and the terminal stays its input.
  const lineFor = (connection: Connection): string => {
    const inline = sent.script !== undefined && shellWords.length === 2 && shellWords[1] === "-c" &&
      Ref.getUnsafe(connection.loginBash) === shellWords[0]
    const command = inline
      ? sent.script
      : `${settings.useShell && fallsBackToSh(settings.shell) ? fallbackCheck : ""}${
        settings.useShell ? "exec " : ""
      }${sent.line}`
    const loginGuard = settings.pty
      ? ""
      : settings.useSudo
      ? "exec 4<&0 </dev/null; "
      : `${guard(settings.useShell && !inline ? "exec" : "shared")}; `
    // `[` is a builtin in bash and dash alike: the check costs no process.
    return `[ "$BASH" -ef ${
      quote(shellWords[0] ?? "")
    } ] && tb_b=1 || tb_b=0; echo ${pidMarker}$$:$tb_b >&2; unset tb_b; ${loginGuard}${merge}${command}`
  }
  // A cached connection may turn out dead only when used. When it was found dead before the
  // command was asked for, it is safe to start it once more on a fresh connection; once asked
  // for, the server may have started it even though its channel's answer never came, and a
  // second start would run it twice. A connection that could not be opened is not tried again
  // here: `connectAttempts` has had its say.
  let asked = false
  const start = (first: boolean): Effect.Effect<
    { readonly connection: Connection; readonly channel: CommandHandle },
    ConnectionError | SettingsError,
    Scope.Scope
  > =>
    Effect.flatMap(ssh.connect(settings), (connection) => {
      asked = false
      return connection.exec(lineFor(connection), { pty: settings.pty, onSent: () => void (asked = true) })
        .pipe(
          Effect.map((channel) => ({ connection, channel })),
          Effect.catchIf((error) => first && !asked && error.reason === "disconnected", () => start(false))
        )
    })
  const password = settings.sudoPassword === undefined ? undefined : Redacted.value(settings.sudoPassword)
  // The link may die after the server started the command and before its channel was confirmed:
  // the command runs on, so it is stopped as one whose connection dropped.
  const { channel, connection } = yield* start(true).pipe(
    Effect.tapError((error) =>
      asked && error._tag === "ConnectionError" && error.reason !== "channel-refused"
        ? stopAfterDrop(
          ssh.connect({ ...settings, connectAttempts: 1 }),
          { pidMarker, pid: undefined, pty: settings.pty, password },
          settings
        )
        : Effect.void
    )
  )
  const run: Run = {
    pidMarker,
    prompt,
    startMarker,
    authPipe: settings.pty || settings.combineStderr ? "out" : "err",
    started: startMarker === undefined,
    answered: false,
    password,
    pty: settings.pty,
    sink,
    channel,
    output: yield* Stream.toPull(channel.output),
    out: makeStream("out", sink.out),
    err: makeStream("err", sink.err),
    pid: undefined,
    loginBash: undefined,
    prompts: 0
  }
  setRedact((text) => mask(run, text))
  // A command gets no input from us and sees end of file at once (`cat`, a prompt): its input
  // is /dev/null, whatever sudo does. The channel's own input stays open, for sudo's password
  // and then for the guard, which takes its end for the controller's. On a pty the terminal
  // is the command's input and stays open: end of input there would hang it up. A time limit
  // interrupts this, as the caller may: either way the remote process group is stopped.
  return consume(run).pipe(
    Effect.onInterrupt(() => stopRemote(connection, run, settings, awaitPid(run))),
    // sshd hangs up only on a command with a pty: one without runs on after its connection
    // dropped. Stop it over a fresh connection, as an interruption would.
    Effect.tapError(() => stopAfterDrop(ssh.connect({ ...settings, connectAttempts: 1 }), run, settings)),
    Effect.tap(() =>
      run.loginBash === "1" && shellWords[0] !== undefined
        ? Ref.set(connection.loginBash, shellWords[0])
        : Effect.void
    )
  )
})

/**
 * The remote transport in use. Its default runs commands over SSH; `Testing.layer` puts a
 * scripted one in its place.
 */
export const RemoteTransport: Context.Reference<RemoteTransportShape> = Context.Reference<
  RemoteTransportShape
>(
  "effect-threadbare/internal/remote/RemoteTransport",
  { defaultValue: () => ({ start: runOverSsh }) }
)
