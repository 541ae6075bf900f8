/**
 * Rolling runs: `Execute.rolling` with batches `[1, "25%", "100%"]` (a canary, a quarter, the rest)
 * on 16 loopback hosts of a throwaway server, next to the peers users reach for: Ansible's
 * `serial` batches (`ansible-playbook`), and Fabric 2's hand-written loop (Fabric has no batches:
 * a deploy tool runs its groups one after another, each with a ThreadingGroup). Then what watching
 * a run's events costs.
 *
 *   scripts/node.sh node bench/rolling.ts
 *
 * Figures:
 *   1. a rolling run of `true`, then of `sleep 0.2` (which shows the pacing of the batches: three
 *      batches cannot take less than 0.6 s), each contender a process of its own, started afresh
 *      for every run: its wall time from spawn to exit, and where it says so the time of the run
 *      inside it (no interpreter start). Contenders take turns run by run, in a shuffled order.
 *      Ours: `Execute.rolling` on fibers and on worker processes (poolSize 16, so the biggest
 *      batch runs at once; two workers), each host on a connection of its own, set up in the run.
 *      Ansible: `serial: [1, "25%", "100%"]`, `gather_facts: false`, `max_fail_percentage: 0`
 *      (ours stops at the first failure too), forks 16, pipelining on, its ssh connection plugin
 *      with the server's key and known_hosts and ControlPersist. "cold": a fresh ControlPath
 *      directory per run, so every host connects in the run, as ours do; "warm": the masters of
 *      the previous run are reused (ControlPersist's point: what a user rerunning a playbook
 *      within a minute gets). The `raw` module runs the command as it is, as ours does; the
 *      `command` module (what playbooks use) sends a Python module over the connection.
 *   2. `Execute.withHosts` of a task that runs 50 commands (`true`) on each of 4 hosts, on fibers
 *      and on a worker pool started beforehand (`Execute.layerPool`), with and without
 *      `Events.consume` (a consumer that counts the events), taking turns.
 *
 * Environment: BENCH_SAMPLES (runs of each contender, default 5, after one unmeasured run; figure
 * 2 takes four times as many), BENCH_PARTS (default "rolling,events": the figures to measure),
 * BENCH_SKIP_ANSIBLE=1, BENCH_SKIP_FABRIC=1. Needs OpenSSH; for the peers ansible-core and
 * python3-fabric (Debian packages): a missing peer is reported and skipped. A benchmark, not a
 * test: it fails only when a run fails.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Stream from "effect/Stream"
import { spawn } from "node:child_process"
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import * as Events from "../src/Events.ts"
import * as Execute from "../src/Execute.ts"
import { plan } from "../src/internal/execute/batches.ts"
import * as Settings from "../src/Settings.ts"
import { readServer, type Server, startServer } from "../tests-remote/server.ts"
import {
  captureProcess,
  envInt,
  fmt,
  fmtMs,
  fmtRatio,
  librarySettings,
  machineNote,
  now,
  type Stats,
  stats,
  summary,
  type SummaryRow,
  table
} from "./lib.ts"
import { command, commands } from "./rolling-tasks.ts"

const SAMPLES = envInt("BENCH_SAMPLES", 5)
const HOSTS = 16
const BATCHES: ReadonlyArray<Execute.Amount> = [1, "25%", "100%"]
const WORKLOADS = ["true", "sleep 0.2"] as const
const EVENT_HOSTS = 4
const EVENT_COMMANDS = 50
// A run of figure 2 takes half a second and the difference sought is small: more rounds.
const EVENT_ROUNDS = SAMPLES * 4
const PARTS = (process.env["BENCH_PARTS"] ?? "rolling,events").split(",").map((s) => s.trim())
const self = fileURLToPath(import.meta.url)

// ---------------------------------------------------------------------------------------------------
// Ours, in a child process (`--child <fibers|parallel> <stateDir> <command>`), like the peers.

const childRun = async (mode: "fibers" | "parallel", stateDir: string, line: string): Promise<void> => {
  const server = readServer(stateDir)
  const hosts = server.hosts.slice(0, HOSTS)
  const start = now()
  const report = await Effect.runPromise(
    Execute.rolling(command, hosts, { batches: BATCHES, mode, poolSize: HOSTS, input: line }).pipe(
      Effect.provide(Settings.layer(librarySettings(server)))
    )
  )
  const innerMs = now() - start
  const failed = report.hosts.filter((h) => h.status !== "succeeded")
  if (report.status !== "completed" || failed.length > 0) {
    throw new Error(`rolling run ${report.status}: ${failed.map((h) => `${h.host} ${h.status}`).join(", ")}`)
  }
  process.stdout.write(JSON.stringify({ innerMs, batches: report.batches.map((b) => b.hosts.length) }))
}

// ---------------------------------------------------------------------------------------------------
// Processes

const commandExists = async (file: string, args: ReadonlyArray<string>): Promise<boolean> => {
  try {
    await captureProcess(file, args)
    return true
  } catch {
    return false
  }
}

/** Runs a program to its end and gives its output; fails unless it exits 0 (the env is added to ours). */
const capture = (file: string, args: ReadonlyArray<string>, env: NodeJS.ProcessEnv = {}): Promise<string> =>
  new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } })
    let out = ""
    let err = ""
    child.stdout.on("data", (d) => (out += d))
    child.stderr.on("data", (d) => (err += d))
    child.once("error", reject)
    child.once("close", (code) =>
      code === 0
        ? resolve(out)
        : reject(new Error(`${file} exited ${code}: ${(err.trim() || out.trim()).slice(-2000)}`)))
  })

/** One contender: runs once (a process), returns the inner time when it reports one. */
interface Contender {
  readonly name: string
  readonly run: (line: string) => Promise<number | undefined>
  /** Untimed, after each run: what the run left behind that is not part of it. */
  readonly tidy?: () => Promise<void>
}

const ours = (mode: "fibers" | "parallel", server: Server): Contender => ({
  name: `effect-threadbare Execute.rolling, ${mode === "fibers" ? "fibers" : "worker processes (2)"}`,
  run: async (line) => {
    const out = await capture(process.execPath, [
      ...process.execArgv,
      self,
      "--child",
      mode,
      server.stateDir,
      line
    ])
    return (JSON.parse(out) as { innerMs: number }).innerMs
  }
})

// ---- Ansible ----------------------------------------------------------------------------------------

const ANSIBLE = "ansible-playbook"

interface AnsibleSetup {
  readonly dir: string
  readonly env: NodeJS.ProcessEnv
}

const setUpAnsible = (server: Server, scratch: string): AnsibleSetup => {
  const dir = join(scratch, "ansible")
  mkdirSync(join(dir, "local-tmp"), { recursive: true })
  mkdirSync(join(dir, "cp-warm"), { recursive: true })
  writeFileSync(
    join(dir, "inventory.ini"),
    "[fleet]\n" +
      server.hosts.slice(0, HOSTS).map((host) =>
        `${host} ansible_port=${server.port} ansible_user=${server.user} ` +
        `ansible_ssh_private_key_file=${server.keyPath}\n`
      ).join("")
  )
  const sshArgs = [
    "-F /dev/null",
    "-o IdentitiesOnly=yes",
    `-o UserKnownHostsFile=${server.knownHostsPath}`,
    "-o StrictHostKeyChecking=yes",
    "-o ControlMaster=auto",
    "-o ControlPersist=60s"
  ].join(" ")
  writeFileSync(
    join(dir, "ansible.cfg"),
    [
      "[defaults]",
      `inventory = ${join(dir, "inventory.ini")}`,
      `forks = ${HOSTS}`,
      "gathering = explicit",
      "host_key_checking = True",
      "interpreter_python = /usr/bin/python3",
      "retry_files_enabled = False",
      `local_tmp = ${join(dir, "local-tmp")}`,
      "nocows = 1",
      "[ssh_connection]",
      "pipelining = True",
      `ssh_args = ${sshArgs}`,
      ""
    ].join("\n")
  )
  for (const module of ["raw", "command"]) {
    writeFileSync(
      join(dir, `${module}.yml`),
      [
        "- hosts: fleet",
        "  gather_facts: false",
        `  serial: [${BATCHES.map((b) => JSON.stringify(b)).join(", ")}]`,
        "  max_fail_percentage: 0",
        "  tasks:",
        `    - ${module}: "{{ cmd }}"`,
        ""
      ].join("\n")
    )
  }
  return {
    dir,
    // Ansible refuses to start without a UTF-8 locale; nothing of this machine's configuration.
    env: { ANSIBLE_CONFIG: join(dir, "ansible.cfg"), LC_ALL: "C.UTF-8", LANG: "C.UTF-8" }
  }
}

/** Ends the ControlPersist masters whose sockets are in `dir`. */
const stopMasters = async (dir: string): Promise<void> => {
  let sockets: Array<string> = []
  try {
    sockets = readdirSync(dir)
  } catch {
    return
  }
  await Promise.all(
    sockets.map((socket) =>
      capture("ssh", ["-F", "/dev/null", "-o", `ControlPath=${join(dir, socket)}`, "-O", "exit", "x"]).catch(
        () => undefined
      )
    )
  )
}

const ansible = (
  setup: AnsibleSetup,
  module: "raw" | "command",
  connections: "cold" | "warm"
): Contender => {
  let round = 0
  const controlDir = () => join(setup.dir, connections === "warm" ? "cp-warm" : `cp-cold-${module}-${round}`)
  return {
    name: `Ansible serial, \`${module}\`, ${connections} ControlPersist`,
    run: async (line) => {
      mkdirSync(controlDir(), { recursive: true })
      await capture(ANSIBLE, [join(setup.dir, `${module}.yml`), "-e", JSON.stringify({ cmd: line })], {
        ...setup.env,
        ANSIBLE_SSH_CONTROL_PATH_DIR: controlDir()
      })
      return undefined
    },
    // ansible-playbook has exited; the masters it left would otherwise idle until ControlPersist ends.
    ...(connections === "cold" ? { tidy: () => stopMasters(controlDir()).then(() => void round++) } : {})
  }
}

// ---- Fabric 2 ---------------------------------------------------------------------------------------

const fabricLoop = (python: string, server: Server): Contender => {
  const script = fileURLToPath(new URL("./peers/fabric_rolling.py", import.meta.url))
  const hosts = server.hosts.slice(0, HOSTS)
  const sizes = plan(hosts, BATCHES).map((b) => b.length).join(",")
  return {
    name: "Fabric 2, hand-written loop of ThreadingGroups",
    run: async (line) => {
      const out = await capture(python, [
        script,
        String(server.port),
        server.user,
        server.keyPath,
        server.knownHostsPath,
        line,
        sizes,
        ...hosts
      ])
      return (JSON.parse(out) as { innerMs: number }).innerMs
    }
  }
}

/** A Python with Fabric 2: Debian's python3-fabric lives in /usr/bin/python3, not in a pyenv. */
const findFabricPython = async (): Promise<string | undefined> => {
  for (const python of ["/usr/bin/python3", "python3"]) {
    if (await commandExists(python, ["-c", "import fabric"])) return python
  }
  return undefined
}

// ---------------------------------------------------------------------------------------------------

interface Measured {
  readonly wall: Array<number>
  readonly inner: Array<number>
  /** CPU of this process (ms), user and system: the controller's share when the work is in it. */
  readonly cpu: Array<number>
}

/** A fixed seed, so that runs are comparable. */
const shuffler = () => {
  let seed = 1
  const random = () => (seed = (seed * 48271) % 2147483647) / 2147483647
  return <A>(items: ReadonlyArray<A>): Array<A> => {
    const out = [...items]
    for (let k = out.length - 1; k > 0; k--) {
      const j = Math.floor(random() * (k + 1))
      ;[out[k], out[j]] = [out[j]!, out[k]!]
    }
    return out
  }
}

/** Each task once unmeasured, then `rounds` rounds in which every task runs once, in a shuffled order. */
const takeTurns = async <T>(
  tasks: ReadonlyArray<T>,
  run: (task: T) => Promise<number | undefined>,
  tidy: (task: T) => Promise<void> = async () => {},
  rounds = SAMPLES
): Promise<Array<Measured>> => {
  for (const task of tasks) {
    await run(task)
    await tidy(task)
  }
  const shuffle = shuffler()
  const results = tasks.map((): Measured => ({ wall: [], inner: [], cpu: [] }))
  for (let i = 0; i < rounds; i++) {
    for (const t of shuffle(tasks.map((_, t) => t))) {
      const cpuStart = process.cpuUsage()
      const start = now()
      const inner = await run(tasks[t]!)
      results[t]!.wall.push(now() - start)
      const cpu = process.cpuUsage(cpuStart)
      results[t]!.cpu.push((cpu.user + cpu.system) / 1000)
      if (inner !== undefined) results[t]!.inner.push(inner)
      await tidy(tasks[t]!)
    }
  }
  return results
}

const median = (samples: ReadonlyArray<number>): number | undefined =>
  samples.length === 0 ? undefined : stats(samples).median

// ---------------------------------------------------------------------------------------------------
// 2. The cost of watching events, in this process.

const eventsOverhead = async (server: Server) => {
  const hosts = server.hosts.slice(0, EVENT_HOSTS)
  const runtime = ManagedRuntime.make(
    Layer.mergeAll(
      Settings.layer(librarySettings(server)),
      Execute.layerPool({ poolSize: EVENT_HOSTS, workers: 2 })
    )
  )
  let seen = 0
  const counting = Events.consume((events) => Stream.runForEach(events, () => Effect.sync(() => void seen++)))
  type Variant = { readonly mode: "fibers" | "parallel"; readonly watched: boolean }
  const variants: ReadonlyArray<Variant> = [
    { mode: "fibers", watched: false },
    { mode: "fibers", watched: true },
    { mode: "parallel", watched: false },
    { mode: "parallel", watched: true }
  ]
  const eventsPerRun = new Map<Variant, number>()
  try {
    const measured = await takeTurns(
      variants,
      async (variant) => {
        const run = Execute.withHosts(commands, hosts, {
          mode: variant.mode,
          poolSize: EVENT_HOSTS,
          input: { command: "true", count: EVENT_COMMANDS }
        })
        const before = seen
        const outcomes = await runtime.runPromise(variant.watched ? counting(run) : run)
        const failed = outcomes.filter((o) => Exit.isFailure(o.exit))
        if (failed.length > 0) throw new Error(`${failed.length} hosts failed, the first: ${failed[0]!.host}`)
        if (variant.watched) eventsPerRun.set(variant, seen - before)
        return undefined
      },
      undefined,
      EVENT_ROUNDS
    )
    return variants.map((variant, i) => ({
      ...variant,
      stats: stats(measured[i]!.wall),
      cpu: stats(measured[i]!.cpu),
      events: eventsPerRun.get(variant)
    }))
  } finally {
    await runtime.dispose()
  }
}

// ---------------------------------------------------------------------------------------------------

const main = async (): Promise<void> => {
  console.log(await machineNote())
  console.log(
    `${HOSTS} hosts, batches ${JSON.stringify(BATCHES)}, ${SAMPLES} runs of each (after one unmeasured)\n`
  )
  const server = await startServer({ hostCount: HOSTS })
  process.once("SIGINT", () => {
    server.stopSync()
    process.exit(130)
  })
  const scratch = mkdtempSync(join(tmpdir(), "tb-bench-rolling-"))
  const rows: Array<SummaryRow> = []
  let ansibleSetup: AnsibleSetup | undefined
  try {
    const sizes = plan(server.hosts.slice(0, HOSTS), BATCHES).map((b) => b.length)
    console.log(`batch sizes: ${sizes.join(", ")} (Ansible's serial cuts 16 hosts the same way)`)

    const contenders: Array<Contender> = [ours("fibers", server), ours("parallel", server)]
    const [fibers, workers] = contenders as [Contender, Contender]
    let ansibleCold: Contender | undefined
    let ansibleWarm: Contender | undefined
    let ansibleCommand: Contender | undefined
    if (process.env["BENCH_SKIP_ANSIBLE"] === "1") console.log("  Ansible: BENCH_SKIP_ANSIBLE=1; skipped")
    else if (!(await commandExists(ANSIBLE, ["--version"]))) {
      console.log("  Ansible: ansible-playbook not found (apt-get install ansible-core); skipped")
    } else {
      ansibleSetup = setUpAnsible(server, scratch)
      console.log(`  ${(await captureProcess(ANSIBLE, ["--version"])).split("\n")[0]}`)
      ansibleCold = ansible(ansibleSetup, "raw", "cold")
      ansibleWarm = ansible(ansibleSetup, "raw", "warm")
      ansibleCommand = ansible(ansibleSetup, "command", "cold")
      contenders.push(ansibleCold, ansibleWarm, ansibleCommand)
    }
    let fabric: Contender | undefined
    const python = process.env["BENCH_SKIP_FABRIC"] === "1" ? undefined : await findFabricPython()
    if (python === undefined) {
      console.log(
        `  Fabric 2: ${
          process.env["BENCH_SKIP_FABRIC"] === "1"
            ? "BENCH_SKIP_FABRIC=1"
            : "not found (apt-get install python3-fabric)"
        }; skipped`
      )
    } else {
      fabric = fabricLoop(python, server)
      contenders.push(fabric)
    }

    // ---- 1. rolling runs --------------------------------------------------------------------------
    for (const line of PARTS.includes("rolling") ? WORKLOADS : []) {
      console.log(`\n# 1. a rolling run of \`${line}\` on ${HOSTS} hosts, each contender a fresh process\n`)
      // A peer that fails (a broken installation) is reported and left out, never fatal.
      const broken = new Set<Contender>()
      const measured = await takeTurns(contenders, async (contender) => {
        if (broken.has(contender)) return undefined
        try {
          return await contender.run(line)
        } catch (error) {
          if (contender === fibers || contender === workers) throw error
          broken.add(contender)
          console.log(
            `  ${contender.name}: failed, left out (${String((error as Error).message).split("\n")[0]})`
          )
          return undefined
        }
      }, async (contender) => {
        await contender.tidy?.()
      })
      const result = new Map<Contender, { wall: Stats; inner: number | undefined }>()
      contenders.forEach((c, i) => {
        if (!broken.has(c)) {
          result.set(c, { wall: stats(measured[i]!.wall), inner: median(measured[i]!.inner) })
        }
      })
      const base = result.get(fibers)!.wall.median
      console.log(table(
        ["contender", "n", "wall median", "p90", "run inside (median)", "it / ours on fibers"],
        contenders.map((c) => {
          const r = result.get(c)
          return [
            c.name,
            r ? String(r.wall.n) : "-",
            fmtMs(r?.wall.median),
            fmtMs(r?.wall.p90),
            fmtMs(r?.inner),
            fmtRatio(r?.wall.median, base)
          ]
        })
      ))
      const versus = (who: Contender, peer: Contender | undefined, peerName: string, inner = false): void => {
        const pick = (c: Contender | undefined) =>
          c === undefined ? undefined : inner ? result.get(c)?.inner : result.get(c)?.wall.median
        const o = pick(who)!
        const p = pick(peer)
        rows.push({
          figure: `rolling \`${line}\`, ${HOSTS} hosts, [1, 25%, 100%], ${
            who === fibers ? "fibers" : "workers"
          } vs ${peerName} (${inner ? "run inside the process" : "process wall"}, median)`,
          ours: fmtMs(o),
          peer: p === undefined ? "- (not installed)" : fmtMs(p),
          ratio: p === undefined ? "-" : `${fmt(p / o)}x (peer / ours)`,
          target: "-",
          met: "-"
        })
      }
      versus(fibers, ansibleCold, "Ansible `raw`, cold")
      versus(workers, ansibleCold, "Ansible `raw`, cold")
      if (line === "true") {
        versus(fibers, ansibleWarm, "Ansible `raw`, warm ControlPersist")
        versus(fibers, ansibleCommand, "Ansible `command`, cold")
        versus(fibers, fabric, "Fabric 2 loop")
        versus(fibers, fabric, "Fabric 2 loop", true)
      }
    }

    // ---- 2. events ----------------------------------------------------------------------------------
    if (PARTS.includes("events")) {
      console.log(
        `\n# 2. Execute.withHosts: ${EVENT_COMMANDS} commands (\`true\`) on each of ${EVENT_HOSTS} hosts, ` +
          "with and without Events.consume (a consumer that counts)\n"
      )
      const watched = await eventsOverhead(server)
      console.log(table(
        [
          "mode",
          "consumer",
          "n",
          "median",
          "p90",
          "controller CPU (median)",
          "events per run",
          "with / without"
        ],
        watched.map((w) => {
          const without = watched.find((x) => x.mode === w.mode && !x.watched)!
          return [
            w.mode === "fibers" ? "fibers" : "worker pool (layerPool, 2 workers)",
            w.watched ? "counting" : "none",
            String(w.stats.n),
            fmtMs(w.stats.median),
            fmtMs(w.stats.p90),
            fmtMs(w.cpu.median),
            w.events === undefined ? "-" : String(w.events),
            w.watched ? fmtRatio(w.stats.median, without.stats.median) : "1x"
          ]
        })
      ))
      for (const mode of ["fibers", "parallel"] as const) {
        const on = watched.find((w) => w.mode === mode && w.watched)!
        const off = watched.find((w) => w.mode === mode && !w.watched)!
        rows.push({
          figure: `${EVENT_COMMANDS} commands x ${EVENT_HOSTS} hosts, ${
            mode === "fibers" ? "fibers" : "workers"
          }: watched by Events.consume (median)`,
          ours: `${fmtMs(on.stats.median)}, CPU ${fmtMs(on.cpu.median)} (${on.events ?? "-"} events)`,
          peer: `${fmtMs(off.stats.median)}, CPU ${fmtMs(off.cpu.median)} (not watched)`,
          ratio: `${fmtRatio(on.stats.median, off.stats.median)} wall, ${
            fmtRatio(on.cpu.median, off.cpu.median)
          } CPU`,
          target: "-",
          met: "-"
        })
      }
    }

    console.log(
      `\nCaveat: loopback, a shared 2-core machine; numbers vary with load (at the end: ${await machineNote()}).`
    )
    summary(rows)
  } finally {
    if (ansibleSetup !== undefined) {
      for (const dir of readdirSync(ansibleSetup.dir).filter((d) => d.startsWith("cp-"))) {
        await stopMasters(join(ansibleSetup.dir, dir))
      }
    }
    rmSync(scratch, { recursive: true, force: true })
    await server.stop()
  }
}

if (process.argv[2] === "--child") {
  await childRun(process.argv[3] as "fibers" | "parallel", process.argv[4]!, process.argv[5]!)
} else {
  await main()
}
