import * as NodeServices from "@effect/platform-node/NodeServices"
import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FileSystem from "effect/FileSystem"
import * as Option from "effect/Option"
import * as path from "node:path"
import { SettingsError } from "../src/Errors.ts"
import * as Settings from "../src/Settings.ts"

const current: Effect.Effect<Settings.Settings> = Settings.Settings

/** A real temporary directory, removed when the test ends, with symlinks resolved. */
const tempDir = Effect.gen(function*() {
  const fs = yield* FileSystem.FileSystem
  const dir = yield* fs.makeTempDirectoryScoped({ prefix: "threadbare-settings-" })
  return yield* fs.realPath(dir)
})

describe("Settings", () => {
  describe("defaults", () => {
    it.effect("a program that provides nothing reads the defaults", () =>
      Effect.gen(function*() {
        const s = yield* current
        assert.strictEqual(s, Settings.defaults)
        assert.isUndefined(s.host)
        assert.isUndefined(s.user)
        assert.isUndefined(s.port)
        assert.isUndefined(s.remoteWorkingDir)
        assert.isUndefined(s.localWorkingDir)
        assert.isUndefined(s.timeout)
        assert.strictEqual(s.useShell, true)
        assert.strictEqual(s.shell, "/bin/bash -c")
        assert.strictEqual(s.localShell, "/bin/sh -c")
        assert.strictEqual(s.useSudo, false)
        assert.strictEqual(s.combineStderr, true)
        assert.strictEqual(s.pty, false)
        assert.strictEqual(s.quiet, false)
        assert.strictEqual(s.discardOutput, false)
        assert.strictEqual(s.displayRunning, true)
        assert.strictEqual(s.displayPrefix, true)
        assert.strictEqual(s.lineTemplate, "[{host}] {pipe}: {line}")
        assert.strictEqual(s.warnOnly, false)
        assert.strictEqual(s.abortOnPrompts, false)
        assert.strictEqual(s.overwrite, true)
        assert.strictEqual(s.hostKeyPolicy, "accept-new")
        assert.deepStrictEqual(s.env, {})
        assert.deepStrictEqual(s.hosts, [])
        assert.strictEqual(Duration.toMillis(s.connectTimeout), 10_000)
        assert.strictEqual(Duration.toMillis(s.connectRetryDelay), 1_000)
        assert.strictEqual(Duration.toMillis(s.keepaliveInterval), 15_000)
      }))
  })

  describe("settings(patch)", () => {
    it.effect("applies inside the block only and restores after success", () =>
      Effect.gen(function*() {
        const inside = yield* current.pipe(
          Settings.settings({ host: "web-1", user: "deploy", warnOnly: true })
        )
        assert.strictEqual(inside.host, "web-1")
        assert.strictEqual(inside.user, "deploy")
        assert.strictEqual(inside.warnOnly, true)
        // untouched keys keep their values
        assert.strictEqual(inside.shell, Settings.defaults.shell)
        const after = yield* current
        assert.strictEqual(after, Settings.defaults)
      }))

    it.effect("the data-first form behaves the same", () =>
      Effect.gen(function*() {
        const inside = yield* Settings.settings(current, { host: "web-2" })
        assert.strictEqual(inside.host, "web-2")
        assert.isUndefined((yield* current).host)
      }))

    it.effect("restores after a failure", () =>
      Effect.gen(function*() {
        const seen: Array<string | undefined> = []
        const error = yield* Effect.gen(function*() {
          seen.push((yield* current).host)
          return yield* Effect.fail("boom" as const)
        }).pipe(Settings.settings({ host: "failing" }), Effect.flip)
        assert.strictEqual(error, "boom")
        assert.deepStrictEqual(seen, ["failing"])
        assert.isUndefined((yield* current).host)
      }))

    it.effect("restores after a defect", () =>
      Effect.gen(function*() {
        const exit = yield* Effect.die(new Error("defect")).pipe(
          Settings.settings({ host: "dying" }),
          Effect.exit
        )
        assert.isTrue(Exit.isFailure(exit))
        assert.isUndefined((yield* current).host)
      }))

    it.live("restores after an interruption (timeout), and the block's finalizer runs", () =>
      Effect.gen(function*() {
        const log: Array<string> = []
        const result = yield* Effect.gen(function*() {
          yield* Effect.addFinalizer(() => Effect.sync(() => log.push("finalizer")))
          log.push(`inside:${(yield* current).host}`)
          return yield* Effect.never
        }).pipe(Settings.settings({ host: "slow" }), Effect.timeoutOption("20 millis"))
        assert.isTrue(Option.isNone(result))
        assert.deepStrictEqual(log, ["inside:slow", "finalizer"])
        assert.isUndefined((yield* current).host)
      }))

    it.effect("code outside an interrupted block sees the outer settings", () =>
      Effect.gen(function*() {
        const started = yield* Deferred.make<void>()
        const seenOnInterrupt = yield* Deferred.make<string | undefined>()
        const fiber = yield* Deferred.succeed(started, undefined).pipe(
          Effect.andThen(Effect.never),
          Settings.settings({ host: "inner" }),
          Effect.onInterrupt(() =>
            Effect.flatMap(current, (s) => Deferred.succeed(seenOnInterrupt, s.host)).pipe(Effect.asVoid)
          ),
          Settings.settings({ host: "outer" }),
          Effect.forkChild
        )
        yield* Deferred.await(started)
        yield* Fiber.interrupt(fiber)
        assert.strictEqual(yield* Deferred.await(seenOnInterrupt), "outer")
        assert.isUndefined((yield* current).host)
      }))

    it.effect("nested blocks: inner wins, different keys accumulate, each level restores its own", () =>
      Effect.gen(function*() {
        const log: Array<string> = []
        const show = (label: string) =>
          Effect.map(current, (s) => {
            log.push(`${label} host=${s.host} user=${s.user} port=${s.port} quiet=${s.quiet}`)
          })
        yield* Effect.gen(function*() {
          yield* show("1")
          yield* Effect.gen(function*() {
            yield* show("2")
            yield* show("3").pipe(Settings.settings({ host: "h3", port: 2222 }))
            yield* show("2 again")
          }).pipe(Settings.settings({ host: "h2", user: "u2" }))
          yield* show("1 again")
        }).pipe(Settings.settings({ host: "h1", quiet: true }))
        yield* show("0")
        assert.deepStrictEqual(log, [
          "1 host=h1 user=undefined port=undefined quiet=true",
          "2 host=h2 user=u2 port=undefined quiet=true",
          "3 host=h3 user=u2 port=2222 quiet=true",
          "2 again host=h2 user=u2 port=undefined quiet=true",
          "1 again host=h1 user=undefined port=undefined quiet=true",
          "0 host=undefined user=undefined port=undefined quiet=false"
        ])
      }))

    it.effect("an inner block can reset a setting to none with undefined", () =>
      Effect.gen(function*() {
        const inner = yield* current.pipe(
          Settings.settings({ host: undefined, timeout: undefined }),
          Settings.settings({ host: "h", timeout: "1 second" })
        )
        assert.isUndefined(inner.host)
        assert.isUndefined(inner.timeout)
      }))

    it.effect("durations given as strings, numbers or Durations become Durations", () =>
      Effect.gen(function*() {
        const s = yield* current.pipe(Settings.settings({
          connectTimeout: "5 seconds",
          connectRetryDelay: 250,
          keepaliveInterval: Duration.minutes(1),
          timeout: "2 minutes"
        }))
        assert.isTrue(Duration.isDuration(s.connectTimeout))
        assert.isTrue(Duration.isDuration(s.connectRetryDelay))
        assert.isTrue(Duration.isDuration(s.keepaliveInterval))
        assert.isTrue(s.timeout !== undefined && Duration.isDuration(s.timeout))
        assert.strictEqual(Duration.toMillis(s.connectTimeout), 5_000)
        assert.strictEqual(Duration.toMillis(s.connectRetryDelay), 250)
        assert.strictEqual(Duration.toMillis(s.keepaliveInterval), 60_000)
        assert.strictEqual(s.timeout === undefined ? -1 : Duration.toMillis(s.timeout), 120_000)
      }))

    it.effect("apply turns durations into Durations and leaves the base untouched", () =>
      Effect.sync(() => {
        const next = Settings.apply(Settings.defaults, { timeout: 1500, host: "x" })
        assert.strictEqual(next.timeout === undefined ? -1 : Duration.toMillis(next.timeout), 1500)
        assert.strictEqual(next.host, "x")
        assert.isUndefined(Settings.defaults.timeout)
        assert.isUndefined(Settings.defaults.host)
      }))
  })

  describe("finalizers", () => {
    it.effect("a finalizer added in a block runs when that block exits, not when the parent does", () =>
      Effect.gen(function*() {
        const log: Array<string> = []
        const note = (s: string) => Effect.sync(() => void log.push(s))
        yield* Effect.gen(function*() {
          yield* Effect.addFinalizer(() => note("outer finalizer"))
          yield* note("outer start")
          yield* Effect.gen(function*() {
            yield* Effect.addFinalizer(() => note("inner finalizer"))
            yield* note("inner body")
          }).pipe(Settings.settings({ host: "inner" }))
          yield* note("outer after inner")
        }).pipe(Settings.settings({ host: "outer" }))
        yield* note("after outer")
        assert.deepStrictEqual(log, [
          "outer start",
          "inner body",
          "inner finalizer",
          "outer after inner",
          "outer finalizer",
          "after outer"
        ])
      }))

    it.effect("a finalizer runs when its block fails, before the failure reaches the parent", () =>
      Effect.gen(function*() {
        const log: Array<string> = []
        yield* Effect.gen(function*() {
          yield* Effect.addFinalizer((exit) => Effect.sync(() => void log.push(`finalizer ${exit._tag}`)))
          return yield* Effect.fail("nope")
        }).pipe(
          Settings.hide,
          Effect.catch(() => Effect.sync(() => void log.push("caught")))
        )
        assert.deepStrictEqual(log, ["finalizer Failure", "caught"])
      }))
  })

  describe("hide", () => {
    it.effect("sets quiet for the block and nothing else", () =>
      Effect.gen(function*() {
        const inside = yield* Settings.hide(current).pipe(Settings.settings({ host: "h" }))
        assert.strictEqual(inside.quiet, true)
        assert.strictEqual(inside.host, "h")
        assert.strictEqual(inside.displayRunning, true)
        assert.strictEqual((yield* current).quiet, false)
      }))
  })

  describe("rcd", () => {
    const remoteDir = Effect.map(current, (s) => s.remoteWorkingDir)

    it.effect("with no current directory, the directory is taken as given", () =>
      Effect.gen(function*() {
        assert.strictEqual(yield* remoteDir.pipe(Settings.rcd("/srv/app")), "/srv/app")
        assert.strictEqual(yield* remoteDir.pipe(Settings.rcd("app")), "app")
        assert.isUndefined(yield* remoteDir)
      }))

    it.effect("a relative directory joins the current one", () =>
      Effect.gen(function*() {
        assert.strictEqual(
          yield* remoteDir.pipe(Settings.rcd("releases"), Settings.rcd("/srv/app")),
          "/srv/app/releases"
        )
        assert.strictEqual(
          yield* remoteDir.pipe(Settings.rcd("current"), Settings.rcd("releases"), Settings.rcd("/srv/app")),
          "/srv/app/releases/current"
        )
        assert.strictEqual(
          yield* remoteDir.pipe(Settings.rcd("../shared"), Settings.rcd("/srv/app/releases")),
          "/srv/app/shared"
        )
        assert.strictEqual(yield* remoteDir.pipe(Settings.rcd("my dir"), Settings.rcd("/srv")), "/srv/my dir")
      }))

    it.effect("an absolute directory replaces the current one", () =>
      Effect.gen(function*() {
        assert.strictEqual(yield* remoteDir.pipe(Settings.rcd("/etc"), Settings.rcd("/srv/app")), "/etc")
      }))

    it.effect("a ~ directory is kept for the remote shell to expand, and relative dirs join it", () =>
      Effect.gen(function*() {
        assert.strictEqual(yield* remoteDir.pipe(Settings.rcd("~/app")), "~/app")
        assert.strictEqual(yield* remoteDir.pipe(Settings.rcd("~"), Settings.rcd("/srv")), "~")
        assert.strictEqual(yield* remoteDir.pipe(Settings.rcd("~/app"), Settings.rcd("/srv")), "~/app")
        assert.strictEqual(yield* remoteDir.pipe(Settings.rcd("logs"), Settings.rcd("~/app")), "~/app/logs")
      }))

    it.effect("the block restores the previous directory", () =>
      Effect.gen(function*() {
        const seen = yield* Effect.gen(function*() {
          const inner = yield* remoteDir.pipe(Settings.rcd("a"))
          const after = yield* remoteDir
          return [inner, after]
        }).pipe(Settings.rcd("/srv"))
        assert.deepStrictEqual(seen, ["/srv/a", "/srv"])
      }))
  })

  describe("lcd", () => {
    const localDir = Effect.map(current, (s) => s.localWorkingDir)

    it.effect("an absolute directory is used as is; the process's cwd never changes", () =>
      Effect.gen(function*() {
        const root = yield* tempDir
        const before = process.cwd()
        const inside = yield* Effect.map(localDir, (dir) => [dir, process.cwd()] as const).pipe(
          Settings.lcd(root)
        )
        assert.deepStrictEqual(inside, [root, before])
        assert.strictEqual(process.cwd(), before)
        assert.isUndefined(yield* localDir)
      }).pipe(Effect.provide(NodeServices.layer)))

    it.effect("relative directories resolve against the enclosing lcd, level by level", () =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const root = yield* tempDir
        yield* fs.makeDirectory(path.join(root, "a", "b c"), { recursive: true })
        const before = process.cwd()
        const seen: Array<string | undefined> = []
        yield* Effect.gen(function*() {
          seen.push(yield* localDir)
          yield* Effect.gen(function*() {
            seen.push(yield* localDir)
            seen.push(yield* localDir.pipe(Settings.lcd("b c")))
            seen.push(yield* localDir.pipe(Settings.lcd("..")))
            seen.push(yield* localDir)
          }).pipe(Settings.lcd("a"))
        }).pipe(Settings.lcd(root))
        assert.deepStrictEqual(seen, [
          root,
          path.join(root, "a"),
          path.join(root, "a", "b c"),
          root,
          path.join(root, "a")
        ])
        assert.strictEqual(process.cwd(), before)
      }).pipe(Effect.provide(NodeServices.layer)))

    it.effect("a relative directory outside any lcd resolves against the process's cwd", () =>
      Effect.gen(function*() {
        assert.strictEqual(yield* localDir.pipe(Settings.lcd(".")), process.cwd())
        assert.strictEqual(yield* localDir.pipe(Settings.lcd("src")), path.join(process.cwd(), "src"))
      }).pipe(Effect.provide(NodeServices.layer)))

    it.effect("resolveLocal honours the current lcd", () =>
      Effect.gen(function*() {
        const root = yield* tempDir
        const resolved = yield* Effect.map(current, (s) => Settings.resolveLocal(s, "x/y.txt")).pipe(
          Settings.lcd(root)
        )
        assert.strictEqual(resolved, path.join(root, "x", "y.txt"))
        assert.strictEqual(Settings.resolveLocal(Settings.defaults, "/abs/p"), "/abs/p")
      }).pipe(Effect.provide(NodeServices.layer)))

    it.effect("a missing directory fails with SettingsError naming the path, and the block never runs", () =>
      Effect.gen(function*() {
        const root = yield* tempDir
        const missing = path.join(root, "does-not-exist")
        let ran = false
        const error = yield* Effect.sync(() => {
          ran = true
        }).pipe(Settings.lcd(missing), Effect.flip)
        assert.instanceOf(error, SettingsError)
        assert.strictEqual(error._tag, "SettingsError")
        assert.strictEqual(error.setting, "localWorkingDir")
        assert.strictEqual(error.value, missing)
        assert.include(error.message, missing)
        assert.include(error.message, "no such directory")
        assert.isFalse(ran)
      }).pipe(Effect.provide(NodeServices.layer)))

    it.effect("a missing relative directory is reported with its resolved path", () =>
      Effect.gen(function*() {
        const root = yield* tempDir
        const error = yield* Effect.void.pipe(Settings.lcd("nope"), Settings.lcd(root), Effect.flip)
        assert.instanceOf(error, SettingsError)
        assert.strictEqual(error.value, path.join(root, "nope"))
        assert.include(error.message, path.join(root, "nope"))
      }).pipe(Effect.provide(NodeServices.layer)))

    it.effect("a file is refused with SettingsError naming the path", () =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const root = yield* tempDir
        const file = path.join(root, "plain.txt")
        yield* fs.writeFileString(file, "not a dir")
        const error = yield* Effect.void.pipe(Settings.lcd(file), Effect.flip)
        assert.instanceOf(error, SettingsError)
        assert.strictEqual(error.value, file)
        assert.include(error.message, file)
        assert.include(error.message, "not a directory")
      }).pipe(Effect.provide(NodeServices.layer)))
  })

  describe("withEnv", () => {
    const env = Effect.map(current, (s) => s.env)

    it.effect("merges with the variables already set; inner wins; outer restored", () =>
      Effect.gen(function*() {
        const seen = yield* Effect.gen(function*() {
          const inner = yield* env.pipe(Settings.withEnv({ B: "inner", C: "3" }))
          const after = yield* env
          return { inner, after }
        }).pipe(Settings.withEnv({ A: "1", B: "outer" }))
        assert.deepStrictEqual(seen.inner, { A: "1", B: "inner", C: "3" })
        assert.deepStrictEqual(seen.after, { A: "1", B: "outer" })
        assert.deepStrictEqual(yield* env, {})
      }))

    it.effect("does not mutate the outer env object", () =>
      Effect.gen(function*() {
        const outer = { A: "1" }
        yield* env.pipe(Settings.withEnv({ B: "2" }), Settings.settings({ env: outer }))
        assert.deepStrictEqual(outer, { A: "1" })
      }))
  })

  describe("layer", () => {
    it.effect("applies to the whole program; block overrides still win inside", () =>
      Effect.gen(function*() {
        const whole = yield* current
        const inner = yield* current.pipe(Settings.settings({ host: "override" }))
        const nested = yield* Effect.gen(function*() {
          return yield* current
        }).pipe(Effect.forkChild, Effect.flatMap(Fiber.join))
        return { whole, inner, nested }
      }).pipe(
        Effect.provide(Settings.layer({ host: "from-layer", user: "deploy", connectTimeout: "3 seconds" })),
        Effect.map(({ inner, nested, whole }) => {
          assert.strictEqual(whole.host, "from-layer")
          assert.strictEqual(whole.user, "deploy")
          assert.strictEqual(Duration.toMillis(whole.connectTimeout), 3_000)
          assert.strictEqual(whole.shell, Settings.defaults.shell)
          assert.strictEqual(inner.host, "override")
          assert.strictEqual(inner.user, "deploy")
          assert.strictEqual(nested.host, "from-layer")
        })
      ))
  })

  describe("concurrency", () => {
    it.live("each of many concurrent fibers sees its own settings across sleeps and yields", () =>
      Effect.gen(function*() {
        const n = 200
        const results = yield* Effect.forEach(
          Array.from({ length: n }, (_, i) => i),
          (i) =>
            Effect.gen(function*() {
              const seen: Array<string> = []
              for (let round = 0; round < 5; round++) {
                if ((i + round) % 2 === 0) yield* Effect.sleep(Duration.millis((i * 7 + round * 3) % 5))
                else yield* Effect.yieldNow
                const s = yield* current
                seen.push(`${s.host}|${s.user}|${s.env["I"]}|${s.remoteWorkingDir}`)
              }
              // a nested block in the middle of the others' work
              const nested = yield* Effect.map(current, (s) => `${s.host}|${s.remoteWorkingDir}`).pipe(
                Effect.delay(Duration.millis(i % 3)),
                Settings.rcd(`sub-${i}`)
              )
              return { i, seen, nested }
            }).pipe(
              Settings.settings({ host: `host-${i}`, user: `user-${i}` }),
              Settings.withEnv({ I: String(i) }),
              Settings.rcd(`/srv/${i}`)
            ),
          { concurrency: "unbounded" }
        )
        assert.strictEqual(results.length, n)
        for (const { i, nested, seen } of results) {
          assert.deepStrictEqual(seen, Array(5).fill(`host-${i}|user-${i}|${i}|/srv/${i}`))
          assert.strictEqual(nested, `host-${i}|/srv/${i}/sub-${i}`)
        }
        assert.strictEqual(yield* current, Settings.defaults)
      }))

    it.live("a fiber forked in a block keeps that block's settings after the block has exited", () =>
      Effect.gen(function*() {
        const release = yield* Deferred.make<void>()
        const fiber = yield* Effect.gen(function*() {
          yield* Deferred.await(release)
          return (yield* current).host
        }).pipe(Effect.forkChild, Settings.settings({ host: "forked-in-block" }))
        // the block has exited: the parent is back to the defaults
        assert.isUndefined((yield* current).host)
        yield* Deferred.succeed(release, undefined)
        assert.strictEqual(yield* Fiber.join(fiber), "forked-in-block")
      }))
  })
})
