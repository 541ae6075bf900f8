/**
 * `Connection.sftp`, the Effect-native SFTP session, against the throwaway OpenSSH server of
 * `tests-remote/`, through `SshConnections` directly: each request does what it says and fails
 * with the server's status code; a request stays interruptible and closing stays bounded while
 * the session's SFTP server process is stopped; a request on a closed session fails at once; and
 * many requests in flight at once all complete.
 */
import { afterAll, assert, describe, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import { failureOf, settingsLayer, signal, tempDirs, uid } from "./support.ts"

const server = readServerFromEnv()
const hostOn = (address: string) => `${server.user}@${address}:${server.port}`
const userUid = uid(server.user)

const { made, tempDir } = tempDirs()
const stopped: Array<number> = []
afterAll(() => {
  for (const pid of stopped) signal(pid, "SIGCONT")
  for (const dir of made) fs.rmSync(dir, { recursive: true, force: true })
})

/** A fresh directory the test user owns, for the remote side. */
const remoteDir = () => {
  const dir = tempDir("tbsftp-")
  fs.chownSync(dir, userUid, userUid)
  return dir
}

/** The SFTP server processes (internal-sftp) of this test server's sessions. */
const sftpProcesses = (): Array<number> =>
  server.sshdPids().filter((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("internal-sftp")
    } catch {
      return false
    }
  })

/** The session's SFTP failure code, from a failed exit. */
const codeOf = <A>(exit: Exit.Exit<A, Ssh.SftpError>): number => failureOf(exit).code

/** Opens a session on its own connection (a loopback address of its own), in the test's scope. */
const session = (address: string) =>
  Effect.gen(function*() {
    const settings = yield* Settings.Settings
    const ssh = yield* Ssh.SshConnections
    const connection = yield* ssh.connect({ ...settings, host: hostOn(address) })
    return yield* connection.sftp
  })

layer(Layer.mergeAll(Ssh.layer, settingsLayer({ host: hostOn("127.0.0.1"), quiet: true })), {
  timeout: "120 seconds",
  excludeTestServices: true
})("Ssh.Connection.sftp", (it) => {
  describe("requests", () => {
    it.effect("mkdir, open, write, fstat, fchmod, close, stat, read, rename and posixRename do what they say", () =>
      Effect.gen(function*() {
        const sftp = yield* session("127.0.0.1")
        const dir = remoteDir()
        assert.isAtLeast(sftp.limits.maxReadLength, 32 * 1024)
        assert.isAtLeast(sftp.limits.maxWriteLength, 32 * 1024)
        assert.strictEqual(sftp.extensions["posix-rename@openssh.com"], "1")

        const inner = path.join(dir, "inner")
        yield* sftp.mkdir(inner, 0o750)
        assert.isTrue((yield* sftp.stat(inner)).isDirectory())
        assert.strictEqual(fs.statSync(inner).mode & 0o777, 0o750)

        const file = path.join(inner, "a")
        const bytes = randomBytes(100_000)
        const handle = yield* sftp.open(file, "wx", 0o600)
        assert.strictEqual(handle.path, file)
        yield* sftp.write(handle, bytes, 0, 60_000, 0)
        yield* sftp.write(handle, bytes, 60_000, 40_000, 60_000)
        assert.strictEqual((yield* sftp.fstat(handle)).size, bytes.length)
        yield* sftp.fchmod(handle, 0o640)
        yield* sftp.close(handle)
        const info = yield* sftp.stat(file)
        assert.isTrue(info.isFile())
        assert.strictEqual(info.mode & 0o7777, 0o640)
        assert.deepStrictEqual(fs.readFileSync(file), bytes)

        const reader = yield* sftp.open(file, "r")
        const into = new Uint8Array(bytes.length)
        let at = 0
        for (let n = -1; n !== 0; at += n) {
          n = yield* sftp.read(reader, into, at, into.length - at, at)
          if (at + n === into.length) {
            at += n
            break
          }
        }
        assert.strictEqual(at, bytes.length)
        assert.deepStrictEqual(Buffer.from(into), bytes)
        // The end of the file is an answer: no bytes.
        assert.strictEqual(yield* sftp.read(reader, into, 0, 10, bytes.length), 0)
        yield* sftp.close(reader)

        const renamed = path.join(inner, "b")
        yield* sftp.rename(file, renamed)
        assert.isFalse(fs.existsSync(file))
        fs.writeFileSync(file, "old")
        // Plain SFTP rename refuses an existing target; posix-rename replaces it.
        assert.strictEqual(codeOf(yield* Effect.exit(sftp.rename(renamed, file))), Ssh.SftpStatus.failure)
        yield* sftp.posixRename(renamed, file)
        assert.deepStrictEqual(fs.readFileSync(file), bytes)
      }).pipe(Effect.scoped))

    it.effect("fail with the server's status: no such file, permission denied, failure", () =>
      Effect.gen(function*() {
        const sftp = yield* session("127.0.0.1")
        const dir = remoteDir()
        const missing = path.join(dir, "missing")
        const stat = failureOf(yield* Effect.exit(sftp.stat(missing)))
        assert.strictEqual(stat._tag, "SftpError")
        assert.strictEqual(stat.code, Ssh.SftpStatus.noSuchFile)
        assert.strictEqual(stat.request, "stat")
        assert.strictEqual(stat.path, missing)
        assert.include(stat.message, missing)
        assert.strictEqual(codeOf(yield* Effect.exit(sftp.open(missing, "r"))), Ssh.SftpStatus.noSuchFile)
        assert.strictEqual(
          codeOf(yield* Effect.exit(sftp.mkdir(path.join(missing, "below")))),
          Ssh.SftpStatus.noSuchFile
        )

        const secret = path.join(tempDir("tbsftp-root-"), "secret")
        fs.writeFileSync(secret, "root only", { mode: 0o600 })
        assert.strictEqual(
          codeOf(yield* Effect.exit(sftp.open(secret, "r"))),
          Ssh.SftpStatus.permissionDenied
        )
        assert.strictEqual(
          codeOf(yield* Effect.exit(sftp.mkdir(path.join(path.dirname(secret), "d")))),
          Ssh.SftpStatus.permissionDenied
        )

        const existing = path.join(dir, "existing")
        fs.writeFileSync(existing, "")
        fs.chownSync(existing, userUid, userUid)
        assert.strictEqual(codeOf(yield* Effect.exit(sftp.open(existing, "wx"))), Ssh.SftpStatus.failure)
      }).pipe(Effect.scoped))

    it.effect("many requests in flight at once all complete, with the right bytes", () =>
      Effect.gen(function*() {
        const sftp = yield* session("127.0.0.1")
        const dir = remoteDir()
        const file = path.join(dir, "big")
        const chunk = 64 * 1024
        const count = 256
        const bytes = randomBytes(chunk * count)
        const writer = yield* sftp.open(file, "wx", 0o600)
        yield* Effect.forEach(
          Array.from({ length: count }, (_, i) => i),
          (i) => sftp.write(writer, bytes, i * chunk, chunk, i * chunk),
          { concurrency: "unbounded", discard: true }
        )
        yield* sftp.close(writer)
        assert.deepStrictEqual(fs.readFileSync(file), bytes)

        const reader = yield* sftp.open(file, "r")
        const into = Buffer.alloc(bytes.length)
        const read = yield* Effect.forEach(
          Array.from({ length: count }, (_, i) => i),
          (i) => sftp.read(reader, into, i * chunk, chunk, i * chunk),
          { concurrency: "unbounded" }
        )
        assert.isTrue(read.every((n) => n === chunk))
        assert.isTrue(into.equals(bytes))
        yield* sftp.close(reader)
      }).pipe(Effect.scoped))
  })

  describe("a session whose SFTP server process is stopped", () => {
    it.effect("a request is interruptible, closing is bounded, and a request after the close fails at once", () =>
      Effect.gen(function*() {
        const before = sftpProcesses()
        const scope = yield* Scope.make()
        const sftp = yield* session("127.0.0.6").pipe(Scope.provide(scope))
        yield* sftp.stat("/")
        const mine = sftpProcesses().filter((pid) => !before.includes(pid))
        assert.isAtLeast(
          mine.length,
          1,
          "the session's SFTP process was not found: the test would prove nothing"
        )
        for (const pid of mine) {
          stopped.push(pid)
          signal(pid, "SIGSTOP")
        }

        // Never answered: only the time limit ends it, and it does.
        const exit = yield* Effect.exit(sftp.stat("/").pipe(Effect.timeout("1 second")))
        assert.isTrue(Exit.isFailure(exit))
        assert.strictEqual((failureOf(exit) as { _tag: string })._tag, "TimeoutError")

        // Many requests in flight, none answered, all interrupted together.
        const many = yield* Effect.exit(
          Effect.forEach(Array.from({ length: 64 }, () => "/"), (p) => sftp.stat(p), {
            concurrency: "unbounded"
          })
            .pipe(Effect.timeout("1 second"))
        )
        assert.isTrue(Exit.isFailure(many))

        // Closing does not wait for the stopped server (bounded well below the test's own limit).
        const closed = yield* Effect.exit(Scope.close(scope, Exit.void).pipe(Effect.timeout("10 seconds")))
        assert.isTrue(Exit.isSuccess(closed), "closing the session waited for the stopped server")
        assert.isFalse(sftp.isOpen())

        const after = yield* Effect.exit(sftp.stat("/").pipe(Effect.timeout("5 seconds")))
        assert.strictEqual(codeOf(after as Exit.Exit<unknown, Ssh.SftpError>), Ssh.SftpStatus.connectionLost)
        for (const pid of mine) signal(pid, "SIGCONT")
      }))
  })
})
