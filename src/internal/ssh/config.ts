/**
 * A small reader for OpenSSH client config files (`~/.ssh/config`), covering what connections
 * need: `HostName`, `User`, `Port`, `IdentityFile` and `ProxyJump`, under `Host` patterns.
 *
 * It follows OpenSSH's rules where they matter: keywords are case-insensitive and may be
 * followed by `=`; the first value found for a keyword wins, across all matching `Host` blocks,
 * in file order; `IdentityFile` accumulates; `Host` patterns use `*`, `?` and `!` (a negated
 * match excludes the host from that block). `Match` blocks and `Include` are not supported:
 * a `Match` block is skipped as a whole.
 */

/** One `Host` (or `Match`) block and its options, keywords in lower case. */
interface Block {
  readonly patterns: ReadonlyArray<string> | "match"
  readonly options: ReadonlyArray<readonly [keyword: string, value: string, line: number]>
}

/** A parsed config file. */
export interface SshConfig {
  readonly blocks: ReadonlyArray<Block>
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
    { patterns: ReadonlyArray<string> | "match"; options: Array<readonly [string, string, number]> }
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
      blocks.push({ patterns: "match", options: [] })
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
const expandTokens = (value: string, tokens: Readonly<Record<string, string>>): string =>
  value.replace(/%(.)/g, (whole, key: string) => key === "%" ? "%" : tokens[key] ?? whole)

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
    if (block.patterns === "match" || !hostMatches(block.patterns, host)) continue
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
