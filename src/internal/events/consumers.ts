/**
 * The consumers `Events` offers beyond NDJSON to a writer: the live board of a terminal (drawn
 * by `board.ts`, redrawn here at a bounded rate) and NDJSON appended to a file.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import type { Writer } from "../../Output.ts"
import * as Files from "../local/files.ts"
import * as Board from "./board.ts"
import type { Event } from "./event.ts"

/** `Events.BoardOptions`: how the board draws, and where. @inline */
export interface BoardOptions {
  /**
   * Where the board goes. Default: the process's standard output. Off a terminal it gets one
   * whole line per write; on a terminal, one frame (several lines and cursor moves) per write.
   */
  readonly writer?: Writer | undefined
  /**
   * Whether `writer` is a terminal that can be redrawn. Default: `process.stdout.isTTY` when
   * `writer` is the default, else `false`.
   */
  readonly isTTY?: boolean | undefined
  /** Columns to fit into. Default: the terminal's (`process.stdout.columns`), else 80; none off a terminal. */
  readonly width?: number | undefined
  /** Rows to fit into (more hosts than fit: failed and running first). Default: the terminal's. */
  readonly height?: number | undefined
  /** Time between two redraws, however many events arrive. Default: 100 milliseconds. */
  readonly interval?: Duration.Input | undefined
  /** Colour the status of each host. Default: `true` (on a terminal only). */
  readonly color?: boolean | undefined
}

const stdoutWriter: Writer = { write: (text) => Effect.sync(() => void process.stdout.write(text)) }

// A writer takes one whole line per write.
const lines = (writer: Writer, text: ReadonlyArray<string>) =>
  Effect.forEach(text, (line) => writer.write(`${line}\n`), { discard: true })

/** Runs the board over `events` until they end, then leaves its summary. */
export const board = (options: BoardOptions, events: Stream.Stream<Event>): Effect.Effect<void> =>
  Effect.gen(function*() {
    const own = options.writer === undefined
    const writer = options.writer ?? stdoutWriter
    const tty = options.isTTY ?? (own && process.stdout.isTTY === true)
    let state = Board.initial

    if (!tty) {
      // A log, not a screen: a line per change of a host's status, nothing redrawn.
      yield* Stream.runForEach(events, (event) => {
        state = Board.step(state, event)
        const line = Board.change(event)
        return line === undefined ? Effect.void : writer.write(`${line}\n`)
      })
      const now = state.lastAt ?? 0
      return yield* lines(writer, Board.summary(state, { width: options.width ?? Infinity, now }))
    }

    // Read at every frame: the terminal may be resized during the run.
    // A size of 0 is a terminal that does not know its own.
    const size = () => ({
      width: Math.max(
        20,
        (options.width ?? (own ? process.stdout.columns || undefined : undefined) ?? 80) - 1
      ),
      height: options.height ?? (own ? process.stdout.rows || undefined : undefined)
    })
    const color = options.color ?? true
    let drawn = 0
    let shown = ""
    const draw = Effect.gen(function*() {
      const frame = Board.frame(state, { ...size(), now: yield* Clock.currentTimeMillis, color })
      const body = frame.map((line) => `${line}\x1b[K\n`).join("")
      if (body === shown) return
      // Back to the board's first line, drawn over, and whatever a longer board left below cleared.
      const up = drawn > 0 ? `\r\x1b[${drawn}A` : ""
      shown = body
      drawn = frame.length
      yield* writer.write(`${up}${body}\x1b[J`)
    })
    const interval = options.interval === undefined
      ? Duration.millis(100)
      : Duration.fromInputUnsafe(options.interval)

    yield* Effect.acquireUseRelease(
      // The cursor hidden while the board runs, shown again however it ends.
      writer.write("\x1b[?25l"),
      () =>
        Effect.gen(function*() {
          // Frames come from the clock, never from events: a thousand output lines a second
          // cost a thousand steps of the state and at most ten frames.
          const ticker = yield* Effect.forkChild(Effect.repeat(draw, Schedule.spaced(interval)))
          yield* Stream.runForEach(events, (event) =>
            Effect.sync(() => {
              state = Board.step(state, event)
            }))
          yield* Fiber.interrupt(ticker)
          const erase = drawn > 0 ? `\r\x1b[${drawn}A\x1b[J` : ""
          drawn = 0
          yield* writer.write(erase)
          const now = yield* Clock.currentTimeMillis
          yield* lines(writer, Board.summary(state, { ...size(), height: undefined, now, color }))
        }),
      () => writer.write("\x1b[?25h")
    )
  })

/**
 * Appends each event as a line of JSON to `path`, created with mode 0600 (readable by its owner only: it holds the run's output lines).
 * Every batch of events waiting is one write to the system, made before the next is taken, so
 * a crash leaves every finished line in the file. A file that cannot be opened or written is
 * logged as an error and ends the consumer; the run goes on without it.
 */
export const ndjsonFile = (path: string, events: Stream.Stream<Event>): Effect.Effect<void> =>
  Effect.scoped(Effect.gen(function*() {
    const fd = yield* Effect.acquireRelease(Files.openAppend(path, 0o600), Files.close)
    const encoder = new TextEncoder()
    yield* Stream.runForEachArray(
      events,
      (batch) => Files.append(fd, encoder.encode(batch.map((event) => `${JSON.stringify(event)}\n`).join("")))
    )
  })).pipe(
    Effect.catch((error) =>
      Effect.logError(
        `Events.ndjsonFile: the events of this run are not written to ${path}: ${error.message}`
      )
    )
  )
