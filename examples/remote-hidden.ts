/** Runs commands without printing them or their output; the result still has it. */
import { Effect } from "effect"
import { Operations, Settings } from "../src/index.ts"
import { exampleLayer } from "./example-server.ts"

const program = Effect.gen(function*() {
  const result = yield* Settings.hide(Operations.remote("echo quietly"))
  yield* Effect.log(`hidden output was ${JSON.stringify(result.stdout)}`)
})

Effect.runPromise(program.pipe(Effect.provide(exampleLayer)))
