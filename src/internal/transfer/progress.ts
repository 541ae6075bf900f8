/**
 * Progress of a transfer: a byte counter the copy loop bumps, sampled a few times a second for
 * the caller's `onProgress` and, on a terminal, one line redrawn in place.
 *
 * Sampling rather than reporting every chunk keeps the hot loop to one addition, and a slow
 * `onProgress` cannot slow the transfer down.
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import * as Events from "../events/event.ts"

/**
 * Where a transfer is, as `onProgress` receives it.
 *
 * @since 0.1.0
 */
export interface Progress {
  /** `upload`, `download`. */
  readonly direction: "upload" | "download"
  readonly host: string
  /** The path being transferred (the remote one). */
  readonly path: string
  /** Bytes moved so far. */
  readonly bytes: number
  /** Bytes in all, when known beforehand (not for a directory read with `tar`). */
  readonly total: number | undefined
  readonly elapsedMillis: number
  /** Average rate since the start. */
  readonly bytesPerSecond: number
  /** The last report of a transfer that completed: `bytes` is then the final count. */
  readonly done: boolean
}

/** What the copy loop sees: a counter to bump. */
export interface Meter {
  readonly add: (n: number) => void
  readonly bytes: () => number
  /** Reports completion (once): a last `onProgress` with `done`, and the terminal line cleared. */
  readonly finish: Effect.Effect<void>
}

const mib = (bytes: number): string => `${(bytes / (1 << 20)).toFixed(1)} MiB`

/** Transfers smaller than this finish before a progress line would be worth drawing. */
const terminalThreshold = 8 << 20

const render = (p: Progress): string =>
  `[${p.host}] ${p.direction === "upload" ? "put" : "get"}: ${p.path} ${mib(p.bytes)}` +
  (p.total === undefined
    ? ""
    : ` / ${mib(p.total)} (${Math.floor((p.bytes * 100) / Math.max(p.total, 1))}%)`) +
  ` ${mib(p.bytesPerSecond)}/s`

/**
 * Starts a meter for one transfer. Reports go to `onProgress` every `interval` and, when
 * `terminal` is true and the transfer is large or of unknown size, to one line of standard
 * output that is redrawn and cleared at the end.
 */
export const start = Effect.fnUntraced(function*(options: {
  readonly direction: "upload" | "download"
  readonly host: string
  readonly path: string
  readonly total: number | undefined
  readonly terminal: boolean
  readonly onProgress: ((progress: Progress) => Effect.Effect<void>) | undefined
  readonly intervalMillis?: number | undefined
}) {
  const started = yield* Clock.currentTimeMillis
  let bytes = 0
  let drawn = false
  let finished = false
  const draw = options.terminal && process.stdout.isTTY === true &&
    (options.total === undefined || options.total >= terminalThreshold)

  const sample = (done: boolean) =>
    Effect.gen(function*() {
      const elapsedMillis = (yield* Clock.currentTimeMillis) - started
      const progress: Progress = {
        direction: options.direction,
        host: options.host,
        path: options.path,
        bytes,
        total: options.total,
        elapsedMillis,
        bytesPerSecond: elapsedMillis > 0 ? (bytes * 1000) / elapsedMillis : 0,
        done
      }
      if (options.onProgress !== undefined) yield* options.onProgress(progress)
      yield* Events.emit({
        _tag: "TransferProgress",
        host: progress.host,
        direction: progress.direction,
        path: progress.path,
        bytes: progress.bytes,
        ...(progress.total === undefined ? {} : { total: progress.total }),
        done
      })
      if (draw && !done) {
        drawn = true
        yield* Effect.sync(() => process.stdout.write(`\r${render(progress)}\x1b[K`))
      }
    })

  const clear = Effect.sync(() => {
    if (drawn) process.stdout.write("\r\x1b[K")
    drawn = false
  })
  // A failed or interrupted transfer must not leave a half-drawn line behind.
  yield* Effect.addFinalizer(() => clear)
  yield* Effect.forkScoped(
    Effect.repeat(
      Effect.suspend(() => (finished ? Effect.void : sample(false))),
      Schedule.spaced(options.intervalMillis ?? 250)
    ).pipe(
      Effect.delay(options.intervalMillis ?? 250)
    )
  )
  const meter: Meter = {
    add: (n) => void (bytes += n),
    bytes: () => bytes,
    finish: Effect.suspend(() => {
      if (finished) return Effect.void
      finished = true
      return Effect.andThen(clear, sample(true))
    })
  }
  return meter
})
