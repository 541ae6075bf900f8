/**
 * The tasks of bench/rolling.ts. Worker processes import this module to find them, so it declares
 * tasks and runs nothing (under bench/run-all.ts it is a no-op "benchmark" with no rows).
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Operations from "../src/Operations.ts"
import * as Task from "../src/Task.ts"

/** One command on the current host: the body of every rolling run of the benchmark. */
export const command = Task.make({
  name: "command",
  module: import.meta.url,
  input: Schema.String,
  error: Task.OperationError
}, (line) => Effect.asVoid(Operations.remote(line)))

/** `count` commands one after another on the current host: a run that publishes many events. */
export const commands = Task.make(
  {
    name: "commands",
    module: import.meta.url,
    input: Schema.Struct({ command: Schema.String, count: Schema.Number }),
    error: Task.OperationError
  },
  ({ command: line, count }) =>
    Effect.repeat(Effect.asVoid(Operations.remote(line)), { times: Math.max(0, count - 1) })
)
