import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { remoteProcesses } from "../tests-remote/server.ts"

const mainScript = path.join(import.meta.dirname, "fixtures", "threadbare-main.ts")

/** The long commands' own text (the fixture's command line holds only the marker). */
const command = (mark: string) => `; echo ${mark}`

const marker = (name: string) => `tb-main-${name}-${process.pid}-${Math.floor(Math.random() * 1e9)}`

/** Processes of this machine whose command line contains `text` (zombies left out). */
const processesWith = (text: string): Array<string> => {
  const ps = ChildProcess.spawnSync("ps", ["-eo", "pid=,stat=,args="], { encoding: "utf8" })
  return ps.stdout.split("\n").filter((line) => {
    const [, stat = ""] = line.trim().split(/\s+/)
    return line.includes(text) && !stat.startsWith("Z") && !line.includes(" ps -eo")
  })
}

/** The worker processes a process has (its children running the worker entry). */
const workersOf = (pid: number): Array<number> => {
  const ps = ChildProcess.spawnSync("ps", ["--ppid", String(pid), "-o", "pid=,args="], { encoding: "utf8" })
  return ps.stdout.split("\n").filter((l) => l.includes("workerMain")).map((l) =>
    Number(l.trim().split(/\s+/)[0])
  )
}

const alive = (pid: number): boolean => {
  const ps = ChildProcess.spawnSync("ps", ["-o", "stat=", "-p", String(pid)], { encoding: "utf8" })
  const state = ps.stdout.trim()
  return state !== "" && !state.startsWith("Z")
}

interface Main {
  readonly child: ChildProcess.ChildProcess
  /** What it wrote so far. */
  readonly stdout: () => string
  readonly stderr: () => string
  /**
   * How it ended, once its stderr is closed: by it and by every process that inherited it (its
   * workers), so a worker's last words are in `stderr`.
   */
  readonly ended: Effect.Effect<{ readonly code: number | null; readonly signal: string | null }>
}

/** Starts the fixture program; killed (and its workers) at the end of the scope if still there. */
const startMain = (args: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.sync((): Main => {
      const child = ChildProcess.spawn(process.execPath, [mainScript, ...args], {
        stdio: ["ignore", "pipe", "pipe"]
      })
      let stdout = ""
      let stderr = ""
      child.stdout!.setEncoding("utf8").on("data", (text: string) => void (stdout += text))
      child.stderr!.setEncoding("utf8").on("data", (text: string) => void (stderr += text))
      // Once the program's own stdout is destroyed by a test, writing to it fails with EPIPE.
      child.stdout!.on("error", () => {})
      const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
        child.once("exit", (code, signal) => resolve({ code, signal }))
      )
      const closed = new Promise<void>((resolve) => child.stderr!.once("close", () => resolve()))
      return {
        child,
        stdout: () => stdout,
        stderr: () => stderr,
        ended: Effect.promise(() => Promise.all([exited, closed]).then(([ending]) => ending))
      }
    }),
    (main) =>
      Effect.sync(() => {
        for (const pid of workersOf(main.child.pid!)) process.kill(pid, "SIGKILL")
        main.child.kill("SIGKILL")
      })
  )

/** Polls `check` every 50 ms until it holds, for at most `millis`. */
const waitUntil = (what: string, check: () => boolean, millis = 20_000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + millis
    while (!check()) {
      if (Date.now() > deadline) return yield* Effect.die(new Error(`waited ${millis} ms for: ${what}`))
      yield* Effect.sleep(Duration.millis(50))
    }
  })

const signalNumber = (signal: "SIGINT" | "SIGTERM" | "SIGHUP") => os.constants.signals[signal]

describe("Threadbare.runMain", () => {
  for (const signal of ["SIGHUP", "SIGINT", "SIGTERM"] as const) {
    it.live(`${signal} stops the local command and removes temporary files, then exits with 128 + ${signalNumber(signal)}`, () =>
      Effect.scoped(Effect.gen(function*() {
        const mark = marker(`local-${signal}`)
        const main = yield* startMain(["local", mark])
        yield* waitUntil(
          "the temp dir and the command",
          () => main.stderr().includes("TEMPDIR ") && processesWith(command(mark)).length > 0
        )
        const tempDir = /TEMPDIR (\S+)/.exec(main.stderr())![1]!
        assert.isTrue(fs.existsSync(tempDir))
        // The terminal is gone: what the program writes to its stdout now fails.
        if (signal === "SIGHUP") main.child.stdout!.destroy()
        const signalled = Date.now()
        main.child.kill(signal)
        const ended = yield* main.ended
        console.log(`[measure] ${signal}: exited ${Date.now() - signalled} ms after the signal`)
        assert.deepStrictEqual(ended, { code: 128 + signalNumber(signal), signal: null }, main.stderr())
        assert.deepStrictEqual(processesWith(command(mark)), [], "the local command is stopped")
        assert.isFalse(fs.existsSync(tempDir), "the temporary directory is removed")
        assert.notMatch(main.stderr(), /Error|ERR_/, "nothing but the temp dir line on stderr")
        if (signal !== "SIGHUP") assert.include(main.stdout(), `cleanup ${mark}`)
      })))
  }

  it.live("SIGHUP stops the remote command", () =>
    Effect.scoped(Effect.gen(function*() {
      const mark = marker("remote")
      const main = yield* startMain(["remote", mark])
      yield* waitUntil("the remote command", () => remoteProcesses(command(mark)).length > 0)
      main.child.stdout!.destroy()
      main.child.kill("SIGHUP")
      const ended = yield* main.ended
      assert.deepStrictEqual(ended, { code: 128 + signalNumber("SIGHUP"), signal: null }, main.stderr())
      assert.deepStrictEqual(remoteProcesses(command(mark)), [], "the remote command is stopped")
      assert.notMatch(main.stderr(), /Error|ERR_/)
    })))

  it.live("SIGHUP to Execute's whole process group stops the workers' remote commands and the workers", () =>
    Effect.scoped(Effect.gen(function*() {
      const mark = marker("execute-hup")
      const main = yield* startMain(["execute", mark])
      yield* waitUntil("both remote commands", () => remoteProcesses(command(mark)).length >= 2)
      const workers = workersOf(main.child.pid!)
      assert.strictEqual(workers.length, 2)
      // A closed terminal signals its whole foreground process group: the workers too.
      for (const pid of [main.child.pid!, ...workers]) process.kill(pid, "SIGHUP")
      const ended = yield* main.ended
      assert.deepStrictEqual(ended, { code: 128 + signalNumber("SIGHUP"), signal: null }, main.stderr())
      assert.deepStrictEqual(remoteProcesses(command(mark)), [], "the remote commands are stopped")
      assert.deepStrictEqual(workers.filter(alive), [], "the workers are gone")
      assert.notMatch(main.stderr(), /Error|ERR_/)
    })))

  it.live("a worker whose parent is SIGKILLed stops its remote command and exits quietly", () =>
    Effect.scoped(Effect.gen(function*() {
      const mark = marker("orphan")
      const main = yield* startMain(["execute", mark])
      yield* waitUntil("both remote commands", () => remoteProcesses(command(mark)).length >= 2)
      const workers = workersOf(main.child.pid!)
      assert.strictEqual(workers.length, 2)
      const killed = Date.now()
      main.child.kill("SIGKILL")
      // Ends once the workers, which share its stderr, have exited too.
      const ended = yield* main.ended
      console.log(`[measure] parent SIGKILLed: its workers exited within ${Date.now() - killed} ms`)
      assert.strictEqual(ended.signal, "SIGKILL")
      assert.deepStrictEqual(workers.filter(alive), [], "the workers are gone")
      yield* waitUntil(
        "the remote commands to stop",
        () => remoteProcesses(command(mark)).length === 0,
        5_000
      )
      assert.notInclude(main.stderr(), "ERR_IPC_CHANNEL_CLOSED")
      assert.notMatch(main.stderr(), /Error|    at /, "no trace from the workers")
    })))

  it.live("workers frozen while their parent is SIGKILLed, then thawed while sending output, exit quietly", () =>
    Effect.scoped(Effect.gen(function*() {
      // A worker that sends before it has read that its parent is gone gets EPIPE rather than
      // ERR_IPC_CHANNEL_CLOSED (1 in ~50 CI runs of the case above). Frozen while their commands
      // print, the workers thaw with output to send and the parent's end closed at once.
      for (let round = 0; round < 3; round++) {
        const mark = marker(`frozen-${round}`)
        const main = yield* startMain(["chatter", mark])
        yield* waitUntil("both remote commands", () => remoteProcesses(command(mark)).length >= 2)
        yield* waitUntil("output flowing", () => main.stdout().includes("out: tick"))
        const workers = workersOf(main.child.pid!)
        assert.strictEqual(workers.length, 2)
        for (const pid of workers) process.kill(pid, "SIGSTOP")
        main.child.kill("SIGKILL")
        yield* Effect.sleep(Duration.millis(300))
        for (const pid of workers) process.kill(pid, "SIGCONT")
        const ended = yield* main.ended
        assert.strictEqual(ended.signal, "SIGKILL")
        yield* waitUntil("the workers to exit", () => workers.filter(alive).length === 0, 10_000)
        yield* waitUntil(
          "the remote commands to stop",
          () => remoteProcesses(command(mark)).length === 0,
          10_000
        )
        assert.notMatch(main.stderr(), /Error|EPIPE|    at /, "no trace from the workers")
      }
    })))

  it.live("a worker whose parent is SIGKILLed while the worker starts exits quietly too", () =>
    Effect.scoped(Effect.gen(function*() {
      const mark = marker("orphan-start")
      const main = yield* startMain(["execute", mark])
      yield* waitUntil("a worker process", () => workersOf(main.child.pid!).length > 0)
      const workers = workersOf(main.child.pid!)
      main.child.kill("SIGKILL")
      const ended = yield* main.ended
      assert.strictEqual(ended.signal, "SIGKILL")
      assert.deepStrictEqual(workers.filter(alive), [], "the workers are gone")
      assert.deepStrictEqual(remoteProcesses(command(mark)), [])
      assert.notMatch(main.stderr(), /Error|ERR_|    at /, "no trace from the workers")
    })))

  it.live("the final report prints a defect holding a cycle readably, with the cycle marked", () =>
    Effect.scoped(Effect.gen(function*() {
      const main = yield* startMain(["cycle"])
      const ended = yield* main.ended
      assert.strictEqual(ended.code, 1)
      const report = main.stdout() + main.stderr()
      assert.include(report, "node-with-a-cycle")
      assert.include(report, "[Circular *1]")
      assert.notInclude(report, "[object Object]")
      assert.notInclude(report, "Maximum call stack")
    })))
})
