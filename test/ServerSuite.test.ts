/**
 * One table of what a deploy does on a host beyond a plain command (signals, sudo, many commands
 * at once, file and tree transfers both ways, plain and through sudo, and all of it mixed on one
 * connection) run against every SSH server the tests start: OpenSSH (login shell bash) and
 * Dropbear (login shell /bin/sh, dash here), each with the default `/bin/bash -c` and with
 * `/bin/sh -c`. The commands' own table, shared with local processes, is CommandSuite.test.ts.
 *
 * Against Dropbear, every case also checks the server's log: the Dropbear of Debian 12 (2022.83)
 * dies on an assertion when one channel is opened while another one's process ends (see
 * src/internal/ssh/serverQuirks.ts), which the library must never provoke.
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import { afterAll, assert, describe, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import { createHash, randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { CommandFailed } from "../src/Errors.ts"
import * as Operations from "../src/Operations.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import * as Transfer from "../src/Transfer.ts"
import { readDropbearFromEnv } from "../tests-remote/dropbear-server.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import {
  connectionSettings,
  dirPairs,
  failureOf,
  tempDirs,
  uid,
  uniqueMarker,
  waitForProcesses
} from "./support.ts"

const openssh = readServerFromEnv()
const dropbear = readDropbearFromEnv()
const { made, tempDir } = tempDirs()
afterAll(() => {
  for (const dir of made) fs.rmSync(dir, { recursive: true, force: true })
})

interface Server {
  readonly name: string
  readonly user: string
  readonly port: number
  readonly keyFile: string
  readonly knownHostsFile: string
  /** Lines of the server's log that say it died on an assertion. */
  readonly assertions: () => ReadonlyArray<string>
}

const servers: ReadonlyArray<Server> = [
  {
    name: "OpenSSH",
    user: openssh.user,
    port: openssh.port,
    keyFile: openssh.keyPath,
    knownHostsFile: openssh.knownHostsPath,
    assertions: () => []
  },
  ...(dropbear === undefined ? [] : [{
    name: "Dropbear",
    user: dropbear.user,
    port: dropbear.port,
    keyFile: dropbear.keyPath,
    knownHostsFile: dropbear.knownHostsPath,
    assertions: () => dropbear.readLog().split("\n").filter((line) => line.includes("Failed assertion"))
  }])
]

interface Transport {
  readonly name: string
  readonly server: Server
  /** Around an effect: this server, user and shell, on a connection of the suite's layer. */
  readonly on: <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** A remote directory the login user owns, and a local one. */
  readonly dirs: () => { readonly remote: string; readonly local: string }
}

const transports: ReadonlyArray<Transport> = servers.flatMap((server) =>
  ["/bin/bash -c", "/bin/sh -c"].map((shell): Transport => ({
    name: `${server.name}, ${shell}`,
    server,
    on: Settings.settings({
      ...connectionSettings(openssh),
      keyFile: server.keyFile,
      knownHostsFile: server.knownHostsFile,
      shell,
      quiet: true,
      host: `${server.user}@127.0.0.1:${server.port}`
    }),
    dirs: dirPairs(tempDir, "tb-servers-", uid(server.user))
  }))
)

const sha = (data: Uint8Array | string) => createHash("sha256").update(data).digest("hex")

/** A small tree: nested directories, an empty file, a binary one, a name with a space. */
const makeTree = (root: string): void => {
  fs.mkdirSync(path.join(root, "a", "b c"), { recursive: true })
  fs.writeFileSync(path.join(root, "empty"), "")
  fs.writeFileSync(path.join(root, "a", "bin"), randomBytes(70_000))
  fs.writeFileSync(path.join(root, "a", "b c", "text"), "line one\nline two\n")
}

/** Every file under `root` with its content's hash, by relative path. */
const contents = (root: string): Record<string, string> => {
  const out: Record<string, string> = {}
  const visit = (dir: string, prefix: string) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const rel = prefix === "" ? entry.name : `${prefix}/${entry.name}`
      if (entry.isDirectory()) visit(path.join(dir, entry.name), rel)
      else out[rel] = sha(fs.readFileSync(path.join(dir, entry.name)))
    }
  }
  visit(root, "")
  return out
}

interface Case {
  readonly name: string
  readonly check: (
    t: Transport
  ) => Effect.Effect<void, unknown, Ssh.SshConnections | NodeServices.NodeServices>
}

const cases: ReadonlyArray<Case> = [
  {
    name: "a command killed by a signal fails with CommandFailed naming the signal",
    check: (t) =>
      Effect.gen(function*() {
        const error = failureOf(yield* Effect.exit(t.on(Operations.remote("echo before; kill -KILL $$"))))
        assert.instanceOf(error, CommandFailed)
        assert.strictEqual((error as CommandFailed).result.signal, "SIGKILL")
        assert.strictEqual((error as CommandFailed).result.exitCode, null)
        assert.strictEqual((error as CommandFailed).result.stdout, "before\n")
      })
  },
  {
    name: "sudo runs as root, and as another user with sudoUser",
    check: (t) =>
      Effect.gen(function*() {
        const root = yield* t.on(Operations.remote("id -u", { useSudo: true }))
        assert.strictEqual(root.stdout.trim(), "0")
        const other = yield* t.on(Operations.remote("id -un", { useSudo: true, sudoUser: "nobody" }))
        assert.strictEqual(other.stdout.trim(), "nobody")
      })
  },
  {
    name: "a timeout under sudo stops the remote process",
    check: (t) =>
      Effect.gen(function*() {
        const mark = uniqueMarker("suite-sudo-timeout")
        const exit = yield* Effect.exit(
          t.on(Operations.remote(`sleep 60; echo ${mark}`, { useSudo: true, timeout: "1 second" }))
        )
        assert.isTrue(Exit.isFailure(exit))
        assert.isTrue(yield* waitForProcesses(mark, false), "the command still runs on the server")
      })
  },
  {
    name: "100 commands at once on one connection",
    check: (t) =>
      Effect.gen(function*() {
        const results = yield* t.on(
          Effect.all(Array.from({ length: 100 }, (_, i) => Operations.remote(`echo ${i}`)), {
            concurrency: "unbounded"
          })
        )
        assert.deepStrictEqual(results.map((r) => r.stdout), Array.from({ length: 100 }, (_, i) => `${i}\n`))
      })
  },
  {
    name: "a file up and down, and content from memory, byte for byte",
    check: (t) =>
      Effect.gen(function*() {
        const { local, remote } = t.dirs()
        const data = randomBytes(3 * 1024 * 1024 + 17)
        fs.writeFileSync(path.join(local, "blob"), data)
        yield* t.on(Transfer.upload(path.join(local, "blob"), path.join(remote, "blob")))
        assert.strictEqual(sha(fs.readFileSync(path.join(remote, "blob"))), sha(data))
        yield* t.on(Transfer.download(path.join(remote, "blob"), path.join(local, "back")))
        assert.strictEqual(sha(fs.readFileSync(path.join(local, "back"))), sha(data))
        yield* t.on(Transfer.upload({ content: "from memory\n" }, path.join(remote, "memory")))
        const bytes = yield* t.on(Transfer.download(path.join(remote, "memory")))
        assert.strictEqual(new TextDecoder().decode(bytes), "from memory\n")
      })
  },
  {
    name: "a tree up and down, three times over on one connection",
    check: (t) =>
      Effect.gen(function*() {
        const { local, remote } = t.dirs()
        makeTree(path.join(local, "tree"))
        const expected = contents(path.join(local, "tree"))
        for (let round = 0; round < 3; round++) {
          yield* t.on(Transfer.upload(path.join(local, "tree"), path.join(remote, `tree-${round}`)))
          assert.deepStrictEqual(contents(path.join(remote, `tree-${round}`)), expected, `upload ${round}`)
          yield* t.on(
            Transfer.download(path.join(remote, `tree-${round}`), path.join(local, `back-${round}`))
          )
          assert.deepStrictEqual(contents(path.join(local, `back-${round}`)), expected, `download ${round}`)
        }
      })
  },
  {
    name: "through sudo: a file into a root-owned place and back, and a tree",
    check: (t) =>
      Effect.gen(function*() {
        const { local, remote } = t.dirs()
        const rootDir = path.join(remote, "root-only")
        fs.mkdirSync(rootDir, { mode: 0o700 })
        const data = randomBytes(200_000)
        fs.writeFileSync(path.join(local, "blob"), data)
        yield* t.on(Transfer.upload(path.join(local, "blob"), path.join(rootDir, "blob"), { useSudo: true }))
        const placed = fs.statSync(path.join(rootDir, "blob"))
        assert.strictEqual(placed.uid, 0)
        assert.strictEqual(sha(fs.readFileSync(path.join(rootDir, "blob"))), sha(data))
        const bytes = yield* t.on(Transfer.download(path.join(rootDir, "blob"), undefined, { useSudo: true }))
        assert.strictEqual(sha(bytes), sha(data))
        makeTree(path.join(local, "tree"))
        yield* t.on(Transfer.upload(path.join(local, "tree"), path.join(rootDir, "tree"), { useSudo: true }))
        assert.deepStrictEqual(contents(path.join(rootDir, "tree")), contents(path.join(local, "tree")))
      })
  },
  {
    name: "commands, transfers and timeouts mixed on one connection, five rounds",
    check: (t) =>
      Effect.gen(function*() {
        const { local, remote } = t.dirs()
        makeTree(path.join(local, "tree"))
        const expected = contents(path.join(local, "tree"))
        fs.writeFileSync(path.join(remote, "file"), "data\n")
        for (let round = 0; round < 5; round++) {
          const exits = yield* t.on(Effect.all(
            [
              ...Array.from({ length: 8 }, (_, i) => Operations.remote(`echo ${i}`)),
              ...Array.from({ length: 2 }, (_, i) =>
                Transfer.upload(path.join(local, "tree"), path.join(remote, `t-${round}-${i}`))),
              ...Array.from({ length: 2 }, () =>
                Transfer.download(path.join(remote, "file"), undefined, { useSudo: true })),
              ...Array.from({ length: 2 }, () =>
                Operations.remote("sleep 30").pipe(Effect.timeout("100 millis"), Effect.ignore))
            ].map((job) =>
              Effect.exit(job as Effect.Effect<unknown, unknown, Ssh.SshConnections>)
            ),
            { concurrency: "unbounded" }
          ))
          const failed = exits.filter(Exit.isFailure).map((exit) =>
            String(exit.cause).slice(0, 300)
          )
          assert.deepStrictEqual(failed, [], `round ${round}`)
          for (let i = 0; i < 2; i++) {
            assert.deepStrictEqual(contents(path.join(remote, `t-${round}-${i}`)), expected)
          }
        }
      })
  }
]

layer(Layer.mergeAll(Ssh.layer, NodeServices.layer), { timeout: "180 seconds", excludeTestServices: true })(
  "server suite",
  (it) => {
    for (const t of transports) {
      describe(t.name, () => {
        for (const c of cases) {
          it.effect(c.name, () =>
            Effect.gen(function*() {
              const before = t.server.assertions().length
              yield* c.check(t)
              assert.deepStrictEqual(
                t.server.assertions().slice(before),
                [],
                "the server died on an assertion"
              )
            }))
        }
      })
    }
    it.effect("every server of the table was started", () =>
      Effect.sync(() => {
        // CI installs Dropbear: the table must not shrink to OpenSSH alone without anyone noticing.
        if (process.env["CI"] !== undefined) {
          assert.deepStrictEqual(servers.map((s) => s.name), ["OpenSSH", "Dropbear"])
        }
        assert.isAtLeast(transports.length, 2)
      }))
  }
)
