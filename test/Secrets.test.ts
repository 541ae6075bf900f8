/**
 * Secrets never leak: realistic programs use a sudo password, a login password and a key
 * passphrase against the throwaway OpenSSH server of `tests-remote/`, succeeding and failing, and
 * every channel they could reach is searched for the secret: printed output, log messages and
 * annotations, span names, attributes and events, results and errors (message, `String`, JSON,
 * `Cause.pretty`), the output of worker processes and of a whole program, and the command lines
 * and environments of every process on the machine (which is also the server) while they run.
 * SECURITY.md cites these tests.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Redacted from "effect/Redacted"
import * as References from "effect/References"
import * as Stream from "effect/Stream"
import * as Tracer from "effect/Tracer"
import { execFileSync, spawn } from "node:child_process"
import { chmodSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import {
  CommandFailed,
  CommandTimeout,
  ConnectionError,
  SettingsError,
  TransferError
} from "../src/Errors.ts"
import * as Events from "../src/Events.ts"
import * as Operations from "../src/Operations.ts"
import * as Output from "../src/Output.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import { settingsLayer } from "./support.ts"

const server = readServerFromEnv()
const temp = mkdtempSync(path.join(tmpdir(), "threadbare-secrets-test-"))
// Read when used, not at load: the password file is rewritten when another server starts.
const sudoPasswordOf = (): string => readServerFromEnv().passwordUserPassword!
const random = (): string => Math.random().toString(36).slice(2, 12)

const base = settingsLayer({ port: server.port, connectAttempts: 1 })

const connections = Layer.mergeAll(Ssh.layer, base)

/** A root-only directory on the server (this machine). */
const rootOnlyDir = (name: string): string => {
  const dir = mkdtempSync(path.join(temp, `${name}-`))
  chmodSync(dir, 0o700)
  return dir
}

// -- what a program shows -------------------------------------------------------------------------

/** Every text a run left in a channel someone could read. */
interface Observed {
  readonly texts: Array<string>
}

/**
 * Runs `self` with printed output collected, a Logger keeping every message, cause and
 * annotation, and a Tracer keeping every span's name, attributes, events and end; adds the
 * outcome in every form a program might show it. Returns the exit.
 */
const observe = <A, E>(seen: Observed, self: Effect.Effect<A, E, Ssh.SshConnections>) =>
  Effect.gen(function*() {
    const collector = Output.makeCollector()
    const spans: Array<Tracer.Span> = []
    const tracer = Tracer.make({
      span: (options) => {
        const span = Tracer.nativeTracer.span(options)
        spans.push(span)
        return span
      }
    })
    const logger = Logger.make(({ cause, fiber, logLevel, message }) => {
      seen.texts.push(
        `${logLevel} ${String(message)} ${JSON.stringify(message)} ${Cause.pretty(cause)} ${
          JSON.stringify(fiber.getRef(References.CurrentLogAnnotations))
        }`
      )
    })
    // Every event of the program, as a consumer would see and print it.
    const exit = yield* self.pipe(
      Events.consume((events) =>
        Stream.runForEach(events, (event) => Effect.sync(() => void seen.texts.push(JSON.stringify(event))))
      ),
      Effect.withTracer(tracer),
      Effect.provide(Layer.mergeAll(Output.layerCollect(collector), Logger.layer([logger]))),
      Effect.exit
    )
    seen.texts.push(...collector.lines())
    for (const span of spans) {
      seen.texts.push(JSON.stringify([span.name, [...span.attributes.entries()]]))
      const status = span.status
      if (status._tag === "Ended" && Exit.isFailure(status.exit)) {
        seen.texts.push(Cause.pretty(status.exit.cause))
      }
      const events = (span as { readonly events?: ReadonlyArray<unknown> }).events
      if (events !== undefined) {
        seen.texts.push(JSON.stringify(events, (_, v) => typeof v === "bigint" ? String(v) : v))
      }
    }
    if (Exit.isSuccess(exit)) {
      seen.texts.push(JSON.stringify(exit.value), String(exit.value))
    } else {
      seen.texts.push(Cause.pretty(exit.cause), JSON.stringify(exit.cause))
      for (const error of Cause.prettyErrors(exit.cause)) seen.texts.push(error.message, String(error))
      const failure = Cause.findErrorOption(exit.cause)
      if (failure._tag === "Some") {
        const error = failure.value as unknown
        seen.texts.push(String(error), JSON.stringify(error), (error as Error).message ?? "")
      }
    }
    return exit
  })

const valueOf = <A, E>(exit: Exit.Exit<A, E>): A => {
  if (Exit.isSuccess(exit)) return exit.value
  throw new Error(`expected a success, got ${Cause.pretty(exit.cause)}`)
}

const errorOf = <A, E>(exit: Exit.Exit<A, E>): E => {
  if (Exit.isSuccess(exit)) throw new Error(`expected a failure, got ${JSON.stringify(exit.value)}`)
  const error = Cause.findErrorOption(exit.cause)
  if (error._tag === "None") throw new Error(`expected a typed failure, got ${Cause.pretty(exit.cause)}`)
  return error.value
}

const assertAbsent = (texts: ReadonlyArray<string>, secrets: ReadonlyArray<string>): void => {
  assert.isAbove(texts.length, 0)
  for (const secret of secrets) {
    assert.isAtLeast(secret.length, 8)
    for (const text of texts) {
      if (text.includes(secret)) assert.fail(`a secret showed up in: ${text.slice(0, 2000)}`)
    }
  }
}

// -- what the machine shows -----------------------------------------------------------------------

/**
 * Reads the command line and environment of every process on the machine every 25 ms while the
 * scope is open, keeping those that contain a secret: sudo, the shells on the server, ssh and
 * workers all run here.
 */
const watchProcesses = (secrets: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const hits: Array<string> = []
      let scans = 0
      const scan = () => {
        scans++
        for (const pid of readdirSync("/proc")) {
          if (!/^\d+$/.test(pid)) continue
          for (const part of ["cmdline", "environ"]) {
            try {
              const text = readFileSync(`/proc/${pid}/${part}`, "latin1")
              for (const secret of secrets) {
                if (text.includes(secret)) {
                  hits.push(`${pid} ${part}: ${text.replaceAll("\0", " ").slice(0, 300)}`)
                }
              }
            } catch {
              // the process ended while being read
            }
          }
        }
      }
      const timer = setInterval(scan, 25)
      return { timer, hits, scans: () => scans }
    }),
    ({ timer }) => Effect.sync(() => clearInterval(timer))
  )

// -- the tests ------------------------------------------------------------------------------------

describe("secrets", () => {
  it.live("a sudo password: remote, remoteSudo, pty, sudo transfers, failures and a timeout, right and wrong", () =>
    Effect.gen(function*() {
      const password = sudoPasswordOf()
      const wrong = `wrong-${random()}`
      const machine = yield* watchProcesses([password, wrong])
      const seen: Observed = { texts: [] }
      const dir = rootOnlyDir("sudo")
      const asTbpass = Settings.settings({
        host: `${server.passwordUser}@127.0.0.1`,
        sudoPassword: Redacted.make(password)
      })
      const run = <A, E>(self: Effect.Effect<A, E, Ssh.SshConnections>) => observe(seen, asTbpass(self))

      const sudo = valueOf(yield* run(Operations.remoteSudo("whoami; echo done")))
      assert.strictEqual(sudo.stdout, "root\ndone\n")
      const pty = valueOf(yield* run(Operations.remote("id -u", { useSudo: true, pty: true })))
      assert.strictEqual(pty.stdout.trim(), "0")
      const asOther = valueOf(yield* run(Operations.remoteSudo("whoami", { sudoUser: server.otherUser! })))
      assert.strictEqual(asOther.stdout, `${server.otherUser}\n`)
      assert.isTrue(valueOf(yield* run(Operations.remoteFileExists(dir, { useSudo: true }))))
      assert.isFalse(valueOf(yield* run(Operations.remoteFileExists(`${dir}/nothing`, { useSudo: true }))))
      // the command reads what sudo left on its input: the password must not be there
      const input = valueOf(yield* run(Operations.remoteSudo("timeout 1 cat; true")))
      assert.strictEqual(input.stdout, "")

      const file = `${dir}/config.env`
      valueOf(yield* run(Operations.upload({ content: "TOKEN=1\n" }, file, { useSudo: true, mode: 0o600 })))
      assert.strictEqual(readFileSync(file, "utf8"), "TOKEN=1\n")
      const back = valueOf(yield* run(Operations.download(file, undefined, { useSudo: true })))
      assert.strictEqual(new TextDecoder().decode(back), "TOKEN=1\n")
      const local = path.join(temp, "sudo-download.env")
      valueOf(yield* run(Operations.download(file, local, { useSudo: true })))
      assert.strictEqual(readFileSync(local, "utf8"), "TOKEN=1\n")
      valueOf(yield* run(Operations.upload({ content: "tree\n" }, `${dir}/tree`, { useSudo: true })))
      valueOf(yield* run(Operations.download(`${dir}/tree`, path.join(temp, "sudo-tree"), { useSudo: true })))

      // failures with the right password
      const failed = errorOf(yield* run(Operations.remoteSudo("echo partial; exit 3")))
      assert.instanceOf(failed, CommandFailed)
      assert.strictEqual((failed as CommandFailed).result.exitCode, 3)
      const timedOut = errorOf(
        yield* run(Operations.remoteSudo("echo started; sleep 30", { timeout: "1 second" }))
      )
      assert.instanceOf(timedOut, CommandTimeout)
      const missing = errorOf(yield* run(Operations.download(`${dir}/missing`, undefined, { useSudo: true })))
      assert.instanceOf(missing, TransferError)

      // a wrong password: every operation fails, none shows it
      const withWrong = { sudoPassword: Redacted.make(wrong) }
      const refused = errorOf(
        yield* run(Operations.remoteSudo("whoami", { ...withWrong, timeout: "30 seconds" }))
      )
      assert.instanceOf(refused, CommandFailed)
      assert.notInclude((refused as CommandFailed).result.stdout, "root")
      const refusedPty = errorOf(
        yield* run(Operations.remoteSudo("whoami", { ...withWrong, pty: true, timeout: "30 seconds" }))
      )
      assert.instanceOf(refusedPty, CommandFailed)
      const upload = errorOf(
        yield* run(Operations.upload({ content: "x" }, `${dir}/x`, { useSudo: true, ...withWrong }))
      )
      assert.instanceOf(upload, TransferError)
      assert.strictEqual((upload as TransferError).reason, "permission")
      const download = errorOf(
        yield* run(Operations.download(file, undefined, { useSudo: true, ...withWrong }))
      )
      assert.instanceOf(download, TransferError)
      assert.deepStrictEqual(readdirSync(dir).sort(), ["config.env", "tree"])

      assertAbsent(seen.texts, [password, wrong])
      assert.isTrue(seen.texts.some((t) => t.includes("Operations.remoteSudo")), "spans were recorded")
      assert.isTrue(seen.texts.some((t) => t.includes("Transfer.upload")), "transfer spans were recorded")
      assert.isTrue(seen.texts.some((t) => t.startsWith("Error ")), "failed commands were logged")
      assert.isAbove(machine.scans(), 5)
      assert.deepStrictEqual(machine.hits, [])
    }).pipe(Effect.provide(connections)))

  it.live("a login password: connects and runs sudo with it; a wrong one is ConnectionError authentication", () =>
    Effect.gen(function*() {
      const password = sudoPasswordOf()
      const wrong = `wrong-${random()}`
      const machine = yield* watchProcesses([password, wrong])
      const seen: Observed = { texts: [] }
      const byPassword = (login: string) =>
        Settings.settings({
          host: `${server.passwordUser}@127.0.0.2`,
          keyFile: undefined,
          password: Redacted.make(login),
          sudoPassword: Redacted.make(password)
        })
      const run = <A, E>(login: string, self: Effect.Effect<A, E, Ssh.SshConnections>) =>
        observe(seen, byPassword(login)(self))

      const who = valueOf(yield* run(password, Operations.remote("whoami")))
      assert.strictEqual(who.stdout, `${server.passwordUser}\n`)
      const root = valueOf(yield* run(password, Operations.remoteSudo("whoami")))
      assert.strictEqual(root.stdout, "root\n")
      const up = valueOf(
        yield* run(password, Operations.upload({ content: "pw\n" }, `/tmp/tb-secrets-${random()}`))
      )
      valueOf(yield* run(password, Operations.remote(`rm -f -- ${up}`)))

      const refused = errorOf(
        yield* run(wrong, Operations.remote("whoami").pipe(Effect.provide(Layer.fresh(Ssh.layer))))
      )
      assert.instanceOf(refused, ConnectionError)
      assert.strictEqual((refused as ConnectionError).reason, "authentication")

      assertAbsent(seen.texts, [password, wrong])
      assert.deepStrictEqual(machine.hits, [])
    }).pipe(Effect.provide(connections)))

  it.live("a key passphrase: an encrypted key works; a wrong or missing passphrase is a SettingsError that shows neither", () =>
    Effect.gen(function*() {
      const passphrase = `pass-${random()}-phrase`
      const wrong = `wrong-${random()}-phrase`
      const key = path.join(temp, "encrypted_ed25519")
      execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", passphrase, "-C", "tb-secrets", "-f", key])
      // The server of this test run reads this file for every user; the key is ours to remove.
      const authorized = path.join(server.stateDir, "authorized_keys")
      yield* Effect.acquireRelease(
        Effect.sync(() => {
          const before = readFileSync(authorized, "utf8")
          writeFileSync(authorized, before + readFileSync(`${key}.pub`, "utf8"))
          return before
        }),
        (before) => Effect.sync(() => writeFileSync(authorized, before))
      )
      const machine = yield* watchProcesses([passphrase, wrong])
      const seen: Observed = { texts: [] }
      const withKey = (phrase: string | undefined) =>
        Settings.settings({
          host: `${server.user}@127.0.0.3`,
          keyFile: key,
          keyPassphrase: phrase === undefined ? undefined : Redacted.make(phrase)
        })
      const run = <A, E>(phrase: string | undefined, self: Effect.Effect<A, E, Ssh.SshConnections>) =>
        observe(seen, withKey(phrase)(self))

      const who = valueOf(yield* run(passphrase, Operations.remote("whoami")))
      assert.strictEqual(who.stdout, `${server.user}\n`)
      const remoteFile = `/tmp/tb-secrets-${random()}`
      valueOf(yield* run(passphrase, Operations.upload({ content: "key\n" }, remoteFile)))
      const back = valueOf(yield* run(passphrase, Operations.download(remoteFile)))
      assert.strictEqual(new TextDecoder().decode(back), "key\n")
      const root = valueOf(yield* run(passphrase, Operations.remoteSudo(`rm -f -- ${remoteFile}; whoami`)))
      assert.strictEqual(root.stdout, "root\n")

      for (const phrase of [wrong, undefined]) {
        const error = errorOf(
          yield* run(phrase, Operations.remote("whoami").pipe(Effect.provide(Layer.fresh(Ssh.layer))))
        )
        assert.instanceOf(error, SettingsError)
        assert.strictEqual((error as SettingsError).setting, "keyPassphrase")
        assert.strictEqual((error as SettingsError).value, "<redacted>")
      }

      assertAbsent(seen.texts, [passphrase, wrong])
      assert.deepStrictEqual(machine.hits, [])
    }).pipe(Effect.provide(connections)))

  it.live("a sudo password in worker processes (Execute.withHosts): nothing a whole program prints shows it", () =>
    Effect.gen(function*() {
      const password = sudoPasswordOf()
      const wrong = `wrong-${random()}`
      const machine = yield* watchProcesses([password, wrong])
      const dir = rootOnlyDir("workers")
      const program = fileURLToPath(new URL("./fixtures/secrets-tasks.ts", import.meta.url))
      const { code, stdout, stderr } = yield* Effect.callback<
        { readonly code: number | null; readonly stdout: string; readonly stderr: string }
      >((resume) => {
        // The secrets go in on standard input: never in arguments or the environment.
        const child = spawn(process.execPath, [program], { stdio: ["pipe", "pipe", "pipe"] })
        let out = ""
        let err = ""
        child.stdout.on("data", (chunk: Buffer) => void (out += chunk.toString()))
        child.stderr.on("data", (chunk: Buffer) => void (err += chunk.toString()))
        child.on("close", (code) => resume(Effect.succeed({ code, stdout: out, stderr: err })))
        child.stdin.end(`${password}\n${wrong}\n${dir}\n`)
        return Effect.sync(() => void child.kill("SIGKILL"))
      }).pipe(Effect.timeout("90 seconds"))
      assert.strictEqual(code, 0, stderr)

      // It did what it should: three hosts with the right password, three refused with the wrong.
      for (const host of ["127.0.0.1", "127.0.0.2", "127.0.0.3"]) {
        assert.include(stdout, `right ${server.passwordUser}@${host}:${server.port}: ok hello root`)
        assert.match(
          stdout,
          new RegExp(`wrong ${server.passwordUser}@${host.replaceAll(".", "\\.")}:\\d+: failed`)
        )
        assert.strictEqual(readFileSync(`${dir}/${host}.txt`, "utf8"), "hello root\n")
      }
      assert.include(stdout, "CommandFailed")
      assert.include(stdout, "[127.0.0.1] out: root", "workers' output reached the program's output")
      // The watched rolling run: its events and its report were printed, and hold no secret either.
      assert.include(stdout, "REPORT completed")
      assert.include(stdout, "\"_tag\":\"OutputLine\"")
      assert.include(stdout, "\"_tag\":\"CommandStarted\"")
      assertAbsent([stdout, stderr], [password, wrong])
      assert.deepStrictEqual(machine.hits, [])
    }))
})
