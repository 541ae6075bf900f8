/**
 * What a user sees while operations run: `[host] run: <command>` before a command, and each
 * line of its output as `[host] out: <line>` or `[host] err: <line>` while it runs.
 *
 * All of it goes through the {@link Output} service, one whole line per write, so lines from
 * fibers (and worker processes) that print at once never mix. Provide {@link layerCollect}
 * (or your own service) to capture or redirect it. The settings `quiet`, `displayRunning`,
 * `displayPrefix`, `lineTemplate` and `customPipe` shape it.
 *
 * @since 0.1.0
 * @module
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { oneLine } from "./internal/command/oneLine.ts"
import * as Events from "./internal/events/event.ts"
import { Settings } from "./Settings.ts"

/**
 * Where printed lines go. `write` receives one whole line, newline included.
 *
 * @since 0.1.0
 */
export interface Writer {
  readonly write: (text: string) => Effect.Effect<void>
}

/**
 * The output service. By default lines go to the process's standard output.
 *
 * @since 0.1.0
 */
export const Output: Context.Reference<Writer> = Context.Reference<Writer>("effect-threadbare/Output", {
  defaultValue: () => ({ write: (text) => Effect.sync(() => void process.stdout.write(text)) })
})

/**
 * A writer that keeps every line in memory, and the lines it kept.
 *
 * @since 0.1.0
 */
export interface Collector extends Writer {
  /** The lines written so far, without their newlines. */
  readonly lines: () => ReadonlyArray<string>
}

/**
 * Makes a {@link Collector}.
 *
 * @since 0.1.0
 */
export const makeCollector = (): Collector => {
  const lines: Array<string> = []
  return {
    write: (text) => Effect.sync(() => void lines.push(text.endsWith("\n") ? text.slice(0, -1) : text)),
    lines: () => lines.slice()
  }
}

/**
 * Sends output to `collector` instead of the terminal: for tests, or to show it elsewhere.
 *
 * @example
 * ```ts
 * const collector = Output.makeCollector()
 * yield* Operations.local("echo hi", { capture: true }).pipe(Effect.provide(Output.layerCollect(collector)))
 * collector.lines() // ["[localhost] local: echo hi", "[localhost] out: hi"]
 * ```
 *
 * @since 0.1.0
 */
export const layerCollect = (collector: Collector): Layer.Layer<never> => Layer.succeed(Output, collector)

const pad = (n: number): string => String(n).padStart(2, "0")

/**
 * Fills `template` with the fields of one line.
 *
 * @since 0.1.0
 */
export const format = (template: string, fields: {
  readonly host: string
  readonly pipe: string
  readonly line: string
  readonly now: Date
}): string => {
  const d = fields.now
  const date = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  const values: Record<string, string> = {
    host: fields.host,
    pipe: fields.pipe,
    line: fields.line,
    date,
    time,
    datetime: d.toISOString()
  }
  // One pass, so a `{...}` inside the line itself is never expanded.
  return template.replace(/\{(host|pipe|line|date|time|datetime)\}/g, (_, key: string) => values[key] ?? "")
}

/**
 * Prints one line of a command's output under the current settings: nothing when `quiet`,
 * the bare line without `displayPrefix`, else `lineTemplate` filled in. Watchers of the run's
 * events (`Events.consume`) get it as an `OutputLine` whatever the settings.
 *
 * @since 0.1.0
 */
export const printLine = Effect.fnUntraced(function*(host: string, pipe: string, line: string) {
  yield* Events.emit({ _tag: "OutputLine", host, pipe, line })
  const current = yield* Settings
  if (current.quiet) return
  const output = yield* Output
  if (!current.displayPrefix) return yield* output.write(`${line}\n`)
  const now = new Date(yield* Clock.currentTimeMillis)
  yield* output.write(
    `${format(current.lineTemplate, { host, pipe: current.customPipe ?? pipe, line, now })}\n`
  )
})

/**
 * Prints `[host] <verb>: <command>` before a command runs, unless `quiet` or not
 * `displayRunning`. `verb` is `run`, `sudo` or `local`. The command is shown on one line, its
 * control characters written out (`\n`, `\x1b`). Watchers of the run's events get it as given,
 * as a `CommandStarted`, whatever the settings.
 *
 * @since 0.1.0
 */
export const printRunning = Effect.fnUntraced(function*(host: string, verb: string, command: string) {
  yield* Events.emit({ _tag: "CommandStarted", host, verb, command })
  const current = yield* Settings
  if (current.quiet || !current.displayRunning) return
  const output = yield* Output
  const now = new Date(yield* Clock.currentTimeMillis)
  yield* output.write(`${format(current.lineTemplate, { host, pipe: verb, line: oneLine(command), now })}\n`)
})
