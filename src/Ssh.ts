/**
 * SSH connections: the {@link SshConnections} service that remote operations and transfers use
 * to reach a host, and its {@link layer}, built on the `ssh2` library.
 *
 * One connection is opened per (user, host, port, key, agent, agent forwarding, gateway, host key
 * checking) and shared by every operation while the layer's scope is open; it is closed when the
 * scope ends.
 * A connection that drops is replaced on the next operation. At most `maxChannels` commands
 * (or SFTP sessions) run at once on one connection; the rest wait their turn, so any number of
 * concurrent commands works against OpenSSH's `MaxSessions`.
 *
 * Connections honour `~/.ssh/config` (`HostName`, `User`, `Port`, `IdentityFile`, `ProxyJump`),
 * jump hosts (`gateway`), `known_hosts` checking (`knownHostsFile`, `hostKeyPolicy`), connect
 * time-outs and retries, keepalives, and agent forwarding (`forwardAgent`). Port forwards
 * ({@link forwardLocal}, {@link forwardRemote}) are scoped resources on these connections.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Operations, Settings, Ssh } from "effect-threadbare"
 *
 * const program = Operations.remote("uptime").pipe(Settings.settings({ host: "deploy@web-1" }))
 * Effect.runPromise(program.pipe(Effect.provide(Ssh.layer)))
 * ```
 *
 * @since 0.1.0
 * @module
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type { ConnectionError, SettingsError } from "./Errors.ts"
import * as SshClient from "./internal/ssh/client.ts"
import type { LocalForwardOptions, RemoteForwardOptions, SshConnectionsShape } from "./internal/ssh/port.ts"
import type { TunnelError } from "./internal/ssh/tunnelError.ts"
import { Settings } from "./Settings.ts"

export type {
  /** @since 0.1.0 */
  CommandHandle,
  /** @since 0.1.0 */
  Connection,
  /** @since 0.1.0 */
  ExitStatus,
  /** @since 0.1.0 */
  LocalForwardOptions,
  /** @since 0.1.0 */
  OutputChunk,
  /** @since 0.1.0 */
  RemoteForwardOptions,
  /** @since 0.1.0 */
  SftpHandle,
  /** @since 0.1.0 */
  SftpOpenFlags,
  /** @since 0.1.0 */
  SftpSession,
  /** @since 0.1.0 */
  SftpStats,
  /** @since 0.1.0 */
  SshConnectionsShape,
  /** @since 0.1.0 */
  Target
} from "./internal/ssh/port.ts"

export {
  /**
   * An SFTP request failed: the server answered with a status other than success, or the
   * session was closed; `code` says which ({@link SftpStatus}).
   *
   * @since 0.1.0
   */
  SftpError,
  /**
   * SFTP status codes that an {@link SftpError} carries.
   *
   * @since 0.1.0
   */
  SftpStatus
} from "./internal/ssh/sftpError.ts"

export {
  /**
   * A port forward failed: its port could not be opened (`bind`), one connection through it could
   * not reach its destination (`connect`), or its SSH connection was gone (`disconnected`).
   *
   * @since 0.1.0
   */
  TunnelError,
  /**
   * The reasons a {@link TunnelError} carries.
   *
   * @since 0.1.0
   */
  TunnelErrorReason
} from "./internal/ssh/tunnelError.ts"

/**
 * The SSH connection service.
 *
 * @since 0.1.0
 */
export class SshConnections extends Context.Service<SshConnections, SshConnectionsShape>()(
  "effect-threadbare/SshConnections"
) {}

/**
 * The SSH connection service on `ssh2`. Connections opened through it are closed when the
 * layer's scope ends.
 *
 * @example
 * ```ts
 * const main = program.pipe(Effect.provide(Ssh.layer))
 * ```
 *
 * @since 0.1.0
 */
export const layer: Layer.Layer<SshConnections> = Layer.effect(SshConnections, SshClient.make)

/**
 * Forwards a local port to a host and port as the server sees them (`ssh -L`), on the connection
 * of the current settings, for as long as the enclosing scope is open: a migration that talks to
 * a database only the server reaches. Succeeds with the local port (any free one when
 * `localPort` is 0, the default), listening on `127.0.0.1` unless `localHost` says otherwise.
 * Closing the scope, or interrupting it, closes the port and every connection through it.
 *
 * Reads the connection settings (`host`...). Fails with `SettingsError`, `ConnectionError`, or
 * `TunnelError` (`bind`) when the port cannot be opened; a connection whose destination the
 * server cannot reach is closed and logged as a warning, and the forward stays open.
 *
 * @example
 * ```ts
 * Effect.scoped(Effect.gen(function*() {
 *   const port = yield* Ssh.forwardLocal({ remoteHost: "db.internal", remotePort: 5432 })
 *   yield* Operations.local(`DATABASE_URL=postgres://app@127.0.0.1:${port}/app npm run migrate`)
 * })).pipe(Settings.settings({ host: "deploy@web-1" }))
 * ```
 *
 * @since 0.1.0
 */
export const forwardLocal: (
  options: LocalForwardOptions
) => Effect.Effect<number, TunnelError | ConnectionError | SettingsError, SshConnections | Scope.Scope> =
  Effect
    .fn("Ssh.forwardLocal")(function*(options: LocalForwardOptions) {
      const connection = yield* (yield* SshConnections).connect(yield* Settings)
      return yield* connection.forwardLocal(options)
    })

/**
 * Forwards a port on the server back to a host and port here (`ssh -R`), on the connection of
 * the current settings, for as long as the enclosing scope is open: a command on the server that
 * reaches a service of this machine. The server listens on `127.0.0.1` unless `remoteHost` says
 * otherwise; every user of the server can connect to it while it is open. Succeeds with the
 * server's port (any free one when `remotePort` is 0). Closing the scope, or interrupting it,
 * has the server stop listening and ends every connection through it.
 *
 * Reads the connection settings. Fails with `SettingsError`, `ConnectionError`, or `TunnelError`
 * (`bind`) when the server will not listen there (port taken, `AllowTcpForwarding`); a connection
 * whose local destination refuses it is turned away and logged as a warning.
 *
 * @example
 * ```ts
 * Effect.scoped(Effect.gen(function*() {
 *   const port = yield* Ssh.forwardRemote({ remotePort: 0, localPort: 8080 })
 *   yield* Operations.remote(`curl -fsS http://127.0.0.1:${port}/artifact.tar.gz | tar -xz`)
 * }))
 * ```
 *
 * @since 0.1.0
 */
export const forwardRemote: (
  options: RemoteForwardOptions
) => Effect.Effect<number, TunnelError | ConnectionError | SettingsError, SshConnections | Scope.Scope> =
  Effect
    .fn("Ssh.forwardRemote")(function*(options: RemoteForwardOptions) {
      const connection = yield* (yield* SshConnections).connect(yield* Settings)
      return yield* connection.forwardRemote(options)
    })
