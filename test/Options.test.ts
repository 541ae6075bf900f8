/**
 * One rule turns every operation's options into settings: an option named after a setting
 * overrides it for that call only, `undefined` leaves it, `env` adds to the current variables, a
 * relative `localWorkingDir` is taken from the current one, and options that are no setting are
 * the operation's alone. Checked through real local commands and through the rule itself.
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { withOptions } from "../src/internal/settings/options.ts"
import * as Operations from "../src/Operations.ts"
import * as Settings from "../src/Settings.ts"

const run = <A, E>(self: Effect.Effect<A, E, NodeServices.NodeServices>) =>
  self.pipe(Settings.settings({ quiet: true }), Effect.provide(NodeServices.layer))

describe("options become settings by one rule", () => {
  it("an option overrides only its own setting, for the call, and undefined leaves it", () => {
    const current = Settings.apply(Settings.defaults, {
      timeout: "5 seconds",
      env: { A: "1" },
      localWorkingDir: "/srv"
    })
    const next = withOptions(current, {
      timeout: undefined,
      env: { B: "2" },
      localWorkingDir: "build",
      useSudo: true,
      mode: 0o644,
      onProgress: () => Effect.void
    })
    assert.strictEqual(Duration.toMillis(next.timeout!), 5000)
    assert.deepStrictEqual(next.env, { A: "1", B: "2" })
    assert.strictEqual(next.localWorkingDir, "/srv/build")
    assert.isTrue(next.useSudo)
    assert.notProperty(next, "mode")
    assert.notProperty(next, "onProgress")
    // The current settings are left as they were.
    assert.isFalse(current.useSudo)
    assert.deepStrictEqual(current.env, { A: "1" })
  })

  it.live("local: localWorkingDir and localShell by the settings' names; cwd and shell still mean them", () =>
    run(Effect.gen(function*() {
      const root = fs.realpathSync(fs.mkdtempSync(path.join(tmpdir(), "tb-options-")))
      fs.mkdirSync(path.join(root, "sub"))
      const named = yield* Operations.local("pwd; echo $0", {
        capture: true,
        localWorkingDir: "sub",
        localShell: "/bin/bash -c"
      }).pipe(Settings.lcd(root))
      assert.deepStrictEqual(named.stdoutLines, [path.join(root, "sub"), "/bin/bash"])
      const older = yield* Operations.local("pwd; echo $0", {
        capture: true,
        cwd: "sub",
        shell: "/bin/bash -c"
      })
        .pipe(Settings.lcd(root))
      assert.deepStrictEqual(older.stdoutLines, named.stdoutLines)
      fs.rmSync(root, { recursive: true, force: true })
    })))
})
