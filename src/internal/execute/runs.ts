/**
 * A batch of runs of one task, the body of every `Execute` call: each run in a worker of a pool
 * (`parallel`), on a fiber of this process (`fibers`) or one after another (`serial`), with
 * crashed bystanders run again alone, connection failures retried, and every outcome kept in
 * the order of the runs.
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Formatter from "effect/Formatter"
import * as Layer from "effect/Layer"
import type * as Option from "effect/Option"
import * as References from "effect/References"
import type * as Schedule from "effect/Schedule"
import * as Tracer from "effect/Tracer"
import * as os from "node:os"
import { type ConnectionError, WorkerCrashed } from "../../Errors.ts"
import { Output, type Writer } from "../../Output.ts"
import { Settings } from "../../Settings.ts"
import * as Ssh from "../../Ssh.ts"
import type { Task } from "../../Task.ts"
import * as Events from "../events/event.ts"
import type { HostStatus } from "../events/event.ts"
import {
  makeWorkerPool,
  type PoolConfig,
  prefixed,
  runLogLevel,
  type RunTarget,
  whole,
  type WorkerPoolShape
} from "./workerPool.ts"
import { inWorkerKey } from "./workerProtocol.ts"

/** What a batch reads of `Execute.Options`. */
export interface RunOptions extends PoolConfig {
  readonly mode?: "parallel" | "fibers" | "serial" | undefined
  readonly poolSize?: number | undefined
  readonly failFast?: boolean | undefined
  readonly retry?: Schedule.Schedule<unknown, ConnectionError> | undefined
  readonly isolateCrashes?: boolean | undefined
  /**
   * Asked after each run ends: `true` interrupts the runs in flight and starts no more (a
   * rolling batch over its failure budget). `failFast` is the same on any failure.
   */
  readonly stopWhen?: ((exit: Exit.Exit<unknown, unknown>) => boolean) | undefined
  /** How many of its last output lines each run keeps in its `Ended` (default: none). */
  readonly tail?: number | undefined
}

/** One run of a batch: how it is labelled, its input, and how it changes the caller's settings. */
export interface Run<I> {
  readonly label: string
  readonly input: I
  readonly patch: (settings: Settings) => Settings
  /** The rolling batch it belongs to (from 1), for its events. */
  readonly batch?: number | undefined
}

/** How one run ended, and after how many attempts (0: it never started). */
export interface Ended<A, E> {
  readonly exit: Exit.Exit<A, E>
  readonly attempts: number
  /** From its first attempt's start to its end (0 when it never started). */
  readonly durationMillis: number
  /** Its last output lines, printed or not (only with the `tail` option). */
  readonly output: ReadonlyArray<string>
}

/** The status a run's end shows in events and reports. */
export const statusOf = (ended: Ended<unknown, unknown>): HostStatus =>
  ended.attempts === 0
    ? "not-started"
    : Exit.isSuccess(ended.exit)
    ? "succeeded"
    : Cause.hasInterruptsOnly(ended.exit.cause)
    ? "interrupted"
    : "failed"

// A gate may fail with anything; `String` throws on a value without a string form (an object
// without a prototype, a `toString` that throws), and a report must still say why the run stopped.
const textOf = (value: unknown): string => {
  try {
    return String(value)
  } catch {
    return Formatter.format(value)
  }
}

/** A one-line account of a failed run for events: its error's message, or the cause. */
export const messageOf = (exit: Exit.Exit<unknown, unknown>): string | undefined => {
  if (Exit.isSuccess(exit)) return undefined
  const error = Cause.findErrorOption(exit.cause)
  if (error._tag === "Some") {
    const value = error.value
    return value instanceof Error
      ? `${(value as { _tag?: string })._tag ?? value.name}: ${value.message}`
      : textOf(value)
  }
  return Cause.hasInterruptsOnly(exit.cause) ? "interrupted" : Cause.pretty(exit.cause).split("\n")[0]
}

// Keeps the last `size` output lines of a run from its events (printed or not: `quiet` runs
// keep theirs too), and passes every event on to the caller's consumer, if any.
const tailing = (outer: Events.Sink | undefined, size: number) => {
  const lines: Array<string> = []
  const sink: Events.Sink = {
    publish: (event) => {
      if (event._tag === "OutputLine") {
        lines.push(event.line)
        if (lines.length > size) lines.shift()
      }
      return outer === undefined ? Effect.void : outer.publish(event)
    }
  }
  return { sink, lines }
}

/** How a run shows in output lines: the value when it is a string or number, else its position. */
export const labelOf = (input: unknown, index: number): string =>
  typeof input === "string" || typeof input === "number" || typeof input === "bigint"
    ? String(input)
    : `#${index + 1}`

/**
 * `true` for a failure that another attempt may cure: a `ConnectionError` other than a changed
 * host key (which will not change by itself and may be an attack).
 */
export const isRetryable = (error: unknown): boolean =>
  typeof error === "object" && error !== null && (error as { _tag?: unknown })._tag === "ConnectionError" &&
  (error as ConnectionError).reason !== "host-key"

const prefixing = (output: Writer, label: string): Writer => ({
  write: (text) => output.write(prefixed(label, text))
})

// In this process the task still gets the services a worker would give it; the caller's own
// (a test's spawner, an SSH connection service) win over those defaults. Without the caller's
// SSH connections, each run has its own, closed when it ends, as in a worker. Node's services
// are built once per batch: built per run, each run's terminal added a listener to stdin (a
// warning past 10 runs at once, and work for nothing at 1,000).
const runInProcess = <I, A, E>(
  task: Task<I, A, E>,
  input: I,
  run: RunTarget,
  caller: Context.Context<never>,
  node: Context.Context<NodeServices.NodeServices>
): Effect.Effect<A, E> =>
  Effect.flatMap(runLogLevel(run.settings), (level) =>
    task.run(input).pipe(
      // Logs carry the host, and `quiet` keeps warnings and errors only, as in a worker.
      Effect.annotateLogs({ host: run.label }),
      Effect.provideService(References.MinimumLogLevel, level),
      Effect.provideService(Settings, run.settings),
      Effect.provideService(Output, prefixing(run.output, run.label)),
      run.events === undefined ? (effect) => effect : Effect.provideService(Events.CurrentSink, run.events),
      Effect.scoped,
      Effect.provide(caller),
      Effect.provide(Ssh.layer),
      Effect.provide(node)
    )) as Effect.Effect<A, E>

// A run whose worker died while other runs shared it: it may not be the one that killed it.
const isBystander = (error: unknown): error is WorkerCrashed =>
  error instanceof WorkerCrashed && error.runsInFlight > 1

/**
 * Set by `Testing.layer`: its scripted transports cannot reach a worker process, so `parallel`
 * runs become fibers of this process.
 */
export const InProcessOnly = Context.Reference<boolean>("effect-threadbare/internal/execute/InProcessOnly", {
  defaultValue: () => false
})

/**
 * Runs every one of `runs` and returns how each ended, in their order. `shared` is the
 * `Execute.WorkerPool` provided by the caller, if any (`parallel` only); without it a pool is
 * started for this batch and ended with it.
 */
export const runAll = <I, A, E>(
  task: Task<I, A, E>,
  runs: ReadonlyArray<Run<I>>,
  options: RunOptions,
  shared: Option.Option<WorkerPoolShape<PoolConfig>>
): Effect.Effect<ReadonlyArray<Ended<A, E | WorkerCrashed>>> =>
  Effect.scoped(Effect.gen(function*() {
    if ((globalThis as Record<symbol, unknown>)[inWorkerKey] === true) {
      return yield* Effect.die(
        new Error(
          `Execute was called inside a worker while it imported the module of task ${task.name} ` +
            `(${task.module}): that module runs your program when imported. Move the task to a ` +
            `module of its own, or guard the program with \`if (import.meta.main)\`.`
        )
      )
    }
    const settings = yield* Settings
    const output = yield* Output
    // Without the caller's span: a run's spans belong under its `host` span, not beside it.
    const caller = Context.omit(Tracer.ParentSpan)(yield* Effect.context<never>())
    // Worker processes build their own transports: under `Testing.layer`, whose scripted ones
    // live in this process, every run stays here, in a fiber.
    const mode = (yield* InProcessOnly) && (options.mode ?? "parallel") === "parallel"
      ? "fibers"
      : options.mode ?? "parallel"
    const pooled = mode === "parallel" && shared._tag === "Some" ? shared.value : undefined
    const poolSize = Math.min(
      whole(options.poolSize ?? pooled?.poolSize ?? os.availableParallelism()),
      Math.max(1, runs.length)
    )
    const watcher = yield* Events.CurrentSink
    const contextOf = (run: Run<I>, events: Events.Sink | undefined): RunTarget => ({
      label: run.label,
      settings: run.patch(settings),
      output,
      events
    })

    let runOnce: (run: Run<I>, events: Events.Sink | undefined) => Effect.Effect<A, E | WorkerCrashed>
    // A run again, alone in a worker of its own (isolateCrashes, parallel only).
    let runAlone:
      | ((run: Run<I>, events: Events.Sink | undefined) => Effect.Effect<A, E | WorkerCrashed>)
      | undefined
    if (mode === "parallel") {
      const pool: WorkerPoolShape<PoolConfig> = pooled ?? (yield* makeWorkerPool(options, poolSize))
      runOnce = (run, out) => pool.run(task, run.input, contextOf(run, out))
      if (options.isolateCrashes ?? true) {
        const alone = { ...pool.options, workers: 1 }
        runAlone = (run, out) =>
          Effect.scoped(
            Effect.flatMap(makeWorkerPool(alone, 1), (single) =>
              single.run(task, run.input, contextOf(run, out)))
          )
      }
    } else if (mode === "fibers") {
      const node = yield* Layer.build(NodeServices.layer)
      // As in a worker: a copy of the settings, prompts refused (runs share one terminal).
      runOnce = (run, out) => {
        const context = contextOf(run, out)
        return runInProcess(
          task,
          run.input,
          {
            ...context,
            settings: { ...context.settings, abortOnPrompts: true }
          },
          caller,
          node
        )
      }
    } else {
      const node = yield* Layer.build(NodeServices.layer)
      runOnce = (run, out) =>
        runInProcess(task, run.input, contextOf(run, out), caller, node)
    }

    const ended: Array<Ended<A, E | WorkerCrashed> | undefined> = runs.map(() => undefined)
    const one = (run: Run<I>, index: number) =>
      Effect.gen(function*() {
        let attempts = 0
        const started = yield* Clock.currentTimeMillis
        const kept = options.tail === undefined || options.tail <= 0
          ? undefined
          : tailing(watcher, options.tail)
        const out = kept?.sink ?? watcher
        const counted = (
          f: (run: Run<I>, events: Events.Sink | undefined) => Effect.Effect<A, E | WorkerCrashed>
        ) =>
          Effect.suspend(() => {
            attempts++
            return Effect.andThen(
              Events.emit({ _tag: "HostStarted", host: run.label, batch: run.batch, attempt: attempts }),
              f(run, out)
            )
          })
        const attempt = runAlone === undefined
          ? counted(runOnce)
          : counted(runOnce).pipe(Effect.catchIf(isBystander, () => counted(runAlone)))
        const retried = options.retry === undefined
          ? attempt
          : attempt.pipe(Effect.retry({
            // Only connection failures reach the schedule (`while` filters first).
            schedule: options.retry as Schedule.Schedule<unknown, E | WorkerCrashed>,
            while: isRetryable
          }))
        // Recorded on every end, interruption included: a run stopped in flight is
        // `interrupted`, with its attempts, not taken for one that never started.
        const record = (exit: Exit.Exit<A, E | WorkerCrashed>) =>
          Effect.gen(function*() {
            const durationMillis = (yield* Clock.currentTimeMillis) - started
            const end: Ended<A, E | WorkerCrashed> = {
              exit,
              attempts,
              durationMillis,
              output: kept?.lines ?? []
            }
            ended[index] = end
            const message = messageOf(exit)
            yield* Events.emit({
              _tag: "HostFinished",
              host: run.label,
              batch: run.batch,
              status: statusOf(end),
              attempts,
              durationMillis,
              ...(message === undefined ? {} : { message })
            })
          })
        // The span of the run for its host: its commands and transfers are inside it.
        const exit = yield* Effect.exit(
          retried.pipe(
            Effect.withSpan(`host ${run.label}`, { attributes: { host: run.label, batch: run.batch } }),
            Effect.onExit(record)
          )
        )
        // Failing this fiber makes forEach interrupt the others.
        const stop = Exit.isFailure(exit) && (options.failFast === true ||
          (options.stopWhen !== undefined && options.stopWhen(exit)))
        if (stop) return yield* Effect.fail(exit)
      })
    if (runs.length > 0) {
      const concurrency = mode === "serial" ? 1 : poolSize
      yield* Effect.forEach(runs, one, { concurrency, discard: true }).pipe(Effect.ignore)
    }
    return ended.map((e) => e ?? { exit: Exit.interrupt(), attempts: 0, durationMillis: 0, output: [] })
  }))

/**
 * The successes in order, or the first failure that is not an interruption (`failFast`
 * interrupted the rest), else the first interruption.
 */
export const firstFailure = <A, E>(
  outcomes: ReadonlyArray<{ readonly exit: Exit.Exit<A, E> }>
): Effect.Effect<ReadonlyArray<A>, E> => {
  const values: Array<A> = []
  let interrupted: Exit.Exit<A, E> | undefined
  for (const { exit } of outcomes) {
    if (Exit.isSuccess(exit)) values.push(exit.value)
    else if (!Cause.hasInterruptsOnly(exit.cause)) return Effect.failCause(exit.cause)
    else interrupted ??= exit
  }
  return interrupted === undefined
    ? Effect.succeed(values)
    : Effect.failCause((interrupted as Exit.Failure<A, E>).cause)
}
