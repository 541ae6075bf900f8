/**
 * Shared helpers of the benchmarks: timing, statistics, ratios, peak RSS, tables, and the summary
 * rows that `bench/run-all.ts` gathers into one README table.
 *
 * Benchmarks are plain scripts run with Node 24 (`scripts/node.sh node bench/<name>.ts`); they print
 * a readable report and, for the summary, lines `BENCH_ROW {json}` made by {@link summary}.
 */
import { spawn } from "node:child_process"
import { readFileSync } from "node:fs"
import * as net from "node:net"
import { performance } from "node:perf_hooks"
import ssh2 from "ssh2"
import type * as Settings from "../src/Settings.ts"
import type { ServerDescription } from "../tests-remote/server.ts"

/** Milliseconds from an arbitrary origin, sub-millisecond resolution. */
export const now = (): number => performance.now()

/** A positive integer from the environment, or `fallback`. */
export const envInt = (name: string, fallback: number): number => {
  const raw = process.env[name]
  if (raw === undefined || raw === "") return fallback
  const value = Number(raw)
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer, not ${raw}`)
  return value
}

export interface Stats {
  readonly n: number
  readonly median: number
  readonly p90: number
  readonly mean: number
  readonly min: number
  readonly max: number
}

/** The q-quantile (0..1) of sorted values, interpolated between neighbours. */
const quantile = (sorted: ReadonlyArray<number>, q: number): number => {
  if (sorted.length === 0) return Number.NaN
  const at = (sorted.length - 1) * q
  const low = Math.floor(at)
  const high = Math.ceil(at)
  return sorted[low]! + (sorted[high]! - sorted[low]!) * (at - low)
}

export const stats = (samples: ReadonlyArray<number>): Stats => {
  const sorted = [...samples].sort((a, b) => a - b)
  return {
    n: sorted.length,
    median: quantile(sorted, 0.5),
    p90: quantile(sorted, 0.9),
    mean: sorted.reduce((sum, x) => sum + x, 0) / Math.max(sorted.length, 1),
    min: sorted[0] ?? Number.NaN,
    max: sorted.at(-1) ?? Number.NaN
  }
}

/** Runs `task` `warmup` times unmeasured, then `n` times in sequence; returns the time of each run (ms). */
export const timeEach = async (
  n: number,
  warmup: number,
  task: () => Promise<unknown>
): Promise<Array<number>> => {
  for (let i = 0; i < warmup; i++) await task()
  const samples: Array<number> = []
  for (let i = 0; i < n; i++) {
    const start = now()
    await task()
    samples.push(now() - start)
  }
  return samples
}

/** A number for a table: 3 significant digits, at most 2 decimals. */
export const fmt = (x: number | undefined): string => {
  if (x === undefined || !Number.isFinite(x)) return "-"
  if (Math.abs(x) >= 100) return x.toFixed(0)
  if (Math.abs(x) >= 10) return x.toFixed(1)
  return x.toFixed(2)
}

export const fmtMs = (
  x: number | undefined
): string => (x === undefined || !Number.isFinite(x) ? "-" : `${fmt(x)} ms`)

export const fmtMiB = (bytes: number | undefined): string =>
  bytes === undefined || !Number.isFinite(bytes) ? "-" : `${fmt(bytes / (1 << 20))} MiB`

/** `a / b` as "0.42x" (how many times b's figure a is). */
export const fmtRatio = (a: number | undefined, b: number | undefined): string =>
  a === undefined || b === undefined || !Number.isFinite(a / b) ? "-" : `${fmt(a / b)}x`

export interface RssSampler {
  /** Stops sampling; peak is the highest RSS seen, delta the peak minus the RSS at start. */
  readonly stop: () => { readonly baseline: number; readonly peak: number; readonly delta: number }
}

/**
 * Samples `process.memoryUsage.rss()` every `intervalMs` from now until `stop()`. Sampling runs on
 * the event loop, so a loop blocked for longer than the interval samples less often.
 */
export const sampleRss = (intervalMs = 10): RssSampler => {
  const baseline = process.memoryUsage.rss()
  let peak = baseline
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss())
  }, intervalMs)
  return {
    stop: () => {
      clearInterval(timer)
      peak = Math.max(peak, process.memoryUsage.rss())
      return { baseline, peak, delta: peak - baseline }
    }
  }
}

/** A markdown table; cells are strings already formatted. */
export const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) =>
    `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`
  return [line(header), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...rows.map(line)].join("\n")
}

/** One line of the README table. */
export interface SummaryRow {
  readonly figure: string
  readonly ours: string
  readonly peer: string
  readonly ratio: string
  readonly target: string
  /** "yes", "no", or "-" when the figure has no target. */
  readonly met: string
}

export const SUMMARY_HEADER = ["figure", "ours", "peer", "ratio", "target", "met?"] as const

export const summaryCells = (row: SummaryRow): Array<string> => [
  row.figure,
  row.ours,
  row.peer,
  row.ratio,
  row.target,
  row.met
]

/** The prefix of the machine-readable summary lines. */
export const ROW_PREFIX = "BENCH_ROW "

/** Set by `bench/run-all.ts` for its children: print the machine-readable rows too. */
export const ROWS_ENV = "BENCH_EMIT_ROWS"

/** Prints the rows as a table, and under `bench/run-all.ts` as `BENCH_ROW` lines that it gathers. */
export const summary = (rows: ReadonlyArray<SummaryRow>): void => {
  console.log(`\n${table(SUMMARY_HEADER, rows.map(summaryCells))}`)
  if (process.env[ROWS_ENV] === "1") { for (const row of rows) console.log(ROW_PREFIX + JSON.stringify(row)) }
}

export const metText = (met: boolean | undefined): string => (met === undefined ? "-" : met ? "yes" : "no")

/** What every report should say: the machine, and that a busy one gives slower numbers. */
export const machineNote = async (): Promise<string> => {
  const os = await import("node:os")
  const [one, five] = os.loadavg()
  return `Node ${process.versions.node}, ${os.cpus().length} CPU(s) ${os.cpus()[0]?.model ?? ""}, ` +
    `load average ${fmt(one)} / ${fmt(five)} (1/5 min) at start` +
    (one! > os.cpus().length * 0.5 ? " -- the machine is busy: expect noisy, slower numbers" : "")
}

/**
 * The library's settings for the throwaway server: its user, port, key and known_hosts, strict
 * host key checking, nothing of this machine's ssh configuration or agent, and no printing.
 */
export const librarySettings = (server: ServerDescription): Settings.Patch => ({
  user: server.user,
  port: server.port,
  keyFile: server.keyPath,
  knownHostsFile: server.knownHostsPath,
  hostKeyPolicy: "strict",
  sshConfigFile: false,
  useAgent: false,
  quiet: true
})

// Raw ssh2: the floor. TCP_NODELAY on, host key checked against the server's known_hosts.

export interface Target {
  readonly host: string
  readonly port: number
  readonly user: string
  readonly privateKey: Buffer
  readonly hostKey: Buffer
}

export const targetOf = (server: ServerDescription, host: string): Target => ({
  host,
  port: server.port,
  user: server.user,
  privateKey: readFileSync(server.keyPath),
  // every alias has the same key: "[127.0.0.1]:port ssh-ed25519 AAAA..."
  hostKey: Buffer.from(readFileSync(server.knownHostsPath, "utf8").split("\n")[0]!.split(" ")[2]!, "base64")
})

export const rawConnect = (target: Target, noDelay = true): Promise<ssh2.Client> =>
  new Promise((resolve, reject) => {
    const client = new ssh2.Client()
    const sock = net.connect({ host: target.host, port: target.port })
    sock.setNoDelay(noDelay)
    client.once("ready", () => resolve(client))
    client.on("error", reject)
    client.once("close", () => reject(new Error(`connection to ${target.host} closed`)))
    client.connect({
      sock,
      username: target.user,
      privateKey: target.privateKey,
      hostVerifier: (key: Buffer) => key.equals(target.hostKey),
      readyTimeout: 30_000
    })
  })

// What the library asks for with `pty: true`: a pty without echo.
export const PTY: ssh2.PseudoTtyOptions = { term: "dumb", cols: 200, rows: 50, modes: { ECHO: 0, ONLCR: 0 } }

export const rawExec = (client: ssh2.Client, command: string, pty = false): Promise<void> =>
  new Promise((resolve, reject) => {
    client.exec(command, pty ? { pty: PTY } : {}, (error: Error | undefined, channel: ssh2.ClientChannel) => {
      if (error) return reject(error)
      let code: number | null = null
      channel.on("exit", (c: number | null) => (code = c))
      channel.on("data", () => {})
      channel.stderr.on("data", () => {})
      channel.on("close", () => (code === 0 ? resolve() : reject(new Error(`${command} exited ${code}`))))
    })
  })

/** Runs a program to its end (`close`: all its output read) and gives its standard output; fails unless it exits 0. */
export const captureProcess = (file: string, args: ReadonlyArray<string>): Promise<string> =>
  new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    let err = ""
    child.stdout.on("data", (d) => (out += d))
    child.stderr.on("data", (d) => (err += d))
    child.once("error", reject)
    child.once(
      "close",
      (code) =>
        code === 0 ? resolve(out) : reject(new Error(`${file} exited ${code}: ${err.trim().slice(-2000)}`))
    )
  })
