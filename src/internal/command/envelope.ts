/**
 * The envelope every command runs in, local or remote: the time limit, dry run, the span, the
 * `[host] run: ...` line and the output lines, the `CommandResult` and its errors. A transport
 * (local processes, SSH) only starts the command, hands its output to the {@link Sink} as it
 * comes, and reports how it ended; everything a user sees around that is decided here once, so
 * the two cannot drift apart.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import { CommandResult } from "../../CommandResult.ts"
import { CommandTimeout } from "../../Errors.ts"
import * as Output from "../../Output.ts"
import type { Settings } from "../../Settings.ts"
import { checkTimeout, dryRunResult } from "./command.ts"
import { LineBuffer } from "./lines.ts"

/** How a command ended: an exit code, or the signal that killed it. */
export interface Ending {
  readonly exitCode: number | null
  readonly signal: string | null
  /**
   * A diagnosis of the transport's own (a program that could not be started), added to the
   * result's `stderr` even when output is not kept: it is the only hint `CommandFailed` gives.
   */
  readonly note?: string | undefined
}

/**
 * Where a transport puts a command's output: one line buffer per stream (they keep the text for
 * the result, unless output is discarded) and `print`, which shows completed lines when the
 * command's output is shown at all.
 */
export interface Sink {
  readonly out: LineBuffer
  readonly err: LineBuffer
  readonly print: (pipe: "out" | "err", lines: ReadonlyArray<string>) => Effect.Effect<void>
}

/** What the envelope needs to know of a command, and the transport that runs it. */
export interface Envelope<E, R> {
  /** The host shown in lines and results (`localhost` for a local command). */
  readonly host: string
  /** The word of the `[host] <verb>: <command>` line: `run`, `sudo` or `local`. */
  readonly verb: string
  /** The command as the caller wrote it. */
  readonly display: string
  /** The command line actually run, for `realCommand`. */
  readonly line: string
  /** The settings of this call: `timeout`, `dryRun`, `quiet`, `discardOutput`. */
  readonly settings: Settings
  /** Whether output lines are printed while the command runs. */
  readonly printing: boolean
  /** Whether output text is kept for the result. */
  readonly keep: boolean
  /** Applied to every printed line and to the kept text (the SSH transport masks a sudo password). */
  readonly redact?: ((text: string) => string) | undefined
  /**
   * Starts the command, giving what waits for its end. Only the wait is under `timeout` (an SSH
   * connection is bounded by its own settings). Interrupting the wait (a time limit, the
   * caller) must stop the command; the scope closes right after.
   */
  readonly start: (sink: Sink) => Effect.Effect<Effect.Effect<Ending, E, R>, E, R | Scope.Scope>
}

/**
 * Runs a command in the envelope and returns its result, whatever its exit code; fails with
 * `CommandTimeout` when `timeout` ran out (the transport was interrupted, which stops the
 * command), or with the transport's own errors.
 */
export const run = Effect.fnUntraced(function*<E, R>(envelope: Envelope<E, R>) {
  const { display, host, settings } = envelope
  yield* checkTimeout(settings.timeout)
  // The command as printed: the user's text, without the variables and sudo password around it.
  yield* Effect.annotateCurrentSpan({ host, command: display, verb: envelope.verb })
  yield* Output.printRunning(host, envelope.verb, display)
  if (settings.dryRun) return dryRunResult(host, display, envelope.line)

  const redact = envelope.redact ?? ((text: string) => text)
  const sink: Sink = {
    out: new LineBuffer(envelope.keep),
    err: new LineBuffer(envelope.keep),
    print: (pipe, lines) =>
      !envelope.printing || lines.length === 0
        ? Effect.void
        : Effect.forEach(lines, (line) => Output.printLine(host, pipe, redact(line)), { discard: true })
  }
  const started = yield* Clock.currentTimeMillis
  const timeout = settings.timeout
  const outcome = yield* Effect.scoped(Effect.flatMap(
    envelope.start(sink),
    (wait) => timeout === undefined ? Effect.asSome(wait) : Effect.timeoutOption(wait, timeout)
  ))
  const finished = yield* Clock.currentTimeMillis
  if (Option.isNone(outcome)) {
    return yield* new CommandTimeout({
      host,
      command: display,
      timeoutMillis: Duration.toMillis(timeout!),
      stdout: redact(sink.out.text()),
      stderr: redact(sink.err.text())
    })
  }
  const ending = outcome.value
  // The span of the operation (`Operations.remote`, `Operations.local`) says how it ended.
  yield* Effect.annotateCurrentSpan(
    ending.signal !== null ? { signal: ending.signal } : { exitCode: ending.exitCode }
  )
  return new CommandResult({
    host,
    command: display,
    realCommand: envelope.line,
    exitCode: ending.signal !== null ? null : ending.exitCode,
    signal: ending.signal,
    stdout: redact(sink.out.text()),
    stderr: redact(sink.err.text()) + (ending.note ?? ""),
    durationMillis: finished - started
  })
})

/** Reads a byte stream into one of the sink's buffers, printing the lines it completes. */
export const pump = <E, R>(
  sink: Sink,
  pipe: "out" | "err",
  forEachChunk: (f: (chunk: Uint8Array) => Effect.Effect<void>) => Effect.Effect<void, E, R>
): Effect.Effect<void, E, R> => {
  const buffer = pipe === "out" ? sink.out : sink.err
  return forEachChunk((chunk) => sink.print(pipe, buffer.push(chunk))).pipe(
    Effect.andThen(Effect.suspend(() => sink.print(pipe, buffer.end())))
  )
}
