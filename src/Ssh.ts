/**
 * SSH connections: the {@link SshConnections} service that remote operations and transfers use
 * to reach a host, and its {@link layer}, built on the `ssh2` library.
 *
 * One connection is opened per (user, host, port, key, agent, gateway, host key checking) and
 * shared by every operation while the layer's scope is open; it is closed when the scope ends.
 * A connection that drops is replaced on the next operation. At most `maxChannels` commands
 * (or SFTP sessions) run at once on one connection; the rest wait their turn, so any number of
 * concurrent commands works against OpenSSH's `MaxSessions`.
 *
 * Connections honour `~/.ssh/config` (`HostName`, `User`, `Port`, `IdentityFile`, `ProxyJump`),
 * jump hosts (`gateway`), `known_hosts` checking (`knownHostsFile`, `hostKeyPolicy`), connect
 * time-outs and retries, and keepalives.
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
 */
import * as Context from "effect/Context"
import * as Layer from "effect/Layer"
import * as SshClient from "./internal/ssh/client.ts"
import type { SshConnectionsShape } from "./internal/ssh/port.ts"

export type {
  /** @since 0.1.0 */
  CommandHandle,
  /** @since 0.1.0 */
  Connection,
  /** @since 0.1.0 */
  ExitStatus,
  /** @since 0.1.0 */
  OutputChunk,
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
