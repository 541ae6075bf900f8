/**
 * What local and remote commands share once a command has ended: turning a result into
 * success or `CommandFailed` under `warnOnly` and `displayAborts`.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { CommandResult } from "../CommandResult.ts"
import { CommandFailed, SettingsError } from "../Errors.ts"
import { isNotADuration, Settings } from "../Settings.ts"

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

/** Refuses a negative `timeout` before anything runs (it would stop every command at once). */
export const checkTimeout = (timeout: Duration.Duration | undefined): Effect.Effect<void, SettingsError> => {
  if (timeout === undefined || Duration.toMillis(timeout) >= 0) return Effect.void
  const invalid = isNotADuration(timeout)
  return Effect.fail(
    new SettingsError({
      setting: "timeout",
      value: invalid ? "not a duration" : `${Duration.toMillis(timeout)} millis`,
      detail: invalid
        ? "not a duration (NaN, or text that does not read as one); give a limit such as \"5 minutes\", or none"
        : "a command time limit cannot be negative; give one such as \"5 minutes\", or none for no limit"
    })
  )
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
