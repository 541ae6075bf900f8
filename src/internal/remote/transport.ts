/**
 * The contract between a remote command's envelope and the transport that runs it: what the
 * transport is told of the command, and what it must do. The SSH transport in `run.ts` is the
 * real one; `Testing.layer` puts a scripted one in its place.
 */
import type * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { ConnectionError, SettingsError } from "../../Errors.ts"
import type { Settings } from "../../Settings.ts"
import type { SshConnections } from "../../Ssh.ts"
import type { Ending, Sink } from "../command/envelope.ts"
import type { BuiltCommand } from "../command/shell.ts"

/** Why a remote command runs: a command of the user's, or `remoteFileExists`'s test. */
export type RemotePurpose =
  | { readonly _tag: "Command" }
  | { readonly _tag: "FileExists"; readonly path: string }

/** A remote command as the envelope hands it to the transport. */
export interface RemoteRequest {
  readonly purpose: RemotePurpose
  /** The command as the caller gave it. */
  readonly command: string | ReadonlyArray<string>
  /** The host name shown in lines and results. */
  readonly host: string
  /** The user and port of the host string, when it names them. */
  readonly user: string | undefined
  readonly port: number | undefined
  /** What the user asked for (`display`, `line`). */
  readonly built: BuiltCommand
  /** What is sent: the command with our sudo prelude. */
  readonly sent: BuiltCommand
  /** The nonce prompt sudo is given when a password may be asked for. */
  readonly prompt: string | undefined
  /** The marker printed under sudo once the command starts. */
  readonly startMarker: string | undefined
  /**
   * The marker the login shell reports its process id with. Under sudo without a pty, `sent`
   * carries it too, inside sudo's command line: the command is found by it when its process id
   * never arrived.
   */
  readonly pidMarker: string
  /** The settings of this call (`useSudo`, `sudoUser`, `remoteWorkingDir`, `env`, `pty`...). */
  readonly settings: Settings
}

/**
 * Runs a remote command: starts it (connecting as needed), then gives what waits for its end,
 * handing its output to the sink; interrupting that wait stops the command. `redact` is set by the transport to what must be masked in output.
 */
export interface RemoteTransportShape {
  readonly start: (
    request: RemoteRequest,
    sink: Sink,
    setRedact: (redact: (text: string) => string) => void
  ) => Effect.Effect<
    Effect.Effect<Ending, ConnectionError | SettingsError, SshConnections>,
    ConnectionError | SettingsError,
    SshConnections | Scope.Scope
  >
}
