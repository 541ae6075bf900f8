/** Runs commands as root, and as another user, through sudo. */
import { Effect } from "effect"
import { Operations } from "../src/index.ts"
import { exampleLayer, server } from "./example-server.ts"

const program = Effect.gen(function*() {
  yield* Operations.remoteSudo("whoami")
  if (server.otherUser !== undefined) yield* Operations.remoteSudo("whoami", { sudoUser: server.otherUser })
})

Effect.runPromise(program.pipe(Effect.provide(exampleLayer)))
