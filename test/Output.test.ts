import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/testing/TestClock"
import * as Events from "../src/Events.ts"
import * as Output from "../src/Output.ts"
import * as Settings from "../src/Settings.ts"

/** Runs `self` with output going to a fresh collector and returns what it printed. */
const collect = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const collector = Output.makeCollector()
    yield* Effect.provide(self, Output.layerCollect(collector))
    return collector.lines()
  })

// 2024-03-05 07:08:09.010 in the local time zone, whatever it is.
const localMoment = new Date(2024, 2, 5, 7, 8, 9, 10)

describe("Output", () => {
  describe("format", () => {
    it("fills every field", () => {
      const now = new Date(Date.UTC(2021, 11, 31, 23, 59, 58, 7))
      const out = Output.format("{host}|{pipe}|{line}|{datetime}", {
        host: "web-1",
        pipe: "out",
        line: "hello",
        now
      })
      assert.strictEqual(out, "web-1|out|hello|2021-12-31T23:59:58.007Z")
    })

    it("date and time are the local calendar date and wall-clock time, zero-padded", () => {
      const out = Output.format("{date} {time}", { host: "h", pipe: "p", line: "l", now: localMoment })
      assert.strictEqual(out, "2024-03-05 07:08:09")
    })

    it("the default template gives [host] pipe: line", () => {
      const out = Output.format(Settings.defaults.lineTemplate, {
        host: "db",
        pipe: "err",
        line: "oops",
        now: localMoment
      })
      assert.strictEqual(out, "[db] err: oops")
    })

    it("a field may appear several times; unknown braces are left alone", () => {
      const out = Output.format("{host}{host} {nope} {line}", {
        host: "a",
        pipe: "p",
        line: "x",
        now: localMoment
      })
      assert.strictEqual(out, "aa {nope} x")
    })

    it("field-like text inside the line, host or pipe is never expanded", () => {
      const out = Output.format("[{host}] {pipe}: {line}", {
        host: "{pipe}",
        pipe: "{line}",
        line: "literally {line} {host} {date} {datetime} $& $1 $$",
        now: localMoment
      })
      assert.strictEqual(out, "[{pipe}] {line}: literally {line} {host} {date} {datetime} $& $1 $$")
    })
  })

  describe("printLine", () => {
    it.effect("prints through the template by default", () =>
      Effect.gen(function*() {
        const lines = yield* collect(Output.printLine("web-1", "out", "hello world"))
        assert.deepStrictEqual(lines, ["[web-1] out: hello world"])
      }))

    it.effect("prints nothing when quiet", () =>
      Effect.gen(function*() {
        const lines = yield* collect(
          Effect.all([Output.printLine("h", "out", "a"), Output.printRunning("h", "run", "ls")]).pipe(
            Settings.hide
          )
        )
        assert.deepStrictEqual(lines, [])
      }))

    it.effect("prints the bare line without displayPrefix", () =>
      Effect.gen(function*() {
        const lines = yield* collect(
          Output.printLine("h", "err", "[not a prefix] {line}").pipe(
            Settings.settings({ displayPrefix: false, lineTemplate: "{date} {host} {line}" })
          )
        )
        assert.deepStrictEqual(lines, ["[not a prefix] {line}"])
      }))

    it.effect("customPipe replaces out/err", () =>
      Effect.gen(function*() {
        const lines = yield* collect(
          Effect.all([Output.printLine("h", "out", "a"), Output.printLine("h", "err", "b")]).pipe(
            Settings.settings({ customPipe: "build" })
          )
        )
        assert.deepStrictEqual(lines, ["[h] build: a", "[h] build: b"])
      }))

    it.effect("a custom template with date and time reads the Clock", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(localMoment.getTime())
        const lines = yield* collect(
          Output.printLine("web-1", "out", "up").pipe(
            Settings.settings({ lineTemplate: "{date} {time} <{host}> {pipe} | {line} @ {datetime}" })
          )
        )
        assert.deepStrictEqual(lines, [`2024-03-05 07:08:09 <web-1> out | up @ ${localMoment.toISOString()}`])
      }))

    it.effect("the time follows the Clock as it moves", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(Date.UTC(2030, 0, 1, 0, 0, 0))
        const collector = Output.makeCollector()
        const print = Output.printLine("h", "out", "tick").pipe(
          Settings.settings({ lineTemplate: "{datetime} {line}" }),
          Effect.provide(Output.layerCollect(collector))
        )
        yield* print
        yield* TestClock.adjust("90 minutes")
        yield* print
        assert.deepStrictEqual(collector.lines(), [
          "2030-01-01T00:00:00.000Z tick",
          "2030-01-01T01:30:00.000Z tick"
        ])
      }))

    it.effect("every write is one whole line ending in exactly one newline", () =>
      Effect.gen(function*() {
        const writes: Array<string> = []
        const writer: Output.Writer = { write: (text) => Effect.sync(() => void writes.push(text)) }
        yield* Effect.all([
          Output.printLine("h", "out", "one"),
          Output.printLine("h", "out", "").pipe(Settings.settings({ displayPrefix: false })),
          Output.printRunning("h", "run", "ls -l")
        ]).pipe(Effect.provideService(Output.Output, writer))
        assert.deepStrictEqual(writes, ["[h] out: one\n", "\n", "[h] run: ls -l\n"])
      }))
  })

  describe("printRunning", () => {
    it.effect("prints [host] verb: command", () =>
      Effect.gen(function*() {
        const lines = yield* collect(
          Effect.all([
            Output.printRunning("web-1", "run", "uptime"),
            Output.printRunning("web-1", "sudo", "systemctl restart app"),
            Output.printRunning("localhost", "local", "git status")
          ])
        )
        assert.deepStrictEqual(lines, [
          "[web-1] run: uptime",
          "[web-1] sudo: systemctl restart app",
          "[localhost] local: git status"
        ])
      }))

    it.effect("shows a command on one line: newlines and escape sequences are written out", () =>
      Effect.gen(function*() {
        const writes: Array<string> = []
        const writer: Output.Writer = { write: (text) => Effect.sync(() => void writes.push(text)) }
        const commands: Array<string> = []
        yield* Effect.all([
          Output.printRunning("h", "run", "printf 'a\nb'\r\necho \x1b[2J\x1b]0;title\x07 done\x7f"),
          Output.printRunning("h", "put", "/tmp/new\nline -> /srv/x\ty")
        ]).pipe(
          Effect.provideService(Output.Output, writer),
          Events.consume((stream) =>
            Stream.runForEach(stream, (event) =>
              Effect.sync(() => {
                if (event._tag === "CommandStarted") commands.push(event.command)
              }))
          )
        )
        assert.deepStrictEqual(writes, [
          "[h] run: printf 'a\\nb'\\r\\necho \\x1b[2J\\x1b]0;title\\x07 done\\x7f\n",
          "[h] put: /tmp/new\\nline -> /srv/x\ty\n"
        ])
        // Watchers get the command as it was given.
        assert.deepStrictEqual(commands, [
          "printf 'a\nb'\r\necho \x1b[2J\x1b]0;title\x07 done\x7f",
          "/tmp/new\nline -> /srv/x\ty"
        ])
      }))

    it.effect("writes out C1 controls too: an 8-bit CSI or NEL in a command is no escape", () =>
      Effect.gen(function*() {
        const writes: Array<string> = []
        const writer: Output.Writer = { write: (text) => Effect.sync(() => void writes.push(text)) }
        // U+009B is CSI and U+0085 a next-line to terminals that take C1 controls (xterm, VTE);
        // U+00A0 and after are printable and stay.
        yield* Output.printRunning("h", "run", "echo \u009b2J\u009b1;1H\u0085ok \u0090x\u009c \u00a0é").pipe(
          Effect.provideService(Output.Output, writer)
        )
        assert.deepStrictEqual(writes, ["[h] run: echo \\x9b2J\\x9b1;1H\\x85ok \\x90x\\x9c \u00a0é\n"])
      }))

    it.effect("prints nothing without displayRunning, while output lines still print", () =>
      Effect.gen(function*() {
        const lines = yield* collect(
          Effect.all([Output.printRunning("h", "run", "ls"), Output.printLine("h", "out", "file")]).pipe(
            Settings.settings({ displayRunning: false })
          )
        )
        assert.deepStrictEqual(lines, ["[h] out: file"])
      }))

    it.effect("keeps its verb under customPipe (it is not an output line)", () =>
      Effect.gen(function*() {
        const lines = yield* collect(
          Output.printRunning("h", "run", "ls").pipe(Settings.settings({ customPipe: "x" }))
        )
        assert.deepStrictEqual(lines, ["[h] run: ls"])
      }))

    it.effect("uses the custom template", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(localMoment.getTime())
        const lines = yield* collect(
          Output.printRunning("h", "run", "make {line}").pipe(
            Settings.settings({ lineTemplate: "{time} {pipe}> {line}" })
          )
        )
        assert.deepStrictEqual(lines, ["07:08:09 run> make {line}"])
      }))
  })

  describe("concurrency", () => {
    it.effect("lines printed by many fibers at once all arrive whole", () =>
      Effect.gen(function*() {
        const fibers = 100
        const perFiber = 30
        const lineOf = (f: number, i: number) =>
          `fiber ${f} line ${i} ${"x".repeat((f * 31 + i * 7) % 200)} end`
        const lines = yield* collect(
          Effect.forEach(
            Array.from({ length: fibers }, (_, f) => f),
            (f) =>
              Effect.gen(function*() {
                for (let i = 0; i < perFiber; i++) {
                  yield* Output.printLine(`host-${f}`, i % 2 === 0 ? "out" : "err", lineOf(f, i))
                  if (i % 3 === f % 3) yield* Effect.yieldNow
                }
              }),
            { concurrency: "unbounded", discard: true }
          )
        )
        assert.strictEqual(lines.length, fibers * perFiber)
        const expected = new Set<string>()
        for (let f = 0; f < fibers; f++) {
          for (let i = 0; i < perFiber; i++) {
            expected.add(`[host-${f}] ${i % 2 === 0 ? "out" : "err"}: ${lineOf(f, i)}`)
          }
        }
        for (const line of lines) assert.isTrue(expected.has(line), `mangled line: ${line}`)
        assert.strictEqual(new Set(lines).size, fibers * perFiber)
        // each fiber's own lines keep their order
        for (let f = 0; f < fibers; f++) {
          const own = lines.filter((l) => l.startsWith(`[host-${f}] `))
          assert.deepStrictEqual(
            own,
            Array.from(
              { length: perFiber },
              (_, i) => `[host-${f}] ${i % 2 === 0 ? "out" : "err"}: ${lineOf(f, i)}`
            )
          )
        }
      }))

    it.effect("fibers with different settings print under their own settings", () =>
      Effect.gen(function*() {
        const lines = yield* collect(
          Effect.all([
            Effect.gen(function*() {
              yield* Effect.yieldNow
              yield* Output.printLine("a", "out", "quiet one")
            }).pipe(Settings.hide),
            Effect.gen(function*() {
              yield* Effect.yieldNow
              yield* Output.printLine("b", "out", "bare")
            }).pipe(Settings.settings({ displayPrefix: false })),
            Output.printLine("c", "out", "normal")
          ], { concurrency: "unbounded" })
        )
        assert.sameMembers([...lines], ["bare", "[c] out: normal"])
      }))
  })

  describe("collector", () => {
    it.effect("keeps lines without their newline, and lines() is a snapshot", () =>
      Effect.gen(function*() {
        const collector = Output.makeCollector()
        yield* collector.write("a\n")
        const snapshot = collector.lines()
        yield* collector.write("b")
        yield* collector.write("c\n\n")
        assert.deepStrictEqual(snapshot, ["a"])
        assert.deepStrictEqual(collector.lines(), ["a", "b", "c\n"])
      }))
  })
})
