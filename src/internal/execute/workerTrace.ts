/**
 * The spans of a task run in a worker process, relayed into the parent's trace.
 *
 * A worker has no exporter of its own, and asking users to configure one in every worker (with
 * the right parent span) would be a chore that breaks the trace when forgotten. Instead, when
 * the parent exports spans, it sends the span a run belongs under (`trace` in the `Run`
 * payload); the worker runs the task under a tracer that only reports its spans' starts and
 * ends over the run's stream (`SpanStart`, `SpanEnd`), and the parent re-creates them with its
 * own tracer, under the run's `host` span.
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Formatter from "effect/Formatter"
import * as Option from "effect/Option"
import * as References from "effect/References"
import type * as Schema from "effect/Schema"
import * as Tracer from "effect/Tracer"
import type { RunEvent, TraceParent } from "./workerProtocol.ts"

type Json = typeof Schema.Json.Type
type SpanStart = Extract<RunEvent, { readonly _tag: "SpanStart" }>
type SpanEnd = Extract<RunEvent, { readonly _tag: "SpanEnd" }>

// Exporters take strings, numbers, booleans and arrays of them; anything else is shown as text.
const jsonSafe = (value: unknown): Json => {
  switch (typeof value) {
    case "string":
    case "boolean":
      return value
    case "number":
      return Number.isFinite(value) ? value : String(value)
    case "bigint":
      return String(value)
  }
  if (value === null) return null
  if (Array.isArray(value)) return value.map(jsonSafe)
  return Formatter.format(value)
}

const record = (entries: Iterable<readonly [string, unknown]>): Record<string, Json> => {
  const out: Record<string, Json> = {}
  for (const [key, value] of entries) if (value !== undefined) out[key] = jsonSafe(value)
  return out
}

// -- in the worker --------------------------------------------------------------------------------

class RelaySpan implements Tracer.Span {
  readonly _tag = "Span"
  readonly name: string
  readonly parent: Option.Option<Tracer.AnySpan>
  readonly annotations: Context.Context<never>
  readonly links: Array<Tracer.SpanLink>
  readonly sampled: boolean
  readonly kind: Tracer.SpanKind
  readonly traceId: string
  status: Tracer.SpanStatus
  readonly attributes = new Map<string, unknown>()
  readonly spanId: string
  private readonly events: Array<SpanEnd["events"][number]> = []
  private readonly send: (event: RunEvent) => void

  constructor(
    options: Parameters<Tracer.Tracer["span"]>[0],
    fallbackTraceId: string,
    spanId: string,
    send: (event: RunEvent) => void
  ) {
    this.spanId = spanId
    this.send = send
    this.name = options.name
    this.parent = options.parent
    this.annotations = options.annotations
    this.links = options.links
    this.sampled = options.sampled
    this.kind = options.kind
    this.traceId = Option.isSome(options.parent) ? options.parent.value.traceId : fallbackTraceId
    this.status = { _tag: "Started", startTime: options.startTime }
    send({
      _tag: "SpanStart",
      id: spanId,
      ...(Option.isSome(options.parent) ? { parentId: options.parent.value.spanId } : {}),
      name: options.name,
      kind: options.kind,
      sampled: options.sampled,
      startTime: String(options.startTime)
    })
  }

  end(endTime: bigint, exit: Exit.Exit<unknown, unknown>): void {
    if (this.status._tag === "Ended") return
    this.status = { _tag: "Ended", startTime: this.status.startTime, endTime, exit }
    let status: SpanEnd["status"] = "ok"
    let error: SpanEnd["error"]
    if (Exit.isFailure(exit)) {
      if (Cause.hasInterruptsOnly(exit.cause)) status = "interrupted"
      else {
        status = "error"
        const first = Cause.prettyErrors(exit.cause)[0]
        if (first !== undefined) {
          error = { name: first.name, message: first.message, stack: first.stack ?? "" }
        }
      }
    }
    this.send({
      _tag: "SpanEnd",
      id: this.spanId,
      endTime: String(endTime),
      status,
      ...(error === undefined ? {} : { error }),
      attributes: record(this.attributes),
      events: this.events
    })
  }

  attribute(key: string, value: unknown): void {
    if (this.status._tag === "Ended") return
    this.attributes.set(key, value)
  }

  event(name: string, startTime: bigint, attributes?: Record<string, unknown>): void {
    if (this.status._tag === "Ended") return
    this.events.push({ name, time: String(startTime), attributes: record(Object.entries(attributes ?? {})) })
  }

  addLinks(links: ReadonlyArray<Tracer.SpanLink>): void {
    // Links name spans of this process, which the parent re-creates under other ids: dropped.
    void links
  }
}

/**
 * Runs a task's effect under the parent's span, with a tracer that reports its spans through
 * `send`. Span ids only have to be unique within the run: the parent maps them to its own.
 */
export const relayed = <A, E, R>(
  self: Effect.Effect<A, E, R>,
  parent: TraceParent,
  send: (event: RunEvent) => void
): Effect.Effect<A, E, R> => {
  let next = 0
  const tracer = Tracer.make({
    span: (options) => new RelaySpan(options, parent.traceId, (++next).toString(16).padStart(16, "0"), send)
  })
  return self.pipe(
    Effect.withParentSpan(Tracer.externalSpan(parent)),
    Effect.withTracer(tracer)
  )
}

// -- in the parent --------------------------------------------------------------------------------

/** The parent's end of one run's relay. */
export interface SpanRelay {
  /** What the worker is told to put its spans under. */
  readonly trace: TraceParent
  readonly start: (event: SpanStart) => void
  readonly end: (event: SpanEnd) => void
  /**
   * Ends the spans the worker left open (its run interrupted, the worker dead): as interrupted,
   * or failed with the run's error when the worker crashed.
   */
  readonly close: (exit: Exit.Exit<unknown, unknown>) => Effect.Effect<void>
}

const exitOf = (event: SpanEnd): Exit.Exit<unknown, unknown> => {
  if (event.status === "ok") return Exit.void
  if (event.status === "interrupted" || event.error === undefined) return Exit.interrupt()
  const error = new Error(event.error.message)
  error.name = event.error.name
  error.stack = event.error.stack
  return Exit.fail(error)
}

/**
 * A relay for a run about to start in a worker, under the current span (the run's `host`
 * span), or `undefined` when nothing would see the worker's spans: no tracer but Effect's
 * native one, tracing disabled, no current span or one not sampled.
 */
export const makeRelay: Effect.Effect<SpanRelay | undefined> = Effect.gen(function*() {
  const tracer = yield* Tracer.Tracer
  if (tracer === Tracer.nativeTracer || !(yield* References.TracerEnabled)) return undefined
  const current = yield* Effect.option(Effect.currentParentSpan)
  if (Option.isNone(current) || !current.value.sampled) return undefined
  const host = current.value
  // The worker's span ids to their copies here, while they are open.
  const open = new Map<string, Tracer.Span>()
  return {
    trace: { traceId: host.traceId, spanId: host.spanId, sampled: host.sampled },
    start: (event) => {
      const parent = (event.parentId === undefined ? undefined : open.get(event.parentId)) ?? host
      open.set(
        event.id,
        tracer.span({
          name: event.name,
          parent: Option.some(parent),
          annotations: Context.empty(),
          links: [],
          startTime: BigInt(event.startTime),
          kind: event.kind,
          root: false,
          sampled: event.sampled
        })
      )
    },
    end: (event) => {
      const span = open.get(event.id)
      if (span === undefined) return
      open.delete(event.id)
      for (const key in event.attributes) span.attribute(key, event.attributes[key])
      for (const e of event.events) span.event(e.name, BigInt(e.time), e.attributes)
      span.end(BigInt(event.endTime), exitOf(event))
    },
    close: (exit) =>
      Effect.flatMap(Clock.currentTimeNanos, (now) =>
        Effect.sync(() => {
          if (open.size === 0) return
          const crashed = Exit.isFailure(exit) &&
            Cause.findErrorOption(exit.cause).pipe(
              Option.filter((error) => (error as { _tag?: unknown })?._tag === "WorkerCrashed")
            )
          const ending: Exit.Exit<unknown, unknown> = crashed !== false && Option.isSome(crashed)
            ? Exit.fail(crashed.value)
            : Exit.interrupt()
          // Children before their parents, as they would have ended.
          for (const span of [...open.values()].reverse()) span.end(now, ending)
          open.clear()
        }))
  }
})
