/**
 * Host key checking against an OpenSSH `known_hosts` file: plain and hashed (`|1|salt|hash`)
 * host entries, `[host]:port` for ports other than 22, comma-separated and wildcard patterns,
 * `@revoked` keys and `@cert-authority` lines.
 *
 * A `@cert-authority` line cannot be honoured: ssh2 neither asks for nor parses the
 * `*-cert-v01@openssh.com` host key types, so no host certificate ever reaches the check. Such a
 * line is still read, so that a host trusted only through it is refused with that reason rather
 * than taken for an unknown host (and, under `accept-new`, silently trusted on first use).
 */
import { createHmac } from "node:crypto"
import type { ServerHostKeyAlgorithm } from "ssh2"
import { hostPort } from "../settings/hostString.ts"

/**
 * The name a host is known by: host names are case-insensitive, and OpenSSH lower-cases them
 * before it looks them up or records them. A hashed entry can only match the exact bytes it was
 * made from, so `LocalHost` must be looked up as `localhost`, or a changed key would look new.
 */
const knownName = (host: string, port: number): string => hostPort(host.toLowerCase(), port)

/** One key line of a known_hosts file. */
export interface Entry {
  /** The file the line is in, when the entries of several files are checked together. */
  readonly file?: string | undefined
  readonly line: number
  readonly marker: "revoked" | "cert-authority" | undefined
  readonly patterns: string
  /** Whether the host field names a `host` or `[host]:port`; compiled once, at parse time. */
  readonly matches: (name: string) => boolean
  readonly keyType: string
  readonly key: string
}

/** The verdict on a host key. */
export type Verdict =
  | { readonly _tag: "Known" }
  | { readonly _tag: "Unknown" }
  | {
    readonly _tag: "Changed"
    readonly file?: string | undefined
    readonly line: number
    readonly keyType: string
  }
  | { readonly _tag: "Revoked"; readonly file?: string | undefined; readonly line: number }
  /** No plain key is recorded for the host, but a `@cert-authority` line (at `line`) covers it. */
  | { readonly _tag: "CertificateAuthority"; readonly file?: string | undefined; readonly line: number }

/** Parses known_hosts text into key entries; malformed lines are skipped, as OpenSSH does. */
export const parse = (text: string): ReadonlyArray<Entry> => {
  const entries: Array<Entry> = []
  const lines = text.split("\n")
  for (let i = 0; i < lines.length; i++) {
    const trimmed = (lines[i] ?? "").trim()
    if (trimmed === "" || trimmed.startsWith("#")) continue
    const fields = trimmed.split(/\s+/)
    let marker: Entry["marker"]
    if (fields[0]?.startsWith("@")) {
      // Markers are case-sensitive in OpenSSH, and a line with an unknown one is skipped.
      const tag = fields.shift()
      if (tag === "@revoked") marker = "revoked"
      else if (tag === "@cert-authority") marker = "cert-authority"
      else continue
    }
    const [patterns, keyType, key] = fields
    if (patterns === undefined || keyType === undefined || key === undefined) continue
    entries.push({ line: i + 1, marker, patterns, matches: compile(patterns), keyType, key })
  }
  return entries
}

/** A matcher for one host pattern: plain names compare as strings, wildcards as a RegExp. */
const compilePattern = (pattern: string): (name: string) => boolean => {
  if (!/[*?]/.test(pattern)) {
    const lower = pattern.toLowerCase()
    return (name) => name.toLowerCase() === lower
  }
  const regexp = new RegExp(
    "^" + pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replaceAll("*", ".*").replaceAll("?", ".") + "$",
    "i"
  )
  return (name) => regexp.test(name)
}

/** Compiles an entry's host field: a hashed name, or comma-separated (negated) patterns. */
const compile = (patterns: string): (name: string) => boolean => {
  if (patterns.startsWith("|1|")) {
    const [, , salt = "", hash = ""] = patterns.split("|")
    const key = Buffer.from(salt, "base64")
    return (name) => createHmac("sha1", key).update(name).digest("base64") === hash
  }
  const positive: Array<(name: string) => boolean> = []
  const negative: Array<(name: string) => boolean> = []
  for (const pattern of patterns.split(",")) {
    if (pattern.startsWith("!")) negative.push(compilePattern(pattern.slice(1)))
    else positive.push(compilePattern(pattern))
  }
  return (name) => !negative.some((m) => m(name)) && positive.some((m) => m(name))
}

/**
 * The SSH wire form of a public key starts with its type name; known_hosts stores the type and
 * the base64 of the whole blob.
 */
export const keyType = (blob: Uint8Array): string => {
  const buffer = Buffer.from(blob)
  if (buffer.length < 4) return "unknown"
  const length = buffer.readUInt32BE(0)
  return buffer.subarray(4, 4 + length).toString("latin1")
}

/** Where a verdict's line is: its file only when the entries say. */
const at = (entry: Entry): { readonly file?: string; readonly line: number } =>
  entry.file === undefined ? { line: entry.line } : { file: entry.file, line: entry.line }

/** Checks the key a server presented (its wire blob) for `host` and `port`. */
export const check = (
  entries: ReadonlyArray<Entry>,
  host: string,
  port: number,
  blob: Uint8Array
): Verdict => {
  const name = knownName(host, port)
  const type = keyType(blob)
  const encoded = Buffer.from(blob).toString("base64")
  let known = false
  let changed: Verdict | undefined
  let otherType: Verdict | undefined
  let authority: Verdict | undefined
  for (const entry of entries) {
    if (!entry.matches(name)) continue
    // Revocation wins over everything, wherever the line is: checked before any early answer.
    if (entry.marker === "revoked") {
      if (entry.key === encoded) return { _tag: "Revoked", ...at(entry) }
      continue
    }
    if (entry.marker === "cert-authority") {
      authority ??= { _tag: "CertificateAuthority", ...at(entry) }
      continue
    }
    if (entry.key === encoded) known = true
    else if (entry.keyType === type) {
      changed ??= { _tag: "Changed", ...at(entry), keyType: type }
    } else otherType ??= { _tag: "Changed", ...at(entry), keyType: type }
  }
  // A matching line anywhere wins: OpenSSH accepts a host listed with several keys of one type.
  if (known) return { _tag: "Known" }
  // A host known only by keys of other types is not new: like OpenSSH, refuse the key rather
  // than let whoever answers pick a type we have no record of (the connection first asks for
  // the recorded types, see hostKeyAlgorithms, so a genuine server presents one of them).
  // A recorded plain key that differs is reported as such even when a CA also covers the host:
  // the mismatch is real, and the record is what the user can check and fix.
  return changed ?? otherType ?? authority ?? { _tag: "Unknown" }
}

// ssh2's host key algorithms in its default order of preference; RSA keys serve three of them.
const defaultAlgorithms: ReadonlyArray<ServerHostKeyAlgorithm> = [
  "ssh-ed25519",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "rsa-sha2-512",
  "rsa-sha2-256",
  "ssh-rsa"
]

const algorithmsOf = (keyType: string): ReadonlyArray<string> =>
  keyType === "ssh-rsa" ? ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] : [keyType]

/**
 * The host key algorithms to offer for `host` and `port`: those of its recorded keys first,
 * as OpenSSH orders them, so that a server with several host keys presents one we can check.
 * `undefined` (ssh2's defaults) for a host with no recorded key.
 */
export const hostKeyAlgorithms = (
  entries: ReadonlyArray<Entry>,
  host: string,
  port: number
): Array<ServerHostKeyAlgorithm> | undefined => {
  const name = knownName(host, port)
  const recorded = new Set<string>()
  for (const entry of entries) {
    if (entry.marker === undefined && entry.matches(name)) {
      for (const algorithm of algorithmsOf(entry.keyType)) recorded.add(algorithm)
    }
  }
  const first = defaultAlgorithms.filter((a) => recorded.has(a))
  return first.length === 0 ? undefined : [...first, ...defaultAlgorithms.filter((a) => !recorded.has(a))]
}

/** The line to append for a newly accepted key. */
export const entryLine = (host: string, port: number, blob: Uint8Array): string =>
  `${knownName(host, port)} ${keyType(blob)} ${Buffer.from(blob).toString("base64")}\n`
