/**
 * The library against Dropbear (tests-remote/dropbear-server.ts): a second SSH server, whose login
 * user `tbsh` has /bin/sh (dash) as its login shell, with both `shell` settings.
 *
 * Known failure (issue 14), kept out of the default run until it is fixed: with several commands
 * at once on one connection, Dropbear 2022.83's per-connection process dies on its assertion
 * `common-channel.c:705: !channel->sent_close` in most runs (with 2 channels at a time already;
 * with `maxChannels: 1` never). Run it with THREADBARE_DROPBEAR_LOAD=1.
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Operations from "../src/Operations.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import { type DropbearServer, readDropbearFromEnv } from "../tests-remote/dropbear-server.ts"

const server = readDropbearFromEnv()

const settingsFor = (server: DropbearServer, shell: string, patch: Settings.Patch = {}) =>
  Settings.settings({
    keyFile: server.keyPath,
    knownHostsFile: server.knownHostsPath,
    hostKeyPolicy: "strict",
    sshConfigFile: false,
    useAgent: false,
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

    it.effect.skipIf(process.env["THREADBARE_DROPBEAR_LOAD"] === undefined)(
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
          }
          assert.deepStrictEqual(failures, [])
          assert.deepStrictEqual(assertions(dropbear), [])
        }).pipe(Effect.provide(NodeServices.layer)),
      600_000
    )
  }
})
