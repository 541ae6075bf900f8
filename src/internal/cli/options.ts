/**
 * The flags every form of `threadbare` shares (hosts, connection, sudo, output, runs) and what
 * they become: a list of hosts and a settings patch. Secrets are never flag values: a flag names
 * an environment variable, or asks for a prompt without echo, and the value stays `Redacted`.
 */
import * as Flag from "effect/cli/Flag"
import * as Prompt from "effect/cli/Prompt"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FileSystem from "effect/FileSystem"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { expandHome, type Patch } from "../../Settings.ts"
import type { Amount } from "../execute/batches.ts"
import * as SshConfig from "../ssh/config.ts"
import { UsageError } from "./exitCodes.ts"

const text = (name: string, description: string, metavar?: string) =>
  Flag.String(name).pipe(
    Flag.withDescription(description),
    (flag) => (metavar === undefined ? flag : Flag.withMetavar(flag, metavar)),
    Flag.optional
  )

const count = (name: string, description: string) =>
  Flag.Int(name).pipe(Flag.withDescription(description), Flag.withMetavar("n"), Flag.optional)

const toggle = (name: string, description: string) =>
  Flag.Boolean(name).pipe(Flag.withDescription(description), Flag.withDefault(false))

/** The flags shared by the ad-hoc command, `put`, `get` and `run`. */
export const sharedFlags = {
  hosts: text("hosts", "hosts to run on, comma-separated ([user@]host[:port])", "hosts").pipe(
    Flag.withAlias("H")
  ),
  hostsFile: text("hosts-file", "read hosts from a file, one per line (# starts a comment)", "file"),
  sshConfigHosts: text(
    "ssh-config-hosts",
    "run on the Host entries of the ssh config (no wildcards) matching a pattern such as 'web-*'",
    "pattern"
  ),
  user: text("user", "the remote user", "user").pipe(Flag.withAlias("u")),
  port: count("port", "the SSH port"),
  key: text("key", "a private key file", "file").pipe(Flag.withAlias("i")),
  keyPassphraseEnv: text(
    "key-passphrase-env",
    "read the key's passphrase from this environment variable",
    "name"
  ),
  passwordEnv: text("password-env", "read the login password from this environment variable", "name"),
  knownHosts: text("known-hosts", "the known_hosts file (default ~/.ssh/known_hosts)", "file"),
  hostKeyPolicy: Flag.Literals("host-key-policy", ["strict", "accept-new"]).pipe(
    Flag.withDescription(
      "a host key not in known_hosts: refuse (strict) or record it (accept-new, the default)"
    ),
    Flag.optional
  ),
  gateway: text("gateway", "a jump host to connect through ([user@]host[:port])", "host").pipe(
    Flag.withAlias("g")
  ),
  proxyCommand: text(
    "proxy-command",
    "a command to connect through, like ProxyCommand (%h %p %r)",
    "command"
  ),
  connectTimeout: text(
    "connect-timeout",
    "how long to wait for a connection (\"10 seconds\", or seconds)",
    "duration"
  ),
  connectAttempts: count("connect-attempts", "how many times to try to connect (default 3)"),
  sshConfig: text(
    "ssh-config",
    "the ssh config file to read (default ~/.ssh/config; 'none' for none)",
    "file"
  ),
  agent: Flag.Boolean("agent").pipe(
    Flag.withDescription("use the SSH agent ($SSH_AUTH_SOCK); --no-agent to ignore it"),
    Flag.withDefault(true)
  ),
  sudo: toggle("sudo", "run commands and transfers through sudo"),
  sudoUser: text("sudo-user", "the user sudo runs as (default root)", "user"),
  sudoPasswordEnv: text("sudo-password-env", "read sudo's password from this environment variable", "name"),
  promptSudoPassword: toggle("prompt-sudo-password", "ask for sudo's password on the terminal, without echo"),
  timeout: text("timeout", "stop a command that runs longer (\"5 minutes\", or seconds)", "duration"),
  parallel: count("parallel", "how many hosts at once (default: one after another; tasks: the CPUs)").pipe(
    Flag.withAlias("P")
  ),
  batches: text(
    "batches",
    "roll out in batches: sizes or percentages, the last repeating (1,25%,100%)",
    "sizes"
  ),
  maxFail: text(
    "max-fail",
    "failures a batch may have before the run stops (a count or a percentage)",
    "n|p%"
  ),
  report: text("report", "write a JSON report of the run to this file", "file"),
  rerunFailed: text(
    "rerun-failed",
    "run on the hosts a report says are still to do (failed, not started)",
    "file"
  ),
  json: toggle("json", "print newline-delimited JSON events instead of lines"),
  board: toggle("board", "draw a live board of the hosts instead of lines"),
  quiet: toggle("quiet", "print no command output, only the summary").pipe(Flag.withAlias("q")),
  dryRun: toggle("dry-run", "print what would run on which host, and touch nothing")
} as const

/** The values of {@link sharedFlags}, as the command hands them over. */
export type Shared = {
  readonly [K in keyof typeof sharedFlags]: (typeof sharedFlags)[K] extends Flag.Flag<infer A> ? A : never
}

const splitHosts = (value: string): Array<string> =>
  value.split(",").map((h) => h.trim()).filter((h) => h.length > 0)

const fromEnv = (flag: string, name: string): Effect.Effect<Redacted.Redacted<string>, UsageError> => {
  const value = process.env[name]
  return value === undefined
    ? Effect.fail(new UsageError({ message: `--${flag}: the environment variable ${name} is not set` }))
    : Effect.succeed(Redacted.make(value, { label: name }))
}

// "30 seconds" as Duration reads it, or a bare number of seconds.
const duration = (flag: string, value: string): Effect.Effect<Duration.Duration, UsageError> => {
  const trimmed = value.trim()
  const parsed = /^\d+(\.\d+)?$/.test(trimmed)
    ? Option.some(Duration.seconds(Number(trimmed)))
    : Duration.fromInput(trimmed as Duration.Input)
  return Option.isSome(parsed)
    ? Effect.succeed(parsed.value)
    : Effect.fail(
      new UsageError({ message: `--${flag}: "${value}" is not a duration (give "30 seconds", or 30)` })
    )
}

const amount = (flag: string, value: string): Effect.Effect<Amount, UsageError> => {
  const trimmed = value.trim()
  if (/^\d+$/.test(trimmed)) return Effect.succeed(Number(trimmed))
  if (/^\d+(\.\d+)?%$/.test(trimmed)) return Effect.succeed(trimmed as `${number}%`)
  return Effect.fail(
    new UsageError({ message: `--${flag}: "${value}" is not a count or a percentage (5, 25%)` })
  )
}

/** `--batches 1,25%,100%` and `--max-fail N|P%`, checked. */
export const rollingOptions = (shared: Shared) =>
  Effect.gen(function*() {
    const batches = Option.isSome(shared.batches)
      ? yield* Effect.forEach(shared.batches.value.split(","), (part) => amount("batches", part))
      : undefined
    const maxFailures = Option.isSome(shared.maxFail)
      ? yield* amount("max-fail", shared.maxFail.value)
      : undefined
    return { batches, maxFailures }
  })

/** The settings the flags give, secrets read from the environment or the terminal. */
export const settingsPatch = (shared: Shared) =>
  Effect.gen(function*() {
    // Every failure is named in the summary at the end; the library's own report of each abort
    // (with advice for programs, not for a command line) would say it twice.
    const patch: { -readonly [K in keyof Patch]: Patch[K] } = { displayAborts: false }
    if (Option.isSome(shared.user)) patch.user = shared.user.value
    if (Option.isSome(shared.port)) patch.port = shared.port.value
    if (Option.isSome(shared.key)) {
      yield* noSpecialFile("key", shared.key.value)
      patch.keyFile = shared.key.value
    }
    if (Option.isSome(shared.keyPassphraseEnv)) {
      patch.keyPassphrase = yield* fromEnv("key-passphrase-env", shared.keyPassphraseEnv.value)
    }
    if (Option.isSome(shared.passwordEnv)) {
      patch.password = yield* fromEnv("password-env", shared.passwordEnv.value)
    }
    if (Option.isSome(shared.knownHosts)) {
      yield* noSpecialFile("known-hosts", shared.knownHosts.value)
      patch.knownHostsFile = shared.knownHosts.value
    }
    if (Option.isSome(shared.hostKeyPolicy)) patch.hostKeyPolicy = shared.hostKeyPolicy.value
    if (Option.isSome(shared.gateway)) patch.gateway = shared.gateway.value
    if (Option.isSome(shared.proxyCommand)) patch.proxyCommand = shared.proxyCommand.value
    if (Option.isSome(shared.connectTimeout)) {
      patch.connectTimeout = yield* duration("connect-timeout", shared.connectTimeout.value)
    }
    if (Option.isSome(shared.connectAttempts)) patch.connectAttempts = shared.connectAttempts.value
    if (Option.isSome(shared.sshConfig)) {
      if (shared.sshConfig.value !== "none") yield* noSpecialFile("ssh-config", shared.sshConfig.value)
      patch.sshConfigFile = shared.sshConfig.value === "none" ? false : shared.sshConfig.value
    }
    if (!shared.agent) patch.useAgent = false
    if (shared.sudo) patch.useSudo = true
    if (Option.isSome(shared.sudoUser)) patch.sudoUser = shared.sudoUser.value
    if (Option.isSome(shared.sudoPasswordEnv)) {
      patch.sudoPassword = yield* fromEnv("sudo-password-env", shared.sudoPasswordEnv.value)
    } else if (shared.promptSudoPassword && !shared.dryRun) {
      // A dry run sends nothing to sudo: it asks for nothing either.
      patch.sudoPassword = yield* Prompt.run(Prompt.Hidden({ message: "sudo password:" })).pipe(
        Effect.map((secret) => Redacted.make(Redacted.value(secret) as string, { label: "sudo password" })),
        Effect.mapError(() => new UsageError({ message: "--prompt-sudo-password: no password given" }))
      )
    }
    if (Option.isSome(shared.timeout)) patch.timeout = yield* duration("timeout", shared.timeout.value)
    if (shared.quiet) patch.quiet = true
    return patch as Patch
  })

// Files a user names are read whole: far beyond any list of hosts or report is a mistake.
const maxFileBytes = 64 * 1024 * 1024

/**
 * Checks that `path` is a regular file of a sane size before it is opened: a FIFO would block
 * the open forever (no interrupt reaches a read stuck in the thread pool), a directory or a
 * device is a typo.
 */
export const regularFile = (flag: string, path: string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const info = yield* fs.stat(expandHome(path)).pipe(
      Effect.mapError((error) =>
        new UsageError({ message: `--${flag}: cannot read ${path}: ${error.message}` })
      )
    )
    if (info.type !== "File") {
      return yield* new UsageError({ message: `--${flag}: ${path} is not a regular file (${info.type})` })
    }
    if (Number(info.size) > maxFileBytes) {
      return yield* new UsageError({ message: `--${flag}: ${path} is larger than ${maxFileBytes} bytes` })
    }
  })

// A file the library opens later (a key, known_hosts, the ssh config) may be missing (known_hosts
// is created on first use), but if it is there it must be a regular file: the library's read of
// a FIFO would wait forever.
const noSpecialFile = (flag: string, path: string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const info = yield* Effect.option(fs.stat(expandHome(path)))
    if (Option.isSome(info) && info.value.type !== "File") {
      return yield* new UsageError({
        message: `--${flag}: ${path} is not a regular file (${info.value.type})`
      })
    }
  })

const readText = (flag: string, path: string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    yield* regularFile(flag, path)
    return yield* fs.readFileString(expandHome(path)).pipe(
      Effect.mapError((error) =>
        new UsageError({ message: `--${flag}: cannot read ${path}: ${error.message}` })
      )
    )
  })

// The Host entries of an ssh config that name one host each (no wildcard, no negation).
const configHosts = (text: string, pattern: string): Array<string> => {
  const found: Array<string> = []
  for (const block of SshConfig.parse(text).blocks) {
    if (!Array.isArray(block.patterns)) continue
    for (const name of block.patterns as ReadonlyArray<string>) {
      if (/[*?!]/.test(name) || found.includes(name)) continue
      if (SshConfig.hostMatches([pattern], name)) found.push(name)
    }
  }
  return found
}

/** The hosts of `-H`, `--hosts-file` and `--ssh-config-hosts`, in that order, each once. */
export const resolveHosts = (shared: Shared) =>
  Effect.gen(function*() {
    const hosts: Array<string> = []
    if (Option.isSome(shared.hosts)) hosts.push(...splitHosts(shared.hosts.value))
    if (Option.isSome(shared.hostsFile)) {
      const content = yield* readText("hosts-file", shared.hostsFile.value)
      for (const line of content.split("\n")) {
        const host = line.replace(/#.*$/, "").trim()
        if (host.length > 0) hosts.push(host)
      }
    }
    if (Option.isSome(shared.sshConfigHosts)) {
      const file = Option.getOrElse(shared.sshConfig, () => "~/.ssh/config")
      const found = configHosts(yield* readText("ssh-config-hosts", file), shared.sshConfigHosts.value)
      if (found.length === 0) {
        return yield* new UsageError({
          message: `--ssh-config-hosts: no Host entry of ${file} matches ${shared.sshConfigHosts.value}`
        })
      }
      hosts.push(...found)
    }
    return hosts.filter((host, index) => hosts.indexOf(host) === index)
  })
