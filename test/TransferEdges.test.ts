/**
 * Transfers of trees and paths at their edges, against the throwaway OpenSSH server of
 * `tests-remote/`: files that are hard links of each other, read-only directories, names that
 * are not UTF-8, FIFOs, sockets and devices inside trees (skipped, each named), rsync through
 * sudo into directories only root may create, and empty paths.
 * The server is this machine and the tests run as root, so remote files are checked with node:fs.
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import { afterAll, assert, describe, it as plainIt, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import { execFile, execFileSync, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { SettingsError } from "../src/Errors.ts"
import * as Tar from "../src/internal/transfer/tar.ts"
import * as Tree from "../src/internal/transfer/tree.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import * as Transfer from "../src/Transfer.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import {
  connectionSettings,
  dirPairs,
  failureOf,
  homeOf,
  leftovers,
  stagingDirFor,
  stagingLeftovers,
  tempDirs,
  uid
} from "./support.ts"

const server = readServerFromEnv()
const host = `${server.user}@127.0.0.1:${server.port}`
const userUid = uid(server.user)
const userHome = homeOf(server.user)

// Sudo and tree uploads stage in a directory of this file's own, so that the leftover checks
// see only this file's transfers.
const stagingDir = stagingDirFor("tbedge-staging-", userUid)

const connection = { ...connectionSettings(server), quiet: true, connectRetryDelay: "200 millis" } as const
const base = Settings.layer({ host, remoteTempDir: stagingDir, ...connection })

/** Every path under `dir` (not `dir` itself), as bytes, parents first; links not followed. */
const walk = (dir: string | Buffer): Array<Buffer> =>
  fs.readdirSync(dir, { encoding: "buffer" }).flatMap((name) => {
    const p = Buffer.concat([Buffer.from(dir), Buffer.from("/"), name])
    return fs.lstatSync(p).isDirectory() ? [p, ...walk(p)] : [p]
  })

const { made, tempDir } = tempDirs()
afterAll(() => {
  for (const dir of [...made, stagingDir]) {
    // Read-only trees are what some tests make: writable again before removal.
    fs.chmodSync(dir, 0o700)
    for (const p of walk(dir)) if (fs.lstatSync(p).isDirectory()) fs.chmodSync(p, 0o700)
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

/** A directory the test user owns (the remote side) and one for the local side. */
const makeDirs = dirPairs(tempDir, "tbedge-", userUid)

/** Gives everything under `dir` (itself included) to the test user, links not followed. */
const giveTree = (dir: string) => {
  fs.lchownSync(dir, userUid, userUid)
  for (const p of walk(dir)) fs.lchownSync(p, userUid, userUid)
}

/** Every entry under `dir` as `<hex name> <kind> <mode> <content or link target, hex>`, sorted. */
const listing = (dir: string): Array<string> => {
  const root = Buffer.from(dir + "/")
  return walk(dir).map((p) => {
    const name = p.subarray(root.length)
    const info = fs.lstatSync(p)
    const what = info.isSymbolicLink()
      ? `l ${fs.readlinkSync(p, { encoding: "buffer" }).toString("hex")}`
      : info.isDirectory()
      ? `d ${(info.mode & 0o7777).toString(8)}`
      : `f ${(info.mode & 0o7777).toString(8)} ${fs.readFileSync(p).toString("hex")}`
    return `${name.toString("hex")} ${what}`
  }).sort()
}

/** A port nothing listens on: a connection to it is refused (or, if attempted, fails). */
const closedPort = () =>
  Effect.promise(() =>
    new Promise<number>((resolve) => {
      const probe = net.createServer()
      probe.listen(0, "127.0.0.1", () => {
        const port = (probe.address() as net.AddressInfo).port
        probe.close(() => resolve(port))
      })
    })
  )

const childProgram = path.join(import.meta.dirname, "fixtures", "transfer-child.ts")

/**
 * Runs one transfer in a program of its own as the test user, not root (who may move and remove
 * read-only directories anyway); resolves with how it ended.
 */
const asUser = (kind: "upload" | "download", from: string, to: string) =>
  Effect.promise(() => {
    const home = tempDir("tbedge-user-")
    fs.copyFileSync(server.keyPath, path.join(home, "key"))
    for (const p of [home, path.join(home, "key")]) fs.chownSync(p, userUid, userUid)
    fs.chmodSync(path.join(home, "key"), 0o600)
    const settings = { host, ...connection, keyFile: path.join(home, "key") }
    return new Promise<{ readonly ok?: string; readonly error?: string }>((resolve) =>
      execFile(
        process.execPath,
        [childProgram, JSON.stringify(settings), kind, from, to],
        { uid: userUid, gid: userUid, cwd: home, env: { ...process.env, HOME: home } },
        (error, stdout, stderr) =>
          resolve(
            error === null ? JSON.parse(stdout.trim().split("\n").pop()!) : { error: `${error} ${stderr}` }
          )
      )
    )
  })

/** Runs a command; whether it succeeded. */
const spawnSyncOk = (command: string, args: Array<string>): boolean => {
  try {
    execFileSync(command, args, { stdio: "ignore" })
    return true
  } catch {
    return false
  }
}

const bytes = (...parts: Array<string | Array<number>>): Buffer =>
  Buffer.concat(parts.map((p) => (typeof p === "string" ? Buffer.from(p) : Buffer.from(p))))

layer(Layer.mergeAll(Ssh.layer, base, NodeServices.layer), {
  timeout: "300 seconds",
  excludeTestServices: true
})(
  "Transfer edges",
  (it) => {
    describe("hard links", () => {
      it.effect("a downloaded tree keeps every file that is a hard link of another, with and without sudo", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          const tree = path.join(remote, "tree")
          fs.mkdirSync(path.join(tree, "sub", "deeper"), { recursive: true })
          fs.writeFileSync(path.join(tree, "a.conf"), "important-config\n")
          fs.chmodSync(path.join(tree, "a.conf"), 0o640)
          fs.linkSync(path.join(tree, "a.conf"), path.join(tree, "sub", "b.conf"))
          fs.linkSync(path.join(tree, "a.conf"), path.join(tree, "sub", "deeper", "c.conf"))
          fs.writeFileSync(path.join(tree, "other"), "other\n")
          giveTree(tree)
          for (const useSudo of [false, true]) {
            const back = yield* Transfer.download(tree, path.join(local, `copy-${useSudo}`), { useSudo })
            for (const name of ["a.conf", "sub/b.conf", "sub/deeper/c.conf"]) {
              assert.strictEqual(fs.readFileSync(path.join(back, name), "utf8"), "important-config\n", name)
              assert.strictEqual(fs.statSync(path.join(back, name)).mode & 0o777, 0o640, name)
            }
            assert.strictEqual(fs.readFileSync(path.join(back, "other"), "utf8"), "other\n")
            // Made again as links of one file, as they were.
            assert.strictEqual(
              fs.statSync(path.join(back, "sub/b.conf")).ino,
              fs.statSync(path.join(back, "a.conf")).ino
            )
            assert.strictEqual(fs.statSync(path.join(back, "a.conf")).nlink, 3)
          }
          assert.deepStrictEqual(leftovers(local), [])
        }))

      it.effect("a tree with hard-linked files goes up with every file", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          const tree = path.join(local, "tree")
          fs.mkdirSync(path.join(tree, "sub"), { recursive: true })
          fs.writeFileSync(path.join(tree, "a.conf"), "important-config\n")
          fs.linkSync(path.join(tree, "a.conf"), path.join(tree, "sub", "b.conf"))
          for (const useSudo of [false, true]) {
            const up = yield* Transfer.upload(tree, path.join(remote, `up-${useSudo}`), { useSudo })
            assert.strictEqual(fs.readFileSync(path.join(up, "a.conf"), "utf8"), "important-config\n")
            assert.strictEqual(fs.readFileSync(path.join(up, "sub", "b.conf"), "utf8"), "important-config\n")
          }
          assert.deepStrictEqual(leftovers(remote), [])
          assert.deepStrictEqual(stagingLeftovers(stagingDir), [])
        }))
    })

    describe("read-only trees", () => {
      it.effect("a read-only local tree uploads with its modes, and replaces an older read-only tree, with and without sudo", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          // Both named `release`: uploaded into the same directory, the second replaces the first.
          const release = (content: string) => {
            const dir = path.join(fs.mkdtempSync(path.join(local, "build-")), "release")
            fs.mkdirSync(path.join(dir, "sub"), { recursive: true })
            fs.writeFileSync(path.join(dir, "app.js"), content)
            fs.writeFileSync(path.join(dir, "sub", "x"), content)
            fs.chmodSync(path.join(dir, "app.js"), 0o444)
            fs.chmodSync(path.join(dir, "sub"), 0o555)
            fs.chmodSync(dir, 0o555)
            return dir
          }
          const first = release("one\n")
          const second = release("two\n")
          for (const useSudo of [false, true]) {
            const into = path.join(remote, `into-${useSudo}`)
            fs.mkdirSync(into)
            fs.chownSync(into, userUid, userUid)
            const target = path.join(into, "release")
            for (const [source, content] of [[first, "one\n"], [second, "two\n"]] as const) {
              const written = yield* Transfer.upload(source, into, { useSudo })
              assert.strictEqual(written, target)
              assert.strictEqual(fs.statSync(target).mode & 0o7777, 0o555, `useSudo: ${useSudo}`)
              assert.strictEqual(fs.statSync(path.join(target, "sub")).mode & 0o7777, 0o555)
              assert.strictEqual(fs.statSync(path.join(target, "app.js")).mode & 0o7777, 0o444)
              assert.strictEqual(fs.readFileSync(path.join(target, "app.js"), "utf8"), content)
              assert.strictEqual(fs.readFileSync(path.join(target, "sub", "x"), "utf8"), content)
              assert.deepStrictEqual(leftovers(into), [], `useSudo: ${useSudo}, ${content.trim()}`)
            }
          }
          assert.deepStrictEqual(stagingLeftovers(stagingDir), [])
        }))
    })

    describe("read-only trees downloaded by a user who is not root", () => {
      it.effect("a read-only remote tree downloads with its modes, and replaces an older read-only local tree", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          fs.chownSync(local, userUid, userUid)
          const tree = path.join(remote, "release")
          fs.mkdirSync(path.join(tree, "sub"), { recursive: true })
          const write = (content: string) => {
            for (const dir of [tree, path.join(tree, "sub")]) fs.chmodSync(dir, 0o755)
            fs.writeFileSync(path.join(tree, "sub", "x"), content)
            fs.chmodSync(path.join(tree, "sub", "x"), 0o444)
            giveTree(tree)
            for (const dir of [path.join(tree, "sub"), tree]) fs.chmodSync(dir, 0o555)
          }
          const target = path.join(local, "release")
          for (const content of ["one\n", "two\n"]) {
            write(content)
            // Into the directory: the second download replaces the first's `release`.
            const outcome = yield* asUser("download", tree, local + "/")
            assert.deepStrictEqual(outcome, { ok: target }, content)
            assert.strictEqual(fs.statSync(target).mode & 0o7777, 0o555)
            assert.strictEqual(fs.statSync(path.join(target, "sub")).mode & 0o7777, 0o555)
            assert.strictEqual(fs.readFileSync(path.join(target, "sub", "x"), "utf8"), content)
            assert.strictEqual(fs.statSync(path.join(target, "sub", "x")).uid, userUid)
            assert.deepStrictEqual(leftovers(local), [], content)
          }
        }))
    })

    describe("names that are not UTF-8", () => {
      it.effect("a tree whose names are not UTF-8 goes up and comes back byte for byte, with and without sudo", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          const tree = path.join(local, "tree")
          fs.mkdirSync(tree)
          const at = (...name: Array<string | Array<number>>) =>
            Buffer.concat([Buffer.from(tree + "/"), bytes(...name)])
          fs.writeFileSync(at("a", [0xff]), "one")
          fs.writeFileSync(at("a", [0xfe]), "two")
          fs.writeFileSync(at("caf", [0xe9], ".txt"), "latin-1")
          fs.writeFileSync(at("café ✓"), "utf-8")
          // Past ustar's 100 bytes: carried in a long-name record.
          fs.writeFileSync(at("x".repeat(120), [0xff, 0x80]), "long")
          fs.mkdirSync(at("dir", [0xc0]))
          fs.writeFileSync(at("dir", [0xc0], "/in", [0xfe]), "inside")
          fs.symlinkSync(bytes("a", [0xff]), at("link", [0xfd]))
          const expected = listing(tree)
          assert.strictEqual(expected.length, 8)
          for (const useSudo of [false, true]) {
            const up = yield* Transfer.upload(tree, path.join(remote, `up-${useSudo}`), { useSudo })
            assert.deepStrictEqual(listing(up), expected, `upload, useSudo: ${useSudo}`)
            giveTree(up)
            const down = yield* Transfer.download(up, path.join(local, `down-${useSudo}`), { useSudo })
            assert.deepStrictEqual(listing(down), expected, `download, useSudo: ${useSudo}`)
          }
          assert.deepStrictEqual(leftovers(remote), [])
          assert.deepStrictEqual(leftovers(local), [])
          assert.deepStrictEqual(stagingLeftovers(stagingDir), [])
        }))
    })

    describe("FIFOs, sockets and devices inside a tree", () => {
      it.effect("a tree holding a FIFO, a socket and a device goes up and comes down without them, each named in a warning, with and without sudo", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          const logs: Array<string> = []
          const logger = Logger.make(({ logLevel, message }) =>
            void logs.push(`${logLevel} ${Array.isArray(message) ? message.join(" ") : String(message)}`)
          )
          /** Regular files (and a link) first, listed; then what has no content to copy. */
          const makeTree = (tree: string) => {
            fs.mkdirSync(path.join(tree, "sub", "deeper"), { recursive: true })
            fs.writeFileSync(path.join(tree, "a.txt"), "hello\n")
            fs.writeFileSync(path.join(tree, "sub", "big.bin"), randomBytes(300_000))
            fs.writeFileSync(path.join(tree, "sub", "deeper", "z"), randomBytes(1000))
            fs.symlinkSync("a.txt", path.join(tree, "link"))
            const expected = listing(tree)
            const specials = new Map<string, string>()
            // No writer ever comes: anything that opened it to read would wait for ever.
            execFileSync("mkfifo", [path.join(tree, "sub", "pipe")])
            specials.set("sub/pipe", "a FIFO (named pipe)")
            // Bound by a process that then exits: the socket file stays, nothing listens on it.
            execFileSync("python3", [
              "-c",
              "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])",
              path.join(tree, "sub", "deeper", "app.sock")
            ])
            specials.set("sub/deeper/app.sock", "a socket")
            // A device needs CAP_MKNOD (the tests run as root); without it, the rest still holds.
            const device = spawnSyncOk("mknod", [path.join(tree, "null"), "c", "1", "3"])
            if (device) specials.set("null", "a character device")
            return { expected, specials }
          }
          const skippedOf = (side: "local" | "remote", root: string, specials: Map<string, string>) =>
            [...specials].map(([name, kind]) =>
              `skipped ${side} ${JSON.stringify(path.join(root, name))}: ${kind}, not a regular file`
            )
          const warned = (expected: Array<string>, what: string) => {
            for (const line of expected) {
              assert.isTrue(
                logs.some((log) => log.startsWith("Warn [127.0.0.1] ") && log.includes(line)),
                `${what}: no warning "${line}" in ${JSON.stringify(logs)}`
              )
            }
            // One warning per entry, none else.
            assert.strictEqual(logs.filter((log) => log.includes(" skipped ")).length, expected.length, what)
          }
          const bounded = <A, E, R>(self: Effect.Effect<A, E, R>) =>
            self.pipe(
              Effect.timeoutOrElse({
                duration: "20 seconds",
                orElse: () => Effect.die(new Error("the transfer hung"))
              }),
              Effect.provide(Logger.layer([logger]))
            )

          const tree = path.join(local, "tree")
          const up = makeTree(tree)
          for (const useSudo of [false, true]) {
            logs.length = 0
            const what = `upload, useSudo: ${useSudo}`
            const written = yield* bounded(
              Transfer.upload(tree, path.join(remote, `up-${useSudo}`), { useSudo })
            )
            assert.deepStrictEqual(listing(written), up.expected, what)
            warned(skippedOf("local", tree, up.specials), what)
          }

          const remoteTree = path.join(remote, "tree")
          const down = makeTree(remoteTree)
          giveTree(remoteTree)
          for (const useSudo of [false, true]) {
            logs.length = 0
            const what = `download, useSudo: ${useSudo}`
            const written = yield* bounded(
              Transfer.download(remoteTree, path.join(local, `down-${useSudo}`), { useSudo })
            )
            assert.deepStrictEqual(listing(written), down.expected, what)
            warned(skippedOf("remote", remoteTree, down.specials), what)
          }
          assert.deepStrictEqual(leftovers(remote), [])
          assert.deepStrictEqual(leftovers(local), [])
          assert.deepStrictEqual(stagingLeftovers(stagingDir), [])
        }))
    })

    describe("rsync through sudo", () => {
      it.effect("rsyncUpload with useSudo creates missing directories where only root may write", () =>
        Effect.gen(function*() {
          const { local } = makeDirs()
          const rootOnly = tempDir("tbedge-root-")
          fs.chmodSync(rootOnly, 0o755)
          fs.writeFileSync(path.join(local, "index.html"), "hi")
          yield* Transfer.rsyncUpload(`${local}/`, path.join(rootOnly, "missing") + "/", { useSudo: true })
          yield* Transfer.rsyncUpload(`${local}/`, path.join(rootOnly, "a", "b", "site"), { useSudo: true })
          assert.strictEqual(fs.readFileSync(path.join(rootOnly, "missing", "index.html"), "utf8"), "hi")
          assert.strictEqual(
            fs.readFileSync(path.join(rootOnly, "a", "b", "site", "index.html"), "utf8"),
            "hi"
          )
          assert.strictEqual(fs.statSync(path.join(rootOnly, "a")).uid, 0)
        }))
    })

    describe("a program killed with SIGKILL mid-transfer", () => {
      const program = childProgram
      /** What `find <dir> -name '*.tb-*'` (the command README.md gives) lists under `dir`. */
      const found = (dir: string) =>
        execFileSync("find", [dir, "-name", "*.tb-*"], { encoding: "utf8" }).split("\n").filter((l) =>
          l !== ""
        )
      const hasContent = (p: string): boolean => {
        const info = fs.lstatSync(p, { throwIfNoEntry: false })
        return info?.isDirectory() === true
          ? fs.readdirSync(p).some((name) => hasContent(path.join(p, name)))
          : (info?.size ?? 0) > 0
      }

      it.effect(
        "leaves its temporary file or staging directory, which the documented find lists",
        () =>
          Effect.gen(function*() {
            const { remote, local } = makeDirs()
            // Large enough that the transfer is still running when the kill comes.
            const block = randomBytes(1 << 20)
            const big = path.join(local, "big")
            fs.writeFileSync(big, Buffer.concat(Array.from({ length: 256 }, () => block)))
            fs.copyFileSync(big, path.join(remote, "big"))
            for (const side of [local, remote]) {
              fs.mkdirSync(path.join(side, "tree"))
              fs.linkSync(path.join(side, "big"), path.join(side, "tree", "big"))
            }
            fs.chownSync(path.join(remote, "tree"), userUid, userUid)
            fs.chownSync(path.join(remote, "big"), userUid, userUid)
            const cases = [
              {
                kind: "upload",
                from: big,
                to: path.join(remote, "up"),
                watch: remote,
                left: /^\.up\.tb-[0-9a-f]{12}\.part$/
              },
              {
                kind: "sudo-upload",
                from: big,
                to: path.join(remote, "up"),
                watch: stagingDir,
                left: /^\.tb-[0-9a-f]{12}$/
              },
              {
                kind: "upload",
                from: path.join(local, "tree"),
                to: path.join(remote, "uptree"),
                watch: stagingDir,
                left: /^\.tb-[0-9a-f]{12}$/
              },
              {
                kind: "download",
                from: path.join(remote, "big"),
                to: path.join(local, "down"),
                watch: local,
                left: /^\.down\.tb-[0-9a-f]{12}\.part$/
              },
              {
                kind: "download",
                from: path.join(remote, "tree"),
                to: path.join(local, "downtree"),
                watch: local,
                left: /^\.downtree\.tb-[0-9a-f]{12}$/
              }
            ]
            for (const { from, kind, left, to, watch } of cases) {
              const child = spawn(process.execPath, [
                program,
                JSON.stringify({ host, remoteTempDir: stagingDir, ...connection }),
                kind,
                from,
                to
              ], { stdio: "ignore" })
              const exited = new Promise((resolve) => child.once("exit", resolve))
              // Killed once some content has arrived: the transfer is under way.
              const partial = () =>
                fs.readdirSync(watch).filter((name) => left.test(name)).some((name) =>
                  hasContent(path.join(watch, name))
                )
              for (let i = 0; i < 1500 && !partial(); i++) yield* Effect.sleep("20 millis")
              assert.isTrue(partial(), `${kind} of ${from}: the transfer never started`)
              child.kill("SIGKILL")
              yield* Effect.promise(() => exited)
              // Time for sshd to see the connection gone and end the session.
              yield* Effect.sleep("2 seconds")
              const leftBehind = fs.readdirSync(watch).filter((name) => name.includes(".tb-"))
              assert.strictEqual(leftBehind.length, 1, `${kind} of ${from}: ${leftBehind.join(" ")}`)
              assert.match(leftBehind[0]!, left, from)
              assert.deepStrictEqual(found(watch), [path.join(watch, leftBehind[0]!)], from)
              assert.isFalse(fs.existsSync(to), `${kind} of ${from}: the target appeared`)
              fs.rmSync(path.join(watch, leftBehind[0]!), { recursive: true })
            }
          }),
        120_000
      )
    })

    describe("empty paths", () => {
      it.effect("an empty local or remote path is refused with a SettingsError naming it, before any connection", () =>
        Effect.gen(function*() {
          const { remote, local } = makeDirs()
          fs.writeFileSync(path.join(remote, "f"), "f")
          // Nothing listens there: an operation that connected would fail with a ConnectionError.
          const port = yield* closedPort()
          const cases = [
            ["upload(\"\", …)", "localPath", Transfer.upload("", path.join(remote, "x"), { port })],
            ["upload(…, \"\")", "remotePath", Transfer.upload(path.join(local), "", { port })],
            ["download(\"\", …)", "remotePath", Transfer.download("", path.join(local, "x"), { port })],
            ["download(…, \"\")", "localPath", Transfer.download(path.join(remote, "f"), "", { port })],
            ["rsyncUpload(\"\", …)", "localPath", Transfer.rsyncUpload("", remote, { port })],
            [
              "rsyncUpload(…, \"\")",
              "remotePath",
              Transfer.rsyncUpload(`${local}/`, "", { port, delete: true })
            ],
            ["rsyncDownload(\"\", …)", "remotePath", Transfer.rsyncDownload("", local, { port })],
            ["rsyncDownload(…, \"\")", "localPath", Transfer.rsyncDownload(remote + "/", "", { port })]
          ] as const
          for (const [name, argument, operation] of cases) {
            const error = failureOf(yield* Effect.exit(operation as Effect.Effect<unknown, unknown>))
            assert.instanceOf(error, SettingsError, name)
            assert.strictEqual((error as SettingsError).setting, argument, name)
            assert.include((error as SettingsError).message, "empty path", name)
          }
        }))

      it.effect("a mode that is not permission bits is refused before any connection, never cut down", () =>
        Effect.gen(function*() {
          const { local } = makeDirs()
          fs.writeFileSync(path.join(local, "f"), "f")
          const port = yield* closedPort()
          for (const mode of [Number.NaN, -1, 0o777777, 0o10000, 1.5]) {
            for (const useSudo of [false, true]) {
              const error = failureOf(
                yield* Effect.exit(
                  Transfer.upload(path.join(local, "f"), "/tmp/never", { port, mode, useSudo })
                )
              )
              assert.instanceOf(error, SettingsError, String(mode))
              assert.strictEqual((error as SettingsError).setting, "mode")
            }
          }
        }))

      it.effect("rsyncUpload with delete: true and an empty remote path leaves the login user's home alone", () =>
        Effect.gen(function*() {
          const { local } = makeDirs()
          const marker = path.join(userHome, `tbedge-marker-${process.pid}`)
          fs.writeFileSync(marker, "precious")
          fs.chownSync(marker, userUid, userUid)
          // Everything else in the home directory is excluded: only the marker could go.
          const options = [`--include=/${path.basename(marker)}`, "--exclude=/*"]
          const exit = yield* Effect.exit(Transfer.rsyncUpload(`${local}/`, "", { delete: true, options }))
          const survived = fs.existsSync(marker)
          fs.rmSync(marker, { force: true })
          assert.instanceOf(failureOf(exit), SettingsError)
          assert.isTrue(survived, "the marker in the home directory was deleted")
        }))
    })
  }
)

describe("hard links in a downloaded archive", () => {
  const archive = (...entries: Array<Tar.Entry & { readonly content?: string }>) =>
    Buffer.concat([
      ...entries.flatMap((entry) => [
        Tar.header(entry),
        Buffer.from(entry.content ?? ""),
        Tar.padding(entry.size)
      ]),
      Tar.endOfArchive()
    ])
  const dir = (name: string): Tar.Entry => ({ name, type: "directory", mode: 0o755, size: 0, mtime: 0 })
  const file = (name: string, content: string) => ({
    name,
    type: "file" as const,
    mode: 0o644,
    size: content.length,
    mtime: 0,
    content
  })
  const hardlink = (name: string, linkTarget: string): Tar.Entry => ({
    name,
    type: "hardlink",
    mode: 0o644,
    size: 0,
    mtime: 0,
    linkTarget
  })

  plainIt("a hard link that names anything but a file already in the tree is refused", () => {
    const outside = tempDir("tbedge-outside-")
    fs.writeFileSync(path.join(outside, "secret"), "secret")
    const refused = [
      path.join(outside, "secret"),
      "../secret",
      "./../secret",
      "sub",
      "link",
      "later",
      "missing"
    ]
    for (const linkTarget of refused) {
      const root = path.join(tempDir("tbedge-writer-"), "t")
      const writer = new Tree.TreeWriter(root)
      writer.open()
      const feed = () =>
        writer.push(archive(
          dir("."),
          dir("sub"),
          file("a", "a"),
          {
            name: "link",
            type: "symlink",
            mode: 0o777,
            size: 0,
            mtime: 0,
            linkTarget: path.join(outside, "secret")
          },
          hardlink("evil", linkTarget),
          file("later", "later")
        ))
      assert.throws(feed, /not a file of the tree/, linkTarget)
      writer.abandon()
      assert.isFalse(fs.existsSync(path.join(root, "evil")), linkTarget)
      assert.strictEqual(fs.statSync(path.join(outside, "secret")).nlink, 1)
    }
    const root = path.join(tempDir("tbedge-writer-"), "t")
    const writer = new Tree.TreeWriter(root)
    writer.open()
    writer.push(archive(dir("."), dir("sub"), file("sub/a", "a"), hardlink("b", "./sub/a")))
    writer.finish()
    assert.isTrue(writer.complete)
    assert.strictEqual(fs.readFileSync(path.join(root, "b"), "utf8"), "a")
  })
})
