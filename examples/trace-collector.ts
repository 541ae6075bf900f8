/**
 * One trace for a whole rolling deploy, sent to an OpenTelemetry collector: the run, each batch,
 * each host, and every command and transfer the task runs, in worker processes included (their
 * spans are relayed to this process; nothing to set up in the workers).
 *
 *   OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 THREADBARE_SSHD_STATE=... node examples/trace-collector.ts
 *
 * Any OTLP/HTTP collector will do (Jaeger, Grafana Tempo, the OpenTelemetry Collector); without
 * one, `node examples/otlp-receiver.ts` listens on 127.0.0.1:4318 and prints what it receives.
 */
import { NodeHttpClient, NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Layer } from "effect"
import { OtlpSerialization, OtlpTracer } from "effect/observability"
import { Execute, Settings } from "../src/index.ts"
import { readServerFromEnv } from "../tests-remote/server.ts"
import { deploy } from "./execute-tasks.ts"

const server = readServerFromEnv()
const hosts = server.hosts.slice(0, 4)
const endpoint = process.env["OTEL_EXPORTER_OTLP_ENDPOINT"] ?? "http://127.0.0.1:4318"

// Effect's OTLP exporter: spans are sent in batches, and the rest when the program ends.
const TracingLive = OtlpTracer.layer({
  url: `${endpoint}/v1/traces`,
  resource: { serviceName: "deploy", serviceVersion: "v42" }
}).pipe(Layer.provide(OtlpSerialization.layerJson), Layer.provide(NodeHttpClient.layerUndici))

const main = Effect.gen(function*() {
  // A canary, then the rest: the trace has the run, two batches, four hosts and their commands.
  const report = yield* Execute.rolling(deploy, hosts, { batches: [1, "100%"], input: { release: "v42" } })
  yield* Console.log(
    `deploy ${report.status}: ${report.hosts.filter((h) => h.status === "succeeded").length} hosts`
  )
  yield* Console.log(`trace sent to ${endpoint}`)
})

main.pipe(
  Effect.provide(Settings.layer({
    port: server.port,
    user: server.user,
    keyFile: server.keyPath,
    knownHostsFile: server.knownHostsPath,
    sshConfigFile: false,
    useAgent: false
  })),
  Effect.provide(TracingLive),
  NodeRuntime.runMain
)
