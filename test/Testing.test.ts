/**
 * The test layer for users' deploy programs: commands and file checks are recorded and answered
 * from the script, with no SSH connection and no local process (the hosts here do not exist, and
 * a local command that would create a file does not).
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
import { interceptDownload, interceptRsync, interceptUpload } from "../src/internal/testing/transfers.ts"
import * as Operations from "../src/Operations.ts"
import * as Output from "../src/Output.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import * as Testing from "../src/Testing.ts"
import { failureOf } from "./support.ts"

const run = <A, E>(
  program: Effect.Effect<A, E, Testing.Recorder | Ssh.SshConnections | NodeServices.NodeServices>,
  script: Testing.Script
) => program.pipe(Effect.provide(Layer.mergeAll(Testing.layer(script), NodeServices.layer)))

const deploy = Effect.gen(function*() {
  const head = yield* Operations.local("git rev-parse HEAD", { capture: true })
  const release = head.stdoutLines[0]!
  yield* Operations.remote(["git", "checkout", release]).pipe(Settings.rcd("/srv/app"))
  const active = yield* Operations.remoteSudo("systemctl is-active app", { warnOnly: true })
  if (active.failed) yield* Operations.remoteSudo("systemctl start app")
  return release
})

describe("Testing.layer", () => {
  it.effect("records remote and local commands, in order, answered from the script", () =>
    run(
      Effect.gen(function*() {
        const release = yield* deploy.pipe(
          Settings.settings({ host: "deploy@web-1.invalid:2222", env: { RELEASE: "r1" } }),
          Settings.hide
        )
        assert.strictEqual(release, "abc123")
        const ran = yield* Testing.commands
        assert.deepStrictEqual(
          ran.map((c) => [c.where, c.host, c.user, c.port, c.command, c.sudo, c.cwd]),
          [
            ["local", "localhost", undefined, undefined, "git rev-parse HEAD", false, undefined],
            ["remote", "web-1.invalid", "deploy", 2222, "git checkout abc123", false, "/srv/app"],
            ["remote", "web-1.invalid", "deploy", 2222, "systemctl is-active app", true, undefined],
            ["remote", "web-1.invalid", "deploy", 2222, "systemctl start app", true, undefined]
          ]
        )
        assert.deepStrictEqual(ran[1]!.env, { RELEASE: "r1" })
      }),
      {
        commands: [
          { command: "git rev-parse HEAD", where: "local", stdout: "abc123\n" },
          { command: /^git checkout / },
          { command: "systemctl is-active app", exitCode: 3, stdout: "inactive\n" },
          { command: (c) => c.sudo && c.command.startsWith("systemctl start") }
        ]
      }
    ))

  it.effect("a local command that would create a file starts no process", () => {
    const file = path.join(tmpdir(), `tb-testing-${process.pid}-${Math.random().toString(36).slice(2)}`)
    return run(
      Effect.gen(function*() {
        // The working directory is only recorded: under test it need not exist here.
        const result = yield* Operations.local(`touch ${file}`, { capture: true, cwd: "/no/such/dir" })
        assert.strictEqual(result.exitCode, 0)
        assert.isFalse(fs.existsSync(file))
        const [touched] = yield* Testing.commands
        assert.strictEqual(touched!.cwd, "/no/such/dir")
      }),
      { unscripted: { exitCode: 0 } }
    )
  })

  it.effect("the SSH service refuses: without the test layer the same program cannot connect", () =>
    Effect.gen(function*() {
      const program = Operations.remote("uname -r", {
        host: "web-1.invalid",
        keyFile: undefined,
        connectTimeout: "2 seconds",
        connectAttempts: 1
      } as Operations.RemoteOptions).pipe(Settings.hide)
      const real = yield* Effect.exit(program.pipe(Effect.provide(Ssh.layer)))
      assert.strictEqual((failureOf(real) as { _tag: string })._tag, "ConnectionError")
      const faked = yield* run(program, { commands: [{ command: "uname -r", stdout: "6.1.0\n" }] })
      assert.strictEqual(faked.stdout, "6.1.0\n")
      // A program that reaches the SSH service itself meets the refusal, not a host.
      const reached = yield* Effect.exit(run(
        Effect.scoped(Effect.gen(function*() {
          const ssh = yield* Ssh.SshConnections
          return yield* ssh.connect(Settings.defaults)
        })),
        {}
      ))
      assert.isTrue(Exit.isFailure(reached) && Cause.pretty(reached.cause).includes("Testing.layer"))
    }))

  it.effect("a failing answer fails with CommandFailed as a real one would; warnOnly returns it", () =>
    run(
      Effect.gen(function*() {
        const failed = yield* Effect.exit(Operations.remote("make test", { host: "ci.invalid" }))
        const error = failureOf(failed) as { _tag: string; message: string }
        assert.strictEqual(error._tag, "CommandFailed")
        assert.include(error.message, "exit code 2")
        const kept = yield* Operations.warnOnly(Operations.remote("make test", { host: "ci.invalid" }))
        assert.strictEqual(kept.exitCode, 2)
        // combineStderr (the default) puts stderr into stdout, as the SSH transport does.
        assert.strictEqual(kept.stdout, "ok\n2 failed\n")
        const apart = yield* Operations.remote("make test", {
          host: "ci.invalid",
          combineStderr: false,
          warnOnly: true
        })
        assert.strictEqual(apart.stdout, "ok\n")
        assert.strictEqual(apart.stderr, "2 failed\n")
      }).pipe(Settings.hide),
      { commands: [{ command: "make test", exitCode: 2, stdout: "ok\n", stderr: "2 failed\n" }] }
    ))

  it.effect("an unscripted command stops the program with a defect that names it", () =>
    run(
      Effect.gen(function*() {
        const exit = yield* Effect.exit(Operations.remote("rm -rf /srv/old", { host: "web-2.invalid" }))
        assert.isTrue(Exit.isFailure(exit))
        if (Exit.isSuccess(exit)) return
        const text = Cause.pretty(exit.cause)
        assert.include(text, "no scripted answer for the remote command \"rm -rf /srv/old\" on web-2.invalid")
        const [entry] = yield* Testing.recorded
        assert.strictEqual(entry!._tag, "Command")
      }).pipe(Settings.hide),
      { commands: [{ command: "rm -rf /srv/old", host: "web-1.invalid" }] }
    ))

  it.effect("output is printed as for real commands", () => {
    const collector = Output.makeCollector()
    return run(
      Effect.gen(function*() {
        yield* Operations.remote("uptime", { host: "web-1.invalid" })
        yield* Operations.local("date", { capture: true, stream: true })
        assert.deepStrictEqual(collector.lines(), [
          "[web-1.invalid] run: uptime",
          "[web-1.invalid] out: up 3 days",
          "[localhost] local: date",
          "[localhost] out: today"
        ])
      }).pipe(Effect.provide(Output.layerCollect(collector))),
      { commands: [{ command: "uptime", stdout: "up 3 days\n" }, { command: "date", stdout: "today\n" }] }
    )
  })

  it.effect("dryRun records nothing: nothing would have run", () =>
    run(
      Effect.gen(function*() {
        yield* Operations.remote("reboot", { host: "web-1.invalid", dryRun: true })
        assert.deepStrictEqual(yield* Testing.recorded, [])
      }).pipe(Settings.hide),
      {}
    ))

  it.effect("remoteFileExists is answered from the script's files, per host and under rcd", () =>
    run(
      Effect.gen(function*() {
        const on = (host: string, file: string) => Operations.remoteFileExists(file, { host })
        assert.isTrue(yield* on("web-1.invalid", "/etc/app.env"))
        assert.isTrue(yield* on("web-2.invalid", "/etc/app.env"))
        assert.isTrue(yield* on("web-1.invalid", "/srv/marker"))
        assert.isFalse(yield* on("web-2.invalid", "/srv/marker"))
        assert.isTrue(yield* on("web-1.invalid", "marker").pipe(Settings.rcd("/srv")))
        const checks = yield* Testing.recorded
        assert.deepStrictEqual(checks.map((c) => c._tag === "FileExists" ? c.path : c._tag), [
          "/etc/app.env",
          "/etc/app.env",
          "/srv/marker",
          "/srv/marker",
          "/srv/marker"
        ])
      }),
      { files: { "/etc/app.env": "PORT=1\n", "web-1.invalid:/srv/marker": "" } }
    ))

  it.effect("transfers: uploads are recorded and become files; downloads are answered from them", () =>
    run(
      Effect.gen(function*() {
        const settings = { ...Settings.defaults, host: "web-1.invalid", quiet: true }
        const uploaded = yield* interceptUpload({ content: "PORT=8080\n" }, "/etc/app.env", settings)
        assert.deepStrictEqual(uploaded._tag === "Some" && uploaded.value, "/etc/app.env")
        assert.isTrue(yield* Operations.remoteFileExists("/etc/app.env", { host: "web-1.invalid" }))
        const back = yield* interceptDownload("/etc/app.env", undefined, settings)
        assert.strictEqual(
          back._tag === "Some" && new TextDecoder().decode(back.value as Uint8Array),
          "PORT=8080\n"
        )
        const missing = yield* Effect.exit(interceptDownload("/etc/none", undefined, settings))
        assert.strictEqual((failureOf(missing) as { reason: string }).reason, "not-found")
        yield* interceptRsync("upload", "dist/", "/srv/app/", settings)
        const tags = (yield* Testing.recorded).map((r) =>
          r._tag === "Upload" || r._tag === "Download" ? `${r._tag}${r.rsync ? " rsync" : ""}` : r._tag
        )
        assert.deepStrictEqual(tags, ["Upload", "FileExists", "Download", "Download", "Upload rsync"])
      }),
      {}
    ))

  it.effect("outside the test layer the transfer hooks let the real transfer run", () =>
    Effect.gen(function*() {
      const settings = { ...Settings.defaults, host: "web-1.invalid" }
      assert.strictEqual((yield* interceptUpload("a", "/b", settings))._tag, "None")
      assert.strictEqual((yield* interceptDownload("/b", undefined, settings))._tag, "None")
      assert.strictEqual((yield* interceptRsync("upload", "a", "/b", settings))._tag, "None")
    }))

  it.effect("each use of the layer has its own recording; 200 hosts at once take milliseconds", () =>
    Effect.gen(function*() {
      const hosts = Array.from({ length: 200 }, (_, i) => `web-${i}.invalid`)
      const fleet = Effect.forEach(hosts, (host) => Operations.remote("uptime", { host }), {
        concurrency: 50
      }).pipe(
        Settings.hide,
        Effect.andThen(Testing.commands)
      )
      const script: Testing.Script = { commands: [{ command: "uptime", stdout: "up\n" }] }
      const first = yield* run(fleet, script)
      const second = yield* run(fleet, script)
      assert.strictEqual(first.length, 200)
      assert.strictEqual(second.length, 200)
      assert.deepStrictEqual(new Set(first.map((c) => c.host)), new Set(hosts))
    }))
})
