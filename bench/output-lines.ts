/**
 * Output handling must be linear: a command's output costs about the same however it is cut into
 * lines. This runs a local command and a remote command (against the throwaway sshd on loopback)
 * that print
 *
 *   - 50 MB as one line, next to the same bytes in 80-byte lines, and
 *   - a 3 MB progress bar of `\r` without a newline, written 40 bytes at a time, next to the same
 *     writes ending in `\n`,
 *
 * each kept in the result and with `discardOutput`, and prints, for each, the library's CPU time,
 * the wall time and the peak RSS over the baseline, and the ratio long line / short lines (the
 * target: at most 2x). Each run is a Node process of its own (this file with `--one ...`), so that
 * one run's heap does not count for the next.
 *
 *   scripts/node.sh node bench/output-lines.ts
 *
 * Environment: BENCH_LINE_MB (the one line, default 50), BENCH_BAR_MB (the bar, default 3).
 * Needs OpenSSH's sshd. A benchmark, not a test: it fails only when a command fails or its output
 * comes back wrong.
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import { fileURLToPath } from "node:url"
import { local, remote } from "../src/Operations.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import { readServer, startServer } from "../tests-remote/server.ts"
import {
  captureProcess,
  envInt,
  fmt,
  fmtMiB,
  fmtMs,
  fmtRatio,
  librarySettings,
  machineNote,
  metText,
  now,
  sampleRss,
  summary,
  table
} from "./lib.ts"

const self = fileURLToPath(import.meta.url)
const LINE_BYTES = envInt("BENCH_LINE_MB", 50) * 1_000_000
const BAR_BYTES = envInt("BENCH_BAR_MB", 3) * 1_000_000

type Where = "local" | "remote"
type Shape = "one-line" | "short-lines" | "cr-bar" | "nl-bar"

// The bar: 40 bytes per write, as a progress display writes them (one printf per update).
const BAR = " 42% [==============>        ] 1.2 MB/s"

/** A shell command printing `shape`, and how many bytes and lines it prints. */
const commandOf = (
  shape: Shape
): { readonly command: string; readonly bytes: number; readonly lines: number } => {
  switch (shape) {
    case "one-line":
      return {
        command: `head -c ${LINE_BYTES - 1} /dev/zero | tr '\\0' x; echo`,
        bytes: LINE_BYTES,
        lines: 1
      }
    case "short-lines": {
      const lines = Math.floor(LINE_BYTES / 80)
      return {
        command: `yes ${"x".repeat(79)} | head -n ${lines}`,
        bytes: lines * 80,
        lines
      }
    }
    case "cr-bar":
    case "nl-bar": {
      const end = shape === "cr-bar" ? "\\r" : "\\n"
      const writes = Math.floor(BAR_BYTES / (BAR.length + 1))
      return {
        command: `i=0; while [ $i -lt ${writes} ]; do printf '%s${end}' '${BAR}'; i=$((i+1)); done`,
        bytes: writes * (BAR.length + 1),
        lines: shape === "cr-bar" ? 1 : writes
      }
    }
  }
}

interface One {
  readonly wallMs: number
  /** CPU time of this process (the library; not the command, nor sshd) during the command. */
  readonly cpuMs: number
  readonly rssDelta: number
  readonly stdoutLength: number
}

/** One run, in a process of its own: `--one <where> <shape> <keep|discard> <stateDir>`. */
const one = async (where: Where, shape: Shape, discard: boolean, stateDir: string): Promise<void> => {
  const server = readServer(stateDir)
  const settings = Settings.layer({
    ...librarySettings(server),
    host: server.host,
    capture: true,
    discardOutput: discard
  })
  const runtime = ManagedRuntime.make(Layer.mergeAll(Ssh.layer, NodeServices.layer, settings))
  const { command, bytes } = commandOf(shape)
  const run = (
    line: string
  ): Effect.Effect<number, unknown, Ssh.SshConnections | NodeServices.NodeServices> =>
    where === "local"
      ? Effect.map(local(line), (result) => result.stdout.length)
      : Effect.map(remote(line), (result) => result.stdout.length)
  // Warm: the connection, and code run for the first time.
  await runtime.runPromise(run("echo warm"))
  ;(globalThis as { gc?: () => void }).gc?.()
  const rss = sampleRss(10)
  const cpuStart = process.cpuUsage()
  const start = now()
  const result = await runtime.runPromise(run(command))
  const wallMs = now() - start
  const cpu = process.cpuUsage(cpuStart)
  const { delta } = rss.stop()
  await runtime.dispose()
  if (result !== (discard ? 0 : bytes)) {
    throw new Error(`${where} ${shape}: expected ${discard ? 0 : bytes} characters of output, got ${result}`)
  }
  const report: One = { wallMs, cpuMs: (cpu.user + cpu.system) / 1000, rssDelta: delta, stdoutLength: result }
  process.stdout.write(JSON.stringify(report))
}

const runOne = async (where: Where, shape: Shape, discard: boolean, stateDir: string): Promise<One> =>
  JSON.parse(
    await captureProcess(process.execPath, [
      "--expose-gc",
      self,
      "--one",
      where,
      shape,
      discard ? "discard" : "keep",
      stateDir
    ])
  ) as One

const main = async (): Promise<void> => {
  console.log(`Output handling: the same bytes as one long line and as short lines. ${await machineNote()}`)
  const server = await startServer({ hostCount: 1 })
  const rows: Array<Array<string>> = []
  const summaryRows: Parameters<typeof summary>[0][number][] = []
  try {
    for (const where of ["local", "remote"] as const) {
      for (const discard of [false, true]) {
        for (const [long, short] of [["one-line", "short-lines"], ["cr-bar", "nl-bar"]] as const) {
          const a = await runOne(where, long, discard, server.stateDir)
          const b = await runOne(where, short, discard, server.stateDir)
          const mode = discard ? "discardOutput" : "kept"
          const size = long === "one-line" ? `${LINE_BYTES / 1e6} MB` : `${BAR_BYTES / 1e6} MB`
          rows.push([
            `${where}, ${size} ${long} vs ${short}, ${mode}`,
            `${fmtMs(a.cpuMs)} / ${fmtMs(b.cpuMs)}`,
            fmtRatio(a.cpuMs, b.cpuMs),
            `${fmtMs(a.wallMs)} / ${fmtMs(b.wallMs)}`,
            fmtRatio(a.wallMs, b.wallMs),
            `${fmtMiB(a.rssDelta)} / ${fmtMiB(b.rssDelta)}`
          ])
          const ratio = a.cpuMs / b.cpuMs
          summaryRows.push({
            figure: `${where} output, ${size} as ${
              long === "one-line" ? "one line" : "a \\r bar"
            }, ${mode}: CPU`,
            ours: fmtMs(a.cpuMs),
            peer: `${fmtMs(b.cpuMs)} (${short})`,
            ratio: `${fmt(ratio)}x`,
            target: "<= 2x",
            met: metText(ratio <= 2)
          })
        }
      }
    }
    console.log(
      `\n${
        table(
          [
            "run (long vs short)",
            "CPU long / short",
            "CPU ratio",
            "wall long / short",
            "wall ratio",
            "peak RSS over baseline"
          ],
          rows
        )
      }`
    )
    summary(summaryRows)
  } finally {
    await server.stop()
  }
}

if (process.argv[2] === "--one") {
  await one(
    process.argv[3] as Where,
    process.argv[4] as Shape,
    process.argv[5] === "discard",
    process.argv[6]!
  )
} else {
  await main()
}
