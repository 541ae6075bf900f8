/** Uses the remote shell: variables, pipes, arithmetic; and values passed safely quoted. */
import { Effect } from "effect"
import { Operations, Settings } from "../src/index.ts"
import { exampleLayer } from "./example-server.ts"

const program = Effect.gen(function*() {
  yield* Operations.remote("echo \"$USER has $(ls / | wc -l) entries in / and $((6 * 7)) is the answer\"")
  // Values from outside go in as variables, quoted for the shell: no injection possible.
  yield* Operations.remote("echo \"release $RELEASE\"").pipe(Settings.withEnv({ RELEASE: "v1.2; rm -rf /" }))
})

Effect.runPromise(program.pipe(Effect.provide(exampleLayer)))
