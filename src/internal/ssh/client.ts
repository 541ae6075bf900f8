/**
 * The `ssh2` adapter behind `Ssh.layer`: opening, caching, sharing and replacing connections,
 * host key checking, channels and their limits. Every ssh2 callback becomes an Effect here and
 * nowhere else.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import * as RcMap from "effect/RcMap"
import * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import { appendFileSync, existsSync, mkdirSync, readFileSync, statSync } from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import type { Duplex } from "node:stream"
import ssh2, { type AuthenticationType, Client, type ClientChannel, type SFTPWrapper } from "ssh2"
import { ConnectionError, type ConnectionErrorReason, SettingsError } from "../../Errors.ts"
import type { Settings } from "../../Settings.ts"
import type { ChannelEvent, Connection, RemoteChannel, Target } from "../../Ssh.ts"
import * as KnownHosts from "./knownHosts.ts"
import * as Sftp from "./sftp.ts"
import { resolveTarget, targetKey } from "./target.ts"

/** A connection as the adapter sees it: the public shape plus what jump hosts need. */
interface LiveConnection extends Connection {
  /**
   * A TCP connection from this (gateway) host to `to`, within `to.connectTimeout`. Its errors
   * name `to`, with this link as their `hop`.
   */
  readonly forwardOut: (to: Target) => Effect.Effect<Duplex, ConnectionError>
}

/** What a connection's listeners record over its life. */
interface ConnectionState {
  open: boolean
  /** The error that ended the connection, if it ended with one. */
  lastError: ConnectionError | undefined
}

const connectionError = (target: Target, reason: ConnectionErrorReason, detail: string, hop?: string) =>
  new ConnectionError({
    host: target.label,
    port: target.port,
    user: target.user,
    reason,
    detail,
    ...(hop === undefined ? {} : { hop })
  })

/** `host:port`, an IPv6 address in brackets. */
const hostPort = (host: string, port: number): string =>
  host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`

/** A gateway as a hop in errors: `user@gateway:port`. */
const hopOf = (gateway: Target): string => `${gateway.user}@${hostPort(gateway.label, gateway.port)}`

/** The link from a gateway to the next host, as a hop in errors: `user@gateway:port -> host:port`. */
const linkOf = (gateway: Target, to: Target): string => `${hopOf(gateway)} -> ${hostPort(to.host, to.port)}`

/**
 * `connectTimeout` in milliseconds for ssh2's `readyTimeout`, where 0 means none: so does a
 * duration too long for a Node timer (`Duration.infinity`), which would otherwise fire at once.
 */
const timeoutMillis = (duration: Duration.Duration): number => {
  const millis = Duration.toMillis(duration)
  return Number.isFinite(millis) && millis < 2 ** 31 ? Math.max(0, Math.ceil(millis)) : 0
}

const via = (target: Target): string =>
  (target.host !== target.label ? ` (${target.host})` : "") +
  (target.gateway !== undefined ? ` through ${target.gateway.user}@${target.gateway.label}` : "")

/** Sorts an ssh2 or socket error into a reason. */
const classify = (target: Target, error: Error & { code?: unknown; level?: unknown }): ConnectionError => {
  const code = typeof error.code === "string" ? error.code : ""
  const message = error.message
  const detail = `${message}${via(target)}`
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
const forwardError = (gateway: Target, to: Target, error: Error): ConnectionError => {
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
interface GatewayFailed {
  readonly _tag: "GatewayFailed"
  readonly error: ConnectionError | SettingsError
}

/** Failures worth another attempt: the host may be booting, restarting or briefly unreachable. */
const isTransient = (error: ConnectionError | SettingsError): boolean =>
  error._tag === "ConnectionError" &&
  (error.reason === "refused" || error.reason === "timeout" || error.reason === "disconnected")

// -- keys and host keys ---------------------------------------------------------------------------

interface Credentials {
  readonly privateKey: Buffer | undefined
  readonly passphrase: string | undefined
}

/**
 * Reads and checks the private key now, so that a bad file is a setting error, not a failed login
 * (rsync, which hands the key to the system ssh, checks it here too).
 */
export const readKey = (target: Target): Effect.Effect<Credentials, SettingsError> => {
  const file = target.keyFile
  if (file === undefined) return Effect.succeed({ privateKey: undefined, passphrase: undefined })
  const passphrase = target.keyPassphrase === undefined ? undefined : Redacted.value(target.keyPassphrase)
  return Effect.gen(function*() {
    const privateKey = yield* Effect.try({
      try: () => readFileSync(file),
      catch: (cause) =>
        new SettingsError({
          setting: "keyFile",
          value: file,
          detail: `cannot read it (${String(cause)}); give the path of a readable private key file`
        })
    })
    const parsed = ssh2.utils.parseKey(privateKey, passphrase)
    if (parsed instanceof Error) {
      const encrypted = /passphrase|encrypted|decrypt/i.test(parsed.message)
      return yield* new SettingsError({
        setting: encrypted ? "keyPassphrase" : "keyFile",
        value: encrypted ? "<redacted>" : file,
        detail: encrypted
          ? `the key ${file} is encrypted and the passphrase is missing or wrong`
          : `not a private key that can be used (${parsed.message}); give an OpenSSH or PEM private key file`
      })
    }
    return { privateKey, passphrase }
  })
}

// Parsed known_hosts files, by path, while unchanged: a fan-out to many hosts would otherwise
// read and parse the same file once per connection.
const knownHostsCache = new Map<
  string,
  { readonly stamp: string; readonly entries: ReturnType<typeof KnownHosts.parse> }
>()

const readKnownHosts = (file: string) =>
  Effect.sync(() => {
    const stat = statSync(file, { throwIfNoEntry: false })
    if (stat === undefined) return []
    const stamp = `${stat.mtimeMs}:${stat.size}:${stat.ino}`
    const cached = knownHostsCache.get(file)
    if (cached?.stamp === stamp) return cached.entries
    const entries = KnownHosts.parse(readFileSync(file, "utf8"))
    knownHostsCache.set(file, { stamp, entries })
    return entries
  })

/** Records a newly accepted host key, once, even when several connections learn it at once. */
const recordHostKey = (lock: Semaphore.Semaphore, target: Target, blob: Buffer) =>
  lock.withPermit(
    Effect.gen(function*() {
      const file = target.knownHostsFile
      const entries = yield* readKnownHosts(file)
      if (KnownHosts.check(entries, target.host, target.port, blob)._tag !== "Unknown") return
      yield* Effect.try({
        try: () => {
          mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 })
          const current = existsSync(file) ? readFileSync(file, "utf8") : ""
          const separator = current === "" || current.endsWith("\n") ? "" : "\n"
          appendFileSync(file, separator + KnownHosts.entryLine(target.host, target.port, blob), {
            mode: 0o600
          })
        },
        catch: (cause) => cause
      })
      yield* Effect.logInfo(`[${target.label}] recorded its host key in ${file}`)
    }).pipe(
      Effect.catch((cause) =>
        Effect.logWarning(
          `[${target.label}] could not record its host key in ${target.knownHostsFile}: ${String(cause)}`
        )
      )
    )
  )

// -- opening a connection -------------------------------------------------------------------------

interface Handshake {
  readonly client: Client
  readonly hostKey: Buffer | undefined
  readonly verdict: KnownHosts.Verdict | undefined
}

const hostKeyError = (target: Target, verdict: KnownHosts.Verdict): ConnectionError => {
  const name = `${target.host}${target.port === 22 ? "" : ` port ${target.port}`}`
  switch (verdict._tag) {
    case "Changed":
      return connectionError(
        target,
        "host-key",
        `the ${verdict.keyType} host key of ${name} differs from the one recorded in ${target.knownHostsFile} line ${verdict.line}`
      )
    case "Revoked":
      return connectionError(
        target,
        "host-key",
        `the host key of ${name} is marked @revoked in ${target.knownHostsFile} line ${verdict.line}`
      )
    default:
      return connectionError(
        target,
        "host-key",
        `the host key of ${name} is not in ${target.knownHostsFile} and hostKeyPolicy is "strict"`
      )
  }
}

/**
 * One attempt at a connection over `sock`: handshake, host key check, authentication, within
 * `readyTimeout` ms (0: no limit). The listeners attached here stay for the life of the client,
 * so a late `error` never goes unheard (ssh2 would crash the process) and `state` always knows
 * whether it is still up.
 */
const handshake = (
  target: Target,
  sock: Duplex,
  credentials: Credentials,
  knownHosts: ReturnType<typeof KnownHosts.parse>,
  state: ConnectionState,
  readyTimeout: number
) =>
  Effect.callback<Handshake, ConnectionError>((resume) => {
    const client = new Client()
    let settled = false
    let hostKey: Buffer | undefined
    let verdict: KnownHosts.Verdict | undefined
    const refused = () =>
      verdict !== undefined && verdict._tag !== "Known" &&
      !(verdict._tag === "Unknown" && target.hostKeyPolicy === "accept-new")
    const fail = (error: ConnectionError) => {
      if (settled) return
      settled = true
      state.open = false
      client.destroy()
      resume(Effect.fail(error))
    }
    // An agent that cannot be reached (SSH_AUTH_SOCK missing or stale) or cannot sign is skipped,
    // as OpenSSH does: ssh2 reports it and goes on with the next method (a key, a password).
    let agentProblem: string | undefined
    client.on("error", (error: Error & { code?: unknown; level?: unknown }) => {
      if (error.level === "agent" && !settled) {
        agentProblem = error.message
        return
      }
      let mapped = refused() && verdict !== undefined
        ? hostKeyError(target, verdict)
        : classify(target, error)
      if (mapped.reason === "authentication" && agentProblem !== undefined) {
        mapped = connectionError(
          target,
          "authentication",
          `${mapped.detail}; the ssh-agent at ${target.agent} could not be used (${agentProblem})`
        )
      }
      state.lastError = mapped
      fail(mapped)
    })
    client.on("close", () => {
      state.open = false
      fail(
        state.lastError ??
          connectionError(
            target,
            "disconnected",
            `the server closed the connection during the handshake${via(target)}`
          )
      )
    })
    client.on("ready", () => {
      if (settled) return
      settled = true
      state.open = true
      resume(Effect.succeed({ client, hostKey, verdict }))
    })
    const methods: Array<AuthenticationType> = []
    if (credentials.privateKey !== undefined) methods.push("publickey")
    if (target.agent !== undefined) methods.push("agent")
    if (target.password !== undefined) methods.push("password")
    const serverHostKey = KnownHosts.hostKeyAlgorithms(knownHosts, target.host, target.port)
    client.connect({
      sock,
      username: target.user,
      ...(credentials.privateKey !== undefined ? { privateKey: credentials.privateKey } : {}),
      ...(credentials.passphrase !== undefined ? { passphrase: credentials.passphrase } : {}),
      ...(target.agent !== undefined ? { agent: target.agent } : {}),
      ...(target.password !== undefined ? { password: Redacted.value(target.password) } : {}),
      authHandler: methods,
      ...(serverHostKey !== undefined ? { algorithms: { serverHostKey } } : {}),
      hostVerifier: (key: Buffer) => {
        hostKey = key
        verdict = KnownHosts.check(knownHosts, target.host, target.port, key)
        return !refused()
      },
      readyTimeout,
      keepaliveInterval: Duration.toMillis(target.keepaliveInterval),
      keepaliveCountMax: target.keepaliveCountMax
    })
    return Effect.sync(() => {
      if (settled) return
      settled = true
      client.destroy()
    })
  })

/** A TCP socket with Nagle off: with it on, each command on a warm connection waits ~40 ms. */
const directSocket = (target: Target): Duplex => {
  const sock = net.connect({ host: target.host, port: target.port })
  sock.setNoDelay(true)
  return sock
}

// -- channels -------------------------------------------------------------------------------------

/**
 * Asks ssh2 for something it answers through a callback (a channel, an SFTP session, a forward),
 * interruptibly. ssh2 cannot cancel a request in flight, so one answered after its requester left
 * is handed to `discard` at once; with `awaitLate`, the interruption also waits for such a late
 * answer (bounded, and only while it can still come), so that what it holds (a session slot) is
 * given back only once nothing can still arrive. ssh2 throws when its socket is no longer writable: that is `lost`.
 */
const request = <A>(options: {
  readonly send: (callback: (error: Error | undefined | null, value: A) => void) => void
  readonly failed: (error: Error) => ConnectionError
  readonly lost: (cause: unknown) => ConnectionError
  readonly discard: (value: A) => void
  readonly awaitLate?: { readonly atMost: Duration.Duration; readonly while: () => boolean } | undefined
}): Effect.Effect<A, ConnectionError> =>
  Effect.callback<A, ConnectionError>((resume) => {
    let abandoned = false
    let late: (() => void) | undefined
    const sent = Result.try({
      try: () =>
        options.send((error, value) => {
          if (!abandoned) {
            return resume(
              error === undefined || error === null
                ? Effect.succeed(value)
                : Effect.fail(options.failed(error))
            )
          }
          if (error === undefined || error === null) options.discard(value)
          late?.()
        }),
      catch: (cause) => cause
    })
    if (Result.isFailure(sent)) return resume(Effect.fail(options.lost(sent.failure)))
    const awaitLate = options.awaitLate
    if (awaitLate === undefined) return Effect.sync(() => void (abandoned = true))
    return Effect.callback<void>((resumeCleanup) => {
      abandoned = true
      late = () => resumeCleanup(Effect.void)
      if (!awaitLate.while()) resumeCleanup(Effect.void)
    }).pipe(Effect.timeoutOption(awaitLate.atMost), Effect.asVoid)
  })

/** The failure of a request on a connection whose socket is gone (ssh2 threw `cause`). */
const lostConnection = (target: Target, state: ConnectionState, cause: unknown): ConnectionError => {
  state.open = false
  return state.lastError ??
    connectionError(target, "disconnected", `the connection is closed (${String(cause)})`)
}

const normaliseSignal = (signal: string): string => signal.startsWith("SIG") ? signal : `SIG${signal}`

// A pty without echo (nothing written to the command, a sudo password included, comes back) and
// without \n -> \r\n translation (output keeps its own line ends).
const ptyOptions = { term: "dumb", cols: 200, rows: 50, modes: { ECHO: 0, ONLCR: 0 } } as const

// How many bytes of output a channel may hold for a consumer that has not taken them yet before
// its streams are paused. Paused, ssh2 stops granting the server window, so a slow consumer slows
// the remote command instead of growing memory: a channel holds at most this plus ssh2's own
// buffers (its 2 MiB window and stream high-water mark per stream).
const highWater = 1024 * 1024
const lowWater = 256 * 1024

/**
 * Opens a channel running `command`. The open is interruptible: ssh2 cannot cancel a channel
 * request in flight, so an interrupted open waits (bounded) for the answer and closes a channel
 * that arrives late at once, before giving its slot back; the command's own guard (see
 * `remote.ts`) stops it when its channel closes.
 */
const openChannel = (
  target: Target,
  client: Client,
  state: ConnectionState,
  command: string,
  pty: boolean
): Effect.Effect<RemoteChannel & { readonly close: Effect.Effect<void> }, ConnectionError, Scope.Scope> =>
  Effect.gen(function*() {
    const events = yield* Queue.unbounded<ChannelEvent>()
    let closed = false
    let discarding = false
    let buffered = 0
    let paused = false
    const acquire = Effect.suspend(() =>
      state.open
        ? request<ClientChannel>({
          send: (callback) => client.exec(command, pty ? { pty: ptyOptions } : {}, callback),
          failed: (error) =>
            state.open ? classify(target, error) : state.lastError ?? classify(target, error),
          lost: (cause) => lostConnection(target, state, cause),
          // Its requester is gone: close it now; no event of it is wanted.
          discard: (channel) => {
            channel.on("error", () => {})
            channel.resume()
            channel.stderr.resume()
            channel.close()
          },
          awaitLate: { atMost: Duration.seconds(5), while: () => state.open }
        })
        : Effect.fail(state.lastError ?? connectionError(target, "disconnected", "the connection is closed"))
    )
    const stream = yield* Effect.uninterruptibleMask((restore) =>
      Effect.tap(restore(acquire), (channel) => Effect.addFinalizer(() => closeChannel(channel)))
    )
    let exitCode: number | null = null
    let signal: string | null = null
    let exited = false
    let outEnded = false
    let errEnded = false
    const offer = (event: ChannelEvent) => {
      if (discarding) return
      if (event._tag !== "Closed") {
        buffered += event.data.length
        if (!paused && buffered > highWater) {
          paused = true
          stream.pause()
          stream.stderr.pause()
        }
      }
      Queue.offerUnsafe(events, event)
    }
    // `close` comes once standard output has ended; standard error may still hold data when the
    // consumer is behind, so the end is reported only after both streams have delivered it all.
    const maybeClosed = () => {
      if (!(closed && outEnded && errEnded)) return
      const error = exited ? undefined : state.lastError ??
        connectionError(
          target,
          "disconnected",
          state.open
            ? "the command's channel closed without an exit status (its session was killed on the server)"
            : "the connection dropped while the command ran"
        )
      offer({ _tag: "Closed", exitCode, signal, error })
    }
    stream.on("data", (data: Buffer) => offer({ _tag: "Stdout", data }))
    stream.stderr.on("data", (data: Buffer) => offer({ _tag: "Stderr", data }))
    stream.once("end", () => {
      outEnded = true
      maybeClosed()
    })
    stream.stderr.once("end", () => {
      errEnded = true
      maybeClosed()
    })
    stream.on("exit", (code: number | null, signalName?: string) => {
      exited = true
      exitCode = typeof code === "number" ? code : null
      signal = typeof signalName === "string" ? normaliseSignal(signalName) : null
    })
    // Channel errors also end in `close`; the listener only keeps them from being thrown.
    stream.on("error", () => {})
    stream.once("close", () => {
      closed = true
      // A stream that was destroyed rather than ended never reports its `end`.
      if (!stream.readable) outEnded = true
      if (!stream.stderr.readable) errEnded = true
      maybeClosed()
    })
    let last: ChannelEvent | undefined
    const next = Effect.map(Queue.take(events), (event) => {
      if (event._tag === "Closed") {
        last = event
      } else {
        buffered -= event.data.length
        if (paused && buffered < lowWater) {
          paused = false
          stream.resume()
          stream.stderr.resume()
        }
      }
      return event
    })
    const closeChannel = (channel: ClientChannel) =>
      Effect.suspend(() => {
        // Buffered output is no longer wanted; flowing, the streams can end and `close` come.
        discarding = true
        if (closed) return Effect.void
        return Effect.callback<void>((resume) => {
          channel.once("close", () => resume(Effect.void))
          channel.resume()
          channel.stderr.resume()
          channel.close()
        }).pipe(
          // A dead connection may never confirm; ssh2 cleans its channels up on its own then.
          Effect.timeoutOption(Duration.seconds(2)),
          Effect.ensuring(Effect.sync(() => void (closed = true))),
          Effect.asVoid
        )
      })
    return {
      take: Effect.suspend(() => last !== undefined ? Effect.succeed(last) : next),
      write: (data: string) => Effect.sync(() => void (stream.writable && stream.write(data))),
      endInput: Effect.sync(() => void (stream.writable && stream.end())),
      close: closeChannel(stream)
    }
  })

// sshd frees a session slot a moment after the client sees its channel close, so a refusal on a
// live connection means "busy", not "gone": wait and try again, 5 ms, then 10, 20... 8 times.
// The retry is set up only once a refusal has happened: its schedule costs every command else.
const isBusy = (state: ConnectionState, error: ConnectionError): boolean =>
  state.open && error.reason === "channel-refused"

const retryBusy = <A>(
  state: ConnectionState,
  open: Effect.Effect<A, ConnectionError, Scope.Scope>
): Effect.Effect<A, ConnectionError, Scope.Scope> =>
  Effect.andThen(
    Effect.sleep(Duration.millis(5)),
    Effect.retry(open, {
      schedule: Schedule.exponential(Duration.millis(10)),
      times: 7,
      while: (error) => isBusy(state, error)
    })
  )

// -- the service ----------------------------------------------------------------------------------

/** Builds the service: a keyed, reference-counted cache of connections for the layer's scope. */
export const make = Effect.gen(function*() {
  const hostKeyLock = yield* Semaphore.make(1)
  // Connections live under `<generation>:<target key>`; a connection found dropped moves its
  // target to the next generation, so a stale entry can never be confused with its replacement.
  const generations = new Map<string, number>()
  const targets = new Map<string, Target>()

  const open = (
    target: Target
  ): Effect.Effect<LiveConnection, ConnectionError | SettingsError, Scope.Scope> =>
    Effect.gen(function*() {
      const credentials = yield* readKey(target)
      const gateway = target.gateway
      const attempt = Effect.gen(function*() {
        const knownHosts = yield* readKnownHosts(target.knownHostsFile)
        let readyTimeout = timeoutMillis(target.connectTimeout)
        let sock: Duplex
        if (gateway === undefined) {
          sock = directSocket(target)
        } else {
          // The gateway has had its own connectAttempts: its failure ends this connection too,
          // reported for this target with the gateway as the hop that failed.
          const through = yield* connectTarget(gateway).pipe(
            Effect.mapError((error): GatewayFailed => ({
              _tag: "GatewayFailed",
              error: error._tag === "SettingsError"
                ? error
                : connectionError(target, error.reason, error.detail, error.hop ?? hopOf(gateway))
            }))
          )
          // One connectTimeout for the forward and the handshake over it, as for a direct
          // connection's TCP connect and handshake.
          const started = yield* Clock.currentTimeMillis
          sock = yield* through.forwardOut(target)
          if (readyTimeout > 0) {
            readyTimeout = Math.max(1, readyTimeout - ((yield* Clock.currentTimeMillis) - started))
          }
        }
        const state: ConnectionState = { open: false, lastError: undefined }
        const { client, hostKey, verdict } = yield* Effect.acquireRelease(
          handshake(target, sock, credentials, knownHosts, state, readyTimeout),
          // A connection that already closed has nothing to wait for: `end` would never see
          // another `close`, and the next operation would wait out closeClient's time limit.
          ({ client }) => state.open ? closeClient(client) : Effect.sync(() => client.destroy())
        ).pipe(
          Effect.mapError((error) =>
            gateway === undefined || error.hop !== undefined
              ? error
              : connectionError(target, error.reason, error.detail, linkOf(gateway, target))
          )
        )
        if (verdict?._tag === "Unknown" && hostKey !== undefined) {
          yield* recordHostKey(hostKeyLock, target, hostKey)
        }
        return { client, state }
      })
      const { client, state } = yield* attempt.pipe(
        Effect.retry({
          schedule: Schedule.spaced(target.connectRetryDelay),
          times: target.connectAttempts - 1,
          while: (error) => error._tag !== "GatewayFailed" && isTransient(error)
        }),
        Effect.mapError((error) => error._tag === "GatewayFailed" ? error.error : error)
      )
      const permits = yield* Semaphore.make(target.maxChannels)
      const reserve = yield* Semaphore.make(1)
      const alongside = yield* Semaphore.make(1)
      const connection: LiveConnection = {
        target,
        isOpen: () => state.open,
        exec: (command, options) =>
          Effect.gen(function*() {
            const slots = options?.reserved === true
              ? reserve
              : options?.alongside === true
              ? alongside
              : permits
            // The slot is held exactly as long as a channel may be: given back when the scope
            // closes (after the channel's own close), or at once when no channel was opened, so
            // an operation that tries again after a failed open does not hold two.
            let held = false
            yield* Effect.acquireRelease(
              Effect.andThen(slots.take(1), Effect.sync(() => void (held = true))),
              () => Effect.suspend(() => held ? slots.release(1) : Effect.void)
            )
            const giveBack = Effect.suspend(() => {
              if (!held) return Effect.void
              held = false
              return slots.release(1)
            })
            const channel = yield* openChannel(target, client, state, command, options?.pty === true).pipe(
              Effect.catchIf(
                (error) => isBusy(state, error),
                () => retryBusy(state, openChannel(target, client, state, command, options?.pty === true))
              ),
              Effect.onError(() => giveBack)
            )
            return { take: channel.take, write: channel.write, endInput: channel.endInput }
          }),
        sftp: Effect.gen(function*() {
          yield* permits.takeScoped(1)
          // Interruptible: a server whose SFTP process never answers must not hold its caller.
          // A session that arrives after its requester left is ended at once; the slot is not
          // held for it, since an SFTP process that hangs may never answer at all.
          const session = request<SFTPWrapper>({
            send: (callback) => client.sftp(callback),
            failed: (error) => classify(target, error),
            lost: (cause) => lostConnection(target, state, cause),
            discard: (sftp) => sftp.end()
          })
          const open = Effect.uninterruptibleMask((restore) =>
            Effect.tap(restore(session), (sftp) => Effect.addFinalizer(() => Effect.sync(() => sftp.end())))
          )
          // A session slot freed a moment ago may still be taken on the server, as for commands.
          return Sftp.make(
            yield* open.pipe(Effect.catchIf((error) => isBusy(state, error), () => retryBusy(state, open)))
          )
        }),
        forwardOut: (to) => {
          const forward: Effect.Effect<Duplex, ConnectionError> = request<ClientChannel>({
            send: (callback) => client.forwardOut("127.0.0.1", 0, to.host, to.port, callback),
            failed: (error) => forwardError(target, to, error),
            // ssh2 throws when the gateway's socket is no longer writable: it is gone.
            lost: (cause) => {
              state.open = false
              const lost = state.lastError?.detail ?? String(cause)
              return connectionError(
                to,
                "disconnected",
                `the connection to the gateway was lost (${lost})`,
                hopOf(target)
              )
            },
            // Its attempt gave up (timed out, interrupted): close it as it arrives.
            discard: (stream) => {
              stream.on("error", () => {})
              stream.close()
            }
          })
          // OpenSSH's sshd waits for its own TCP connect, about 2 minutes for a host that does
          // not answer: connectTimeout bounds it, as it bounds a direct connection's.
          const limit = timeoutMillis(to.connectTimeout)
          return limit === 0 ? forward : Effect.timeoutOrElse(forward, {
            duration: Duration.millis(limit),
            orElse: () =>
              Effect.fail(connectionError(
                to,
                "timeout",
                `${target.label} could not connect to ${
                  hostPort(to.host, to.port)
                } within connectTimeout (${limit} ms)`,
                linkOf(target, to)
              ))
          })
        }
      }
      return connection
    })

  const closeClient = (client: Client) =>
    Effect.callback<void>((resume) => {
      client.once("close", () => resume(Effect.void))
      client.end()
    }).pipe(
      Effect.timeoutOption(Duration.seconds(2)),
      Effect.ensuring(Effect.sync(() => client.destroy()))
    )

  const map = yield* RcMap.make({
    lookup: (key: string) => {
      const target = targets.get(key)
      return target === undefined ? Effect.die(new Error(`no target registered for ${key}`)) : open(target)
    },
    idleTimeToLive: Duration.infinity
  })

  const connectTarget = (
    target: Target,
    retried = false
  ): Effect.Effect<LiveConnection, ConnectionError | SettingsError, Scope.Scope> =>
    Effect.gen(function*() {
      const id = targetKey(target)
      const generation = generations.get(id) ?? 0
      const key = `${generation}:${id}`
      if (!targets.has(key)) targets.set(key, target)
      const retire = Effect.suspend(() => {
        if ((generations.get(id) ?? 0) === generation) generations.set(id, generation + 1)
        targets.delete(key)
        return RcMap.invalidate(map, key)
      })
      // A failed attempt is not cached: the next operation tries again.
      const connection = yield* RcMap.get(map, key).pipe(Effect.tapError(() => retire))
      if (connection.isOpen()) return connection
      yield* retire
      if (retried) {
        return yield* connectionError(
          target,
          "disconnected",
          "the connection closed as soon as it was opened"
        )
      }
      return yield* connectTarget(target, true)
    })

  return {
    connect: (settings: Settings) =>
      Effect.flatMap(resolveTarget(settings), (target) => connectTarget(target))
  }
})
