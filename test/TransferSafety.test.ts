/**
 * What transfers promise when things go wrong or paths are odd, against the throwaway OpenSSH
 * server of `tests-remote/`: modes a downloaded tree may not bring, local directories a download
 * may not replace, host keys rsync must check like every other operation, interruption while the
 * server's SFTP process is stopped or a FIFO is read, an interrupted sudo upload, files whose
 * size the server does not know, and reasons that say what happened.
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import { afterAll, assert, describe, layer } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import { execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { ConnectionError, TransferError } from "../src/Errors.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import * as Transfer from "../src/Transfer.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import {
  dirPairs,
  failureOf,
  leftovers,
  settingsLayer,
  signal,
  stagingDirFor,
  stagingLeftovers,
  tempDirs,
  uid
} from "./support.ts"

const server = readServerFromEnv()
const host = `${server.user}@127.0.0.1:${server.port}`
const userUid = uid(server.user)

const stagingDir = stagingDirFor("tbsafe-staging-", userUid)

const base = settingsLayer({
  host,
  remoteTempDir: stagingDir,
  quiet: true,
  connectRetryDelay: "200 millis"
})

const { made, tempDir } = tempDirs()
const stopped: Array<number> = []
afterAll(() => {
  for (const pid of stopped) signal(pid, "SIGCONT")
  for (const dir of [...made, stagingDir]) fs.rmSync(dir, { recursive: true, force: true })
})

/** A directory the test user owns (the remote side) and one for the local side. */
const makeDirs = dirPairs(tempDir, "tbsafe-", userUid)

/** Makes `file` (and its parents under `root`) belong to the test user. */
const give = (root: string, file: string) => {
  for (let p = file; p.startsWith(root) && p !== root; p = path.dirname(p)) fs.lchownSync(p, userUid, userUid)
}

/** Whether a transfer's content, of `size` bytes, is whole in the staging directory. */
const staged = (size: number): boolean =>
  stagingLeftovers(stagingDir).some((name) => {
    try {
      return fs.statSync(path.join(stagingDir, name, "data")).size === size
    } catch {
      return false
    }
  })

const parentOf = (pid: number): number => {
  try {
    return Number(/^PPid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0)
  } catch {
    return 0
  }
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

/** Waits until an SFTP server process that was not there `before` appears, then stops it. */
const stopNewSftp = (before: ReadonlyArray<number>) =>
  Effect.gen(function*() {
    for (let i = 0; i < 500; i++) {
      const fresh = sftpProcesses().filter((pid) => !before.includes(pid))
      if (fresh.length > 0) {
        for (const pid of fresh) {
          stopped.push(pid)
          signal(pid, "SIGSTOP")
        }
        return fresh
      }
      yield* Effect.sleep("10 millis")
    }
    throw new Error("no SFTP server process appeared")
  })

/** How long `self` takes to end once interrupted (it runs `after` first), in milliseconds. */
const interruptAfter = <A, E, R>(self: Effect.Effect<A, E, R>, ready: Effect.Effect<unknown>) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.forkChild(self)
    yield* ready
    const started = Date.now()
    yield* Fiber.interrupt(fiber)
    return Date.now() - started
  })

/** The bound README.md states for ending a transfer after interruption. */
const grace = 5_000

layer(Layer.mergeAll(Ssh.layer, base, NodeServices.layer), {
  timeout: "300 seconds",
  excludeTestServices: true
})(
  "Transfer safety",
  (it) => {
    describe("modes of a downloaded tree", () => {
      const plantTree = (remote: string) => {
        const tree = path.join(remote, "tree")
        fs.mkdirSync(path.join(tree, "shared"), { recursive: true })
        fs.writeFileSync(path.join(tree, "suid"), "#!/bin/sh\nid\n")
        fs.writeFileSync(path.join(tree, "sgid"), "#!/bin/sh\nid\n")
        fs.writeFileSync(path.join(tree, "open"), "anyone writes\n")
        fs.writeFileSync(path.join(tree, "plain"), "plain\n")
        for (const p of ["shared", "suid", "sgid", "open", "plain"]) give(remote, path.join(tree, p))
        fs.chmodSync(path.join(tree, "suid"), 0o4755)
        fs.chmodSync(path.join(tree, "sgid"), 0o2775)
        fs.chmodSync(path.join(tree, "open"), 0o666)
        fs.chmodSync(path.join(tree, "plain"), 0o640)
        fs.chmodSync(path.join(tree, "shared"), 0o1777)
        return tree
      }
      const modes = (dir: string) =>
        Object.fromEntries(
          ["", "shared", "suid", "sgid", "open", "plain"].map((
            p
          ) => [p, fs.statSync(path.join(dir, p)).mode & 0o7777])
        )
      const expected = { "": 0o755, shared: 0o755, suid: 0o755, sgid: 0o755, open: 0o644, plain: 0o640 }

      it.effect("a downloaded tree never brings setuid, setgid, sticky or group/world-write bits", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          const tree = plantTree(remote)
          const back = yield* Transfer.download(tree, path.join(local, "plain-copy"))
          assert.deepStrictEqual(modes(back), expected)
          assert.strictEqual(fs.readFileSync(path.join(back, "suid"), "utf8"), "#!/bin/sh\nid\n")
        }))

      it.effect("a tree downloaded with sudo never brings setuid, setgid, sticky or group/world-write bits", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          const tree = plantTree(remote)
          for (const p of ["suid", "sgid"]) fs.chownSync(path.join(tree, p), 0, 0)
          fs.chmodSync(path.join(tree, "suid"), 0o6755)
          fs.chmodSync(path.join(tree, "sgid"), 0o2775)
          const back = yield* Transfer.download(tree, path.join(local, "sudo-copy"), { useSudo: true })
          assert.deepStrictEqual(modes(back), expected)
        }))
    })

    describe("local directories a download may not replace", () => {
      it.effect("downloading a remote path ending in . or .. into a local directory never deletes that directory", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          const app = path.join(remote, "app")
          fs.mkdirSync(path.join(app, "inner"), { recursive: true })
          fs.writeFileSync(path.join(app, "index.html"), "app")
          const backups = path.join(local, "backups")
          fs.mkdirSync(backups)
          fs.writeFileSync(path.join(backups, "precious"), "keep me")
          const dot = yield* Effect.exit(Transfer.download(`${app}/.`, backups + "/"))
          assert.strictEqual(fs.readFileSync(path.join(backups, "precious"), "utf8"), "keep me")
          if (Exit.isFailure(dot)) {
            const error = failureOf(dot)
            assert.instanceOf(error, TransferError)
            assert.include(error.message, `${app}/.`)
          } else {
            assert.strictEqual(fs.readFileSync(path.join(dot.value, "index.html"), "utf8"), "app")
          }

          const work = path.join(local, "work")
          fs.mkdirSync(path.join(work, "sub"), { recursive: true })
          fs.writeFileSync(path.join(work, "precious"), "keep me too")
          fs.writeFileSync(path.join(work, "sub", "mine"), "mine")
          const dotdot = yield* Effect.exit(
            Transfer.download(`${app}/inner/..`, path.join(work, "sub") + "/")
          )
          assert.strictEqual(fs.readFileSync(path.join(work, "precious"), "utf8"), "keep me too")
          assert.strictEqual(fs.readFileSync(path.join(work, "sub", "mine"), "utf8"), "mine")
          if (Exit.isFailure(dotdot)) {
            const error = failureOf(dotdot)
            assert.instanceOf(error, TransferError)
            assert.include(error.message, `${app}/inner/..`)
          } else {
            assert.strictEqual(fs.readFileSync(path.join(dotdot.value, "index.html"), "utf8"), "app")
          }
          assert.deepStrictEqual(leftovers(local), [])
          assert.deepStrictEqual(leftovers(work), [])
        }))

      it.effect("a remote path with no name of its own (the root, the home directory) is refused into a local directory", () =>
        Effect.gen(function*() {
          const { local } = makeDirs()
          const into = path.join(local, "into")
          fs.mkdirSync(into)
          fs.writeFileSync(path.join(into, "precious"), "keep me")
          for (const source of ["/", "//", "~", "~/", "~//", "~/."]) {
            // Were it taken, `/` would start copying the whole filesystem: the time limit ends that.
            const exit = yield* Effect.exit(
              Transfer.download(source, into + "/").pipe(Effect.timeout("10 seconds"))
            )
            const error = failureOf(exit)
            assert.instanceOf(error, TransferError, source)
            assert.include(error.message, "no name of its own", source)
          }
          assert.deepStrictEqual(fs.readdirSync(into), ["precious"])
        }))
    })

    describe("rsync host keys", () => {
      it.effect("rsync checks host keys against the known_hosts file the SSH operations use, whatever its path", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          fs.writeFileSync(path.join(local, "f.txt"), "rsynced")
          const otherKey = fs.readFileSync(server.keyPath + ".pub", "utf8").trim().split(/\s+/).slice(0, 2)
            .join(" ")
          for (const name of ["kh dir ü ✓", `kh dir 'q" %h \\ ü`]) {
            const odd = path.join(local, name)
            fs.mkdirSync(odd)
            const good = path.join(odd, "known hosts")
            fs.copyFileSync(server.knownHostsPath, good)
            // The same hosts under a key they do not have: a changed host key.
            const changed = path.join(odd, "changed hosts")
            fs.writeFileSync(
              changed,
              [1, 2].map((i) => `[127.0.0.${i}]:${server.port} ${otherKey}\n`).join("")
            )
            // What a path split at its spaces would read instead: an empty file at its first word.
            fs.writeFileSync(path.join(local, "kh"), "")

            const dest = path.join(remote, "f.txt")
            yield* Transfer.rsyncUpload(path.join(local, "f.txt"), dest).pipe(
              Settings.settings({ knownHostsFile: good, hostKeyPolicy: "strict" })
            )
            assert.strictEqual(fs.readFileSync(dest, "utf8"), "rsynced")
            fs.rmSync(dest)

            for (const gateway of [undefined, host]) {
              const settings = {
                knownHostsFile: changed,
                hostKeyPolicy: "accept-new" as const,
                ...(gateway === undefined ? {} : { host: `${server.user}@127.0.0.2:${server.port}`, gateway })
              }
              const refusedBySsh = failureOf(
                yield* Effect.exit(
                  Transfer.download(path.join(local, "f.txt")).pipe(Settings.settings(settings))
                )
              )
              assert.instanceOf(refusedBySsh, ConnectionError)
              const refusedByRsync = failureOf(
                yield* Effect.exit(
                  Transfer.rsyncUpload(path.join(local, "f.txt"), dest).pipe(Settings.settings(settings))
                )
              )
              assert.instanceOf(refusedByRsync, TransferError)
              // ssh refused the host: rsync reports 255, or 12 when it ended before its ssh did.
              assert.match(
                refusedByRsync.message,
                /rsync exited with (255|12) \(ssh failed/,
                `${name}, gateway ${gateway}`
              )
              assert.isFalse(fs.existsSync(dest))
              assert.strictEqual(fs.readFileSync(path.join(local, "kh"), "utf8"), "")
            }
            // Through a jump host whose key is known in that file, rsync gets through.
            yield* Transfer.rsyncUpload(path.join(local, "f.txt"), dest).pipe(
              Settings.settings({
                knownHostsFile: good,
                hostKeyPolicy: "strict",
                host: `${server.user}@127.0.0.2:${server.port}`,
                gateway: host
              })
            )
            assert.strictEqual(fs.readFileSync(dest, "utf8"), "rsynced")
            fs.rmSync(dest)
          }
        }))
    })

    describe("interruption", () => {
      it.effect("an upload ends within the grace when interrupted while the SFTP server process is stopped", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          const source = path.join(local, "big.bin")
          // Large enough to be still on its way when the SFTP process is stopped: its bytes go
          // through `cat` on a channel of their own, and SFTP is needed again to check and rename.
          fs.writeFileSync(source, Buffer.alloc(256 << 20, 7))
          const target = path.join(remote, "big.bin")
          fs.writeFileSync(target, "old")
          const before = sftpProcesses()
          let seen = 0
          let pids: Array<number> = []
          const took = yield* interruptAfter(
            Transfer.upload(source, target, { onProgress: (p) => Effect.sync(() => void (seen = p.bytes)) }),
            Effect.gen(function*() {
              while (seen === 0) yield* Effect.sleep("5 millis")
              pids = yield* stopNewSftp(before)
              yield* Effect.sleep("300 millis")
            })
          )
          assert.isAbove(pids.length, 0, "no SFTP process was stopped: the test proved nothing")
          assert.isBelow(took, grace)
          assert.strictEqual(fs.readFileSync(target, "utf8"), "old")
          for (const pid of pids) signal(pid, "SIGCONT")
          assert.deepStrictEqual(leftovers(remote), [])
        }))

      it.effect("a download ends within the grace when timed out while the SFTP server process is stopped", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          const source = path.join(remote, "big.bin")
          fs.writeFileSync(source, Buffer.alloc(256 << 20, 7))
          const target = path.join(local, "big.bin")
          const before = sftpProcesses()
          let pids: Array<number> = []
          let got = 0
          const stopper = yield* Effect.forkChild(Effect.gen(function*() {
            while (got === 0) yield* Effect.sleep("5 millis")
            pids = yield* stopNewSftp(before)
          }))
          const started = Date.now()
          const exit = yield* Effect.exit(
            Transfer.download(source, target, { onProgress: (p) => Effect.sync(() => void (got = p.bytes)) })
              .pipe(
                Effect.timeout("1500 millis")
              )
          )
          const took = Date.now() - started
          yield* Fiber.join(stopper)
          for (const pid of pids) signal(pid, "SIGCONT")
          assert.isBelow(got, 256 << 20)
          assert.isTrue(Exit.isFailure(exit))
          assert.isBelow(took, 1500 + grace)
          assert.isFalse(fs.existsSync(target))
          assert.deepStrictEqual(leftovers(local), [])
        }))

      it.effect("a transfer ends within the grace when timed out while its SFTP session is still opening", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          fs.writeFileSync(path.join(remote, "f"), "remote")
          // The SFTP process is stopped as soon as it is seen, before it answers the session's
          // opening if the poll is quick enough: a transfer that still succeeded was missed.
          let hits = 0
          for (let attempt = 0; attempt < 30 && hits < 2; attempt++) {
            const direction = attempt % 2 === 0 ? "download" : "upload"
            const before = sftpProcesses()
            let pids: Array<number> = []
            const stopper = yield* Effect.forkChild(Effect.gen(function*() {
              for (let i = 0; i < 3000 && pids.length === 0; i++) {
                pids = sftpProcesses().filter((pid) => !before.includes(pid))
                for (const pid of pids) signal(pid, "SIGSTOP")
                stopped.push(...pids)
                if (pids.length === 0) yield* Effect.sleep("1 millis")
              }
            }))
            const started = Date.now()
            const exit = yield* Effect.exit(
              (direction === "download"
                ? Transfer.download(path.join(remote, "f"), path.join(local, "f"))
                : Transfer.upload({ content: "new" }, path.join(remote, "g"))).pipe(
                  Effect.timeout("1 second")
                )
            )
            const took = Date.now() - started
            yield* Fiber.interrupt(stopper)
            for (const pid of pids) signal(pid, "SIGCONT")
            if (Exit.isSuccess(exit)) {
              fs.rmSync(path.join(local, "f"), { force: true })
              fs.rmSync(path.join(remote, "g"), { force: true })
              continue
            }
            hits++
            assert.isBelow(took, 1000 + grace, direction)
            assert.isFalse(
              fs.existsSync(
                path.join(direction === "download" ? local : remote, direction === "download" ? "f" : "g")
              )
            )
          }
          assert.isAtLeast(hits, 1)
          yield* Effect.sleep("500 millis")
          assert.deepStrictEqual(leftovers(local), [])
          assert.deepStrictEqual(leftovers(remote), [])
        }))

      it.effect("downloading a remote FIFO is refused up front, with and without sudo", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          const fifo = path.join(remote, "pipe")
          execFileSync("mkfifo", [fifo])
          give(remote, fifo)
          for (const useSudo of [false, true]) {
            const started = Date.now()
            const exit = yield* Effect.exit(
              Transfer.download(fifo, path.join(local, "pipe"), { useSudo }).pipe(
                Effect.timeout("10 seconds")
              )
            )
            const error = failureOf(exit)
            assert.instanceOf(error, TransferError, String(error))
            assert.include(error.message, fifo)
            assert.include(error.message, "not a regular file")
            assert.isBelow(Date.now() - started, grace)
            assert.isFalse(fs.existsSync(path.join(local, "pipe")))
          }
          assert.deepStrictEqual(leftovers(local), [])
        }))

      it.effect("uploading a local FIFO without a writer is refused without freezing the process", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          const fifo = path.join(local, "pipe")
          execFileSync("mkfifo", [fifo])
          // Were the open to block the event loop, this writer would free it after a while.
          const rescue = spawn("sh", ["-c", `sleep 8; : > "$1"`, "sh", fifo], { stdio: "ignore" })
          const started = Date.now()
          const exit = yield* Effect.exit(
            Transfer.upload(fifo, path.join(remote, "pipe")).pipe(Effect.timeout("4 seconds"))
          )
          const took = Date.now() - started
          rescue.kill()
          const error = failureOf(exit)
          assert.instanceOf(error, TransferError, String(error))
          assert.include(error.message, fifo)
          assert.include(error.message, "not a regular file")
          assert.isBelow(took, grace)
          assert.isFalse(fs.existsSync(path.join(remote, "pipe")))
          assert.deepStrictEqual(leftovers(remote), [])
        }))
    })

    describe("an interrupted sudo upload", () => {
      it.effect(
        "never replaces the destination after the interrupted call returned",
        () =>
          Effect.gen(function*() {
            const secret = tempDir("tbsafe-root-")
            fs.chmodSync(secret, 0o700)
            const target = path.join(secret, "app.conf")
            // Large enough that the remote script (copy, check, move) takes a while after the
            // content reached the staging directory: the interruptions below land inside it.
            const content = Buffer.alloc(24 << 20, "n")
            const isNew = (file: string) => fs.statSync(file).size === content.length
            const outcomes: Array<string> = []
            for (const delay of [0, 10, 20, 40, 60, 80, 100, 130, 160, 200, 250, 300, 400, 600]) {
              fs.writeFileSync(target, "old\n")
              yield* interruptAfter(
                Transfer.upload(content, target, { useSudo: true }),
                Effect.gen(function*() {
                  // The remote script starts once the content is whole in the staging directory.
                  while (!staged(content.length) && !isNew(target)) yield* Effect.sleep("1 millis")
                  yield* Effect.sleep(Duration.millis(delay))
                })
              )
              const atReturn = isNew(target) ? "new" : "old"
              if (atReturn === "old") assert.strictEqual(fs.readFileSync(target, "utf8"), "old\n")
              yield* Effect.sleep("2500 millis")
              assert.strictEqual(
                isNew(target) ? "new" : "old",
                atReturn,
                `interrupted ${delay} ms after the content was staged: replaced after the call returned`
              )
              outcomes.push(atReturn)
              assert.deepStrictEqual(leftovers(secret), [], `at ${delay} ms`)
            }
            assert.include(outcomes, "old")
            assert.deepStrictEqual(stagingLeftovers(stagingDir), [])
          }),
        { timeout: 180_000 }
      )
    })

    describe("an interrupted sudo upload, its remote script held up", () => {
      /** The root shells running a transfer script for `target` (the script that moves it into place). */
      const rootScripts = (target: string): Array<number> =>
        fs.readdirSync("/proc").filter((name) => /^\d+$/.test(name)).map(Number).filter((pid) => {
          try {
            const argv = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")
            const status = fs.readFileSync(`/proc/${pid}/status`, "utf8")
            return argv[0] === "/bin/sh" && argv.includes(target) && /^Uid:\s+0\s/m.test(status)
          } catch {
            return false
          }
        })

      it.effect(
        "never replaces the destination once the call returned, however late the script goes on",
        () =>
          Effect.gen(function*() {
            const secret = tempDir("tbsafe-root-")
            fs.chmodSync(secret, 0o700)
            for (const kind of ["file", "tree"] as const) {
              const target = path.join(secret, `app-${kind}`)
              if (kind === "file") {
                fs.writeFileSync(target, "old\n")
              } else {
                fs.mkdirSync(target)
                fs.writeFileSync(path.join(target, "version"), "old\n")
              }
              const { local } = makeDirs()
              const tree = path.join(local, "tree")
              fs.mkdirSync(tree)
              fs.writeFileSync(path.join(tree, "version"), "new\n")
              const current = () =>
                fs.readFileSync(kind === "file" ? target : path.join(target, "version"), "utf8")
              let held: Array<number> = []
              const took = yield* interruptAfter(
                kind === "file"
                  ? Transfer.upload({ content: "new\n" }, target, { useSudo: true })
                  : Transfer.upload(tree, target, { useSudo: true }),
                Effect.gen(function*() {
                  // The remote script (as root) is stopped as soon as it starts: a slow server.
                  for (let i = 0; i < 2000 && held.length === 0; i++) {
                    held = rootScripts(target)
                    if (held.length === 0) yield* Effect.sleep("1 millis")
                  }
                  assert.isAbove(held.length, 0, "the remote script was seen")
                  for (const pid of held) signal(pid, "SIGSTOP")
                  stopped.push(...held, ...held.map(parentOf))
                  yield* Effect.sleep("200 millis")
                })
              )
              // On a loaded machine the script may have said it is ready before it was stopped: the
              // interruption then waits for the move, at most 10 s (README), before the grace.
              assert.isBelow(took, 10_000 + grace)
              assert.strictEqual(current(), "old\n", `${kind}: at return`)
              // sudo stops itself when its child stops: it goes on too.
              for (const pid of [...held, ...held.map(parentOf)]) signal(pid, "SIGCONT")
              yield* Effect.sleep("2 seconds")
              assert.strictEqual(current(), "old\n", `${kind}: replaced after the interrupted call returned`)
              assert.deepStrictEqual(leftovers(secret), [], kind)
            }
            assert.deepStrictEqual(stagingLeftovers(stagingDir), [])
          }),
        { timeout: 60_000 }
      )
    })

    describe("a sudo upload with a password", () => {
      it.effect(
        "places a file and a tree with the right password, and fails without hanging with a wrong one",
        () =>
          Effect.gen(function*() {
            if (server.passwordUser === undefined) return assert.fail("the server has no password user")
            const secret = tempDir("tbsafe-root-")
            fs.chmodSync(secret, 0o700)
            const { local } = makeDirs()
            const tree = path.join(local, "tree")
            fs.mkdirSync(tree)
            fs.writeFileSync(path.join(tree, "a"), "a\n")
            const staging = tempDir("tbsafe-staging-pass-")
            fs.chownSync(staging, uid(server.passwordUser), uid(server.passwordUser))
            fs.chmodSync(staging, 0o700)
            const as = (password: string) =>
              Settings.settings({
                host: `${server.passwordUser}@127.0.0.1:${server.port}`,
                sudoPassword: Redacted.make(password),
                remoteTempDir: staging
              })
            const right = server.passwordUserPassword!
            yield* Transfer.upload({ content: "file\n" }, path.join(secret, "file"), { useSudo: true }).pipe(
              as(right)
            )
            yield* Transfer.upload(tree, path.join(secret, "tree"), { useSudo: true }).pipe(as(right))
            assert.strictEqual(fs.readFileSync(path.join(secret, "file"), "utf8"), "file\n")
            assert.strictEqual(fs.readFileSync(path.join(secret, "tree", "a"), "utf8"), "a\n")
            for (const source of [{ content: "x" }, tree]) {
              const started = Date.now()
              const error = failureOf(
                yield* Effect.exit(
                  Transfer.upload(source, path.join(secret, "other"), { useSudo: true }).pipe(
                    as("wrong"),
                    Effect.timeout("30 seconds")
                  )
                )
              )
              assert.instanceOf(error, TransferError, String(error))
              assert.strictEqual(error.reason, "permission")
              // sudo waits about 2 s after each wrong password.
              assert.isBelow(Date.now() - started, 20_000)
            }
            assert.isFalse(fs.existsSync(path.join(secret, "other")))
            assert.deepStrictEqual(leftovers(secret), [])
            assert.deepStrictEqual(fs.readdirSync(staging), [])
          }),
        { timeout: 90_000 }
      )
    })

    describe("files whose size the server does not know", () => {
      it.effect("download their whole content, plain and with sudo, into memory and to a file", () =>
        Effect.gen(function*() {
          const { local } = makeDirs()
          const version = fs.readFileSync("/proc/version", "utf8")
          assert.isAbove(version.length, 0)
          for (const useSudo of [false, true]) {
            const bytes = yield* Transfer.download("/proc/version", undefined, { useSudo })
            assert.strictEqual(new TextDecoder().decode(bytes), version, `useSudo: ${useSudo}`)
            const saved = yield* Transfer.download("/proc/cpuinfo", path.join(local, `cpuinfo-${useSudo}`), {
              useSudo
            })
            const text = fs.readFileSync(saved, "utf8")
            assert.include(text, "processor", `useSudo: ${useSudo}`)
            assert.strictEqual(
              text.split("\n").filter((l) => l.startsWith("processor")).length,
              fs.readFileSync("/proc/cpuinfo", "utf8").split("\n").filter((l) => l.startsWith("processor"))
                .length
            )
          }
          assert.deepStrictEqual(leftovers(local), [])
        }))
    })

    describe("reasons", () => {
      it.effect("a download whose local parent is a file says so, and is not `exists`", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          fs.writeFileSync(path.join(remote, "f"), "x")
          fs.mkdirSync(path.join(remote, "tree"))
          fs.writeFileSync(path.join(local, "blocker"), "a file")
          for (const source of ["f", "tree"]) {
            for (const target of [["blocker", "f"], ["blocker", "sub", "f"]]) {
              const error = failureOf(
                yield* Effect.exit(Transfer.download(path.join(remote, source), path.join(local, ...target)))
              )
              assert.instanceOf(error, TransferError)
              assert.strictEqual(error.reason, "not-a-directory", `${source} -> ${target.join("/")}`)
              assert.strictEqual(error.side, "local")
              assert.strictEqual(error.path, path.join(local, "blocker"))
              assert.include(error.message, "not a directory")
              assert.include(error.message, "remove or rename it")
            }
          }
          assert.strictEqual(fs.readFileSync(path.join(local, "blocker"), "utf8"), "a file")
          assert.deepStrictEqual(leftovers(local), [])
        }))

      it.effect("an rsync download below a local file says which path is a file, as a TransferError", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          fs.writeFileSync(path.join(remote, "f"), "x")
          fs.writeFileSync(path.join(local, "blocker"), "a file")
          const error = failureOf(
            yield* Effect.exit(Transfer.rsyncDownload(`${remote}/`, path.join(local, "blocker", "sub") + "/"))
          )
          assert.instanceOf(error, TransferError)
          assert.strictEqual((error as TransferError).reason, "not-a-directory")
          assert.include(
            (error as TransferError).message,
            `${path.join(local, "blocker")} is not a directory`
          )
          assert.strictEqual(fs.readFileSync(path.join(local, "blocker"), "utf8"), "a file")
        }))

      it.effect("a sudo upload whose remote parent is a file says so, and is not `permission`", () =>
        Effect.gen(function*() {
          const { remote } = makeDirs()
          fs.writeFileSync(path.join(remote, "blocker"), "a file")
          for (const useSudo of [true, false]) {
            for (const target of [["blocker", "f"], ["blocker", "sub", "f"]]) {
              const error = failureOf(
                yield* Effect.exit(
                  Transfer.upload({ content: "x" }, path.join(remote, ...target), { useSudo })
                )
              )
              assert.instanceOf(error, TransferError)
              assert.strictEqual(error.reason, "not-a-directory", `useSudo: ${useSudo}, ${target.join("/")}`)
              assert.include(error.message, `${path.join(remote, "blocker")} is not a directory`)
              assert.include(error.message, "remove or rename it")
            }
          }
          assert.strictEqual(fs.readFileSync(path.join(remote, "blocker"), "utf8"), "a file")
          assert.deepStrictEqual(stagingLeftovers(stagingDir), [])
        }))
    })
  }
)
