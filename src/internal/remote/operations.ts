/**
 * Remote commands: `remote`, `remoteSudo`, `remoteFileExists` and `singleCommand`, which
 * `Operations` re-exports. A command is built here by `shell.ts` (quoting, `cd`, variables, sudo,
 * the start marker and guard under sudo) and run in the envelope by the remote transport in use
 * (`RemoteTransport`: over SSH by `run.ts`, or scripted by `Testing.layer`).
 */
import * as Effect from "effect/Effect"
import { randomBytes } from "node:crypto"
import { SettingsError } from "../../Errors.ts"
import { type Patch, Settings } from "../../Settings.ts"
import { checkTimeout, finish } from "../command/command.ts"
import * as Envelope from "../command/envelope.ts"
import { build, type BuiltCommand, fallbackProgram, fallsBackToSh, quote } from "../command/shell.ts"
import * as Events from "../events/event.ts"
import { type HostString, missingHost, parseHostString } from "../settings/hostString.ts"
import { withOptions } from "../settings/options.ts"
import { guard, newMarker, RemoteTransport } from "./run.ts"
import type { RemotePurpose, RemoteRequest } from "./transport.ts"

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

/** An unguessable nonce, for the sudo prompt: output that shows it gets the password written back. */
const nonce = Effect.sync(() => randomBytes(9).toString("hex"))

// -- running --------------------------------------------------------------------------------------

const hostOf = (settings: Settings): Effect.Effect<HostString, SettingsError> =>
  settings.host === undefined
    ? Effect.fail(missingHost())
    : Effect.fromResult(parseHostString(settings.host))

const buildFor = Effect.fnUntraced(function*(command: string | ReadonlyArray<string>, settings: Settings) {
  const prompt = settings.useSudo && settings.sudoPassword !== undefined
    ? `[threadbare ${yield* nonce}] sudo password:`
    : undefined
  const startMarker = prompt === undefined ? undefined : yield* newMarker("start")
  const pidMarker = yield* newMarker("pid")
  const spec = {
    command,
    useShell: settings.useShell,
    shell: settings.shell,
    useSudo: settings.useSudo,
    sudoUser: settings.sudoUser,
    sudoPrompt: prompt,
    cwd: settings.remoteWorkingDir,
    env: settings.env
  }
  // What the user asked for, for messages and `realCommand`.
  const built: BuiltCommand = yield* Effect.fromResult(build(spec))
  // What is sent: under sudo, the start marker and the guard run as the user sudo switched to
  // (who alone may stop the command); without sudo the login shell sets the guard up itself.
  // The login shell's line, which holds the process id marker, is gone once it has `exec`ed
  // sudo: sudo's own command line holds the marker instead, so that a command whose process id
  // never arrived can still be found (by root) and stopped, as without sudo.
  const prelude = [
    ...(startMarker === undefined ? [] : [`echo ${startMarker} >&2`]),
    ...(settings.pty ? [] : [`: ${pidMarker}`, guard("exec", true)])
  ]
  // Without a pty, sudo alone reads the channel (fd 4, see `lineFor`), for its password: the
  // rest of the line (`cd`, and with `useShell: false` whatever follows sudo's command) reads
  // /dev/null like the command itself.
  // On a host without bash, the shell's program is the one the login shell picks (see `lineFor`).
  const fallback = settings.useShell && fallsBackToSh(settings.shell)
  const sudoSent = settings.useSudo && prelude.length > 0
  const sent: BuiltCommand = sudoSent || fallback
    ? yield* Effect.fromResult(build({
      ...spec,
      ...(fallback ? { shellProgram: fallbackProgram } : {}),
      ...(sudoSent ? { sudoPrelude: prelude.join("; ") } : {}),
      ...(sudoSent && !settings.pty ? { sudoInputFd: 4 } : {})
    }))
    : built
  return { built, sent, prompt, startMarker, pidMarker }
})

/** Runs a command under `settings` in the envelope and returns its result, whatever its exit code. */
const execute = Effect.fnUntraced(function*(
  command: string | ReadonlyArray<string>,
  settings: Settings,
  purpose: RemotePurpose = { _tag: "Command" }
) {
  const parsed = yield* hostOf(settings)
  yield* checkTimeout(settings.timeout)
  const { built, pidMarker, prompt, sent, startMarker } = yield* buildFor(command, settings)
  const transport = yield* RemoteTransport
  const request: RemoteRequest = {
    purpose,
    command,
    host: parsed.host,
    user: parsed.user ?? settings.user,
    port: parsed.port,
    built,
    sent,
    prompt,
    startMarker,
    pidMarker,
    settings
  }
  // The transport learns what to mask (a sudo password, once written) only as the command runs.
  let redact: (text: string) => string = (text) => text
  return yield* Envelope.run({
    host: parsed.host,
    verb: settings.useSudo ? "sudo" : "run",
    display: built.display,
    line: built.line,
    settings,
    // Lines are cut and handed on when printed, or when someone watches the run's events.
    printing: !settings.quiet || (yield* Events.CurrentSink) !== undefined,
    keep: !settings.discardOutput,
    redact: (text) => redact(text),
    start: (sink) => transport.start(request, sink, (f) => (redact = f))
  })
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
  const result = yield* execute(`test -e ${quote(path)}`, settings, { _tag: "FileExists", path }).pipe(
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
