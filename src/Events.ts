/**
 * What happens during a run, as a `Stream` of typed events: a run and its batches starting
 * and ending, gates passing or failing, hosts starting and finishing, commands starting, output
 * lines, transfer progress. Events from tasks in worker processes arrive here too, in order for
 * each host.
 *
 * Watch a program with {@link consume}: its events go to your consumer while it runs, through a
 * bounded buffer (a slow consumer slows the run; nothing is dropped), and the program's own
 * result comes back once the consumer has seen the last event. Built on it: {@link ndjson}
 * and {@link ndjsonFile} (one JSON object per line, for machines) and {@link board} (a live
 * table of hosts on a terminal).
 * Without a consumer nothing is recorded, and the plain prefixed lines stay the output.
 *
 * @example
 * ```ts
 * // declare: deploy: Task.Task<void, void, Errors.OperationError>
 * // declare: hosts: ReadonlyArray<string>
 * const report = yield* Execute.rolling(deploy, hosts, { batches: [1, "50%"] }).pipe(
 *   Events.consume((events) =>
 *     Stream.runForEach(events, (event) =>
 *       event._tag === "HostFinished" ? Effect.log(`${event.host}: ${event.status}`) : Effect.void)
 *   )
 * )
 * ```
 *
 * @since 0.2.0
 * @module
 */
import type * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import * as Consumers from "./internal/events/consumers.ts"
import * as Internal from "./internal/events/event.ts"
import { Output, type Writer } from "./Output.ts"

/**
 * Every event of a run, as a Schema (a union tagged by `_tag`); each carries `at`, the time in
 * milliseconds since the epoch. Its values are plain JSON.
 *
 * @example
 * ```ts
 * // declare: line: string
 * const parsed = Schema.decodeUnknownSync(Events.Event)(JSON.parse(line))
 * ```
 *
 * @since 0.2.0
 */
export const Event = Internal.Event

/**
 * One event of a run.
 *
 * @example
 * ```ts
 * const describe = (event: Events.Event) => event._tag === "OutputLine" ? `${event.host}: ${event.line}` : event._tag
 * ```
 *
 * @since 0.2.0
 */
export type Event = Internal.Event

/**
 * How a host's run ended, or `not-started` when a gate or a budget stopped the run first.
 *
 * @example
 * ```ts
 * const status: Events.HostStatus = "not-started"
 * ```
 *
 * @since 0.2.0
 */
export type HostStatus = Internal.HostStatus

/**
 * How {@link consume} runs.
 *
 * @example
 * ```ts
 * const options: Events.ConsumeOptions = { output: "hide", bufferSize: 4096 }
 * ```
 *
 * @since 0.2.0
 */
export interface ConsumeOptions {
  /**
   * `print` (the default) keeps the usual prefixed lines; `hide` prints none, for a consumer
   * that takes the terminal over (a board, NDJSON on standard output).
   */
  readonly output?: "print" | "hide" | undefined
  /** Events held for a consumer that lags before the run waits for it. Default: 1024. */
  readonly bufferSize?: number | undefined
}

const silent: Writer = { write: () => Effect.void }

/**
 * Runs a program while `consumer` reads the stream of its events, and returns the program's
 * result once the consumer has read the last one. The buffer between them is bounded: a
 * consumer that lags holds the run back rather than losing events or memory. A consumer that
 * stops reading early (a `Stream.take`) lets the run go on without it. Consumers nest: an
 * inner one sees its program's events, and the outer one sees them too.
 *
 * @example
 * ```ts
 * // declare: deploy: Task.Task<void, void, Errors.OperationError>
 * // declare: hosts: ReadonlyArray<string>
 * const failed: Array<string> = []
 * yield* Execute.withHosts(deploy, hosts).pipe(
 *   Events.consume((events) =>
 *     Stream.runForEach(events, (event) =>
 *       Effect.sync(() => {
 *         if (event._tag === "HostFinished" && event.status === "failed") failed.push(event.host)
 *       })
 *     )
 *   )
 * )
 * ```
 *
 * @since 0.2.0
 */
export const consume = <R2>(
  consumer: (events: Stream.Stream<Event>) => Effect.Effect<void, never, R2>,
  options: ConsumeOptions = {}
) =>
<A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R | R2> =>
  Effect.scoped(Effect.gen(function*() {
    const outer = yield* Internal.CurrentSink
    const queue = yield* Queue.bounded<Event, Cause.Done>(Math.max(1, options.bufferSize ?? 1024))
    // When the consumer stops early, the queue is shut down and offers return at once.
    const reader = yield* Effect.forkScoped(
      consumer(Stream.fromQueue(queue)).pipe(Effect.ensuring(Queue.shutdown(queue)))
    )
    const sink: Internal.Sink = {
      publish: (event) =>
        outer === undefined
          ? Effect.asVoid(Queue.offer(queue, event))
          : Effect.andThen(Queue.offer(queue, event), outer.publish(event))
    }
    // The program runs on a fiber of its own so that, when it is interrupted, the buffer is shut
    // down before the program's finalizers run: they publish too (a run interrupted ends with a
    // `HostFinished`), and behind a consumer that lags they would wait for room for ever. Once
    // interrupted, the consumer is interrupted as well, so those events had nowhere to go.
    const program = yield* Effect.forkScoped(
      self.pipe(
        Effect.provideService(Internal.CurrentSink, sink),
        options.output === "hide" ? Effect.provideService(Output, silent) : (effect) => effect
      )
    )
    const exit = yield* Fiber.await(program).pipe(
      Effect.onInterrupt(() => Effect.andThen(Queue.shutdown(queue), Fiber.interrupt(program)))
    )
    yield* Queue.end(queue)
    yield* Fiber.join(reader)
    return yield* exit
  }))

/**
 * A consumer that writes each event as one line of JSON (NDJSON) to `writer` (default:
 * standard output), for another program to read. Use it with `output: "hide"` when both go to
 * standard output.
 *
 * @example
 * ```ts
 * // declare: deploy: Task.Task<void, void, Errors.OperationError>
 * // declare: hosts: ReadonlyArray<string>
 * yield* Execute.rolling(deploy, hosts).pipe(Events.consume(Events.ndjson(), { output: "hide" }))
 * ```
 *
 * @since 0.2.0
 */
export const ndjson = (writer?: Writer) => (events: Stream.Stream<Event>): Effect.Effect<void> =>
  Effect.gen(function*() {
    const out = writer ?? (yield* Output)
    yield* Stream.runForEach(events, (event) => out.write(`${JSON.stringify(event)}\n`))
  })

/**
 * Appends each event as one line of JSON (NDJSON) to the file at `path` (relative to the
 * process's working directory), created readable by its owner only (mode 0600) when missing. Lines are
 * handed to the system as the events arrive, so a crash of the program leaves every finished line
 * in the file. A file that cannot be opened or written is logged with `Effect.logError` and the
 * run goes on without it (a watcher never stops a deploy).
 *
 * @example
 * ```ts
 * // declare: deploy: Task.Task<void, void, Errors.OperationError>
 * // declare: hosts: ReadonlyArray<string>
 * yield* Execute.rolling(deploy, hosts).pipe(Events.consume(Events.ndjsonFile("deploy-events.ndjson")))
 * ```
 *
 * @since 0.2.0
 */
export const ndjsonFile = (path: string) => (events: Stream.Stream<Event>): Effect.Effect<void> =>
  Consumers.ndjsonFile(path, events)

/**
 * How {@link board} draws.
 *
 * @example
 * ```ts
 * const options: Events.BoardOptions = { interval: "250 millis", color: false }
 * ```
 *
 * @interface
 * @since 0.2.0
 */
export type BoardOptions = Consumers.BoardOptions

/**
 * A consumer that draws a live board of the run on a terminal: a headline (batch, hosts done,
 * failed, running, pending), the last gate, and one line per host (pending, running with its
 * last command or output line, done, failed with its message, not started with the reason),
 * redrawn in place at most every `interval` and fitted to the terminal's width. When the events
 * end it leaves a summary: the counts and every host that did not succeed. Off a terminal (a CI
 * log) it prints a plain line per change of a host's status and per batch instead, then the
 * same summary. Use it with `output: "hide"`, or the usual lines break into the board. Its
 * memory follows the number of hosts: of each host's output it keeps the last line only.
 *
 * @example
 * ```ts
 * // declare: deploy: Task.Task<void, void, Errors.OperationError>
 * // declare: hosts: ReadonlyArray<string>
 * const report = yield* Execute.rolling(deploy, hosts, { batches: [1, "50%"] }).pipe(
 *   Events.consume(Events.board(), { output: "hide" })
 * )
 * ```
 *
 * @since 0.2.0
 */
export const board = (options: BoardOptions = {}) => (events: Stream.Stream<Event>): Effect.Effect<void> =>
  Consumers.board(options, events)

/**
 * Publishes an event of your own program to the current consumers (nothing happens when none
 * is installed): a deploy script's own milestones next to the library's.
 *
 * @example
 * ```ts
 * yield* Events.publish({ _tag: "CommandStarted", host: "lb", verb: "drain", command: "web-1" })
 * ```
 *
 * @since 0.2.0
 */
export const publish: (event: Internal.Unstamped) => Effect.Effect<void> = Internal.emit
