/**
 * ssh2's requests (a channel, an SFTP session, a forward) as interruptible Effects, and what a
 * connection's listeners record, which those requests consult.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type { ConnectionError } from "../../Errors.ts"
import { connectionError } from "./errors.ts"
import type { Target } from "./port.ts"

/** What a connection's listeners record over its life. */
export interface ConnectionState {
  open: boolean
  /** The error that ended the connection, if it ended with one. */
  lastError: ConnectionError | undefined
}

/**
 * Asks ssh2 for something it answers through a callback (a channel, an SFTP session, a forward),
 * interruptibly. ssh2 cannot cancel a request in flight, so one answered after its requester left
 * is handed to `discard` at once; with `awaitLate`, the interruption also waits for such a late
 * answer (bounded, and only while it can still come), so that what it holds (a session slot) is
 * given back only once nothing can still arrive. ssh2 throws when its socket is no longer writable: that is `lost`.
 */
export const request = <A, E = ConnectionError>(options: {
  readonly send: (callback: (error: Error | undefined | null, value: A) => void) => void
  readonly failed: (error: Error) => E
  readonly lost: (cause: unknown) => E
  readonly discard: (value: A) => void
  readonly awaitLate?: { readonly atMost: Duration.Duration; readonly while: () => boolean } | undefined
}): Effect.Effect<A, E> =>
  Effect.callback<A, E>((resume) => {
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
export const lostConnection = (target: Target, state: ConnectionState, cause: unknown): ConnectionError => {
  state.open = false
  return state.lastError ??
    connectionError(target, "disconnected", `the connection is closed (${String(cause)})`)
}

// sshd frees a session slot a moment after the client sees its channel close, so a refusal on a
// live connection means "busy", not "gone": wait and try again, 5 ms, then 10, 20... 8 times.
// The retry is set up only once a refusal has happened: its schedule costs every command else.
export const isBusy = (state: ConnectionState, error: ConnectionError): boolean =>
  state.open && error.reason === "channel-refused"

export const retryBusy = <A>(
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
