/**
 * The shape of the SSH port: what a connection, a running command and an SFTP session offer,
 * declared once here for the adapter that implements it (this folder) and re-exported, with
 * these docs, by the public `Ssh` module, which adds the service and its layer.
 */
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import type * as Redacted from "effect/Redacted"
import type * as Ref from "effect/Ref"
import type * as Scope from "effect/Scope"
import type * as Sink from "effect/Sink"
import type * as Stream from "effect/Stream"
import type { ConnectionError, SettingsError } from "../../Errors.ts"
import type { HostKeyPolicy, Settings } from "../../Settings.ts"
import type { SftpError } from "./sftpError.ts"
import type { TunnelError } from "./tunnelError.ts"

/**
 * Where and how to connect, resolved from the settings and `~/.ssh/config`.
 *
 * @since 0.1.0
 */
export interface Target {
  /** The host as the user named it (an ssh_config alias stays an alias), for messages. */
  readonly label: string
  /** The address connected to (`HostName` from ssh_config, else `label`). */
  readonly host: string
  readonly port: number
  readonly user: string
  /** The private key file, resolved to an absolute path; `undefined` for none. */
  readonly keyFile: string | undefined
  readonly keyPassphrase: Redacted.Redacted<string> | undefined
  readonly password: Redacted.Redacted<string> | undefined
  /**
   * User certificates ssh_config names (`CertificateFile`), absolute. Never sent: ssh2 has no
   * certificate key types; they are only named in a warning and in authentication errors.
   */
  readonly certificateFiles?: ReadonlyArray<string>
  /** The ssh-agent socket offered, if any. */
  readonly agent: string | undefined
  /**
   * Whether the connection forwards `agent` to the host: the `forwardAgent` setting, or
   * ssh_config's `ForwardAgent` (`yes`, or an agent socket named there) when an agent is
   * offered. Never for a jump host.
   */
  readonly forwardAgent?: boolean | undefined
  /**
   * The agent socket to forward when ssh_config's `ForwardAgent` names one (a path, or `$VAR`):
   * forwarded in place of `agent`, which still authenticates. Absent: `agent` is forwarded.
   */
  readonly forwardAgentSocket?: string | undefined
  /** The known_hosts file, resolved to an absolute path. */
  readonly knownHostsFile: string
  /**
   * The files ssh_config's `UserKnownHostsFile` lists after the first, absolute: checked as
   * OpenSSH checks them, never written (a new key goes to `knownHostsFile`).
   */
  readonly otherKnownHostsFiles?: ReadonlyArray<string> | undefined
  readonly hostKeyPolicy: HostKeyPolicy
  /** The jump host this target is reached through, if any. */
  readonly gateway: Target | undefined
  /**
   * The command to connect through (the `proxyCommand` setting, else ssh_config's
   * `ProxyCommand` when no ProxyJump or gateway is the route), as written, for `/bin/sh -c`:
   * its tokens `%h`, `%p`, `%r`, `%n` and `%%` are expanded for this target when connecting, as
   * OpenSSH does. `"none"` or absent: none. It wins over `gateway`.
   */
  readonly proxyCommand?: string | undefined
  readonly connectTimeout: Duration.Duration
  readonly connectAttempts: number
  readonly connectRetryDelay: Duration.Duration
  readonly keepaliveInterval: Duration.Duration
  readonly keepaliveCountMax: number
  readonly maxChannels: number
  /**
   * ssh_config's `HostKeyAlias`: the name to look the host key up (and record it) under in
   * `knownHostsFile` instead of `host` and `port`; OpenSSH then writes the name alone, without
   * `[..]:port`.
   */
  readonly hostKeyAlias?: string | undefined
}

/**
 * A piece of a remote command's output, in the order it arrived: from standard output or
 * standard error (on a pty, everything comes as standard output).
 *
 * @since 0.1.0
 */
export type OutputChunk =
  | { readonly _tag: "Stdout"; readonly data: Uint8Array }
  | { readonly _tag: "Stderr"; readonly data: Uint8Array }

/**
 * How a remote command ended: its exit code, or the name of the signal that killed it
 * (`"SIGKILL"`, the exit code then `null`).
 *
 * @since 0.1.0
 */
export interface ExitStatus {
  readonly exitCode: number | null
  readonly signal: string | null
}

/**
 * A command running on an SSH channel, in the shape of effect's `ChildProcessHandle`; valid
 * while the scope it was opened in is open.
 *
 * @example
 * ```ts
 * const handle = yield* connection.exec("wc -c")
 * yield* Stream.run(Stream.make("some input"), handle.stdin)
 * const bytes = yield* Stream.runCollect(handle.output)
 * const { exitCode } = yield* handle.exit
 * ```
 *
 * @since 0.1.0
 */
export interface CommandHandle {
  /**
   * The command's output, standard output and error interleaved as they arrived. Pulled: while
   * nobody pulls, the channel holds a bounded amount (about 1 MiB, plus SSH's window) and the
   * server stops reading the command's output, so the command blocks rather than memory grows.
   * One source: a second run goes on where the last one stopped, and runs at the same time share
   * the chunks out between them (each chunk goes to one). Ends when the command's output has
   * ended, however the command ended (see `exit`).
   */
  readonly output: Stream.Stream<OutputChunk>
  /**
   * How the command ended, once its channel has closed. The channel closes only after its output
   * has been delivered: drain `output` first, or this waits for ever on a command that printed
   * more than the channel holds. Fails with `ConnectionError` when the channel ended without an
   * exit status (the connection dropped, or the session was killed on the server).
   */
  readonly exit: Effect.Effect<ExitStatus, ConnectionError>
  /**
   * The command's standard input: writes each piece as the channel takes it (waiting while the
   * server's window is full), and ends the input (end of file) when the stream ends.
   */
  readonly stdin: Sink.Sink<void, Uint8Array | string>
  /**
   * Writes to the command's standard input, waiting while the channel is full; nothing once the
   * channel has closed. Done once the connection has taken the bytes, so the buffer may be
   * reused then. For input written piece by piece while its end is decided elsewhere.
   */
  readonly write: (data: Uint8Array | string) => Effect.Effect<void>
  /** Ends the command's standard input (end of file). */
  readonly endInput: Effect.Effect<void>
}

/**
 * What an SFTP session says about a remote file (`stat`, `fstat`).
 *
 * @since 0.1.0
 */
export interface SftpStats {
  /** File type and permission bits, as in `st_mode`. */
  readonly mode: number
  readonly size: number
  readonly uid: number
  readonly gid: number
  /** Seconds since the epoch. */
  readonly atime: number
  readonly mtime: number
  isDirectory(): boolean
  isFile(): boolean
  isSymbolicLink(): boolean
  isFIFO(): boolean
  isSocket(): boolean
  isBlockDevice(): boolean
  isCharacterDevice(): boolean
}

/**
 * How {@link SftpSession.open} opens a file, as in Node's `fs.open`: `"r"` to read, `"w"` to
 * write (creating or truncating), `"wx"` to create a new file only.
 *
 * @since 0.1.0
 */
export type SftpOpenFlags = "r" | "r+" | "w" | "wx" | "w+" | "a"

/**
 * An open remote file of one {@link SftpSession}, given by `open` and closed by `close`.
 *
 * @since 0.1.0
 */
export interface SftpHandle {
  /** The path it was opened with, for messages. */
  readonly path: string
}

/**
 * An open SFTP session. Every request is an Effect that fails with {@link SftpError}, is
 * interruptible (a server that stopped answering never holds its caller; a late answer is
 * dropped), and fails at once on a session that is closed. Requests do not wait for each other:
 * run many at once (`Effect.forEach` with `concurrency`) and they are all in flight together,
 * answered in any order, which is what makes a transfer fast. {@link Connection.sftp} opens one.
 *
 * @example
 * ```ts
 * const size = yield* Effect.scoped(
 *   Effect.flatMap(connection.sftp, (sftp) => Effect.map(sftp.stat("/etc/hosts"), (s) => s.size))
 * )
 * ```
 *
 * @since 0.1.0
 */
export interface SftpSession {
  /**
   * The longest read and write the server takes as one request (from `limits@openssh.com`,
   * 255 KiB for OpenSSH, else a safe guess); a longer one is split into several.
   */
  readonly limits: { readonly maxReadLength: number; readonly maxWriteLength: number }
  /** The protocol extensions the server announced, by name, with their versions. */
  readonly extensions: Readonly<Record<string, string>>
  /** Whether the session still takes requests. */
  readonly isOpen: () => boolean
  /** `stat`, following symbolic links. */
  readonly stat: (path: string) => Effect.Effect<SftpStats, SftpError>
  readonly fstat: (handle: SftpHandle) => Effect.Effect<SftpStats, SftpError>
  /** Opens a file (`"r"`, `"w"`, `"wx"`...), created with `mode` if it is new. */
  readonly open: (path: string, flags: SftpOpenFlags, mode?: number) => Effect.Effect<SftpHandle, SftpError>
  /**
   * Reads up to `length` bytes at `position` into `buffer` at `offset`: the number of bytes
   * read, `0` at the end of the file. An interrupted read may still fill `buffer` later.
   */
  readonly read: (
    handle: SftpHandle,
    buffer: Uint8Array,
    offset: number,
    length: number,
    position: number
  ) => Effect.Effect<number, SftpError>
  /** Writes `length` bytes of `buffer` from `offset` at `position`; `buffer` may be reused once it returns. */
  readonly write: (
    handle: SftpHandle,
    buffer: Uint8Array,
    offset: number,
    length: number,
    position: number
  ) => Effect.Effect<void, SftpError>
  readonly fchmod: (handle: SftpHandle, mode: number) => Effect.Effect<void, SftpError>
  readonly mkdir: (path: string, mode?: number) => Effect.Effect<void, SftpError>
  /** Renames; refuses an existing `to` (SFTP's own rename). */
  readonly rename: (from: string, to: string) => Effect.Effect<void, SftpError>
  /**
   * Renames over an existing `to` in one step (the `posix-rename@openssh.com` extension); fails
   * with `opUnsupported` when the server lacks it.
   */
  readonly posixRename: (from: string, to: string) => Effect.Effect<void, SftpError>
  /** Closes a handle; a write may report its failure only here. */
  readonly close: (handle: SftpHandle) => Effect.Effect<void, SftpError>
}

/**
 * A local port forwarded through the server (`ssh -L`): connections to `localHost:localPort`
 * here are carried to `remoteHost:remotePort` as the server resolves and reaches it.
 *
 * @since 0.1.0
 */
export interface LocalForwardOptions {
  /** The destination, as the server names it (`127.0.0.1` is the server itself). */
  readonly remoteHost: string
  readonly remotePort: number
  /** The port to listen on here; `0` (the default) for any free one. */
  readonly localPort?: number | undefined
  /**
   * The address to listen on here. Default: `127.0.0.1`, reachable only from this machine. An
   * empty one is refused (it would mean every interface): write `0.0.0.0` for that.
   */
  readonly localHost?: string | undefined
}

/**
 * A port on the server forwarded back here (`ssh -R`): connections to `remoteHost:remotePort`
 * on the server are carried to `localHost:localPort` as this machine reaches it.
 *
 * @since 0.1.0
 */
export interface RemoteForwardOptions {
  /** The port to listen on, on the server; `0` for any free one. */
  readonly remotePort: number
  /**
   * The address to listen on, on the server. Default: `127.0.0.1`, reachable from the server
   * only, yet by every user of it. Another address also needs `GatewayPorts` on the server.
   * An empty one is refused, as for `LocalForwardOptions.localHost`.
   */
  readonly remoteHost?: string | undefined
  readonly localPort: number
  /** The destination here. Default: `127.0.0.1`. */
  readonly localHost?: string | undefined
}

/**
 * An open SSH connection, shared by every operation on the same target.
 *
 * @since 0.1.0
 */
export interface Connection {
  readonly target: Target
  /**
   * The software the server announced (`dropbear_2022.83`, `OpenSSH_9.2p1 ...`), when known: how
   * the server groups the processes of a command depends on it.
   */
  readonly serverSoftware?: string | undefined
  /** Whether the connection is still up. */
  readonly isOpen: () => boolean
  /**
   * What remote commands learned about the login shell of this connection's user: the path of
   * the bash it is, when it is the bash of their `shell` setting (`undefined` until then), so
   * that later commands run in it without starting a second shell.
   */
  readonly loginBash: Ref.Ref<string | undefined>
  /**
   * Starts `command` (a command line for the login shell) on a new channel, with a pty when
   * `pty` is true (standard error then arrives merged into standard output). Waits for one of
   * `maxChannels` slots, unless `reserved`: a single extra slot kept for short housekeeping
   * commands (stopping an interrupted command), so they never wait behind long-running ones;
   * or `alongside`: a single extra slot for a command run by an operation that already holds a
   * slot (a transfer's SFTP session), so that such operations never wait on each other's slots
   * (with every slot held by one, none could get a second). So a connection opens at most
   * `maxChannels + 2` channels. The channel is closed, and its slot given back, when the scope
   * closes.
   */
  readonly exec: (
    command: string,
    options?: {
      readonly pty?: boolean | undefined
      readonly reserved?: boolean | undefined
      readonly alongside?: boolean | undefined
      /**
       * Called once the request has been handed to a connection that was open: from then on the
       * server may run the command even when its answer never arrives. A failure before it
       * means the command was never asked for, and can safely be asked for again elsewhere.
       */
      readonly onSent?: (() => void) | undefined
    }
  ) => Effect.Effect<CommandHandle, ConnectionError, Scope.Scope>
  /**
   * Opens an SFTP session (in one of the `maxChannels` slots), ended when the scope closes
   * (without waiting for a server that no longer answers). Interruptible: a session that
   * arrives after its requester left is ended at once.
   */
  readonly sftp: Effect.Effect<SftpSession, ConnectionError, Scope.Scope>
  /**
   * Listens here and carries each connection to a host and port as the server sees them
   * (`ssh -L`), until the scope closes: then the listener closes and every connection through
   * it ends. Succeeds with the local port (the one chosen when `localPort` is 0). Fails with a
   * `TunnelError` when the port cannot be opened; a connection whose destination the server
   * cannot reach is closed and logged, and the forward stays open. Forwarded connections are
   * not sessions: they do not take `maxChannels` slots.
   */
  readonly forwardLocal: (options: LocalForwardOptions) => Effect.Effect<number, TunnelError, Scope.Scope>
  /**
   * Has the server listen on a port and carries each connection to a host and port here
   * (`ssh -R`), until the scope closes: then the server stops listening and every connection
   * through it ends. Succeeds with the server's port (the one chosen when `remotePort` is 0).
   * Fails with a `TunnelError` when the server will not listen there; a connection whose local
   * destination refuses it is turned away and logged.
   */
  readonly forwardRemote: (options: RemoteForwardOptions) => Effect.Effect<number, TunnelError, Scope.Scope>
}

/**
 * What the SSH connection service offers ({@link SshConnections} in `Ssh`).
 *
 * @since 0.1.0
 */
export interface SshConnectionsShape {
  /**
   * Where and how the settings connect: the host string, the connection settings and
   * `~/.ssh/config` resolved into a {@link Target}. Read afresh on each call (tens of
   * microseconds; the first time for a host, a few milliseconds more for `ssh -G`), so an edited
   * ssh_config or key file counts from the next operation.
   *
   * Fails with `SettingsError` when no host is set, a host string or port is malformed, an
   * explicit key file or ssh config file is missing, or the config is refused (by `ssh -G`, or by
   * the built-in reader for an `Include` or `Match` it cannot evaluate).
   */
  readonly resolve: (settings: Settings) => Effect.Effect<Target, SettingsError>
  /**
   * The connection for the host in `settings` (the current settings of an operation), opened
   * on first use and shared afterwards. It stays open while the service's layer is in scope;
   * the returned value may be used until the caller's scope closes.
   *
   * Reads every connection setting. Fails with `SettingsError` for an unusable setting (no
   * host, a malformed host string, a missing key file...) and `ConnectionError` when the host
   * cannot be reached, authentication fails or its host key is refused.
   */
  readonly connect: (
    settings: Settings
  ) => Effect.Effect<Connection, ConnectionError | SettingsError, Scope.Scope>
}
