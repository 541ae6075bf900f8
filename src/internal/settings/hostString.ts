/**
 * Host strings as users write them: `host`, `user@host`, `host:port`, `user@host:port`,
 * `[v6addr]`, `[v6addr]:port`, `user@[v6addr]:port`. A bare IPv6 address (`::1`) is taken as a
 * host without a port, since its colons cannot be told apart from a port separator otherwise.
 */
import * as Result from "effect/Result"
import { isIPv6 } from "node:net"
import { SettingsError } from "../../Errors.ts"

/** The parts of a host string; `user` and `port` are `undefined` when not written. */
export interface HostString {
  readonly user: string | undefined
  readonly host: string
  readonly port: number | undefined
}

// Letters, digits, dots, dashes and underscores cover DNS names, IPv4 and ssh_config aliases;
// anything else (spaces, slashes, quotes) is a typo or an injection attempt.
const hostName = /^[A-Za-z0-9_.-]+$/
const ipv6 = /^[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?$/
// The characters alone let through `a:b:c`, which is no address (and would be looked up in DNS).
const isIpv6 = (text: string): boolean => ipv6.test(text) && isIPv6(text)
const userName = /^[A-Za-z0-9_.][A-Za-z0-9_.@-]*\$?$/
const userAdvice = "a user name is letters, digits, `.`, `_`, `-` and `@`, not starting with `-` or `@`"

/** Whether `text` is a user name as host strings (and the `user` setting) accept them. */
export const isUserName = (text: string): boolean => userName.test(text)

const invalid = (setting: string, value: string, detail: string) =>
  Result.fail(new SettingsError({ setting, value, detail }))

/** Parses a port written as decimal digits, 1..65535. */
export const parsePort = (text: string, setting = "port"): Result.Result<number, SettingsError> => {
  if (!/^\d{1,5}$/.test(text)) return invalid(setting, text, "a port is a number from 1 to 65535")
  const port = Number(text)
  if (port < 1 || port > 65535) return invalid(setting, text, "a port is a number from 1 to 65535")
  return Result.succeed(port)
}

/** The error of an operation run with no `host` set: what to set, and how. */
export const missingHost = (): SettingsError =>
  new SettingsError({
    setting: "host",
    value: "",
    detail: "no host to run on; set it with Settings.settings({ host: \"user@host\" }) or the host option"
  })

/**
 * Parses a host string. Fails with a `SettingsError` naming `setting` (`host` by default, or
 * `port` for a bad port) when it is empty or malformed. Not cached: a parse takes under 1 µs.
 */
export const parseHostString = (
  text: string,
  setting = "host"
): Result.Result<HostString, SettingsError> => {
  const trimmed = text.trim()
  if (trimmed === "") {
    return invalid(setting, text, "no host given; set it to `host`, `user@host` or `user@host:port`")
  }
  // The user is everything up to the last `@` outside brackets: user names may hold `@` (AD domains).
  const bracket = trimmed.indexOf("[")
  const at = bracket === -1 ? trimmed.lastIndexOf("@") : trimmed.lastIndexOf("@", bracket)
  let user: string | undefined
  let rest = trimmed
  if (at !== -1) {
    user = trimmed.slice(0, at)
    rest = trimmed.slice(at + 1)
    if (!userName.test(user)) return invalid(setting, text, `\`${user}\` is not a user name; ${userAdvice}`)
  }
  if (rest.startsWith("[")) {
    const close = rest.indexOf("]")
    if (close === -1) return invalid(setting, text, "an IPv6 address opened with `[` needs a closing `]`")
    const host = rest.slice(1, close)
    if (host === "" || !isIpv6(host)) {
      return invalid(
        setting,
        text,
        `\`${host}\` is not an IPv6 address; write \`[v6addr]\` or \`[v6addr]:port\``
      )
    }
    const after = rest.slice(close + 1)
    if (after === "") return Result.succeed({ user, host, port: undefined })
    if (!after.startsWith(":")) {
      return invalid(setting, text, "only `:port` may follow `]`; write `[v6addr]:port`")
    }
    const port = parsePort(after.slice(1), "port")
    return Result.map(port, (p) => ({ user, host, port: p }))
  }
  const colons = rest.split(":").length - 1
  if (colons > 1) {
    if (isIpv6(rest)) return Result.succeed({ user, host: rest, port: undefined })
    return invalid(setting, text, "write an IPv6 address with a port as `[addr]:port`")
  }
  const [host = "", portText] = rest.split(":")
  if (host === "") {
    return invalid(setting, text, "the host name is empty; write `host`, `user@host` or `host:port`")
  }
  if (!hostName.test(host) || host.startsWith("-")) {
    return invalid(
      setting,
      text,
      `\`${host}\` is not a host name; give a DNS name, an IPv4 address or an ssh_config alias (letters, digits, \`.\`, \`-\`, \`_\`), or \`[v6addr]\``
    )
  }
  if (portText === undefined) return Result.succeed({ user, host, port: undefined })
  return Result.map(parsePort(portText, "port"), (port) => ({ user, host, port }))
}

/** Writes a host and port the way known_hosts and messages do: `host` for 22, else `[host]:port`. */
export const hostPort = (host: string, port: number): string => port === 22 ? host : `[${host}]:${port}`
