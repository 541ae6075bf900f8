/**
 * Resolves the connection settings of an operation into a {@link Target}: host string, settings
 * and `~/.ssh/config`, with the precedence host string > settings > ssh_config > default.
 */
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import { existsSync, readFileSync } from "node:fs"
import { userInfo } from "node:os"
import * as path from "node:path"
import { SettingsError } from "../Errors.ts"
import { defaults, expandHome, type Settings } from "../Settings.ts"
import type { Target } from "../Ssh.ts"
import { parseHostString, parsePort } from "./hostString.ts"
import * as SshConfig from "./sshConfig.ts"

const defaultKeys = ["~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa"]

const localUser = (): string => process.env["USER"] ?? userInfo().username

const home = (): string => process.env["HOME"] ?? userInfo().homedir

const absolute = (p: string): string => path.resolve(expandHome(p))

const fromResult = <A>(result: Result.Result<A, SettingsError>): Effect.Effect<A, SettingsError> =>
  Result.isSuccess(result) ? Effect.succeed(result.success) : Effect.fail(result.failure)

const readConfig = (settings: Settings): Effect.Effect<SshConfig.SshConfig, SettingsError> => {
  if (settings.sshConfigFile === false) return Effect.succeed({ blocks: [] })
  const file = absolute(settings.sshConfigFile)
  // The default file is optional, as for OpenSSH; a file named on purpose must exist.
  if (!existsSync(file)) {
    return settings.sshConfigFile === defaults.sshConfigFile
      ? Effect.succeed({ blocks: [] })
      : Effect.fail(
        new SettingsError({ setting: "sshConfigFile", value: settings.sshConfigFile, detail: "no such file" })
      )
  }
  return Effect.try({
    try: () => SshConfig.parse(readFileSync(file, "utf8")),
    catch: (cause) =>
      new SettingsError({
        setting: "sshConfigFile",
        value: settings.sshConfigFile as string,
        detail: String(cause)
      })
  })
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

/**
 * The target of an operation under `settings`. Fails with `SettingsError` when no host is set,
 * a host string or port is malformed, an explicit key file or ssh config file is missing.
 */
export const resolveTarget = Effect.fnUntraced(function*(settings: Settings) {
  if (settings.host === undefined) {
    return yield* new SettingsError({
      setting: "host",
      value: "",
      detail: "no host to run on; set it with Settings.settings({ host: \"user@host\" }) or the host option"
    })
  }
  const parsed = yield* fromResult(parseHostString(settings.host))
  const port = yield* checkPortSetting(settings.port)
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
    target.gateway === undefined ? null : targetKey(target.gateway)
  ])
