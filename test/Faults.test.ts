/**
 * Fault injection: the library against a link that breaks, stalls or crawls, and a server that
 * restarts or kills its commands. Connections go through `tests-remote/faultProxy.ts` in front
 * of a throwaway sshd of this file's own (never the shared one of test/globalSetup, which other
 * files use at the same time), so that it can be restarted at will.
 *
 * After every scenario: no partial or temporary file on either side, no proxied connection left
 * once the library's layer scope closed, no socket, timer or child process more than before, no
 * worker process and no remote command still running. The figures measured (detection times,
 * reconnect time, slow-link throughput) are printed at the end.
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import { AsyncResource, createHook } from "node:async_hooks"
import { spawnSync } from "node:child_process"
import { createHash, randomBytes } from "node:crypto"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { CommandFailed, ConnectionError } from "../src/Errors.ts"
import * as Execute from "../src/Execute.ts"
import * as Operations from "../src/Operations.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import * as Transfer from "../src/Transfer.ts"
import { FaultProxy } from "../tests-remote/faultProxy.ts"
import { remoteProcesses, type Server, startServer } from "../tests-remote/server.ts"
import { sleepThenEcho } from "./fixtures/faults-tasks.ts"
import { connectionFailure, failureOf } from "./support.ts"

// -- the server, known hosts, settings ----------------------------------------------------------

let server: Server
let temp: string
let knownHosts: string
let hostKey: string
let userUid: number
/** Where sudo uploads stage here (`remoteTempDir`): this file's own, so others' do not show. */
let staging: string

beforeAll(async () => {
  server = await startServer({ hostCount: 2 })
  temp = fs.mkdtempSync(path.join(tmpdir(), "tb-faults-"))
  knownHosts = path.join(temp, "known_hosts")
  // "[127.0.0.1]:port ssh-ed25519 AAAA...": the key part, to record under the proxies' ports.
  hostKey = fs.readFileSync(server.knownHostsPath, "utf8").split("\n")[0]!.split(" ").slice(1).join(" ")
  fs.copyFileSync(server.knownHostsPath, knownHosts)
  const passwd = fs.readFileSync("/etc/passwd", "utf8").split("\n").find((l) =>
    l.startsWith(`${server.user}:`)
  )
  userUid = Number(passwd?.split(":")[2] ?? -1)
  staging = path.join(temp, "staging")
  fs.mkdirSync(staging, { mode: 0o700 })
  fs.chownSync(staging, userUid, userUid)
})

afterAll(async () => {
  await server?.stop()
  if (temp !== undefined) fs.rmSync(temp, { recursive: true, force: true })
  const width = Math.max(...Object.keys(figures).map((k) => k.length))
  console.log(
    "\nFault-injection figures (test/Faults.test.ts)\n" +
      Object.entries(figures).map(([k, v]) => `  ${k.padEnd(width)}  ${v}`).join("\n")
  )
})

/** What the scenarios measured, printed in afterAll. */
const figures: Record<string, string> = {}
const record = (name: string, value: string) => {
  figures[name] = value
}

const KEEPALIVE_MS = 500
const KEEPALIVE_COUNT = 3

/** Connection settings for the host behind `port` (a proxy's, or the server's own). */
const via = (port: number): Settings.Patch => ({
  host: `${server.user}@127.0.0.1:${port}`,
  user: server.user,
  remoteTempDir: staging,
  keyFile: server.keyPath,
  knownHostsFile: knownHosts,
  hostKeyPolicy: "strict",
  sshConfigFile: false,
  useAgent: false,
  quiet: true,
  connectAttempts: 1,
  connectTimeout: "3 seconds",
  connectRetryDelay: "100 millis",
  keepaliveInterval: `${KEEPALIVE_MS} millis`,
  keepaliveCountMax: KEEPALIVE_COUNT
})

// -- leak checks ----------------------------------------------------------------------------------

// Sockets, listeners and child processes, by count. Pipes and timers are left out of the counts:
// vitest's own IPC channel and test deadline come and go with its reporting. Child processes'
// pipes are covered by the process table, timers by `timersSince`.
const WATCHED = ["TCPSocketWrap", "TCPServerWrap", "ProcessWrap"] as const

/** Every live timer with where it was made, to tell the library's from vitest's. */
const liveTimers = new Map<number, { readonly timer: NodeJS.Timeout; readonly stack: string }>()
createHook({
  init(id, type, _trigger, resource) {
    if (type === "Timeout") {
      liveTimers.set(id, { timer: resource as NodeJS.Timeout, stack: new Error().stack ?? "" })
    }
  },
  destroy(id) {
    liveTimers.delete(id)
  }
}).enable()
/** An async id: everything made after this call has a higher one. */
const timerMark = (): number => new AsyncResource("tb-faults-mark").asyncId()

/**
 * Timers made between two marks that still hold the process open: not vitest's, not a
 * scheduler's zero-delay tick.
 */
const timersBetween = (mark: number, end: number): Array<string> =>
  [...liveTimers.entries()].filter(([id, { timer, stack }]) =>
    id > mark && id < end && timer.hasRef() && !stack.includes("/vitest/") &&
    (timer as unknown as { _idleTimeout: number })._idleTimeout > 1
  ).map(([, { timer, stack }]) =>
    `${(timer as unknown as { _idleTimeout: number })._idleTimeout} ms timer from ${
      stack.split("\n").slice(6, 9).map((l) => l.trim()).join(" < ")
    }`
  )

const resources = (): Record<string, number> => {
  const counts: Record<string, number> = {}
  for (const name of process.getActiveResourcesInfo()) counts[name] = (counts[name] ?? 0) + 1
  return counts
}

const grown = (before: Record<string, number>, now: Record<string, number>): Array<string> =>
  WATCHED.filter((k) => (now[k] ?? 0) > (before[k] ?? 0)).map((k) => `${k} ${before[k] ?? 0} -> ${now[k]}`)

/** Child processes of this process (workers, ssh, anything forked). */
const children = (): Array<string> => {
  const ps = spawnSync("ps", ["--ppid", String(process.pid), "-o", "pid=,args="], { encoding: "utf8" })
  return ps.stdout.split("\n").map((l) => l.trim()).filter((l) => l !== "" && !/\bps --ppid\b/.test(l))
}

/** Polls `check` (which answers what is wrong, or nothing) until it is satisfied or time is up. */
// Each check returns as soon as it holds; the bound is for a CI machine running every test file
// at once on two cores.
const settle = (what: string, check: () => ReadonlyArray<string>, millis = 10_000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + millis
    for (;;) {
      const wrong = check()
      if (wrong.length === 0) return
      if (Date.now() > deadline) return assert.fail(`${what}: ${wrong.join(", ")}`)
      yield* Effect.sleep("20 millis")
    }
  })

/** Temporary names the library uses (`.<name>.tb-<nonce>.part`, `<remoteTempDir>/.tb-<nonce>`). */
const leftovers = (dir: string): Array<string> =>
  fs.existsSync(dir) ? fs.readdirSync(dir).filter((name) => name.includes(".tb-")) : []

/** The staging directories of sudo uploads now in `staging` (`.tb-<nonce>`). */
const stagingDirs = (): Set<string> =>
  new Set(fs.readdirSync(staging).filter((name) => name.startsWith(".tb-")))

const layer = Layer.mergeAll(Layer.fresh(Ssh.layer), NodeServices.layer)

/**
 * Runs `body` with a fresh proxy in front of the server and the library's connection settings
 * pointed at it, under an `Ssh.layer` of its own; once that layer's scope has closed, checks
 * that every proxied connection is gone, then that nothing leaked (sockets, timers, children,
 * remote processes carrying `markers`, staging directories).
 */
const withProxy = <A, E>(
  body: (proxy: FaultProxy) => Effect.Effect<A, E, Ssh.SshConnections>,
  options: { readonly markers?: ReadonlyArray<string>; readonly settings?: Settings.Patch } = {}
): Effect.Effect<A, E> =>
  Effect.gen(function*() {
    const before = resources()
    const mark = timerMark()
    const exit = yield* Effect.acquireUseRelease(
      Effect.promise(() => FaultProxy.start({ port: server.port })),
      (proxy) =>
        Effect.gen(function*() {
          fs.appendFileSync(knownHosts, `[127.0.0.1]:${proxy.port} ${hostKey}\n`)
          const exit = yield* Effect.exit(
            body(proxy).pipe(
              Settings.settings({ ...via(proxy.port), ...options.settings }),
              Effect.provide(layer)
            )
          )
          // The layer's scope is closed: its connections must be too.
          yield* settle(
            "proxied connections still open",
            () => proxy.openConnections === 0 ? [] : [`${proxy.openConnections}`]
          )
          return exit
        }),
      (proxy) => Effect.promise(() => proxy.close())
    )
    const end = timerMark()
    yield* settle("timers left behind", () => timersBetween(mark, end))
    // Workers and sockets go within moments; the margin is for a loaded machine.
    yield* settle("child processes left behind", children, 15_000)
    yield* settle("resources left behind", () => grown(before, resources()), 15_000)
    for (const marker of options.markers ?? []) {
      yield* settle(
        `remote processes of ${marker} left running`,
        () => remoteProcesses(marker).map((p) => `${p.pid} ${p.args}`)
      )
    }
    return yield* exit
  })

// -- helpers --------------------------------------------------------------------------------------

const marker = (name: string) => `tb-fault-${name}-${process.pid}-${randomBytes(4).toString("hex")}`

/** Waits until `count` remote processes carry `mark` (bounded). */
/**
 * Waits until `count` commands carrying `mark` run on the server. A command's login shell, and the
 * guard it forks before it `exec`s the command, carry the whole wrapped line (with the library's
 * pid marker): they are not the command yet, so they do not count.
 */
const runningCommands = (mark: string) =>
  remoteProcesses(mark).filter((p) => !p.args.includes("__threadbare_pid_"))

/**
 * Waits (20 s at most) until `count` commands carrying `mark` run at once. Given the fiber that
 * started them, it stops waiting when that fiber ends, and says how it ended.
 */
const waitForRemote = <A, E>(mark: string, count = 1, fiber?: Fiber.Fiber<A, E>) =>
  Effect.gen(function*() {
    // One sample decides: the commands counted are the ones running at that moment.
    let running = runningCommands(mark).length
    for (let i = 0; i < 800 && running < count; i++) {
      const ended = fiber?.pollUnsafe()
      if (ended !== undefined) assert.fail(`the run ended before ${count} commands ran: ${String(ended)}`)
      yield* Effect.sleep("25 millis")
      running = runningCommands(mark).length
    }
    assert.isAtLeast(running, count, `remote commands of ${mark}`)
  })

/**
 * For the cases where workers start commands on several hosts and a drop is seen at once (the
 * socket closes): the file's 3 s connect timeout and 1.5 s keepalive could fail a host on a
 * loaded machine before its command started, which is not what those cases are about.
 */
const slowMachine: Settings.Patch = { connectTimeout: "20 seconds", keepaliveInterval: "5 seconds" }

const sha = (data: Uint8Array) => createHash("sha256").update(data).digest("hex")

/** A local and a remote directory (owned by the login user) for transfers. */
const dirs = () => {
  const local = fs.mkdtempSync(path.join(temp, "local-"))
  const remote = fs.mkdtempSync(path.join(temp, "remote-"))
  fs.chmodSync(temp, 0o755)
  fs.chownSync(remote, userUid, userUid)
  return { local, remote }
}

const since = (start: number) => Date.now() - start

const MiB = 1 << 20

// -- scenarios ------------------------------------------------------------------------------------

describe("Faults", () => {
  describe("cut connections", () => {
    it.live("cut during the handshake: ConnectionError, retried per connectAttempts, no hang", () =>
      withProxy((proxy) =>
        Effect.gen(function*() {
          // The server's banner and key exchange offer are ~1.1 KB: cut in the middle of them,
          // then (a second attempt) in the client's key exchange, going up.
          proxy.cutAfter(600, "down")
          let start = Date.now()
          const down = connectionFailure(
            yield* Effect.exit(Operations.remote("true").pipe(Settings.settings({ connectAttempts: 3 })))
          )
          const downMillis = since(start)
          assert.strictEqual(down.reason, "disconnected")
          assert.strictEqual(proxy.statistics.accepted, 3, "three attempts")
          assert.strictEqual(proxy.statistics.cut, 3)

          proxy.cutAfter(1500, "up")
          start = Date.now()
          const up = connectionFailure(yield* Effect.exit(Operations.remote("true")))
          assert.strictEqual(up.reason, "disconnected")
          // the documented bound: connectTimeout (3 s in this file's layer) per attempt, + 2 s
          assert.isBelow(since(start), 3_000 + 2_000)
          assert.include(up.message, "127.0.0.1")
          record(
            "cut in handshake -> ConnectionError",
            `${downMillis} ms for 3 attempts (retry delay 100 ms)`
          )

          // The link healed: the same layer connects.
          proxy.clearCut()
          const ok = yield* Operations.remote("echo fine")
          assert.strictEqual(ok.stdout.trim(), "fine")
        })
      ))

    it.live("cut during a command: ConnectionError disconnected at once; the next command reconnects", () => {
      const mark = marker("cmd")
      return withProxy(
        (proxy) =>
          Effect.gen(function*() {
            const fiber = yield* Effect.forkChild(Operations.remote(`sleep 20; echo ${mark}`))
            yield* waitForRemote(mark)
            const start = Date.now()
            assert.strictEqual(proxy.cutNow(), 1)
            // The library notices at once and connects again to stop the command it left.
            let noticed = 0
            const watch = yield* Effect.forkChild(Effect.gen(function*() {
              while (proxy.statistics.accepted < 2) yield* Effect.sleep("2 millis")
              noticed = since(start)
            }))
            const error = connectionFailure(yield* Effect.exit(Fiber.join(fiber)))
            const failed = since(start)
            yield* Fiber.join(watch)
            assert.strictEqual(error.reason, "disconnected")
            record(
              "cut mid-command -> ConnectionError",
              `drop noticed after ${noticed} ms; error after ${failed} ms, once the command was stopped`
            )

            const again = yield* Operations.remote("echo back")
            assert.strictEqual(again.stdout.trim(), "back")
            assert.strictEqual(proxy.statistics.accepted, 2)
          }),
        { markers: [mark] }
      )
    })

    it.live("cut at any moment of a mixed workload: every failure is a typed error, never a defect", () => {
      const mark = marker("anycut")
      return withProxy(
        (proxy) =>
          Effect.gen(function*() {
            const { local, remote } = dirs()
            fs.writeFileSync(path.join(local, "up.bin"), randomBytes(512 * 1024))
            fs.writeFileSync(path.join(remote, "down.bin"), randomBytes(512 * 1024))
            fs.mkdirSync(path.join(local, "tree", "sub"), { recursive: true })
            fs.writeFileSync(path.join(local, "tree", "sub", "f"), randomBytes(64 * 1024))
            const kinds = new Set<string>()
            // From inside the handshake to deep into the transfers.
            for (const bytes of [700, 2_000, 4_000, 8_000, 16_000, 40_000, 120_000, 400_000, 900_000]) {
              proxy.cutAfter(bytes)
              const exits = yield* Effect.all(
                [
                  Operations.remote(`echo ${mark}; sleep 0.2; echo done`),
                  Operations.remote(`cat; echo ${mark}`),
                  Operations.remote(`echo ${mark}`, { useSudo: true }),
                  Transfer.upload(path.join(local, "up.bin"), path.join(remote, `up-${bytes}.bin`)),
                  Transfer.download(path.join(remote, "down.bin"), path.join(local, `down-${bytes}.bin`)),
                  Transfer.upload(path.join(local, "tree"), path.join(remote, `tree-${bytes}`)),
                  Transfer.upload({ content: "x".repeat(100_000) }, path.join(remote, `m-${bytes}`), {
                    useSudo: true
                  })
                ].map((job) => Effect.exit(job as Effect.Effect<unknown, unknown, Ssh.SshConnections>)),
                { concurrency: "unbounded" }
              )
              proxy.clearCut()
              for (const exit of exits) {
                if (Exit.isSuccess(exit)) continue
                const error = failureOf(exit)
                assert.include(["ConnectionError", "TransferError"], (error as { _tag: string })._tag)
                kinds.add((error as { _tag: string })._tag)
              }
              // The connection the cut left is given up; the next round starts on a fresh one.
              yield* Operations.remote("true")
            }
            assert.include([...kinds], "ConnectionError")
          }),
        { markers: [mark], settings: { connectAttempts: 1 } }
      )
    })

    it.live("cut during an upload (4 MiB): ConnectionError, the target unchanged, no temporary file", () =>
      withProxy((proxy) =>
        Effect.gen(function*() {
          const { local, remote } = dirs()
          const source = path.join(local, "four.bin")
          fs.writeFileSync(source, randomBytes(4 * MiB))
          const existing = path.join(remote, "existing.bin")
          fs.writeFileSync(existing, "old")
          const fresh = path.join(remote, "sub", "fresh.bin")
          // Each connection is cut after 2 MiB up; the cleanup's new connection stays below that.
          proxy.cutAfter(2 * MiB, "up")
          for (const target of [existing, fresh]) {
            const error = failureOf(yield* Effect.exit(Transfer.upload(source, target)))
            assert.instanceOf(error, ConnectionError, String(error))
            assert.strictEqual((error as ConnectionError).reason, "disconnected")
            assert.include((error as ConnectionError).message, "left as it was")
          }
          assert.strictEqual(fs.readFileSync(existing, "utf8"), "old")
          assert.isFalse(fs.existsSync(fresh))
          assert.deepStrictEqual(leftovers(remote), [])
          assert.deepStrictEqual(leftovers(path.join(remote, "sub")), [])
          assert.deepStrictEqual(leftovers(local), [])
          assert.isAtLeast(proxy.statistics.cut, 2)

          // With sudo (staged in /tmp, moved by a script): the same, and no staging directory.
          // Other test files may stage their own uploads in /tmp meanwhile: only directories that
          // appeared during this upload count, and theirs go once their uploads end.
          const staging = stagingDirs()
          const sudo = failureOf(yield* Effect.exit(Transfer.upload(source, existing, { useSudo: true })))
          const appeared = [...stagingDirs()].filter((d) => !staging.has(d))
          assert.isTrue(sudo instanceof ConnectionError, String(sudo))
          assert.strictEqual(fs.readFileSync(existing, "utf8"), "old")
          assert.deepStrictEqual(leftovers(remote), [])
          yield* settle("staging directories left in /tmp", () =>
            appeared.filter((d) => fs.existsSync(`/tmp/${d}`)))
        })
      ))

    it.live("cut during a download (4 MiB): ConnectionError, the local target unchanged, no temporary file", () =>
      withProxy((proxy) =>
        Effect.gen(function*() {
          const { local, remote } = dirs()
          const source = path.join(remote, "four.bin")
          fs.writeFileSync(source, randomBytes(4 * MiB))
          const existing = path.join(local, "existing.bin")
          fs.writeFileSync(existing, "old local")
          const fresh = path.join(local, "sub", "fresh.bin")
          proxy.cutAfter(2 * MiB, "down")
          for (const target of [existing, fresh]) {
            const error = failureOf(yield* Effect.exit(Transfer.download(source, target)))
            assert.instanceOf(error, ConnectionError, String(error))
            assert.strictEqual((error as ConnectionError).reason, "disconnected")
          }
          const memory = failureOf(yield* Effect.exit(Transfer.download(source)))
          assert.instanceOf(memory, ConnectionError, String(memory))
          // Through `sudo cat` as well.
          const sudo = failureOf(yield* Effect.exit(Transfer.download(source, existing, { useSudo: true })))
          assert.isTrue(sudo instanceof ConnectionError, String(sudo))
          assert.strictEqual(fs.readFileSync(existing, "utf8"), "old local")
          assert.isFalse(fs.existsSync(fresh))
          assert.deepStrictEqual(leftovers(local), [])
          assert.deepStrictEqual(leftovers(path.join(local, "sub")), [])
          assert.deepStrictEqual(leftovers(remote), [])
        })
      ))

    it.live("cut during an Execute run: that run fails with ConnectionError; no worker is left", () => {
      const mark = marker("exec")
      return withProxy(
        (proxy) =>
          Effect.gen(function*() {
            const hosts = [`127.0.0.1:${proxy.port}`, `127.0.0.2:${server.port}`]
            const fiber = yield* Effect.forkChild(
              Execute.withHosts(sleepThenEcho, hosts, { poolSize: 2, input: { marker: mark, seconds: 20 } })
            )
            // Both commands must run at once when the link is cut: 20 s leave room for two
            // workers that start one after the other on a loaded machine.
            yield* waitForRemote(mark, 2, fiber)
            const start = Date.now()
            assert.strictEqual(proxy.cutNow(), 1)
            const outcomes = yield* Fiber.join(fiber)
            const error = connectionFailure(outcomes[0]!.exit)
            assert.strictEqual(error.reason, "disconnected")
            assert.strictEqual(error.port, proxy.port)
            // The other host, not behind the proxy, finished its run.
            assert.deepStrictEqual(outcomes[1]!.exit, Exit.succeed(mark))
            record(
              "cut of a worker's connection",
              `that host: ConnectionError (disconnected), the other host: success; all done ${
                since(start)
              } ms after the cut`
            )
          }),
        // The cut is seen at once (the socket closes): the file's short connect timeout and
        // aggressive keepalive would only fail a worker's host on a loaded machine.
        { markers: [mark], settings: slowMachine }
      )
    }, 120_000)
  })

  describe("stalled links", () => {
    it.live("a stall mid-command is detected by keepalives within interval x countMax", () => {
      const mark = marker("stall")
      return withProxy(
        (proxy) =>
          Effect.gen(function*() {
            const fiber = yield* Effect.forkChild(Operations.remote(`sleep 20; echo ${mark}`))
            yield* waitForRemote(mark)
            const start = Date.now()
            proxy.stall()
            // The library gives the connection up once keepalives go unanswered, and connects
            // again to stop the command it left; the link then comes back, so that it can.
            let detected = 0
            const healer = yield* Effect.forkChild(Effect.gen(function*() {
              const deadline = Date.now() + 20_000
              while (proxy.statistics.accepted < 2 && Date.now() < deadline) yield* Effect.sleep("5 millis")
              detected = since(start)
              proxy.resume()
            }))
            const error = connectionFailure(yield* Effect.exit(Fiber.join(fiber)))
            const failed = since(start)
            yield* Fiber.join(healer)
            assert.isAtLeast(proxy.statistics.accepted, 2, "a second connection, to stop the command")
            assert.strictEqual(error.reason, "timeout")
            assert.include(error.message, "Keepalive")
            // Documented bound: interval x countMax, plus the interval in progress.
            const bound = KEEPALIVE_MS * (KEEPALIVE_COUNT + 1) + 300
            assert.isAtMost(detected, bound)
            assert.isAtLeast(detected, KEEPALIVE_MS * KEEPALIVE_COUNT)
            record(
              "stall mid-command -> ConnectionError timeout",
              `link declared dead after ${detected} ms (keepalive ${KEEPALIVE_MS} ms x ${KEEPALIVE_COUNT}, ` +
                `bound ${bound} ms); error after ${failed} ms, once the command was stopped`
            )
          }),
        { markers: [mark] }
      )
    })

    it.live("a link lost before the command's process id arrived: the command is still stopped", () => {
      const mark = marker("stranded")
      return withProxy(
        (proxy) =>
          Effect.gen(function*() {
            yield* Operations.remote("true")
            // Answers from the server take a second: the command starts, and its process id is
            // still on its way when the link dies. The server never hears of it, so nothing but
            // the library can stop the command.
            proxy.setLatency({ down: 1_000 })
            // A process of its own that carries the marker: the login shell runs the line itself.
            const fiber = yield* Effect.forkChild(Operations.remote(`sh -c 'sleep 120; echo $0' ${mark}`))
            yield* waitForRemote(mark)
            assert.strictEqual(proxy.strand(), 1)
            const lost = Date.now()
            proxy.setLatency(0)
            const error = connectionFailure(yield* Effect.exit(Fiber.join(fiber)))
            assert.strictEqual(error.reason, "timeout")
            yield* settle(
              "the command whose process id never arrived, still running",
              () => runningCommands(mark).map((p) => `${p.pid} ${p.args}`),
              20_000
            )
            record(
              "link lost before the process id arrived",
              `command stopped over a new connection ${since(lost)} ms after the link died`
            )
          }).pipe(
            // The server still holds the stranded connection (and the command's session) open.
            Effect.ensuring(Effect.sync(() => proxy.cutNow()))
          ),
        { markers: [mark] }
      )
    })

    it.live("a sudo upload interrupted while its staging directory is being made leaves none behind", () =>
      withProxy((proxy) =>
        Effect.gen(function*() {
          const { local, remote } = dirs()
          const source = path.join(local, "staged.bin")
          fs.writeFileSync(source, randomBytes(64 * 1024))
          yield* Operations.remote("true")
          const before = stagingDirs()
          const fresh = () => [...stagingDirs()].filter((d) => !before.has(d))
          // Answers take half a second: the directory is made on the server while the answer that
          // says so is still on its way, and the upload is interrupted then.
          proxy.setLatency({ down: 500 })
          const fiber = yield* Effect.forkChild(
            Transfer.upload(source, path.join(remote, "staged.bin"), { useSudo: true })
          )
          for (let i = 0; i < 2_000 && fresh().length === 0; i++) yield* Effect.sleep("5 millis")
          assert.strictEqual(fresh().length, 1, "the staging directory was made")
          yield* Fiber.interrupt(fiber)
          proxy.setLatency(0)
          yield* settle("staging directory left behind", fresh)
          assert.isFalse(fs.existsSync(path.join(remote, "staged.bin")))
        })
      ))

    it.live("a stall during connect fails with ConnectionError timeout after connectTimeout", () =>
      withProxy((proxy) =>
        Effect.gen(function*() {
          proxy.stall()
          let start = Date.now()
          const once = connectionFailure(
            yield* Effect.exit(
              Operations.remote("true").pipe(Settings.settings({ connectTimeout: "1 second" }))
            )
          )
          const single = since(start)
          assert.strictEqual(once.reason, "timeout")
          assert.isAtLeast(single, 950)
          assert.isBelow(single, 2_500)

          start = Date.now()
          const twice = connectionFailure(
            yield* Effect.exit(
              Operations.remote("true").pipe(
                Settings.settings({ connectTimeout: "1 second", connectAttempts: 2 })
              )
            )
          )
          const double = since(start)
          assert.strictEqual(twice.reason, "timeout")
          assert.isAtLeast(double, 2_000)
          assert.isBelow(double, 4_000)
          assert.strictEqual(proxy.statistics.accepted, 3)
          record(
            "stall in connect -> timeout",
            `${single} ms (connectTimeout 1 s); ${double} ms for 2 attempts`
          )

          // Refused on accept: retried, then ConnectionError, never a hang.
          proxy.resume().refuse(true)
          start = Date.now()
          const refused = connectionFailure(
            yield* Effect.exit(Operations.remote("true").pipe(Settings.settings({ connectAttempts: 2 })))
          )
          assert.strictEqual(refused.reason, "disconnected")
          // the documented bound: connectTimeout per attempt and the delay between them, + 2 s
          assert.isBelow(since(start), 2 * 3_000 + 100 + 2_000)
          assert.strictEqual(proxy.statistics.refused, 2)
          record(
            "closed on accept -> ConnectionError",
            `${since(start)} ms for 2 attempts (${refused.reason})`
          )
        })
      ))
  })

  describe("server restarts", () => {
    it.live("sshd restarted between two commands: the next command reconnects and succeeds", () =>
      withProxy((proxy) =>
        Effect.gen(function*() {
          yield* Operations.remote("true")
          let start = Date.now()
          yield* Operations.remote("true")
          const warm = since(start)
          yield* Effect.promise(() => server.restart())
          start = Date.now()
          const after = yield* Operations.remote("echo again")
          const reconnect = since(start)
          assert.strictEqual(after.stdout.trim(), "again")
          assert.strictEqual(proxy.statistics.accepted, 2, "a new connection")
          record("restart between commands", `next command ${reconnect} ms (warm command ${warm} ms)`)
        })
      ))

    it.live("sshd restarted during a parallel run: only its hosts fail, with ConnectionError", () => {
      const mark = marker("restart")
      return Effect.gen(function*() {
        const other = yield* Effect.acquireRelease(
          Effect.promise(() => startServer({ hostCount: 2 })),
          (s) => Effect.promise(() => s.stop())
        )
        const bothKnown = path.join(temp, "known_hosts_both")
        fs.writeFileSync(
          bothKnown,
          fs.readFileSync(server.knownHostsPath, "utf8") + fs.readFileSync(other.knownHostsPath, "utf8")
        )
        // Each server has its own client key: ssh_config aliases say which host takes which.
        const sshConfig = path.join(temp, "ssh_config_both")
        const alias = (name: string, address: string, s: Server) =>
          `Host ${name}\n  HostName ${address}\n  Port ${s.port}\n  IdentityFile ${s.keyPath}\n`
        fs.writeFileSync(
          sshConfig,
          alias("restarted-1", "127.0.0.1", server) + alias("steady-1", "127.0.0.1", other) +
            alias("restarted-2", "127.0.0.2", server) + alias("steady-2", "127.0.0.2", other)
        )
        const hosts = ["restarted-1", "steady-1", "restarted-2", "steady-2"]
        return yield* withProxy(
          () =>
            Effect.gen(function*() {
              const fiber = yield* Effect.forkChild(
                Execute.withHosts(sleepThenEcho, hosts, { poolSize: 4, input: { marker: mark, seconds: 20 } })
              )
              // All four commands must run at once when the server restarts. Their 20 s leave room
              // for four workers to start and connect one after another on a loaded machine.
              yield* waitForRemote(mark, 4, fiber)
              const start = Date.now()
              yield* Effect.promise(() => server.restart())
              const outcomes = yield* Fiber.join(fiber)
              const failedAfter = since(start)
              // The restart signals sshd and the commands at once: a session may still report
              // its command's death (SIGTERM, or 143 from its shell) before it goes, else the
              // connection just drops.
              const seen: Array<string> = []
              for (const index of [0, 2]) {
                const error = failureOf(outcomes[index]!.exit)
                if (error instanceof CommandFailed) {
                  // The shell itself, or only its `sleep`, may get the signal first.
                  assert.isTrue(
                    error.result.signal === "SIGTERM" || error.result.exitCode === 143,
                    `ended with ${error.result.ending}`
                  )
                  seen.push(`CommandFailed (${error.result.ending})`)
                } else {
                  assert.instanceOf(error, ConnectionError, String(error))
                  assert.strictEqual((error as ConnectionError).reason, "disconnected")
                  assert.strictEqual((error as ConnectionError).port, server.port)
                  seen.push("ConnectionError (disconnected)")
                }
              }
              for (const index of [1, 3]) assert.deepStrictEqual(outcomes[index]!.exit, Exit.succeed(mark))
              record(
                "restart during a 4-host run",
                `the restarted server's 2 hosts: ${seen.join(", ")}; the other 2: success ` +
                  `(run ended ${failedAfter} ms after the restart, with their 20 s commands)`
              )

              // The restarted server's hosts work again.
              const again = yield* Execute.withHosts(sleepThenEcho, [hosts[0]!, hosts[2]!], {
                input: { marker: mark, seconds: 0 }
              })
              assert.deepStrictEqual(again.map((o) => o.exit), [Exit.succeed(mark), Exit.succeed(mark)])
            }),
          {
            markers: [mark],
            // The drop is seen at once (the socket closes): see `slowMachine`.
            settings: {
              knownHostsFile: bothKnown,
              sshConfigFile: sshConfig,
              keyFile: undefined,
              ...slowMachine
            }
          }
        )
      }).pipe(Effect.scoped)
    }, 120_000)
  })

  describe("slow links", () => {
    it.live("200 ms latency each way and 1 MiB/s: a command and a 2 MiB transfer both ways stay exact", () =>
      withProxy((proxy) =>
        Effect.gen(function*() {
          proxy.setLatency(200).setBandwidth(MiB)
          // Keepalive replies queue behind bulk data here (ssh2 counts only replies as signs of
          // life), so the aggressive keepalive of the other scenarios would call this link dead.
          let start = Date.now()
          const listed = yield* Operations.remote("seq 1 20000")
          const commandMillis = since(start)
          assert.strictEqual(listed.stdoutLines.length, 20000)
          assert.strictEqual(listed.stdoutLines[19999], "20000")

          start = Date.now()
          yield* Operations.remote("true")
          const roundTrip = since(start)

          const { local, remote } = dirs()
          const content = randomBytes(2 * MiB)
          const source = path.join(local, "two.bin")
          fs.writeFileSync(source, content)
          start = Date.now()
          const written = yield* Transfer.upload(source, path.join(remote, "two.bin"))
          const upMillis = since(start)
          assert.strictEqual(sha(fs.readFileSync(written)), sha(content))
          start = Date.now()
          const back = yield* Transfer.download(written, path.join(local, "back.bin"))
          const downMillis = since(start)
          assert.strictEqual(sha(fs.readFileSync(back)), sha(content))
          assert.deepStrictEqual(leftovers(remote), [])
          assert.deepStrictEqual(leftovers(local), [])
          // The data alone takes 2 s at 1 MiB/s; the rest is round trips of 400 ms.
          const rate = (millis: number) =>
            `${(2 / (millis / 1000)).toFixed(2)} MiB/s, ~${
              Math.round((millis - 2000) / 400)
            } round trips besides the data`
          record(
            "slow link (200 ms each way, 1 MiB/s)",
            `connect + seq 1 20000: ${commandMillis} ms; warm 'true': ${roundTrip} ms; ` +
              `2 MiB up ${upMillis} ms (${rate(upMillis)}), down ${downMillis} ms (${rate(downMillis)})`
          )
        }), { settings: { keepaliveInterval: "5 seconds" } }))
  })

  describe("killed commands", () => {
    it.live("a command killed with SIGKILL on the server: CommandFailed with signal SIGKILL", () => {
      const mark = marker("kill")
      return withProxy(
        () =>
          Effect.gen(function*() {
            // `exec -a` names the sleep itself after the marker: one process to find and kill.
            const fiber = yield* Effect.forkChild(Operations.remote(`exec -a ${mark} sleep 20`))
            yield* waitForRemote(mark)
            const [target] = remoteProcesses(mark)
            process.kill(target!.pid, "SIGKILL")
            const error = failureOf(yield* Effect.exit(Fiber.join(fiber)))
            assert.instanceOf(error, CommandFailed, String(error))
            const result = (error as CommandFailed).result
            assert.strictEqual(result.signal, "SIGKILL")
            assert.isNull(result.exitCode)
            assert.isTrue(result.failed)
            // warnOnly keeps the result instead.
            const kept = yield* Effect.forkChild(
              Operations.warnOnly(Operations.remote(`exec -a ${mark} sleep 20`))
            )
            yield* waitForRemote(mark)
            process.kill(remoteProcesses(mark)[0]!.pid, "SIGKILL")
            const warned = yield* Fiber.join(kept)
            assert.strictEqual(warned.signal, "SIGKILL")
          }),
        { markers: [mark] }
      )
    })
  })

  it("the proxy forwards byte-exact under every fault, and closes every socket", async () => {
    // The harness itself: an echo of 1 MiB through latency, a bandwidth cap and a stall.
    const net = await import("node:net")
    const echo = net.createServer((s) => s.pipe(s))
    await new Promise<void>((resolve) => echo.listen(0, "127.0.0.1", resolve))
    const proxy = await FaultProxy.start({ port: (echo.address() as { port: number }).port })
    proxy.setLatency({ up: 50, down: 20 }).setBandwidth(4 * MiB)
    const data = randomBytes(MiB)
    const socket = net.connect(proxy.port, "127.0.0.1")
    const received: Array<Buffer> = []
    const start = Date.now()
    const done = new Promise<void>((resolve) => {
      let got = 0
      socket.on("data", (chunk: Buffer) => {
        received.push(chunk)
        got += chunk.length
        if (got >= data.length) resolve()
      })
    })
    socket.write(data)
    setTimeout(() => proxy.stall(), 50)
    setTimeout(() => proxy.resume(), 250)
    await done
    const millis = Date.now() - start
    assert.strictEqual(sha(Buffer.concat(received)), sha(data))
    // 1 MiB each way at 4 MiB/s, plus the stall and latency: at least ~450 ms.
    assert.isAtLeast(millis, 400)
    assert.strictEqual(proxy.openConnections, 1)
    proxy.cutAfter(10, "up")
    socket.write(Buffer.alloc(100))
    await new Promise((resolve) => socket.once("close", resolve))
    await proxy.waitForNoConnections(2_000)
    assert.strictEqual(proxy.statistics.cut, 1)
    await proxy.close()
    await new Promise((resolve) => echo.close(resolve))
  })
})
