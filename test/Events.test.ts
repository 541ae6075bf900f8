import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as HashMap from "effect/HashMap"
import * as Logger from "effect/Logger"
import * as References from "effect/References"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Events from "../src/Events.ts"
import * as Execute from "../src/Execute.ts"
import * as Board from "../src/internal/events/board.ts"
import * as Output from "../src/Output.ts"
import * as Settings from "../src/Settings.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import { failOn, logBoth, manyLines, threeSteps, uploadBlob } from "./fixtures/events-tasks.ts"
import { connectionSettings } from "./support.ts"

const modes = ["parallel", "fibers"] as const

/** Runs `self` with a consumer keeping every event, its own output hidden. */
const collect = <A, E, R>(self: Effect.Effect<A, E, R>, options: Events.ConsumeOptions = {}) =>
  Effect.gen(function*() {
    const events: Array<Events.Event> = []
    const result = yield* self.pipe(
      Events.consume(
        (stream) => Stream.runForEach(stream, (event) => Effect.sync(() => events.push(event))),
        {
          output: "hide",
          ...options
        }
      )
    )
    return { result, events }
  })

const ofHost = (events: ReadonlyArray<Events.Event>, host: string) =>
  events.filter((e) => "host" in e && e.host === host)

/** An event as a short text: its tag and what tells it apart. */
const brief = (event: Events.Event): string => {
  switch (event._tag) {
    case "CommandStarted":
      return `${event._tag} ${event.command}`
    case "OutputLine":
      return `${event._tag} ${event.pipe} ${event.line}`
    case "HostFinished":
      return `${event._tag} ${event.status}`
    case "BatchStarted":
    case "BatchFinished":
      return `${event._tag} ${event.batch}`
    default:
      return event._tag
  }
}

const tmpDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "tb-events-"))

describe("Events on the test server", () => {
  const server = readServerFromEnv()
  const connection = Settings.settings({
    ...connectionSettings(server),
    port: server.port,
    user: server.user
  })
  const hosts = server.hosts.slice(0, 3)

  for (const mode of modes) {
    describe(mode, () => {
      it.live("each host's events come in order: started, each command and its lines, finished", () =>
        Effect.gen(function*() {
          const { events } = yield* collect(Execute.withHosts(threeSteps, hosts, { mode }).pipe(connection))
          for (const host of hosts) {
            assert.deepStrictEqual(ofHost(events, host).map(brief), [
              "HostStarted",
              "CommandStarted echo step-1",
              "OutputLine out step-1",
              "CommandStarted echo step-2a; echo step-2b",
              "OutputLine out step-2a",
              "OutputLine out step-2b",
              "CommandStarted echo step-3 >&2",
              "OutputLine err step-3",
              "HostFinished succeeded"
            ], host)
          }
          // Nothing but these: every event names one of the hosts.
          assert.strictEqual(events.length, 9 * hosts.length)
          for (let i = 1; i < events.length; i++) assert.isAtLeast(events[i]!.at, events[i - 1]!.at - 1000)
        }))

      it.live("a rolling run announces the run and its batches around its hosts", () =>
        Effect.gen(function*() {
          const four = server.hosts.slice(0, 4)
          const { events, result } = yield* collect(
            Execute.rolling(threeSteps, four, { mode, batches: [1, "100%"] }).pipe(connection)
          )
          assert.strictEqual(result.status, "completed")
          const frame = events.filter((e) => !("host" in e)).map(brief)
          assert.deepStrictEqual(frame, [
            "RunStarted",
            "BatchStarted 1",
            "BatchFinished 1",
            "BatchStarted 2",
            "BatchFinished 2",
            "RunFinished"
          ])
          // Each host's events lie inside its batch.
          const at = (tag: string, batch: number) =>
            events.findIndex((e) => (e._tag === tag) && (e as { batch?: number }).batch === batch)
          for (const [i, host] of four.entries()) {
            const batch = i === 0 ? 1 : 2
            const own = events.flatMap((e, index) => ("host" in e && e.host === host ? [index] : []))
            assert.strictEqual(own.length, 9)
            assert.isAbove(own[0]!, at("BatchStarted", batch), host)
            assert.isBelow(own[own.length - 1]!, at("BatchFinished", batch), host)
          }
          const finished = events.at(-1)!
          assert.deepInclude(finished, { _tag: "RunFinished", status: "completed", succeeded: 4, failed: 0 })
        }))

      it.live("a canary that fails stops the run: the rest are reported not started", () =>
        Effect.gen(function*() {
          const four = server.hosts.slice(0, 4)
          const { events } = yield* collect(
            Execute.rolling(failOn, four, { mode, batches: [1, "100%"], input: four[0]! }).pipe(connection)
          )
          const finished = events.filter((e) => e._tag === "HostFinished")
          assert.deepStrictEqual(finished.map((e) => [e.host, e.status]), [
            [four[0], "failed"],
            ...four.slice(1).map((h) => [h, "not-started"])
          ])
          assert.include(finished[0]!.message ?? "", "CommandFailed")
          assert.deepInclude(events.at(-1)!, {
            _tag: "RunFinished",
            status: "stopped",
            failed: 1,
            notStarted: 3
          })
        }))

      it.live("an upload reports its progress, done last, inside its host's run", () =>
        Effect.gen(function*() {
          const size = 3 * 1024 * 1024
          const target = `/tmp/tb-events-upload-${process.pid}-${mode}`
          const { events } = yield* collect(
            Execute.withHosts(uploadBlob, [hosts[0]!], { mode, input: { path: target, size } }).pipe(
              connection
            )
          )
          const own = ofHost(events, hosts[0]!)
          const progress = own.filter((e) => e._tag === "TransferProgress")
          assert.isAtLeast(progress.length, 1)
          const last = progress.at(-1)!
          assert.deepInclude(last, { direction: "upload", path: target, bytes: size, done: true })
          assert.isTrue(progress.slice(0, -1).every((p) => !p.done && p.bytes <= size))
          assert.strictEqual(own[0]!._tag, "HostStarted")
          assert.strictEqual(own.at(-1)!._tag, "HostFinished")
        }))

      it.live("a slow consumer gets every event, and the run waits for it", () =>
        Effect.gen(function*() {
          const lines = 400
          const events: Array<Events.Event> = []
          yield* Execute.withHosts(manyLines, [hosts[0]!], { mode, input: lines }).pipe(
            connection,
            Events.consume(
              (stream) =>
                Stream.runForEach(stream, (event) =>
                  Effect.sync(() =>
                    events.push(event)
                  ).pipe(Effect.andThen(Effect.sleep("5 millis")))),
              { output: "hide", bufferSize: 4 }
            )
          )
          const output = events.filter((e) => e._tag === "OutputLine")
          assert.deepStrictEqual(
            output.map((e) => e.line),
            Array.from({ length: lines }, (_, i) => String(i + 1))
          )
          // The lines were published as the consumer took them, not all at once into a growing
          // buffer: the run itself was slowed down to the consumer's pace. Held at most: the
          // consumer's 4, and from a worker the worker's queue (64), one chunk on its way (64)
          // and the RPC client's queue (16).
          const held = mode === "parallel" ? 4 + 64 + 64 + 16 : 4
          const spread = output.at(-1)!.at - output[0]!.at
          assert.isAtLeast(spread, (lines - held) * 5 * 0.8, `lines published over ${spread} ms`)
        }))

      it.live("a consumer that stops early does not hold the run", () =>
        Effect.gen(function*() {
          const seen: Array<Events.Event> = []
          const outcomes = yield* Execute.withHosts(manyLines, [hosts[0]!], { mode, input: 500 }).pipe(
            connection,
            Events.consume(
              (stream) =>
                Stream.runForEach(Stream.take(stream, 2), (event) => Effect.sync(() => seen.push(event))),
              { output: "hide", bufferSize: 1 }
            ),
            Effect.timeout("30 seconds")
          )
          assert.strictEqual(outcomes[0]!.exit._tag, "Success")
          assert.deepStrictEqual(seen.map((e) => e._tag), ["HostStarted", "CommandStarted"])
        }))

      it.live("nested consumers both see the inner run's events; the outer one its own too", () =>
        Effect.gen(function*() {
          const { events: outer, result: inner } = yield* collect(
            Effect.gen(function*() {
              const inner = yield* collect(
                Execute.withHosts(threeSteps, [hosts[0]!], { mode }).pipe(connection)
              )
              yield* Events.publish({ _tag: "CommandStarted", host: "lb", verb: "drain", command: hosts[0]! })
              return inner.events
            })
          )
          assert.strictEqual(inner.length, 9)
          assert.deepStrictEqual(outer.slice(0, -1), inner)
          assert.deepInclude(outer.at(-1)!, { _tag: "CommandStarted", host: "lb", verb: "drain" })
        }))

      it.live("NDJSON in a file: appended, readable by its owner only, every line an Event", () =>
        Effect.gen(function*() {
          const file = path.join(tmpDir(), "run.ndjson")
          const run = Execute.rolling(threeSteps, hosts, { mode, batches: [1, "100%"] }).pipe(connection)
          const first = yield* collect(run.pipe(Events.consume(Events.ndjsonFile(file))))
          const second = yield* collect(run.pipe(Events.consume(Events.ndjsonFile(file))))
          const lines = fs.readFileSync(file, "utf8").split("\n")
          assert.strictEqual(lines.pop(), "", "the file ends with a whole line")
          const decoded = lines.map((line) => Schema.decodeUnknownSync(Events.Event)(JSON.parse(line)))
          assert.deepStrictEqual(decoded, [...first.events, ...second.events])
          const umask = process.umask()
          assert.strictEqual(fs.statSync(file).mode & 0o777, 0o600 & ~umask)
        }))

      it.live("worker logs reach this process's Logger with their host; quiet keeps the warnings", () =>
        Effect.gen(function*() {
          const entries: Array<{ level: string; message: string; host: unknown; step: unknown }> = []
          const logger = Logger.make(({ fiber, logLevel, message }) => {
            const annotations = fiber.getRef(References.CurrentLogAnnotations)
            entries.push({
              level: logLevel,
              message: (Array.isArray(message) ? message : [message]).join(" "),
              host: annotations.host,
              step: annotations.step
            })
          })
          const two = hosts.slice(0, 2)
          const run = Execute.withHosts(logBoth, two, { mode, input: mode }).pipe(
            connection,
            Effect.provide(Logger.layer([logger]))
          )
          yield* run
          const sorted = () => entries.map((e) => `${e.host} ${e.level} ${e.message} ${e.step}`).sort()
          assert.deepStrictEqual(
            sorted(),
            two.flatMap((h) => [`${h} Info info ${mode} logs`, `${h} Warn warning ${mode} logs`]).sort()
          )
          entries.length = 0
          yield* run.pipe(Settings.settings({ quiet: true }))
          assert.deepStrictEqual(sorted(), two.map((h) => `${h} Warn warning ${mode} logs`).sort())
        }))

      it.live("the board off a terminal prints each host's changes of status, then a summary", () =>
        Effect.gen(function*() {
          const collector = Output.makeCollector()
          const four = server.hosts.slice(0, 4)
          yield* Execute.rolling(failOn, four, {
            mode,
            batches: [2, "100%"],
            maxFailures: 1,
            input: four[1]!
          })
            .pipe(connection, Events.consume(Events.board({ writer: collector }), { output: "hide" }))
          const lines = collector.lines()
          assert.strictEqual(lines[0], "failOn: 4 hosts in 2 batches")
          assert.include(lines, "batch 1 started: 2 hosts")
          assert.include(lines, `[${four[0]}] running`)
          assert.isTrue(lines.some((l) => l.startsWith(`[${four[0]}] done in `)))
          assert.isTrue(
            lines.some((l) => l.startsWith(`[${four[1]}] failed in `) && l.includes("CommandFailed"))
          )
          assert.include(lines, "batch 1 passed (1 failed)")
          assert.isFalse(
            lines.some((l) => l.includes("out: fine") || l.includes("run: ")),
            "no output, no commands"
          )
          assert.strictEqual(lines.at(-3), "failOn finished")
          assert.match(lines.at(-2)!, /^ {2}4 hosts: 3 done, 1 failed in \d+\.\ds$/)
          assert.include(lines.at(-1)!, four[1]!)
          assert.isFalse(lines.some((l) => l.includes("\x1b")))
        }))

      it.live("the board on a terminal redraws in place, at most every interval, then leaves a summary", () =>
        Effect.gen(function*() {
          const writes: Array<string> = []
          const writer: Output.Writer = { write: (text) => Effect.sync(() => void writes.push(text)) }
          const started = Date.now()
          yield* Execute.withHosts(manyLines, hosts, { mode, input: 2000 }).pipe(
            connection,
            Events.consume(Events.board({ writer, isTTY: true, width: 60, interval: "100 millis" }), {
              output: "hide"
            })
          )
          const took = Date.now() - started
          const frames = writes.filter((w) => w.includes("\x1b[K"))
          assert.isAtLeast(frames.length, 1)
          // 6,000 output lines, and frames only from the clock.
          assert.isAtMost(frames.length, took / 100 + 2, `${frames.length} frames in ${took} ms`)
          const last = writes.slice(writes.indexOf(frames.at(-1)!) + 1).join("")
          assert.include(last, "run finished")
          assert.include(last, `${hosts.length} hosts: ${hosts.length} done, 0 failed`)
          assert.strictEqual(writes.at(-1), "\x1b[?25h", "the cursor is shown again")
          for (const frame of frames) {
            for (const line of frame.split("\n").slice(0, -1)) {
              const visible = Board.clean(line.replace("\r", ""))
              assert.isAtMost(Array.from(visible).length, 59, visible)
            }
          }
        }))
    })
  }

  it.live("a file that cannot be opened is logged, and the run goes on", () =>
    Effect.gen(function*() {
      const errors: Array<string> = []
      const logger = Logger.make(({ logLevel, message }) => {
        if (logLevel === "Error") errors.push(String(message))
      })
      const file = path.join(tmpDir(), "missing", "run.ndjson")
      const outcomes = yield* Execute.withHosts(threeSteps, [hosts[0]!], { mode: "fibers" }).pipe(
        connection,
        Settings.hide,
        Events.consume(Events.ndjsonFile(file)),
        Effect.provide(Logger.layer([logger]))
      )
      assert.strictEqual(outcomes[0]!.exit._tag, "Success")
      assert.strictEqual(errors.length, 1)
      assert.include(errors[0]!, file)
      assert.include(errors[0]!, "ENOENT")
    }))
})

describe("the board's rendering", () => {
  const hosts = ["web-1", "web-2", "web-3", "db-1"]
  let clock = 1_000
  const stamp = (
    event: Events.Event extends infer E ? E extends Events.Event ? Omit<E, "at"> : never : never
  ) => ({ ...event, at: clock += 100 }) as Events.Event
  const feed = (events: ReadonlyArray<Events.Event>) => events.reduce(Board.step, Board.initial)
  const run: ReadonlyArray<Events.Event> = [
    stamp({ _tag: "RunStarted", task: "deploy", hosts, batches: 2 }),
    stamp({ _tag: "BatchStarted", batch: 1, hosts: ["web-1", "web-2"] }),
    stamp({ _tag: "GatePassed", batch: 1, gate: "before" }),
    stamp({ _tag: "HostStarted", host: "web-1", batch: 1, attempt: 1 }),
    stamp({ _tag: "HostStarted", host: "web-2", batch: 1, attempt: 1 }),
    stamp({ _tag: "CommandStarted", host: "web-1", verb: "run", command: "systemctl restart app" }),
    stamp({ _tag: "OutputLine", host: "web-2", pipe: "out", line: "\x1b[31mred\x1b[0m\tand\rreturn" }),
    stamp({
      _tag: "HostFinished",
      host: "web-2",
      batch: 1,
      status: "failed",
      attempts: 1,
      durationMillis: 1500,
      message: "CommandFailed: exit 3"
    })
  ]

  it("one line per host: pending, running with its last line, failed with its message", () => {
    const frame = Board.frame(feed(run), { width: 80, now: clock + 2000 })
    assert.strictEqual(
      frame[0],
      "deploy · batch 1/2 · 1/4 hosts: 0 done, 1 failed · 1 running · 2 pending · 2.7s"
    )
    assert.strictEqual(frame[1], "  batch 1: before gate passed")
    assert.deepStrictEqual(frame.slice(2), [
      "  web-1  running       2.4s  run: systemctl restart app",
      "  web-2  failed        1.5s  CommandFailed: exit 3",
      "  web-3  pending",
      "  db-1   pending"
    ])
  })

  it("keeps only the last line of each host, cleaned of escape and control characters", () => {
    let state = feed(run.slice(0, 5))
    for (let i = 0; i < 10_000; i++) {
      state = Board.step(state, {
        _tag: "OutputLine",
        at: clock,
        host: "web-1",
        pipe: "out",
        line: `line ${i}`
      })
    }
    state = Board.step(state, run[6]!)
    assert.strictEqual(HashMap.size(state.rows), 4)
    assert.strictEqual(
      HashMap.get(state.rows, "web-1").pipe((row) => row._tag === "Some" ? row.value.last : ""),
      "out: line 9999"
    )
    const frame = Board.frame(state, { width: 80, now: clock })
    assert.include(frame.join("\n"), "out: red and return")
    assert.notInclude(frame.join("\n"), "\x1b")
    // The 8-bit forms of CSI and of a new line, which xterm and VTE read as such, go too.
    assert.strictEqual(Board.clean("a\u009b2Jb\u0085c\u00a0d"), "a 2Jb c\u00a0d")
  })

  it("fits the width, and the height with failures and running hosts first", () => {
    const many = Array.from({ length: 50 }, (_, i) => `host-${i}`)
    let state = Board.step(
      Board.initial,
      stamp({ _tag: "RunStarted", task: "deploy", hosts: many, batches: 1 })
    )
    state = Board.step(state, stamp({ _tag: "HostStarted", host: "host-40", attempt: 1 }))
    state = Board.step(
      state,
      stamp({ _tag: "OutputLine", host: "host-40", pipe: "out", line: "x".repeat(500) })
    )
    state = Board.step(
      state,
      stamp({
        _tag: "HostFinished",
        host: "host-45",
        status: "failed",
        attempts: 1,
        durationMillis: 5,
        message: "boom"
      })
    )
    const frame = Board.frame(state, { width: 40, height: 10, now: clock })
    assert.strictEqual(frame.length, 9)
    for (const line of frame) assert.isAtMost(Array.from(line).length, 40, line)
    // The failed and running hosts, and the first pending ones, in the run's order.
    assert.deepStrictEqual(frame.slice(1, 8).map((line) => line.split(/\s+/)[1]), [
      "host-0",
      "host-1",
      "host-2",
      "host-3",
      "host-4",
      "host-40",
      "host-45"
    ])
    assert.isTrue(frame[6]!.endsWith("…"))
    assert.strictEqual(frame[8], "  … 43 more: 43 pending")
    // Colours come after fitting, around the status word only.
    const colored = Board.frame(state, { width: 40, height: 10, now: clock, color: true })
    assert.include(colored[7]!, "\x1b[31mfailed\x1b[0m")
    // A status word cut by the width is left plain rather than coloured past the line's end.
    const narrow = Board.frame(state, { width: 14, now: clock, color: true })
    assert.notInclude(narrow.join("\n"), "\x1b")
    for (const line of narrow) assert.isAtMost(Array.from(line).length, 14, line)
  })

  it("the summary keeps the hosts that did not succeed, however many", () => {
    clock = 1_800
    const state = feed([
      ...run,
      stamp({
        _tag: "HostFinished",
        host: "web-1",
        batch: 1,
        status: "succeeded",
        attempts: 1,
        durationMillis: 900
      }),
      stamp({ _tag: "BatchFinished", batch: 1, failures: 1, status: "failed" }),
      stamp({
        _tag: "HostFinished",
        host: "web-3",
        batch: 2,
        status: "not-started",
        attempts: 0,
        durationMillis: 0,
        message: "batch 1 went over its failure budget"
      }),
      stamp({
        _tag: "HostFinished",
        host: "db-1",
        batch: 2,
        status: "not-started",
        attempts: 0,
        durationMillis: 0,
        message: "batch 1 went over its failure budget"
      }),
      stamp({
        _tag: "RunFinished",
        status: "stopped",
        reason: "batch 1 went over its failure budget",
        succeeded: 1,
        failed: 1,
        notStarted: 2
      })
    ])
    assert.deepStrictEqual(Board.summary(state, { width: 200, now: 0 }), [
      "deploy stopped: batch 1 went over its failure budget",
      "  4 hosts: 1 done, 1 failed, 2 not started in 1.2s",
      "  web-2  failed        1.5s  CommandFailed: exit 3",
      "  web-3  not started         batch 1 went over its failure budget",
      "  db-1   not started         batch 1 went over its failure budget"
    ])
  })

  it.effect("off a terminal, the consumer prints status changes only, then the summary", () =>
    Effect.gen(function*() {
      const collector = Output.makeCollector()
      yield* Events.board({ writer: collector })(Stream.fromIterable(run))
      assert.deepStrictEqual(collector.lines(), [
        "deploy: 4 hosts in 2 batches",
        "batch 1 started: 2 hosts",
        "batch 1: before gate passed",
        "[web-1] running",
        "[web-2] running",
        "[web-2] failed in 1.5s: CommandFailed: exit 3",
        "deploy finished",
        "  4 hosts: 0 done, 1 failed, 3 never finished in 0.7s",
        "  web-1  running       0.4s  run: systemctl restart app",
        "  web-2  failed        1.5s  CommandFailed: exit 3",
        "  web-3  pending",
        "  db-1   pending"
      ])
    }))
})
