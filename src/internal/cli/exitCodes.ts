/**
 * The exit status of `threadbare`, one code per kind of failure, so a script can tell a command
 * that failed from a host it could not reach. When hosts fail in different ways, the highest
 * code wins.
 */
import * as Cause from "effect/Cause"
import * as Exit from "effect/Exit"
import * as Schema from "effect/Schema"

/** Every host succeeded. */
export const ok = 0
/** A command exited non-zero or timed out on some host. */
export const commandFailed = 1
/** The command line or the task's input was wrong: nothing was run. */
export const usage = 2
/** A host could not be reached or refused the login. */
export const connectionFailed = 3
/** A file transfer failed. */
export const transferFailed = 4
/** Anything else: a worker process died, a defect, a report that could not be written. */
export const other = 5

/** Interrupted by a signal (Ctrl-C, SIGTERM), after the remote commands were stopped. */
export const interrupted = 130

/** The table printed in `--help` and in the README. */
export const table: ReadonlyArray<readonly [number, string]> = [
  [ok, "every host succeeded"],
  [commandFailed, "a command failed (non-zero exit or time-out) on some host"],
  [usage, "bad usage or task input (checked before any host is touched)"],
  [connectionFailed, "a host could not be reached or refused the login"],
  [transferFailed, "a file transfer failed"],
  [other, "anything else: a worker died, a defect, a report not written"],
  [interrupted, "interrupted (Ctrl-C, SIGTERM); remote commands were stopped first"]
]

/** A mistake on the command line found after parsing (a missing file, a bad value). */
export class UsageError extends Schema.TaggedError<UsageError>()("UsageError", {
  message: Schema.String
}) {}

/** The code of one typed error of a run. */
export const codeOfError = (error: unknown): number => {
  const tag = typeof error === "object" && error !== null ? (error as { _tag?: unknown })._tag : undefined
  switch (tag) {
    case "CommandFailed":
    case "CommandTimeout":
      return commandFailed
    case "UsageError":
    case "InputError":
    case "SettingsError":
      return usage
    case "ConnectionError":
      return connectionFailed
    case "TransferError":
      return transferFailed
    default:
      return other
  }
}

/** The code of one host's exit: 0 when it succeeded, nothing to report when it was interrupted. */
export const codeOfExit = (exit: Exit.Exit<unknown, unknown>): number => {
  if (Exit.isSuccess(exit)) return ok
  const error = Cause.findErrorOption(exit.cause)
  if (error._tag === "Some") return codeOfError(error.value)
  return Cause.hasInterruptsOnly(exit.cause) ? commandFailed : other
}
