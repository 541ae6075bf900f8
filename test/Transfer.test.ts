/**
 * Transfers against the throwaway OpenSSH server of `tests-remote/` (started once for the run by
 * test/globalSetup.ts). The server is this machine and the tests run as root, so remote files
 * are checked directly with node:fs.
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import { afterAll, assert, describe, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import { createHash, randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { ConnectionError, TransferError } from "../src/Errors.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import * as Transfer from "../src/Transfer.ts"
import { FaultProxy } from "../tests-remote/faultProxy.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import {
  dirPairs,
  failureOf,
  leftovers,
  settingsLayer,
  stagingDirFor,
  stagingLeftovers,
  tempDirs,
  uid
} from "./support.ts"

const server = readServerFromEnv()
const host = `${server.user}@127.0.0.1:${server.port}`
const userUid = uid(server.user)

// Sudo and tree uploads stage in a directory of this file's own, so that the leftover checks
// see only this file's transfers, not those of test files running alongside.
const stagingDir = stagingDirFor("tbxfer-staging-", userUid)

const base = settingsLayer({
  host,
  remoteTempDir: stagingDir,
  quiet: true,
  connectRetryDelay: "200 millis"
})

const sha = (data: Uint8Array | string) => createHash("sha256").update(data).digest("hex")

const { made, tempDir } = tempDirs()
afterAll(() => {
  for (const dir of [...made, stagingDir]) fs.rmSync(dir, { recursive: true, force: true })
})

/** A directory the test user owns (the remote side) and one for the local side. */
const makeDirs = dirPairs(tempDir, "tbxfer-", userUid)

/** Incompressible enough and fast to make: a random MiB repeated with a counter mixed in. */
const patterned = (size: number): Buffer => {
  const block = randomBytes(1 << 20)
  const out = Buffer.allocUnsafe(size)
  for (let at = 0, i = 0; at < size; at += block.length, i++) {
    block.writeUInt32LE(i, 0)
    block.copy(out, at, 0, Math.min(block.length, size - at))
  }
  return out
}

/** A proxy in front of sshd that cuts every connection once `limit` bytes went either way. */
const cuttingProxy = (limit: number) =>
  Effect.acquireRelease(
    Effect.promise(() => FaultProxy.start({ port: server.port })),
    (proxy) => Effect.promise(() => proxy.close())
  ).pipe(Effect.map((proxy) => proxy.cutAfter(limit, "total")))

const odd = [
  "with space",
  "it's \"quoted\"",
  "$(touch INJECTED)`id`",
  "new\nline",
  "ünïcødé ✓ 日本"
]

layer(Layer.mergeAll(Ssh.layer, base, NodeServices.layer), {
  timeout: "300 seconds",
  excludeTestServices: true
})(
  "Transfer",
  (it) => {
    describe("round trips", () => {
      it.effect("text to a new nested path and back into memory", () =>
        Effect.gen(function*() {
          const { remote } = makeDirs()
          const target = path.join(remote, "a", "b", "motd.txt")
          const written = yield* Transfer.upload({ content: "hello, wörld\n" }, target)
          assert.strictEqual(written, target)
          assert.strictEqual(fs.readFileSync(target, "utf8"), "hello, wörld\n")
          assert.strictEqual(fs.statSync(target).uid, userUid)
          assert.strictEqual(fs.statSync(target).mode & 0o777, 0o644)
          const back = yield* Transfer.download(target)
          assert.strictEqual(new TextDecoder().decode(back), "hello, wörld\n")
          assert.deepStrictEqual(leftovers(path.dirname(target)), [])
        }))

      it.effect("bytes, empty content, and a local file with its mode, identical by sha256", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          const bytes = randomBytes(3 * 1024 * 1024 + 17)
          yield* Transfer.upload(bytes, path.join(remote, "bytes.bin"))
          assert.strictEqual(sha(fs.readFileSync(path.join(remote, "bytes.bin"))), sha(bytes))
          assert.strictEqual(sha(yield* Transfer.download(path.join(remote, "bytes.bin"))), sha(bytes))

          yield* Transfer.upload(new Uint8Array(0), path.join(remote, "empty"))
          assert.strictEqual(fs.statSync(path.join(remote, "empty")).size, 0)
          assert.strictEqual((yield* Transfer.download(path.join(remote, "empty"))).length, 0)

          const script = path.join(local, "run.sh")
          fs.writeFileSync(script, randomBytes(200_000))
          fs.chmodSync(script, 0o750)
          yield* Transfer.upload(script, remote + "/")
          const up = path.join(remote, "run.sh")
          assert.strictEqual(sha(fs.readFileSync(up)), sha(fs.readFileSync(script)))
          assert.strictEqual(fs.statSync(up).mode & 0o777, 0o750)

          const saved = yield* Transfer.download(up, path.join(local, "copies") + "/")
          assert.strictEqual(saved, path.join(local, "copies", "run.sh"))
          assert.strictEqual(sha(fs.readFileSync(saved)), sha(fs.readFileSync(script)))
          assert.deepStrictEqual(leftovers(remote), [])
          assert.deepStrictEqual(leftovers(path.join(local, "copies")), [])
        }))

      it.effect("paths with spaces, quotes, $(), newlines and unicode, with and without sudo", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          for (const name of odd) {
            const dir = path.join(remote, `dir ${name}`)
            const target = path.join(dir, name)
            yield* Transfer.upload({ content: `content of ${name}` }, target)
            assert.strictEqual(fs.readFileSync(target, "utf8"), `content of ${name}`)
            const back = yield* Transfer.download(target, path.join(local, name))
            assert.strictEqual(fs.readFileSync(back, "utf8"), `content of ${name}`)

            const rootTarget = path.join(dir, `root ${name}`)
            yield* Transfer.upload({ content: `root ${name}` }, rootTarget, { useSudo: true })
            assert.strictEqual(fs.readFileSync(rootTarget, "utf8"), `root ${name}`)
            assert.strictEqual(fs.statSync(rootTarget).uid, 0)
            const sudoBack = yield* Transfer.download(rootTarget, undefined, { useSudo: true })
            assert.strictEqual(new TextDecoder().decode(sudoBack), `root ${name}`)
          }
          assert.isFalse(fs.existsSync(path.join(remote, "INJECTED")))
          assert.isFalse(fs.existsSync("INJECTED"))
          assert.deepStrictEqual(stagingLeftovers(stagingDir), [])
        }))
    })

    describe("sudo", () => {
      it.effect("uploads to and downloads from a root-only directory; refuses without sudo, naming the path", () =>
        Effect.gen(function*() {
          const secret = tempDir("tbxfer-root-")
          fs.chmodSync(secret, 0o700)
          const target = path.join(secret, "etc", "app.env")

          const refused = failureOf(yield* Effect.exit(Transfer.upload({ content: "X=1\n" }, target)))
          assert.instanceOf(refused, TransferError)
          assert.strictEqual(refused.reason, "permission")
          assert.include(refused.message, secret)
          assert.include(refused.message, "useSudo")

          yield* Transfer.upload({ content: "X=1\n" }, target, {
            useSudo: true,
            mode: 0o600,
            owner: "root:root"
          })
          assert.strictEqual(fs.readFileSync(target, "utf8"), "X=1\n")
          const info = fs.statSync(target)
          assert.strictEqual(info.uid, 0)
          assert.strictEqual(info.mode & 0o777, 0o600)
          assert.deepStrictEqual(leftovers(path.dirname(target)), [])
          assert.deepStrictEqual(stagingLeftovers(stagingDir), [])

          // Replacing keeps the mode of the file replaced.
          yield* Transfer.upload({ content: "X=2\n" }, target, { useSudo: true })
          assert.strictEqual(fs.statSync(target).mode & 0o777, 0o600)

          const notAllowed = failureOf(yield* Effect.exit(Transfer.download(target)))
          assert.instanceOf(notAllowed, TransferError)
          assert.strictEqual(notAllowed.reason, "permission")
          assert.include(notAllowed.message, target)

          const bytes = yield* Transfer.download(target, undefined, { useSudo: true })
          assert.strictEqual(new TextDecoder().decode(bytes), "X=2\n")
          const { local } = makeDirs()
          const saved = yield* Transfer.download(target, path.join(local, "app.env"), { useSudo: true })
          assert.strictEqual(fs.readFileSync(saved, "utf8"), "X=2\n")
          assert.strictEqual(fs.statSync(saved).mode & 0o777, 0o600 & 0o755)
          // Nothing readable was left on the server by the download.
          assert.deepStrictEqual(stagingLeftovers(stagingDir), [])
          fs.rmSync(secret, { recursive: true })
        }))

      it.effect("uploads as another user with sudoUser", () =>
        Effect.gen(function*() {
          if (server.otherUser === undefined) return
          const dir = tempDir("tbxfer-other-")
          fs.chownSync(dir, uid(server.otherUser), uid(server.otherUser))
          fs.chmodSync(dir, 0o700)
          const target = path.join(dir, "note")
          yield* Transfer.upload({ content: "mine" }, target, { useSudo: true, sudoUser: server.otherUser })
          assert.strictEqual(fs.statSync(target).uid, uid(server.otherUser))
          const back = yield* Transfer.download(target, undefined, {
            useSudo: true,
            sudoUser: server.otherUser
          })
          assert.strictEqual(new TextDecoder().decode(back), "mine")
          fs.rmSync(dir, { recursive: true })
        }))
    })

    describe("overwrite and targets", () => {
      it.effect("overwrite false refuses, overwrite true replaces, both ways", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          const target = path.join(remote, "conf")
          yield* Transfer.upload({ content: "one" }, target)
          const refused = failureOf(
            yield* Effect.exit(Transfer.upload({ content: "two" }, target, { overwrite: false }))
          )
          assert.instanceOf(refused, TransferError)
          assert.strictEqual(refused.reason, "exists")
          assert.include(refused.message, target)
          assert.strictEqual(fs.readFileSync(target, "utf8"), "one")
          const sudoRefused = failureOf(
            yield* Effect.exit(
              Transfer.upload({ content: "two" }, target, { overwrite: false, useSudo: true })
            )
          )
          assert.strictEqual((sudoRefused as TransferError).reason, "exists")
          // The setting works as well as the option.
          const bySetting = failureOf(
            yield* Effect.exit(
              Transfer.upload({ content: "two" }, target).pipe(Settings.settings({ overwrite: false }))
            )
          )
          assert.strictEqual((bySetting as TransferError).reason, "exists")
          yield* Transfer.upload({ content: "two" }, target, { overwrite: true })
          assert.strictEqual(fs.readFileSync(target, "utf8"), "two")

          const localFile = path.join(local, "conf")
          fs.writeFileSync(localFile, "local")
          const localRefused = failureOf(
            yield* Effect.exit(Transfer.download(target, localFile, { overwrite: false }))
          )
          assert.strictEqual((localRefused as TransferError).reason, "exists")
          assert.strictEqual((localRefused as TransferError).side, "local")
          assert.strictEqual(fs.readFileSync(localFile, "utf8"), "local")
          yield* Transfer.download(target, localFile)
          assert.strictEqual(fs.readFileSync(localFile, "utf8"), "two")
        }))

      it.effect("a relative local path is taken from lcd", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          fs.writeFileSync(path.join(remote, "data.txt"), "remote data")
          const saved = yield* Transfer.download(path.join(remote, "data.txt"), "sub/out.txt").pipe(
            Settings.lcd(local)
          )
          assert.strictEqual(saved, path.join(local, "sub", "out.txt"))
          assert.strictEqual(fs.readFileSync(saved, "utf8"), "remote data")
          fs.writeFileSync(path.join(local, "up.txt"), "up")
          yield* Transfer.upload("up.txt", path.join(remote, "up.txt")).pipe(Settings.lcd(local))
          assert.strictEqual(fs.readFileSync(path.join(remote, "up.txt"), "utf8"), "up")
        }))

      it.effect("a remote directory given as a file target is refused clearly", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          fs.mkdirSync(path.join(remote, "dir"))
          const intoMemory = failureOf(yield* Effect.exit(Transfer.download(path.join(remote, "dir"))))
          assert.instanceOf(intoMemory, TransferError)
          assert.strictEqual(intoMemory.reason, "is-directory")
          assert.include(intoMemory.message, path.join(remote, "dir"))
          assert.include(intoMemory.message, "directory")
          fs.writeFileSync(path.join(local, "file"), "x")
          const overFile = failureOf(
            yield* Effect.exit(Transfer.download(path.join(remote, "dir"), path.join(local, "file")))
          )
          assert.strictEqual((overFile as TransferError).reason, "is-directory")
          assert.strictEqual(fs.readFileSync(path.join(local, "file"), "utf8"), "x")
          const content = failureOf(
            yield* Effect.exit(Transfer.upload({ content: "x" }, path.join(remote, "dir")))
          )
          assert.strictEqual((content as TransferError).reason, "is-directory")
          const missing = failureOf(yield* Effect.exit(Transfer.download(path.join(remote, "nothing"))))
          assert.strictEqual((missing as TransferError).reason, "not-found")
        }))
    })

    describe("directories", () => {
      it.effect("a tree goes up and comes back with its modes, links and odd names", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          const tree = path.join(local, "site")
          fs.mkdirSync(path.join(tree, "bin"), { recursive: true })
          fs.mkdirSync(path.join(tree, "private"), { mode: 0o700 })
          fs.chmodSync(path.join(tree, "private"), 0o700)
          fs.writeFileSync(path.join(tree, "bin", "start"), "#!/bin/sh\necho hi\n")
          fs.chmodSync(path.join(tree, "bin", "start"), 0o755)
          fs.writeFileSync(path.join(tree, "private", "key"), randomBytes(5000))
          fs.chmodSync(path.join(tree, "private", "key"), 0o600)
          const long = "l".repeat(120)
          fs.mkdirSync(path.join(tree, long))
          fs.writeFileSync(path.join(tree, long, "x".repeat(110)), "deep")
          for (const name of odd) fs.writeFileSync(path.join(tree, name), name)
          fs.symlinkSync("bin/start", path.join(tree, "link"))
          fs.writeFileSync(path.join(tree, "big"), randomBytes(600_000))

          const written = yield* Transfer.upload(tree, path.join(remote, "www", "site"))
          const up = path.join(remote, "www", "site")
          assert.strictEqual(written, up)
          const compare = (a: string, b: string) => {
            for (const name of fs.readdirSync(a)) {
              const pa = path.join(a, name)
              const pb = path.join(b, name)
              const sa = fs.lstatSync(pa)
              const sb = fs.lstatSync(pb)
              assert.strictEqual(sb.mode & 0o7777, sa.mode & 0o7777, `mode of ${pb}`)
              if (sa.isSymbolicLink()) assert.strictEqual(fs.readlinkSync(pb), fs.readlinkSync(pa))
              else if (sa.isDirectory()) compare(pa, pb)
              else assert.strictEqual(sha(fs.readFileSync(pb)), sha(fs.readFileSync(pa)), pb)
            }
            assert.strictEqual(fs.readdirSync(b).length, fs.readdirSync(a).length)
          }
          compare(tree, up)
          assert.strictEqual(fs.statSync(up).uid, userUid)
          assert.deepStrictEqual(leftovers(path.join(remote, "www")), [])

          // Uploading again replaces the tree (a file removed locally disappears remotely).
          fs.rmSync(path.join(tree, "big"))
          yield* Transfer.upload(tree, up + "-2")
          yield* Transfer.upload(tree, up + "-2", { overwrite: true })
          assert.isTrue(fs.existsSync(path.join(up + "-2", "site")))
          // An existing directory receives the tree under its name, which must not exist without overwrite.
          const refused = failureOf(
            yield* Effect.exit(Transfer.upload(tree, up + "-2", { overwrite: false }))
          )
          assert.strictEqual((refused as TransferError).reason, "exists")

          const back = yield* Transfer.download(up, path.join(local, "back"))
          assert.strictEqual(back, path.join(local, "back"))
          fs.writeFileSync(path.join(up, "big"), fs.readFileSync(path.join(back, "big")))
          fs.rmSync(path.join(back, "big"))
          fs.rmSync(path.join(up, "big"))
          compare(tree, back)
          assert.deepStrictEqual(leftovers(local), [])
        }))

      it.effect("a tree to and from a root-only directory with sudo", () =>
        Effect.gen(function*() {
          const { local } = makeDirs()
          const secret = tempDir("tbxfer-root-")
          fs.chmodSync(secret, 0o700)
          const tree = path.join(local, "conf.d")
          fs.mkdirSync(tree)
          fs.writeFileSync(path.join(tree, "a.conf"), "a")
          fs.chmodSync(path.join(tree, "a.conf"), 0o640)
          yield* Transfer.upload(tree, path.join(secret, "conf.d"), { useSudo: true })
          assert.strictEqual(fs.readFileSync(path.join(secret, "conf.d", "a.conf"), "utf8"), "a")
          assert.strictEqual(fs.statSync(path.join(secret, "conf.d", "a.conf")).uid, 0)
          assert.strictEqual(fs.statSync(path.join(secret, "conf.d", "a.conf")).mode & 0o777, 0o640)
          const back = yield* Transfer.download(path.join(secret, "conf.d"), path.join(local, "back"), {
            useSudo: true
          })
          assert.strictEqual(fs.readFileSync(path.join(back, "a.conf"), "utf8"), "a")
          assert.deepStrictEqual(stagingLeftovers(stagingDir), [])
          assert.deepStrictEqual(leftovers(secret), [])
          fs.rmSync(secret, { recursive: true })
        }))
    })

    describe("failures midway", () => {
      const bigFile = (dir: string, size: number) => {
        const file = path.join(dir, "big.bin")
        fs.writeFileSync(file, patterned(size))
        return file
      }

      it.effect("a connection cut halfway leaves both targets unchanged and no temporary files", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          const source = bigFile(local, 24 << 20)
          const target = path.join(remote, "big.bin")
          fs.writeFileSync(target, "old")
          const proxy = yield* cuttingProxy(8 << 20)
          const viaProxy = {
            host: `${server.user}@127.0.0.1:${proxy.port}`,
            knownHostsFile: server.knownHostsPath
          }
          // The proxy's port is not in known_hosts under its own name: accept it for this test.
          const cutUp = failureOf(
            yield* Effect.exit(
              Transfer.upload(source, target).pipe(
                Settings.settings({
                  ...viaProxy,
                  hostKeyPolicy: "accept-new",
                  knownHostsFile: path.join(local, "kh")
                })
              )
            )
          )
          assert.isTrue(cutUp instanceof ConnectionError || cutUp instanceof TransferError, String(cutUp))
          assert.strictEqual(fs.readFileSync(target, "utf8"), "old")
          // The cleanup runs on a fresh connection (through the proxy, which lets new ones through).
          assert.deepStrictEqual(leftovers(remote), [])

          fs.writeFileSync(target, fs.readFileSync(source))
          const localTarget = path.join(local, "down.bin")
          fs.writeFileSync(localTarget, "old local")
          const cutDown = failureOf(
            yield* Effect.exit(
              Transfer.download(target, localTarget).pipe(
                Settings.settings({
                  ...viaProxy,
                  hostKeyPolicy: "accept-new",
                  knownHostsFile: path.join(local, "kh")
                })
              )
            )
          )
          assert.isTrue(
            cutDown instanceof ConnectionError || cutDown instanceof TransferError,
            String(cutDown)
          )
          assert.strictEqual(fs.readFileSync(localTarget, "utf8"), "old local")
          assert.deepStrictEqual(leftovers(local), [])
        }))

      it.effect("interruption mid-transfer leaves the target unchanged and no temporary file", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          const source = bigFile(local, 256 << 20)
          const target = path.join(remote, "big.bin")
          fs.writeFileSync(target, "old")
          let seen = 0
          const fiber = yield* Effect.forkChild(
            Transfer.upload(source, target, { onProgress: (p) => Effect.sync(() => void (seen = p.bytes)) })
          )
          while (seen === 0) yield* Effect.sleep("10 millis")
          yield* Fiber.interrupt(fiber)
          assert.isBelow(seen, 256 << 20)
          assert.strictEqual(fs.readFileSync(target, "utf8"), "old")
          // The temporary file is removed by the finalizer before the interruption completes.
          assert.deepStrictEqual(leftovers(remote), [])

          fs.writeFileSync(target, fs.readFileSync(source))
          const localTarget = path.join(local, "down.bin")
          let got = 0
          const down = yield* Effect.forkChild(
            Transfer.download(target, localTarget, {
              onProgress: (p) => Effect.sync(() => void (got = p.bytes))
            })
          )
          while (got === 0) yield* Effect.sleep("10 millis")
          yield* Fiber.interrupt(down)
          assert.isFalse(fs.existsSync(localTarget))
          assert.deepStrictEqual(leftovers(local), [])
        }))
    })

    describe("progress", () => {
      it.effect("reports increasing bytes ending at the file size, by callback and as a stream", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          const size = 200 << 20
          const source = path.join(local, "p.bin")
          fs.writeFileSync(source, patterned(size))
          const reports: Array<Transfer.Progress> = []
          yield* Transfer.upload(source, path.join(remote, "p.bin"), {
            onProgress: (p) => Effect.sync(() => void reports.push(p))
          })
          assert.isAtLeast(reports.length, 2)
          for (let i = 1; i < reports.length; i++) assert.isAtLeast(reports[i]!.bytes, reports[i - 1]!.bytes)
          const last = reports.at(-1)!
          assert.isTrue(last.done)
          assert.strictEqual(last.bytes, size)
          assert.strictEqual(last.total, size)
          assert.isAbove(last.bytesPerSecond, 0)
          assert.isFalse(reports.slice(0, -1).some((p) => p.done))

          const streamed = yield* Stream.runCollect(
            Transfer.progressStream((onProgress) =>
              Transfer.download(path.join(remote, "p.bin"), undefined, { onProgress })
            )
          )
          const final = Array.from(streamed).at(-1)!
          assert.isTrue(final.done)
          assert.strictEqual(final.bytes, size)
        }))
    })

    describe("rsync", () => {
      it.effect("both ways, creating the target directory, and a failure with rsync's explanation", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          const tree = path.join(local, "src tree")
          fs.mkdirSync(path.join(tree, "sub"), { recursive: true })
          fs.writeFileSync(path.join(tree, "sub", "it's $(x).txt"), "rsynced")
          fs.chmodSync(path.join(tree, "sub", "it's $(x).txt"), 0o640)
          const target = path.join(remote, "deep dir", "dest") + "/"
          yield* Transfer.rsyncUpload(tree + "/", target)
          const up = path.join(target, "sub", "it's $(x).txt")
          assert.strictEqual(fs.readFileSync(up, "utf8"), "rsynced")
          assert.strictEqual(fs.statSync(up).mode & 0o777, 0o640)

          const back = path.join(local, "back here") + "/"
          yield* Transfer.rsyncDownload(target, back)
          assert.strictEqual(fs.readFileSync(path.join(back, "sub", "it's $(x).txt"), "utf8"), "rsynced")

          const failed = failureOf(
            yield* Effect.exit(Transfer.rsyncDownload(path.join(remote, "missing") + "/", back))
          )
          assert.instanceOf(failed, TransferError)
          assert.strictEqual(failed.reason, "rsync")
          assert.include(failed.message, "23")
          assert.include(failed.message, "partial transfer due to error")
          assert.include(failed.message, "missing")

          const noServer = failureOf(
            yield* Effect.exit(
              Transfer.rsyncUpload(tree + "/", target, { host: `${server.user}@127.0.0.1:1` })
            )
          )
          assert.strictEqual((noServer as TransferError).reason, "rsync")
          // ssh could not connect: rsync reports 255, or 12 when it ended before its ssh did.
          assert.match((noServer as TransferError).message, /rsync exited with (255|12) \(ssh failed/)
        }))

      // The remote rsync reads `*`, `?` and `[` in the paths it is given as patterns, even with
      // `-s`: a destination must never land in another directory that the pattern matches.
      it.effect("a destination holding a pattern lands in exactly that directory, or is refused", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          const tree = path.join(local, "tree")
          fs.mkdirSync(tree)
          fs.writeFileSync(path.join(tree, "f"), "exact")
          const decoy = path.join(remote, "rel*-old")
          fs.mkdirSync(decoy)
          fs.chownSync(decoy, fs.statSync(remote).uid, fs.statSync(remote).gid)
          yield* Transfer.rsyncUpload(tree + "/", path.join(remote, "rel*") + "/")
          assert.strictEqual(fs.readFileSync(path.join(remote, "rel*", "f"), "utf8"), "exact")
          yield* Transfer.rsyncUpload(path.join(tree, "f"), path.join(remote, "rel*", "g"))
          assert.strictEqual(fs.readFileSync(path.join(remote, "rel*", "g"), "utf8"), "exact")
          assert.deepStrictEqual(fs.readdirSync(decoy), [])

          const refused = failureOf(
            yield* Effect.exit(Transfer.rsyncUpload(path.join(tree, "f"), path.join(remote, "rel*", "h?")))
          )
          assert.instanceOf(refused, TransferError)
          assert.include(refused.message, "pattern")
          assert.include(refused.message, "end the remote path with /")
          assert.deepStrictEqual(fs.readdirSync(path.join(remote, "rel*")).sort(), ["f", "g"])
        }))
    })

    describe("large files", () => {
      // Downloads read in requests as long as the server takes (255 KiB from OpenSSH), many blocks
      // at once, each written at its own offset: a size that fits neither must still come back
      // byte for byte, to a file and into memory.
      it.effect("a download of many requests and blocks, of an unaligned size, is identical by sha256", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          const bytes = patterned((21 << 20) + 12_345)
          const source = path.join(remote, "large.bin")
          fs.writeFileSync(source, bytes)
          const saved = yield* Transfer.download(source, path.join(local, "large.bin"))
          assert.strictEqual(fs.statSync(saved).size, bytes.length)
          assert.strictEqual(sha(fs.readFileSync(saved)), sha(bytes))
          assert.strictEqual(sha(yield* Transfer.download(source)), sha(bytes))
          assert.deepStrictEqual(leftovers(local), [])
        }))
    })
  }
)
