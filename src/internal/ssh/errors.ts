/**
 * How the SSH adapter names what went wrong: ssh2's and the socket's errors sorted into a
 * `ConnectionError` reason, with the target (and the hop of a jump host) they concern.
 */
import * as Duration from "effect/Duration"
import { ConnectionError, type ConnectionErrorReason, type SettingsError } from "../../Errors.ts"
import type * as KnownHosts from "./knownHosts.ts"
import type { Target } from "./port.ts"

export const connectionError = (
  target: Target,
  reason: ConnectionErrorReason,
  detail: string,
  hop?: string
) =>
  new ConnectionError({
    host: target.label,
    port: target.port,
    user: target.user,
    reason,
    detail,
    ...(hop === undefined ? {} : { hop })
  })

/** `host:port`, an IPv6 address in brackets. */
export const hostPort = (host: string, port: number): string =>
  host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`

/** A gateway as a hop in errors: `user@gateway:port`. */
export const hopOf = (gateway: Target): string => `${gateway.user}@${hostPort(gateway.label, gateway.port)}`

/** The link from a gateway to the next host, as a hop in errors: `user@gateway:port -> host:port`. */
export const linkOf = (gateway: Target, to: Target): string =>
  `${hopOf(gateway)} -> ${hostPort(to.host, to.port)}`

const ordinal = (n: number): string => {
  const tens = n % 100
  const suffix = tens >= 11 && tens <= 13 ? "th" : ["th", "st", "nd", "rd"][n % 10] ?? "th"
  return `${n}${suffix}`
}

/**
 * `error` for `target`, its detail starting with the jump host that failed when its `hop` names
 * one: `jump host bastion-2 (2nd of 3): ...`. The hop `a` is jump host `a` itself; the link
 * `a -> b` is `b`, reached through `a` (its TCP forward or its handshake failed). A failure of
 * the last link is the target's own, named by the error's host.
 */
export const namingHop = (target: Target, error: ConnectionError): ConnectionError => {
  if (error.hop === undefined) return error
  const hops: Array<Target> = []
  for (let g = target.gateway; g !== undefined; g = g.gateway) hops.unshift(g)
  let failed: number | undefined
  for (const [i, hop] of hops.entries()) {
    if (error.hop === hopOf(hop)) failed = i
    else if (i + 1 < hops.length && error.hop === linkOf(hop, hops[i + 1]!)) failed = i + 1
  }
  if (failed === undefined) return error
  const name = `jump host ${hops[failed]!.label}${
    hops.length === 1 ? "" : ` (${ordinal(failed + 1)} of ${hops.length})`
  }`
  return new ConnectionError({
    host: error.host,
    port: error.port,
    user: error.user,
    reason: error.reason,
    detail: `${name}: ${error.detail}`,
    hop: error.hop
  })
}

/**
 * `connectTimeout` in milliseconds for ssh2's `readyTimeout`, where 0 means none: so does a
 * duration too long for a Node timer (`Duration.infinity`), which would otherwise fire at once.
 */
export const timeoutMillis = (duration: Duration.Duration): number => {
  const millis = Duration.toMillis(duration)
  return Number.isFinite(millis) && millis < 2 ** 31 ? Math.max(0, Math.ceil(millis)) : 0
}

export const via = (target: Target): string => {
  const proxy = target.proxyCommand?.trim()
  return (target.host !== target.label ? ` (${target.host})` : "") +
    (proxy !== undefined && proxy !== "" && proxy.toLowerCase() !== "none"
      ? ` through the ProxyCommand \`${proxy}\``
      : target.gateway !== undefined
      ? ` through ${target.gateway.user}@${target.gateway.label}`
      : "")
}

/** Whether a Node error code says this process or machine has no file descriptor left. */
export const isOutOfDescriptors = (code: string): boolean => code === "EMFILE" || code === "ENFILE"

/**
 * A connection given up for want of a file descriptor. The limit is this machine's, not the
 * network's or a setting's: say so, and what to change.
 */
export const outOfDescriptors = (target: Target, code: string, what: string): ConnectionError =>
  connectionError(
    target,
    "disconnected",
    `${what}: this machine ran out of file descriptors (${code}) before connecting; ` +
      "raise the limit (`ulimit -n`) or run fewer hosts at once (`poolSize`)"
  )

/** Sorts an ssh2 or socket error into a reason. */
export const classify = (
  target: Target,
  error: Error & { code?: unknown; level?: unknown }
): ConnectionError => {
  const code = typeof error.code === "string" ? error.code : ""
  const message = error.message
  const detail = `${message}${via(target)}`
  if (isOutOfDescriptors(code)) return outOfDescriptors(target, code, `${message}${via(target)}`)
  if (code === "ECONNREFUSED" || /Connection refused/i.test(message)) {
    return connectionError(target, "refused", detail)
  }
  if (code === "ENOTFOUND" || code === "EAI_AGAIN" || code === "EAI_NONAME") {
    return connectionError(target, "unknown-host", detail)
  }
  if (
    code === "ETIMEDOUT" || code === "EHOSTUNREACH" || code === "ENETUNREACH" ||
    error.level === "client-timeout" ||
    /timed out|timeout/i.test(message)
  ) {
    return connectionError(target, "timeout", detail)
  }
  if (error.level === "client-authentication" || /authentication methods failed/i.test(message)) {
    return connectionError(target, "authentication", detail)
  }
  // A session (command, SFTP) refused on a live connection: OpenSSH answers "open failed" once
  // MaxSessions sessions are open on it. The connection itself is fine.
  if (/channel open failure/i.test(message)) {
    return connectionError(
      target,
      "channel-refused",
      `the server refused a new session on the connection (${message})${via(target)}`
    )
  }
  return connectionError(target, "disconnected", detail)
}

/** Sorts the failure of `gateway` to open a TCP connection to `to`, as OpenSSH reports it. */
export const forwardError = (gateway: Target, to: Target, error: Error): ConnectionError => {
  const message = error.message
  const link = linkOf(gateway, to)
  const detail = `${gateway.label} could not connect to ${hostPort(to.host, to.port)} (${message})`
  if (/refused/i.test(message)) return connectionError(to, "refused", detail, link)
  if (/not known|name resolution|no address|nodename/i.test(message)) {
    return connectionError(to, "unknown-host", detail, link)
  }
  if (/timed out|unreachable|no route/i.test(message)) return connectionError(to, "timeout", detail, link)
  if (/prohibited|open failed/i.test(message)) {
    return connectionError(
      to,
      "refused",
      `${detail}: the gateway does not forward connections (AllowTcpForwarding may be off on it)`,
      link
    )
  }
  return connectionError(to, "disconnected", detail, link)
}

/** A gateway's failure inside an attempt at the connection behind it: never retried there. */
export interface GatewayFailed {
  readonly _tag: "GatewayFailed"
  readonly error: ConnectionError | SettingsError
}

/** Failures worth another attempt: the host may be booting, restarting or briefly unreachable. */
export const isTransient = (error: ConnectionError | SettingsError): boolean =>
  error._tag === "ConnectionError" &&
  (error.reason === "refused" || error.reason === "timeout" || error.reason === "disconnected")

export const hostKeyError = (target: Target, verdict: KnownHosts.Verdict): ConnectionError => {
  const name = `${target.host}${target.port === 22 ? "" : ` port ${target.port}`}`
  const file = "file" in verdict && verdict.file !== undefined ? verdict.file : target.knownHostsFile
  const files = [target.knownHostsFile, ...(target.otherKnownHostsFiles ?? [])].join(", ")
  switch (verdict._tag) {
    case "Changed":
      return connectionError(
        target,
        "host-key",
        `the ${verdict.keyType} host key of ${name} differs from the one recorded in ${file} line ${verdict.line}`
      )
    case "Revoked":
      return connectionError(
        target,
        "host-key",
        `the host key of ${name} is marked @revoked in ${file} line ${verdict.line}`
      )
    case "CertificateAuthority":
      return connectionError(
        target,
        "host-key",
        `${name} is trusted in ${file} line ${verdict.line} only through a certificate ` +
          "authority (@cert-authority), and the SSH library in use (ssh2) cannot verify host certificates " +
          "(it does not support the *-cert-v01@openssh.com key types); add the host's plain key to " +
          `${target.knownHostsFile} after checking it (for example \`ssh-keyscan -t ed25519${
            target.port === 22 ? "" : ` -p ${target.port}`
          } ${target.host} >> ${target.knownHostsFile}\`), or reach this host with the OpenSSH client`
      )
    default:
      return connectionError(
        target,
        "host-key",
        `the host key of ${name} is not in ${files} and hostKeyPolicy is "strict"`
      )
  }
}
