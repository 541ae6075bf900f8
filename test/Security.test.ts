/**
 * Security properties checked against the throwaway OpenSSH server of `tests-remote/` (this
 * machine, so its files and process table can be watched): host key policy beyond
 * test/Ssh.test.ts, the permissions and lifetime of temporary files of sudo transfers, and the
 * host key options rsync's ssh gets. SECURITY.md cites these tests.
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import { afterAll, assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process"
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync
} from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import ssh2 from "ssh2"
import { ConnectionError, TransferError } from "../src/Errors.ts"
import { remote } from "../src/internal/remote/operations.ts"
import { sshCommand } from "../src/internal/transfer/rsync.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import * as Transfer from "../src/Transfer.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import { failureOf, settingsLayer } from "./support.ts"

const server = readServerFromEnv()
const temp = mkdtempSync(path.join(tmpdir(), "threadbare-security-test-"))
const serverKeyLine = readFileSync(server.knownHostsPath, "utf8").split("\n")[0]!.split(" ").slice(1).join(
  " "
)

const serverUid = Number(
  readFileSync("/etc/passwd", "utf8").split("\n").find((l) => l.startsWith(`${server.user}:`))?.split(
    ":"
  )[2] ?? -1
)
/** Where sudo uploads stage (`remoteTempDir`): this file's own, so others' transfers do not show. */
const staging = mkdtempSync(path.join(tmpdir(), "threadbare-security-staging-"))
chownSync(staging, serverUid, serverUid)

afterAll(() => {
  for (const dir of [temp, staging]) rmSync(dir, { recursive: true, force: true })
})

/** The settings of every test here: the server's user and key, strict about host keys. */
const base = settingsLayer({
  user: server.user,
  remoteTempDir: staging,
  port: server.port,
  connectAttempts: 1,
  quiet: true
})

const live = <A, E>(self: Effect.Effect<A, E, Ssh.SshConnections>) =>
  self.pipe(Effect.provide(Layer.mergeAll(Ssh.layer, base)))

const hostKeyFailure = (exit: Exit.Exit<unknown, unknown>): ConnectionError => {
  const error = failureOf(exit)
  assert.instanceOf(error, ConnectionError)
  const connection = error as ConnectionError
  assert.strictEqual(connection.reason, "host-key", connection.message)
  return connection
}

/** A fresh key pair in the temp dir; returns the private key's path. */
const newKey = (name: string, type: "ed25519" | "ecdsa" | "rsa"): string => {
  const file = path.join(temp, name)
  execFileSync("ssh-keygen", ["-q", "-t", type, "-N", "", "-C", name, "-f", file])
  return file
}

/** `<type> <base64>` of a public key file. */
const publicKey = (privateKey: string): string =>
  readFileSync(`${privateKey}.pub`, "utf8").trim().split(" ").slice(0, 2).join(" ")

const mode = (file: string): number => statSync(file).mode & 0o777

/** What the system's OpenSSH client makes of a known_hosts file: its exit code. */
const opensshConnects = (knownHosts: string, host: string, policy: "yes" | "accept-new"): number =>
  spawnSync("ssh", [
    "-F",
    "/dev/null",
    "-p",
    String(server.port),
    "-l",
    server.user,
    "-i",
    server.keyPath,
    "-o",
    "BatchMode=yes",
    "-o",
    `UserKnownHostsFile=${knownHosts}`,
    "-o",
    `StrictHostKeyChecking=${policy}`,
    host,
    "true"
  ], { stdio: "ignore", timeout: 30_000 }).status ?? -1

describe("host key policy", () => {
  it.live("a key of another type than the one recorded is refused under accept-new, as OpenSSH refuses it", () =>
    live(Effect.gen(function*() {
      // The server presents ssh-ed25519; the file knows the host by an ECDSA key only, as it
      // would after a man in the middle who has only other key types answered instead.
      const file = path.join(temp, "known_hosts_other_type")
      const recorded = `[127.0.0.7]:${server.port} ${publicKey(newKey("other-type", "ecdsa"))}\n`
      writeFileSync(file, recorded)
      for (const hostKeyPolicy of ["accept-new", "strict"] as const) {
        const error = hostKeyFailure(
          yield* Effect.exit(
            remote("true", { host: "127.0.0.7" }).pipe(
              Settings.settings({ knownHostsFile: file, hostKeyPolicy })
            )
          )
        )
        assert.include(error.detail, `${file} line 1`)
      }
      assert.strictEqual(readFileSync(file, "utf8"), recorded, "nothing was recorded")
      // OpenSSH itself refuses this file under accept-new.
      assert.strictEqual(opensshConnects(file, "127.0.0.7", "accept-new"), 255)
    })))

  it.live("a changed key of the same type is refused under accept-new and the file stays as it was", () =>
    live(Effect.gen(function*() {
      const file = path.join(temp, "known_hosts_changed")
      const recorded = `# comment\n[127.0.0.8]:${server.port} ${publicKey(newKey("changed", "ed25519"))}\n`
      writeFileSync(file, recorded)
      const error = hostKeyFailure(
        yield* Effect.exit(
          remote("true", { host: "127.0.0.8" }).pipe(
            Settings.settings({ knownHostsFile: file, hostKeyPolicy: "accept-new" })
          )
        )
      )
      assert.include(error.detail, "differs")
      assert.strictEqual(readFileSync(file, "utf8"), recorded)
    })))

  it.live("a @revoked key is refused under accept-new, also when another line accepts it", () =>
    live(Effect.gen(function*() {
      const file = path.join(temp, "known_hosts_revoked")
      writeFileSync(
        file,
        `[127.0.0.9]:${server.port} ${serverKeyLine}\n@revoked * ${serverKeyLine}\n`
      )
      const error = hostKeyFailure(
        yield* Effect.exit(
          remote("true", { host: "127.0.0.9" }).pipe(
            Settings.settings({ knownHostsFile: file, hostKeyPolicy: "accept-new" })
          )
        )
      )
      assert.include(error.detail, "@revoked")
      assert.include(error.detail, "line 2")
    })))

  it.live("hashed entries (ssh-keygen -H) are honoured: known under strict, a changed one refused", () =>
    live(Effect.gen(function*() {
      const file = path.join(temp, "known_hosts_hashed")
      writeFileSync(
        file,
        `[127.0.0.10]:${server.port} ${serverKeyLine}\n` +
          `[127.0.0.11]:${server.port} ${publicKey(newKey("hashed-changed", "ed25519"))}\n`
      )
      execFileSync("ssh-keygen", ["-q", "-H", "-f", file], { stdio: "ignore" })
      const hashed = readFileSync(file, "utf8")
      assert.notInclude(hashed, "127.0.0.1", "the names are hashed")
      assert.match(hashed, /^\|1\|/)
      const ok = yield* remote("echo ok", { host: "127.0.0.10" }).pipe(
        Settings.settings({ knownHostsFile: file })
      )
      assert.strictEqual(ok.stdout, "ok\n")
      hostKeyFailure(
        yield* Effect.exit(
          remote("true", { host: "127.0.0.11" }).pipe(
            Settings.settings({ knownHostsFile: file, hostKeyPolicy: "accept-new" })
          )
        )
      )
      assert.strictEqual(readFileSync(file, "utf8"), hashed)
    })))

  it.live("a host name in other case is the same host: a changed key under a hashed entry is still refused", () =>
    live(Effect.gen(function*() {
      const file = path.join(temp, "known_hosts_hashed_case")
      writeFileSync(file, `[localhost]:${server.port} ${publicKey(newKey("hashed-case", "ed25519"))}\n`)
      execFileSync("ssh-keygen", ["-q", "-H", "-f", file], { stdio: "ignore" })
      rmSync(`${file}.old`, { force: true })
      const hashed = readFileSync(file, "utf8")
      for (const host of ["localhost", "LocalHost", "LOCALHOST", "localhost"]) {
        hostKeyFailure(
          yield* Effect.exit(
            remote("true", { host }).pipe(
              Settings.settings({ knownHostsFile: file, hostKeyPolicy: "accept-new" })
            )
          )
        )
        // Nothing learned under another spelling that a later connection could match.
        assert.strictEqual(readFileSync(file, "utf8"), hashed, host)
      }
      // OpenSSH agrees: the key changed, whatever the case.
      assert.notStrictEqual(opensshConnects(file, "LocalHost", "accept-new"), 0)
    })))

  it.live("strict refuses an unknown host and creates no file", () =>
    live(Effect.gen(function*() {
      const file = path.join(temp, "strict-home", ".ssh", "known_hosts")
      hostKeyFailure(
        yield* Effect.exit(
          remote("true", { host: "127.0.0.12" }).pipe(
            Settings.settings({ knownHostsFile: file, hostKeyPolicy: "strict" })
          )
        )
      )
      assert.isFalse(existsSync(path.join(temp, "strict-home")))
    })))

  it.live("accept-new under the default ~/.ssh/known_hosts: creates ~/.ssh 0700 and the file 0600, one line for concurrent first contacts", () =>
    Effect.gen(function*() {
      const home = path.join(temp, "home")
      mkdirSync(home, { mode: 0o755 })
      const previous = process.env["HOME"]
      yield* Effect.acquireRelease(
        Effect.sync(() => void (process.env["HOME"] = home)),
        () => Effect.sync(() => void (process.env["HOME"] = previous))
      )
      const results = yield* Effect.all(
        Array.from({ length: 6 }, () =>
          remote("echo ok", { host: "127.0.0.13" }).pipe(
            Settings.settings({
              knownHostsFile: Settings.defaults.knownHostsFile,
              hostKeyPolicy: "accept-new"
            }),
            // separate layers: separate connections, all learning the key at once
            Effect.provide(Layer.fresh(Ssh.layer))
          )),
        { concurrency: "unbounded" }
      ).pipe(Effect.provide(base))
      assert.deepStrictEqual(results.map((r) => r.stdout), Array(6).fill("ok\n"))
      const file = path.join(home, ".ssh", "known_hosts")
      assert.strictEqual(mode(path.join(home, ".ssh")), 0o700)
      assert.strictEqual(mode(file), 0o600)
      assert.strictEqual(readFileSync(file, "utf8"), `[127.0.0.13]:${server.port} ${serverKeyLine}\n`)
    }))

  it.live("a host known by one of its key types is checked with that type (ssh2 server with ECDSA and Ed25519 keys)", () =>
    Effect.gen(function*() {
      const ecdsa = newKey("dual-ecdsa", "ecdsa")
      const ed25519 = newKey("dual-ed25519", "ed25519")
      const dual = new ssh2.Server(
        { hostKeys: [readFileSync(ecdsa), readFileSync(ed25519)] },
        (client) => {
          client.on("error", () => {})
          client.on("authentication", (ctx) => ctx.accept())
        }
      )
      const port = yield* Effect.acquireRelease(
        Effect.callback<number>((resume) => {
          dual.listen(0, "127.0.0.1", () => resume(Effect.succeed((dual.address() as { port: number }).port)))
        }),
        () => Effect.callback<void>((resume) => void dual.close(() => resume(Effect.void)))
      )
      const connect = (knownHostsFile: string, hostKeyPolicy: Settings.HostKeyPolicy) =>
        Effect.scoped(Effect.gen(function*() {
          const ssh = yield* Ssh.SshConnections
          const current = yield* Settings.Settings
          yield* ssh.connect(
            Settings.apply(current, { host: `127.0.0.1:${port}`, knownHostsFile, hostKeyPolicy })
          )
        })).pipe(Effect.provide(Layer.mergeAll(Ssh.layer, base)), Effect.exit)
      for (const [name, key] of [["ecdsa", ecdsa], ["ed25519", ed25519]] as const) {
        const file = path.join(temp, `known_hosts_dual_${name}`)
        const recorded = `[127.0.0.1]:${port} ${publicKey(key)}\n`
        writeFileSync(file, recorded)
        const exit = yield* connect(file, "strict")
        assert.isTrue(
          Exit.isSuccess(exit),
          `known by its ${name} key: ${Exit.isFailure(exit) ? Cause.pretty(exit.cause) : ""}`
        )
        assert.strictEqual(readFileSync(file, "utf8"), recorded)
      }
      // Unknown: the first type of ssh2's preference is recorded.
      const fresh = path.join(temp, "known_hosts_dual_fresh")
      assert.isTrue(Exit.isSuccess(yield* connect(fresh, "accept-new")))
      assert.strictEqual(readFileSync(fresh, "utf8"), `[127.0.0.1]:${port} ${publicKey(ed25519)}\n`)
    }))
})

// -- temporary files of sudo transfers ------------------------------------------------------------

interface Seen {
  readonly file: string
  readonly mode: string
  readonly owner: string
  readonly size: number
}

/**
 * Watches the files matching `globs` (and processes whose command line holds `process`) from a
 * shell loop of its own, independent of this process's event loop, until the returned stop is
 * called. Each sighting: `path|mode|owner|size`, or `P|user|args` for a process.
 */
const watch = (globs: ReadonlyArray<string>, processPattern?: string) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const log = path.join(temp, `watch-${Math.random().toString(36).slice(2)}.log`)
      const script =
        `while :; do for f in ${globs.join(" ")}; do [ -e "$f" ] && stat -c '%n|%a|%U|%s' -- "$f"; done` +
        (processPattern === undefined
          ? ""
          : `; ps -eo user=,args= | grep -F -e "$1" | grep -v -e grep -e 'ps -eo' | sed 's/^ *\\([^ ]*\\) */P|\\1|/'`) +
        `; done 2>/dev/null`
      const child: ChildProcess = spawn("bash", ["-c", script, "watch", processPattern ?? ""], {
        stdio: ["ignore", "pipe", "ignore"]
      })
      let text = ""
      child.stdout!.on("data", (chunk: Buffer) => void (text += chunk.toString()))
      return { child, log, sightings: () => text }
    }),
    ({ child }) => Effect.sync(() => void child.kill("SIGKILL"))
  )

const parse = (text: string) => {
  const files: Array<Seen> = []
  const processes: Array<{ readonly user: string; readonly args: string }> = []
  for (const line of text.split("\n")) {
    const fields = line.split("|")
    if (fields[0] === "P" && fields.length >= 3) {
      processes.push({ user: fields[1]!, args: fields.slice(2).join("|") })
    } else if (fields.length === 4) {
      files.push({ file: fields[0]!, mode: fields[1]!, owner: fields[2]!, size: Number(fields[3]) })
    }
  }
  return { files, processes }
}

const big = 160 * 1024 * 1024 + 7
const sudoHost = { host: `127.0.0.14`, useSudo: true } as const

describe("temporary files of sudo transfers", () => {
  it.live("upload: staged in a private 0700 dir of the login user (file 0600), placed via a root-owned 0600 file, nothing left", () =>
    live(Effect.scoped(Effect.gen(function*() {
      // A directory only root can enter, on the server (this machine).
      const dir = mkdtempSync(path.join(temp, "root-only-up-"))
      chmodSync(dir, 0o700)
      const source = path.join(temp, "big-upload.bin")
      writeFileSync(source, Buffer.alloc(big, 1))
      const watcher = yield* watch([
        `${staging}/.tb-*`,
        `${staging}/.tb-*/data`,
        `${dir}/.*.tb-*.part`,
        `${dir}/.*.tb-*.part/f`
      ])
      yield* Effect.sleep("100 millis")
      const placed = yield* Transfer.upload(source, `${dir}/big.bin`, { ...sudoHost, mode: 0o640 })
      yield* Effect.sleep("100 millis")
      const { files } = parse(watcher.sightings())
      assert.strictEqual(placed, `${dir}/big.bin`)

      // Ours: the staging directories whose data grew past a size no other test uploads.
      const stages = new Set(
        files.filter((s) => s.file.endsWith("/data") && s.size > 64 * 1024 * 1024).map((s) =>
          path.dirname(s.file)
        )
      )
      assert.isAbove(stages.size, 0, "the staging directory was seen while the upload ran")
      for (const s of files.filter((s) => stages.has(s.file))) {
        assert.deepStrictEqual([s.mode, s.owner], ["700", server.user], s.file)
      }
      for (const s of files.filter((s) => stages.has(path.dirname(s.file)))) {
        assert.deepStrictEqual([s.mode, s.owner], ["600", server.user], s.file)
      }
      // Beside the target: a private directory of root's, and in it the file being written.
      const parts = files.filter((s) => s.file.startsWith(`${dir}/`) && !s.file.endsWith("/f"))
      const inside = files.filter((s) => s.file.startsWith(`${dir}/`) && s.file.endsWith("/f"))
      assert.isAbove(parts.length, 0, "the temporary directory beside the target was seen")
      for (const s of parts) assert.deepStrictEqual([s.mode, s.owner], ["700", "root"], s.file)
      for (const s of inside) {
        assert.strictEqual(s.owner, "root")
        assert.include(["600", "640"], s.mode, `${s.file} is private until it is complete`)
      }
      assert.isTrue(inside.some((s) => s.mode === "600" && s.size < big), "seen while being written")

      for (const stage of stages) assert.isFalse(existsSync(stage), `${stage} removed`)
      assert.deepStrictEqual(readdirSync(dir), ["big.bin"])
      const info = statSync(`${dir}/big.bin`)
      assert.deepStrictEqual([info.mode & 0o777, info.uid, info.size], [0o640, 0, big])
    }))))

  it.live("upload: a name planted beside the target (a symlink to another file) is never followed", () =>
    live(Effect.scoped(Effect.gen(function*() {
      // Someone who can write in the target's directory learns the transfer's id from the
      // staging directory's name in /tmp and plants the temporary name as a symlink.
      const dir = mkdtempSync(path.join(temp, "shared-dir-"))
      const victim = path.join(mkdtempSync(path.join(temp, "victim-")), "victim")
      writeFileSync(victim, "precious\n", { mode: 0o600 })
      const source = path.join(temp, "big-planted.bin")
      writeFileSync(source, Buffer.alloc(big, 4))
      const before = new Set(readdirSync(staging).filter((n) => n.startsWith(".tb-")))
      const fiber = yield* Effect.forkChild(Effect.exit(Transfer.upload(source, `${dir}/big.bin`, sudoHost)))
      let planted = ""
      for (let i = 0; i < 1000 && planted === ""; i++) {
        for (const name of readdirSync(staging)) {
          if (!name.startsWith(".tb-") || before.has(name)) continue
          const data = `${staging}/${name}/data`
          if (existsSync(data) && statSync(data).size > 1024 * 1024) {
            planted = `${dir}/.big.bin${name}.part`
            symlinkSync(victim, planted)
          }
        }
        if (planted === "") yield* Effect.sleep("5 millis")
      }
      assert.notStrictEqual(planted, "", "the staging directory was seen in time")
      const exit = yield* Fiber.join(fiber)
      assert.strictEqual(statSync(victim).size, 9, "the symlink was not followed")
      assert.strictEqual(readFileSync(victim, "utf8"), "precious\n")
      assert.isTrue(Exit.isFailure(exit), "the upload stops rather than write through the planted name")
      assert.instanceOf(failureOf(exit), TransferError)
    }))))

  it.live("download: streamed by `sudo cat` (no copy on the server); the local temporary file is 0600", () =>
    live(Effect.scoped(Effect.gen(function*() {
      const dir = mkdtempSync(path.join(temp, "root-only-down-"))
      chmodSync(dir, 0o700)
      const source = path.join(dir, "secret.bin")
      writeFileSync(source, Buffer.alloc(big, 2), { mode: 0o600 })
      const local = mkdtempSync(path.join(temp, "download-"))
      const watcher = yield* watch(
        [`${staging}/.tb-*`, `${staging}/.tb-*/data`, `${local}/.*.tb-*.part`],
        source
      )
      yield* Effect.sleep("100 millis")
      const written = yield* Transfer.download(source, `${local}/secret.bin`, sudoHost)
      yield* Effect.sleep("100 millis")
      const { files, processes } = parse(watcher.sightings())
      assert.strictEqual(written, `${local}/secret.bin`)

      assert.isTrue(
        processes.some((p) => p.user === "root" && p.args === `cat -- ${source}`),
        `the file is read by root's cat: ${JSON.stringify(processes.slice(0, 5))}`
      )
      assert.isFalse(
        files.some((s) => s.file.startsWith(`${staging}/.tb-`) && s.size > 64 * 1024 * 1024),
        "no staged copy on the server"
      )
      const parts = files.filter((s) => s.file.startsWith(`${local}/`))
      assert.isAbove(parts.length, 0, "the local temporary file was seen")
      for (const s of parts) assert.deepStrictEqual([s.mode, s.owner], ["600", "root"], s.file)
      assert.deepStrictEqual(readdirSync(local), ["secret.bin"])
      const info = statSync(`${local}/secret.bin`)
      assert.deepStrictEqual([info.mode & 0o777, info.size], [0o600, big])
    }))))

  it.live("an interrupted sudo upload leaves no staging directory and no temporary file", () =>
    live(Effect.scoped(Effect.gen(function*() {
      const dir = mkdtempSync(path.join(temp, "root-only-int-"))
      chmodSync(dir, 0o700)
      const source = path.join(temp, "big-interrupted.bin")
      writeFileSync(source, Buffer.alloc(big, 3))
      const watcher = yield* watch([`${staging}/.tb-*/data`, `${dir}/.*.tb-*.part`])
      const fiber = yield* Effect.forkChild(Transfer.upload(source, `${dir}/big.bin`, sudoHost))
      // Interrupt once the staged data is well on its way.
      for (let i = 0; i < 200; i++) {
        const seen = parse(watcher.sightings()).files
        if (seen.some((s) => s.file.endsWith("/data") && s.size > 16 * 1024 * 1024)) break
        yield* Effect.sleep("10 millis")
      }
      const exit = yield* Fiber.interrupt(fiber).pipe(Effect.andThen(Fiber.await(fiber)))
      assert.isTrue(Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause), "interrupted, not finished")
      const stages = new Set(
        parse(watcher.sightings()).files.filter((s) => s.file.endsWith("/data") && s.size > 16 * 1024 * 1024)
          .map((s) => path.dirname(s.file))
      )
      assert.isAbove(stages.size, 0)
      for (const stage of stages) assert.isFalse(existsSync(stage), `${stage} removed`)
      assert.deepStrictEqual(readdirSync(dir), [])
    }))))
})

// -- rsync ----------------------------------------------------------------------------------------

describe("rsync's ssh", () => {
  it.live("gets the known_hosts file and StrictHostKeyChecking of the policy, in batch mode, with no ssh_config", () =>
    Effect.gen(function*() {
      const ssh = yield* Ssh.SshConnections
      const target = (hostKeyPolicy: Settings.HostKeyPolicy) =>
        ssh.resolve(Settings.apply(Settings.defaults, {
          host: "deploy@web-1:2200",
          keyFile: server.keyPath,
          knownHostsFile: "/path with space/known_hosts",
          hostKeyPolicy,
          sshConfigFile: false,
          useAgent: false
        }))
      const strict = sshCommand(yield* target("strict"), 10)
      assert.strictEqual(
        strict,
        // Each option quoted twice: once for rsync's own splitting of -e, once (double quotes) for
        // ssh's reading of the option's value. No global known_hosts, no rewriting of the file.
        `ssh -F /dev/null -p 2200 -l deploy -o BatchMode=yes -o 'UserKnownHostsFile="/path with space/known_hosts"' ` +
          `-o GlobalKnownHostsFile=/dev/null -o UpdateHostKeys=no -o StrictHostKeyChecking=yes -o ConnectTimeout=10 ` +
          `-o 'IdentityFile="${server.keyPath}"' -o IdentitiesOnly=yes`
      )
      assert.include(sshCommand(yield* target("accept-new"), 10), "-o StrictHostKeyChecking=accept-new ")
    }).pipe(Effect.provide(Ssh.layer)))

  it.live("a real rsync refuses an unknown host under strict, and a key of another type under accept-new", () =>
    Effect.gen(function*() {
      const sourceDir = mkdtempSync(path.join(temp, "rsync-src-"))
      writeFileSync(path.join(sourceDir, "a.txt"), "a\n")
      const rsync = (knownHostsFile: string, hostKeyPolicy: Settings.HostKeyPolicy) =>
        Transfer.rsyncUpload(`${sourceDir}/`, `/tmp/threadbare-security-rsync-${process.pid}/`, {
          host: "127.0.0.15"
        }).pipe(
          Settings.settings({ knownHostsFile, hostKeyPolicy }),
          Effect.provide(Layer.mergeAll(NodeServices.layer, Ssh.layer, base)),
          Effect.exit
        )
      const unknown = path.join(temp, "rsync_known_hosts_unknown")
      writeFileSync(unknown, "")
      const strict = failureOf(yield* rsync(unknown, "strict"))
      assert.instanceOf(strict, TransferError)
      assert.strictEqual((strict as TransferError).reason, "rsync")
      assert.strictEqual(readFileSync(unknown, "utf8"), "")

      const otherType = path.join(temp, "rsync_known_hosts_other_type")
      const recorded = `[127.0.0.15]:${server.port} ${publicKey(newKey("rsync-other-type", "ecdsa"))}\n`
      writeFileSync(otherType, recorded)
      const refused = failureOf(yield* rsync(otherType, "accept-new"))
      assert.instanceOf(refused, TransferError)
      assert.strictEqual(readFileSync(otherType, "utf8"), recorded)

      // and with the right key it goes through
      const known = path.join(temp, "rsync_known_hosts_known")
      writeFileSync(known, `[127.0.0.15]:${server.port} ${serverKeyLine}\n`)
      assert.isTrue(Exit.isSuccess(yield* rsync(known, "strict")))
      spawnSync("rm", ["-rf", `/tmp/threadbare-security-rsync-${process.pid}`])
    }))
})
