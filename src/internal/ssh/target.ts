/**
 * Resolves the connection settings of an operation into a {@link Target}: host string, settings
 * and `~/.ssh/config`, with the precedence host string > settings > ssh_config > default. The
 * config is resolved by `ssh -G` (`sshG.ts`) when the OpenSSH client is there, else by the
 * built-in reader (`config.ts`); both answer in the same shape, mapped here.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { hostname, userInfo } from "node:os"
import * as path from "node:path"
import { SettingsError } from "../../Errors.ts"
import { defaults, expandHome, type Settings } from "../../Settings.ts"
import * as Files from "../local/files.ts"
import { durationError, toDuration } from "../settings/duration.ts"
import { isUserName, missingHost, parseHostString, parsePort } from "../settings/hostString.ts"
import { forwardingOf, noAgentToForward } from "./agentForwarding.ts"
import * as SshConfig from "./config.ts"
import { filesOf, flag } from "./configValues.ts"
import type { Target } from "./port.ts"
import * as SshG from "./sshG.ts"

const defaultKeys = ["~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa"]

/** The local account's name and home, from the environment or else the password database. */
interface Account {
  readonly user: () => string
  readonly home: () => string
  /** The name in the password database: OpenSSH's default user. */
  readonly loginName: () => string
}

const absolute = (p: string): string => path.resolve(expandHome(p))

/** What one `SshConnections` layer keeps between resolutions; see {@link makeResolver}. */
interface ResolverState {
  readonly account: Account
  /** Parsed config files (built-in reader), by path, while unchanged. */
  readonly parsed: Map<string, { readonly stamp: string; readonly config: SshConfig.SshConfig }>
  /** `ssh -G`'s answers, by (config file and stamp, host, user, port); `maxAnswers` at most. */
  readonly answers: Map<string, SshConfig.Options>
  readonly maxAnswers: number
  /** The `file:line`s already warned about. */
  readonly warned: Set<string>
  /** The `ssh` on `PATH`, looked for once. */
  readonly ssh: () => string | undefined
}

/**
 * The config file of the settings and its stamp: `none` for `sshConfigFile: false`. The
 * default file is optional, as for OpenSSH (`file` is then `undefined`: ssh reads its own
 * files); a file named on purpose must exist.
 */
const configFile = (
  settings: Settings
): Effect.Effect<"none" | { readonly file: string | undefined; readonly stamp: string }, SettingsError> => {
  const setting = settings.sshConfigFile
  if (setting === false) return Effect.succeed("none")
  const file = absolute(setting)
  // Resolved before every operation: the stamps are taken synchronously, as metadata calls that
  // cannot block, not by a round trip through the thread pool each time.
  return Effect.try({
    try: () => Files.Sync.statIfExists(file),
    catch: (error) => Files.fromNode("stat", file, error)
  }).pipe(
    Effect.mapError((error) =>
      new SettingsError({ setting: "sshConfigFile", value: setting, detail: String(error.cause) })
    ),
    Effect.flatMap((stat) => {
      const isDefault = setting === defaults.sshConfigFile
      // ctime too: a tool that puts the modification time back (`touch -r`, `cp -p`, `rsync -t`)
      // cannot set it.
      if (stat !== undefined) {
        const stamp = `${stat.mtimeMs}:${stat.ctimeMs}:${stat.size}:${stat.ino}`
        return Effect.succeed({ file: isDefault ? undefined : file, stamp })
      }
      return isDefault
        ? Effect.succeed({ file: undefined, stamp: "absent" })
        : Effect.fail(
          new SettingsError({
            setting: "sshConfigFile",
            value: setting,
            detail: "no such file; fix the path, or set sshConfigFile to false to read none"
          })
        )
    })
  )
}

const readParsed = (
  state: ResolverState,
  settings: Settings,
  file: string,
  stamp: string
): Effect.Effect<SshConfig.SshConfig, SettingsError> => {
  const cached = state.parsed.get(file)
  if (cached?.stamp === stamp) return Effect.succeed(cached.config)
  return Files.readFileString(file).pipe(
    Effect.map((text) => {
      const config = SshConfig.parse(text)
      state.parsed.set(file, { stamp, config })
      return config
    }),
    Effect.mapError((error) =>
      new SettingsError({
        setting: "sshConfigFile",
        value: String(settings.sshConfigFile),
        detail: String(error.cause)
      })
    )
  )
}

/** Which reader resolves the config: the setting, with `auto` meaning OpenSSH when it is there. */
const resolverOf = (
  state: ResolverState,
  settings: Settings
): Effect.Effect<{ readonly ssh: string } | "builtin", SettingsError> => {
  const choice = settings.sshConfigResolver
  if (choice === "builtin") return Effect.succeed("builtin")
  const ssh = state.ssh()
  if (ssh !== undefined) return Effect.succeed({ ssh })
  return choice === "auto" ? Effect.succeed("builtin") : Effect.fail(
    new SettingsError({
      setting: "sshConfigResolver",
      value: choice,
      detail: "no `ssh` on PATH: install the OpenSSH client, or set sshConfigResolver to \"builtin\""
    })
  )
}

/** The options of `host` by the built-in reader, its warnings logged once per file and line. */
const builtinOptions = Effect.fnUntraced(function*(
  state: ResolverState,
  settings: Settings,
  file: string,
  stamp: string,
  host: string
) {
  const config = yield* readParsed(state, settings, file, stamp)
  const { options, problems } = SshConfig.lookup(config, host)
  const fatal = problems.find((p) => p.fatal)
  if (fatal !== undefined) {
    return yield* new SettingsError({
      setting: "sshConfigFile",
      value: String(settings.sshConfigFile),
      detail:
        `${file} line ${fatal.line}: ${fatal.detail}; install the OpenSSH client (then \`ssh -G\` resolves ` +
        `the file exactly), or take the directive out of the file`
    })
  }
  for (const problem of [...SshConfig.unsupported(config), ...problems]) {
    const key = `${file}:${problem.line}`
    if (state.warned.has(key)) continue
    state.warned.add(key)
    yield* Effect.logWarning(
      `ssh_config ${file} line ${problem.line}: \`${problem.keyword}\` ${problem.detail}`
    )
  }
  return options
})

/**
 * The ssh_config options of `host`, by `ssh -G` or the built-in reader; `openssh` says which
 * (`ssh -G` lists every option, defaults included). `user` and `port` are those given in code.
 */
const optionsFor = Effect.fnUntraced(function*(
  state: ResolverState,
  settings: Settings,
  host: string,
  user: string | undefined,
  port: number | undefined
) {
  const config = yield* configFile(settings)
  if (config === "none") return { options: new Map() as SshConfig.Options, openssh: false }
  const resolver = yield* resolverOf(state, settings)
  if (resolver === "builtin") {
    if (config.file === undefined && config.stamp === "absent") {
      return { options: new Map() as SshConfig.Options, openssh: false }
    }
    const file = config.file ?? absolute(defaults.sshConfigFile as string)
    return { options: yield* builtinOptions(state, settings, file, config.stamp, host), openssh: false }
  }
  const key = JSON.stringify([config.file ?? null, config.stamp, host, user ?? null, port ?? null])
  const cached = state.answers.get(key)
  if (cached !== undefined) return { options: cached, openssh: true }
  const options = yield* SshG.run({ ssh: resolver.ssh, configFile: config.file, host, user, port })
  // Bounded: each edit of the config makes new keys. A Map keeps insertion order: drop the oldest.
  if (state.answers.size >= state.maxAnswers) state.answers.delete(state.answers.keys().next().value!)
  state.answers.set(key, options)
  return { options, openssh: true }
})

const keyFileFor = (
  settings: Settings,
  configured: ReadonlyArray<string>,
  openssh: boolean
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
  // Like OpenSSH, identity files that do not exist are skipped silently. `ssh -G` lists its
  // default keys itself, and only when the config names none.
  return Effect.sync(() =>
    (openssh ? configured : [...configured, ...defaultKeys]).map(absolute).find(Files.Sync.exists)
  )
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

const first = (options: SshConfig.Options, keyword: string): string | undefined => options.get(keyword)?.[0]

const seconds = (value: string | undefined): Duration.Duration | undefined =>
  value !== undefined && /^\d+$/.test(value) && Number(value) > 0
    ? Duration.seconds(Number(value))
    : undefined

/** A setting counts as given in code when it differs from its default; else the config's value. */
const durationSetting = (
  settings: Settings,
  key: "connectTimeout" | "keepaliveInterval",
  configured: Duration.Duration | undefined
): Duration.Duration =>
  configured !== undefined && Duration.equals(toDuration(settings[key]), toDuration(defaults[key]))
    ? configured
    : settings[key]

/**
 * The parts of a {@link Target} that ssh_config options can set, for the host `label` reached at
 * `host`, `port`, as `user`. Settings given in code win: those with a default count as given when
 * they differ from it. What cannot be told from `ssh -G`'s defaults (`serveraliveinterval 0`,
 * `stricthostkeychecking ask`, its own default known_hosts files) leaves the setting as it is.
 */
const fromOptions = (
  account: Account,
  settings: Settings,
  options: SshConfig.Options,
  names: { readonly label: string; readonly host: string; readonly port: number; readonly user: string }
) => {
  const base = common(settings)
  const tokens: Record<string, string> = {
    "%": "%",
    d: account.home(),
    h: names.host,
    i: String(process.getuid?.() ?? ""),
    k: first(options, "hostkeyalias") ?? names.label,
    L: hostname().split(".")[0] ?? "",
    l: hostname(),
    n: names.label,
    p: String(names.port),
    r: names.user,
    u: account.user()
  }
  const expand = (value: string) => absolute(SshConfig.expandTokens(value, tokens))

  const identityAgent = first(options, "identityagent")
  const identitiesOnly = flag(first(options, "identitiesonly")) === "yes"
  // The agent ssh would forward: `IdentitiesOnly` keeps it out of authentication only.
  const agentSocket = base.agent === undefined || identityAgent === "none"
    ? undefined
    : identityAgent === undefined || identityAgent === "SSH_AUTH_SOCK"
    ? base.agent
    : identityAgent.startsWith("$")
    ? process.env[identityAgent.replace(/^\$\{?|\}$/g, "")] || undefined
    : expand(identityAgent)
  const agent = identitiesOnly ? undefined : agentSocket

  const knownHosts = filesOf(first(options, "userknownhostsfile"))
  const sshDefaultKnownHosts = [`${account.home()}/.ssh/known_hosts`, `${account.home()}/.ssh/known_hosts2`]
  const configuredKnownHosts = knownHosts === undefined || knownHosts[0] === undefined ||
      (knownHosts.length === 2 && knownHosts.every((f, i) => f === sshDefaultKnownHosts[i]))
    ? undefined
    : expand(knownHosts[0])

  // `ForwardAgent` is `yes`, `no`, or the agent socket to forward (a path with tokens, or
  // `$VAR`): a socket named there is the one forwarded, often an agent that holds fewer keys.
  const forwardAgentValue = flag(first(options, "forwardagent"))
  const forwardAgentSocket = forwardAgentValue === undefined || ["yes", "no"].includes(forwardAgentValue)
    ? undefined
    : forwardAgentValue.startsWith("$")
    ? process.env[forwardAgentValue.replace(/^\$\{?|\}$/g, "")] || undefined
    : expand(forwardAgentValue)

  // A socket named in a `$VAR` that is not set, or `yes` with no agent: nothing, as with ssh.
  const forwarding = forwardAgentValue === undefined || forwardAgentValue === "no"
    ? {}
    : forwardAgentValue === "yes"
    ? forwardingOf(agentSocket, agent)
    : forwardingOf(forwardAgentSocket, agent)

  const strict = flag(first(options, "stricthostkeychecking"))
  const proxyCommand = first(options, "proxycommand")
  const alias = first(options, "hostkeyalias")
  return {
    ...base,
    agent,
    agentSocket,
    ...(configuredKnownHosts !== undefined && settings.knownHostsFile === defaults.knownHostsFile
      // A host recorded in any of them is known to ssh: a different key there is a changed key.
      ? {
        knownHostsFile: configuredKnownHosts,
        otherKnownHostsFiles: (knownHosts ?? []).slice(1).map(expand)
      }
      : { knownHostsFile: base.knownHostsFile }),
    // Only ever stricter than the settings: `no` cannot loosen the library's own rules.
    hostKeyPolicy: strict === "yes" ? "strict" as const : base.hostKeyPolicy,
    connectTimeout: durationSetting(settings, "connectTimeout", seconds(first(options, "connecttimeout"))),
    keepaliveInterval: durationSetting(
      settings,
      "keepaliveInterval",
      seconds(first(options, "serveraliveinterval"))
    ),
    keepaliveCountMax: settings.keepaliveCountMax === defaults.keepaliveCountMax
      ? Number(first(options, "serveralivecountmax") ?? base.keepaliveCountMax) || base.keepaliveCountMax
      : base.keepaliveCountMax,
    ...(alias === undefined ? {} : { hostKeyAlias: alias }),
    ...forwarding,
    // As written: its tokens are expanded when connecting, as OpenSSH does (proxyCommand.ts).
    ...(proxyCommand === undefined || proxyCommand === "none" ? {} : { proxyCommand }),
    identityFiles: (options.get("identityfile") ?? []).filter((f) => f.toLowerCase() !== "none").map(expand),
    // Named in a warning only (see handshake.ts): absent when the config has none.
    ...certificateFilesOf(
      (options.get("certificatefile") ?? []).filter((f) => f.toLowerCase() !== "none").map(expand)
    )
  }
}

const certificateFilesOf = (
  files: ReadonlyArray<string>
): { readonly certificateFiles?: ReadonlyArray<string> } =>
  files.length === 0 ? {} : { certificateFiles: files.map(absolute) }

const configPortOf = (options: SshConfig.Options) => {
  const text = first(options, "port")
  return text === undefined ? Effect.succeed(undefined) : Effect.fromResult(parsePort(text, "port"))
}

// A jump host: its own host string and ssh_config block; the `user` setting and key apply to it
// as well, since deploy users usually log in to gateway and target alike. So that the `user`
// setting can still apply, `ssh -G`'s default user (the local login name) counts as no User.
// Nested jumps deeper than this are a loop in the ssh_config (OpenSSH would recurse for ever).
const maxJumpDepth = 8

// `ssh -G` prints a lone hop that is an IPv4 address as `[127.0.0.2]`.
const hopsOf = (jumps: string | undefined): Array<string> =>
  jumps === undefined || jumps === "none"
    ? []
    : jumps.split(",").map((s) => s.trim()).filter((s) => s !== "").map((hop) =>
      hop.replace(/^([^@]*@)?\[([^\]:]*)\]/, "$1$2")
    )

// A jump host: its own host string and ssh_config block; the `user` setting and key apply to it
// as well, since deploy users usually log in to gateway and target alike. As with OpenSSH (which
// runs `ssh -J <hops before> <hop> -W`), a hop is reached through the hops listed before it; the
// first one through the ProxyJump (or ProxyCommand) of its own ssh_config block, if it has one.
const resolveHop = Effect.fnUntraced(function*(
  state: ResolverState,
  text: string,
  settings: Settings,
  before: Target | undefined,
  depth: number
): Effect.fn.Return<Target, SettingsError> {
  const parsed = yield* Effect.fromResult(parseHostString(text, "gateway"))
  const { openssh, options } = yield* optionsFor(state, settings, parsed.host, parsed.user, parsed.port)
  const configPort = yield* configPortOf(options)
  const configUser = first(options, "user")
  const host = first(options, "hostname") ?? parsed.host
  const port = parsed.port ?? configPort ?? 22
  const user = parsed.user ??
    (openssh && configUser === state.account.loginName() ? undefined : configUser) ??
    settings.user ?? state.account.user()
  const ownJumps = before === undefined ? hopsOf(first(options, "proxyjump")) : []
  if (ownJumps.length > 0 && depth >= maxJumpDepth) {
    return yield* new SettingsError({
      setting: "sshConfigFile",
      value: String(settings.sshConfigFile),
      detail: `the ProxyJump of ${parsed.host} nests more than ${maxJumpDepth} jump hosts deep: a loop?`
    })
  }
  const gateway = ownJumps.length > 0 ? yield* resolveJumps(state, ownJumps, settings, depth + 1) : before
  // A jump host only relays: it never gets the agent, whatever its config block says.
  const { forwardAgent: _, forwardAgentSocket: __, agentSocket: ___, identityFiles, proxyCommand, ...rest } =
    fromOptions(
      state.account,
      settings,
      options,
      { label: parsed.host, host, port, user }
    )
  const target: Target = {
    ...rest,
    // Its own ProxyCommand is its route only when nothing else leads to it.
    ...(proxyCommand === undefined || gateway !== undefined ? {} : { proxyCommand }),
    label: parsed.host,
    host,
    port,
    user,
    keyFile: yield* keyFileFor(settings, identityFiles, openssh),
    gateway
  }
  return target
})

// ProxyJump may list several hops: each is reached through the one before it.
function resolveJumps(
  state: ResolverState,
  hops: ReadonlyArray<string>,
  settings: Settings,
  depth: number
): Effect.Effect<Target | undefined, SettingsError> {
  return Effect.gen(function*() {
    let gateway: Target | undefined
    for (const hop of hops) gateway = yield* resolveHop(state, hop, settings, gateway, depth)
    return gateway
  })
}

const resolveWith = Effect.fnUntraced(
  function*(state: ResolverState, settings: Settings) {
    if (settings.host === undefined) {
      return yield* missingHost()
    }
    const parsed = yield* Effect.fromResult(parseHostString(settings.host))
    const givenPort = parsed.port ?? (yield* checkPortSetting(settings.port))
    yield* checkConnectionSettings(settings)
    const givenUser = parsed.user ?? settings.user
    const { openssh, options } = yield* optionsFor(state, settings, parsed.host, givenUser, givenPort)
    const configPort = yield* configPortOf(options)
    const host = first(options, "hostname") ?? parsed.host
    const port = givenPort ?? configPort ?? 22
    const user = givenUser ?? first(options, "user") ?? state.account.user()

    const jumps = hopsOf(settings.gateway ?? first(options, "proxyjump"))
    const gateway = yield* resolveJumps(state, jumps, settings, 0)

    const { identityFiles, proxyCommand, agentSocket, forwardAgent, forwardAgentSocket, ...rest } =
      fromOptions(
        state.account,
        settings,
        options,
        {
          label: parsed.host,
          host,
          port,
          user
        }
      )
    const target: Target = {
      ...rest,
      // A gateway, from the settings or ProxyJump, is the route: as for OpenSSH, the first of
      // ProxyJump and ProxyCommand in the config wins, and `ssh -G` prints only that one.
      ...(proxyCommand === undefined || jumps.length > 0 ? {} : { proxyCommand }),
      // The setting wins over the config (and, when connecting, over a gateway).
      ...(settings.proxyCommand === undefined ? {} : { proxyCommand: settings.proxyCommand }),
      label: parsed.host,
      host,
      port,
      user,
      keyFile: yield* keyFileFor(settings, identityFiles, openssh),
      gateway,
      // Only the final host gets the agent: a jump host only relays, as with `ssh -A -J`. The
      // setting forwards the agent itself (as `ssh -A`), whatever socket the config names.
      ...(settings.forwardAgent
        ? forwardingOf(agentSocket, rest.agent)
        : forwardAgent === true
        ? { forwardAgent, ...(forwardAgentSocket === undefined ? {} : { forwardAgentSocket }) }
        : {})
    }
    if (settings.forwardAgent && agentSocket === undefined) return yield* noAgentToForward(settings)
    return target
  }
)

// -- the resolver ---------------------------------------------------------------------------------

/**
 * The resolver of one `SshConnections` layer. Targets are not kept: a target resolved afresh can
 * never be out of date with its settings, the environment or the files it read (8 to 13 µs,
 * 50 µs with a 40-block ssh_config, by the built-in reader). What is kept can be checked:
 * `ssh -G`'s answers and parsed config files by the config file's stamp (an edit counts from the
 * next operation; an edit of a file it `Include`s, or a change in what a `Match exec` command
 * answers, only in a new layer), and the local account, which never changes for a process.
 */
export const makeResolver = (
  // A fleet of this many hosts asks `ssh -G` once per host.
  maxAnswers = 4096
): (settings: Settings) => Effect.Effect<Target, SettingsError> => {
  // `os.userInfo()` reads the password database on every call.
  let passwd: { readonly username: string; readonly homedir: string } | undefined
  const account: Account = {
    user: () => process.env["USER"] ?? (passwd ??= userInfo()).username,
    home: () => process.env["HOME"] ?? (passwd ??= userInfo()).homedir,
    loginName: () => (passwd ??= userInfo()).username
  }
  let ssh: { readonly path: string | undefined } | undefined
  const state: ResolverState = {
    account,
    parsed: new Map(),
    answers: new Map(),
    maxAnswers,
    warned: new Set(),
    ssh: () => (ssh ??= { path: SshG.findSsh(process.env["PATH"]) }).path
  }
  return (settings) => resolveWith(state, settings)
}

/** A string that identifies the connection a target needs: equal keys share one connection. */
export const targetKey = (target: Target): string =>
  JSON.stringify([
    target.user,
    target.host,
    target.port,
    target.keyFile ?? null,
    target.agent ?? null,
    target.forwardAgent === true,
    target.forwardAgentSocket ?? null,
    target.knownHostsFile,
    target.otherKnownHostsFiles ?? null,
    target.hostKeyPolicy,
    target.gateway === undefined ? null : targetKey(target.gateway),
    target.proxyCommand ?? null,
    target.hostKeyAlias ?? null
  ])

/**
 * The name and port `target`'s host key is looked up and recorded under in known_hosts: its
 * `HostKeyAlias` alone (OpenSSH writes it without `[..]:port`), else its host and port.
 */
export const knownHostsName = (target: Target): { readonly host: string; readonly port: number } =>
  target.hostKeyAlias === undefined
    ? { host: target.host, port: target.port }
    : { host: target.hostKeyAlias, port: 22 }
