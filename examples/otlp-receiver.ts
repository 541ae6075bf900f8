/**
 * A stand-in for an OpenTelemetry collector: takes OTLP/HTTP traces in JSON on
 * http://127.0.0.1:4318/v1/traces (or the port given as first argument, 0 for any free one)
 * and, when stopped (Ctrl-C, SIGTERM), prints the spans it received as a tree.
 * `examples/run-all.ts` runs `trace-collector.ts` against it.
 *
 *   node examples/otlp-receiver.ts
 */
import * as http from "node:http"

interface Span {
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId?: string
  readonly name: string
  readonly attributes?: ReadonlyArray<
    { readonly key: string; readonly value: { readonly stringValue?: string } }
  >
}

const spans: Array<Span> = []
const server = http.createServer((request, response) => {
  const chunks: Array<Buffer> = []
  request.on("data", (chunk: Buffer) => chunks.push(chunk))
  request.on("end", () => {
    if (request.method === "POST" && request.url === "/v1/traces") {
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8"))
      for (const resource of body.resourceSpans ?? []) {
        for (const scope of resource.scopeSpans ?? []) spans.push(...(scope.spans ?? []))
      }
      response.writeHead(200, { "content-type": "application/json" }).end("{}")
    } else {
      response.writeHead(404).end()
    }
  })
})

const print = () => {
  const children = new Map<string | undefined, Array<Span>>()
  const ids = new Set(spans.map((s) => s.spanId))
  for (const span of spans) {
    const parent = span.parentSpanId !== undefined && ids.has(span.parentSpanId)
      ? span.parentSpanId
      : undefined
    children.set(parent, [...(children.get(parent) ?? []), span])
  }
  const traces = new Set(spans.map((s) => s.traceId))
  console.log(`received ${spans.length} spans in ${traces.size} trace(s)`)
  const show = (span: Span, depth: number) => {
    const command = span.attributes?.find((a) => a.key === "command")?.value.stringValue
    console.log(`${"  ".repeat(depth)}${span.name}${command === undefined ? "" : `: ${command}`}`)
    for (const child of children.get(span.spanId) ?? []) show(child, depth + 1)
  }
  for (const root of children.get(undefined) ?? []) show(root, 1)
}

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    print()
    server.close()
    process.exit(0)
  })
}
server.listen(Number(process.argv[2] ?? 4318), "127.0.0.1", () => {
  console.log(`listening on http://127.0.0.1:${(server.address() as { port: number }).port}`)
})
