/**
 * Resolves the connection settings of an operation into a {@link Target}: host string, settings
 * and `~/.ssh/config`, with the precedence host string > settings > ssh_config > default.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import { existsSync, readFileSync, statSync } from "node:fs"
import { userInfo } from "node:os"
import * as path from "node:path"
import { SettingsError } from "../../Errors.ts"
import { defaults, expandHome, type Settings } from "../../Settings.ts"
import type { Target } from "../../Ssh.ts"
import { durationError } from "../settings/duration.ts"
import { isUserName, parseHostString, parsePort } from "../settings/hostString.ts"
import * as SshConfig from "./config.ts"

const defaultKeys = ["~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa"]

// `os.userInfo()` reads the password database on every call; the process's user never changes.
let account: { readonly username: string; readonly homedir: string } | undefined
const processAccount = () => account ??= userInfo()

const localUser = (): string => process.env["USER"] ?? processAccount().username

const home = (): string => process.env["HOME"] ?? processAccount().homedir

const absolute = (p: string): string => path.resolve(expandHome(p))

const fromResult = <A>(result: Result.Result<A, SettingsError>): Effect.Effect<A, SettingsError> =>
  Result.isSuccess(result) ? Effect.succeed(result.success) : Effect.fail(result.failure)

// Parsed config files, by path, while unchanged: a fan-out to many hosts resolves each of them.
const configCache = new Map<string, { readonly stamp: string; readonly config: SshConfig.SshConfig }>()

const readConfig = (settings: Settings): Effect.Effect<SshConfig.SshConfig, SettingsError> => {
  const setting = settings.sshConfigFile
  if (setting === false) return Effect.succeed({ blocks: [] })
  const file = absolute(setting)
  return Effect.try({
    try: () => {
      const stat = statSync(file, { throwIfNoEntry: false })
      if (stat === undefined) return undefined
      const stamp = `${stat.mtimeMs}:${stat.size}:${stat.ino}`
      const cached = configCache.get(file)
      if (cached?.stamp === stamp) return cached.config
      const config = SshConfig.parse(readFileSync(file, "utf8"))
      configCache.set(file, { stamp, config })
      return config
    },
    catch: (cause) => new SettingsError({ setting: "sshConfigFile", value: setting, detail: String(cause) })
  }).pipe(
    Effect.flatMap((config) =>
      config !== undefined
        ? Effect.succeed(config)
        // The default file is optional, as for OpenSSH; a file named on purpose must exist.
        : setting === defaults.sshConfigFile
        ? Effect.succeed({ blocks: [] })
        : Effect.fail(
          new SettingsError({
            setting: "sshConfigFile",
            value: setting,
            detail: "no such file; fix the path, or set sshConfigFile to false to read none"
          })
        )
    )
  )
}

const keyFileFor = (
  settings: Settings,
  configured: ReadonlyArray<string>
): Effect.Effect<string | undefined, SettingsError> => {
  if (settings.keyFile !== undefined) {
    const file = absolute(settings.keyFile)
    return existsSync(file)
      ? Effect.succeed(file)
      : Effect.fail(
        new SettingsError({
          setting: "keyFile",
          value: settings.keyFile,
          detail:
            `no such file (${file}); fix the path or leave keyFile unset to use ~/.ssh/config and the default keys`
        })
      )
  }
  // Like OpenSSH, identity files that do not exist are skipped silently.
  const found = [...configured, ...defaultKeys].map(absolute).find((file) => existsSync(file))
  return Effect.succeed(found)
}

const checkPortSetting = (port: number | undefined): Effect.Effect<number | undefined, SettingsError> =>
  port === undefined || (Number.isInteger(port) && port >= 1 && port <= 65535)
    ? Effect.succeed(port)
    : Effect.fail(
      new SettingsError({
        setting: "port",
        value: String(port),
        detail: "a port is a number from 1 to 65535"
      })
    )

// Counts and durations that cannot work: refused here, before any connection is tried, rather
// than quietly clamped or left to fail in the middle of a run.
const checkConnectionSettings = (settings: Settings): Effect.Effect<void, SettingsError> => {
  const whole = (key: "connectAttempts" | "maxChannels", detail: string) =>
    Number.isInteger(settings[key]) && settings[key] >= 1
      ? undefined
      : new SettingsError({ setting: key, value: String(settings[key]), detail })
  const duration = (key: "connectTimeout" | "connectRetryDelay" | "keepaliveInterval") =>
    durationError(key, settings[key], {
      example: "\"10 seconds\"",
      negative: "a duration cannot be negative"
    })
  const user = settings.user === undefined || isUserName(settings.user)
    ? undefined
    : new SettingsError({
      setting: "user",
      value: settings.user,
      detail: "not a user name: letters, digits, `.`, `_`, `-` and `@`, not starting with `-` or `@`"
    })
  const error = [
    user,
    whole("connectAttempts", "the number of tries to connect: a whole number, 1 or more (1: no retry)"),
    whole("maxChannels", "a whole number, 1 or more, below the server's MaxSessions (OpenSSH: 10)"),
    duration("connectTimeout"),
    duration("connectRetryDelay"),
    duration("keepaliveInterval")
  ].find((e) => e !== undefined)
  return error === undefined ? Effect.void : Effect.fail(error)
}

const common = (settings: Settings) => ({
  keyPassphrase: settings.keyPassphrase,
  password: settings.password,
  agent: settings.useAgent ? process.env["SSH_AUTH_SOCK"] || undefined : undefined,
  knownHostsFile: absolute(settings.knownHostsFile),
  hostKeyPolicy: settings.hostKeyPolicy,
  connectTimeout: settings.connectTimeout,
  connectAttempts: Math.max(1, Math.floor(settings.connectAttempts)),
  connectRetryDelay: settings.connectRetryDelay,
  keepaliveInterval: settings.keepaliveInterval,
  keepaliveCountMax: settings.keepaliveCountMax,
  maxChannels: Math.max(1, Math.floor(settings.maxChannels))
})

// A jump host: its own host string and ssh_config block; the `user` setting and key apply to it
// as well, since deploy users usually log in to gateway and target alike.
const resolveHop = Effect.fnUntraced(function*(
  text: string,
  settings: Settings,
  config: SshConfig.SshConfig,
  gateway: Target | undefined
) {
  const parsed = yield* fromResult(parseHostString(text, "gateway"))
  const hostConfig = SshConfig.resolve(config, parsed.host, { localUser: localUser(), home: home() })
  const configPort = hostConfig.port === undefined
    ? undefined
    : yield* fromResult(parsePort(hostConfig.port, "port"))
  const target: Target = {
    ...common(settings),
    label: parsed.host,
    host: hostConfig.hostName ?? parsed.host,
    port: parsed.port ?? configPort ?? 22,
    user: parsed.user ?? hostConfig.user ?? settings.user ?? localUser(),
    keyFile: yield* keyFileFor(settings, hostConfig.identityFiles),
    gateway
  }
  return target
})

const resolveUncached = Effect.fnUntraced(function*(settings: Settings) {
  if (settings.host === undefined) {
    return yield* new SettingsError({
      setting: "host",
      value: "",
      detail: "no host to run on; set it with Settings.settings({ host: \"user@host\" }) or the host option"
    })
  }
  const parsed = yield* fromResult(parseHostString(settings.host))
  const port = yield* checkPortSetting(settings.port)
  yield* checkConnectionSettings(settings)
  const config = yield* readConfig(settings)
  const hostConfig = SshConfig.resolve(config, parsed.host, { localUser: localUser(), home: home() })
  const configPort = hostConfig.port === undefined
    ? undefined
    : yield* fromResult(parsePort(hostConfig.port, "port"))

  // ProxyJump may list several hops: each is reached through the one before it.
  const jumps = (settings.gateway ?? hostConfig.proxyJump)?.split(",").map((s) =>
    s.trim()
  ).filter((s) => s !== "") ?? []
  let gateway: Target | undefined
  for (const hop of jumps) gateway = yield* resolveHop(hop, settings, config, gateway)

  const target: Target = {
    ...common(settings),
    label: parsed.host,
    host: hostConfig.hostName ?? parsed.host,
    port: parsed.port ?? port ?? configPort ?? 22,
    user: parsed.user ?? settings.user ?? hostConfig.user ?? localUser(),
    keyFile: yield* keyFileFor(settings, hostConfig.identityFiles),
    gateway
  }
  return target
})

// -- caching --------------------------------------------------------------------------------------

/** Every setting `resolveUncached` reads. */
const connectionSettings = [
  "host",
  "user",
  "port",
  "keyFile",
  "keyPassphrase",
  "password",
  "useAgent",
  "sshConfigFile",
  "knownHostsFile",
  "hostKeyPolicy",
  "gateway",
  "connectAttempts",
  "keepaliveCountMax",
  "maxChannels"
] as const satisfies ReadonlyArray<keyof Settings>
const connectionDurations = [
  "connectTimeout",
  "connectRetryDelay",
  "keepaliveInterval"
] as const satisfies ReadonlyArray<keyof Settings>

/** What else `resolveUncached` depends on: the environment and the directory relative paths start from. */
interface Surroundings {
  readonly user: string | undefined
  readonly home: string | undefined
  readonly agent: string | undefined
  readonly cwd: string
}

const surroundings = (): Surroundings => ({
  user: process.env["USER"],
  home: process.env["HOME"],
  agent: process.env["SSH_AUTH_SOCK"],
  cwd: process.cwd()
})

const sameSurroundings = (a: Surroundings, b: Surroundings): boolean =>
  a.user === b.user && a.home === b.home && a.agent === b.agent && a.cwd === b.cwd

const sameConnection = (a: Settings, b: Settings): boolean =>
  a === b || (
    connectionSettings.every((key) => a[key] === b[key]) &&
    connectionDurations.every((key) => Duration.equals(a[key], b[key]))
  )

interface Resolved {
  readonly settings: Settings
  readonly around: Surroundings
  readonly target: Target
}

// The last target resolved for each host string. Resolving reads ssh_config and looks for key
// files, tens of microseconds that every command on a warm connection would otherwise pay
// again; the settings of consecutive commands differ (per-call options make a new object) but
// rarely in what a connection needs. So ssh_config and the key files are read once for the
// same connection settings, as one OpenSSH ControlMaster reads them once for its connections.
const resolved = new Map<string, Resolved>()
const maxResolved = 1024

/**
 * The target of an operation under `settings`. Fails with `SettingsError` when no host is set,
 * a host string or port is malformed, an explicit key file or ssh config file is missing.
 */
export const resolveTarget = (settings: Settings): Effect.Effect<Target, SettingsError> =>
  Effect.suspend(() => {
    const host = settings.host
    if (host === undefined) return resolveUncached(settings)
    const around = surroundings()
    const cached = resolved.get(host)
    if (
      cached !== undefined && sameConnection(cached.settings, settings) &&
      sameSurroundings(cached.around, around)
    ) {
      return Effect.succeed(cached.target)
    }
    return Effect.tap(resolveUncached(settings), (target) =>
      Effect.sync(() => {
        // A bound for programs that make up host strings without end.
        if (resolved.size >= maxResolved) resolved.clear()
        resolved.set(host, { settings, around, target })
      }))
  })

// Targets are reused (see above), so their keys are worth keeping.
const keys = new WeakMap<Target, string>()

/** A string that identifies the connection a target needs: equal keys share one connection. */
export const targetKey = (target: Target): string => {
  let key = keys.get(target)
  if (key === undefined) {
    key = keyOf(target)
    keys.set(target, key)
  }
  return key
}

const keyOf = (target: Target): string =>
  JSON.stringify([
    target.user,
    target.host,
    target.port,
    target.keyFile ?? null,
    target.agent ?? null,
    target.knownHostsFile,
    target.hostKeyPolicy,
    target.gateway === undefined ? null : targetKey(target.gateway)
  ])
