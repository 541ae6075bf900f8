/** A command that exits non-zero is a typed error: handle it, or carry on with warnOnly. */
import { Effect } from "effect"
import { Operations } from "../src/index.ts"
import { exampleLayer } from "./example-server.ts"

const program = Effect.gen(function*() {
  const code = yield* Operations.remote("test -d /no/such/dir").pipe(
    Effect.map(() => 0),
    Effect.catchTag("CommandFailed", (error) => Effect.succeed(error.result.exitCode ?? -1))
  )
  yield* Effect.log(`test exited with ${code}`)
  const result = yield* Operations.warnOnly(Operations.remote("exit 3"))
  yield* Effect.log(`carried on after exit code ${result.exitCode}`)
})

Effect.runPromise(program.pipe(Effect.provide(exampleLayer)))
