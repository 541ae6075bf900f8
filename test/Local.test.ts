import * as NodeServices from "@effect/platform-node/NodeServices"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FileSystem from "effect/FileSystem"
import * as Logger from "effect/Logger"
import type * as Scope from "effect/Scope"
import { execFileSync, spawn } from "node:child_process"
import { readFileSync } from "node:fs"
import * as path from "node:path"
import { CommandResult } from "../src/CommandResult.ts"
import { CommandFailed, CommandTimeout, PromptAborted, SettingsError } from "../src/Errors.ts"
import { quote } from "../src/internal/command/shell.ts"
import * as Operations from "../src/Operations.ts"
import * as Output from "../src/Output.ts"
import * as Settings from "../src/Settings.ts"

// -- helpers ----------------------------------------------------------------------------------------

/**
 * A test on the real clock with the Node services. Output and logs are silenced unless the test
 * provides its own collector or logger (an inner `Effect.provide` wins).
 */
const live = <A, E>(
  name: string,
  body: () => Effect.Effect<A, E, FileSystem.FileSystem | Scope.Scope | NodeServices.NodeServices>
) =>
  it.live(name, () =>
    body().pipe(
      Effect.provide(Output.layerCollect(Output.makeCollector())),
      Effect.provide(Logger.layer([])),
      Effect.provide(NodeServices.layer)
    ))

/** Runs `self` with a fresh output collector and returns its value with the printed lines. */
const collecting = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const collector = Output.makeCollector()
    const value = yield* self.pipe(Effect.provide(Output.layerCollect(collector)))
    return { value, lines: collector.lines() }
  })

interface LogEntry {
  readonly level: string
  readonly message: string
}

/** Runs `self` with a logger that keeps every entry, and returns its exit with the entries. */
const logging = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const logs: Array<LogEntry> = []
    const logger = Logger.make(({ logLevel, message }) => {
      const text = Array.isArray(message) ? message.map(String).join(" ") : String(message)
      logs.push({ level: logLevel, message: text })
    })
    const exit = yield* Effect.exit(self.pipe(Effect.provide(Logger.layer([logger]))))
    return { exit, logs }
  })

/** A real temporary directory, removed when the test ends, with symlinks resolved. */
const tempDir = Effect.gen(function*() {
  const fs = yield* FileSystem.FileSystem
  const dir = yield* fs.makeTempDirectoryScoped({ prefix: "threadbare-local-" })
  return yield* fs.realPath(dir)
})

/**
 * A unique `sleep` argument: processes started as `sleep <marker>` can be found in the process
 * table by their command line and by nothing else.
 */
const sleepMarker = (): string => (300 + Math.random()).toFixed(9)

/** Live (not zombie) processes whose command line contains `sleep <marker>`, as `pid args`. */
const survivors = (marker: string): Array<string> => {
  let listing: string
  try {
    listing = execFileSync("pgrep", ["-a", "-f", `sleep ${marker}`], { encoding: "utf8" })
  } catch {
    return [] // pgrep exits 1 when nothing matches
  }
  return listing.split("\n").filter((line) => {
    const pid = line.split(" ")[0]
    if (pid === undefined || pid === "") return false
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
      return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z"
    } catch {
      return false
    }
  })
}

/** Kills, by pid, whatever a test left running under its marker (cleanup only). */
const reap = (marker: string) =>
  Effect.sync(() => {
    for (const line of survivors(marker)) {
      try {
        process.kill(Number(line.split(" ")[0]), "SIGKILL")
      } catch {
        // already gone
      }
    }
  })

/** Polls `check` every 20 ms until it holds, for at most `millis`. */
const waitUntil = (check: () => boolean, millis = 5_000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + millis
    while (!check()) {
      if (Date.now() > deadline) return yield* Effect.die(new Error("waitUntil: condition never held"))
      yield* Effect.sleep("20 millis")
    }
  })

interface ChildOutcome {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs a program with `input` on its standard input and collects its output (killed at 20 s). */
const runProgram = (program: string, args: ReadonlyArray<string>, input: string) =>
  Effect.callback<ChildOutcome>((resume) => {
    const child = spawn(program, args, { stdio: ["pipe", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (text: string) => void (stdout += text))
    child.stderr.setEncoding("utf8").on("data", (text: string) => void (stderr += text))
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000)
    child.on("close", (code) => {
      clearTimeout(timer)
      resume(Effect.succeed({ code, stdout, stderr }))
    })
    child.stdin.end(input)
    return Effect.sync(() => {
      clearTimeout(timer)
      child.kill("SIGKILL")
    })
  })

const childScript = path.join(import.meta.dirname, "fixtures", "local-child.ts")
const hiddenChildScript = path.join(import.meta.dirname, "fixtures", "local-hidden-child.ts")

/** Runs `local(command)` without capture in a child Node process (stdin from `input`). */
const localInChild = (command: string, input: string) =>
  runProgram(process.execPath, [childScript, "local", command], input)

/** The same, with the child under a pseudo-terminal made by `script(1)`. */
const underPty = (mode: "local" | "prompt", text: string, input: string) =>
  runProgram("script", [
    "-qec",
    [process.execPath, childScript, mode, text].map(quote).join(" "),
    "/dev/null"
  ], input)

/** The `RESULT:` line a child prints last. */
const childResult = (stdout: string): unknown => {
  const line = stdout.split(/\r?\n/).find((l) => l.startsWith("RESULT:"))
  assert.isDefined(line, `no RESULT line in child output:\n${stdout}`)
  return JSON.parse(line!.slice("RESULT:".length))
}

/** Words a shell would mangle if they were not quoted. */
const hostileWords: ReadonlyArray<string> = [
  "it's",
  "\"double\"",
  "$HOME",
  "${PATH}",
  "`id`",
  "$(id -un)",
  "a b  c",
  "*",
  "~",
  "~/x",
  ";",
  "|",
  "&&",
  "> /tmp/threadbare-never",
  "line1\nline2",
  "tab\there",
  "back\\slash",
  "-n",
  "--",
  "",
  "'",
  "'\\''",
  "!event",
  "#comment",
  "héllo wörld ✓ 😀",
  "%s %d"
]

// -- tests ------------------------------------------------------------------------------------------

describe("local", () => {
  describe("shell string and argument list", () => {
    live("a string runs through /bin/sh -c", () =>
      Effect.gen(function*() {
        const result = yield* Operations.local("echo $((6 * 7)) | tr 4 X", { capture: true })
        assert.strictEqual(result.stdout, "X2\n")
        assert.strictEqual(result.exitCode, 0)
        assert.strictEqual(result.signal, null)
        assert.strictEqual(result.command, "echo $((6 * 7)) | tr 4 X")
        assert.strictEqual(result.realCommand, "/bin/sh -c 'echo $((6 * 7)) | tr 4 X'")
        assert.strictEqual(result.host, "localhost")
      }))

    live("the `shell` option picks another shell", () =>
      Effect.gen(function*() {
        const bash = yield* Operations.local("echo \"${BASH_VERSION:+bash}\"", {
          capture: true,
          shell: "/bin/bash -c"
        })
        assert.strictEqual(bash.stdout, "bash\n")
        const sh = yield* Operations.local("echo \"${BASH_VERSION:+bash}\"", { capture: true })
        assert.strictEqual(sh.stdout, "\n")
      }))

    live("a string without a shell fails with SettingsError and runs nothing", () =>
      Effect.gen(function*() {
        const dir = yield* tempDir
        const file = path.join(dir, "created")
        const error = yield* Effect.flip(Operations.local(`touch ${file}`, { useShell: false }))
        assert.instanceOf(error, SettingsError)
        assert.strictEqual(error.setting, "useShell")
        assert.strictEqual(error.value, `touch ${file}`)
        const viaSettings = yield* Effect.flip(
          Operations.local(`touch ${file}`).pipe(Settings.settings({ useShell: false }))
        )
        assert.instanceOf(viaSettings, SettingsError)
        const fs = yield* FileSystem.FileSystem
        assert.isFalse(yield* fs.exists(file))
      }))

    live("an empty argument list fails with SettingsError", () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(Operations.local([], { useShell: false }))
        assert.instanceOf(error, SettingsError)
        assert.strictEqual(error.setting, "command")
      }))

    live("an argument list without a shell arrives byte for byte", () =>
      Effect.gen(function*() {
        const result = yield* Operations.local(["printf", "%s\\000", ...hostileWords], {
          useShell: false,
          capture: true
        })
        assert.deepStrictEqual(result.stdout.split("\0"), [...hostileWords, ""])
        assert.isFalse(result.realCommand.startsWith("/bin/sh"))
      }))

    live(
      "an argument list through the shell is quoted and arrives byte for byte",
      () =>
        Effect.gen(function*() {
          const result = yield* Operations.local(["printf", "%s\\000", ...hostileWords], {
            useShell: true,
            capture: true
          })
          assert.deepStrictEqual(result.stdout.split("\0"), [...hostileWords, ""])
          assert.isTrue(result.realCommand.startsWith("/bin/sh -c "))
          // One word at a time too, with the shell's own printf.
          for (const word of hostileWords) {
            const one = yield* Operations.local(["printf", "%s", word], { capture: true })
            assert.strictEqual(one.stdout, word)
          }
        })
    )
  })

  describe("capture", () => {
    live("keeps unicode output without a trailing newline exactly", () =>
      Effect.gen(function*() {
        const text = "héllo wörld ✓ 😀 日本語"
        const result = yield* Operations.local(["printf", "%s", text], { capture: true, useShell: false })
        assert.strictEqual(result.stdout, text)
        assert.deepStrictEqual(result.stdoutLines, [text])
      }))

    live(
      "keeps control bytes, CR and empty lines; bytes that are not UTF-8 become U+FFFD",
      () =>
        Effect.gen(function*() {
          const result = yield* Operations.local(
            "printf 'a\\001\\002\\033[1m\\177\\tb\\r\\n\\n\\nc\\r'",
            { capture: true }
          )
          assert.strictEqual(result.stdout, "a\u0001\u0002\u001b[1m\u007f\tb\r\n\n\nc\r")
          const invalid = yield* Operations.local("printf 'x\\377y'", { capture: true })
          assert.strictEqual(invalid.stdout, "x\uFFFDy")
        })
    )

    live("multi-byte characters split across chunks decode exactly", () =>
      Effect.gen(function*() {
        // 200 000 lines of 3- and 4-byte characters: chunk boundaries fall inside characters.
        const result = yield* Operations.local("yes 'é€😀' | head -n 200000", { capture: true })
        assert.strictEqual(result.stdout.length, "é€😀\n".length * 200_000)
        assert.strictEqual(result.stdout, "é€😀\n".repeat(200_000))
      }))

    live("several MB on stdout and stderr at once: no deadlock, nothing lost", () =>
      Effect.gen(function*() {
        const started = Date.now()
        const result = yield* Operations.local(
          "yes 0123456789abcdef | head -c 6000000 & yes ERR | head -c 6000000 >&2; wait",
          { capture: true, combineStderr: false, timeout: "30 seconds" }
        )
        const elapsed = Date.now() - started
        assert.strictEqual(result.stdout.length, 6_000_000)
        assert.strictEqual(result.stderr.length, 6_000_000)
        assert.strictEqual(result.stdout, "0123456789abcdef\n".repeat(352_942).slice(0, 6_000_000))
        assert.strictEqual(result.stderr, "ERR\n".repeat(1_500_000))
        console.log(`[measure] 2 x 6 MB captured in ${elapsed} ms`)
      }))

    live(
      "combined (the default): stderr goes into stdout, each stream in its own order",
      () =>
        Effect.gen(function*() {
          const result = yield* Operations.local(
            "i=1; while [ $i -le 500 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done",
            { capture: true }
          )
          assert.strictEqual(result.stderr, "")
          const lines = result.stdoutLines
          assert.strictEqual(lines.length, 1000)
          const expected = (prefix: string) => Array.from({ length: 500 }, (_, i) => `${prefix}${i + 1}`)
          assert.deepStrictEqual(lines.filter((l) => l.startsWith("out")), expected("out"))
          assert.deepStrictEqual(lines.filter((l) => l.startsWith("err")), expected("err"))
        })
    )

    live(
      "combined: lines keep the order in which the command wrote its two streams, 50 runs out of 50",
      () =>
        Effect.gen(function*() {
          for (let run = 0; run < 50; run++) {
            const result = yield* Operations.local("echo one; echo two >&2; echo three; echo four >&2", {
              capture: true
            })
            assert.deepStrictEqual(result.stdoutLines, ["one", "two", "three", "four"], `run ${run + 1}`)
            assert.strictEqual(result.stderr, "")
          }
        })
    )

    live(
      "combined and streamed: printed lines keep the written order too, as `out` lines",
      () =>
        Effect.gen(function*() {
          for (let run = 0; run < 10; run++) {
            const { lines, value } = yield* collecting(
              Operations.local("echo one; echo two >&2; echo three; echo four >&2", {
                capture: true,
                stream: true
              })
            )
            assert.deepStrictEqual(value.stdoutLines, ["one", "two", "three", "four"])
            assert.deepStrictEqual(
              lines.slice(1),
              ["one", "two", "three", "four"].map((l) => `[localhost] out: ${l}`)
            )
          }
        })
    )

    live(
      "combined: a missing program still exits 127 and says it was not found",
      () =>
        Effect.gen(function*() {
          const error = yield* Effect.flip(
            Operations.local(["threadbare-no-such-program"], { useShell: false, capture: true })
          )
          assert.instanceOf(error, CommandFailed)
          assert.strictEqual(error.result.exitCode, 127)
          assert.include(error.message, "not found")
        })
    )

    live("separate: stdout and stderr are kept apart, in order", () =>
      Effect.gen(function*() {
        const result = yield* Operations.local(
          "i=1; while [ $i -le 500 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done",
          { capture: true, combineStderr: false }
        )
        const expected = (prefix: string) =>
          Array.from({ length: 500 }, (_, i) => `${prefix}${i + 1}\n`).join("")
        assert.strictEqual(result.stdout, expected("out"))
        assert.strictEqual(result.stderr, expected("err"))
      }))

    live("capture as a setting", () =>
      Effect.gen(function*() {
        const result = yield* Operations.local("echo from-settings").pipe(
          Settings.settings({ capture: true })
        )
        assert.strictEqual(result.stdout, "from-settings\n")
      }))

    live("stdin of a captured command is empty (it never waits for input)", () =>
      Effect.gen(function*() {
        const result = yield* Operations.local("cat; echo end", { capture: true, timeout: "5 seconds" })
        assert.strictEqual(result.stdout, "end\n")
      }))
  })

  describe("printing", () => {
    live("prints `local:` first, then each line as `out:`/`err:`", () =>
      Effect.gen(function*() {
        const command = "echo one; echo two >&2; echo; printf 'three'"
        const { lines, value } = yield* collecting(
          Operations.local(command, { capture: true, stream: true, combineStderr: false })
        )
        assert.strictEqual(lines[0], `[localhost] local: ${command}`)
        assert.deepStrictEqual(lines.filter((l) => l.includes("] out:")), [
          "[localhost] out: one",
          "[localhost] out: ",
          "[localhost] out: three"
        ])
        assert.deepStrictEqual(lines.filter((l) => l.includes("] err:")), ["[localhost] err: two"])
        assert.strictEqual(lines.length, 5)
        assert.strictEqual(value.stdout, "one\n\nthree")
        assert.strictEqual(value.stderr, "two\n")
      }))

    live("combined, every line is printed as `out:`", () =>
      Effect.gen(function*() {
        const { lines } = yield* collecting(
          Operations.local("echo a; echo b >&2", { capture: true, stream: true })
        )
        assert.deepStrictEqual(lines.slice(1).sort(), ["[localhost] out: a", "[localhost] out: b"])
      }))

    live("lines are printed while the command runs", () =>
      Effect.gen(function*() {
        const collector = Output.makeCollector()
        const fiber = yield* Operations.local("echo first; sleep 1; echo second", {
          capture: true,
          stream: true
        })
          .pipe(Effect.provide(Output.layerCollect(collector)), Effect.forkChild)
        yield* waitUntil(() => collector.lines().includes("[localhost] out: first"))
        // "first" is on screen before the command has finished.
        assert.isFalse(collector.lines().includes("[localhost] out: second"))
        assert.isUndefined(fiber.pollUnsafe())
        const result = yield* Fiber.join(fiber)
        assert.strictEqual(result.stdout, "first\nsecond\n")
        assert.strictEqual(collector.lines().at(-1), "[localhost] out: second")
      }))

    live("stream without capture prints the lines but keeps nothing", () =>
      Effect.gen(function*() {
        const { lines, value } = yield* collecting(Operations.local("echo shown", { stream: true }))
        assert.deepStrictEqual(lines, ["[localhost] local: echo shown", "[localhost] out: shown"])
        assert.strictEqual(value.stdout, "")
      }))

    live("without stream, only the `local:` line is printed", () =>
      Effect.gen(function*() {
        const { lines, value } = yield* collecting(Operations.local("echo kept", { capture: true }))
        assert.deepStrictEqual(lines, ["[localhost] local: echo kept"])
        assert.strictEqual(value.stdout, "kept\n")
      }))

    live("quiet (option) and hide (block) print nothing but keep the output", () =>
      Effect.gen(function*() {
        const quiet = yield* collecting(
          Operations.local("echo a; echo b >&2", { capture: true, stream: true, quiet: true })
        )
        assert.deepStrictEqual(quiet.lines, [])
        assert.strictEqual(quiet.value.stdout.length, 4)
        const hidden = yield* collecting(
          Operations.local("echo a; echo b >&2", { capture: true, stream: true }).pipe(Settings.hide)
        )
        assert.deepStrictEqual(hidden.lines, [])
        assert.strictEqual(hidden.value.stdout.length, 4)
      }))

    live("displayRunning: false drops the `local:` line only", () =>
      Effect.gen(function*() {
        const { lines } = yield* collecting(
          Operations.local("echo x", { capture: true, stream: true }).pipe(
            Settings.settings({ displayRunning: false })
          )
        )
        assert.deepStrictEqual(lines, ["[localhost] out: x"])
      }))

    live("discardOutput keeps nothing in the result and still prints", () =>
      Effect.gen(function*() {
        const { lines, value } = yield* collecting(
          Operations.local("echo x; echo y >&2; exit 0", {
            capture: true,
            stream: true,
            combineStderr: false
          })
            .pipe(Settings.settings({ discardOutput: true }))
        )
        assert.strictEqual(value.stdout, "")
        assert.strictEqual(value.stderr, "")
        assert.deepStrictEqual(lines.slice(1).sort(), ["[localhost] err: y", "[localhost] out: x"])
      }))
  })

  describe("without capture", () => {
    live("the command inherits the process's stdout and stderr", () =>
      Effect.gen(function*() {
        const child = yield* localInChild("echo to-stdout; echo to-stderr >&2", "")
        assert.strictEqual(child.code, 0)
        assert.include(child.stdout, "[localhost] local: echo to-stdout; echo to-stderr >&2\n")
        assert.include(child.stdout, "\nto-stdout\n")
        assert.include(child.stderr, "to-stderr\n")
        assert.deepStrictEqual(childResult(child.stdout), { ok: { exitCode: 0, stdout: "", stderr: "" } })
      }))

    live(
      "Settings.hide (and the quiet option) sends an uncaptured command's output nowhere",
      () =>
        Effect.gen(function*() {
          const fs = yield* FileSystem.FileSystem
          const dir = yield* tempDir
          for (const how of ["hide", "quiet"] as const) {
            const ran = path.join(dir, `ran-${how}`)
            const child = yield* runProgram(process.execPath, [
              hiddenChildScript,
              how,
              `echo hidden-out; echo hidden-err >&2; touch ${quote(ran)}`
            ], "")
            assert.strictEqual(child.code, 0, child.stderr)
            assert.notInclude(child.stdout, "hidden-out", how)
            assert.notInclude(child.stderr, "hidden-err", how)
            assert.notInclude(child.stdout, "local:", how)
            assert.deepStrictEqual(childResult(child.stdout), { ok: { exitCode: 0, stdout: "", stderr: "" } })
            assert.isTrue(yield* fs.exists(ran), `${how}: the command ran`)
          }
        })
    )

    live("the command inherits stdin", () =>
      Effect.gen(function*() {
        const child = yield* localInChild(
          "read x; echo got:$x; [ -t 0 ] && echo tty || echo no-tty",
          "hello from the pipe\n"
        )
        assert.include(child.stdout, "\ngot:hello from the pipe\nno-tty\n")
        assert.deepStrictEqual(childResult(child.stdout), { ok: { exitCode: 0, stdout: "", stderr: "" } })
      }))

    live(
      "an interactive command reads from the terminal (under a pseudo-terminal)",
      () =>
        Effect.gen(function*() {
          const child = yield* underPty(
            "local",
            "[ -t 0 ] && [ -t 1 ] && echo is-a-tty; printf 'name? '; read x; echo got:$x",
            "Ada Lovelace\n"
          )
          const text = child.stdout.replaceAll("\r", "")
          assert.include(text, "is-a-tty\n")
          assert.include(text, "got:Ada Lovelace\n")
          assert.deepStrictEqual(childResult(text), { ok: { exitCode: 0, stdout: "", stderr: "" } })
        })
    )
  })

  describe("failures", () => {
    live("a non-zero exit fails with CommandFailed carrying the result", () =>
      Effect.gen(function*() {
        const command = "echo partial; echo 'it broke' >&2; exit 3"
        const error = yield* Effect.flip(Operations.local(command, { capture: true, combineStderr: false }))
        assert.instanceOf(error, CommandFailed)
        const r = error.result
        assert.instanceOf(r, CommandResult)
        assert.strictEqual(r.exitCode, 3)
        assert.strictEqual(r.signal, null)
        assert.strictEqual(r.stdout, "partial\n")
        assert.strictEqual(r.stderr, "it broke\n")
        assert.strictEqual(r.command, command)
        assert.strictEqual(r.realCommand, `/bin/sh -c ${quote(command)}`)
        assert.isTrue(r.failed)
        assert.strictEqual(error.host, "localhost")
        assert.include(error.message, "exit code 3")
        assert.include(error.message, "it broke")
        assert.include(error.message, "warnOnly")
      }))

    live("a non-zero exit without capture fails too", () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(Operations.local("exit 9"))
        assert.instanceOf(error, CommandFailed)
        assert.strictEqual(error.result.exitCode, 9)
      }))

    live("warnOnly returns the failed result and logs a warning, not an error", () =>
      Effect.gen(function*() {
        const { exit, logs } = yield* logging(
          Operations.warnOnly(Operations.local("echo out; exit 4", { capture: true }))
        )
        assert.isTrue(Exit.isSuccess(exit))
        const result = (exit as Exit.Success<CommandResult>).value
        assert.strictEqual(result.exitCode, 4)
        assert.strictEqual(result.stdout, "out\n")
        assert.deepStrictEqual(logs.map((l) => l.level), ["Warn"])
        assert.include(logs[0]!.message, "exit code 4")
        assert.include(logs[0]!.message, "echo out; exit 4")
      }))

    live("warnOnly as an option, and over an inner warnOnly: false", () =>
      Effect.gen(function*() {
        const option = yield* Operations.local("exit 5", { warnOnly: true })
        assert.strictEqual(option.exitCode, 5)
        const inner = yield* Operations.warnOnly(Operations.local("exit 6", { warnOnly: false }))
        assert.strictEqual(inner.exitCode, 6)
        // The option holds for one call only.
        const after = yield* Effect.flip(Operations.local("exit 7"))
        assert.instanceOf(after, CommandFailed)
        assert.strictEqual(after.result.exitCode, 7)
      }))

    live(
      "displayAborts logs the failure as an error; displayAborts: false does not",
      () =>
        Effect.gen(function*() {
          const shown = yield* logging(Operations.local("echo why >&2; exit 2", { capture: true }))
          assert.isTrue(Exit.isFailure(shown.exit))
          assert.deepStrictEqual(shown.logs.map((l) => l.level), ["Error"])
          assert.include(shown.logs[0]!.message, "exit code 2")
          assert.include(shown.logs[0]!.message, "why")
          const silent = yield* logging(
            Operations.local("exit 2", { capture: true }).pipe(Settings.settings({ displayAborts: false }))
          )
          assert.isTrue(Exit.isFailure(silent.exit))
          assert.deepStrictEqual(silent.logs, [])
        })
    )

    live("a command killed by a signal: signal SIGKILL, exit code null", () =>
      Effect.gen(function*() {
        for (const capture of [true, false]) {
          const error = yield* Effect.flip(
            Operations.local("echo before; kill -9 $$; echo after", { capture })
          )
          assert.instanceOf(error, CommandFailed)
          assert.strictEqual(error.result.signal, "SIGKILL")
          assert.strictEqual(error.result.exitCode, null)
          assert.strictEqual(error.result.ending, "signal SIGKILL")
          if (capture) assert.strictEqual(error.result.stdout, "before\n")
          assert.include(error.message, "signal SIGKILL")
        }
        const warned = yield* Operations.warnOnly(Operations.local("kill -TERM $$", { capture: true }))
        assert.strictEqual(warned.signal, "SIGTERM")
      }))

    live("a missing program (argument list) exits 127 with a message", () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(
          Operations.local(["threadbare-no-such-program", "x"], { useShell: false, capture: true })
        )
        assert.instanceOf(error, CommandFailed)
        assert.strictEqual(error.result.exitCode, 127)
        assert.include(error.result.stderr, "threadbare-no-such-program")
        assert.include(error.result.stderr, "not found")
        assert.include(error.message, "not found")
      }))

    live("a missing program without capture still says what went wrong", () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(
          Operations.local(["threadbare-no-such-program"], { useShell: false })
        )
        assert.instanceOf(error, CommandFailed)
        assert.strictEqual(error.result.exitCode, 127)
        assert.include(error.message, "not found")
      }))

    live(
      "a missing program through the shell exits 127 with the shell's message",
      () =>
        Effect.gen(function*() {
          const error = yield* Effect.flip(
            Operations.local("threadbare-no-such-program", { capture: true, combineStderr: false })
          )
          assert.instanceOf(error, CommandFailed)
          assert.strictEqual(error.result.exitCode, 127)
          assert.include(error.result.stderr, "not found")
        })
    )

    live(
      "a `cwd` that is missing or a file fails with SettingsError, and nothing runs",
      () =>
        Effect.gen(function*() {
          const fs = yield* FileSystem.FileSystem
          const dir = yield* tempDir
          const marker = path.join(dir, "ran")
          const missing = yield* Effect.flip(
            Operations.local(`touch ${quote(marker)}`, { capture: true, cwd: path.join(dir, "missing") })
          )
          assert.instanceOf(missing, SettingsError)
          assert.strictEqual(missing.setting, "cwd")
          assert.strictEqual(missing.value, path.join(dir, "missing"))
          yield* fs.writeFileString(path.join(dir, "file"), "")
          const file = yield* Effect.flip(
            Operations.local(`touch ${quote(marker)}`, { capture: true, cwd: path.join(dir, "file") })
          )
          assert.instanceOf(file, SettingsError)
          assert.include(file.detail, "not a directory")
          assert.isFalse(yield* fs.exists(marker))
        })
    )

    live("a NUL byte in the command fails with SettingsError, not a defect", () =>
      Effect.gen(function*() {
        const commands = [
          Operations.local(["printf", "%s", "a\0b"], { useShell: false, capture: true }),
          Operations.local("printf 'a\0b'", { capture: true }),
          Operations.local("true", { capture: true, env: { TB_V: "a\0b" } })
        ]
        for (const command of commands) {
          const exit = yield* Effect.exit(Effect.flip(command))
          assert.isTrue(
            Exit.isSuccess(exit) && exit.value instanceof SettingsError,
            `expected a SettingsError, got ${String(exit)}`
          )
        }
      }))
  })

  describe("timeout", () => {
    live(
      "fails with CommandTimeout promptly, keeping the output so far, and kills the children",
      () =>
        Effect.gen(function*() {
          const m = sleepMarker()
          const command = `echo before; echo warning >&2; (sleep ${m} &); sleep ${m} & sleep ${m}; echo never`
          const started = Date.now()
          const error = yield* Effect.flip(
            Operations.local(command, { capture: true, combineStderr: false, timeout: 300 })
          )
          const elapsed = Date.now() - started
          const left = survivors(m)
          yield* reap(m)
          console.log(`[measure] timeout 300 ms (capture) returned after ${elapsed} ms`)
          assert.instanceOf(error, CommandTimeout)
          assert.strictEqual(error.host, "localhost")
          assert.strictEqual(error.command, command)
          assert.strictEqual(error.timeoutMillis, 300)
          assert.strictEqual(error.stdout, "before\n")
          assert.strictEqual(error.stderr, "warning\n")
          assert.include(error.message, "timed out after 300 ms")
          assert.isAtLeast(elapsed, 300)
          // The spawner waits until no member of the process group is left, zombies included: the
          // killed children are orphans that PID 1 must reap. With a prompt reaper this returns
          // in ~0.3 s; under an init that reaps slowly (or never, as a container without --init)
          // it takes up to the 2 s grace before SIGKILL, plus 1 s.
          assert.isBelow(elapsed, 3_500)
          assert.deepStrictEqual(left, [])
        })
    )

    live("a timed-out single process returns within its timeout and the grace", () =>
      Effect.gen(function*() {
        const m = sleepMarker()
        const started = Date.now()
        const error = yield* Effect.flip(Operations.local(`exec sleep ${m}`, { capture: true, timeout: 300 }))
        const elapsed = Date.now() - started
        const left = survivors(m)
        yield* reap(m)
        console.log(`[measure] timeout 300 ms, one process: returned after ${elapsed} ms`)
        assert.instanceOf(error, CommandTimeout)
        assert.isAtLeast(elapsed, 300)
        // the documented bound: the timeout, then SIGKILL 2 s after SIGTERM, + 1 s
        assert.isBelow(elapsed, 300 + 2_000 + 1_000)
        assert.deepStrictEqual(left, [])
      }))

    live("timeout as a setting, in any Duration form", () =>
      Effect.gen(function*() {
        const started = Date.now()
        const error = yield* Effect.flip(
          Operations.local("sleep 30", { capture: true }).pipe(Settings.settings({ timeout: "200 millis" }))
        )
        assert.instanceOf(error, CommandTimeout)
        assert.strictEqual(error.timeoutMillis, 200)
        assert.isBelow(Date.now() - started, 3_500)
        // Fast enough: no timeout.
        const ok = yield* Operations.local("echo quick", { capture: true, timeout: "10 seconds" })
        assert.strictEqual(ok.stdout, "quick\n")
      }))

    live(
      "a command that ignores SIGTERM is killed with SIGKILL after the grace period",
      () =>
        Effect.gen(function*() {
          const m = sleepMarker()
          const started = Date.now()
          const error = yield* Effect.flip(
            Operations.local(`trap '' TERM; sleep ${m} & sleep ${m}`, { capture: true, timeout: 300 })
          )
          const elapsed = Date.now() - started
          const left = survivors(m)
          yield* reap(m)
          console.log(`[measure] timeout 300 ms, SIGTERM ignored: returned after ${elapsed} ms`)
          assert.instanceOf(error, CommandTimeout)
          assert.isBelow(elapsed, 5_000)
          assert.deepStrictEqual(left, [])
        })
    )

    live("without capture, a timeout also kills the command's children", () =>
      Effect.gen(function*() {
        const m = sleepMarker()
        const started = Date.now()
        const error = yield* Effect.flip(
          Operations.local(`(sleep ${m} &); sleep ${m} & sleep ${m}`, { timeout: 300 })
        )
        const elapsed = Date.now() - started
        const left = survivors(m)
        yield* reap(m)
        console.log(`[measure] timeout 300 ms (no capture) returned after ${elapsed} ms`)
        assert.instanceOf(error, CommandTimeout)
        assert.isBelow(elapsed, 2_500)
        assert.deepStrictEqual(left, [])
      }))
  })

  describe("interruption", () => {
    for (const capture of [true, false]) {
      live(
        `interrupting the fiber kills the process and its children (capture: ${capture})`,
        () =>
          Effect.gen(function*() {
            const m = sleepMarker()
            const fiber = yield* Operations.local(`(sleep ${m} &); sleep ${m} & sleep ${m}`, { capture })
              .pipe(Effect.forkChild)
            // The shell, the background sleep, the orphaned one and the foreground one.
            yield* waitUntil(() => survivors(m).length >= 4)
            const started = Date.now()
            yield* Fiber.interrupt(fiber)
            const elapsed = Date.now() - started
            const left = survivors(m)
            yield* reap(m)
            console.log(`[measure] interrupt (capture: ${capture}) took ${elapsed} ms`)
            assert.deepStrictEqual(left, [])
          })
      )
    }
  })

  describe("settings", () => {
    live(
      "lcd sets the working directory; a nested lcd is relative; `cwd` is relative to it",
      () =>
        Effect.gen(function*() {
          const fs = yield* FileSystem.FileSystem
          const dir = yield* tempDir
          const odd = path.join(dir, "it's a \"dir\" $x")
          yield* fs.makeDirectory(path.join(odd, "sub"), { recursive: true })
          const pwd = Operations.local("pwd", { capture: true }).pipe(Effect.map((r) => r.stdout))
          assert.strictEqual(yield* pwd.pipe(Settings.lcd(dir)), `${dir}\n`)
          assert.strictEqual(
            yield* pwd.pipe(Settings.lcd("sub"), Settings.lcd("it's a \"dir\" $x"), Settings.lcd(dir)),
            `${odd}/sub\n`
          )
          const withCwd = yield* Operations.local("pwd", { capture: true, cwd: "it's a \"dir\" $x/sub" })
            .pipe(
              Settings.lcd(dir)
            )
          assert.strictEqual(withCwd.stdout, `${odd}/sub\n`)
          const absolute = yield* Operations.local(["pwd"], { capture: true, useShell: false, cwd: odd })
          assert.strictEqual(absolute.stdout, `${odd}\n`)
          // Outside the block: the process's directory, which lcd never changed.
          assert.strictEqual(yield* pwd, `${process.cwd()}\n`)
        })
    )

    live("withEnv and the env option deliver hostile values exactly", () =>
      Effect.gen(function*() {
        const values = hostileWords.filter((w) => w !== "")
        for (const value of values) {
          const viaSettings = yield* Operations.local("printf '%s' \"$TB_V\"", { capture: true }).pipe(
            Settings.withEnv({ TB_V: value })
          )
          assert.strictEqual(viaSettings.stdout, value)
          const viaOption = yield* Operations.local(["printenv", "TB_V"], {
            capture: true,
            useShell: false,
            env: { TB_V: value }
          })
          assert.strictEqual(viaOption.stdout, `${value}\n`)
        }
        const empty = yield* Operations.local("echo \"[${TB_E-unset}]\"", {
          capture: true,
          env: { TB_E: "" }
        })
        assert.strictEqual(empty.stdout, "[]\n")
      }))

    live("an invalid variable name fails with SettingsError", () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(Operations.local("true", { env: { "A B; rm -rf /": "x" } }))
        assert.instanceOf(error, SettingsError)
        assert.strictEqual(error.setting, "env")
      }))

    live("options override settings for one call only", () =>
      Effect.gen(function*() {
        const script = "echo \"$TB_A $TB_B\"; echo e >&2"
        const results = yield* Effect.gen(function*() {
          const overridden = yield* Operations.local(script, { env: { TB_B: "opt" }, combineStderr: false })
          const plain = yield* Operations.local(script)
          return { overridden, plain }
        }).pipe(
          Settings.withEnv({ TB_A: "a", TB_B: "b" }),
          Settings.settings({ capture: true, combineStderr: true })
        )
        assert.strictEqual(results.overridden.stdout, "a opt\n")
        assert.strictEqual(results.overridden.stderr, "e\n")
        assert.strictEqual(results.plain.stdout.split("\n").sort().join("|"), "|a b|e")
        assert.strictEqual(results.plain.stderr, "")
        const settings = yield* Settings.Settings
        assert.strictEqual(settings, Settings.defaults)
      }))

    live("dryRun prints the command and runs nothing", () =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const dir = yield* tempDir
        const file = path.join(dir, "created")
        const command = `touch ${quote(file)}; echo ran; exit 3`
        const { lines, value } = yield* collecting(
          Operations.local(command, { capture: true, stream: true }).pipe(Settings.settings({ dryRun: true }))
        )
        assert.deepStrictEqual(lines, [`[localhost] local: ${command}`])
        assert.strictEqual(value.exitCode, 0)
        assert.strictEqual(value.stdout, "")
        assert.strictEqual(value.durationMillis, 0)
        assert.isFalse(yield* fs.exists(file))
      }))

    live("useSudo runs the command as another user, with its variables", () =>
      Effect.gen(function*() {
        const nobody = yield* Operations.local("id -un; printf '%s' \"$TB_V\"", {
          capture: true,
          useSudo: true,
          sudoUser: "nobody",
          env: { TB_V: "it's $HOME `id`" }
        }).pipe(Settings.lcd("/"))
        assert.strictEqual(nobody.stdout, "nobody\nit's $HOME `id`")
        assert.isTrue(nobody.realCommand.startsWith("sudo -n -u nobody -- /bin/sh -c "))
        const root = yield* Operations.local(["id", "-un"], { capture: true, useSudo: true, useShell: false })
        assert.strictEqual(root.stdout, "root\n")
        const invalid = yield* Effect.flip(Operations.local("true", { useSudo: true, sudoUser: "-x" }))
        assert.instanceOf(invalid, SettingsError)
      }))

    live("durationMillis is the command's wall-clock time", () =>
      Effect.gen(function*() {
        const started = Date.now()
        const result = yield* Operations.local("sleep 0.3", { capture: true })
        const wall = Date.now() - started
        assert.isAtLeast(result.durationMillis, 280)
        assert.isAtMost(result.durationMillis, wall + 1)
        const quick = yield* Operations.local("true", { capture: true })
        assert.isBelow(quick.durationMillis, result.durationMillis)
      }))
  })

  describe("prompt", () => {
    live("fails with PromptAborted `disabled` under abortOnPrompts", () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(
          Operations.prompt("Deploy?").pipe(Settings.settings({ abortOnPrompts: true }))
        )
        assert.instanceOf(error, PromptAborted)
        assert.strictEqual(error.reason, "disabled")
        assert.strictEqual(error.prompt, "Deploy?")
      }))

    live("fails with PromptAborted `no-terminal` without a terminal, at once", () =>
      Effect.gen(function*() {
        assert.notStrictEqual(process.stdin.isTTY, true)
        const started = Date.now()
        const error = yield* Effect.flip(Operations.prompt("Deploy?"))
        assert.instanceOf(error, PromptAborted)
        assert.strictEqual(error.reason, "no-terminal")
        assert.isBelow(Date.now() - started, 1_000)
        // A child whose stdin is a pipe does not wait either.
        const child = yield* runProgram(process.execPath, [childScript, "prompt", "Name?"], "")
        assert.include(
          String((childResult(child.stdout) as { failure?: string }).failure),
          "no terminal to ask on"
        )
      }))

    live("asks and returns the answer on a terminal", () =>
      Effect.gen(function*() {
        const child = yield* underPty("prompt", "Your name?", "Ada\n")
        assert.include(child.stdout, "Your name?")
        assert.deepStrictEqual(childResult(child.stdout.replaceAll("\r", "")), { ok: { answer: "Ada" } })
      }))
  })

  describe("concurrency", () => {
    live("50 commands at once each see their own directory and variables", () =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const dir = yield* tempDir
        const indices = Array.from({ length: 50 }, (_, i) => i)
        yield* Effect.forEach(indices, (i) => fs.makeDirectory(path.join(dir, `d${i}`)), { discard: true })
        const command = "sleep 0.2; printf '%s|%s' \"$(pwd)\" \"$TB_I\""
        const started = Date.now()
        const outputs = yield* Effect.forEach(indices, (i) =>
          (i % 2 === 0
            ? Operations.local(command, { capture: true }).pipe(
              Settings.withEnv({ TB_I: `v${i}` }),
              Settings.lcd(`d${i}`),
              Settings.lcd(dir)
            )
            : Operations.local(command, {
              capture: true,
              cwd: path.join(dir, `d${i}`),
              env: { TB_I: `v${i}` }
            }))
            .pipe(Effect.map((r) => r.stdout)), { concurrency: "unbounded" })
        const elapsed = Date.now() - started
        assert.deepStrictEqual(outputs, indices.map((i) => `${path.join(dir, `d${i}`)}|v${i}`))
        // They really ran at once: in less than the 50 x 200 ms they take one after another.
        assert.isBelow(elapsed, 50 * 200)
        console.log(`[measure] 50 concurrent 200 ms commands took ${elapsed} ms`)
      }))
  })
})
