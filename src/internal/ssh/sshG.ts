/**
 * Asks the OpenSSH client how it would connect to a host: `ssh -G`, which evaluates the config
 * files as `ssh` itself does (`Include`, `Match` including `exec`, canonicalization, wildcards and
 * negations, the system-wide file) and prints the result, one lowercase `keyword value` line per
 * option, defaults included. The spawn is the only callback here and becomes an Effect once.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { spawn } from "node:child_process"
import * as path from "node:path"
import { SettingsError } from "../../Errors.ts"
import * as Files from "../local/files.ts"
import type { Options } from "./config.ts"

/**
 * `ssh -G` runs the config's `Match exec` commands, which may hang: beyond this the config is
 * reported as unusable rather than waited for.
 */
export const timeout: Duration.Duration = Duration.seconds(10)

/** How long a refusal waits for the rest of ssh's stderr once ssh has exited. */
const stderrGraceMillis = 200

/** The end of ssh's stderr kept for the message: where its reason is. */
const stderrKeep = 4_096

/** Beyond this much stderr, it is no longer read (see `run`). */
const stderrReadLimit = 1024 * 1024

/** `ssh -G` prints a few kilobytes; far more is no answer to wait for. */
const outputLimit = 16 * 1024 * 1024

/** The `ssh` found on `PATH`, as OpenSSH's own programs find it; `undefined` when there is none. */
export const findSsh = (pathVariable: string | undefined): string | undefined => {
  for (const dir of (pathVariable ?? "").split(path.delimiter)) {
    if (dir === "") continue
    const candidate = path.join(dir, "ssh")
    if (Files.Sync.exists(candidate)) return candidate
  }
  return undefined
}

/**
 * Parses `ssh -G`'s output: each keyword (lowercased) with its values, one per line in the order
 * printed, so keywords ssh prints several times (`identityfile`, `certificatefile`, forwards)
 * keep every value.
 */
export const parseOutput = (text: string): Options => {
  const options = new Map<string, Array<string>>()
  for (const line of text.split("\n")) {
    const match = /^\s*(\S+)\s*(.*?)\s*$/.exec(line)
    if (match === null) continue
    const keyword = (match[1] ?? "").toLowerCase()
    const list = options.get(keyword)
    if (list === undefined) options.set(keyword, [match[2] ?? ""])
    else list.push(match[2] ?? "")
  }
  return options
}

/** What to ask `ssh -G`: the host as written, and the user and port given in code, if any. */
export interface Query {
  readonly ssh: string
  /** `undefined` for ssh's own files (`~/.ssh/config`, then `/etc/ssh/ssh_config`). */
  readonly configFile: string | undefined
  readonly host: string
  readonly user: string | undefined
  readonly port: number | undefined
}

/**
 * The arguments: the user and port go to ssh as `-l`/`-p` so that `Match user`, `%r` and `%p`
 * see them as they would for `ssh -l user -p port host`.
 */
export const argumentsOf = (query: Query): ReadonlyArray<string> => [
  "-G",
  ...(query.configFile === undefined ? [] : ["-F", query.configFile]),
  ...(query.user === undefined ? [] : ["-l", query.user]),
  ...(query.port === undefined ? [] : ["-p", String(query.port)]),
  "--",
  query.host
]

const failure = (query: Query, detail: string) =>
  new SettingsError({
    setting: "sshConfigFile",
    value: query.configFile ?? "~/.ssh/config",
    detail
  })

/**
 * Runs `ssh -G` for `query`, within {@link timeout}. Fails with `SettingsError` naming the config
 * file and ssh's own message when ssh refuses the config (a syntax error, a bad owner), cannot
 * be started, or does not answer in time. Interrupting it kills ssh and whatever a `Match exec`
 * started (they share a process group).
 */
export const run = (query: Query): Effect.Effect<Options, SettingsError> =>
  Effect.callback<string, SettingsError>((resume) => {
    const child = spawn(query.ssh, argumentsOf(query), {
      stdio: ["ignore", "pipe", "pipe"],
      // Its own process group, so that stopping it also stops a `Match exec` command.
      detached: true,
      env: process.env
    })
    const out: Array<Buffer> = []
    let outBytes = 0
    // Only the end of stderr is kept: a `Match exec` command writes there, as much as it likes.
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => {
      outBytes += chunk.length
      if (outBytes <= outputLimit) out.push(chunk)
      else {
        resume(Effect.fail(failure(query, `\`ssh -G ${query.host}\` printed more than ${outputLimit} bytes`)))
        stop()
      }
    })
    child.stderr.setEncoding("utf8")
    let errChars = 0
    child.stderr.on("data", (text: string) => {
      stderr = (stderr + text).slice(-stderrKeep)
      // No ssh says this much: left unread, the writer blocks until the time limit stops it,
      // rather than this process spending its time and memory reading.
      errChars += text.length
      if (errChars > stderrReadLimit) child.stderr.pause()
    })
    // ssh and whatever a `Match exec` started (they share a process group).
    function stop() {
      const pid = child.pid
      if (child.exitCode !== null || child.signalCode !== null || pid === undefined) return
      try {
        process.kill(-pid, "SIGKILL")
      } catch {
        // ESRCH: it ended in between.
      }
    }
    child.on(
      "error",
      (error) => resume(Effect.fail(failure(query, `could not run ${query.ssh} -G: ${error.message}`)))
    )
    // Done once ssh has exited and its output is read. Not on `close`, which also waits for
    // stderr: a `Match exec` command that leaves a process behind (`cmd &`) hands it ssh's
    // stderr, and would hold the answer until the timeout although ssh answered at once.
    let ending: { readonly code: number | null; readonly signal: string | null } | undefined
    let outEnded = false
    let errEnded = false
    let grace: ReturnType<typeof setTimeout> | undefined
    const settle = () => {
      if (ending === undefined || !outEnded) return
      if (ending.code === 0) return resume(Effect.succeed(Buffer.concat(out).toString("utf8")))
      // A refusal's reason is on stderr: read to its end, or what came within a moment.
      if (!errEnded && grace === undefined) {
        grace = setTimeout(() => {
          errEnded = true
          settle()
        }, stderrGraceMillis)
        return
      }
      if (!errEnded) return
      if (grace !== undefined) clearTimeout(grace)
      resume(Effect.fail(failure(
        query,
        `\`ssh -G ${query.host}\` refused it (${ending.signal ?? `exit ${ending.code}`}): ${
          stderr.trim() || "no message"
        }`
      )))
    }
    child.on("exit", (code, signal) => {
      ending = { code, signal }
      settle()
    })
    child.stdout.on("close", () => {
      outEnded = true
      settle()
    })
    child.stderr.on("close", () => {
      errEnded = true
      settle()
    })
    return Effect.sync(() => {
      if (grace !== undefined) clearTimeout(grace)
      stop()
    })
  }).pipe(
    Effect.timeoutOrElse({
      duration: timeout,
      orElse: () =>
        Effect.fail(failure(
          query,
          `\`ssh -G ${query.host}\` did not answer within ${
            Duration.format(timeout)
          } (a \`Match exec\` command that hangs?)`
        ))
    }),
    Effect.map(parseOutput)
  )
