/**
 * The report of a run over hosts (`Execute.rolling`): for every host its batch, how it ended
 * (its typed success or error), attempts, duration and last output lines, or why it never
 * started; for every batch its hosts, failures against its budget, and its gates.
 *
 * A report is a Schema made from the task's own Schemas ({@link schema}), so it is written to a
 * file and read back with its errors still typed ({@link write}, {@link read}), and a later run
 * can take only the hosts a stopped deploy left unfinished ({@link pending}).
 *
 * @example
 * ```ts
 * // declare: deploy: Task.Task<void, void, Errors.OperationError>
 * // declare: hosts: ReadonlyArray<string>
 * const report = yield* Execute.rolling(deploy, hosts, { batches: [1, "25%", "100%"] })
 * yield* Report.write(deploy, "deploy-report.json", report)
 * // later, or in another process:
 * const last = yield* Report.read(deploy, "deploy-report.json")
 * yield* Execute.rolling(deploy, Report.pending(last))
 * ```
 *
 * @since 0.2.0
 * @module
 */
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import * as Schema from "effect/Schema"
import * as NodePath from "node:path"
import { WorkerCrashed } from "./Errors.ts"
import type { HostStatus } from "./internal/events/event.ts"
import * as Events from "./internal/events/event.ts"
import * as Files from "./internal/local/files.ts"
import type { Task } from "./Task.ts"

/**
 * How a batch's `before` or `after` gate went: `skipped` when there is no such gate or the
 * batch never reached it.
 *
 * @example
 * ```ts
 * const gate: Report.GateOutcome = { status: "failed", message: "web-1 is still in the pool", durationMillis: 30000 }
 * ```
 *
 * @since 0.2.0
 */
export interface GateOutcome {
  readonly status: "passed" | "failed" | "skipped"
  readonly message?: string | undefined
  readonly durationMillis: number
}

/**
 * One batch of a rolling run.
 *
 * @example
 * ```ts
 * // declare: report: Report.Report<void, Errors.OperationError>
 * const over = report.batches.filter((b) => b.failures > b.allowedFailures)
 * ```
 *
 * @since 0.2.0
 */
export interface BatchReport {
  /** Its position, from 1. */
  readonly batch: number
  readonly hosts: ReadonlyArray<string>
  /** `passed`: within its budget and gates; `failed`: over budget or a gate failed; `not-started`. */
  readonly status: "passed" | "failed" | "not-started"
  /** Hosts of the batch that failed (interrupted ones not counted). */
  readonly failures: number
  /** The most failures the batch may have and still pass. */
  readonly allowedFailures: number
  readonly before: GateOutcome
  readonly after: GateOutcome
  readonly durationMillis: number
}

/**
 * One host of a run.
 *
 * @example
 * ```ts
 * // declare: report: Report.Report<void, Errors.OperationError>
 * for (const host of report.hosts) if (host.status === "not-started") console.log(host.host, host.reason)
 * ```
 *
 * @since 0.2.0
 */
export interface HostReport<A, E> {
  readonly host: string
  /** The batch it belongs to, from 1. */
  readonly batch: number
  readonly status: HostStatus
  /** Its typed outcome; absent when it never started. */
  readonly exit?: Exit.Exit<A, E> | undefined
  /** Why it never started, or why it was interrupted. */
  readonly reason?: string | undefined
  /** How many times the task started on it (0 when it never started). */
  readonly attempts: number
  readonly durationMillis: number
  /** The last lines it printed. */
  readonly output: ReadonlyArray<string>
}

/**
 * The report of a run.
 *
 * @example
 * ```ts
 * // declare: report: Report.Report<void, Errors.OperationError>
 * if (report.status === "stopped") yield* Effect.logError(`stopped: ${report.reason}`)
 * ```
 *
 * @since 0.2.0
 */
export interface Report<A, E> {
  readonly task: string
  /** `stopped` when a gate or a failure budget ended the run before its last batch. */
  readonly status: "completed" | "stopped"
  readonly reason?: string | undefined
  /** Milliseconds since the epoch. */
  readonly startedAt: number
  readonly durationMillis: number
  readonly hosts: ReadonlyArray<HostReport<A, E>>
  readonly batches: ReadonlyArray<BatchReport>
}

const Gate = Schema.Struct({
  status: Schema.Literals(["passed", "failed", "skipped"]),
  message: Schema.optional(Schema.String),
  durationMillis: Schema.Number
})

/**
 * The Schema of a report of `task`, made from the task's Schemas: its successes and typed
 * errors (and `WorkerCrashed`) are encoded as the task encodes them, defects as their message
 * and stack. Use it with
 * `Schema.toCodecJson` for JSON, or through {@link write} and {@link read}.
 *
 * @example
 * ```ts
 * // declare: deploy: Task.Task<void, void, Errors.OperationError>
 * // declare: report: Report.Report<void, Errors.OperationError>
 * const json = Schema.encodeSync(Schema.toCodecJson(Report.schema(deploy)))(report)
 * ```
 *
 * @since 0.2.0
 */
export const schema = <A, E>(
  task: Pick<Task<any, A, E>, "success" | "error">
): Schema.Codec<Report<A, E | WorkerCrashed>, unknown> =>
  Schema.Struct({
    task: Schema.String,
    status: Schema.Literals(["completed", "stopped"]),
    reason: Schema.optional(Schema.String),
    startedAt: Schema.Number,
    durationMillis: Schema.Number,
    hosts: Schema.Array(Schema.Struct({
      host: Schema.String,
      batch: Schema.Number,
      status: Events.HostStatus,
      // A worker that died is a failure of every task, whatever its own errors.
      exit: Schema.optional(
        Schema.Exit(
          task.success,
          Schema.Union([task.error, WorkerCrashed]),
          Schema.Defect({ includeStack: true })
        )
      ),
      reason: Schema.optional(Schema.String),
      attempts: Schema.Number,
      durationMillis: Schema.Number,
      output: Schema.Array(Schema.String)
    })),
    batches: Schema.Array(Schema.Struct({
      batch: Schema.Number,
      hosts: Schema.Array(Schema.String),
      status: Schema.Literals(["passed", "failed", "not-started"]),
      failures: Schema.Number,
      allowedFailures: Schema.Number,
      before: Gate,
      after: Gate,
      durationMillis: Schema.Number
    }))
  }) as unknown as Schema.Codec<Report<A, E | WorkerCrashed>, unknown>

/**
 * A report could not be written or read: the file, and what went wrong.
 *
 * @example
 * ```ts
 * // declare: deploy: Task.Task<void, void, Errors.OperationError>
 * Report.read(deploy, "missing.json").pipe(Effect.catchTag("ReportError", (e) => Effect.logError(e.message)))
 * ```
 *
 * @since 0.2.0
 */
export class ReportError extends Schema.TaggedError<ReportError>()("ReportError", {
  path: Schema.String,
  detail: Schema.String
}) {
  override get message(): string {
    return `report ${this.path}: ${this.detail}`
  }
}

const codec = <A, E>(task: Pick<Task<any, A, E>, "success" | "error">) =>
  Schema.fromJsonString(Schema.toCodecJson(schema(task)))

const kindOf = (
  info: { isSymbolicLink(): boolean; isDirectory(): boolean; isFIFO(): boolean; isSocket(): boolean }
) =>
  info.isSymbolicLink()
    ? "a symbolic link"
    : info.isDirectory()
    ? "a directory"
    : info.isFIFO()
    ? "a FIFO"
    : info.isSocket()
    ? "a socket"
    : "a device"

/**
 * Checks that a report can be written to `path`: its directory exists, and nothing is there but
 * a regular file. {@link write} replaces its file whole, by a rename, so it refuses to replace a
 * symbolic link (`/dev/stdout` is one), a FIFO or a device with a file. Call it before a long run,
 * so that a mistyped path fails before any host is touched.
 *
 * @example
 * ```ts
 * yield* Report.checkPath("reports/deploy.json") // fails with ReportError if it cannot be written
 * ```
 *
 * @since 0.2.0
 */
export const checkPath = (path: string): Effect.Effect<void, ReportError> =>
  Effect.suspend(() => {
    const refuse = (detail: string) => Effect.fail(new ReportError({ path, detail }))
    // Both would pass the checks below (nothing there, the directory `.`) and fail only at the rename.
    if (path === "") return refuse("no path given: give the path of a file")
    if (path.endsWith("/")) return refuse("it ends with /, which names a directory: give the path of a file")
    const directory = NodePath.dirname(path)
    try {
      const info = Files.Sync.statIfExists(path, false)
      if (info !== undefined && !info.isFile()) {
        const kind = kindOf(info)
        return refuse(
          `it is ${kind}, which a report would replace: give the path of a regular file or of a new one`
        )
      }
      if (Files.Sync.statIfExists(directory)?.isDirectory() !== true) {
        return refuse(`its directory ${directory} does not exist: create it first`)
      }
    } catch (cause) {
      return refuse(`cannot write it: ${Files.fromNode("stat", path, cause).message}`)
    }
    try {
      Files.Sync.accessCreate(directory)
    } catch (cause) {
      return refuse(
        `cannot write in its directory ${directory}: ${Files.fromNode("access", directory, cause).message}`
      )
    }
    return Effect.void
  })

/**
 * Writes `report` to `path` as JSON, whole or not at all: it goes to a new file beside `path`
 * that is then renamed over it. The file is readable by its owner only (mode 0600): it holds
 * the hosts' last output lines. What {@link checkPath} refuses is refused here too, and nothing
 * is written.
 *
 * @example
 * ```ts
 * // declare: deploy: Task.Task<void, void, Errors.OperationError>
 * // declare: report: Report.Report<void, Errors.OperationError>
 * yield* Report.write(deploy, "deploy-report.json", report)
 * ```
 *
 * @since 0.2.0
 */
export const write = <A, E>(
  task: Pick<Task<any, A, E>, "success" | "error">,
  path: string,
  report: Report<A, E | WorkerCrashed>
): Effect.Effect<void, ReportError> =>
  Effect.gen(function*() {
    yield* checkPath(path)
    const text = yield* Schema.encodeEffect(codec(task))(report).pipe(
      Effect.mapError((error) =>
        new ReportError({ path, detail: `cannot encode it with the task's Schemas: ${error.message}` })
      )
    )
    // Named after the report but kept short: the report's own name may fill NAME_MAX.
    const temporary = NodePath.join(
      NodePath.dirname(path),
      `.${NodePath.basename(path).slice(0, 60)}.${process.pid}.${Date.now()}.tmp`
    )
    yield* Effect.try({
      try: () => {
        try {
          const fd = Files.Sync.openExclusive(temporary, 0o600)
          try {
            Files.Sync.writeAll(fd, Buffer.from(text))
          } finally {
            Files.Sync.close(fd)
          }
          Files.Sync.rename(temporary, path)
        } catch (cause) {
          Files.Sync.rm(temporary, { force: true })
          throw cause
        }
      },
      catch: (cause) =>
        new ReportError({ path, detail: `cannot write it: ${Files.fromNode("write", path, cause).message}` })
    })
  })

/** The largest report {@link read} takes (a run of 10,000 hosts with 20 lines each is far below). */
const maxReportBytes = 256 * 1024 * 1024

// A plain read waits for ever on a FIFO without a writer (its open blocks a thread of Node's pool
// too), and reads a huge file whole into memory before finding that it is no report: the file is
// opened without waiting, and only a regular file of a sane size is read.
const readBounded = (path: string): Effect.Effect<string, ReportError> =>
  Effect.acquireUseRelease(
    Files.openReadNonBlocking(path),
    (fd) =>
      Effect.gen(function*() {
        const info = yield* Files.fstat(fd)
        if (!info.isFile()) return yield* new ReportError({ path, detail: "it is not a regular file" })
        if (info.size > maxReportBytes) {
          return yield* new ReportError({
            path,
            detail: `it is too large for a report (${info.size} bytes, at most ${maxReportBytes})`
          })
        }
        const buffer = Buffer.alloc(info.size)
        let filled = 0
        while (filled < buffer.length) {
          const count = yield* Files.read(fd, buffer, filled, buffer.length - filled, filled)
          if (count === 0) break
          filled += count
        }
        return buffer.subarray(0, filled).toString("utf8")
      }),
    (fd) => Files.close(fd)
  ).pipe(
    Effect.catchTag("LocalFileError", (error) =>
      Effect.fail(new ReportError({ path, detail: `cannot read it: ${error.message}` })))
  )

/**
 * Reads a report written by {@link write}, decoded with the task's Schemas.
 *
 * @example
 * ```ts
 * // declare: deploy: Task.Task<void, void, Errors.OperationError>
 * const last = yield* Report.read(deploy, "deploy-report.json")
 * ```
 *
 * @since 0.2.0
 */
export const read = <A, E>(
  task: Pick<Task<any, A, E>, "success" | "error">,
  path: string
): Effect.Effect<Report<A, E | WorkerCrashed>, ReportError> =>
  readBounded(path).pipe(
    Effect.flatMap((text) =>
      Schema.decodeEffect(codec(task))(text).pipe(
        Effect.mapError((error) =>
          new ReportError({
            path,
            detail: `it is not a report of this task (written for another task or version?): ${error.message}`
          })
        )
      )
    )
  )

/**
 * The hosts a deploy still has to do, in their order: those that failed, were interrupted or
 * never started, and every host of a batch that did not pass. A host whose own run succeeded
 * in a batch whose `after` gate failed (or that went over its failure budget, so its `after`
 * gate never ran) was never confirmed: it may be unhealthy or still out of the load balancer.
 * A rerun deploys it again and runs the gates on it. Give them to a new run to finish a deploy
 * that stopped.
 *
 * @example
 * ```ts
 * // declare: deploy: Task.Task<void, void, Errors.OperationError>
 * yield* Execute.rolling(deploy, Report.pending(yield* Report.read(deploy, "deploy-report.json")))
 * ```
 *
 * @since 0.2.0
 */
export const pending = (report: Pick<Report<unknown, unknown>, "hosts" | "batches">): Array<string> => {
  const passed = new Set(
    report.batches.filter((batch) => batch.status === "passed").map((batch) => batch.batch)
  )
  return report.hosts.filter((host) => host.status !== "succeeded" || !passed.has(host.batch)).map((host) =>
    host.host
  )
}
