/**
 * Fleet: how far one controller goes. `true` on 1,000 simulated hosts, every host in flight at
 * once at the top of the ladder, with `Execute.withHosts` on fibers in this process and on worker
 * processes; what it costs the controller and where it breaks.
 *
 *   scripts/node.sh node bench/fleet.ts
 *
 * Hosts: loopback addresses times ports. `tests-remote/server.ts` serves at most 250 addresses
 * (127.0.0.1 .. 127.0.0.250) per server, so FLEET_HOSTS / 250 servers are started, each on a port
 * of its own (host strings `127.0.0.a:port`). Each server has its own host and client keys: their
 * known_hosts are joined into one file, and the first server's client key is authorized on all.
 *
 * For each mode (fibers, parallel) and each pool size of the ladder (runs in flight at once):
 *   - wall time of the call, and how many hosts failed, by error (`ConnectionError/timeout`...)
 *   - peak RSS of this process, and of the worker processes together
 *   - CPU per host: this process (`process.cpuUsage`) plus its reaped workers (/proc/self/stat)
 *   - open descriptors at peak: this process, the workers, and the server's sshd processes
 *
 * Limits: Node raises its open-descriptor soft limit to the hard limit itself; FLEET_NOFILE
 * runs the benchmark again under `ulimit -n FLEET_NOFILE` (soft and hard), to watch the
 * controller reach it. sshd's limits are the throwaway server's: MaxStartups 1000:30:2000 per
 * listener (16 addresses each), MaxSessions 10 (one channel per connection here). Every host is
 * a distinct (address, port), so ephemeral ports (32768..60999) bound only connections to one of
 * them, never reached.
 *
 * Environment: FLEET_HOSTS (default 1000), FLEET_POOLS (default "100,250,500,1000"),
 * FLEET_MODES (default "fibers,parallel"), FLEET_WORKERS (worker processes in parallel; default
 * Execute's, one per CPU), FLEET_NOFILE (see above). A benchmark, not a test: failed hosts are
 * counted and printed, they do not fail it.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { spawnSync } from "node:child_process"
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as os from "node:os"
import { join } from "node:path"
import * as Execute from "../src/Execute.ts"
import * as Settings from "../src/Settings.ts"
import { type Server, startServer } from "../tests-remote/server.ts"
import { remoteTrue } from "./execute-tasks.ts"
import {
  envInt,
  fmt,
  fmtMiB,
  fmtMs,
  librarySettings,
  machineNote,
  now,
  summary,
  type SummaryRow,
  table
} from "./lib.ts"

// ---------------------------------------------------------------------------------------------------
// The descriptor limit: Node cannot raise its own, a shell before it can.

const nofile = (): { soft: number; hard: number } => {
  const line = readFileSync("/proc/self/limits", "utf8").split("\n").find((l) =>
    l.startsWith("Max open files")
  )
  const [soft, hard] = (line ?? "").replace("Max open files", "").trim().split(/\s+/)
  const num = (s: string | undefined) => (s === "unlimited" ? Number.POSITIVE_INFINITY : Number(s))
  return { soft: num(soft), hard: num(hard) }
}

const REEXEC_ENV = "FLEET_REEXECUTED"
{
  const { hard, soft } = nofile()
  // Node raises its own soft limit to the hard one at start, so only the hard limit counts:
  // FLEET_NOFILE lowers both, to watch the controller reach it.
  const wanted = process.env["FLEET_NOFILE"] ?? (soft < hard ? String(hard) : undefined)
  if (wanted !== undefined && process.env[REEXEC_ENV] === undefined && wanted !== String(soft)) {
    const result = spawnSync(
      "/bin/sh",
      [
        "-c",
        `ulimit -n "$1" && shift && exec "$@"`,
        "fleet",
        wanted === "Infinity" ? "unlimited" : wanted,
        process.execPath,
        ...process.execArgv,
        ...process.argv.slice(1)
      ],
      { stdio: "inherit", env: { ...process.env, [REEXEC_ENV]: "1" } }
    )
    process.exit(result.status ?? 1)
  }
}

const HOSTS = envInt("FLEET_HOSTS", 1000)
const PER_SERVER = 250
const list = (name: string, fallback: string) =>
  (process.env[name] ?? fallback).split(",").map((s) => s.trim()).filter((s) => s !== "")
const POOLS = list("FLEET_POOLS", "100,250,500,1000").map(Number)
const MODES = list("FLEET_MODES", "fibers,parallel") as Array<"fibers" | "parallel">
const WORKERS = process.env["FLEET_WORKERS"] === undefined ? undefined : envInt("FLEET_WORKERS", 2)
const SETTLE_MS = 300

// ---------------------------------------------------------------------------------------------------
// /proc: CPU of reaped children, and the processes of this machine.

const TICK_MS = 10 // USER_HZ is 100 on Linux
const PAGE = 4096

const statFields = (pid: number | "self"): Array<string> => {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
  return [
    stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")),
    ...stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  ]
}

/** CPU (ms) of this process's reaped children: worker processes once the pool has ended. */
const childrenCpuMs = (): number => {
  const f = statFields("self")
  // f[0] is comm, f[1] state (field 3): cutime and cstime are fields 16 and 17.
  return (Number(f[14]) + Number(f[15])) * TICK_MS
}

// Node names its main thread, so `comm` does not say "node": the command line does.
const isWorker = (pid: number): boolean => readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("workerMain")

const rssOf = (pid: number): number => Number(readFileSync(`/proc/${pid}/statm`, "utf8").split(" ")[1]) * PAGE
const fdsOf = (pid: number | "self"): number => readdirSync(`/proc/${pid}/fd`).length

interface Peaks {
  controllerRss: number
  controllerFds: number
  workersRss: number
  workersFds: number
  workers: number
  sshdProcesses: number
  sshdFds: number
}

/** Samples this process every 20 ms, and its workers and the sshd processes every 250 ms. */
const samplePeaks = (sshdRoots: ReadonlySet<number>) => {
  const peaks: Peaks = {
    controllerRss: 0,
    controllerFds: 0,
    workersRss: 0,
    workersFds: 0,
    workers: 0,
    sshdProcesses: 0,
    sshdFds: 0
  }
  const self = () => {
    try {
      peaks.controllerRss = Math.max(peaks.controllerRss, process.memoryUsage.rss())
      peaks.controllerFds = Math.max(peaks.controllerFds, fdsOf("self"))
    } catch {
      // Out of descriptors (FLEET_NOFILE): the runs say so; the sample is skipped.
    }
  }
  const others = () => {
    try {
      scan()
    } catch {
      // Out of descriptors, as above.
    }
  }
  const scan = () => {
    let workersRss = 0
    let workersFds = 0
    let workers = 0
    let sshd = 0
    let sshdFds = 0
    const parent = new Map<number, number>()
    const comm = new Map<number, string>()
    for (const name of readdirSync("/proc")) {
      if (!/^\d+$/.test(name)) continue
      try {
        const f = statFields(Number(name))
        parent.set(Number(name), Number(f[2]))
        comm.set(Number(name), f[0]!)
      } catch {
        // gone meanwhile
      }
    }
    for (const [pid, ppid] of parent) {
      try {
        if (ppid === process.pid && isWorker(pid)) {
          workers++
          workersRss += rssOf(pid)
          workersFds += fdsOf(pid)
        } else if (comm.get(pid)!.startsWith("sshd")) {
          // The server's own: its listeners and what they forked, not another server's.
          let up = pid
          for (let i = 0; i < 6 && !sshdRoots.has(up) && up > 1; i++) up = parent.get(up) ?? 1
          if (!sshdRoots.has(up)) continue
          sshd++
          sshdFds += fdsOf(pid)
        }
      } catch {
        // gone meanwhile
      }
    }
    peaks.workersRss = Math.max(peaks.workersRss, workersRss)
    peaks.workersFds = Math.max(peaks.workersFds, workersFds)
    peaks.workers = Math.max(peaks.workers, workers)
    peaks.sshdProcesses = Math.max(peaks.sshdProcesses, sshd)
    peaks.sshdFds = Math.max(peaks.sshdFds, sshdFds)
  }
  self()
  const fast = setInterval(self, 20)
  const slow = setInterval(others, 250)
  return {
    stop: (): Peaks => {
      clearInterval(fast)
      clearInterval(slow)
      self()
      return peaks
    }
  }
}

// ---------------------------------------------------------------------------------------------------

/** `ConnectionError/timeout`, `CommandFailed`, `WorkerCrashed`, `defect`... */
const failureKind = (exit: Exit.Exit<unknown, unknown>): string => {
  if (Exit.isSuccess(exit)) return "ok"
  const error = Cause.findErrorOption(exit.cause)
  if (error._tag === "None") return Cause.hasInterruptsOnly(exit.cause) ? "interrupted" : "defect"
  const e = error.value as { _tag?: string; reason?: string }
  return e.reason === undefined ? String(e._tag) : `${e._tag}/${e.reason}`
}

const firstMessage = (exit: Exit.Exit<unknown, unknown>): string =>
  Exit.isFailure(exit) ? Cause.pretty(exit.cause).split("\n").slice(0, 2).join(" / ") : ""

interface Round {
  readonly mode: "fibers" | "parallel"
  readonly poolSize: number
  readonly wallMs: number
  readonly controllerCpuMs: number
  readonly workersCpuMs: number
  readonly failed: number
  readonly kinds: string
  readonly peaks: Peaks
}

const startServers = async (): Promise<Array<Server>> => {
  const servers: Array<Server> = []
  for (let left = HOSTS; left > 0; left -= PER_SERVER) {
    servers.push(await startServer({ hostCount: Math.min(PER_SERVER, left) }))
  }
  return servers
}

const main = async (): Promise<void> => {
  console.log(await machineNote())
  const limit = nofile()
  console.log(
    `open-descriptor limit: soft ${limit.soft}, hard ${limit.hard}; ${HOSTS} hosts; ladder ${
      POOLS.join(", ")
    } in flight; modes ${MODES.join(", ")}${WORKERS === undefined ? "" : `; ${WORKERS} workers`}`
  )
  const started = now()
  const servers = await startServers()
  console.log(
    `${servers.length} sshd servers (${
      servers.reduce((n, s) => n + s.listenerPids().length, 0)
    } listeners) ` +
      `up in ${fmt((now() - started) / 1000)} s`
  )
  const stopAll = () => servers.forEach((s) => s.stopSync())
  process.once("SIGINT", () => {
    stopAll()
    process.exit(130)
  })
  const scratch = mkdtempSync(join(os.tmpdir(), "tb-bench-fleet-"))
  try {
    const first = servers[0]!
    const knownHosts = join(scratch, "known_hosts")
    writeFileSync(knownHosts, servers.map((s) => readFileSync(s.knownHostsPath, "utf8")).join(""))
    const key = readFileSync(`${first.keyPath}.pub`, "utf8")
    for (const s of servers.slice(1)) appendFileSync(join(s.stateDir, "authorized_keys"), key)
    const hosts = servers.flatMap((s) => s.hosts.map((h) => `${h}:${s.port}`)).slice(0, HOSTS)
    const sshdRoots = new Set(servers.flatMap((s) => s.listenerPids()))
    const settings = Settings.layer({ ...librarySettings(first), knownHostsFile: knownHosts })

    const rounds: Array<Round> = []
    for (const mode of MODES) {
      for (const poolSize of POOLS) {
        const options: Execute.Options = {
          mode,
          poolSize,
          ...(WORKERS === undefined ? {} : { workers: WORKERS })
        }
        const sampler = samplePeaks(sshdRoots)
        const cpu0 = process.cpuUsage()
        const children0 = childrenCpuMs()
        const start = now()
        const outcomes = await Effect.runPromise(
          Effect.provide(Execute.withHosts(remoteTrue, hosts, options), settings)
        )
        const wallMs = now() - start
        const cpu = process.cpuUsage(cpu0)
        await new Promise((r) => setTimeout(r, SETTLE_MS))
        const peaks = sampler.stop()
        const counts = new Map<string, number>()
        let example = ""
        for (const o of outcomes) {
          const kind = failureKind(o.exit)
          counts.set(kind, (counts.get(kind) ?? 0) + 1)
          if (kind !== "ok" && example === "") example = `${o.host}: ${firstMessage(o.exit)}`
        }
        const failed = outcomes.length - (counts.get("ok") ?? 0)
        counts.delete("ok")
        const round: Round = {
          mode,
          poolSize,
          wallMs,
          controllerCpuMs: (cpu.user + cpu.system) / 1000,
          workersCpuMs: childrenCpuMs() - children0,
          failed,
          kinds: [...counts].map(([k, n]) => `${k} ${n}`).join(", "),
          peaks
        }
        rounds.push(round)
        console.log(
          `${mode} poolSize ${poolSize}: ${fmt(wallMs / 1000)} s, ${failed} failed${
            failed === 0 ? "" : ` (${round.kinds}; first: ${example})`
          }, load ${os.loadavg().map((x) => fmt(x)).join(" / ")}`
        )
        // Let the server's sessions end before the next round counts them.
        await new Promise((r) => setTimeout(r, 1000))
      }
    }

    console.log(`\n${HOSTS} hosts, \`true\` on each:\n`)
    console.log(table(
      [
        "mode",
        "in flight",
        "wall",
        "hosts/s",
        "failed",
        "controller RSS",
        "workers RSS",
        "CPU/host (ctl + workers)",
        "fds ctl / workers",
        "sshd procs / fds"
      ],
      rounds.map((r) => [
        r.mode,
        String(r.poolSize),
        `${fmt(r.wallMs / 1000)} s`,
        fmt(HOSTS / (r.wallMs / 1000)),
        r.failed === 0 ? "0" : `${r.failed} (${r.kinds})`,
        fmtMiB(r.peaks.controllerRss),
        r.mode === "parallel" ? `${fmtMiB(r.peaks.workersRss)} (${r.peaks.workers})` : "-",
        `${fmtMs((r.controllerCpuMs + r.workersCpuMs) / HOSTS)} (${fmt(r.controllerCpuMs / HOSTS)} + ${
          fmt(r.workersCpuMs / HOSTS)
        })`,
        `${r.peaks.controllerFds} / ${r.mode === "parallel" ? r.peaks.workersFds : "-"}`,
        `${r.peaks.sshdProcesses} / ${r.peaks.sshdFds}`
      ])
    ))
    const top = rounds.filter((r) => r.poolSize === Math.max(...POOLS))
    const fdsPerRun = Math.max(
      ...top.map((r) =>
        (r.mode === "fibers" ? r.peaks.controllerFds : r.peaks.workersFds / Math.max(1, r.peaks.workers)) /
        (r.mode === "fibers" ? r.poolSize : r.poolSize / Math.max(1, r.peaks.workers))
      )
    )
    console.log(
      `\nDescriptors: at most ${fmt(fdsPerRun)} per run in flight in one process, so the soft limit ` +
        `${limit.soft} allows about ${
          Number.isFinite(limit.soft) ? fmt(limit.soft / fdsPerRun) : "unlimited"
        } ` +
        `runs in flight per process. Load at the end: ${os.loadavg().map((x) => fmt(x)).join(" / ")}.`
    )
    const rows: Array<SummaryRow> = top.map((r) => ({
      figure: `fleet: \`true\` on ${HOSTS} hosts, ${r.poolSize} in flight, ${r.mode}`,
      ours: `${fmt(r.wallMs / 1000)} s, ${fmtMiB(r.peaks.controllerRss)}${
        r.mode === "parallel" ? ` + ${fmtMiB(r.peaks.workersRss)} workers` : ""
      }, ${r.failed} failed`,
      peer: "-",
      ratio: "-",
      target: "-",
      met: "-"
    }))
    summary(rows)
  } finally {
    rmSync(scratch, { recursive: true, force: true })
    for (const s of servers) await s.stop()
  }
}

await main()
