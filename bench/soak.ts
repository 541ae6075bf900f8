/**
 * Soak: thousands of remote commands and small transfers over many hosts for a bounded time, to
 * show that nothing leaks (memory, file descriptors, channels) and nothing fails.
 *
 *   scripts/node.sh node bench/soak.ts
 *
 * Starts its own throwaway sshd (tests-remote/server.ts) with SOAK_HOSTS loopback hosts (default
 * 20), then keeps SOAK_CONCURRENCY operations in flight (default 40) across them for SOAK_SECONDS
 * (default 60), each connection limited to SOAK_MAX_CHANNELS channels (default 4, so commands queue
 * for channels as well). The mix: commands whose output is checked (`echo` of a fresh token; some
 * with `rcd` and `withEnv`), `remoteFileExists`, and upload + download pairs of 0-64 KiB of random
 * bytes whose SHA-256 is compared (to memory, and every fourth one to a local file).
 *
 * Printed at the end: operations and commands per second, p50/p99 latency, RSS and open file
 * descriptors (/proc/self/fd) after warm-up, at the end and after the connection layer closed,
 * their slope over the run and over its second half (sampled every SOAK_SAMPLE_SECONDS, default 5,
 * each after a full GC so that the slope is of live memory, not of the collector's schedule), and every failure with its
 * message. Exits non-zero when anything failed or descriptors stayed open after the layer closed.
 *
 * `test/Soak.test.ts` runs a short form of it against the test run's server.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import { createHash, randomBytes } from "node:crypto"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import { remote, remoteFileExists } from "../src/internal/remote/operations.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import * as Transfer from "../src/Transfer.ts"
import { type Server, startServer } from "../tests-remote/server.ts"
import { envInt, fmt, fmtMiB, machineNote, metText, now, summary, table } from "./lib.ts"

// -- measuring ------------------------------------------------------------------------------------

/** Open file descriptors of this process. */
export const fdCount = (): number => fs.readdirSync("/proc/self/fd").length

/**
 * A full garbage collection before each sample, so that slopes are of live memory and not of the
 * collector's schedule: `--expose-gc` when given, else switched on here (as vitest cannot pass it).
 */
const gc: () => void = (globalThis as { gc?: () => void }).gc ?? (() => {
  v8.setFlagsFromString("--expose-gc")
  return vm.runInNewContext("gc") as () => void
})()

export interface Sample {
  /** Seconds since the end of warm-up. */
  readonly t: number
  readonly rss: number
  readonly heapUsed: number
  /** Memory of ArrayBuffers (socket and file buffers), outside the heap. */
  readonly arrayBuffers: number
  readonly fds: number
  readonly done: number
}

const sampleNow = (t0: number, done: number): Sample => {
  gc()
  const memory = process.memoryUsage()
  return {
    t: (now() - t0) / 1000,
    rss: memory.rss,
    heapUsed: memory.heapUsed,
    arrayBuffers: memory.arrayBuffers,
    fds: fdCount(),
    done
  }
}

/** Least-squares slope of `y` over `t`, per minute. */
export const slopePerMinute = (samples: ReadonlyArray<Sample>, y: (s: Sample) => number): number => {
  const n = samples.length
  if (n < 2) return 0
  const mt = samples.reduce((a, s) => a + s.t, 0) / n
  const my = samples.reduce((a, s) => a + y(s), 0) / n
  let num = 0
  let den = 0
  for (const s of samples) {
    num += (s.t - mt) * (y(s) - my)
    den += (s.t - mt) ** 2
  }
  return den === 0 ? 0 : (num / den) * 60
}

/** The q-quantile (0..1) of sorted values, by rank. */
const quantile = (sorted: ReadonlyArray<number>, q: number): number =>
  sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!

// -- the run --------------------------------------------------------------------------------------

export interface SoakOptions {
  readonly server: Server
  /** The hosts to spread the load over (names of `server.hosts`). */
  readonly hosts: ReadonlyArray<string>
  readonly seconds: number
  /** Operations in flight at once, over all hosts. */
  readonly concurrency: number
  /** Channels at once on one connection. */
  readonly maxChannels: number
  readonly sampleSeconds: number
  /** Called with a line of progress now and then. */
  readonly log?: ((line: string) => void) | undefined
}

export interface Failure {
  readonly op: string
  readonly host: string
  readonly message: string
}

export interface SoakReport {
  readonly seconds: number
  readonly commands: number
  readonly transfers: number
  readonly transferBytes: number
  readonly commandLatency: { readonly p50: number; readonly p99: number; readonly max: number }
  readonly transferLatency: { readonly p50: number; readonly p99: number; readonly max: number }
  /** Before the connection layer was built. */
  readonly fdsBeforeLayer: number
  /** After warm-up, and at the end of the load (the layer still open). */
  readonly start: Sample
  readonly end: Sample
  readonly samples: ReadonlyArray<Sample>
  readonly rssSlopeMiBPerMinute: number
  readonly heapSlopeMiBPerMinute: number
  readonly fdSlopePerMinute: number
  /** The same over the second half of the run, once the allocator reached its working size. */
  readonly rssSlopeLateMiBPerMinute: number
  readonly heapSlopeLateMiBPerMinute: number
  readonly fdSlopeLatePerMinute: number
  /** After the layer closed (waited for up to 5 s to get back to `fdsBeforeLayer`). */
  readonly fdsAfterClose: number
  readonly failures: ReadonlyArray<Failure>
}

const sha = (data: Uint8Array) => createHash("sha256").update(data).digest("hex")

const uidOf = (name: string): number | undefined => {
  const line = fs.readFileSync("/etc/passwd", "utf8").split("\n").find((l) => l.startsWith(`${name}:`))
  return line === undefined ? undefined : Number(line.split(":")[2])
}

class Mismatch extends Error {}

const check = (ok: boolean, what: string): Effect.Effect<void> =>
  ok ? Effect.void : Effect.die(new Mismatch(what))

/** Everything that may be measured while a layer of connections is open. */
const load = (options: SoakOptions, remoteRoot: string, localRoot: string) =>
  Effect.gen(function*() {
    const log = options.log ?? (() => {})
    const commandTimes: Array<number> = []
    const transferTimes: Array<number> = []
    const failures: Array<Failure> = []
    let transferBytes = 0
    let sequence = 0

    const hostDir = (host: string) => path.join(remoteRoot, host)
    for (const host of options.hosts) fs.mkdirSync(hostDir(host), { recursive: true })
    const uid = process.getuid?.() === 0 ? uidOf(options.server.user) : undefined
    if (uid !== undefined) {
      for (const dir of [remoteRoot, ...options.hosts.map(hostDir)]) fs.chownSync(dir, uid, uid)
    }

    const echo = (host: string) =>
      Effect.gen(function*() {
        const token = `t${sequence++}-${randomBytes(4).toString("hex")}`
        const result = yield* remote(`echo ${token}; echo ${token}-err >&2`, { host })
        yield* check(
          result.stdout === `${token}\n${token}-err\n`,
          `echo ${token} gave ${JSON.stringify(result.stdout)}`
        )
      })

    const inDir = (host: string) =>
      Effect.gen(function*() {
        const value = `v ${sequence++} $(x) 'q' é`
        const result = yield* remote(`pwd; printf %s "$SOAK_VALUE"`).pipe(
          Settings.withEnv({ SOAK_VALUE: value }),
          Settings.rcd(hostDir(host)),
          Settings.settings({ host })
        )
        yield* check(
          result.stdout === `${hostDir(host)}\n${value}`,
          `rcd/env gave ${JSON.stringify(result.stdout)}`
        )
      })

    const exists = (host: string) =>
      Effect.gen(function*() {
        const there = yield* remoteFileExists(hostDir(host), { host })
        const missing = yield* remoteFileExists(`${hostDir(host)}/missing-${sequence++}`, { host })
        yield* check(there && !missing, `remoteFileExists gave ${there}, ${missing}`)
      })

    const transfer = (host: string) =>
      Effect.gen(function*() {
        const n = sequence++
        const bytes = randomBytes(Math.floor(Math.random() * 65_536))
        // A file of its own per operation, removed afterwards (the server is this machine).
        const remotePath = `${hostDir(host)}/f${n}`
        yield* Transfer.upload(bytes, remotePath, { host })
        if (n % 4 === 0) {
          const localPath = path.join(localRoot, `${host}-${n}`)
          yield* Transfer.download(remotePath, localPath, { host })
          yield* check(sha(fs.readFileSync(localPath)) === sha(bytes), `download to ${localPath} differs`)
          fs.rmSync(localPath)
        } else {
          const back = yield* Transfer.download(remotePath, undefined, { host })
          yield* check(sha(back) === sha(bytes), `download of ${remotePath} differs`)
        }
        fs.rmSync(remotePath)
        transferBytes += 2 * bytes.length
      })

    interface Op {
      readonly name: string
      readonly weight: number
      readonly run: (host: string) => Effect.Effect<void, unknown, Ssh.SshConnections>
      readonly transfer: boolean
    }
    const ops: ReadonlyArray<Op> = [
      { name: "echo", weight: 60, run: echo, transfer: false },
      { name: "rcd+env", weight: 15, run: inDir, transfer: false },
      { name: "remoteFileExists", weight: 10, run: exists, transfer: false },
      { name: "upload+download", weight: 15, run: transfer, transfer: true }
    ]
    const totalWeight = ops.reduce((a, op) => a + op.weight, 0)
    const pick = () => {
      let r = Math.random() * totalWeight
      for (const op of ops) {
        r -= op.weight
        if (r < 0) return op
      }
      return ops[0]!
    }

    const runOne = (op: Op, host: string) =>
      Effect.gen(function*() {
        const started = now()
        const exit = yield* Effect.exit(op.run(host))
        const took = now() - started
        if (Exit.isSuccess(exit)) {
          ;(op.transfer ? transferTimes : commandTimes).push(took)
        } else {
          const squashed = Cause.squash(exit.cause)
          const message = squashed instanceof Error ? squashed.message : Cause.pretty(exit.cause)
          failures.push({ op: op.name, host, message })
          log(`FAILED ${op.name} on ${host}: ${message}`)
        }
      })

    // Warm-up: every host connected, every kind of operation run once, before the baseline.
    yield* Effect.forEach(
      options.hosts,
      (host) => Effect.forEach(ops, (op) => runOne(op, host), { discard: true }),
      { concurrency: options.concurrency, discard: true }
    )
    commandTimes.length = 0
    transferTimes.length = 0
    transferBytes = 0

    const t0 = now()
    const deadline = t0 + options.seconds * 1000
    const start = sampleNow(t0, 0)
    const samples: Array<Sample> = [start]
    const done = () => commandTimes.length + transferTimes.length + failures.length

    const sampler = Effect.gen(function*() {
      for (;;) {
        yield* Effect.sleep(`${options.sampleSeconds} seconds`)
        const sample = sampleNow(t0, done())
        samples.push(sample)
        log(
          `${fmt(sample.t)} s: ${sample.done} ops, rss ${fmtMiB(sample.rss)}, heap ${
            fmtMiB(sample.heapUsed)
          }, fds ${sample.fds}, failures ${failures.length}`
        )
      }
    })

    let next = 0
    const worker = Effect.gen(function*() {
      while (now() < deadline) {
        const host = options.hosts[next++ % options.hosts.length]!
        yield* runOne(pick(), host)
      }
    })

    yield* Effect.raceFirst(
      Effect.forEach(Array.from({ length: options.concurrency }, () => worker), (w) => w, {
        concurrency: "unbounded",
        discard: true
      }),
      Effect.andThen(sampler, Effect.never)
    )
    const seconds = (now() - t0) / 1000
    const end = sampleNow(t0, done())
    samples.push(end)

    const late = samples.filter((s) => s.t >= seconds / 2)
    const latency = (times: Array<number>) => {
      const sorted = [...times].sort((a, b) => a - b)
      return { p50: quantile(sorted, 0.5), p99: quantile(sorted, 0.99), max: sorted.at(-1) ?? Number.NaN }
    }
    return {
      seconds,
      commands: commandTimes.length,
      transfers: transferTimes.length,
      transferBytes,
      commandLatency: latency(commandTimes),
      transferLatency: latency(transferTimes),
      start,
      end,
      samples,
      rssSlopeMiBPerMinute: slopePerMinute(samples, (s) => s.rss) / (1 << 20),
      heapSlopeMiBPerMinute: slopePerMinute(samples, (s) => s.heapUsed) / (1 << 20),
      fdSlopePerMinute: slopePerMinute(samples, (s) => s.fds),
      rssSlopeLateMiBPerMinute: slopePerMinute(late, (s) => s.rss) / (1 << 20),
      heapSlopeLateMiBPerMinute: slopePerMinute(late, (s) => s.heapUsed) / (1 << 20),
      fdSlopeLatePerMinute: slopePerMinute(late, (s) => s.fds),
      failures
    }
  })

/**
 * Runs the soak: builds a connection layer, loads it for `options.seconds`, closes it, and waits
 * for this process's descriptors to come back to what they were before.
 */
export const soak = (options: SoakOptions): Effect.Effect<SoakReport> =>
  Effect.gen(function*() {
    const remoteRoot = fs.mkdtempSync(path.join(tmpdir(), "tbsoak-remote-"))
    const localRoot = fs.mkdtempSync(path.join(tmpdir(), "tbsoak-local-"))
    fs.chmodSync(remoteRoot, 0o755)
    const fdsBeforeLayer = fdCount()
    const layer = Layer.mergeAll(
      Ssh.layer,
      Settings.layer({
        user: options.server.user,
        port: options.server.port,
        keyFile: options.server.keyPath,
        knownHostsFile: options.server.knownHostsPath,
        hostKeyPolicy: "strict",
        sshConfigFile: false,
        useAgent: false,
        quiet: true,
        maxChannels: options.maxChannels,
        connectRetryDelay: "200 millis"
      })
    )
    const report = yield* load(options, remoteRoot, localRoot).pipe(
      Effect.provide(layer),
      Effect.ensuring(Effect.sync(() => {
        fs.rmSync(remoteRoot, { recursive: true, force: true })
        fs.rmSync(localRoot, { recursive: true, force: true })
      }))
    )
    let fdsAfterClose = fdCount()
    for (let i = 0; i < 50 && fdsAfterClose > fdsBeforeLayer; i++) {
      yield* Effect.sleep("100 millis")
      fdsAfterClose = fdCount()
    }
    return { ...report, fdsBeforeLayer, fdsAfterClose }
  })

// -- the benchmark ----------------------------------------------------------------------------------

const envNumber = (name: string, fallback: number): number => envInt(name, fallback)

export const printReport = (report: SoakReport, command: string): void => {
  const ops = report.commands + report.transfers
  console.log(`\n${command}`)
  console.log(
    table(["figure", "value"], [
      ["duration", `${fmt(report.seconds)} s`],
      ["commands (remote, remoteFileExists)", String(report.commands)],
      ["transfers (upload + download pairs)", `${report.transfers} (${fmtMiB(report.transferBytes)} moved)`],
      ["commands per second", fmt(report.commands / report.seconds)],
      ["operations per second (all)", fmt(ops / report.seconds)],
      [
        "command latency p50 / p99 / max",
        `${fmt(report.commandLatency.p50)} / ${fmt(report.commandLatency.p99)} / ${
          fmt(report.commandLatency.max)
        } ms`
      ],
      [
        "transfer latency p50 / p99 / max",
        `${fmt(report.transferLatency.p50)} / ${fmt(report.transferLatency.p99)} / ${
          fmt(report.transferLatency.max)
        } ms`
      ],
      ["RSS after warm-up -> end", `${fmtMiB(report.start.rss)} -> ${fmtMiB(report.end.rss)}`],
      [
        "heap used after warm-up -> end",
        `${fmtMiB(report.start.heapUsed)} -> ${fmtMiB(report.end.heapUsed)}`
      ],
      [
        "RSS slope: whole run / second half",
        `${fmt(report.rssSlopeMiBPerMinute)} / ${fmt(report.rssSlopeLateMiBPerMinute)} MiB/min`
      ],
      [
        "heap slope: whole run / second half",
        `${fmt(report.heapSlopeMiBPerMinute)} / ${fmt(report.heapSlopeLateMiBPerMinute)} MiB/min`
      ],
      [
        "open fds: before layer / after warm-up / end / after close",
        `${report.fdsBeforeLayer} / ${report.start.fds} / ${report.end.fds} / ${report.fdsAfterClose}`
      ],
      [
        "fd slope: whole run / second half",
        `${fmt(report.fdSlopePerMinute)} / ${fmt(report.fdSlopeLatePerMinute)} per min`
      ],
      ["failures", String(report.failures.length)]
    ])
  )
  console.log("\nsamples (s, ops done, RSS, heap, array buffers, fds):")
  for (const s of report.samples) {
    console.log(
      `  ${fmt(s.t)}\t${s.done}\t${fmtMiB(s.rss)}\t${fmtMiB(s.heapUsed)}\t${fmtMiB(s.arrayBuffers)}\t${s.fds}`
    )
  }
  if (report.failures.length > 0) {
    console.log("\nfailures:")
    const counts = new Map<string, number>()
    for (const f of report.failures) {
      const key = `${f.op}: ${f.message}`
      counts.set(key, (counts.get(key) ?? 0) + 1)
    }
    for (const [message, count] of counts) console.log(`  ${count}x ${message}`)
  }
}

const main = async () => {
  const seconds = envNumber("SOAK_SECONDS", 60)
  const concurrency = envNumber("SOAK_CONCURRENCY", 40)
  const hostCount = envNumber("SOAK_HOSTS", 20)
  const maxChannels = envNumber("SOAK_MAX_CHANNELS", 4)
  const sampleSeconds = envNumber("SOAK_SAMPLE_SECONDS", 5)
  console.log(
    `# Soak: ${seconds} s, ${hostCount} hosts, ${concurrency} in flight, maxChannels ${maxChannels}`
  )
  console.log(await machineNote())
  const server = await startServer({ hostCount })
  const stop = () => server.stopSync()
  process.once("exit", stop)
  try {
    const report = await Effect.runPromise(
      soak({
        server,
        hosts: server.hosts,
        seconds,
        concurrency,
        maxChannels,
        sampleSeconds,
        log: console.log
      })
    )
    printReport(
      report,
      `SOAK_SECONDS=${seconds} SOAK_CONCURRENCY=${concurrency} SOAK_HOSTS=${hostCount} ` +
        `SOAK_MAX_CHANNELS=${maxChannels} scripts/node.sh node bench/soak.ts`
    )
    const fdsBack = report.fdsAfterClose <= report.fdsBeforeLayer
    summary([
      {
        figure: `soak: commands per second, ${hostCount} hosts, ${concurrency} in flight`,
        ours: fmt(report.commands / report.seconds),
        peer: "-",
        ratio: "-",
        target: "-",
        met: "-"
      },
      {
        figure: "soak: failures",
        ours: String(report.failures.length),
        peer: "-",
        ratio: "-",
        target: "0",
        met: metText(report.failures.length === 0)
      },
      {
        figure: "soak: open fds after the layer closed vs before",
        ours: `${report.fdsAfterClose} vs ${report.fdsBeforeLayer}`,
        peer: "-",
        ratio: "-",
        target: "back to baseline",
        met: metText(fdsBack)
      }
    ])
    process.exitCode = report.failures.length === 0 && fdsBack ? 0 : 1
  } finally {
    process.off("exit", stop)
    await server.stop()
  }
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await main()
}
