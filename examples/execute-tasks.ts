/**
 * The tasks of the execute-* examples. A worker process imports this module to find a task by
 * name, so it declares tasks and runs nothing: the programs that run them are the other
 * execute-*.ts files.
 */
import { Effect, Schema } from "effect"
import { Operations, Settings, Shell, Task } from "../src/index.ts"

/** What one host reports after a deploy. */
export const Deployed = Schema.Struct({
  host: Schema.String,
  release: Schema.String,
  kernel: Schema.String,
  pid: Schema.Number
})

/**
 * Installs a release on the current host: writes it under ~/tb-example and reads it back.
 * `error` lists what may cross back from a worker: any failure of an operation.
 */
export const deploy = Task.make({
  name: "deploy",
  module: import.meta.url,
  input: Schema.Struct({ release: Schema.String }),
  success: Deployed,
  error: Task.OperationError
}, ({ release }) =>
  Effect.gen(function*() {
    const host = (yield* Settings.Settings).host ?? "?"
    // Every loopback "host" shares one home directory, so each writes a file of its own.
    yield* Operations.remote(
      Shell.sh`mkdir -p ~/tb-example && echo ${release} > ~/tb-example/${host + ".release"}`
    )
    const kernel = yield* Operations.remote("uname -r", { quiet: true })
    yield* Operations.remote("sleep 0.$((RANDOM % 9)); echo installed")
    return { host, release, kernel: kernel.stdout.trim(), pid: process.pid }
  }))

/** Like `deploy`, but the worker running the host named `crashHost` dies as if out of memory. */
export const deployOrCrash = Task.make({
  name: "deployOrCrash",
  module: import.meta.url,
  input: Schema.Struct({ crashHost: Schema.String }),
  success: Schema.String,
  error: Task.OperationError
}, ({ crashHost }) =>
  Effect.gen(function*() {
    const host = (yield* Settings.Settings).host ?? "?"
    yield* Operations.remote("echo working; sleep 1")
    if (host === crashHost) {
      // What the kernel's out-of-memory killer does to a process.
      yield* Effect.sync(() => process.kill(process.pid, "SIGKILL"))
    }
    return `done on ${host}`
  }))
