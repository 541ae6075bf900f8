/**
 * Attacks on transfers over the Effect-native SFTP session (issue 10): uploads and downloads,
 * plain and with sudo, interrupted at every moment from 0 to 20 ms after their start. Afterwards
 * no temporary may be left, no remote process, and every channel slot must still be usable.
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import { afterAll, assert, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as fs from "node:fs"
import * as path from "node:path"
import { remote } from "../src/internal/remote/operations.ts"
import * as Ssh from "../src/Ssh.ts"
import * as Transfer from "../src/Transfer.ts"
import { readServerFromEnv, remoteProcesses } from "../tests-remote/server.ts"
import {
  dirPairs,
  leftovers,
  settingsLayer,
  stagingDirFor,
  stagingLeftovers,
  tempDirs,
  uid
} from "./support.ts"

const server = readServerFromEnv()
const owner = uid(server.user)
const { made, tempDir } = tempDirs()
const staging = stagingDirFor("tb-attack-staging-", owner)
made.push(staging)
const pair = dirPairs(tempDir, "tb-attack-xfer-", owner)
afterAll(() => {
  for (const dir of made) fs.rmSync(dir, { recursive: true, force: true })
})

const maxChannels = 3
const base = settingsLayer({
  user: server.user,
  port: server.port,
  connectAttempts: 1,
  quiet: true,
  maxChannels,
  remoteTempDir: staging,
  host: "127.0.0.10"
})

layer(Layer.mergeAll(Ssh.layer, base, NodeServices.layer), {
  timeout: "300 seconds",
  excludeTestServices: true
})(
  "AttackTransfer",
  (it) => {
    it.effect("4 MiB uploads and downloads, plain and sudo, interrupted 0..20 ms: no leftovers, all slots usable", () =>
      Effect.gen(function*() {
        const { local, remote: dir } = pair()
        const source = path.join(local, "big")
        fs.writeFileSync(source, Buffer.alloc(4 * 1024 * 1024, 7))
        fs.writeFileSync(path.join(dir, "remote-big"), Buffer.alloc(4 * 1024 * 1024, 9))
        fs.chownSync(path.join(dir, "remote-big"), owner, owner)
        for (let i = 0; i < 24; i++) {
          const sudo = server.isRoot && i % 4 >= 2
          const op = i % 2 === 0
            ? Transfer.upload(source, path.join(dir, `up-${i}`), { useSudo: sudo })
            : Transfer.download(path.join(dir, "remote-big"), path.join(local, `down-${i}`), {
              useSudo: sudo
            })
          yield* (op as Effect.Effect<unknown, unknown, Ssh.SshConnections>).pipe(
            Effect.timeout(`${i % 21} millis`),
            Effect.ignore
          )
        }
        // Whatever an interrupted transfer cleans up on the server is done on its own channels.
        yield* Effect.sleep("3 seconds")
        const codes = yield* Effect.all(
          Array.from(
            { length: maxChannels },
            () => remote("sleep 0.5; echo ok").pipe(Effect.map((r) => r.stdout))
          ),
          { concurrency: "unbounded" }
        ).pipe(Effect.timeout("20 seconds"))
        assert.deepStrictEqual(codes, Array(maxChannels).fill("ok\n"))
        // A transfer either landed whole or left nothing at its target.
        const partial = [
          ...fs.readdirSync(local).filter((n) => n.startsWith("down-")).map((n) => path.join(local, n)),
          ...fs.readdirSync(dir).filter((n) => n.startsWith("up-")).map((n) => path.join(dir, n))
        ].filter((f) => fs.statSync(f).size !== 4 * 1024 * 1024)
        assert.deepStrictEqual(partial, [])
        assert.deepStrictEqual(leftovers(dir), [])
        assert.deepStrictEqual(leftovers(local), [])
        assert.deepStrictEqual(stagingLeftovers(staging), [])
        assert.deepStrictEqual(remoteProcesses(/\.tb-/).map((p) => p.args), [])
      }))
  }
)
