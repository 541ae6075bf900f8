/**
 * Finds `run MODULE TASK` in the arguments and loads the task, before the command line is
 * parsed: the task's input Schema decides which flags `run` takes.
 */
import * as Effect from "effect/Effect"
import type * as FileSystem from "effect/FileSystem"
import * as Path from "effect/Path"
import { pathToFileURL } from "node:url"
import { find, isTask, type Task } from "../../Task.ts"
import { regularFile } from "./options.ts"
import { type TaskFlags, taskFlags } from "./taskFlags.ts"

/** What the arguments name after `run`. */
export interface RunTarget {
  readonly module: string
  readonly task: string | undefined
}

/** The task of a `run`, the names a module offers when no task was named, or why neither. */
export type LoadedTask =
  | {
    readonly _tag: "Loaded"
    readonly module: string
    readonly task: Task<unknown, unknown, unknown>
    readonly flags: TaskFlags
  }
  | { readonly _tag: "Listed"; readonly names: ReadonlyArray<string> }
  | { readonly _tag: "Failed"; readonly message: string }

/**
 * `run` and the two values after it, when `run` is the subcommand: the first value of the line
 * that is not a flag's value. `valueFlags` are the flags (long names and aliases) that take one.
 */
export const scanRun = (
  args: ReadonlyArray<string>,
  valueFlags: ReadonlySet<string>
): RunTarget | undefined => {
  const values: Array<string> = []
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!
    if (arg === "--") break
    if (arg.startsWith("-") && arg.length > 1) {
      const name = arg.replace(/^--?/, "")
      if (!name.includes("=") && valueFlags.has(name)) i++
      continue
    }
    values.push(arg)
    if (values[0] !== "run") return undefined
    if (values.length === 3) break
  }
  return values[0] === "run" && values[1] !== undefined ? { module: values[1], task: values[2] } : undefined
}

/** Imports the module (resolved against the working directory) and finds the task in it. */
export const loadTask = (
  target: RunTarget,
  reserved: ReadonlySet<string>
): Effect.Effect<LoadedTask, never, Path.Path | FileSystem.FileSystem> =>
  Effect.gen(function*() {
    const path = yield* Path.Path
    const file = path.resolve(target.module)
    // Importing a FIFO would wait for a writer forever.
    const checked = yield* Effect.result(regularFile("run", file))
    if (checked._tag === "Failure") {
      return {
        _tag: "Failed",
        message: `run: cannot load ${target.module}: ${checked.failure.message.replace(/^--run: /, "")}`
      } as const
    }
    const loaded = yield* Effect.tryPromise(() =>
      import(pathToFileURL(file).href) as Promise<Record<string, unknown>>
    )
      .pipe(Effect.result)
    if (loaded._tag === "Failure") {
      const cause = loaded.failure.cause
      return {
        _tag: "Failed",
        message: `run: cannot load ${target.module}: ${
          cause instanceof Error ? cause.message : String(cause)
        }`
      } as const
    }
    const exports = loaded.success
    if (target.task === undefined) {
      return {
        _tag: "Listed",
        names: Object.values(exports).filter(isTask).map((task) => task.name)
      } as const
    }
    const task = find(exports, target.task)
    if (task === undefined) {
      const names = Object.values(exports).filter(isTask).map((t) => t.name)
      return {
        _tag: "Failed",
        message: `run: no task named ${target.task} in ${target.module} (it has: ${
          names.join(", ") || "none"
        })`
      } as const
    }
    const flags = taskFlags(task, reserved)
    return flags._tag === "Invalid"
      ? { _tag: "Failed", message: `run: ${flags.message}` } as const
      : { _tag: "Loaded", module: target.module, task, flags } as const
  })
