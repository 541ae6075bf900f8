/**
 * The `rsync` command line for a connection target, and rsync's exit codes in words.
 *
 * rsync runs the system `ssh`, so the connection settings resolved for ssh2 (user, address,
 * port, key, known_hosts and host key policy, jump hosts) are handed to OpenSSH as options, quoted
 * for the two parsers they go through (rsync's split of `-e`, then ssh's option parsing).
 */
import type { Target } from "../../Ssh.ts"
import { join } from "../command/shell.ts"

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

/**
 * What rsync's failure means, from its exit code and what it printed. rsync does not always wait
 * for its ssh: when ssh gives up before the remote rsync said anything (a host key refused, a
 * login failed), rsync exits with 12 or 255 depending on which of them ends first, so a 12 with
 * nothing received is ssh's failure too.
 */
export const explainFailure = (code: number, stderr: string): string =>
  code === 12 && stderr.includes("(0 bytes received so far)") ? rsyncExitCodes[255]! : explainExit(code)

/** `host` as OpenSSH and rsync want it: an IPv6 address in brackets. */
export const bracketHost = (host: string): string =>
  host.includes(":") && !host.startsWith("[") ? `[${host}]` : host

/**
 * One word of rsync's `-e` string. rsync splits that string itself (main.c, `do_cmd`), not a
 * shell: it splits at spaces, single quotes keep everything literal, a backslash is an ordinary
 * character, and a single quote is written as `'"'"'`. So a word is single-quoted unless it is
 * made only of characters that mean nothing to it.
 */
const rsyncWord = (word: string): string =>
  /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'"'"'`)}'`

/**
 * A file path as a value of an OpenSSH option (`-o UserKnownHostsFile=...`): ssh splits option
 * values into words (a known_hosts setting may name several files), honouring double quotes and
 * backslash escapes, then expands `%` tokens in the names. So the path is double-quoted, `\` and
 * `"` escaped, and `%` doubled. `${VAR}` is also expanded by ssh, with no escape: a path holding
 * it is refused by {@link unsafeTarget} before anything runs.
 */
const sshPathValue = (file: string): string => `"${file.replaceAll("%", "%%").replace(/[\\"]/g, "\\$&")}"`

/**
 * The ProxyCommand (expanded) of each hop that has one, the target or a jump host: a jump host
 * reached by its own ProxyCommand is reached so by rsync's ssh too, as by the SSH operations.
 */
export type ProxyCommands = ReadonlyMap<Target, string>

/** The words of an `ssh` command for `target`, each exactly as ssh must receive it. */
const sshWords = (
  target: Target,
  connectTimeoutSeconds: number,
  proxyCommands: ProxyCommands
): Array<string> => {
  const proxyCommand = proxyCommands.get(target)
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
    // The first file is the one a new key is written to; ssh checks them all, as the library does.
    `UserKnownHostsFile=${
      [target.knownHostsFile, ...(target.otherKnownHostsFiles ?? [])].map(sshPathValue).join(" ")
    }`,
    "-o",
    // The SSH operations read no system-wide known_hosts; neither does rsync's ssh.
    "GlobalKnownHostsFile=/dev/null",
    "-o",
    // Never rewrites known_hosts behind the back of the other operations.
    "UpdateHostKeys=no",
    "-o",
    `StrictHostKeyChecking=${target.hostKeyPolicy === "strict" ? "yes" : "accept-new"}`,
    "-o",
    `ConnectTimeout=${Math.max(1, Math.ceil(connectTimeoutSeconds))}`
  ]
  if (target.keyFile !== undefined) {
    words.push("-o", `IdentityFile=${sshPathValue(target.keyFile)}`, "-o", "IdentitiesOnly=yes")
  }
  if (proxyCommand !== undefined) {
    // Already expanded for this target, as the SSH operations connect through it; ssh would
    // expand `%` again, so they are doubled. It wins over a gateway, there as here.
    words.push("-o", `ProxyCommand=${proxyCommand.replaceAll("%", "%%")}`)
  } else if (target.gateway !== undefined) {
    // Not `-J`: the ssh that `-J` starts for the jump host gets none of these options, so it
    // would check the jump host's key against ~/.ssh/known_hosts. ProxyCommand runs an ssh
    // with the jump host's own options; it is a shell command line whose `%` tokens the outer
    // ssh expands (so the inner command's own `%` are doubled once more).
    const inner = sshWords(target.gateway, connectTimeoutSeconds, proxyCommands).map((word) =>
      word.replaceAll("%", "%%")
    )
    words.push("-o", `ProxyCommand=${join([...inner, "-W", "[%h]:%p", "--", target.gateway.host])}`)
  }
  return words
}

/**
 * The `ssh` command rsync runs (`-e`), as one string of words quoted for rsync's own splitting
 * ({@link rsyncWord}); file names are quoted once more for ssh's option parsing
 * ({@link sshPathValue}), so that ssh checks host keys against exactly the known_hosts file and
 * policy that the SSH operations use, whatever its name holds (spaces, quotes, `%`, unicode),
 * for the target and for every jump host; a hop's ProxyCommand (expanded) is its route when given.
 */
export const sshCommand = (
  target: Target,
  connectTimeoutSeconds: number,
  proxyCommands: ProxyCommands = new Map()
): string => sshWords(target, connectTimeoutSeconds, proxyCommands).map(rsyncWord).join(" ")

/** Why ssh could not be given the files of `target` (or of its jump hosts) exactly, if so. */
export const unsafeTarget = (target: Target): string | undefined => {
  for (let hop: Target | undefined = target; hop !== undefined; hop = hop.gateway) {
    for (const file of [hop.knownHostsFile, ...(hop.otherKnownHostsFiles ?? []), hop.keyFile]) {
      if (file?.includes("${") === true) {
        return `${file} holds "\${", which ssh expands as an environment variable in file names; rename it`
      }
    }
  }
  return undefined
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
