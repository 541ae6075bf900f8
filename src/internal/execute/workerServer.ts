/**
 * The body of an `Execute` worker process, imported by `workerMain` once Node's compile cache
 * is on (never imported otherwise).
 *
 * It serves `WorkerRpcs.Run`: import the task's module, find the task, run it with the settings
 * sent by the parent (prompts refused), stream its output lines back and end with its encoded
 * `Exit`. Runs arrive concurrently (up to the per-worker share of `poolSize`); each gets its own
 * settings, output, logger and SSH connections. Interrupting the RPC interrupts the task's
 * fiber, so its finalizers (killing local and remote processes) run before the reply.
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as NodeWorkerRunner from "@effect/platform-node/NodeWorkerRunner"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Formatter from "effect/Formatter"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Queue from "effect/Queue"
import * as References from "effect/References"
import * as RpcServer from "effect/rpc/RpcServer"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { Output } from "../../Output.ts"
import { Settings } from "../../Settings.ts"
import * as Ssh from "../../Ssh.ts"
import * as Task from "../../Task.ts"
import * as Events from "../events/event.ts"
import { readableDefect, readableExit } from "./workerDefect.ts"
import { exitCodec, inWorkerKey, type RunEvent, WorkerRpcs } from "./workerProtocol.ts"
import * as WorkerSettings from "./workerSettings.ts" // Before any task module is imported: a module that runs the whole program on import would
// otherwise call Execute again in here and fork workers without end.
import { relayed } from "./workerTrace.ts"
;(globalThis as Record<symbol, unknown>)[inWorkerKey] = true

// Only for outcomes that cannot be encoded with the task's schemas (unknown task, bad value).
const defectCodec = exitCodec(Schema.Void, Schema.Never)

const encodeDefect = (defect: unknown) =>
  Schema.encodeEffect(defectCodec)(Exit.die(readableDefect(defect))).pipe(Effect.orDie)

const loadTask = Effect.fnUntraced(function*(module: string, name: string) {
  const exports: Record<string, unknown> = yield* Effect.tryPromise({
    try: () => import(module),
    catch: (cause) => new Error(`cannot import the task module ${module}: ${String(cause)}`, { cause })
  }).pipe(Effect.orDie)
  const task = Task.find(exports, name)
  if (task === undefined) {
    return yield* Effect.die(
      new Error(
        `no task named "${name}" among the exports of ${module}: declare it with Task.make at the ` +
          `top level of that module and export it`
      )
    )
  }
  return task
})

type Payload = typeof WorkerRpcs.requests extends ReadonlyMap<string, infer R>
  ? R extends { readonly _tag: "Run"; readonly payloadSchema: Schema.Top } ? R["payloadSchema"]["Type"]
  : never
  : never

const runTask = Effect.fnUntraced(function*(payload: Payload) {
  const task = yield* loadTask(payload.module, payload.name)
  const codec = exitCodec(task.success, task.error)
  const input = yield* Schema.decodeUnknownEffect(Schema.toCodecJson(task.input))(payload.input).pipe(
    Effect.orDie
  )
  const exit = readableExit(yield* Effect.exit(task.run(input)))
  return yield* Schema.encodeEffect(codec)(exit).pipe(
    Effect.catch((error) =>
      encodeDefect(new Error(`cannot encode the outcome of task ${task.name}: ${error.message}`))
    )
  )
})

// Bounded, so that a task printing faster than the parent reads (a slow `Events` consumer
// there) waits, rather than piling its lines up in this process: the RPC acknowledges each
// chunk once the parent has taken it.
const boundedCallback = <A, E = never, R = never>(
  f: (queue: Queue.Queue<A, E | Cause.Done>) => Effect.Effect<unknown, E, R | Scope.Scope>
) => Stream.callback<A, E, R>(f, { bufferSize: 64 })

/**
 * For callers that cannot wait (a Logger, a Tracer): hands `message` to the queue now if there
 * is room and nothing is waiting before it, else queues it behind the others on a fiber of its
 * own, so messages keep their order (a span's end never overtakes its start) and none is lost
 * while the run lives. Waiting offers are served in the order they were made.
 */
const inOrder = <A>(queue: Queue.Queue<A, any>) => {
  let waiting = 0
  return (message: A): void => {
    if (waiting === 0 && Queue.offerUnsafe(queue, message)) return
    waiting++
    Effect.runFork(Queue.offer(queue, message).pipe(Effect.ensuring(Effect.sync(() => void waiting--))))
  }
}

// Node's services are built once per worker, not per run: each build adds a listener to stdin
// for its terminal, and a worker takes many runs at once.
const handlers = WorkerRpcs.toLayer(Effect.map(Layer.build(NodeServices.layer), (node) => ({
  Ping: () => Effect.void,
  Run: (payload) =>
    boundedCallback<RunEvent>((queue) =>
      Effect.gen(function*() {
        const send = inOrder(queue)
        const output = {
          // Output hands over whole lines; the parent adds the newline back when it writes.
          write: (text: string) =>
            Queue.offer(queue, { _tag: "Line", text: text.endsWith("\n") ? text.slice(0, -1) : text }).pipe(
              Effect.asVoid
            )
        }
        // Logs of the task (a failed command's "Fatal error", the task's own Effect.log) go to
        // the parent, which hands them to its own Logger annotated with the host.
        const text = (value: unknown) => (typeof value === "string" ? value : Formatter.format(value))
        const logger = Logger.make<unknown, void>(({ cause, fiber, logLevel, message }) => {
          if (logLevel === "All" || logLevel === "None") return
          const parts = Array.isArray(message) ? message.map(text) : [text(message)]
          if (cause.reasons.length > 0) parts.push(Cause.pretty(cause))
          const annotations: Record<string, string> = {}
          for (const [key, value] of Object.entries(fiber.getRef(References.CurrentLogAnnotations))) {
            annotations[key] = text(value)
          }
          const entry: RunEvent = { _tag: "Log", level: logLevel, message: parts, annotations }
          // A logger cannot wait: when the queue is full, the entry waits in line on a fiber of
          // its own (dropped only when the run is gone and the queue with it).
          send(entry)
        })
        // A worker has no terminal of its own to ask on, whatever the parent's settings say.
        const settings = { ...WorkerSettings.decode(payload.settings), abortOnPrompts: true }
        const sink: Events.Sink | undefined = payload.events
          ? { publish: (event) => Queue.offer(queue, { _tag: "Event", event }).pipe(Effect.asVoid) }
          : undefined
        const trace = payload.trace
        const task = trace === undefined
          ? runTask(payload)
          : relayed(runTask(payload), trace, send)
        const exit = yield* task.pipe(
          Effect.catchDefect((defect) => encodeDefect(defect)),
          Effect.provideService(Settings, settings),
          Effect.provideService(Output, output),
          Effect.provideService(Events.CurrentSink, sink),
          // What the parent would drop is not sent (`quiet` keeps warnings and errors only).
          Effect.provideService(References.MinimumLogLevel, payload.logLevel),
          Effect.provide(Logger.layer([logger])),
          // Connections belong to the run: they close when it ends, as they would in the parent.
          Effect.provide(Ssh.layer),
          Effect.provide(node)
        )
        yield* Queue.offer(queue, { _tag: "Done", exit: exit as Schema.Json })
        yield* Queue.end(queue)
      })
    )
})))

const WorkerLive = RpcServer.layer(WorkerRpcs).pipe(
  Layer.provide(handlers),
  Layer.provide(RpcServer.layerProtocolWorkerRunner),
  Layer.provide(NodeWorkerRunner.layer)
)

const fiber = Effect.runFork(Layer.launch(WorkerLive))

const stop = () => fiber.interruptUnsafe()
// Ctrl-C reaches the whole process group; the parent decides what stops, and interrupts the
// tasks it wants stopped over the RPC. Without this, a worker would die under a task whose
// finalizers must still kill remote processes.
process.on("SIGINT", () => {})
// The same for a closed terminal, which signals its whole foreground process group.
process.on("SIGHUP", () => {})
process.on("SIGTERM", stop)
// The parent is gone (killed, or it exited without closing us): stop the tasks and exit.
// (`workerMain` keeps the replies that then fail from ending the worker with a trace.)
process.on("disconnect", stop)
// Gone already, while this module loaded: the event has passed.
if (!process.connected) stop()
fiber.addObserver((exit) => {
  process.exitCode = Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause) ? 0 : 1
  // Sockets or timers a task left behind must not keep an orphan alive.
  setImmediate(() => process.exit())
})
