/**
 * The `ssh2` adapter behind `Ssh.layer`: opening, caching, sharing and replacing connections,
 * and the limits on their channels. Every ssh2 callback becomes an Effect in this folder and
 * nowhere else: connecting in `handshake.ts`, requests in `request.ts`, commands in
 * `channel.ts`, the errors' reasons in `errors.ts`.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as RcMap from "effect/RcMap"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import type { Duplex } from "node:stream"
import type { Client, ClientChannel, SFTPWrapper } from "ssh2"
import type { ConnectionError, SettingsError } from "../../Errors.ts"
import type { Settings } from "../../Settings.ts"
import { closeAndAwait, openChannel, quietly } from "./channel.ts"
import {
  classify,
  connectionError,
  forwardError,
  type GatewayFailed,
  hopOf,
  hostPort,
  isTransient,
  linkOf,
  namingHop,
  timeoutMillis
} from "./errors.ts"
import { directSocket, handshake, makeCertificateNotices, makeKnownHostsFiles, readKey } from "./handshake.ts"
import type { Connection, Target } from "./port.ts"
import * as ProxyCommand from "./proxyCommand.ts"
import { proxyCommandOf } from "./proxyCommand.ts"
import { type ConnectionState, isBusy, lostConnection, request, retryBusy } from "./request.ts"
import * as ServerQuirks from "./serverQuirks.ts"
import * as Sftp from "./sftp.ts"
import { makeResolver, targetKey } from "./target.ts"
import { makeTunnels } from "./tunnel.ts"

// rsync checks the key file the way a connection does.
export { readKey } from "./handshake.ts"

/** A connection as the adapter sees it: the public shape plus what jump hosts need. */
interface LiveConnection extends Connection {
  /**
   * A TCP connection from this (gateway) host to `to`, within `to.connectTimeout`. Its errors
   * name `to`, with this link as their `hop`.
   */
  readonly forwardOut: (to: Target) => Effect.Effect<Duplex, ConnectionError>
}

// -- the service ----------------------------------------------------------------------------------

/** Builds the service: a keyed, reference-counted cache of connections for the layer's scope. */
export const make = Effect.gen(function*() {
  const knownHostsFiles = yield* makeKnownHostsFiles
  const noticeCertificates = yield* makeCertificateNotices
  const resolve = makeResolver()
  // Connections live under `<generation>:<target key>`; a connection found dropped moves its
  // target to the next generation, so a stale entry can never be confused with its replacement.
  const generations = new Map<string, number>()
  const targets = new Map<string, Target>()

  const open = (
    target: Target
  ): Effect.Effect<LiveConnection, ConnectionError | SettingsError, Scope.Scope> =>
    Effect.gen(function*() {
      const credentials = yield* readKey(target)
      yield* noticeCertificates(target, credentials)
      const proxyCommand = proxyCommandOf(target)
      // A ProxyCommand wins over a gateway, as whichever of the two OpenSSH reads first.
      const gateway = proxyCommand === undefined ? target.gateway : undefined
      const command = proxyCommand === undefined
        ? undefined
        : yield* ProxyCommand.expand(proxyCommand, target)
      const attempt = Effect.gen(function*() {
        const knownHosts = yield* knownHostsFiles.read(target)
        let readyTimeout = timeoutMillis(target.connectTimeout)
        let sock: Duplex
        let proxy: ProxyCommand.ProxyProcess | undefined
        if (command !== undefined) {
          // connectTimeout (ssh2's readyTimeout, started with the handshake) bounds the command's
          // start and the handshake over it together.
          proxy = yield* ProxyCommand.spawn(target, command)
          sock = proxy.sock
        } else if (gateway === undefined) {
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
        const shake = handshake(target, sock, credentials, knownHosts, state, readyTimeout)
        const { client, hostKey, verdict } = yield* Effect.acquireRelease(
          proxy === undefined ? shake : Effect.catch(shake, proxy.explain),
          // A connection that already closed has nothing to wait for: `end` would never see
          // another `close`, and the next operation would wait out closeClient's time limit.
          ({ client }) => state.open ? closeClient(client) : Effect.sync(() => client.destroy()),
          // Given up (interrupted, the layer closing): the handshake's own cleanup destroys the
          // client at once, rather than the interruption waiting out connectTimeout.
          { interruptible: true }
        ).pipe(
          // A failed attempt stops its command now, not when the connection's scope closes.
          Effect.onError(() => proxy?.stop ?? Effect.void),
          Effect.mapError((error) =>
            gateway === undefined || error.hop !== undefined
              ? error
              : connectionError(target, error.reason, error.detail, linkOf(gateway, target))
          )
        )
        if (verdict?._tag === "Unknown" && hostKey !== undefined) {
          yield* knownHostsFiles.record(target, hostKey)
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
      // On a server whose channels must not run side by side, every command takes its turn.
      const serverSoftware = ServerQuirks.serverSoftware(client)
      const oneAtATime = ServerQuirks.runsOneChannelAtATime(serverSoftware)
      const permits = yield* Semaphore.make(oneAtATime ? 1 : target.maxChannels)
      const reserve = yield* Semaphore.make(1)
      const alongside = yield* Semaphore.make(1)
      const connection: LiveConnection = {
        target,
        isOpen: () => state.open,
        serverSoftware,
        loginBash: Ref.makeUnsafe<string | undefined>(undefined),
        ...makeTunnels(target, client, state),
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
            const pty = options?.pty === true
            return yield* openChannel(target, client, state, command, pty, options?.onSent).pipe(
              Effect.catchIf(
                (error) => isBusy(state, error),
                () => retryBusy(state, openChannel(target, client, state, command, pty, options?.onSent))
              ),
              Effect.onError(() => giveBack)
            )
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
            discard: (sftp) => void quietly(() => sftp.end())
          })
          const open = Effect.uninterruptibleMask((restore) =>
            Effect.tap(
              restore(session),
              (sftp) => Effect.addFinalizer(() => Sftp.end(sftp, oneAtATime, state))
            )
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
              quietly(() => stream.close())
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
    closeAndAwait(client, () => client.end()).pipe(Effect.ensuring(Effect.sync(() => client.destroy())))

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
    resolve,
    connect: (settings: Settings) =>
      Effect.flatMap(
        resolve(settings),
        (target) =>
          connectTarget(target).pipe(
            Effect.mapError((error) => error._tag === "ConnectionError" ? namingHop(target, error) : error)
          )
      )
  }
})
