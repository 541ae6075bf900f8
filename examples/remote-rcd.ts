/** Runs commands in a remote directory, whatever its name. */
import { Effect } from "effect"
import { Operations, Settings } from "../src/index.ts"
import { exampleLayer } from "./example-server.ts"

const dir = "/tmp/threadbare example's dir"

const program = Effect.gen(function*() {
  yield* Operations.remote(["mkdir", "-p", dir])
  yield* Operations.remote("pwd && touch made-here && ls").pipe(Settings.rcd(dir))
  yield* Operations.remote(["rm", "-rf", dir])
})

Effect.runPromise(program.pipe(Effect.provide(exampleLayer)))
