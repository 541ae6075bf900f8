/**
 * Attacks on the promises of fleet runs (`Execute.rolling`, `Report`, `Events`) with real parts:
 * the throwaway server, worker processes, FIFOs, read-only directories, huge files and lines,
 * consumers that stall or die, runs interrupted at every stage. Each test states the promise it
 * guards; those that found a fault are its regression test.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Logger from "effect/Logger"
import * as References from "effect/References"
import * as Stream from "effect/Stream"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { SettingsError } from "../src/Errors.ts"
import * as Events from "../src/Events.ts"
import * as Execute from "../src/Execute.ts"
import { plan } from "../src/internal/execute/batches.ts"
import * as Output from "../src/Output.ts"
import * as Report from "../src/Report.ts"
import * as Settings from "../src/Settings.ts"
import { readServerFromEnv, remoteProcesses } from "../tests-remote/server.ts"
import { flood, logger, numbered, sleeper } from "./fixtures/attack-fleet-tasks.ts"
import { step } from "./fixtures/rolling-tasks.ts"
import { failureOf, pollUntil, serverConnection, uniqueMarker } from "./support.ts"

const server = readServerFromEnv()
const connection = serverConnection({ quiet: true })

const stepInput = { marker: "none", failOn: [], sleepOn: [] }

/** The worker processes this process started and that are still alive. */
const workers = (): Array<number> =>
  fs.readdirSync("/proc").filter((name) => /^\d+$/.test(name)).flatMap((name) => {
    try {
      const status = fs.readFileSync(`/proc/${name}/status`, "utf8")
      const ppid = Number(/^PPid:\s+(\d+)/m.exec(status)?.[1])
      const cmdline = fs.readFileSync(`/proc/${name}/cmdline`, "utf8")
      return ppid === process.pid && cmdline.includes("workerMain") ? [Number(name)] : []
    } catch {
      return []
    }
  })

/** Resident memory of a process in MiB (0 when it is gone). */
const rssMiB = (pid: number): number => {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, "utf8")
    return Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0) / 1024
  } catch {
    return 0
  }
}

const noWorkersLeft = pollUntil(() => workers().length === 0, 5000)

const tempDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "tb-attack-fleet-"))

/** Interrupts `fiber` and returns how long the interruption took, in milliseconds. */
const interruptTimed = <A, E>(fiber: Fiber.Fiber<A, E>) =>
  Effect.gen(function*() {
    const start = Date.now()
    yield* Fiber.interrupt(fiber)
    return Date.now() - start
  })

describe("batch planning", () => {
  it("edge percentages and counts give a plan or a SettingsError, never a hang or a wrong plan", () => {
    const ten = Array.from({ length: 10 }, (_, i) => `h${i}`)
    assert.deepStrictEqual(plan(["a"], ["0%"]), [["a"]])
    assert.deepStrictEqual(plan(ten, ["0.5%"]).map((b) => b.length), Array(10).fill(1))
    assert.deepStrictEqual(plan(ten, ["100.0%"]).map((b) => b.length), [10])
    assert.deepStrictEqual(plan(ten, [Number.MAX_SAFE_INTEGER]).map((b) => b.length), [10])
    assert.deepStrictEqual(plan(ten, [1e21]).map((b) => b.length), [10])
    for (
      const bad of [Number.NaN, Infinity, -Infinity, -1, 1.5, "-5%", "5", " 5%", "1e1%", "100.1%", "NaN%"]
    ) {
      assert.throws(() => plan(ten, [bad as number]), SettingsError, undefined, String(bad))
    }
  })

  it.effect("explicit groups: empty ones are skipped, a host twice is refused; no host is a report of none", () =>
    Effect.gen(function*() {
      const none = yield* Execute.rolling(step, [], { input: stepInput }).pipe(connection)
      assert.deepStrictEqual([none.status, none.hosts, none.batches], ["completed", [], []])
      const empties = yield* Execute.rolling(step, [[], []], { input: stepInput }).pipe(connection)
      assert.deepStrictEqual([empties.status, empties.hosts, empties.batches], ["completed", [], []])
      const twice = failureOf(
        yield* Effect.exit(
          Execute.rolling(step, [["a"], [], ["b", "a"]], { input: stepInput }).pipe(connection)
        )
      )
      assert.instanceOf(twice, SettingsError)
      assert.strictEqual(twice.setting, "hosts")
    }))

  it.effect("an outputLines that is not a count, or a pause that is not a duration, is a SettingsError up front", () =>
    Effect.gen(function*() {
      const cases: Array<[string, Record<string, unknown>]> = [
        ["outputLines", { outputLines: Number.NaN }],
        ["outputLines", { outputLines: -1 }],
        ["outputLines", { outputLines: 1.5 }],
        // Found only after the first batch had run, as a defect.
        ["pause", { pause: "soon" as "1 second", batches: [1] }]
      ]
      for (const [setting, options] of cases) {
        let touched = false
        const error = failureOf(
          yield* Effect.exit(
            Execute.rolling(step, ["a", "b"], {
              input: stepInput,
              mode: "fibers",
              before: () => Effect.sync(() => void (touched = true)),
              ...options
            }).pipe(connection)
          )
        )
        assert.instanceOf(error, SettingsError, setting)
        assert.strictEqual(error.setting, setting)
        assert.isFalse(touched, setting)
      }
    }))
})

describe("gates", () => {
  it.live("a gate failing with a value without a string form, or dying, stops the run with a reason", () =>
    Effect.gen(function*() {
      const hosts = ["a", "b"]
      const odd = Object.create(null) as object
      const failures: Array<[Effect.Effect<unknown, unknown>, RegExp]> = [
        [Effect.fail(odd), /before gate of batch 1 failed/],
        [Effect.die(new Error("balancer exploded")), /balancer exploded/],
        [Effect.die(odd), /before gate of batch 1 failed/],
        [Effect.interrupt, /interrupted/],
        [
          Effect.fail({
            toString: () => {
              throw new Error("no")
            }
          }),
          /before gate of batch 1 failed/
        ]
      ]
      for (const [failure, reason] of failures) {
        const report = yield* Execute.rolling(step, hosts, {
          input: stepInput,
          batches: [1],
          mode: "fibers",
          before: () => failure
        }).pipe(connection)
        assert.strictEqual(report.status, "stopped")
        assert.match(report.reason!, reason)
        assert.deepStrictEqual(report.hosts.map((h) => [h.host, h.status]), [["a", "not-started"], [
          "b",
          "not-started"
        ]])
        assert.strictEqual(report.batches[0]!.before.status, "failed")
      }
    }))
})

describe("interrupting Execute.rolling", () => {
  const stages: Array<
    [string, (marker: string, reached: Deferred.Deferred<void>) => Execute.RollingOptions<{ marker: string }>]
  > = [
    ["while its workers start", (marker, reached) => ({
      input: { marker },
      before: () => Deferred.succeed(reached, undefined)
    })],
    ["during a before gate that never ends", (marker, reached) => ({
      input: { marker },
      before: () => Effect.andThen(Deferred.succeed(reached, undefined), Effect.never)
    })],
    ["during a pause", (_marker, reached) => ({
      input: stepInput,
      batches: [1],
      pause: "1 hour",
      after: () => Deferred.succeed(reached, undefined)
    })],
    ["during a batch", (marker, reached) => ({
      input: { marker },
      before: () => Deferred.succeed(reached, undefined).pipe(Effect.andThen(Effect.sleep("1500 millis")))
    })]
  ]
  for (const [stage, options] of stages) {
    it.live(`${stage}: returns promptly, interrupted, with no worker and no remote process left`, () =>
      Effect.gen(function*() {
        const marker = uniqueMarker("rollint")
        const reached = yield* Deferred.make<void>()
        const hosts = server.hosts.slice(0, 2)
        const fiber = yield* Effect.forkChild(
          Execute.rolling(
            (stage === "during a pause" ? step : sleeper) as typeof sleeper,
            hosts,
            options(marker, reached) as never
          ).pipe(connection)
        )
        yield* Deferred.await(reached)
        if (stage === "during a batch") yield* pollUntil(() => remoteProcesses(marker).length === 2, 10_000)
        const took = yield* interruptTimed(fiber)
        const exit = yield* Fiber.await(fiber)
        assert.isTrue(
          Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause),
          `${stage}: ${String(exit)}`
        )
        assert.isBelow(took, 4000, stage)
        assert.isTrue(yield* noWorkersLeft, `${stage}: workers ${workers().join(",")}`)
        assert.isTrue(yield* pollUntil(() => remoteProcesses(marker).length === 0, 5000), stage)
      }))
  }
})

/** Peak resident memory of this process so far, in MiB. */
const peakMiB = (): number =>
  Number(/^VmHWM:\s+(\d+)/m.exec(fs.readFileSync("/proc/self/status", "utf8"))?.[1] ?? 0) / 1024

const withTempDir = <A, E>(body: (dir: string) => Effect.Effect<A, E>) =>
  Effect.acquireUseRelease(
    Effect.sync(tempDir),
    body,
    (dir) =>
      Effect.sync(() => {
        const readOnly = path.join(dir, "ro")
        if (fs.existsSync(readOnly)) {
          if (process.getuid?.() === 0) execFileSync("chattr", ["-i", readOnly])
          else fs.chmodSync(readOnly, 0o700)
        }
        fs.rmSync(dir, { recursive: true, force: true })
      })
  )

const readOutcome = (file: string) =>
  Report.read(step, file).pipe(
    Effect.timeoutOption("5 seconds"),
    Effect.exit
  )

const sample: Report.Report<string, never> = {
  task: "step",
  status: "completed",
  startedAt: 0,
  durationMillis: 1,
  hosts: [{
    host: "a",
    batch: 1,
    status: "succeeded",
    exit: Exit.succeed("a"),
    attempts: 1,
    durationMillis: 1,
    output: []
  }],
  batches: [{
    batch: 1,
    hosts: ["a"],
    status: "passed",
    failures: 0,
    allowedFailures: 0,
    before: { status: "skipped", durationMillis: 0 },
    after: { status: "skipped", durationMillis: 0 },
    durationMillis: 1
  }]
}

describe("Report.read of hostile files", () => {
  it.live(
    "a FIFO without a writer, a directory, a huge file, not JSON, another task's report: a ReportError naming the path, at once",
    () =>
      withTempDir((dir) =>
        Effect.gen(function*() {
          const fifo = path.join(dir, "fifo.json")
          execFileSync("mkfifo", [fifo])
          const link = path.join(dir, "link.json")
          fs.symlinkSync(fifo, link)
          const huge = path.join(dir, "huge.json")
          fs.writeFileSync(huge, "")
          fs.truncateSync(huge, 400 * 1024 * 1024)
          const notJson = path.join(dir, "text.json")
          fs.writeFileSync(notJson, "not json at all")
          const other = path.join(dir, "other.json")
          fs.writeFileSync(
            other,
            JSON.stringify({
              ...sample,
              hosts: [{ ...sample.hosts[0], exit: { _tag: "Success", value: 42 } }]
            })
          )
          const peak = peakMiB()
          for (const file of [fifo, link, dir, huge, notJson, other]) {
            const start = Date.now()
            const exit = yield* readOutcome(file)
            assert.isTrue(Exit.isFailure(exit), `${file}: no answer within 5 s`)
            const error = failureOf(exit)
            assert.instanceOf(error, Report.ReportError, file)
            assert.strictEqual((error as Report.ReportError).path, file)
            assert.isBelow(Date.now() - start, 3000, file)
          }
          // The huge file was refused by its size, not read whole into memory.
          assert.isBelow(peakMiB() - peak, 200)
        })
      ),
    60_000
  )
})

describe("Report.write is whole or nothing", () => {
  it.effect("a read-only directory, a directory, a FIFO, a symlink, a missing directory: a ReportError, nothing touched", () =>
    withTempDir((dir) =>
      Effect.gen(function*() {
        const readOnly = path.join(dir, "ro")
        fs.mkdirSync(readOnly)
        fs.writeFileSync(path.join(readOnly, "report.json"), "old")
        // As root a mode bit stops nothing: the directory is made immutable instead.
        if (process.getuid?.() === 0) execFileSync("chattr", ["+i", readOnly])
        else fs.chmodSync(readOnly, 0o500)
        const denied = failureOf(
          yield* Effect.exit(Report.write(step, path.join(readOnly, "report.json"), sample))
        )
        assert.instanceOf(denied, Report.ReportError)
        assert.deepStrictEqual(fs.readdirSync(readOnly), ["report.json"])
        assert.strictEqual(fs.readFileSync(path.join(readOnly, "report.json"), "utf8"), "old")

        const isDir = path.join(dir, "taken")
        fs.mkdirSync(isDir)
        fs.writeFileSync(path.join(isDir, "keep"), "x")
        const fifo = path.join(dir, "fifo.json")
        execFileSync("mkfifo", [fifo])
        const target = path.join(dir, "target")
        fs.writeFileSync(target, "untouched")
        const link = path.join(dir, "link.json")
        fs.symlinkSync(target, link)
        const dangling = path.join(dir, "dangling.json")
        fs.symlinkSync(path.join(dir, "nowhere"), dangling)
        // `/dev/stdout` is a symbolic link too: run as root, a rename over it would replace it.
        const refusals: Array<[string, string]> = [
          [isDir, "it is a directory"],
          [fifo, "it is a FIFO"],
          [link, "it is a symbolic link"],
          [dangling, "it is a symbolic link"],
          ["/dev/stdout", "it is a symbolic link"],
          ["/dev/null", "it is a device"],
          [
            path.join(dir, "missing", "report.json"),
            `its directory ${path.join(dir, "missing")} does not exist`
          ]
        ]
        for (const [where, why] of refusals) {
          const refused = failureOf(
            yield* Effect.exit(Report.write(step, where, sample).pipe(Effect.timeout("5 seconds")))
          )
          assert.instanceOf(refused, Report.ReportError, where)
          assert.strictEqual((refused as Report.ReportError).path, where)
          assert.include((refused as Report.ReportError).message, why)
          // the same answer before a run, from the check a program (or the command line) makes first
          const checked = failureOf(yield* Effect.exit(Report.checkPath(where)))
          assert.include((checked as Report.ReportError).message, why)
        }
        assert.deepStrictEqual(fs.readdirSync(isDir), ["keep"])
        assert.isTrue(fs.lstatSync(fifo).isFIFO())
        assert.isTrue(fs.lstatSync(link).isSymbolicLink())
        assert.strictEqual(fs.readFileSync(target, "utf8"), "untouched")
        assert.isTrue(fs.lstatSync("/dev/stdout").isSymbolicLink())
        assert.isTrue(fs.lstatSync("/dev/null").isCharacterDevice())
        assert.sameMembers(fs.readdirSync(dir), [
          "ro",
          "taken",
          "fifo.json",
          "target",
          "link.json",
          "dangling.json"
        ])

        // A regular file is replaced whole, and a new one is made.
        yield* Report.checkPath(target)
        yield* Report.write(step, target, sample)
        assert.deepStrictEqual(Report.pending(yield* Report.read(step, target)), [])
        const fresh = path.join(dir, "fresh.json")
        yield* Report.write(step, fresh, sample)
        assert.strictEqual(fs.statSync(fresh).mode & 0o777, 0o600)
      })
    ))

  it.effect("checkPath refuses what write would fail on after the run: an empty path, a trailing slash, a directory it cannot write", () =>
    withTempDir((dir) =>
      Effect.gen(function*() {
        const readOnly = path.join(dir, "ro")
        fs.mkdirSync(readOnly)
        if (process.getuid?.() === 0) execFileSync("chattr", ["+i", readOnly])
        else fs.chmodSync(readOnly, 0o500)
        const cases: Array<[string, string]> = [
          ["", "no path"],
          [path.join(dir, "new-dir") + "/", "ends with /"],
          [path.join(readOnly, "report.json"), `cannot write in its directory ${readOnly}`],
          [path.join(dir, "r".repeat(256)), "cannot write it"]
        ]
        for (const [where, why] of cases) {
          // Each of these passed the check, then cost the run's record when it was written.
          const checked = failureOf(yield* Effect.exit(Report.checkPath(where)))
          assert.instanceOf(checked, Report.ReportError, JSON.stringify(where))
          assert.include((checked as Report.ReportError).message, why)
          const written = failureOf(yield* Effect.exit(Report.write(step, where, sample)))
          assert.instanceOf(written, Report.ReportError, JSON.stringify(where))
        }
        assert.deepStrictEqual(fs.readdirSync(readOnly), [])
        assert.sameMembers(fs.readdirSync(dir), ["ro"])

        // What is fine stays fine: a directory reached through a symbolic link, and a name that
        // fits NAME_MAX though the temporary file beside it, were it named after it whole, would not.
        const real = path.join(dir, "real")
        fs.mkdirSync(real)
        fs.symlinkSync(real, path.join(dir, "via"))
        for (const where of [path.join(dir, "via", "report.json"), path.join(dir, "s".repeat(250))]) {
          yield* Report.checkPath(where)
          yield* Report.write(step, where, sample)
          assert.deepStrictEqual(Report.pending(yield* Report.read(step, where)), [])
        }
        assert.deepStrictEqual(fs.readdirSync(real), ["report.json"])
      })
    ))
})

/** A consumer that holds every event until `release` completes, then keeps them. */
const collect = (into: Array<Events.Event>) => (events: Stream.Stream<Events.Event>) =>
  Stream.runForEach(events, (event) => Effect.sync(() => void into.push(event)))

describe("Events.consume", () => {
  for (const mode of ["parallel", "fibers"] as const) {
    it.live(
      `a stalled consumer holds a flood of output back (${mode}): memory stays bounded; interrupting the run frees all`,
      () =>
        Effect.gen(function*() {
          const marker = uniqueMarker("flood")
          const blocked = yield* Deferred.make<void>()
          const fiber = yield* Effect.forkChild(
            Execute.withHosts(flood, server.hosts.slice(0, 1), { input: { marker }, workers: 1, mode }).pipe(
              connection,
              Events.consume((events) =>
                Stream.runForEach(events, () =>
                  Effect.andThen(Deferred.succeed(blocked, undefined), Effect.never)), {
                output: "hide",
                bufferSize: 16
              })
            )
          )
          yield* Deferred.await(blocked)
          assert.isTrue(
            yield* pollUntil(() =>
              remoteProcesses(marker).length > 0, 10_000)
          )
          const [worker] = mode === "parallel" ? workers() : [process.pid]
          yield* Effect.sleep("1 second")
          const before = rssMiB(worker!)
          yield* Effect.sleep("5 seconds")
          const grew = rssMiB(worker!) - before
          const start = Date.now()
          const interrupted = yield* Fiber.interrupt(fiber).pipe(Effect.timeoutOption("15 seconds"))
          const took = Date.now() - start
          assert.isBelow(
            grew,
            64,
            `the ${mode} run grew by ${grew.toFixed(0)} MiB while its consumer stalled`
          )
          assert.isTrue(interrupted._tag === "Some", "the interruption returned")
          assert.isBelow(took, 4000)
          assert.isTrue(yield* noWorkersLeft)
          assert.isTrue(
            yield* pollUntil(() =>
              remoteProcesses(marker).length === 0, 5000)
          )
        }),
      60_000
    )
  }

  it.live("a consumer that dies or stops early does not hang the run", () =>
    Effect.gen(function*() {
      const hosts = server.hosts.slice(0, 2)
      const early = yield* Execute.withHosts(numbered, hosts, { input: { count: 3000, width: 50 } }).pipe(
        connection,
        Events.consume((events) => Stream.runDrain(Stream.take(events, 3)), { bufferSize: 1 }),
        Effect.timeout("60 seconds")
      )
      assert.deepStrictEqual(early.map((o) => Exit.isSuccess(o.exit) ? o.exit.value : String(o.exit)), hosts)
      const died = yield* Execute.withHosts(numbered, hosts, { input: { count: 3000, width: 50 } }).pipe(
        connection,
        Events.consume((events) =>
          Stream.runForEach(events, (event) =>
            event._tag === "OutputLine" ? Effect.die(new Error("consumer bug")) : Effect.void), {
          bufferSize: 1
        }),
        Effect.timeout("60 seconds"),
        Effect.exit
      )
      assert.isTrue(Exit.isFailure(died) && Cause.pretty(died.cause).includes("consumer bug"), String(died))
    }), 120_000)

  it.live(
    "events from workers come in order for each host, long lines whole, to nested consumers alike; hide prints nothing",
    () =>
      Effect.gen(function*() {
        const hosts = server.hosts.slice(0, 3)
        const outer: Array<Events.Event> = []
        const inner: Array<Events.Event> = []
        const collector = Output.makeCollector()
        const capture = Output.layerCollect(collector)
        yield* Execute.withHosts(numbered, hosts, {
          input: { count: 200, width: 200_000 },
          workers: 2
        }).pipe(
          Settings.settings({ quiet: false }),
          connection,
          Events.consume(collect(inner), { output: "hide" }),
          Events.consume(collect(outer)),
          Effect.provide(capture)
        )
        assert.deepStrictEqual(collector.lines(), [])
        assert.deepStrictEqual(inner, outer)
        for (const host of hosts) {
          const mine = outer.filter((e) => "host" in e && e.host === host)
          assert.strictEqual(mine[0]!._tag, "HostStarted", host)
          assert.strictEqual(mine.at(-1)!._tag, "HostFinished", host)
          const lines = mine.flatMap((e) => (e._tag === "OutputLine" ? [e.line] : []))
          assert.deepStrictEqual(
            lines.map((l) => Number(l.split(" ")[0])),
            Array.from({ length: 200 }, (_, i) => i + 1)
          )
        }
      }),
    120_000
  )
})

describe("worker logs", () => {
  const entries = (quiet: boolean) =>
    Effect.gen(function*() {
      const seen: Array<{ level: string; message: ReadonlyArray<unknown>; host: unknown }> = []
      const collector = Logger.make(({ fiber, logLevel, message }) => {
        seen.push({
          level: logLevel,
          message: message as ReadonlyArray<unknown>,
          host: fiber.getRef(References.CurrentLogAnnotations)["host"]
        })
      })
      yield* Execute.withHosts(logger, ["w1", "w2"], { input: { size: 8 * 1024 * 1024 }, workers: 2 }).pipe(
        Settings.settings({ quiet }),
        Effect.provide(Logger.layer([collector]))
      )
      return seen
    })

  it.live(
    "reach the parent's Logger with their host, a huge one and a cyclic object too; quiet keeps warnings and errors",
    () =>
      Effect.gen(function*() {
        const loud = yield* entries(false)
        for (const host of ["w1", "w2"]) {
          const mine = loud.filter((e) => e.host === host)
          assert.deepStrictEqual(mine.map((e) => [e.level, String(e.message[0])]), [
            ["Info", "info-entry"],
            ["Info", "huge-entry"],
            ["Warn", "warning-entry"],
            ["Error", "error-entry"]
          ], host)
          assert.strictEqual(String(mine[1]!.message[1]).length, 8 * 1024 * 1024)
          assert.include(String(mine[2]!.message[1]), "cyclic")
        }
        const quiet = yield* entries(true)
        assert.sameMembers(quiet.map((e) => `${e.host} ${e.level} ${String(e.message[0])}`), [
          "w1 Warn warning-entry",
          "w1 Error error-entry",
          "w2 Warn warning-entry",
          "w2 Error error-entry"
        ])
      }),
    60_000
  )
})
