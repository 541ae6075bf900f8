/**
 * Opening one SSH connection: the private key, the known_hosts file (read, checked, and added
 * to under `accept-new`), and the handshake itself, as Effects over ssh2's callbacks.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import * as Semaphore from "effect/Semaphore"
import * as net from "node:net"
import * as path from "node:path"
import type { Duplex } from "node:stream"
import ssh2, { type AuthenticationType, Client } from "ssh2"
import { type ConnectionError, SettingsError } from "../../Errors.ts"
import * as Files from "../local/files.ts"
import {
  classify,
  connectionError,
  hostKeyError,
  isOutOfDescriptors,
  outOfDescriptors,
  via
} from "./errors.ts"
import * as KnownHosts from "./knownHosts.ts"
import type { Target } from "./port.ts"
import type { ConnectionState } from "./request.ts"
import { knownHostsName } from "./target.ts"

/**
 * ssh2 forwards the agent it authenticates with. When ssh_config's `ForwardAgent` names another
 * socket, that one is what the host may use: this agent signs with `auth` (none: no keys) and
 * hands the forwarded channels to `forward`.
 */
class ForwardingAgent extends ssh2.BaseAgent {
  readonly auth: ssh2.OpenSSHAgent | undefined
  readonly forward: ssh2.OpenSSHAgent
  constructor(auth: ssh2.OpenSSHAgent | undefined, forward: ssh2.OpenSSHAgent) {
    super()
    this.auth = auth
    this.forward = forward
  }
  override getIdentities(callback: ssh2.IdentityCallback): void {
    if (this.auth === undefined) callback(undefined, [])
    else this.auth.getIdentities(callback)
  }
  override sign(
    key: ssh2.ParsedKey | Buffer | string,
    data: Buffer,
    options: ssh2.SigningRequestOptions,
    callback?: ssh2.SignCallback
  ): void
  override sign(key: ssh2.ParsedKey | Buffer | string, data: Buffer, callback: ssh2.SignCallback): void
  override sign(
    key: ssh2.ParsedKey | Buffer | string,
    data: Buffer,
    options: ssh2.SigningRequestOptions | ssh2.SignCallback,
    callback?: ssh2.SignCallback
  ): void {
    const done = typeof options === "function" ? options : callback
    const given = typeof options === "function" ? {} : options
    if (this.auth === undefined) done?.(new Error("no agent to sign with"))
    else this.auth.sign(key, data, given, done)
  }
  override getStream(callback: ssh2.GetStreamCallback): void {
    this.forward.getStream(callback)
  }
}

/** The `agent` option of a connection to `target`: its socket, or one forwarding another. */
const agentOf = (target: Target): string | ssh2.BaseAgent | undefined =>
  target.forwardAgent === true && target.forwardAgentSocket !== undefined &&
    target.forwardAgentSocket !== target.agent
    ? new ForwardingAgent(
      target.agent === undefined ? undefined : new ssh2.OpenSSHAgent(target.agent),
      new ssh2.OpenSSHAgent(target.forwardAgentSocket)
    )
    : target.agent

// -- keys and host keys ---------------------------------------------------------------------------

export interface Credentials {
  readonly privateKey: Buffer | undefined
  readonly passphrase: string | undefined
  /**
   * User certificates OpenSSH would offer here (`<keyFile>-cert.pub`, `CertificateFile`) that
   * exist. ssh2 has no certificate key types, so they are never sent; they are named in a warning
   * and in an authentication failure, which they may explain.
   */
  readonly certificates: ReadonlyArray<string>
}

/** The user certificates OpenSSH would pick up for `target`; missing files are skipped, as it does. */
const certificatesOf = (target: Target): Effect.Effect<ReadonlyArray<string>> =>
  Effect.sync(() => {
    const candidates = [
      ...(target.keyFile === undefined ? [] : [`${target.keyFile}-cert.pub`]),
      ...(target.certificateFiles ?? [])
    ]
    return [...new Set(candidates)].filter((file) => Files.Sync.exists(file))
  })

/**
 * Warns, once per file for the layer's life, that a user certificate is left out: a user whose
 * `ssh` logs in by certificate would otherwise see this library offer another credential with
 * no word of why.
 */
export const makeCertificateNotices = Effect.sync(() => {
  const warned = new Set<string>()
  return (target: Target, credentials: Credentials): Effect.Effect<void> =>
    Effect.forEach(credentials.certificates, (file) => {
      if (warned.has(file)) return Effect.void
      warned.add(file)
      return Effect.logWarning(
        `[${target.label}] ${file} is an OpenSSH user certificate, which ssh would offer; the SSH library ` +
          "in use (ssh2) cannot authenticate with certificates, so the connection offers the plain key only"
      )
    }, { discard: true })
})

/**
 * Reads and checks the private key now, so that a bad file is a setting error, not a failed login
 * (rsync, which hands the key to the system ssh, checks it here too).
 */
export const readKey = (target: Target): Effect.Effect<Credentials, SettingsError | ConnectionError> => {
  const file = target.keyFile
  if (file === undefined) {
    return Effect.map(certificatesOf(target), (certificates) => ({
      privateKey: undefined,
      passphrase: undefined,
      certificates
    }))
  }
  const passphrase = target.keyPassphrase === undefined ? undefined : Redacted.value(target.keyPassphrase)
  return Effect.gen(function*() {
    const privateKey = yield* Files.readFile(file).pipe(
      Effect.mapError((error) =>
        isOutOfDescriptors(error.code)
          ? outOfDescriptors(target, error.code, `cannot read the key ${file}`)
          : new SettingsError({
            setting: "keyFile",
            value: file,
            detail: `cannot read it (${String(error.cause)}); give the path of a readable private key file`
          })
      )
    )
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
    return { privateKey, passphrase, certificates: yield* certificatesOf(target) }
  })
}

/** The known_hosts files of one layer: read, and added to, one writer at a time. */
export interface KnownHostsFiles {
  /** The entries of the target's known_hosts file (none when it is missing). */
  readonly read: (
    target: Target
  ) => Effect.Effect<ReadonlyArray<KnownHosts.Entry>, ConnectionError | SettingsError>
  /** Records a newly accepted host key, once, even when several connections learn it at once. */
  readonly record: (target: Target, blob: Buffer) => Effect.Effect<void>
}

/**
 * Parsed files are kept, by path, while their stamp (mtime, size, inode) is unchanged: a fan-out
 * to many hosts would otherwise read and parse the same file once per connection. The stamp is
 * taken on every read, so an edited file is never answered from the cache.
 */
export const makeKnownHostsFiles = Effect.gen(function*() {
  const lock = yield* Semaphore.make(1)
  const cache = new Map<
    string,
    { readonly stamp: string; readonly entries: ReadonlyArray<KnownHosts.Entry> }
  >()
  // A file that exists and cannot be read is an unusable setting; no descriptor left to read it
  // with is this machine's limit.
  const readOne = (
    target: Target,
    file: string
  ): Effect.Effect<ReadonlyArray<KnownHosts.Entry>, ConnectionError | SettingsError> =>
    Effect.gen(function*() {
      const stat = yield* Files.stat(file)
      if (stat === undefined) return []
      const stamp = `${stat.mtimeMs}:${stat.ctimeMs}:${stat.size}:${stat.ino}`
      const cached = cache.get(file)
      if (cached?.stamp === stamp) return cached.entries
      const entries = KnownHosts.parse(yield* Files.readFileString(file)).map((entry) => ({ ...entry, file }))
      cache.set(file, { stamp, entries })
      return entries
    }).pipe(
      Effect.mapError((error) =>
        isOutOfDescriptors(error.code)
          ? outOfDescriptors(target, error.code, `cannot read ${file}`)
          : new SettingsError({
            setting: "knownHostsFile",
            value: file,
            detail: `cannot read it (${String(error.cause)}); give a readable known_hosts file`
          })
      )
    )
  // Every file ssh_config lists is checked, as by OpenSSH: a host recorded in any is not new.
  const read = (
    target: Target
  ): Effect.Effect<ReadonlyArray<KnownHosts.Entry>, ConnectionError | SettingsError> =>
    target.otherKnownHostsFiles === undefined || target.otherKnownHostsFiles.length === 0
      ? readOne(target, target.knownHostsFile)
      : Effect.map(
        Effect.forEach(
          [target.knownHostsFile, ...target.otherKnownHostsFiles],
          (file) => readOne(target, file)
        ),
        (lists) => lists.flat()
      )
  const record = (target: Target, blob: Buffer) =>
    lock.withPermit(
      Effect.gen(function*() {
        const file = target.knownHostsFile
        const name = knownHostsName(target)
        // Checked and appended in one synchronous step: the lock is per layer, and separate layers
        // learning the same key at once share only the one JS thread (the file is small).
        const recorded = yield* Effect.try({
          try: () => {
            const current = Files.Sync.exists(file) ? Files.Sync.readFileString(file) : ""
            const known = KnownHosts.check(KnownHosts.parse(current), name.host, name.port, blob)
            if (known._tag !== "Unknown") return false
            Files.Sync.mkdir(path.dirname(file), { recursive: true, mode: 0o700 })
            const separator = current === "" || current.endsWith("\n") ? "" : "\n"
            Files.Sync.appendFile(
              file,
              separator + KnownHosts.entryLine(name.host, name.port, blob),
              0o600
            )
            return true
          },
          catch: (error) => Files.fromNode("record", file, error)
        })
        if (!recorded) return
        yield* Effect.logInfo(`[${target.label}] recorded its host key in ${file}`)
      }).pipe(
        Effect.catch((error) =>
          Effect.logWarning(
            `[${target.label}] could not record its host key in ${target.knownHostsFile}: ${
              String(error.cause)
            }`
          )
        )
      )
    )
  return { read, record } satisfies KnownHostsFiles
})

// -- opening a connection -------------------------------------------------------------------------

export interface Handshake {
  readonly client: Client
  readonly hostKey: Buffer | undefined
  readonly verdict: KnownHosts.Verdict | undefined
}
/**
 * One attempt at a connection over `sock`: handshake, host key check, authentication, within
 * `readyTimeout` ms (0: no limit). The listeners attached here stay for the life of the client,
 * so a late `error` never goes unheard (ssh2 would crash the process) and `state` always knows
 * whether it is still up.
 */
export const handshake = (
  target: Target,
  sock: Duplex,
  credentials: Credentials,
  knownHosts: ReadonlyArray<KnownHosts.Entry>,
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
      if (mapped.reason === "authentication" && credentials.certificates.length > 0) {
        mapped = connectionError(
          target,
          "authentication",
          `${mapped.detail}; the user certificate ${credentials.certificates.join(", ")} was not offered: ` +
            "the SSH library in use (ssh2) does not support certificates, so a server that accepts this " +
            "user only by certificate (TrustedUserCAKeys) refuses it; authorize the plain key on the server"
        )
      }
      state.lastError = mapped
      // Once connected, every error of ssh2's but an agent's ends the connection; its close may
      // come a moment later, and no operation may take the connection for open meanwhile.
      state.open = false
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
    const agent = agentOf(target)
    const methods: Array<AuthenticationType> = []
    if (credentials.privateKey !== undefined) methods.push("publickey")
    if (target.agent !== undefined) methods.push("agent")
    if (target.password !== undefined) methods.push("password")
    const serverHostKey = KnownHosts.hostKeyAlgorithms(
      knownHosts,
      knownHostsName(target).host,
      knownHostsName(target).port
    )
    client.connect({
      sock: coalesceWrites(sock),
      username: target.user,
      ...(credentials.privateKey !== undefined ? { privateKey: credentials.privateKey } : {}),
      ...(credentials.passphrase !== undefined ? { passphrase: credentials.passphrase } : {}),
      ...(agent !== undefined ? { agent } : {}),
      // For the whole connection (ssh2 asks on its first session): targetKey keeps such
      // connections apart from those of commands that did not ask for the agent.
      ...(agent !== undefined && target.forwardAgent === true ? { agentForward: true } : {}),
      ...(target.password !== undefined ? { password: Redacted.value(target.password) } : {}),
      authHandler: methods,
      ...(serverHostKey !== undefined ? { algorithms: { serverHostKey } } : {}),
      hostVerifier: (key: Buffer) => {
        hostKey = key
        verdict = KnownHosts.check(knownHosts, knownHostsName(target).host, knownHostsName(target).port, key)
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

/**
 * Gathers what ssh2 writes to `sock` in one turn of the event loop into one system call. ssh2
 * writes every packet in two or three pieces (length, ciphertext, tag) straight to the socket; on
 * a fast link the socket is always drained, so each piece would be a `write(2)` of its own: some
 * 24,000 per 256 MiB sent, as much CPU as the encryption. Corked until the current tick ends,
 * the pieces leave as one `writev(2)`; nothing waits longer than the code that wrote them.
 */
export const coalesceWrites = (sock: Duplex): Duplex => {
  const write = sock.write.bind(sock) as (...args: ReadonlyArray<unknown>) => boolean
  let corked = false
  const uncork = () => {
    corked = false
    sock.uncork()
  }
  sock.write = ((...args: ReadonlyArray<unknown>) => {
    if (!corked) {
      corked = true
      sock.cork()
      process.nextTick(uncork)
    }
    return write(...args)
  }) as Duplex["write"]
  return sock
}

/** A TCP socket with Nagle off: with it on, each command on a warm connection waits ~40 ms. */
export const directSocket = (target: Target): Duplex => {
  const sock = net.connect({ host: target.host, port: target.port })
  sock.setNoDelay(true)
  return sock
}
