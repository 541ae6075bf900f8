/**
 * Unit tests for deploy programs: run a program without any server or local process, with
 * every command it would run and every file it would move recorded, and answered from a
 * script (Fabric's `fabric.testing`, as a Layer).
 *
 * Under {@link layer}, `Operations.local`, `remote`, `remoteSudo`, `remoteFileExists` and the
 * transfers never reach a process or a host: commands are matched against the script's answers
 * (exit code, stdout, stderr), `remoteFileExists` and downloads are answered from its files, and
 * the SSH service refuses to connect. Everything else is as in a real run: settings, options,
 * `warnOnly`, `dryRun`, timeouts, the printed lines and `CommandFailed` with its message. So a
 * test runs in milliseconds and asserts what the program did with {@link recorded}.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Operations, Settings, Testing } from "effect-threadbare"
 *
 * const deploy = Effect.gen(function*() {
 *   const head = yield* Operations.local("git rev-parse HEAD", { capture: true })
 *   yield* Operations.remote(`git checkout ${head.stdoutLines[0]}`).pipe(Settings.rcd("/srv/app"))
 * }).pipe(Settings.settings({ host: "deploy@web-1" }))
 *
 * const ran = Effect.gen(function*() {
 *   yield* deploy
 *   return yield* Testing.commands
 * }).pipe(Effect.provide(Testing.layer({ commands: [{ command: "git rev-parse HEAD", stdout: "abc123\n" }, { command: /^git checkout/ }] })))
 * ```
 *
 * @since 0.1.0
 * @module
 */
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import * as Script from "./internal/testing/script.ts"
import type { SshConnections } from "./Ssh.ts"

export type {
  /** @since 0.1.0 */
  Answer,
  /** @since 0.1.0 */
  Recorded,
  /** @since 0.1.0 */
  RecordedCommand,
  /** @since 0.1.0 */
  RecordedDownload,
  /** @since 0.1.0 */
  RecordedFileExists,
  /** @since 0.1.0 */
  RecordedUpload,
  /** @since 0.1.0 */
  Reply,
  /** @since 0.1.0 */
  Script
} from "./internal/testing/script.ts"

/**
 * The recording of a program run under {@link layer}; read it with {@link recorded}.
 *
 * @since 0.1.0
 */
export const Recorder = Script.Recorder

/**
 * @since 0.1.0
 */
export type Recorder = Script.Recorder

/**
 * The defect a command fails with when no answer of the script matches it (under the default
 * `unscripted: "fail"`): its message names the command, the host and what to add to the script.
 *
 * @since 0.1.0
 */
export const UnscriptedCommand = Script.UnscriptedCommand

/**
 * @since 0.1.0
 */
export type UnscriptedCommand = Script.UnscriptedCommand

/**
 * Runs deploy programs against a script instead of hosts and processes. Provides the
 * {@link Recorder} and an SSH service that refuses to connect (so `Ssh.layer` is not needed,
 * and a connection that slipped past the script fails loudly). Each use of the layer starts an
 * empty recording and a fresh copy of the script's files; uploads add to those files.
 *
 * A command is matched, in the script's order, by its text as written (an exact string, a
 * RegExp, or a predicate of the {@link RecordedCommand}), optionally only on one `host` or
 * `where`; the first match answers with its `exitCode` (default 0), `stdout` and `stderr`.
 * Output follows the settings as real output does: kept with `capture` (always for remote
 * commands), merged into stdout with `combineStderr`, printed when shown.
 *
 * @example
 * ```ts
 * // declare: program: Effect.Effect<void, Errors.CommandFailed, Testing.Recorder | Ssh.SshConnections>
 * const test = program.pipe(
 *   Effect.provide(Testing.layer({
 *     commands: [
 *       { command: "systemctl is-active nginx", exitCode: 3, stdout: "inactive\n" },
 *       { command: /^systemctl (start|restart) nginx$/ }
 *     ],
 *     files: { "/etc/nginx/nginx.conf": "worker_processes 2;\n" }
 *   }))
 * )
 * ```
 *
 * @since 0.1.0
 */
export const layer: (script: Script.Script) => Layer.Layer<Recorder | SshConnections> = Script.layer

/**
 * Everything the program did so far under {@link layer}, in order: commands, file checks,
 * uploads and downloads.
 *
 * @since 0.1.0
 */
export const recorded: Effect.Effect<ReadonlyArray<Script.Recorded>, never, Recorder> = Effect.gen(
  function*() {
    const recorder = yield* Script.Recorder
    return yield* recorder.recorded
  }
)

/**
 * The commands the program ran so far under {@link layer}, local and remote, in order.
 *
 * @example
 * ```ts
 * const ran = yield* Testing.commands
 * // ["web-1: uname -r"]
 * const lines = ran.map((c) => `${c.host}: ${c.command}`)
 * ```
 *
 * @since 0.1.0
 */
export const commands: Effect.Effect<ReadonlyArray<Script.RecordedCommand>, never, Recorder> = Effect.map(
  recorded,
  (all) => all.filter((entry): entry is Script.RecordedCommand => entry._tag === "Command")
)
