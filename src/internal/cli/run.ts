/**
 * Runs a task on the hosts the flags name, the way every form of `threadbare` does: as a rolling
 * run (one batch of every host unless `--batches` says otherwise), so each form gets the same
 * report, `--rerun-failed`, events, summary and exit code.
 */
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Events from "../../Events.ts"
import * as Execute from "../../Execute.ts"
import * as Report from "../../Report.ts"
import { settings } from "../../Settings.ts"
import type { Task } from "../../Task.ts"
import { oneLine } from "../command/oneLine.ts"
import { parseHostString } from "../settings/hostString.ts"
import * as ExitCodes from "./exitCodes.ts"
import { regularFile, resolveHosts, rollingOptions, settingsPatch, type Shared } from "./options.ts"

/** How the runs of a task are spread: worker processes, fibers, or one after another. */
export interface Placement {
  readonly mode: "parallel" | "fibers" | "serial"
  readonly poolSize?: number | undefined
  readonly workers?: number | undefined
}

/** Some hosts failed: the run is over, and this is the exit status it ends with. */
export class HostsFailed extends Schema.TaggedError<HostsFailed>()("HostsFailed", {
  code: Schema.Number,
  failed: Schema.Number
}) {
  override get message(): string {
    return `${this.failed} host(s) failed`
  }
}

const reportError = (flag: string) => (error: Report.ReportError) =>
  new ExitCodes.UsageError({ message: `--${flag}: ${error.message}` })

// The first line of why a host did not succeed.
const whyNot = (host: Report.HostReport<unknown, unknown>): string => {
  if (host.exit === undefined || Exit.isSuccess(host.exit)) return host.reason ?? host.status
  const error = Cause.findErrorOption(host.exit.cause)
  if (error._tag === "Some") {
    const value = error.value as { readonly _tag?: string; readonly message?: string }
    return `${value._tag ?? "Error"}: ${String(value.message ?? value).split("\n")[0]}`
  }
  return Cause.hasInterruptsOnly(host.exit.cause)
    ? "interrupted"
    : Cause.pretty(host.exit.cause).split("\n")[0]!
}

/** The exit status a report ends with: the highest code of its hosts. */
export const codeOf = (report: Report.Report<unknown, unknown>): number =>
  report.hosts.reduce((code, host) => {
    if (host.status === "succeeded") return code
    // Hosts a stopped rollout passed over, or interrupted, say nothing of why it stopped: the
    // failures that stopped it give the code.
    if (host.status !== "failed" || host.exit === undefined) return Math.max(code, ExitCodes.commandFailed)
    return Math.max(code, ExitCodes.codeOfExit(host.exit))
  }, ExitCodes.ok)

/** What a run prints at its end, on standard error so that standard output stays the hosts'. */
export const summary = (report: Report.Report<unknown, unknown>, code: number): string => {
  const ok = report.hosts.filter((h) => h.status === "succeeded").length
  const lines = [
    `threadbare: ${report.task.replace(/^threadbare\//, "")}: ${report.hosts.length} host(s), ${ok} ok, ${
      report.hosts.length - ok
    } failed` +
    ` in ${(report.durationMillis / 1000).toFixed(1)}s (exit ${code})`
  ]
  for (const host of report.hosts) {
    if (host.status !== "succeeded") lines.push(`  ${host.host}: ${oneLine(whyNot(host))}`)
  }
  return lines.join("\n")
}

/**
 * Runs `task` with `input` on the hosts of the flags and returns when every host is done.
 * `describe` says what would run, for `--dry-run`. Fails with {@link HostsFailed} when a host
 * failed, with `UsageError` when the flags were wrong (before any host is touched).
 */
export const runOnHosts = <I, A, E>(options: {
  readonly task: Task<I, A, E>
  readonly input: I
  readonly shared: Shared
  readonly placement: Placement
  readonly describe: string
  /** A check of the hosts before anything runs (a usage error, or `undefined`). */
  readonly checkHosts?: ((hosts: ReadonlyArray<string>) => string | undefined) | undefined
}) =>
  Effect.gen(function*() {
    const { shared, task } = options
    const patch = yield* settingsPatch(shared)
    let hosts = yield* resolveHosts(shared)
    // Found after the run, a report that cannot be written would cost the whole run's record.
    if (Option.isSome(shared.report)) {
      yield* Report.checkPath(shared.report.value).pipe(Effect.mapError(reportError("report")))
    }
    if (Option.isSome(shared.rerunFailed)) {
      yield* regularFile("rerun-failed", shared.rerunFailed.value)
      const last = yield* Report.read(task, shared.rerunFailed.value).pipe(
        Effect.mapError(reportError("rerun-failed"))
      )
      // Report.read checks only the shapes of results, which many tasks share: a report of another
      // task would pick the hosts this one reruns on.
      if (last.task !== task.name) {
        return yield* new ExitCodes.UsageError({
          message: `--rerun-failed: ${shared.rerunFailed.value} is a report of ${
            JSON.stringify(last.task)
          }, not of ${JSON.stringify(task.name)}`
        })
      }
      const pending = Report.pending(last)
      hosts = hosts.length === 0 ? pending : hosts.filter((host) => pending.includes(host))
      if (hosts.length === 0) {
        yield* Console.error(`threadbare: ${shared.rerunFailed.value}: no host left to run`)
        return
      }
    }
    if (hosts.length === 0) {
      return yield* new ExitCodes.UsageError({
        message: "no hosts: give -H, --hosts-file or --ssh-config-hosts"
      })
    }
    // A malformed host would otherwise be found only when its turn comes, after the hosts before
    // it have run: exit 2 promises that nothing ran.
    for (const host of hosts) {
      const parsed = parseHostString(host)
      if (parsed._tag === "Failure") {
        return yield* new ExitCodes.UsageError({
          message: `${JSON.stringify(host)}: ${parsed.failure.detail}`
        })
      }
    }
    const problem = options.checkHosts?.(hosts)
    if (problem !== undefined) return yield* new ExitCodes.UsageError({ message: problem })
    // Zero or fewer hosts or workers at once would be read as some default rather than refused.
    for (
      const [flag, n] of [["parallel", Option.getOrUndefined(shared.parallel)], [
        "workers",
        options.placement.workers
      ]] as const
    ) {
      if (n !== undefined && n < 1) {
        return yield* new ExitCodes.UsageError({ message: `--${flag}: ${n} is not a count of at least 1` })
      }
    }
    const rolling = yield* rollingOptions(shared)
    if (shared.dryRun) {
      const sudo = shared.sudo ? " (with sudo)" : ""
      // With --json, standard output is NDJSON events only, and a dry run has none to give.
      const print = shared.json ? Console.error : Console.log
      for (const host of hosts) yield* print(`[${host}] would ${oneLine(options.describe)}${sudo}`)
      yield* Console.error(`threadbare: dry run: ${hosts.length} host(s), nothing was touched`)
      return
    }
    const run = Execute.rolling(task as Task<any, A, E>, hosts, {
      input: options.input,
      mode: options.placement.mode,
      poolSize: options.placement.poolSize,
      workers: options.placement.workers,
      batches: rolling.batches ?? ["100%"],
      // A plain run goes to every host; a rollout stops at its first failure unless told otherwise.
      maxFailures: rolling.maxFailures ?? (rolling.batches === undefined ? "100%" : 0)
    }).pipe(
      shared.json
        ? Events.consume(Events.ndjson(), { output: "hide" })
        : shared.board
        ? Events.consume(Events.board(), { output: "hide" })
        : (self) => self,
      settings(patch)
    )
    const report = yield* Effect.mapError(
      run,
      (error) => new ExitCodes.UsageError({ message: error.message })
    )
    let code = codeOf(report as Report.Report<unknown, unknown>)
    if (Option.isSome(shared.report)) {
      const written = yield* Effect.exit(Report.write(task, shared.report.value, report))
      if (Exit.isFailure(written)) {
        yield* Console.error(`threadbare: --report: ${Cause.pretty(written.cause).split("\n")[0]}`)
        code = Math.max(code, ExitCodes.other)
      }
    }
    yield* Console.error(summary(report as Report.Report<unknown, unknown>, code))
    if (code !== ExitCodes.ok) {
      return yield* new HostsFailed({
        code,
        failed: report.hosts.filter((h) => h.status !== "succeeded").length
      })
    }
  })
