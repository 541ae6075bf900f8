/** Keeps standard output and standard error apart (no pty). */
import { Effect } from "effect"
import { Operations } from "../src/index.ts"
import { exampleLayer } from "./example-server.ts"

const program = Effect.gen(function*() {
  const result = yield* Operations.remote("echo to stdout; echo to stderr >&2", { combineStderr: false })
  yield* Effect.log(`stdout: ${JSON.stringify(result.stdout)} stderr: ${JSON.stringify(result.stderr)}`)
})

Effect.runPromise(program.pipe(Effect.provide(exampleLayer)))
