/**
 * What every transfer shares: options turned into settings (and the arguments refused before
 * anything connects), the {@link Job} that remote steps work in, and the cleanup commands that run
 * however a transfer ends.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { randomBytes } from "node:crypto"
import { ConnectionError, SettingsError, TransferError } from "../../Errors.ts"
import { Settings } from "../../Settings.ts"
import { type Connection, SshConnections } from "../../Ssh.ts"
import { withOptions as applyOptions } from "../settings/options.ts"
import * as Io from "./io.ts"
import type { RsyncOptions, TransferOptions } from "./options.ts"
import * as Remote from "./remote.ts"

export const nonce = Effect.sync(() => randomBytes(6).toString("hex"))

/**
 * Refuses an empty path argument before anything is touched: `""` is what an unset variable
 * gives, and every layer below would read it as somewhere real (the current directory, the
 * login user's home directory), where an upload or `delete: true` would do damage.
 */
export const nonEmpty = (argument: string, value: string | undefined): Effect.Effect<void, SettingsError> =>
  value === ""
    ? Effect.fail(
      new SettingsError({
        setting: argument,
        value,
        detail: "an empty path names no file; give the path (\".\" for the current directory)"
      })
    )
    : Effect.void

/**
 * A `mode` option is permission bits, `0` to `0o7777`, a whole number: anything else (`NaN`, a
 * negative number, bits beyond the permission bits) would be cut down to bits nobody asked for,
 * with `useSudo` a root-owned setuid file, so it is refused before anything is touched.
 */
export const checkMode = (mode: number | undefined): Effect.Effect<void, SettingsError> =>
  mode === undefined || (Number.isInteger(mode) && mode >= 0 && mode <= 0o7777)
    ? Effect.void
    : Effect.fail(
      new SettingsError({
        setting: "mode",
        value: String(mode),
        detail: "not permission bits; give a whole number from 0 to 0o7777, such as 0o644"
      })
    )

/** A transfer's options become settings by the rule of every operation. */
export const withOptions = (current: Settings, options: TransferOptions | RsyncOptions): Settings =>
  applyOptions(current, options)

/** What every remote step of a transfer needs. */
export interface Job {
  readonly settings: Settings
  readonly connection: Connection
  readonly label: string
  /** The remote path as the caller gave it, for messages. */
  readonly shown: string
  /** Opens the connection of the settings again, for cleanups after a drop. */
  readonly reconnect: Effect.Effect<Connection, ConnectionError | SettingsError, Scope.Scope>
}

export const remotePlace = (ctx: Job, p?: string): Io.Place => ({
  host: ctx.label,
  side: "remote",
  path: p ?? ctx.shown
})

/** Turns a failure after the connection dropped into the `ConnectionError` it really is. */
export const whileConnected = <A, E, R>(
  ctx: Job,
  self: Effect.Effect<A, E, R>
): Effect.Effect<A, E | ConnectionError, R> =>
  Effect.catchIf(
    self,
    (error): error is E => error instanceof TransferError && !ctx.connection.isOpen(),
    (error) =>
      Effect.fail(
        new ConnectionError({
          host: ctx.label,
          port: ctx.connection.target.port,
          user: ctx.connection.target.user,
          reason: "disconnected",
          detail: `the connection dropped during the transfer of ${(error as TransferError).path} (${
            (error as TransferError).detail
          }); the destination was left as it was`
        })
      )
  )

/**
 * Runs a cleanup command, on a fresh connection if the transfer's own one is gone. Never fails:
 * a transfer's outcome is already decided when its cleanup runs.
 */
export const cleanup = (ctx: Job, line: string, input?: string): Effect.Effect<void> =>
  Remote.runCommand(ctx.connection, line, { input, reserved: true }).pipe(
    Effect.catch(() =>
      Effect.scoped(
        Effect.flatMap(ctx.reconnect, (connection) => Remote.runCommand(connection, line, { input }))
      )
    ),
    // Finalizers are uninterruptible; the time limit must be able to stop a hung cleanup.
    Effect.interruptible,
    Effect.timeoutOption(Duration.seconds(20)),
    Effect.ignore,
    Effect.withSpan("Transfer.cleanup")
  )

export const hostOf = Effect.fnUntraced(function*(settings: Settings) {
  return (yield* (yield* SshConnections).resolve(settings)).label
})
