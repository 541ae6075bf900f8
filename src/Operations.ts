/**
 * The operations of a deploy program: run commands here and on remote hosts, and move files.
 *
 * Each is an Effect that reads the current {@link Settings} and fails with a tagged error from
 * `Errors`. Options given to an operation win over the settings for that call.
 *
 * The transfers (`upload`, `download`, `rsyncUpload`, `rsyncDownload`) are those of `Transfer`,
 * re-exported: one function under one definition, documented there.
 *
 * @since 0.1.0
 * @module
 */
import * as Effect from "effect/Effect"
import * as readline from "node:readline/promises"
import type { CommandResult } from "./CommandResult.ts"
import type { CommandFailed } from "./Errors.ts"
import { PromptAborted } from "./Errors.ts"
import { Settings } from "./Settings.ts"

export { local, type LocalOptions } from "./internal/local/process.ts"
export {
  remote,
  remoteFileExists,
  type RemoteOptions,
  remoteSudo,
  singleCommand
} from "./internal/remote/operations.ts"
export {
  download,
  type DownloadOptions,
  rsyncDownload,
  type RsyncOptions,
  rsyncUpload,
  upload,
  type UploadOptions
} from "./Transfer.ts"

/**
 * Runs a command and returns its result even when it fails, logging a warning instead of
 * failing with `CommandFailed` (the original's `warn_only`). Every command inside the block
 * behaves so, and `CommandFailed` leaves the error type.
 *
 * @example
 * ```ts
 * const result = yield* Operations.warnOnly(Operations.local("git diff --quiet", { capture: true }))
 * if (result.failed) yield* Effect.log("the work tree has changes")
 * ```
 *
 * @since 0.1.0
 */
export const warnOnly = <E, R>(
  self: Effect.Effect<CommandResult, E, R>
): Effect.Effect<CommandResult, Exclude<E, CommandFailed>, R> =>
  Effect.updateService(self, Settings, (current) => ({ ...current, warnOnly: true })).pipe(
    // warnOnly makes every command succeed; a CommandFailed can still come from an operation
    // that ran with its own `warnOnly: false` option, and is turned into its result too.
    Effect.catchIf(
      (error): error is Extract<E, CommandFailed> =>
        typeof error === "object" && error !== null && (error as { _tag?: unknown })._tag === "CommandFailed",
      (error) => Effect.succeed((error as CommandFailed).result)
    )
  ) as Effect.Effect<CommandResult, Exclude<E, CommandFailed>, R>

/**
 * Asks a question on the terminal and returns the answer.
 *
 * Fails with `PromptAborted` when `abortOnPrompts` is set (always so in worker processes) or
 * when standard input is not a terminal, so a deploy in CI never waits for an answer.
 *
 * @since 0.1.0
 */
export const prompt = Effect.fn("Operations.prompt")(function*(message: string) {
  const current = yield* Settings
  if (current.abortOnPrompts) return yield* new PromptAborted({ prompt: message, reason: "disabled" })
  if (process.stdin.isTTY !== true) {
    return yield* new PromptAborted({ prompt: message, reason: "no-terminal" })
  }
  return yield* Effect.acquireUseRelease(
    Effect.sync(() => readline.createInterface({ input: process.stdin, output: process.stdout })),
    (rl) =>
      Effect.callback<string>((resume, signal) => {
        rl.question(`${message} `, { signal }).then((answer) => resume(Effect.succeed(answer)), () => {})
      }),
    (rl) => Effect.sync(() => rl.close())
  )
})
