/**
 * The pool of worker processes behind `Execute`'s `parallel` mode: slots of the pool, each one
 * worker taking several runs at once, and one run on a slot from its encoded input to its
 * decoded outcome.
 */
import * as Effect from "effect/Effect"
import * as LogLevel from "effect/LogLevel"
import * as Pool from "effect/Pool"
import * as References from "effect/References"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import * as Stream from "effect/Stream"
import * as os from "node:os"
import { WorkerCrashed } from "../../Errors.ts"
import type { Writer } from "../../Output.ts"
import type { Settings } from "../../Settings.ts"
import type { Task } from "../../Task.ts"
import * as Events from "../events/event.ts"
import { exitCodec } from "./workerProtocol.ts"
import * as WorkerSettings from "./workerSettings.ts"
import { defaultCompileCache, makeSlot, type Slot } from "./workerSlot.ts"
import { stopIfUnresponsive } from "./workerStop.ts"
import { makeRelay } from "./workerTrace.ts"

/** What a pool reads of `Execute.PoolOptions` (its `poolSize` is resolved by the caller). */
export interface PoolConfig {
  readonly workers?: number | undefined
  readonly execArgv?: ReadonlyArray<string> | undefined
  readonly compileCache?: string | false | undefined
}

/** What one run needs besides its task and input: `Execute.RunContext`. @inline */
export interface RunTarget {
  /** The host or label the run's output lines are prefixed with. */
  readonly label: string
  /** The run's settings, sent to the worker as they are. */
  readonly settings: Settings
  /** Where the run's output lines go. */
  readonly output: Writer
  /** Where the run's events go; by default the current `Events` consumer, if any. */
  readonly events?: Events.Sink | undefined
}

/** The service `Execute.WorkerPool` holds. */
export interface WorkerPoolShape<O extends PoolConfig> {
  /** The most runs in flight at once on the pool, every call together. */
  readonly poolSize: number
  /** How many worker processes the pool keeps. */
  readonly workers: number
  /** The options the pool was made with (runs re-run alone by `isolateCrashes` start with them). */
  readonly options: O
  /**
   * Runs `task` once on a worker of the pool, waiting for room within its bounds. Fails with
   * the task's error, or `WorkerCrashed` when the worker dies.
   */
  readonly run: <I, A, E>(
    task: Task<I, A, E>,
    input: I,
    run: RunTarget
  ) => Effect.Effect<A, E | WorkerCrashed>
}

/** A count from user input: at least 1, whole (`NaN` counts as 1). */
export const whole = (n: number): number => (Number.isNaN(n) ? 1 : Math.max(1, Math.floor(n)))

/**
 * Lines that already name their host (remote output, `[web-1] out: ...`) are kept as they are;
 * others (local commands, bare lines) get the host in front, so parallel output stays readable.
 */
export const prefixed = (label: string, text: string): string => {
  const line = text.endsWith("\n") ? text.slice(0, -1) : text
  return line.startsWith(`[${label}]`) ? `${line}\n` : `[${label}] ${line}\n`
}

/**
 * The least severe log entry a run keeps: the current minimum, raised to warnings when the run's
 * settings are `quiet` (its logs are then failures and warnings only, wherever it runs).
 */
export const runLogLevel = Effect.fnUntraced(function*(settings: Settings) {
  const current = yield* References.MinimumLogLevel
  return settings.quiet && LogLevel.isLessThan(current, "Warn") ? "Warn" : current
})

const runInWorker = <I, A, E>(
  slot: Slot,
  task: Task<I, A, E>,
  input: I,
  run: RunTarget
): Effect.Effect<A, E | WorkerCrashed> =>
  Effect.gen(function*() {
    const encoded = yield* Schema.encodeEffect(Schema.toCodecJson(task.input))(input).pipe(Effect.orDie)
    const sink = run.events ?? (yield* Events.CurrentSink)
    const logLevel = yield* runLogLevel(run.settings)
    const relay = yield* makeRelay
    let done: unknown = undefined
    const crashed = (detail: string) => {
      const ended = slot.ended
      return new WorkerCrashed({
        host: run.label,
        task: task.name,
        exitCode: ended?.code ?? null,
        signal: ended?.signal ?? null,
        runsInFlight: ended?.runsInFlight ?? 1,
        detail
      })
    }
    yield* Effect.acquireUseRelease(
      Effect.sync(() => slot.inFlight++),
      () =>
        slot.client.Run({
          module: task.module,
          name: task.name,
          input: encoded as Schema.Json,
          // Secrets are revealed here, inside the IPC message only; the worker wraps them again.
          settings: WorkerSettings.encode(run.settings),
          events: sink !== undefined,
          logLevel,
          ...(relay === undefined ? {} : { trace: relay.trace })
        }).pipe(
          Stream.runForEach((event) => {
            switch (event._tag) {
              case "Line":
                return run.output.write(prefixed(run.label, event.text))
              case "Event":
                return sink === undefined ? Effect.void : sink.publish(event.event)
              case "Log":
                // The worker's log, through this process's Logger, under the run's host.
                return Effect.logWithLevel(event.level)(...event.message).pipe(
                  Effect.annotateLogs({ ...event.annotations, host: run.label })
                )
              case "SpanStart":
                return Effect.sync(() => relay?.start(event))
              case "SpanEnd":
                return Effect.sync(() => relay?.end(event))
              case "Done":
                return Effect.sync(() => {
                  done = event.exit
                })
            }
          }),
          Effect.catchTag("RpcClientError", (error) => Effect.fail(crashed(error.message)))
        ),
      () => Effect.sync(() => slot.inFlight--)
    ).pipe(
      Effect.onInterrupt(() => stopIfUnresponsive(slot)),
      // Spans the worker could not end (its run stopped, the worker dead) are ended here.
      Effect.onExit((exit) => relay === undefined ? Effect.void : relay.close(exit))
    )
    if (done === undefined) return yield* crashed("the worker ended the run without an outcome")
    const exit = yield* Schema.decodeUnknownEffect(exitCodec(task.success, task.error))(done).pipe(
      Effect.orDie
    )
    return yield* exit
  })

/** Starts `options.workers` worker processes (at most `poolSize`) sharing at most `poolSize` runs. */
export const makeWorkerPool = <O extends PoolConfig>(
  options: O,
  poolSize: number
): Effect.Effect<WorkerPoolShape<O>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const workers = Math.min(whole(options.workers ?? os.availableParallelism()), poolSize)
    const perWorker = Math.ceil(poolSize / workers)
    const execArgv = options.execArgv ?? process.execArgv
    const compileCache = options.compileCache === false ? "" : options.compileCache ?? defaultCompileCache()
    const slots = yield* Pool.make({
      acquire: makeSlot(execArgv, perWorker, compileCache),
      size: workers,
      concurrency: perWorker
    })
    // workers x perWorker may exceed poolSize (10 on 3 workers: 12); the permits hold it.
    const permits = yield* Semaphore.make(poolSize)
    return {
      poolSize,
      workers,
      options,
      run: (task, input, run) =>
        permits.withPermit(
          Effect.scoped(Effect.flatMap(Pool.get(slots), (slot) => runInWorker(slot, task, input, run)))
        )
    }
  })
