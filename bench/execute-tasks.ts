/**
 * The tasks of bench/execute.ts. Worker processes import this module to find them, so it declares
 * tasks and runs nothing (under bench/run-all.ts it is a no-op "benchmark" with no rows).
 *
 * Every task reports when it started and ended on the wall clock shared by all processes of the
 * machine (`performance.timeOrigin + performance.now()`: epoch milliseconds with sub-millisecond
 * resolution; Effect's `Clock.currentTimeMillis` would give whole milliseconds only), when its
 * process started, and the CPU that process had used when the task started (for a fresh worker:
 * what booting it cost).
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { performance } from "node:perf_hooks"
import * as Operations from "../src/Operations.ts"
import { Output } from "../src/Output.ts"
import { Settings } from "../src/Settings.ts"
import * as Task from "../src/Task.ts"

/** Epoch milliseconds, sub-millisecond resolution, comparable across the processes of one machine. */
export const epochMs = (): number => performance.timeOrigin + performance.now()

/** What every task of this module returns. */
export const Stamps = Schema.Struct({
  pid: Schema.Number,
  /** `performance.timeOrigin` of the worker: about when its Node process started. */
  processStart: Schema.Number,
  /** Epoch ms when the task's effect began. */
  start: Schema.Number,
  /** Epoch ms when the task's effect ended (before its result is encoded). */
  end: Schema.Number,
  /** CPU (user + system, ms) the process had used when the task began. */
  cpuAtStart: Schema.Number,
  /** The same when it ended. */
  cpuAtEnd: Schema.Number
})

/** The type of {@link Stamps}. */
export type Stamps = typeof Stamps.Type

const cpuMs = (): number => {
  const used = process.cpuUsage()
  return (used.user + used.system) / 1000
}

const onHost = (host: string) =>
  Operations.remote("true").pipe(Effect.updateService(Settings, (s) => ({ ...s, host })), Effect.scoped)

const stamped = <E, R>(work: Effect.Effect<unknown, E, R>): Effect.Effect<Stamps, E, R> =>
  Effect.gen(function*() {
    const start = epochMs()
    const cpuAtStart = cpuMs()
    yield* work
    const end = epochMs()
    return {
      pid: process.pid,
      processStart: performance.timeOrigin,
      start,
      end,
      cpuAtStart,
      cpuAtEnd: cpuMs()
    }
  })

/** `true` on the current host (the `host` setting, which `Execute.withHosts` sets per run). */
export const remoteTrue = Task.make({
  name: "remoteTrue",
  module: import.meta.url,
  success: Stamps,
  error: Task.OperationError
}, () => stamped(Operations.remote("true")))

/**
 * A probe for `Execute.forEach`: optionally waits until an absolute time (to hold its worker, so a
 * pool can be filled before the real runs), optionally runs `true` on `host`, and optionally
 * prints one line at its end (the parent notes when it arrives).
 */
export const probe = Task.make({
  name: "probe",
  module: import.meta.url,
  input: Schema.Struct({
    /** Epoch ms to wait for, or null. */
    until: Schema.NullOr(Schema.Number),
    /** Host to run `true` on, or null for no SSH at all. */
    host: Schema.NullOr(Schema.String),
    /** Text of a line to print at the end, or null. */
    line: Schema.NullOr(Schema.String)
  }),
  success: Stamps,
  error: Task.OperationError
}, ({ host, line, until }) =>
  stamped(Effect.gen(function*() {
    if (until !== null) {
      const wait = until - epochMs()
      if (wait > 0) yield* Effect.sleep(Duration.millis(wait))
    }
    if (host !== null) yield* onHost(host)
    if (line !== null) yield* (yield* Output).write(`${line}\n`)
  })))
