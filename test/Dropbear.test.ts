/**
 * The library against Dropbear (tests-remote/dropbear-server.ts): a second SSH server, whose login
 * user `tbsh` has /bin/sh (dash) as its login shell, with both `shell` settings.
 *
 * Dropbear 2022.82 to 2024.85 kill a connection when one of its channels is closed by the server
 * between its opening and its exec request, which a command ending on another channel can cause
 * (`common-channel.c:705: !channel->sent_close`; see src/internal/ssh/serverQuirks.ts): the
 * library runs one command at a time on such a connection, so 100 commands at once all succeed.
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Operations from "../src/Operations.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import { type DropbearServer, readDropbearFromEnv } from "../tests-remote/dropbear-server.ts"
import { connectionSettings } from "./support.ts"

const server = readDropbearFromEnv()

const settingsFor = (server: DropbearServer, shell: string, patch: Settings.Patch = {}) =>
  Settings.settings({
    ...connectionSettings(server),
    shell,
    quiet: true,
    host: `${server.user}@127.0.0.1:${server.port}`,
    ...patch
  })

const assertions = (server: DropbearServer): ReadonlyArray<string> =>
  server.readLog().split("\n").filter((line) => line.includes("Failed assertion"))

describe.skipIf(server === undefined)("Dropbear", () => {
  for (const shell of ["/bin/sh -c", "/bin/bash -c"]) {
    it.effect(`commands, streams and exit codes (${shell})`, () =>
      Effect.gen(function*() {
        const dropbear = server!
        const result = yield* Operations.remote("echo out; echo err >&2; exit 3", { warnOnly: true }).pipe(
          settingsFor(dropbear, shell)
        )
        assert.strictEqual(result.exitCode, 3)
        assert.include(result.stdout, "out")
        const user = yield* Operations.remote("id -un").pipe(settingsFor(dropbear, shell))
        assert.strictEqual(user.stdout.trim(), dropbear.user)
        const root = yield* Operations.remote("id -u").pipe(settingsFor(dropbear, shell, { useSudo: true }))
        assert.strictEqual(root.stdout.trim(), "0")
        assert.deepStrictEqual(assertions(dropbear), [])
      }).pipe(Effect.provide(Ssh.layer), Effect.provide(NodeServices.layer)), 60_000)

    it.effect(
      `100 commands at once on one connection, 20 times (${shell})`,
      () =>
        Effect.gen(function*() {
          const dropbear = server!
          const failures: Array<string> = []
          for (let round = 0; round < 20; round++) {
            const exit = yield* Effect.exit(Effect.scoped(
              Effect.all(Array.from({ length: 100 }, (_, i) => Operations.remote(`echo ${i}`)), {
                concurrency: "unbounded"
              }).pipe(Effect.provide(Ssh.layer), settingsFor(dropbear, shell))
            ))
            if (Exit.isFailure(exit)) failures.push(`round ${round}: ${String(exit.cause).slice(0, 200)}`)
            else {
              const outputs = exit.value.map((result) => result.stdout)
              assert.deepStrictEqual(
                outputs,
                Array.from({ length: 100 }, (_, i) => `${i}\n`),
                `round ${round}`
              )
            }
          }
          assert.deepStrictEqual(failures, [])
          assert.deepStrictEqual(assertions(dropbear), [])
        }).pipe(Effect.provide(NodeServices.layer)),
      600_000
    )
  }
})
