/**
 * A deploy program that can run in a worker process: a name, the module that declares it, an
 * effect per input, and the Schemas of its input, success and error, so that all three cross
 * the process boundary intact.
 *
 * A worker finds a task by importing its `module` and looking it up by `name`, so there is one
 * rule: **declare each task with {@link make} at the top level of a module that does not run your
 * program when it is imported** (a `tasks.ts` beside your `main.ts`, or an entry point guarded by
 * `if (import.meta.main)`). Give `module: import.meta.url`; the name must be unique within the
 * module.
 *
 * @example
 * ```ts
 * // tasks.ts
 * import { Effect, Schema } from "effect"
 * import { Errors, Operations, Task } from "effect-threadbare"
 *
 * export const uptime = Task.make({
 *   name: "uptime",
 *   module: import.meta.url,
 *   success: Schema.String,
 *   error: Errors.OperationError
 * }, () => Operations.remote("uptime").pipe(Effect.map((r) => r.stdout.trim())))
 *
 * // main.ts
 * const results = yield* Execute.withHosts(uptime, ["web-1", "web-2"], { poolSize: 2 })
 * ```
 *
 * @since 0.1.0
 * @module
 */
import type * as Effect from "effect/Effect"
import type * as FileSystem from "effect/FileSystem"
import type * as Path from "effect/Path"
import type * as ChildProcessSpawner from "effect/process/ChildProcessSpawner"
import * as Schema from "effect/Schema"
import type { SshConnections } from "./Ssh.ts"

const TypeId = "~effect-threadbare/Task" as const

/**
 * The services a task may use: Node's child processes and file system, and SSH connections.
 * A worker process provides them, with connections of its own that close when the run ends;
 * a task run in the program's own process gets the same, unless the program provides its own.
 *
 * @example
 * ```ts
 * const program: Effect.Effect<void, never, Task.Services> = Effect.void
 * ```
 *
 * @since 0.1.0
 */
export type Services =
  | ChildProcessSpawner.ChildProcessSpawner
  | FileSystem.FileSystem
  | Path.Path
  | SshConnections

/**
 * A schema whose values can be encoded to JSON and back with no services: `Schema.String`,
 * a `Schema.Struct`, a `Schema.TaggedError` class, `Schema.Union([...])`.
 *
 * @example
 * ```ts
 * const success: Task.Codec<{ readonly version: string }> = Schema.Struct({ version: Schema.String })
 * ```
 *
 * @since 0.1.0
 */
export type Codec<A> = Schema.Codec<A, any, never, never>

/**
 * A declared task. Run it with `Execute`, or call {@link Task.run} directly in the current
 * process.
 *
 * @example
 * ```ts
 * const direct: Effect.Effect<string, Errors.OperationError, Task.Services> = deploy.run({ version: "v1" })
 * ```
 *
 * @since 0.1.0
 */
export interface Task<in out I, in out A, in out E> {
  readonly [TypeId]: typeof TypeId
  /** The name the worker looks the task up by. */
  readonly name: string
  /** The URL of the module that declares the task (`import.meta.url`). */
  readonly module: string
  readonly input: Codec<I>
  readonly success: Codec<A>
  readonly error: Codec<E>
  /** The program itself. */
  readonly run: (input: I) => Effect.Effect<A, E, Services>
}

/**
 * Every error an operation of effect-threadbare can fail with, as one Schema: a convenient
 * `error` for tasks that let any of them through. It lives in `Errors` with the errors it
 * unites (`Errors.OperationError`); this name stays for existing programs.
 *
 * @example
 * ```ts
 * Task.make(
 *   { name: "deploy", module: import.meta.url, error: Task.OperationError },
 *   () => Operations.remote("./deploy.sh")
 * )
 * ```
 *
 * @since 0.1.0
 */
export { OperationError } from "./Errors.ts"

/**
 * Declares a task and registers it, so a worker that imports `module` can find it by `name`.
 *
 * `success`, `error` and `input` default to `Schema.Void`, `Schema.Never` and `Schema.Void`.
 * The types of the program are checked against them: a program that can fail with an error not
 * in `error` does not compile.
 *
 * @example
 * ```ts
 * export const deploy = Task.make({
 *   name: "deploy",
 *   module: import.meta.url,
 *   input: Schema.Struct({ version: Schema.String }),
 *   success: Schema.String,
 *   error: Errors.OperationError
 * }, ({ version }) => Operations.remote(`deploy ${version}`).pipe(Effect.map((r) => r.stdout)))
 * ```
 *
 * @since 0.1.0
 */
export const make = <I = void, A = void, E = never>(
  options: {
    readonly name: string
    readonly module: string
    readonly input?: Codec<I> | undefined
    readonly success?: Codec<A> | undefined
    readonly error?: Codec<E> | undefined
  },
  run: (input: NoInfer<I>) => Effect.Effect<NoInfer<A>, NoInfer<E>, Services>
): Task<I, A, E> => {
  const task: Task<I, A, E> = {
    [TypeId]: TypeId,
    name: options.name,
    module: options.module,
    input: options.input ?? (Schema.Void as unknown as Codec<I>),
    success: options.success ?? (Schema.Void as unknown as Codec<A>),
    error: options.error ?? (Schema.Never as unknown as Codec<E>),
    run
  }
  return task
}

/**
 * `true` for a value made by {@link make}.
 *
 * @example
 * ```ts
 * Task.isTask(deploy) // true
 * ```
 *
 * @since 0.1.0
 */
export const isTask = (u: unknown): u is Task<unknown, unknown, unknown> =>
  typeof u === "object" && u !== null && TypeId in u

/**
 * The task named `name` among the exports of a task module (what `import(module)` gives). A
 * worker imports the module a run names and finds its task here: a task is found by what its
 * module exports, so no registry outlives anything.
 *
 * @example
 * ```ts
 * // declare: exports: Record<string, unknown>
 * const found = Task.find(exports, "deploy")
 * ```
 *
 * @since 0.1.0
 */
export const find = (
  exports: Readonly<Record<string, unknown>>,
  name: string
): Task<unknown, unknown, unknown> | undefined => {
  for (const value of Object.values(exports)) {
    if (isTask(value) && value.name === name) return value
  }
  return undefined
}
