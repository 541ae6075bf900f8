/**
 * The events of a run, as one Schema, and the sink they are published to.
 *
 * Operations publish what they do (a command starting, an output line, transfer progress);
 * `Execute` publishes what it does with hosts and batches. Nothing is published unless a sink
 * is installed (`Events.consume`), so a program that does not watch pays one reference lookup
 * per line. Every event is plain JSON, so it crosses from a worker process as it is and can be
 * written out as a line of NDJSON.
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"

const at = Schema.Number
const batch = Schema.Number
const gate = Schema.Literals(["before", "after"])

/** A run of a task over hosts began: the hosts, and how many batches they form. */
export const RunStarted = Schema.TaggedStruct("RunStarted", {
  at,
  task: Schema.String,
  hosts: Schema.Array(Schema.String),
  batches: Schema.Number
})

/** A batch began: its position (from 1) and its hosts. */
export const BatchStarted = Schema.TaggedStruct("BatchStarted", {
  at,
  batch,
  hosts: Schema.Array(Schema.String)
})

/** A batch's `before` or `after` effect succeeded. */
export const GatePassed = Schema.TaggedStruct("GatePassed", { at, batch, gate })

/** A batch's `before` or `after` effect failed: the run stops. */
export const GateFailed = Schema.TaggedStruct("GateFailed", { at, batch, gate, message: Schema.String })

/** A host's run began (`attempt` counts retries from 1). */
export const HostStarted = Schema.TaggedStruct("HostStarted", {
  at,
  host: Schema.String,
  batch: Schema.optional(batch),
  attempt: Schema.Number
})

/** A command or transfer began on a host: `verb` is `run`, `sudo`, `local`, `put`, `get`, `rsync`, ... */
export const CommandStarted = Schema.TaggedStruct("CommandStarted", {
  at,
  host: Schema.String,
  verb: Schema.String,
  command: Schema.String
})

/** One whole line of a command's output (`pipe` is `out` or `err`). */
export const OutputLine = Schema.TaggedStruct("OutputLine", {
  at,
  host: Schema.String,
  pipe: Schema.String,
  line: Schema.String
})

/** Where a transfer is, a few times a second, and once more when it is done. */
export const TransferProgress = Schema.TaggedStruct("TransferProgress", {
  at,
  host: Schema.String,
  direction: Schema.Literals(["upload", "download"]),
  path: Schema.String,
  bytes: Schema.Number,
  total: Schema.optional(Schema.Number),
  done: Schema.Boolean
})

/** How a host ended, or why it never started. */
export const HostStatus = Schema.Literals(["succeeded", "failed", "interrupted", "not-started"])

/** The type of {@link HostStatus}. @inline */
export type HostStatus = typeof HostStatus.Type

/** A host's run ended (or the host was passed over: `not-started`, with the reason). */
export const HostFinished = Schema.TaggedStruct("HostFinished", {
  at,
  host: Schema.String,
  batch: Schema.optional(batch),
  status: HostStatus,
  attempts: Schema.Number,
  durationMillis: Schema.Number,
  message: Schema.optional(Schema.String)
})

/** A batch ended: its failures against its budget, and whether the run goes on. */
export const BatchFinished = Schema.TaggedStruct("BatchFinished", {
  at,
  batch,
  failures: Schema.Number,
  status: Schema.Literals(["passed", "failed"])
})

/** The run ended: `stopped` with its reason when a gate or a budget stopped it early. */
export const RunFinished = Schema.TaggedStruct("RunFinished", {
  at,
  status: Schema.Literals(["completed", "stopped"]),
  reason: Schema.optional(Schema.String),
  succeeded: Schema.Number,
  failed: Schema.Number,
  notStarted: Schema.Number
})

/** Every event of a run. */
export const Event = Schema.Union([
  RunStarted,
  BatchStarted,
  GatePassed,
  GateFailed,
  HostStarted,
  CommandStarted,
  OutputLine,
  TransferProgress,
  HostFinished,
  BatchFinished,
  RunFinished
])

/** The type of {@link Event}. @inline */
export type Event = typeof Event.Type

/** An event before its time is stamped. @inline */
export type Unstamped = Event extends infer E ? E extends Event ? Omit<E, "at"> : never : never

/** Where events go while someone watches. @inline */
export interface Sink {
  readonly publish: (event: Event) => Effect.Effect<void>
}

/** The sink of the current program; `undefined` (the default) when nobody watches. */
export const CurrentSink = Context.Reference<Sink | undefined>("effect-threadbare/Events/CurrentSink", {
  defaultValue: () => undefined
})

/** Publishes `event`, stamped with the clock's time, when a sink is installed. */
export const emit = (event: Unstamped): Effect.Effect<void> =>
  Effect.gen(function*() {
    const sink = yield* CurrentSink
    if (sink === undefined) return
    yield* sink.publish({ ...event, at: yield* Clock.currentTimeMillis } as Event)
  })
