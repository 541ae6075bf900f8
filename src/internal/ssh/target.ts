/**
 * Resolves the connection settings of an operation into a {@link Target}: host string, settings
 * and `~/.ssh/config`, with the precedence host string > settings > ssh_config > default.
 */
import * as Effect from "effect/Effect"
import { userInfo } from "node:os"
import * as path from "node:path"
import { SettingsError } from "../../Errors.ts"
import { defaults, expandHome, type Settings } from "../../Settings.ts"
import * as Files from "../local/files.ts"
import { durationError } from "../settings/duration.ts"
import { isUserName, missingHost, parseHostString, parsePort } from "../settings/hostString.ts"
import * as SshConfig from "./config.ts"
import type { Target } from "./port.ts"

const defaultKeys = ["~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa"]

/** The local account's name and home, from the environment or else the password database. */
interface Account {
  readonly user: () => string
  readonly home: () => string
}

const absolute = (p: string): string => path.resolve(expandHome(p))

type ConfigCache = Map<string, { readonly stamp: string; readonly config: SshConfig.SshConfig }>

const readConfig = (
  configCache: ConfigCache,
  settings: Settings
): Effect.Effect<SshConfig.SshConfig, SettingsError> => {
  const setting = settings.sshConfigFile
  if (setting === false) return Effect.succeed({ blocks: [] })
  const file = absolute(setting)
  return Effect.gen(function*() {
    // Resolved before every operation: the stamps are taken synchronously, as metadata calls
    // that cannot block, not by a round trip through the thread pool each time.
    const stat = yield* Effect.try({
      try: () => Files.Sync.statIfExists(file),
      catch: (error) => Files.fromNode("stat", file, error)
    })
    if (stat === undefined) return undefined
    // ctime too: a tool that puts the modification time back (`touch -r`, `cp -p`, `rsync -t`)
    // cannot set it.
    const stamp = `${stat.mtimeMs}:${stat.ctimeMs}:${stat.size}:${stat.ino}`
    const cached = configCache.get(file)
    if (cached?.stamp === stamp) return cached.config
    const config = SshConfig.parse(yield* Files.readFileString(file))
    configCache.set(file, { stamp, config })
    return config
  }).pipe(
    Effect.mapError((error) =>
      new SettingsError({ setting: "sshConfigFile", value: setting, detail: String(error.cause) })
    ),
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
  const keyFile = settings.keyFile
  if (keyFile !== undefined) {
    const file = absolute(keyFile)
    return Effect.suspend(() =>
      Files.Sync.exists(file)
        ? Effect.succeed(file)
        : Effect.fail(
          new SettingsError({
            setting: "keyFile",
            value: keyFile,
            detail:
              `no such file (${file}); fix the path or leave keyFile unset to use ~/.ssh/config and the default keys`
          })
        )
    )
  }
  // Like OpenSSH, identity files that do not exist are skipped silently.
  return Effect.sync(() => [...configured, ...defaultKeys].map(absolute).find(Files.Sync.exists))
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

/** The ssh_config block of `host`, and the port it names, checked. */
const configFor = Effect.fnUntraced(function*(account: Account, config: SshConfig.SshConfig, host: string) {
  const hostConfig = SshConfig.resolve(config, host, { localUser: account.user(), home: account.home() })
  const configPort = hostConfig.port === undefined
    ? undefined
    : yield* Effect.fromResult(parsePort(hostConfig.port, "port"))
  return { hostConfig, configPort }
})

// Nested jumps deeper than this are a loop in the ssh_config (OpenSSH would recurse for ever).
const maxJumpDepth = 8

// A jump host: its own host string and ssh_config block; the `user` setting and key apply to it
// as well, since deploy users usually log in to gateway and target alike. As with OpenSSH (which
// runs `ssh -J <hops before> <hop> -W`), a hop is reached through the hops listed before it;
// the first one through the ProxyJump of its own ssh_config block, if it has one.
const resolveHop = Effect.fnUntraced(function*(
  account: Account,
  text: string,
  settings: Settings,
  config: SshConfig.SshConfig,
  before: Target | undefined,
  depth: number
): Effect.fn.Return<Target, SettingsError> {
  const parsed = yield* Effect.fromResult(parseHostString(text, "gateway"))
  const { configPort, hostConfig } = yield* configFor(account, config, parsed.host)
  const gateway = before !== undefined || hostConfig.proxyJump === undefined
    ? before
    : depth >= maxJumpDepth
    ? yield* new SettingsError({
      setting: "sshConfigFile",
      value: String(settings.sshConfigFile),
      detail: `the ProxyJump of ${parsed.host} nests more than ${maxJumpDepth} jump hosts deep: a loop?`
    })
    : yield* resolveJumps(account, hostConfig.proxyJump, settings, config, depth + 1)
  const target: Target = {
    ...common(settings),
    label: parsed.host,
    host: hostConfig.hostName ?? parsed.host,
    port: parsed.port ?? configPort ?? 22,
    user: parsed.user ?? hostConfig.user ?? settings.user ?? account.user(),
    keyFile: yield* keyFileFor(settings, hostConfig.identityFiles),
    gateway
  }
  return target
})

// ProxyJump may list several hops: each is reached through the one before it.
function resolveJumps(
  account: Account,
  jumps: string | undefined,
  settings: Settings,
  config: SshConfig.SshConfig,
  depth: number
): Effect.Effect<Target | undefined, SettingsError> {
  return Effect.gen(function*() {
    let gateway: Target | undefined
    for (const hop of jumps?.split(",").map((s) => s.trim()).filter((s) => s !== "") ?? []) {
      gateway = yield* resolveHop(account, hop, settings, config, gateway, depth)
    }
    return gateway
  })
}

const resolveWith = Effect.fnUntraced(
  function*(account: Account, configCache: ConfigCache, settings: Settings) {
    if (settings.host === undefined) {
      return yield* missingHost()
    }
    const parsed = yield* Effect.fromResult(parseHostString(settings.host))
    const port = yield* checkPortSetting(settings.port)
    yield* checkConnectionSettings(settings)
    const config = yield* readConfig(configCache, settings)
    const { configPort, hostConfig } = yield* configFor(account, config, parsed.host)

    const gateway = yield* resolveJumps(
      account,
      settings.gateway ?? hostConfig.proxyJump,
      settings,
      config,
      0
    )

    const target: Target = {
      ...common(settings),
      label: parsed.host,
      host: hostConfig.hostName ?? parsed.host,
      port: parsed.port ?? port ?? configPort ?? 22,
      user: parsed.user ?? settings.user ?? hostConfig.user ?? account.user(),
      keyFile: yield* keyFileFor(settings, hostConfig.identityFiles),
      gateway,
      ...(settings.proxyCommand === undefined ? {} : { proxyCommand: settings.proxyCommand })
    }
    return target
  }
)

// -- the resolver ---------------------------------------------------------------------------------

/**
 * The resolver of one `SshConnections` layer. Targets are not kept: resolving takes 8 to 13 µs
 * (50 µs with a 40-block ssh_config), under 1.5% of a warm remote command (3.5 to 4 ms on the
 * test machine), and a target resolved afresh can never be out of date with its settings, the
 * environment or the files it read. What is kept can be checked: parsed ssh_config files by
 * their stamp, and the local account, which never changes for a process.
 */
export const makeResolver = (): (settings: Settings) => Effect.Effect<Target, SettingsError> => {
  // `os.userInfo()` reads the password database on every call.
  let passwd: { readonly username: string; readonly homedir: string } | undefined
  const account: Account = {
    user: () => process.env["USER"] ?? (passwd ??= userInfo()).username,
    home: () => process.env["HOME"] ?? (passwd ??= userInfo()).homedir
  }
  // Parsed config files, by path, while unchanged: a fan-out to many hosts resolves each of them.
  const configCache: ConfigCache = new Map()
  return (settings) => resolveWith(account, configCache, settings)
}

/** A string that identifies the connection a target needs: equal keys share one connection. */
export const targetKey = (target: Target): string =>
  JSON.stringify([
    target.user,
    target.host,
    target.port,
    target.keyFile ?? null,
    target.agent ?? null,
    target.knownHostsFile,
    target.hostKeyPolicy,
    target.gateway === undefined ? null : targetKey(target.gateway),
    target.proxyCommand ?? null
  ])
