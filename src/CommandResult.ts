/**
 * The outcome of a finished command, local or remote.
 *
 * A `CommandResult` is plain data (a `Schema.Class`), so it crosses worker process boundaries
 * unchanged and can be logged, compared and serialised.
 *
 * @since 0.1.0
 * @module
 */
import * as Schema from "effect/Schema"

/**
 * What a command did: the command as the caller wrote it and as it was sent, how it ended
 * (an exit code, or the signal that killed it), what it printed and how long it took.
 *
 * `stdout`/`stderr` hold the whole text; `stdoutLines`/`stderrLines` split it into lines.
 * With `combineStderr` (the default) everything arrives in `stdout`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Operations } from "effect-threadbare"
 *
 * const program = Effect.gen(function*() {
 *   const result = yield* Operations.local("git rev-parse HEAD", { capture: true })
 *   return result.stdoutLines[0]
 * })
 * ```
 *
 * @since 0.1.0
 */
export class CommandResult extends Schema.Class<CommandResult>("effect-threadbare/CommandResult")({
  /** Where it ran: the host string, or `"localhost"` for a local command. */
  host: Schema.String,
  /** The command as the caller wrote it (an argument list is shown quoted and joined). */
  command: Schema.String,
  /** The command line that was actually run: shell wrapping, `cd`, variables and `sudo` included. */
  realCommand: Schema.String,
  /** The exit code, or `null` when a signal ended the process. */
  exitCode: Schema.NullOr(Schema.Number),
  /** The signal that ended the process (`"SIGKILL"`, ...), or `null` when it exited. */
  signal: Schema.NullOr(Schema.String),
  /** Everything the command wrote to standard output (and standard error, when combined). */
  stdout: Schema.String,
  /** Everything the command wrote to standard error, when it was kept separate. */
  stderr: Schema.String,
  /** Wall-clock time from start to exit, in milliseconds. */
  durationMillis: Schema.Number
}) {
  /** `true` when the command exited with code 0. */
  get succeeded(): boolean {
    return this.exitCode === 0
  }

  /** `true` when the command exited non-zero or was killed by a signal. */
  get failed(): boolean {
    return this.exitCode !== 0
  }

  /** `stdout` split into lines, without line terminators and without a trailing empty line. */
  get stdoutLines(): ReadonlyArray<string> {
    return splitLines(this.stdout)
  }

  /** `stderr` split into lines, without line terminators and without a trailing empty line. */
  get stderrLines(): ReadonlyArray<string> {
    return splitLines(this.stderr)
  }

  /** A short description of how the command ended, for messages: `exit code 2`, `signal SIGKILL`. */
  get ending(): string {
    return this.signal !== null ? `signal ${this.signal}` : `exit code ${this.exitCode}`
  }
}

const splitLines = (text: string): ReadonlyArray<string> => {
  if (text === "") return []
  const lines = text.split(/\r?\n/)
  if (lines[lines.length - 1] === "") lines.pop()
  return lines
}
