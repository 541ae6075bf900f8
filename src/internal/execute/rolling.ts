/**
 * `Execute.rolling`: a task over hosts batch after batch (a canary, then a share of the fleet,
 * then the rest), each batch between a `before` and an `after` gate and within a failure
 * budget, and a report of every host and batch. A failed gate or a spent budget stops the run:
 * runs in flight are interrupted (their finalizers stop their commands) and the hosts not yet
 * started are reported as such, with the reason.
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as os from "node:os"
import { SettingsError, type WorkerCrashed } from "../../Errors.ts"
import type { BatchReport, GateOutcome, HostReport, Report } from "../../Report.ts"
import type { Task } from "../../Task.ts"
import * as Events from "../events/event.ts"
import { type Amount, amountOf, checkDistinct, plan, settingsError } from "./batches.ts"
import * as Runs from "./runs.ts"
import { makeWorkerPool, type PoolConfig, whole, type WorkerPoolShape } from "./workerPool.ts"

/** A batch as its gates see it. @inline */
export interface Batch {
  /** Its position, from 1. */
  readonly batch: number
  readonly hosts: ReadonlyArray<string>
  /** In `after`: the hosts of the batch whose run succeeded (all of them unless the budget allows failures). */
  readonly succeeded: ReadonlyArray<string>
}

/** `Execute.RollingOptions`: the options of every batch (see `Execute.Options`), and these. */
export type RollingOptions<I, R = never> =
  & Omit<Runs.RunOptions, "failFast" | "stopWhen" | "tail">
  & ([I] extends [void] ? { readonly input?: I | undefined } : { readonly input: I })
  & {
    /**
     * Batch sizes, in order: a count, or a percentage of all the hosts rounded down (at least
     * 1). The last size repeats until every host is in a batch. Default: `["100%"]`, one batch.
     * Not with explicit groups of hosts.
     */
    readonly batches?: ReadonlyArray<Amount> | undefined
    /**
     * How many hosts of a batch may fail (a count, or a percentage of the batch rounded down)
     * before the run stops. Going over it interrupts the batch's runs in flight and starts no
     * other. Interrupted runs are not failures. Default: `0`, the first failure stops the run.
     */
    readonly maxFailures?: Amount | undefined
    /**
     * How many hosts may fail in the whole run (a count, or a percentage of all the hosts
     * rounded down) before it stops, whatever each batch's budget. Default: no limit beyond
     * each batch's.
     */
    readonly maxFailuresTotal?: Amount | undefined
    /**
     * Runs before each batch starts (take its hosts out of a load balancer, wait until they
     * are drained). Its failure stops the run: the batch and every later one are not started.
     */
    readonly before?: ((batch: Batch) => Effect.Effect<unknown, unknown, R>) | undefined
    /**
     * Runs after each batch that stayed within its budget (put its hosts back, wait until they
     * are healthy). Its failure stops the run: later batches are not started.
     */
    readonly after?: ((batch: Batch) => Effect.Effect<unknown, unknown, R>) | undefined
    /** How long to wait between batches. Default: no wait. */
    readonly pause?: Duration.Input | undefined
    /** How many of its last output lines the report keeps for each host. Default: 20. */
    readonly outputLines?: number | undefined
  }

type RollingConfig<R> = RollingOptions<void, R> & { readonly input?: unknown }

const skipped: GateOutcome = { status: "skipped", durationMillis: 0 }

const firstLine = (exit: Exit.Exit<unknown, unknown>): string => Runs.messageOf(exit) ?? "failed"

/** Runs `task` on `hosts` (or on explicit groups of hosts) batch by batch. */
export const rolling = <A, E, R>(
  task: Task<any, A, E>,
  hosts: ReadonlyArray<string> | ReadonlyArray<ReadonlyArray<string>>,
  options: RollingConfig<R>,
  shared: Option.Option<WorkerPoolShape<PoolConfig>>
): Effect.Effect<Report<A, E | WorkerCrashed>, SettingsError, R> =>
  Effect.scoped(Effect.gen(function*() {
    const startedAt = yield* Clock.currentTimeMillis
    const groups = yield* Effect.try({
      try: () => {
        const explicit = hosts.length > 0 && typeof hosts[0] !== "string"
        if (explicit && options.batches !== undefined) {
          throw settingsError("batches", "give either explicit groups of hosts or batch sizes, not both")
        }
        const groups = explicit
          ? (hosts as ReadonlyArray<ReadonlyArray<string>>).filter((group) => group.length > 0).map((
            g
          ) => [...g])
          : plan(hosts as ReadonlyArray<string>, options.batches ?? ["100%"])
        checkDistinct("hosts", groups.flat())
        // Checked now, not when the first failure needs them.
        amountOf("maxFailures", options.maxFailures ?? 0, 1)
        amountOf("maxFailuresTotal", options.maxFailuresTotal ?? "100%", 1)
        const lines = options.outputLines
        if (lines !== undefined && !(Number.isSafeInteger(lines) && lines >= 0)) {
          throw new SettingsError({
            setting: "outputLines",
            value: String(lines),
            detail: "give a whole number, 0 or more"
          })
        }
        // A bad pause would otherwise die after the first batch, with its hosts deployed.
        if (options.pause !== undefined && Option.isNone(Duration.fromInput(options.pause))) {
          throw new SettingsError({
            setting: "pause",
            value: String(options.pause),
            detail: "give a duration, such as \"30 seconds\""
          })
        }
        return groups
      },
      catch: (error) => (error instanceof SettingsError ? error : settingsError("hosts", String(error)))
    })
    const all = groups.flat()
    const allowedTotal = options.maxFailuresTotal === undefined
      ? all.length
      : amountOf("maxFailuresTotal", options.maxFailuresTotal, all.length)
    yield* Events.emit({ _tag: "RunStarted", task: task.name, hosts: all, batches: groups.length })

    // One pool of workers for every batch, so only the first batch waits for workers to start.
    const parallel = (options.mode ?? "parallel") === "parallel" && !(yield* Runs.InProcessOnly)
    const pool = parallel && shared._tag === "None"
      ? Option.some(
        yield* makeWorkerPool(
          options,
          Math.min(
            whole(options.poolSize ?? os.availableParallelism()),
            Math.max(1, ...groups.map((g) => g.length))
          )
        )
      )
      : shared

    const hostReports: Array<HostReport<A, E | WorkerCrashed>> = []
    const batchReports: Array<BatchReport> = []
    let stopped: string | undefined
    let failuresTotal = 0

    const notStarted = (batch: number, group: ReadonlyArray<string>, reason: string) =>
      Effect.forEach(group, (host) => {
        hostReports.push({
          host,
          batch,
          status: "not-started",
          reason,
          attempts: 0,
          durationMillis: 0,
          output: []
        })
        return Events.emit({
          _tag: "HostFinished",
          host,
          batch,
          status: "not-started",
          attempts: 0,
          durationMillis: 0,
          message: reason
        })
      }, { discard: true })

    const gate = (
      which: "before" | "after",
      run: ((batch: Batch) => Effect.Effect<unknown, unknown, R>) | undefined,
      batch: Batch
    ) =>
      Effect.gen(function*() {
        if (run === undefined) return skipped
        const start = yield* Clock.currentTimeMillis
        const exit = yield* Effect.exit(
          run(batch).pipe(Effect.withSpan(`gate ${which}`, { attributes: { batch: batch.batch } }))
        )
        const durationMillis = (yield* Clock.currentTimeMillis) - start
        if (Exit.isSuccess(exit)) {
          yield* Events.emit({ _tag: "GatePassed", batch: batch.batch, gate: which })
          return { status: "passed", durationMillis } satisfies GateOutcome
        }
        const message = Cause.hasInterruptsOnly(exit.cause) ? "interrupted" : firstLine(exit)
        yield* Events.emit({ _tag: "GateFailed", batch: batch.batch, gate: which, message })
        return { status: "failed", message, durationMillis } satisfies GateOutcome
      })

    for (let index = 0; index < groups.length; index++) {
      const number = index + 1
      const group = groups[index]!
      if (stopped !== undefined) {
        yield* notStarted(number, group, stopped)
        batchReports.push({
          batch: number,
          hosts: group,
          status: "not-started",
          failures: 0,
          allowedFailures: amountOf("maxFailures", options.maxFailures ?? 0, group.length),
          before: skipped,
          after: skipped,
          durationMillis: 0
        })
        continue
      }
      if (index > 0 && options.pause !== undefined) yield* Effect.sleep(options.pause)
      const batchStart = yield* Clock.currentTimeMillis
      const allowed = amountOf("maxFailures", options.maxFailures ?? 0, group.length)
      const report = yield* Effect.gen(function*() {
        yield* Events.emit({ _tag: "BatchStarted", batch: number, hosts: group })
        const before = yield* gate("before", options.before, { batch: number, hosts: group, succeeded: [] })
        if (before.status === "failed") {
          stopped = `the before gate of batch ${number} failed: ${before.message}`
          yield* notStarted(number, group, stopped)
          return { before, after: skipped, failures: 0 }
        }
        let failures = 0
        let over: string | undefined
        const ended = yield* Runs.runAll(
          task,
          group.map((host) => ({
            label: host,
            input: options.input,
            batch: number,
            patch: (s) => ({ ...s, host })
          })),
          {
            ...options,
            tail: options.outputLines ?? 20,
            stopWhen: (exit) => {
              if (Cause.hasInterruptsOnly((exit as Exit.Failure<unknown, unknown>).cause)) return false
              failures++
              failuresTotal++
              if (failures > allowed) {
                over = `batch ${number} went over its failure budget (${failures} failed, ${allowed} allowed)`
              } else if (failuresTotal > allowedTotal) {
                over =
                  `the run went over its failure budget (${failuresTotal} failed, ${allowedTotal} allowed)`
              }
              return over !== undefined
            }
          },
          pool
        )
        const succeeded: Array<string> = []
        const unstarted: Array<string> = []
        ended.forEach((end, i) => {
          const host = group[i]!
          const status = Runs.statusOf(end)
          if (status === "not-started") return void unstarted.push(host)
          if (status === "succeeded") succeeded.push(host)
          const reason = status === "interrupted" ? over : undefined
          hostReports.push({
            host,
            batch: number,
            status,
            exit: end.exit,
            ...(reason === undefined ? {} : { reason }),
            attempts: end.attempts,
            durationMillis: end.durationMillis,
            output: end.output
          })
        })
        // Hosts the budget kept from starting (runAll reports only those it ran).
        yield* notStarted(number, unstarted, over ?? "the batch stopped before they started")
        if (over !== undefined) {
          stopped = over
          return { before, after: skipped, failures }
        }
        const after = yield* gate("after", options.after, { batch: number, hosts: group, succeeded })
        if (after.status === "failed") stopped = `the after gate of batch ${number} failed: ${after.message}`
        return { before, after, failures }
      }).pipe(Effect.withSpan(`batch ${number}`, { attributes: { batch: number, hosts: group.length } }))
      const failed = stopped !== undefined
      batchReports.push({
        batch: number,
        hosts: group,
        status: failed ? "failed" : "passed",
        failures: report.failures,
        allowedFailures: allowed,
        before: report.before,
        after: report.after,
        durationMillis: (yield* Clock.currentTimeMillis) - batchStart
      })
      yield* Events.emit({
        _tag: "BatchFinished",
        batch: number,
        failures: report.failures,
        status: failed ? "failed" : "passed"
      })
    }

    const count = (status: string) => hostReports.filter((h) => h.status === status).length
    yield* Events.emit({
      _tag: "RunFinished",
      status: stopped === undefined ? "completed" : "stopped",
      ...(stopped === undefined ? {} : { reason: stopped }),
      succeeded: count("succeeded"),
      failed: count("failed"),
      notStarted: count("not-started")
    })
    // Hosts in the order they were given, each once.
    const byHost = new Map(hostReports.map((h) => [h.host, h]))
    return {
      task: task.name,
      status: stopped === undefined ? "completed" : "stopped",
      ...(stopped === undefined ? {} : { reason: stopped }),
      startedAt,
      durationMillis: (yield* Clock.currentTimeMillis) - startedAt,
      hosts: all.map((host) => byHost.get(host)!),
      batches: batchReports
    } satisfies Report<A, E | WorkerCrashed>
  }))
