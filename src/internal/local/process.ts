/**
 * `local`: runs a command on this machine through `effect/process`.
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as FileSystem from "effect/FileSystem"
import type * as PlatformError from "effect/PlatformError"
import * as ChildProcess from "effect/process/ChildProcess"
import { ChildProcessSpawner } from "effect/process/ChildProcessSpawner"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { SettingsError } from "../../Errors.ts"
import { requireDirectory, Settings } from "../../Settings.ts"
import { checkTimeout, finish } from "../command/command.ts"
import * as Envelope from "../command/envelope.ts"
import * as Shell from "../command/shell.ts"
import { withOptions } from "../settings/options.ts"
import * as ProcessTree from "./processTree.ts"

/**
 * Options of `local`. Each one overrides the setting of the same name for this call only.
 *
 * @since 0.1.0
 */
export interface LocalOptions {
  /** Keep the output in the result instead of letting the command use the terminal. */
  readonly capture?: boolean | undefined
  /**
   * Print output live, line by line, as `[localhost] out: <line>` (and `err:`), while the
   * command runs. Works with or without `capture`. Default: `false`.
   */
  readonly stream?: boolean | undefined
  /** Run through `localShell` (`/bin/sh -c`); `false` needs an argument list. */
  readonly useShell?: boolean | undefined
  /** The shell command line, ending in `-c`. */
  readonly localShell?: string | undefined
  /**
   * The shell command line, ending in `-c`.
   * @deprecated Use `localShell`, the name of the setting it overrides.
   */
  readonly shell?: string | undefined
  /** Run through `sudo -n` (non-interactive: fails rather than asks for a password). */
  readonly useSudo?: boolean | undefined
  /** With `useSudo`, the user to become. */
  readonly sudoUser?: string | undefined
  /**
   * Merge standard error into standard output: one pipe for both, so lines keep the order the
   * command wrote them in.
   */
  readonly combineStderr?: boolean | undefined
  /** Stop the command (and everything it started) after this long, failing with `CommandTimeout`. */
  readonly timeout?: Duration.Input | undefined
  /** The working directory; relative to the current `lcd`. */
  readonly localWorkingDir?: string | undefined
  /**
   * The working directory; relative to the current `lcd`.
   * @deprecated Use `localWorkingDir`, the name of the setting it overrides.
   */
  readonly cwd?: string | undefined
  /** More variables for this command. */
  readonly env?: Readonly<Record<string, string>> | undefined
  /** Print nothing; without capture, the command's own output goes to `/dev/null`. */
  readonly quiet?: boolean | undefined
  /** Return a failed result instead of failing with `CommandFailed`. */
  readonly warnOnly?: boolean | undefined
}

/** The host name shown for local commands. */
export const localHost = "localhost"

// With `combineStderr`: `/bin/sh -c <script> sh <argv...>` runs argv with its fd 2 on its fd 1.
// The shell's own fd 2 stays a pipe of its own, for one line only: a program that cannot be
// found (the shell would otherwise print that into the combined output, as output).
const combinedShell = "/bin/sh"
const combinedScript = "command -v -- \"$1\" >/dev/null 2>&1 || { printf '%s\\n' \"$1\" >&2; exit 127; }; " +
  "exec \"$@\" 2>&1"

const signalOf = (error: PlatformError.PlatformError): string | undefined => {
  let current: unknown = error
  for (let depth = 0; depth < 5 && current !== undefined && current !== null; depth++) {
    const text = String((current as { message?: unknown }).message ?? current)
    const match = /receipt of signal: '(SIG[A-Z0-9]+)'/.exec(text)
    if (match !== null) return match[1]
    current = (current as { cause?: unknown }).cause
  }
  return undefined
}

const notFoundDetail = "program not found (check the name and PATH)"

const spawnFailure = (error: PlatformError.PlatformError): { code: number; detail: string } | undefined => {
  const text = String(error.message)
  if (error.reason._tag === "NotFound" || text.includes("ENOENT")) {
    return { code: 127, detail: notFoundDetail }
  }
  if (error.reason._tag === "PermissionDenied" || text.includes("EACCES")) {
    return { code: 126, detail: "permission denied (is the program executable?)" }
  }
  return undefined
}

// `shell` and `cwd` are older names of `localShell` and `localWorkingDir`; `shell` must never
// reach the setting of that name, which is the remote shell.
const asSettings = (options: LocalOptions): object => {
  const { cwd, shell, ...rest } = options
  return {
    ...rest,
    ...(shell !== undefined && rest.localShell === undefined ? { localShell: shell } : {}),
    ...(cwd !== undefined && rest.localWorkingDir === undefined ? { localWorkingDir: cwd } : {})
  }
}

/**
 * Runs a command on this machine and returns its {@link CommandResult}.
 *
 * - A string is shell text, run by `localShell` (`/bin/sh -c`); an argument list runs
 *   without a shell (`useShell: false`) or is quoted into the shell's command line.
 * - Without `capture`, the command shares the terminal, so interactive programs (an editor,
 *   `ssh`, a password prompt) work; its output is then not in the result.
 * - With `capture`, output is kept (`stdout`, `stderr`, or both in `stdout` with
 *   `combineStderr`); with `stream` it is also printed live, line by line.
 *
 * Reads the settings `localWorkingDir` (`lcd`), `env`, `useShell`, `localShell`, `useSudo`,
 * `sudoUser`, `combineStderr`, `capture`, `timeout`, `quiet`, `displayRunning`,
 * `discardOutput`, `dryRun`, `warnOnly`, `displayAborts`.
 *
 * Fails with `CommandFailed` on a non-zero exit or a signal, `CommandTimeout` when `timeout`
 * runs out (the process and its children are killed first), and `SettingsError` for an
 * unusable option. Interrupting it kills the process and its children.
 *
 * @example
 * ```ts
 * const head = yield* Operations.local("git rev-parse HEAD", { capture: true })
 * yield* Operations.local(["tar", "-czf", archive, "."], { useShell: false }).pipe(Settings.lcd("build"))
 * ```
 *
 * @since 0.1.0
 */
export const local = Effect.fn("Operations.local")(function*(
  command: string | ReadonlyArray<string>,
  options: LocalOptions = {}
) {
  const current = withOptions(yield* Settings, asSettings(options))
  const run = runLocal(command, current, options)
  return yield* Effect.updateService(run, Settings, () => current)
})

const runLocal = Effect.fnUntraced(function*(
  command: string | ReadonlyArray<string>,
  current: Settings,
  options: LocalOptions
) {
  yield* checkTimeout(current.timeout)
  if (!current.useShell && typeof command === "string") {
    return yield* new SettingsError({
      setting: "useShell",
      value: command,
      detail: "without a shell, give the command as an argument list, e.g. [\"ls\", \"-l\", dir]"
    })
  }
  const transport = yield* LocalTransport
  const cwd = current.localWorkingDir
  // Checked before anything is printed: a missing directory would fail the spawn with ENOENT
  // (read as a missing program) and a file with ENOTDIR. The error names the option as given.
  if (cwd !== undefined) {
    yield* transport.checkDirectory(
      cwd,
      options.cwd !== undefined && options.localWorkingDir === undefined ? "cwd" : "localWorkingDir"
    )
  }
  const env = current.env
  const built = Shell.build({
    command,
    useShell: current.useShell,
    shell: current.localShell,
    useSudo: current.useSudo,
    sudoUser: current.sudoUser,
    // Locally sudo never asks: with a terminal a prompt would block a deploy, without one it cannot be answered.
    sudoPrompt: undefined,
    cwd: undefined,
    env
  })
  if (Result.isFailure(built)) return yield* built.failure
  const { argv, display, line } = built.success
  const stream = options.stream === true && !current.quiet
  const piped = current.capture || stream
  const request: LocalRequest = {
    command,
    display,
    line,
    argv,
    cwd,
    env,
    useShell: current.useShell,
    useSudo: current.useSudo,
    sudoUser: current.sudoUser,
    piped,
    combineStderr: piped && current.combineStderr,
    quiet: current.quiet
  }
  const result = yield* Envelope.run({
    host: localHost,
    verb: "local",
    display,
    line,
    settings: current,
    printing: stream,
    keep: current.capture && !current.discardOutput,
    // The whole run is under the time limit, the spawn included.
    start: (sink) => Effect.succeed(transport.start(request, sink))
  })
  return yield* finish(result)
})

/**
 * A local command as the envelope hands it to the transport: the command as given and as
 * built, where and how it runs.
 */
export interface LocalRequest {
  /** The command as the caller gave it. */
  readonly command: string | ReadonlyArray<string>
  readonly display: string
  readonly line: string
  /** The program and its arguments, shell and sudo included. */
  readonly argv: ReadonlyArray<string>
  readonly cwd: string | undefined
  readonly env: Readonly<Record<string, string>>
  readonly useShell: boolean
  readonly useSudo: boolean
  readonly sudoUser: string | undefined
  /** Whether output comes back through pipes (`capture` or `stream`); otherwise it is the terminal's. */
  readonly piped: boolean
  /** With `piped`: standard error merged into standard output, in one pipe. */
  readonly combineStderr: boolean
  readonly quiet: boolean
}

/**
 * How local commands run: checking a working directory, and starting a command. The default
 * spawns real processes; `Testing.layer` replaces it so that no process is started.
 */
export interface LocalTransportShape {
  readonly checkDirectory: (
    dir: string,
    setting: string
  ) => Effect.Effect<void, SettingsError, FileSystem.FileSystem>
  readonly start: (request: LocalRequest, sink: Envelope.Sink) => Effect.Effect<
    Envelope.Ending,
    never,
    ChildProcessSpawner | Scope.Scope
  >
}

/** Starts a local process and reports how it ended. */
const spawnLocal = Effect.fnUntraced(function*(request: LocalRequest, sink: Envelope.Sink) {
  const { argv, combineStderr: combined, cwd, piped } = request
  const program = argv[0]!
  // Combined output is one pipe for fd 1 and fd 2, so the kernel keeps the order in which the
  // command wrote them; two pipes read separately cannot. The spawner only makes a pipe per
  // stream, so a POSIX shell in front points fd 2 at fd 1 and `exec`s the command in its
  // place (same pid and process group; a missing program exits 127, as a failed spawn does).
  const [file, ...fileArgs] = combined ? [combinedShell, "-c", combinedScript, "sh", ...argv] : argv as [
    string,
    ...Array<string>
  ]
  // Uncaptured output goes to the terminal, unless `quiet` (`Settings.hide`): then nowhere, as
  // the original sent it to /dev/null.
  const unpiped = request.quiet ? "ignore" : "inherit"
  const spawned = ChildProcess.make(file, fileArgs, {
    ...(cwd === undefined ? {} : { cwd }),
    // A command of its own process group can be stopped with everything it started. The one
    // exception: a command that shares our terminal must stay in our group, or reading from the
    // terminal would stop it (SIGTTIN); on timeout only it, not its children, is then killed.
    detached: piped || process.stdin.isTTY !== true,
    stdin: piped ? "ignore" : "inherit",
    stdout: piped ? "pipe" : unpiped,
    stderr: piped ? "pipe" : unpiped,
    killSignal: "SIGTERM",
    forceKillAfter: Duration.seconds(2)
  })
  // Set by the combined-output shell when it cannot find the program.
  let notFound = false
  const spawner = yield* ChildProcessSpawner
  const ending = yield* Effect.gen(function*() {
    const handle = yield* spawner.spawn(spawned)
    // Interrupted (a timeout, the caller) while it runs: what the command started in groups or
    // sessions of its own (`setsid`, a daemonising tool) is out of reach of the group kill that
    // follows, so the whole tree is taken and stopped first, while it still hangs together.
    // A command that ended by itself leaves what it started in the background alone.
    yield* Effect.addFinalizer(() =>
      Effect.flatMap(
        Effect.orElseSucceed(handle.isRunning, () => false),
        (running) => running ? ProcessTree.stop(handle.pid) : Effect.void
      )
    )
    if (piped) {
      const each =
        (source: Stream.Stream<Uint8Array, PlatformError.PlatformError>) =>
        (f: (chunk: Uint8Array) => Effect.Effect<void>) => Stream.runForEach(source, f)
      yield* Effect.all(
        combined
          ? [
            Envelope.pump(sink, "out", each(handle.stdout)),
            Stream.runForEach(handle.stderr, () => Effect.sync(() => (notFound = true)))
          ]
          : [
            Envelope.pump(sink, "out", each(handle.stdout)),
            Envelope.pump(sink, "err", each(handle.stderr))
          ],
        { concurrency: "unbounded", discard: true }
      )
    }
    return yield* handle.exitCode.pipe(
      Effect.map((code): Envelope.Ending => ({ exitCode: code, signal: null })),
      Effect.catch((error: PlatformError.PlatformError) => {
        const signal = signalOf(error)
        return signal === undefined ? Effect.fail(error) : Effect.succeed({ exitCode: null, signal })
      })
    )
  }).pipe(
    Effect.catch((error: PlatformError.PlatformError) => {
      const failure = spawnFailure(error)
      if (failure === undefined) return Effect.die(error)
      return Effect.succeed<Envelope.Ending>({
        exitCode: failure.code,
        signal: null,
        note: `${program}: ${failure.detail}\n`
      })
    })
  )
  return notFound ? { ...ending, note: `${program}: ${notFoundDetail}\n` } : ending
})

/**
 * The local transport in use. Its default runs real processes.
 */
export const LocalTransport: Context.Reference<LocalTransportShape> = Context.Reference<LocalTransportShape>(
  "effect-threadbare/internal/local/LocalTransport",
  { defaultValue: () => ({ checkDirectory: requireDirectory, start: spawnLocal }) }
)
