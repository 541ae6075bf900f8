/**
 * The SSH port itself, through `SshConnections` and `Connection.exec` directly, against the
 * throwaway OpenSSH server: output pulled with backpressure, input through a Sink, the exit of a
 * channel whose session dies, and an interrupted open that leaves no channel behind.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import * as fs from "node:fs"
import { ConnectionError } from "../src/Errors.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import { readServerFromEnv, remoteProcesses } from "../tests-remote/server.ts"
import { failureOf, settingsLayer, signal, uniqueMarker } from "./support.ts"

const server = readServerFromEnv()

const base = settingsLayer({ user: server.user, port: server.port, connectAttempts: 1, quiet: true })

const MiB = 1024 * 1024

/** The connection of the current settings, on `host`. */
const connectTo = (host: string, patch: Settings.Patch = {}) =>
  Effect.gen(function*() {
    const ssh = yield* Ssh.SshConnections
    return yield* ssh.connect(Settings.apply(yield* Settings.Settings, { host, ...patch }))
  })

/** The number in `file`, 0 while it does not exist or is being written. */
const counter = (file: string): number => {
  const text = fs.existsSync(file) ? fs.readFileSync(file, "utf8").trim() : ""
  return text === "" ? 0 : Number(text)
}

layer(Layer.mergeAll(Ssh.layer, base), { timeout: "300 seconds", excludeTestServices: true })(
  "SshPort",
  (it) => {
    describe("output", () => {
      it.effect("64 MiB read slowly: the command waits for the reader, and memory stays bounded", () =>
        Effect.gen(function*() {
          const progress = `/tmp/tb-sshport-progress-${process.pid}-${Date.now()}`
          const connection = yield* connectTo("127.0.0.13")
          // 1,024 blocks of 64 KiB, each counted in a file (replaced whole) once written to the channel.
          const handle = yield* connection.exec(
            `i=0; while [ $i -lt 1024 ]; do head -c 65536 /dev/zero; i=$((i+1)); echo $i >${progress}.new; mv ${progress}.new ${progress}; done`
          )
          yield* handle.endInput
          const before = process.memoryUsage()
          let peakRss = before.rss
          let peakBuffers = before.arrayBuffers
          const timer = yield* Effect.acquireRelease(
            Effect.sync(() =>
              setInterval(() => {
                const now = process.memoryUsage()
                peakRss = Math.max(peakRss, now.rss)
                peakBuffers = Math.max(peakBuffers, now.arrayBuffers)
              }, 10)
            ),
            (handle) => Effect.sync(() => clearInterval(handle))
          )
          // Nobody pulls: once the channel's buffers are full, the command blocks on its output.
          yield* Effect.sleep("2 seconds")
          const stalled = counter(progress)
          yield* Effect.sleep("1 second")
          const stillStalled = counter(progress)
          // While nothing is pulled, nothing is consumed either: what memory grew by is what is held
          // (once reading starts, chunks already read are garbage that the collector takes in its
          // own time, so memory then says little about what the channel holds).
          yield* Effect.sync(() => clearInterval(timer))
          // Then read, slowly: a pause after every pull.
          let bytes = 0
          let pulls = 0
          yield* Stream.runForEachArray(handle.output, (chunks) =>
            Effect.andThen(
              Effect.sync(() => {
                pulls++
                for (const chunk of chunks) {
                  assert.strictEqual(chunk._tag, "Stdout")
                  bytes += chunk.data.length
                }
              }),
              Effect.sleep("5 millis")
            ))
          const status = yield* handle.exit
          fs.rmSync(progress, { force: true })
          assert.deepStrictEqual(status, { exitCode: 0, signal: null })
          assert.strictEqual(bytes, 64 * MiB)
          // The channel holds about 1 MiB for us and ssh2 about 4 more; pipes and sshd a few more.
          assert.isAbove(stalled, 0, "the command started")
          assert.isBelow(stalled * 64 * 1024, 16 * MiB, `${stalled} blocks written while nobody read`)
          assert.strictEqual(stillStalled, stalled, "the command kept writing while nobody read")
          assert.isAbove(pulls, 8)
          assert.isBelow(
            peakBuffers - before.arrayBuffers,
            32 * MiB,
            `buffers grew by ${peakBuffers - before.arrayBuffers}`
          )
          assert.isBelow(peakRss - before.rss, 48 * MiB, `RSS grew by ${peakRss - before.rss}`)
        }).pipe(Effect.scoped))
    })

    describe("input", () => {
      it.effect("the stdin Sink streams 8 MiB in, ends the input, and the exit arrives", () =>
        Effect.gen(function*() {
          const connection = yield* connectTo("127.0.0.13")
          const handle = yield* connection.exec("wc -c; sha256sum </dev/null >/dev/null")
          const block = new Uint8Array(256 * 1024).fill(97)
          const input = Stream.concat(
            Stream.fromIterable(Array.from({ length: 32 }, () => block)),
            Stream.make("end")
          )
          // More than SSH's window: the writes wait for the server to take them.
          yield* Stream.run(input, handle.stdin)
          const output = yield* Stream.runFold(
            handle.output,
            () => "",
            (text, chunk) => text + Buffer.from(chunk.data).toString()
          )
          const status = yield* handle.exit
          assert.strictEqual(output.trim(), String(8 * MiB + 3))
          assert.deepStrictEqual(status, { exitCode: 0, signal: null })
        }).pipe(Effect.scoped))

      it.effect("write and endInput feed a command piece by piece", () =>
        Effect.gen(function*() {
          const connection = yield* connectTo("127.0.0.13")
          const handle = yield* connection.exec("read a; echo got:$a; read b; echo got:$b; cat")
          yield* handle.write("one\n")
          yield* handle.write(new TextEncoder().encode("two\nrest"))
          yield* handle.endInput
          const output = yield* Stream.runFold(handle.output, () =>
            "", (text, chunk) =>
            text + Buffer.from(chunk.data).toString())
          assert.strictEqual(output, "got:one\ngot:two\nrest")
          assert.strictEqual((yield* handle.exit).exitCode, 0)
        }).pipe(Effect.scoped))
    })

    describe("exit", () => {
      it.effect("fails with ConnectionError when the session is killed on the server", () =>
        Effect.gen(function*() {
          const marker = uniqueMarker("sshport_kill")
          const connection = yield* connectTo("127.0.0.14")
          const handle = yield* connection.exec(`echo started; sleep 60; echo ${marker}`)
          const pull = yield* Stream.toPull(handle.output)
          const first = yield* pull
          assert.strictEqual(Buffer.from(first[0].data).toString(), "started\n")
          const shells = remoteProcesses(marker)
          // The shell itself: a child it forked for `sleep` carries the same command line until
          // it execs, so only the one whose parent is not another of them counts.
          const roots = shells.filter((shell) => !shells.some((other) => other.pid === shell.ppid))
          assert.strictEqual(roots.length, 1)
          // The sshd process serving the session (and its connection) dies.
          signal(roots[0]!.ppid, "SIGKILL")
          yield* Stream.runDrain(Stream.fromPull(Effect.succeed(pull)))
          const error = failureOf(yield* Effect.exit(handle.exit))
          for (const shell of shells) {
            signal(shell.pid, "SIGKILL")
          }
          assert.instanceOf(error, ConnectionError)
          assert.strictEqual(error.reason, "disconnected")
        }).pipe(Effect.scoped))
    })

    describe("opening", () => {
      it.effect("an exec interrupted while its channel opens leaves no channel: every slot is free again", () =>
        Effect.gen(function*() {
          const maxChannels = 3
          const connection = yield* connectTo("127.0.0.15", { maxChannels })
          for (let i = 0; i < 30; i++) {
            const fiber = yield* Effect.forkChild(
              Effect.scoped(Effect.andThen(connection.exec("true"), Effect.never))
            )
            // Interrupted before the server answers, or just after: nothing may be kept either way.
            if (i % 3 === 1) yield* Effect.yieldNow
            if (i % 3 === 2) yield* Effect.sleep("1 millis")
            yield* Fiber.interrupt(fiber)
          }
          assert.isTrue(connection.isOpen())
          // maxChannels commands that each finish only once all of them have started: a slot kept by
          // an interrupted open would leave one of them waiting for ever.
          const opened = yield* Deferred.make<void>()
          let count = 0
          const held = Effect.scoped(Effect.gen(function*() {
            const handle = yield* connection.exec("cat")
            if (++count === maxChannels) yield* Deferred.succeed(opened, undefined)
            yield* Deferred.await(opened)
            yield* handle.endInput
            yield* Stream.runDrain(handle.output)
            return (yield* handle.exit).exitCode
          }))
          const codes = yield* Effect.all(Array.from({ length: maxChannels }, () => held), {
            concurrency: "unbounded"
          }).pipe(Effect.timeout("20 seconds"))
          assert.deepStrictEqual(codes, [0, 0, 0])
        }).pipe(Effect.scoped))
    })
  }
)
