/**
 * Memory stays bounded when data arrives faster than it is used: a channel whose consumer is
 * behind is paused, and the server's SSH window stops the remote command until it catches up.
 * Against the throwaway OpenSSH server, with real sudo and real files.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { remoteSudo } from "../src/internal/remote/operations.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import * as Transfer from "../src/Transfer.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import { settingsLayer } from "./support.ts"

const server = readServerFromEnv()

const base = settingsLayer({ host: `${server.user}@127.0.0.6:${server.port}` })

/** The highest resident set size of this process while `self` runs, over what it was before. */
const peakGrowth = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const before = process.memoryUsage().rss
    let peak = before
    const timer = yield* Effect.acquireRelease(
      Effect.sync(() => setInterval(() => void (peak = Math.max(peak, process.memoryUsage().rss)), 10)),
      (handle) => Effect.sync(() => clearInterval(handle))
    )
    const value = yield* self
    peak = Math.max(peak, process.memoryUsage().rss)
    void timer
    return { value, growth: peak - before }
  }).pipe(Effect.scoped)

const MiB = 1024 * 1024

layer(Layer.mergeAll(Ssh.layer, base), { timeout: "300 seconds", excludeTestServices: true })(
  "backpressure",
  (it) => {
    describe("a sudo download streams with backpressure", () => {
      it.effect("a 1 GiB sudo download stays under 100 MiB of RSS over the baseline", () =>
        Effect.gen(function*() {
          const dir = fs.mkdtempSync(path.join(tmpdir(), "tb-backpressure-"))
          const remoteFile = `/tmp/tb-backpressure-${process.pid}-${Date.now()}.bin`
          const local = path.join(dir, "big.bin")
          // Root's, readable by root alone: only a sudo download can read it.
          yield* remoteSudo(
            `truncate -s 1G ${remoteFile} && chmod 600 ${remoteFile} && printf end >>${remoteFile}`,
            {
              quiet: true
            }
          )
          const { growth } = yield* peakGrowth(
            Transfer.download(remoteFile, local, { useSudo: true, showProgress: false })
          ).pipe(
            Effect.ensuring(Effect.ignore(remoteSudo(`rm -f ${remoteFile}`, { quiet: true })))
          )
          const size = fs.statSync(local).size
          const tail = Buffer.alloc(3)
          const fd = fs.openSync(local, "r")
          fs.readSync(fd, tail, 0, 3, size - 3)
          fs.closeSync(fd)
          fs.rmSync(dir, { recursive: true, force: true })
          assert.strictEqual(size, 1024 * MiB + 3)
          assert.strictEqual(tail.toString(), "end")
          assert.isBelow(growth, 100 * MiB, `RSS grew by ${Math.round(growth / MiB)} MiB`)
        }))
    })

    describe("a channel whose consumer stops taking holds the command back", () => {
      it.effect("300 MB that nobody takes for 5 s stay on the server; all of it arrives once taken", () =>
        Effect.gen(function*() {
          const done = `/tmp/tb-backpressure-done-${process.pid}-${Date.now()}`
          const ssh = yield* Ssh.SshConnections
          const connection = yield* ssh.connect(yield* Settings.Settings)
          const channel = yield* connection.exec(`head -c 300000000 /dev/zero; touch ${done}`)
          yield* channel.endInput
          // Unconsumed, a channel without backpressure would take all 300 MB in 2 to 3 s here.
          yield* Effect.sleep("5 seconds")
          const finishedUnread = fs.existsSync(done)
          let bytes = 0
          yield* Stream.runForEach(
            channel.output,
            (chunk) => Effect.sync(() => void (bytes += chunk.data.length))
          )
          assert.strictEqual((yield* channel.exit).exitCode, 0)
          const finished = fs.existsSync(done)
          fs.rmSync(done, { force: true })
          assert.isFalse(finishedUnread, "the command wrote all its output while nobody read it")
          assert.strictEqual(bytes, 300000000)
          assert.isTrue(finished)
        }).pipe(Effect.scoped))
    })
  }
)
