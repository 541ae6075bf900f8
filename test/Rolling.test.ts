/**
 * Rolling runs against the throwaway server: batch order and sizes, failure budgets per batch
 * and for the run, gates stopping the run with every remaining host reported, in-flight runs
 * interrupted with nothing left on the server, and a rerun from a report written to a file.
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { CommandFailed, SettingsError, WorkerCrashed } from "../src/Errors.ts"
import * as Events from "../src/Events.ts"
import * as Execute from "../src/Execute.ts"
import { plan } from "../src/internal/execute/batches.ts"
import * as Report from "../src/Report.ts"
import * as Settings from "../src/Settings.ts"
import * as Testing from "../src/Testing.ts"
import { readServerFromEnv, remoteProcesses } from "../tests-remote/server.ts"
import { crashOrRefuse, NotReady, step } from "./fixtures/rolling-tasks.ts"
import { failureOf, serverConnection, uniqueMarker } from "./support.ts"

const server = readServerFromEnv()
const connection = serverConnection({ quiet: true })

/** Runs `program` and returns its result with every event it published, in order. */
const withEvents = <A, E>(program: Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const events: Array<Events.Event> = []
    const result = yield* program.pipe(
      Events.consume((stream) =>
        Stream.runForEach(stream, (event) => Effect.sync(() => void events.push(event)))
      )
    )
    return { result, events }
  })

const input = (patch: Partial<{ failOn: Array<string>; sleepOn: Array<string>; marker: string }> = {}) => ({
  marker: patch.marker ?? "none",
  failOn: patch.failOn ?? [],
  sleepOn: patch.sleepOn ?? []
})

const statuses = (report: Report.Report<unknown, unknown>) =>
  Object.fromEntries(report.hosts.map((h) => [h.host, h.status]))

describe("batches", () => {
  it("sizes and percentages of all the hosts, rounded down, at least 1; the last size repeats", () => {
    const ten = Array.from({ length: 10 }, (_, i) => `h${i}`)
    assert.deepStrictEqual(plan(ten, [1, "25%", "100%"]).map((b) => b.length), [1, 2, 7])
    assert.deepStrictEqual(plan(ten, [1, "30%"]).map((b) => b.length), [1, 3, 3, 3])
    assert.deepStrictEqual(plan(ten, ["5%"]).map((b) => b.length), Array(10).fill(1))
    assert.deepStrictEqual(plan(ten, [4]).map((b) => b.length), [4, 4, 2])
    assert.deepStrictEqual(plan(ten, [1, "25%"]).flat(), ten)
    assert.deepStrictEqual(plan([], ["100%"]), [])
  })

  it.effect("bad sizes, budgets and hosts fail with a SettingsError before any host is touched", () =>
    Effect.gen(function*() {
      const hosts = server.hosts.slice(0, 2)
      const cases: Array<[string, Effect.Effect<unknown, SettingsError>]> = [
        ["batches", Execute.rolling(step, hosts, { input: input(), batches: [0] })],
        ["batches", Execute.rolling(step, hosts, { input: input(), batches: ["120%"] })],
        ["batches", Execute.rolling(step, hosts, { input: input(), batches: [] })],
        ["batches", Execute.rolling(step, [hosts], { input: input(), batches: [1] })],
        ["maxFailures", Execute.rolling(step, hosts, { input: input(), maxFailures: -1 })],
        [
          "maxFailuresTotal",
          Execute.rolling(step, hosts, { input: input(), maxFailuresTotal: "x%" as "1%" })
        ],
        ["hosts", Execute.rolling(step, [hosts[0]!, hosts[0]!], { input: input() })]
      ]
      for (const [setting, program] of cases) {
        const error = failureOf(yield* Effect.exit(program.pipe(connection)))
        assert.instanceOf(error, SettingsError)
        assert.strictEqual(error.setting, setting)
      }
    }))
})

describe("Execute.rolling on the server", () => {
  it.live("runs batch after batch, in order and sizes, each host on its own host", () =>
    Effect.gen(function*() {
      const hosts = server.hosts.slice(0, 7)
      for (const mode of ["parallel", "fibers"] as const) {
        const { events, result: report } = yield* withEvents(
          Execute.rolling(step, hosts, { input: input(), batches: [1, "50%"], mode, poolSize: 4 }).pipe(
            connection
          )
        )
        assert.strictEqual(report.status, "completed")
        assert.deepStrictEqual(report.batches.map((b) => b.hosts), [
          hosts.slice(0, 1),
          hosts.slice(1, 4),
          hosts.slice(4)
        ])
        assert.deepStrictEqual(report.batches.map((b) => b.status), ["passed", "passed", "passed"])
        assert.deepStrictEqual(report.hosts.map((h) => h.host), hosts)
        for (const h of report.hosts) {
          assert.strictEqual(h.status, "succeeded")
          assert.isTrue(h.exit !== undefined && Exit.isSuccess(h.exit) && h.exit.value === h.host, h.host)
          assert.strictEqual(h.attempts, 1)
          assert.include(h.output.join("\n"), `step on ${h.host}`, mode)
        }
        // No host of a batch starts before every host of the batch before it has finished.
        const position = (tag: string, host: string) =>
          events.findIndex((e) => e._tag === tag && "host" in e && e.host === host)
        for (let b = 1; b < report.batches.length; b++) {
          const lastEnd = Math.max(...report.batches[b - 1]!.hosts.map((h) => position("HostFinished", h)))
          const firstStart = Math.min(...report.batches[b]!.hosts.map((h) => position("HostStarted", h)))
          assert.isAbove(firstStart, lastEnd, `batch ${b + 1} (${mode})`)
        }
        assert.deepStrictEqual(
          events.filter((e) => e._tag === "BatchStarted" || e._tag === "BatchFinished").map((e) =>
            `${e._tag} ${"batch" in e ? e.batch : ""}`
          ),
          [
            "BatchStarted 1",
            "BatchFinished 1",
            "BatchStarted 2",
            "BatchFinished 2",
            "BatchStarted 3",
            "BatchFinished 3"
          ]
        )
        assert.strictEqual(events[0]!._tag, "RunStarted")
        assert.strictEqual(events.at(-1)!._tag, "RunFinished")
      }
    }))

  it.live("a batch within its budget goes on; over it, the run stops and later hosts are not started", () =>
    Effect.gen(function*() {
      const hosts = server.hosts.slice(0, 6)
      const within = yield* Execute.rolling(step, hosts, {
        input: input({ failOn: [hosts[0]!] }),
        batches: [3],
        maxFailures: 1
      }).pipe(connection)
      assert.strictEqual(within.status, "completed")
      assert.deepStrictEqual(within.batches.map((b) => [b.status, b.failures, b.allowedFailures]), [
        ["passed", 1, 1],
        ["passed", 0, 1]
      ])
      const failed = within.hosts[0]!
      assert.strictEqual(failed.status, "failed")
      assert.instanceOf(failureOf(failed.exit!), CommandFailed)

      // "50%" of a batch of 3 is 1 (rounded down): two failures are over it.
      const over = yield* Execute.rolling(step, hosts, {
        input: input({ failOn: hosts.slice(0, 2) }),
        batches: [3],
        maxFailures: "50%",
        mode: "fibers"
      }).pipe(connection)
      assert.strictEqual(over.status, "stopped")
      assert.match(over.reason!, /batch 1 went over its failure budget \(2 failed, 1 allowed\)/)
      assert.deepStrictEqual(over.batches.map((b) => b.status), ["failed", "not-started"])
      for (const h of over.hosts.slice(3)) {
        assert.strictEqual(h.status, "not-started")
        assert.strictEqual(h.attempts, 0)
        assert.isUndefined(h.exit)
        assert.strictEqual(h.reason, over.reason)
      }
    }))

  it.live("the budget of the whole run stops it though each batch stays within its own", () =>
    Effect.gen(function*() {
      const hosts = server.hosts.slice(0, 6)
      const report = yield* Execute.rolling(step, hosts, {
        input: input({ failOn: [hosts[0]!, hosts[2]!] }),
        batches: [2],
        maxFailures: 1,
        maxFailuresTotal: 1,
        mode: "fibers",
        poolSize: 1
      }).pipe(connection)
      assert.strictEqual(report.status, "stopped")
      assert.match(report.reason!, /the run went over its failure budget \(2 failed, 1 allowed\)/)
      assert.deepStrictEqual(statuses(report), {
        [hosts[0]!]: "failed",
        [hosts[1]!]: "succeeded",
        [hosts[2]!]: "failed",
        // poolSize 1: the budget was spent before this one started.
        [hosts[3]!]: "not-started",
        [hosts[4]!]: "not-started",
        [hosts[5]!]: "not-started"
      })
      // "34%" of 6 hosts is 2: the same run within it completes.
      const within = yield* Execute.rolling(step, hosts, {
        input: input({ failOn: [hosts[0]!, hosts[2]!] }),
        batches: [2],
        maxFailures: 1,
        maxFailuresTotal: "34%",
        mode: "fibers"
      }).pipe(connection)
      assert.strictEqual(within.status, "completed")
    }))

  it.live("gates run around each batch; a failing after gate stops the run, the rest not started", () =>
    Effect.gen(function*() {
      const hosts = server.hosts.slice(0, 6)
      const calls: Array<string> = []
      const { events, result: report } = yield* withEvents(
        Execute.rolling(step, [hosts.slice(0, 2), hosts.slice(2, 4), hosts.slice(4)], {
          input: input(),
          mode: "fibers",
          pause: "200 millis",
          before: (batch) =>
            Effect.sync(() => void calls.push(`before ${batch.batch} ${batch.hosts.join(",")}`)),
          after: (batch) =>
            Effect.sync(() => void calls.push(`after ${batch.batch} ${batch.succeeded.join(",")}`)).pipe(
              Effect.andThen(batch.batch === 2 ? Effect.fail(new Error("web pool unhealthy")) : Effect.void)
            )
        }).pipe(connection)
      )
      assert.deepStrictEqual(calls, [
        `before 1 ${hosts.slice(0, 2).join(",")}`,
        `after 1 ${hosts.slice(0, 2).join(",")}`,
        `before 2 ${hosts.slice(2, 4).join(",")}`,
        `after 2 ${hosts.slice(2, 4).join(",")}`
      ])
      assert.strictEqual(report.status, "stopped")
      assert.match(report.reason!, /the after gate of batch 2 failed: .*web pool unhealthy/)
      assert.deepStrictEqual(report.batches.map((b) => [b.status, b.before.status, b.after.status]), [
        ["passed", "passed", "passed"],
        ["failed", "passed", "failed"],
        ["not-started", "skipped", "skipped"]
      ])
      assert.match(report.batches[1]!.after.message!, /web pool unhealthy/)
      for (const h of report.hosts.slice(4)) {
        assert.strictEqual(h.status, "not-started")
        assert.strictEqual(h.reason, report.reason)
      }
      assert.deepStrictEqual(
        events.filter((e) => e._tag === "GatePassed" || e._tag === "GateFailed").map((e) =>
          `${e._tag} ${e.batch} ${e.gate}`
        ),
        ["GatePassed 1 before", "GatePassed 1 after", "GatePassed 2 before", "GateFailed 2 after"]
      )
      // The pause between batches is a lower bound.
      const startOf = (batch: number) =>
        events.find((e) => e._tag === "BatchStarted" && e.batch === batch)!.at
      const endOf = (batch: number) => events.find((e) => e._tag === "BatchFinished" && e.batch === batch)!.at
      assert.isAtLeast(startOf(2) - endOf(1), 200)

      // A failing before gate: its batch is not started either.
      const early = yield* Execute.rolling(step, hosts.slice(0, 4), {
        input: input(),
        batches: [2],
        mode: "fibers",
        before: (batch) => (batch.batch === 2 ? Effect.fail("drain timed out") : Effect.void)
      }).pipe(connection)
      assert.deepStrictEqual(Object.values(statuses(early)), [
        "succeeded",
        "succeeded",
        "not-started",
        "not-started"
      ])
      assert.match(early.reason!, /the before gate of batch 2 failed: drain timed out/)
    }))

  it.live("going over the budget interrupts the batch's runs in flight and leaves no remote process", () =>
    Effect.gen(function*() {
      const hosts = server.hosts.slice(0, 5)
      const mark = uniqueMarker("rolling")
      for (const mode of ["parallel", "fibers"] as const) {
        const { events, result: report } = yield* withEvents(
          Execute.rolling(step, hosts, {
            input: input({ marker: mark, failOn: [hosts[0]!], sleepOn: hosts.slice(1, 3) }),
            batches: [3],
            mode,
            poolSize: 3
          }).pipe(connection)
        )
        const returned = Date.now()
        const failedAt = events.find((e) => e._tag === "HostFinished" && e.status === "failed")!.at
        console.log(
          `[measure] rolling (${mode}) returned ${returned - failedAt} ms after the failure; ` +
            `remote commands left at return: ${remoteProcesses(mark).length}`
        )
        assert.strictEqual(report.status, "stopped", mode)
        assert.deepStrictEqual(Object.values(statuses(report)), [
          "failed",
          "interrupted",
          "interrupted",
          "not-started",
          "not-started"
        ], mode)
        assert.isTrue(report.hosts[1]!.attempts === 1 && report.hosts[1]!.reason === report.reason)
        // The remote `sleep 30`s were stopped by the runs' finalizers (within RELIABILITY.md's bound).
        for (let i = 0; i < 50 && remoteProcesses(mark).length > 0; i++) {
          yield* Effect.sleep(Duration.millis(100))
        }
        assert.deepStrictEqual(remoteProcesses(mark), [], mode)
      }
    }))

  it.live("a report written to a file reads back typed; a rerun touches only the hosts that did not succeed", () =>
    Effect.gen(function*() {
      const hosts = server.hosts.slice(0, 6)
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tb-report-"))
      const file = path.join(dir, "report.json")
      try {
        const first = yield* Execute.rolling(step, hosts, {
          input: input({ failOn: [hosts[2]!] }),
          batches: [2],
          mode: "fibers"
        }).pipe(connection)
        yield* Report.write(step, file, first)
        assert.deepStrictEqual(fs.readdirSync(dir), ["report.json"], "no temporary file is left")
        const read = yield* Report.read(step, file)
        assert.deepStrictEqual(statuses(read), statuses(first))
        const error = failureOf(read.hosts[2]!.exit!)
        assert.instanceOf(error, CommandFailed)
        assert.strictEqual((error as CommandFailed).result.exitCode, 3)
        assert.deepStrictEqual(read.batches, first.batches)
        // The third host failed, so its whole batch is pending (its partner may have finished
        // first, but its batch did not pass); the last batch never started.
        const pending = Report.pending(read)
        assert.deepStrictEqual(pending, hosts.slice(2))

        const { events, result: rerun } = yield* withEvents(
          Execute.rolling(step, Report.pending(read), { input: input(), batches: [2], mode: "fibers" }).pipe(
            connection
          )
        )
        assert.strictEqual(rerun.status, "completed")
        const touched = events.filter((e) => e._tag === "CommandStarted").map((e) => e.host)
        assert.sameMembers([...new Set(touched)], pending)
        assert.deepStrictEqual(Report.pending(rerun), [])

        // Not a report of this task: a typed error naming the file.
        fs.writeFileSync(file, "{\"task\":1}")
        const bad = failureOf(yield* Effect.exit(Report.read(step, file)))
        assert.instanceOf(bad, Report.ReportError)
        assert.include(bad.message, file)
        const missing = failureOf(yield* Effect.exit(Report.read(step, path.join(dir, "missing.json"))))
        assert.include(missing.message, "missing.json")
      } finally {
        fs.rmSync(dir, { recursive: true, force: true })
      }
    }))

  it.live("a report keeps a task's own errors and a crashed worker typed through a file", () =>
    Effect.gen(function*() {
      const hosts = ["a", "b", "c"]
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tb-report-"))
      const file = path.join(dir, "report.json")
      try {
        const report = yield* Execute.rolling(crashOrRefuse, hosts, {
          input: { crash: "b", refuse: "c" },
          maxFailures: 2,
          poolSize: 3,
          workers: 3
        })
        yield* Report.write(crashOrRefuse, file, report)
        const read = yield* Report.read(crashOrRefuse, file)
        assert.deepStrictEqual(Object.values(statuses(read)), ["succeeded", "failed", "failed"])
        assert.instanceOf(failureOf(read.hosts[1]!.exit!), WorkerCrashed)
        assert.strictEqual((failureOf(read.hosts[1]!.exit!) as WorkerCrashed).signal, "SIGKILL")
        assert.instanceOf(failureOf(read.hosts[2]!.exit!), NotReady)
      } finally {
        fs.rmSync(dir, { recursive: true, force: true })
      }
    }))

  it.effect("under Testing.layer, a rolling deploy runs on scripted hosts and stops where the script fails", () =>
    Effect.gen(function*() {
      const fleet = ["web-1.invalid", "web-2.invalid", "web-3.invalid", "web-4.invalid"]
      const { ran, report } = yield* Effect.gen(function*() {
        const report = yield* Execute.rolling(step, fleet, { input: input(), batches: [1, 2] }).pipe(
          Settings.hide
        )
        return { report, ran: yield* Testing.commands }
      }).pipe(
        Effect.provide(Layer.mergeAll(
          Testing.layer({
            commands: [
              { command: /step on/, host: "web-2.invalid", exitCode: 1 },
              { command: /step on/, stdout: "step on scripted\n" }
            ]
          }),
          NodeServices.layer
        ))
      )
      assert.strictEqual(report.status, "stopped")
      assert.strictEqual(report.hosts[0]!.status, "succeeded")
      assert.strictEqual(report.hosts[1]!.status, "failed")
      // Its batch partner may have finished, been interrupted, or not have started yet.
      assert.include(["succeeded", "interrupted", "not-started"], report.hosts[2]!.status)
      assert.strictEqual(report.hosts[3]!.status, "not-started")
      assert.notInclude(ran.map((c) => c.host), "web-4.invalid")
      assert.includeMembers(ran.map((c) => c.host), ["web-1.invalid", "web-2.invalid"])
    }))
})
