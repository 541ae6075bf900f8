/**
 * The built-in reader for OpenSSH client config files (`~/.ssh/config`), used when the OpenSSH
 * client is not there to resolve them (`sshG.ts`): `Host` blocks and the keywords in
 * {@link applied}.
 *
 * It follows OpenSSH's rules where they matter: keywords are case-insensitive and may be
 * followed by `=`; the first value found for a keyword wins, across all matching `Host` blocks,
 * in file order; `IdentityFile` accumulates; `Host` patterns use `*`, `?` and `!` (a negated
 * match excludes the host from that block). `Match` blocks and `Include` are not evaluated:
 * {@link lookup} reports them, and {@link unsupported} every other keyword it does not apply.
 */

/** One `Host` (or `Match`) block and its options, keywords in lower case. */
interface Block {
  /** The `Host` patterns, or the `Match` line's criteria with its line number. */
  readonly patterns: ReadonlyArray<string> | { readonly match: string; readonly line: number }
  readonly options: ReadonlyArray<readonly [keyword: string, value: string, line: number]>
}

/** A parsed config file. */
export interface SshConfig {
  readonly blocks: ReadonlyArray<Block>
}

/**
 * The options that apply to a host: each keyword (lower case) with its values, one per
 * directive, in the order they count. The shape of `ssh -G`'s answer, so that both readers feed
 * the same mapping onto a `Target`.
 */
export type Options = ReadonlyMap<string, ReadonlyArray<string>>

/**
 * The keywords the library applies (see README "Connecting"). The built-in reader warns about
 * every other one it meets.
 */
export const applied: ReadonlyArray<string> = [
  "hostname",
  "user",
  "port",
  "identityfile",
  "identitiesonly",
  "identityagent",
  "proxyjump",
  "proxycommand",
  "hostkeyalias",
  "connecttimeout",
  "serveraliveinterval",
  "serveralivecountmax",
  "userknownhostsfile",
  "stricthostkeychecking",
  "forwardagent",
  // Not used to log in (ssh2 has no certificates): named in a warning instead (handshake.ts).
  "certificatefile"
]

/**
 * Something in the file the built-in reader cannot apply to a host. `fatal` when it could change
 * the result (an `Include` or a `Match` in reach of the host): guessing would connect otherwise
 * than `ssh` does.
 */
export interface Problem {
  readonly keyword: string
  readonly line: number
  readonly fatal: boolean
  readonly detail: string
}

/** What the config says about one host. Fields absent from the config are `undefined`. */
export interface HostConfig {
  readonly hostName: string | undefined
  readonly user: string | undefined
  readonly port: string | undefined
  readonly identityFiles: ReadonlyArray<string>
  /** `CertificateFile`, accumulated like `IdentityFile`: read only to say they are not used. */
  readonly certificateFiles: ReadonlyArray<string>
  readonly proxyJump: string | undefined
}

// Splits `Keyword value`, `Keyword=value` and `Keyword = value`; values may be double-quoted.
const splitLine = (line: string): readonly [string, ReadonlyArray<string>] | undefined => {
  const match = /^\s*([A-Za-z][A-Za-z0-9]*)\s*(?:=\s*|\s+)(.*)$/.exec(line)
  if (match === null) return undefined
  const [, keyword = "", rest = ""] = match
  const args: Array<string> = []
  const re = /"([^"]*)"|(\S+)/g
  for (let m = re.exec(rest); m !== null; m = re.exec(rest)) args.push(m[1] ?? m[2] ?? "")
  return [keyword.toLowerCase(), args]
}

/** Parses the text of a config file. Unknown keywords are kept and ignored when resolving. */
export const parse = (text: string): SshConfig => {
  // Options before the first Host line apply to every host, like `Host *`.
  const blocks: Array<
    { patterns: Block["patterns"]; options: Array<readonly [string, string, number]> }
  > = [
    { patterns: ["*"], options: [] }
  ]
  const lines = text.split(/\r?\n/)
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i] ?? ""
    const trimmed = raw.trim()
    if (trimmed === "" || trimmed.startsWith("#")) continue
    const parsed = splitLine(trimmed)
    if (parsed === undefined) continue
    const [keyword, args] = parsed
    if (keyword === "host") {
      blocks.push({ patterns: args, options: [] })
    } else if (keyword === "match") {
      blocks.push({ patterns: { match: args.join(" "), line: i + 1 }, options: [] })
    } else {
      blocks[blocks.length - 1]?.options.push([keyword, args.join(" "), i + 1])
    }
  }
  return { blocks }
}

/**
 * Whether `host` matches a single glob pattern (`*` any run, `?` any one character). ssh's
 * patterns know nothing else, so a general glob library does not fit: `bench/libraries.ts` found
 * picomatch right on 17 of 17 of ssh's cases only with five options set (and then 1.7x slower),
 * and minimatch still reading `[..]` as a class (15 of 17).
 */
const globMatch = (pattern: string, host: string): boolean => {
  const re = new RegExp(
    "^" + pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replaceAll("*", ".*").replaceAll("?", ".") + "$",
    "i"
  )
  return re.test(host)
}

/**
 * Whether a `Host` line's patterns select `host`: at least one positive pattern matches and no
 * negated one does. Patterns may also be comma-separated.
 */
export const hostMatches = (patterns: ReadonlyArray<string>, host: string): boolean => {
  let matched = false
  for (const item of patterns.flatMap((p) => p.split(","))) {
    if (item === "") continue
    if (item.startsWith("!")) {
      if (globMatch(item.slice(1), host)) return false
    } else if (globMatch(item, host)) {
      matched = true
    }
  }
  return matched
}

/** Expands the `%` tokens OpenSSH allows in `HostName`, `IdentityFile` and `ProxyJump`. */
export const expandTokens = (value: string, tokens: Readonly<Record<string, string>>): string =>
  value.replace(/%(.)/g, (whole, key: string) => key === "%" ? "%" : tokens[key] ?? whole)

/** Whether a `Host` block selects `host`; a `Match` block is never evaluated here. */
const appliesTo = (block: Block, host: string): boolean =>
  !("match" in block.patterns) && hostMatches(block.patterns, host)

/**
 * The directives of a file that the built-in reader does not apply, whatever the host: each
 * named with its line, for a warning.
 */
export const unsupported = (config: SshConfig): ReadonlyArray<Problem> =>
  config.blocks.flatMap((block) =>
    block.options.flatMap(([keyword, , line]): ReadonlyArray<Problem> =>
      applied.includes(keyword) || keyword === "include" ? [] : [{
        keyword,
        line,
        fatal: false,
        detail:
          "not applied by the built-in ssh_config reader (install the OpenSSH client to have it resolved by `ssh -G`)"
      }]
    )
  )

/**
 * The options that apply to `host` (the name as the user wrote it), first value winning as in
 * OpenSSH (`IdentityFile` accumulates), `HostName`'s `%h` expanded as `ssh -G` prints it; the
 * other tokens are left for the caller, as `ssh -G` leaves them. `problems` are the `Include`s
 * and `Match` blocks in reach of the host, which this reader does not evaluate: an `Include`
 * at the top level or in a matching `Host` block, a `Match` block setting an option the library
 * applies are fatal; a `Match` block setting none of them, only a warning.
 */
export const lookup = (config: SshConfig, host: string): {
  readonly options: Options
  readonly problems: ReadonlyArray<Problem>
} => {
  const options = new Map<string, Array<string>>()
  const problems: Array<Problem> = []
  for (const block of config.blocks) {
    if ("match" in block.patterns) {
      const fatal = block.options.some(([keyword]) => applied.includes(keyword) || keyword === "include")
      problems.push({
        keyword: "match",
        line: block.patterns.line,
        fatal,
        detail: `\`Match ${block.patterns.match}\` is not evaluated by the built-in ssh_config reader` +
          (fatal ? " and sets options that would change how the host is reached" : "")
      })
      continue
    }
    if (!hostMatches(block.patterns, host)) continue
    for (const [keyword, value, line] of block.options) {
      if (keyword === "include") {
        problems.push({
          keyword,
          line,
          fatal: true,
          detail: `\`Include ${value}\` is not read by the built-in ssh_config reader`
        })
        continue
      }
      const list = options.get(keyword)
      if (list === undefined) options.set(keyword, [value])
      else if (keyword === "identityfile" || keyword === "certificatefile") list.push(value)
    }
  }
  const hostName = options.get("hostname")?.[0]
  if (hostName !== undefined) options.set("hostname", [expandTokens(hostName, { h: host })])
  return { options, problems }
}

/**
 * What the config says about `host` (the name as the user wrote it, before `HostName`).
 * `localUser` and `home` fill the `%u` and `%d` tokens.
 */
export const resolve = (
  config: SshConfig,
  host: string,
  context: { readonly localUser: string; readonly home: string }
): HostConfig => {
  const first = new Map<string, string>()
  const identityFiles: Array<string> = []
  const certificateFiles: Array<string> = []
  for (const block of config.blocks) {
    if (!appliesTo(block, host)) continue
    for (const [keyword, value] of block.options) {
      if (keyword === "identityfile") identityFiles.push(value)
      else if (keyword === "certificatefile") certificateFiles.push(value)
      else if (!first.has(keyword)) first.set(keyword, value)
    }
  }
  const hostName = first.get("hostname")
  const realHost = hostName === undefined ? host : expandTokens(hostName, { h: host, "%": "%" })
  const user = first.get("user")
  const tokens = {
    h: realHost,
    n: host,
    u: context.localUser,
    d: context.home,
    r: user ?? context.localUser
  }
  const proxyJump = first.get("proxyjump")
  return {
    hostName: hostName === undefined ? undefined : realHost,
    user,
    port: first.get("port"),
    identityFiles: identityFiles.filter((f) => f.toLowerCase() !== "none").map((f) =>
      expandTokens(f, tokens)
    ),
    certificateFiles: certificateFiles.filter((f) => f.toLowerCase() !== "none").map((f) =>
      expandTokens(f, tokens)
    ),
    proxyJump: proxyJump === undefined || proxyJump.toLowerCase() === "none"
      ? undefined
      : expandTokens(proxyJump, tokens)
  }
}
