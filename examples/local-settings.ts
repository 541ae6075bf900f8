/**
 * The first program of the README: local commands under settings. Runs anywhere, no server needed.
 *
 *   node examples/local-settings.ts
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Effect } from "effect"
import * as os from "node:os"
import { Operations, Settings } from "../src/index.ts"

const program = Effect.gen(function*() {
  // Shares the terminal: printed as `[localhost] local: ls -a` and then ls's own output.
  yield* Operations.local("ls -a | head -3")

  // capture: the output comes back in the result instead of being printed.
  const where = yield* Operations.local("pwd", { capture: true })
  yield* Effect.log(`ran in ${where.stdoutLines[0]}`)

  // Variables set by withEnv reach every command of the block, quoted.
  const greeting = yield* Operations.local("echo \"$GREETING\"", { capture: true })
  yield* Effect.log(`the command saw ${JSON.stringify(greeting.stdoutLines[0])}`)

  // warnOnly: a failing command returns its result instead of failing the program.
  const probe = yield* Operations.warnOnly(Operations.local("test -e no-such-file", { capture: true }))
  yield* Effect.log(`test -e exited with ${probe.exitCode}`)
}).pipe(
  Settings.lcd(os.tmpdir()),
  Settings.withEnv({ GREETING: "it's $HOME, `literally`" })
)

NodeRuntime.runMain(program.pipe(Effect.provide(NodeServices.layer)))
