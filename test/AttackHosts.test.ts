/**
 * Attacks on what issue 14 promised for other servers and shells: Dropbear's one-channel-at-a-time
 * rule under interruptions and timeouts, and the stop of a command whose process id never arrived.
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Logger from "effect/Logger"
import { spawn, spawnSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as net from "node:net"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { killMarkedScript, newMarker } from "../src/internal/remote/run.ts"
import * as Operations from "../src/Operations.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import * as Transfer from "../src/Transfer.ts"
import { type DropbearServer, readDropbearFromEnv } from "../tests-remote/dropbear-server.ts"
import { Blackhole, FaultProxy } from "../tests-remote/faultProxy.ts"
import { remoteProcesses } from "../tests-remote/server.ts"
import { connectionSettings, failureOf, signal } from "./support.ts"

const dropbear = readDropbearFromEnv()

const settingsFor = (server: DropbearServer, patch: Settings.Patch = {}) =>
  Settings.settings({
    ...connectionSettings(server),
    quiet: true,
    host: `${server.user}@127.0.0.1:${server.port}`,
    ...patch
  })

const assertions = (server: DropbearServer): ReadonlyArray<string> =>
  server.readLog().split("\n").filter((line) => line.includes("Failed assertion"))

const mark = (name: string) => `tb-attack-${name}-${process.pid}-${randomBytes(4).toString("hex")}`

/** Commands carrying `m` that run on the server (not the login shells and guards around them). */
const running = (m: string) => remoteProcesses(m).filter((p) => !p.args.includes("__threadbare_pid_"))

/** Kills what still runs with any of `markers`, so a failed test leaves nothing behind. */
const killMarked = (...markers: ReadonlyArray<string>): void => {
  for (const p of markers.flatMap(running)) signal(p.pid, "SIGKILL")
}

const waitUntil = (what: string, check: () => boolean, millis: number) =>
  Effect.gen(function*() {
    const deadline = Date.now() + millis
    while (!check()) {
      if (Date.now() > deadline) return assert.fail(what)
      yield* Effect.sleep("25 millis")
    }
  })

/** A proxy in front of Dropbear, a known_hosts file naming its port, and settings to go through it. */
// The link's death is noticed within 1.5 s.
const quickKeepalive = { keepaliveInterval: Duration.millis(500), keepaliveCountMax: 3 }

const proxied = (server: DropbearServer) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const proxy = await FaultProxy.start({ port: server.port })
      const dir = fs.mkdtempSync(path.join(tmpdir(), "tb-attack-hosts-"))
      const key = fs.readFileSync(server.knownHostsPath, "utf8").split("\n")[0]!.split(" ").slice(1).join(" ")
      const knownHosts = path.join(dir, "known_hosts")
      fs.writeFileSync(knownHosts, `[127.0.0.1]:${proxy.port} ${key}\n`)
      // Settings for the server through the proxy, with `patch` on top.
      const through = (patch: Settings.Patch = {}) =>
        settingsFor(server, {
          host: `${server.user}@127.0.0.1:${proxy.port}`,
          knownHostsFile: knownHosts,
          ...patch
        })
      return { proxy, dir, through }
    }),
    ({ dir, proxy }) =>
      Effect.promise(async () => {
        proxy.cutNow()
        await proxy.close()
        fs.rmSync(dir, { recursive: true, force: true })
      })
  )

describe.skipIf(dropbear === undefined)("Attack: Dropbear", () => {
  it.live(
    "a link lost before the process id arrived: what an earlier command left in the background keeps running",
    () =>
      Effect.gen(function*() {
        const server = dropbear!
        const { proxy, through } = yield* proxied(server)
        const daemon = mark("stranded-daemon")
        const victim = mark("stranded-victim")
        const via = through(quickKeepalive)
        try {
          yield* Effect.scoped(
            Effect.gen(function*() {
              yield* Operations.remote(`sh -c 'sleep 120; echo $0' ${daemon} >/dev/null 2>&1 &`)
              yield* waitUntil("daemon running", () => running(daemon).length > 0, 10_000)
              proxy.setLatency({ down: 1_000 })
              const fiber = yield* Effect.forkChild(Operations.remote(`sh -c 'sleep 120; echo $0' ${victim}`))
              yield* waitUntil("victim running", () => running(victim).length > 0, 20_000)
              proxy.strand()
              proxy.setLatency(0)
              yield* Effect.exit(Fiber.join(fiber))
            }).pipe(Effect.provide(Ssh.layer), via)
          )
          yield* waitUntil("the victim still runs", () => running(victim).length === 0, 20_000)
          yield* Effect.sleep("4 seconds")
          assert.isAbove(
            running(daemon).length,
            0,
            "the background service was stopped with the stranded command"
          )
        } finally {
          killMarked(daemon, victim)
        }
      }).pipe(Effect.scoped, Effect.provide(NodeServices.layer)),
    90_000
  )

  it.live(
    "a command whose connection is cut: what an earlier command left in the background keeps running",
    () =>
      Effect.gen(function*() {
        const server = dropbear!
        const { proxy, through } = yield* proxied(server)
        const daemon = mark("daemon")
        const victim = mark("cut-victim")
        const via = through()
        try {
          yield* Effect.scoped(
            Effect.gen(function*() {
              // A deploy starts a service in the background and ends; a later command on the same
              // connection is cut off: only that command is stopped.
              yield* Operations.remote(`sh -c 'sleep 120; echo $0' ${daemon} >/dev/null 2>&1 &`)
              yield* waitUntil("daemon running", () => running(daemon).length > 0, 10_000)
              const fiber = yield* Effect.forkChild(Operations.remote(`sh -c 'sleep 120; echo $0' ${victim}`))
              yield* waitUntil("victim running", () => running(victim).length > 0, 10_000)
              yield* Effect.sleep("300 millis")
              proxy.cutNow()
              yield* Effect.exit(Fiber.join(fiber))
            }).pipe(Effect.provide(Ssh.layer), via)
          )
          yield* waitUntil("the victim still runs", () => running(victim).length === 0, 15_000)
          // The guard's TERM, and its KILL 3 s later, would have come by now.
          yield* Effect.sleep("4 seconds")
          assert.isAbove(running(daemon).length, 0, "the background service was stopped with the cut command")
        } finally {
          killMarked(daemon, victim)
        }
      }).pipe(Effect.scoped, Effect.provide(NodeServices.layer)),
    60_000
  )

  it.live(
    "a remote forward whose local destination answers only after the connection was cut: no defect",
    () =>
      Effect.gen(function*() {
        const server = dropbear!
        const { proxy, through } = yield* proxied(server)
        const hole = yield* Effect.promise(() => Blackhole.start())
        const defects: Array<string> = []
        const onUncaught = (error: unknown) => void defects.push(`uncaught: ${String(error)}`)
        process.on("uncaughtException", onUncaught)
        process.on("unhandledRejection", onUncaught)
        const logged: Array<string> = []
        const logger = Logger.make<unknown, void>(({ logLevel, message }) =>
          void logged.push(`${logLevel}: ${String(message)}`)
        )
        try {
          yield* Effect.scoped(
            Effect.gen(function*() {
              const port = yield* Ssh.forwardRemote({ remotePort: 0, localPort: hole.port })
              // A connection to the server's port: the server hands it to us, and our connect to
              // the destination hangs.
              const socket = net.connect(port, "127.0.0.1")
              socket.on("error", () => {})
              yield* Effect.sleep("500 millis")
              proxy.cutNow()
              yield* Effect.sleep("200 millis")
              // The destination goes: the connect fails (or succeeds) only now.
              yield* Effect.promise(() => hole.close())
              yield* Effect.sleep("4 seconds")
              socket.destroy()
            }).pipe(
              Effect.provide(Ssh.layer),
              through(),
              Effect.provide(Logger.layer([logger])),
              Effect.exit
            )
          )
        } finally {
          process.off("uncaughtException", onUncaught)
          process.off("unhandledRejection", onUncaught)
        }
        assert.deepStrictEqual(defects, [])
        assert.deepStrictEqual(logged.filter((l) => /unusable|Not connected|defect|unhandled/i.test(l)), [])
      }).pipe(Effect.scoped, Effect.provide(NodeServices.layer)),
    60_000
  )

  it.live(
    "tree transfers, sudo transfers and commands interrupted at random moments: bounded, no deadlock, no crash",
    () =>
      Effect.gen(function*() {
        const server = dropbear!
        const dir = fs.mkdtempSync(path.join(tmpdir(), "tb-attack-trees-"))
        fs.chmodSync(dir, 0o777)
        const tree = path.join(dir, "tree")
        for (let i = 0; i < 20; i++) {
          fs.mkdirSync(path.join(tree, `d${i % 4}`), { recursive: true })
          fs.writeFileSync(path.join(tree, `d${i % 4}`, `f${i}`), randomBytes(40_000))
        }
        fs.chmodSync(tree, 0o755)
        let seed = 7
        const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648
        const times: Array<number> = []
        try {
          yield* Effect.scoped(
            Effect.gen(function*() {
              for (let round = 0; round < 12; round++) {
                const jobs = [
                  Transfer.upload(tree, path.join(dir, `up-${round}`)),
                  Transfer.download(tree, path.join(dir, `down-${round}`)),
                  Transfer.upload({ content: "y".repeat(20_000) }, path.join(dir, `s-${round}`), {
                    useSudo: true
                  }),
                  Operations.remote("sleep 0.05; echo a"),
                  Operations.remote("sleep 1", { useSudo: true }),
                  Operations.remote("echo b")
                ].map((job) =>
                  Effect.forkChild(Effect.exit(job as Effect.Effect<unknown, unknown, Ssh.SshConnections>))
                )
                const fibers = yield* Effect.all(jobs)
                yield* Effect.sleep(Duration.millis(Math.floor(random() * 400)))
                const start = Date.now()
                yield* Effect.all(fibers.map((fiber) => Fiber.interrupt(fiber)), { concurrency: "unbounded" })
                times.push(Date.now() - start)
                const again = yield* Operations.remote("echo ok").pipe(Effect.timeout("15 seconds"))
                assert.strictEqual(again.stdout, "ok\n", `round ${round}`)
              }
            }).pipe(Effect.provide(Ssh.layer), settingsFor(server))
          )
        } finally {
          fs.rmSync(dir, { recursive: true, force: true })
        }
        console.log(`interrupting a Dropbear mix: ${times.join(", ")} ms`)
        assert.isAtMost(Math.max(...times), 10_000)
        assert.deepStrictEqual(assertions(server), [])
      }).pipe(Effect.provide(NodeServices.layer)),
    300_000
  )

  it.live(
    "an SFTP server process stopped mid-transfer: the caller's timeout holds, and the connection serves on",
    () =>
      Effect.gen(function*() {
        const server = dropbear!
        const dir = fs.mkdtempSync(path.join(tmpdir(), "tb-attack-sftp-"))
        fs.chmodSync(dir, 0o755)
        fs.writeFileSync(path.join(dir, "big.bin"), randomBytes(64 * 1024 * 1024), { mode: 0o644 })
        const sftpServers = () => new Set(remoteProcesses("sftp-server").map((p) => p.pid))
        const before = sftpServers()
        const stopped: Array<number> = []
        try {
          yield* Effect.scoped(
            Effect.gen(function*() {
              yield* Operations.remote("true")
              const fiber = yield* Effect.forkChild(
                Transfer.download(path.join(dir, "big.bin")).pipe(Effect.timeout("4 seconds"), Effect.exit)
              )
              yield* waitUntil(
                "an SFTP server of ours",
                () => [...sftpServers()].some((p) => !before.has(p)),
                10_000
              )
              for (const pid of sftpServers()) {
                if (before.has(pid)) continue
                process.kill(pid, "SIGSTOP")
                stopped.push(pid)
              }
              const start = Date.now()
              const exit = yield* Fiber.join(fiber)
              const failed = Date.now() - start
              assert.isTrue(Exit.isFailure(exit), String(exit))
              assert.isAtMost(failed, 4_000 + 3_000, "the timeout, plus the session's bounded end")
              // The connection, one channel at a time on this Dropbear, is free again.
              const next = Date.now()
              const again = yield* Operations.remote("echo again").pipe(Effect.timeout("10 seconds"))
              assert.strictEqual(again.stdout, "again\n")
              const small = yield* Transfer.upload({ content: "x" }, path.join(dir, "small")).pipe(
                Effect.timeout("10 seconds"),
                Effect.exit
              )
              console.log(
                `stopped SFTP server: failed after ${failed} ms, next command in ${Date.now() - next} ms`
              )
              assert.isTrue(Exit.isSuccess(small) || String(small).includes("TransferError"), String(small))
            }).pipe(Effect.provide(Ssh.layer), settingsFor(server))
          )
        } finally {
          for (const pid of stopped) {
            try {
              process.kill(pid, "SIGKILL")
              process.kill(pid, "SIGCONT")
            } catch {
              // gone
            }
          }
          fs.rmSync(dir, { recursive: true, force: true })
        }
      }).pipe(Effect.provide(NodeServices.layer)),
    60_000
  )

  it.live(
    "a command that prints marker-like lines keeps them, and its own process id report is not confused",
    () =>
      Effect.gen(function*() {
        const server = dropbear!
        const fake = "__threadbare_pid_0123456789abcdef=1:1"
        for (const patch of [{}, { pty: true }, { useSudo: true }, { combineStderr: true }]) {
          const result = yield* Operations.remote(`echo ${fake} >&2; echo ${fake}; exit 4`, {
            ...patch,
            warnOnly: true
          }).pipe(Effect.provide(Ssh.layer), settingsFor(server))
          assert.strictEqual(result.exitCode, 4, JSON.stringify(patch))
          const all = `${result.stdout}${result.stderr}`
          assert.strictEqual(all.split(fake).length - 1, 2, `${JSON.stringify(patch)}: ${all}`)
        }
      }).pipe(Effect.provide(NodeServices.layer)),
    60_000
  )

  for (const patch of [{ useSudo: true }, { useSudo: true, sudoUser: "nobody", remoteWorkingDir: "/" }]) {
    it.live(
      `a link lost before the process id arrived, under sudo: still stopped (${JSON.stringify(patch)})`,
      () =>
        Effect.gen(function*() {
          const server = dropbear!
          const { proxy, through } = yield* proxied(server)
          const victim = mark("sudo-victim")
          const via = through(quickKeepalive)
          const exit = yield* Effect.scoped(
            Effect.gen(function*() {
              yield* Operations.remote("true")
              proxy.setLatency({ down: 1_000 })
              const fiber = yield* Effect.forkChild(
                Operations.remote(`sh -c 'sleep 120; echo $0' ${victim}`, patch)
              )
              yield* waitUntil("victim running", () => running(victim).length > 0, 20_000)
              proxy.strand()
              proxy.setLatency(0)
              return yield* Effect.exit(Fiber.join(fiber))
            }).pipe(Effect.provide(Ssh.layer), via)
          )
          assert.include(String(Exit.isFailure(exit) ? exit.cause : exit), "ConnectionError")
          yield* waitUntil(
            `the victim still runs: ${running(victim).map((p) => `${p.user} ${p.args}`).join("; ")}`,
            () => running(victim).length === 0,
            20_000
          )
        }).pipe(Effect.scoped, Effect.provide(NodeServices.layer)),
      90_000
    )
  }

  for (const shell of ["/bin/sh -c", "/bin/bash -c"]) {
    it.live(
      `a link lost before the process id arrived: stopped by its marker, a bystander spared (${shell})`,
      () =>
        Effect.gen(function*() {
          const server = dropbear!
          const { proxy, through } = yield* proxied(server)
          const victim = mark("victim")
          const bystander = mark("bystander")
          const via = through({
            shell,
            ...quickKeepalive
          })
          // A command of the same user on another connection, not through the proxy.
          const spared = yield* Effect.forkChild(
            Operations.remote(`sh -c 'sleep 60; echo $0' ${bystander}`, { warnOnly: true }).pipe(
              Effect.provide(Ssh.layer),
              settingsFor(server, { shell })
            )
          )
          yield* waitUntil("bystander running", () => running(bystander).length > 0, 20_000)
          const exit = yield* Effect.scoped(
            Effect.gen(function*() {
              yield* Operations.remote("true")
              proxy.setLatency({ down: 1_000 })
              const fiber = yield* Effect.forkChild(Operations.remote(`sh -c 'sleep 120; echo $0' ${victim}`))
              yield* waitUntil("victim running", () => running(victim).length > 0, 20_000)
              proxy.strand()
              proxy.setLatency(0)
              return yield* Effect.exit(Fiber.join(fiber))
            }).pipe(Effect.provide(Ssh.layer), via)
          )
          assert.isTrue(Exit.isFailure(exit))
          assert.include(String(Exit.isFailure(exit) ? exit.cause : ""), "ConnectionError")
          yield* waitUntil(
            `the victim still runs: ${running(victim).map((p) => p.args).join("; ")}`,
            () => running(victim).length === 0,
            20_000
          )
          assert.isAbove(running(bystander).length, 0, "the bystander was stopped too")
          yield* Fiber.interrupt(spared)
          assert.deepStrictEqual(assertions(server), [])
        }).pipe(Effect.scoped, Effect.provide(NodeServices.layer)),
      90_000
    )
  }

  it.live(
    "a connection cut after the command started, before its channel was confirmed: never run twice",
    () =>
      Effect.gen(function*() {
        const server = dropbear!
        const { dir, proxy, through } = yield* proxied(server)
        fs.chmodSync(dir, 0o777)
        const log = path.join(dir, "runs")
        const via = through()
        const exit = yield* Effect.scoped(
          Effect.gen(function*() {
            yield* Operations.remote("true")
            // Answers take a second: the command starts on the server while its channel's
            // confirmation is still on its way, and then the link is cut.
            proxy.setLatency({ down: 1_000 })
            const fiber = yield* Effect.forkChild(Operations.remote(`echo run >> ${log}; echo done`))
            yield* waitUntil("the command ran", () => fs.existsSync(log), 20_000)
            proxy.cutNow()
            proxy.setLatency(0)
            return yield* Effect.exit(Fiber.join(fiber))
          }).pipe(Effect.provide(Ssh.layer), via)
        )
        yield* Effect.sleep("1 second")
        const runs = fs.readFileSync(log, "utf8").split("\n").filter((l) => l !== "").length
        assert.strictEqual(runs, 1, `the command ran ${runs} times; the operation's exit: ${String(exit)}`)
        assert.isTrue(Exit.isFailure(exit) && String(exit.cause).includes("ConnectionError"), String(exit))
      }).pipe(Effect.scoped, Effect.provide(NodeServices.layer)),
    60_000
  )

  for (const shell of ["/bin/sh -c", "/bin/bash -c"]) {
    it.live(
      `interrupted at every moment of its start, beside other commands: stopped, bounded (${shell})`,
      () =>
        Effect.gen(function*() {
          const server = dropbear!
          const m = mark("moment")
          const slowest: Array<number> = []
          yield* Effect.scoped(
            Effect.gen(function*() {
              yield* Operations.remote("true")
              const busy = yield* Effect.forkChild(
                Effect.forever(Operations.remote("echo busy").pipe(Effect.ignore))
              )
              for (let delay = 0; delay < 60; delay += 2) {
                const fiber = yield* Effect.forkChild(Operations.remote(`sh -c 'sleep 60; echo $0' ${m}`))
                yield* Effect.sleep(Duration.millis(delay))
                const start = Date.now()
                yield* Fiber.interrupt(fiber)
                const exit = yield* Fiber.await(fiber)
                slowest.push(Date.now() - start)
                assert.isTrue(
                  Exit.hasInterrupts(exit) || Exit.isSuccess(exit),
                  `delay ${delay}: ${String(exit)}`
                )
              }
              yield* Fiber.interrupt(busy)
            }).pipe(Effect.provide(Ssh.layer), settingsFor(server, { shell }))
          )
          yield* waitUntil(
            `left running: ${running(m).map((p) => p.args).join("; ")}`,
            () => running(m).length === 0,
            20_000
          )
          assert.isAtMost(Math.max(...slowest), 8_000, `interrupt times ${slowest.join(",")}`)
          assert.deepStrictEqual(assertions(server), [])
        }).pipe(Effect.provide(NodeServices.layer)),
      300_000
    )
  }

  it.live(
    "cut at random offsets of a mix with sudo, pty, input, transfers and a tunnel: typed errors only",
    () =>
      Effect.gen(function*() {
        const server = dropbear!
        const { dir, proxy, through } = yield* proxied(server)
        fs.chmodSync(dir, 0o777)
        const local = path.join(dir, "local")
        fs.mkdirSync(path.join(local, "tree", "sub"), { recursive: true })
        fs.writeFileSync(path.join(local, "up.bin"), randomBytes(256 * 1024))
        fs.writeFileSync(path.join(local, "tree", "sub", "f"), randomBytes(32 * 1024))
        fs.writeFileSync(path.join(dir, "down.bin"), randomBytes(256 * 1024), { mode: 0o644 })
        const via = through({
          connectAttempts: 1
        })
        // Reads the server's greeting through a forward to the server itself.
        const throughTunnel = Effect.scoped(Effect.gen(function*() {
          const port = yield* Ssh.forwardLocal({ remoteHost: "127.0.0.1", remotePort: server.port })
          return yield* Effect.callback<string>((resume) => {
            const socket = net.connect(port, "127.0.0.1")
            socket.once("data", (data) => {
              socket.destroy()
              resume(Effect.succeed(String(data)))
            })
            socket.once("error", () => resume(Effect.succeed("")))
            socket.once("close", () => resume(Effect.succeed("")))
          }).pipe(Effect.timeout("10 seconds"))
        }))
        let seed = 14
        const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648
        const tags = new Map<string, number>()
        const odd: Array<string> = []
        for (let round = 0; round < 24; round++) {
          const bytes = Math.floor(500 + random() * 400_000)
          proxy.cutAfter(bytes)
          const exits = yield* Effect.scoped(
            Effect.all(
              [
                Operations.remote("echo a; sleep 0.3; echo b"),
                Operations.remote("echo pty; sleep 0.2", { pty: true }),
                Operations.remote("id -u; sleep 0.2", { useSudo: true }),
                Operations.remote("id -u", { useSudo: true, pty: true }),
                Transfer.upload(path.join(local, "up.bin"), path.join(dir, `up-${round}.bin`)),
                Transfer.download(path.join(dir, "down.bin"), path.join(local, `down-${round}.bin`)),
                Transfer.upload(path.join(local, "tree"), path.join(dir, `tree-${round}`)),
                Transfer.upload({ content: "x".repeat(50_000) }, path.join(dir, `m-${round}`), {
                  useSudo: true
                }),
                Transfer.download(path.join(dir, "down.bin"), undefined, { useSudo: true }),
                throughTunnel
              ].map((job) => Effect.exit(job as Effect.Effect<unknown, unknown, Ssh.SshConnections>)),
              { concurrency: "unbounded" }
            ).pipe(Effect.provide(Ssh.layer), via)
          )
          proxy.clearCut()
          exits.forEach((exit, i) => {
            if (Exit.isSuccess(exit)) return
            let tag: string
            try {
              tag = (failureOf(exit) as { _tag: string })._tag
            } catch (error) {
              odd.push(`round ${round} (${bytes} bytes) job ${i}: ${String(error).slice(0, 300)}`)
              return
            }
            tags.set(tag, (tags.get(tag) ?? 0) + 1)
            if (!["ConnectionError", "TransferError", "TunnelError"].includes(tag)) {
              odd.push(`round ${round} job ${i}: ${tag} ${String(failureOf(exit)).slice(0, 200)}`)
            }
          })
        }
        console.log("random cuts on Dropbear:", JSON.stringify([...tags]))
        assert.deepStrictEqual(odd, [])
        assert.deepStrictEqual(assertions(server), [])
      }).pipe(Effect.scoped, Effect.provide(NodeServices.layer)),
    300_000
  )

  it.live(
    "timeouts that race the command's own end, with other commands queued: only timeouts, no crash",
    () =>
      Effect.gen(function*() {
        const server = dropbear!
        const before = assertions(server).length
        const failures: Array<string> = []
        for (let round = 0; round < 6; round++) {
          const exits = yield* Effect.scoped(
            Effect.all(
              Array.from({ length: 24 }, (_, i) =>
                Effect.exit(
                  i % 2 === 0
                    ? Operations.remote("sleep 0.1", { timeout: Duration.millis(80 + (i % 7) * 8) })
                    : Operations.remote(`echo ${i}`)
                )),
              { concurrency: "unbounded" }
            ).pipe(Effect.provide(Ssh.layer), settingsFor(server))
          )
          exits.forEach((exit, i) => {
            if (Exit.isFailure(exit)) {
              const text = String(exit.cause)
              if (!(i % 2 === 0 && text.includes("CommandTimeout"))) {
                failures.push(`round ${round} #${i}: ${text.slice(0, 160)}`)
              }
            }
          })
        }
        assert.deepStrictEqual(failures, [])
        assert.deepStrictEqual(assertions(server).slice(before), [])
      }).pipe(Effect.provide(NodeServices.layer)),
    300_000
  )
})

describe("Attack: the marker stop under busybox", () => {
  it.live(
    "busybox's sh, ps and awk find and stop the marked group, and nothing else",
    () =>
      Effect.gen(function*() {
        const busybox = ["/usr/bin/busybox", "/bin/busybox"].find((p) => fs.existsSync(p))
        if (busybox === undefined) return
        const bin = fs.mkdtempSync(path.join(tmpdir(), "tb-attack-bb-"))
        for (const tool of ["sh", "ps", "awk", "sleep"]) fs.symlinkSync(busybox, path.join(bin, tool))
        const env = { ...process.env, PATH: `${bin}:${process.env["PATH"] ?? ""}` }
        const marker = yield* newMarker("pid")
        const other = yield* newMarker("pid")
        // The marked "login shell" (a group of its own, as sshd makes it) with a child, and a
        // bystander whose line holds another marker and the first one's two halves apart.
        const half = marker.length >> 1
        const start = (line: string) =>
          spawn(path.join(bin, "sh"), ["-c", line], { env, detached: true, stdio: "ignore" })
        const victim = start(`: ${marker}; sleep 60 & sleep 60; echo`)
        const bystander = start(`: ${other} ${marker.slice(0, half)} ${marker.slice(half)}; sleep 60; echo`)
        try {
          yield* Effect.sleep("300 millis")
          const run = spawnSync(path.join(bin, "sh"), ["-c", killMarkedScript(marker)], {
            env,
            encoding: "utf8"
          })
          assert.strictEqual(run.status, 0, run.stderr)
          yield* waitUntil(
            "the marked group still runs",
            () => victim.exitCode !== null || victim.signalCode !== null,
            10_000
          )
          const left = spawnSync("ps", ["-e", "-o", "pgid=,args="], { encoding: "utf8" }).stdout
            .split("\n").filter((l) =>
              l.trim().split(/\s+/)[0] === String(victim.pid) && !l.includes("<defunct>")
            )
          assert.deepStrictEqual(left, [])
          assert.isNull(bystander.exitCode, "the bystander was stopped")
          assert.isNull(bystander.signalCode, "the bystander was stopped")
        } finally {
          for (const child of [victim, bystander]) {
            try {
              process.kill(-child.pid!, "SIGKILL")
            } catch {
              // already gone
            }
          }
          fs.rmSync(bin, { recursive: true, force: true })
        }
      }),
    30_000
  )
})
