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
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as NodeWorker from "@effect/platform-node/NodeWorker"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Pool from "effect/Pool"
import * as RpcClient from "effect/rpc/RpcClient"
import type * as RpcClientError from "effect/rpc/RpcClientError"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import * as Stream from "effect/Stream"
import * as ChildProcess from "node:child_process"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import type { ConnectionError } from "./Errors.ts"
import { exitCodec, inWorkerKey, WorkerRpcs } from "./internal/execute/workerProtocol.ts"
import * as WorkerSettings from "./internal/execute/workerSettings.ts"
import * as Watchdog from "./internal/execute/workerWatchdog.ts"
import { Output, type Writer } from "./Output.ts"
import { Settings } from "./Settings.ts"
import * as Ssh from "./Ssh.ts"
import type { Task } from "./Task.ts"

/**
 * A worker process died during a run (killed, out of memory, `process.exit` in the task).
 * Every run in flight on that worker fails with one, for its own host; the pool starts a new
 * worker for later runs. `runsInFlight` tells them apart: 1 means the run was alone on its
 * worker (it is the one that killed it); more means it may only have been a bystander, which
 * `isolateCrashes` (on by default) runs once more, alone, before giving up.
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
export class WorkerCrashed extends Schema.TaggedError<WorkerCrashed>()("WorkerCrashed", {
  /** The host of the run, or the label of its value. */
  host: Schema.String,
  task: Schema.String,
  /** The worker's exit code, or `null` when a signal ended it. */
  exitCode: Schema.NullOr(Schema.Number),
  /** The signal that ended the worker (`"SIGKILL"`, ...), or `null`. */
  signal: Schema.NullOr(Schema.String),
  /** How many runs the worker had in flight when it died, this one included. */
  runsInFlight: Schema.Number,
  detail: Schema.String
}) {
  override get message(): string {
    const ending = this.signal !== null
      ? `signal ${this.signal}`
      : this.exitCode !== null
      ? `exit code ${this.exitCode}`
      : "an unknown cause"
    const shared = this.runsInFlight > 1 ? ` with ${this.runsInFlight} runs in flight` : ""
    return `[${this.host}] the worker running task ${this.task} died (${ending})${shared}: ${this.detail}\n` +
      `Look for a process.exit or a crash in the task; a SIGKILL often means the out-of-memory killer.`
  }
}

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
export const isRetryable = (error: unknown): boolean =>
  typeof error === "object" && error !== null && (error as { _tag?: unknown })._tag === "ConnectionError" &&
  (error as ConnectionError).reason !== "host-key"

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

interface Run<I> {
  readonly label: string
  readonly input: I
  readonly patch: (settings: Settings) => Settings
}

interface Ended<A, E> {
  readonly exit: Exit.Exit<A, E>
  readonly attempts: number
}

const labelOf = (input: unknown, index: number): string =>
  typeof input === "string" || typeof input === "number" || typeof input === "bigint"
    ? String(input)
    : `#${index + 1}`

// Lines that already name their host (remote output, `[web-1] out: ...`) are kept as they are;
// others (local commands, bare lines) get the host in front, so parallel output stays readable.
const prefixed = (label: string, text: string): string => {
  const line = text.endsWith("\n") ? text.slice(0, -1) : text
  return line.startsWith(`[${label}]`) ? `${line}\n` : `[${label}] ${line}\n`
}

const prefixing = (output: Writer, label: string): Writer => ({
  write: (text) => output.write(prefixed(label, text))
})

// The worker entry beside this module, in the same form: `.ts` when running from source (tsx,
// Node's type stripping, vitest), `.js` when compiled.
const workerEntry = (): string => {
  const here = fileURLToPath(import.meta.url)
  return path.join(path.dirname(here), "internal", "execute", `workerMain${path.extname(here)}`)
}

// In the user's own cache directory, not a shared temp dir: compiled code found there is run.
const defaultCompileCache = (): string =>
  path.join(
    process.env["XDG_CACHE_HOME"] ?? path.join(os.homedir(), ".cache"),
    "effect-threadbare",
    "compile-cache"
  )

interface Slot {
  readonly client: RpcClient.FromGroup<typeof WorkerRpcs, RpcClientError.RpcClientError>
  /** The slot's current worker process. */
  child: ChildProcess.ChildProcess | undefined
  /** Runs in flight on the slot's worker. */
  inFlight: number
  /** How the slot's last worker process ended, read when a run fails with the protocol. */
  ended:
    | { readonly code: number | null; readonly signal: string | null; readonly runsInFlight: number }
    | undefined
  /**
   * The check (and, if need be, the stop) of a worker whose runs were interrupted, shared by every
   * run interrupted on it meanwhile: one ping, one stop, however many runs it held.
   */
  stopping: { readonly child: ChildProcess.ChildProcess; readonly done: Effect.Effect<void> } | undefined
}

// One worker process with an RPC client of its own, taking up to `concurrency` runs at once.
// The protocol fails every call in flight on a client when one of its workers dies, so a
// client per process keeps a crash to the runs on that process. The protocol starts a new
// process in the slot after a crash.
const makeSlot = (
  execArgv: ReadonlyArray<string>,
  concurrency: number,
  compileCache: string
): Effect.Effect<Slot, never, Scope.Scope> =>
  Effect.gen(function*() {
    const state: Omit<Slot, "client"> = {
      child: undefined,
      inFlight: 0,
      ended: undefined,
      stopping: undefined
    }
    const spawn = () => {
      state.ended = undefined
      // The cache directory is the entry's only argument ("" for none).
      const child = ChildProcess.fork(workerEntry(), [compileCache], {
        execArgv: [...execArgv],
        // Workers never read the terminal (prompts are refused); their own stdout and stderr
        // (logs, stray console output) go where ours go.
        stdio: ["ignore", "inherit", "inherit", "ipc"]
      })
      // The worker notices its parent's death on its event loop, which a task looping on the
      // CPU never lets turn: a watchdog beside it stops it (and what it started) without it.
      const watchdog = child.pid === undefined ? undefined : Watchdog.watch(child.pid)
      // Registered before the worker platform's listener, so it is set when the failure arrives.
      child.once("exit", (code, signal) => {
        state.ended = { code, signal, runsInFlight: state.inFlight }
        watchdog?.kill("SIGTERM")
      })
      state.child = child
      return child
    }
    const protocol = yield* Layer.build(
      RpcClient.layerProtocolWorker({ size: 1, concurrency }).pipe(Layer.provide(NodeWorker.layer(spawn)))
    ).pipe(Effect.orDie)
    const client = yield* RpcClient.make(WorkerRpcs).pipe(Effect.provide(protocol))
    return Object.assign(state, { client })
  })

/**
 * After one of its runs is interrupted, a worker has `answerGrace` to answer a ping, then
 * `Watchdog.killGraceMillis` (1 s) between SIGTERM and SIGKILL: RELIABILITY.md states the sum
 * as the bound.
 */
const answerGrace = Duration.seconds(1)
// A stop that has not ended by then (a process table that cannot be read) falls back on
// killing the worker alone.
const stopBound = Duration.seconds(10)

const awaitExit = (child: ChildProcess.ChildProcess): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    if (hasExited(child)) return resume(Effect.void)
    const onExit = () => resume(Effect.void)
    child.once("exit", onExit)
    return Effect.sync(() => child.off("exit", onExit))
  })

// An interrupted run stops in its worker only when the worker reads the interrupt. A task that
// loops on the CPU never lets it, and would keep its worker (and, in a shared pool, its slot)
// busy for ever: a worker that does not answer a ping in time is stopped from outside, SIGTERM
// first (a worker whose loop turns again stops its tasks cleanly on it), SIGKILL after
// `Watchdog.killGraceMillis`. Its local commands run in process groups of their own, which its
// death would leave running: they get the same signals (`Watchdog.stop`). The slot's protocol
// starts a new worker for later runs.
const stopIfUnresponsive = (slot: Slot): Effect.Effect<void> =>
  Effect.gen(function*() {
    const child = slot.child
    if (child === undefined || hasExited(child)) return
    if (slot.stopping?.child !== child) {
      slot.stopping = {
        child,
        done: yield* Effect.cached(
          checkOrStop(slot, child).pipe(Effect.ensuring(Effect.sync(() => void (slot.stopping = undefined))))
        )
      }
    }
    yield* slot.stopping.done
  })

const hasExited = (child: ChildProcess.ChildProcess): boolean =>
  child.exitCode !== null || child.signalCode !== null

const checkOrStop = (slot: Slot, child: ChildProcess.ChildProcess): Effect.Effect<void> =>
  Effect.gen(function*() {
    // A failed ping (the worker died, the client closed) is an answer too: nothing to kill.
    const answer = yield* slot.client.Ping().pipe(
      Effect.exit,
      Effect.interruptible,
      Effect.timeoutOption(answerGrace)
    )
    if (Option.isSome(answer)) return
    // Exited meanwhile: its pid may already belong to another process.
    if (child.pid !== undefined && !hasExited(child)) {
      yield* Effect.timeoutOption(Watchdog.stop(child.pid), stopBound)
    }
    yield* Effect.sync(() => {
      if (!hasExited(child)) child.kill("SIGKILL")
    })
    yield* awaitExit(child)
  })

const runInWorker = <I, A, E>(
  slot: Slot,
  task: Task<I, A, E>,
  input: I,
  run: RunContext
): Effect.Effect<A, E | WorkerCrashed> =>
  Effect.gen(function*() {
    const encoded = yield* Schema.encodeEffect(Schema.toCodecJson(task.input))(input).pipe(Effect.orDie)
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
          settings: WorkerSettings.encode(run.settings)
        }).pipe(
          Stream.runForEach((event) =>
            event._tag === "Line" ? run.output.write(prefixed(run.label, event.text)) : Effect.sync(() => {
              done = event.exit
            })
          ),
          Effect.catchTag("RpcClientError", (error) => Effect.fail(crashed(error.message)))
        ),
      () => Effect.sync(() => slot.inFlight--)
    ).pipe(Effect.onInterrupt(() => stopIfUnresponsive(slot)))
    if (done === undefined) return yield* crashed("the worker ended the run without an outcome")
    const exit = yield* Schema.decodeUnknownEffect(exitCodec(task.success, task.error))(done).pipe(
      Effect.orDie
    )
    return yield* exit
  })

/**
 * What one run on a worker needs besides its task and input.
 *
 * @example
 * ```ts
 * const run: Execute.RunContext = { label: "web-1", settings: { ...settings, host: "web-1" }, output }
 * ```
 *
 * @since 0.1.0
 */
export interface RunContext {
  /** The host or label the run's output lines are prefixed with. */
  readonly label: string
  /** The run's settings, sent to the worker as they are. */
  readonly settings: Settings
  /** Where the run's output lines go. */
  readonly output: Writer
}

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
 * @since 0.1.0
 */
export class WorkerPool extends Context.Service<WorkerPool, {
  /** The most runs in flight at once on the pool, every call together. */
  readonly poolSize: number
  /** How many worker processes the pool keeps. */
  readonly workers: number
  /** The options the pool was made with (runs re-run alone by `isolateCrashes` start with them). */
  readonly options: PoolOptions
  /**
   * Runs `task` once on a worker of the pool, waiting for room within its bounds. Fails with
   * the task's error, or `WorkerCrashed` when the worker dies.
   */
  readonly run: <I, A, E>(
    task: Task<I, A, E>,
    input: I,
    run: RunContext
  ) => Effect.Effect<A, E | WorkerCrashed>
}>()("effect-threadbare/Execute/WorkerPool") {}

const whole = (n: number): number => (Number.isNaN(n) ? 1 : Math.max(1, Math.floor(n)))

const makeWorkerPool = (
  options: PoolOptions,
  poolSize: number
): Effect.Effect<WorkerPool["Service"], never, Scope.Scope> =>
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

// In this process the task still gets the services a worker would give it; the caller's own
// (a test's spawner, an SSH connection service) win over those defaults. Without the caller's
// SSH connections, each run has its own, closed when it ends, as in a worker.
const runInProcess = <I, A, E>(
  task: Task<I, A, E>,
  input: I,
  run: RunContext,
  caller: Context.Context<never>
): Effect.Effect<A, E> =>
  task.run(input).pipe(
    Effect.provideService(Settings, run.settings),
    Effect.provideService(Output, prefixing(run.output, run.label)),
    Effect.scoped,
    Effect.provide(caller),
    Effect.provide(Layer.merge(Ssh.layer, NodeServices.layer))
  ) as Effect.Effect<A, E>

// A run whose worker died while other runs shared it: it may not be the one that killed it.
const isBystander = (error: unknown): error is WorkerCrashed =>
  error instanceof WorkerCrashed && error.runsInFlight > 1

const runAll = <I, A, E>(
  task: Task<I, A, E>,
  runs: ReadonlyArray<Run<I>>,
  options: Options
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
    const caller = yield* Effect.context<never>()
    const mode = options.mode ?? "parallel"
    const shared = mode === "parallel" ? yield* Effect.serviceOption(WorkerPool) : Option.none()
    const poolSize = Math.min(
      whole(options.poolSize ?? (shared._tag === "Some" ? shared.value.poolSize : os.availableParallelism())),
      Math.max(1, runs.length)
    )
    const contextOf = (run: Run<I>): RunContext => ({
      label: run.label,
      settings: run.patch(settings),
      output
    })

    let runOnce: (run: Run<I>) => Effect.Effect<A, E | WorkerCrashed>
    // A run again, alone in a worker of its own (isolateCrashes, parallel only).
    let runAlone: ((run: Run<I>) => Effect.Effect<A, E | WorkerCrashed>) | undefined
    if (mode === "parallel") {
      const pool = shared._tag === "Some" ? shared.value : yield* makeWorkerPool(options, poolSize)
      runOnce = (run) => pool.run(task, run.input, contextOf(run))
      if (options.isolateCrashes ?? true) {
        const alone = { ...pool.options, workers: 1 }
        runAlone = (run) =>
          Effect.scoped(
            Effect.flatMap(makeWorkerPool(alone, 1), (single) => single.run(task, run.input, contextOf(run)))
          )
      }
    } else if (mode === "fibers") {
      // As in a worker: a copy of the settings, prompts refused (runs share one terminal).
      runOnce = (run) => {
        const context = contextOf(run)
        return runInProcess(task, run.input, {
          ...context,
          settings: { ...context.settings, abortOnPrompts: true }
        }, caller)
      }
    } else {
      runOnce = (run) => runInProcess(task, run.input, contextOf(run), caller)
    }

    const ended: Array<Ended<A, E | WorkerCrashed> | undefined> = runs.map(() => undefined)
    const one = (run: Run<I>, index: number) => {
      let attempts = 0
      const counted = (f: (run: Run<I>) => Effect.Effect<A, E | WorkerCrashed>) =>
        Effect.suspend(() => {
          attempts++
          return f(run)
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
      return Effect.exit(retried).pipe(
        Effect.flatMap((exit) => {
          ended[index] = { exit, attempts }
          // With failFast, failing this fiber makes forEach interrupt the others.
          return options.failFast === true && Exit.isFailure(exit) ? Effect.fail(exit) : Effect.void
        })
      )
    }
    if (runs.length > 0) {
      const concurrency = mode === "serial" ? 1 : poolSize
      yield* Effect.forEach(runs, one, { concurrency, discard: true }).pipe(Effect.ignore)
    }
    return ended.map((e) => e ?? { exit: Exit.interrupt(), attempts: 0 })
  }))

const withSpan = <A>(name: string, task: Task<any, any, any>, count: number, options: Options) =>
  Effect.withSpan(name, {
    attributes: { task: task.name, runs: count, mode: options.mode ?? "parallel", poolSize: options.poolSize }
  })<A, never, never>

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
export const forEach = <I, A, E>(
  task: Task<I, A, E>,
  inputs: Iterable<I>,
  options: Options = {}
): Effect.Effect<ReadonlyArray<Outcome<I, A, E | WorkerCrashed>>> => {
  const runs: Array<Run<I>> = Array.from(inputs, (input, index) => ({
    label: labelOf(input, index),
    input,
    patch: (s) => s
  }))
  return runAll(task, runs, options).pipe(
    Effect.map((ended) => ended.map((e, i) => ({ input: runs[i]!.input, label: runs[i]!.label, ...e }))),
    withSpan("Execute.forEach", task, runs.length, options)
  )
}

/**
 * Options of {@link withHosts}: {@link Options}, and the input every host's run gets
 * (required when the task takes one).
 *
 * @example
 * ```ts
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
} = <I, A, E>(
  task: Task<I, A, E>,
  hosts?: ReadonlyArray<string> | undefined,
  options: Options & { readonly input?: I | undefined } = {}
): Effect.Effect<ReadonlyArray<HostOutcome<A, E | WorkerCrashed>>> =>
  Effect.gen(function*() {
    const targets = hosts ?? (yield* Settings).hosts
    const runs: Array<Run<I>> = targets.map((host) => ({
      label: host,
      input: options.input as I,
      patch: (s) => ({ ...s, host })
    }))
    const ended = yield* runAll(task, runs, options)
    return ended.map((e, i) => ({ host: targets[i]!, ...e }))
  }).pipe(withSpan("Execute.withHosts", task, hosts?.length ?? 0, options))

const firstFailure = <I, A, E>(
  outcomes: ReadonlyArray<Outcome<I, A, E>>
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
    Effect.flatMap((outcomes) => firstFailure(outcomes as ReadonlyArray<Outcome<I, A, E>>))
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
  forEach(task, inputs, { ...options, mode: "parallel", failFast: true }).pipe(Effect.flatMap(firstFailure))
