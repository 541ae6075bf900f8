/**
 * Connecting through a `ProxyCommand`, as OpenSSH does: the command line, its `%` tokens
 * expanded, runs under `/bin/sh -c "exec ..."`, and the SSH connection speaks over its standard
 * input and output. The command runs in a process group of its own, so that whatever it starts
 * is stopped with it: SIGTERM to the group, SIGKILL after a grace, when the connection closes,
 * fails or is given up.
 */
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as ChildProcess from "node:child_process"
import { Duplex } from "node:stream"
import { type ConnectionError, SettingsError } from "../../Errors.ts"
import { connectionError } from "./errors.ts"
import type { Target } from "./port.ts"

/** Between SIGTERM and SIGKILL to the command's process group. */
const killGraceMillis = 1_000

/** How long a failed handshake waits to learn whether the command exited (and why). */
const exitGraceMillis = 500

/** The stderr kept for messages: the end of it, where the reason usually is. */
const stderrKeep = 4_096

/** The ProxyCommand of `target`, if it has one; `none` is none, as in ssh_config. */
export const proxyCommandOf = (target: Target): string | undefined => {
  const command = target.proxyCommand?.trim()
  return command === undefined || command === "" || command.toLowerCase() === "none" ? undefined : command
}

/**
 * Expands the tokens OpenSSH allows in `ProxyCommand` (ssh_config(5), TOKENS): `%h` the host
 * connected to (after `HostName`), `%p` its port, `%r` the remote user, `%n` the host as given,
 * `%%` a `%`. Any other token is an error, as for ssh ("unknown key").
 */
export const expand = (command: string, target: Target): Effect.Effect<string, SettingsError> =>
  Effect.suspend(() => {
    const tokens: Readonly<Record<string, string>> = {
      h: target.host,
      p: String(target.port),
      r: target.user,
      n: target.label,
      "%": "%"
    }
    let unknown: string | undefined
    const expanded = command.replace(/%(.?)/g, (whole, key: string) => {
      const value = tokens[key]
      if (value === undefined) unknown ??= whole
      return value ?? whole
    })
    return unknown === undefined
      ? Effect.succeed(expanded)
      : Effect.fail(
        new SettingsError({
          setting: "proxyCommand",
          value: command,
          detail:
            `unknown token "${unknown}"; a ProxyCommand takes %h, %p, %r, %n and %% (write %% for a literal %)`
        })
      )
  })

/** A running ProxyCommand, the stream over it, and what it said. */
export interface ProxyProcess {
  /** The command's standard output and input, as the SSH connection's socket. */
  readonly sock: Duplex
  /**
   * The error for a handshake that failed over this command: if the command exited (now, or
   * within a moment, since its output may end before its exit is known), one with reason
   * `proxy` naming it, its exit and the end of its stderr; else `error`, with that stderr.
   */
  readonly explain: (error: ConnectionError) => Effect.Effect<never, ConnectionError>
  /** SIGTERM to the command's group, SIGKILL after a grace; done once the command is gone. */
  readonly stop: Effect.Effect<void>
}

interface Ending {
  readonly code: number | null
  readonly signal: string | null
  readonly error: Error | undefined
  /**
   * Whether our signal ended it: then the failure is not the command's. One that exited with a
   * code of its own did so before our signal reached it (it may come as its output ends).
   */
  readonly stopped: boolean
}

const lastLines = (text: string, count = 5): string =>
  text.trimEnd().split(/\r?\n/).slice(-count).map((line) => `  ${line}`).join("\n")

/**
 * Starts `command` (expanded) for `target`, stopped when the scope closes. The socket is
 * destroyed as soon as the command exits (a handshake in progress then fails at once, rather
 * than waiting on an output that a left-over child of the command may hold open), and the
 * command is stopped as soon as the socket closes (the connection ended or was given up).
 */
export const spawn = (
  target: Target,
  command: string
): Effect.Effect<ProxyProcess, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => start(target, command)),
    (proxy) => proxy.stop
  )

const start = (target: Target, command: string): ProxyProcess => {
  const exited = Deferred.makeUnsafe<Ending>()
  const child = ChildProcess.spawn("/bin/sh", ["-c", `exec ${command}`], {
    // A group of its own (a session, without a terminal: nothing can prompt), signalled as one.
    detached: true,
    stdio: ["pipe", "pipe", "pipe"]
  })
  let stderr = ""
  let signalled = false
  child.stderr.setEncoding("utf8")
  child.stderr.on("data", (text: string) => {
    stderr = (stderr + text).slice(-stderrKeep)
  })
  const sock = Duplex.from({ readable: child.stdout, writable: child.stdin })
  // A write after the command died (EPIPE) reaches ssh2 as a socket error; ours are not needed.
  child.stdin.on("error", () => {})
  child.on("error", (error) => {
    Deferred.doneUnsafe(exited, Effect.succeed({ code: null, signal: null, error, stopped: signalled }))
    sock.destroy()
  })
  child.on("exit", (code, signal) => {
    Deferred.doneUnsafe(
      exited,
      Effect.succeed({ code, signal, error: undefined, stopped: signalled && signal !== null })
    )
    sock.destroy()
  })

  const group = child.pid
  const signalGroup = (name: NodeJS.Signals) =>
    group === undefined
      ? Effect.void
      // The group outlives its leader while a child of the command runs: signalled as a whole.
      : Effect.ignore(Effect.try(() => process.kill(-group, name)))
  const stop = Effect.gen(function*() {
    const done = yield* Deferred.isDone(exited)
    if (!done) {
      signalled = true
      yield* signalGroup("SIGTERM")
      yield* Deferred.await(exited).pipe(Effect.timeoutOption(Duration.millis(killGraceMillis)))
    }
    // Whatever of the group is left (the leader gone, a child of it still running).
    yield* signalGroup("SIGKILL")
    yield* Deferred.await(exited).pipe(Effect.timeoutOption(Duration.seconds(2)))
  }).pipe(Effect.uninterruptible)
  // The connection ended or was given up: the command has nothing left to carry.
  sock.once("close", () => {
    Effect.runFork(stop)
  })

  const describe = (ending: Ending): string => {
    const how = ending.error !== undefined
      ? `could not be started (${ending.error.message})`
      : ending.signal !== null
      ? `was killed by ${ending.signal}`
      : `exited with code ${ending.code}`
    const said = stderr.trim() === ""
      ? " and printed nothing on stderr"
      : `; its stderr ended with:\n${lastLines(stderr)}`
    return `the ProxyCommand \`${command}\` ${how} before the SSH handshake completed${said}`
  }
  const explain = (error: ConnectionError) =>
    Deferred.await(exited).pipe(
      Effect.timeoutOption(Duration.millis(exitGraceMillis)),
      Effect.flatMap((ending) =>
        Effect.fail(
          ending._tag === "Some" && !ending.value.stopped
            ? connectionError(target, "proxy", describe(ending.value), error.hop)
            : stderr.trim() === ""
            ? error
            : connectionError(
              target,
              error.reason,
              `${error.detail}; the ProxyCommand \`${command}\` printed on stderr:\n${lastLines(stderr)}`,
              error.hop
            )
        )
      )
    )
  return { sock, explain, stop }
}
