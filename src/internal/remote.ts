/**
 * Remote commands over SSH: `remote`, `remoteSudo`, `remoteFileExists` and `singleCommand`.
 * `Operations` re-exports them.
 *
 * A command is built by `shell.ts` (quoting, `cd`, variables, sudo), started on a channel of
 * the shared connection, and its output printed line by line while it runs. The login shell
 * first reports its process id (which OpenSSH makes a process group and session leader) on a
 * line that is stripped from the output; when the command is interrupted or times out, a second,
 * short command on the same connection sends that process group SIGTERM and then SIGKILL, since
 * closing a channel leaves the remote process running.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import { randomBytes } from "node:crypto"
import { TextDecoder } from "node:util"
import { CommandResult } from "../CommandResult.ts"
import { CommandTimeout, ConnectionError, SettingsError } from "../Errors.ts"
import * as Output from "../Output.ts"
import { apply, type Patch, Settings } from "../Settings.ts"
import { type Connection, type RemoteChannel, SshConnections } from "../Ssh.ts"
import { checkTimeout, dryRunResult, finish } from "./command.ts"
import { parseHostString } from "./hostString.ts"
import { LineBuffer } from "./lines.ts"
import { build, type BuiltCommand, quote, splitShell } from "./shell.ts"

/**
 * Per-call overrides of the settings a remote command reads; each wins over the current
 * settings for this call only. `env` is added to the current variables.
 *
 * @since 0.1.0
 */
export type RemoteOptions = Pick<
  Patch,
  | "host"
  | "user"
  | "port"
  | "keyFile"
  | "gateway"
  | "useShell"
  | "shell"
  | "useSudo"
  | "sudoUser"
  | "sudoPassword"
  | "combineStderr"
  | "pty"
  | "timeout"
  | "remoteWorkingDir"
  | "env"
  | "quiet"
  | "discardOutput"
  | "warnOnly"
  | "dryRun"
>

const withOptions = (current: Settings, options: RemoteOptions | undefined): Settings =>
  options === undefined
    ? current
    : apply(
      current,
      options.env === undefined ? options : { ...options, env: { ...current.env, ...options.env } }
    )

const fromResult = <A>(result: Result.Result<A, SettingsError>): Effect.Effect<A, SettingsError> =>
  Result.isSuccess(result) ? Effect.succeed(result.success) : Effect.fail(result.failure)

/** An unguessable nonce, for the sudo prompt: output that shows it gets the password written back. */
const nonce = Effect.sync(() => randomBytes(9).toString("hex"))

// The process id marker need not be secret: only the first one of a command counts, and the
// login shell prints it before the command starts. It must only never occur in real output, so
// one random part per process and a counter do, without the cost of randomness per command.
/** The bash each connection's login shell turned out to be (the same file as this path). */
const loginBash = new WeakMap<Connection, string>()

const pidMarkerBase = `__threadbare_pid_${randomBytes(6).toString("hex")}`
let pidMarkers = 0
const nextPidMarker = (): string => `${pidMarkerBase}${(pidMarkers++).toString(36)}=`

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

interface Run {
  readonly label: string
  readonly pidMarker: string
  readonly prompt: string | undefined
  readonly password: string | undefined
  readonly pty: boolean
  /** Whether output lines are printed (`quiet` is off); otherwise they are only kept. */
  readonly printing: boolean
  readonly channel: RemoteChannel
  readonly out: Stream
  readonly err: Stream
  pid: string | undefined
  /** Whether the login shell is the bash of the `shell` setting (`"1"`), as reported with the pid. */
  loginBash: string | undefined
  prompts: number
}

const makeStream = (pipe: "out" | "err", keep: boolean): Stream => ({
  pipe,
  // ignoreBOM: a U+FEFF that a command prints first is part of its output, not a marker to drop.
  decoder: new TextDecoder("utf-8", { ignoreBOM: true }),
  lines: new LineBuffer(keep),
  pending: "",
  skipNewline: false
})

/** Replaces the sudo password wherever it might show up, should anything ever echo it. */
const mask = (run: Run, text: string): string =>
  run.password === undefined || run.password === "" ? text : text.replaceAll(run.password, "********")

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

/** The markers still looked for on `stream`. */
const markers = (run: Run, stream: Stream): ReadonlyArray<string> => {
  const pid = awaitsPid(run, stream) ? [run.pidMarker] : []
  return run.prompt === undefined ? pid : [...pid, run.prompt]
}

/** How much of the end of `pending` could be the beginning of a marker. */
const holdBack = (run: Run, stream: Stream, pending: string): number => {
  let hold = 0
  if (awaitsPid(run, stream)) {
    const partialPid = pending.indexOf(run.pidMarker)
    if (partialPid !== -1) hold = pending.length - partialPid
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
    const promptAt = run.prompt === undefined ? -1 : pending.indexOf(run.prompt)
    const pidAt = awaitsPid(run, stream) ? pending.indexOf(run.pidMarker) : -1
    const pidEnd = pidAt === -1 ? -1 : pending.indexOf("\n", pidAt)
    if (promptAt !== -1 && (pidEnd === -1 || promptAt < pidAt)) {
      release(stream, pending.slice(0, promptAt), scanned)
      stream.pending = pending.slice(promptAt + (run.prompt?.length ?? 0))
      stream.skipNewline = true
      scanned.prompts++
    } else if (pidEnd !== -1) {
      const report = /^(\d+):(.*)$/.exec(
        pending.slice(pidAt + run.pidMarker.length, pidEnd).replace(/\r$/, "")
      )
      if (report !== null) {
        run.pid = report[1]
        run.loginBash = report[2]
      }
      release(stream, pending.slice(0, pidAt), scanned)
      stream.pending = pending.slice(pidEnd + 1)
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

const print = (run: Run, stream: Stream, lines: ReadonlyArray<string>): Effect.Effect<void> =>
  !run.printing || lines.length === 0
    ? Effect.void
    : Effect.forEach(lines, (line) => Output.printLine(run.label, stream.pipe, mask(run, line)), {
      discard: true
    })

const answerSudo = (run: Run): Effect.Effect<void> => {
  run.prompts++
  if (run.prompts === 1 && run.password !== undefined) {
    // The command gets no input of ours: end it once sudo has its password (see `execute`).
    const answer = run.channel.write(`${run.password}\n`)
    return run.pty ? answer : Effect.andThen(answer, run.channel.endInput)
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

/** Reads the channel until the command ends, printing its lines as they complete. */
const consume = (run: Run, untilPid = false): Effect.Effect<Ending, ConnectionError> =>
  Effect.gen(function*() {
    for (;;) {
      if (untilPid && run.pid !== undefined) return { exitCode: null, signal: null }
      const event = yield* run.channel.take
      if (event._tag === "Closed") {
        yield* flush(run, run.out)
        yield* flush(run, run.err)
        if (event.error !== undefined) return yield* event.error
        return { exitCode: event.exitCode, signal: event.signal }
      }
      const stream = event._tag === "Stdout" ? run.out : run.err
      const { lines, prompts } = scan(run, stream, stream.decoder.decode(event.data, { stream: true }))
      yield* print(run, stream, lines)
      for (let i = 0; i < prompts; i++) yield* answerSudo(run)
    }
  })

// -- stopping a remote command --------------------------------------------------------------------

// The process group of the command, plus every descendant of its leader taken before anything
// is signalled: `sudo` with `use_pty` (and anything calling setsid) moves the command into a
// session of its own, outside the group, and once its parent dies it can no longer be found by
// ancestry. TERM first so the command can clean up, KILL for whatever is left after 3 seconds.
// No `--` before a negative id: dash's kill reads it as a process id.
const killScript = (pgid: string): string =>
  `t=$(ps -e -o pid= -o ppid= 2>/dev/null | awk -v r=${pgid} '{ p[$1] = $2 } END { k[r] = 1; ` +
  `do { g = 0; for (x in p) if (!(x in k) && (p[x] in k)) { k[x] = 1; g = 1 } } while (g); ` +
  `for (x in k) printf "%s ", x }'); ` +
  `kill -TERM -${pgid} $t 2>/dev/null; i=0; while [ $i -lt 30 ]; do sleep 0.1; a=0; ` +
  `kill -0 -${pgid} 2>/dev/null && a=1; for x in $t; do kill -0 $x 2>/dev/null && a=1; done; ` +
  `[ $a = 0 ] && exit 0; i=$((i+1)); done; kill -KILL -${pgid} $t 2>/dev/null; exit 0`

/**
 * Stops the process group of an interrupted or timed-out command. Under sudo the kill runs
 * through sudo as well, since the user cannot signal root's processes. Never fails: it is
 * cleanup, and the channel is closed afterwards in any case.
 */
const stopRemote = (connection: Connection, run: Run, settings: Settings): Effect.Effect<void> =>
  Effect.gen(function*() {
    // Interrupted right after starting: the process id may still be on its way.
    if (run.pid === undefined) {
      yield* consume(run, true).pipe(Effect.timeoutOption(Duration.seconds(2)), Effect.ignore)
    }
    const pid = run.pid
    if (pid === undefined) return
    const built = build({
      command: killScript(pid),
      useShell: true,
      shell: "/bin/sh -c",
      useSudo: settings.useSudo,
      sudoUser: undefined,
      sudoPrompt: settings.useSudo && run.password !== undefined ? "" : undefined,
      cwd: undefined,
      env: {}
    })
    if (Result.isFailure(built)) return
    yield* Effect.scoped(Effect.gen(function*() {
      const killer = yield* connection.exec(built.success.line, { reserved: true })
      if (settings.useSudo && run.password !== undefined) yield* killer.write(`${run.password}\n`)
      yield* killer.endInput
      for (;;) {
        const event = yield* killer.take
        if (event._tag === "Closed") return
      }
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
  run: Run,
  settings: Settings
): Effect.Effect<void> =>
  run.pid === undefined
    ? Effect.void
    : Effect.scoped(Effect.flatMap(reconnect, (connection) => stopRemote(connection, run, settings))).pipe(
      Effect.timeoutOption(Duration.seconds(15)),
      Effect.ignore,
      Effect.withSpan("Operations.remote.stopAfterDrop")
    )

// -- running --------------------------------------------------------------------------------------

const hostLabel = (settings: Settings): Effect.Effect<string, SettingsError> =>
  settings.host === undefined
    ? Effect.fail(
      new SettingsError({
        setting: "host",
        value: "",
        detail: "no host to run on; set it with Settings.settings({ host: \"user@host\" }) or the host option"
      })
    )
    : Effect.map(fromResult(parseHostString(settings.host)), (parsed) => parsed.host)

const buildFor = Effect.fnUntraced(function*(command: string | ReadonlyArray<string>, settings: Settings) {
  const prompt = settings.useSudo && settings.sudoPassword !== undefined
    ? `[threadbare ${yield* nonce}] sudo password:`
    : undefined
  const built: BuiltCommand = yield* fromResult(build({
    command,
    useShell: settings.useShell,
    shell: settings.shell,
    useSudo: settings.useSudo,
    sudoUser: settings.sudoUser,
    sudoPrompt: prompt,
    cwd: settings.remoteWorkingDir,
    env: settings.env
  }))
  return { built, prompt }
})

/** Runs a command under `settings` and returns its result, whatever its exit code. */
const execute = Effect.fnUntraced(function*(
  command: string | ReadonlyArray<string>,
  settings: Settings
) {
  const label = yield* hostLabel(settings)
  yield* checkTimeout(settings.timeout)
  const { built, prompt } = yield* buildFor(command, settings)
  yield* Effect.annotateCurrentSpan({ host: label, command: built.display })
  yield* Output.printRunning(label, settings.useSudo ? "sudo" : "run", built.display)
  if (settings.dryRun) return dryRunResult(label, built.display, built.line)

  const ssh = yield* SshConnections
  const started = yield* Clock.currentTimeMillis
  return yield* Effect.scoped(Effect.gen(function*() {
    const pidMarker = nextPidMarker()
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
    const lineFor = (connection: Connection): string => {
      const inline = built.script !== undefined && shellWords.length === 2 && shellWords[1] === "-c" &&
        loginBash.get(connection) === shellWords[0]
      const command = inline ? built.script : `${settings.useShell ? "exec " : ""}${built.line}`
      // `[` is a builtin in bash and dash alike: the check costs no process.
      return `[ "$BASH" -ef ${
        quote(shellWords[0] ?? "")
      } ] && b=1 || b=0; echo ${pidMarker}$$:$b >&2; ${merge}${command}`
    }
    // A cached connection may turn out dead only when used. The command has not started then,
    // so it is safe to start it once more on a fresh connection. A connection that could not be
    // opened is not tried again here: `connectAttempts` has had its say.
    const start = (first: boolean): Effect.Effect<
      { readonly connection: Connection; readonly channel: RemoteChannel },
      ConnectionError | SettingsError,
      Scope.Scope
    > =>
      Effect.flatMap(
        ssh.connect(settings),
        (connection) =>
          connection.exec(lineFor(connection), { pty: settings.pty }).pipe(
            Effect.map((channel) => ({ connection, channel })),
            Effect.catchIf((error) => first && error.reason === "disconnected", () => start(false))
          )
      )
    const { channel, connection } = yield* start(true)
    const run: Run = {
      label,
      pidMarker,
      prompt,
      password: settings.sudoPassword === undefined ? undefined : Redacted.value(settings.sudoPassword),
      pty: settings.pty,
      printing: !settings.quiet,
      channel,
      out: makeStream("out", !settings.discardOutput),
      err: makeStream("err", !settings.discardOutput),
      pid: undefined,
      loginBash: undefined,
      prompts: 0
    }
    // A command gets no input from us, so it must see end of file rather than wait for input
    // that never comes (`cat`, a prompt). With a sudo password, input ends once sudo has read it;
    // on a pty, end of input would hang up the terminal, so there it stays open.
    if (run.password === undefined && !run.pty) yield* channel.endInput
    const ending = yield* (settings.timeout === undefined
      ? Effect.asSome(consume(run))
      : Effect.timeoutOption(consume(run), settings.timeout)).pipe(
        Effect.onInterrupt(() => stopRemote(connection, run, settings)),
        // sshd hangs up only on a command with a pty: one without runs on after its connection
        // dropped. Stop it over a fresh connection, as an interruption would.
        Effect.tapError(() => stopAfterDrop(ssh.connect({ ...settings, connectAttempts: 1 }), run, settings))
      )
    if (run.loginBash === "1" && shellWords[0] !== undefined) loginBash.set(connection, shellWords[0])
    if (Option.isNone(ending)) {
      yield* stopRemote(connection, run, settings)
      return yield* new CommandTimeout({
        host: label,
        command: built.display,
        timeoutMillis: Duration.toMillis(settings.timeout ?? Duration.zero),
        stdout: mask(run, run.out.lines.text()),
        stderr: mask(run, run.err.lines.text())
      })
    }
    const finished = yield* Clock.currentTimeMillis
    return new CommandResult({
      host: label,
      command: built.display,
      realCommand: built.line,
      exitCode: ending.value.signal !== null ? null : ending.value.exitCode,
      signal: ending.value.signal,
      stdout: mask(run, run.out.lines.text()),
      stderr: mask(run, run.err.lines.text()),
      durationMillis: finished - started
    })
  }))
})

/**
 * Runs a command on the current host over SSH (the original's `run`/`remote`). Prints
 * `[host] run: <command>` first and each output line while it runs, then returns what it did.
 *
 * `command` is shell text run through `shell` (`/bin/bash -l -c`), or an argument list whose
 * words are quoted. Reads the connection settings and `useShell`, `shell`, `useSudo`,
 * `sudoUser`, `sudoPassword`, `combineStderr`, `pty`, `remoteWorkingDir`, `env`, `timeout`,
 * `dryRun`, the output settings and `warnOnly`/`displayAborts`; `options` override them for
 * this call.
 *
 * Fails with `CommandFailed` on a non-zero exit or a signal (unless `warnOnly`),
 * `CommandTimeout` after `timeout` (the remote process group is stopped first),
 * `ConnectionError` when the host cannot be reached or the connection drops, and
 * `SettingsError` for unusable settings. Interrupting it stops the remote process too.
 *
 * @example
 * ```ts
 * const result = yield* Operations.remote("uname -r", { host: "deploy@web-1" })
 * result.stdoutLines[0]
 * ```
 *
 * @since 0.1.0
 */
export const remote = Effect.fn("Operations.remote")(function*(
  command: string | ReadonlyArray<string>,
  options?: RemoteOptions
) {
  const settings = withOptions(yield* Settings, options)
  return yield* Effect.flatMap(execute(command, settings), finish).pipe(
    Effect.provideService(Settings, settings)
  )
})

/**
 * {@link remote} through `sudo` (the original's `sudo`/`remote_sudo`), printed as
 * `[host] sudo: <command>`. As root unless `sudoUser` is set; a `sudoPassword` is answered
 * on sudo's prompt and never shown, otherwise sudo must not need one.
 *
 * @example
 * ```ts
 * yield* Operations.remoteSudo("systemctl restart nginx")
 * yield* Operations.remoteSudo("whoami", { sudoUser: "postgres" })
 * ```
 *
 * @since 0.1.0
 */
export const remoteSudo = Effect.fn("Operations.remoteSudo")(function*(
  command: string | ReadonlyArray<string>,
  options?: RemoteOptions
) {
  const settings = withOptions(yield* Settings, { ...options, useSudo: true })
  return yield* Effect.flatMap(execute(command, settings), finish).pipe(
    Effect.provideService(Settings, settings)
  )
})

/**
 * Whether `path` exists on the current host (`test -e`, the path quoted), with every
 * connection setting and `useSudo` honoured. Prints nothing. A missing path is `false`, never a
 * failure; connection and setting errors still fail.
 *
 * @example
 * ```ts
 * const booted = yield* Operations.remoteFileExists("/var/lib/cloud/instance/boot-finished")
 * ```
 *
 * @since 0.1.0
 */
export const remoteFileExists = Effect.fn("Operations.remoteFileExists")(function*(
  path: string,
  options?: RemoteOptions
) {
  const settings = withOptions(yield* Settings, { ...options, quiet: true, combineStderr: false })
  const result = yield* execute(`test -e ${quote(path)}`, settings).pipe(
    Effect.provideService(Settings, settings)
  )
  return result.exitCode === 0
})

/**
 * Joins commands into one that runs them in order and stops at the first failure (` && `).
 *
 * @example
 * ```ts
 * Operations.remote(Operations.singleCommand(["cd /srv/app", "git pull", "make"]))
 * ```
 *
 * @since 0.1.0
 */
export const singleCommand = (commands: ReadonlyArray<string>): string => commands.join(" && ")
