/**
 * Two jobs done here by hand, measured against the best-kept npm packages for them:
 *
 * - the tar writer and reader of directory transfers (`src/internal/transfer/tar.ts`) against
 *   `tar-stream` and `modern-tar`: packing and extracting 1,000 files of 4 KiB in memory and one
 *   256 MiB file as a stream, and the edge cases a deploy meets (hard links, names over 100 bytes,
 *   names that are not UTF-8), both on their own and against GNU tar;
 * - the glob matching of ssh_config `Host` patterns (`src/internal/ssh/config.ts`) against
 *   `picomatch` and `minimatch`: OpenSSH's rules (`*`, `?`, case-insensitive, nothing else special)
 *   and throughput.
 *
 *   scripts/node.sh node bench/libraries.ts
 *
 * The candidates are installed by this script with npm into a directory outside the repository
 * (`$TMPDIR/tb-bench-libs`, kept between runs), one directory each, so their weight on disk and in
 * packages can be read off; nothing is added to package.json. Ratios are ours / theirs in time
 * (below 1: ours is faster), median of ROUNDS (default 5) runs.
 */
import { execFileSync } from "node:child_process"
import { createHash, randomBytes } from "node:crypto"
import * as fs from "node:fs"
import { createRequire } from "node:module"
import * as os from "node:os"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { hostMatches } from "../src/internal/ssh/config.ts"
import {
  byteString,
  endOfArchive,
  header,
  nameBytes,
  padding,
  TarReader
} from "../src/internal/transfer/tar.ts"
import { envInt, now } from "./lib.ts"

const rounds = envInt("ROUNDS", 5)
const libsDir = path.join(os.tmpdir(), "tb-bench-libs")
const candidates = {
  "tar-stream": "3",
  "modern-tar": "0.8",
  picomatch: "4",
  minimatch: "10 || 11"
} as const
type Candidate = keyof typeof candidates

// --- installing and weighing the candidates ------------------------------------------------------

const install = (name: Candidate): string => {
  const dir = path.join(libsDir, name)
  if (!fs.existsSync(path.join(dir, "node_modules", name, "package.json"))) {
    fs.mkdirSync(dir, { recursive: true })
    fs.writeFileSync(path.join(dir, "package.json"), "{\"private\":true}\n")
    execFileSync("npm", ["install", "--no-audit", "--no-fund", "--silent", `${name}@${candidates[name]}`], {
      cwd: dir,
      stdio: ["ignore", "ignore", "inherit"]
    })
  }
  return dir
}

const load = async (name: Candidate): Promise<any> => {
  const dir = install(name)
  const module = await import(pathToFileURL(createRequire(path.join(dir, "package.json")).resolve(name)).href)
  return module.default ?? module
}

const diskKiB = (dir: string): number => {
  let bytes = 0
  for (const entry of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) bytes += fs.statSync(path.join(entry.parentPath, entry.name)).size
  }
  return Math.round(bytes / 1024)
}

const weight = (name: Candidate): string => {
  const modules = path.join(libsDir, name, "node_modules")
  const packages = fs.readdirSync(modules).flatMap((d) =>
    d.startsWith("@") ? fs.readdirSync(path.join(modules, d)) : d.startsWith(".") ? [] : [d]
  )
  const version = JSON.parse(fs.readFileSync(path.join(modules, name, "package.json"), "utf8")).version
  return `${name}@${version}: ${packages.length} packages, ${diskKiB(modules)} KiB installed`
}

const ownLines = (file: string, from?: RegExp, to?: RegExp): number => {
  const lines = fs.readFileSync(new URL(file, import.meta.url), "utf8").split("\n")
  if (from === undefined) return lines.length
  const start = lines.findIndex((l) => from.test(l))
  const end = lines.findIndex((l, i) => i > start && to!.test(l))
  return end - start + 1
}

// --- measuring -----------------------------------------------------------------------------------

const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

const timed = async (run: () => unknown): Promise<number> => {
  await run() // warm-up
  const times: Array<number> = []
  for (let i = 0; i < rounds; i++) {
    const start = now()
    await run()
    times.push(now() - start)
  }
  return median(times)
}

const table = (title: string, rows: ReadonlyArray<ReadonlyArray<string>>) => {
  console.log(`\n${title}`)
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)))
  for (const row of rows) console.log("  " + row.map((cell, c) => cell.padEnd(widths[c]!)).join("  "))
}

const ms = (t: number) => `${t.toFixed(1)} ms`
const ratio = (ours: number, theirs: number) => `${(ours / theirs).toFixed(2)}x`

// --- tar: one interface over the three ------------------------------------------------------------

/** An entry to pack: names and link targets as bytes, since a Linux file name is any bytes. */
interface Item {
  readonly name: Buffer
  readonly type: "file" | "directory" | "hardlink"
  readonly data?: Uint8Array
  readonly link?: Buffer
}

/** What an extraction found. */
interface Found {
  readonly name: Buffer
  readonly type: string
  readonly link: Buffer | undefined
  readonly size: number
  readonly sha: string | undefined
}

interface Tar {
  readonly name: string
  readonly pack: (items: ReadonlyArray<Item>) => Promise<Uint8Array>
  /** Reads an archive given in chunks; `keep` hashes the content (for correctness, not speed). */
  readonly extract: (chunks: Iterable<Uint8Array>, keep: boolean) => Promise<Array<Found>>
  /** Packs one file of `count` x `chunk`, as a stream; returns the archive's size. */
  readonly packBig: (count: number, chunk: Uint8Array) => Promise<number>
}

const mtime = 1_700_000_000
const sha = (parts: ReadonlyArray<Uint8Array>) => {
  const hash = createHash("sha256")
  for (const part of parts) hash.update(part)
  return hash.digest("hex")
}
const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array => Buffer.concat(parts)

const ours: Tar = {
  name: "ours",
  pack: async (items) => {
    const parts: Array<Uint8Array> = []
    for (const item of items) {
      const size = item.type === "file" ? item.data!.length : 0
      parts.push(header({
        name: byteString(item.name),
        type: item.type,
        mode: item.type === "directory" ? 0o755 : 0o644,
        size,
        mtime,
        linkTarget: item.link === undefined ? undefined : byteString(item.link)
      }))
      if (size > 0) parts.push(item.data!, padding(size))
    }
    parts.push(endOfArchive())
    return concat(parts)
  },
  extract: async (chunks, keep) => {
    const reader = new TarReader()
    const found: Array<Found> = []
    let current: {
      name: Buffer
      type: string
      link: Buffer | undefined
      size: number
      parts: Array<Uint8Array>
    } | undefined
    for (const chunk of chunks) {
      const events = reader.push(chunk)
      if (!Array.isArray(events)) throw new Error(events.detail)
      for (const event of events) {
        if (event._tag === "Entry") {
          const e = event.entry
          current = {
            name: nameBytes(e.name),
            type: e.type,
            link: e.linkTarget === undefined ? undefined : nameBytes(e.linkTarget),
            size: 0,
            parts: []
          }
        } else if (event._tag === "Data") {
          current!.size += event.bytes.length
          if (keep) current!.parts.push(event.bytes.slice())
        } else if (event._tag === "EntryEnd") {
          found.push({ ...current!, sha: keep ? sha(current!.parts) : undefined })
        }
      }
    }
    return found
  },
  packBig: async (count, chunk) => {
    let bytes =
      header({ name: "big.bin", type: "file", mode: 0o644, size: count * chunk.length, mtime }).length
    for (let i = 0; i < count; i++) bytes += chunk.length // the content goes out as it is
    return bytes + padding(count * chunk.length).length + endOfArchive().length
  }
}

const tarStreamLib = (tarStream: any): Tar => {
  const entryType = { file: "file", directory: "directory", hardlink: "link" } as const
  const collect = (pack: any): Promise<Uint8Array> =>
    new Promise((resolve, reject) => {
      const parts: Array<Uint8Array> = []
      pack.on("data", (c: Uint8Array) => parts.push(c))
      pack.on("end", () => resolve(concat(parts)))
      pack.on("error", reject)
    })
  return {
    name: "tar-stream",
    // Names are strings to tar-stream, written as UTF-8: a name's bytes are given as latin1
    // characters, the closest it gets to bytes.
    pack: (items) => {
      const pack = tarStream.pack()
      const done = collect(pack)
      for (const item of items) {
        pack.entry({
          name: item.name.toString("latin1"),
          type: entryType[item.type],
          mode: item.type === "directory" ? 0o755 : 0o644,
          mtime: new Date(mtime * 1000),
          size: item.type === "file" ? item.data!.length : 0,
          linkname: item.link?.toString("latin1")
        }, item.type === "file" ? Buffer.from(item.data!) : undefined)
      }
      pack.finalize()
      return done
    },
    extract: async (chunks, keep) => {
      // latin1 gives the header's bytes back one character each.
      const extract = tarStream.extract({ filenameEncoding: "latin1" })
      const found: Array<Found> = []
      extract.on("entry", (h: any, stream: any, next: () => void) => {
        const parts: Array<Uint8Array> = []
        let size = 0
        stream.on("data", (c: Uint8Array) => {
          size += c.length
          if (keep) parts.push(c)
        })
        stream.on("end", () => {
          found.push({
            name: Buffer.from(h.type === "directory" ? h.name.replace(/\/$/, "") : h.name, "latin1"),
            type: h.type === "link" ? "hardlink" : h.type,
            link: h.linkname == null ? undefined : Buffer.from(h.linkname, "latin1"),
            size,
            sha: keep ? sha(parts) : undefined
          })
          next()
        })
      })
      const finished = new Promise<void>((resolve, reject) => {
        extract.on("finish", resolve)
        extract.on("error", reject)
      })
      for (const chunk of chunks) {
        if (!extract.write(chunk)) await new Promise((resolve) => extract.once("drain", resolve))
      }
      extract.end()
      await finished
      return found
    },
    packBig: async (count, chunk) => {
      const pack = tarStream.pack()
      let bytes = 0
      const done = new Promise<void>((resolve) => pack.on("end", resolve))
      pack.on("data", (c: Uint8Array) => bytes += c.length)
      const entry = pack.entry({
        name: "big.bin",
        size: count * chunk.length,
        mode: 0o644,
        mtime: new Date()
      })
      for (let i = 0; i < count; i++) {
        if (!entry.write(chunk)) await new Promise((resolve) => entry.once("drain", resolve))
      }
      entry.end()
      pack.finalize()
      await done
      return bytes
    }
  }
}

const modernTarLib = (modernTar: any): Tar => {
  const entryType = { file: "file", directory: "directory", hardlink: "link" } as const
  const drain = async (readable: ReadableStream<Uint8Array>, onChunk: (c: Uint8Array) => void) => {
    for await (const chunk of readable) onChunk(chunk)
  }
  return {
    name: "modern-tar",
    // Names are strings, written as UTF-8: as with tar-stream, bytes go in as latin1 characters.
    pack: (items) =>
      modernTar.packTar(items.map((item) => ({
        header: {
          name: item.name.toString("latin1") + (item.type === "directory" ? "/" : ""),
          type: entryType[item.type],
          mode: item.type === "directory" ? 0o755 : 0o644,
          mtime: new Date(mtime * 1000),
          size: item.type === "file" ? item.data!.length : 0,
          linkname: item.link?.toString("latin1")
        },
        body: item.type === "file" ? item.data : undefined
      }))),
    extract: async (chunks, keep) => {
      const decoder = modernTar.createTarDecoder()
      const writer = (decoder.writable as WritableStream<Uint8Array>).getWriter()
      const writing = (async () => {
        for (const chunk of chunks) await writer.write(chunk)
        await writer.close()
      })()
      const found: Array<Found> = []
      for await (const entry of decoder.readable as ReadableStream<{ header: any; body: ReadableStream }>) {
        const parts: Array<Uint8Array> = []
        let size = 0
        await drain(entry.body, (c) => {
          size += c.length
          if (keep) parts.push(c)
        })
        const h = entry.header
        found.push({
          name: Buffer.from(h.type === "directory" ? h.name.replace(/\/$/, "") : h.name, "utf8"),
          type: h.type === "link" ? "hardlink" : h.type,
          link: h.linkname ? Buffer.from(h.linkname, "utf8") : undefined,
          size,
          sha: keep ? sha(parts) : undefined
        })
      }
      await writing
      return found
    },
    packBig: async (count, chunk) => {
      const { readable, controller } = modernTar.createTarPacker()
      let bytes = 0
      const reading = drain(readable, (c) => bytes += c.length)
      const writer = controller.add({ name: "big.bin", size: count * chunk.length, mode: 0o644 }).getWriter()
      for (let i = 0; i < count; i++) await writer.write(chunk)
      await writer.close()
      controller.finalize()
      await reading
      return bytes
    }
  }
}

const chunked = function*(data: Uint8Array, size = 64 * 1024): Generator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size)
}

/** A one-file archive of `count` x `chunk`, as chunks, made without holding it whole. */
const bigArchive = function*(count: number, chunk: Uint8Array): Generator<Uint8Array> {
  const size = count * chunk.length
  yield header({ name: "big.bin", type: "file", mode: 0o644, size, mtime })
  for (let i = 0; i < count; i++) yield chunk
  yield padding(size)
  yield endOfArchive()
}

// --- tar: the edge cases, and GNU tar on the other side ---------------------------------------------

const longName = Buffer.from(`${"deep/".repeat(24)}${"n".repeat(60)}.txt`) // 180 bytes
const edgeItems: ReadonlyArray<Item> = [
  { name: Buffer.from("dir"), type: "directory" },
  { name: Buffer.from("dir/original.txt"), type: "file", data: Buffer.from("shared content\n") },
  { name: Buffer.from("dir/hardlink.txt"), type: "hardlink", link: Buffer.from("dir/original.txt") },
  { name: longName, type: "file", data: Buffer.from("long\n") },
  {
    name: Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x2e, 0x74, 0x78, 0x74]),
    type: "file",
    data: Buffer.from("latin1\n")
  }
]

/** The checks an archive's reading must pass: each edge item back, byte for byte. */
const edgeVerdicts = (found: ReadonlyArray<Found>): Record<string, boolean> => {
  const byName = (name: Buffer) => found.find((f) => f.name.equals(name))
  const hard = byName(Buffer.from("dir/hardlink.txt"))
  const long = byName(longName)
  const latin = byName(edgeItems[4]!.name)
  return {
    "hard link": hard?.type === "hardlink" && hard.link?.equals(Buffer.from("dir/original.txt")) === true,
    "name > 100 bytes": long !== undefined && long.sha === sha([Buffer.from("long\n")]),
    "non-UTF-8 name": latin !== undefined && latin.sha === sha([Buffer.from("latin1\n")])
  }
}

/** A tree of the edge items on disk, archived by GNU tar in `format`. */
const gnuArchive = (work: string, format: "gnu" | "posix"): Uint8Array => {
  const tree = path.join(work, `tree-${format}`)
  fs.mkdirSync(path.join(tree, path.dirname(longName.toString())), { recursive: true })
  fs.mkdirSync(path.join(tree, "dir"), { recursive: true })
  fs.writeFileSync(path.join(tree, "dir/original.txt"), "shared content\n")
  if (!fs.existsSync(path.join(tree, "dir/hardlink.txt"))) {
    fs.linkSync(path.join(tree, "dir/original.txt"), path.join(tree, "dir/hardlink.txt"))
  }
  fs.writeFileSync(path.join(tree, longName.toString()), "long\n")
  fs.writeFileSync(Buffer.concat([Buffer.from(`${tree}/`), edgeItems[4]!.name]), "latin1\n")
  return execFileSync("tar", [`--format=${format}`, "-cf", "-", "-C", tree, "."], { maxBuffer: 1 << 26 })
}

/** What GNU tar makes of an archive: the edge items back on disk, byte for byte. */
const gnuReads = (work: string, archive: Uint8Array, label: string): Record<string, boolean> => {
  const out = path.join(work, `out-${label}`)
  fs.mkdirSync(out, { recursive: true })
  try {
    execFileSync("tar", ["-xf", "-", "-C", out], { input: archive, stdio: ["pipe", "ignore", "ignore"] })
  } catch {
    // a partial extraction is judged below like any other
  }
  const at = (name: Buffer) => Buffer.concat([Buffer.from(`${out}/`), name])
  const read = (name: Buffer) => fs.existsSync(at(name)) ? fs.readFileSync(at(name), "utf8") : undefined
  const original = at(Buffer.from("dir/original.txt"))
  const hard = at(Buffer.from("dir/hardlink.txt"))
  return {
    "hard link": fs.existsSync(hard) && fs.existsSync(original) &&
      fs.statSync(hard).ino === fs.statSync(original).ino,
    "name > 100 bytes": read(longName) === "long\n",
    "non-UTF-8 name": read(edgeItems[4]!.name) === "latin1\n"
  }
}

const verdict = (checks: Record<string, boolean>) =>
  Object.entries(checks).map(([what, ok]) => `${what} ${ok ? "ok" : "FAIL"}`).join(", ")

const dotless = (name: Buffer): Buffer => name.toString("latin1").startsWith("./") ? name.subarray(2) : name

/** GNU tar keeps `./` in front of names and adds `.` itself; the checks look at names only. */
const withoutDot = (found: Array<Found>): Array<Found> =>
  found.map((f) => ({
    ...f,
    name: dotless(f.name),
    link: f.link === undefined ? undefined : dotless(f.link)
  }))

// --- host patterns ----------------------------------------------------------------------------------

/** OpenSSH's answers (`Host` line patterns, host name as typed): `*`, `?`, case-insensitive. */
const hostCases: ReadonlyArray<readonly [ReadonlyArray<string>, string, boolean]> = [
  [["*.example.com"], "web.example.com", true],
  [["*.example.com"], "a.b.example.com", true],
  [["*.example.com"], "example.com", false],
  [["web-?"], "web-1", true],
  [["web-?"], "web-12", false],
  [["WEB-*"], "web-1", true],
  [["*", "!bastion"], "bastion", false],
  [["*", "!bastion"], "web-1", true],
  [["!bastion"], "web-1", false],
  [["10.0.0.*"], "10.0.0.7", true],
  [["*"], ".hidden", true],
  [["web-[12]"], "web-1", false],
  [["web-[12]"], "web-[12]", true],
  [["{a,b}.example.com"], "a.example.com", false],
  [["a+(b)"], "a+(b)", true],
  [["a+(b)"], "ab", false],
  [["db*,cache*"], "cache-1", true]
]

/** The `Host` rule (a negated pattern only excludes) around a candidate's single-pattern match. */
const withRule =
  (glob: (pattern: string, host: string) => boolean) => (patterns: ReadonlyArray<string>, host: string) => {
    let matched = false
    for (const item of patterns.flatMap((p) => p.split(","))) {
      if (item === "") continue
      if (item.startsWith("!")) {
        if (glob(item.slice(1), host)) return false
      } else if (glob(item, host)) matched = true
    }
    return matched
  }

// --- the run --------------------------------------------------------------------------------------

const main = async () => {
  const [tarStream, modernTar, picomatch, minimatch] = await Promise.all([
    load("tar-stream"),
    load("modern-tar"),
    load("picomatch"),
    load("minimatch")
  ])
  const tars = [ours, tarStreamLib(tarStream), modernTarLib(modernTar)]

  console.log(
    `Node ${process.version}, ${os.cpus().length} CPUs, load ${
      os.loadavg()[0]!.toFixed(2)
    }, median of ${rounds}`
  )
  console.log("\ndependency weight")
  console.log(
    `  ours (tar): src/internal/transfer/tar.ts, ${
      ownLines("../src/internal/transfer/tar.ts")
    } lines, no package`
  )
  console.log(
    `  ours (Host patterns): globMatch and hostMatches in src/internal/ssh/config.ts, ${
      ownLines("../src/internal/ssh/config.ts", /^const globMatch/, /^\}/) +
      ownLines("../src/internal/ssh/config.ts", /^export const hostMatches/, /^\}/)
    } lines, no package`
  )
  for (const name of Object.keys(candidates) as Array<Candidate>) console.log(`  ${weight(name)}`)

  // 1,000 files of 4 KiB.
  const small: Array<Item> = Array.from({ length: 1000 }, (_, i) => ({
    name: Buffer.from(`files/file-${String(i).padStart(4, "0")}.bin`),
    type: "file" as const,
    data: randomBytes(4096)
  }))
  const smallArchive = await ours.pack(small)
  const rows: Array<Array<string>> = [[
    "job",
    ...tars.map((t) => t.name),
    ...tars.slice(1).map((t) => `ours/${t.name}`)
  ]]
  const times = async (run: (tar: Tar) => Promise<unknown>) => {
    const result: Array<number> = []
    for (const tar of tars) result.push(await timed(() => run(tar)))
    return result
  }
  const row = (job: string, t: ReadonlyArray<number>) =>
    rows.push([job, ...t.map(ms), ...t.slice(1).map((other) => ratio(t[0]!, other))])

  row("pack 1,000 x 4 KiB", await times((tar) => tar.pack(small)))
  row("extract 1,000 x 4 KiB", await times((tar) => tar.extract(chunked(smallArchive), false)))
  const big = 256 * 1024 * 1024
  const chunk = new Uint8Array(64 * 1024).fill(7)
  const count = big / chunk.length
  // Ours hands content chunks on as they are (no copy), so for one big file the row measures each
  // library's framing and copying, not the content's own cost (hashing or writing it), which is
  // the same for all.
  row("pack 256 MiB (stream)", await times((tar) => tar.packBig(count, chunk)))
  row("extract 256 MiB (stream)", await times((tar) => tar.extract(bigArchive(count, chunk), false)))
  table("tar throughput (time; ratio below 1: ours faster)", rows)

  // Every archive read back by each reader, and by GNU tar.
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "tb-bench-libs-work-"))
  try {
    const checks: Array<Array<string>> = [[
      "archive made by",
      ...tars.map((t) => `read by ${t.name}`),
      "read by GNU tar"
    ]]
    const sources: Array<[string, Uint8Array]> = []
    for (const tar of tars) sources.push([tar.name, await tar.pack(edgeItems)])
    sources.push(["GNU tar (gnu)", gnuArchive(work, "gnu")], ["GNU tar (posix)", gnuArchive(work, "posix")])
    for (const [label, archive] of sources) {
      const cells: Array<string> = [label]
      for (const tar of tars) {
        try {
          cells.push(verdict(edgeVerdicts(withoutDot(await tar.extract(chunked(archive), true)))))
        } catch (error) {
          cells.push(`error: ${String(error).slice(0, 60)}`)
        }
      }
      cells.push(label.startsWith("GNU") ? "-" : verdict(gnuReads(work, archive, label.replace(/\W/g, ""))))
      checks.push(cells)
    }
    console.log("\ntar edge cases (hard link, a 180-byte name, the name caf\\xe9.txt)")
    for (const c of checks.slice(1)) {
      console.log(`  made by ${c[0]}:`)
      for (let i = 1; i < c.length; i++) console.log(`    ${checks[0]![i]}: ${c[i]}`)
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true })
  }

  // Host patterns.
  const globs: Array<[string, (patterns: ReadonlyArray<string>, host: string) => boolean]> = [
    ["ours", hostMatches],
    ["picomatch {nocase}", withRule((p, h) => picomatch.isMatch(h, p, { nocase: true }))],
    [
      "picomatch {nocase, dot, nobrace, noextglob, nobracket}",
      withRule((p, h) =>
        picomatch.isMatch(h, p, { nocase: true, dot: true, nobrace: true, noextglob: true, nobracket: true })
      )
    ],
    ["minimatch {nocase}", withRule((p, h) => minimatch.minimatch(h, p, { nocase: true }))],
    [
      "minimatch {nocase, dot, nobrace, noext}",
      withRule((p, h) => minimatch.minimatch(h, p, { nocase: true, dot: true, nobrace: true, noext: true }))
    ]
  ]
  console.log("\nHost patterns: OpenSSH's answers")
  const hostTimes: Array<number> = []
  for (const [name, matches] of globs) {
    const wrong = hostCases.filter(([patterns, host, want]) => matches(patterns, host) !== want)
    console.log(
      `  ${name}: ${hostCases.length - wrong.length}/${hostCases.length} right${
        wrong.length > 0
          ? `; wrong: ${wrong.map(([p, h, want]) => `${p.join(" ")} vs ${h} (want ${want})`).join("; ")}`
          : ""
      }`
    )
    const n = 20_000
    hostTimes.push(
      await timed(() => {
        for (let i = 0; i < n; i++) for (const [patterns, host] of hostCases) matches(patterns, host)
      }) / (n * hostCases.length) * 1e6
    )
  }
  table(
    "Host patterns: time per match (a config resolves a host against a handful of Host lines)",
    [
      ["matcher", "ns/match", "ours/it"],
      ...globs.map(([name], i) => [name, hostTimes[i]!.toFixed(0), ratio(hostTimes[0]!, hostTimes[i]!)])
    ]
  )
}

await main()
