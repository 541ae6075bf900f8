/**
 * One table of command behaviours, run against every transport: local processes, and SSH to the
 * throwaway OpenSSH and Dropbear servers, each with `/bin/bash -c` and with `/bin/sh -c`. All run
 * in the same envelope (time limit, dry run, printing, result and errors), so each case must come
 * out the same on all of them; only the host label and the verb of the `run:` line differ.
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import { assert, describe, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import type { CommandResult } from "../src/CommandResult.ts"
import * as Operations from "../src/Operations.ts"
import * as Output from "../src/Output.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import { readDropbearFromEnv } from "../tests-remote/dropbear-server.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import { connectionSettings, failureOf, uniqueMarker, waitForProcesses } from "./support.ts"

const server = readServerFromEnv()
const dropbear = readDropbearFromEnv()

interface Transport {
  readonly name: string
  /** The host of printed lines and results. */
  readonly host: string
  readonly verb: string
  readonly run: (command: string | ReadonlyArray<string>) => Effect.Effect<CommandResult, unknown, Services>
  readonly inDir: (dir: string) => <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

type Services = Ssh.SshConnections | NodeServices.NodeServices

const transports: ReadonlyArray<Transport> = [
  {
    name: "local",
    host: "localhost",
    verb: "local",
    // Local output is kept only with `capture`, and printed only with `stream`; remote always does both.
    run: (command) => Operations.local(command, { capture: true, stream: true }),
    inDir: (dir) => Settings.lcd(dir) as never
  },
  // Every SSH server the tests start, with each shell: OpenSSH (login shell bash) and Dropbear
  // (login shell /bin/sh), each with the default `/bin/bash -c` and with `/bin/sh -c`.
  ...[
    {
      server: "OpenSSH",
      user: server.user,
      port: server.port,
      keyFile: server.keyPath,
      knownHostsFile: server.knownHostsPath
    },
    ...(dropbear === undefined ? [] : [{
      server: "Dropbear",
      user: dropbear.user,
      port: dropbear.port,
      keyFile: dropbear.keyPath,
      knownHostsFile: dropbear.knownHostsPath
    }])
  ].flatMap((ssh) =>
    ["/bin/bash -c", "/bin/sh -c"].map((shell): Transport => ({
      name: `remote, ${ssh.server}, ${shell}`,
      host: "127.0.0.1",
      verb: "run",
      // On top of the case's settings: a settings layer inside would replace them.
      run: (command) =>
        Operations.remote(command).pipe(
          Settings.settings({
            ...connectionSettings(server),
            keyFile: ssh.keyFile,
            knownHostsFile: ssh.knownHostsFile,
            shell,
            host: `${ssh.user}@127.0.0.1:${ssh.port}`
          })
        ),
      inDir: (dir) => Settings.rcd(dir) as never
    }))
  )
]

/** Runs `self` and returns how it ended and what it printed. */
const collect = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const collector = Output.makeCollector()
    const exit = yield* Effect.exit(self.pipe(Effect.provide(Output.layerCollect(collector))))
    return { exit, lines: collector.lines() }
  })

const success = <A, E>(exit: Exit.Exit<A, E>): A => {
  if (Exit.isFailure(exit)) throw new Error(`expected success, got ${String(exit.cause)}`)
  return exit.value
}

// A directory both sides can enter: the server's user is another one on this machine.
const dir = fs.mkdtempSync(path.join(tmpdir(), "tb-suite-"))
fs.chmodSync(dir, 0o755)

interface Case {
  readonly name: string
  readonly check: (t: Transport) => Effect.Effect<void, unknown, Services>
}

const cases: ReadonlyArray<Case> = [
  {
    name: "captures stdout and prints each line",
    check: (t) =>
      Effect.gen(function*() {
        const { exit, lines } = yield* collect(t.run("printf 'a\\nb\\n'"))
        const result = success(exit)
        assert.strictEqual(result.stdout, "a\nb\n")
        assert.strictEqual(result.exitCode, 0)
        assert.strictEqual(result.host, t.host)
        assert.deepStrictEqual(lines, [
          `[${t.host}] ${t.verb}: printf 'a\\nb\\n'`,
          `[${t.host}] out: a`,
          `[${t.host}] out: b`
        ])
      })
  },
  {
    name: "keeps stderr apart without combineStderr",
    check: (t) =>
      Effect.gen(function*() {
        const { exit, lines } = yield* collect(
          t.run("echo out; echo err >&2").pipe(Settings.settings({ combineStderr: false }))
        )
        const result = success(exit)
        assert.strictEqual(result.stdout, "out\n")
        assert.strictEqual(result.stderr, "err\n")
        assert.includeMembers([...lines], [`[${t.host}] out: out`, `[${t.host}] err: err`])
      })
  },
  {
    name: "combines stderr into stdout in the order written",
    check: (t) =>
      Effect.gen(function*() {
        const result = success(
          (yield* collect(t.run("echo 1; echo 2 >&2; echo 3; echo 4 >&2").pipe(Settings.hide))).exit
        )
        assert.strictEqual(result.stdout, "1\n2\n3\n4\n")
        assert.strictEqual(result.stderr, "")
      })
  },
  {
    name: "a non-zero exit fails with CommandFailed holding the result",
    check: (t) =>
      Effect.gen(function*() {
        const { exit } = yield* collect(t.run("echo partial; exit 3").pipe(Settings.hide))
        const error = failureOf(exit) as { _tag: string; result: CommandResult }
        assert.strictEqual(error._tag, "CommandFailed")
        assert.strictEqual(error.result.exitCode, 3)
        assert.strictEqual(error.result.stdout, "partial\n")
      })
  },
  {
    name: "warnOnly returns the failed result",
    check: (t) =>
      Effect.gen(function*() {
        const result = success(
          (yield* collect(Operations.warnOnly(t.run("exit 4")).pipe(Settings.hide))).exit
        )
        assert.strictEqual(result.exitCode, 4)
        assert.isTrue(result.failed)
      })
  },
  {
    name: "a timeout fails with CommandTimeout, keeps the output so far, and stops the process",
    check: (t) =>
      Effect.gen(function*() {
        const marker = uniqueMarker(`suite_timeout_${t.name}`)
        const { exit } = yield* collect(
          t.run(`echo before; sleep 30; echo ${marker}`).pipe(
            Settings.settings({ timeout: "1 second" }),
            Settings.hide
          )
        )
        const error = failureOf(exit) as { _tag: string; stdout: string; timeoutMillis: number }
        assert.strictEqual(error._tag, "CommandTimeout")
        assert.strictEqual(error.timeoutMillis, 1000)
        assert.strictEqual(error.stdout, "before\n")
        assert.isTrue(yield* waitForProcesses(marker, false, 10), "the timed-out command is still running")
      })
  },
  {
    name: "interruption stops the process",
    check: (t) =>
      Effect.gen(function*() {
        const marker = uniqueMarker(`suite_interrupt_${t.name}`)
        const fiber = yield* Effect.forkChild(t.run(`sleep 30; echo ${marker}`).pipe(Settings.hide))
        assert.isTrue(yield* waitForProcesses(marker, true, 10), "the command never started")
        yield* Fiber.interrupt(fiber)
        assert.isTrue(yield* waitForProcesses(marker, false, 10), "the interrupted command is still running")
      })
  },
  {
    name: "runs in the working directory (lcd / rcd)",
    check: (t) =>
      Effect.gen(function*() {
        const result = success((yield* collect(t.run("pwd").pipe(t.inDir(dir), Settings.hide))).exit)
        assert.strictEqual(fs.realpathSync(result.stdout.trim()), fs.realpathSync(dir))
      })
  },
  {
    name: "passes variables, quoted",
    check: (t) =>
      Effect.gen(function*() {
        const value = "it's $HOME, `not run`"
        const result = success(
          (yield* collect(
            t.run("printf '%s' \"$TB_VALUE\"").pipe(Settings.withEnv({ TB_VALUE: value }), Settings.hide)
          ))
            .exit
        )
        assert.strictEqual(result.stdout, value)
      })
  },
  {
    name: "an argument list without a shell keeps each word as it is",
    check: (t) =>
      Effect.gen(function*() {
        const result = success(
          (yield* collect(
            t.run(["printf", "%s|", "a b", "$HOME", "*"]).pipe(
              Settings.settings({ useShell: false }),
              Settings.hide
            )
          )).exit
        )
        assert.strictEqual(result.stdout, "a b|$HOME|*|")
      })
  },
  {
    name: "an argument list through the shell is quoted",
    check: (t) =>
      Effect.gen(function*() {
        const result = success(
          (yield* collect(t.run(["printf", "%s|", "a b", "$HOME"]).pipe(Settings.hide))).exit
        )
        assert.strictEqual(result.stdout, "a b|$HOME|")
      })
  },
  {
    name: "hidden output prints nothing and keeps the result",
    check: (t) =>
      Effect.gen(function*() {
        const { exit, lines } = yield* collect(t.run("echo quietly").pipe(Settings.hide))
        assert.strictEqual(success(exit).stdout, "quietly\n")
        assert.deepStrictEqual(lines, [])
      })
  },
  {
    name: "dry run prints the command and runs nothing",
    check: (t) =>
      Effect.gen(function*() {
        const file = path.join(dir, `dry-${t.name}`)
        const { exit, lines } = yield* collect(
          t.run(`touch ${file}`).pipe(Settings.settings({ dryRun: true }))
        )
        const result = success(exit)
        assert.strictEqual(result.exitCode, 0)
        assert.strictEqual(result.stdout, "")
        assert.deepStrictEqual(lines, [`[${t.host}] ${t.verb}: touch ${file}`])
        assert.isFalse(fs.existsSync(file))
      })
  },
  {
    name: "a 3 MB line without a newline arrives whole",
    check: (t) =>
      Effect.gen(function*() {
        const result = success(
          (yield* collect(t.run("head -c 3000000 /dev/zero | tr '\\0' x").pipe(Settings.hide))).exit
        )
        assert.strictEqual(result.stdout.length, 3_000_000)
        assert.isTrue(/^x+$/.test(result.stdout))
      })
  },
  {
    name: "a command gets no input: it sees end of input at once",
    check: (t) =>
      Effect.gen(function*() {
        const result = success(
          (yield* collect(
            t.run("cat; echo after").pipe(Settings.settings({ timeout: "20 seconds" }), Settings.hide)
          ))
            .exit
        )
        assert.strictEqual(result.stdout, "after\n")
      })
  },
  {
    name: "unicode output, split anywhere, arrives intact",
    check: (t) =>
      Effect.gen(function*() {
        const text = "héllo ✓ 日本語 🎉"
        const { exit, lines } = yield* collect(t.run(`printf '%s\\n' '${text}'`))
        assert.strictEqual(success(exit).stdout, `${text}\n`)
        assert.include(lines, `[${t.host}] out: ${text}`)
      })
  }
]

layer(Layer.mergeAll(Ssh.layer, NodeServices.layer), { timeout: "120 seconds", excludeTestServices: true })(
  "command suite",
  (it) => {
    for (const t of transports) {
      describe(t.name, () => {
        for (const c of cases) it.effect(c.name, () => c.check(t))
      })
    }
  }
)
