/**
 * The short form of `bench/soak.ts`: commands and checked transfers over several hosts of the test
 * run's server for ten seconds, with channels queued per connection. Nothing may fail, the file
 * descriptors this process had before the connection layer was built must be all it has once the
 * layer closed, and memory must not run away. And a deadlock of transfers through sudo under load.
 */
import { afterAll, assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { soak } from "../bench/soak.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import * as Transfer from "../src/Transfer.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"

const server = readServerFromEnv()

const dir = fs.mkdtempSync(path.join(tmpdir(), "tbsoak-test-"))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

describe("soak", () => {
  it.live(
    "thousands of commands and transfers over 6 hosts: no failure, no descriptor left open",
    () =>
      Effect.gen(function*() {
        const report = yield* soak({
          server,
          hosts: server.hosts.slice(0, 6),
          seconds: 10,
          concurrency: 16,
          maxChannels: 3,
          sampleSeconds: 2
        })
        assert.deepStrictEqual(report.failures, [], "every operation succeeds")
        assert.isAbove(report.commands, 300, "commands ran")
        assert.isAbove(report.transfers, 30, "transfers ran")
        // Every connection (and its socket) is closed with the layer.
        assert.isAtMost(report.fdsAfterClose, report.fdsBeforeLayer, "descriptors after the layer closed")
        // While the load runs, descriptors stay near what the warm-up opened (one socket per
        // host): a few come and go (local files of downloads, the odd reconnect), none pile up.
        assert.isAtMost(
          Math.max(...report.samples.map((s) => s.fds)),
          report.start.fds + 8,
          "descriptors during the run"
        )
        // The heap holds nothing per operation (a few MiB of garbage between collections at most),
        // and the process as a whole stays bounded.
        assert.isBelow(report.end.heapUsed - report.start.heapUsed, 32 << 20, "heap growth")
        assert.isBelow(report.end.rss - report.start.rss, 128 << 20, "RSS growth")
      }),
    { timeout: 90_000 }
  )

  // A transfer through sudo holds an SFTP session (one of `maxChannels` slots) while it runs its
  // command (another slot). As many of them at once as there are slots each take a session and
  // then wait for a command slot that none will give back: a deadlock, found by the hostile-input
  // tests with 8 transfers at once. Downloads through sudo and uploads with `owner` do the same.
  it.live(
    "sudo uploads, as many at once as a connection has channels, all finish",
    () =>
      Effect.gen(function*() {
        const maxChannels = 2
        const uploads = Effect.forEach(
          Array.from({ length: maxChannels * 2 }, (_, i) => i),
          (i) => Transfer.upload({ content: `file ${i}` }, path.join(dir, `sudo-${i}`), { useSudo: true }),
          { concurrency: maxChannels }
        )
        const done = yield* uploads.pipe(
          Effect.timeoutOption("15 seconds"),
          Effect.provide(Layer.mergeAll(
            Ssh.layer,
            Settings.layer({
              host: `${server.user}@127.0.0.1:${server.port}`,
              keyFile: server.keyPath,
              knownHostsFile: server.knownHostsPath,
              hostKeyPolicy: "strict",
              sshConfigFile: false,
              useAgent: false,
              quiet: true,
              maxChannels
            })
          ))
        )
        assert.isTrue(
          Option.isSome(done),
          `${maxChannels * 2} sudo uploads, ${maxChannels} at once, did not finish`
        )
        for (let i = 0; i < maxChannels * 2; i++) {
          assert.strictEqual(fs.readFileSync(path.join(dir, `sudo-${i}`), "utf8"), `file ${i}`)
        }
      }),
    { timeout: 30_000 }
  )
})
