/**
 * The settings every operation reads: connection, command wrapping, output, errors, transfers
 * and hosts. They replace the original's global `env` dictionary and its `settings(...)`
 * context manager.
 *
 * Settings live in a `Context.Reference`, so a program that provides nothing gets
 * {@link defaults}. A combinator overrides them for one effect and the old values come back
 * when it ends, however it ends; blocks nest and the inner one wins. Each fiber sees the
 * settings of the block it was forked in, so concurrent work never sees another's changes.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Operations, Settings } from "effect-threadbare"
 *
 * const deploy = Operations.remote("systemctl restart app").pipe(
 *   Settings.rcd("/srv/app"),
 *   Settings.settings({ host: "deploy@web-1", useSudo: true })
 * )
 *
 * // or for a whole program
 * const main = deploy.pipe(Effect.provide(Settings.layer({ keyFile: "~/.ssh/deploy" })))
 * ```
 *
 * @since 0.1.0
 * @module
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FileSystem from "effect/FileSystem"
import { dual } from "effect/Function"
import * as Layer from "effect/Layer"
import type * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import * as path from "node:path"
import { SettingsError } from "./Errors.ts"
import { toDuration } from "./internal/settings/duration.ts"

/**
 * What to do with a host key that is not in the known_hosts file. See {@link Settings.hostKeyPolicy}.
 *
 * @since 0.1.0
 */
export type HostKeyPolicy = "accept-new" | "strict"

/**
 * How the ssh config is read. See {@link Settings.sshConfigResolver}.
 *
 * @since 0.1.0
 */
export type SshConfigResolver = "auto" | "openssh" | "builtin"

/**
 * Every setting, with its default in {@link defaults}.
 *
 * @since 0.1.0
 */
export interface Settings {
  // -- connection -------------------------------------------------------------------------------

  /**
   * The host remote operations run on: `host`, `user@host`, `host:port`, `user@host:port` or
   * `[v6addr]:port`. Parts given here win over `user`/`port`. Default: none (remote operations
   * fail with a `SettingsError`).
   */
  readonly host: string | undefined
  /** The login user. Default: from `~/.ssh/config`, else the local user. */
  readonly user: string | undefined
  /** The SSH port. Default: from `~/.ssh/config`, else 22. */
  readonly port: number | undefined
  /**
   * The private key file. Default: from `~/.ssh/config`, else the first of `~/.ssh/id_ed25519`,
   * `~/.ssh/id_ecdsa`, `~/.ssh/id_rsa` that exists. A leading `~/` means the home directory.
   */
  readonly keyFile: string | undefined
  /** The passphrase of an encrypted `keyFile`. Default: none. */
  readonly keyPassphrase: Redacted.Redacted<string> | undefined
  /** A login password, tried after keys and the agent. Default: none. */
  readonly password: Redacted.Redacted<string> | undefined
  /** Offer the identities of the ssh-agent at `SSH_AUTH_SOCK`. Default: `true`. */
  readonly useAgent: boolean
  /**
   * Forward the ssh-agent to the host (`ssh -A`), so that its commands can use the local keys
   * (a `git clone` of a private repository, an `ssh` to another host). Anyone root on the host
   * can use the agent while the connection is open: see SECURITY.md, prefer a `gateway`, and
   * set it only around the commands that need it. Needs an agent (`useAgent`, `SSH_AUTH_SOCK`),
   * else a `SettingsError`. A connection forwards or not for its whole life, so commands with
   * and without forwarding never share one. Default: `false`.
   */
  readonly forwardAgent: boolean
  /**
   * The OpenSSH client config to honour (see {@link sshConfigResolver} for how it is read);
   * `false` for none. With the default, `ssh` reads its own files (`~/.ssh/config`, then
   * `/etc/ssh/ssh_config`); a path given here is read alone, as by `ssh -F`. Default:
   * `~/.ssh/config`.
   */
  readonly sshConfigFile: string | false
  /**
   * How {@link sshConfigFile} is resolved for a host: `openssh` asks the OpenSSH client
   * (`ssh -G`, once per host and config file, so `Include`, `Match`, tokens and every rule of
   * OpenSSH apply exactly), `builtin` uses the library's own reader (which reports what it cannot
   * apply: a warning per directive, a `SettingsError` for an `Include` or `Match` that could
   * change the result), `auto` is `openssh` when `ssh` is on `PATH`, else `builtin`.
   * Default: `auto`.
   */
  readonly sshConfigResolver: SshConfigResolver
  /** The known_hosts file host keys are checked against. Default: `~/.ssh/known_hosts`. */
  readonly knownHostsFile: string
  /**
   * What to do with a host whose key is not in `knownHostsFile`: `accept-new` records it and
   * connects (like OpenSSH's `StrictHostKeyChecking=accept-new`), `strict` refuses. A key that
   * differs from the recorded one is always refused. Default: `accept-new`.
   */
  readonly hostKeyPolicy: HostKeyPolicy
  /** A jump host (`user@host:port`) to reach `host` through, like `ProxyJump`. Default: none. */
  readonly gateway: string | undefined
  /**
   * A command to connect through, like ssh_config's `ProxyCommand`: run with `/bin/sh -c`, its
   * standard input and output carry the SSH connection. Tokens: `%h` the host (after
   * `HostName`), `%p` the port, `%r` the remote user, `%n` the host as given, `%%` a `%`. It is
   * stopped (its process group: SIGTERM, then SIGKILL) when the connection closes or fails;
   * `connectTimeout` bounds starting it and the handshake over it. It wins over `gateway`;
   * `"none"` is none, overriding one from ssh_config. Default: none.
   *
   * @example
   * ```ts
   * Settings.layer({ proxyCommand: "ssh -W %h:%p bastion.example.com" })
   * ```
   */
  readonly proxyCommand: string | undefined
  /** How long to wait for a connection (TCP and SSH handshake). Default: 10 seconds. */
  readonly connectTimeout: Duration.Duration
  /** How many times to try to connect before failing (refusals, time-outs, resets). Default: 3. */
  readonly connectAttempts: number
  /** The pause between connection attempts. Default: 1 second. */
  readonly connectRetryDelay: Duration.Duration
  /** How often to send keepalives on an idle connection. Default: 15 seconds. */
  readonly keepaliveInterval: Duration.Duration
  /** Unanswered keepalives after which the connection counts as dead. Default: 3. */
  readonly keepaliveCountMax: number
  /**
   * Channels (commands, SFTP sessions) open at once on one connection; more wait their turn.
   * A connection may open two more: one to stop interrupted commands, one for the commands of
   * transfers. Keep it at most the server's `MaxSessions` (OpenSSH: 10) minus 2. Default: 8.
   */
  readonly maxChannels: number

  // -- command wrapping -------------------------------------------------------------------------

  /** Run commands through a shell (`shell` remotely, `localShell` locally). Default: `true`. */
  readonly useShell: boolean
  /**
   * The remote shell a command is handed to, as a command line ending in `-c`. Fabric 1 used
   * `/bin/bash -l -c`; a login shell reads the profile files first (about 2 ms a command on
   * Debian, more with version managers), so it is opt-in here. On a host where `/bin/bash` cannot
   * be run (busybox systems), a shell whose program is `/bin/bash` runs as `/bin/sh` with the same
   * options. Default: `/bin/bash -c`.
   */
  readonly shell: string
  /** The local shell, as a command line ending in `-c`. Default: `/bin/sh -c`. */
  readonly localShell: string
  /** Run commands through `sudo`. Default: `false`. */
  readonly useSudo: boolean
  /** With `useSudo`, the user to become (`sudo -u`). Default: root. */
  readonly sudoUser: string | undefined
  /** The password for `sudo`, answered on its prompt and never shown. Default: none (`sudo -n`). */
  readonly sudoPassword: Redacted.Redacted<string> | undefined
  /**
   * Merge standard error into standard output, in the order the command wrote them (remotely
   * with `2>&1` on the server). Default: `true`.
   */
  readonly combineStderr: boolean
  /**
   * Run remote commands on a pseudo-terminal, for programs that insist on one. Output then
   * comes with `\r\n` line ends (stripped from lines) and standard error merged. Background
   * jobs left running get SIGHUP when the command ends. Default: `false`.
   */
  readonly pty: boolean
  /** The directory remote commands run in (`cd dir && ...`). Default: the login directory. */
  readonly remoteWorkingDir: string | undefined
  /** The directory local commands run in, and relative local paths resolve against. Default: the process's. */
  readonly localWorkingDir: string | undefined
  /** Variables set for every command, quoted into the command line. Default: none. */
  readonly env: Readonly<Record<string, string>>
  /** How long a command may run before it is stopped with `CommandTimeout`. Default: no limit. */
  readonly timeout: Duration.Duration | undefined
  /** Local commands: keep output (`true`) or let the command use the terminal (`false`). Default: `false`. */
  readonly capture: boolean
  /** Print what would run and run nothing (commands then succeed with empty output). Default: `false`. */
  readonly dryRun: boolean

  // -- output -----------------------------------------------------------------------------------

  /** Print nothing: no `run:` lines, no output lines. Default: `false`. */
  readonly quiet: boolean
  /** Keep no output in results (it is still printed unless `quiet`). Default: `false`. */
  readonly discardOutput: boolean
  /** Print `[host] run: <command>` before each command. Default: `true`. */
  readonly displayRunning: boolean
  /** Print output lines through `lineTemplate`; `false` prints the bare line. Default: `true`. */
  readonly displayPrefix: boolean
  /**
   * How an output line is printed. Fields: `{host}`, `{pipe}` (`out`, `err`, `run`, ...),
   * `{line}`, `{date}` (YYYY-MM-DD), `{time}` (HH:MM:SS), `{datetime}` (ISO 8601).
   * Default: `[{host}] {pipe}: {line}`.
   */
  readonly lineTemplate: string
  /** Print every output line under this pipe name instead of `out`/`err`. Default: none. */
  readonly customPipe: string | undefined

  // -- errors -----------------------------------------------------------------------------------

  /** Make `prompt` fail with `PromptAborted` instead of asking. Always on in workers. Default: `false`. */
  readonly abortOnPrompts: boolean
  /**
   * Return the result of a failed command instead of failing with `CommandFailed`, logging a
   * warning (the original's `warn_only`). `Operations.warnOnly` sets it for a block and removes
   * `CommandFailed` from the error type. Default: `false`.
   */
  readonly warnOnly: boolean
  /** Log a failed command as an error through the Logger before failing. Default: `true`. */
  readonly displayAborts: boolean

  // -- transfers --------------------------------------------------------------------------------

  /** Replace files that exist at the destination of a transfer. Default: `true`. */
  readonly overwrite: boolean
  /**
   * The remote directory where sudo and directory uploads stage their content (in a private
   * mode-700 directory of the login user) before it is moved into place. Default: `/tmp`.
   */
  readonly remoteTempDir: string

  // -- execution --------------------------------------------------------------------------------

  /** The hosts `Execute` runs a program on when none are given. Default: none. */
  readonly hosts: ReadonlyArray<string>
}

/**
 * The defaults, in one place. {@link layer} and {@link settings} patch these.
 *
 * @since 0.1.0
 */
export const defaults: Settings = {
  host: undefined,
  user: undefined,
  port: undefined,
  keyFile: undefined,
  keyPassphrase: undefined,
  password: undefined,
  useAgent: true,
  forwardAgent: false,
  sshConfigFile: "~/.ssh/config",
  sshConfigResolver: "auto",
  knownHostsFile: "~/.ssh/known_hosts",
  hostKeyPolicy: "accept-new",
  gateway: undefined,
  proxyCommand: undefined,
  connectTimeout: Duration.seconds(10),
  connectAttempts: 3,
  connectRetryDelay: Duration.seconds(1),
  keepaliveInterval: Duration.seconds(15),
  keepaliveCountMax: 3,
  maxChannels: 8,
  useShell: true,
  shell: "/bin/bash -c",
  localShell: "/bin/sh -c",
  useSudo: false,
  sudoUser: undefined,
  sudoPassword: undefined,
  combineStderr: true,
  pty: false,
  remoteWorkingDir: undefined,
  localWorkingDir: undefined,
  env: {},
  timeout: undefined,
  capture: false,
  dryRun: false,
  quiet: false,
  discardOutput: false,
  displayRunning: true,
  displayPrefix: true,
  lineTemplate: "[{host}] {pipe}: {line}",
  customPipe: undefined,
  abortOnPrompts: false,
  warnOnly: false,
  displayAborts: true,
  overwrite: true,
  remoteTempDir: "/tmp",
  hosts: []
}

/**
 * The current settings. `yield* Settings` reads them; without any override they are
 * {@link defaults}.
 *
 * @since 0.1.0
 */
export const Settings: Context.Reference<Settings> = Context.Reference<Settings>(
  "effect-threadbare/Settings",
  {
    defaultValue: () => defaults
  }
)

/**
 * A partial set of settings. Durations may be given in any form `Duration` accepts
 * (`"5 seconds"`, `5000`, `Duration.minutes(1)`), and `undefined` resets a setting to none.
 *
 * @since 0.1.0
 */
export type Patch = {
  readonly [K in keyof Settings]?: Settings[K] extends Duration.Duration | undefined
    ? Duration.Input | Extract<Settings[K], undefined>
    : Settings[K]
}

const durationKeys = [
  "connectTimeout",
  "connectRetryDelay",
  "keepaliveInterval",
  "timeout"
] as const satisfies ReadonlyArray<keyof Settings>

/**
 * Applies a patch to a set of settings, turning duration inputs into durations.
 *
 * @since 0.1.0
 */
export const apply = (base: Settings, patch: Patch): Settings => {
  const next: Record<string, unknown> = { ...base, ...patch }
  for (const key of durationKeys) {
    const value = patch[key]
    if (value !== undefined) next[key] = toDuration(value)
  }
  return next as unknown as Settings
}

/**
 * Runs `self` with `f` applied to the current settings, in a scope of its own: finalizers that
 * `self` adds (`Effect.addFinalizer`) run when it ends, not when an enclosing block does.
 * Every combinator of this module is built on it.
 *
 * @since 0.1.0
 */
export const locally: {
  (
    f: (current: Settings) => Settings
  ): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, Exclude<R, Scope.Scope>>
  <A, E, R>(
    self: Effect.Effect<A, E, R>,
    f: (current: Settings) => Settings
  ): Effect.Effect<A, E, Exclude<R, Scope.Scope>>
} = dual(
  2,
  <A, E, R>(self: Effect.Effect<A, E, R>, f: (current: Settings) => Settings) =>
    Effect.scoped(Effect.updateService(self, Settings, f))
)

/**
 * Overrides some settings for one effect (the original's `with settings(**kw)`).
 *
 * @example
 * ```ts
 * Operations.remote("uptime").pipe(Settings.settings({ host: "web-1", user: "deploy" }))
 * ```
 *
 * @since 0.1.0
 */
export const settings: {
  (patch: Patch): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, Exclude<R, Scope.Scope>>
  <A, E, R>(self: Effect.Effect<A, E, R>, patch: Patch): Effect.Effect<A, E, Exclude<R, Scope.Scope>>
} = dual(
  2,
  <A, E, R>(self: Effect.Effect<A, E, R>, patch: Patch) => locally(self, (current) => apply(current, patch))
)

/**
 * Runs an effect with nothing printed: no `run:` lines, no output (the original's `hide()`).
 * Results still hold the output.
 *
 * @since 0.1.0
 */
export const hide = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, Exclude<R, Scope.Scope>> =>
  settings(self, { quiet: true })

/**
 * Runs remote commands of an effect in `dir` (the original's `rcd`). A relative `dir` is taken
 * from the current remote working directory. The directory is quoted, so any name works.
 *
 * @since 0.1.0
 */
export const rcd: {
  (dir: string): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, Exclude<R, Scope.Scope>>
  <A, E, R>(self: Effect.Effect<A, E, R>, dir: string): Effect.Effect<A, E, Exclude<R, Scope.Scope>>
} = dual(2, <A, E, R>(self: Effect.Effect<A, E, R>, dir: string) =>
  locally(self, (current) => ({
    ...current,
    remoteWorkingDir:
      // Only `~` and `~/...` mean the home directory (as for `cd`); `~x` is a name like any other.
      current.remoteWorkingDir === undefined || path.posix.isAbsolute(dir) || dir === "~" ||
        dir.startsWith("~/")
        ? dir
        : path.posix.join(current.remoteWorkingDir, dir)
  })))

/**
 * Resolves a local path against the current `localWorkingDir` (set by {@link lcd}), or the
 * process's working directory. Never changes the process's directory.
 *
 * @since 0.1.0
 */
export const resolveLocal = (current: Settings, p: string): string =>
  path.resolve(current.localWorkingDir ?? process.cwd(), expandHome(p))

/**
 * Expands a leading `~/` (or a lone `~`) to the local home directory.
 *
 * @since 0.1.0
 */
export const expandHome = (p: string): string => {
  if (p === "~") return homeDir()
  if (p.startsWith("~/")) return path.join(homeDir(), p.slice(2))
  return p
}

const homeDir = (): string => process.env["HOME"] ?? "/"

/**
 * Succeeds when `dir` is an existing local directory; otherwise fails with a `SettingsError`
 * that names `setting` and says what is wrong.
 *
 * @since 0.1.0
 */
export const requireDirectory = Effect.fnUntraced(function*(dir: string, setting: string) {
  const fs = yield* FileSystem.FileSystem
  const info = yield* fs.stat(dir).pipe(
    Effect.mapError(() =>
      new SettingsError({ setting, value: dir, detail: "no such directory; create it first or fix the path" })
    )
  )
  if (info.type !== "Directory") {
    return yield* new SettingsError({
      setting,
      value: dir,
      detail: `not a directory (it is a ${info.type.toLowerCase()}); give a directory`
    })
  }
})

/**
 * Runs local commands of an effect in `dir`, and resolves relative local paths against it
 * (the original's `lcd`). A relative `dir` is taken from the current local working directory.
 * The process's own working directory is never changed, so concurrent fibers are unaffected.
 *
 * Fails with `SettingsError` when `dir` is not an existing directory.
 *
 * @since 0.1.0
 */
export const lcd: {
  (dir: string): <A, E, R>(
    self: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | SettingsError, Exclude<R, Scope.Scope> | FileSystem.FileSystem>
  <A, E, R>(
    self: Effect.Effect<A, E, R>,
    dir: string
  ): Effect.Effect<A, E | SettingsError, Exclude<R, Scope.Scope> | FileSystem.FileSystem>
} = dual(2, <A, E, R>(self: Effect.Effect<A, E, R>, dir: string) =>
  Effect.gen(function*() {
    const resolved = resolveLocal(yield* Settings, dir)
    yield* requireDirectory(resolved, "localWorkingDir")
    return yield* locally(self, (s) => ({ ...s, localWorkingDir: resolved }))
  }))

/**
 * Sets environment variables for every command of an effect, on top of those already set
 * (Fabric's `shell_env`). Values are quoted into the command line, since servers drop
 * variables they do not `AcceptEnv`.
 *
 * @since 0.1.0
 */
export const withEnv: {
  (vars: Readonly<Record<string, string>>): <A, E, R>(
    self: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E, Exclude<R, Scope.Scope>>
  <A, E, R>(
    self: Effect.Effect<A, E, R>,
    vars: Readonly<Record<string, string>>
  ): Effect.Effect<A, E, Exclude<R, Scope.Scope>>
} = dual(
  2,
  <A, E, R>(self: Effect.Effect<A, E, R>, vars: Readonly<Record<string, string>>) =>
    locally(self, (current) => ({ ...current, env: { ...current.env, ...vars } }))
)

/**
 * Settings for a whole program: `program.pipe(Effect.provide(Settings.layer({ ... })))`.
 * The patch applies on top of {@link defaults}.
 *
 * @since 0.1.0
 */
export const layer = (patch: Patch): Layer.Layer<never> => Layer.succeed(Settings, apply(defaults, patch))
