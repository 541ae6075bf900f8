/**
 * Every way an operation of effect-threadbare can fail, as tagged errors.
 *
 * They are `Schema.TaggedError` classes, so a failure in a worker process arrives in the parent
 * with its fields intact, and `Effect.catchTag` picks out the ones a program wants to handle.
 * Each `message` is derived from the fields: it says what happened, where (host, command or
 * path) and what to do about it.
 *
 * | original (threadbare / Fabric 1) | here |
 * | --- | --- |
 * | `abort_exception` raised on a non-zero exit | `CommandFailed` |
 * | `warn_only=True` | `Operations.warnOnly` (turns `CommandFailed` into the result) |
 * | `NetworkError` | `ConnectionError` (with a `reason`) |
 * | `abort_on_prompts` | `PromptAborted` |
 *
 * @since 0.1.0
 * @module
 */
import * as Schema from "effect/Schema"
import { CommandResult } from "./CommandResult.ts"

const tail = (text: string, lines = 5): string => {
  const all = text.trimEnd().split(/\r?\n/)
  return all.slice(-lines).join("\n")
}

/**
 * A command exited non-zero or was killed by a signal. `result` holds everything it did.
 *
 * Recover with `Operations.warnOnly` (keep the result and go on) or `Effect.catchTag("CommandFailed", ...)`.
 *
 * @since 0.1.0
 */
export class CommandFailed extends Schema.TaggedError<CommandFailed>()("CommandFailed", {
  result: CommandResult
}) {
  /** The host the command ran on (`"localhost"` for local commands). */
  get host(): string {
    return this.result.host
  }

  /** The command as the caller wrote it. */
  get command(): string {
    return this.result.command
  }

  override get message(): string {
    const r = this.result
    const output = tail(r.stderr !== "" ? r.stderr : r.stdout)
    return `[${r.host}] command failed with ${r.ending}: ${r.command}` +
      (output === "" ? "" : `\nlast output:\n${output}`) +
      `\nTo carry on despite the failure, wrap the operation in Operations.warnOnly.`
  }
}

/**
 * A command ran longer than its `timeout`. The process (and, remotely, its process group) was
 * stopped before this error was raised.
 *
 * @since 0.1.0
 */
export class CommandTimeout extends Schema.TaggedError<CommandTimeout>()("CommandTimeout", {
  host: Schema.String,
  command: Schema.String,
  timeoutMillis: Schema.Number,
  /** Output gathered before the command was stopped. */
  stdout: Schema.String,
  stderr: Schema.String
}) {
  override get message(): string {
    return `[${this.host}] command timed out after ${this.timeoutMillis} ms and was stopped: ${this.command}` +
      `\nRaise the \`timeout\` setting if the command needs longer, or find out why it hangs ` +
      `(a prompt waiting for input is a common cause).`
  }
}

/**
 * Why a connection could not be made or was lost.
 *
 * - `refused`: nothing listens on the port.
 * - `timeout`: no answer within `connectTimeout` (or keepalives went unanswered).
 * - `authentication`: the server refused every key, agent identity or password offered.
 * - `host-key`: the server's host key changed, or is unknown and the policy is `strict`.
 * - `unknown-host`: the host name does not resolve.
 * - `disconnected`: the connection dropped while in use.
 * - `channel-refused`: the connection is up but the server refused a new session on it: its
 *   `MaxSessions` limit (OpenSSH: 10) was reached, which `maxChannels` should stay below.
 * - `proxy`: the ProxyCommand the connection goes through exited (or could not start) before
 *   the SSH handshake completed; the detail names it and ends with the last lines of its stderr.
 *
 * @since 0.1.0
 */
export const ConnectionErrorReason = Schema.Literals([
  "refused",
  "timeout",
  "authentication",
  "host-key",
  "unknown-host",
  "disconnected",
  "channel-refused",
  "proxy"
])

/** @since 0.1.0 */
export type ConnectionErrorReason = typeof ConnectionErrorReason.Type

const connectionAdvice: Record<ConnectionErrorReason, string> = {
  refused: "Check that sshd runs on the host and that the port is right.",
  timeout: "Check that the host is up and reachable (firewall, security group), or raise `connectTimeout`.",
  authentication:
    "Check the user name and that the key (`keyFile`, ssh-agent) or `password` is one the server accepts.",
  "host-key":
    "If the host was rebuilt, remove its old entry from the known_hosts file (ssh-keygen -R host); otherwise do not connect: someone may be in the middle.",
  "unknown-host": "Check the host name and DNS.",
  disconnected: "The connection was lost; check the network and the server, then run the operation again.",
  "channel-refused":
    "The server's MaxSessions limit (sessions at once on one connection) was reached: lower `maxChannels` to at most MaxSessions - 2 (two more slots are kept for stopping commands and for transfers), or raise MaxSessions in the server's sshd_config.",
  proxy:
    "The ProxyCommand (the `proxyCommand` setting or ssh_config's ProxyCommand) ended before the SSH handshake completed: run it by hand, with its tokens filled in as shown, and fix what its stderr says."
}

/**
 * A connection to a host could not be made, or was lost during an operation.
 *
 * @since 0.1.0
 */
export class ConnectionError extends Schema.TaggedError<ConnectionError>()("ConnectionError", {
  host: Schema.String,
  port: Schema.Number,
  user: Schema.String,
  reason: ConnectionErrorReason,
  /** What the SSH library or the network said. */
  detail: Schema.String,
  /**
   * Through gateways, the link that failed when it was not the last one: `user@gateway:port`
   * (the gateway itself could not be reached) or `gateway -> host:port` (the gateway could not
   * open its forward to the next host). `host` is always the host the operation was for.
   */
  hop: Schema.optional(Schema.String)
}) {
  override get message(): string {
    return `[${this.host}] cannot connect as ${this.user} to port ${this.port} (${this.reason})` +
      `${this.hop === undefined ? "" : ` at hop ${this.hop}`}: ${this.detail}\n` +
      connectionAdvice[this.reason]
  }
}

/**
 * Why a transfer failed.
 *
 * @since 0.1.0
 */
export const TransferErrorReason = Schema.Literals([
  "exists",
  "not-found",
  "permission",
  "is-directory",
  "not-a-directory",
  "not-a-file",
  "verify",
  "rsync",
  "failed"
])

/** @since 0.1.0 */
export type TransferErrorReason = typeof TransferErrorReason.Type

const transferAdvice: Record<TransferErrorReason, string> = {
  exists: "Pass `overwrite: true` (or the `overwrite` setting) to replace it, or choose another destination.",
  "not-found":
    "Check the path; a missing parent directory on this machine is created, a missing source is not.",
  permission: "Use `useSudo: true` to write or read where the login user may not, or fix the permissions.",
  "is-directory":
    "Name a file, or transfer the directory as a whole (upload/download of a directory copies the tree).",
  "not-a-directory":
    "A parent of the path is a file, not a directory: remove or rename it, or choose another destination.",
  "not-a-file":
    "Only regular files and directories are transferred (a FIFO, socket or device would block or never end); copy its content to a file, or pass the bytes.",
  verify: "The copy did not match the source; nothing was replaced. Check free disk space and run it again.",
  rsync: "See rsync's message above; run the same rsync by hand with -v for details.",
  failed: "Nothing was replaced at the destination; check the connection and run it again."
}

/**
 * An upload, download or rsync failed. The destination was left as it was before.
 *
 * @since 0.1.0
 */
export class TransferError extends Schema.TaggedError<TransferError>()("TransferError", {
  host: Schema.String,
  /** The path the error is about (remote or local, as `side` says). */
  path: Schema.String,
  side: Schema.Literals(["local", "remote"]),
  reason: TransferErrorReason,
  detail: Schema.String
}) {
  override get message(): string {
    return `[${this.host}] transfer failed at ${this.side} path ${this.path} (${this.reason}): ${this.detail}\n` +
      transferAdvice[this.reason]
  }
}

/**
 * A prompt could not be shown: prompts are disabled (`abortOnPrompts`, always on in workers)
 * or there is no terminal to ask on.
 *
 * @since 0.1.0
 */
export class PromptAborted extends Schema.TaggedError<PromptAborted>()("PromptAborted", {
  prompt: Schema.String,
  reason: Schema.Literals(["disabled", "no-terminal"])
}) {
  override get message(): string {
    return this.reason === "disabled"
      ? `refused to prompt "${this.prompt}": prompts are disabled (abortOnPrompts). Pass the answer as a setting instead.`
      : `cannot prompt "${this.prompt}": there is no terminal to ask on. Pass the answer as a setting instead.`
  }
}

/**
 * A setting has a value that cannot work (a port out of range, a missing key file, a local
 * directory that does not exist, a malformed host string). Raised before anything runs.
 *
 * @since 0.1.0
 */
export class SettingsError extends Schema.TaggedError<SettingsError>()("SettingsError", {
  setting: Schema.String,
  value: Schema.String,
  detail: Schema.String
}) {
  override get message(): string {
    return `invalid setting \`${this.setting}\` = ${JSON.stringify(this.value)}: ${this.detail}`
  }
}

/**
 * A worker process of `Execute` died during a run (killed, out of memory, `process.exit` in the
 * task). Every run in flight on that worker fails with one, for its own host; the pool starts a
 * new worker for later runs. `runsInFlight` tells them apart: 1 means the run was alone on its
 * worker (it is the one that killed it); more means it may only have been a bystander, which
 * `isolateCrashes` (on by default) runs once more, alone, before giving up.
 *
 * Also exported as `Execute.WorkerCrashed`.
 *
 * @example
 * ```ts
 * // declare: results: ReadonlyArray<Execute.HostOutcome<string, Errors.OperationError | Errors.WorkerCrashed>>
 * for (const { error, host } of Execute.failures(results)) {
 *   if (error._tag === "WorkerCrashed") yield* Effect.logError(`${host}: worker died (${error.signal})`)
 * }
 * ```
 *
 * @since 0.1.0
 */
export class WorkerCrashed extends Schema.TaggedError<WorkerCrashed>()("WorkerCrashed", {
  /** The host of the run, or the label of its value. */
  host: Schema.String,
  task: Schema.String,
  /** The worker's exit code, or `null` when a signal ended it. */
  exitCode: Schema.NullOr(Schema.Number),
  /** The signal that ended the worker (`"SIGKILL"`, ...), or `null`. */
  signal: Schema.NullOr(Schema.String),
  /** How many runs the worker had in flight when it died, this one included. */
  runsInFlight: Schema.Number,
  detail: Schema.String
}) {
  override get message(): string {
    const ending = this.signal !== null
      ? `signal ${this.signal}`
      : this.exitCode !== null
      ? `exit code ${this.exitCode}`
      : "an unknown cause"
    const shared = this.runsInFlight > 1 ? ` with ${this.runsInFlight} runs in flight` : ""
    return `[${this.host}] the worker running task ${this.task} died (${ending})${shared}: ${this.detail}\n` +
      `Look for a process.exit or a crash in the task; a SIGKILL often means the out-of-memory killer.`
  }
}

/**
 * Every error an operation of effect-threadbare can fail with, as one Schema: a convenient
 * `error` for tasks that let any of them through. `WorkerCrashed` is not among them: a task
 * never fails with it, `Execute` adds it to each outcome.
 *
 * Also exported as `Task.OperationError`.
 *
 * @example
 * ```ts
 * Task.make(
 *   { name: "deploy", module: import.meta.url, error: Errors.OperationError },
 *   () => Operations.remote("./deploy.sh")
 * )
 * ```
 *
 * @since 0.1.0
 */
export const OperationError = Schema.Union([
  CommandFailed,
  CommandTimeout,
  ConnectionError,
  TransferError,
  PromptAborted,
  SettingsError
])

/**
 * The type of {@link OperationError}.
 *
 * @example
 * ```ts
 * const retryable = (e: Errors.OperationError) => e._tag === "ConnectionError"
 * ```
 *
 * @since 0.1.0
 */
export type OperationError = typeof OperationError.Type
