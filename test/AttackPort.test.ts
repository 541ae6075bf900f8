/**
 * Attacks on the SSH port (issue 10): `Connection.exec` and `Connection.sftp` against the real
 * throwaway OpenSSH server, interrupted at every moment, stalled by a stopped sshd, and used after
 * their scope. Each names the promise it attacks; those that once broke it are fixed.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import * as fs from "node:fs"
import { remote } from "../src/internal/remote/operations.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import { readServerFromEnv, remoteProcesses } from "../tests-remote/server.ts"
import { settingsLayer, signal, uniqueMarker, waitForProcesses } from "./support.ts"

const server = readServerFromEnv()

const base = settingsLayer({ user: server.user, port: server.port, connectAttempts: 1, quiet: true })

const connectTo = (host: string, patch: Settings.Patch = {}) =>
  Effect.gen(function*() {
    const ssh = yield* Ssh.SshConnections
    return yield* ssh.connect(Settings.apply(yield* Settings.Settings, { host, ...patch }))
  })

const openFds = (): number => fs.readdirSync("/proc/self/fd").length

/** `n` commands that each end only once all `n` have started: proves `n` slots are free. */
const allSlotsFree = (connection: Ssh.Connection, n: number) =>
  Effect.gen(function*() {
    const opened = yield* Deferred.make<void>()
    let count = 0
    const held = Effect.scoped(Effect.gen(function*() {
      const handle = yield* connection.exec("cat")
      if (++count === n) yield* Deferred.succeed(opened, undefined)
      yield* Deferred.await(opened)
      yield* handle.endInput
      yield* Stream.runDrain(handle.output)
      return (yield* handle.exit).exitCode
    }))
    return yield* Effect.all(Array.from({ length: n }, () => held), { concurrency: "unbounded" }).pipe(
      Effect.timeout("20 seconds")
    )
  })

/** The sshd process serving the connection whose command line holds `marker`. */
const sessionSshdOf = (marker: string): number => {
  const shells = remoteProcesses(marker).filter((p) => p.comm !== "sshd")
  assert.isAbove(shells.length, 0, `no process holds ${marker}`)
  return shells[0]!.ppid
}

layer(Layer.mergeAll(Ssh.layer, base), { timeout: "300 seconds", excludeTestServices: true })(
  "AttackPort",
  (it) => {
    describe("exec interrupted at every moment", () => {
      it.effect("exec + drain under Effect.timeout 0..20 ms, 60 times: every slot comes back, no fd growth", () =>
        Effect.gen(function*() {
          const maxChannels = 4
          const connection = yield* connectTo("127.0.0.2", { maxChannels })
          // Warm up: the first exec allocates whatever the connection keeps for good.
          yield* allSlotsFree(connection, maxChannels)
          const fdsBefore = openFds()
          for (let i = 0; i < 60; i++) {
            yield* Effect.scoped(Effect.gen(function*() {
              const handle = yield* connection.exec("head -c 200000 /dev/zero; sleep 0.05")
              yield* Stream.runDrain(handle.output)
              yield* handle.exit
            })).pipe(Effect.timeout(`${i % 21} millis`), Effect.ignore)
          }
          assert.isTrue(connection.isOpen())
          const codes = yield* allSlotsFree(connection, maxChannels)
          assert.deepStrictEqual(codes, Array(maxChannels).fill(0))
          // Give late channels a moment to close, then count.
          yield* Effect.sleep("500 millis")
          const fdsAfter = openFds()
          assert.isAtMost(fdsAfter - fdsBefore, 2, `fds ${fdsBefore} -> ${fdsAfter}`)
        }).pipe(Effect.scoped))

      it.effect("Operations.remote under timeout 0..20 ms, 40 times: no remote process is left", () =>
        Effect.gen(function*() {
          const marker = uniqueMarker("attack_remote_loop")
          for (let i = 0; i < 40; i++) {
            yield* remote(`sleep 30; echo ${marker}`).pipe(
              Settings.settings({ host: "127.0.0.3" }),
              Effect.timeout(`${i % 21} millis`),
              Effect.ignore
            )
          }
          const gone = yield* waitForProcesses(marker, false, 15)
          const left = remoteProcesses(marker)
          for (const p of left) signal(p.pid, "SIGKILL")
          assert.isTrue(gone, `${left.length} remote processes left: ${left.map((p) => p.args).join(" | ")}`)
        }))
    })

    describe("sftp interrupted at every moment", () => {
      it.effect("sftp open interrupted 0..20 ms, 40 times, at maxChannels = MaxSessions - 2: all slots then usable", () =>
        Effect.gen(function*() {
          // The library's own default: 8 slots + reserved + alongside = sshd's MaxSessions (10).
          const maxChannels = 8
          const connection = yield* connectTo("127.0.0.4", { maxChannels })
          for (let i = 0; i < 40; i++) {
            yield* Effect.scoped(Effect.flatMap(connection.sftp, (sftp) => sftp.stat("/"))).pipe(
              Effect.timeout(`${i % 21} millis`),
              Effect.ignore
            )
          }
          // No pause: a discarded late session still holds a session on the server for a moment.
          const codes = yield* allSlotsFree(connection, maxChannels)
          assert.deepStrictEqual(codes, Array(maxChannels).fill(0))
          const size = yield* Effect.scoped(Effect.flatMap(connection.sftp, (s) => s.stat("/etc/hostname")))
          assert.isTrue(size.isFile())
        }).pipe(Effect.scoped))

      it.effect("a request on a session whose scope has closed fails at once", () =>
        Effect.gen(function*() {
          const connection = yield* connectTo("127.0.0.4")
          const session = yield* Effect.scoped(connection.sftp)
          const started = Date.now()
          const exit = yield* Effect.exit(session.stat("/").pipe(Effect.timeout("5 seconds")))
          assert.isTrue(Exit.isFailure(exit))
          // well before the 5 s timeout: the request failed, it did not wait for an answer
          assert.isBelow(Date.now() - started, 4000)
          assert.isFalse(session.isOpen())
          // And one made while the close is still on its way.
          const exit2 = yield* Effect.exit(
            Effect.scoped(Effect.flatMap(connection.sftp, (s) => Effect.succeed(s))).pipe(
              Effect.flatMap((s) => s.open("/etc/hostname", "r")),
              Effect.timeout("5 seconds")
            )
          )
          assert.isTrue(Exit.isFailure(exit2))
          assert.notInclude(String(exit2), "TimeoutError")
        }).pipe(Effect.scoped))
    })

    describe("a stopped server", () => {
      it.effect("kill -STOP of the session's sshd mid-sftp: request interruptible and scope close bounded (< 5 s)", () =>
        Effect.gen(function*() {
          const marker = uniqueMarker("attack_stop_sftp")
          const connection = yield* connectTo("127.0.0.5")
          // A command on the same connection shows which sshd process serves it.
          yield* connection.exec(`sleep 30; echo ${marker}`)
          assert.isTrue(yield* waitForProcesses(marker, true))
          const sshd = sessionSshdOf(marker)
          const sftp = yield* connection.sftp
          assert.isTrue((yield* sftp.stat("/")).isDirectory())
          const started = Date.now()
          const exit = yield* Effect.exit(Effect.scoped(Effect.gen(function*() {
            const second = yield* connection.sftp
            signal(sshd, "SIGSTOP")
            yield* second.stat("/").pipe(Effect.timeout("1 second"))
          })))
          const took = Date.now() - started
          // The first session, still open, is asked too: it must not hang either.
          const started2 = Date.now()
          const exit2 = yield* Effect.exit(sftp.stat("/").pipe(Effect.timeout("1 second")))
          const took2 = Date.now() - started2
          signal(sshd, "SIGCONT")
          for (const p of remoteProcesses(marker)) signal(p.pid, "SIGKILL")
          assert.isTrue(Exit.isFailure(exit))
          assert.isTrue(Exit.isFailure(exit2))
          assert.isBelow(took, 5000, `took ${took} ms`)
          assert.isBelow(took2, 1500, `took ${took2} ms`)
        }).pipe(Effect.scoped))

      it.effect("kill -STOP of the session's sshd mid-command, then interrupt Operations.remote: returns within 10 s", () =>
        Effect.gen(function*() {
          const marker = uniqueMarker("attack_stop_cmd")
          const fiber = yield* Effect.forkChild(
            remote(`echo ready; sleep 60; echo ${marker}`).pipe(Settings.settings({ host: "127.0.0.6" }))
          )
          assert.isTrue(yield* waitForProcesses(marker, true))
          const sshd = sessionSshdOf(marker)
          signal(sshd, "SIGSTOP")
          const started = Date.now()
          yield* Fiber.interrupt(fiber)
          const took = Date.now() - started
          signal(sshd, "SIGCONT")
          yield* waitForProcesses(marker, false, 10)
          for (const p of remoteProcesses(marker)) signal(p.pid, "SIGKILL")
          // RELIABILITY.md: the kill is awaited 5 s at most, the channel's close 2 s.
          assert.isBelow(took, 10_000, `interrupting took ${took} ms`)
        }))
    })

    describe("a consumer that stops pulling", () => {
      it.effect("pulled once, never again, scope closed: the close is bounded and the slot comes back", () =>
        Effect.gen(function*() {
          const connection = yield* connectTo("127.0.0.7", { maxChannels: 1 })
          const started = Date.now()
          yield* Effect.scoped(Effect.gen(function*() {
            const handle = yield* connection.exec("yes")
            const pull = yield* Stream.toPull(handle.output)
            yield* pull
            yield* Effect.sleep("300 millis")
          }))
          const took = Date.now() - started
          const codes = yield* allSlotsFree(connection, 1)
          assert.deepStrictEqual(codes, [0])
          assert.isBelow(took, 3000)
          assert.isTrue(yield* waitForProcesses("yes", false, 5).pipe(Effect.as(true)))
        }).pipe(Effect.scoped))

      it.effect("stdin Sink fed 64 MiB while the remote does not read for 2 s: the Sink waits (backpressure)", () =>
        Effect.gen(function*() {
          const connection = yield* connectTo("127.0.0.7")
          const handle = yield* connection.exec("sleep 2; wc -c")
          const MiB = 1024 * 1024
          let taken = 0
          const input = Stream.fromIterable(Array.from({ length: 64 }, () => new Uint8Array(MiB).fill(1)))
            .pipe(
              Stream.tap(() => Effect.sync(() => void (taken += 1)))
            )
          const feeding = yield* Effect.forkChild(Stream.run(input, handle.stdin))
          yield* Effect.sleep("1500 millis")
          const takenWhileAsleep = taken
          yield* Fiber.join(feeding)
          const text = yield* Stream.runFold(
            handle.output,
            () => "",
            (t, c) => t + Buffer.from(c.data).toString()
          )
          assert.strictEqual(text.trim(), String(64 * MiB))
          // SSH's window (2 MiB) and the pipe/sshd buffers: a few MiB at most.
          assert.isBelow(takenWhileAsleep, 12, `${takenWhileAsleep} MiB taken while the remote slept`)
        }).pipe(Effect.scoped))
    })
  }
)

layer(Layer.mergeAll(Ssh.layer, base), { timeout: "120 seconds", excludeTestServices: true })(
  "AttackPort output",
  (it) => {
    it.effect("two fibers pulling one handle's output at once share it out, and both end", () =>
      Effect.gen(function*() {
        const connection = yield* connectTo("127.0.0.9")
        const handle = yield* connection.exec("sleep 0.3; seq 1 20000")
        const count = Stream.runFold(handle.output, () => 0, (n, c) => n + c.data.length)
        const both = yield* Effect.exit(
          Effect.all([count, count], { concurrency: 2 }).pipe(Effect.timeout("10 seconds"))
        )
        assert.isTrue(Exit.isSuccess(both), `two consumers: ${String(both).slice(0, 200)}`)
        if (Exit.isSuccess(both)) assert.strictEqual(both.value[0] + both.value[1], 108894)
      }).pipe(Effect.scoped))
  }
)
