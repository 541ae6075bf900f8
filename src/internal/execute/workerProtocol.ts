/**
 * The one RPC between `Execute` and its worker processes.
 *
 * `Run` names a task by module and name and streams back the lines it prints, then its outcome.
 * `Ping` only proves that the worker's event loop still turns.
 * Inputs, results and errors have a schema per task, which the RPC group cannot know, so they
 * travel as JSON already encoded by the task's own schemas; each end decodes with the task.
 */
import * as LogLevel from "effect/LogLevel"
import * as Rpc from "effect/rpc/Rpc"
import * as RpcGroup from "effect/rpc/RpcGroup"
import * as Schema from "effect/Schema"
import { Event } from "../events/event.ts"
import { SettingsWire } from "./workerSettings.ts"

/**
 * What a running task sends back: a whole output line, an event of the run (when the parent
 * watches them), a log entry for the parent's `Logger`, and once at the end its encoded `Exit`.
 */
export const RunEvent = Schema.Union([
  Schema.TaggedStruct("Line", { text: Schema.String }),
  Schema.TaggedStruct("Event", { event: Event }),
  Schema.TaggedStruct("Log", {
    level: Schema.Literals(["Trace", "Debug", "Info", "Warn", "Error", "Fatal"]),
    message: Schema.Array(Schema.String),
    annotations: Schema.Record(Schema.String, Schema.String)
  }),
  // Spans of the task, re-created by the parent in its own trace (only when it sent `trace`).
  // A span's attributes and events travel with its end: Effect sets them after the span starts.
  Schema.TaggedStruct("SpanStart", {
    id: Schema.String,
    parentId: Schema.optional(Schema.String),
    name: Schema.String,
    kind: Schema.Literals(["internal", "server", "client", "producer", "consumer"]),
    sampled: Schema.Boolean,
    /** Nanoseconds since the epoch, a bigint as its decimal digits. */
    startTime: Schema.String
  }),
  Schema.TaggedStruct("SpanEnd", {
    id: Schema.String,
    endTime: Schema.String,
    status: Schema.Literals(["ok", "error", "interrupted"]),
    /** The first error of a failed span, as Effect's exporters show it. */
    error: Schema.optional(
      Schema.Struct({ name: Schema.String, message: Schema.String, stack: Schema.String })
    ),
    attributes: Schema.Record(Schema.String, Schema.Json),
    events: Schema.Array(Schema.Struct({
      name: Schema.String,
      time: Schema.String,
      attributes: Schema.Record(Schema.String, Schema.Json)
    }))
  }),
  Schema.TaggedStruct("Done", { exit: Schema.Json })
])

/** The parent's span a run's spans belong under, sent when the parent exports its spans. */
export const TraceParent = Schema.Struct({
  traceId: Schema.String,
  spanId: Schema.String,
  sampled: Schema.Boolean
})

/** The type of {@link TraceParent}. */
export type TraceParent = typeof TraceParent.Type

/** The type of {@link RunEvent}. */
export type RunEvent = typeof RunEvent.Type

/** The RPCs a worker serves. */
export class WorkerRpcs extends RpcGroup.make(
  Rpc.make("Run", {
    payload: {
      module: Schema.String,
      name: Schema.String,
      input: Schema.Json,
      settings: SettingsWire,
      /** Send the run's events back (the parent has a sink installed). */
      events: Schema.Boolean,
      /** The least severe log entry the parent keeps for this run; the worker drops the rest. */
      logLevel: Schema.Literals(LogLevel.values),
      /** Relay the task's spans under this span of the parent; absent, the worker keeps none. */
      trace: Schema.optional(TraceParent)
    },
    success: RunEvent,
    stream: true
  }),
  // Answered at once by a worker whose event loop turns: `Execute` asks after interrupting a
  // run, and kills a worker that does not answer (a task looping on the CPU never yields).
  Rpc.make("Ping")
) {}

/**
 * The JSON codec of a task's outcome, used by both ends. An `Error` defect keeps its stack (where
 * the task died, in the worker) and its chain of causes; see `workerServer` for other defects.
 */
export const exitCodec = <A, E>(success: Schema.Codec<A, any>, error: Schema.Codec<E, any>) =>
  Schema.toCodecJson(Schema.Exit(success, error, Schema.Defect({ includeStack: true })))

/** Set in a worker process before any task module is imported (see `Execute`'s guard). */
export const inWorkerKey = Symbol.for("effect-threadbare/Execute/inWorker")
