/**
 * Remote commands: effect-threadbare's `Operations.remote` next to OpenSSH, Fabric 2, parallel-ssh
 * and raw ssh2, all against one throwaway sshd on loopback (tests-remote/server.ts), in one run.
 *
 *   scripts/node.sh node bench/remote.ts
 *
 * Figures:
 *   1. warm `remote("true")`, one after another on one connection: per-command median and p90.
 *      The contenders take turns command by command, so load changes hit all alike. Variants of
 *      the library's settings and raw ssh2 running the library's exact command line show where
 *      the time goes; "client CPU" is this process's CPU time per command.
 *   2. the first command including the connection set-up, a fresh connection each time
 *   3. many commands on one host, 50 in flight
 *   4. 100 hosts at once, one command each: peak RSS over the baseline, and wall time. Each
 *      contender runs in a Node process of its own (this file with `--fanout <who> <dir> <n>`),
 *      after one unmeasured host (BENCH_FANOUT_COLD=1 skips that) and a full GC.
 *
 * Environment: BENCH_N (sequential and concurrent commands, default 200), BENCH_CONNECT_N (fresh
 * connections, default 10), BENCH_HOSTS (hosts of figure 4, default 100), BENCH_SKIP_FABRIC=1.
 *
 * Needs OpenSSH (client and server), and for the peers python3-fabric and pssh (Debian packages);
 * a missing peer is reported and skipped. A benchmark, not a test: it fails only when a command fails.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { guard } from "../src/internal/remote/run.ts"
import { remote, type RemoteOptions } from "../src/Operations.ts"
import * as Output from "../src/Output.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import { readServer, type Server, startServer } from "../tests-remote/server.ts"
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
  rawConnect,
  rawExec,
  sampleRss,
  type Stats,
  stats,
  summary,
  type SummaryRow,
  table,
  targetOf
} from "./lib.ts"

const N = envInt("BENCH_N", 200)
const WARMUP = Math.min(20, N)
const CONNECT_N = envInt("BENCH_CONNECT_N", 10)
const HOSTS = envInt("BENCH_HOSTS", 100)
const IN_FLIGHT = 50
const self = fileURLToPath(import.meta.url)

// ---------------------------------------------------------------------------------------------------
/**
 * At most `limit` tasks running at once. OpenSSH allows 10 sessions per connection, but frees a
 * session a little after the client sees its channel close: reopening at once with 6 or more in
 * flight sometimes fails with "Channel open failure". The floor keeps 5 in flight.
 */
const limited = (limit: number) => {
  let running = 0
  const waiting: Array<() => void> = []
  return async <A>(task: () => Promise<A>): Promise<A> => {
    if (running >= limit) await new Promise<void>((wake) => waiting.push(wake))
    else running++
    try {
      return await task()
    } finally {
      const next = waiting.shift()
      if (next) next()
      else running--
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// effect-threadbare: `remote` under `Ssh.layer`, settings pointing at the throwaway server.

const baseSettings = (server: Server, host: string): Settings.Patch => ({ host, ...librarySettings(server) })

const libraryLayer = (server: Server, host: string) =>
  Layer.mergeAll(Ssh.layer, Settings.layer(baseSettings(server, host)))

/** A way of calling `remote("true")`: the headline one, and variants that show where time goes. */
interface Variant {
  readonly name: string
  readonly options: RemoteOptions
  /** Settings that `options` cannot carry. */
  readonly settings?: Settings.Patch
  /** Print through a writer that drops the lines, instead of `quiet`. */
  readonly printing?: boolean
}

const headline: Variant = { name: "effect-threadbare remote (quiet)", options: {} }
const variantsFor = (server: Server): ReadonlyArray<Variant> => [
  { name: "  quiet: false, lines to a no-op Output", options: { quiet: false }, printing: true },
  { name: "  pty: true", options: { pty: true } },
  { name: "  shell: \"/bin/bash -l -c\" (login)", options: { shell: "/bin/bash -l -c" } },
  { name: "  combineStderr: false (no `exec 2>&1`)", options: { combineStderr: false } },
  { name: "  useShell: false", options: { useShell: false } },
  {
    name: `  sshConfigFile: one of ${server.hosts.length} Host blocks`,
    options: {},
    settings: { sshConfigFile: server.sshConfigPath }
  }
]

const dropLines: Output.Writer = { write: () => Effect.void }

const remoteTrue = (variant: Variant) => {
  const run = remote("true", variant.options)
  const printed = variant.printing === true ? Effect.provideService(run, Output.Output, dropLines) : run
  return variant.settings === undefined ? printed : Settings.settings(printed, variant.settings)
}

/** Per-command wall times, and the CPU time of this process per command (ms). */
interface Timed {
  readonly samples: Array<number>
  readonly cpuMs: number
}

/**
 * Times each task `n` times after `warmup` rounds. The tasks take turns (one of each per round),
 * so a change of load on this shared machine hits them all alike. Each round takes them in a
 * shuffled order: work a task leaves behind (a child process's exit and stdio to reap, garbage)
 * lands in the next task's time, which would otherwise always be the same one.
 */
const interleaved = async (
  tasks: ReadonlyArray<() => Promise<unknown>>,
  n: number,
  warmup: number
): Promise<Array<Timed>> => {
  for (let i = 0; i < warmup; i++) for (const task of tasks) await task()
  const samples = tasks.map(() => [] as Array<number>)
  const cpu = tasks.map(() => 0)
  // A fixed seed, so that runs are comparable.
  let seed = 1
  const random = () => (seed = (seed * 48271) % 2147483647) / 2147483647
  const order = tasks.map((_, t) => t)
  for (let i = 0; i < n; i++) {
    for (let k = order.length - 1; k > 0; k--) {
      const j = Math.floor(random() * (k + 1))
      ;[order[k], order[j]] = [order[j]!, order[k]!]
    }
    for (const t of order) {
      const cpuStart = process.cpuUsage()
      const start = now()
      await tasks[t]!()
      samples[t]!.push(now() - start)
      const used = process.cpuUsage(cpuStart)
      cpu[t]! += (used.user + used.system) / 1000
    }
  }
  return samples.map((s, t) => ({ samples: s, cpuMs: cpu[t]! / n }))
}

interface Concurrent {
  readonly wallMs: number
  readonly ok: number
  readonly firstFailure: string | undefined
}

/** `total` commands, `inFlight` at a time; counts those that succeeded. */
const concurrently = (total: number, inFlight: number) =>
  Effect.gen(function*() {
    const start = now()
    const exits = yield* Effect.all(Array.from({ length: total }, () => Effect.exit(remoteTrue(headline))), {
      concurrency: inFlight
    })
    const wallMs = now() - start
    const failed = exits.filter(Exit.isFailure)
    return {
      wallMs,
      ok: total - failed.length,
      firstFailure: failed[0] === undefined ? undefined : Cause.pretty(failed[0].cause).split("\n")[0]
    } satisfies Concurrent
  })

/** The library with the layer kept open between promises: one shared connection for figures 1 and 3. */
const openLibrary = (server: Server) => ManagedRuntime.make(libraryLayer(server, server.host))

/** Figure 2: a fresh layer (so a fresh connection), one command, the layer closed again. */
const libraryFresh = (server: Server, options: RemoteOptions = {}): Promise<unknown> =>
  Effect.runPromise(remote("true", options).pipe(Effect.provide(libraryLayer(server, server.host))))

/** Figure 4: every host at once, one command each, on one layer. */
const libraryFanout = (server: Server, hosts: ReadonlyArray<string>) => () =>
  Effect.runPromise(
    Effect.forEach(hosts, (host) => remote("true", { host }), { concurrency: "unbounded", discard: true })
      .pipe(
        Effect.provide(libraryLayer(server, server.host))
      )
  )

// ---------------------------------------------------------------------------------------------------
// Processes: OpenSSH, Fabric 2 (Python), parallel-ssh

const exitOf = (child: ChildProcess): Promise<number> =>
  new Promise((resolve, reject) => {
    child.once("error", reject)
    // "exit", not "close": a ControlPersist master inherits nothing from us, but be safe anyway
    child.once("exit", (code, signal) => resolve(code ?? (signal ? 128 : 1)))
  })

const runProcess = async (file: string, args: ReadonlyArray<string>): Promise<void> => {
  const code = await exitOf(spawn(file, args, { stdio: "ignore" }))
  if (code !== 0) throw new Error(`${file} ${args.join(" ")} exited ${code}`)
}

const sshBase = (server: Server): Array<string> => [
  "-F",
  "/dev/null",
  "-i",
  server.keyPath,
  "-o",
  "IdentitiesOnly=yes",
  "-o",
  `UserKnownHostsFile=${server.knownHostsPath}`,
  "-o",
  "StrictHostKeyChecking=yes",
  "-o",
  "BatchMode=yes",
  "-p",
  String(server.port),
  "-l",
  server.user
]

const commandExists = async (file: string, args: ReadonlyArray<string>): Promise<boolean> => {
  try {
    await captureProcess(file, args)
    return true
  } catch {
    return false
  }
}

/** A Python with Fabric 2: Debian's python3-fabric lives in /usr/bin/python3, not in a pyenv. */
const findFabricPython = async (): Promise<string | undefined> => {
  for (const python of ["/usr/bin/python3", "python3"]) {
    if (await commandExists(python, ["-c", "import fabric"])) return python
  }
  return undefined
}

const fabric = async (
  python: string,
  server: Server,
  mode: "warm" | "fresh",
  n: number,
  warmup: number
): Promise<Array<number>> => {
  const script = fileURLToPath(new URL("./peers/fabric_run.py", import.meta.url))
  const args = [
    script,
    mode,
    server.host,
    String(server.port),
    server.user,
    server.keyPath,
    server.knownHostsPath
  ]
  const out = await captureProcess(python, [...args, String(n), ...(mode === "warm" ? [String(warmup)] : [])])
  return (JSON.parse(out) as { samplesMs: Array<number> }).samplesMs
}

// ---------------------------------------------------------------------------------------------------
// Figure 4 runs in a child process of its own (`--fanout <who> <stateDir> <hosts>`) so the RSS of one
// contender is not mixed with what the others left on the heap.

interface Fanout {
  readonly wallMs: number
  /** CPU time of the process (all its threads) during the fan-out. */
  readonly cpuMs: number
  readonly baseline: number
  readonly peak: number
  readonly delta: number
}

const fanoutChild = async (who: string, stateDir: string, count: number): Promise<void> => {
  const server = readServer(stateDir)
  const hosts = server.hosts.slice(0, count)
  const make = (some: ReadonlyArray<string>): () => Promise<void> => {
    if (who !== "ssh2") return libraryFanout(server, some)
    const targets = some.map((h) => targetOf(server, h))
    return async () => {
      await Promise.all(targets.map(async (target) => {
        const client = await rawConnect(target)
        try {
          await rawExec(client, "true")
        } finally {
          client.end()
        }
      }))
    }
  }
  const warm = make(hosts.slice(0, 1))
  const task = make(hosts)
  // One host first, unmeasured: code run for the first time (bytecode, inline caches) would
  // otherwise count as memory of the connections. Then a full GC, so the baseline is settled.
  if (process.env["BENCH_FANOUT_COLD"] !== "1") await warm()
  ;(globalThis as { gc?: () => void }).gc?.()
  const rss = sampleRss(10)
  const cpuStart = process.cpuUsage()
  const start = now()
  await task()
  const wallMs = now() - start
  const cpu = process.cpuUsage(cpuStart)
  const result: Fanout = { wallMs, cpuMs: (cpu.user + cpu.system) / 1000, ...rss.stop() }
  process.stdout.write(JSON.stringify(result))
}

const fanout = async (
  who: string,
  server: Server,
  count: number,
  v8Flags: ReadonlyArray<string> = []
): Promise<Fanout> =>
  JSON.parse(
    await captureProcess(process.execPath, [
      "--expose-gc",
      ...v8Flags,
      self,
      "--fanout",
      who,
      server.stateDir,
      String(count)
    ])
  ) as Fanout

// ---------------------------------------------------------------------------------------------------

interface Line {
  readonly who: string
  readonly stats: Stats | undefined
  /** CPU time of this Node process per command, when the work happens in it. */
  readonly cpuMs?: number | undefined
  readonly note?: string
}

const statRows = (lines: ReadonlyArray<Line>, base: Stats | undefined): Array<Array<string>> =>
  lines.map(({ who, stats: s, cpuMs, note }) => [
    who,
    s ? String(s.n) : "-",
    fmtMs(s?.median),
    fmtMs(s?.p90),
    fmtMs(s?.mean),
    fmtMs(cpuMs),
    base && s ? fmtRatio(base.median, s.median) : "-",
    note ?? ""
  ])

const STAT_HEADER = ["contender", "n", "median", "p90", "mean", "client CPU", "ours / it (median)", "note"]

const attempt = async <A>(what: string, task: () => Promise<A>): Promise<A | undefined> => {
  try {
    return await task()
  } catch (error) {
    console.log(`  ${what}: skipped (${String((error as Error).message ?? error).split("\n")[0]})`)
    return undefined
  }
}

const main = async (): Promise<void> => {
  console.log(await machineNote())
  console.log(
    `N=${N} (warm-up ${WARMUP}), fresh connections ${CONNECT_N}, hosts ${HOSTS}, ${IN_FLIGHT} in flight\n`
  )
  const server = await startServer({ hostCount: Math.max(HOSTS, 1) })
  const cleanup = () => server.stopSync()
  process.once("SIGINT", () => {
    cleanup()
    process.exit(130)
  })
  const scratch = mkdtempSync(join(tmpdir(), "tb-bench-"))
  const rows: Array<SummaryRow> = []
  try {
    const python = process.env["BENCH_SKIP_FABRIC"] === "1" ? undefined : await findFabricPython()
    if (python === undefined) {
      console.log(
        `  Fabric 2: ${
          process.env["BENCH_SKIP_FABRIC"] === "1"
            ? "BENCH_SKIP_FABRIC=1"
            : "not found (apt-get install python3-fabric)"
        }; skipped`
      )
    }
    const target = targetOf(server, server.host)
    const ssh = sshBase(server)
    const cm = ["-o", "ControlMaster=auto", "-o", `ControlPath=${scratch}/cm-%C`, "-o", "ControlPersist=60"]
    const fresh = ["-o", "ControlMaster=no", "-o", "ControlPath=none"]

    // ---- 1. warm sequential --------------------------------------------------------------------
    console.log(`# 1. warm "true", sequential, one connection (${N} commands after ${WARMUP} warm-up)\n`)
    const variants = variantsFor(server)
    const runtime = openLibrary(server)
    const raw = await rawConnect(target)
    let timed: Array<Timed>
    let oursConcurrent: Concurrent
    let libraryLine: string
    try {
      // What the library sends for "true" once it knows the login shell is the bash of `shell`:
      // its wrapper and the guard that stops the command if its channel goes, with the command
      // run in that shell (see remote.ts).
      await runtime.runPromise(remote("true"))
      libraryLine =
        `[ "$BASH" -ef /bin/bash ] && tb_b=1 || tb_b=0; echo __threadbare_pid_${
          "0".repeat(13)
        }=$$:$tb_b >&2; unset tb_b; ` +
        `${guard("shared")}; exec 2>&1; true`
      timed = await interleaved(
        [
          ...[headline, ...variants].map((variant) => () => runtime.runPromise(remoteTrue(variant))),
          () => rawExec(raw, "true"),
          () => rawExec(raw, "true", true),
          () => rawExec(raw, libraryLine),
          () => rawExec(raw, libraryLine, true),
          () => runProcess("ssh", [...cm, ...ssh, server.host, "true"]),
          () => runProcess("/bin/true", [])
        ],
        N,
        WARMUP
      )
      // ---- 3. (same connection) many in flight
      oursConcurrent = await runtime.runPromise(concurrently(N, IN_FLIGHT))
    } finally {
      await runtime.dispose()
      await runProcess("ssh", [...cm, ...ssh, "-O", "exit", server.host]).catch(() => {})
    }
    const [oursTimed, ...rest] = timed
    const variantTimed = rest.slice(0, variants.length)
    const [rawTimed, rawPty, rawLine, rawLinePty, cmTimed, spawnTimed] = rest.slice(variants.length)
    const ours = stats(oursTimed!.samples)
    const rawStats = stats(rawTimed!.samples)
    const controlMaster = stats(cmTimed!.samples)

    const rawConcurrentStart = now()
    const gate = limited(5)
    await Promise.all(Array.from({ length: N }, () => gate(() => rawExec(raw, "true"))))
    const rawConcurrentMs = now() - rawConcurrentStart
    raw.end()

    const nagleClient = await rawConnect(target, false)
    const [nagle] = await interleaved([() => rawExec(nagleClient, "true")], Math.min(N, 25), 5)
    nagleClient.end()

    const fabricWarm = python
      ? await attempt("Fabric 2", async () => stats(await fabric(python, server, "warm", N, WARMUP)))
      : undefined

    const line = (who: string, t: Timed | undefined, note?: string): Line => ({
      who,
      stats: t ? stats(t.samples) : undefined,
      cpuMs: t?.cpuMs,
      ...(note !== undefined ? { note } : {})
    })
    console.log(table(
      STAT_HEADER,
      statRows([
        line(headline.name, oursTimed),
        ...variants.map((v, i) => line(v.name, variantTimed[i])),
        line("OpenSSH ssh, ControlMaster", cmTimed, "a process per command"),
        { who: "Fabric 2 Connection.run(hide)", stats: fabricWarm },
        line("raw ssh2 exec `true`, TCP_NODELAY (floor)", rawTimed),
        line("  + pty", rawPty),
        line("raw ssh2 exec of the library's line", rawLine, "the shell work the library asks for"),
        line("  + pty", rawLinePty, "the same on a pty"),
        line("raw ssh2 exec `true`, Nagle on", nagle, "ssh2 without setNoDelay"),
        line("spawn /bin/true from Node", spawnTimed, "process cost inside the ssh figure")
      ], ours)
    ))
    console.log(`\n  the library's line: ${libraryLine}`)
    rows.push({
      figure: "warm `remote(\"true\")`, sequential (median)",
      ours: fmtMs(ours.median),
      peer: `${fmtMs(controlMaster.median)} (ssh ControlMaster)`,
      ratio: fmtRatio(ours.median, controlMaster.median),
      target: "<= 3 ms; <= 0.6x",
      met: ours.median <= 3 && ours.median <= 0.6 * controlMaster.median
        ? "yes"
        : `no (${
          [ours.median > 3 ? "> 3 ms" : "", ours.median > 0.6 * controlMaster.median ? "> 0.6x" : ""]
            .filter((x) => x !== "").join(", ")
        })`
    })
    if (fabricWarm) {
      rows.push({
        figure: "warm `remote(\"true\")` vs Fabric 2 (median)",
        ours: fmtMs(ours.median),
        peer: `${fmtMs(fabricWarm.median)} (Fabric 2)`,
        ratio: `${fmt(fabricWarm.median / ours.median)}x faster`,
        target: ">= 10x faster",
        met: metText(fabricWarm.median / ours.median >= 10)
      })
    }
    rows.push({
      figure: "warm `remote(\"true\")` vs raw ssh2 floor (median)",
      ours: fmtMs(ours.median),
      peer: `${fmtMs(rawStats.median)} (ssh2 + TCP_NODELAY)`,
      ratio: fmtRatio(ours.median, rawStats.median),
      target: "-",
      met: "-"
    })

    // ---- 2. first command with connection set-up -----------------------------------------------
    console.log(`\n# 2. first command including the connection set-up (${CONNECT_N} fresh connections)\n`)
    const rawFirst = (pty: boolean) => async () => {
      const client = await rawConnect(target)
      await rawExec(client, "true", pty)
      client.end()
    }
    const freshTimed = await interleaved(
      [
        () => libraryFresh(server),
        () => libraryFresh(server, { pty: true }),
        () => runProcess("ssh", [...fresh, ...ssh, server.host, "true"]),
        rawFirst(false),
        rawFirst(true)
      ],
      CONNECT_N,
      1
    )
    const [oursFreshTimed, oursFreshPty, sshFreshTimed, rawFreshTimed, rawFreshPty] = freshTimed
    const oursFresh = stats(oursFreshTimed!.samples)
    const sshFresh = stats(sshFreshTimed!.samples)
    const fabricFresh = python
      ? await attempt(
        "Fabric 2 fresh",
        async () => stats(await fabric(python, server, "fresh", CONNECT_N, 0))
      )
      : undefined
    console.log(table(
      STAT_HEADER,
      statRows([
        { who: "effect-threadbare (fresh layer)", stats: oursFresh },
        { who: "  pty: true", stats: stats(oursFreshPty!.samples) },
        { who: "OpenSSH ssh, new connection", stats: sshFresh },
        { who: "Fabric 2 new Connection + run", stats: fabricFresh },
        { who: "raw ssh2 connect + exec (floor)", stats: stats(rawFreshTimed!.samples) },
        {
          who: "  + pty",
          stats: stats(rawFreshPty!.samples),
          note: "the first pty of a connection waits for a delayed ACK"
        }
      ], oursFresh)
    ))
    rows.push({
      figure: "first command incl. connect (median)",
      ours: fmtMs(oursFresh.median),
      peer: `${fmtMs(sshFresh.median)} (ssh, no ControlMaster)`,
      ratio: fmtRatio(oursFresh.median, sshFresh.median),
      target: "-",
      met: "-"
    })

    // ---- 3. many in flight ---------------------------------------------------------------------
    console.log(`\n# 3. ${N} commands on one host, ${IN_FLIGHT} in flight\n`)
    const perSecond = (count: number, ms: number) => (count * 1000) / ms
    const oursSeqRate = 1000 / ours.mean
    const oursParRate = perSecond(oursConcurrent.ok, oursConcurrent.wallMs)
    console.log(table(["contender", "commands", "succeeded", "wall", "commands/s", "vs sequential"], [
      [
        "effect-threadbare, concurrency 50",
        String(N),
        String(oursConcurrent.ok ?? "-"),
        fmtMs(oursConcurrent.wallMs),
        fmt(oursParRate),
        fmtRatio(oursParRate, oursSeqRate)
      ],
      [
        "effect-threadbare, sequential (from 1.)",
        String(N),
        String(N),
        fmtMs(ours.mean * N),
        fmt(oursSeqRate),
        "1x"
      ],
      [
        "raw ssh2, 5 channels at once (floor)",
        String(N),
        String(N),
        fmtMs(rawConcurrentMs),
        fmt(perSecond(N, rawConcurrentMs)),
        fmtRatio(perSecond(N, rawConcurrentMs), 1000 / rawStats.mean)
      ]
    ]))
    if (oursConcurrent.firstFailure !== undefined) {
      console.log(`\n  ${N - oursConcurrent.ok} failed; the first: ${oursConcurrent.firstFailure}`)
      process.exitCode = 1
    }
    rows.push({
      figure: `${N} commands, ${IN_FLIGHT} in flight, one host`,
      ours: `${fmt(oursParRate)} cmd/s`,
      peer: `${fmt(oursSeqRate)} cmd/s (ours, sequential)`,
      ratio: fmtRatio(oursParRate, oursSeqRate),
      target: `all ${N} succeed`,
      met: metText(oursConcurrent.ok === N)
    })

    // ---- 4. fan-out to many hosts ---------------------------------------------------------------
    const count = Math.min(HOSTS, server.hosts.length)
    console.log(`\n# 4. ${count} hosts at once, one "true" each (each contender in a fresh Node process)\n`)
    const oursFan = await fanout("library", server, count)
    const rawFan = await fanout("ssh2", server, count)
    // V8 lets the young generation grow to 16+ MiB before collecting it, so the peak above is
    // mostly short-lived garbage; with it capped at 1 MiB the peak is closer to what is retained.
    const smallYoung = ["--max-semi-space-size=1"]
    const oursFanSmall = await fanout("library", server, count, smallYoung)
    const rawFanSmall = await fanout("ssh2", server, count, smallYoung)
    const hostsFile = join(scratch, "hosts")
    writeFileSync(hostsFile, server.hosts.slice(0, count).map((h) => `${h}:${server.port}\n`).join(""))
    const psshStart = now()
    const pssh = (await commandExists("parallel-ssh", ["--version"]))
      ? await attempt("parallel-ssh", async () => {
        await runProcess("parallel-ssh", [
          "-h",
          hostsFile,
          "-p",
          String(count),
          "-l",
          server.user,
          "-x",
          ssh.slice(0, -4).join(" "),
          "true"
        ])
        return now() - psshStart
      })
      : undefined
    const fanRow = (
      who: string,
      f: Fanout
    ) => [who, fmtMs(f.wallMs), fmtMs(f.cpuMs), fmtMiB(f.delta), fmtMiB(f.baseline)]
    console.log(table(["contender", "wall", "client CPU", "peak RSS - baseline", "baseline RSS"], [
      fanRow("effect-threadbare", oursFan),
      fanRow("raw ssh2, all at once (floor)", rawFan),
      fanRow("effect-threadbare, --max-semi-space-size=1", oursFanSmall),
      fanRow("raw ssh2, --max-semi-space-size=1", rawFanSmall),
      [`parallel-ssh (pssh -p ${count}, OpenSSH processes)`, fmtMs(pssh), "-", "-", "-"]
    ]))
    rows.push({
      figure: `${count} hosts at once, one command each: peak RSS`,
      ours: `+${fmtMiB(oursFan.delta)}`,
      peer: `+${fmtMiB(rawFan.delta)} (raw ssh2)`,
      ratio: fmtRatio(oursFan.delta, rawFan.delta),
      target: "-",
      met: "-"
    })
    rows.push({
      figure: `${count} hosts at once, one command each: wall`,
      ours: fmtMs(oursFan.wallMs),
      peer: pssh === undefined ? "-" : `${fmtMs(pssh)} (parallel-ssh)`,
      ratio: fmtRatio(oursFan.wallMs, pssh),
      target: "-",
      met: "-"
    })

    console.log(
      "\nCaveat: loopback, a shared 2-core machine; numbers vary with load (see the load average above)."
    )
    summary(rows)
  } finally {
    rmSync(scratch, { recursive: true, force: true })
    await server.stop()
  }
}

if (process.argv[2] === "--fanout") {
  await fanoutChild(process.argv[3]!, process.argv[4]!, Number(process.argv[5]))
} else {
  await main()
}
