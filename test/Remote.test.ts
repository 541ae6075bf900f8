/**
 * Remote commands against the throwaway OpenSSH server of `tests-remote/` (started once for the
 * run by test/globalSetup.ts). The server is this machine, so tests check its process table.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Redacted from "effect/Redacted"
import * as Tracer from "effect/Tracer"
import { CommandFailed, CommandTimeout } from "../src/Errors.ts"
import { remote, remoteFileExists, remoteSudo, singleCommand } from "../src/internal/remote/operations.ts"
import * as Output from "../src/Output.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import { readServerFromEnv, remoteProcesses } from "../tests-remote/server.ts"
import { failureOf, settingsLayer, uniqueMarker, waitForProcesses } from "./support.ts"

const server = readServerFromEnv()
const host = `${server.user}@127.0.0.1:${server.port}`

const base = settingsLayer({ host, connectRetryDelay: "200 millis" })

/** Runs `self` with its printed lines collected, and returns both. */
const collect = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const collector = Output.makeCollector()
    const exit = yield* Effect.exit(self.pipe(Effect.provide(Output.layerCollect(collector))))
    return { exit, lines: collector.lines() }
  })

layer(Layer.mergeAll(Ssh.layer, base), { timeout: "120 seconds", excludeTestServices: true })(
  "remote",
  (it) => {
    describe("output", () => {
      it.effect("prints the command and each line, exactly, and returns the result", () =>
        Effect.gen(function*() {
          const { exit, lines } = yield* collect(remote("echo one; echo two"))
          assert.isTrue(Exit.isSuccess(exit))
          if (!Exit.isSuccess(exit)) return
          assert.deepStrictEqual(lines, [
            "[127.0.0.1] run: echo one; echo two",
            "[127.0.0.1] out: one",
            "[127.0.0.1] out: two"
          ])
          const result = exit.value
          assert.strictEqual(result.host, "127.0.0.1")
          assert.strictEqual(result.stdout, "one\ntwo\n")
          assert.strictEqual(result.exitCode, 0)
          assert.isNull(result.signal)
          assert.strictEqual(result.realCommand, "/bin/bash -c 'echo one; echo two'")
          assert.isAtLeast(result.durationMillis, 0)
        }))

      it.effect("keeps standard error apart without a pty", () =>
        Effect.gen(function*() {
          const { exit, lines } = yield* collect(
            remote("echo out; echo err >&2; printf 'no newline'", { combineStderr: false })
          )
          assert.isTrue(Exit.isSuccess(exit))
          if (!Exit.isSuccess(exit)) return
          assert.strictEqual(exit.value.stdout, "out\nno newline")
          assert.strictEqual(exit.value.stderr, "err\n")
          assert.includeMembers([...lines], [
            "[127.0.0.1] out: out",
            "[127.0.0.1] err: err",
            "[127.0.0.1] out: no newline"
          ])
        }))

      it.effect("merges standard error into standard output in order, without a pty (combineStderr)", () =>
        Effect.gen(function*() {
          const result = yield* remote("echo out; echo err >&2; echo out2; tty >/dev/null || echo no-tty")
          assert.strictEqual(result.stdout, "out\nerr\nout2\nno-tty\n")
          assert.strictEqual(result.stderr, "")
        }))

      it.effect("runs on a pty when asked (pty), with standard error merged and line ends cleaned", () =>
        Effect.gen(function*() {
          const result = yield* remote("echo out; sleep 0.1; echo err >&2; tty >/dev/null && echo tty", {
            pty: true
          })
          assert.strictEqual(result.stdoutLines.join("|"), "out|err|tty")
          assert.strictEqual(result.stderr, "")
        }))

      it.effect("a login shell reads the profile when asked (shell: /bin/bash -l -c)", () =>
        Effect.gen(function*() {
          const plain = yield* remote("shopt -q login_shell && echo login || echo plain", { quiet: true })
          const login = yield* remote("shopt -q login_shell && echo login || echo plain", {
            quiet: true,
            shell: "/bin/bash -l -c"
          })
          assert.strictEqual(plain.stdout, "plain\n")
          assert.strictEqual(login.stdout, "login\n")
        }))

      it.effect("passes unicode through, also split across chunks", () =>
        Effect.gen(function*() {
          const text = "héllo wörld ✓ 日本語 🚀"
          const result = yield* remote(["printf", "%s\\n", text], { combineStderr: false })
          assert.strictEqual(result.stdout, `${text}\n`)
          const big = yield* remote("for i in $(seq 1 2000); do printf '✓🚀'; done; echo", { quiet: true })
          assert.strictEqual(big.stdout, `${"✓🚀".repeat(2000)}\n`)
        }))

      it.effect("quiet prints nothing; discardOutput keeps nothing", () =>
        Effect.gen(function*() {
          const quiet = yield* collect(remote("echo secret-ish", { quiet: true }))
          assert.deepStrictEqual(quiet.lines, [])
          const discarded = yield* collect(remote("echo shown", { discardOutput: true }))
          assert.deepStrictEqual(discarded.lines, ["[127.0.0.1] run: echo shown", "[127.0.0.1] out: shown"])
          assert.isTrue(Exit.isSuccess(discarded.exit) && discarded.exit.value.stdout === "")
        }))

      it.effect("dryRun prints and runs nothing, without connecting", () =>
        Effect.gen(function*() {
          const file = `/tmp/${uniqueMarker("dry")}`
          const { exit, lines } = yield* collect(
            remote(`touch ${file}`, { dryRun: true, host: "nosuchhost.invalid" })
          )
          assert.isTrue(Exit.isSuccess(exit))
          assert.deepStrictEqual(lines, [`[nosuchhost.invalid] run: touch ${file}`])
          assert.isFalse(yield* remoteFileExists(file))
        }))
    })

    describe("settings", () => {
      it.effect("nested settings: inner wins, outer comes back; options win over both", () =>
        Effect.gen(function*() {
          const pwd = (opts?: Parameters<typeof remote>[1]) =>
            Effect.map(remote("pwd; echo $GREETING", { quiet: true, ...opts }), (r) => r.stdoutLines)
          const inner = yield* pwd().pipe(
            Settings.rcd("/usr"),
            Settings.settings({ remoteWorkingDir: "/tmp", env: { GREETING: "outer" } }),
            Effect.flatMap(() =>
              pwd().pipe(Settings.withEnv({ GREETING: "inner" }), Settings.rcd("/usr"), Settings.rcd("/"))
            )
          )
          assert.deepStrictEqual(inner, ["/usr", "inner"])
          const outer = yield* pwd().pipe(
            Settings.settings({ remoteWorkingDir: "/tmp", env: { GREETING: "outer" } })
          )
          assert.deepStrictEqual(outer, ["/tmp", "outer"])
          const option = yield* pwd({ remoteWorkingDir: "/var", env: { GREETING: "option" } }).pipe(
            Settings.settings({ remoteWorkingDir: "/tmp", env: { GREETING: "outer" } })
          )
          assert.deepStrictEqual(option, ["/var", "option"])
        }))

      it.effect("rcd into directories with hostile names", () =>
        Effect.gen(function*() {
          const root = `/tmp/${uniqueMarker("rcd")}`
          const names = [
            "it's \"quoted\"",
            "$(touch pwned)",
            "with spaces  and\ttab",
            "new\nline",
            "ünïcødé ✓",
            "-leading-dash",
            "`backtick` ; rm -rf x &&"
          ]
          yield* remote(["mkdir", "-p", "--", ...names.map((n) => `${root}/${n}`)], { quiet: true })
          for (const name of names) {
            const result = yield* remote("pwd; ls -A", { quiet: true, combineStderr: false }).pipe(
              Settings.rcd(name),
              Settings.rcd(root)
            )
            assert.strictEqual(result.stdout, `${root}/${name}\n`)
          }
          assert.isFalse(yield* remoteFileExists(`${root}/pwned`))
          assert.isFalse(yield* remoteFileExists("pwned"))
          yield* remote(["rm", "-rf", "--", root], { quiet: true })
        }))

      it.effect("argument lists are quoted word by word; useShell false hands the line to the login shell", () =>
        Effect.gen(function*() {
          const args = yield* remote(["printf", "[%s]\\n", "a b", "$HOME", "it's"], {
            quiet: true,
            combineStderr: false
          })
          assert.strictEqual(args.stdout, "[a b]\n[$HOME]\n[it's]\n")
          const interpolated = yield* remote("echo $((6 * 7)) \"$USER\"", { quiet: true })
          assert.strictEqual(interpolated.stdout, `42 ${server.user}\n`)
          const noShell = yield* remote("echo $0", { quiet: true, useShell: false })
          assert.match(noShell.stdout, /bash/)
        }))

      it.effect("a host option without a host setting; no host at all is a SettingsError", () =>
        Effect.gen(function*() {
          const ok = yield* remote("hostname -I >/dev/null; echo ok", {
            quiet: true,
            host: `${server.user}@127.0.0.5:${server.port}`
          })
          assert.strictEqual(ok.host, "127.0.0.5")
          const missing = yield* Effect.exit(remote("true").pipe(Settings.settings({ host: undefined })))
          const error = failureOf(missing)
          assert.strictEqual(error._tag, "SettingsError")
          assert.strictEqual(error._tag === "SettingsError" && error.setting, "host")
          const bad = failureOf(yield* Effect.exit(remote("true", { host: "user@host:99999" })))
          assert.isTrue(bad._tag === "SettingsError" && bad.setting === "port")
        }))
    })

    describe("failures", () => {
      it.effect("a non-zero exit fails with CommandFailed; warnOnly returns the result", () =>
        Effect.gen(function*() {
          const error = failureOf(
            yield* Effect.exit(remote("echo bad >&2; exit 3", { quiet: true, combineStderr: false }))
          )
          assert.instanceOf(error, CommandFailed)
          if (!(error instanceof CommandFailed)) return
          assert.strictEqual(error.result.exitCode, 3)
          assert.strictEqual(error.result.stderr, "bad\n")
          assert.include(error.message, "exit code 3")
          const warned = yield* remote("exit 4", { quiet: true, warnOnly: true })
          assert.strictEqual(warned.exitCode, 4)
          assert.isTrue(warned.failed)
        }))

      it.effect("a command killed from outside reports the signal, also when run in the login bash", () =>
        Effect.gen(function*() {
          // The first command of a connection learns that its login shell is /bin/bash; later
          // ones then run in it directly (their execution string is our whole line).
          yield* remote("true", { quiet: true })
          const inline = yield* remote("echo \"$BASH_EXECUTION_STRING\"", { quiet: true })
          assert.include(inline.stdout, "__threadbare_pid_")
          // A unique duration marks the process: bash runs the last command in its own place.
          const marker = `sleep 30.${process.pid}${Math.floor(Math.random() * 1e6)}`
          const fiber = yield* Effect.forkChild(Effect.exit(remote(marker, { quiet: true })))
          assert.isTrue(yield* waitForProcesses(marker, true))
          for (const p of remoteProcesses(marker)) process.kill(p.pid, "SIGKILL")
          const error = failureOf(yield* Fiber.join(fiber))
          assert.instanceOf(error, CommandFailed)
          if (!(error instanceof CommandFailed)) return
          assert.strictEqual(error.result.signal, "SIGKILL")
          assert.isNull(error.result.exitCode)
        }))

      it.effect("a command killed by a signal reports it (SIGKILL, no exit code)", () =>
        Effect.gen(function*() {
          for (const combineStderr of [false, true]) {
            const error = failureOf(
              yield* Effect.exit(remote("echo before; kill -9 $$", { quiet: true, combineStderr }))
            )
            assert.instanceOf(error, CommandFailed)
            if (!(error instanceof CommandFailed)) return
            assert.strictEqual(error.result.signal, "SIGKILL")
            assert.isNull(error.result.exitCode)
            assert.strictEqual(error.result.stdout, "before\n")
          }
        }))
    })

    describe("input", () => {
      it.effect("a command that reads its input sees end of file at once, with or without sudo", () =>
        Effect.gen(function*() {
          const plain = yield* remote("cat; echo read-all", { quiet: true, timeout: "10 seconds" })
          assert.strictEqual(plain.stdout, "read-all\n")
          const sudo = yield* remoteSudo("cat; echo read-all", { quiet: true, timeout: "10 seconds" })
          assert.strictEqual(sudo.stdout, "read-all\n")
          // With a password, input ends once sudo has read it: the command gets nothing of it.
          const withPassword = yield* remoteSudo("wc -c", {
            host: `${server.passwordUser}@127.0.0.1:${server.port}`,
            sudoPassword: Redacted.make(readServerFromEnv().passwordUserPassword!),
            quiet: true,
            timeout: "10 seconds"
          })
          assert.strictEqual(withPassword.stdout.trim(), "0")
        }))
    })

    describe("sudo", () => {
      it.effect("runs as root, or as another user", () =>
        Effect.gen(function*() {
          const { exit, lines } = yield* collect(remoteSudo("whoami"))
          assert.isTrue(Exit.isSuccess(exit) && exit.value.stdout === "root\n")
          assert.deepStrictEqual(lines, ["[127.0.0.1] sudo: whoami", "[127.0.0.1] out: root"])
          const other = yield* remoteSudo("whoami; pwd", { sudoUser: server.otherUser, quiet: true }).pipe(
            Settings.rcd("/tmp")
          )
          assert.deepStrictEqual(other.stdoutLines, [server.otherUser!, "/tmp"])
          const viaSetting = yield* remote("id -un", { useSudo: true, quiet: true })
          assert.strictEqual(viaSetting.stdout, "root\n")
        }))

      it.effect("answers a sudo password once; it never shows up anywhere", () =>
        Effect.gen(function*() {
          // Read now, not at load: starting another server (as root) sets a new password.
          const password = readServerFromEnv().passwordUserPassword!
          const logs: Array<string> = []
          const spans: Array<Tracer.Span> = []
          const tracer = Tracer.make({
            span: (options) => {
              const span = Tracer.nativeTracer.span(options)
              spans.push(span)
              return span
            }
          })
          const logger = Logger.make(({ cause, message }) =>
            void logs.push(`${String(message)} ${Cause.pretty(cause)}`)
          )
          const asTbpass = {
            host: `${server.passwordUser}@127.0.0.1:${server.port}`,
            sudoPassword: Redacted.make(password)
          }
          const observed = <A, E, R>(self: Effect.Effect<A, E, R>) =>
            collect(self.pipe(Effect.withTracer(tracer), Effect.provide(Logger.layer([logger]))))

          for (const combineStderr of [true, false]) {
            const good = yield* observed(remoteSudo("whoami; echo done", { ...asTbpass, combineStderr }))
            assert.isTrue(Exit.isSuccess(good.exit), String(good.lines))
            if (!Exit.isSuccess(good.exit)) return
            assert.strictEqual(good.exit.value.stdout, "root\ndone\n")
            assert.strictEqual(good.exit.value.stderr, "")
            assert.deepStrictEqual(good.lines, [
              "[127.0.0.1] sudo: whoami; echo done",
              "[127.0.0.1] out: root",
              "[127.0.0.1] out: done"
            ])

            const wrong = yield* observed(
              remoteSudo("whoami", {
                ...asTbpass,
                sudoPassword: Redacted.make(`${password}-wrong`),
                combineStderr,
                timeout: "30 seconds"
              })
            )
            const error = failureOf(wrong.exit)
            assert.instanceOf(error, CommandFailed)
            if (!(error instanceof CommandFailed)) return
            assert.notStrictEqual(error.result.exitCode, 0)
            assert.notInclude(error.result.stdout + error.result.stderr, "root")
            for (
              const text of [
                ...good.lines,
                ...wrong.lines,
                JSON.stringify(good.exit.value),
                JSON.stringify(error.result),
                error.message,
                error.result.realCommand
              ]
            ) {
              assert.notInclude(text, password)
            }
          }
          for (const text of logs) assert.notInclude(text, password)
          for (const span of spans) {
            assert.notInclude(JSON.stringify([span.name, [...span.attributes.entries()]]), password)
          }
          assert.isTrue(
            spans.some((s) => s.name === "Operations.remoteSudo" && s.attributes.get("host") === "127.0.0.1")
          )
        }))

      it.effect("without a password, sudo that needs one fails at once", () =>
        Effect.gen(function*() {
          const error = failureOf(
            yield* Effect.exit(
              remoteSudo("true", {
                host: `${server.passwordUser}@127.0.0.1:${server.port}`,
                quiet: true,
                timeout: "20 seconds"
              })
            )
          )
          assert.instanceOf(error, CommandFailed)
        }))
    })

    describe("stopping commands", () => {
      it.effect("a timeout fails with CommandTimeout and the remote process is gone", () =>
        Effect.gen(function*() {
          for (const useSudo of [false, true]) {
            const marker = uniqueMarker("timeout")
            const started = Date.now()
            const exit = yield* Effect.exit(
              remote(`echo started; sleep 300; echo ${marker}`, {
                timeout: "1500 millis",
                quiet: true,
                useSudo,
                combineStderr: false
              })
            )
            const error = failureOf(exit)
            assert.instanceOf(error, CommandTimeout)
            if (!(error instanceof CommandTimeout)) return
            assert.strictEqual(error.stdout, "started\n")
            assert.strictEqual(error.timeoutMillis, 1500)
            assert.isBelow(Date.now() - started, 10_000)
            assert.isTrue(
              yield* waitForProcesses(marker, false, 5),
              `still running: ${JSON.stringify(remoteProcesses(marker))}`
            )
          }
        }))

      it.effect("interrupting the fiber stops the remote process and its children", () =>
        Effect.gen(function*() {
          for (
            const [useSudo, combineStderr] of [[false, false], [false, true], [true, false], [
              true,
              true
            ]] as const
          ) {
            const marker = uniqueMarker("interrupt")
            // A child that ignores SIGTERM: only the KILL that follows stops it.
            const fiber = yield* Effect.forkChild(
              remote(`(trap '' TERM; sleep 300; echo ${marker}) & sleep 300; echo ${marker}`, {
                quiet: true,
                useSudo,
                combineStderr
              })
            )
            assert.isTrue(yield* waitForProcesses(marker, true), "the command never started")
            yield* Fiber.interrupt(fiber)
            assert.isTrue(
              yield* waitForProcesses(marker, false, 6),
              `still running (sudo ${useSudo}, pty ${combineStderr}): ${
                JSON.stringify(remoteProcesses(marker))
              }`
            )
          }
        }))

      it.effect("Effect.timeout around it stops the remote process too", () =>
        Effect.gen(function*() {
          const marker = uniqueMarker("usertimeout")
          const exit = yield* Effect.exit(
            remote(`sleep 300; echo ${marker}`, { quiet: true }).pipe(Effect.timeout(Duration.seconds(1)))
          )
          assert.isTrue(Exit.isFailure(exit))
          assert.isTrue(yield* waitForProcesses(marker, false, 6))
        }))
    })

    describe("one connection", () => {
      it.effect("100 concurrent commands all succeed, at most maxChannels at a time", () =>
        Effect.gen(function*() {
          const dir = `/tmp/${uniqueMarker("concurrency")}`
          yield* remote(["mkdir", "-p", dir], { quiet: true })
          const logBefore = server.readLog().split("\n").filter((l) =>
            l.includes("Accepted publickey")
          ).length
          const results = yield* Effect.all(
            Array.from({ length: 100 }, (_, i) =>
              remote(`touch ${dir}/${i}; ls ${dir} | wc -l; sleep 0.05; rm ${dir}/${i}`, {
                quiet: true,
                host: `${server.user}@127.0.0.9:${server.port}`
              })),
            { concurrency: "unbounded" }
          )
          assert.strictEqual(results.length, 100)
          const peak = Math.max(...results.map((r) =>
            Number(r.stdout.trim())
          ))
          assert.isAtMost(peak, Settings.defaults.maxChannels)
          assert.isAtLeast(peak, 2)
          const logAfter = server.readLog().split("\n").filter((l) =>
            l.includes("Accepted publickey") && l.includes("127.0.0.9")
          ).length
          assert.isAtMost(logAfter, logBefore + 1)
          yield* remote(["rm", "-rf", dir], { quiet: true })
        }))
    })

    describe("remoteFileExists", () => {
      it.effect("tells existing from missing paths, hostile names included", () =>
        Effect.gen(function*() {
          const root = `/tmp/${uniqueMarker("exists")}`
          const names = ["plain", "it's", "$(touch pwned)", "a b\nc", "✓ ünï", "-dash", "*"]
          yield* remote(["mkdir", "-p", root], { quiet: true })
          yield* remote([
            "touch",
            "--",
            ...names.map((n) => `${root}/${n}`)
          ], { quiet: true })
          for (const name of names) {
            assert.isTrue(yield* remoteFileExists(`${root}/${name}`), name)
            assert.isFalse(yield* remoteFileExists(`${root}/${name}.missing`), name)
          }
          assert.isFalse(yield* remoteFileExists(`${root}/pwned`))
          const { lines } = yield* collect(remoteFileExists(root))
          assert.deepStrictEqual(lines, [])
          // a root-only directory: visible with sudo only
          yield* remoteSudo([
            "sh",
            "-c",
            `mkdir -p ${root}/private && touch ${root}/private/f && chmod 700 ${root}/private`
          ], { quiet: true })
          assert.isFalse(yield* remoteFileExists(`${root}/private/f`))
          assert.isTrue(yield* remoteFileExists(`${root}/private/f`, { useSudo: true }))
          yield* remoteSudo(["rm", "-rf", "--", root], { quiet: true })
        }))

      it.effect("connection errors still fail", () =>
        Effect.gen(function*() {
          const error = failureOf(
            yield* Effect.exit(remoteFileExists("/", { host: `${server.user}@127.0.0.1:1` }))
          )
          assert.strictEqual(error._tag, "ConnectionError")
        }).pipe(Settings.settings({ connectAttempts: 1 })))
    })

    it.effect("singleCommand joins with &&", () =>
      Effect.gen(function*() {
        assert.strictEqual(singleCommand(["cd /tmp", "ls"]), "cd /tmp && ls")
        const error = failureOf(
          yield* Effect.exit(remote(singleCommand(["false", "echo never"]), { quiet: true }))
        )
        assert.isTrue(error instanceof CommandFailed && error.result.stdout === "")
      }))
  }
)
