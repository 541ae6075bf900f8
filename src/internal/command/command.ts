/**
 * What local and remote commands share once a command has ended: turning a result into
 * success or `CommandFailed` under `warnOnly` and `displayAborts`.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { CommandResult } from "../../CommandResult.ts"
import { CommandFailed, SettingsError } from "../../Errors.ts"
import { Settings } from "../../Settings.ts"
import { durationError } from "../settings/duration.ts"

/**
 * Succeeds with a result that exited 0. Otherwise fails with `CommandFailed`, logging it first
 * when `displayAborts`; under `warnOnly` it logs a warning and succeeds with the result.
 */
export const finish = Effect.fnUntraced(function*(result: CommandResult) {
  if (result.succeeded) return result
  const current = yield* Settings
  const failure = new CommandFailed({ result })
  if (current.warnOnly) {
    yield* Effect.logWarning(
      `[${result.host}] command failed with ${result.ending}, carrying on (warnOnly): ${result.command}`
    )
    return result
  }
  if (current.displayAborts) yield* Effect.logError(failure.message)
  return yield* failure
})

/** Refuses a negative `timeout`, or one that is no duration, before anything runs (it would stop every command at once). */
export const checkTimeout = (timeout: Duration.Duration | undefined): Effect.Effect<void, SettingsError> => {
  const error = timeout === undefined ? undefined : durationError("timeout", timeout, {
    example: "\"5 minutes\", or none for no limit",
    negative: "a command time limit cannot be negative"
  })
  return error === undefined ? Effect.void : Effect.fail(error)
}

/** The result of a command that `dryRun` did not run. */
export const dryRunResult = (host: string, command: string, realCommand: string): CommandResult =>
  new CommandResult({
    host,
    command,
    realCommand,
    exitCode: 0,
    signal: null,
    stdout: "",
    stderr: "",
    durationMillis: 0
  })
