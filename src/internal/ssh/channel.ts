/**
 * A command on an SSH channel as an Effect-native handle (`Ssh.CommandHandle`): its output a
 * pulled `Stream` whose consumer sets the pace through SSH's window, its exit an `Effect`, its
 * input a `Sink` that waits for the channel to take more. The ssh2 channel never leaves here.
 */
import type * as Arr from "effect/Array"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import type { Client, ClientChannel } from "ssh2"
import type { ConnectionError } from "../../Errors.ts"
import { classify, connectionError } from "./errors.ts"
import type { CommandHandle, ExitStatus, OutputChunk, Target } from "./port.ts"
import { type ConnectionState, lostConnection, request } from "./request.ts"

const normaliseSignal = (signal: string): string => signal.startsWith("SIG") ? signal : `SIG${signal}`

// A pty without echo (nothing written to the command, a sudo password included, comes back) and
// without \n -> \r\n translation (output keeps its own line ends).
const ptyOptions = { term: "dumb", cols: 200, rows: 50, modes: { ECHO: 0, ONLCR: 0 } } as const

// How many bytes of output a channel may hold for a consumer that has not pulled them yet before
// its streams are paused. Paused, ssh2 stops granting the server window once its own stream
// buffer is full, so a slow consumer slows the remote command instead of growing memory: a
// channel holds at most this (and the chunks of the last pull, in the consumer's hands) plus
// ssh2's own buffers (its 2 MiB window and stream high-water mark per stream). A pull takes
// everything held, so the streams resume as soon as the consumer comes back for more.
const highWater = 1024 * 1024

/**
 * Wires an open channel into a handle. Output is kept in arrival order (standard output and
 * error interleaved as they came) in one bounded buffer that the stream's pulls empty; the exit
 * is known once the channel has closed and both its streams have delivered everything.
 */
const wire = (target: Target, state: ConnectionState, channel: ClientChannel) => {
  let chunks: Array<OutputChunk> = []
  let buffered = 0
  let paused = false
  // Set when the handle is closed: what arrives after that is no longer wanted.
  let discarding = false
  let outEnded = false
  let errEnded = false
  let closed = false
  let status: ExitStatus | undefined
  // Every fiber waiting for output: a handle's output may be read by more than one at a time.
  const waiting = new Set<() => void>()
  const exit = Deferred.makeUnsafe<ExitStatus, ConnectionError>()

  const notify = () => {
    if (waiting.size === 0) return
    const woken = [...waiting]
    waiting.clear()
    for (const wake of woken) wake()
  }
  const push = (chunk: OutputChunk) => {
    if (discarding) return
    chunks.push(chunk)
    buffered += chunk.data.length
    if (!paused && buffered > highWater) {
      paused = true
      channel.pause()
      channel.stderr.pause()
    }
    notify()
  }
  // `close` comes once standard output has ended; standard error may still hold data when the
  // consumer is behind, so the end is reported only after both streams have delivered it all.
  const settle = () => {
    notify()
    if (!(closed && outEnded && errEnded)) return
    Deferred.doneUnsafe(
      exit,
      status !== undefined ? Effect.succeed(status) : Effect.fail(
        state.lastError ??
          connectionError(
            target,
            "disconnected",
            state.open
              ? "the command's channel closed without an exit status (its session was killed on the server)"
              : "the connection dropped while the command ran"
          )
      )
    )
  }
  channel.on("data", (data: Buffer) => push({ _tag: "Stdout", data }))
  channel.stderr.on("data", (data: Buffer) => push({ _tag: "Stderr", data }))
  channel.once("end", () => {
    outEnded = true
    settle()
  })
  channel.stderr.once("end", () => {
    errEnded = true
    settle()
  })
  channel.on("exit", (code: number | null, signalName?: string) => {
    status = {
      exitCode: typeof code === "number" ? code : null,
      signal: typeof signalName === "string" ? normaliseSignal(signalName) : null
    }
  })
  // Channel errors also end in `close`; the listener only keeps them from being thrown.
  channel.on("error", () => {})
  channel.once("close", () => {
    closed = true
    // A stream that was destroyed rather than ended never reports its `end`.
    if (!channel.readable) outEnded = true
    if (!channel.stderr.readable) errEnded = true
    settle()
  })

  const arrival = Effect.callback<void>((resume) => {
    const wake = () => resume(Effect.void)
    waiting.add(wake)
    return Effect.sync(() => void waiting.delete(wake))
  })
  const pull: Effect.Effect<Arr.NonEmptyReadonlyArray<OutputChunk>, Cause.Done> = Effect.suspend(() => {
    if (chunks.length > 0) {
      const taken = chunks as unknown as Arr.NonEmptyReadonlyArray<OutputChunk>
      chunks = []
      buffered = 0
      if (paused) {
        paused = false
        channel.resume()
        channel.stderr.resume()
      }
      return Effect.succeed(taken)
    }
    if (outEnded && errEnded) return Cause.done()
    return Effect.andThen(arrival, pull)
  })

  // Done once ssh2 has taken the bytes into packets (its write callback), or the channel closed:
  // until then ssh2 may still hold them, so a caller may reuse its buffer only after this. A full
  // channel (the server's window spent) is waited on until the server takes more; input is no
  // longer read once the channel has closed.
  const write = (data: Uint8Array | string): Effect.Effect<void> =>
    Effect.suspend(() => {
      if (closed || !channel.writable) return Effect.void
      return Effect.callback<void>((resume) => {
        let settled = false
        const done = () => {
          if (settled) return
          settled = true
          channel.off("close", done)
          resume(Effect.void)
        }
        channel.on("close", done)
        if (!quietly(() => channel.write(data, () => done()))) done()
        return Effect.sync(() => {
          settled = true
          channel.off("close", done)
        })
      })
    })
  const endInput = Effect.sync(() => void (channel.writable && quietly(() => channel.end())))

  const close = Effect.suspend(() => {
    // Held output is no longer wanted; flowing, the streams can end and `close` come.
    discarding = true
    chunks = []
    buffered = 0
    if (closed) return Effect.void
    // A dead connection may never confirm; ssh2 cleans its channels up on its own then.
    return closeAndAwait(channel, () => {
      channel.resume()
      channel.stderr.resume()
      channel.close()
    }).pipe(Effect.ensuring(Effect.sync(() => void (closed = true))))
  })

  const handle: CommandHandle = {
    output: Stream.fromPull(Effect.succeed(pull)),
    exit: Deferred.await(exit),
    stdin: Sink.forEach(write).pipe(Sink.mapEffect(() => endInput)),
    write,
    endInput
  }
  return { handle, close }
}

/**
 * Calls ssh2 where it may throw because the connection has just gone (its protocol refuses every
 * write once the socket closed, before the channels hear of it): the connection's own error and
 * the channel's close report that, typed, so the throw itself is only swallowed. `false` if it threw.
 */
export const quietly = (f: () => unknown): boolean => {
  try {
    f()
    return true
  } catch {
    return false
  }
}

/**
 * Runs `close` (an ssh2 end or close) and waits for the `close` event it brings, 2 s at most: a
 * connection that died may never confirm. When `close` throws, the connection is already gone and
 * there is nothing to wait for.
 */
export const closeAndAwait = (
  emitter: { once(event: "close", listener: () => void): unknown },
  close: () => void
): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    emitter.once("close", () => resume(Effect.void))
    if (!quietly(close)) resume(Effect.void)
  }).pipe(Effect.timeoutOption(Duration.seconds(2)), Effect.asVoid)

/**
 * Opens a channel running `command`, closed when the scope closes. The open is interruptible:
 * ssh2 cannot cancel a channel request in flight, so an interrupted open waits (bounded) for the
 * answer and closes a channel that arrives late at once, before its slot is given back; the
 * command's own guard (see `remote/run.ts`) stops it when its channel closes.
 */
export const openChannel = (
  target: Target,
  client: Client,
  state: ConnectionState,
  command: string,
  pty: boolean,
  onSent?: () => void
): Effect.Effect<CommandHandle, ConnectionError, Scope.Scope> => {
  const acquire = Effect.suspend(() =>
    state.open
      ? request<ClientChannel>({
        // ssh2 throws, having sent nothing, on a socket it knows is gone.
        send: (callback) => {
          client.exec(command, pty ? { pty: ptyOptions } : {}, callback)
          onSent?.()
        },
        failed: (error) => state.open ? classify(target, error) : state.lastError ?? classify(target, error),
        lost: (cause) => lostConnection(target, state, cause),
        // Its requester is gone: close it now; nothing of it is wanted.
        discard: (channel) => {
          channel.on("error", () => {})
          channel.resume()
          channel.stderr.resume()
          quietly(() => channel.close())
        },
        awaitLate: { atMost: Duration.seconds(5), while: () => state.open }
      })
      : Effect.fail(state.lastError ?? connectionError(target, "disconnected", "the connection is closed"))
  )
  return Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(restore(acquire), (channel) => {
      const { close, handle } = wire(target, state, channel)
      return Effect.as(Effect.addFinalizer(() => close), handle)
    })
  )
}
