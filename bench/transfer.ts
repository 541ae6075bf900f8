/**
 * Transfers: effect-threadbare's `Transfer.upload` / `Transfer.download` next to OpenSSH's `scp`
 * and `sftp` (batch mode), `rsync` over ssh and `tar | ssh tar`, against one throwaway sshd on
 * loopback (tests-remote/server.ts), in one run.
 *
 *   scripts/node.sh node bench/transfer.ts
 *
 * Figures:
 *   1. one 256 MiB file, upload and download: throughput, and the ratio to scp's; again while
 *      another process keeps one core busy (ours and scp); and ours with `useSudo`
 *   2. a directory of 1,000 files of 4 KiB, upload: time next to `rsync -a`, `scp -r`, `tar | ssh tar`
 *   3. peak RSS of this process over its baseline during the 256 MiB transfers (ours, all rows)
 *
 * The library keeps one warm connection for all its runs (what a deploy program does); every peer
 * command starts its own ssh, as it would from a shell. Environment: BENCH_N (runs per figure,
 * default 3), BENCH_FILE_MIB (default 256), BENCH_FILES (default 1000), BENCH_TOOLS (";" separated
 * names of the big-file cases to run besides ours and scp, e.g. "effect-threadbare, 1 core busy";
 * when given, the run stops after the big file), BENCH_SAMPLES=1 (print every run's time of the big file).
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import { execFileSync, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import { createRequire } from "node:module"
import { loadavg, tmpdir } from "node:os"
import * as path from "node:path"
import * as Settings from "../src/Settings.ts"
import * as Ssh from "../src/Ssh.ts"
import * as Transfer from "../src/Transfer.ts"
import { type Server, startServer } from "../tests-remote/server.ts"
import {
  envInt,
  fmt,
  fmtMiB,
  fmtMs,
  fmtRatio,
  machineNote,
  metText,
  sampleRss,
  stats,
  summary,
  type SummaryRow,
  table,
  timeEach
} from "./lib.ts"

const N = envInt("BENCH_N", 3)
const FILE_MIB = envInt("BENCH_FILE_MIB", 256)
const FILES = envInt("BENCH_FILES", 1000)
const only = (process.env["BENCH_TOOLS"] ?? "").split(";").map((s) => s.trim()).filter((s) => s !== "")

/**
 * Another process keeping one core busy (a plain busy loop) until killed: on two cores, the
 * transfer then shares the other with sshd, as on a machine that does other work.
 */
const busyCore = () => {
  const child = spawn(process.execPath, ["-e", "for (;;) {}"], { stdio: "ignore" })
  return { kill: () => void child.kill("SIGKILL") }
}

const run = (
  program: string,
  args: ReadonlyArray<string>,
  options: { input?: string; shell?: boolean } = {}
) =>
  new Promise<void>((resolve, reject) => {
    const child = spawn(program, args, { stdio: ["pipe", "ignore", "pipe"], shell: options.shell ?? false })
    let stderr = ""
    child.stderr.on("data", (d: Buffer) => void (stderr += d.toString()))
    child.stdin.end(options.input ?? "")
    child.on(
      "close",
      (code) => (code === 0 ? resolve() : reject(new Error(`${program} exited ${code}: ${stderr}`)))
    )
  })

const sshOptions = (server: Server) => [
  "-F",
  "/dev/null",
  "-i",
  server.keyPath,
  "-o",
  `UserKnownHostsFile=${server.knownHostsPath}`,
  "-o",
  "StrictHostKeyChecking=yes",
  "-o",
  "BatchMode=yes"
]

const loadText = () => loadavg().slice(0, 2).map((x) => fmt(x)).join(" / ")

const q = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`

/**
 * Whether ssh2 runs its native crypto binding (in-place AES-GCM) or falls back to JavaScript
 * crypto (a cipher per packet): the library's figures depend on it by 15-25% of its CPU.
 */
const sshBinding = (): string => {
  try {
    createRequire(import.meta.url)("ssh2/lib/protocol/crypto/build/Release/sshcrypto.node")
    return "ssh2's native crypto binding loaded"
  } catch (error) {
    return `ssh2's native crypto binding NOT loaded (${
      String((error as Error).message).split("\n")[0]
    }): JavaScript crypto; rebuild it with \`scripts/node.sh npm rebuild ssh2\``
  }
}

const main = async () => {
  console.log(await machineNote())
  console.log(sshBinding())
  const server = await startServer({ hostCount: 1 })
  const work = fs.mkdtempSync(path.join(tmpdir(), "tbbench-xfer-"))
  fs.chmodSync(work, 0o755)
  const remote = path.join(work, "remote")
  fs.mkdirSync(remote)
  execFileSync("chown", [`${server.user}:`, remote])
  const local = path.join(work, "local")
  fs.mkdirSync(local)
  const user = server.user
  const host = server.host
  const ssh = sshOptions(server)
  const sshLine = ["ssh", ...ssh, "-p", String(server.port)].map(q).join(" ")

  const runtime = ManagedRuntime.make(Layer.mergeAll(
    Ssh.layer,
    Settings.layer({
      host: `${user}@${host}:${server.port}`,
      keyFile: server.keyPath,
      knownHostsFile: server.knownHostsPath,
      hostKeyPolicy: "strict",
      sshConfigFile: false,
      useAgent: false,
      quiet: true
    })
  ))
  const lib = <A, E>(effect: Effect.Effect<A, E, Ssh.SshConnections>) => runtime.runPromise(effect)

  try {
    // -- 1. one big file ---------------------------------------------------------------------------
    const big = path.join(local, "big.bin")
    const bigSize = FILE_MIB << 20
    {
      const fd = fs.openSync(big, "w")
      const block = randomBytes(1 << 20)
      for (let i = 0; i < FILE_MIB; i++) fs.writeSync(fd, block.map((b) => b ^ i))
      fs.closeSync(fd)
    }
    const remoteBig = path.join(remote, "big.bin")
    const localBack = path.join(local, "back.bin")
    const reset = () => {
      fs.rmSync(remoteBig, { force: true })
      fs.rmSync(localBack, { force: true })
    }
    const seedRemote = () => {
      if (!fs.existsSync(remoteBig)) fs.copyFileSync(big, remoteBig)
      fs.rmSync(localBack, { force: true })
    }
    // A warm connection, as in a deploy program that has run a command already.
    await lib(Transfer.upload({ content: "warm" }, path.join(remote, "warm")))

    const target = `${user}@${host}`
    const batch = ["-b", "-", ...ssh, "-P", String(server.port), target] as const
    type Case = { name: string; up: () => Promise<unknown>; down: () => Promise<unknown>; busy?: boolean }
    const ours: Case = {
      name: "effect-threadbare",
      up: () => lib(Transfer.upload(big, remoteBig)),
      down: () => lib(Transfer.download(remoteBig, localBack))
    }
    const scp: Case = {
      name: "scp",
      up: () => run("scp", ["-q", ...ssh, "-P", String(server.port), big, `${target}:${remoteBig}`]),
      down: () => run("scp", ["-q", ...ssh, "-P", String(server.port), `${target}:${remoteBig}`, localBack])
    }
    const cases: Array<Case> = [
      ours,
      scp,
      {
        name: "sftp -b",
        up: () => run("sftp", batch, { input: `put ${big} ${remoteBig}\n` }),
        down: () => run("sftp", batch, { input: `get ${remoteBig} ${localBack}\n` })
      },
      {
        name: "rsync",
        up: () => run("rsync", ["-a", "-e", sshLine, big, `${target}:${remoteBig}`]),
        down: () => run("rsync", ["-a", "-e", sshLine, `${target}:${remoteBig}`, localBack])
      },
      // The same two while another process keeps one core busy: the transfer's own process, sshd
      // and the busy loop then share the two cores, as on a machine that does other work.
      { ...ours, name: "effect-threadbare, 1 core busy", busy: true },
      { ...scp, name: "scp, 1 core busy", busy: true },
      // Through the staging directory and `sudo` (upload), and `sudo cat` (download).
      {
        name: "effect-threadbare, useSudo",
        up: () => lib(Transfer.upload(big, remoteBig, { useSudo: true })),
        down: () => lib(Transfer.download(remoteBig, localBack, { useSudo: true }))
      }
    ].filter((c) => only.length === 0 || c.name === ours.name || c.name === scp.name || only.includes(c.name))
    // BENCH_TOOLS (";" separated names) keeps only those cases, with ours and scp always.
    const bigResults = new Map<string, { up: number; down: number }>()
    const rss: Array<{ peak: number; delta: number }> = []
    const samples = new Map(
      cases.map((c) => [c.name, { ups: [] as Array<number>, downs: [] as Array<number> }])
    )
    // Round robin, after the page cache has been written back, so that no tool pays for another's
    // disk traffic; the first round warms up and is not counted.
    execFileSync("sync")
    for (let i = 0; i <= N; i++) {
      for (const c of cases) {
        reset()
        execFileSync("sync")
        const busy = c.busy === true ? busyCore() : undefined
        try {
          const sampler = c.name.startsWith(ours.name) && i > 0 ? sampleRss(5) : undefined
          const up = await timeEach(1, 0, c.up)
          seedRemote()
          execFileSync("sync")
          const down = await timeEach(1, 0, c.down)
          if (sampler !== undefined) rss.push(sampler.stop())
          if (fs.statSync(localBack).size !== bigSize) throw new Error(`${c.name}: downloaded size differs`)
          if (i > 0) {
            samples.get(c.name)!.ups.push(...up)
            samples.get(c.name)!.downs.push(...down)
          }
        } finally {
          busy?.kill()
        }
      }
    }
    for (const c of cases) {
      const up = stats(samples.get(c.name)!.ups).median
      const down = stats(samples.get(c.name)!.downs).median
      bigResults.set(c.name, { up, down })
      if (process.env["BENCH_SAMPLES"] === "1") {
        console.log(
          c.name,
          samples.get(c.name)!.ups.map(Math.round),
          samples.get(c.name)!.downs.map(Math.round)
        )
      }
    }
    // Throughput relative to scp's, from the same rounds (so under the same load); the loaded
    // rows relative to scp's loaded runs.
    const scpOf = (name: string) => bigResults.get(name.includes("busy") ? "scp, 1 core busy" : "scp")!
    const bigRows = [...bigResults].map(([name, { up, down }]) => {
      const rate = (ms: number) => `${fmt(FILE_MIB / (ms / 1000))} MiB/s`
      const peer = scpOf(name)
      return [
        name,
        fmtMs(up),
        rate(up),
        fmtRatio(peer.up, up),
        fmtMs(down),
        rate(down),
        fmtRatio(peer.down, down)
      ]
    })
    console.log(
      `\n### One ${FILE_MIB} MiB file (median of ${N}; "1 core busy" rows against scp's loaded runs)\n`
    )
    console.log(table(["tool", "upload", "rate", "vs scp", "download", "rate", "vs scp"], bigRows))
    console.log(`\nload average ${loadText()} (1/5 min) after the ${FILE_MIB} MiB rounds`)
    const peak = Math.max(...rss.map((r) => r.peak))
    const delta = Math.max(...rss.map((r) => r.delta))
    console.log(
      `Peak RSS during the ${FILE_MIB} MiB transfers: ${fmtMiB(peak)} (${fmtMiB(delta)} over the baseline)`
    )
    if (only.length > 0) return

    // -- 2. many small files -----------------------------------------------------------------------
    const tree = path.join(local, "tree")
    fs.mkdirSync(tree)
    for (let i = 0; i < FILES; i++) {
      const dir = path.join(tree, `d${i % 20}`)
      fs.mkdirSync(dir, { recursive: true })
      fs.writeFileSync(path.join(dir, `f${i}.txt`), randomBytes(4096))
    }
    const remoteTree = path.join(remote, "tree")
    const clear = () => fs.rmSync(remoteTree, { recursive: true, force: true })
    const treeCases: Array<{ name: string; up: () => Promise<unknown> }> = [
      { name: "effect-threadbare", up: () => lib(Transfer.upload(tree, remoteTree)) },
      {
        name: "rsync -a",
        up: () => run("rsync", ["-a", "-e", sshLine, `${tree}/`, `${target}:${remoteTree}/`])
      },
      {
        name: "scp -r",
        up: () => run("scp", ["-q", "-r", ...ssh, "-P", String(server.port), tree, `${target}:${remoteTree}`])
      },
      {
        name: "tar | ssh tar",
        up: () =>
          run(
            `tar -C ${q(tree)} -cf - . | ${sshLine} ${q(target)} ${
              q(`mkdir -p ${q(remoteTree)} && tar -C ${q(remoteTree)} -xf -`)
            }`,
            [],
            { shell: true }
          )
      }
    ]
    const treeResults = new Map<string, number>()
    for (const c of treeCases) {
      const samples: Array<number> = []
      for (let i = 0; i < Math.max(N, 5); i++) {
        clear()
        samples.push(...await timeEach(1, 0, c.up))
      }
      if (fs.readdirSync(remoteTree).length !== 20) throw new Error(`${c.name}: the tree did not arrive`)
      treeResults.set(c.name, stats(samples).median)
    }
    const oursTree = treeResults.get("effect-threadbare")!
    console.log(`\n### A directory of ${FILES} files of 4 KiB, upload (median of ${Math.max(N, 5)})\n`)
    console.log(table(
      ["tool", "time", "vs effect-threadbare"],
      [...treeResults].map(([name, ms]) => [name, fmtMs(ms), fmtRatio(ms, oursTree)])
    ))
    const treeDown = stats(
      await timeEach(Math.max(N, 5), 0, async () => {
        fs.rmSync(path.join(local, "tree-back"), { recursive: true, force: true })
        await lib(Transfer.download(remoteTree, path.join(local, "tree-back")))
      })
    ).median
    console.log(`effect-threadbare download of the same tree: ${fmtMs(treeDown)}`)

    const peers = ["rsync -a", "scp -r", "tar | ssh tar"]
    const fastestPeer = Math.min(...peers.map((p) => treeResults.get(p)!))
    const versus = (
      name: string,
      peerName: string,
      direction: "up" | "down",
      what: string,
      wanted: number
    ): SummaryRow => {
      const mine = bigResults.get(name)![direction]
      const peer = bigResults.get(peerName)![direction]
      return {
        figure: `transfer: ${FILE_MIB} MiB ${what}, throughput vs scp`,
        ours: fmtMs(mine),
        peer: `scp ${fmtMs(peer)}`,
        ratio: fmtRatio(peer, mine),
        target: `>= ${wanted.toFixed(1)}x`,
        met: metText(peer / mine >= wanted)
      }
    }
    const rows: Array<SummaryRow> = [
      versus(ours.name, scp.name, "up", "upload", 1.2),
      versus(ours.name, scp.name, "down", "download", 1.2),
      versus(`${ours.name}, 1 core busy`, `${scp.name}, 1 core busy`, "up", "upload, 1 core busy", 1),
      versus(`${ours.name}, 1 core busy`, `${scp.name}, 1 core busy`, "down", "download, 1 core busy", 1),
      versus(`${ours.name}, useSudo`, scp.name, "up", "upload with useSudo", 0.8),
      versus(`${ours.name}, useSudo`, scp.name, "down", "download with useSudo", 0.8),
      {
        figure: `transfer: ${FILES} x 4 KiB directory upload vs fastest of rsync/scp -r/tar|ssh`,
        ours: fmtMs(oursTree),
        peer: fmtMs(fastestPeer),
        ratio: fmtRatio(fastestPeer, oursTree),
        target: "> 1.0x",
        met: metText(fastestPeer / oursTree > 1)
      },
      {
        figure: `transfer: peak RSS over baseline during ${FILE_MIB} MiB transfers`,
        ours: fmtMiB(delta),
        peer: "-",
        ratio: "-",
        target: "< 100 MiB",
        met: metText(delta < 100 << 20)
      }
    ]
    summary(rows)
  } finally {
    await runtime.dispose()
    await server.stop()
    fs.rmSync(work, { recursive: true, force: true })
  }
}

await main()
