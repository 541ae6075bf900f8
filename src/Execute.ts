/**
 * Runs a {@link Task} once per host or per value: one after another in this process, or in a
 * bounded pool of worker processes (the original's `execute`, `execute_with_hosts`, `@serial`
 * and `@parallel`).
 *
 * In parallel, each run gets a copy of the current settings (plus its host) with prompts
 * refused, in a worker process that is reused for later runs. Results come back in the order
 * the hosts or values were given, each with its typed success or failure. Output lines the
 * task prints arrive here live, whole, and prefixed with their host. A worker that dies fails
 * only its own run, with {@link WorkerCrashed}. Interrupting the returned effect (a timeout,
 * Ctrl-C under `NodeRuntime.runMain`) interrupts every task, whose finalizers stop their local
 * and remote commands, and then ends the workers.
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
 * })
 * NodeRuntime.runMain(main)
 * ```
 *
 * @since 0.1.0
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as NodeWorker from "@effect/platform-node/NodeWorker"
import * as Cause from "effect/Cause"
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Pool from "effect/Pool"
import * as RpcClient from "effect/rpc/RpcClient"
import type * as RpcClientError from "effect/rpc/RpcClientError"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as ChildProcess from "node:child_process"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import type { ConnectionError } from "./Errors.ts"
import { exitCodec, inWorkerKey, WorkerRpcs } from "./internal/workerProtocol.ts"
import * as WorkerSettings from "./internal/workerSettings.ts"
import { Output, type Writer } from "./Output.ts"
import { Settings } from "./Settings.ts"
import * as Ssh from "./Ssh.ts"
import type { Task } from "./Task.ts"

/**
 * A worker process died during a run (killed, out of memory, `process.exit` in the task).
 * Only that run fails; the pool starts a new worker for later runs.
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
  detail: Schema.String
}) {
  override get message(): string {
    const ending = this.signal !== null
      ? `signal ${this.signal}`
      : this.exitCode !== null
      ? `exit code ${this.exitCode}`
      : "an unknown cause"
    return `[${this.host}] the worker running task ${this.task} died (${ending}): ${this.detail}\n` +
      `Look for a process.exit or a crash in the task; a SIGKILL often means the out-of-memory killer.`
  }
}

/**
 * How a batch of runs is executed.
 *
 * @example
 * ```ts
 * const options: Execute.Options = { poolSize: 10, retry: Execute.retryConnections }
 * ```
 *
 * @since 0.1.0
 */
export interface Options {
  /**
   * `parallel` runs in worker processes; `serial` runs in this process, one after another.
   * Default: `parallel`.
   */
  readonly mode?: "parallel" | "serial" | undefined
  /**
   * How many worker processes run at once (and so how many runs). Never more than the number
   * of runs. Default: the number of CPUs.
   */
  readonly poolSize?: number | undefined
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
   * The Node options of worker processes. Default: this process's `execArgv`, so a loader
   * such as `tsx` (`--import tsx`) is active in workers too.
   */
  readonly execArgv?: ReadonlyArray<string> | undefined
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
  return path.join(path.dirname(here), "internal", `workerMain${path.extname(here)}`)
}

interface Slot {
  readonly client: RpcClient.FromGroup<typeof WorkerRpcs, RpcClientError.RpcClientError>
  /** How the slot's last worker process ended, read when a run fails with the protocol. */
  readonly ended: () => { readonly code: number | null; readonly signal: string | null } | undefined
}

// One worker process with an RPC client of its own. The protocol fails every call in flight
// on a client when one of its workers dies, so sharing one client across the pool would turn
// one crash into a failure for every host; one client per process keeps a crash to its run.
// The protocol starts a new process in the slot after a crash.
const makeSlot = (execArgv: ReadonlyArray<string>): Effect.Effect<Slot, never, Scope.Scope> =>
  Effect.gen(function*() {
    let ended: { code: number | null; signal: string | null } | undefined
    const spawn = () => {
      ended = undefined
      const child = ChildProcess.fork(workerEntry(), [], {
        execArgv: [...execArgv],
        // Workers never read the terminal (prompts are refused); their own stdout and stderr
        // (logs, stray console output) go where ours go.
        stdio: ["ignore", "inherit", "inherit", "ipc"]
      })
      // Registered before the worker platform's listener, so it is set when the failure arrives.
      child.once("exit", (code, signal) => {
        ended = { code, signal }
      })
      return child
    }
    const protocol = yield* Layer.build(
      RpcClient.layerProtocolWorker({ size: 1 }).pipe(Layer.provide(NodeWorker.layer(spawn)))
    ).pipe(Effect.orDie)
    const client = yield* RpcClient.make(WorkerRpcs).pipe(Effect.provide(protocol))
    return { client, ended: () => ended }
  })

const runInWorker = <I, A, E>(
  slot: Slot,
  task: Task<I, A, E>,
  run: Run<I>,
  settings: Settings,
  output: Writer
): Effect.Effect<A, E | WorkerCrashed> =>
  Effect.gen(function*() {
    const input = yield* Schema.encodeEffect(Schema.toCodecJson(task.input))(run.input).pipe(Effect.orDie)
    let done: unknown = undefined
    const crashed = (detail: string) => {
      const ended = slot.ended()
      return new WorkerCrashed({
        host: run.label,
        task: task.name,
        exitCode: ended?.code ?? null,
        signal: ended?.signal ?? null,
        detail
      })
    }
    yield* slot.client.Run({
      module: task.module,
      name: task.name,
      input: input as Schema.Json,
      // Secrets are revealed here, inside the IPC message only; the worker wraps them again.
      settings: WorkerSettings.encode(run.patch(settings))
    }).pipe(
      Stream.runForEach((event) =>
        event._tag === "Line" ? output.write(prefixed(run.label, event.text)) : Effect.sync(() => {
          done = event.exit
        })
      ),
      Effect.catchTag("RpcClientError", (error) => Effect.fail(crashed(error.message)))
    )
    if (done === undefined) return yield* crashed("the worker ended the run without an outcome")
    const exit = yield* Schema.decodeUnknownEffect(exitCodec(task.success, task.error))(done).pipe(
      Effect.orDie
    )
    return yield* exit
  })

// In this process the task still gets the services a worker would give it; the caller's own
// (a test's spawner, an SSH connection service) win over those defaults.
const runInProcess = <I, A, E>(
  task: Task<I, A, E>,
  run: Run<I>,
  settings: Settings,
  output: Writer,
  caller: Context.Context<never>
): Effect.Effect<A, E> =>
  task.run(run.input).pipe(
    Effect.provideService(Settings, run.patch(settings)),
    Effect.provideService(Output, prefixing(output, run.label)),
    Effect.scoped,
    Effect.provide(caller),
    Effect.provide(Layer.merge(Ssh.layer, NodeServices.layer))
  ) as Effect.Effect<A, E>

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
    const parallel = (options.mode ?? "parallel") === "parallel"
    const size = Math.max(1, Math.min(options.poolSize ?? os.availableParallelism(), runs.length))

    let runOnce: (run: Run<I>) => Effect.Effect<A, E | WorkerCrashed>
    if (parallel && runs.length > 0) {
      const pool = yield* Pool.make({ acquire: makeSlot(options.execArgv ?? process.execArgv), size })
      runOnce = (run) =>
        Effect.scoped(
          Effect.flatMap(Pool.get(pool), (slot) => runInWorker(slot, task, run, settings, output))
        )
    } else {
      runOnce = (run) => runInProcess(task, run, settings, output, caller)
    }

    const ended: Array<Ended<A, E | WorkerCrashed> | undefined> = runs.map(() => undefined)
    const one = (run: Run<I>, index: number) => {
      let attempts = 0
      const attempt = Effect.suspend(() => {
        attempts++
        return runOnce(run)
      })
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
    yield* Effect.forEach(runs, one, { concurrency: parallel ? size : 1, discard: true }).pipe(Effect.ignore)
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
