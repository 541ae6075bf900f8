/**
 * The `rsync` command line for a connection target, and rsync's exit codes in words.
 *
 * rsync runs the system `ssh`, so the connection settings resolved for ssh2 (user, address,
 * port, key, known_hosts and host key policy, jump hosts) are handed to OpenSSH as options.
 */
import type { Target } from "../Ssh.ts"
import { quote } from "./shell.ts"

/** What rsync says its exit codes mean (rsync(1), EXIT VALUES). */
export const rsyncExitCodes: Readonly<Record<number, string>> = {
  1: "syntax or usage error",
  2: "protocol incompatibility",
  3: "errors selecting input/output files, dirs",
  4: "requested action not supported",
  5: "error starting client-server protocol",
  6: "daemon unable to append to log-file",
  10: "error in socket I/O",
  11: "error in file I/O",
  12: "error in rsync protocol data stream",
  13: "errors with program diagnostics",
  14: "error in IPC code",
  20: "received SIGUSR1 or SIGINT",
  21: "some error returned by waitpid()",
  22: "error allocating core memory buffers",
  23: "partial transfer due to error",
  24: "partial transfer due to vanished source files",
  25: "the --max-delete limit stopped deletions",
  30: "timeout in data send/receive",
  35: "timeout waiting for daemon connection",
  127: "rsync (or ssh) not found",
  255: "ssh failed (cannot connect, authenticate or verify the host key)"
}

/** rsync's explanation of an exit code. */
export const explainExit = (code: number): string => rsyncExitCodes[code] ?? `unexpected exit code ${code}`

/** `host` as OpenSSH and rsync want it: an IPv6 address in brackets. */
export const bracketHost = (host: string): string =>
  host.includes(":") && !host.startsWith("[") ? `[${host}]` : host

const jumpSpec = (target: Target): string => {
  const hops: Array<string> = []
  for (let hop: Target | undefined = target; hop !== undefined; hop = hop.gateway) {
    hops.unshift(`${hop.user}@${bracketHost(hop.host)}:${hop.port}`)
  }
  return hops.join(",")
}

/**
 * The `ssh` command rsync runs (`-e`), as one string: rsync splits it into words itself and
 * honours single quotes, so every value is quoted.
 */
export const sshCommand = (target: Target, connectTimeoutSeconds: number): string => {
  const words = [
    "ssh",
    "-F",
    "/dev/null", // the settings below are already resolved from ssh_config; nothing else applies
    "-p",
    String(target.port),
    "-l",
    target.user,
    "-o",
    "BatchMode=yes",
    "-o",
    `UserKnownHostsFile=${target.knownHostsFile}`,
    "-o",
    `StrictHostKeyChecking=${target.hostKeyPolicy === "strict" ? "yes" : "accept-new"}`,
    "-o",
    `ConnectTimeout=${Math.max(1, Math.ceil(connectTimeoutSeconds))}`
  ]
  if (target.keyFile !== undefined) words.push("-i", target.keyFile, "-o", "IdentitiesOnly=yes")
  if (target.gateway !== undefined) words.push("-J", jumpSpec(target.gateway))
  return words.map(quote).join(" ")
}

/**
 * A remote source path as rsync's remote side must get it: with `--protect-args` the remote rsync
 * still expands a path holding `*`, `?` or `[` as a pattern, so in such a path they (and `\\`)
 * are escaped to name only that path. A path without them is taken as it is.
 */
export const literalSource = (path: string): string =>
  /[*?[]/.test(path) ? path.replace(/[*?[\\]/g, "\\$&") : path

/** `user@host:path` for rsync's remote side (the path is sent as is with `--protect-args`). */
export const remoteSpec = (target: Target, path: string): string =>
  `${target.user}@${bracketHost(target.host)}:${path}`
