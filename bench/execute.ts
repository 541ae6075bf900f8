/**
 * Execute: one short command on many hosts with `Execute.withHosts` in its modes and pool shapes,
 * next to parallel-ssh (OpenSSH underneath), a hand-written fan-out on fibers, and raw ssh2; then
 * what a worker costs, with Node's compile cache and without. All against one throwaway sshd on
 * loopback aliases (tests-remote/server.ts), in one run.
 *
 *   scripts/node.sh node bench/execute.ts
 *
 * Figures:
 *   1. `true` on 50 hosts (127.0.0.1 .. 127.0.0.50), 10 at a time: wall time of
 *        - Execute.withHosts(remoteTrue, hosts, { poolSize: 10 })     (defaults: min(10, CPUs) workers,
 *          each taking its share of the 10 runs at once, compile cache on), and with compileCache: false
 *        - the same with workers: 10 (a process per run in flight), with and without the cache
 *        - the same on Execute.layerPool({ poolSize: 10 }), started before the timing
 *        - Execute.withHosts(..., { mode: "fibers", poolSize: 10 })   (in this process)
 *        - parallel-ssh -p 10 ... true                                  (OpenSSH processes)
 *        - Effect.forEach(hosts, Operations.remote("true") on the host, { concurrency: 10 })  (hand-written)
 *        - raw ssh2, 10 at a time                                       (floor)
 *      and the CPU each used on the client side (this process and its reaped children).
 *   2. the cost of a worker: request -> task start in a fresh worker (a pool of 1, compile cache off
 *      and on, and the pools of 1.: when each worker's first run began, and the CPU booting it
 *      took), and in a reused one (previous result received -> next task start).
 *
 * Environment: BENCH_N (repetitions of each measurement, default 3; medians are reported),
 * BENCH_HOSTS (default 50), BENCH_POOL (default 10), BENCH_REUSED (runs on one worker for the
 * reused-worker figure, default 20). The compile cache is Execute's default directory
 * (os.tmpdir()/effect-threadbare-compile-cache), filled by an unmeasured first round.
 *
 * Needs OpenSSH (client and server) and Debian's pssh (`apt-get install pssh`, which provides
 * parallel-ssh); a benchmark, not a test: it fails only when a host did.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as os from "node:os"
import { join } from "node:path"
import * as Execute from "../src/Execute.ts"
import * as Operations from "../src/Operations.ts"
import { Output, type Writer } from "../src/Output.ts"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import { startServer } from "../tests-remote/server.ts"
import { epochMs, probe, remoteTrue, type Stamps } from "./execute-tasks.ts"
import {
  envInt,
  fmt,
  fmtMs,
  fmtRatio,
  librarySettings,
  machineNote,
  metText,
  now,
  rawConnect,
  rawExec,
  stats,
  summary,
  type SummaryRow,
  table,
  type Target,
  targetOf
} from "./lib.ts"

const N = envInt("BENCH_N", 3)
const HOSTS = envInt("BENCH_HOSTS", 50)
const POOL = envInt("BENCH_POOL", 10)
const REUSED = Math.max(2, envInt("BENCH_REUSED", 20))
const SETTLE_MS = 200

// ---------------------------------------------------------------------------------------------------
// Machine: load and CPU. /proc/self/stat counts this process and, once reaped, its children and
// their descendants (worker processes; parallel-ssh and the ssh processes it waited for).

const TICK_MS = 10 // USER_HZ is 100 on Linux

const treeCpuMs = (): number => {
  const stat = readFileSync("/proc/self/stat", "utf8")
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  // fields[0] is field 3 (state): utime, stime, cutime, cstime are fields 14..17
  return [11, 12, 13, 14].reduce((sum, i) => sum + Number(fields[i]), 0) * TICK_MS
}

/** Busy and total jiffies of the whole machine. */
const machineCpu = (): { busy: number; total: number } => {
  const [, ...values] = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/)
  const v = values.map(Number)
  const idle = v[3]! + v[4]!
  const total = v.reduce((a, b) => a + b, 0)
  return { busy: total - idle, total }
}

const loadText = (): string => os.loadavg().map((x) => fmt(x)).join(" / ")

// ---------------------------------------------------------------------------------------------------
// Peers: processes and raw ssh2.

const runProcess = (file: string, args: ReadonlyArray<string>): Promise<string> =>
  new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    let err = ""
    child.stdout!.on("data", (d) => (out += d))
    child.stderr!.on("data", (d) => (err += d))
    child.once("error", reject)
    child.once("close", (code) =>
      code === 0
        ? resolve(out)
        : reject(new Error(`${file} exited ${code}: ${(err + out).trim().slice(-2000)}`)))
  })

/** Connect, run `true`, disconnect: one host's run on raw ssh2. */
const rawTrue = async (target: Target): Promise<void> => {
  const client = await rawConnect(target)
  try {
    await rawExec(client, "true")
  } finally {
    client.end()
  }
}

/** Runs `task` on every item, at most `limit` at once. */
const eachLimited = async <A>(items: ReadonlyArray<A>, limit: number, task: (a: A) => Promise<void>) => {
  let next = 0
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await task(items[next++]!)
  }))
}

// ---------------------------------------------------------------------------------------------------
// effect-threadbare.

const failureText = (exit: Exit.Exit<unknown, unknown>): string =>
  Exit.isFailure(exit) ? Cause.pretty(exit.cause).split("\n")[0]! : "ok"

/** Throws when any outcome failed: a benchmark of failed runs measures nothing. */
const requireAll = <A>(
  what: string,
  outcomes: ReadonlyArray<{ readonly exit: Exit.Exit<A, unknown> }>,
  label: (i: number) => string
): Array<A> => {
  const failed = outcomes.map((o, i) => [o, i] as const).filter(([o]) => Exit.isFailure(o.exit))
  if (failed.length > 0) {
    throw new Error(
      `${what}: ${failed.length} of ${outcomes.length} failed; first: ${label(failed[0]![1])}: ` +
        failureText(failed[0]![0].exit)
    )
  }
  return outcomes.map((o) => (o.exit as Exit.Success<A>).value)
}

// ---------------------------------------------------------------------------------------------------

interface Sample {
  readonly wallMs: number
  readonly cpuMs: number
}

/** Times `task`, then waits a little (not timed) so reaped children's CPU is counted. */
const measure = async <A>(task: () => Promise<A>): Promise<Sample & { readonly value: A }> => {
  const cpu0 = treeCpuMs()
  const start = now()
  const value = await task()
  const wallMs = now() - start
  await new Promise((r) => setTimeout(r, SETTLE_MS))
  return { wallMs, cpuMs: treeCpuMs() - cpu0, value }
}

const median = (xs: ReadonlyArray<number>): number => stats(xs).median

const main = async (): Promise<void> => {
  console.log(await machineNote())
  if (process.env["NODE_COMPILE_CACHE"] !== undefined) {
    console.log(
      `(NODE_COMPILE_CACHE=${
        process.env["NODE_COMPILE_CACHE"]
      } was set: unset here, so the compileCache option decides)`
    )
    delete process.env["NODE_COMPILE_CACHE"]
  }
  console.log(`N=${N} repetitions (medians reported), ${HOSTS} hosts, pool/concurrency ${POOL}\n`)
  const machine0 = machineCpu()
  const loadSamples: Array<number> = []
  const loadTimer = setInterval(() => loadSamples.push(os.loadavg()[0]!), 1000)
  const runStart = now()

  const server = await startServer({ hostCount: HOSTS })
  process.once("SIGINT", () => {
    server.stopSync()
    process.exit(130)
  })
  const scratch = mkdtempSync(join(os.tmpdir(), "tb-bench-execute-"))
  const rows: Array<SummaryRow> = []
  try {
    const hosts = server.hosts.slice(0, HOSTS)
    const settings = Settings.layer(librarySettings(server))
    const run = <A, E>(effect: Effect.Effect<A, E>): Promise<A> =>
      Effect.runPromise(Effect.provide(effect, settings))

    const hostsFile = join(scratch, "hosts")
    writeFileSync(hostsFile, hosts.map((h) => `${h}\n`).join(""))
    const psshArgs = [
      "-p",
      String(POOL),
      "-h",
      hostsFile,
      "-l",
      server.user,
      "-x",
      [
        "-F /dev/null",
        `-i ${server.keyPath}`,
        "-o IdentitiesOnly=yes",
        `-o UserKnownHostsFile=${server.knownHostsPath}`,
        "-o StrictHostKeyChecking=yes",
        "-o BatchMode=yes",
        `-p ${server.port}`
      ].join(" "),
      "true"
    ]
    const targets = hosts.map((h) => targetOf(server, h))

    // ---- 1. fan-out ------------------------------------------------------------------------------
    type Who =
      | "default"
      | "defaultNoCache"
      | "perRun"
      | "perRunNoCache"
      | "started"
      | "fibersMode"
      | "pssh"
      | "fibers"
      | "ssh2"
    type WorkerWho = "default" | "defaultNoCache" | "perRun" | "perRunNoCache" | "started"
    /** One call, with the epoch time it was made: the workers' stamps say when each came up. */
    interface Call {
      readonly request: number
      readonly stamps: Array<Stamps>
    }
    const withHosts = async (options: Execute.Options): Promise<Call> => {
      const request = epochMs()
      const outcomes = await run(Execute.withHosts(remoteTrue, hosts, { poolSize: POOL, ...options }))
      return { request, stamps: requireAll("Execute.withHosts", outcomes, (i) => hosts[i]!) }
    }
    // A pool started once, before any timing, and shared by the calls of its row.
    const pooled = ManagedRuntime.make(Layer.merge(settings, Execute.layerPool({ poolSize: POOL })))
    const workersOfPool = await pooled.runPromise(Effect.gen(function*() {
      return (yield* Execute.WorkerPool).workers
    }))
    const fiberRuns: Array<number> = []
    const contenders: Record<Who, () => Promise<unknown>> = {
      default: () => withHosts({}),
      defaultNoCache: () => withHosts({ compileCache: false }),
      perRun: () => withHosts({ workers: POOL }),
      perRunNoCache: () => withHosts({ workers: POOL, compileCache: false }),
      started: async () => {
        const request = epochMs()
        const outcomes = await pooled.runPromise(Execute.withHosts(remoteTrue, hosts))
        return { request, stamps: requireAll("Execute.withHosts on layerPool", outcomes, (i) => hosts[i]!) }
      },
      fibersMode: () => withHosts({ mode: "fibers" }),
      pssh: async () => {
        const out = await runProcess("parallel-ssh", psshArgs)
        const ok = out.split("\n").filter((l) => l.includes("[SUCCESS]")).length
        if (ok !== hosts.length) throw new Error(`parallel-ssh: ${ok} of ${hosts.length} succeeded\n${out}`)
      },
      fibers: () =>
        run(
          Effect.forEach(
            hosts,
            (host) => {
              const start = now()
              return Operations.remote("true").pipe(
                Settings.settings({ host }),
                Effect.exit,
                Effect.tap(() => Effect.sync(() => fiberRuns.push(now() - start)))
              )
            },
            { concurrency: POOL }
          ).pipe(Effect.provide(Ssh.layer))
        ).then((exits) => requireAll("in-process fibers", exits.map((exit) => ({ exit })), (i) => hosts[i]!)),
      ssh2: () => eachLimited(targets, POOL, rawTrue)
    }
    const order: ReadonlyArray<Who> = [
      "default",
      "pssh",
      "perRunNoCache",
      "fibersMode",
      "defaultNoCache",
      "started",
      "perRun",
      "fibers",
      "ssh2"
    ]
    const fan = Object.fromEntries(order.map((who) => [who, [] as Array<Sample>])) as Record<
      Who,
      Array<Sample>
    >
    const workerWhos: ReadonlyArray<WorkerWho> = [
      "default",
      "defaultNoCache",
      "perRun",
      "perRunNoCache",
      "started"
    ]
    const calls = Object.fromEntries(workerWhos.map((who) => [who, [] as Array<Call>])) as Record<
      WorkerWho,
      Array<Call>
    >
    // one unmeasured round of the cheap ones first (sshd's first forks, JIT of this process), and
    // of one worker call, which fills the compile cache
    console.log(`# 1. \`true\` on ${hosts.length} hosts, ${POOL} at a time (${N} rounds)\n`)
    for (const who of ["default", "started", "fibersMode", "fibers", "ssh2"] as const) await contenders[who]()
    fiberRuns.length = 0
    for (let rep = 0; rep < N; rep++) {
      // rotate the order so a change of load does not always hit the same contender
      for (let k = 0; k < order.length; k++) {
        const who = order[(k + rep) % order.length]!
        const sample = await measure(contenders[who])
        fan[who].push(sample)
        if ((workerWhos as ReadonlyArray<Who>).includes(who)) {
          calls[who as WorkerWho].push(sample.value as Call)
        }
      }
    }
    await pooled.dispose()
    const wallOf = (who: Who) => median(fan[who].map((s) => s.wallMs))
    const psshWall = wallOf("pssh")
    const procs = Math.min(os.availableParallelism(), POOL)
    const perProc = Math.ceil(POOL / procs)
    const line = (who: Who, name: string, note: string) => {
      const wall = stats(fan[who].map((s) => s.wallMs))
      return [
        name,
        fmtMs(wall.median),
        `${fmtMs(wall.min)} .. ${fmtMs(wall.max)}`,
        fmtMs(median(fan[who].map((s) => s.cpuMs))),
        fmtRatio(wall.median, psshWall),
        note
      ]
    }
    console.log(table(["contender", "wall (median)", "min .. max", "client CPU", "vs parallel-ssh", "note"], [
      line(
        "default",
        `Execute.withHosts, poolSize ${POOL} (defaults)`,
        `${procs} fresh workers x ${perProc} runs, compile cache on`
      ),
      line("defaultNoCache", "  the same, compileCache: false", `${procs} fresh workers x ${perProc} runs`),
      line(
        "perRun",
        `Execute.withHosts, poolSize ${POOL}, workers: ${POOL}`,
        "a fresh worker per run in flight"
      ),
      line("perRunNoCache", "  the same, compileCache: false", "as before this change"),
      line(
        "started",
        `Execute.withHosts on Execute.layerPool({ poolSize: ${POOL} })`,
        `${workersOfPool} workers started beforehand`
      ),
      line("fibersMode", `Execute.withHosts, mode: "fibers", poolSize ${POOL}`, "in this process"),
      line("pssh", `parallel-ssh -p ${POOL}`, "an ssh process per host"),
      line(
        "fibers",
        `hand-written Effect.forEach + remote, concurrency ${POOL}`,
        "one Node process, Ssh.layer"
      ),
      line("ssh2", `raw ssh2, ${POOL} at a time (floor)`, "connect + exec + close")
    ]))
    const stampsOf = (who: WorkerWho) => calls[who].map((c) => c.stamps)
    const pidsOf = (who: WorkerWho) => median(stampsOf(who).map((run) => new Set(run.map((s) => s.pid)).size))
    // the first run in each worker (cold: JIT, first handshake of the process) and the later ones
    const firstRuns: Array<Stamps> = []
    const laterRuns: Array<Stamps> = []
    for (const call of stampsOf("perRunNoCache")) {
      const seen = new Set<number>()
      for (const s of [...call].sort((a, b) => a.start - b.start)) {
        ;(seen.has(s.pid) ? laterRuns : firstRuns).push(s)
        seen.add(s.pid)
      }
    }
    const runMs = (xs: ReadonlyArray<Stamps>) => fmtMs(median(xs.map((s) => s.end - s.start)))
    const runCpu = (xs: ReadonlyArray<Stamps>) => fmtMs(median(xs.map((s) => s.cpuAtEnd - s.cpuAtStart)))
    console.log(
      `\n  one host's run (connect + \`true\` + close), median, ${POOL} workers: in a worker's first run ${
        runMs(firstRuns)
      } (worker CPU ${runCpu(firstRuns)}), in its later runs ${runMs(laterRuns)} (CPU ${
        runCpu(laterRuns)
      }); ` +
        `hand-written fibers ${fmtMs(median(fiberRuns))}; distinct worker pids per call: ` +
        workerWhos.map((who) => `${who} ${fmt(pidsOf(who))}`).join(", ")
    )
    console.log(
      `  client CPU counts this process and its reaped children (workers; parallel-ssh and its ssh ` +
        `processes); sshd's CPU is not in it (nor, for the started pool, the CPU of starting it)`
    )
    const row = (who: Who, figure: string, target: string, bound: number | undefined) => {
      const wall = wallOf(who)
      rows.push({
        figure,
        ours: fmtMs(wall),
        peer: `${fmtMs(psshWall)} (parallel-ssh -p ${POOL})`,
        ratio: fmtRatio(wall, psshWall),
        target,
        met: bound === undefined ? "-" : metText(wall <= bound * psshWall)
      })
    }
    row(
      "default",
      `\`true\` on ${hosts.length} hosts, poolSize ${POOL}: worker processes, defaults (${procs} x ${perProc})`,
      "<= 0.6x",
      0.6
    )
    row("defaultNoCache", "  the same, compileCache: false", "(<= 0.6x)", 0.6)
    row("perRun", `  workers: ${POOL} (a process per run in flight)`, "(<= 0.6x)", 0.6)
    row("perRunNoCache", `  workers: ${POOL}, compileCache: false (as before)`, "(<= 0.6x)", 0.6)
    row("started", `  on Execute.layerPool, started beforehand (${workersOfPool} workers)`, "(<= 0.6x)", 0.6)
    row("fibersMode", `\`true\` on ${hosts.length} hosts, poolSize ${POOL}: mode "fibers"`, "<= 0.3x", 0.3)
    row("ssh2", `\`true\` on ${hosts.length} hosts, ${POOL} at a time: raw ssh2 floor`, "-", undefined)

    // ---- 2. the cost of a worker -------------------------------------------------------------------
    console.log(`\n# 2. the cost of a worker (${N} repetitions)\n`)
    const idle = { until: null, host: null, line: null }

    // a. one fresh worker, pool of 1, with and without the compile cache
    const freshOne = async (compileCache: false | undefined) => {
      const fresh: Array<{ request: number; stamps: Stamps; wall: number }> = []
      for (let rep = 0; rep < N; rep++) {
        const request = epochMs()
        const t = now()
        const [outcome] = await run(Execute.forEach(probe, [idle], { poolSize: 1, compileCache }))
        const wall = now() - t
        fresh.push({ request, stamps: requireAll("fresh worker", [outcome!], () => "#1")[0]!, wall })
        await new Promise((r) => setTimeout(r, SETTLE_MS))
      }
      return {
        requestToStart: fresh.map((f) => f.stamps.start - f.request),
        forkToNode: fresh.map((f) => f.stamps.processStart - f.request),
        nodeToStart: fresh.map((f) => f.stamps.start - f.stamps.processStart),
        cpu: fresh.map((f) => f.stamps.cpuAtStart),
        wall: fresh.map((f) => f.wall)
      }
    }
    const cold = await freshOne(false)
    const cached = await freshOne(undefined)

    // b. a reused worker: previous result received here -> next task start there
    const arrivals = new Map<string, number>()
    const noting: Writer = {
      write: (text) =>
        Effect.sync(() => {
          arrivals.set(text.trim().split(" ").at(-1)!, epochMs())
        })
    }
    const reusedLatency: Array<number> = []
    const reusedGap: Array<number> = []
    const reusedWall: Array<number> = []
    for (let rep = 0; rep < N; rep++) {
      arrivals.clear()
      const inputs = Array.from({ length: REUSED }, (_, i) => ({ until: null, host: null, line: `r${i}` }))
      const t = now()
      const outcomes = await run(
        Execute.forEach(probe, inputs, { poolSize: 1 }).pipe(Effect.provideService(Output, noting))
      )
      reusedWall.push(now() - t)
      const stamps = requireAll("reused worker", outcomes, (i) => `#${i + 1}`)
      if (new Set(stamps.map((s) => s.pid)).size !== 1) throw new Error("reused worker: more than one pid")
      for (let i = 1; i < stamps.length; i++) {
        const arrived = arrivals.get(`r${i - 1}`)
        if (arrived !== undefined) reusedLatency.push(stamps[i]!.start - arrived)
        reusedGap.push(stamps[i]!.start - stamps[i - 1]!.end)
      }
      await new Promise((r) => setTimeout(r, SETTLE_MS))
    }

    // The pools of 1.: each worker's first run tells when it came up, and what booting it cost.
    const poolOf = (list: ReadonlyArray<Call>) => {
      const firsts = list.map((call) => {
        const first = new Map<number, Stamps>()
        for (const s of call.stamps) {
          const seen = first.get(s.pid)
          if (seen === undefined || s.start < seen.start) first.set(s.pid, s)
        }
        return { request: call.request, workers: [...first.values()] }
      })
      const starts = firsts.map((f) => f.workers.map((s) => s.start - f.request).sort((a, b) => a - b))
      return {
        first: median(starts.map((x) => x[0]!)),
        last: median(starts.map((x) => x.at(-1)!)),
        cpu: median(firsts.flatMap((f) => f.workers.map((s) => s.cpuAtStart)))
      }
    }
    const pools = {
      default: poolOf(calls.default),
      defaultNoCache: poolOf(calls.defaultNoCache),
      perRun: poolOf(calls.perRun),
      perRunNoCache: poolOf(calls.perRunNoCache)
    }
    const pair = (a: number, b: number) => `${fmtMs(a)} / ${fmtMs(b)}`
    const spread = (xs: ReadonlyArray<number>) => `${fmtMs(Math.min(...xs))} .. ${fmtMs(Math.max(...xs))}`
    console.log(table(["measure", "median", "min .. max", "note"], [
      [
        "fresh worker (pool of 1): request -> task start",
        pair(median(cold.requestToStart), median(cached.requestToStart)),
        `${spread(cold.requestToStart)} / ${spread(cached.requestToStart)}`,
        "compile cache off / on; Execute.forEach called -> the task's first line"
      ],
      [
        "  of which request -> worker's Node clock starts",
        pair(median(cold.forkToNode), median(cached.forkToNode)),
        "",
        "pool + fork + exec (performance.timeOrigin)"
      ],
      [
        "  of which Node start -> task start",
        pair(median(cold.nodeToStart), median(cached.nodeToStart)),
        "",
        "boot, imports (effect, ssh2, .ts stripping), RPC, task module"
      ],
      [
        "  CPU of the worker when its task starts",
        pair(median(cold.cpu), median(cached.cpu)),
        `${spread(cold.cpu)} / ${spread(cached.cpu)}`,
        "what booting one costs"
      ],
      [
        "  whole Execute.forEach call",
        pair(median(cold.wall), median(cached.wall)),
        "",
        "incl. stopping the worker"
      ],
      [
        `pool of ${procs} (defaults) in 1.: request -> last worker's first task`,
        pair(pools.defaultNoCache.last, pools.default.last),
        "",
        "compile cache off / on: the pool is fully up"
      ],
      [
        `pool of ${POOL} (workers: ${POOL}) in 1.: request -> last worker's first task`,
        pair(pools.perRunNoCache.last, pools.perRun.last),
        "",
        "compile cache off / on"
      ],
      [
        `  CPU of each of the ${POOL} workers when its first task starts`,
        pair(pools.perRunNoCache.cpu, pools.perRun.cpu),
        "",
        `x ${POOL} workers = ${fmtMs(pools.perRunNoCache.cpu * POOL)} / ${
          fmtMs(pools.perRun.cpu * POOL)
        } CPU on ${os.cpus().length} cores`
      ],
      [
        "reused worker: previous result here -> next task start",
        fmtMs(median(reusedLatency)),
        `p90 ${fmtMs(stats(reusedLatency).p90)}`,
        `${REUSED - 1} x ${N} runs on one worker`
      ],
      [
        "  worker side: one task's end -> the next one's start",
        fmtMs(median(reusedGap)),
        `p90 ${fmtMs(stats(reusedGap).p90)}`,
        "result encoded, sent, decoded; next run sent"
      ],
      [
        `  whole Execute.forEach of ${REUSED} runs on one worker`,
        fmtMs(median(reusedWall)),
        "",
        `≈ fresh start + ${REUSED - 1} x reuse`
      ]
    ]))
    console.log(
      "\n  times across processes: epoch ms from performance.timeOrigin + performance.now() in each"
    )
    rows.push({
      figure: "fresh worker: CPU to start (median), compile cache on",
      ours: fmtMs(median(cached.cpu)),
      peer: `${fmtMs(median(cold.cpu))} (compile cache off)`,
      ratio: fmtRatio(median(cached.cpu), median(cold.cpu)),
      target: "-",
      met: "-"
    })
    rows.push({
      figure: "fresh worker: request -> task start (median), compile cache on",
      ours: fmtMs(median(cached.requestToStart)),
      peer: `${fmtMs(median(cold.requestToStart))} (compile cache off)`,
      ratio: fmtRatio(median(cached.requestToStart), median(cold.requestToStart)),
      target: "-",
      met: "-"
    })
    rows.push({
      figure: "reused worker: previous result -> next task start (median)",
      ours: fmtMs(median(reusedLatency)),
      peer: "-",
      ratio: "-",
      target: "-",
      met: "-"
    })

    clearInterval(loadTimer)
    const machine1 = machineCpu()
    const busy = (100 * (machine1.busy - machine0.busy)) / Math.max(1, machine1.total - machine0.total)
    console.log(
      `\nLoad: 1-min load average ${fmt(Math.min(...loadSamples))} .. ${fmt(Math.max(...loadSamples))} ` +
        `during the run (${loadText()} at the end); the machine's ${os.cpus().length} cores were ` +
        `${fmt(busy)}% busy over the ${fmt((now() - runStart) / 1000)} s run, this benchmark included.`
    )
    console.log("Caveat: loopback, a shared 2-core machine; numbers vary with load.")
    summary(rows)
  } finally {
    clearInterval(loadTimer)
    rmSync(scratch, { recursive: true, force: true })
    await server.stop()
  }
}

await main()
