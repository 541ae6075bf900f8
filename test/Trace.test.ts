/**
 * One trace for a whole run, received over HTTP: Effect's OTLP exporter in this process sends to
 * a real OTLP/HTTP receiver (a `node:http` server decoding the JSON it is posted), and the spans
 * of the commands run in worker processes must arrive there inside the run's trace.
 */
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as OtlpSerialization from "effect/observability/OtlpSerialization"
import * as OtlpTracer from "effect/observability/OtlpTracer"
import * as http from "node:http"
import * as Execute from "../src/Execute.ts"
import * as Settings from "../src/Settings.ts"
import { readServerFromEnv, remoteProcesses } from "../tests-remote/server.ts"
import { crashInSpan, tracedSleep, tracedStep } from "./fixtures/trace-tasks.ts"
import { connectionSettings, uniqueMarker } from "./support.ts"

/** A span as received, its attributes decoded from OTLP's typed values. */
interface Received {
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId: string | undefined
  readonly name: string
  readonly attributes: Record<string, unknown>
  readonly status: { readonly code: number; readonly message?: string }
}

interface OtlpValue {
  readonly stringValue?: string
  readonly boolValue?: boolean
  readonly intValue?: number | string
  readonly doubleValue?: number
  readonly arrayValue?: { readonly values: ReadonlyArray<OtlpValue> }
}

const decodeValue = (value: OtlpValue): unknown =>
  value.stringValue ?? value.boolValue ??
    (value.intValue !== undefined ? Number(value.intValue) : undefined) ?? value.doubleValue ??
    value.arrayValue?.values.map(decodeValue)

/** An OTLP/HTTP receiver on a free port of 127.0.0.1, closed with the scope. */
const receiver = Effect.acquireRelease(
  Effect.callback<{ readonly url: string; readonly spans: Array<Received>; server: http.Server }>(
    (resume) => {
      const spans: Array<Received> = []
      const server = http.createServer((request, response) => {
        const chunks: Array<Buffer> = []
        request.on("data", (chunk: Buffer) => chunks.push(chunk))
        request.on("end", () => {
          if (request.method !== "POST" || request.url !== "/v1/traces") {
            response.writeHead(404).end()
            return
          }
          const body = JSON.parse(Buffer.concat(chunks).toString("utf8"))
          for (const resource of body.resourceSpans ?? []) {
            for (const scope of resource.scopeSpans ?? []) {
              for (const span of scope.spans ?? []) {
                spans.push({
                  traceId: span.traceId,
                  spanId: span.spanId,
                  parentSpanId: span.parentSpanId || undefined,
                  name: span.name,
                  attributes: Object.fromEntries(
                    (span.attributes ?? []).map((
                      a: { key: string; value: OtlpValue }
                    ) => [a.key, decodeValue(a.value)])
                  ),
                  status: span.status
                })
              }
            }
          }
          response.writeHead(200, { "content-type": "application/json" }).end("{}")
        })
      })
      server.listen(0, "127.0.0.1", () => {
        const address = server.address() as { port: number }
        resume(Effect.succeed({ url: `http://127.0.0.1:${address.port}/v1/traces`, spans, server }))
      })
    }
  ),
  ({ server }) =>
    Effect.callback<void>((resume) => {
      server.close(() => resume(Effect.void))
    })
)

/** Runs `program` with Effect's OTLP exporter sending to `url`; every span is sent when it returns. */
const exported = <A, E>(url: string, program: Effect.Effect<A, E>) =>
  program.pipe(
    Effect.provide(
      OtlpTracer.layer({ url, resource: { serviceName: "threadbare-test" }, exportInterval: "100 millis" })
        .pipe(
          Layer.provide(OtlpSerialization.layerJson),
          Layer.provide(NodeHttpClient.layerUndici)
        )
    )
  )

/** The chain of spans from `span` up to the root, `span` first. */
const ancestry = (spans: ReadonlyArray<Received>, span: Received): Array<Received> => {
  const byId = new Map(spans.map((s) => [s.spanId, s]))
  const chain = [span]
  let current: Received | undefined = span
  while (current?.parentSpanId !== undefined) {
    current = byId.get(current.parentSpanId)
    if (current === undefined) break
    chain.push(current)
  }
  return chain
}

const named = (spans: ReadonlyArray<Received>, name: string) => spans.filter((s) => s.name === name)

describe("One trace for a whole run", () => {
  const server = readServerFromEnv()
  const hosts = server.hosts.slice(0, 2)
  const connection = <A, E, R>(self: Effect.Effect<A, E, R>) =>
    self.pipe(
      Settings.hide,
      Settings.settings({ ...connectionSettings(server), port: server.port, user: server.user })
    )
  const prefix = () => `/tmp/${uniqueMarker("trace")}`

  /** Checks that the commands and transfers of every host are in `root`'s trace, under their host. */
  const checkTree = (spans: ReadonlyArray<Received>, rootName: string) => {
    const [root] = named(spans, rootName)
    assert.isDefined(root, `no ${rootName} span among ${spans.map((s) => s.name).join(", ")}`)
    for (const span of spans) {
      assert.strictEqual(span.traceId, root!.traceId, `${span.name} is in another trace`)
    }
    const commands = named(spans, "Operations.remote")
    assert.strictEqual(commands.length, 2)
    for (const host of hosts) {
      const command = commands.find((c) => c.attributes["host"] === host)
      assert.isDefined(command, `no command span for ${host}`)
      assert.match(String(command!.attributes["command"]), /^cat \/tmp\/.* && rm -f /)
      assert.strictEqual(command!.attributes["exitCode"], 0)
      const chain = ancestry(spans, command!)
      const names = chain.map((s) => s.name)
      assert.strictEqual(chain.at(-1)!.spanId, root!.spanId, `not under the run: ${names.join(" < ")}`)
      assert.include(names, "deploy step")
      const hostSpan = chain.find((s) => s.name === `host ${host}`)
      assert.isDefined(hostSpan, names.join(" < "))
      assert.strictEqual(hostSpan!.attributes["host"], host)
      const upload = named(spans, "Transfer.upload").find((u) => u.attributes["host"] === host)
      assert.isDefined(upload, `no upload span for ${host}`)
      assert.strictEqual(ancestry(spans, upload!)[1]!.name, "deploy step")
      assert.match(String(upload!.attributes["remote"]), new RegExp(`-${host}$`))
      assert.strictEqual(upload!.attributes["bytes"], 7)
    }
    for (const span of spans) {
      assert.notStrictEqual(span.status.code, 2, `${span.name}: ${span.status.message}`)
    }
  }

  it.live("a rolling run on workers: their spans are in the run's trace", () =>
    Effect.gen(function*() {
      const { spans, url } = yield* receiver
      const report = yield* exported(
        url,
        Execute.rolling(tracedStep, hosts, {
          input: prefix(),
          batches: [1, "100%"],
          poolSize: 2,
          mode: "parallel"
        })
      ).pipe(connection)
      assert.strictEqual(report.status, "completed")
      checkTree(spans, "Execute.rolling")
      for (const batch of [1, 2]) {
        const [span] = named(spans, `batch ${batch}`)
        assert.isDefined(span)
        assert.strictEqual(span!.attributes["batch"], batch)
        assert.strictEqual(span!.attributes["hosts"], 1)
        assert.strictEqual(named(spans, "Execute.rolling")[0]!.spanId, span!.parentSpanId)
      }
      assert.strictEqual(named(spans, `host ${hosts[1]}`)[0]!.attributes["batch"], 2)
    }).pipe(Effect.scoped), 120_000)

  it.live("runs on fibers of this process: the same tree", () =>
    Effect.gen(function*() {
      const { spans, url } = yield* receiver
      const outcomes = yield* exported(
        url,
        Execute.withHosts(tracedStep, hosts, { input: prefix(), mode: "fibers" })
      ).pipe(connection)
      assert.deepStrictEqual(outcomes.map((o) => o.exit._tag), ["Success", "Success"])
      checkTree(spans, "Execute.withHosts")
    }).pipe(Effect.scoped), 120_000)

  it.live(
    "an interrupted run in a worker: its command's span still ends, as interrupted",
    () =>
      Effect.gen(function*() {
        const { spans, url } = yield* receiver
        const mark = uniqueMarker("tracesleep")
        yield* exported(
          url,
          Effect.gen(function*() {
            const fiber = yield* Effect.forkChild(
              Execute.withHosts(tracedSleep, hosts.slice(0, 1), { input: mark, mode: "parallel" })
            )
            for (let i = 0; i < 200 && remoteProcesses(mark).length === 0; i++) {
              yield* Effect.sleep(Duration.millis(100))
            }
            assert.isAbove(remoteProcesses(mark).length, 0, "the remote command never started")
            yield* Fiber.interrupt(fiber)
          })
        ).pipe(connection)
        const [command] = named(spans, "Operations.remote")
        assert.isDefined(command, `no command span among ${spans.map((s) => s.name).join(", ")}`)
        assert.strictEqual(command!.attributes["effect.fiber.interrupted"], true)
        assert.strictEqual(ancestry(spans, command!).at(-1)!.name, "Execute.withHosts")
      }).pipe(Effect.scoped),
    120_000
  )

  it.live(
    "a worker that dies inside a span: the parent ends the span as failed, in the run's trace",
    () =>
      Effect.gen(function*() {
        const { spans, url } = yield* receiver
        const outcomes = yield* exported(
          url,
          Execute.withHosts(crashInSpan, hosts.slice(0, 1), { mode: "parallel", isolateCrashes: false })
        ).pipe(connection)
        assert.strictEqual(Exit.isFailure(outcomes[0]!.exit), true)
        const [doomed] = named(spans, "doomed step")
        assert.isDefined(doomed, `no span of the dead worker among ${spans.map((s) => s.name).join(", ")}`)
        assert.strictEqual(doomed!.status.code, 2, "ended as an error")
        assert.strictEqual(ancestry(spans, doomed!).at(-1)!.name, "Execute.withHosts")
        assert.strictEqual(new Set(spans.map((s) => s.traceId)).size, 1)
      }).pipe(Effect.scoped),
    120_000
  )
})
