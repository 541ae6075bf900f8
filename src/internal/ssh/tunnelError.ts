/**
 * The failure of a port forward, apart from the adapter that makes forwards: the public `Ssh`
 * module re-exports it, and its declarations must not reach ssh2's types.
 */
import * as Schema from "effect/Schema"

/**
 * Why a forward failed: `bind`, its listening port could not be opened (in use, not permitted,
 * refused by the server's `AllowTcpForwarding`/`PermitListen`); `connect`, one connection through
 * it could not reach its destination (the forward itself stays open); `disconnected`, the SSH
 * connection was gone.
 *
 * @since 0.1.0
 */
export const TunnelErrorReason = Schema.Literals(["bind", "connect", "disconnected"])

/**
 * @since 0.1.0
 */
export type TunnelErrorReason = typeof TunnelErrorReason.Type

/**
 * A port forward failed. `direction` is `local` (a port here, forwarded to a host and port as
 * the server sees them) or `remote` (a port on the server, forwarded to one here); `listen` is
 * the listening address and port, `to` the destination, `host` the SSH host.
 *
 * @example
 * ```ts
 * const port = yield* Ssh.forwardLocal({ remoteHost: "db.internal", remotePort: 5432, localPort: 15432 }).pipe(
 *   Effect.catchTag("TunnelError", (e) => e.reason === "bind" ? Ssh.forwardLocal({ remoteHost: "db.internal", remotePort: 5432 }) : Effect.fail(e))
 * )
 * ```
 *
 * @since 0.1.0
 */
export class TunnelError extends Schema.TaggedError<TunnelError>()("TunnelError", {
  direction: Schema.Literals(["local", "remote"]),
  reason: TunnelErrorReason,
  host: Schema.String,
  listen: Schema.String,
  to: Schema.String,
  detail: Schema.String
}) {
  override get message(): string {
    const side = this.direction === "local" ? "local" : `remote (on ${this.host})`
    switch (this.reason) {
      case "bind":
        return `could not open the ${side} port ${this.listen} to forward it to ${this.to}: ${this.detail}. ` +
          (this.direction === "local"
            ? "Choose another port, or localPort 0 for any free one."
            : "Choose another port (0 for any free one), and check AllowTcpForwarding and PermitListen in the server's sshd_config.")
      case "connect":
        return `a connection through the forward ${this.listen} -> ${this.to} (${this.host}) could not reach ${this.to}: ${this.detail}`
      case "disconnected":
        return `the forward ${this.listen} -> ${this.to} lost its SSH connection to ${this.host}: ${this.detail}`
    }
  }
}
