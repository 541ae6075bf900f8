/**
 * Port forwards on one connection, as scoped resources: a local listener whose connections are
 * carried to a host and port as the server sees them (`ssh -L`), and a listener on the server
 * whose connections are carried to a host and port here (`ssh -R`). Each connection through a
 * forward is a fiber of the forward's own `FiberSet`, so closing the scope that holds the forward
 * stops the listener and ends every connection it carried. Streams are piped, so the slower end
 * sets the pace (SSH's window on one side, TCP's on the other) and memory stays bounded.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import type * as Scope from "effect/Scope"
import * as net from "node:net"
import { type Duplex, finished } from "node:stream"
import type { Client, ClientChannel } from "ssh2"
import { quietly } from "./channel.ts"
import { hostPort, timeoutMillis } from "./errors.ts"
import type { LocalForwardOptions, RemoteForwardOptions, Target } from "./port.ts"
import type { ConnectionState } from "./request.ts"
import { request } from "./request.ts"
import { TunnelError } from "./tunnelError.ts"

/** What a forward hands a connection the server announces on its port: accept it or turn it away. */
type Incoming = (accept: () => ClientChannel, reject: () => void) => void

const isPort = (port: number, allowZero: boolean): boolean =>
  Number.isInteger(port) && port >= (allowZero ? 0 : 1) && port <= 65535

// An empty address means every interface to Node's `listen` and to sshd (GatewayPorts
// clientspecified): a value that came out empty (an unset variable) must not open the port to
// the network. Every interface is for an address written on purpose: `0.0.0.0` or `::`.
const emptyAddress = "an empty address would listen on every interface; give 127.0.0.1, or 0.0.0.0 on purpose"

// How long closing a forward waits for the server to confirm that it stopped listening. A server
// that no longer answers must not hold the scope that closes.
const unforwardWait = Duration.seconds(2)

/**
 * Carries bytes both ways between `a` and `b` until both are done, each side ending the other's
 * output when its own input ends (half-close kept: a client may send its request and its end
 * before the answer comes). An error on one side ends the other. Interrupted, both are destroyed.
 */
const splice = (a: Duplex, b: Duplex): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    let left = 2
    const done = (other: Duplex) => (error?: Error | null) => {
      if (error !== undefined && error !== null) other.destroy()
      if (--left === 0) resume(Effect.void)
    }
    const stopA = finished(a, done(b))
    const stopB = finished(b, done(a))
    a.pipe(b)
    b.pipe(a)
    return Effect.sync(() => {
      stopA()
      stopB()
      a.destroy()
      b.destroy()
    })
  }).pipe(
    // Finished normally, both are at their end already; destroying them frees the channel's
    // number on the connection without waiting for the server's close.
    Effect.ensuring(Effect.sync(() => {
      a.destroy()
      b.destroy()
    }))
  )

/**
 * The forwards of one connection. ssh2 announces every connection to any remote forward as the
 * client's one `tcp connection` event: one listener here hands each to its forward, and turns
 * away those of a forward already closed, which ssh2 would otherwise leave open for ever.
 */
export const makeTunnels = (target: Target, client: Client, state: ConnectionState) => {
  const incoming = new Map<string, Incoming>()
  client.on(
    "tcp connection",
    (info: { destIP: string; destPort: number }, accept: () => ClientChannel, reject: () => void) => {
      const forward = incoming.get(`${info.destIP}:${info.destPort}`)
      if (forward === undefined) reject()
      else forward(accept, reject)
    }
  )

  const forwardLocal = (
    options: LocalForwardOptions
  ): Effect.Effect<number, TunnelError, Scope.Scope> =>
    Effect.gen(function*() {
      const localHost = options.localHost ?? "127.0.0.1"
      const to = hostPort(options.remoteHost, options.remotePort)
      const error = (reason: TunnelError["reason"], listen: string, detail: string) =>
        new TunnelError({ direction: "local", reason, host: target.label, listen, to, detail })
      const wanted = options.localPort ?? 0
      if (!isPort(wanted, true)) {
        return yield* error("bind", hostPort(localHost, wanted), "not a port: a whole number from 0 to 65535")
      }
      if (localHost.trim() === "") return yield* error("bind", hostPort(localHost, wanted), emptyAddress)
      if (!isPort(options.remotePort, false)) {
        return yield* error(
          "connect",
          hostPort(localHost, wanted),
          "not a port: a whole number from 1 to 65535"
        )
      }
      const run = yield* FiberSet.makeRuntime<never, void, never>()
      const sockets = new Set<net.Socket>()
      let listen = hostPort(localHost, wanted)

      // One connection accepted here: a channel from the server to the destination, then the
      // bytes both ways. A destination the server cannot reach ends this connection only.
      const carry = (socket: net.Socket) =>
        Effect.gen(function*() {
          const opened = request<ClientChannel, TunnelError>({
            send: (callback) =>
              client.forwardOut(
                socket.remoteAddress ?? "127.0.0.1",
                socket.remotePort ?? 0,
                options.remoteHost,
                options.remotePort,
                callback
              ),
            failed: (cause) => error("connect", listen, `the server could not open it (${cause.message})`),
            lost: (cause) => {
              state.open = false
              return error("disconnected", listen, String(cause))
            },
            discard: (channel) => {
              channel.on("error", () => {})
              quietly(() => channel.destroy())
            }
          })
          // sshd waits about 2 minutes on a destination that does not answer.
          const limit = timeoutMillis(target.connectTimeout)
          const channel = yield* limit === 0 ? opened : Effect.timeoutOrElse(opened, {
            duration: Duration.millis(limit),
            orElse: () =>
              Effect.fail(
                error("connect", listen, `the server did not reach it within connectTimeout (${limit} ms)`)
              )
          })
          yield* splice(socket, channel)
        }).pipe(
          Effect.catch((failure) =>
            Effect.andThen(
              Effect.sync(() => socket.destroy()),
              Effect.logWarning(`[${target.label}] ${failure.message}`)
            )
          )
        )

      const server = yield* Effect.acquireRelease(
        Effect.callback<net.Server, TunnelError>((resume) => {
          const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
            sockets.add(socket)
            socket.once("close", () => sockets.delete(socket))
            // Until it is spliced, a reset socket has nothing to tell anyone.
            socket.on("error", () => {})
            run(carry(socket))
          })
          server.once("error", (cause: Error & { code?: string }) =>
            resume(Effect.fail(error("bind", listen, cause.code ?? cause.message))))
          server.listen({ host: localHost, port: wanted }, () =>
            resume(Effect.succeed(server)))
          return Effect.sync(() =>
            void server.close()
          )
        }),
        (server) =>
          Effect.callback<void>((resume) => {
            // Stops listening at once; the close completes once the accepted sockets are gone.
            server.close(() => resume(Effect.void))
            for (const socket of sockets) socket.destroy()
          }).pipe(Effect.timeoutOption(unforwardWait))
      )
      server.on("error", () => {})
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : wanted
      listen = hostPort(localHost, port)
      return port
    })

  const forwardRemote = (
    options: RemoteForwardOptions
  ): Effect.Effect<number, TunnelError, Scope.Scope> =>
    Effect.gen(function*() {
      const bindHost = options.remoteHost ?? "127.0.0.1"
      const localHost = options.localHost ?? "127.0.0.1"
      const to = hostPort(localHost, options.localPort)
      let listen = hostPort(bindHost, options.remotePort)
      const error = (reason: TunnelError["reason"], detail: string) =>
        new TunnelError({ direction: "remote", reason, host: target.label, listen, to, detail })
      if (!isPort(options.remotePort, true)) {
        return yield* error("bind", "not a port: a whole number from 0 to 65535")
      }
      if (bindHost.trim() === "") return yield* error("bind", emptyAddress)
      if (!isPort(options.localPort, false)) {
        return yield* error("connect", "not a port: a whole number from 1 to 65535")
      }
      const run = yield* FiberSet.makeRuntime<never, void, never>()

      // One connection the server accepted on its port: a local connection to the destination,
      // then the bytes both ways. When the destination refuses, the server's side is turned away.
      const deliver = (accept: () => ClientChannel, reject: () => void) =>
        Effect.gen(function*() {
          const socket = yield* Effect.callback<net.Socket, TunnelError>((resume) => {
            const socket = net.connect({ host: localHost, port: options.localPort, allowHalfOpen: true })
            socket.setNoDelay(true)
            socket.once("connect", () => resume(Effect.succeed(socket)))
            socket.once(
              "error",
              (cause: Error & { code?: string }) =>
                resume(Effect.fail(error("connect", cause.code ?? cause.message)))
            )
            return Effect.sync(() => socket.destroy())
          }).pipe(Effect.onError(() => Effect.sync(reject)))
          socket.on("error", () => {})
          const channel = accept()
          yield* splice(socket, channel)
        }).pipe(Effect.catch((failure) => Effect.logWarning(`[${target.label}] ${failure.message}`)))

      const unforward = (port: number) => {
        incoming.delete(`${bindHost}:${port}`)
        if (!state.open) return Effect.void
        return request<void, TunnelError>({
          send: (callback) => client.unforwardIn(bindHost, port, (cause) => callback(cause, undefined)),
          failed: (cause) => error("disconnected", cause.message),
          lost: (cause) => error("disconnected", String(cause)),
          discard: () => {}
        }).pipe(Effect.timeoutOption(unforwardWait), Effect.ignore)
      }

      const port = yield* Effect.acquireRelease(
        request<number, TunnelError>({
          send: (callback) =>
            client.forwardIn(bindHost, options.remotePort, (cause, port) => {
              // Registered before anything else runs: ssh2 may announce a connection to the
              // port in the same read that confirmed it.
              if (cause === undefined || cause === null) {
                incoming.set(`${bindHost}:${port}`, (accept, reject) => void run(deliver(accept, reject)))
              }
              callback(cause, port)
            }),
          failed: (cause) => error("bind", `the server refused to listen there (${cause.message})`),
          lost: (cause) => {
            state.open = false
            return error("disconnected", String(cause))
          },
          // Its requester left before the server answered: stop listening again at once.
          discard: (port) => {
            incoming.delete(`${bindHost}:${port}`)
            if (state.open) quietly(() => client.unforwardIn(bindHost, port, () => {}))
          }
        }),
        unforward
      )
      listen = hostPort(bindHost, port)
      return port
    })

  return { forwardLocal, forwardRemote }
}
