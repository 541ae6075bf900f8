/**
 * Attacks on `Testing.layer` (issue 10): a deploy program under it must never make an SSH
 * connection or start a local process, must record everything and answer from the script, and
 * must otherwise behave as a real run (`dryRun` included). A test whose name starts with
 * Each names the promise it attacks; those that once broke it are fixed.
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import * as Execute from "../src/Execute.ts"
import * as Operations from "../src/Operations.ts"
import * as Settings from "../src/Settings.ts"
import type * as Ssh from "../src/Ssh.ts"
import * as Testing from "../src/Testing.ts"
import * as Transfer from "../src/Transfer.ts"
import { remoteUptime } from "./fixtures/attack-tasks.ts"

const run = <A, E>(
  program: Effect.Effect<A, E, Testing.Recorder | Ssh.SshConnections | NodeServices.NodeServices>,
  script: Testing.Script
) =>
  program.pipe(
    // Hosts that do not exist, tried once and briefly: a real connection attempt fails fast.
    Settings.settings({
      host: "deploy@web-1.invalid",
      connectAttempts: 1,
      connectTimeout: "2 seconds",
      quiet: true
    }),
    Effect.provide(Layer.mergeAll(Testing.layer(script), NodeServices.layer))
  )

const scratch = () => fs.mkdtempSync(path.join(tmpdir(), "tb-attack-testing-"))

describe("AttackTesting", () => {
  it.effect("Execute in fibers mode under Testing.layer records the task's command and answers it", () =>
    Effect.gen(function*() {
      const [outcome] = yield* run(
        Effect.gen(function*() {
          const outcomes = yield* Execute.withHosts(remoteUptime, ["web-1.invalid"], { mode: "fibers" })
          return [outcomes[0]!, yield* Testing.commands] as const
        }).pipe(Effect.map(([o, c]) => [{ o, c }] as const)),
        { commands: [{ command: "uptime", stdout: "scripted\n" }] }
      )
      assert.isTrue(Exit.isSuccess(outcome.o.exit), String(outcome.o.exit))
      if (Exit.isSuccess(outcome.o.exit)) assert.strictEqual(outcome.o.exit.value.stdout, "scripted\n")
      assert.deepStrictEqual(outcome.c.map((c) => [c.host, c.command]), [["web-1.invalid", "uptime"]])
    }))

  it.effect(
    "Execute in its default mode (parallel) under Testing.layer runs in fibers, answered by the script",
    () =>
      Effect.gen(function*() {
        const { commands, outcome } = yield* run(
          Effect.gen(function*() {
            const outcomes = yield* Execute.withHosts(remoteUptime, ["web-1.invalid"])
            return { outcome: outcomes[0]!, commands: yield* Testing.commands }
          }),
          { commands: [{ command: "uptime", stdout: "scripted\n" }] }
        )
        const detail = Exit.isSuccess(outcome.exit)
          ? `ran in pid ${outcome.exit.value.pid} (this process: ${process.pid}): ${outcome.exit.value.stdout}`
          : Cause.pretty(outcome.exit.cause).split("\n")[0]
        // Promised: no local process started, every command recorded and answered from the script.
        assert.isTrue(Exit.isSuccess(outcome.exit), detail)
        assert.strictEqual(commands.length, 1, `recorded ${commands.length} commands; ${detail}`)
        if (Exit.isSuccess(outcome.exit)) assert.strictEqual(outcome.exit.value.pid, process.pid, detail)
      }),
    60_000
  )

  it.effect("a download under dryRun writes nothing to the local disk, as a real dry run", () =>
    Effect.gen(function*() {
      const dir = scratch()
      const target = path.join(dir, "fetched", "hosts")
      const returned = yield* run(
        Transfer.download("/etc/hosts", target).pipe(Settings.settings({ dryRun: true })),
        { files: { "/etc/hosts": "127.0.0.1 scripted\n" } }
      )
      const written = fs.existsSync(target)
      fs.rmSync(dir, { recursive: true, force: true })
      assert.strictEqual(returned, target)
      assert.isFalse(written, `dry run wrote ${target}`)
    }))

  it.effect("remoteFileExists, upload, download into memory and rsyncUpload with hostile names stay off disk", () =>
    Effect.gen(function*() {
      const dir = scratch()
      const hostile = "/srv/a*b?[c] $(touch pwned)/`id`;'\"\n x"
      const result = yield* run(
        Effect.gen(function*() {
          const exists = yield* Operations.remoteFileExists(hostile)
          yield* Transfer.upload({ content: "x" }, hostile)
          const bytes = yield* Transfer.download(hostile)
          yield* Transfer.rsyncUpload(path.join(dir, "nothing-here/"), `${hostile}/`)
          yield* Transfer.rsyncDownload(`${hostile}/`, path.join(dir, "down/"))
          return { exists, bytes: new TextDecoder().decode(bytes), recorded: yield* Testing.recorded }
        }).pipe(Settings.settings({ localWorkingDir: dir })),
        {}
      )
      const made = fs.readdirSync(dir)
      fs.rmSync(dir, { recursive: true, force: true })
      assert.isFalse(result.exists)
      assert.strictEqual(result.bytes, "x")
      assert.deepStrictEqual(result.recorded.map((r) => r._tag), [
        "FileExists",
        "Upload",
        "Download",
        "Upload",
        "Download"
      ])
      assert.deepStrictEqual(made, [])
      assert.isFalse(fs.existsSync("pwned"))
    }))

  it.live("two Testing layers at once share neither recording nor files", () =>
    Effect.gen(function*() {
      const one = run(
        Effect.gen(function*() {
          yield* Transfer.upload({ content: "one" }, "/etc/shared")
          yield* Effect.sleep("20 millis")
          return yield* Testing.recorded
        }),
        {}
      )
      const two = run(
        Effect.gen(function*() {
          yield* Effect.sleep("10 millis")
          const exists = yield* Operations.remoteFileExists("/etc/shared")
          return { exists, recorded: yield* Testing.recorded }
        }),
        {}
      )
      const [a, b] = yield* Effect.all([one, two], { concurrency: 2 })
      assert.strictEqual(a.length, 1)
      assert.isFalse(b.exists)
      assert.strictEqual(b.recorded.length, 1)
    }))

  it.effect("an unmatched local command is a clear defect naming it, and nothing ran", () =>
    Effect.gen(function*() {
      const dir = scratch()
      const marker = path.join(dir, "ran")
      const exit = yield* Effect.exit(run(Operations.local(`touch ${marker}`), {}))
      const ran = fs.existsSync(marker)
      fs.rmSync(dir, { recursive: true, force: true })
      assert.isTrue(Exit.isFailure(exit))
      assert.include(Cause.pretty((exit as Exit.Failure<unknown, unknown>).cause), "no scripted answer")
      assert.isFalse(ran)
    }))
})
