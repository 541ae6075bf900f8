/** Runs a command on a remote host and uses its output. */
import { Effect } from "effect"
import { Operations } from "../src/index.ts"
import { exampleLayer } from "./example-server.ts"

const program = Effect.gen(function*() {
  const result = yield* Operations.remote("uname -s")
  yield* Effect.log(`the remote kernel is ${result.stdoutLines[0]}`)
})

Effect.runPromise(program.pipe(Effect.provide(exampleLayer)))
