/** Many commands at once on one host share one connection; channels are queued as needed. */
import { Effect } from "effect"
import { Operations, Settings } from "../src/index.ts"
import { exampleLayer } from "./example-server.ts"

const program = Effect.gen(function*() {
  const results = yield* Effect.all(
    Array.from({ length: 40 }, (_, i) => Operations.remote(`echo ${i}`)),
    { concurrency: "unbounded" }
  ).pipe(Settings.hide)
  yield* Effect.log(`${results.filter((r) => r.succeeded).length} commands succeeded`)
})

Effect.runPromise(program.pipe(Effect.provide(exampleLayer)))
