/**
 * Runs a {@link Task} once per host or per value: one after another in this process, in a
 * bounded pool of worker processes, or concurrently on fibers in this process (the original's
 * `execute`, `execute_with_hosts`, `@serial` and `@parallel`).
 *
 * Three modes, one set of results:
 *
 * - `parallel` (the default): at most `poolSize` runs at once, spread over `workers` worker
 *   processes (by default one per CPU, never more than `poolSize`), each taking several runs at
 *   once. A worker is reused for later runs; starting one costs a few hundred milliseconds of
 *   CPU (Node's compile cache, on by default, cuts that down for every worker after the first).
 *   A task that blocks its thread or eats memory only hurts its own worker and the runs
 *   sharing it.
 * - `fibers`: at most `poolSize` runs at once on fibers in this process: nothing to start, the
 *   fastest for short SSH commands, but a task that blocks the thread or crashes the process
 *   takes every run with it.
 * - `serial`: one run after another in this process, prompts allowed.
 *
 * In `parallel` and `fibers`, each run gets a copy of the current settings (plus its host) with
 * prompts refused. Results come back in the order the hosts or values were given, each with its
 * typed success or failure. Output lines the task prints arrive here live, whole, and prefixed
 * with their host. A worker that dies fails the runs it had in flight, each with a
 * {@link WorkerCrashed} for its own host; by default those that shared the worker with other
 * runs are run once more, alone, so only the run that kills its worker fails (`isolateCrashes`).
 * Interrupting the returned effect (a timeout, Ctrl-C under `NodeRuntime.runMain`) interrupts
 * every task, whose finalizers stop their local and remote commands, and then ends the workers.
 * A worker that cannot read the interruption (its task loops on the CPU) and does not answer
 * within 1 s gets SIGTERM, then SIGKILL 1 s later, and so do the process groups of the local
 * commands it started. A worker whose parent dies (even by SIGKILL) stops its tasks and exits;
 * one too busy to notice is stopped the same way by its watchdog, a `/bin/sh` beside it that
 * reads a pipe from this process, which the kernel closes when this process dies.
 *
 * Changes a task makes to settings stay in its run: nothing flows back to this process.
 * Workers are forked with this process's `execArgv`, so a program run with `tsx`, with Node's
 * type stripping (`node main.ts`) or compiled to JavaScript runs its workers the same way.
 *
 * The one rule (see `Task`): declare tasks with `Task.make` at the top level of a module that
 * does not run the program when imported, since each worker imports it to find the task.
 *
 * @example
 * ```ts
 * import { NodeRuntime } from "@effect/platform-node"
 * import { Effect } from "effect"
 * import { Execute } from "effect-threadbare"
 * import { deploy } from "./tasks.ts" // declared with Task.make
 *
 * const main = Effect.gen(function*() {
 *   const results = yield* Execute.withHosts(deploy, ["web-1", "web-2", "db-1"], { poolSize: 2 })
 *   for (const { host, exit } of results) yield* Effect.log(host, exit._tag)
 *   // 50 hosts, 10 at a time, on fibers in this process: no worker to start
 *   yield* Execute.withHosts(deploy, fleet, { mode: "fibers", poolSize: 10 })
 * })
 * NodeRuntime.runMain(main)
 * ```
 *
 * @since 0.1.0
 * @module
 */
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as os from "node:os"
import type { ConnectionError, SettingsError, WorkerCrashed } from "./Errors.ts"
import type { Amount } from "./internal/execute/batches.ts"
import * as Rolling from "./internal/execute/rolling.ts"
import * as Runs from "./internal/execute/runs.ts"
import { makeWorkerPool, type RunTarget, whole, type WorkerPoolShape } from "./internal/execute/workerPool.ts"
import type { Report } from "./Report.ts"
import { Settings } from "./Settings.ts"
import type { Task } from "./Task.ts"

/**
 * A worker process died during a run. It lives in `Errors` with the other errors
 * (`Errors.WorkerCrashed`); this name stays for existing programs.
 *
 * @example
 * ```ts
 * for (const { error, host } of Execute.failures(results)) {
 *   if (error._tag === "WorkerCrashed") yield* Effect.logError(`${host}: worker died (${error.signal})`)
 * }
 * ```
 *
 * @since 0.1.0
 */
export { WorkerCrashed } from "./Errors.ts"

/**
 * The worker processes of `parallel` runs: how many runs at once, on how many processes,
 * started how. Part of {@link Options}, and what {@link layerPool} takes.
 *
 * @example
 * ```ts
 * const pool: Execute.PoolOptions = { poolSize: 10, workers: 2 }
 * ```
 *
 * @since 0.1.0
 */
export interface PoolOptions {
  /**
   * The most runs in flight at once (hosts being worked on), in `parallel` and `fibers`.
   * Never more than the number of runs. Default: the number of CPUs.
   */
  readonly poolSize?: number | undefined
  /**
   * In `parallel`: how many worker processes share the `poolSize` runs, each taking up to
   * `ceil(poolSize / workers)` of them at once. Never more than `poolSize`. Default:
   * `Math.min(poolSize, os.availableParallelism())`.
   *
   * Fewer workers start sooner and cost less CPU and memory (each is a Node process that loads
   * effect, ssh2 and your task module); short SSH commands mostly wait on the network, so a
   * few workers keep up with many runs. More workers isolate runs better: a worker that dies
   * fails every run in flight on it (see `isolateCrashes`), and a task that blocks its thread
   * (heavy CPU, synchronous I/O) delays the runs sharing its worker. `workers: poolSize` gives
   * each run a process of its own.
   */
  readonly workers?: number | undefined
  /**
   * The Node options of worker processes. Default: this process's `execArgv`, so a loader
   * such as `tsx` (`--import tsx`) is active in workers too.
   */
  readonly execArgv?: ReadonlyArray<string> | undefined
  /**
   * The directory of Node's compile cache for worker processes (`module.enableCompileCache`),
   * which cuts the CPU each worker needs to start (by about a third on our benchmark) once a
   * first worker has filled it; `false` for none. A `NODE_COMPILE_CACHE` in the environment
   * wins. Default: `effect-threadbare/compile-cache` under `$XDG_CACHE_HOME` (else `~/.cache`).
   */
  readonly compileCache?: string | false | undefined
}

/**
 * How a batch of runs is executed.
 *
 * @example
 * ```ts
 * const options: Execute.Options = { poolSize: 10, retry: Execute.retryConnections }
 * const inProcess: Execute.Options = { mode: "fibers", poolSize: 50 }
 * ```
 *
 * @since 0.1.0
 */
export interface Options extends PoolOptions {
  /**
   * `parallel` runs in worker processes; `fibers` runs concurrently in this process, on
   * fibers; `serial` runs in this process, one after another. Default: `parallel`.
   */
  readonly mode?: "parallel" | "fibers" | "serial" | undefined
  /**
   * Stop at the first failure: runs still going are interrupted and runs not started are not
   * started (both come back as interrupted). Default: `false`, every run goes to its end.
   */
  readonly failFast?: boolean | undefined
  /**
   * How to retry a run that failed to connect (a `ConnectionError` other than `host-key`).
   * Other failures, such as `CommandFailed`, are never retried. Each retry is a new run of
   * the whole task. Default: none, since connecting already retries (`connectAttempts`);
   * {@link retryConnections} is a good schedule for hosts that are still booting.
   */
  readonly retry?: Schedule.Schedule<unknown, ConnectionError> | undefined
  /**
   * In `parallel`: when a worker dies with several runs in flight, run each of them once more,
   * alone, in a new worker process of its own, so that only the run that kills its worker
   * fails with {@link WorkerCrashed} and the bystanders get their own outcome. Those tasks then
   * start twice on their hosts, like a retry (`attempts` counts it). Set to `false` for tasks
   * that must never start twice: every run in flight on a dead worker then fails with
   * `WorkerCrashed`. Default: `true`.
   */
  readonly isolateCrashes?: boolean | undefined
}

/**
 * The end of one run for one value.
 *
 * @example
 * ```ts
 * const [first] = yield* Execute.forEach(build, ["amd64"])
 * if (Exit.isSuccess(first.exit)) yield* Effect.log(first.label, first.exit.value)
 * ```
 *
 * @since 0.1.0
 */
export interface Outcome<I, A, E> {
  readonly input: I
  /** How the run shows in output lines: the value when it is a string or number, else its position. */
  readonly label: string
  /** The typed success or failure of the run (interrupted when `failFast` stopped it). */
  readonly exit: Exit.Exit<A, E>
  /** How many times the task ran (more than 1 after retries). */
  readonly attempts: number
}

/**
 * The end of one run for one host.
 *
 * @example
 * ```ts
 * const results = yield* Execute.withHosts(deploy, hosts)
 * const slow = results.filter((r) => r.attempts > 1).map((r) => r.host)
 * ```
 *
 * @since 0.1.0
 */
export interface HostOutcome<A, E> {
  readonly host: string
  readonly exit: Exit.Exit<A, E>
  readonly attempts: number
}

/**
 * A schedule for hosts that may not accept connections yet (booting machines): 5 retries,
 * 1 s apart and doubling, as the original's deploy tool did (6 attempts in all).
 *
 * @example
 * ```ts
 * Execute.withHosts(deploy, hosts, { retry: Execute.retryConnections })
 * ```
 *
 * @since 0.1.0
 */
export const retryConnections: Schedule.Schedule<unknown, ConnectionError> = Schedule.exponential("1 second")
  .pipe(
    Schedule.upTo({ times: 5 })
  )

/**
 * `true` for a failure that another attempt may cure: a `ConnectionError` that is refused,
 * timed out, unknown host, authentication or disconnected. A changed host key is not: it
 * will not change by itself and may be an attack. The `retry` option retries only these.
 *
 * @example
 * ```ts
 * const retryLater = Execute.failures(results).filter((f) => Execute.isRetryable(f.error))
 * ```
 *
 * @since 0.1.0
 */
export const isRetryable: (error: unknown) => boolean = Runs.isRetryable

/**
 * The outcomes that failed with a typed error, each with its `error`.
 *
 * @example
 * ```ts
 * const results = yield* Execute.withHosts(deploy, hosts)
 * const unreachable = Execute.failures(results).filter((f) => f.error._tag === "ConnectionError")
 * yield* Execute.withHosts(deploy, unreachable.map((f) => f.host))
 * ```
 *
 * @since 0.1.0
 */
export const failures = <O extends { readonly exit: Exit.Exit<any, any> }>(
  outcomes: ReadonlyArray<O>
): Array<O & { readonly error: O["exit"] extends Exit.Exit<any, infer E> ? E : never }> => {
  const failed: Array<any> = []
  for (const outcome of outcomes) {
    if (Exit.isFailure(outcome.exit)) {
      const error = Cause.findErrorOption(outcome.exit.cause)
      if (error._tag === "Some") failed.push({ ...outcome, error: error.value })
    }
  }
  return failed
}

/**
 * The outcomes that succeeded, each with its `value`.
 *
 * @example
 * ```ts
 * const versions = Execute.successes(yield* Execute.withHosts(version, hosts)).map((s) => s.value)
 * ```
 *
 * @since 0.1.0
 */
export const successes = <O extends { readonly exit: Exit.Exit<any, any> }>(
  outcomes: ReadonlyArray<O>
): Array<O & { readonly value: O["exit"] extends Exit.Exit<infer A, any> ? A : never }> => {
  const succeeded: Array<any> = []
  for (const outcome of outcomes) {
    if (Exit.isSuccess(outcome.exit)) succeeded.push({ ...outcome, value: outcome.exit.value })
  }
  return succeeded
}

// -- running ----------------------------------------------------------------------------------

/**
 * What one run on a worker needs besides its task and input.
 *
 * @example
 * ```ts
 * const run: Execute.RunContext = { label: "web-1", settings: { ...settings, host: "web-1" }, output }
 * ```
 *
 * @interface
 * @since 0.1.0
 */
export type RunContext = RunTarget

/**
 * Worker processes for `parallel` runs, started once and shared by every `parallel` call made
 * while this service is provided: see {@link layerPool}.
 *
 * @example
 * ```ts
 * const pool = yield* Execute.WorkerPool
 * yield* Effect.log(`${pool.workers} workers, ${pool.poolSize} runs at once`)
 * ```
 *
 * @inlineType WorkerPoolShape
 * @since 0.1.0
 */
export class WorkerPool extends Context.Service<WorkerPool, WorkerPoolShape<PoolOptions>>()(
  "effect-threadbare/Execute/WorkerPool"
) {}

/**
 * Starts worker processes now and keeps them until the layer's scope closes: while it is
 * provided, every `parallel` call (`forEach`, `withHosts`, `parallel`) runs on these workers
 * instead of starting its own, so only the first run waits for a worker to come up.
 *
 * The pool's `poolSize` bounds the runs in flight of every call together; a call's own
 * `poolSize` bounds that call's runs (default: the pool's). A call's `workers`, `execArgv` and
 * `compileCache` are ignored: the pool's apply. A worker that dies is replaced in the pool.
 *
 * @example
 * ```ts
 * // declare: deploy: Task.Task<{ readonly release: string }, string, Task.OperationError>
 * const main = Effect.gen(function*() {
 *   yield* Execute.withHosts(check, hosts) // starts nothing: the workers are up
 *   yield* Execute.withHosts(deploy, hosts, { input: { release: "v42" } })
 * })
 * NodeRuntime.runMain(main.pipe(Effect.provide(Execute.layerPool({ poolSize: 10, workers: 2 }))))
 * ```
 *
 * @since 0.1.0
 */
export const layerPool = (options: PoolOptions = {}): Layer.Layer<WorkerPool> =>
  Layer.effect(WorkerPool, makeWorkerPool(options, whole(options.poolSize ?? os.availableParallelism())))

// The shared pool only serves `parallel`; other modes never look for it.
const sharedPool = (options: Options) =>
  (options.mode ?? "parallel") === "parallel"
    ? Effect.serviceOption(WorkerPool)
    : Effect.succeed(Option.none<WorkerPool["Service"]>())

const annotate = (task: Task<any, any, any>, count: number, options: Options) =>
  Effect.annotateCurrentSpan({
    task: task.name,
    runs: count,
    mode: options.mode ?? "parallel",
    poolSize: options.poolSize
  })

/**
 * Runs `task` once per value of `inputs` and returns every outcome, in the order of `inputs`.
 *
 * Reads the current settings (copied into each run) and `Output`. Never fails: each run's
 * failure is in its outcome, `WorkerCrashed` included.
 *
 * @example
 * ```ts
 * const outcomes = yield* Execute.forEach(build, ["amd64", "arm64"], { poolSize: 2 })
 * ```
 *
 * @since 0.1.0
 */
export const forEach: <I, A, E>(
  task: Task<I, A, E>,
  inputs: Iterable<I>,
  options?: Options
) => Effect.Effect<ReadonlyArray<Outcome<I, A, E | WorkerCrashed>>> = Effect.fn("Execute.forEach")(
  function*<I, A, E>(task: Task<I, A, E>, inputs: Iterable<I>, options: Options = {}) {
    const runs: Array<Runs.Run<I>> = Array.from(inputs, (input, index) => ({
      label: Runs.labelOf(input, index),
      input,
      patch: (s) => s
    }))
    yield* annotate(task, runs.length, options)
    const ended = yield* Runs.runAll(task, runs, options, yield* sharedPool(options))
    return ended.map((e, i): Outcome<I, A, E | WorkerCrashed> => ({
      input: runs[i]!.input,
      label: runs[i]!.label,
      ...e
    }))
  }
)

/**
 * Options of {@link withHosts}: {@link Options}, and the input every host's run gets
 * (required when the task takes one).
 *
 * @example
 * ```ts
 * // declare: deploy: Task.Task<{ readonly release: string }, string, Task.OperationError>
 * Execute.withHosts(deploy, hosts, { poolSize: 4, input: { release: "v42" } })
 * ```
 *
 * @since 0.1.0
 */
export type HostOptions<I> =
  & Options
  & ([I] extends [void] ? { readonly input?: I | undefined } : { readonly input: I })

/**
 * Runs `task` once per host, with the `host` setting set to it, and returns every host's
 * outcome in the order given (the original's `execute_with_hosts`, without its mix-ups). One
 * host's failure does not stop the others unless `failFast` is set. Without `hosts`, runs on
 * the `hosts` setting.
 *
 * Reads the current settings (copied into each run) and `Output`. Never fails: each host's
 * failure is in its outcome, `WorkerCrashed` included.
 *
 * @example
 * ```ts
 * const results = yield* Execute.withHosts(deploy, ["10.0.0.1", "10.0.0.2"], {
 *   poolSize: 10,
 *   retry: Execute.retryConnections
 * })
 * for (const { host, exit } of results) {
 *   yield* Effect.log(`${host}: ${Exit.isSuccess(exit) ? exit.value : Cause.pretty(exit.cause)}`)
 * }
 * ```
 *
 * @since 0.1.0
 */
export const withHosts: {
  <A, E>(
    task: Task<void, A, E>,
    hosts?: ReadonlyArray<string> | undefined,
    options?: HostOptions<void>
  ): Effect.Effect<ReadonlyArray<HostOutcome<A, E | WorkerCrashed>>>
  <I, A, E>(
    task: Task<I, A, E>,
    hosts: ReadonlyArray<string> | undefined,
    options: HostOptions<I>
  ): Effect.Effect<ReadonlyArray<HostOutcome<A, E | WorkerCrashed>>>
} = Effect.fn("Execute.withHosts")(function*(
  // The overloads above give the types; the body is the same for both.
  task: Task<any, any, any>,
  hosts?: ReadonlyArray<string> | undefined,
  options: Options & { readonly input?: unknown } = {}
) {
  yield* annotate(task, hosts?.length ?? 0, options)
  const targets = hosts ?? (yield* Settings).hosts
  const runs: Array<Runs.Run<unknown>> = targets.map((host) => ({
    label: host,
    input: options.input,
    patch: (s) => ({ ...s, host })
  }))
  const ended = yield* Runs.runAll(task, runs, options, yield* sharedPool(options))
  return ended.map((e, i): HostOutcome<unknown, unknown> => ({ host: targets[i]!, ...e }))
})

/**
 * Runs `task` once per value in this process, one after another, and returns the results in
 * order; the first failure stops it and is this effect's failure (the original's `@serial`).
 * For every outcome instead, use {@link forEach} with `mode: "serial"`.
 *
 * @example
 * ```ts
 * const versions = yield* Execute.serial(readVersion, ["api", "web"])
 * ```
 *
 * @since 0.1.0
 */
export const serial = <I, A, E>(
  task: Task<I, A, E>,
  inputs: Iterable<I>
): Effect.Effect<ReadonlyArray<A>, E> =>
  forEach(task, inputs, { mode: "serial", failFast: true }).pipe(
    Effect.flatMap((outcomes) => Runs.firstFailure(outcomes as ReadonlyArray<Outcome<I, A, E>>))
  )

/**
 * Runs `task` once per value in a pool of worker processes and returns the results in order;
 * the first failure interrupts the other runs and is this effect's failure (the original's
 * `@parallel`). For every outcome instead, use {@link forEach}.
 *
 * @example
 * ```ts
 * const sizes = yield* Execute.parallel(measure, paths, { poolSize: 4 })
 * ```
 *
 * @since 0.1.0
 */
export const parallel = <I, A, E>(
  task: Task<I, A, E>,
  inputs: Iterable<I>,
  options: Omit<Options, "mode" | "failFast"> = {}
): Effect.Effect<ReadonlyArray<A>, E | WorkerCrashed> =>
  forEach(task, inputs, { ...options, mode: "parallel", failFast: true }).pipe(
    Effect.flatMap(Runs.firstFailure)
  )

// -- rolling runs ------------------------------------------------------------------------------

/**
 * A batch size or a failure budget (declared, with its docs, in `internal/execute/batches.ts`).
 *
 * @since 0.2.0
 */
export type { Amount }

/**
 * A batch of a rolling run, as its `before` and `after` gates receive it.
 *
 * @example
 * ```ts
 * const drain = (batch: Execute.Batch) => Effect.forEach(batch.hosts, (host) => Effect.log(`drain ${host}`))
 * ```
 *
 * @interface
 * @since 0.2.0
 */
export type Batch = Rolling.Batch

/**
 * Options of {@link rolling}: how hosts are cut into batches, what may fail, what runs around
 * each batch; plus the {@link Options} of every batch (`mode`, `poolSize`, `retry`, ...) and the
 * task's `input` (required when it takes one).
 *
 * @example
 * ```ts
 * const options: Execute.RollingOptions<void> = { batches: [1, "25%", "100%"], maxFailures: "10%", pause: "30 seconds" }
 * ```
 *
 * @interface
 * @since 0.2.0
 */
export type RollingOptions<I, R = never> = Rolling.RollingOptions<I, R>

/**
 * Runs `task` on `hosts` batch after batch, as a rolling or blue-green deploy does, and returns
 * a {@link Report.Report} of every host and batch.
 *
 * `hosts` is a list cut by `batches` (`[1, "25%", "100%"]`: a canary, then a quarter of the
 * fleet at a time), or explicit groups (`[blue, green]`). Each batch runs like
 * {@link withHosts} (in workers by default, one pool for the whole run), between its `before`
 * and `after` gates. A failed gate, or failures over `maxFailures` (per batch) or
 * `maxFailuresTotal` (the whole run), stops the run: the batch's runs in flight are interrupted,
 * and every host not started is in the report as `not-started` with the reason. Fails only
 * with a `SettingsError` for bad options, before any host is touched.
 *
 * @example
 * ```ts
 * // declare: deploy: Task.Task<void, void, Errors.OperationError>
 * // declare: loadBalancer: { remove: (hosts: ReadonlyArray<string>) => Effect.Effect<void>; add: (hosts: ReadonlyArray<string>) => Effect.Effect<void> }
 * // declare: blue: ReadonlyArray<string>
 * // declare: green: ReadonlyArray<string>
 * const report = yield* Execute.rolling(deploy, [blue, green], {
 *   before: (batch) => loadBalancer.remove(batch.hosts),
 *   after: (batch) => loadBalancer.add(batch.hosts)
 * })
 * if (report.status === "stopped") yield* Effect.logError(report.reason)
 * ```
 *
 * @since 0.2.0
 */
export const rolling: {
  <A, E, R = never>(
    task: Task<void, A, E>,
    hosts: ReadonlyArray<string> | ReadonlyArray<ReadonlyArray<string>>,
    options?: RollingOptions<void, R>
  ): Effect.Effect<Report<A, E | WorkerCrashed>, SettingsError, R>
  <I, A, E, R = never>(
    task: Task<I, A, E>,
    hosts: ReadonlyArray<string> | ReadonlyArray<ReadonlyArray<string>>,
    options: RollingOptions<I, R>
  ): Effect.Effect<Report<A, E | WorkerCrashed>, SettingsError, R>
} = Effect.fn("Execute.rolling")(function*(
  task: Task<any, any, any>,
  hosts: ReadonlyArray<string> | ReadonlyArray<ReadonlyArray<string>>,
  options: RollingOptions<void, any> & { readonly input?: unknown } = {}
) {
  yield* annotate(task, hosts.length, options)
  return yield* Rolling.rolling(task, hosts, options, yield* sharedPool(options))
}) as any
