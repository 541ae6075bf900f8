/**
 * Settings that cannot work are refused early: before any network I/O, with a typed
 * `SettingsError` that names the setting and says what to give instead.
 *
 * "Before any network I/O" is checked for real: the host of every case is a TCP listener of this
 * test that counts the connections made to it and never answers, so a connection attempt would
 * both show in the count and hang until `connectTimeout`. Every case must fail with no
 * connection counted, well within a second, through every operation it applies to.
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import { afterAll, assert, describe, it, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Result from "effect/Result"
import * as fs from "node:fs"
import * as net from "node:net"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { ConnectionError, SettingsError } from "../src/Errors.ts"
import { parseHostString } from "../src/internal/settings/hostString.ts"
import * as Operations from "../src/Operations.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import * as Transfer from "../src/Transfer.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import { failureOf } from "./support.ts"

const server = readServerFromEnv()

// -- a host that counts connection attempts ------------------------------------------------------

let attempts = 0
const held: Array<net.Socket> = []
const listener = net.createServer((socket) => {
  attempts++
  held.push(socket) // never answered: an SSH client would wait for the banner
})
await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve))
const listenerPort = (listener.address() as net.AddressInfo).port

const dir = fs.mkdtempSync(path.join(tmpdir(), "tbinvalid-"))
const notAKey = path.join(dir, "not-a-key")
fs.writeFileSync(notAKey, "this is not a private key\n")
const aDirectory = path.join(dir, "a-directory")
fs.mkdirSync(aDirectory)
const localFile = path.join(dir, "local-file")
fs.writeFileSync(localFile, "content\n")

afterAll(() => {
  for (const socket of held) socket.destroy()
  listener.close()
  fs.rmSync(dir, { recursive: true, force: true })
})

const base = Settings.layer({
  host: "127.0.0.1",
  port: listenerPort,
  user: server.user,
  keyFile: server.keyPath,
  knownHostsFile: path.join(dir, "known_hosts"),
  hostKeyPolicy: "strict",
  sshConfigFile: false,
  useAgent: false,
  quiet: true,
  connectTimeout: "5 seconds",
  connectAttempts: 1
})

// -- the operations ---------------------------------------------------------------------------------

type Operation = Effect.Effect<unknown, unknown, Ssh.SshConnections | NodeServices.NodeServices>

/** Every operation that connects: each must refuse a bad connection setting before connecting. */
const connecting: ReadonlyArray<readonly [string, Operation]> = [
  ["remote", Operations.remote("true")],
  ["remoteSudo", Operations.remoteSudo("true")],
  ["remoteFileExists", Operations.remoteFileExists("/")],
  ["upload", Transfer.upload({ content: "x" }, "/tmp/tbinvalid-never")],
  ["download", Transfer.download("/etc/hostname")],
  ["rsyncUpload", Transfer.rsyncUpload(localFile, "/tmp/tbinvalid-never")],
  ["rsyncDownload", Transfer.rsyncDownload("/etc/hostname", path.join(dir, "never"))]
]

/** The operations that build a command line from the settings. */
const commands: ReadonlyArray<readonly [string, Operation]> = connecting.slice(0, 3)

/** Words that say what to do: every refusal names a valid form or the fix. */
const advice = /give|write|set|use|fix|leave|create|a port is a number|needs|must|a whole number|letters/

interface Case {
  readonly name: string
  readonly setting: string
  readonly patch?: Settings.Patch
  /** Applied to the operation instead of (or besides) `patch`. */
  readonly wrap?: (self: Operation) => Operation
  readonly ops: ReadonlyArray<readonly [string, Operation]>
}

/** Runs `op` under the case and checks the refusal: typed, named, advised, early. */
const refusedEarly = (c: Case, opName: string, op: Operation) =>
  Effect.gen(function*() {
    const before = attempts
    let self = c.patch === undefined ? op : op.pipe(Settings.settings(c.patch))
    if (c.wrap !== undefined) self = c.wrap(self)
    const exit = yield* Effect.exit(self)
    const what = `${c.name} through ${opName}`
    const error = failureOf(exit)
    assert.instanceOf(error, SettingsError, `${what}: ${String(error)}`)
    if (!(error instanceof SettingsError)) return
    assert.strictEqual(error.setting, c.setting, `${what}: ${error.message}`)
    assert.include(error.message, `\`${c.setting}\``, what)
    assert.match(error.detail, advice, `${what}: the message says what to do: ${error.message}`)
    assert.strictEqual(attempts, before, `${what}: no connection may be attempted`)
  })

const port = (value: number): Case => ({
  name: `port ${value}`,
  setting: "port",
  patch: { port: value },
  ops: connecting
})

const hostString = (value: string, setting = "host"): Case => ({
  name: `host ${JSON.stringify(value)}`,
  setting,
  patch: { host: value },
  ops: connecting
})

const connectionCases: ReadonlyArray<Case> = [
  ...[0, 65536, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY].map(port),
  hostString(""),
  hostString("   "),
  hostString("web 1"),
  hostString("web\n1"),
  hostString("web-1\nrm -rf /"),
  hostString("web\t1"),
  hostString("@host"),
  hostString("user@"),
  hostString("us er@host"),
  hostString("-oProxyCommand=touch@host"),
  hostString("-oProxyCommand=x"),
  hostString("[::1"),
  hostString("[::1]x"),
  hostString("[nothex]:22"),
  hostString("a:b:c"),
  hostString("host:", "port"),
  hostString("host:abc", "port"),
  hostString("host:0", "port"),
  hostString("host:65536", "port"),
  hostString("host:-22", "port"),
  hostString("user@[::1]:abc", "port"),
  { name: "gateway with a space", setting: "gateway", patch: { gateway: "jump host" }, ops: connecting },
  { name: "user with a space", setting: "user", patch: { user: "de ploy" }, ops: connecting },
  { name: "user with a newline", setting: "user", patch: { user: "deploy\nroot" }, ops: connecting },
  {
    name: "user starting with a dash",
    setting: "user",
    patch: { user: "-oProxyCommand=x" },
    ops: connecting
  },
  { name: "empty user", setting: "user", patch: { user: "" }, ops: connecting },
  {
    name: "missing key file",
    setting: "keyFile",
    patch: { keyFile: path.join(dir, "no-such-key") },
    ops: connecting
  },
  // Root reads any file whatever its mode; a directory is unreadable as a file for everyone.
  { name: "unreadable key file", setting: "keyFile", patch: { keyFile: aDirectory }, ops: connecting },
  { name: "key file that is not a key", setting: "keyFile", patch: { keyFile: notAKey }, ops: connecting },
  {
    name: "missing ssh config file",
    setting: "sshConfigFile",
    patch: { sshConfigFile: path.join(dir, "no-such-config") },
    ops: connecting
  },
  ...[0, -1, 1.5, Number.NaN].map((n): Case => ({
    name: `connectAttempts ${n}`,
    setting: "connectAttempts",
    patch: { connectAttempts: n },
    ops: connecting
  })),
  ...[0, -3, 2.5, Number.NaN].map((n): Case => ({
    name: `maxChannels ${n}`,
    setting: "maxChannels",
    patch: { maxChannels: n },
    ops: connecting
  })),
  {
    name: "negative connectTimeout",
    setting: "connectTimeout",
    patch: { connectTimeout: -1 },
    ops: connecting
  },
  {
    name: "negative connectRetryDelay",
    setting: "connectRetryDelay",
    patch: { connectRetryDelay: "-1 second" },
    ops: connecting
  },
  {
    name: "negative keepaliveInterval",
    setting: "keepaliveInterval",
    patch: { keepaliveInterval: -5000 },
    ops: connecting
  },
  // NaN is a number, so the types let it through; read as zero it would time out at once.
  ...(["connectTimeout", "connectRetryDelay", "keepaliveInterval"] as const).map((key): Case => ({
    name: `${key} NaN`,
    setting: key,
    patch: { [key]: Number.NaN },
    ops: connecting
  }))
]

const commandCases: ReadonlyArray<Case> = [
  { name: "negative timeout", setting: "timeout", patch: { timeout: "-1 second" }, ops: commands },
  { name: "timeout NaN", setting: "timeout", patch: { timeout: Number.NaN }, ops: commands },
  ...["1X", "A-B", "A B", "", "X=Y", "A;touch x", "Ä", "A\nB"].map((name): Case => ({
    name: `env name ${JSON.stringify(name)}`,
    setting: "env",
    wrap: Settings.withEnv({ [name]: "value" }),
    ops: commands
  })),
  {
    name: "empty remote working dir",
    setting: "remoteWorkingDir",
    wrap: Settings.rcd(""),
    ops: commands
  },
  ...["", "-u", "--", "-oroot"].map((user): Case => ({
    name: `sudoUser ${JSON.stringify(user)}`,
    setting: "sudoUser",
    patch: { useSudo: true, sudoUser: user },
    ops: commands
  }))
]

layer(Layer.mergeAll(Ssh.layer, base, NodeServices.layer), {
  timeout: "120 seconds",
  excludeTestServices: true
})("invalid settings", (it) => {
  it.effect("the listener does count a real connection attempt (the check below can fail)", () =>
    Effect.gen(function*() {
      const before = attempts
      const exit = yield* Effect.exit(
        Operations.remote("true").pipe(Settings.settings({ connectTimeout: "300 millis" }))
      )
      const error = failureOf(exit)
      assert.instanceOf(error, ConnectionError)
      assert.isAbove(attempts, before)
    }))

  describe("connection settings, through every operation", () => {
    for (const c of connectionCases) {
      it.effect(
        c.name,
        () => Effect.forEach(c.ops, ([name, op]) => refusedEarly(c, name, op), { discard: true })
      )
    }
  })

  describe("command settings, through every operation that builds a command", () => {
    for (const c of commandCases) {
      it.effect(
        c.name,
        () => Effect.forEach(c.ops, ([name, op]) => refusedEarly(c, name, op), { discard: true })
      )
    }
  })

  it.effect("a negative timeout of a local command is refused before it starts", () =>
    Effect.gen(function*() {
      const marker = path.join(dir, "local-ran")
      const exit = yield* Effect.exit(Operations.local(`touch ${marker}`, { timeout: -1 }))
      const error = failureOf(exit)
      assert.instanceOf(error, SettingsError)
      assert.strictEqual((error as SettingsError).setting, "timeout")
      assert.isFalse(fs.existsSync(marker))
    }))

  it.effect("a timeout of NaN is refused before the command starts, not taken for an instant time-out", () =>
    Effect.gen(function*() {
      const marker = path.join(dir, "local-ran-nan")
      const runs: ReadonlyArray<
        Effect.Effect<unknown, unknown, Ssh.SshConnections | NodeServices.NodeServices>
      > = [
        Operations.local(`touch ${marker}`, { timeout: Number.NaN }),
        Operations.remote(`touch ${marker}`, { timeout: Number.NaN })
      ]
      for (const run of runs) {
        const error = failureOf(yield* Effect.exit(run))
        assert.instanceOf(error, SettingsError)
        assert.strictEqual((error as SettingsError).setting, "timeout")
        assert.include((error as SettingsError).detail, "not a duration")
      }
      assert.isFalse(fs.existsSync(marker))
    }))

  it.effect("a missing local working dir is refused (lcd)", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(
        Operations.remote("true").pipe(Settings.lcd(path.join(dir, "no-such-dir")))
      )
      const error = failureOf(exit)
      assert.instanceOf(error, SettingsError)
      assert.strictEqual((error as SettingsError).setting, "localWorkingDir")
      assert.match((error as SettingsError).detail, advice)
    }))

  it.effect("no host at all names the host setting and how to set it", () =>
    Effect.forEach(connecting, ([name, op]) =>
      Effect.gen(function*() {
        const error = failureOf(yield* Effect.exit(op.pipe(Settings.settings({ host: undefined }))))
        assert.instanceOf(error, SettingsError, name)
        assert.strictEqual((error as SettingsError).setting, "host", name)
        assert.include((error as SettingsError).message, "Settings.settings({ host", name)
      }), { discard: true }))
})

describe("host strings that look malformed but are valid", () => {
  it("`a@b@c` is the user `a@b` (user names may hold `@`) at host `c`", () => {
    const parsed = parseHostString("a@b@c")
    assert.isTrue(Result.isSuccess(parsed))
    if (Result.isSuccess(parsed)) {
      assert.deepStrictEqual({ ...parsed.success }, { user: "a@b", host: "c", port: undefined })
    }
  })

  it("surrounding blanks are trimmed, inner ones are not", () => {
    const parsed = parseHostString(" deploy@web-1:2222\n")
    assert.isTrue(Result.isSuccess(parsed))
    if (Result.isSuccess(parsed)) {
      assert.deepStrictEqual({ ...parsed.success }, { user: "deploy", host: "web-1", port: 2222 })
    }
  })
})
